import { chmod, lstat, lutimes, mkdir, open, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { O_CREAT, O_RDONLY, O_TRUNC, O_WRONLY, S_IFREG, type Timespec, type Vfs } from '../fs/vfs.js';
import { childPath, type EntryType } from './tree-source.js';

/**
 * Where `hvshare cp` writes: a domain's filesystem (through its guest agent) or the host's. Paths are absolute in
 * that namespace. Errors keep their errno (`code`), for messages that name the path.
 */
export interface TreeSink {
  /** How messages name a path of this side (`dom1:/a/b`, a host path). */
  where(path: string): string;
  child(dir: string, name: string): string;
  /** The type of what is at `path`, null when nothing is. */
  typeOf(path: string): Promise<EntryType | null>;
  /**
   * Creates (with `perm`) or truncates a file, writes `chunks`, and makes it durable unless `later` and the side
   * has syncAll; returns the bytes written.
   */
  writeFile(path: string, perm: number, chunks: AsyncIterable<Uint8Array>, later?: boolean): Promise<number>;
  /** Makes everything written so far durable at once, through the file `path` (a domain: one journal commit). */
  syncAll?(path: string): Promise<void>;
  /** A new directory its owner may fill (its mode is set once it is filled). */
  mkdir(path: string): Promise<void>;
  symlink(target: string, path: string): Promise<void>;
  unlink(path: string): Promise<void>;
  chmod(path: string, perm: number): Promise<void>;
  /** Sets atime and mtime of `path` itself (a symlink is not followed). */
  setTimes(path: string, atime: Timespec, mtime: Timespec): Promise<void>;
}

const typeOfMode = (isFile: boolean, isDir: boolean, isLink: boolean): EntryType => (isFile ? 'file' : isDir ? 'dir' : isLink ? 'symlink' : 'other');

export function domainSink(domain: string, vfs: Vfs): TreeSink {
  return {
    where: (path) => `${domain}:${path}`,
    child: childPath,
    typeOf: async (path) => {
      try {
        const mode = (await vfs.getattr(path)).mode & 0o170000;
        return typeOfMode(mode === 0o100000, mode === 0o040000, mode === 0o120000);
      } catch (err) {
        if ((err as { code?: string }).code === 'ENOENT') return null;
        throw err;
      }
    },
    writeFile: async (path, perm, chunks, later = false) => {
      const fh = await vfs.create(path, S_IFREG | perm, O_CREAT | O_WRONLY | O_TRUNC);
      let position = 0;
      try {
        for await (const chunk of chunks) position += await vfs.write(fh, position, chunk);
        if (!later) await vfs.fsync(fh, false);
      } finally {
        await vfs.release(fh);
      }
      return position;
    },
    // A domain's fsync commits its journal, waits for every data write and flushes the image: all of it is durable.
    syncAll: async (path) => {
      const fh = await vfs.open(path, O_RDONLY);
      try {
        await vfs.fsync(fh, false);
      } finally {
        await vfs.release(fh);
      }
    },
    mkdir: (path) => vfs.mkdir(path, 0o700),
    symlink: (target, path) => vfs.symlink(target, path),
    unlink: (path) => vfs.unlink(path),
    chmod: (path, perm) => vfs.chmod(path, perm),
    setTimes: (path, atime, mtime) => vfs.utimens(path, atime, mtime),
  };
}

/** Node's utimes takes seconds as a double: host times are set to about a microsecond. */
const seconds = (t: Timespec) => t.sec + t.nsec / 1e9;

export function hostSink(): TreeSink {
  return {
    where: (path) => path,
    child: join,
    typeOf: async (path) => {
      try {
        const s = await lstat(path);
        return typeOfMode(s.isFile(), s.isDirectory(), s.isSymbolicLink());
      } catch (err) {
        if ((err as { code?: string }).code === 'ENOENT') return null;
        throw err;
      }
    },
    writeFile: async (path, perm, chunks) => {
      const handle = await open(path, 'w', perm);
      let position = 0;
      try {
        for await (const chunk of chunks) position += (await handle.write(chunk, 0, chunk.length, position)).bytesWritten;
        await handle.sync();
      } finally {
        await handle.close();
      }
      return position;
    },
    mkdir: async (path) => {
      await mkdir(path, 0o700);
    },
    symlink: (target, path) => symlink(target, path),
    unlink: (path) => unlink(path),
    chmod: (path, perm) => chmod(path, perm),
    setTimes: (path, atime, mtime) => lutimes(path, seconds(atime), seconds(mtime)),
  };
}
