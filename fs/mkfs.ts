/**
 * mkfs: lays out a fresh volume (see layout.ts) and creates the root directory.
 */
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { IoError, type BlockDevice } from './block-device.js';
import { FileBlockDevice } from './file-block-device.js';
import { Allocator } from './allocator.js';
import { BlockCache } from './block-cache.js';
import { BlockMap } from './block-map.js';
import { Directories } from './directory.js';
import { emptyInode, InodeStore } from './inode.js';
import { cleanJournalHeader } from './journal.js';
import {
  BITMAP_BITS, BLOCK_SIZE, BlockType, encodeSuperblock, FORMAT_VERSION, Geometry, HEADER_SIZE, INODES_PER_BLOCK,
  resealBlock, ROOT_INO, sealBlock, type Superblock,
} from './layout.js';
import { S_IFDIR } from './vfs.js';

export interface MkfsOptions {
  /** Domain slots, each with its own journal (default 8). */
  slots?: number;
  /** Log blocks per slot journal (default 512, at least 64). */
  journalBlocks?: number;
  /** Blocks per allocation group (default and maximum: what one bitmap block covers, 32640 = 127.5 MiB). */
  blocksPerGroup?: number;
  /** One inode per this many bytes of group (default 16384). */
  bytesPerInode?: number;
  uuid?: Uint8Array;
  now?: number;
}

export const MIN_JOURNAL_BLOCKS = 64;

export function planVolume(sizeBytes: number, options: MkfsOptions = {}): Superblock {
  const slotCount = options.slots ?? 8;
  const journalBlocks = options.journalBlocks ?? 512;
  const blocksPerGroup = options.blocksPerGroup ?? BITMAP_BITS;
  const bytesPerInode = options.bytesPerInode ?? 16384;
  if (!Number.isInteger(slotCount) || slotCount < 1 || slotCount > 256) throw new IoError('EINVAL', 'slots must be 1..256');
  if (!Number.isInteger(journalBlocks) || journalBlocks < MIN_JOURNAL_BLOCKS) {
    throw new IoError('EINVAL', `journal needs at least ${MIN_JOURNAL_BLOCKS} blocks`);
  }
  if (!Number.isInteger(blocksPerGroup) || blocksPerGroup < 64 || blocksPerGroup > BITMAP_BITS) {
    throw new IoError('EINVAL', `blocks per group must be 64..${BITMAP_BITS}`);
  }
  let inodesPerGroup = Math.ceil((blocksPerGroup * BLOCK_SIZE) / bytesPerInode / INODES_PER_BLOCK) * INODES_PER_BLOCK;
  inodesPerGroup = Math.max(INODES_PER_BLOCK, Math.min(inodesPerGroup, Math.floor(BITMAP_BITS / INODES_PER_BLOCK) * INODES_PER_BLOCK));
  const inodeTableBlocks = inodesPerGroup / INODES_PER_BLOCK;
  let totalBlocks = Math.min(Math.floor(sizeBytes / BLOCK_SIZE), 0xffffffff);
  const journalHeaderStart = 1;
  const slotBlockStart = journalHeaderStart + slotCount;
  const journalStart = slotBlockStart + slotCount;
  const groupStart = journalStart + slotCount * journalBlocks;
  const minGroup = 2 + inodeTableBlocks + 16;
  let groupCount = Math.ceil((totalBlocks - groupStart) / blocksPerGroup);
  if (groupCount > 0 && totalBlocks - (groupStart + (groupCount - 1) * blocksPerGroup) < minGroup) {
    groupCount--;
    totalBlocks = groupStart + groupCount * blocksPerGroup;
  }
  if (groupCount < 1) throw new IoError('ENOSPC', `device of ${sizeBytes} bytes is too small for this layout`);
  return {
    version: FORMAT_VERSION, totalBlocks, slotCount, journalBlocks, journalHeaderStart, slotBlockStart, journalStart,
    groupStart, blocksPerGroup, groupCount, inodesPerGroup, inodeTableBlocks, rootIno: ROOT_INO,
    uuid: options.uuid ?? new Uint8Array(randomBytes(16)), createdMs: options.now ?? Date.now(),
  };
}

