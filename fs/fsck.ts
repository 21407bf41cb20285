/**
 * fsck: checks every invariant of a format-3 volume without changing it (e2fsck's passes, read-only).
 *
 *  1. superblock and journals: consistent geometry; committed journals are read through (as if replayed), torn
 *     ones (an uncommitted transaction the next mount drops) are reported as warnings; slot blocks and their
 *     orphan lists
 *  2. groups: block bitmap headers and checksums, bit 0 (the bitmap itself) and the bits past the group's end set
 *  3. inodes: there is no inode table to scan, so inodes are found as the filesystem finds them: from the root
 *     through directory entries, then from the orphan lists. Each one: a valid Inode block at its own address,
 *     legal mode, times in range (nanoseconds below 10^9), sizes that fit its mapped blocks, every pointer
 *     inside the data area and referenced once in the volume (an inode's own block counts as referenced by the
 *     inode), block counts right (data and indirect blocks, not the inode's own block), indirect, directory and
 *     symlink block headers
 *  4. directories: names legal and unique, entries pointing at inodes in use with the right type, `.` and `..`
 *     first and correct
 *  5. the tree: every directory reachable once from the root, no cycles, `..` naming the parent; nlink equals
 *     the references; an unreferenced inode is legal only on one orphan list with nlink 0
 *  6. block bitmaps equal the set of blocks in use (bitmaps, inode blocks, mapped and indirect blocks)
 *
 * A block reached as an inode that is not one (bad header, free, illegal mode) is reported where it is referenced
 * (the entry or orphan list naming it), once per reference.
 */
import { IoError, type BlockDevice } from './block-device.js';
import { bitIsSet } from './allocator.js';
import { readEntry, readPointer } from './block-map.js';
import { crc32c, crcHex } from './crc32c.js';
import { DOT, DOTDOT, entryTypeOf, EntryType, parseDirBlock, sameName } from './directory.js';
import { decodeInode, isDevice, isDir, isRegular, isSpecial, isSymlink, legalMode, type Inode } from './inode.js';
import { isValidTimespec } from './timespec.js';
import { chainBlockProblem, chainBlocksFor, decodeXattrs, gatherXattrList } from './xattr.js';
import { decodeJournalHeader, inspectJournal, transactionCapacity } from './journal.js';
import {
  BITMAP_BITS, BLOCK_SIZE, BlockType, checkBlockHeader, decodeSuperblock, DIRECT_POINTERS, Geometry, HEADER_SIZE,
  ENTRIES_PER_BLOCK, MAX_FILE_SIZE, POINTERS_PER_BLOCK, SYMLINK_CHUNK, SYMLINK_MAX, symlinkBlocks, view, type Superblock,
} from './layout.js';
import { MAX_VOLUME_BLOCKS } from './lock-names.js';
import { decodeOrphans, ORPHAN_CAPACITY } from './orphans.js';
import { recordsInitialised } from './initialised-groups.js';
import { decodeName } from './path.js';

export interface FsckProgress {
  phase: string;
  done: number;
  total: number;
}

/** What the passes learnt of a volume whose superblock could be read, for `fsck --repair` (fsck-repair.ts). */
export interface FsckFacts {
  superblock: Superblock;
  /** Every block in use, by the inode using it (an inode's own block maps to itself). */
  owner: ReadonlyMap<number, number>;
  /** The inodes in use reached from the root or an orphan list. */
  inodes: ReadonlyMap<number, Inode>;
  /** How many times the tree references each inode (entries, ".", ".."). */
  refs: ReadonlyMap<number, number>;
  /** Inodes on an orphan list, by slot. */
  orphanOf: ReadonlyMap<number, number>;
  /** Inodes in use found in leaked blocks: linked from nowhere. */
  lost: number[];
  /** Groups whose bitmap block failed its header or checksum. */
  badBitmaps: number[];
}

export interface FsckOptions {
  onProgress?: (progress: FsckProgress) => void;
  /** Called once the passes ran through (not when the superblock or root stopped them). */
  onFacts?: (facts: FsckFacts) => void;
  /** Stop collecting after this many errors (default 100). */
  maxErrors?: number;
}

