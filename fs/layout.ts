/**
 * The on-disk format: block size, block types, the common metadata header, the superblock and the geometry
 * derived from it. Every metadata block starts with {magic, type, own block address, crc32c}, so a block that was
 * written to the wrong place, torn, or belongs to another structure is caught when read.
 *
 *   block 0                      superblock (written once by mkfs)
 *   journal headers              one per domain slot (the commit records)
 *   slot blocks                  one per domain slot (its orphan list: unlinked inodes still open)
 *   journal logs                 slots x journalBlocks block copies
 *   allocation groups            each: block bitmap, then blocks for inodes, directories, indirect blocks, data
 *
 * Since format 2, an inode is a block of its own (as GFS2's dinode), allocated on demand from the groups, and its
 * number is its block address. Every metadata block is then covered by exactly one cluster lock (see
 * lock-names.ts): an inode's block, indirect blocks, directory and symlink blocks by the inode's lock, a bitmap by
 * its group's lock, a slot's journal and orphan list by the slot's lock. Format 3 keeps an inode's times to the
 * nanosecond with 64-bit seconds (inode.ts). Format 4 initialises allocation groups lazily (as ext4's
 * lazy_itable_init and BLOCK_UNINIT): mkfs of a fresh sparse image writes the bitmaps of the first
 * `eagerGroups` groups only; a later group's bitmap is a hole that reads as zeros until the group is first used,
 * and an all-zero bitmap block of such a group stands for its initial bitmap (`Geometry.initialBitmap`). Format 5 stores
 * devices (with their number), FIFOs and sockets, format 6 extended attributes (xattr.ts). Format 7 keeps a
 * crc32c of every file data block next to its pointer (block-map.ts), as ZFS keeps it in the block pointer: the
 * checksum is covered by the lock of the inode whose data it describes, and journaled with the pointer. Older
 * formats are refused (FORMAT_CHANGES says what they lack).
 */
import { crc32c } from './crc32c.js';
import { IoError } from './block-device.js';
import { CorruptionError } from './volume-errors.js';

export const BLOCK_SIZE = 4096;
export const MAGIC = 0x48565346; // "HVSF"
export const FORMAT_VERSION = 7;
/** What each format brought, so a volume of an older one is refused with what it lacks. */
const FORMAT_CHANGES: Record<number, string> = {
  2: 'one inode a block, one lock an inode',
  3: 'times to the nanosecond with 64-bit seconds',
  4: 'allocation groups initialised on first use, so large images format in seconds',
  5: 'devices, FIFOs and sockets',
  6: 'extended attributes',
  7: 'a checksum of every file data block',
};
export const HEADER_SIZE = 16;

export enum BlockType {
  Super = 1,
  JournalHeader = 2,
  Slot = 3,
  BlockBitmap = 4,
  Indirect = 7,
  Directory = 8,
  Symlink = 9,
  Inode = 10,
  Xattr = 11,
}

/**
 * A slot block: its orphan list (orphans.ts) in the first half; from SLOT_GROUPS_OFFSET one bit per group that
 * the slot's domain initialised (initialised-groups.ts), for groups below SLOT_GROUPS_MAX.
 */
export const SLOT_GROUPS_OFFSET = 2048;
export const SLOT_GROUPS_MAX = (4096 - SLOT_GROUPS_OFFSET) * 8;

/** Bits a bitmap block holds after its header: the largest group, in blocks or inodes. */
export const BITMAP_BITS = (BLOCK_SIZE - HEADER_SIZE) * 8;
/** Bytes of an inode block that hold the inode record (after the header): 128, then the direct blocks' checksums. */
export const INODE_SIZE = 176;
/** Pointers of an indirect block that maps indirect blocks (the double indirect block): block addresses. */
export const POINTERS_PER_BLOCK = (BLOCK_SIZE - HEADER_SIZE) / 4;
/** Entries of an indirect block that maps file blocks: (block address, crc32c of the block's data) pairs. */
export const ENTRIES_PER_BLOCK = (BLOCK_SIZE - HEADER_SIZE) / 8;
export const DIRECT_POINTERS = 12;
/** 12 direct, one indirect block of entries, one double indirect block of pointers to such blocks: about 2 GiB. */
export const MAX_FILE_BLOCKS = DIRECT_POINTERS + ENTRIES_PER_BLOCK + POINTERS_PER_BLOCK * ENTRIES_PER_BLOCK;
export const MAX_FILE_SIZE = MAX_FILE_BLOCKS * BLOCK_SIZE;
export const NAME_MAX = 255;
/** A symlink's target: up to PATH_MAX - 1 bytes, in blocks that each hold a length (u32) and a piece of it. */
export const SYMLINK_MAX = 4095;
export const SYMLINK_CHUNK = BLOCK_SIZE - HEADER_SIZE - 4;
export const symlinkBlocks = (size: number) => Math.ceil(size / SYMLINK_CHUNK);

