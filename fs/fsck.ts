/**
 * fsck: checks every invariant of a volume without changing it (e2fsck's passes, read-only).
 *
 *  1. superblock and journals: valid headers; committed journals are read through (as if replayed), torn
 *     ones (an uncommitted transaction the next mount drops) are reported as warnings
 *  2. group metadata: bitmap and inode table headers and checksums, reserved bits set
 *  3. inodes: legal modes, bitmap bit set exactly for inodes in use, sizes that fit their mapped blocks, every
 *     block pointer inside the data area and referenced once, block counts right, indirect block headers
 *  4. block bitmaps equal the set of referenced blocks
 *  5. directories: blocks well formed, names legal and unique, entries pointing at inodes in use with the right
 *     type, `.` and `..` first and correct
 *  6. the tree: every directory reachable once from the root, no cycles; nlink equals the references; an
 *     unreferenced inode is legal only on an orphan list with nlink 0
 */
import { type BlockDevice } from './block-device.js';
import { bitIsSet } from './allocator.js';
import { readPointer } from './block-map.js';
import { DOT, DOTDOT, entryTypeOf, parseDirBlock, sameName } from './directory.js';
import { decodeInode, isDir, isRegular, isSymlink, legalMode, type Inode } from './inode.js';
import { decodeJournalHeader, inspectJournal, transactionCapacity } from './journal.js';
import {
  BITMAP_BITS, BLOCK_SIZE, BlockType, checkBlockHeader, decodeSuperblock, DIRECT_POINTERS, Geometry, HEADER_SIZE,
  INODES_PER_BLOCK, MAX_FILE_SIZE, POINTERS_PER_BLOCK, SYMLINK_MAX, view, type Superblock,
} from './layout.js';
import { decodeOrphans } from './orphans.js';
import { decodeName } from './path.js';

export interface FsckProgress {
  phase: string;
  done: number;
  total: number;
}

export interface FsckOptions {
  onProgress?: (progress: FsckProgress) => void;
  /** Stop collecting after this many errors (default 100). */
  maxErrors?: number;
}

export interface FsckStats {
  inodesInUse: number;
  files: number;
  directories: number;
  symlinks: number;
  orphans: number;
  blocksInUse: number;
  freeBlocks: number;
  replayableJournals: number;
}

export interface FsckReport {
  ok: boolean;
  errors: string[];
  warnings: string[];
  stats: FsckStats;
}

/** Reads blocks as the volume will be after journal replay. */
class Reader {
  readonly overlay = new Map<number, Uint8Array>();
  constructor(private readonly dev: BlockDevice) {}

  async range(start: number, count: number): Promise<Uint8Array> {
    const data = new Uint8Array(count * BLOCK_SIZE);
    await this.dev.read(start * BLOCK_SIZE, data);
    for (let i = 0; i < count; i++) {
      const logged = this.overlay.get(start + i);
      if (logged) data.set(logged, i * BLOCK_SIZE);
    }
    return data;
  }

  block(address: number): Promise<Uint8Array> {
    return this.range(address, 1);
  }
}

class TooManyErrors extends Error {}

export async function fsck(dev: BlockDevice, options: FsckOptions = {}): Promise<FsckReport> {
  const errors: string[] = [];
  const warnings: string[] = [];
  const maxErrors = options.maxErrors ?? 100;
  const stats: FsckStats = {
    inodesInUse: 0, files: 0, directories: 0, symlinks: 0, orphans: 0, blocksInUse: 0, freeBlocks: 0, replayableJournals: 0,
  };
  const error = (message: string) => {
    errors.push(message);
    if (errors.length >= maxErrors) throw new TooManyErrors();
  };
  try {
    await check(dev, options, error, warnings, stats);
  } catch (e) {
    if (!(e instanceof TooManyErrors)) errors.push(`fsck stopped: ${e instanceof Error ? e.message : String(e)}`);
    else errors.push(`(stopped after ${maxErrors} errors)`);
  }
  return { ok: errors.length === 0, errors, warnings, stats };
}