export interface FsckStats {
  inodesInUse: number;
  files: number;
  directories: number;
  symlinks: number;
  /** Devices, FIFOs and sockets. */
  special: number;
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

/** Blocks of a leaked run read at once, looking for lost inodes; lost inodes named in one message. */
const LEAK_READ_BLOCKS = 256;
const LOST_NAMED = 10;

export async function fsck(dev: BlockDevice, options: FsckOptions = {}): Promise<FsckReport> {
  const errors: string[] = [];
  const warnings: string[] = [];
  const maxErrors = options.maxErrors ?? 100;
  const stats: FsckStats = {
    inodesInUse: 0, files: 0, directories: 0, symlinks: 0, special: 0, orphans: 0, blocksInUse: 0, freeBlocks: 0, replayableJournals: 0,
  };
  const error = (message: string) => {
    errors.push(message);
    if (errors.length >= maxErrors) throw new TooManyErrors();
  };
  try {
    await check(dev, options, error, warnings, stats);
  } catch (e) {
    if (!(e instanceof TooManyErrors)) errors.push(`fsck stopped: ${messageOf(e)}`);
    else errors.push(`(stopped after ${maxErrors} errors)`);
  }
  return { ok: errors.length === 0, errors, warnings, stats };
}

function messageOf(e: unknown): string {
  if (e instanceof IoError) return e.detail;
  return e instanceof Error ? e.message : String(e);
}

function typeName(type: number): string {
  return EntryType[type] ?? `${type}`;
}

/** A name under which an inode was first reached from the root. */
interface Link {
  dir: number;
  name: string;
}

/** One record of a directory, copied out of its block. */
interface DirRecord {
  ino: number;
  type: number;
  name: Uint8Array;
  /** File block of the directory, and the record's place in it. */
  fb: number;
  index: number;
}

/** What the directory pass keeps of a directory for the tree pass. */
interface DirSummary {
  /** Inodes named by its entries (`.` and `..` aside), once per entry. */
  targets: number[];
  /** The directories among them. */
  kids: number[];
  dotOk: boolean;
  /** Where `..` points, when the first block starts with it. */
  parent?: number;
}

/** Why a superblock's geometry cannot be trusted, or null. */
export function geometryProblem(sb: Superblock, g: Geometry, deviceBytes: number): string | null {
  if (sb.totalBlocks * BLOCK_SIZE > deviceBytes) return `${sb.totalBlocks} blocks exceed the device of ${deviceBytes} bytes`;
  if (sb.totalBlocks > MAX_VOLUME_BLOCKS) return `${sb.totalBlocks} blocks exceed the largest volume (${MAX_VOLUME_BLOCKS})`;
  if (sb.slotCount < 1 || sb.journalBlocks < 1) return `${sb.slotCount} slots of ${sb.journalBlocks} journal blocks`;
  if (
    sb.journalHeaderStart !== 1
    || sb.slotBlockStart !== sb.journalHeaderStart + sb.slotCount
    || sb.journalStart !== sb.slotBlockStart + sb.slotCount
    || sb.groupStart !== sb.journalStart + sb.slotCount * sb.journalBlocks
  ) {
    return 'journal headers, slot blocks, journals and groups do not follow each other';
  }
  // A group holds its bitmap and at least one block; one bitmap block covers it.
  if (sb.blocksPerGroup < 2 || sb.blocksPerGroup > BITMAP_BITS) return `bad group size ${sb.blocksPerGroup}`;
  if (sb.groupCount < 1 || g.groupBase(sb.groupCount - 1) >= sb.totalBlocks || g.groupBase(sb.groupCount) < sb.totalBlocks) {
    return `group count ${sb.groupCount} does not match the volume size`;
  }
  if (sb.rootIno !== sb.groupStart + 1 || !g.isDataBlock(sb.rootIno)) {
    return `root inode ${sb.rootIno} is not the first data block of group 0 (${sb.groupStart + 1})`;
  }
  return null;
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

  // Pass 1: superblock, journals, slot blocks.
  progress('superblock', 0, 1);
  if (dev.sizeBytes < BLOCK_SIZE) return error(`superblock: device of ${dev.sizeBytes} bytes has no room for one`);
  const raw = new Uint8Array(BLOCK_SIZE);
  await dev.read(0, raw);
  let sb: Superblock;
  try {
    sb = decodeSuperblock(raw);
  } catch (e) {
    // A volume of an older format ends here, with decodeSuperblock's own words on what to do.
    return error(`superblock: ${messageOf(e)}`);
  }
  const g = new Geometry(sb);
  const bad = geometryProblem(sb, g, dev.sizeBytes);
  if (bad) return error(`superblock: ${bad}`);
  progress('superblock', 1, 1);

  // Committed records are read through in tag order, as recovery replays them (journal.ts): of two records of
  // one block, the later one counts.
  const records: Array<{ tag: number; targets: number[]; log: Uint8Array }> = [];
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
      records.push({ tag: header.tag, targets: header.targets, log: await reader.range(g.journalLog(slot), header.targets.length) });
    }
  }
  for (const { targets, log } of records.sort((a, b) => a.tag - b.tag)) {
    targets.forEach((target, i) => reader.overlay.set(target, log.slice(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE)));
  }
  progress('journals', sb.slotCount, sb.slotCount);
  const orphanOf = new Map<number, number>();
  for (let slot = 0; slot < sb.slotCount; slot++) {
    const address = g.slotBlock(slot);
    const block = await reader.block(address);
    const problem = checkBlockHeader(block, BlockType.Slot, address);
    if (problem) {
      error(`slot ${slot}: ${problem}`);
      continue;
    }
    const count = view(block).getUint32(HEADER_SIZE, true);
    if (count > ORPHAN_CAPACITY) error(`slot ${slot}: orphan list of ${count} entries (at most ${ORPHAN_CAPACITY})`);
    for (const ino of decodeOrphans(block)) {
      if (!g.validIno(ino)) error(`slot ${slot}: orphan ${ino} is not a data-area block`);
      else if (orphanOf.get(ino) === slot) error(`slot ${slot}: orphan ${ino} is listed twice`);
      else if (orphanOf.has(ino)) error(`inode ${ino} is on the orphan lists of slots ${orphanOf.get(ino)} and ${slot}`);
      else orphanOf.set(ino, slot);
    }
  }

  // Pass 2: group bitmaps (compared with the blocks in use in pass 6). A lazily initialised group never used
  // has a hole for a bitmap, which stands for its initial one.
  const bitmapOk: boolean[] = [];
  const uninitialised = new Set<number>();
  for (let group = 0; group < sb.groupCount; group++) {
    progress('groups', group, sb.groupCount);
    const address = g.blockBitmap(group);
    const bitmap = await reader.block(address);
    if (g.isUninitialised(group, bitmap)) {
      uninitialised.add(group);
      bitmapOk.push(true);
      continue;
    }
    const problem = checkBlockHeader(bitmap, BlockType.BlockBitmap, address);
    bitmapOk.push(!problem);
    if (problem) {
      error(`group ${group}: ${problem}`);
      continue;
    }
    if (!bitIsSet(bitmap, 0)) error(`group ${group}: bit 0 (the bitmap block ${address} itself) is clear`);
    for (let bit = g.groupSize(group); bit < BITMAP_BITS; bit++) {
      if (!bitIsSet(bitmap, bit)) {
        error(`group ${group}: bit ${bit}, past the group's ${g.groupSize(group)} blocks, is clear`);
        break;
      }
    }
  }
  progress('groups', sb.groupCount, sb.groupCount);

  // Pass 3: inodes, from the root through directory entries, then from the orphan lists.
  /** Block -> the inode using it (an inode's own block maps to itself). */
  const owner = new Map<number, number>();
  const inodes = new Map<number, Inode>();
  /** Blocks reached as inodes that are not inodes in use, and why. */
  const notInodes = new Map<number, string>();
  const links = new Map<number, Link>();
  /** The records of every directory reached from the root. */
  const dirRecords = new Map<number, DirRecord[]>();

  const pathOf = (ino: number): string | undefined => {
    if (ino === sb.rootIno) return '/';
    if (!links.has(ino)) return undefined;
    // First links always lead back to the root: an inode is linked from a directory reached before it.
    const names: string[] = [];
    for (let at = ino; at !== sb.rootIno; at = links.get(at)!.dir) names.unshift(links.get(at)!.name);
    return `/${names.join('/')}`;
  };
  const label = (ino: number): string => {
    const path = pathOf(ino);
    if (path !== undefined) return `inode ${ino} (${path})`;
    if (orphanOf.has(ino)) return `inode ${ino} (orphan of slot ${orphanOf.get(ino)})`;
    return `inode ${ino}`;
  };
  const entryPath = (dir: number, name: string): string => {
    const path = pathOf(dir) ?? `<directory ${dir}>`;
    return path === '/' ? `/${name}` : `${path}/${name}`;
  };
  const claim = (block: number, ino: number, what: string): boolean => {
    if (!g.isDataBlock(block)) {
      error(`${label(ino)}: ${what} pointer ${block} outside the data area`);
      return false;
    }
    const previous = owner.get(block);
    if (previous !== undefined) {
      const other = previous === block ? `it is the block of ${label(previous)}` : `it is already used by ${label(previous)}`;
      error(`block ${block} is referenced twice: ${what} of ${label(ino)}, and ${other}`);
      return false;
    }
    owner.set(block, ino);
    return true;
  };
  /** The inode in block `ino`, or null (and why in notInodes). */
  const readInode = async (ino: number): Promise<Inode | null> => {
    const block = await reader.block(ino);
    const problem = checkBlockHeader(block, BlockType.Inode, ino);
    if (problem) {
      notInodes.set(ino, problem);
      return null;
    }
    const inode = decodeInode(block, HEADER_SIZE, ino);
    if (inode.mode === 0) notInodes.set(ino, `block ${ino} holds a free inode`);
    else if (!legalMode(inode.mode)) notInodes.set(ino, `inode ${ino} has illegal mode 0o${inode.mode.toString(8)}`);
    else return inode;
    return null;
  };

  const queue = [sb.rootIno];
  const queued = new Set<number>(queue);
  let checked = 0;
  const visit = async (ino: number, fromTree: boolean) => {
    progress('inodes', checked++, queued.size);
    const inode = await readInode(ino);
    if (!inode) return;
    inodes.set(ino, inode);
    claim(ino, ino, 'inode block');
    await checkXattrs(reader, ino, label(ino), claim, error);
    for (const [name, time] of [['atime', inode.atime], ['mtime', inode.mtime], ['ctime', inode.ctime]] as const) {
      if (!isValidTimespec(time)) error(`${label(ino)}: ${name} ${time.sec} s ${time.nsec} ns out of range`);
    }
    // An inode only an orphan list holds, with nlink 0, is being freed: a truncation spanning several
    // transactions may have left a directory or symlink with fewer blocks (and a smaller size) than it had.
    const freeing = !fromTree && inode.nlink === 0;
    const blocks = await checkInodeBlocks(reader, inode, freeing, label(ino), claim, error);
    if (!blocks) return;
    const records: DirRecord[] = [];
    for (let fb = 0; fb < blocks.length; fb++) {
      const address = blocks[fb];
      const content = await reader.block(address);
      const problem = checkBlockHeader(content, BlockType.Directory, address);
      if (problem) {
        error(`${label(ino)}: directory file block ${fb}: ${problem}`);
        continue;
      }
      const parsed = parseDirBlock(content, address);
      if (typeof parsed === 'string') {
        error(`${label(ino)}: ${parsed}`);
        continue;
      }
      parsed.forEach((e, index) => records.push({ ino: e.ino, type: e.type, name: e.name.slice(), fb, index }));
    }
    // A removed directory's entries count for nothing: only the tree's are walked.
    if (!fromTree) return;
    dirRecords.set(ino, records);
    for (const r of records) {
      if (r.ino === 0 || sameName(r.name, DOT) || sameName(r.name, DOTDOT)) continue;
      if (!g.isDataBlock(r.ino) || queued.has(r.ino)) continue;
      queued.add(r.ino);
      links.set(r.ino, { dir: ino, name: decodeName(r.name) });
      queue.push(r.ino);
    }
  };
  for (let i = 0; i < queue.length; i++) await visit(queue[i], true);
  for (const ino of orphanOf.keys()) {
    if (queued.has(ino)) continue;
    queued.add(ino);
    await visit(ino, false);
  }
  progress('inodes', checked, queued.size);
  stats.inodesInUse = inodes.size;

  // Pass 4: directory entries.
  const summaries = new Map<number, DirSummary>();
  let done = 0;
  for (const [dir, records] of dirRecords) {
    progress('directories', done++, dirRecords.size);
    const summary: DirSummary = { targets: [], kids: [], dotOk: false };
    const names = new Set<string>();
    // A first block that could not be read was reported in pass 3; one that parsed has at least one record.
    if (records.filter((r) => r.fb === 0).length === 1) error(`${label(dir)}: its first block has no ".." record`);
    for (const r of records) {
      if (r.fb === 0 && r.index < 2) {
        const expected = r.index === 0 ? DOT : DOTDOT;
        const what = r.index === 0 ? '"."' : '".."';
        if (r.ino !== 0 && sameName(r.name, expected)) {
          if (r.type !== EntryType.Directory) error(`${label(dir)}: ${what} has type ${typeName(r.type)}, not Directory`);
          if (r.index === 0) {
            if (r.ino !== dir) error(`${label(dir)}: "." points at ${r.ino}`);
            else summary.dotOk = true;
          } else {
            summary.parent = r.ino;
          }
          continue;
        }
        error(`${label(dir)}: record ${r.index} of its first block is not ${what}`);
      }
      if (r.ino === 0) continue;
      const name = decodeName(r.name);
      const path = entryPath(dir, name);
      if (r.name.length === 0 || r.name.includes(0x2f) || r.name.includes(0)) {
        error(`${label(dir)}: illegal name ${JSON.stringify(name)}`);
      }
      if (sameName(r.name, DOT) || sameName(r.name, DOTDOT)) {
        error(`${label(dir)}: extra ${JSON.stringify(name)} entry (file block ${r.fb}, record ${r.index})`);
        continue;
      }
      // Names are compared as bytes: two byte strings may decode to the same text.
      const key = Buffer.from(r.name).toString('latin1');
      if (names.has(key)) error(`${label(dir)}: duplicate name ${JSON.stringify(name)}`);
      names.add(key);
      if (!g.isDataBlock(r.ino)) {
        error(`entry ${JSON.stringify(path)} (directory ${dir}) points at block ${r.ino}, outside the data area`);
        continue;
      }
      const target = inodes.get(r.ino);
      if (!target) {
        error(`entry ${JSON.stringify(path)} (directory ${dir}) points at block ${r.ino}, which is not an inode in use: ${notInodes.get(r.ino)}`);
        continue;
      }
      const type = entryTypeOf(target.mode);
      if (r.type !== type) {
        error(`entry ${JSON.stringify(path)} (directory ${dir}) has type ${typeName(r.type)}, ${label(r.ino)} is ${typeName(type)}`);
      }
      summary.targets.push(r.ino);
      if (isDir(target)) summary.kids.push(r.ino);
    }
    summaries.set(dir, summary);
  }
  progress('directories', dirRecords.size, dirRecords.size);
  dirRecords.clear();

  // Pass 5: the tree and link counts.
  progress('tree', 0, inodes.size);
  const root = inodes.get(sb.rootIno);
  if (!root) return error(`root inode ${sb.rootIno}: ${notInodes.get(sb.rootIno)}`);
  if (!isDir(root)) return error(`root inode ${sb.rootIno} is not a directory (mode 0o${root.mode.toString(8)})`);
  const rootSummary = summaries.get(sb.rootIno);
  if (rootSummary?.parent !== undefined && rootSummary.parent !== sb.rootIno) {
    error(`inode ${sb.rootIno} (/): ".." points at ${rootSummary.parent}, not at the root itself`);
  }
  const reached = new Set<number>([sb.rootIno]);
  const tree = [sb.rootIno];
  const linkedFrom = new Map<number, number>();
  for (let i = 0; i < tree.length; i++) {
    const dir = tree[i];
    for (const child of summaries.get(dir)?.kids ?? []) {
      if (child === sb.rootIno) {
        error(`${label(dir)} links the root directory (a cycle)`);
        continue;
      }
      if (linkedFrom.has(child)) {
        error(`directory ${label(child)} is linked from ${label(linkedFrom.get(child)!)} and from ${label(dir)} (a second link or a cycle)`);
        continue;
      }
      linkedFrom.set(child, dir);
      const parent = summaries.get(child)?.parent;
      if (parent !== undefined && parent !== dir) error(`${label(child)}: ".." points at ${parent}, it lives in directory ${dir}`);
      reached.add(child);
      tree.push(child);
    }
  }
  // References from the tree: entries, each directory's "." and its ".." (in its parent).
  const refs = new Map<number, number>();
  const ref = (ino: number) => refs.set(ino, (refs.get(ino) ?? 0) + 1);
  for (const [dir, summary] of summaries) {
    if (!reached.has(dir)) {
      error(`${label(dir)} is not reachable from the root (cycle or lost)`);
      continue;
    }
    if (summary.dotOk) ref(dir);
    if (summary.parent !== undefined) ref(summary.parent);
    summary.targets.forEach(ref);
  }
  done = 0;
  for (const [ino, inode] of inodes) {
    progress('tree', done++, inodes.size);
    if (isDir(inode)) stats.directories++;
    else if (isSymlink(inode)) stats.symlinks++;
    else if (isSpecial(inode)) stats.special++;
    else stats.files++;
    const count = refs.get(ino) ?? 0;
    const slot = orphanOf.get(ino);
    if (count === 0) {
      if (slot !== undefined && inode.nlink === 0) stats.orphans++;
      else if (slot !== undefined) error(`${label(ino)}: on the orphan list of slot ${slot} with nlink ${inode.nlink}, but not referenced`);
      else error(`${label(ino)}: in use (nlink ${inode.nlink}) but not referenced by any directory nor on an orphan list`);
      continue;
    }
    if (inode.nlink !== count) error(`${label(ino)}: nlink ${inode.nlink}, referenced ${count} times`);
    if (slot !== undefined) error(`${label(ino)}: on the orphan list of slot ${slot} but still linked`);
  }
  for (const [ino, slot] of orphanOf) {
    if (!inodes.has(ino)) error(`slot ${slot}: orphan ${ino} is not an inode in use: ${notInodes.get(ino)}`);
  }

  // A hole of a bitmap in a group that a slot recorded initialising (initialised-groups.ts) is a used group's lost.
  for (let slot = 0; slot < sb.slotCount && uninitialised.size > 0; slot++) {
    const block = await reader.block(g.slotBlock(slot));
    if (checkBlockHeader(block, BlockType.Slot, g.slotBlock(slot))) continue;
    for (const group of uninitialised) {
      if (recordsInitialised(block, group)) error(`group ${group}: bitmap block ${g.blockBitmap(group)} is a hole, but slot ${slot}'s domain initialised the group`);
    }
  }

  // Pass 6: bitmaps against the blocks in use.
  const lostInodes: number[] = [];
  const groupsUsed = new Set([...owner.keys()].map((block) => g.groupOf(block)));
  for (let group = 0; group < sb.groupCount; group++) {
    progress('bitmaps', group, sb.groupCount);
    // A bitmap that failed its checksum says nothing worth comparing (reported in pass 2).
    if (!bitmapOk[group]) continue;
    const base = g.groupBase(group);
    const size = g.groupSize(group);
    if (uninitialised.has(group) && !groupsUsed.has(group)) {
      // Nothing in use and nothing allocated: only the bitmap's own block counts (no bit-by-bit walk).
      const reserved = g.firstDataBlock(group) - base;
      stats.blocksInUse += reserved;
      stats.freeBlocks += size - reserved;
      continue;
    }
    const bitmap = uninitialised.has(group) ? g.initialBitmap(group) : await reader.block(g.blockBitmap(group));
    let leakStart = -1;
    const leaked = async (end: number) => {
      if (leakStart < 0) return;
      const blocks = end - 1 === leakStart ? `block ${leakStart}` : `blocks ${leakStart}..${end - 1}`;
      // Nothing links an inode that is lost, so it is only found here: name the ones the run holds.
      const lost: number[] = [];
      for (let start = leakStart; start < end; start += LEAK_READ_BLOCKS) {
        const count = Math.min(LEAK_READ_BLOCKS, end - start);
        const run = await reader.range(start, count);
        for (let i = 0; i < count; i++) {
          const content = run.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE);
          if (!checkBlockHeader(content, BlockType.Inode, start + i) && decodeInode(content, HEADER_SIZE, start + i).mode !== 0) {
            lost.push(start + i);
          }
        }
      }
      leakStart = -1;
      lostInodes.push(...lost);
      let among = '';
      if (lost.length > 0) {
        const named = lost.length > LOST_NAMED ? `${lost.slice(0, LOST_NAMED).join(', ')} and ${lost.length - LOST_NAMED} more` : lost.join(', ');
        among = `; ${lost.length === 1 ? 'it holds inode' : 'they hold inodes'} ${named}, linked from nowhere`;
      }
      error(`${blocks} (group ${group}): allocated but not referenced (leaked)${among}`);
    };
    for (let bit = 0; bit < size; bit++) {
      const block = base + bit;
      const set = bitIsSet(bitmap, bit);
      if (set) stats.blocksInUse++;
      else stats.freeBlocks++;
      if (bit === 0) continue;
      const user = owner.get(block);
      if (set && user === undefined) {
        if (leakStart < 0) leakStart = block;
        continue;
      }
      await leaked(block);
      if (!set && user !== undefined) {
        error(`block ${block}: free in the bitmap of group ${group}, but ${user === block ? 'it is the block of' : 'used by'} ${label(user)}`);
      }
    }
    await leaked(base + size);
  }
  progress('bitmaps', sb.groupCount, sb.groupCount);
  const badBitmaps = bitmapOk.flatMap((ok, group) => (ok ? [] : [group]));
  options.onFacts?.({ superblock: sb, owner, inodes, refs, orphanOf, lost: lostInodes, badBitmaps });
  progress('done', 1, 1);
}

