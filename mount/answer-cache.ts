/**
 * What a view answers itself: an answer the domain gave to a question that changes nothing (a stat, a directory
 * listing, a symlink's target, an extended attribute or their list, or the error it gave instead: "no such file",
 * "no such attribute"), kept with the domain's change count as it read before the question went out
 * (guests/change-count.ts). While the count still reads the same, nothing the domain would answer has changed:
 * nothing changed in the domain, and it gave up no lock, so no other domain can have changed what the answer was
 * read under. A repeated question (with zero timeouts the kernel asks the same path again and again: `ls -l`
 * makes three lookups and two getxattr per entry) is then answered on the host's main thread without a call into
 * the domain, and a strict view stays exact. Stats and listings are answered the same way by the libfuse threads
 * themselves (`NativeAnswers`), without a hop to the main thread.
 */
import { constants } from 'node:os';
import { basename, dirname } from 'node:path';
import { IoError } from '../fs/block-device.js';
import { S_IFDIR, S_IFMT, type DirListing, type Stat } from '../fs/vfs.js';
import type { AgentResult, StatOrError } from '../guests/agent-protocol.js';
import type { DomainHandle } from '../hypervisor/toolstack.js';

/** The questions answered here, with the arguments that make them (a path first). */
export type Question = 'getattr' | 'readdirEntries' | 'readlink' | 'getxattr' | 'listxattr';

interface Answer {
  domain: DomainHandle;
  count: number;
  result?: AgentResult;
  /** The errno the domain answered instead, with its message. */
  error?: { code: string; message: string };
}

/** The directories above `path` (absolute, as FUSE passes it), nearest first, up to '/'. */
export function ancestorsOf(path: string): string[] {
  const above: string[] = [];
  for (let at = path; at !== '/'; ) above.push((at = dirname(at)));
  return above;
}

/** Answers remembered at most; past it the cache starts over (a walk over a huge tree). */
const MAX_ANSWERS = 100_000;
/** Stats asked at once when a lookup in a directory just listed misses (as the kernel's statahead). */
const LOOK_AHEAD = 32;
/** Errors that are answers about the volume (not about the call): remembered like results. */
const ANSWER_ERRORS = new Set(['ENOENT', 'ENOTDIR', 'ENODATA', 'EINVAL', 'ENAMETOOLONG', 'ELOOP']);

/**
 * Where stats (and the errors that are answers) and directory listings are also kept to be answered without the
 * main thread: the patched fuse-native's libfuse threads, which check the same count (mount/fuse-native.ts).
 */
export interface NativeAnswers {
  stat(domain: DomainHandle, path: string, count: number, stat: Stat | null, errno: number): void;
  listing(domain: DomainHandle, path: string, count: number, listing: DirListing): void;
  /** Only that `path` has no extended attributes (no stat known at `count`). */
  noXattrs(domain: DomainHandle, path: string, count: number): void;
}

export class AnswerCache {
  private readonly answers = new Map<string, Answer>();
  /** Paths known to have no extended attributes at a later count than their stat's (writtenAlone). */
  private readonly xattrFree = new Map<string, { domain: DomainHandle; count: number }>();
  /** Questions answered here, and stats asked along with another (look ahead), for tests and diagnostics. */
  hits = 0;
  askedAhead = 0;

  constructor(private readonly native?: NativeAnswers) {}

