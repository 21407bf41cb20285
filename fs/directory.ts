/**
 * Directories: files whose blocks are metadata blocks of entries (ext2-style variable-length records).
 *
 *   entry: ino u32 (0 = unused) | recLen u16 | nameLen u8 | type u8 | name bytes, padded to 4 bytes
 *
 * The records of a block cover it from the header to the end. The first block starts with `.` and `..`.
 * Removing an entry merges its space into the previous record; adding one reuses slack or appends a block.
 */
import { IoError } from './block-device.js';
import type { BlockCache } from './block-cache.js';
import type { BlockMap } from './block-map.js';
import type { Inode } from './inode.js';
import { BLOCK_SIZE, BlockType, HEADER_SIZE, view } from './layout.js';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK } from './vfs.js';

export const ENTRY_HEADER = 8;

export enum EntryType {
  Unknown = 0,
  Regular = 1,
  Directory = 2,
  CharDevice = 3,
  BlockDevice = 4,
  Fifo = 5,
  Socket = 6,
  Symlink = 7,
}

/** Entry types (ext2's numbers) and the file types they stand for. */
const ENTRY_MODES: [EntryType, number][] = [
  [EntryType.Regular, S_IFREG],
  [EntryType.Directory, S_IFDIR],
  [EntryType.CharDevice, S_IFCHR],
  [EntryType.BlockDevice, S_IFBLK],
  [EntryType.Fifo, S_IFIFO],
  [EntryType.Socket, S_IFSOCK],
  [EntryType.Symlink, S_IFLNK],
];

export function entryTypeOf(mode: number): EntryType {
  return ENTRY_MODES.find(([, m]) => m === (mode & S_IFMT))?.[0] ?? EntryType.Unknown;
}

/** The S_IFMT bits an entry type stands for (0 when unknown). */
export function modeOfEntryType(type: EntryType): number {
  return ENTRY_MODES.find(([t]) => t === type)?.[1] ?? 0;
}

export interface DirEntry {
  ino: number;
  type: EntryType;
  name: Uint8Array;
  /** Where the record lives. */
  address: number;
  offset: number;
  recLen: number;
}

const DOT = new Uint8Array([0x2e]);
const DOTDOT = new Uint8Array([0x2e, 0x2e]);

function recordSize(nameLen: number): number {
  return (ENTRY_HEADER + nameLen + 3) & ~3;
}

