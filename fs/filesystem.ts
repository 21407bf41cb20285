/**
 * The shared-volume filesystem: one instance per domain (per journal slot), implementing the path-based Vfs over
 * a BlockDevice, coherent with the other instances through the LockService.
 *
 * Operations run one at a time (OpQueue). Each takes the volume lock (name 0) shared to read or exclusive to
 * change, and keeps it cached afterwards. Changes collect in one running transaction (group commit) that is
 * committed through this slot's journal on fsync, when it fills up, after `commitIntervalMs`, on a revoke and
 * at unmount. A revoke waits for the operation in flight, commits (log, home, clear), unlocks (dirty if anything
 * changed) and, if it changed anything, drops the cache; a grant whose generation differs from the last one seen
 * drops the cache too.
 *
 * Journal recovery rule: a live instance clears its journal before it gives up the exclusive lock, so whoever
 * holds the volume exclusively and finds a journal that is not clean knows its owner died. On every grant with a
 * new generation (and so at mount) the instance reads all journal headers and, holding the lock exclusively,
 * replays committed ones and clears torn ones (its own slot included). A shared holder that finds one trades its
 * lock for an exclusive one first; on a read-only device it cannot, and fails with EIO.
 *
 * Not done (documented gaps): no permission checks (the FUSE mount's default_permissions does them), atime is
 * not updated by reads (noatime), per-inode locks.
 */
import { IoError, type BlockDevice } from './block-device.js';
import { BlockCache } from './block-cache.js';
import { Allocator } from './allocator.js';
import { BlockMap } from './block-map.js';
import { Directories, DOTDOT, entryTypeOf, EntryType } from './directory.js';
import { FileIo } from './file-io.js';
import { emptyInode, InodeStore, isDir, isRegular, isSymlink, type Inode } from './inode.js';
import { dirtyJournalSlots, Journal, replayJournal } from './journal.js';
import {
  BLOCK_SIZE, BlockType, Geometry, HEADER_SIZE, MAX_FILE_SIZE, NAME_MAX, readSuperblock, resealBlock, ROOT_INO,
  SYMLINK_MAX, view, type Superblock,
} from './layout.js';
import type { LockMode, LockService } from './lock-service.js';
import { OpQueue } from './op-queue.js';
import { OrphanList } from './orphans.js';
import { checkName, decodeName, encodeName, splitParent, splitPath } from './path.js';
import {
  O_ACCMODE, O_APPEND, O_CREAT, O_EXCL, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
  type Stat, type StatFs, type Vfs,
} from './vfs.js';

export interface MountOptions {
  /** This instance's journal slot (0 .. slotCount-1); two live instances must never share one. */
  slot: number;
  locks: LockService;
  /** Metadata blocks kept in memory (default 8192 = 32 MiB). */
  cacheBlocks?: number;
  /** Commit a running transaction at most this long after it started; 0 = only on fsync, revoke, full, unmount. */
  commitIntervalMs?: number;
  /** Clock for timestamps (ms). */
  now?: () => number;
}

/** The volume lock's name in the LockService. */
export const VOLUME_LOCK = 0;
/** Journal blocks an operation step may dirty at most; a transaction with less room left commits first. */
const STEP_RESERVE = 32;
const MAX_SYMLINK_DEPTH = 40;
const MAX_LINKS = 65000;

interface Handle {
  ino: number;
  generation: number;
  flags: number;
}

export class FileSystem implements Vfs {
  private readonly geometry: Geometry;
  private readonly cache: BlockCache;
  private readonly allocator: Allocator;
  private readonly inodes: InodeStore;
  private readonly map: BlockMap;
  private readonly dirs: Directories;
  private readonly data: FileIo;
  private readonly orphans: OrphanList;
  private readonly queue = new OpQueue();
  private readonly now: () => number;
  private readonly locks: LockService;
  private journal: Journal | null = null;

  private held: LockMode | null = null;
  private seenGeneration: number | null = null;
  private changedSinceGrant = false;
  private revokeQueued = false;

  private readonly handles = new Map<number, Handle>();
  private readonly openCounts = new Map<number, number>();
  private nextHandle = 1;
  private mounted = true;
  private failure: Error | null = null;
  private commitTimer: NodeJS.Timeout | null = null;
  private readonly commitIntervalMs: number;
  readonly slot: number;
  /** Counters for tests and diagnostics. */
  readonly stats = { revokes: 0, grants: 0, cacheDrops: 0, replays: 0 };

