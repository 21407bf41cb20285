/**
 * Maps a file's block numbers to volume blocks: 12 direct pointers in the inode, one indirect block
 * (POINTERS_PER_BLOCK pointers) and one double-indirect block, enough for files of about 4 GiB.
 * A zero pointer is a hole (reads as zeros). Indirect blocks are metadata (journaled, checksummed).
 */
import { IoError } from './block-device.js';
import type { BlockCache } from './block-cache.js';
import type { Allocator } from './allocator.js';
import type { Inode } from './inode.js';
import { BlockType, DIRECT_POINTERS, HEADER_SIZE, MAX_FILE_BLOCKS, POINTERS_PER_BLOCK as PPB } from './layout.js';

const SINGLE_START = DIRECT_POINTERS;
const DOUBLE_START = DIRECT_POINTERS + PPB;

export interface MappedRun {
  /** First volume block, or 0 for a hole. */
  phys: number;
  count: number;
}

export function readPointer(block: Uint8Array, index: number): number {
  const at = HEADER_SIZE + index * 4;
  return (block[at] | (block[at + 1] << 8) | (block[at + 2] << 16) | (block[at + 3] << 24)) >>> 0;
}

function writePointer(block: Uint8Array, index: number, value: number): void {
  const at = HEADER_SIZE + index * 4;
  block[at] = value;
  block[at + 1] = value >>> 8;
  block[at + 2] = value >>> 16;
  block[at + 3] = value >>> 24;
}

/** Called after each freed block with the lowest file block freed so far; may commit. */
export type TruncateCheckpoint = (lowestFreed: number) => Promise<void>;

export class BlockMap {
  constructor(
    private readonly cache: BlockCache,
    private readonly allocator: Allocator,
  ) {}

  private async pointerIn(inode: Inode, address: number, index: number): Promise<number> {
    if (address === 0) return 0;
    return readPointer(await this.cache.get(address, BlockType.Indirect, inode.ino), index);
  }

  /** The volume block holding file block `fb`, or 0. */
  async lookup(inode: Inode, fb: number): Promise<number> {
    if (fb < SINGLE_START) return inode.direct[fb];
    if (fb < DOUBLE_START) return this.pointerIn(inode, inode.indirect, fb - SINGLE_START);
    if (fb >= MAX_FILE_BLOCKS) return 0;
    const k = fb - DOUBLE_START;
    return this.pointerIn(inode, await this.pointerIn(inode, inode.doubleIndirect, Math.floor(k / PPB)), k % PPB);
  }

  /**
   * The pointers that map `fb` and the blocks after it: an array-like view of one pointer block (or the inode's
   * direct pointers) with the index of `fb` in it and how many of the following file blocks it covers.
   */
  private async pointersFor(inode: Inode, fb: number): Promise<{ get: (i: number) => number; index: number; limit: number }> {
    if (fb < SINGLE_START) return { get: (i) => inode.direct[i], index: fb, limit: DIRECT_POINTERS };
    const none = { get: () => 0, index: 0, limit: 0 };
    let address: number;
    let index: number;
    if (fb < DOUBLE_START) {
      address = inode.indirect;
      index = fb - SINGLE_START;
    } else {
      const k = fb - DOUBLE_START;
      address = await this.pointerIn(inode, inode.doubleIndirect, Math.floor(k / PPB));
      index = k % PPB;
    }
    if (!address) return { ...none, index, limit: PPB };
    const block = await this.cache.get(address, BlockType.Indirect, inode.ino);
    return { get: (i) => readPointer(block, i), index, limit: PPB };
  }

  /** The run starting at `fb` (at most `max` blocks): contiguous volume blocks, or a hole. */
  async lookupRun(inode: Inode, fb: number, max: number): Promise<MappedRun> {
    if (fb >= MAX_FILE_BLOCKS) return { phys: 0, count: max };
    let phys = -1;
    let count = 0;
    while (count < max && fb + count < MAX_FILE_BLOCKS) {
      const source = await this.pointersFor(inode, fb + count);
      for (let i = source.index; i < source.limit && count < max; i++) {
        const next = source.get(i);
        if (phys === -1) phys = next;
        else if (phys === 0 ? next !== 0 : next !== phys + count) return { phys, count };
        count++;
      }
    }
    return { phys: Math.max(phys, 0), count: Math.max(count, 1) };
  }