/** DataViews made so far, by the array they view: an operation views its blocks a dozen times (~0.2 µs to make one). */
const views = new WeakMap<Uint8Array, DataView>();

export function view(block: Uint8Array): DataView {
  let v = views.get(block);
  if (!v) views.set(block, (v = new DataView(block.buffer, block.byteOffset, block.byteLength)));
  return v;
}

function blockChecksum(block: Uint8Array): number {
  return crc32c(block, crc32c(block, 0, 0, 12), HEADER_SIZE);
}

/** Fills in the header of a metadata block and seals it with its checksum. */
export function sealBlock(block: Uint8Array, type: BlockType, address: number): void {
  const v = view(block);
  v.setUint32(0, MAGIC, true);
  v.setUint32(4, type, true);
  v.setUint32(8, address, true);
  v.setUint32(12, blockChecksum(block), true);
}

/** Recomputes the checksum of a block whose header is already in place (after its body changed). */
export function resealBlock(block: Uint8Array): void {
  view(block).setUint32(12, blockChecksum(block), true);
}

export function blockTypeOf(block: Uint8Array): number {
  return view(block).getUint32(4, true);
}

/** Why a metadata block is not what it should be, or null when it is. */
export function checkBlockHeader(block: Uint8Array, type: BlockType, address: number): string | null {
  const v = view(block);
  if (v.getUint32(0, true) !== MAGIC) return `block ${address}: bad magic (expected ${BlockType[type]})`;
  if (v.getUint32(4, true) !== type) {
    return `block ${address}: type ${BlockType[v.getUint32(4, true)] ?? v.getUint32(4, true)}, expected ${BlockType[type]}`;
  }
  if (v.getUint32(8, true) !== address) return `block ${address}: header says address ${v.getUint32(8, true)}`;
  if (v.getUint32(12, true) !== blockChecksum(block)) return `block ${address}: checksum mismatch`;
  return null;
}

export function verifyBlock(block: Uint8Array, type: BlockType, address: number): void {
  const problem = checkBlockHeader(block, type, address);
  if (problem) throw new CorruptionError(problem);
}

export interface Superblock {
  version: number;
  totalBlocks: number;
  slotCount: number;
  /** Log blocks per slot (the header block is separate). */
  journalBlocks: number;
  journalHeaderStart: number;
  slotBlockStart: number;
  journalStart: number;
  groupStart: number;
  blocksPerGroup: number;
  groupCount: number;
  rootIno: number;
  /** Groups whose bitmaps mkfs wrote; later ones are initialised on first use. */
  eagerGroups: number;
  uuid: Uint8Array;
  createdMs: number;
}

export function encodeSuperblock(sb: Superblock): Uint8Array {
  const block = new Uint8Array(BLOCK_SIZE);
  const v = view(block);
  const fields = [
    sb.version, BLOCK_SIZE, sb.totalBlocks, sb.slotCount, sb.journalBlocks, sb.journalHeaderStart,
    sb.slotBlockStart, sb.journalStart, sb.groupStart, sb.blocksPerGroup, sb.groupCount, sb.rootIno, sb.eagerGroups,
  ];
  fields.forEach((value, i) => v.setUint32(16 + i * 4, value, true));
  block.set(sb.uuid.subarray(0, 16), 72);
  v.setFloat64(88, sb.createdMs, true);
  sealBlock(block, BlockType.Super, 0);
  return block;
}

export function decodeSuperblock(block: Uint8Array): Superblock {
  verifyBlock(block, BlockType.Super, 0);
  const v = view(block);
  const u = (i: number) => v.getUint32(16 + i * 4, true);
  checkFormatVersion(u(0));
  if (u(1) !== BLOCK_SIZE) throw new IoError('EINVAL', `unsupported block size ${u(1)}`);
  if (u(11) !== u(8) + 1) throw new IoError('EINVAL', `root inode ${u(11)} is not the first block of group 0`);
  return {
    version: u(0),
    totalBlocks: u(2),
    slotCount: u(3),
    journalBlocks: u(4),
    journalHeaderStart: u(5),
    slotBlockStart: u(6),
    journalStart: u(7),
    groupStart: u(8),
    blocksPerGroup: u(9),
    groupCount: u(10),
    rootIno: u(11),
    eagerGroups: u(12),
    uuid: block.slice(72, 88),
    createdMs: v.getFloat64(88, true),
  };
}