/**
 * Walks an inode's block map, claims its blocks and checks sizes and counts. Returns a directory's blocks in file
 * order (for the caller to read), or null.
 */
/** An inode's extended attributes: a chain of valid Xattr blocks, each claimed, holding a well-formed list. */
async function checkXattrs(
  reader: Reader,
  ino: number,
  label: string,
  claim: (block: number, ino: number, what: string) => boolean,
  error: (message: string) => void,
): Promise<void> {
  const got = await gatherXattrList(await reader.block(ino), async (address, index) => {
    if (!claim(address, ino, `attribute chain block ${index}`)) return `attribute chain block ${index} (${address}) refused`;
    const block = await reader.block(address);
    return chainBlockProblem(block, address) ?? block;
  });
  if (typeof got === 'string') return error(`${label}: ${got}`);
  const attrs = decodeXattrs(got.list);
  if (typeof attrs === 'string') error(`${label}: ${attrs}`);
  else if (got.chain.length !== chainBlocksFor(got.list.length)) error(`${label}: attribute chain of ${got.chain.length} blocks for ${got.list.length} bytes`);
}

/** Blocks of a file's contiguous run read at once to check their data checksums. */
const SUM_READ_BLOCKS = 256;

/** Every block of `summed` (a regular file's, in file order) read and checked against its pointer's crc32c. */
async function checkDataChecksums(
  reader: Reader,
  summed: { fb: number; block: number; crc: number }[],
  label: string,
  error: (message: string) => void,
): Promise<void> {
  for (let i = 0; i < summed.length; ) {
    let n = 1;
    while (i + n < summed.length && n < SUM_READ_BLOCKS && summed[i + n].block === summed[i].block + n) n++;
    const run = await reader.range(summed[i].block, n);
    for (let j = 0; j < n; j++) {
      const { fb, block, crc } = summed[i + j];
      const actual = crc32c(run, 0, j * BLOCK_SIZE, BLOCK_SIZE);
      if (actual !== crc) {
        error(`${label}: data checksum mismatch in file block ${fb} (block ${block}): the pointer says crc32c ${crcHex(crc)}, the block has ${crcHex(actual)}`);
      }
    }
    i += n;
  }
}


