/**
 * mkfs: lays out a fresh volume (see layout.ts) and creates the root directory.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { IoError, type BlockDevice } from './block-device.js';
import { FileBlockDevice } from './file-block-device.js';
import { Allocator, UNCONTENDED } from './allocator.js';
import { BlockCache } from './block-cache.js';
import { BlockMap } from './block-map.js';
import { Directories } from './directory.js';
import { emptyInode, InodeStore } from './inode.js';
import { timespecFromMs } from './timespec.js';
import { cleanJournalHeader } from './journal.js';
import {
  BITMAP_BITS, BLOCK_SIZE, BlockType, encodeSuperblock, FORMAT_VERSION, Geometry, resealBlock, sealBlock,
  type Superblock,
} from './layout.js';
import { MAX_VOLUME_BLOCKS } from './lock-names.js';
import { S_IFDIR } from './vfs.js';

export interface MkfsOptions {
  /** Domain slots, each with its own journal (default 8). */
  slots?: number;
  /** Log blocks per slot journal (default 512, at least 64). */
  journalBlocks?: number;
  /**
   * Blocks per allocation group (at most what one bitmap block covers, 32640 = 127.5 MiB). Default: enough groups
   * for two per slot where the volume allows it (each domain allocates from groups it holds the lock of), none
   * smaller than 1024 blocks.
   */
  blocksPerGroup?: number;
  uuid?: Uint8Array;
  now?: number;
  /**
   * The device reads zeros wherever mkfs does not write (a fresh sparse file): groups past the first
   * LAZY_EAGER_GROUPS (or `eagerGroups`) are then initialised on first use instead of now.
   */
  zeroed?: boolean;
  /** With `zeroed`: how many groups to initialise now (default LAZY_EAGER_GROUPS). */
  eagerGroups?: number;
}

/** Groups a lazy mkfs initialises at once: the volumes `hvshare up` makes by default have no more than this. */
export const LAZY_EAGER_GROUPS = 16;

export const MIN_JOURNAL_BLOCKS = 64;
export const DEFAULT_SLOTS = 8;
export const DEFAULT_JOURNAL_BLOCKS = 512;
/** The smallest allocation group mkfs makes: its bitmap and 16 blocks for inodes and data. */
const MIN_GROUP_BLOCKS = 1 + 16;

/** Blocks before the first allocation group: superblock, then per slot a journal header, a slot block, a log. */
function metadataBlocks(slotCount: number, journalBlocks: number): number {
  return 1 + slotCount * (2 + journalBlocks);
}

/**
 * The smallest volume a layout fits in, in bytes: the superblock and journals, and one allocation group.
 * mkfs refuses anything smaller with this figure, and platform.json's validation uses the same one.
 */
export function minimumVolumeBytes(options: Pick<MkfsOptions, 'slots' | 'journalBlocks'> = {}): number {
  const blocks = metadataBlocks(options.slots ?? DEFAULT_SLOTS, options.journalBlocks ?? DEFAULT_JOURNAL_BLOCKS);
  return (blocks + MIN_GROUP_BLOCKS) * BLOCK_SIZE;
}

