/**
 * The metadata block cache (xv6's buffer cache, without sleep locks: the filesystem serializes its operations).
 * Blocks are verified (magic, type, address, checksum) when they come from the device; a changed block is marked
 * dirty and stays pinned until the running transaction commits, then the journal seals it with a fresh checksum.
 * Clean blocks are evicted least-recently-used first. File data does not pass through here (see page-cache.ts).
 *
 * Every entry belongs to the cluster lock that covers it (its owner: an inode's lock for the inode's own block,
 * its indirect, directory and symlink blocks; a group's lock for its bitmap; a slot's lock for its orphan list).
 * What a domain caches is valid exactly while it holds that lock with the generation it last saw, so the lock
 * client drops one owner's entries when another domain changed them (dropOwner), and commits before giving up
 * an owner that has dirty entries (hasDirty). `guard` is asked before any entry is used: the filesystem checks
 * there that the operation holds the owner's lock.
 *
 * Each filesystem operation runs between beginOp() and endOp(): the first change to a block in an operation
 * saves its previous state, so an operation that fails half-way (ENOSPC, EIO, a lock it must wait for) is undone
 * in memory and the running transaction only ever holds whole operations.
 */
import { IoError, type BlockDevice } from './block-device.js';
import { BLOCK_SIZE, BlockType, checkBlockHeader, MAGIC, verifyBlock, view } from './layout.js';

interface Entry {
  data: Uint8Array;
  type: BlockType;
  owner: number;
  /** Used since eviction last passed it (a second chance: hits do not reorder the map). */
  used?: boolean;
}

/** A block's state before the running operation first changed it (null: it was not cached). */
type Saved = { entry: Entry; dirty: boolean } | null;

/**
 * Undo copies kept for reuse. A new 4 KiB array costs V8 about 3 µs here (a backing store allocated, zeroed and
 * registered with the collector) against under 0.1 µs to copy into one kept; an operation saves each block it
 * changes, so a 4 KiB write paid that three or four times. More than an operation usually changes.
 */
const UNDO_COPIES_KEPT = 64;

export interface CacheHooks {
  /** Throws unless the running operation may use blocks of `owner`. */
  guard(owner: number): void;
  /** A block of `owner` is about to change (the operation is changing the volume from here on). */
  changing(owner: number): void;
}

const NO_HOOKS: CacheHooks = { guard: () => {}, changing: () => {} };

export class BlockCache {
  private readonly entries = new Map<number, Entry>();
  private readonly dirty = new Set<number>();
  private readonly byOwner = new Map<number, Set<number>>();
  private undo: Map<number, Saved> | null = null;
  /** Undo copies of operations that succeeded, reused by the next ones (UNDO_COPIES_KEPT). */
  private readonly spareCopies: Uint8Array[] = [];
  /** Reads issued by readAhead and not arrived yet. */
  private readonly readingAhead = new Map<number, Promise<void>>();
  /** Blocks whose cached entry went (changed, evicted, dropped) while a read ahead of them was on its way. */
  private readonly overtaken = new Set<number>();
  /** Per owner, bumped whenever one of its directory blocks is changed, read in, undone, dropped or evicted. */
  private readonly directoryStamps = new Map<number, number>();
  private lastStamp = 0;
  hooks: CacheHooks = NO_HOOKS;
  /** Counters for tests and diagnostics. */
  readonly stats = { hits: 0, misses: 0, drops: 0, readAhead: 0 };

  constructor(
    private readonly dev: BlockDevice,
    private readonly capacity = 8192,
  ) {}

  /** The block's contents, read and verified as `type` if it is not cached. Do not change them. */
  async get(block: number, type: BlockType, owner: number): Promise<Uint8Array> {
    this.hooks.guard(owner);
    const cached = this.lookup(block, type, owner);
    if (cached) return cached;
    const ahead = this.readingAhead.get(block);
    if (ahead) {
      await ahead;
      const arrived = this.lookup(block, type, owner);
      if (arrived) return arrived;
    }
    this.stats.misses++;
    const data = await this.read(block);
    verifyBlock(data, type, block);
    return this.lookup(block, type, owner) ?? this.insert(block, { data, type, owner });
  }

  /**
   * Like get(), but null instead of an error when the block is not a valid `type` block: for numbers that may
   * have been freed and reused since they were remembered (file handles, orphan lists).
   */
  async getIf(block: number, type: BlockType, owner: number): Promise<Uint8Array | null> {
    this.hooks.guard(owner);
    const entry = this.entries.get(block);
    if (entry && (entry.type !== type || entry.owner !== owner)) return null;
    if (entry) return this.lookup(block, type, owner);
    const data = await this.read(block);
    if (checkBlockHeader(data, type, block)) return null;
    return this.lookup(block, type, owner) ?? this.insert(block, { data, type, owner });
  }

