/**
 * The groups each slot's domain initialised (format 7), which closes lazy initialisation's blind spot: a group
 * past the superblock's eagerGroups whose bitmap block reads as a hole stands for a group never used, but a used
 * group whose bitmap block became a hole (a discard, a stray write of zeros) reads the same, and the allocator
 * would hand out its blocks in use. So the domain that first uses a group records it in its own slot block (under
 * its own slot lock, in the same transaction as the new bitmap), as ext4's group descriptors record BLOCK_UNINIT
 * apart from the bitmaps; a hole whose group some slot recorded is corruption. The records only ever grow, so
 * reading another slot's block without its lock is safe: a record being written right now is one of a group
 * whose bitmap is not a hole (its lock holder commits it before anyone else may look at the group).
 */
import type { BlockCache } from './block-cache.js';
import { BlockType, SLOT_GROUPS_MAX, SLOT_GROUPS_OFFSET, type Geometry } from './layout.js';

/** True when a slot block records that its domain initialised `group`. */
export function recordsInitialised(slotBlock: Uint8Array, group: number): boolean {
  return group < SLOT_GROUPS_MAX && (slotBlock[SLOT_GROUPS_OFFSET + (group >> 3)] & (1 << (group & 7))) !== 0;
}

export class InitialisedGroups {
  constructor(
    private readonly cache: BlockCache,
    private readonly geometry: Geometry,
    private readonly slot: number,
    /** The slot's lock, which covers its block. */
    private readonly owner: number,
  ) {}

  /** This slot's domain initialises `group` (joins the running transaction). */
  async record(group: number): Promise<void> {
    if (group >= SLOT_GROUPS_MAX) return;
    const block = await this.cache.getForWrite(this.geometry.slotBlock(this.slot), BlockType.Slot, this.owner);
    block[SLOT_GROUPS_OFFSET + (group >> 3)] |= 1 << (group & 7);
  }

  /** The slot that recorded initialising `group`, or null. */
  async recordedBy(group: number): Promise<number | null> {
    for (let slot = 0; slot < this.geometry.sb.slotCount; slot++) {
      const block = await this.cache.peek(this.geometry.slotBlock(slot), BlockType.Slot);
      if (block && recordsInitialised(block, group)) return slot;
    }
    return null;
  }
}