function checkFormatVersion(version: number): void {
  if (version === FORMAT_VERSION) return;
  if (version > 0 && version < FORMAT_VERSION) {
    const lacks = Object.entries(FORMAT_CHANGES)
      .filter(([since]) => Number(since) > version)
      .map(([, change]) => change);
    throw new IoError('EINVAL', `format version ${version} is no longer supported (this hvshare reads version ${FORMAT_VERSION}: ${lacks.join('; ')}); re-create the volume with \`hvshare mkfs --force\``);
  }
  throw new IoError('EINVAL', `unsupported format version ${version} (this hvshare reads version ${FORMAT_VERSION})`);
}

export async function readSuperblock(dev: { read(offset: number, dst: Uint8Array): Promise<void> }): Promise<Superblock> {
  const block = new Uint8Array(BLOCK_SIZE);
  await dev.read(0, block);
  return decodeSuperblock(block);
}

/** Where things are, derived from the superblock. */
export class Geometry {
  constructor(readonly sb: Superblock) {}

  groupBase(group: number): number {
    return this.sb.groupStart + group * this.sb.blocksPerGroup;
  }
  /** Blocks in a group (the last may be shorter). */
  groupSize(group: number): number {
    return Math.min(this.sb.blocksPerGroup, this.sb.totalBlocks - this.groupBase(group));
  }
  blockBitmap(group: number): number {
    return this.groupBase(group);
  }
  /** First block of a group that may hold inodes and data. */
  firstDataBlock(group: number): number {
    return this.groupBase(group) + 1;
  }
  groupOf(block: number): number {
    return Math.floor((block - this.sb.groupStart) / this.sb.blocksPerGroup);
  }
  journalHeader(slot: number): number {
    return this.sb.journalHeaderStart + slot;
  }
  slotBlock(slot: number): number {
    return this.sb.slotBlockStart + slot;
  }
  journalLog(slot: number): number {
    return this.sb.journalStart + slot * this.sb.journalBlocks;
  }
  /**
   * A group's bitmap as mkfs leaves it: the bitmap's own block and the bits past the group's end used, the rest
   * free. Sealed.
   */
  initialBitmap(group: number): Uint8Array {
    const block = new Uint8Array(BLOCK_SIZE);
    const size = this.groupSize(group);
    const reserved = this.firstDataBlock(group) - this.groupBase(group);
    const setBits = (from: number, to: number) => {
      for (let bit = from; bit < to && (bit & 7) !== 0; bit++) block[HEADER_SIZE + (bit >> 3)] |= 1 << (bit & 7);
      const firstWhole = (from + 7) >> 3;
      const lastWhole = to >> 3;
      if (firstWhole < lastWhole) block.fill(0xff, HEADER_SIZE + firstWhole, HEADER_SIZE + lastWhole);
      for (let bit = Math.max(from, lastWhole << 3); bit < to; bit++) block[HEADER_SIZE + (bit >> 3)] |= 1 << (bit & 7);
    };
    setBits(0, reserved);
    setBits(size, BITMAP_BITS);
    sealBlock(block, BlockType.BlockBitmap, this.blockBitmap(group));
    return block;
  }

  /**
   * True when `bitmap`, as read from the group's bitmap block, is a lazily initialised group that was never used:
   * a group mkfs did not write whose block is still a hole of zeros.
   */
  isUninitialised(group: number, bitmap: Uint8Array): boolean {
    return group >= this.sb.eagerGroups && bitmap.every((byte) => byte === 0);
  }

  /** Blocks that may hold inodes or data, over the whole volume (statfs's file count). */
  get dataBlockCount(): number {
    return this.sb.totalBlocks - this.sb.groupStart - this.sb.groupCount;
  }
  /** An inode number is the address of its block: any block a group may hand out. */
  validIno(ino: number): boolean {
    return this.isDataBlock(ino);
  }
  /** True when a block may be handed out to files (inside a group, past its metadata). */
  isDataBlock(block: number): boolean {
    if (!Number.isInteger(block) || block < this.sb.groupStart || block >= this.sb.totalBlocks) return false;
    return block >= this.firstDataBlock(this.groupOf(block));
  }
}
