/**
 * The shared-volume filesystem: one instance per domain (per journal slot), implementing the path-based Vfs over
 * a BlockDevice, coherent with the other instances through cluster locks (lock-client.ts): one lock per inode,
 * per allocation group and per journal slot, cached between operations, so a domain working alone never pays
 * for sharing and two domains working on different files never wait for each other.
 *
 * This file holds the operations a syscall reaches. Operations run one at a time (OpQueue); each pins the locks
 * it uses, in shared mode to read and exclusive to change, and runs again from the start when it must wait for a
 * lock after it began changing things (Restart). Path lookup is path-lookup.ts, transactions (begin, end, group
 * commit, the journal rule per lock) transactions.ts, what each lock covers lock-names.ts.
 *
 * Recovery: a domain that dies has its journal replayed by whoever fences it (the toolstack, or the lock service
 * in-process) before its locks pass on; each live instance holds its own slot's lock for as long as it is
 * mounted. At mount, an instance replays its own journal and, holding the mount lock, every other slot's that
 * it can lock without waiting (nobody runs there: the volume crashed as a whole).
 *
 * Not done (documented gaps): no permission checks (the FUSE mount's default_permissions does them), atime is
 * not updated by reads (noatime).
 */
import { randomInt } from 'node:crypto';
import { IoError, type BlockDevice } from './block-device.js';
import { BlockCache } from './block-cache.js';
import { Allocator, type GroupLocks } from './allocator.js';
import { BlockMap } from './block-map.js';
import { Directories, DOTDOT, entryTypeOf, EntryType, modeOfEntryType } from './directory.js';
import { FileIo } from './file-io.js';
import { InitialisedGroups } from './initialised-groups.js';
import { emptyInode, firstDirectoryBlock, InodeStore, isDevice, isDir, isRegular, isSymlink, legalMode, type Inode } from './inode.js';
import { dirtyJournalSlots, Journal, recoverJournals } from './journal.js';
import {
  BLOCK_SIZE, BlockType, Geometry, HEADER_SIZE, MAX_FILE_SIZE, NAME_MAX, readSuperblock, SYMLINK_CHUNK, SYMLINK_MAX, symlinkBlocks, view,
  type Superblock,
} from './layout.js';
import { LockClient, Restart } from './lock-client.js';
import { groupLock, MOUNT_LOCK, RENAME_LOCK, slotLock } from './lock-names.js';
import { noticingGiveUps, type LockMode, type LockService } from './lock-service.js';
import { CutRegistry, pinTree, type CutEnded, type CutHeld } from './consistent-cut.js';
import { OpQueue } from './op-queue.js';
import { OrphanList } from './orphans.js';
import { PageCache } from './page-cache.js';
import { PathLookup } from './path-lookup.js';
import { decodeName, encodeName, splitPath } from './path.js';
import { Transactions } from './transactions.js';
import {
  FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, O_ACCMODE, O_APPEND, O_CREAT, O_EXCL, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_ISGID, S_ISUID,
  type DirListing, type Owner, type Stat, type StatFs, type TimeChange, type Timespec, type Vfs,
} from './vfs.js';
import { checkTimeChange, timespecFromMs } from './timespec.js';
import { XATTR_CREATE, XATTR_REPLACE, XATTR_SIZE_MAX, xattrNameProblem, type Xattrs } from './xattr.js';
import { XattrStore } from './xattr-store.js';
import { ACL_ACCESS, ACL_DEFAULT, aclMode, chmodAcl } from './posix-acl.js';
import { CorruptionError, LocalVolumeErrors, readOnlyBecause, type VolumeErrors } from './volume-errors.js';

export interface MountOptions {
  /** This instance's journal slot (0 .. slotCount-1); two live instances must never share one. */
  slot: number;
  locks: LockService;
  /**
   * The volume's errors state, shared by every instance on the volume (volume-errors.ts): corruption this instance
   * finds is reported there, and none of them changes the volume once it is set. Default: this instance's own.
   */
  errors?: VolumeErrors;
  /** Memory for caches: a quarter for metadata blocks, the rest for file pages (default 64 MiB). */
  cacheBytes?: number;
  /** Commit a running transaction at most this long after it started; 0 = only on fsync, revoke, full, unmount. */
  commitIntervalMs?: number;
  /** How long a lock in use is kept after its grant before another domain gets it (default 100 ms). */
  minHoldMs?: number;
  /** Clock (ms) for timestamps and lock hold times. */
  now?: () => number;
  /**
   * Called whenever what this instance answers may have changed: after every operation that changes the volume
   * (done or failed), before any lock is given up or downgraded (another domain may change what it covers from
   * then on), and at unmount. The guest agent counts these for the host's view (guests/change-count.ts).
   */
  onChange?: () => void;
}

const MAX_LINKS = 65000;
/** The owner of what is created without one (the guest's own processes, tests, mkfs's root). */
const ROOT: Owner = { uid: 0, gid: 0 };
/** A file another domain asked for within this time is given back (committed) when this domain closes it. */
const SHARED_FILE_WINDOW_MS = 1000;
/** Attempts of one operation that keeps losing its locks to other domains before it gives up with EAGAIN. */
const MAX_ATTEMPTS = 200;
/** Inodes made here remembered for handing down with their directory (readBy); past this many, forgotten. */
const MADE_IN_KEPT = 4096;
/**
 * The most new names of one directory handed down when another domain reads it (readBy). More are left to that
 * domain's statahead: 3000 downgrades in a burst made its `ls -l` of them 5-7% slower (they came in the order the
 * names were made, not in the order it asked).
 */
const HAND_DOWN_MAX = 64;

interface Handle {
  ino: number;
  generation: number;
  flags: number;
}

export class FileSystem implements Vfs {
  private readonly geometry: Geometry;
  private readonly cache: BlockCache;
  private readonly pages: PageCache;
  private readonly allocator: Allocator;
  private readonly inodes: InodeStore;
  private readonly xattrs: XattrStore;
  private readonly map: BlockMap;
  private readonly dirs: Directories;
  private readonly data: FileIo;
  private readonly orphans: OrphanList;
  private readonly path: PathLookup;
  private readonly queue = new OpQueue();
  private readonly now: () => number;
  private readonly locks: LockClient;
  private readonly cuts: CutRegistry;
  private readonly ownSlot: number;
  private tx: Transactions | null = null;
  private readonly volumeErrors: VolumeErrors;
  /** Set once this instance reported corruption (one report is enough: the volume is read-only from then on). */
  private reportedCorruption = false;

