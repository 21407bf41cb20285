/**
 * The orphan list of a domain slot: inodes whose last name is gone but whose blocks are still in use (a file
 * unlinked while open, or one whose freeing spans several transactions). Kept in the slot's own metadata block,
 * so each domain changes only its own list. Mounting a slot frees whatever its list still holds: the previous
 * instance on that slot is gone, and its open files with it.
 *
 *   slot block: header | count u32 | ino u32 [count] | (from SLOT_GROUPS_OFFSET: initialised-groups.ts)
 */
import { IoError } from './block-device.js';
import type { BlockCache } from './block-cache.js';
import { BlockType, HEADER_SIZE, SLOT_GROUPS_OFFSET, view, type Geometry } from './layout.js';

export const ORPHAN_CAPACITY = (SLOT_GROUPS_OFFSET - HEADER_SIZE - 4) / 4;

export function decodeOrphans(block: Uint8Array): number[] {
  const v = view(block);
  const count = Math.min(v.getUint32(HEADER_SIZE, true), ORPHAN_CAPACITY);
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(v.getUint32(HEADER_SIZE + 4 + i * 4, true));
  return out;
}

function encodeOrphans(block: Uint8Array, inos: number[]): void {
  const v = view(block);
  block.fill(0, HEADER_SIZE, SLOT_GROUPS_OFFSET);
  v.setUint32(HEADER_SIZE, inos.length, true);
  inos.forEach((ino, i) => v.setUint32(HEADER_SIZE + 4 + i * 4, ino, true));
}

export class OrphanList {
  constructor(
    private readonly cache: BlockCache,
    private readonly geometry: Geometry,
    private readonly slot: number,
    /** The slot's lock, which covers the list. */
    private readonly owner: number,
  ) {}

  private get address(): number {
    return this.geometry.slotBlock(this.slot);
  }

  async list(): Promise<number[]> {
    return decodeOrphans(await this.cache.get(this.address, BlockType.Slot, this.owner));
  }

  async add(ino: number): Promise<void> {
    const inos = await this.list();
    if (inos.includes(ino)) return;
    if (inos.length >= ORPHAN_CAPACITY) throw new IoError('ENOSPC', 'orphan list full');
    encodeOrphans(await this.cache.getForWrite(this.address, BlockType.Slot, this.owner), [...inos, ino]);
  }

  async remove(ino: number): Promise<void> {
    const inos = await this.list();
    if (!inos.includes(ino)) return;
    encodeOrphans(await this.cache.getForWrite(this.address, BlockType.Slot, this.owner), inos.filter((i) => i !== ino));
  }
}