function bitmapBlock(address: number, type: BlockType, used: (bit: number) => boolean): Uint8Array {
  const block = new Uint8Array(BLOCK_SIZE);
  for (let bit = 0; bit < BITMAP_BITS; bit++) if (used(bit)) block[HEADER_SIZE + (bit >> 3)] |= 1 << (bit & 7);
  sealBlock(block, type, address);
  return block;
}

/** Creates (or overwrites) the image file at `path` with `sizeBytes` and formats it. */
export async function formatNewImage(path: string, sizeBytes: number, options: MkfsOptions = {}): Promise<Superblock> {
  const handle = await open(path, 'w');
  await handle.truncate(sizeBytes);
  await handle.close();
  const dev = await FileBlockDevice.open(path);
  try {
    return await mkfs(dev, options);
  } finally {
    await dev.close();
  }
}

/** Formats `dev`. Returns the superblock written. */
export async function mkfs(dev: BlockDevice, options: MkfsOptions = {}): Promise<Superblock> {
  if (dev.readOnly) throw new IoError('EROFS', 'device is read-only');
  const sb = planVolume(dev.sizeBytes, options);
  const geometry = new Geometry(sb);
  const slotArea = new Uint8Array(2 * sb.slotCount * BLOCK_SIZE);
  for (let slot = 0; slot < sb.slotCount; slot++) {
    slotArea.set(cleanJournalHeader(geometry, slot), slot * BLOCK_SIZE);
    const orphans = slotArea.subarray((sb.slotCount + slot) * BLOCK_SIZE, (sb.slotCount + slot + 1) * BLOCK_SIZE);
    sealBlock(orphans, BlockType.Slot, geometry.slotBlock(slot));
  }
  await dev.write(geometry.journalHeader(0) * BLOCK_SIZE, slotArea);

  for (let group = 0; group < sb.groupCount; group++) {
    const size = geometry.groupSize(group);
    const reserved = geometry.firstDataBlock(group) - geometry.groupBase(group);
    const area = new Uint8Array(reserved * BLOCK_SIZE);
    area.set(bitmapBlock(geometry.blockBitmap(group), BlockType.BlockBitmap, (bit) => bit < reserved || bit >= size), 0);
    area.set(bitmapBlock(geometry.inodeBitmap(group), BlockType.InodeBitmap, (bit) => bit >= sb.inodesPerGroup), BLOCK_SIZE);
    for (let i = 0; i < sb.inodeTableBlocks; i++) {
      sealBlock(area.subarray((2 + i) * BLOCK_SIZE, (3 + i) * BLOCK_SIZE), BlockType.InodeTable, geometry.inodeTable(group) + i);
    }
    await dev.write(geometry.groupBase(group) * BLOCK_SIZE, area);
  }

  // The root directory, built with the filesystem's own code and written straight home.
  const cache = new BlockCache(dev);
  const allocator = new Allocator(cache, geometry, 0);
  const inodes = new InodeStore(cache, geometry);
  const dirs = new Directories(cache, new BlockMap(cache, allocator));
  const ino = await allocator.allocInode(0);
  if (ino !== ROOT_INO) throw new Error(`root got inode ${ino}`);
  const root = emptyInode(ino, S_IFDIR | 0o755, 1, sb.createdMs);
  root.nlink = 2;
  await dirs.init(root, ROOT_INO);
  await inodes.write(root);
  for (const { block, data } of cache.dirtyBlocks()) {
    resealBlock(data);
    await dev.write(block * BLOCK_SIZE, data);
  }
  await dev.flush();
  await dev.write(0, encodeSuperblock(sb));
  await dev.flush();
  return sb;
}