  private readonly handles = new Map<number, Handle>();
  private readonly openCounts = new Map<number, number>();
  /**
   * Inodes this instance made, by the directory they were made in, until another domain reads it (readBy); looked
   * up by directory, since every lock another domain reads asks (most are not directories this instance changed).
   */
  private readonly madeIn = new Map<number, Set<number>>();
  private madeCount = 0;
  /**
   * Inodes this instance put on its orphan list while it had them open: only they may need freeing at close. A
   * hint (an operation undone after adding one leaves it here); the close re-checks under the lock.
   */
  private readonly orphanedOpen = new Set<number>();
  /** Files whose data the running operation wrote (their pages go if it fails). */
  private readonly dataWritten = new Set<number>();
  private nextHandle = 1;
  private mounted = true;
  private failure: Error | null = null;
  readonly slot: number;
  /** Counters for tests and diagnostics. */
  readonly stats = { replays: 0 };

  private constructor(
    private readonly dev: BlockDevice,
    readonly superblock: Superblock,
    private readonly options: MountOptions,
  ) {
    this.slot = options.slot;
    this.now = options.now ?? Date.now;
    this.volumeErrors = options.errors ?? new LocalVolumeErrors();
    this.geometry = new Geometry(superblock);
    const cacheBytes = options.cacheBytes ?? 64 << 20;
    this.cache = new BlockCache(dev, Math.max(256, Math.floor(cacheBytes / 4 / BLOCK_SIZE)));
    this.pages = new PageCache(Math.floor((cacheBytes * 3) / 4 / BLOCK_SIZE));
    this.locks = new LockClient(
      options.onChange ? noticingGiveUps(options.locks, options.onChange) : options.locks,
      {
        drop: (name) => {
          this.cache.dropOwner(name);
          this.pages.drop(name);
        },
        // Another domain reads what the lock covers straight from the device: its data must be there first (on an
        // ordered device, issued before the release is enough: it is ahead of it on the ring).
        writeBack: async (name) => {
          if (!this.dev.ordered) await this.data.settled();
          await this.tx?.writeBack(name);
        },
        whenIdle: (task) => void this.queue.run(task, true).catch(() => {}),
        busy: () => this.queue.backlog > 0,
        failed: (error) => {
          this.failure ??= error;
        },
        // Another domain reads a directory this instance changed: the inodes it made in it there, which that
        // domain is about to look up (a new name is what it came for), go down to shared with it, so that their
        // lookups find them free instead of each waiting for a revoke (one revoke and grant less per new name seen
        // through the other domain). An inode still open here is kept: it is being written. A directory with more
        // new names than HAND_DOWN_MAX is left to the reader's statahead, which asks for them in its order.
        readBy: (name) => {
          const inDir = this.madeIn.get(name);
          if (!inDir) return;
          const made = [...inDir].filter((ino) => !this.openCounts.get(ino));
          for (const ino of made) inDir.delete(ino);
          this.madeCount -= made.length;
          if (inDir.size === 0) this.madeIn.delete(name);
          if (made.length <= HAND_DOWN_MAX) for (const ino of made) this.locks.handDown(ino);
        },
        // Statahead: a prefetched inode lock brings its inode block along (ino = the block's address).
        prefetched: (name, stillValid) => {
          if (this.geometry.validIno(name)) this.cache.readAhead(name, BlockType.Inode, name, stillValid);
        },
        // An inode's lock taken from nothing held brings the inode block with its grant (read after the grant), and
        // for a directory its first block as this instance last knew it: kept if the inode still names it.
        readsOnGrant: (name) => {
          if (!this.geometry.validIno(name)) return false;
          const stale = this.cache.cachedCopy(name, BlockType.Inode);
          return (stale && firstDirectoryBlock(stale)) || true;
        },
        delivered: (name, block, hinted, stillValid) => {
          this.cache.offer(name, BlockType.Inode, name, block, stillValid);
          const first = hinted && this.cache.cachedCopy(name, BlockType.Inode) === block ? firstDirectoryBlock(block) : 0;
          if (first !== 0) this.cache.offer(first, BlockType.Directory, name, hinted!, stillValid);
        },
      },
      { minHoldMs: options.minHoldMs, now: options.now },
    );
    this.cuts = new CutRegistry((names) => this.locks.releaseCut(names), this.now);
    this.cache.hooks = { guard: (owner) => this.locks.guard(owner), changing: (owner) => this.locks.changing(owner) };
    this.ownSlot = slotLock(this.geometry, options.slot);
    const preferredGroup = Math.floor((options.slot * superblock.groupCount) / superblock.slotCount);
    const initialised = new InitialisedGroups(this.cache, this.geometry, options.slot, this.ownSlot);
    this.allocator = new Allocator(this.cache, this.geometry, preferredGroup, this.groupLocks(), {
      record: async (group) => {
        await this.locks.need(this.ownSlot, 'exclusive');
        await initialised.record(group);
      },
      recordedBy: (group) => initialised.recordedBy(group),
    });
    this.inodes = new InodeStore(this.cache, this.geometry);
    this.xattrs = new XattrStore(this.cache, this.allocator);
    this.map = new BlockMap(this.cache, this.allocator, this.geometry);
    this.dirs = new Directories(this.cache, this.map);
    this.data = new FileIo(dev, this.map, this.pages);
    this.orphans = new OrphanList(this.cache, this.geometry, options.slot, this.ownSlot);
    this.path = new PathLookup(this.inodes, this.dirs, this.locks, superblock.rootIno, (inode) => this.readSymlink(inode));
  }

  /** Mounts the volume on `dev` as slot `options.slot`: recovers journals, reclaims this slot's orphans. */
  static async mount(dev: BlockDevice, options: MountOptions): Promise<FileSystem> {
    const sb = await readSuperblock(dev);
    if (!Number.isInteger(options.slot) || options.slot < 0 || options.slot >= sb.slotCount) {
      throw new IoError('EINVAL', `slot ${options.slot} not in 0..${sb.slotCount - 1}`);
    }
    const fs = new FileSystem(dev, sb, options);
    await fs.queue.run(() => fs.start());
    if (!dev.readOnly) await fs.change(() => fs.reclaimOrphans());
    return fs;
  }