export function planVolume(sizeBytes: number, options: MkfsOptions = {}): Superblock {
  const slotCount = options.slots ?? DEFAULT_SLOTS;
  const journalBlocks = options.journalBlocks ?? DEFAULT_JOURNAL_BLOCKS;
  if (!Number.isInteger(slotCount) || slotCount < 1 || slotCount > 256) throw new IoError('EINVAL', 'slots must be 1..256');
  if (!Number.isInteger(journalBlocks) || journalBlocks < MIN_JOURNAL_BLOCKS) {
    throw new IoError('EINVAL', `journal needs at least ${MIN_JOURNAL_BLOCKS} blocks`);
  }
  const minimum = minimumVolumeBytes({ slots: slotCount, journalBlocks });
  if (sizeBytes < minimum) {
    throw new IoError(
      'ENOSPC',
      `a volume of ${sizeBytes} bytes is too small: ${slotCount} journal slots of ${journalBlocks} blocks and one allocation group need at least ${minimum} bytes`,
    );
  }
  let totalBlocks = Math.min(Math.floor(sizeBytes / BLOCK_SIZE), MAX_VOLUME_BLOCKS);
  const journalHeaderStart = 1;
  const slotBlockStart = journalHeaderStart + slotCount;
  const journalStart = slotBlockStart + slotCount;
  const groupStart = journalStart + slotCount * journalBlocks;
  const blocksPerGroup = options.blocksPerGroup
    ?? Math.min(BITMAP_BITS, Math.max(1024, Math.ceil((totalBlocks - groupStart) / (2 * slotCount))));
  if (!Number.isInteger(blocksPerGroup) || blocksPerGroup < 64 || blocksPerGroup > BITMAP_BITS) {
    throw new IoError('EINVAL', `blocks per group must be 64..${BITMAP_BITS}`);
  }
  let groupCount = Math.ceil((totalBlocks - groupStart) / blocksPerGroup);
  if (groupCount > 0 && totalBlocks - (groupStart + (groupCount - 1) * blocksPerGroup) < MIN_GROUP_BLOCKS) {
    groupCount--;
    totalBlocks = groupStart + groupCount * blocksPerGroup;
  }
  if (groupCount < 1) throw new IoError('ENOSPC', `device of ${sizeBytes} bytes is too small for this layout`);
  return {
    version: FORMAT_VERSION, totalBlocks, slotCount, journalBlocks, journalHeaderStart, slotBlockStart, journalStart,
    groupStart, blocksPerGroup, groupCount, rootIno: groupStart + 1,
    eagerGroups: options.zeroed ? Math.max(1, Math.min(groupCount, options.eagerGroups ?? LAZY_EAGER_GROUPS)) : groupCount,
    uuid: options.uuid ?? new Uint8Array(randomBytes(16)), createdMs: options.now ?? Date.now(),
  };
}

/** Where formatNewImage builds an image before renaming it into place: beside it, hidden, one per image. */
export function formattingPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.formatting`);
}

/**
 * Creates (or replaces) the image file at `path` (and its folder) with `sizeBytes` and formats it. The image is built in a
 * temporary file beside it, made durable, then renamed into place, so a cut at any moment leaves either the old
 * state or the whole new image (and at most a temporary file the next format replaces); a failure removes the
 * temporary file and leaves `path` as it was.
 */
export async function formatNewImage(path: string, sizeBytes: number, options: MkfsOptions = {}): Promise<Superblock> {
  planVolume(sizeBytes, options); // a layout that does not fit fails before any file is made
  const temporary = formattingPath(path);
  await mkdir(dirname(path), { recursive: true });
  try {
    const handle = await open(temporary, 'w');
    try {
      await handle.truncate(sizeBytes).catch((err: NodeJS.ErrnoException) => {
        throw new IoError(err.code ?? 'EIO', `cannot make ${path} ${sizeBytes} bytes long: ${err.message}`);
      });
    } finally {
      await handle.close();
    }
    const dev = await FileBlockDevice.open(temporary);
    let sb: Superblock;
    try {
      // A new sparse file reads zeros wherever nothing was written: groups can be initialised lazily.
      sb = await mkfs(dev, { ...options, zeroed: true });
    } finally {
      await dev.close();
    }
    await rename(temporary, path);
    await syncDirectory(dirname(path));
    return sb;
  } catch (err) {
    await rm(temporary, { force: true });
    throw err;
  }
}

/** Makes a rename in `dir` durable. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
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

  // Later groups' bitmaps stay holes until first used (lazy initialisation, see layout.ts).
  for (let group = 0; group < sb.eagerGroups; group++) {
    await dev.write(geometry.blockBitmap(group) * BLOCK_SIZE, geometry.initialBitmap(group));
  }

  // The root directory, built with the filesystem's own code and written straight home.
  const cache = new BlockCache(dev);
  const allocator = new Allocator(cache, geometry, 0, UNCONTENDED);
  const inodes = new InodeStore(cache, geometry);
  const dirs = new Directories(cache, new BlockMap(cache, allocator, geometry));
  const { start: ino } = await allocator.allocBlocks(geometry.firstDataBlock(0), 1);
  if (ino !== sb.rootIno) throw new Error(`root got block ${ino}, not ${sb.rootIno}`);
  const root = emptyInode(ino, S_IFDIR | 0o755, 1, timespecFromMs(sb.createdMs));
  root.nlink = 2;
  inodes.create(root);
  await dirs.init(root, ino);
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