  /**
   * Makes sure the first blocks of [fb, fb + max) are mapped and returns the first run: already mapped blocks,
   * or freshly allocated ones (`fresh`: their contents are garbage until written). Changes `inode` in memory.
   */
  async ensureRun(inode: Inode, fb: number, max: number, goal: number): Promise<MappedRun & { fresh: boolean }> {
    if (fb + max > MAX_FILE_BLOCKS) throw new IoError('EFBIG', 'file too large');
    const mapped = await this.lookupRun(inode, fb, max);
    if (mapped.phys !== 0) return { ...mapped, fresh: false };
    const before = fb > 0 ? await this.lookup(inode, fb - 1) : 0;
    const run = await this.allocator.allocBlocks(before ? before + 1 : goal, mapped.count);
    inode.blocks += run.count;
    for (let i = 0; i < run.count; i++) await this.setPointer(inode, fb + i, run.start + i);
    return { phys: run.start, count: run.count, fresh: true };
  }

  private async newIndirect(inode: Inode, goal: number): Promise<number> {
    const { start } = await this.allocator.allocBlocks(goal, 1);
    this.cache.create(start, BlockType.Indirect, inode.ino);
    inode.blocks++;
    return start;
  }

  private async setPointer(inode: Inode, fb: number, phys: number): Promise<void> {
    if (fb < SINGLE_START) {
      inode.direct[fb] = phys;
      return;
    }
    if (fb < DOUBLE_START) {
      if (!inode.indirect) inode.indirect = await this.newIndirect(inode, phys + 1);
      writePointer(await this.cache.getForWrite(inode.indirect, BlockType.Indirect, inode.ino), fb - SINGLE_START, phys);
      return;
    }
    const k = fb - DOUBLE_START;
    if (!inode.doubleIndirect) inode.doubleIndirect = await this.newIndirect(inode, phys + 1);
    let leaf = await this.pointerIn(inode, inode.doubleIndirect, Math.floor(k / PPB));
    if (!leaf) {
      leaf = await this.newIndirect(inode, phys + 1);
      writePointer(await this.cache.getForWrite(inode.doubleIndirect, BlockType.Indirect, inode.ino), Math.floor(k / PPB), leaf);
    }
    writePointer(await this.cache.getForWrite(leaf, BlockType.Indirect, inode.ino), k % PPB, phys);
  }

  /** Frees file block `fb` if it is mapped (a hole from now on; its pointer blocks stay). Changes `inode` in memory. */
  async unmap(inode: Inode, fb: number): Promise<boolean> {
    const phys = await this.lookup(inode, fb);
    if (!phys) return false;
    await this.setPointer(inode, fb, 0);
    await this.allocator.freeBlock(phys);
    inode.blocks--;
    return true;
  }

  /** Frees every block of the file at or after file block `keep`, last first. Changes `inode` in memory. */
  async truncate(inode: Inode, keep: number, checkpoint: TruncateCheckpoint): Promise<void> {
    if (inode.doubleIndirect) {
      for (let a = PPB - 1; a >= 0; a--) {
        const segment = DOUBLE_START + a * PPB;
        if (segment + PPB <= keep) break;
        const leaf = await this.pointerIn(inode, inode.doubleIndirect, a);
        if (!leaf) continue;
        await this.freeFromIndirect(inode, leaf, segment, keep, checkpoint);
        if (segment >= keep) {
          writePointer(await this.cache.getForWrite(inode.doubleIndirect, BlockType.Indirect, inode.ino), a, 0);
          await this.release(inode, leaf, segment, checkpoint);
        }
      }
      if (DOUBLE_START >= keep) {
        const dind = inode.doubleIndirect;
        inode.doubleIndirect = 0;
        await this.release(inode, dind, DOUBLE_START, checkpoint);
      }
    }
    if (inode.indirect && DOUBLE_START > keep) {
      await this.freeFromIndirect(inode, inode.indirect, SINGLE_START, keep, checkpoint);
      if (SINGLE_START >= keep) {
        const ind = inode.indirect;
        inode.indirect = 0;
        await this.release(inode, ind, SINGLE_START, checkpoint);
      }
    }
    for (let i = DIRECT_POINTERS - 1; i >= keep; i--) {
      const phys = inode.direct[i];
      if (!phys) continue;
      inode.direct[i] = 0;
      await this.release(inode, phys, i, checkpoint);
    }
  }

  private async freeFromIndirect(inode: Inode, address: number, segment: number, keep: number, checkpoint: TruncateCheckpoint): Promise<void> {
    for (let i = PPB - 1; i >= 0 && segment + i >= keep; i--) {
      const phys = await this.pointerIn(inode, address, i);
      if (!phys) continue;
      writePointer(await this.cache.getForWrite(address, BlockType.Indirect, inode.ino), i, 0);
      await this.release(inode, phys, segment + i, checkpoint);
    }
  }

  private async release(inode: Inode, phys: number, fb: number, checkpoint: TruncateCheckpoint): Promise<void> {
    await this.allocator.freeBlock(phys);
    inode.blocks--;
    await checkpoint(fb);
  }
}
