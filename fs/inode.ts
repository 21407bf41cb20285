/**
 * Inodes: 128-byte records in the per-group inode tables, read and written through the block cache.
 *
 *   0 mode   4 uid   8 gid   12 nlink   16 size (f64)   24 atime   32 mtime   40 ctime (f64 ms)
 *  48 blocks (allocated, including indirect)   52 generation   56 direct[12]   104 indirect   108 double indirect
 *
 * A free inode has mode 0 (and a clear bit in its group's inode bitmap). `generation` changes every time the
 * number is reused, so a file handle can tell that its file is gone.
 */
import { IoError } from './block-device.js';
import type { BlockCache } from './block-cache.js';
import { BlockType, DIRECT_POINTERS, INODE_SIZE, view, type Geometry } from './layout.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from './vfs.js';

export interface Inode {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  blocks: number;
  generation: number;
  direct: number[];
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
export function legalMode(mode: number): boolean {
  const type = mode & S_IFMT;
  return (type === S_IFREG || type === S_IFDIR || type === S_IFLNK) && (mode & ~(S_IFMT | 0o7777)) === 0;
}

export function decodeInode(block: Uint8Array, offset: number, ino: number): Inode {
  const v = view(block);
  const u = (at: number) => v.getUint32(offset + at, true);
  const f = (at: number) => v.getFloat64(offset + at, true);
  const direct: number[] = [];
  for (let i = 0; i < DIRECT_POINTERS; i++) direct.push(u(56 + i * 4));
  return {
    ino,
    mode: u(0),
    uid: u(4),
    gid: u(8),
    nlink: u(12),
    size: f(16),
    atimeMs: f(24),
    mtimeMs: f(32),
    ctimeMs: f(40),
    blocks: u(48),
    generation: u(52),
    direct,
    indirect: u(104),
    doubleIndirect: u(108),
  };
}

export function encodeInode(block: Uint8Array, offset: number, inode: Inode): void {
  block.fill(0, offset, offset + INODE_SIZE);
  const v = view(block);
  const u = (at: number, value: number) => v.setUint32(offset + at, value, true);
  const f = (at: number, value: number) => v.setFloat64(offset + at, value, true);
  u(0, inode.mode);
  u(4, inode.uid);
  u(8, inode.gid);
  u(12, inode.nlink);
  f(16, inode.size);
  f(24, inode.atimeMs);
  f(32, inode.mtimeMs);
  f(40, inode.ctimeMs);
  u(48, inode.blocks);
  u(52, inode.generation);
  inode.direct.forEach((p, i) => u(56 + i * 4, p));
  u(104, inode.indirect);
  u(108, inode.doubleIndirect);
}

export function emptyInode(ino: number, mode: number, generation: number, now: number): Inode {
  return {
    ino, mode, uid: 0, gid: 0, nlink: 0, size: 0, atimeMs: now, mtimeMs: now, ctimeMs: now, blocks: 0, generation,
    direct: new Array(DIRECT_POINTERS).fill(0), indirect: 0, doubleIndirect: 0,
  };
}

export class InodeStore {
  constructor(
    private readonly cache: BlockCache,
    private readonly geometry: Geometry,
  ) {}

  /** Any inode, free or not. */
  async readRaw(ino: number): Promise<Inode> {
    if (!this.geometry.validIno(ino)) throw new IoError('EIO', `inode number ${ino} out of range`);
    const { block, offset } = this.geometry.inodeLocation(ino);
    return decodeInode(await this.cache.get(block, BlockType.InodeTable), offset, ino);
  }

  /** An inode in use. */
  async read(ino: number): Promise<Inode> {
    const inode = await this.readRaw(ino);
    if (inode.mode === 0) throw new IoError('EIO', `inode ${ino} is referenced but free`);
    return inode;
  }

  async write(inode: Inode): Promise<void> {
    const { block, offset } = this.geometry.inodeLocation(inode.ino);
    encodeInode(await this.cache.getForWrite(block, BlockType.InodeTable), offset, inode);
  }
}
