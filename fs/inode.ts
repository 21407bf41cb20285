/**
 * Inodes: one block each (BlockType.Inode), numbered by their block address, the record after the block header.
 * Read and written through the block cache under the inode's own cluster lock.
 *
 *   0 mode   4 uid   8 gid   12 nlink   16 size (f64)   24 atime   32 mtime   40 ctime (seconds, i64)
 *  48 blocks (allocated, including indirect)   52 generation   56 direct[12]   104 indirect   108 double indirect
 * 112 atime  116 mtime  120 ctime (nanoseconds, u32)   124 rdev (u32, character and block devices only)
 * 128 directCrc[12] (crc32c of each direct block's data, regular files only; format 7)
 *
 * Times are kept to the nanosecond with 64-bit seconds (format 3), so whatever a caller sets (cp -a, rsync -a,
 * touch -d) reads back exactly; the nanoseconds sit after the pointers so that no other field moved. Special files
 * (format 4: devices, FIFOs, sockets) have no blocks and size 0; a device keeps its number in rdev.
 *
 * A freed inode's block goes back to its group's bitmap and may become anything. `generation` is drawn at random
 * when an inode is made, so a file handle can tell that its file is gone even when the block holds a new inode.
 */
import { CorruptionError } from './volume-errors.js';
import type { BlockCache } from './block-cache.js';
import { BlockType, DIRECT_POINTERS, HEADER_SIZE, INODE_SIZE, view, type Geometry } from './layout.js';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, type Timespec } from './vfs.js';

export interface Inode {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  /** Device number of a character or block device; 0 for every other type. */
  rdev: number;
  blocks: number;
  generation: number;
  direct: number[];
  /** The crc32c of each direct block's data (a regular file's; 0 for a hole and for every other type). */
  directCrc: number[];
  indirect: number;
  doubleIndirect: number;
}

export function isDir(inode: Inode): boolean {
  return (inode.mode & S_IFMT) === S_IFDIR;
}
export function isRegular(inode: Inode): boolean {
  return (inode.mode & S_IFMT) === S_IFREG;
}
export function isSymlink(inode: Inode): boolean {
  return (inode.mode & S_IFMT) === S_IFLNK;
}
/** A device, FIFO or socket: an inode with no data of its own. */
export function isSpecial(inode: Inode): boolean {
  return SPECIAL_TYPES.includes(inode.mode & S_IFMT);
}
export function isDevice(mode: number): boolean {
  return (mode & S_IFMT) === S_IFCHR || (mode & S_IFMT) === S_IFBLK;
}
const SPECIAL_TYPES = [S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK];
export function legalMode(mode: number): boolean {
  const type = mode & S_IFMT;
  return (type === S_IFREG || type === S_IFDIR || type === S_IFLNK || SPECIAL_TYPES.includes(type)) && (mode & ~(S_IFMT | 0o7777)) === 0;
}

export function decodeInode(block: Uint8Array, offset: number, ino: number): Inode {
  const v = view(block);
  const u = (at: number) => v.getUint32(offset + at, true);
  const f = (at: number) => v.getFloat64(offset + at, true);
  // A safe-integer i64 as two halves: exact, and no BigInt on every inode read.
  const time = (secAt: number, nsecAt: number): Timespec => ({
    sec: v.getInt32(offset + secAt + 4, true) * 2 ** 32 + u(secAt),
    nsec: u(nsecAt),
  });
  const direct: number[] = [];
  const directCrc: number[] = [];
  for (let i = 0; i < DIRECT_POINTERS; i++) {
    direct.push(u(56 + i * 4));
    directCrc.push(u(128 + i * 4));
  }
  return {
    ino,
    mode: u(0),
    uid: u(4),
    gid: u(8),
    nlink: u(12),
    size: f(16),
    atime: time(24, 112),
    mtime: time(32, 116),
    ctime: time(40, 120),
    rdev: u(124),
    blocks: u(48),
    generation: u(52),
    direct,
    directCrc,
    indirect: u(104),
    doubleIndirect: u(108),
  };
}

/** A directory's first block as an inode block (record at HEADER_SIZE) names it, read without decoding the rest; 0 for anything else. */
export function firstDirectoryBlock(block: Uint8Array): number {
  const v = view(block);
  return (v.getUint32(HEADER_SIZE, true) & S_IFMT) === S_IFDIR ? v.getUint32(HEADER_SIZE + 56, true) : 0;
}

export function encodeInode(block: Uint8Array, offset: number, inode: Inode): void {
  block.fill(0, offset, offset + INODE_SIZE);
  const v = view(block);
  const u = (at: number, value: number) => v.setUint32(offset + at, value, true);
  const f = (at: number, value: number) => v.setFloat64(offset + at, value, true);
  const time = (secAt: number, nsecAt: number, t: Timespec) => {
    u(secAt, t.sec >>> 0);
    v.setInt32(offset + secAt + 4, Math.floor(t.sec / 2 ** 32), true);
    u(nsecAt, t.nsec);
  };
  u(0, inode.mode);
  u(4, inode.uid);
  u(8, inode.gid);
  u(12, inode.nlink);
  f(16, inode.size);
  time(24, 112, inode.atime);
  time(32, 116, inode.mtime);
  time(40, 120, inode.ctime);
  u(48, inode.blocks);
  u(52, inode.generation);
  inode.direct.forEach((p, i) => u(56 + i * 4, p));
  inode.directCrc.forEach((crc, i) => u(128 + i * 4, crc));
  u(104, inode.indirect);
  u(108, inode.doubleIndirect);
  u(124, inode.rdev);
}

export function emptyInode(ino: number, mode: number, generation: number, now: Timespec): Inode {
  return {
    ino, mode, uid: 0, gid: 0, nlink: 0, size: 0, atime: now, mtime: now, ctime: now, rdev: 0, blocks: 0, generation,
    direct: new Array(DIRECT_POINTERS).fill(0), directCrc: new Array(DIRECT_POINTERS).fill(0), indirect: 0, doubleIndirect: 0,
  };
}

export class InodeStore {
  constructor(
    private readonly cache: BlockCache,
    private readonly geometry: Geometry,
  ) {}

  /** An inode in use (the caller holds its lock). */
  async read(ino: number): Promise<Inode> {
    if (!this.geometry.validIno(ino)) throw new CorruptionError(`inode number ${ino} out of range`);
    const inode = decodeInode(await this.cache.get(ino, BlockType.Inode, ino), HEADER_SIZE, ino);
    if (inode.mode === 0) throw new CorruptionError(`inode ${ino} is referenced but free`);
    return inode;
  }

  /**
   * The inode a handle or an orphan list names, or null when its block no longer holds an inode (it was freed
   * and reused, perhaps by another domain): read past the cache's type check.
   */
  async readIfInode(ino: number): Promise<Inode | null> {
    if (!this.geometry.validIno(ino)) return null;
    const block = await this.cache.getIf(ino, BlockType.Inode, ino);
    if (!block) return null;
    const inode = decodeInode(block, HEADER_SIZE, ino);
    return inode.mode === 0 ? null : inode;
  }

  /** A new inode's block (no read: its previous contents do not matter). */
  create(inode: Inode): void {
    encodeInode(this.cache.create(inode.ino, BlockType.Inode, inode.ino), HEADER_SIZE, inode);
  }

  async write(inode: Inode): Promise<void> {
    encodeInode(await this.cache.getForWrite(inode.ino, BlockType.Inode, inode.ino), HEADER_SIZE, inode);
  }
}
