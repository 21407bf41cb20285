/**
 * The ceiling of a view for `hvshare bench fuse`: a minimal fuse-native pass-through of a native folder, every
 * handler one node:fs/promises call on the backing folder. It mounts with a view's own options
 * (mount/fuse-native.ts: big_writes, use_ino and the cache mode's timeouts and direct_io), reports the view's
 * st_blksize, and answers readdir with each entry's type and inode number as a view does. So what a view costs
 * beyond it is the domain's work and the hops to it, not FUSE.
 *
 * The handlers run on this process's main thread, like a view's: nothing here may be touched synchronously.
 */
import { constants, type Stats } from 'node:fs';
import { lstat, open, readdir, statfs, type FileHandle } from 'node:fs/promises';
import * as fs from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { CacheMode } from '../mount/cache-mode.js';
import { errnoFromName, errnoOf } from '../mount/errno.js';
import { isMounted } from '../mount/fuse-adapter.js';
import { Fuse, fuseOptions, PREFERRED_IO_SIZE, UTIME_NOW, UTIME_OMIT } from '../mount/fuse-native.js';
import type { Timespec } from '../fs/vfs.js';

export interface Passthrough {
  readonly mountpoint: string;
  unmount(): Promise<void>;
}

const ENODATA = errnoFromName('ENODATA');

/** The open(2) flags a view forwards (fuse-adapter.ts's OPEN_FLAGS). */
const OPEN_FLAGS = constants.O_WRONLY | constants.O_RDWR | constants.O_APPEND | constants.O_TRUNC;

const fuseStat = (s: Stats) => ({
  mode: s.mode,
  uid: s.uid,
  gid: s.gid,
  size: s.size,
  nlink: s.nlink,
  ino: s.ino,
  blksize: PREFERRED_IO_SIZE,
  blocks: s.blocks,
  atime: s.atime,
  mtime: s.mtime,
  ctime: s.ctime,
});

/** A handler: one call of the callback, with 0, a count or a negative errno first (fuse-native needs a number). */
const serve =
  (fn: (...args: any[]) => Promise<unknown>) =>
  (...args: unknown[]): void => {
    const cb = args.pop() as (code: number, ...values: unknown[]) => void;
    fn(...args).then(
      (result) => (Array.isArray(result) ? cb(...(result as [number, ...unknown[]])) : cb(typeof result === 'number' ? result : 0)),
      (err: unknown) => cb(errnoOf(err)),
    );
  };

