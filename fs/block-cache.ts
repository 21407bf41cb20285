/**
 * The metadata block cache (xv6's buffer cache, without sleep locks: the filesystem serializes its operations).
 * Blocks are verified (magic, type, address, checksum) when they come from the device; a changed block is marked
 * dirty and stays pinned until the running transaction commits, then the journal seals it with a fresh checksum.
 * Clean blocks are evicted least-recently-used first. File data does not pass through here.
 *
 * Each filesystem operation runs between beginOp() and endOp(): the first change to a block in an operation
 * saves its previous state, so an operation that fails half-way (ENOSPC, EIO) is undone in memory and the
 * running transaction only ever holds whole operations.
 */
import { IoError, type BlockDevice } from './block-device.js';
import { BLOCK_SIZE, BlockType, MAGIC, verifyBlock, view } from './layout.js';

interface Entry {
  data: Uint8Array;
  type: BlockType;
}

/** A block's state before the running operation first changed it (null: it was not cached). */
type Saved = { data: Uint8Array; type: BlockType; dirty: boolean } | null;

export class BlockCache {
  private readonly entries = new Map<number, Entry>();
  private readonly dirty = new Set<number>();
  private undo: Map<number, Saved> | null = null;
  /** Counters for tests and diagnostics. */
  readonly stats = { hits: 0, misses: 0, drops: 0 };

  constructor(
    private readonly dev: BlockDevice,
    private readonly capacity = 8192,
  ) {}

  /** The block's contents, read and verified as `type` if it is not cached. Do not change them. */
  async get(block: number, type: BlockType): Promise<Uint8Array> {
    const entry = this.entries.get(block);
    if (entry) {
      if (entry.type !== type) {
        throw new IoError('EIO', `block ${block} is cached as ${BlockType[entry.type]}, wanted ${BlockType[type]}`);
      }
      this.stats.hits++;
      this.entries.delete(block);
      this.entries.set(block, entry);
      return entry.data;
    }
    this.stats.misses++;
    const data = new Uint8Array(BLOCK_SIZE);
    await this.dev.read(block * BLOCK_SIZE, data);
    verifyBlock(data, type, block);
    const raced = this.entries.get(block);
    if (raced) return raced.data;
    this.insert(block, { data, type });
    return data;
  }

  /** The block's contents for changing: it joins the running transaction. */
  async getForWrite(block: number, type: BlockType): Promise<Uint8Array> {
    const data = await this.get(block, type);
    this.save(block);
    this.dirty.add(block);
    return data;
  }

  /** A fresh zeroed block with its header in place (no read), already dirty. */
  create(block: number, type: BlockType): Uint8Array {
    this.save(block);
    const data = new Uint8Array(BLOCK_SIZE);
    const v = view(data);
    v.setUint32(0, MAGIC, true);
    v.setUint32(4, type, true);
    v.setUint32(8, block, true);
    this.entries.delete(block);
    this.insert(block, { data, type });
    this.dirty.add(block);
    return data;
  }

  /** Forgets a block that was freed: its contents no longer matter. */
  forget(block: number): void {
    this.save(block);
    this.entries.delete(block);
    this.dirty.delete(block);
  }

  beginOp(): void {
    this.undo = new Map();
  }

  /** Ends an operation; when it failed, every block it changed gets its previous state back. */
  endOp(failed: boolean): void {
    const undo = this.undo;
    this.undo = null;
    if (!failed || !undo) return;
    for (const [block, saved] of undo) {
      this.entries.delete(block);
      this.dirty.delete(block);
      if (!saved) continue;
      this.entries.set(block, { data: saved.data, type: saved.type });
      if (saved.dirty) this.dirty.add(block);
    }
  }

  get dirtyCount(): number {
    return this.dirty.size;
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

  /** Drops everything (the lock generation moved: another domain may have changed any block). */
  dropAll(): void {
    if (this.dirty.size > 0) throw new Error('dropAll with dirty blocks');
    this.stats.drops++;
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  private save(block: number): void {
    if (!this.undo || this.undo.has(block)) return;
    const entry = this.entries.get(block);
    this.undo.set(block, entry ? { data: entry.data.slice(), type: entry.type, dirty: this.dirty.has(block) } : null);
  }

  private insert(block: number, entry: Entry): void {
    this.entries.set(block, entry);
    if (this.entries.size > this.capacity) this.evict();
  }

  private evict(): void {
    if (this.entries.size <= this.capacity) return;
    for (const block of this.entries.keys()) {
      if (this.entries.size <= this.capacity * 0.9) break;
      if (!this.dirty.has(block) && !this.undo?.has(block)) this.entries.delete(block);
    }
  }
}