async function checkInodeBlocks(
  reader: Reader,
  inode: Inode,
  freeing: boolean,
  label: string,
  claim: (block: number, ino: number, what: string) => boolean,
  error: (message: string) => void,
): Promise<number[] | null> {
  const ino = inode.ino;
  const sizeOk = inode.size >= 0 && Number.isSafeInteger(inode.size) && inode.size <= MAX_FILE_SIZE;
  if (!sizeOk) error(`${label}: bad size ${inode.size}`);
  // A symlink's blocks hold a length and a piece of the target each (layout.ts), so it may map one more.
  const sizeBlocks = !sizeOk ? Infinity : isSymlink(inode) ? symlinkBlocks(inode.size) : Math.ceil(inode.size / BLOCK_SIZE);
  // File block -> volume block, kept for directories and symlinks only (a regular file's map may be large);
  // `claimed` holds the file blocks whose block was not refused (out of range or referenced twice, reported).
  const keepMap = !isRegular(inode);
  const mapped = new Map<number, number>();
  const claimed = new Set<number>();
  let pointers = 0;
  let complete = true;
  let pastEnd = -1;
  // A regular file's blocks with the crc32c their pointers carry, checked against their data after the walk.
  const summed: { fb: number; block: number; crc: number }[] = [];
  const data = (fb: number, block: number, crc = 0) => {
    if (!block) return;
    pointers++;
    if (fb >= sizeBlocks && pastEnd < 0) pastEnd = fb;
    const ok = claim(block, ino, `file block ${fb}`);
    if (isRegular(inode) && ok) summed.push({ fb, block, crc });
    if (!keepMap) return;
    mapped.set(fb, block);
    if (ok) claimed.add(fb);
  };
  const indirect = async (block: number, what: string): Promise<Uint8Array | null> => {
    pointers++;
    if (!claim(block, ino, what)) {
      complete = false;
      return null;
    }
    const content = await reader.block(block);
    const problem = checkBlockHeader(content, BlockType.Indirect, block);
    if (problem) {
      error(`${label}: ${what}: ${problem}`);
      complete = false;
      return null;
    }
    return content;
  };
  const entries = (block: Uint8Array, base: number) => {
    for (let i = 0; i < ENTRIES_PER_BLOCK; i++) {
      const entry = readEntry(block, i);
      data(base + i, entry.block, entry.crc);
    }
  };
  for (let i = 0; i < DIRECT_POINTERS; i++) data(i, inode.direct[i], inode.directCrc[i]);
  if (inode.indirect) {
    const block = await indirect(inode.indirect, 'indirect block');
    if (block) entries(block, DIRECT_POINTERS);
  }
  if (inode.doubleIndirect) {
    const top = await indirect(inode.doubleIndirect, 'double indirect block');
    if (top) {
      for (let a = 0; a < POINTERS_PER_BLOCK; a++) {
        const leafAddress = readPointer(top, a);
        if (!leafAddress) continue;
        const leaf = await indirect(leafAddress, `indirect block ${a} of the double indirect block`);
        if (!leaf) continue;
        entries(leaf, DIRECT_POINTERS + ENTRIES_PER_BLOCK + a * ENTRIES_PER_BLOCK);
      }
    }
  }
  await checkDataChecksums(reader, summed, label, error);
  if (pastEnd >= 0) error(`${label}: file block ${pastEnd} is mapped past the end of the file (size ${inode.size})`);
  // `blocks` counts data and indirect blocks, as the block map does; the inode's own block is not counted.
  if (complete && pointers !== inode.blocks) {
    error(`${label}: block count ${inode.blocks}, but ${pointers} data and indirect blocks are mapped`);
  }
  if (inode.rdev !== 0 && !isDevice(inode.mode)) error(`${label}: device number ${inode.rdev} on a file that is not a device`);
  if (!sizeOk) return null;
  if (isSpecial(inode)) {
    if (inode.size !== 0 || pointers !== 0) error(`${label}: special file with size ${inode.size} and ${pointers} blocks mapped (none expected)`);
    return null;
  }
  if (isDir(inode)) {
    if (inode.size % BLOCK_SIZE !== 0 || (inode.size === 0 && !freeing)) {
      error(`${label}: directory size ${inode.size} is not a whole number of blocks`);
    }
    const blocks: number[] = [];
    for (let fb = 0; fb < sizeBlocks; fb++) {
      const block = mapped.get(fb);
      if (block === undefined) {
        // Past an indirect block that could not be read, the map is unknown rather than a hole.
        if (complete) error(`${label}: directory has a hole at file block ${fb}`);
        return null;
      }
      if (!claimed.has(fb)) return null;
      blocks.push(block);
    }
    return blocks;
  }
  if (isSymlink(inode)) {
    if (freeing && inode.size === 0 && pointers === 0) return null;
    if (inode.size < 1 || inode.size > SYMLINK_MAX) {
      error(`${label}: symlink size ${inode.size} (1..${SYMLINK_MAX})`);
      return null;
    }
    const expected = symlinkBlocks(inode.size);
    if (pointers !== expected || inode.direct.slice(0, expected).some((p) => !p)) {
      error(`${label}: symlink with ${pointers} blocks mapped, expected ${expected} from file block 0`);
      return null;
    }
    for (let fb = 0; fb < expected; fb++) {
      const block = mapped.get(fb);
      if (block === undefined || !claimed.has(fb)) return null;
      const content = await reader.block(block);
      const problem = checkBlockHeader(content, BlockType.Symlink, block);
      const stored = view(content).getUint32(HEADER_SIZE, true);
      const piece = Math.min(SYMLINK_CHUNK, inode.size - fb * SYMLINK_CHUNK);
      if (problem) error(`${label}: symlink ${problem}`);
      else if (stored !== piece) error(`${label}: symlink block ${block} stores length ${stored}, expected ${piece} of size ${inode.size}`);
    }
  }
  return null;
}