  private constructor(
    private readonly dev: BlockDevice,
    readonly superblock: Superblock,
    options: MountOptions,
  ) {
    this.slot = options.slot;
    this.locks = options.locks;
    this.now = options.now ?? Date.now;
    this.commitIntervalMs = options.commitIntervalMs ?? 5000;
    this.geometry = new Geometry(superblock);
    this.cache = new BlockCache(dev, options.cacheBlocks ?? 8192);
    const preferredGroup = Math.floor((options.slot * superblock.groupCount) / superblock.slotCount);
    this.allocator = new Allocator(this.cache, this.geometry, preferredGroup);
    this.inodes = new InodeStore(this.cache, this.geometry);
    this.map = new BlockMap(this.cache, this.allocator);
    this.dirs = new Directories(this.cache, this.map);
    this.data = new FileIo(dev, this.map);
    this.orphans = new OrphanList(this.cache, this.geometry, options.slot);
  }

  /** Mounts the volume on `dev` as slot `options.slot`: recovers journals, reclaims this slot's orphans. */
  static async mount(dev: BlockDevice, options: MountOptions): Promise<FileSystem> {
    const sb = await readSuperblock(dev);
    if (!Number.isInteger(options.slot) || options.slot < 0 || options.slot >= sb.slotCount) {
      throw new IoError('EINVAL', `slot ${options.slot} not in 0..${sb.slotCount - 1}`);
    }
    const fs = new FileSystem(dev, sb, options);
    options.locks.onRevoke((name) => fs.revoked(name));
    await fs.queue.run(async () => {
      await fs.lockVolume(dev.readOnly ? 'shared' : 'exclusive');
      fs.journal = await Journal.open(dev, sb, options.slot);
    });
    if (!dev.readOnly) await fs.mutate(() => fs.reclaimOrphans());
    return fs;
  }

  /** Commits, closes every handle, leaves a clean journal and gives the volume lock back. */
  async unmount(): Promise<void> {
    await this.queue.run(async () => {
      if (!this.mounted) return;
      this.mounted = false;
      this.stopTimer();
      this.handles.clear();
      this.openCounts.clear();
      if (!this.failure && !this.dev.readOnly && this.held === 'exclusive') {
        await this.withOp(() => this.reclaimOrphans());
        await this.commit();
        await this.dev.flush();
      }
      if (this.held) await this.locks.unlock(VOLUME_LOCK, this.changedSinceGrant);
      this.held = null;
    });
  }

  /** Commits the running transaction and flushes the device. */
  async sync(): Promise<void> {
    await this.queue.run(async () => {
      this.checkUsable();
      await this.commit();
      if (!this.dev.readOnly) await this.dev.flush();
    });
  }

  get cacheStats() {
    return { ...this.cache.stats, journal: this.journal?.stats, data: this.data.stats };
  }

  // ---- locking and transactions ----

  private checkUsable(): void {
    if (!this.mounted) throw new IoError('EIO', 'filesystem is unmounted');
    if (this.failure) throw new IoError('EIO', `filesystem failed: ${this.failure.message}`);
  }

  private async lockVolume(mode: LockMode): Promise<void> {
    if (this.held === 'exclusive' || this.held === mode) return;
    if (this.held === 'shared') {
      // Never upgrade in place: two shared holders upgrading at once would wait for each other forever.
      this.held = null;
      await this.locks.unlock(VOLUME_LOCK, false);
    }
    const generation = await this.locks.lock(VOLUME_LOCK, mode);
    this.held = mode;
    this.stats.grants++;
    if (generation !== this.seenGeneration) {
      this.seenGeneration = generation;
      this.dropCache();
      await this.recoverJournals();
    }
  }

  private dropCache(): void {
    this.cache.dropAll();
    this.stats.cacheDrops++;
  }

  /** See the recovery rule above. */
  private async recoverJournals(): Promise<void> {
    const dirty = await dirtyJournalSlots(this.dev, this.superblock);
    if (dirty.length === 0) return;
    if (this.held !== 'exclusive') {
      if (this.dev.readOnly) throw new IoError('EIO', `journal of slot ${dirty[0]} needs replay and the volume is read-only`);
      this.held = null;
      await this.locks.unlock(VOLUME_LOCK, false);
      this.seenGeneration = null;
      await this.lockVolume('exclusive');
      return;
    }
    for (const slot of dirty) {
      if ((await replayJournal(this.dev, slot, this.superblock)) > 0) this.stats.replays++;
    }
    this.changedSinceGrant = true;
    this.dropCache();
  }

