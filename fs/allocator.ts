/**
 * Block and inode allocation from the per-group bitmaps. Each instance starts its searches in its own preferred
 * group (one per domain slot), so domains writing at once grow their files in different parts of the volume,
 * and a file grows contiguously from its last block ("goal") so large reads and writes stay large requests.
 *
 * Blocks freed in the running transaction are not handed out again before it commits: file data is written in
 * place before the commit, and must never land in a block the last committed state still gives to another file.
 */
import { IoError } from './block-device.js';
import type { BlockCache } from './block-cache.js';
import { BlockType, HEADER_SIZE, type Geometry } from './layout.js';

export interface Run {
  start: number;
  count: number;
}

function bitIsSet(bitmap: Uint8Array, bit: number): boolean {
  return (bitmap[HEADER_SIZE + (bit >> 3)] & (1 << (bit & 7))) !== 0;
}

function setBit(bitmap: Uint8Array, bit: number, value: boolean): void {
  const i = HEADER_SIZE + (bit >> 3);
  if (value) bitmap[i] |= 1 << (bit & 7);
  else bitmap[i] &= ~(1 << (bit & 7));
}

const POPCOUNT = Uint8Array.from({ length: 256 }, (_, i) => {
  let n = 0;
  for (let v = i; v; v >>= 1) n += v & 1;
  return n;
});

/** Clear bits among the first `bits` of a bitmap block. */
export function countClearBits(bitmap: Uint8Array, bits: number): number {
  let set = 0;
  const whole = bits >> 3;
  for (let i = 0; i < whole; i++) set += POPCOUNT[bitmap[HEADER_SIZE + i]];
  for (let bit = whole * 8; bit < bits; bit++) if (bitIsSet(bitmap, bit)) set++;
  return bits - set;
}

export { bitIsSet, setBit };

export class Allocator {
  private readonly freedThisTx = new Set<number>();

  constructor(
    private readonly cache: BlockCache,
    private readonly geometry: Geometry,
    readonly preferredGroup: number,
  ) {}

  /** Blocks freed by the running transaction, usable once it commits. */
  get pendingFrees(): number {
    return this.freedThisTx.size;
  }

  /** The running transaction committed: blocks it freed may be reused. */
  transactionCommitted(): void {
    this.freedThisTx.clear();
  }

  /** One contiguous run of 1..max free blocks, as close after `goal` as possible (0: the preferred group). */
  async allocBlocks(goal: number, max: number): Promise<Run> {
    const { sb } = this.geometry;
    const goalValid = goal >= sb.groupStart && goal < sb.totalBlocks;
    const firstGroup = goalValid ? this.geometry.groupOf(goal) : this.preferredGroup;
    for (let i = 0; i < sb.groupCount; i++) {
      const group = (firstGroup + i) % sb.groupCount;
      const base = this.geometry.groupBase(group);
      const size = this.geometry.groupSize(group);
      const dataStart = this.geometry.firstDataBlock(group) - base;
      const goalBit = i === 0 && goalValid ? Math.max(goal - base, dataStart) : dataStart;
      const run = (await this.findRun(group, goalBit, size, max)) ?? (await this.findRun(group, dataStart, goalBit, max));
      if (run) return run;
    }
    throw new IoError('ENOSPC', 'no free blocks');
  }

  private async findRun(group: number, from: number, to: number, max: number): Promise<Run | null> {
    const base = this.geometry.groupBase(group);
    const bitmap = await this.cache.get(this.geometry.blockBitmap(group), BlockType.BlockBitmap);
    let bit = from;
    while (bit < to) {
      if ((bit & 7) === 0 && bitmap[HEADER_SIZE + (bit >> 3)] === 0xff) {
        bit += 8;
        continue;
      }
      if (bitIsSet(bitmap, bit) || this.freedThisTx.has(base + bit)) {
        bit++;
        continue;
      }
      let end = bit + 1;
      while (end < to && end - bit < max && !bitIsSet(bitmap, end) && !this.freedThisTx.has(base + end)) end++;
      const writable = await this.cache.getForWrite(this.geometry.blockBitmap(group), BlockType.BlockBitmap);
      for (let b = bit; b < end; b++) setBit(writable, b, true);
      return { start: base + bit, count: end - bit };
    }
    return null;
  }

  async freeBlock(block: number): Promise<void> {
    if (!this.geometry.isDataBlock(block)) throw new IoError('EIO', `freeing block ${block} outside the data area`);
    const group = this.geometry.groupOf(block);
    const bitmap = await this.cache.getForWrite(this.geometry.blockBitmap(group), BlockType.BlockBitmap);
    const bit = block - this.geometry.groupBase(group);
    if (!bitIsSet(bitmap, bit)) throw new IoError('EIO', `block ${block} freed twice`);
    setBit(bitmap, bit, false);
    this.freedThisTx.add(block);
    this.cache.forget(block);
  }

  /** A free inode number, preferably in `group`. */
  async allocInode(group = this.preferredGroup): Promise<number> {
    const { sb } = this.geometry;
    for (let i = 0; i < sb.groupCount; i++) {
      const g = (group + i) % sb.groupCount;
      const address = this.geometry.inodeBitmap(g);
      const bitmap = await this.cache.get(address, BlockType.InodeBitmap);
      for (let bit = 0; bit < sb.inodesPerGroup; bit++) {
        if ((bit & 7) === 0 && bitmap[HEADER_SIZE + (bit >> 3)] === 0xff) {
          bit += 7;
          continue;
        }
        if (bitIsSet(bitmap, bit)) continue;
        setBit(await this.cache.getForWrite(address, BlockType.InodeBitmap), bit, true);
        return g * sb.inodesPerGroup + bit + 1;
      }
    }
    throw new IoError('ENOSPC', 'no free inodes');
  }

  async freeInode(ino: number): Promise<void> {
    const { sb } = this.geometry;
    const g = Math.floor((ino - 1) / sb.inodesPerGroup);
    const bit = (ino - 1) % sb.inodesPerGroup;
    const bitmap = await this.cache.getForWrite(this.geometry.inodeBitmap(g), BlockType.InodeBitmap);
    if (!bitIsSet(bitmap, bit)) throw new IoError('EIO', `inode ${ino} freed twice`);
    setBit(bitmap, bit, false);
  }

  /** Free blocks and inodes over the whole volume (statfs). */
  async countFree(): Promise<{ blocks: number; inodes: number }> {
    const { sb } = this.geometry;
    let blocks = 0;
    let inodes = 0;
    for (let g = 0; g < sb.groupCount; g++) {
      blocks += countClearBits(await this.cache.get(this.geometry.blockBitmap(g), BlockType.BlockBitmap), this.geometry.groupSize(g));
      inodes += countClearBits(await this.cache.get(this.geometry.inodeBitmap(g), BlockType.InodeBitmap), sb.inodesPerGroup);
    }
    return { blocks, inodes };
  }
}
