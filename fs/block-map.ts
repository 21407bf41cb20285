/**
 * Maps a file's block numbers to volume blocks: 12 direct pointers in the inode, one indirect block of entries
 * and one double indirect block of pointers to such blocks, enough for files of about 2 GiB. A zero pointer is a
 * hole (reads as zeros). Indirect blocks are metadata (journaled, checksummed).
 *
 * Since format 7 the pointer to a file data block carries the crc32c of the block's data, as ZFS's block pointer
 * does: a direct pointer's in the inode (directCrc), the others' beside them in an indirect block, as (block, crc)
 * entries. The checksum is thus covered by the lock of the inode whose data it describes and changes in the same
 * transaction as the pointer. Directory and symlink blocks have headers and checksums of their own; their
 * entries' crc is 0.
 *
 * Writing file data (mapForWrite) never overwrites a block a committed pointer names: such a block is copied on
 * write, to a block allocated by the running transaction, and freed (not reused before the commit, allocator.ts).
 * So whatever point a crash cuts, each committed pointer names a block that still holds the data its crc was
 * taken of. Blocks allocated by the running transaction are rewritten in place (no committed pointer names them).
 *
 * Every pointer is range-checked before it is followed: one into metadata or outside the data area is corruption.
 */
import { IoError } from './block-device.js';
import type { BlockCache } from './block-cache.js';
import type { Allocator } from './allocator.js';
import type { Inode } from './inode.js';
import { BlockType, DIRECT_POINTERS, ENTRIES_PER_BLOCK as EPB, HEADER_SIZE, MAX_FILE_BLOCKS, POINTERS_PER_BLOCK as PPB, type Geometry } from './layout.js';
import { CorruptionError } from './volume-errors.js';

const SINGLE_START = DIRECT_POINTERS;
const DOUBLE_START = DIRECT_POINTERS + EPB;

export interface MappedRun {
  /** First volume block, or 0 for a hole. */
  phys: number;
  count: number;
  /** The crc32c of each block of a mapped run (empty for a hole). */
  crcs: number[];
}

/** The u32 at word `index` after the block header (a pointer, or one half of an entry). */
export function readPointer(block: Uint8Array, index: number): number {
  const at = HEADER_SIZE + index * 4;
  return (block[at] | (block[at + 1] << 8) | (block[at + 2] << 16) | (block[at + 3] << 24)) >>> 0;
}

/** Entry `index` of an indirect block that maps file blocks: the block and the crc32c of its data. */
export function readEntry(block: Uint8Array, index: number): { block: number; crc: number } {
  return { block: readPointer(block, 2 * index), crc: readPointer(block, 2 * index + 1) };
}

function writePointer(block: Uint8Array, index: number, value: number): void {
  const at = HEADER_SIZE + index * 4;
  block[at] = value;
  block[at + 1] = value >>> 8;
  block[at + 2] = value >>> 16;
  block[at + 3] = value >>> 24;
}

function writeEntry(block: Uint8Array, index: number, phys: number, crc: number): void {
  writePointer(block, 2 * index, phys);
  writePointer(block, 2 * index + 1, crc);
}

/** Called after each freed block with the lowest file block freed so far; may commit. */
export type TruncateCheckpoint = (lowestFreed: number) => Promise<void>;

/** A view of the entries that map `fb` and the blocks after it (see pointersFor). */
interface Entries {
  get: (i: number) => number;
  crc: (i: number) => number;
  index: number;
  limit: number;
}

export class BlockMap {
  constructor(
    private readonly cache: BlockCache,
    private readonly allocator: Allocator,
    private readonly geometry: Geometry,
  ) {}

  /** `pointer` (non-zero), or CorruptionError when it leads into metadata or outside the volume. */
  private checked(inode: Inode, pointer: number, what: string): number {
    if (pointer !== 0 && !this.geometry.isDataBlock(pointer)) {
      throw new CorruptionError(`inode ${inode.ino}: ${what} points at block ${pointer}, outside the data area`);
    }
    return pointer;
  }

