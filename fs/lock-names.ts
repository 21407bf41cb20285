/**
 * Cluster lock names, within the ABI's name space (hypervisor/abi.ts): a lock is named after the block that
 * stands for the resource it covers, so the name space covers every inode of the largest volume mkfs accepts and
 * no two resources ever share a name.
 *
 *   an inode            its block address (the inode number): the inode, its indirect, directory or symlink
 *                       blocks, and the file's data pages cached in a domain
 *   an allocation group its block bitmap's address
 *   a journal slot      its slot block's address: the slot's journal and orphan list, held by the live instance
 *                       for as long as it is mounted, and by a dead one's fence until its journal is replayed
 *   rename              cross-directory moves of directories (the ancestry a cycle check walks stays put)
 *   mount               journal recovery at mount after a whole-volume crash (mounts take it one at a time)
 * The last two sit above every block address mkfs may hand out (MAX_VOLUME_BLOCKS).
 */
import { LOCK_NAME_LIMIT } from '../hypervisor/abi.js';
import type { Geometry } from './layout.js';

export const MOUNT_LOCK = LOCK_NAME_LIMIT - 1;
export const RENAME_LOCK = LOCK_NAME_LIMIT - 2;
/** Volumes stay below the names reserved for volume-wide locks. */
export const MAX_VOLUME_BLOCKS = LOCK_NAME_LIMIT - 256;

export function groupLock(geometry: Geometry, group: number): number {
  return geometry.blockBitmap(group);
}

export function slotLock(geometry: Geometry, slot: number): number {
  return geometry.slotBlock(slot);
}
