/**
 * The FUSE adapter: mounts one domain's view of the shared volume on the host.
 *
 * Every FUSE request really goes through the domain: host kernel -> libfuse thread -> fuse-native -> this file's
 * handler (on the main thread) -> DomainHandle.call({kind: 'vfs', ...}) -> the domain's guest agent, which runs it
 * as a process in the guest kernel -> the guest's filesystem -> blkfront hypercalls -> the monitor. Read-only
 * grants, EROFS, ENOSPC, lock revocations and the like are all decided inside the platform. What is answered here:
 * a question that changes nothing (a stat, a listing, a symlink target, an extended attribute) the domain answered
 * already while its change count has not moved since (answer-cache.ts: exact, in every mode), and in auto mode
 * "no extended attributes" within the bound (noXattrsCache).
 *
 * FUSE options (fuse-native 2.2.6 / libfuse 2.9; see ../shared/NOTES-FUSE.md). The options fuse-native does
 * not expose are appended to `fsname` (fuse-native forwards `fsname=...` verbatim into the `-o` list):
 *  - `big_writes`: writes reach the handler as up to 128 KiB calls instead of 4 KiB ones (about 13x the
 *    throughput with a no-op handler, more here since every call is a round trip into the domain).
 *  - `use_ino`: st_ino is the filesystem's inode number, so hard links, `cp -a`, `find -samefile`, git and `diff`
 *    see stable, shared identities.
 *  - Coherence between domains: another domain may change any file at any time, and the host kernel keeps a
 *    page cache and an attribute/dentry cache per mount. What it may keep is the view's cache mode
 *    (cache-mode.ts): `strict` (zero timeouts and `direct_io`, never stale) or `auto=MS` (timeouts of MS,
 *    close-to-open data). libfuse 2.9's high-level API cannot invalidate the kernel's caches (NOTES-FUSE.md), so
 *    these two are the only honest choices. Without direct_io, a file held open while another domain rewrites it
 *    in place with the same size is served from stale pages (the e2e test "no stale host cache" fails).
 *    Costs measured on this machine (dd, 64 MiB, two rw domains; direct_io vs page cache):
 *       write bs=1M + fsync   241 vs 221 MB/s      read bs=1M  351 vs 426 MB/s (from the other domain 322 vs 383)
 *       write bs=4k            24 vs  21 MB/s      read bs=4k   29 vs 496 MB/s
 *    Zero attr/entry timeouts: `ls -lR` of 1000 files takes 720 ms instead of 115 ms (cold) / 15 ms (warm) with
 *    1 s timeouts.
 *  - `force: true` (a stale mount left by a crash, ENOTCONN, is lazily unmounted first) and `autoUnmount: true`
 *    (libfuse's helper unmounts if this process dies, even by kill -9).
 *  - `readOnly` adds the kernel's `ro` flag: the host refuses writes itself. A domain with a read-only grant does
 *    not need it; its EROFS comes from the platform.
 *
 * utimens and times: fuse-native 2.2.6 as published loses them (its C glue hands JavaScript the atime twice and
 * whole milliseconds, and leaves libfuse's flag_utime_omit_ok unset, so libfuse drops a setattr of one time:
 * `touch -m`, `touch -a`). npm install patches it and builds it from source (mount/patch-fuse-native.mjs; README,
 * "Times through a view"): utimens receives both times as {sec, nsec}, with utimensat's UTIME_NOW or UTIME_OMIT
 * in nsec, which become 'now' and null here so that the domain reads its own clock; stat times go out as
 * {sec, nsec} unchanged.
 *
 * Symlinks: FUSE asks to change the path's own inode (lchown, utimensat(AT_SYMLINK_NOFOLLOW), which `cp -a`
 * issues for every symlink it copies); the guest filesystem's chown/utimens do exactly that.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, resolve as resolvePath } from 'node:path';
import { promisify } from 'node:util';
import type { AgentResult, ResultWithStats, VfsOp } from '../guests/agent-protocol.js';
import type { DomainHandle } from '../hypervisor/toolstack.js';
import {
  O_ACCMODE, O_APPEND, O_CREAT, O_RDONLY, O_RDWR, O_TRUNC, type DirListing, type Owner, type Stat, type StatFs, type TimeChange, type Timespec,
} from '../fs/vfs.js';
import { ancestorsOf, AnswerCache } from './answer-cache.js';
import { ReadAhead } from './read-ahead.js';
import { STRICT, type CacheMode } from './cache-mode.js';
import { allowOtherRefusal } from './fuse-conf.js';
import { EIO, errnoFromName, errnoOf } from './errno.js';
import { Fuse, fuseOptions, type FuseInstance, PREFERRED_IO_SIZE, UTIME_NOW, UTIME_OMIT } from './fuse-native.js';

export interface MountOptions {
  /** Mount with the kernel's `ro` flag (the host refuses writes before they reach the domain). */
  readOnly?: boolean;
  /** libfuse's request trace on stderr, and every failed operation logged. */
  debug?: boolean;
  /** What the host kernel may cache of the view (cache-mode.ts): `strict` (the default) or `auto` with its bound. */
  cache?: CacheMode;
  /** Per-operation timeout in ms; an operation the domain does not answer in time fails with ETIMEDOUT. */
  timeoutMs?: number;
  /** Only the user who mounts the view may use it (no allow_other). */
  private?: boolean;
  /**
   * Device files of the view open the host's devices (the `dev` mount option; root only). Off by default, as for
   * every FUSE mount: any domain may write the volume, and a device node it made would open a host device.
   */
  devices?: boolean;
}

