/**
 * File data cached in a domain, 4 KiB pages by (inode, file block), valid under the inode's cluster lock exactly
 * as the metadata in block-cache.ts: kept while the domain holds the lock with the generation it last saw, dropped
 * when another domain changed the file. Writes go through to the device (ordered mode: data reaches its blocks
 * before the transaction that maps them commits) and update the pages cached. Bounded, least recently used first.
 */
import { BLOCK_SIZE } from './layout.js';

/** File blocks per inode fit in 2^21 (MAX_FILE_BLOCKS), inode numbers in 2^32: a key fits a double exactly. */
const FILE_BLOCK_SPAN = 2 ** 21;

export class PageCache {
  private readonly files = new Map<number, Map<number, Uint8Array>>();
  /** Keys in use order, oldest first. */
  private readonly order = new Map<number, number>();
  /** Per file watched by a read ahead in flight: its data epoch and how many read aheads watch it. */
  private readonly watched = new Map<number, { epoch: number; watchers: number }>();
  /** Counters for tests and diagnostics. */
  readonly stats = { hits: 0, misses: 0, evicted: 0 };

  constructor(readonly capacityPages: number) {}

  get(ino: number, fb: number): Uint8Array | undefined {
    const page = this.files.get(ino)?.get(fb);
    if (!page) return undefined;
    this.stats.hits++;
    const key = ino * FILE_BLOCK_SPAN + fb;
    this.order.delete(key);
    this.order.set(key, ino);
    return page;
  }

  has(ino: number, fb: number): boolean {
    return this.files.get(ino)?.has(fb) ?? false;
  }

  /** Caches a copy of `data` (one block) as block `fb` of `ino`. */
  put(ino: number, fb: number, data: Uint8Array): void {
    if (this.capacityPages === 0) return;
    let file = this.files.get(ino);
    if (!file) this.files.set(ino, (file = new Map()));
    const page = file.get(fb) ?? new Uint8Array(BLOCK_SIZE);
    page.set(data);
    file.set(fb, page);
    const key = ino * FILE_BLOCK_SPAN + fb;
    this.order.delete(key);
    this.order.set(key, ino);
    this.stats.misses++;
    if (this.order.size > this.capacityPages) this.evict();
  }

  /** New contents for block `fb` of `ino`, if it is cached. */
  update(ino: number, fb: number, data: Uint8Array): void {
    this.bump(ino);
    this.files.get(ino)?.get(fb)?.set(data);
  }

  /**
   * A read ahead of `ino` starts: the file's data epoch, which changes whenever its data may have (a write, a
   * drop). What the read ahead brings is cached only if `epoch(ino)` still says the same; it calls unwatch when done
   * (only watched files have an epoch, so none is kept for every file ever written).
   */
  watch(ino: number): number {
    let w = this.watched.get(ino);
    if (!w) this.watched.set(ino, (w = { epoch: 0, watchers: 0 }));
    w.watchers++;
    return w.epoch;
  }

  epoch(ino: number): number {
    return this.watched.get(ino)?.epoch ?? -1;
  }

  unwatch(ino: number): void {
    const w = this.watched.get(ino);
    if (w && --w.watchers === 0) this.watched.delete(ino);
  }

  private bump(ino: number): void {
    const w = this.watched.get(ino);
    if (w) w.epoch++;
  }

  /** Forgets the file's pages from `fb` on (all of them by default). */
  drop(ino: number, fb = 0): void {
    this.bump(ino);
    const file = this.files.get(ino);
    if (!file) return;
    for (const block of [...file.keys()]) {
      if (block < fb) continue;
      file.delete(block);
      this.order.delete(ino * FILE_BLOCK_SPAN + block);
    }
    if (file.size === 0) this.files.delete(ino);
  }

  get size(): number {
    return this.order.size;
  }

  private evict(): void {
    for (const [key, ino] of this.order) {
      if (this.order.size <= this.capacityPages * 0.9) break;
      this.order.delete(key);
      const file = this.files.get(ino)!;
      file.delete(key - ino * FILE_BLOCK_SPAN);
      if (file.size === 0) this.files.delete(ino);
      this.stats.evicted++;
    }
  }
}
