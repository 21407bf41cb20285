import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { O_RDONLY, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type Stat, type Timespec, type Vfs } from '../fs/vfs.js';

export type EntryType = 'file' | 'dir' | 'symlink' | 'other';

/** What inspection compares of one entry (lstat semantics: a symlink is itself). */
export interface EntryInfo {
  type: EntryType;
  /** The inode number (in a domain, also the name of the inode's cluster lock: `hvshare locks`). */
  ino: number;
  /** Permission bits (07777). */
  perm: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  atime: Timespec;
  mtime: Timespec;
  /** Changes with every change of the entry: tells a reader that the entry changed while it was read. */
  ctime: Timespec;
}

/** A tree to list, read or compare: a domain's view of the volume or a host folder. Paths are `/`-rooted. */
export interface TreeSource {
  /** How messages name this side: `dom1` or the host folder. */
  readonly label: string;
  stat(path: string): Promise<EntryInfo>;
  /** A directory's names, `.` and `..` left out, sorted. */
  list(path: string): Promise<string[]>;
  readlink(path: string): Promise<string>;
  /** A file's content, in chunks. */
  chunks(path: string): AsyncIterable<Uint8Array>;
  /**
   * Extended attributes by name, each value in hex, for sources that can read them: a domain's (`hvshare diff`
   * compares them when both sides have them; hostTree has none, node has no xattr call).
   */
  xattrs?(path: string): Promise<Record<string, string>>;
}

const CHUNK = 256 * 1024;

function typeOf(mode: number): EntryType {
  const t = mode & S_IFMT;
  return t === S_IFREG ? 'file' : t === S_IFDIR ? 'dir' : t === S_IFLNK ? 'symlink' : 'other';
}

function infoOf(s: Stat): EntryInfo {
  return { type: typeOf(s.mode), ino: s.ino, perm: s.mode & 0o7777, uid: s.uid, gid: s.gid, size: s.size, nlink: s.nlink, atime: s.atime, mtime: s.mtime, ctime: s.ctime };
}

const byName = (names: string[]) => names.filter((n) => n !== '.' && n !== '..').sort();

/** A domain's filesystem, reached through its guest agent. */
export function domainTree(domain: string, vfs: Vfs): TreeSource {
  return {
    label: domain,
    stat: async (path) => infoOf(await vfs.getattr(path)),
    list: async (path) => byName(await vfs.readdir(path)),
    readlink: (path) => vfs.readlink(path),
    chunks: (path) => domainFileChunks(vfs, path),
    xattrs: async (path) => {
      const names = (await vfs.listxattr(path)).sort();
      const values = await Promise.all(names.map((name) => vfs.getxattr(path, name)));
      return Object.fromEntries(names.map((name, i) => [name, Buffer.from(values[i]).toString('hex')]));
    },
  };
}

async function* domainFileChunks(vfs: Vfs, path: string): AsyncIterable<Uint8Array> {
  const fh = await vfs.open(path, O_RDONLY);
  try {
    for (let position = 0; ; ) {
      const chunk = await vfs.read(fh, position, CHUNK);
      if (chunk.length > 0) yield chunk;
      // Fewer bytes than asked for: the end of the file (no call to learn that it has nothing more).
      if (chunk.length < CHUNK) return;
      position += chunk.length;
    }
  } finally {
    await vfs.release(fh);
  }
}

/** A folder on the host; paths inside it are `/`-rooted as a domain's are. */
export function hostTree(root: string): TreeSource {
  const at = (path: string) => join(root, posix.normalize(`/${path}`));
  return {
    label: root,
    stat: async (path) => {
      const s = await lstat(at(path), { bigint: true });
      const mode = Number(s.mode);
      const [atime, mtime, ctime] = [timespecOf(s.atimeNs), timespecOf(s.mtimeNs), timespecOf(s.ctimeNs)];
      return { type: typeOf(mode), ino: Number(s.ino), perm: mode & 0o7777, uid: Number(s.uid), gid: Number(s.gid), size: Number(s.size), nlink: Number(s.nlink), atime, mtime, ctime };
    },
    list: async (path) => byName(await readdir(at(path))),
    readlink: (path) => readlink(at(path)),
    chunks: (path) => hostFileChunks(at(path)),
  };
}

/** Nanoseconds since the epoch (negative before 1970) as a Timespec (nsec always 0..999,999,999). */
function timespecOf(ns: bigint): Timespec {
  const billion = 1_000_000_000n;
  const sec = ns / billion - (ns % billion < 0n ? 1n : 0n);
  return { sec: Number(sec), nsec: Number(ns - sec * billion) };
}

async function* hostFileChunks(file: string): AsyncIterable<Uint8Array> {
  const handle = await open(file, 'r');
  try {
    for (;;) {
      const buf = new Uint8Array(CHUNK);
      const { bytesRead } = await handle.read(buf, 0, CHUNK, null);
      if (bytesRead === 0) return;
      yield buf.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

/** A child's path under `dir` (both `/`-rooted). */
export function childPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** Every entry at and below `path` (the entry itself first; a directory's children in name order). */
export async function* walkTree(source: TreeSource, path: string, recursive: boolean): AsyncIterable<{ path: string; info: EntryInfo }> {
  const info = await source.stat(path);
  yield { path, info };
  if (info.type !== 'dir') return;
  for (const name of await source.list(path)) {
    const child = childPath(path, name);
    if (recursive) yield* walkTree(source, child, true);
    else yield { path: child, info: await source.stat(child) };
  }
}

/** `-rw-r--r--` from a type and permission bits. */
export function modeString(info: EntryInfo): string {
  const type = { file: '-', dir: 'd', symlink: 'l', other: '?' }[info.type];
  const bits = 'rwxrwxrwx'.split('').map((c, i) => (info.perm & (1 << (8 - i)) ? c : '-'));
  if (info.perm & 0o4000) bits[2] = bits[2] === 'x' ? 's' : 'S';
  if (info.perm & 0o2000) bits[5] = bits[5] === 'x' ? 's' : 'S';
  if (info.perm & 0o1000) bits[8] = bits[8] === 'x' ? 't' : 'T';
  return type + bits.join('');
}

/** A time as ISO 8601 UTC with nanoseconds. */
export function timeString(t: Timespec): string {
  const iso = new Date(t.sec * 1000).toISOString();
  return `${iso.slice(0, 19)}.${String(t.nsec).padStart(9, '0')}Z`;
}