async function check(
  dev: BlockDevice,
  options: FsckOptions,
  error: (message: string) => void,
  warnings: string[],
  stats: FsckStats,
): Promise<void> {
  const progress = (phase: string, done: number, total: number) => options.onProgress?.({ phase, done, total });
  const reader = new Reader(dev);

  // Pass 1: superblock and journals.
  progress('superblock', 0, 1);
  const raw = new Uint8Array(BLOCK_SIZE);
  await dev.read(0, raw);
  let sb: Superblock;
  try {
    sb = decodeSuperblock(raw);
  } catch (e) {
    error(`superblock: ${e instanceof Error ? e.message : String(e)}`);
    return;
  }
  const g = new Geometry(sb);
  if (sb.totalBlocks * BLOCK_SIZE > dev.sizeBytes) return error(`superblock: ${sb.totalBlocks} blocks exceed the device`);
  if (g.groupBase(sb.groupCount - 1) >= sb.totalBlocks || g.groupBase(sb.groupCount) < sb.totalBlocks) {
    return error('superblock: group count does not match the volume size');
  }
  if (sb.journalStart + sb.slotCount * sb.journalBlocks !== sb.groupStart || sb.inodesPerGroup > BITMAP_BITS) {
    return error('superblock: inconsistent geometry');
  }
  for (let slot = 0; slot < sb.slotCount; slot++) {
    progress('journals', slot, sb.slotCount);
    const state = await inspectJournal(dev, sb, slot);
    if (state.state === 'torn') warnings.push(`journal ${slot}: uncommitted transaction (dropped at next mount): ${state.reason}`);
    if (state.state === 'committed') {
      stats.replayableJournals++;
      warnings.push(`journal ${slot}: committed transaction of ${state.blocks} blocks not yet replayed`);
      const address = g.journalHeader(slot);
      const header = decodeJournalHeader(await reader.block(address), address);
      if (typeof header === 'string' || header.targets.length > transactionCapacity(sb)) continue;
      const log = await reader.range(g.journalLog(slot), header.targets.length);
      header.targets.forEach((target, i) => reader.overlay.set(target, log.slice(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE)));
    }
  }
  const orphanOf = new Map<number, number>();
  for (let slot = 0; slot < sb.slotCount; slot++) {
    const block = await reader.block(g.slotBlock(slot));
    const problem = checkBlockHeader(block, BlockType.Slot, g.slotBlock(slot));
    if (problem) {
      error(problem);
      continue;
    }
    for (const ino of decodeOrphans(block)) {
      if (!g.validIno(ino)) error(`slot ${slot}: orphan ${ino} out of range`);
      else if (orphanOf.has(ino)) error(`inode ${ino} is on the orphan lists of slots ${orphanOf.get(ino)} and ${slot}`);
      else orphanOf.set(ino, slot);
    }
  }

  // Pass 2 and 3: group metadata and inodes.
  const owner = new Map<number, number>();
  const inodes = new Map<number, Inode>();
  const blockBitmaps: Uint8Array[] = [];
  const claim = (block: number, ino: number, what: string): boolean => {
    if (!g.isDataBlock(block)) {
      error(`inode ${ino}: ${what} pointer ${block} outside the data area`);
      return false;
    }
    const previous = owner.get(block);
    if (previous !== undefined) {
      error(`block ${block} referenced by inode ${previous} and inode ${ino} (${what})`);
      return false;
    }
    owner.set(block, ino);
    return true;
  };
  const dirBlocks = new Map<number, number[]>();

  for (let group = 0; group < sb.groupCount; group++) {
    progress('inodes', group, sb.groupCount);
    const reserved = g.firstDataBlock(group) - g.groupBase(group);
    const meta = await reader.range(g.groupBase(group), reserved);
    const bitmap = meta.subarray(0, BLOCK_SIZE);
    const inodeBitmap = meta.subarray(BLOCK_SIZE, 2 * BLOCK_SIZE);
    for (const [block, type, address] of [
      [bitmap, BlockType.BlockBitmap, g.blockBitmap(group)],
      [inodeBitmap, BlockType.InodeBitmap, g.inodeBitmap(group)],
    ] as const) {
      const problem = checkBlockHeader(block, type, address);
      if (problem) error(problem);
    }
    blockBitmaps.push(bitmap);
    const size = g.groupSize(group);
    for (let bit = 0; bit < BITMAP_BITS; bit++) {
      if ((bit < reserved || bit >= size) && !bitIsSet(bitmap, bit)) {
        error(`group ${group}: reserved block bit ${bit} is clear`);
        break;
      }
    }
    for (let bit = sb.inodesPerGroup; bit < BITMAP_BITS; bit++) {
      if (!bitIsSet(inodeBitmap, bit)) {
        error(`group ${group}: inode bitmap bit ${bit} past the table is clear`);
        break;
      }
    }
    for (let t = 0; t < sb.inodeTableBlocks; t++) {
      const address = g.inodeTable(group) + t;
      const table = meta.subarray((2 + t) * BLOCK_SIZE, (3 + t) * BLOCK_SIZE);
      const problem = checkBlockHeader(table, BlockType.InodeTable, address);
      if (problem) {
        error(problem);
        continue;
      }
      for (let i = 0; i < INODES_PER_BLOCK; i++) {
        const index = t * INODES_PER_BLOCK + i;
        const ino = group * sb.inodesPerGroup + index + 1;
        const inode = decodeInode(table, HEADER_SIZE + i * 128, ino);
        const allocated = bitIsSet(inodeBitmap, index);
        if (inode.mode === 0) {
          if (allocated) error(`inode ${ino}: marked in use in the bitmap but free`);
          continue;
        }
        if (!allocated) error(`inode ${ino}: in use but free in the bitmap`);
        if (!legalMode(inode.mode)) {
          error(`inode ${ino}: illegal mode ${inode.mode.toString(8)}`);
          continue;
        }
        inodes.set(ino, inode);
        await checkInodeBlocks(reader, inode, claim, error, dirBlocks);
      }
    }
  }
  stats.inodesInUse = inodes.size;

  // Pass 4: bitmaps against references.
  for (let group = 0; group < sb.groupCount; group++) {
    progress('bitmaps', group, sb.groupCount);
    const base = g.groupBase(group);
    const size = g.groupSize(group);
    const first = g.firstDataBlock(group) - base;
    for (let bit = 0; bit < size; bit++) {
      const used = bitIsSet(blockBitmaps[group], bit);
      if (!used) stats.freeBlocks++;
      else stats.blocksInUse++;
      if (bit < first) continue;
      const referenced = owner.has(base + bit);
      if (used && !referenced) error(`block ${base + bit}: allocated but not referenced`);
      if (!used && referenced) error(`block ${base + bit}: referenced by inode ${owner.get(base + bit)} but free`);
    }
  }

  // Pass 5: directories.
  const refs = new Map<number, number>();
  const parentOf = new Map<number, number>();
  const children = new Map<number, number[]>();
  let done = 0;
  for (const [ino, blocks] of dirBlocks) {
    progress('directories', done++, dirBlocks.size);
    const names = new Set<string>();
    const kids: number[] = [];
    for (let b = 0; b < blocks.length; b++) {
      const address = blocks[b];
      const block = await reader.block(address);
      const problem = checkBlockHeader(block, BlockType.Directory, address);
      if (problem) {
        error(`directory ${ino}: ${problem}`);
        continue;
      }
      const entries = parseDirBlock(block, address);
      if (typeof entries === 'string') {
        error(`directory ${ino}: ${entries}`);
        continue;
      }
      entries.forEach((entry, index) => {
        if (b === 0 && index < 2) {
          const expected = index === 0 ? DOT : DOTDOT;
          if (entry.ino === 0 || !sameName(entry.name, expected)) {
            error(`directory ${ino}: entry ${index} is not ${index === 0 ? '.' : '..'}`);
            return;
          }
          if (index === 0 && entry.ino !== ino) error(`directory ${ino}: . points at ${entry.ino}`);
          if (index === 1) parentOf.set(ino, entry.ino);
          refs.set(entry.ino, (refs.get(entry.ino) ?? 0) + 1);
          return;
        }
        if (entry.ino === 0) return;
        const name = decodeName(entry.name);
        if (entry.name.length === 0 || entry.name.includes(0x2f) || entry.name.includes(0)) {
          error(`directory ${ino}: illegal name ${JSON.stringify(name)}`);
        }
        if (sameName(entry.name, DOT) || sameName(entry.name, DOTDOT)) error(`directory ${ino}: extra ${name} entry`);
        if (names.has(name)) error(`directory ${ino}: duplicate name ${JSON.stringify(name)}`);
        names.add(name);
        const target = inodes.get(entry.ino);
        if (!target) {
          error(`directory ${ino}: ${JSON.stringify(name)} points at ${g.validIno(entry.ino) ? 'free' : 'invalid'} inode ${entry.ino}`);
          return;
        }
        if (entry.type !== entryTypeOf(target.mode)) error(`directory ${ino}: ${JSON.stringify(name)} has type ${entry.type}, inode ${entry.ino} is ${entryTypeOf(target.mode)}`);
        refs.set(entry.ino, (refs.get(entry.ino) ?? 0) + 1);
        if (isDir(target)) kids.push(entry.ino);
      });
    }
    children.set(ino, kids);
  }

  // Pass 6: tree and link counts.
  progress('tree', 0, 1);
  const root = inodes.get(sb.rootIno);
  if (!root || !isDir(root)) {
    error(`root inode ${sb.rootIno} is not a directory`);
    return;
  }
  if (parentOf.get(sb.rootIno) !== sb.rootIno) error(`root: .. points at ${parentOf.get(sb.rootIno)}`);
  const reached = new Set<number>([sb.rootIno]);
  const queue = [sb.rootIno];
  const entryParent = new Map<number, number>();
  while (queue.length > 0) {
    const dir = queue.shift()!;
    for (const child of children.get(dir) ?? []) {
      if (child === sb.rootIno || entryParent.has(child)) {
        error(`directory ${child} is linked from directory ${dir} and ${entryParent.get(child) ?? 'the root'}`);
        continue;
      }
      entryParent.set(child, dir);
      if (parentOf.get(child) !== dir) error(`directory ${child}: .. points at ${parentOf.get(child)}, it lives in ${dir}`);
      reached.add(child);
      queue.push(child);
    }
  }
  for (const ino of children.keys()) {
    if (!reached.has(ino) && !orphanOf.has(ino)) error(`directory ${ino} is not reachable from the root (cycle or lost)`);
  }
  for (const [ino, inode] of inodes) {
    const count = refs.get(ino) ?? 0;
    if (isDir(inode)) stats.directories++;
    else if (isSymlink(inode)) stats.symlinks++;
    else stats.files++;
    if (count === 0) {
      if (orphanOf.has(ino) && inode.nlink === 0) {
        stats.orphans++;
        continue;
      }
      error(`inode ${ino}: in use (nlink ${inode.nlink}) but not referenced by any directory${orphanOf.has(ino) ? '' : ' nor on an orphan list'}`);
      continue;
    }
    if (inode.nlink !== count) error(`inode ${ino}: nlink ${inode.nlink}, referenced ${count} times`);
    if (orphanOf.has(ino)) error(`inode ${ino}: on the orphan list of slot ${orphanOf.get(ino)} but still linked`);
  }
  for (const ino of orphanOf.keys()) {
    if (!inodes.has(ino)) error(`orphan ${ino} is a free inode`);
  }
  progress('done', 1, 1);
}