  private async start(): Promise<void> {
    this.locks.beginOp();
    try {
      const mode: LockMode = this.dev.readOnly ? 'shared' : 'exclusive';
      // The mount lock first: an instance mounting at the same time holds no slot yet, so every slot left dirty
      // by a crash is replayed here in one call, in tag order (journal.ts), never some now and some later.
      await this.locks.need(MOUNT_LOCK, mode);
      if (!this.dev.readOnly) {
        await this.locks.need(this.ownSlot, 'exclusive');
        this.locks.stick(this.ownSlot);
      }
      // Slots nobody holds (their owners are gone) are replayed together, in tag order (journal.ts).
      const orphaned: number[] = [];
      for (const slot of await dirtyJournalSlots(this.dev, this.superblock)) {
        if (slot !== this.slot && !(await this.locks.tryPin(slotLock(this.geometry, slot), mode))) continue;
        if (this.dev.readOnly) throw new IoError('EIO', `journal of slot ${slot} needs replay and the volume is read-only`);
        orphaned.push(slot);
      }
      if ((await recoverJournals(this.dev, orphaned, this.superblock)) > 0) this.stats.replays++;
      for (const slot of orphaned) if (slot !== this.slot) await this.locks.release(slotLock(this.geometry, slot));
      await this.locks.release(MOUNT_LOCK);
      if (!this.dev.readOnly) {
        const journal = await Journal.open(this.dev, this.superblock, this.slot);
        this.tx = new Transactions(this.cache, journal, this.allocator, this.options.commitIntervalMs ?? 5000, (commit) =>
          void this.queue.run(async () => {
            if (this.mounted && !this.failure) await commit();
          }).catch(() => {}),
          () => this.options.locks.epoch,
          () => this.data.settled(),
        );
      }
    } finally {
      this.locks.endOp();
    }
  }

  /** Commits, closes every handle, leaves a clean journal and gives every lock back. */
  async unmount(): Promise<void> {
    await this.queue.run(async () => {
      if (!this.mounted) return;
      this.options.onChange?.();
      this.tx?.stopTimer();
      this.handles.clear();
      this.openCounts.clear();
      try {
        if (!this.failure && this.tx) {
          if (!this.volumeErrors.reason) await this.attempts(() => this.reclaimOrphans(), true);
          await this.tx.commit();
          await this.data.settled();
          await this.dev.flush();
        }
      } finally {
        this.mounted = false;
      }
      // A failed instance keeps its locks: whoever fences it replays its journal first (LocalLockService.kill).
      if (this.failure) return;
      await this.locks.releaseAll();
      this.cache.dropAll();
    });
  }

  /** Commits the running transaction and flushes the device. */
  async sync(): Promise<void> {
    await this.queue.run(async () => {
      this.checkUsable();
      await this.tx?.commit();
      if (!this.dev.readOnly) await this.dev.flush();
    });
  }

  /**
   * Holds a consistent cut of the tree at `path` (consistent-cut.ts): nothing in it changes, in any domain, until
   * endCut or `maxHoldMs` after the walk began.
   */
  holdCut(path: string, maxHoldMs: number): Promise<CutHeld> {
    return this.queue.run(async () => {
      const started = this.now();
      this.locks.joining = true;
      try {
        const { inodes, names } = await this.attempts(async () => {
          const inodes = await pinTree(this.path, this.dirs, path);
          return { inodes, names: await this.locks.holdForCut() };
        }, false);
        return this.cuts.hold(names, inodes, started, maxHoldMs);
      } finally {
        this.locks.joining = false;
      }
    });
  }

  endCut(id: number): CutEnded {
    return this.cuts.end(id);
  }

  /**
   * `fsck --repair` (fsck-repair.ts): links inode `ino`, in use but named by no directory, into the directory
   * `dirPath` as `name` (a directory's ".." then names its new parent). Link counts are the repair's to set.
   */
  adoptLost(ino: number, dirPath: string, name: string): Promise<void> {
    return this.change(async () => {
      const dir = await this.path.resolvePath(dirPath, true, 'exclusive');
      if (!isDir(dir)) throw new IoError('ENOTDIR', `${dirPath} is not a directory`);
      const lost = await this.path.get(ino, 'exclusive');
      await this.dirs.add(dir, encodeName(name), ino, entryTypeOf(lost.mode));
      if (isDir(lost)) {
        await this.dirs.retarget(lost, DOTDOT, dir.ino, EntryType.Directory);
        dir.nlink++;
      }
      this.touch(dir);
      await this.inodes.write(dir);
    });
  }

  /** The mode this instance holds the lock of the inode `path` names in, for tests and diagnostics. */
  async heldLock(path: string): Promise<LockMode | null> {
    const ino = await this.look(async () => (await this.path.resolvePath(path)).ino);
    return this.locks.held(ino);
  }

  get cacheStats() {
    return { ...this.cache.stats, pages: this.pages.stats, journal: this.tx?.stats, data: this.data.stats, locks: this.locks.stats };
  }

  // ---- running operations ----

  private checkUsable(): void {
    if (!this.mounted) throw new IoError('EIO', 'filesystem is unmounted');
    this.failure ??= this.tx?.failure ?? null;
    if (this.failure) throw new IoError('EIO', `filesystem failed: ${this.failure.message}`);
  }