function sameName(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function writeRecord(block: Uint8Array, offset: number, recLen: number, ino: number, type: EntryType, name: Uint8Array): void {
  const v = view(block);
  v.setUint32(offset, ino, true);
  v.setUint16(offset + 4, recLen, true);
  block[offset + 6] = name.length;
  block[offset + 7] = type;
  block.set(name, offset + ENTRY_HEADER);
}

/**
 * Every record of a directory block, or a description of what is wrong with it.
 * Used by the filesystem (which turns problems into EIO) and by fsck.
 */
export function parseDirBlock(block: Uint8Array, address: number): DirEntry[] | string {
  const v = view(block);
  const entries: DirEntry[] = [];
  let offset = HEADER_SIZE;
  while (offset < BLOCK_SIZE) {
    if (offset + ENTRY_HEADER > BLOCK_SIZE) return `directory block ${address}: record header at ${offset} crosses the block end`;
    const ino = v.getUint32(offset, true);
    const recLen = v.getUint16(offset + 4, true);
    const nameLen = block[offset + 6];
    if (recLen < ENTRY_HEADER || recLen % 4 !== 0 || offset + recLen > BLOCK_SIZE) {
      return `directory block ${address}: bad record length ${recLen} at ${offset}`;
    }
    if (recordSize(nameLen) > recLen) return `directory block ${address}: name of ${nameLen} bytes overflows its record at ${offset}`;
    entries.push({ ino, type: block[offset + 7], name: block.subarray(offset + ENTRY_HEADER, offset + ENTRY_HEADER + nameLen), address, offset, recLen });
    offset += recLen;
  }
  return entries;
}

const u16 = (b: Uint8Array, at: number) => b[at]! | (b[at + 1]! << 8);
const u32 = (b: Uint8Array, at: number) => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;

/**
 * The records of a directory block, walked in place: the offset of the first whose slack (all of a free record,
 * the tail of one in use) holds `needed` bytes, or of the one just before `before` (-1: `before` is the first),
 * with no entry made per record. A create looks for room in one block and an unlink for the record before the one
 * it removes; parsing the block's hundred-odd records into entries for that was a third of a create's CPU.
 * A record that does not fit the block is EIO (the block verified when read; parseDirBlock says what is wrong).
 */
function walkRecords(block: Uint8Array, address: number, needed: number, before = -1): number {
  let previous = -1;
  for (let offset = HEADER_SIZE; offset < BLOCK_SIZE; ) {
    const recLen = offset + ENTRY_HEADER <= BLOCK_SIZE ? u16(block, offset + 4) : 0;
    if (recLen < ENTRY_HEADER || recLen % 4 !== 0 || offset + recLen > BLOCK_SIZE) {
      throw new IoError('EIO', `directory block ${address}: bad record at ${offset}`);
    }
    if (offset === before) return previous;
    if (before < 0 && recLen - (u32(block, offset) === 0 ? 0 : recordSize(block[offset + 6]!)) >= needed) return offset;
    previous = offset;
    offset += recLen;
  }
  if (before >= 0) throw new IoError('EIO', `directory block ${address}: no record at ${before}`);
  return -1;
}

/** Where an entry's record lives. */
interface Place {
  address: number;
  offset: number;
}

/**
 * The names of one directory, from one scan of its blocks, kept up to date by this class's own changes, so a
 * lookup, a create's existence check or an unlink in a directory of 10,000 entries reads one block instead of all.
 * It is trusted only while the cache's directory stamp of the directory is the one it recorded: anything else that
 * touches the cached blocks (another domain's change dropping them, an undone operation, eviction) bumps it.
 */
interface DirIndex {
  stamp: number;
  size: number;
  names: Map<string, Place>;
  /** Blocks that may have room for another record: where entries were removed, and the last block. */
  roomy: Set<number>;
}

/** Directories whose index is kept (the most recently used). */
const MAX_INDEXES = 256;

/** A name as an index key: one char per byte, so any byte string is its own key. */
const keyOf = (name: Uint8Array) => String.fromCharCode.apply(null, name as unknown as number[]);

/** Bytes of a record that another one could use (all of a free record, the tail of one in use). */
const slackOf = (e: DirEntry) => e.recLen - (e.ino === 0 ? 0 : recordSize(e.name.length));

export class Directories {
  private readonly indexes = new Map<number, DirIndex>();

  constructor(
    private readonly cache: BlockCache,
    private readonly map: BlockMap,
  ) {}

  /** The blocks of a directory with their records (in use or not). */
  private async *blocks(dir: Inode): AsyncGenerator<{ address: number; entries: DirEntry[] }> {
    const count = Math.ceil(dir.size / BLOCK_SIZE);
    for (let i = 0; i < count; i++) {
      const address = await this.map.lookup(dir, i);
      if (!address) throw new IoError('EIO', `directory ${dir.ino} has a hole at block ${i}`);
      yield { address, entries: await this.parsed(dir, address) };
    }
  }

  private async parsed(dir: Inode, address: number): Promise<DirEntry[]> {
    const parsed = parseDirBlock(await this.cache.get(address, BlockType.Directory, dir.ino), address);
    if (typeof parsed === 'string') throw new IoError('EIO', parsed);
    return parsed;
  }

  /** The directory's index, valid now (built when missing or stale). */
  private async index(dir: Inode): Promise<DirIndex> {
    let index = this.indexes.get(dir.ino);
    this.indexes.delete(dir.ino);
    if (index && index.stamp === this.cache.directoryStamp(dir.ino) && index.size === dir.size) {
      this.cache.hooks.guard(dir.ino);
    } else {
      index = { stamp: 0, size: dir.size, names: new Map(), roomy: new Set() };
      for await (const { address, entries } of this.blocks(dir)) {
        for (const e of entries) {
          if (e.ino !== 0) index.names.set(keyOf(e.name), { address, offset: e.offset });
          if (slackOf(e) >= recordSize(1)) index.roomy.add(address);
        }
      }
      index.stamp = this.cache.directoryStamp(dir.ino);
    }
    this.indexes.set(dir.ino, index);
    if (this.indexes.size > MAX_INDEXES) this.indexes.delete(this.indexes.keys().next().value!);
    return index;
  }

  /** After this class changed the directory's blocks: the index (updated by the caller) is current again. */
  private restamp(dir: Inode, index: DirIndex): void {
    index.stamp = this.cache.directoryStamp(dir.ino);
    index.size = dir.size;
  }

  async lookup(dir: Inode, name: Uint8Array): Promise<DirEntry | null> {
    const place = (await this.index(dir)).names.get(keyOf(name));
    if (!place) return null;
    // Just the record the index points at: the block was parsed whole when the index was built.
    const block = await this.cache.get(place.address, BlockType.Directory, dir.ino);
    const v = view(block);
    const { address, offset } = place;
    const nameLen = block[offset + 6]!;
    const entry: DirEntry = {
      ino: v.getUint32(offset, true),
      recLen: v.getUint16(offset + 4, true),
      type: block[offset + 7]!,
      name: block.subarray(offset + ENTRY_HEADER, offset + ENTRY_HEADER + nameLen),
      address,
      offset,
    };
    if (entry.ino === 0 || !sameName(entry.name, name)) throw new IoError('EIO', `directory ${dir.ino}: index and block ${address} disagree`);
    return entry;
  }

  /** The inode numbers the directory lists, in its order, without `.` and `..` (no names copied). */
  async childInos(dir: Inode): Promise<number[]> {
    const out: number[] = [];
    for await (const { entries } of this.blocks(dir)) {
      for (const e of entries) if (e.ino !== 0 && !sameName(e.name, DOT) && !sameName(e.name, DOTDOT)) out.push(e.ino);
    }
    return out;
  }

  /** Names in the directory, `.` and `..` first. */
  async list(dir: Inode): Promise<Array<{ name: Uint8Array; ino: number; type: EntryType }>> {
    const out: Array<{ name: Uint8Array; ino: number; type: EntryType }> = [];
    for await (const { entries } of this.blocks(dir)) {
      for (const e of entries) if (e.ino !== 0) out.push({ name: e.name.slice(), ino: e.ino, type: e.type });
    }
    return out;
  }

  async isEmpty(dir: Inode): Promise<boolean> {
    const { names } = await this.index(dir);
    for (const name of names.keys()) if (name !== '.' && name !== '..') return false;
    return true;
  }

  /** Adds an entry (the caller checked that the name is free). May grow `dir` (written by the caller). */
  async add(dir: Inode, name: Uint8Array, ino: number, type: EntryType): Promise<void> {
    const index = await this.index(dir);
    const needed = recordSize(name.length);
    const place = (await this.placeIn(dir, index, needed, ino, type, name)) ?? (await this.appendEntry(dir, index, ino, type, name));
    index.names.set(keyOf(name), place);
    this.restamp(dir, index);
  }

  /** Writes the record into a block the index says may have room; null when none has. */
  private async placeIn(dir: Inode, index: DirIndex, needed: number, ino: number, type: EntryType, name: Uint8Array): Promise<Place | null> {
    for (const address of index.roomy) {
      const at = walkRecords(await this.cache.get(address, BlockType.Directory, dir.ino), address, needed);
      if (at < 0) {
        index.roomy.delete(address);
        continue;
      }
      const block = await this.cache.getForWrite(address, BlockType.Directory, dir.ino);
      const recLen = u16(block, at + 4);
      if (u32(block, at) === 0) {
        writeRecord(block, at, recLen, ino, type, name);
        return { address, offset: at };
      }
      const used = recordSize(block[at + 6]!);
      view(block).setUint16(at + 4, used, true);
      writeRecord(block, at + used, recLen - used, ino, type, name);
      return { address, offset: at + used };
    }
    return null;
  }

  private async appendEntry(dir: Inode, index: DirIndex, ino: number, type: EntryType, name: Uint8Array): Promise<Place> {
    const { address, block } = await this.appendBlock(dir);
    writeRecord(block, HEADER_SIZE, BLOCK_SIZE - HEADER_SIZE, ino, type, name);
    index.roomy.add(address);
    return { address, offset: HEADER_SIZE };
  }

  private async appendBlock(dir: Inode): Promise<{ address: number; block: Uint8Array }> {
    const index = Math.ceil(dir.size / BLOCK_SIZE);
    const { phys } = await this.map.ensureRun(dir, index, 1, 0);
    dir.size = (index + 1) * BLOCK_SIZE;
    return { address: phys, block: this.cache.create(phys, BlockType.Directory, dir.ino) };
  }

  /** Creates the first block of a new directory with `.` and `..`. */
  async init(dir: Inode, parent: number): Promise<void> {
    const { block } = await this.appendBlock(dir);
    const dotSize = recordSize(1);
    writeRecord(block, HEADER_SIZE, dotSize, dir.ino, EntryType.Directory, DOT);
    writeRecord(block, HEADER_SIZE + dotSize, BLOCK_SIZE - HEADER_SIZE - dotSize, parent, EntryType.Directory, DOTDOT);
  }

  async remove(dir: Inode, name: Uint8Array): Promise<void> {
    const index = await this.index(dir);
    const key = keyOf(name);
    const place = index.names.get(key);
    if (!place) throw new IoError('ENOENT', 'no such entry');
    const { address, offset } = place;
    const current = await this.cache.get(address, BlockType.Directory, dir.ino);
    const previous = walkRecords(current, address, 0, offset);
    const nameLen = current[offset + 6]!;
    if (u32(current, offset) === 0 || !sameName(current.subarray(offset + ENTRY_HEADER, offset + ENTRY_HEADER + nameLen), name)) {
      throw new IoError('EIO', `directory ${dir.ino}: index and block ${address} disagree`);
    }
    const block = await this.cache.getForWrite(address, BlockType.Directory, dir.ino);
    if (previous >= 0) {
      view(block).setUint16(previous + 4, u16(block, previous + 4) + u16(block, offset + 4), true);
    } else {
      view(block).setUint32(offset, 0, true);
      block[offset + 6] = 0;
      block[offset + 7] = 0;
    }
    index.names.delete(key);
    index.roomy.add(place.address);
    this.restamp(dir, index);
  }

  /** Points an existing entry at another inode (rename over a target, `..` of a moved directory). */
  async retarget(dir: Inode, name: Uint8Array, ino: number, type: EntryType): Promise<void> {
    const index = await this.index(dir);
    const entry = await this.lookup(dir, name);
    if (!entry) throw new IoError('ENOENT', 'no such entry');
    const block = await this.cache.getForWrite(entry.address, BlockType.Directory, dir.ino);
    view(block).setUint32(entry.offset, ino, true);
    block[entry.offset + 7] = type;
    this.restamp(dir, index);
  }
}

export { DOT, DOTDOT, sameName };