  /** The block's contents for changing: it joins the running transaction. */
  async getForWrite(block: number, type: BlockType, owner: number): Promise<Uint8Array> {
    const data = await this.get(block, type, owner);
    this.hooks.changing(owner);
    this.save(block);
    this.dirty.add(block);
    if (type === BlockType.Directory) this.stamp(owner);
    return data;
  }

  /**
   * Changes when any cached directory block of `owner` may have: an index built over them (directory.ts) is
   * valid while this stays what it was, and is kept valid by its builder across the changes it makes itself.
   */
  directoryStamp(owner: number): number {
    return this.directoryStamps.get(owner) ?? 0;
  }

  private stamp(owner: number): void {
    // From one counter for all owners, so a stamp forgotten with the owner's last block never comes back.
    this.directoryStamps.set(owner, ++this.lastStamp);
  }

  /** A fresh zeroed block with its header in place (no read), already dirty. */
  create(block: number, type: BlockType, owner: number): Uint8Array {
    this.hooks.guard(owner);
    this.hooks.changing(owner);
    this.save(block);
    const data = new Uint8Array(BLOCK_SIZE);
    const v = view(data);
    v.setUint32(0, MAGIC, true);
    v.setUint32(4, type, true);
    v.setUint32(8, block, true);
    this.remove(block);
    this.insert(block, { data, type, owner });
    this.dirty.add(block);
    return data;
  }

  /**
   * Reads a block ahead of the operation that will want it (statahead), without waiting: it is cached when it
   * arrives if it verifies, nobody cached it meanwhile and `stillValid()` says the lock it was read under is
   * still held with the generation it had (otherwise what was read may be stale, and it is dropped).
   */
  readAhead(block: number, type: BlockType, owner: number, stillValid: () => boolean): void {
    if (this.entries.has(block) || this.readingAhead.has(block)) return;
    this.stats.readAhead++;
    this.overtaken.delete(block);
    const reading = this.read(block)
      .then((data) => {
        // Cached, changed or dropped meanwhile: what was read may be older than what this instance has seen.
        if (this.entries.has(block) || this.overtaken.has(block) || !stillValid()) return;
        verifyBlock(data, type, block);
        this.insert(block, { data, type, owner });
      })
      // A read that fails or does not verify is left to the operation that wants the block: it reports it.
      .catch(() => {})
      .finally(() => {
        this.readingAhead.delete(block);
        this.overtaken.delete(block);
      });
    this.readingAhead.set(block, reading);
  }

  /**
   * A block read on this instance's behalf (with the grant of the lock that covers it: LockService.lockAndRead):
   * cached if it verifies as `type`, nothing is cached for it yet and `stillValid()` (the lock is still held with
   * the generation it was granted with). One that does not verify is left to the operation that wants it.
   */
  offer(block: number, type: BlockType, owner: number, data: Uint8Array, stillValid: () => boolean): void {
    if (this.entries.has(block) || !stillValid() || checkBlockHeader(data, type, block)) return;
    this.insert(block, { data, type, owner });
  }

  /** What is cached for `block` as `type`, whether or not it is still valid (a hint only: no guard, no counting). */
  cachedCopy(block: number, type: BlockType): Uint8Array | null {
    const entry = this.entries.get(block);
    return entry?.type === type ? entry.data : null;
  }

  /** Forgets a block that was freed: its contents no longer matter. */
  forget(block: number): void {
    this.save(block);
    this.remove(block);
  }

  /**
   * Reads a block without caching it, for a glance at what another domain may be changing (statfs's free
   * counts): null when the block does not verify.
   */
  async peek(block: number, type: BlockType): Promise<Uint8Array | null> {
    const cached = this.entries.get(block);
    if (cached && cached.type === type) return cached.data;
    const data = await this.read(block);
    return checkBlockHeader(data, type, block) ? null : data;
  }

  /** The block as the device has it, neither cached nor verified (a lazily initialised group's bitmap is a hole). */
  readUncached(block: number): Promise<Uint8Array> {
    return this.read(block);
  }

  beginOp(): void {
    this.undo = new Map();
  }