/** Mount a pass-through of `backing` at `mountpoint` with a view's options for `cache`. */
export async function mountPassthrough(backing: string, mountpoint: string, cache: CacheMode): Promise<Passthrough> {
  const root = resolve(backing);
  const mnt = resolve(mountpoint);
  const at = (path: string) => join(root, path);
  const files = new Map<number, FileHandle>();
  const opened = (handle: FileHandle) => {
    files.set(handle.fd, handle);
    return [0, handle.fd];
  };
  const file = (fd: number) => {
    const handle = files.get(fd);
    if (!handle) throw Object.assign(new Error('no such handle'), { code: 'EBADF' });
    return handle;
  };

  const ops = {
    init: (cb: (code: number) => void) => cb(0),
    getattr: serve(async (path: string) => [0, fuseStat(await lstat(at(path)))]),
    access: serve((path: string, mode: number) => fs.access(at(path), mode)),
    readdir: serve(async (path: string) => {
      const names = ['.', '..', ...(await readdir(at(path)))];
      const stats = await Promise.all(names.map((name) => lstat(join(at(path), name))));
      return [0, names, stats.map((s) => ({ ino: s.ino, mode: s.mode & constants.S_IFMT }))];
    }),
    statfs: serve(async (path: string) => {
      const s = await statfs(at(path));
      return [0, { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, namemax: 255 }];
    }),
    open: serve(async (path: string, flags: number) => opened(await open(at(path), flags & OPEN_FLAGS))),
    // A view creates with O_CREAT | O_RDWR too (fuse-native does not pass create's flags).
    create: serve(async (path: string, mode: number) => opened(await open(at(path), constants.O_CREAT | constants.O_RDWR, mode))),
    // Straight into and out of libfuse's buffer: it stays valid until the callback.
    read: serve(async (_path: string, fd: number, buf: Buffer, len: number, pos: number) => (await file(fd).read(buf, 0, len, pos)).bytesRead),
    write: serve(async (_path: string, fd: number, buf: Buffer, len: number, pos: number) => (await file(fd).write(buf, 0, len, pos)).bytesWritten),
    flush: serve(async () => 0),
    release: serve(async (_path: string, fd: number) => {
      const handle = file(fd);
      files.delete(fd);
      await handle.close();
    }),
    fsync: serve((_path: string, datasync: number, fd: number) => (datasync ? file(fd).datasync() : file(fd).sync())),
    fsyncdir: serve(async (path: string) => {
      const dir = await open(at(path), constants.O_RDONLY);
      await dir.sync().finally(() => dir.close());
    }),
    truncate: serve((path: string, size: number) => fs.truncate(at(path), size)),
    ftruncate: serve((_path: string, fd: number, size: number) => file(fd).truncate(size)),
    mkdir: serve((path: string, mode: number) => fs.mkdir(at(path), { mode })),
    rmdir: serve((path: string) => fs.rmdir(at(path))),
    unlink: serve((path: string) => fs.unlink(at(path))),
    rename: serve((from: string, to: string) => fs.rename(at(from), at(to))),
    link: serve((from: string, to: string) => fs.link(at(from), at(to))),
    // The target is the link's text, not a path in this folder.
    symlink: serve((target: string, path: string) => fs.symlink(target, at(path))),
    readlink: serve(async (path: string) => [0, await fs.readlink(at(path))]),
    // Extended attributes: Node has no call for them, and the bench's files have none, so each is answered as
    // Linux answers for such a file, after looking the file up (as the syscall would). Without these handlers
    // libfuse answers ENOSYS, the kernel stops asking this mount, and `ls -l` (two getxattr per entry, which a
    // view, having extended attributes, must answer) would cost the ceiling two requests fewer per entry.
    getxattr: serve(async (path: string) => (await lstat(at(path)), ENODATA)),
    listxattr: serve(async (path: string) => (await lstat(at(path)), [0, []])),
    chmod: serve((path: string, mode: number) => fs.chmod(at(path), mode)),
    chown: serve((path: string, uid: number, gid: number) => fs.lchown(at(path), uid, gid)),
    // fuse-native hands over the atime twice; a view sets both times to it, and so does this.
    // Seconds as Node's lutimes takes them (microseconds survive, as for any Node program); UTIME_OMIT keeps the
    // time the file has.
    utimens: serve(async (path: string, atime: Timespec, mtime: Timespec) => {
      const now = await lstat(at(path));
      const seconds = (t: Timespec, kept: number) => (t.nsec === UTIME_OMIT ? kept : t.nsec === UTIME_NOW ? Date.now() / 1000 : t.sec + t.nsec / 1e9);
      return fs.lutimes(at(path), seconds(atime, now.atimeMs / 1000), seconds(mtime, now.mtimeMs / 1000));
    }),
  };

  const fuse = new Fuse(mnt, ops as never, fuseOptions('hvshare-passthrough', cache));
  await new Promise<void>((done, fail) => fuse.mount((err) => (err ? fail(err) : done())));
  let unmounting: Promise<void> | null = null;
  return {
    mountpoint: mnt,
    unmount() {
      unmounting ??= (async () => {
        await new Promise<void>((done) => fuse.unmount(() => done()));
        for (let i = 0; i < 250 && (await isMounted(mnt)); i++) await new Promise((r) => setTimeout(r, 20));
        for (const handle of files.values()) await handle.close().catch(() => {});
        if (await isMounted(mnt)) throw new Error(`${mnt} is still mounted`);
      })();
      return unmounting;
    },
  };
}
