import { checksumOf, type ChecksumKind } from './checksum.js';
import { childPath, timeString, type EntryInfo, type TreeSource } from './tree-source.js';

/** What `hvshare diff` compares; `--ignore` leaves some out. */
export const DIFF_FIELDS = ['type', 'size', 'mode', 'owner', 'mtime', 'target', 'xattrs', 'content'] as const;
export type DiffField = (typeof DIFF_FIELDS)[number] | 'exists';

export interface Difference {
  path: string;
  field: DiffField;
  /** The field on each side as text (`-` when the entry is missing there). */
  a: string;
  b: string;
}

export interface DiffOptions {
  checksum: ChecksumKind;
  ignore: ReadonlySet<DiffField>;
}

export interface DiffResult {
  differences: Difference[];
  entries: number;
  /** Files whose content was compared (checksums read on both sides). */
  contentCompared: number;
  /** Files read again because they changed while being read. */
  rereads: number;
}

/** Entries compared at once (each side's calls to a domain overlap their round trips). */
const PARALLEL = 8;

/** Runs at most `n` of the functions given to it at once. */
function limiter(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async (fn) => {
    while (active >= n) await new Promise<void>((resolve) => waiting.push(resolve));
    active++;
    try {
      return await fn();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

/** Paths in walk order: component by component. */
function byPath(x: Difference, y: Difference): number {
  const [p, q] = [x.path.split('/'), y.path.split('/')];
  for (let i = 0; i < Math.min(p.length, q.length); i++) if (p[i] !== q[i]) return p[i] < q[i] ? -1 : 1;
  return p.length - q.length;
}

/** How many times a file that changes while it is read is read again before it is reported as changing. */
const READ_ATTEMPTS = 3;

const sameTime = (x: EntryInfo['mtime'], y: EntryInfo['mtime']) => x.sec === y.sec && x.nsec === y.nsec;
const unchanged = (x: EntryInfo, y: EntryInfo) => x.size === y.size && sameTime(x.mtime, y.mtime) && sameTime(x.ctime, y.ctime);

/**
 * Compares the trees at `pathA` in `a` and `pathB` in `b`, recursively. Each file is compared as of one instant
 * on each side: its attributes are read before and after its content, and one that changed meanwhile is read
 * again. The trees as a whole are not one instant (see README, "hvshare diff").
 */
export async function diffTrees(a: TreeSource, pathA: string, b: TreeSource, pathB: string, options: DiffOptions): Promise<DiffResult> {
  const result: DiffResult = { differences: [], entries: 0, contentCompared: 0, rereads: 0 };
  const slot = limiter(PARALLEL);
  const differ = (path: string, field: DiffField, x: string, y: string) => {
    if (x !== y && !options.ignore.has(field)) result.differences.push({ path, field, a: x, b: y });
  };

  /** The checksum of a file, with the attributes it was read under; null when it kept changing. */
  const contentOf = async (side: TreeSource, path: string, before: EntryInfo): Promise<{ sum: string; info: EntryInfo } | null> => {
    let info = before;
    for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
      const sum = await checksumOf(options.checksum, side.chunks(path));
      const after = await side.stat(path);
      if (unchanged(info, after)) return { sum, info };
      result.rereads++;
      info = after;
    }
    return null;
  };

  const compare = async (rel: string, ia: EntryInfo, ib: EntryInfo, pa: string, pb: string): Promise<void> => {
    result.entries++;
    if (ia.type !== ib.type) return differ(rel, 'type', ia.type, ib.type);
    if (ia.type === 'file' && !options.ignore.has('content') && ia.size === ib.size) {
      const [ca, cb] = await slot(() => Promise.all([contentOf(a, pa, ia), contentOf(b, pb, ib)]));
      if (!ca || !cb) {
        differ(rel, 'content', ca ? ca.sum : 'kept changing while read', cb ? cb.sum : 'kept changing while read');
      } else {
        result.contentCompared++;
        [ia, ib] = [ca.info, cb.info];
        differ(rel, 'content', `${options.checksum}:${ca.sum}`, `${options.checksum}:${cb.sum}`);
      }
    }
    // A directory's size is its format's business, a symlink's is its target's length (compared as the target).
    if (ia.type === 'file') differ(rel, 'size', String(ia.size), String(ib.size));
    differ(rel, 'mode', (ia.perm).toString(8).padStart(4, '0'), ib.perm.toString(8).padStart(4, '0'));
    differ(rel, 'owner', `${ia.uid}:${ia.gid}`, `${ib.uid}:${ib.gid}`);
    // A directory's mtime follows its entries, a symlink's is set when it is made: only files' times are content.
    if (ia.type === 'file') differ(rel, 'mtime', timeString(ia.mtime), timeString(ib.mtime));
    if (ia.type === 'symlink') differ(rel, 'target', ...(await slot(() => Promise.all([a.readlink(pa), b.readlink(pb)]))));
    if (a.xattrs && b.xattrs && !options.ignore.has('xattrs')) {
      const [xa, xb] = await slot(() => Promise.all([a.xattrs!(pa), b.xattrs!(pb)]));
      const text = (x: Record<string, string>) => JSON.stringify(Object.entries(x).sort(([k], [l]) => (k < l ? -1 : 1)));
      differ(rel, 'xattrs', text(xa), text(xb));
    }
    if (ia.type !== 'dir') return;
    const [na, nb] = await slot(() => Promise.all([a.list(pa), b.list(pb)]));
    const inB = new Set(nb);
    const inA = new Set(na);
    // Children one after the other's calls overlap (PARALLEL at most); a directory waits holding no slot.
    await Promise.all(
      [...new Set([...na, ...nb])].map(async (name) => {
        const child = childPath(rel, name);
        if (!inB.has(name)) return differ(child, 'exists', a.label, '-');
        if (!inA.has(name)) return differ(child, 'exists', '-', b.label);
        const [ca, cb] = await slot(() => Promise.all([a.stat(childPath(pa, name)), b.stat(childPath(pb, name))]));
        await compare(child, ca, cb, childPath(pa, name), childPath(pb, name));
      }),
    );
  };

  const [ia, ib] = await Promise.all([a.stat(pathA), b.stat(pathB)]);
  await compare('/', ia, ib, pathA, pathB);
  result.differences.sort(byPath);
  return result;
}