  /** `op` of `args` as `domain` answered it while its change count read as it reads now, or asked of it. */
  async ask<T extends AgentResult>(domain: DomainHandle, op: Question, ...args: string[]): Promise<T> {
    const key = `${op}\0${args.join('\0')}`;
    const count = domain.changes.read();
    const known = this.answers.get(key);
    if (known && known.count === count && known.domain === domain) {
      this.hits++;
      if (known.error) throw new IoError(known.error.code, known.error.message);
      return known.result as T;
    }
    if (this.answers.size >= MAX_ANSWERS) this.answers.clear();
    const ahead = op === 'getattr' ? this.lookAhead(domain, count, args[0]!) : [];
    if (ahead.length > 1) {
      this.askedAhead += ahead.length - 1;
      const stats = await domain.call<StatOrError[]>({ kind: 'getattr-many', paths: ahead });
      ahead.forEach((path, i) => this.remember('getattr', path, domain, count, stats[i]!));
      const mine = stats[0]!;
      if ('code' in mine) throw new IoError(mine.code, mine.message);
      return mine as T;
    }
    try {
      const result = await domain.call<T>({ kind: 'vfs', op, args });
      if (op === 'getattr') this.remember(op, args[0]!, domain, count, result as Stat);
      else this.answers.set(key, { domain, count, result });
      if (op === 'readdirEntries') this.native?.listing(domain, args[0]!, count, result as DirListing);
      return result;
    } catch (error) {
      if (op === 'getattr') this.remember(op, args[0]!, domain, count, error as { code?: string; message: string });
      else this.forgetOrKeepError(key, domain, count, error as { code?: string; message: string });
      throw error;
    }
  }

  /** A stat (or the error answered instead) of `path`, here and where the libfuse threads answer (`native`). */
  private remember(op: 'getattr', path: string, domain: DomainHandle, count: number, answer: StatOrError | { code?: string; message: string }): void {
    const key = `${op}\0${path}`;
    if (!('code' in answer)) {
      this.answers.set(key, { domain, count, result: answer as Stat });
      this.native?.stat(domain, path, count, answer as Stat, 0);
    } else if (this.forgetOrKeepError(key, domain, count, answer)) {
      this.native?.stat(domain, path, count, null, constants.errno[answer.code as keyof typeof constants.errno]);
    }
  }

  /** Keeps an error that is an answer about the volume (true), or forgets what was known for `key`. */
  private forgetOrKeepError(key: string, domain: DomainHandle, count: number, error: { code?: string; message: string }): error is { code: string; message: string } {
    if (typeof error.code === 'string' && ANSWER_ERRORS.has(error.code) && error.code in constants.errno) {
      this.answers.set(key, { domain, count, error: { code: error.code, message: error.message } });
      return true;
    }
    this.answers.delete(key);
    return false;
  }

  /**
   * The paths worth a stat now along with `path`: when its directory was listed through this cache and nothing
   * changed since, the entries that follow it of the same kind (directories for a walk that descends, the rest
   * for `ls -l` or `du`) and not known yet. Empty otherwise: once the domain changed something, the listing names
   * what may be gone, and the stats asked along would be lost at the next change anyway (`rm -rf` unlinks each
   * name right after its lookup, so it would pay 32 stats per file).
   */
  private lookAhead(domain: DomainHandle, count: number, path: string): string[] {
    const dir = dirname(path);
    const listed = this.answers.get(`readdirEntries\0${dir}`);
    if (!listed?.result || listed.domain !== domain || listed.count !== count) return [];
    const { names, types } = listed.result as DirListing;
    const at = names.indexOf(basename(path));
    if (at < 0) return [];
    const isDir = (i: number) => (types[i]! & S_IFMT) === S_IFDIR;
    const prefix = dir === '/' ? '/' : `${dir}/`;
    const paths = [path];
    for (let i = at + 1; i < names.length && paths.length < LOOK_AHEAD; i++) {
      const next = prefix + names[i];
      const known = this.answers.get(`getattr\0${next}`);
      if (names[i] !== '..' && isDir(i) === isDir(at) && !(known && known.count === count && known.domain === domain)) paths.push(next);
    }
    return paths;
  }

  /**
   * True when `path` is known, as of now, to have no extended attributes (from its stat, or carried: writtenAlone):
   * a question about them is answered here (counted as such).
   */
  hasNoXattrs(domain: DomainHandle, path: string): boolean {
    const known = this.hasNoXattrsAt(domain, path, domain.changes.read());
    if (known) this.hits++;
    return known;
  }