export interface MountedView {
  readonly mountpoint: string;
  /** The domain the view currently serves. */
  readonly domain: DomainHandle;
  /**
   * Serve from `domain` from now on (the same domain booted again after a crash). Handles opened before belong
   * to the dead instance and answer an error; paths work at once.
   */
  rebind(domain: DomainHandle): void;
  /** Operations served and failed so far, by FUSE operation name. */
  readonly counters: { calls: Record<string, number>; errors: Record<string, number> };
  /** Questions answered here, without a call into the domain (mount/answer-cache.ts). */
  readonly answeredHere: number;
  /** Of those, the ones answered on the libfuse threads, without a hop to the main thread (fuse-native.ts). */
  readonly answeredOffMainThread: number;
  /** Stats asked of the domain along with a lookup, ahead of the lookups that will want them (answer-cache.ts). */
  readonly askedAhead: number;
  /**
   * Sequential reads answered from what the view read ahead, fetches asked for and dropped unused, and small reads
   * answered again (read-ahead.ts).
   */
  readonly readAhead: ReadAhead['stats'];
  /** Unmount (lazily, like `fusermount -uz`) and wait until the mount has left /proc/mounts. Idempotent. */
  unmount(): Promise<void>;
}

const W_OK = 2;
/** A time as the patched fuse-native hands it to utimens, as the domain's utimens takes it. */
const timeChange = (time: Timespec): TimeChange => (time.nsec === UTIME_OMIT ? null : time.nsec === UTIME_NOW ? 'now' : time);
/** The open(2) flags worth forwarding to the guest; O_LARGEFILE, O_NOFOLLOW, O_CLOEXEC... mean nothing there. */
const OPEN_FLAGS = O_ACCMODE | O_APPEND | O_TRUNC;

const execFileAsync = promisify(execFile);

/** Mount points as /proc/mounts lists them (octal escapes decoded). */
export async function mountedPaths(): Promise<string[]> {
  const text = await readFile('/proc/mounts', 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split(' ')[1]!.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8))));
}

export async function isMounted(mountpoint: string): Promise<boolean> {
  return (await mountedPaths()).includes(resolvePath(mountpoint));
}

/** The word of a domain's change count, as the libfuse threads read it. */
const changeWord = (domain: DomainHandle) => new Int32Array(domain.changes.buffer, 0, 1);