/** Walks an inode's block map, claims its blocks and checks sizes and counts. */
async function checkInodeBlocks(
  reader: Reader,
  inode: Inode,
  claim: (block: number, ino: number, what: string) => boolean,
  error: (message: string) => void,
  dirBlocks: Map<number, number[]>,
): Promise<void> {
  const ino = inode.ino;
  if (!(inode.size >= 0 && Number.isSafeInteger(inode.size) && inode.size <= MAX_FILE_SIZE)) {
    error(`inode ${ino}: bad size ${inode.size}`);
    return;
  }
  const sizeBlocks = Math.ceil(inode.size / BLOCK_SIZE);
  const mapped = new Map<number, number>();
  let counted = 0;
  const data = (fb: number, block: number) => {
    if (!block) return;
    if (!claim(block, ino, `file block ${fb}`)) return;
    counted++;
    mapped.set(fb, block);
    if (fb >= sizeBlocks) error(`inode ${ino}: block ${fb} mapped past the end of file (size ${inode.size})`);
  };
  const indirect = async (block: number, what: string): Promise<Uint8Array | null> => {
    if (!claim(block, ino, what)) return null;
    counted++;
    const content = await reader.block(block);
    const problem = checkBlockHeader(content, BlockType.Indirect, block);
    if (problem) {
      error(`inode ${ino}: ${what}: ${problem}`);
      return null;
    }
    return content;
  };
  for (let i = 0; i < DIRECT_POINTERS; i++) data(i, inode.direct[i]);
  if (inode.indirect) {
    const block = await indirect(inode.indirect, 'indirect block');
    if (block) for (let i = 0; i < POINTERS_PER_BLOCK; i++) data(DIRECT_POINTERS + i, readPointer(block, i));
  }
  if (inode.doubleIndirect) {
    const top = await indirect(inode.doubleIndirect, 'double indirect block');
    if (top) {
      for (let a = 0; a < POINTERS_PER_BLOCK; a++) {
        const leafAddress = readPointer(top, a);
        if (!leafAddress) continue;
        const leaf = await indirect(leafAddress, `indirect block ${a}`);
        if (!leaf) continue;
        const base = DIRECT_POINTERS + POINTERS_PER_BLOCK + a * POINTERS_PER_BLOCK;
        for (let i = 0; i < POINTERS_PER_BLOCK; i++) data(base + i, readPointer(leaf, i));
      }
    }
  }
  if (counted !== inode.blocks) error(`inode ${ino}: block count ${inode.blocks}, ${counted} blocks mapped`);
  if (isDir(inode)) {
    if (inode.size === 0 || inode.size % BLOCK_SIZE !== 0) error(`directory ${ino}: size ${inode.size} is not whole blocks`);
    const blocks: number[] = [];
    for (let fb = 0; fb < sizeBlocks; fb++) {
      const block = mapped.get(fb);
      if (!block) {
        error(`directory ${ino}: hole at block ${fb}`);
        return;
      }
      blocks.push(block);
    }
    dirBlocks.set(ino, blocks);
  } else if (isSymlink(inode)) {
    const block = mapped.get(0);
    if (inode.size < 1 || inode.size > SYMLINK_MAX || !block || mapped.size !== 1) {
      error(`symlink ${ino}: size ${inode.size} with ${mapped.size} blocks`);
      return;
    }
    const content = await reader.block(block);
    const problem = checkBlockHeader(content, BlockType.Symlink, block);
    if (problem) error(`symlink ${ino}: ${problem}`);
    else if (view(content).getUint32(HEADER_SIZE, true) !== inode.size) error(`symlink ${ino}: stored length differs from size`);
  } else if (!isRegular(inode)) {
    error(`inode ${ino}: unknown type`);
  }
}