  /** The indirect block at `address` (0: none), checked before it is followed. */
  private async indirectBlock(inode: Inode, address: number, what: string): Promise<Uint8Array | null> {
    if (address === 0) return null;
    return this.cache.get(this.checked(inode, address, what), BlockType.Indirect, inode.ino);
  }

  /** The leaf indirect block that maps file blocks from DOUBLE_START + a * EPB (0: none yet). */
  private async leafAddress(inode: Inode, a: number): Promise<number> {
    const top = await this.indirectBlock(inode, inode.doubleIndirect, 'its double indirect pointer');
    return top ? this.checked(inode, readPointer(top, a), `entry ${a} of its double indirect block`) : 0;
  }

  /** The volume block holding file block `fb`, or 0. */
  async lookup(inode: Inode, fb: number): Promise<number> {
    if (fb >= MAX_FILE_BLOCKS) return 0;
    const entries = await this.pointersFor(inode, fb);
    return entries.limit ? this.checked(inode, entries.get(entries.index), `file block ${fb}`) : 0;
  }

  /**
   * The entries that map `fb` and the blocks after it: an array-like view of one indirect block (or the inode's
   * direct pointers) with the index of `fb` in it and how many of the following file blocks it covers.
   */
  private async pointersFor(inode: Inode, fb: number): Promise<Entries> {
    if (fb < SINGLE_START) return { get: (i) => inode.direct[i], crc: (i) => inode.directCrc[i], index: fb, limit: DIRECT_POINTERS };
    let block: Uint8Array | null;
    let index: number;
    if (fb < DOUBLE_START) {
      block = await this.indirectBlock(inode, inode.indirect, 'its indirect pointer');
      index = fb - SINGLE_START;
    } else {
      const k = fb - DOUBLE_START;
      const a = Math.floor(k / EPB);
      block = await this.indirectBlock(inode, await this.leafAddress(inode, a), `entry ${a} of its double indirect block`);
      index = k % EPB;
    }
    if (!block) return { get: () => 0, crc: () => 0, index, limit: EPB };
    const b = block;
    return { get: (i) => readPointer(b, 2 * i), crc: (i) => readPointer(b, 2 * i + 1), index, limit: EPB };
  }

  /** The run starting at `fb` (at most `max` blocks): contiguous volume blocks with their crcs, or a hole. */
  async lookupRun(inode: Inode, fb: number, max: number): Promise<MappedRun> {
    if (fb >= MAX_FILE_BLOCKS) return { phys: 0, count: max, crcs: [] };
    let phys = -1;
    let count = 0;
    const crcs: number[] = [];
    while (count < max && fb + count < MAX_FILE_BLOCKS) {
      const source = await this.pointersFor(inode, fb + count);
      for (let i = source.index; i < source.limit && count < max; i++) {
        const next = source.get(i);
        if (phys === -1) phys = this.checked(inode, next, `file block ${fb}`);
        else if (phys === 0 ? next !== 0 : next !== phys + count) return { phys, count, crcs };
        if (phys !== 0) crcs.push(source.crc(i));
        count++;
      }
    }
    return { phys: Math.max(phys, 0), count: Math.max(count, 1), crcs };
  }

  /**
   * Makes sure the first blocks of [fb, fb + max) are mapped and returns the first run: already mapped blocks,
   * or freshly allocated ones (`fresh`: their contents are garbage until written). Changes `inode` in memory. For
   * metadata blocks of the file (directory, symlink); file data goes through mapForWrite.
   */
  async ensureRun(inode: Inode, fb: number, max: number, goal: number): Promise<MappedRun & { fresh: boolean }> {
    if (fb + max > MAX_FILE_BLOCKS) throw new IoError('EFBIG', 'file too large');
    const mapped = await this.lookupRun(inode, fb, max);
    if (mapped.phys !== 0) return { ...mapped, fresh: false };
    const run = await this.allocate(inode, fb, mapped.count, goal);
    await this.setEntries(inode, fb, run.start, run.count, () => 0);
    return { phys: run.start, count: run.count, crcs: [], fresh: true };
  }