  /** Runs an operation that only reads. */
  private look<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(() => this.attempts(fn, false));
  }

  /** Runs an operation that changes the volume (a transaction step). */
  private change<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(async () => {
      if (this.dev.readOnly) {
        this.checkUsable();
        throw new IoError('EROFS', 'read-only volume');
      }
      this.checkNoErrors();
      try {
        return await this.attempts(fn, true);
      } catch (error) {
        // Blocks freed in the running transaction become usable once it commits: commit and try once more.
        if (!(error instanceof IoError && error.code === 'ENOSPC' && this.allocator.pendingFrees > 0)) throw error;
        await this.tx!.commit();
        return this.attempts(fn, true);
      } finally {
        this.options.onChange?.();
      }
    });
  }

  /** EROFS once the volume has errors (found by this instance or another one sharing the volume). */
  private checkNoErrors(): void {
    const reason = this.volumeErrors.reason;
    if (reason) throw readOnlyBecause(reason);
  }

  /** Corruption an operation ran into: the volume turns read-only for every instance (reported once). */
  private async reportCorruption(error: CorruptionError): Promise<void> {
    if (this.reportedCorruption) return;
    this.reportedCorruption = true;
    await this.volumeErrors.report(error.detail).catch(() => {});
  }

  /** Runs `fn` until it ends without having to start over (see lock-client.ts). */
  private async attempts<T>(fn: () => Promise<T>, changes: boolean): Promise<T> {
    let wanted: Map<number, LockMode> | undefined;
    for (let attempt = 1; ; attempt++) {
      this.checkUsable();
      if (changes) await this.tx!.begin();
      let failed = true;
      let restart: Restart;
      try {
        this.locks.beginOp();
        this.allocator.beginOp();
        if (wanted) await this.locks.takeFirst(wanted);
        const result = await fn();
        failed = false;
        return result;
      } catch (error) {
        if (error instanceof CorruptionError) await this.reportCorruption(error);
        if (!(error instanceof Restart)) throw error;
        restart = error;
      } finally {
        wanted = this.locks.endOp();
        this.allocator.endOp(failed);
        // A failed attempt's blocks go back to the allocator: its writes must land before anyone reuses them.
        if (failed && this.dataWritten.size > 0) await this.data.settled();
        if (failed) for (const ino of this.dataWritten) this.pages.drop(ino);
        this.dataWritten.clear();
        if (changes) await this.tx!.end(failed);
      }
      if (attempt >= MAX_ATTEMPTS) throw new IoError('EAGAIN', `gave up after ${attempt} attempts to take the locks`);
      this.locks.stats.restarts++;
      if (restart.lock !== null && wanted.get(restart.lock) !== 'exclusive') wanted.set(restart.lock, restart.mode);
      if (attempt > 2) await new Promise((resolve) => setTimeout(resolve, randomInt(attempt)));
    }
  }

  // ---- the allocator's view of group locks ----

  private groupLocks(): GroupLocks {
    const name = (group: number) => groupLock(this.geometry, group);
    return {
      acquire: async (group, mayWait) => {
        if (this.locks.pinIfHeld(name(group), 'exclusive')) return true;
        if (mayWait && this.locks.mayWait) {
          await this.locks.need(name(group), 'exclusive');
          return true;
        }
        return this.locks.tryPin(name(group), 'exclusive');
      },
      pinIfHeld: (group) => this.locks.pinIfHeld(name(group), 'shared'),
      restartWith: (group) => {
        throw new Restart(name(group), 'exclusive');
      },
      name,
    };
  }

  // ---- inode lifecycle ----

  /**
   * A new inode in the domain's own group, held exclusively (a block whose lock is busy elsewhere is given up),
   * owned by `owner`; in a setgid directory it takes the directory's group, and a new directory stays setgid.
   */
  private async newInode(mode: number, parent: Inode, owner: Owner = ROOT): Promise<Inode> {
    const { start: ino } = await this.allocator.allocBlocks(0, 1);
    if (!(await this.locks.tryPin(ino, 'exclusive'))) throw new Restart(ino, 'exclusive');
    const inherits = (parent.mode & S_ISGID) !== 0;
    const setgid = inherits && (mode & S_IFMT) === S_IFDIR ? S_ISGID : 0;
    const inode = emptyInode(ino, mode | setgid, randomInt(1, 0xffffffff), this.clock());
    inode.uid = owner.uid >>> 0;
    inode.gid = (inherits ? parent.gid : owner.gid) >>> 0;
    this.pages.drop(ino);
    this.inodes.create(inode);
    if (this.madeCount >= MADE_IN_KEPT) {
      this.madeIn.clear();
      this.madeCount = 0;
    }
    let inDir = this.madeIn.get(parent.ino);
    if (!inDir) this.madeIn.set(parent.ino, (inDir = new Set()));
    if (!inDir.has(ino)) this.madeCount++;
    inDir.add(ino);
    return inode;
  }

  /** Where a file without blocks starts allocating: right after its inode. */
  private dataGoal(inode: Inode): number {
    return inode.ino + 1;
  }

  /** The last name of `inode` is gone: free it now, or when its last local handle closes. */
  private async dropInode(inode: Inode): Promise<void> {
    await this.locks.need(this.ownSlot, 'exclusive');
    await this.orphans.add(inode.ino);
    await this.inodes.write(inode);
    // A removed directory goes at once (its handles turn stale); a file stays while this instance has it open.
    if (isDir(inode) || !this.openCounts.get(inode.ino)) await this.freeInode(inode);
    else this.orphanedOpen.add(inode.ino);
  }

  private async freeInode(inode: Inode): Promise<void> {
    await this.truncateBlocks(inode, 0);
    await this.xattrs.free(inode);
    inode.mode = 0;
    inode.size = 0;
    await this.inodes.write(inode);
    await this.locks.need(this.ownSlot, 'exclusive');
    await this.orphans.remove(inode.ino);
    // The freed inode stays cached and is written home with mode 0: a handle elsewhere finds it free (ESTALE).
    await this.allocator.freeBlock(inode.ino, false);
    this.pages.drop(inode.ino);
    this.data.forget(inode.ino);
  }

  private async reclaimOrphans(): Promise<void> {
    await this.locks.need(this.ownSlot, 'exclusive');
    for (const ino of await this.orphans.list()) {
      if (this.openCounts.get(ino)) continue;
      if (this.geometry.validIno(ino)) await this.locks.need(ino, 'exclusive');
      const inode = this.geometry.validIno(ino) ? await this.inodes.readIfInode(ino) : null;
      if (inode && inode.nlink === 0) await this.freeInode(inode);
      else await this.orphans.remove(ino);
    }
  }

  /** Frees the blocks past `size` and sets the size, committing between steps when the journal fills. */
  private async truncateBlocks(inode: Inode, size: number): Promise<void> {
    this.pages.drop(inode.ino, Math.floor(Math.min(size, inode.size) / BLOCK_SIZE));
    if (size > inode.size) {
      await this.data.zeroTail(inode, this.dataGoal(inode), () => this.tx!.checkpoint(() => this.inodes.write(inode)));
      inode.size = size;
      return;
    }
    const keep = Math.ceil(size / BLOCK_SIZE);
    // Writes still on their way to the blocks being freed land first: a block reused later must not get them.
    await this.data.settled();
    await this.map.truncate(inode, keep, (lowestFreed) =>
      this.tx!.checkpoint(async () => {
        inode.size = Math.min(inode.size, Math.max(size, lowestFreed * BLOCK_SIZE));
        await this.inodes.write(inode);
      }),
    );
    inode.size = size;
  }

  private async readSymlink(inode: Inode): Promise<string> {
    if (inode.size < 1 || inode.size > SYMLINK_MAX) throw new IoError('EIO', `symlink ${inode.ino} of ${inode.size} bytes`);
    const target = new Uint8Array(inode.size);
    for (let i = 0; i < symlinkBlocks(inode.size); i++) {
      if (!inode.direct[i]) throw new IoError('EIO', `symlink ${inode.ino} has no block ${i}`);
      const block = await this.cache.get(inode.direct[i], BlockType.Symlink, inode.ino);
      const length = view(block).getUint32(HEADER_SIZE, true);
      if (length !== Math.min(SYMLINK_CHUNK, inode.size - i * SYMLINK_CHUNK)) throw new IoError('EIO', `symlink ${inode.ino} length mismatch`);
      target.set(block.subarray(HEADER_SIZE + 4, HEADER_SIZE + 4 + length), i * SYMLINK_CHUNK);
    }
    return decodeName(target);
  }

  private handle(fh: number): Handle {
    const handle = this.handles.get(fh);
    if (!handle) throw new IoError('EBADF', `bad file handle ${fh}`);
    return handle;
  }

  /** The inode of an open file under its lock; ESTALE once it was removed (here or in another domain). */
  private async handleInode(handle: Handle, mode: LockMode): Promise<Inode> {
    if (!this.locks.pinIfHeld(handle.ino, mode)) await this.locks.need(handle.ino, mode);
    const inode = await this.inodes.readIfInode(handle.ino);
    if (!inode || inode.generation !== handle.generation) throw new IoError('ESTALE', 'file was removed');
    return inode;
  }

  private openHandle(inode: Inode, flags: number): number {
    const fh = this.nextHandle++;
    this.handles.set(fh, { ino: inode.ino, generation: inode.generation, flags });
    this.openCounts.set(inode.ino, (this.openCounts.get(inode.ino) ?? 0) + 1);
    return fh;
  }

  /** Now by this domain's clock, as an inode time. */
  private clock(): Timespec {
    return timespecFromMs(this.now());
  }

  private touch(inode: Inode, content = true, now = this.clock()): void {
    inode.ctime = now;
    if (content) inode.mtime = now;
  }

  // ---- Vfs ----

  getattr(path: string): Promise<Stat> {
    return this.look(async () => {
      const inode = await this.path.resolvePath(path);
      return toStat(inode, await this.xattrs.has(inode));
    });
  }

  async readdir(path: string): Promise<string[]> {
    return (await this.readdirEntries(path)).names.filter((n) => n !== '.' && n !== '..');
  }

  readdirEntries(path: string): Promise<DirListing> {
    return this.look(async () => {
      const dir = await this.path.resolvePath(path, true);
      if (!isDir(dir)) throw new IoError('ENOTDIR', 'not a directory');
      const listing: DirListing = { names: [], inos: [], types: [] };
      const children: number[] = [];
      for (const e of await this.dirs.list(dir)) {
        const name = decodeName(e.name);
        listing.names.push(name);
        listing.inos.push(e.ino);
        listing.types.push(modeOfEntryType(e.type));
        if (name !== '.' && name !== '..') children.push(e.ino);
      }
      this.path.noteListing(dir.ino, children);
      return listing;
    });
  }

  mkdir(path: string, mode: number, owner?: Owner): Promise<void> {
    return this.change(async () => {
      const { dir, name, bytes } = await this.path.resolveParent(path);
      if ((await this.path.lookupIn(dir, name)) !== null) throw new IoError('EEXIST', `${path} exists`);
      if (dir.nlink >= MAX_LINKS) throw new IoError('EMLINK', 'too many links');
      const inode = await this.newInode(S_IFDIR | (mode & 0o7777), dir, owner);
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
    return this.change(async () => {
      const parts = splitPath(path);
      const last = parts[parts.length - 1];
      if (last === undefined) throw new IoError('EBUSY', 'cannot remove the root');
      if (last === '.') throw new IoError('EINVAL', 'cannot remove .');
      if (last === '..') throw new IoError('ENOTEMPTY', 'cannot remove ..');
      const { dir, name, bytes } = await this.path.resolveParent(path);
      const ino = await this.path.lookupIn(dir, name);
      if (ino === null) throw new IoError('ENOENT', `no such directory: ${path}`);
      const inode = await this.path.removing(ino, dir);
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
    return this.change(async () => {
      const { dir, name, bytes } = await this.path.resolveParent(path);
      const ino = await this.path.lookupIn(dir, name);
      if (ino === null) throw new IoError('ENOENT', `no such file: ${path}`);
      const inode = await this.path.removing(ino, dir);
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
    return this.change(async () => {
      const src = await this.path.resolveParent(from);
      const dst = await this.path.resolveParent(to);
      const srcIno = await this.path.lookupIn(src.dir, src.name);
      if (srcIno === null) throw new IoError('ENOENT', `no such file: ${from}`);
      // One in-memory copy per inode: the two parents may be the same directory.
      const dstDir = dst.dir.ino === src.dir.ino ? src.dir : dst.dir;
      const moving = srcIno === dstDir.ino ? dstDir : await this.path.get(srcIno, 'exclusive');
      // A directory changing parents: no other such move may change the ancestry the cycle check walks.
      if (isDir(moving) && dstDir !== src.dir) await this.locks.need(RENAME_LOCK, 'exclusive');
      const dstIno = await this.path.lookupIn(dstDir, dst.name);
      if (isDir(moving)) await this.checkNotInside(moving.ino, dstDir);
      if (dstIno === moving.ino) return;
      let replaced: Inode | null = null;
      if (dstIno !== null) {
        if (dstIno === src.dir.ino || dstIno === dstDir.ino) throw new IoError(isDir(moving) ? 'ENOTEMPTY' : 'EISDIR', `${to} is busy`);
        replaced = await this.path.get(dstIno, 'exclusive');
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

  /** EINVAL when `dir` is the directory `ino` or inside it (walks `..` up to the root, each under its lock). */
  private async checkNotInside(ino: number, dir: Inode): Promise<void> {
    let current = dir;
    for (let steps = 0; steps <= this.geometry.dataBlockCount; steps++) {
      if (current.ino === ino) throw new IoError('EINVAL', 'cannot move a directory into itself');
      if (current.ino === this.path.rootIno) return;
      const parent = await this.path.lookupIn(current, '..');
      if (parent === null) throw new IoError('EIO', `directory ${current.ino} has no ..`);
      current = await this.path.get(parent);
    }
    throw new IoError('EIO', 'directory cycle');
  }

  link(existing: string, newPath: string): Promise<void> {
    return this.change(async () => {
      const inode = await this.path.resolvePath(existing, false, 'exclusive');
      if (isDir(inode)) throw new IoError('EPERM', 'cannot link a directory');
      const { dir, name, bytes } = await this.path.resolveParent(newPath);
      if ((await this.path.lookupIn(dir, name)) !== null) throw new IoError('EEXIST', `${newPath} exists`);
      if (inode.nlink >= MAX_LINKS) throw new IoError('EMLINK', 'too many links');
      await this.dirs.add(dir, bytes, inode.ino, entryTypeOf(inode.mode));
      this.touch(dir);
      await this.inodes.write(dir);
      inode.nlink++;
      this.touch(inode, false);
      await this.inodes.write(inode);
    });
  }

  symlink(target: string, path: string, owner?: Owner): Promise<void> {
    return this.change(async () => {
      const bytes = encodeName(target);
      if (bytes.length === 0) throw new IoError('ENOENT', 'empty symlink target');
      if (bytes.length > SYMLINK_MAX) throw new IoError('ENAMETOOLONG', 'symlink target too long');
      const { dir, name, bytes: nameBytes } = await this.path.resolveParent(path);
      if ((await this.path.lookupIn(dir, name)) !== null) throw new IoError('EEXIST', `${path} exists`);
      const inode = await this.newInode(S_IFLNK | 0o777, dir, owner);
      inode.nlink = 1;
      for (let i = 0; i < symlinkBlocks(bytes.length); i++) {
        const { phys } = await this.map.ensureRun(inode, i, 1, this.dataGoal(inode));
        const block = this.cache.create(phys, BlockType.Symlink, inode.ino);
        const piece = bytes.subarray(i * SYMLINK_CHUNK, (i + 1) * SYMLINK_CHUNK);
        view(block).setUint32(HEADER_SIZE, piece.length, true);
        block.set(piece, HEADER_SIZE + 4);
      }
      inode.size = bytes.length;
      await this.enter(dir, nameBytes, inode);
    });
  }

  mknod(path: string, mode: number, rdev: number, owner?: Owner): Promise<void> {
    // As mknod(2): no type bits make a regular file; a directory or symlink is not made this way.
    const full = (mode & S_IFMT) === 0 ? mode | S_IFREG : mode;
    if (!legalMode(full) || (full & S_IFMT) === S_IFDIR || (full & S_IFMT) === S_IFLNK) {
      return Promise.reject(new IoError('EINVAL', `mknod: bad mode 0o${mode.toString(8)}`));
    }
    return this.change(async () => {
      const { dir, name, bytes } = await this.path.resolveParent(path);
      if ((await this.path.lookupIn(dir, name)) !== null) throw new IoError('EEXIST', `${path} exists`);
      const inode = await this.newInode(full, dir, owner);
      inode.nlink = 1;
      inode.rdev = isDevice(full) ? rdev >>> 0 : 0;
      await this.enter(dir, bytes, inode);
    });
  }

  /** A new inode (nlink 1) is written and entered in `dir` under `name`. */
  private async enter(dir: Inode, name: Uint8Array, inode: Inode): Promise<void> {
    await this.inodes.write(inode);
    await this.dirs.add(dir, name, inode.ino, entryTypeOf(inode.mode));
    this.touch(dir);
    await this.inodes.write(dir);
  }

  readlink(path: string): Promise<string> {
    return this.look(async () => {
      const inode = await this.path.resolvePath(path);
      if (!isSymlink(inode)) throw new IoError('EINVAL', `${path} is not a symbolic link`);
      return this.readSymlink(inode);
    });
  }

  create(path: string, mode: number, flags: number = O_CREAT | O_RDWR | O_TRUNC, owner?: Owner): Promise<number> {
    return this.openOrCreate(path, flags | O_CREAT, mode, owner);
  }

  open(path: string, flags: number): Promise<number> {
    return this.openOrCreate(path, flags, 0o644);
  }

  private openOrCreate(path: string, flags: number, mode: number, owner?: Owner): Promise<number> {
    const access = flags & O_ACCMODE;
    if (access !== O_RDONLY && access !== O_WRONLY && access !== O_RDWR) return Promise.reject(new IoError('EINVAL', 'bad access mode'));
    const writes = access !== O_RDONLY;
    const changes = (flags & O_CREAT) !== 0 || ((flags & O_TRUNC) !== 0 && writes);
    if (!changes) {
      return this.look(async () => {
        const inode = await this.path.resolvePath(path, true);
        if (writes && isDir(inode)) throw new IoError('EISDIR', `${path} is a directory`);
        if (writes && this.dev.readOnly) throw new IoError('EROFS', 'read-only volume');
        if (writes) this.checkNoErrors();
        if (access !== O_WRONLY && isRegular(inode)) await this.data.openAhead(inode);
        return this.openHandle(inode, flags);
      });
    }
    return this.change(async () => {
      let inode: Inode | null = null;
      try {
        inode = await this.path.resolvePath(path, true, 'exclusive');
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
      const { dir, name, bytes } = await this.path.resolveParent(path);
      // The name exists but did not resolve: a dangling symlink. Creating its target is not supported.
      if ((await this.path.lookupIn(dir, name)) !== null) throw new IoError('ENOENT', `${path} is a dangling symbolic link`);
      const created = await this.newInode(S_IFREG | (mode & 0o7777), dir, owner);
      created.nlink = 1;
      await this.enter(dir, bytes, created);
      return this.openHandle(created, flags);
    });
  }

  async release(fh: number): Promise<void> {
    const handle = await this.queue.run(async () => {
      const handle = this.handle(fh);
      this.handles.delete(fh);
      const left = (this.openCounts.get(handle.ino) ?? 1) - 1;
      if (left > 0) this.openCounts.set(handle.ino, left);
      else this.openCounts.delete(handle.ino);
      return left > 0 || !this.mounted || this.failure || this.dev.readOnly ? null : handle;
    });
    if (!handle) return;
    if (!this.orphanedOpen.has(handle.ino)) {
      // A file other domains used lately goes back to the lock service when this domain closes it (committed
      // first), so the next domain to open it finds it free instead of waiting for a revoke: close-to-open, as
      // NFS commits on close. Files nobody else uses never pay for this.
      if (this.locks.wantedWithin(handle.ino, SHARED_FILE_WINDOW_MS)) this.locks.giveBack(handle.ino);
      return;
    }
    // The last local handle of a file this domain unlinked while it was open: free it now.
    this.orphanedOpen.delete(handle.ino);
    await this.change(async () => {
      if (this.openCounts.get(handle.ino)) return;
      const inode = await this.handleInode(handle, 'exclusive').catch(() => null);
      if (inode && inode.nlink === 0) await this.freeInode(inode);
    });
  }

  read(fh: number, position: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    return this.look(async () => {
      const handle = this.handle(fh);
      if ((handle.flags & O_ACCMODE) === O_WRONLY) throw new IoError('EBADF', 'file not open for reading');
      if (!Number.isSafeInteger(position) || position < 0 || !Number.isSafeInteger(length) || length < 0) {
        throw new IoError('EINVAL', 'bad position or length');
      }
      const inode = await this.handleInode(handle, 'shared');
      if (isDir(inode)) throw new IoError('EISDIR', 'is a directory');
      if (into && into.length < length) throw new IoError('EINVAL', `read of ${length} bytes into ${into.length}`);
      return this.data.read(inode, position, length, into);
    });
  }

  write(fh: number, position: number, data: Uint8Array, dropSetId = false): Promise<number> {
    return this.change(async () => {
      const handle = this.handle(fh);
      if ((handle.flags & O_ACCMODE) === O_RDONLY) throw new IoError('EBADF', 'file not open for writing');
      const inode = await this.handleInode(handle, 'exclusive');
      if (!isRegular(inode)) throw new IoError('EISDIR', 'not a regular file');
      const at = handle.flags & O_APPEND ? inode.size : position;
      if (!Number.isSafeInteger(at) || at < 0) throw new IoError('EINVAL', 'bad position');
      if (at + data.length > MAX_FILE_SIZE) throw new IoError('EFBIG', 'file too large');
      if (data.length === 0) return 0;
      this.locks.changing(inode.ino);
      await this.writeData(inode, at, data);
      if (dropSetId) inode.mode &= ~(S_ISUID | ((inode.mode & 0o010) !== 0 ? S_ISGID : 0));
      this.touch(inode);
      await this.inodes.write(inode);
      return data.length;
    });
  }

  fallocate(fh: number, mode: number, offset: number, length: number): Promise<void> {
    const keepSize = (mode & FALLOC_FL_KEEP_SIZE) !== 0;
    const kind = mode & ~FALLOC_FL_KEEP_SIZE;
    if ((kind !== 0 && kind !== FALLOC_FL_PUNCH_HOLE && kind !== FALLOC_FL_ZERO_RANGE) || (kind === FALLOC_FL_PUNCH_HOLE && !keepSize)) {
      return Promise.reject(new IoError('EOPNOTSUPP', `fallocate mode 0x${mode.toString(16)}`));
    }
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) {
      return Promise.reject(new IoError('EINVAL', 'bad offset or length'));
    }
    if (offset + length > MAX_FILE_SIZE) return Promise.reject(new IoError('EFBIG', 'file too large'));
    return this.change(async () => {
      const handle = this.handle(fh);
      if ((handle.flags & O_ACCMODE) === O_RDONLY) throw new IoError('EBADF', 'file not open for writing');
      const inode = await this.handleInode(handle, 'exclusive');
      if (!isRegular(inode)) throw new IoError(isDir(inode) ? 'EISDIR' : 'ENODEV', 'not a regular file');
      this.locks.changing(inode.ino);
      const end = offset + length;
      if (!keepSize && end > inode.size && kind !== FALLOC_FL_PUNCH_HOLE) await this.truncateBlocks(inode, end);
      const until = Math.min(end, inode.size);
      if (kind !== 0) await this.punch(inode, offset, until);
      if (kind !== FALLOC_FL_PUNCH_HOLE) await this.fillHoles(inode, offset, until);
      this.touch(inode, kind !== 0);
      await this.inodes.write(inode);
    });
  }

  /** Zeros [from, to): whole blocks are freed, the partial ones at the edges get zeros if they hold data. */
  private async punch(inode: Inode, from: number, to: number): Promise<void> {
    if (from >= to) return;
    const first = Math.ceil(from / BLOCK_SIZE);
    const last = Math.floor(to / BLOCK_SIZE);
    const edges = first > last ? [[from, to]] : [[from, first * BLOCK_SIZE], [last * BLOCK_SIZE, to]];
    for (const [a, b] of edges) {
      if (b > a && (await this.map.lookup(inode, Math.floor(a / BLOCK_SIZE)))) await this.writeData(inode, a, new Uint8Array(b - a));
    }
    if (first >= last) return;
    await this.data.settled();
    this.pages.drop(inode.ino, first);
    for (let fb = first; fb < last; fb++) {
      if (await this.map.unmap(inode, fb)) await this.tx!.checkpoint(() => this.inodes.write(inode));
    }
  }

  /** Allocates the holes of [from, to) by writing zeros into them (freshly allocated blocks hold garbage). */
  private async fillHoles(inode: Inode, from: number, to: number): Promise<void> {
    for (let fb = Math.floor(from / BLOCK_SIZE); fb * BLOCK_SIZE < to; ) {
      const run = await this.map.lookupRun(inode, fb, Math.min(256, Math.ceil(to / BLOCK_SIZE) - fb));
      if (run.phys === 0) {
        const start = fb * BLOCK_SIZE;
        await this.writeData(inode, start, new Uint8Array(Math.min((fb + run.count) * BLOCK_SIZE, inode.size) - start));
      }
      fb += run.count;
    }
  }

  /** File data through the data path, as write() does it (the inode's lock is held exclusively). */
  private async writeData(inode: Inode, position: number, data: Uint8Array): Promise<void> {
    this.dataWritten.add(inode.ino);
    await this.data.write(inode, position, data, this.dataGoal(inode), () => this.tx!.checkpoint(() => this.inodes.write(inode)));
  }

  fsync(fh: number, _datasync: boolean): Promise<void> {
    return this.queue.run(async () => {
      const { ino } = this.handle(fh);
      this.checkUsable();
      if (this.dev.readOnly) return;
      await this.tx!.commit();
      await this.data.settled();
      this.data.reportWriteError(ino);
      await this.dev.flush();
    });
  }

  truncate(path: string, size: number): Promise<void> {
    return this.change(async () => this.resize(await this.path.resolvePath(path, true, 'exclusive'), size, path));
  }

  /** truncate through an open handle: works on a file already unlinked (ftruncate(2)). */
  ftruncate(fh: number, size: number): Promise<void> {
    return this.change(async () => {
      const handle = this.handle(fh);
      if ((handle.flags & O_ACCMODE) === O_RDONLY) throw new IoError('EBADF', 'file not open for writing');
      await this.resize(await this.handleInode(handle, 'exclusive'), size, `handle ${fh}`);
    });
  }

  private async resize(inode: Inode, size: number, what: string): Promise<void> {
    if (!Number.isSafeInteger(size) || size < 0) throw new IoError('EINVAL', 'bad size');
    if (size > MAX_FILE_SIZE) throw new IoError('EFBIG', 'file too large');
    if (isDir(inode)) throw new IoError('EISDIR', `${what} is a directory`);
    if (!isRegular(inode)) throw new IoError('EINVAL', `${what} is not a regular file`);
    this.locks.changing(inode.ino);
    this.dataWritten.add(inode.ino);
    await this.truncateBlocks(inode, size);
    this.touch(inode);
    await this.inodes.write(inode);
  }

  /** The mode, and a stored access ACL's owner, mask and other entries with it (posix-acl.ts). */
  chmod(path: string, mode: number): Promise<void> {
    return this.changeXattrs(path, (attrs, inode) => {
      inode.mode = (inode.mode & S_IFMT) | (mode & 0o7777);
      const acl = attrs.get(ACL_ACCESS);
      if (!acl) return false;
      attrs.set(ACL_ACCESS, chmodAcl(acl, mode));
      return true;
    });
  }

  chown(path: string, uid: number, gid: number): Promise<void> {
    return this.changeInode(path, (inode) => {
      if (uid !== -1 && uid !== 0xffffffff) inode.uid = uid >>> 0;
      if (gid !== -1 && gid !== 0xffffffff) inode.gid = gid >>> 0;
    });
  }

  async utimens(path: string, atime: TimeChange, mtime: TimeChange): Promise<void> {
    checkTimeChange(atime);
    checkTimeChange(mtime);
    // Both omitted: nothing changes, not even ctime (utimensat(2)); the path must still exist.
    if (atime === null && mtime === null) {
      await this.getattr(path);
      return;
    }
    return this.changeInode(path, (inode, now) => {
      if (atime !== null) inode.atime = atime === 'now' ? now : { sec: atime.sec, nsec: atime.nsec };
      if (mtime !== null) inode.mtime = mtime === 'now' ? now : { sec: mtime.sec, nsec: mtime.nsec };
    });
  }

  /**
   * Attribute changes apply to the object the path names, a final symlink included (as lchown/lutimes; FUSE hands
   * over paths the host kernel has already resolved, and `cp -a` sets a copied symlink's own owner and times).
   */
  private changeInode(path: string, change: (inode: Inode, now: Timespec) => void): Promise<void> {
    return this.change(async () => {
      const inode = await this.path.resolvePath(path, false, 'exclusive');
      const now = this.clock();
      change(inode, now);
      this.touch(inode, false, now);
      await this.inodes.write(inode);
    });
  }

  // ---- extended attributes (of the path's own inode, a final symlink included, as l*xattr) ----

  getxattr(path: string, name: string): Promise<Uint8Array> {
    return this.look(async () => {
      const value = (await this.xattrs.read(await this.path.resolvePath(path))).get(name);
      if (!value) throw new IoError(xattrNameProblem(name)?.code ?? 'ENODATA', `no attribute ${name} on ${path}`);
      return value;
    });
  }

  listxattr(path: string): Promise<string[]> {
    return this.look(async () => [...(await this.xattrs.read(await this.path.resolvePath(path))).keys()]);
  }

  setxattr(path: string, name: string, value: Uint8Array, flags: number): Promise<void> {
    const problem = xattrNameProblem(name) ?? (value.length > XATTR_SIZE_MAX ? new IoError('E2BIG', `value of ${value.length} bytes`) : null);
    if (problem) return Promise.reject(problem);
    return this.changeXattrs(path, (attrs, inode) => {
      if (flags & XATTR_CREATE && attrs.has(name)) throw new IoError('EEXIST', `attribute ${name} exists on ${path}`);
      if (flags & XATTR_REPLACE && !attrs.has(name)) throw new IoError('ENODATA', `no attribute ${name} on ${path}`);
      if (name === ACL_DEFAULT && !isDir(inode)) throw new IoError('EACCES', `a default ACL is for directories, ${path} is not one`);
      if (name !== ACL_ACCESS) return void attrs.set(name, value.slice());
      // An access ACL sets the mode's permission bits; one that says no more than they do is not kept.
      const { bits, minimal } = aclMode(value);
      inode.mode = (inode.mode & ~0o777) | bits;
      if (minimal) attrs.delete(name);
      else attrs.set(name, value.slice());
    });
  }

  removexattr(path: string, name: string): Promise<void> {
    const problem = xattrNameProblem(name);
    if (problem) return Promise.reject(problem);
    return this.changeXattrs(path, (attrs) => {
      if (!attrs.delete(name)) throw new IoError('ENODATA', `no attribute ${name} on ${path}`);
    });
  }

  /**
   * Changes the attributes (and perhaps the inode) of the path's inode under its exclusive lock; ctime follows, as
   * on Linux. `change` returns false when it left the attributes as they were.
   */
  private changeXattrs(path: string, change: (attrs: Xattrs, inode: Inode) => boolean | void): Promise<void> {
    return this.change(async () => {
      const inode = await this.path.resolvePath(path, false, 'exclusive');
      const attrs = await this.xattrs.read(inode);
      if (change(attrs, inode) !== false) await this.xattrs.write(inode, attrs);
      this.touch(inode, false);
      await this.inodes.write(inode);
    });
  }

  statfs(_path: string): Promise<StatFs> {
    return this.look(async () => {
      const free = await this.allocator.countFree();
      return {
        bsize: BLOCK_SIZE,
        frsize: BLOCK_SIZE,
        blocks: this.superblock.totalBlocks,
        bfree: free,
        bavail: free,
        // Every free block may become an inode.
        files: this.geometry.dataBlockCount,
        ffree: free,
        namemax: NAME_MAX,
      };
    });
  }
}

function toStat(inode: Inode, xattrs: boolean): Stat {
  return {
    ino: inode.ino,
    mode: inode.mode,
    nlink: inode.nlink,
    uid: inode.uid,
    gid: inode.gid,
    rdev: inode.rdev,
    size: inode.size,
    blocks: inode.blocks * (BLOCK_SIZE / 512),
    atime: inode.atime,
    mtime: inode.mtime,
    ctime: inode.ctime,
    xattrs,
  };
}
