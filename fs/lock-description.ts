import { Geometry, type Superblock } from './layout.js';
import { MOUNT_LOCK, RENAME_LOCK } from './lock-names.js';

/**
 * What a cluster lock name stands for on a volume (lock-names.ts), in words for people: `inode 1234`,
 * `group 3 bitmap`, `journal slot 1`, `rename`, `mount`.
 */
export function describeLock(sb: Superblock, name: number): string {
  if (name === MOUNT_LOCK) return 'mount';
  if (name === RENAME_LOCK) return 'rename';
  const geometry = new Geometry(sb);
  if (name >= sb.slotBlockStart && name < sb.slotBlockStart + sb.slotCount) return `journal slot ${name - sb.slotBlockStart}`;
  if (name >= sb.groupStart && name < sb.totalBlocks) {
    const group = geometry.groupOf(name);
    if (geometry.blockBitmap(group) === name) return `group ${group} bitmap`;
    return `inode ${name}`;
  }
  return `block ${name}`;
}