  /**
   * The blocks file data for [fb, fb + max) is to be written to, first run only, with the map already naming
   * them and `crcOf(i)` (the checksum of the data of file block fb + i): blocks the running transaction allocated
   * (rewritten in place), or new ones in place of a hole or of blocks a committed pointer names (copy on write:
   * the old blocks are freed). Changes `inode` in memory.
   */
  async mapForWrite(inode: Inode, fb: number, max: number, goal: number, crcOf: (i: number) => number): Promise<{ phys: number; count: number }> {
    if (fb + max > MAX_FILE_BLOCKS) throw new IoError('EFBIG', 'file too large');
    const mapped = await this.lookupRun(inode, fb, max);
    const uncommitted = (i: number) => this.allocator.allocatedUncommitted(mapped.phys + i);
    let count = 1;
    if (mapped.phys !== 0 && uncommitted(0)) {
      while (count < mapped.count && uncommitted(count)) count++;
      await this.setEntries(inode, fb, mapped.phys, count, crcOf);
      return { phys: mapped.phys, count };
    }
    if (mapped.phys !== 0) while (count < mapped.count && !uncommitted(count)) count++;
    else count = mapped.count;
    const run = await this.allocate(inode, fb, count, goal);
    await this.setEntries(inode, fb, run.start, run.count, crcOf);
    if (mapped.phys !== 0) {
      // The copies replace the old blocks, which the last commit still names: freed, reusable after the next.
      for (let i = 0; i < run.count; i++) await this.allocator.freeBlock(mapped.phys + i);
      inode.blocks -= run.count;
    }
    return { phys: run.start, count: run.count };
  }

  /** A run of 1..count new blocks for file blocks from `fb`, after the block before it if it can (else `goal`). */
  private async allocate(inode: Inode, fb: number, count: number, goal: number) {
    const before = fb > 0 ? await this.lookup(inode, fb - 1) : 0;
    const run = await this.allocator.allocBlocks(before ? before + 1 : goal, count);
    inode.blocks += run.count;
    return run;
  }

  private async newIndirect(inode: Inode, goal: number): Promise<number> {
    const { start } = await this.allocator.allocBlocks(goal, 1);
    this.cache.create(start, BlockType.Indirect, inode.ino);
    inode.blocks++;
    return start;
  }

  /** Points file block `fb` at `phys` (0: a hole) with data checksum `crc`, adding indirect blocks as needed. */
  private async setEntry(inode: Inode, fb: number, phys: number, crc: number): Promise<void> {
    await this.setEntries(inode, fb, phys, 1, () => crc);
  }

  /**
   * Points file blocks [fb, fb + count) at blocks phys, phys + 1, ... (phys 0: holes) with data checksums
   * `crcOf(i)`, adding indirect blocks as needed: each indirect block is looked up once for the entries it holds.
   */
  private async setEntries(inode: Inode, fb: number, phys: number, count: number, crcOf: (i: number) => number): Promise<void> {
    const target = (i: number) => (phys === 0 ? 0 : phys + i);
    let i = 0;
    for (; i < count && fb + i < SINGLE_START; i++) {
      inode.direct[fb + i] = target(i);
      inode.directCrc[fb + i] = crcOf(i);
    }
    while (i < count) {
      const { block, index } = await this.entriesForWrite(inode, fb + i, target(i));
      const n = Math.min(count - i, EPB - index);
      for (let j = 0; j < n; j++) writeEntry(block, index + j, target(i + j), crcOf(i + j));
      i += n;
    }
  }

