/**
 * The part of fuse-native 2.2.6 hvshare uses (it ships no types), and the mount options of a view. The options
 * live here, not in the adapter, so that `hvshare bench fuse`'s pass-through ceiling mounts with exactly the same
 * ones (see fuse-adapter.ts for why each is there).
 */
import { createRequire } from 'node:module';
import { cacheOptions, type CacheMode } from './cache-mode.js';

export interface FuseInstance {
  /** The uid and gid of the process whose request is being dispatched (patched fuse-native; read it synchronously). */
  readonly caller?: { uid: number; gid: number };
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
  /**
   * Answers the patched fuse-native gives on its libfuse threads, without this thread: getattr's stat or errno,
   * and "none" to getxattr and listxattr when the stat said so, for a path (and readdir's entries, below), while
   * the change count in `word` (the first word of an Int32Array over shared memory) reads `count`. A new word
   * forgets every answer. An errno of -1 with a null stat says only "no extended attributes" (getattr is still
   * asked of this thread).
   */
  answersCount(word: Int32Array): void;
  answer(path: string, count: number, stat: Record<string, unknown> | null, errno: number, noXattrs: boolean): void;
  /** A directory's entries (names, inode numbers, S_IFMT bits), answered to readdir the same way. */
  answerListing(path: string, count: number, names: string[], inos: number[], modes: number[]): void;
  /** Requests answered on the libfuse threads so far. */
  readonly answeredNatively: number;
}
export interface FuseConstructor {
  new (mountpoint: string, ops: Record<string, (...args: never[]) => void>, options: Record<string, unknown>): FuseInstance;
  unmount(mountpoint: string, cb: (err: Error | null) => void): void;
}
export const Fuse = createRequire(import.meta.url)('fuse-native') as FuseConstructor;

/** utimensat(2)'s special nanosecond values, exported by the patched fuse-native only (undefined otherwise). */
export const { UTIME_NOW, UTIME_OMIT } = Fuse as unknown as { UTIME_NOW?: number; UTIME_OMIT?: number };

/**
 * st_blksize: cp, cat, cmp and friends size their buffers by it. 128 KiB is the largest request libfuse 2.9 passes
 * (reads and, with big_writes, writes), so one read(2) of that size is one round trip into the domain.
 */
export const PREFERRED_IO_SIZE = 128 << 10;

/**
 * fuse-native's constructor options for a mount named `name` (an fsname) in a cache mode. Every user of the host
 * may use the view (allow_other) unless it is `private` (only the user who mounted it), and the host kernel checks
 * modes and owners itself (default_permissions), as for a local filesystem.
 */
export function fuseOptions(
  name: string,
  cache: CacheMode,
  o: { readOnly?: boolean; debug?: boolean; timeoutMs?: number; private?: boolean; devices?: boolean } = {},
) {
  // Options fuse-native does not expose ride on fsname, which it forwards verbatim into `-o`.
  const fsname = [name.replace(/[^A-Za-z0-9_.-]/g, '_'), 'big_writes', 'use_ino', ...cacheOptions(cache), ...(o.readOnly ? ['ro'] : []), ...(o.devices ? ['dev'] : [])];
  return {
    fsname: fsname.join(','), subtype: 'hvshare', force: true, mkdir: true, autoUnmount: true, debug: !!o.debug, timeout: o.timeoutMs ?? 30_000,
    allowOther: !o.private, defaultPermissions: true,
  };
}