  private revoked(name: number): void {
    if (name !== VOLUME_LOCK || this.revokeQueued) return;
    this.revokeQueued = true;
    this.queue
      .run(async () => {
        this.revokeQueued = false;
        await this.releaseVolume();
      }, true)
      .catch((error) => {
        this.failure ??= error instanceof Error ? error : new Error(String(error));
      });
  }

  private async releaseVolume(): Promise<void> {
    if (!this.held) return;
    this.stats.revokes++;
    if (this.cache.dirtyCount > 0) await this.commit();
    const changed = this.changedSinceGrant;
    this.held = null;
    this.changedSinceGrant = false;
    await this.locks.unlock(VOLUME_LOCK, changed);
    if (changed) this.dropCache();
  }

  /** Commits the running transaction through this slot's journal. */
  private async commit(): Promise<void> {
    this.stopTimer();
    if (this.cache.dirtyCount === 0) return;
    const blocks = this.cache.dirtyBlocks();
    for (const { data } of blocks) resealBlock(data);
    try {
      await this.journal!.commit(blocks);
    } catch (error) {
      this.failure = error instanceof Error ? error : new Error(String(error));
      throw new IoError('EIO', `commit failed: ${this.failure.message}`);
    }
    this.cache.markAllClean();
    this.allocator.transactionCommitted();
  }

  private stopTimer(): void {
    if (this.commitTimer) clearTimeout(this.commitTimer);
    this.commitTimer = null;
  }

  private startTimer(): void {
    if (this.commitTimer || this.commitIntervalMs <= 0 || this.cache.dirtyCount === 0) return;
    this.commitTimer = setTimeout(() => {
      this.commitTimer = null;
      this.queue
        .run(async () => {
          if (this.mounted && !this.failure && this.held === 'exclusive') await this.commit();
        })
        .catch(() => {});
    }, this.commitIntervalMs);
    this.commitTimer.unref?.();
  }

  /** Commits first if the running transaction could not take another step. */
  private async makeRoom(): Promise<void> {
    if (this.cache.dirtyCount + STEP_RESERVE > this.journal!.capacity) await this.commit();
  }

  /** Inside an operation: commit what is done so far if room is short (the state must be consistent). */
  private async checkpoint(consistent: () => Promise<void>): Promise<void> {
    if (this.cache.dirtyCount + STEP_RESERVE <= this.journal!.capacity) return;
    await consistent();
    this.cache.endOp(false);
    await this.commit();
    this.cache.beginOp();
  }

  private async withOp<T>(fn: () => Promise<T>): Promise<T> {
    await this.makeRoom();
    this.cache.beginOp();
    try {
      const result = await fn();
      this.cache.endOp(false);
      return result;
    } catch (error) {
      this.cache.endOp(true);
      throw error;
    } finally {
      if (this.cache.dirtyCount > 0) this.changedSinceGrant = true;
    }
  }