function toFuseStat(s: Stat) {
  return {
    mode: s.mode,
    uid: s.uid,
    gid: s.gid,
    size: s.size,
    dev: 0,
    nlink: s.nlink,
    ino: s.ino,
    rdev: s.rdev,
    blksize: PREFERRED_IO_SIZE,
    blocks: s.blocks,
    atime: s.atime,
    mtime: s.mtime,
    ctime: s.ctime,
  };
}

/**
 * Mount `domain`'s filesystem at `mountpoint` (created if missing). The handlers run on this thread's event loop,
 * so this process must never touch the mount synchronously (fs.*Sync, execSync) nor spawn a child with its `cwd`
 * inside the mount (libuv holds the parent until the child execs, and the child's chdir waits for a FUSE answer
 * from that very parent: both hang for good). Child processes that `cd` themselves are fine.
 */
export async function mountDomain(domain: DomainHandle, mountpoint: string, options: MountOptions = {}): Promise<MountedView> {
  const mnt = resolvePath(mountpoint);
  if (UTIME_NOW === undefined) throw new Error('fuse-native is not patched for exact times: run `npm install` (mount/patch-fuse-native.mjs)');
  const refusal = options.private ? null : await allowOtherRefusal();
  if (refusal) throw new Error(`cannot mount ${mnt}: ${refusal}`);
  await mkdir(mnt, { recursive: true }).catch(() => {
    // A stale mount (ENOTCONN) makes mkdir fail; fuse-native's `force` clears it below.
  });
  const counters = { calls: {} as Record<string, number>, errors: {} as Record<string, number> };
  const debug = !!options.debug;

  let current = domain;
  const vfs = <T extends AgentResult>(op: VfsOp, ...args: unknown[]): Promise<T> =>
    current.call<T>({ kind: 'vfs', op, args });

  /**
   * Wrap an async handler: whatever happens, the callback gets exactly one call whose first argument is a number
   * (0, a byte count, or a negative errno). fuse-native dies on anything else (NOTES-FUSE.md).
   */
  function handler(name: string, fn: (...args: any[]) => Promise<number | [number, ...unknown[]]>) {
    return (...args: unknown[]): void => {
      const cb = args.pop() as (code: number, ...values: unknown[]) => void;
      counters.calls[name] = (counters.calls[name] ?? 0) + 1;
      let answered = false;
      const reply = (code: number, ...values: unknown[]) => {
        if (answered) return;
        answered = true;
        if (typeof code !== 'number' || !Number.isFinite(code)) code = EIO;
        try {
          cb(code, ...values);
        } catch (err) {
          if (debug) console.error(`hvshare fuse ${domain.name}: ${name} callback threw`, err);
        }
      };
      let pending: Promise<number | [number, ...unknown[]]>;
      try {
        pending = fn(...args);
      } catch (err) {
        pending = Promise.reject(err);
      }
      pending.then(
        (result) => (Array.isArray(result) ? reply(...result) : reply(result)),
        (err: unknown) => {
          counters.errors[name] = (counters.errors[name] ?? 0) + 1;
          const code = errnoOf(err);
          // Errors with an errno are answers (ENOENT on lookups is routine); anything else is a bug worth a line.
          const errno = (err as { code?: unknown } | null)?.code;
          if (debug || typeof errno !== 'string') {
            const message = err instanceof Error ? err.message : String(err);
            console.error(`hvshare fuse ${domain.name}: ${name}(${JSON.stringify(args[0])}) -> ${code}: ${message}`);
          }
          reply(code);
        },
      );
    };
  }

  /** Who asks: the owner of what the request creates (read while the handler is called, before any await). */
  const caller = (): Owner => {
    const ids = fuse.caller;
    if (!ids) throw new Error('fuse-native is not patched to name the caller: run `npm install` (mount/patch-fuse-native.mjs)');
    return { uid: ids.uid, gid: ids.gid };
  };

  /** An operation whose FUSE arguments (before the callback) are exactly those of the Vfs call, answered 0. */
  const forward = (op: VfsOp) =>
    handler(op, async (...args: unknown[]) => {
      await vfs(op, ...args);
      return 0;
    });

  /**
   * Vfs `op` on `path`, which changes its attributes ('attributes'), adds it to its directory ('name') or removes
   * it ('removal'). The domain answers the stats it left along (vfs-stat: the path's but for a removal, and its
   * directory's for a name added or removed), and when the operation was all the domain did meanwhile they are
   * kept as answers, with those of the directories above, which it did not change (AnswerCache.changedAlone; for
   * a removal, what the view knew of the rest holds on too: removedAlone). libfuse follows every operation but a
   * removal with a getattr of the path, and the next operation walks the same directories: answered on the
   * libfuse threads, where each was a call into the domain.
   */
  const changing = async <T extends AgentResult>(op: VfsOp, path: string, what: 'attributes' | 'name' | 'removal', ...args: unknown[]): Promise<T> => {
    const domain = current;
    const paths = what === 'attributes' ? [path] : what === 'name' ? [path, dirname(path)] : [dirname(path)];
    const { result, from } = await domain.soleChange(() => domain.call<ResultWithStats>({ kind: 'vfs-stat', op, args, paths }));
    if (from !== null) {
      const unchanged = ancestorsOf(paths.at(-1)!);
      if (what === 'removal') answers.removedAlone(domain, from, path, paths, result.stats, unchanged);
      else answers.changedAlone(domain, from, paths, result.stats, unchanged);
    }
    return result.result as T;
  };

  /** `changing` for an operation whose FUSE arguments are those of the Vfs call and whose path is its first (or `at`). */
  const forwardChanging = (op: VfsOp, what: 'attributes' | 'name' | 'removal', at = 0) =>
    handler(op, async (...args: unknown[]) => {
      await changing(op, args[at] as string, what, ...args);
      return 0;
    });

  /** The same for an operation that creates: the Vfs call takes the caller as its owner after FUSE's arguments. */
  const forwardOwned = (op: VfsOp, at = 0) =>
    handler(op, async (...args: unknown[]) => {
      await changing(op, args[at] as string, 'name', ...args, caller());
      return 0;
    });

  const none = noXattrsCache(options.cache ?? STRICT);
  // Strict views read sequential handles ahead (read-ahead.ts); in auto mode the kernel's own readahead does.
  const readAhead = new ReadAhead();
  const readsAhead = (options.cache ?? STRICT).mode === 'strict';
  // Stats and listings are also answered on the libfuse threads while the count stands (fuse-native.ts): a lookup,
  // stat or readdir answered there costs no hop to this thread. Only the domain served now is answered for.
  const answers = new AnswerCache({
    stat(from, path, count, stat, errno) {
      if (from === current) fuse.answer(path, count, stat ? toFuseStat(stat) : null, errno, !!stat && !stat.xattrs);
    },
    listing(from, path, count, { names, inos, types }) {
      if (from === current) fuse.answerListing(path, count, names, inos, types);
    },
    noXattrs(from, path, count) {
      if (from === current) fuse.answer(path, count, null, -1, true);
    },
  });
  /** The domain said so and nothing changed since (any mode), or said so within the auto bound. */
  const noXattrs = (path: string) => answers.hasNoXattrs(current, path) || none.has(path);
  const ops = {
    init: (cb: (code: number) => void) => cb(0),

    getattr: handler('getattr', async (path: string) => {
      const st = await answers.ask<Stat>(current, 'getattr', path);
      none.saw(path, st);
      return [0, toFuseStat(st)];
    }),

    // Existence through the domain; W_OK answers EROFS on a host-read-only view. Modes and owners are the host
    // kernel's to check (default_permissions), which then no longer asks this handler at all.
    access: handler('access', async (path: string, mode: number) => {
      await answers.ask<Stat>(current, 'getattr', path);
      if (options.readOnly && mode & W_OK) return errnoFromName('EROFS');
      return 0;
    }),

    // With a stat per name, libfuse fills each entry's d_type and (use_ino) d_ino: find and du need no stat.
    readdir: handler('readdir', async (path: string) => {
      const { names, inos, types } = await answers.ask<DirListing>(current, 'readdirEntries', path);
      return [0, names, inos.map((ino, i) => ({ ino, mode: types[i] }))];
    }),

    statfs: handler('statfs', async (path: string) => {
      const s = await vfs<StatFs>('statfs', path);
      return [0, { ...s, favail: s.ffree }];
    }),

    open: handler('open', async (path: string, flags: number) => [0, await vfs<number>('open', path, flags & OPEN_FLAGS)]),

    // fuse-native does not pass create's open flags; the kernel has already checked O_EXCL against a negative
    // lookup, and the new file is empty, so O_CREAT | O_RDWR is what every create needs.
    create: handler('create', async (path: string, mode: number) => [0, await changing<number>('create', path, 'name', path, mode, O_CREAT | O_RDWR, caller())]),

    // The bytes go through the domain's data window (guests/data-window.ts): copied in or out of fuse-native's
    // buffer before the callback, which detaches it.
    read: handler('read', (path: string, fh: number, buf: Buffer, len: number, pos: number) =>
      readsAhead ? readAhead.read(current, fh, path, pos, buf.subarray(0, len)) : current.readInto(fh, pos, buf.subarray(0, len)),
    ),

    // Written by anyone but root, the file loses set-user-ID (and set-group-ID if group-executable) as on Linux:
    // libfuse 2.9 lets the kernel leave that to the filesystem under direct_io.
    write: handler('write', async (path: string, fh: number, buf: Buffer, len: number, pos: number) => {
      const domain = current;
      const { result, from } = await domain.soleChange(() => domain.writeFrom(fh, pos, buf.subarray(0, len), caller().uid !== 0));
      if (from !== null) answers.writtenAlone(domain, path, from, ancestorsOf(path));
      return result;
    }),

    // No flush handler: close(2) has nothing to do here (the guest filesystem has no write-back of its own to the
    // host, and release hands a shared file back). libfuse answers ENOSYS, after which the kernel never sends
    // FLUSH again on this mount: one round trip less per close.

    release: handler('release', async (_path: string, fh: number) => {
      readAhead.forget(fh);
      await vfs('release', fh);
      return 0;
    }),

    fsync: handler('fsync', async (_path: string, datasync: number, fh: number) => {
      await vfs('fsync', fh, !!datasync);
      return 0;
    }),

    // No opendir handler, so directories have no handle: open one in the domain to commit its journal. This makes
    // a directory fsync (sqlite after creating its journal, rename-then-fsync(dir) patterns) durable.
    fsyncdir: handler('fsyncdir', async (path: string, datasync: number) => {
      const fh = await vfs<number>('open', path, O_RDONLY);
      try {
        await vfs('fsync', fh, !!datasync);
      } finally {
        await vfs('release', fh).catch(() => {});
      }
      return 0;
    }),

    truncate: forwardChanging('truncate', 'attributes'),
    // Through the handle: also right for a file unlinked while open (libfuse keeps it under a hidden name).
    ftruncate: handler('ftruncate', async (_path: string, fh: number, size: number) => {
      await vfs('ftruncate', fh, size);
      return 0;
    }),
    // fallocate(2) (the patched fuse-native passes it): modes as Linux numbers them, through the handle.
    fallocate: handler('fallocate', async (_path: string, fh: number, mode: number, offset: number, length: number) => {
      await vfs('fallocate', fh, mode, offset, length);
      return 0;
    }),
    mkdir: forwardOwned('mkdir'),
    rmdir: forwardChanging('rmdir', 'removal'),
    unlink: forwardChanging('unlink', 'removal'),
    rename: handler('rename', async (from: string, to: string) => {
      none.clear();
      await vfs('rename', from, to);
      return 0;
    }),
    link: forwardChanging('link', 'name', 1),
    symlink: forwardOwned('symlink', 1),
    // FIFOs, sockets (bind(2) on a view) and devices; fuse-native passes the mode and dev_t as uint32, which
    // holds every device number glibc's makedev encodes for majors below 4096.
    mknod: forwardOwned('mknod'),
    readlink: handler('readlink', async (path: string) => [0, await answers.ask<string>(current, 'readlink', path)]),

    // Extended attributes (fuse-native passes no size: its patched glue answers ERANGE for a buffer too small).
    setxattr: handler('setxattr', async (path: string, name: string, value: Buffer, _position: number, flags: number) => {
      // Copy out first: the value is libfuse's memory, detached once we answer.
      const data = new Uint8Array(value.length);
      data.set(value);
      none.forget(path);
      await vfs('setxattr', path, name, data, flags);
      return 0;
    }),
    // ls -l asks two of these per entry (security.selinux, then system.posix_acl_access): a path whose stat says
    // it has none is answered here while the domain's count stands, or in auto mode within the bound.
    getxattr: handler('getxattr', async (path: string, name: string) => {
      if (noXattrs(path)) return errnoFromName('ENODATA');
      return [0, Buffer.from(await answers.ask<Uint8Array>(current, 'getxattr', path, name))];
    }),
    listxattr: handler('listxattr', async (path: string) => [0, noXattrs(path) ? [] : [...(await answers.ask<string[]>(current, 'listxattr', path))]]),
    removexattr: forward('removexattr'),

    chmod: forwardChanging('chmod', 'attributes'),
    chown: forwardChanging('chown', 'attributes'),
    utimens: handler('utimens', async (path: string, atime: Timespec, mtime: Timespec) => {
      await changing('utimens', path, 'attributes', path, timeChange(atime), timeChange(mtime));
      return 0;
    }),
  };

  const fuse: FuseInstance = new Fuse(mnt, ops as never, fuseOptions(`hvshare-${domain.name}`, options.cache ?? STRICT, { ...options, debug }));
  await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
  fuse.answersCount(changeWord(domain));

  let unmounting: Promise<void> | null = null;
  return {
    mountpoint: mnt,
    get domain() {
      return current;
    },
    rebind(next: DomainHandle) {
      current = next;
      fuse.answersCount(changeWord(next));
    },
    counters,
    get answeredHere() {
      return answers.hits + fuse.answeredNatively;
    },
    get answeredOffMainThread() {
      return fuse.answeredNatively;
    },
    get askedAhead() {
      return answers.askedAhead;
    },
    get readAhead() {
      return { ...readAhead.stats };
    },
    unmount() {
      unmounting ??= (async () => {
        await new Promise<void>((resolve) =>
          fuse.unmount((err) => {
            if (err && debug) console.error(`hvshare fuse ${domain.name}: unmount: ${err.message}`);
            resolve();
          }),
        );
        // fusermount -uz detaches at once; the kernel drops the connection when the last user leaves.
        for (let i = 0; i < 250 && (await isMounted(mnt)); i++) await new Promise((r) => setTimeout(r, 20));
        if (await isMounted(mnt)) {
          await execFileAsync('fusermount', ['-uz', mnt]).catch(() => {});
          if (await isMounted(mnt)) throw new Error(`${mnt} is still mounted`);
        }
      })();
      return unmounting;
    },
  };
}

/**
 * In `auto` mode the host kernel may serve a view's attributes for MS; extended attributes are attributes too. A
 * path whose getattr said "no extended attributes" is answered ENODATA (and an empty list) here for the same MS,
 * without a call into the domain; a setxattr through this view forgets the path, a rename every path. In
 * `strict` mode nothing is remembered.
 */
function noXattrsCache(cache: CacheMode) {
  const ms = cache.mode === 'auto' ? cache.ms : 0;
  const until = new Map<string, number>();
  return {
    saw(path: string, st: Stat): void {
      if (ms <= 0) return;
      if (st.xattrs) until.delete(path);
      else {
        // Bounded: a walk over a huge tree starts over rather than growing without end.
        if (until.size >= 100_000) until.clear();
        until.set(path, performance.now() + ms);
      }
    },
    has(path: string): boolean {
      const at = until.get(path);
      if (at === undefined) return false;
      if (performance.now() < at) return true;
      until.delete(path);
      return false;
    },
    forget(path: string): void {
      until.delete(path);
    },
    clear(): void {
      until.clear();
    },
  };
}
