/**
 * Block allocation from the per-group bitmaps (inodes are blocks too). Each group's bitmap is covered by the
 * group's cluster lock, so a domain allocates from groups it holds: its preferred group first (one per domain
 * slot, so domains writing at once grow their files in different parts of the volume and never trade a bitmap),
 * and a file grows contiguously from its last block ("goal") when that block's group can be had without waiting.
 * Other groups are only tried (never waited for) when allocating; when none of them could be had the operation
 * starts over with the lock of the first one skipped (GroupLocks.restartWith), as GFS2's allocator tries resource
 * groups before it waits for one. Freeing a block needs its group's lock whatever the group, and waits for it
 * while the operation has changed nothing.
 *
 * Blocks freed in the running transaction are not handed out again before it commits: file data is written in
 * place before the commit, and must never land in a block the last committed state still gives to another file.
 * Blocks handed out in the running transaction are remembered too: the last committed state gives them to nobody,
 * so file data may be rewritten in them in place (file-io.ts copies every other block on write).
 */
import { IoError } from './block-device.js';
import { CorruptionError } from './volume-errors.js';
import type { BlockCache } from './block-cache.js';
import { BlockSet } from './block-set.js';
import { BlockType, checkBlockHeader, HEADER_SIZE, type Geometry } from './layout.js';

/** Bitmaps statfs reads at once. */
const COUNT_BATCH = 64;

/** How the allocator gets a group's lock (the filesystem's lock client; mkfs has the volume to itself). */
export interface GroupLocks {
  /** The lock of group `group`, exclusive, for the running operation; false when it cannot be had now. */
  acquire(group: number, mayWait: boolean): Promise<boolean>;
  /** True (and the lock pinned for the running operation) when the group's lock is held already. */
  pinIfHeld(group: number): boolean;
  /** Ends the running operation, to be run again once the lock of `group` is held. */
  restartWith(group: number): never;
  /** The group's lock name. */
  name(group: number): number;
}

/** Every group at hand: for mkfs, which has the volume to itself. */
export const UNCONTENDED: GroupLocks = {
  acquire: async () => true,
  pinIfHeld: () => true,
  restartWith: (group) => {
    throw new Error(`group ${group} is not at hand`);
  },
  name: (group) => group,
};

