/**
 * A set of volume block numbers kept as bitmaps of 32768 blocks each, made when a block of theirs is first added:
 * what the allocator remembers per transaction (blocks it freed, blocks it handed out). A Set<number> of every
 * block cost a hash insert and its garbage per 4 KiB block on the write path; a bit costs neither.
 */
const CHUNK_SHIFT = 15;
const CHUNK_MASK = (1 << CHUNK_SHIFT) - 1;

export class BlockSet {
  private readonly chunks = new Map<number, Uint8Array>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  has(block: number): boolean {
    const chunk = this.chunks.get(block >>> CHUNK_SHIFT);
    if (!chunk) return false;
    const bit = block & CHUNK_MASK;
    return (chunk[bit >>> 3] & (1 << (bit & 7))) !== 0;
  }

  /** Adds blocks [start, start + count). */
  add(start: number, count = 1): void {
    for (let block = start; block < start + count; block++) {
      const key = block >>> CHUNK_SHIFT;
      let chunk = this.chunks.get(key);
      if (!chunk) this.chunks.set(key, (chunk = new Uint8Array((CHUNK_MASK + 1) >>> 3)));
      const bit = block & CHUNK_MASK;
      const mask = 1 << (bit & 7);
      if ((chunk[bit >>> 3] & mask) !== 0) continue;
      chunk[bit >>> 3] |= mask;
      this.count++;
    }
  }

  /** Removes blocks [start, start + count). */
  delete(start: number, count = 1): void {
    for (let block = start; block < start + count; block++) {
      const chunk = this.chunks.get(block >>> CHUNK_SHIFT);
      if (!chunk) continue;
      const bit = block & CHUNK_MASK;
      const mask = 1 << (bit & 7);
      if ((chunk[bit >>> 3] & mask) === 0) continue;
      chunk[bit >>> 3] &= ~mask;
      this.count--;
    }
  }

  clear(): void {
    this.chunks.clear();
    this.count = 0;
  }
}