  private shared<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(async () => {
      this.checkUsable();
      await this.lockVolume('shared');
      return fn();
    });
  }

  private mutate<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(async () => {
      this.checkUsable();
      if (this.dev.readOnly) throw new IoError('EROFS', 'read-only volume');
      await this.lockVolume('exclusive');
      let result: T;
      try {
        result = await this.withOp(fn);
      } catch (error) {
        // Blocks freed in the running transaction become usable once it commits: commit and try once more.
        if (!(error instanceof IoError && error.code === 'ENOSPC' && this.allocator.pendingFrees > 0)) throw error;
        await this.commit();
        result = await this.withOp(fn);
      }
      if (this.cache.dirtyCount * 2 > this.journal!.capacity) await this.commit();
      this.startTimer();
      return result;
    });
  }

  // ---- name resolution ----

  private async lookupIn(dir: Inode, name: string): Promise<number | null> {
    if (!isDir(dir)) throw new IoError('ENOTDIR', 'not a directory');
    if (name === '.') return dir.ino;
    const entry = await this.dirs.lookup(dir, encodeName(name));
    return entry ? entry.ino : null;
  }

  /** Resolves components from the root, following symlinks (and the last one only if `follow`). */
  private async resolve(parts: string[], follow: boolean, depth = 0): Promise<Inode> {
    let current = await this.inodes.read(ROOT_INO);
    const stack = [current];
    for (let i = 0; i < parts.length; i++) {
      const ino = await this.lookupIn(current, parts[i]);
      if (ino === null) throw new IoError('ENOENT', `no such file: ${parts[i]}`);
      const next = await this.inodes.read(ino);
      const last = i === parts.length - 1;
      if (isSymlink(next) && (!last || follow)) {
        if (depth >= MAX_SYMLINK_DEPTH) throw new IoError('ELOOP', 'too many symbolic links');
        const target = await this.readSymlink(next);
        const base = target.startsWith('/') ? [] : parts.slice(0, i);
        const resolved = await this.resolve([...base, ...splitPath(target === '' ? '/' : target), ...parts.slice(i + 1)], follow, depth + 1);
        return resolved;
      }
      current = next;
      stack.push(current);
    }
    return current;
  }

  private async resolvePath(path: string, follow = false): Promise<Inode> {
    return this.resolve(splitPath(path), follow);
  }

  private async resolveParent(path: string): Promise<{ dir: Inode; name: string; bytes: Uint8Array }> {
    const { parent, name } = splitParent(path);
    const dir = await this.resolve(parent, true);
    if (!isDir(dir)) throw new IoError('ENOTDIR', 'not a directory');
    return { dir, name, bytes: checkName(name) };
  }

  // ---- inode lifecycle ----

  private async newInode(mode: number): Promise<Inode> {
    const ino = await this.allocator.allocInode();
    const old = await this.inodes.readRaw(ino);
    if (old.mode !== 0) throw new IoError('EIO', `inode ${ino} is free in the bitmap but in use`);
    return emptyInode(ino, mode, (old.generation + 1) >>> 0, this.now());
  }

  /** Where a file without blocks starts allocating: its inode's group (and so its domain's). */
  private dataGoal(inode: Inode): number {
    return this.geometry.firstDataBlock(this.geometry.inodeGroup(inode.ino));
  }

  /** The last name of `inode` is gone: free it now, or when its last local handle closes. */
  private async dropInode(inode: Inode): Promise<void> {
    await this.orphans.add(inode.ino);
    await this.inodes.write(inode);
    // A removed directory goes at once (its handles turn stale); a file stays while this instance has it open.
    if (isDir(inode) || !this.openCounts.get(inode.ino)) await this.freeInode(inode);
  }

  private async freeInode(inode: Inode): Promise<void> {
    await this.truncateBlocks(inode, 0);
    inode.mode = 0;
    inode.size = 0;
    await this.inodes.write(inode);
    await this.allocator.freeInode(inode.ino);
    await this.orphans.remove(inode.ino);
  }

  private async reclaimOrphans(): Promise<void> {
    for (const ino of await this.orphans.list()) {
      if (this.openCounts.get(ino)) continue;
      const inode = this.geometry.validIno(ino) ? await this.inodes.readRaw(ino) : null;
      if (inode && inode.mode !== 0 && inode.nlink === 0) await this.freeInode(inode);
      else await this.orphans.remove(ino);
    }
  }

  /** Frees the blocks past `size` and sets the size, committing between steps when the journal fills. */
  private async truncateBlocks(inode: Inode, size: number): Promise<void> {
    if (size > inode.size) {
      await this.data.zeroTail(inode);
      inode.size = size;
      return;
    }
    const keep = Math.ceil(size / BLOCK_SIZE);
    await this.map.truncate(inode, keep, (lowestFreed) =>
      this.checkpoint(async () => {
        inode.size = Math.min(inode.size, Math.max(size, lowestFreed * BLOCK_SIZE));
        await this.inodes.write(inode);
      }),
    );
    inode.size = size;
  }

  private async readSymlink(inode: Inode): Promise<string> {
    if (!inode.direct[0]) throw new IoError('EIO', `symlink ${inode.ino} has no block`);
    const block = await this.cache.get(inode.direct[0], BlockType.Symlink);
    const length = view(block).getUint32(HEADER_SIZE, true);
    if (length !== inode.size || length > SYMLINK_MAX) throw new IoError('EIO', `symlink ${inode.ino} length mismatch`);
    return decodeName(block.subarray(HEADER_SIZE + 4, HEADER_SIZE + 4 + length));
  }

  private handle(fh: number): Handle {
    const handle = this.handles.get(fh);
    if (!handle) throw new IoError('EBADF', `bad file handle ${fh}`);
    return handle;
  }

  private async handleInode(handle: Handle): Promise<Inode> {
    const inode = await this.inodes.readRaw(handle.ino);
    if (inode.mode === 0 || inode.generation !== handle.generation) throw new IoError('ESTALE', 'file was removed');
    return inode;
  }

  private openHandle(inode: Inode, flags: number): number {
    const fh = this.nextHandle++;
    this.handles.set(fh, { ino: inode.ino, generation: inode.generation, flags });
    this.openCounts.set(inode.ino, (this.openCounts.get(inode.ino) ?? 0) + 1);
    return fh;
  }

  private touch(inode: Inode, content = true): void {
    const now = this.now();
    inode.ctimeMs = now;
    if (content) inode.mtimeMs = now;
  }

  // ---- Vfs ----

  getattr(path: string): Promise<Stat> {
    return this.shared(async () => toStat(await this.resolvePath(path)));
  }

  readdir(path: string): Promise<string[]> {
    return this.shared(async () => {
      const dir = await this.resolvePath(path, true);
      if (!isDir(dir)) throw new IoError('ENOTDIR', 'not a directory');
      return (await this.dirs.list(dir)).map((e) => decodeName(e.name)).filter((n) => n !== '.' && n !== '..');
    });
  }

  mkdir(path: string, mode: number): Promise<void> {
    return this.mutate(async () => {
      const { dir, name, bytes } = await this.resolveParent(path);
      if ((await this.lookupIn(dir, name)) !== null) throw new IoError('EEXIST', `${path} exists`);
      if (dir.nlink >= MAX_LINKS) throw new IoError('EMLINK', 'too many links');
      const inode = await this.newInode(S_IFDIR | (mode & 0o7777));
      inode.nlink = 2;
      await this.dirs.init(inode, dir.ino);
      await this.inodes.write(inode);
      await this.dirs.add(dir, bytes, inode.ino, EntryType.Directory);
      dir.nlink++;
      this.touch(dir);
      await this.inodes.write(dir);
    });
  }

  rmdir(path: string): Promise<void> {
    return this.mutate(async () => {
      const parts = splitPath(path);
      const last = parts[parts.length - 1];
      if (last === undefined) throw new IoError('EBUSY', 'cannot remove the root');
      if (last === '.') throw new IoError('EINVAL', 'cannot remove .');
      if (last === '..') throw new IoError('ENOTEMPTY', 'cannot remove ..');
      const { dir, name, bytes } = await this.resolveParent(path);
      const ino = await this.lookupIn(dir, name);
      if (ino === null) throw new IoError('ENOENT', `no such directory: ${path}`);
      const inode = await this.inodes.read(ino);
      if (!isDir(inode)) throw new IoError('ENOTDIR', `${path} is not a directory`);
      if (!(await this.dirs.isEmpty(inode))) throw new IoError('ENOTEMPTY', `${path} is not empty`);
      await this.dirs.remove(dir, bytes);
      dir.nlink--;
      this.touch(dir);
      await this.inodes.write(dir);
      inode.nlink = 0;
      this.touch(inode, false);
      await this.dropInode(inode);
    });
  }

  unlink(path: string): Promise<void> {
    return this.mutate(async () => {
      const { dir, name, bytes } = await this.resolveParent(path);
      const ino = await this.lookupIn(dir, name);
      if (ino === null) throw new IoError('ENOENT', `no such file: ${path}`);
      const inode = await this.inodes.read(ino);
      if (isDir(inode)) throw new IoError('EISDIR', `${path} is a directory`);
      await this.dirs.remove(dir, bytes);
      this.touch(dir);
      await this.inodes.write(dir);
      inode.nlink--;
      this.touch(inode, false);
      if (inode.nlink === 0) await this.dropInode(inode);
      else await this.inodes.write(inode);
    });
  }

  rename(from: string, to: string): Promise<void> {
    return this.mutate(async () => {
      const src = await this.resolveParent(from);
      const dst = await this.resolveParent(to);
      const srcIno = await this.lookupIn(src.dir, src.name);
      if (srcIno === null) throw new IoError('ENOENT', `no such file: ${from}`);
      // One in-memory copy per inode: the two parents may be the same directory.
      const dstDir = dst.dir.ino === src.dir.ino ? src.dir : dst.dir;
      const moving = await this.inodes.read(srcIno);
      const dstIno = await this.lookupIn(dstDir, dst.name);
      if (isDir(moving)) await this.checkNotInside(moving.ino, dstDir);
      if (dstIno === moving.ino) return;
      let replaced: Inode | null = null;
      if (dstIno !== null) {
        if (dstIno === src.dir.ino || dstIno === dstDir.ino) throw new IoError(isDir(moving) ? 'ENOTEMPTY' : 'EISDIR', `${to} is busy`);
        replaced = await this.inodes.read(dstIno);
        if (isDir(moving)) {
          if (!isDir(replaced)) throw new IoError('ENOTDIR', `${to} is not a directory`);
          if (!(await this.dirs.isEmpty(replaced))) throw new IoError('ENOTEMPTY', `${to} is not empty`);
        } else if (isDir(replaced)) {
          throw new IoError('EISDIR', `${to} is a directory`);
        }
        await this.dirs.retarget(dstDir, dst.bytes, moving.ino, entryTypeOf(moving.mode));
      } else {
        if (isDir(moving) && dstDir !== src.dir && dstDir.nlink >= MAX_LINKS) throw new IoError('EMLINK', 'too many links');
        await this.dirs.add(dstDir, dst.bytes, moving.ino, entryTypeOf(moving.mode));
      }
      await this.dirs.remove(src.dir, src.bytes);
      if (isDir(moving) && dstDir !== src.dir) {
        await this.dirs.retarget(moving, DOTDOT, dstDir.ino, EntryType.Directory);
        src.dir.nlink--;
        dstDir.nlink++;
      }
      this.touch(src.dir);
      this.touch(dstDir);
      this.touch(moving, false);
      await this.inodes.write(src.dir);
      if (dstDir !== src.dir) await this.inodes.write(dstDir);
      await this.inodes.write(moving);
      if (replaced) {
        this.touch(replaced, false);
        if (isDir(replaced)) {
          replaced.nlink = 0;
          dstDir.nlink--;
          await this.inodes.write(dstDir);
        } else {
          replaced.nlink--;
        }
        if (replaced.nlink === 0) await this.dropInode(replaced);
        else await this.inodes.write(replaced);
      }
    });
  }

  /** EINVAL when `dir` is the directory `ino` or inside it. */
  private async checkNotInside(ino: number, dir: Inode): Promise<void> {
    let current = dir;
    for (let steps = 0; steps <= this.geometry.inodeCount; steps++) {
      if (current.ino === ino) throw new IoError('EINVAL', 'cannot move a directory into itself');
      if (current.ino === ROOT_INO) return;
      const parent = await this.lookupIn(current, '..');
      if (parent === null) throw new IoError('EIO', `directory ${current.ino} has no ..`);
      current = await this.inodes.read(parent);
    }
    throw new IoError('EIO', 'directory cycle');
  }

  link(existing: string, newPath: string): Promise<void> {
    return this.mutate(async () => {
      const inode = await this.resolvePath(existing);
      if (isDir(inode)) throw new IoError('EPERM', 'cannot link a directory');
      const { dir, name, bytes } = await this.resolveParent(newPath);
      if ((await this.lookupIn(dir, name)) !== null) throw new IoError('EEXIST', `${newPath} exists`);
      if (inode.nlink >= MAX_LINKS) throw new IoError('EMLINK', 'too many links');
      const target = dir.ino === inode.ino ? dir : inode;
      await this.dirs.add(dir, bytes, target.ino, entryTypeOf(target.mode));
      this.touch(dir);
      await this.inodes.write(dir);
      target.nlink++;
      this.touch(target, false);
      await this.inodes.write(target);
    });
  }

  symlink(target: string, path: string): Promise<void> {
    return this.mutate(async () => {
      const bytes = encodeName(target);
      if (bytes.length === 0) throw new IoError('ENOENT', 'empty symlink target');
      if (bytes.length > SYMLINK_MAX) throw new IoError('ENAMETOOLONG', 'symlink target too long');
      const { dir, name, bytes: nameBytes } = await this.resolveParent(path);
      if ((await this.lookupIn(dir, name)) !== null) throw new IoError('EEXIST', `${path} exists`);
      const inode = await this.newInode(S_IFLNK | 0o777);
      inode.nlink = 1;
      const { phys } = await this.map.ensureRun(inode, 0, 1, this.dataGoal(inode));
      const block = this.cache.create(phys, BlockType.Symlink);
      view(block).setUint32(HEADER_SIZE, bytes.length, true);
      block.set(bytes, HEADER_SIZE + 4);
      inode.size = bytes.length;
      await this.inodes.write(inode);
      await this.dirs.add(dir, nameBytes, inode.ino, EntryType.Symlink);
      this.touch(dir);
      await this.inodes.write(dir);
    });
  }

  readlink(path: string): Promise<string> {
    return this.shared(async () => {
      const inode = await this.resolvePath(path);
      if (!isSymlink(inode)) throw new IoError('EINVAL', `${path} is not a symbolic link`);
      return this.readSymlink(inode);
    });
  }

  create(path: string, mode: number, flags: number = O_CREAT | O_RDWR | O_TRUNC): Promise<number> {
    return this.openOrCreate(path, flags | O_CREAT, mode);
  }

  open(path: string, flags: number): Promise<number> {
    return this.openOrCreate(path, flags, 0o644);
  }

  private openOrCreate(path: string, flags: number, mode: number): Promise<number> {
    const access = flags & O_ACCMODE;
    if (access !== O_RDONLY && access !== O_WRONLY && access !== O_RDWR) return Promise.reject(new IoError('EINVAL', 'bad access mode'));
    const writes = access !== O_RDONLY;
    const changes = (flags & O_CREAT) !== 0 || ((flags & O_TRUNC) !== 0 && writes);
    if (!changes) {
      return this.shared(async () => {
        const inode = await this.resolvePath(path, true);
        if (writes && isDir(inode)) throw new IoError('EISDIR', `${path} is a directory`);
        if (writes && this.dev.readOnly) throw new IoError('EROFS', 'read-only volume');
        return this.openHandle(inode, flags);
      });
    }
    return this.mutate(async () => {
      let inode: Inode | null = null;
      try {
        inode = await this.resolvePath(path, true);
      } catch (error) {
        if (!(error instanceof IoError && error.code === 'ENOENT') || !(flags & O_CREAT)) throw error;
      }
      if (inode) {
        if ((flags & O_CREAT) && (flags & O_EXCL)) throw new IoError('EEXIST', `${path} exists`);
        if (writes && isDir(inode)) throw new IoError('EISDIR', `${path} is a directory`);
        if ((flags & O_TRUNC) && writes && isRegular(inode) && inode.size > 0) {
          await this.truncateBlocks(inode, 0);
          this.touch(inode);
          await this.inodes.write(inode);
        }
        return this.openHandle(inode, flags);
      }
      const { dir, name, bytes } = await this.resolveParent(path);
      // The name exists but did not resolve: a dangling symlink. Creating its target is not supported.
      if ((await this.lookupIn(dir, name)) !== null) throw new IoError('ENOENT', `${path} is a dangling symbolic link`);
      const created = await this.newInode(S_IFREG | (mode & 0o7777));
      created.nlink = 1;
      await this.inodes.write(created);
      await this.dirs.add(dir, bytes, created.ino, EntryType.Regular);
      this.touch(dir);
      await this.inodes.write(dir);
      return this.openHandle(created, flags);
    });
  }

  release(fh: number): Promise<void> {
    return this.queue.run(async () => {
      const handle = this.handle(fh);
      this.handles.delete(fh);
      const left = (this.openCounts.get(handle.ino) ?? 1) - 1;
      if (left > 0) {
        this.openCounts.set(handle.ino, left);
        return;
      }
      this.openCounts.delete(handle.ino);
      if (!this.mounted || this.failure || this.dev.readOnly) return;
      await this.lockVolume('shared');
      const inode = await this.inodes.readRaw(handle.ino);
      if (inode.mode === 0 || inode.generation !== handle.generation || inode.nlink > 0) return;
      if (!(await this.orphans.list()).includes(inode.ino)) return;
      await this.lockVolume('exclusive');
      await this.withOp(async () => {
        const fresh = await this.inodes.readRaw(handle.ino);
        if (fresh.mode !== 0 && fresh.generation === handle.generation && fresh.nlink === 0) await this.freeInode(fresh);
      });
      this.startTimer();
    });
  }

  read(fh: number, position: number, length: number): Promise<Uint8Array> {
    return this.shared(async () => {
      const handle = this.handle(fh);
      if ((handle.flags & O_ACCMODE) === O_WRONLY) throw new IoError('EBADF', 'file not open for reading');
      if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(length) || length < 0) {
        throw new IoError('EINVAL', 'bad position or length');
      }
      const inode = await this.handleInode(handle);
      if (isDir(inode)) throw new IoError('EISDIR', 'is a directory');
      return this.data.read(inode, position, length);
    });
  }

  write(fh: number, position: number, data: Uint8Array): Promise<number> {
    return this.mutate(async () => {
      const handle = this.handle(fh);
      if ((handle.flags & O_ACCMODE) === O_RDONLY) throw new IoError('EBADF', 'file not open for writing');
      const inode = await this.handleInode(handle);
      if (!isRegular(inode)) throw new IoError('EISDIR', 'not a regular file');
      const at = handle.flags & O_APPEND ? inode.size : position;
      if (!Number.isSafeInteger(at) || at < 0) throw new IoError('EINVAL', 'bad position');
      if (at + data.length > MAX_FILE_SIZE) throw new IoError('EFBIG', 'file too large');
      if (data.length === 0) return 0;
      this.changedSinceGrant = true;
      await this.data.write(inode, at, data, this.dataGoal(inode), () =>
        this.checkpoint(() => this.inodes.write(inode)),
      );
      this.touch(inode);
      await this.inodes.write(inode);
      return data.length;
    });
  }

  fsync(fh: number, _datasync: boolean): Promise<void> {
    return this.queue.run(async () => {
      this.handle(fh);
      this.checkUsable();
      if (this.dev.readOnly) return;
      await this.commit();
      await this.dev.flush();
    });
  }

  truncate(path: string, size: number): Promise<void> {
    return this.mutate(async () => this.resize(await this.resolvePath(path, true), size, path));
  }

  /** truncate through an open handle: works on a file already unlinked (ftruncate(2)). */
  ftruncate(fh: number, size: number): Promise<void> {
    return this.mutate(async () => {
      const handle = this.handle(fh);
      if ((handle.flags & O_ACCMODE) === O_RDONLY) throw new IoError('EBADF', 'file not open for writing');
      await this.resize(await this.handleInode(handle), size, `handle ${fh}`);
    });
  }

  private async resize(inode: Inode, size: number, what: string): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) throw new IoError('EINVAL', 'bad size');
    if (size > MAX_FILE_SIZE) throw new IoError('EFBIG', 'file too large');
    if (isDir(inode)) throw new IoError('EISDIR', `${what} is a directory`);
    if (!isRegular(inode)) throw new IoError('EINVAL', `${what} is not a regular file`);
    this.changedSinceGrant = true;
    await this.truncateBlocks(inode, size);
    this.touch(inode);
    await this.inodes.write(inode);
  }

  chmod(path: string, mode: number): Promise<void> {
    return this.changeInode(path, (inode) => {
      inode.mode = (inode.mode & S_IFMT) | (mode & 0o7777);
    });
  }

  chown(path: string, uid: number, gid: number): Promise<void> {
    return this.changeInode(path, (inode) => {
      if (uid !== -1 && uid !== 0xffffffff) inode.uid = uid >>> 0;
      if (gid !== -1 && gid !== 0xffffffff) inode.gid = gid >>> 0;
    });
  }

  utimens(path: string, atimeMs: number, mtimeMs: number): Promise<void> {
    return this.changeInode(path, (inode) => {
      inode.atimeMs = atimeMs;
      inode.mtimeMs = mtimeMs;
    });
  }

  /**
   * Attribute changes apply to the object the path names, a final symlink included (as lchown/lutimes; FUSE hands
   * over paths the host kernel has already resolved, and `cp -a` sets a copied symlink's own owner and times).
   */
  private changeInode(path: string, change: (inode: Inode) => void): Promise<void> {
    return this.mutate(async () => {
      const inode = await this.resolvePath(path);
      change(inode);
      this.touch(inode, false);
      await this.inodes.write(inode);
    });
  }

  statfs(_path: string): Promise<StatFs> {
    return this.shared(async () => {
      const free = await this.allocator.countFree();
      return {
        bsize: BLOCK_SIZE,
        frsize: BLOCK_SIZE,
        blocks: this.superblock.totalBlocks,
        bfree: free.blocks,
        bavail: free.blocks,
        files: this.geometry.inodeCount,
        ffree: free.inodes,
        namemax: NAME_MAX,
      };
    });
  }
}

function toStat(inode: Inode): Stat {
  return {
    ino: inode.ino,
    mode: inode.mode,
    nlink: inode.nlink,
    uid: inode.uid,
    gid: inode.gid,
    size: inode.size,
    blocks: inode.blocks * (BLOCK_SIZE / 512),
    atimeMs: inode.atimeMs,
    mtimeMs: inode.mtimeMs,
    ctimeMs: inode.ctimeMs,
  };
}