  /** The indirect block (writable) holding the entry of file block `fb` (past the direct ones), made if missing. */
  private async entriesForWrite(inode: Inode, fb: number, goal: number): Promise<{ block: Uint8Array; index: number }> {
    let address: number;
    let index: number;
    if (fb < DOUBLE_START) {
      if (!inode.indirect) inode.indirect = await this.newIndirect(inode, goal + 1);
      address = inode.indirect;
      index = fb - SINGLE_START;
    } else {
      const k = fb - DOUBLE_START;
      const a = Math.floor(k / EPB);
      if (!inode.doubleIndirect) inode.doubleIndirect = await this.newIndirect(inode, goal + 1);
      address = await this.leafAddress(inode, a);
      if (!address) {
        address = await this.newIndirect(inode, goal + 1);
        writePointer(await this.cache.getForWrite(inode.doubleIndirect, BlockType.Indirect, inode.ino), a, address);
      }
      index = k % EPB;
    }
    return { block: await this.indirectForWrite(inode, address), index };
  }

  private async indirectForWrite(inode: Inode, address: number): Promise<Uint8Array> {
    return this.cache.getForWrite(this.checked(inode, address, 'an indirect pointer'), BlockType.Indirect, inode.ino);
  }

  /** Frees file block `fb` if it is mapped (a hole from now on; its pointer blocks stay). Changes `inode` in memory. */
  async unmap(inode: Inode, fb: number): Promise<boolean> {
    const phys = await this.lookup(inode, fb);
    if (!phys) return false;
    await this.setEntry(inode, fb, 0, 0);
    await this.allocator.freeBlock(phys);
    inode.blocks--;
    return true;
  }

  /** Frees every block of the file at or after file block `keep`, last first. Changes `inode` in memory. */
  async truncate(inode: Inode, keep: number, checkpoint: TruncateCheckpoint): Promise<void> {
    if (inode.doubleIndirect) {
      for (let a = PPB - 1; a >= 0; a--) {
        const segment = DOUBLE_START + a * EPB;
        if (segment + EPB <= keep) break;
        const leaf = await this.leafAddress(inode, a);
        if (!leaf) continue;
        await this.freeFromIndirect(inode, leaf, segment, keep, checkpoint);
        if (segment >= keep) {
          writePointer(await this.cache.getForWrite(inode.doubleIndirect, BlockType.Indirect, inode.ino), a, 0);
          await this.release(inode, leaf, segment, checkpoint);
        }
      }
      if (DOUBLE_START >= keep) {
        const dind = this.checked(inode, inode.doubleIndirect, 'its double indirect pointer');
        inode.doubleIndirect = 0;
        await this.release(inode, dind, DOUBLE_START, checkpoint);
      }
    }
    if (inode.indirect && DOUBLE_START > keep) {
      await this.freeFromIndirect(inode, inode.indirect, SINGLE_START, keep, checkpoint);
      if (SINGLE_START >= keep) {
        const ind = this.checked(inode, inode.indirect, 'its indirect pointer');
        inode.indirect = 0;
        await this.release(inode, ind, SINGLE_START, checkpoint);
      }
    }
    for (let i = DIRECT_POINTERS - 1; i >= keep; i--) {
      const phys = this.checked(inode, inode.direct[i], `file block ${i}`);
      if (!phys) continue;
      inode.direct[i] = 0;
      inode.directCrc[i] = 0;
      await this.release(inode, phys, i, checkpoint);
    }
  }

  private async freeFromIndirect(inode: Inode, address: number, segment: number, keep: number, checkpoint: TruncateCheckpoint): Promise<void> {
    for (let i = EPB - 1; i >= 0 && segment + i >= keep; i--) {
      const block = (await this.indirectBlock(inode, address, 'an indirect pointer'))!;
      const phys = this.checked(inode, readPointer(block, 2 * i), `file block ${segment + i}`);
      if (!phys) continue;
      writeEntry(await this.indirectForWrite(inode, address), i, 0, 0);
      await this.release(inode, phys, segment + i, checkpoint);
    }
  }

  private async release(inode: Inode, phys: number, fb: number, checkpoint: TruncateCheckpoint): Promise<void> {
    await this.allocator.freeBlock(phys);
    inode.blocks--;
    await checkpoint(fb);
  }
}