  /**
   * The only change `domain` made from count `from` to `from + 1` was a write of `path`'s data through this view
   * (DomainHandle.soleChange): its extended attributes are what they were, and so are the stats of `unchanged`
   * (the directories above it: changedAlone). Without a writeback cache, the host kernel asks for
   * security.capability before every write (to clear it, as a write must), and a view in `auto` mode would
   * otherwise send every write's question into the domain: one more round trip per write. Answered on the libfuse
   * threads too (NativeAnswers.noXattrs).
   */
  writtenAlone(domain: DomainHandle, path: string, from: number, unchanged: readonly string[]): void {
    this.changedAlone(domain, from, [], [], unchanged);
    if (!this.hasNoXattrsAt(domain, path, from)) return;
    if (this.xattrFree.size >= MAX_ANSWERS) this.xattrFree.clear();
    this.xattrFree.set(path, { domain, count: from + 1 });
    this.native?.noXattrs(domain, path, from + 1);
  }

  /**
   * `domain`'s only change from count `from` to `from + 1` was an operation that left `paths` with `stats`
   * (post-op attributes, DomainHandle.soleChange) and did not change the stats of `unchanged` (the directories
   * above). Both are answered for the new count, here and on the libfuse threads: the stat libfuse 2.9 asks for
   * after every operation that creates a name or changes attributes, and the path walk of the next operation.
   */
  changedAlone(domain: DomainHandle, from: number, paths: readonly string[], stats: readonly StatOrError[], unchanged: readonly string[]): void {
    if (this.answers.size >= MAX_ANSWERS) this.answers.clear();
    paths.forEach((path, i) => this.remember('getattr', path, domain, from + 1, stats[i]!));
    for (const path of unchanged) {
      const known = this.answers.get(`getattr\0${path}`);
      if (known?.result && known.count === from && known.domain === domain) this.remember('getattr', path, domain, from + 1, known.result as Stat);
    }
  }

  /**
   * `domain`'s only change from `from` to `from + 1` was the removal of `path` through this view (unlink or rmdir,
   * DomainHandle.soleChange): the name is gone and its directory's listing lost it; `paths` (its directory) were
   * left with `stats`; the directories above are unchanged (`unchanged`), and so are the stats of the names after
   * it in the listing when the inode removed had no other name (its stat at `from` says one link, or it was a
   * directory). `rm -r` then goes on answered here and looked ahead in batches, where every name was a call into
   * the domain once the first was removed.
   */
  removedAlone(domain: DomainHandle, from: number, path: string, paths: readonly string[], stats: readonly StatOrError[], unchanged: readonly string[]): void {
    const gone = this.answers.get(`getattr\0${path}`);
    const goneStat = gone?.result && gone.count === from && gone.domain === domain ? (gone.result as Stat) : null;
    this.changedAlone(domain, from, [path, ...paths], [{ code: 'ENOENT', message: 'removed through this view' }, ...stats], unchanged);
    const dir = dirname(path);
    const listed = this.answers.get(`readdirEntries\0${dir}`);
    if (!listed?.result || listed.count !== from || listed.domain !== domain) return;
    const { names, inos, types } = listed.result as DirListing;
    const at = names.indexOf(basename(path));
    if (at < 0) return;
    const without = <T>(xs: T[]) => [...xs.slice(0, at), ...xs.slice(at + 1)];
    this.answers.set(`readdirEntries\0${dir}`, { domain, count: from + 1, result: { names: without(names), inos: without(inos), types: without(types) } });
    if (!goneStat || ((goneStat.mode & S_IFMT) !== S_IFDIR && goneStat.nlink > 1)) return;
    const prefix = dir === '/' ? '/' : `${dir}/`;
    this.changedAlone(domain, from, [], [], names.slice(at + 1, at + 1 + LOOK_AHEAD).map((name) => prefix + name));
  }

  private hasNoXattrsAt(domain: DomainHandle, path: string, count: number): boolean {
    const known = this.answers.get(`getattr\0${path}`);
    const stat = known?.result as Stat | undefined;
    if (stat && !stat.xattrs && known!.count === count && known!.domain === domain) return true;
    const free = this.xattrFree.get(path);
    return free !== undefined && free.count === count && free.domain === domain;
  }
}