  /** Ends an operation; when it failed, every block it changed gets its previous state back. */
  endOp(failed: boolean): void {
    const undo = this.undo;
    this.undo = null;
    if (!undo) return;
    if (!failed) {
      // Nothing else refers to the copies: they were made by save() and only the undo map held them.
      for (const saved of undo.values()) if (saved && this.spareCopies.length < UNDO_COPIES_KEPT) this.spareCopies.push(saved.entry.data);
      return;
    }
    for (const [block, saved] of undo) {
      this.remove(block);
      if (!saved) continue;
      this.insert(block, saved.entry);
      if (saved.dirty) this.dirty.add(block);
    }
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  /** True when the running transaction holds blocks of `owner`. */
  hasDirty(owner: number): boolean {
    for (const block of this.byOwner.get(owner) ?? []) if (this.dirty.has(block)) return true;
    return false;
  }

  /** The dirty blocks in ascending address order. */
  dirtyBlocks(): Array<{ block: number; data: Uint8Array }> {
    return [...this.dirty].sort((a, b) => a - b).map((block) => ({ block, data: this.entries.get(block)!.data }));
  }

  /** After a commit: the dirty blocks are on disk now. */
  markAllClean(): void {
    this.dirty.clear();
    this.evict();
  }

  /** Drops the blocks of `owner` (another domain changed them). */
  dropOwner(owner: number): void {
    const blocks = this.byOwner.get(owner);
    if (!blocks) return;
    for (const block of blocks) {
      if (this.dirty.has(block)) throw new Error(`dropping lock ${owner} with dirty block ${block}`);
    }
    this.stats.drops++;
    for (const block of [...blocks]) this.remove(block);
  }

  /** Drops everything (unmount). */
  dropAll(): void {
    if (this.dirty.size > 0) throw new Error('dropAll with dirty blocks');
    this.stats.drops++;
    this.entries.clear();
    this.byOwner.clear();
    this.directoryStamps.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  private async read(block: number): Promise<Uint8Array> {
    const data = new Uint8Array(BLOCK_SIZE);
    await this.dev.read(block * BLOCK_SIZE, data);
    return data;
  }

  /** A cached entry that fits; an entry of another type or owner is stale (the block changed hands). */
  private lookup(block: number, type: BlockType, owner: number): Uint8Array | null {
    const entry = this.entries.get(block);
    if (!entry) return null;
    if (entry.type !== type || entry.owner !== owner) {
      if (this.dirty.has(block)) {
        throw new IoError('EIO', `block ${block} is cached as ${BlockType[entry.type]} of ${entry.owner}, wanted ${BlockType[type]} of ${owner}`);
      }
      this.remove(block);
      return null;
    }
    this.stats.hits++;
    entry.used = true;
    return entry.data;
  }

  private save(block: number): void {
    if (!this.undo || this.undo.has(block)) return;
    const entry = this.entries.get(block);
    if (!entry) return void this.undo.set(block, null);
    const copy = this.spareCopies.pop() ?? new Uint8Array(BLOCK_SIZE);
    copy.set(entry.data);
    this.undo.set(block, { entry: { ...entry, data: copy }, dirty: this.dirty.has(block) });
  }

  private insert(block: number, entry: Entry): Uint8Array {
    if (entry.type === BlockType.Directory) this.stamp(entry.owner);
    this.entries.set(block, entry);
    let owned = this.byOwner.get(entry.owner);
    if (!owned) this.byOwner.set(entry.owner, (owned = new Set()));
    owned.add(block);
    if (this.entries.size > this.capacity) this.evict();
    return entry.data;
  }

  private remove(block: number): void {
    if (this.readingAhead.has(block)) this.overtaken.add(block);
    const entry = this.entries.get(block);
    if (!entry) return;
    if (entry.type === BlockType.Directory) this.stamp(entry.owner);
    this.entries.delete(block);
    this.dirty.delete(block);
    const owned = this.byOwner.get(entry.owner);
    owned?.delete(block);
    if (owned?.size === 0) {
      this.byOwner.delete(entry.owner);
      // Nothing of the owner is cached: an index over its blocks is stale whatever the stamp, and 0 says so.
      this.directoryStamps.delete(entry.owner);
    }
  }

  /**
   * Down to 90% of the capacity, oldest first (the map's order is insertion order); an entry used since it was
   * last passed moves to the end instead, once.
   */
  private evict(): void {
    if (this.entries.size <= this.capacity) return;
    let budget = this.entries.size;
    for (const [block, entry] of this.entries) {
      if (this.entries.size <= this.capacity * 0.9 || budget-- === 0) break;
      if (this.dirty.has(block) || this.undo?.has(block)) continue;
      if (entry.used) {
        entry.used = false;
        this.entries.delete(block);
        this.entries.set(block, entry);
      } else this.remove(block);
    }
  }
}