/** Where the groups a domain initialised are recorded (initialised-groups.ts; mkfs needs none). */
export interface GroupRecords {
  record(group: number): Promise<void>;
  recordedBy(group: number): Promise<number | null>;
}

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
  private readonly freedThisTx = new BlockSet();
  private readonly allocatedThisTx = new BlockSet();
  /** Runs handed out by the running operation: forgotten if it fails (its bitmap change is undone). */
  private allocatedThisOp: Run[] = [];

  constructor(
    private readonly cache: BlockCache,
    private readonly geometry: Geometry,
    readonly preferredGroup: number,
    private readonly locks: GroupLocks,
    private readonly records: GroupRecords | null = null,
  ) {}

  /** Lazily initialised groups whose hole of a bitmap was found recorded by no slot: never used. */
  private readonly neverUsed = new Set<number>();

  /** Blocks freed by the running transaction, usable once it commits. */
  get pendingFrees(): number {
    return this.freedThisTx.size;
  }

  /** The running transaction committed: blocks it freed may be reused. */
  transactionCommitted(): void {
    this.freedThisTx.clear();
    this.allocatedThisTx.clear();
  }

  beginOp(): void {
    this.allocatedThisOp = [];
  }

  /** The running operation ended; a failed one's allocations were undone and may go to anyone again. */
  endOp(failed: boolean): void {
    if (failed) for (const run of this.allocatedThisOp) this.allocatedThisTx.delete(run.start, run.count);
    this.allocatedThisOp = [];
  }

  /** True when `block` was handed out by the running transaction (no committed pointer names it yet). */
  allocatedUncommitted(block: number): boolean {
    return this.allocatedThisTx.has(block);
  }

  /** One contiguous run of 1..max free blocks, as close after `goal` as possible (0: the preferred group). */
  async allocBlocks(goal: number, max: number): Promise<Run> {
    const { sb } = this.geometry;
    const goalValid = goal >= sb.groupStart && goal < sb.totalBlocks;
    const goalGroup = goalValid ? this.geometry.groupOf(goal) : -1;
    let skipped: number | null = null;
    // The goal's group first, then every group from the preferred one on (no list of all the groups per call:
    // a volume of a few TiB has thousands).
    for (let i = goalValid ? -1 : 0; i < sb.groupCount; i++) {
      const group = i < 0 ? goalGroup : (this.preferredGroup + i) % sb.groupCount;
      if (i >= 0 && group === goalGroup) continue;
      if (!(await this.locks.acquire(group, group === this.preferredGroup))) {
        skipped ??= group;
        continue;
      }
      const base = this.geometry.groupBase(group);
      const size = this.geometry.groupSize(group);
      const dataStart = this.geometry.firstDataBlock(group) - base;
      const goalBit = goalValid && this.geometry.groupOf(goal) === group ? Math.max(goal - base, dataStart) : dataStart;
      const run = (await this.findRun(group, goalBit, size, max)) ?? (await this.findRun(group, dataStart, goalBit, max));
      if (run) return run;
    }
    if (skipped !== null) this.locks.restartWith(skipped);
    throw new IoError('ENOSPC', 'no free blocks');
  }

  private async bitmap(group: number, write = false): Promise<Uint8Array> {
    const address = this.geometry.blockBitmap(group);
    const owner = this.locks.name(group);
    if (group >= this.geometry.sb.eagerGroups) {
      const valid = await this.cache.getIf(address, BlockType.BlockBitmap, owner);
      if (valid && !write) return valid;
      if (!valid && (await this.uninitialised(group))) {
        await this.checkNeverUsed(group, address);
        if (!write) return this.geometry.initialBitmap(group);
        // First use of a lazily initialised group: its bitmap joins the running transaction, and so does the record.
        const created = this.cache.create(address, BlockType.BlockBitmap, owner);
        created.set(this.geometry.initialBitmap(group));
        await this.records?.record(group);
        return created;
      }
    }
    return write ? this.cache.getForWrite(address, BlockType.BlockBitmap, owner) : this.cache.get(address, BlockType.BlockBitmap, owner);
  }

  /** A hole of a bitmap in a group some slot recorded initialising is a used group's bitmap lost: corruption. */
  private async checkNeverUsed(group: number, address: number): Promise<void> {
    if (!this.records || this.neverUsed.has(group)) return;
    const slot = await this.records.recordedBy(group);
    if (slot !== null) {
      throw new CorruptionError(`group ${group}: its bitmap block ${address} is a hole, but slot ${slot}'s domain initialised the group; not trusted (run hvshare fsck)`);
    }
    this.neverUsed.add(group);
  }

  /** True when the group's bitmap block is still the hole a lazy mkfs left. */
  private async uninitialised(group: number): Promise<boolean> {
    if (group < this.geometry.sb.eagerGroups) return false;
    return this.geometry.isUninitialised(group, await this.cache.readUncached(this.geometry.blockBitmap(group)));
  }

  private async findRun(group: number, from: number, to: number, max: number): Promise<Run | null> {
    const base = this.geometry.groupBase(group);
    const bitmap = await this.bitmap(group);
    // A bitmap that does not even mark itself used says nothing true about the blocks it covers.
    if (!bitIsSet(bitmap, 0)) throw new CorruptionError(`group ${group}: bitmap block ${base} marks itself free; not trusted (run hvshare fsck)`);
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
      const run = this.guarded({ start: base + bit, count: end - bit });
      const writable = await this.bitmap(group, true);
      for (let b = bit; b < end; b++) setBit(writable, b, true);
      this.allocatedThisTx.add(run.start, run.count);
      this.allocatedThisOp.push(run);
      return run;
    }
    return null;
  }

  /** The last word before a run is handed out: never a superblock, journal or bitmap block, never past the end. */
  private guarded(run: Run): Run {
    const last = run.start + run.count - 1;
    if (run.count < 1 || !this.geometry.isDataBlock(run.start) || !this.geometry.isDataBlock(last) || this.geometry.groupOf(run.start) !== this.geometry.groupOf(last)) {
      throw new CorruptionError(`refusing to hand out blocks ${run.start}..${last}: metadata or outside the volume`);
    }
    return run;
  }

  /** Frees a block; its cached copy goes unless `forget` is false (a freed inode still written home). */
  async freeBlock(block: number, forget = true): Promise<void> {
    if (!this.geometry.isDataBlock(block)) throw new CorruptionError(`freeing block ${block} outside the data area`);
    const group = this.geometry.groupOf(block);
    if (!(await this.locks.acquire(group, true))) this.locks.restartWith(group);
    const bitmap = await this.bitmap(group, true);
    const bit = block - this.geometry.groupBase(group);
    if (!bitIsSet(bitmap, bit)) throw new CorruptionError(`block ${block} freed twice`);
    setBit(bitmap, bit, false);
    this.freedThisTx.add(block);
    this.allocatedThisTx.delete(block);
    if (forget) this.cache.forget(block);
  }

  /**
   * Free blocks over the whole volume (statfs): exact for the groups this domain holds, as last written for the
   * others (another domain may be allocating from them right now; waiting for every group's lock would take
   * every writer's bitmap away).
   */
  async countFree(): Promise<number> {
    let blocks = 0;
    for (let first = 0; first < this.geometry.sb.groupCount; first += COUNT_BATCH) {
      const last = Math.min(first + COUNT_BATCH, this.geometry.sb.groupCount);
      const groups = Array.from({ length: last - first }, (_, i) => first + i);
      for (const free of await Promise.all(groups.map((g) => this.freeIn(g)))) blocks += free;
    }
    return blocks;
  }

  /** Free blocks of one group for statfs: its bitmap if held, else as last written (a hole: as mkfs left it). */
  private async freeIn(group: number): Promise<number> {
    const size = this.geometry.groupSize(group);
    if (this.locks.pinIfHeld(group)) return countClearBits(await this.bitmap(group), size);
    const address = this.geometry.blockBitmap(group);
    if (group < this.geometry.sb.eagerGroups) {
      const bitmap = await this.cache.peek(address, BlockType.BlockBitmap);
      return bitmap ? countClearBits(bitmap, size) : 0;
    }
    // One read tells a lazily initialised group never used (a hole) from one in use.
    const raw = await this.cache.readUncached(address);
    if (this.geometry.isUninitialised(group, raw)) return size - (this.geometry.firstDataBlock(group) - this.geometry.groupBase(group));
    return checkBlockHeader(raw, BlockType.BlockBitmap, address) ? 0 : countClearBits(raw, size);
  }
}
