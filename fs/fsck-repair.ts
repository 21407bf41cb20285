/**
 * `fsck --repair`, in the spirit of e2fsck -p: the repairs that need no decision, each one reported.
 *
 *  1. journals: committed transactions replayed (in tag order, as a mount would), uncommitted ones dropped
 *  2. bitmaps: every block in use marked in use (before anything is allocated below)
 *  3. lost inodes (in use, in an allocated block, named by no directory nor orphan list): linked into
 *     /lost+found as `#INO` (created when missing); of a lost tree, only its top is linked
 *  4. link counts set to the references the tree holds
 *  5. bitmaps rebuilt exactly: leaked blocks freed
 *  6. a final check: what it still finds is left for a person (exit 4)
 *
 * The image is locked for the whole repair (image-lock.ts), and an image another process holds (`hvshare up`)
 * is refused. Allocation and directory changes (step 3) go through the filesystem itself, mounted natively on a
 * journal slot no one holds; the rest are whole-block rewrites.
 */
import { bitIsSet, setBit } from './allocator.js';
import { IoError, type BlockDevice } from './block-device.js';
import { DOT, DOTDOT, parseDirBlock, sameName } from './directory.js';
import { FileBlockDevice } from './file-block-device.js';
import { FileSystem } from './filesystem.js';
import { fsck, type FsckFacts, type FsckReport } from './fsck.js';
import { ImageLock } from './image-lock.js';
import { decodeInode, encodeInode, isDir } from './inode.js';
import { dirtyJournalSlots, inspectJournal, recoverJournals } from './journal.js';
import { BITMAP_BITS, BLOCK_SIZE, BlockType, checkBlockHeader, Geometry, HEADER_SIZE, readSuperblock, sealBlock, type Superblock } from './layout.js';
import { LocalLockService } from './local-lock-service.js';

/** e2fsck's exit statuses. */
export const REPAIR_CLEAN = 0;
export const REPAIR_CORRECTED = 1;
export const REPAIR_ERRORS_LEFT = 4;
export const REPAIR_OPERATIONAL_ERROR = 8;

export interface RepairReport {
  /** Every change made, in order. */
  changes: string[];
  /** The check after the repair. */
  after: FsckReport;
  exitCode: typeof REPAIR_CLEAN | typeof REPAIR_CORRECTED | typeof REPAIR_ERRORS_LEFT;
}

export const LOST_AND_FOUND = '/lost+found';

/** Repairs the image file `image`; EBUSY when another process holds it (a running platform). */
export async function repairImage(image: string): Promise<RepairReport> {
  const lock = await ImageLock.acquire(image, 'hvshare fsck --repair');
  try {
    const dev = await FileBlockDevice.open(image);
    try {
      return await repair(dev);
    } finally {
      await dev.close();
    }
  } finally {
    await lock.release();
  }
}

/** fsck with everything collected (no error limit), and its facts when the passes ran through. */
async function look(dev: BlockDevice): Promise<{ report: FsckReport; facts: FsckFacts | null }> {
  let facts: FsckFacts | null = null;
  const report = await fsck(dev, { maxErrors: Infinity, onFacts: (f) => (facts = f) });
  return { report, facts };
}

export async function repair(dev: BlockDevice): Promise<RepairReport> {
  const changes: string[] = [];
  const sb = await readSuperblock(dev);
  await replayJournals(dev, sb, changes);
  let { facts } = await look(dev);
  if (facts) {
    await writeBitmaps(dev, facts, false, changes);
    if (facts.lost.length > 0) {
      await adoptLost(dev, await topsOf(dev, facts.lost), changes);
      facts = (await look(dev)).facts;
    }
  }
  if (facts) {
    await fixLinkCounts(dev, facts, changes);
    await writeBitmaps(dev, facts, true, changes);
  }
  await dev.flush();
  const after = await fsck(dev);
  return { changes, after, exitCode: !after.ok ? REPAIR_ERRORS_LEFT : changes.length > 0 ? REPAIR_CORRECTED : REPAIR_CLEAN };
}

async function replayJournals(dev: BlockDevice, sb: Superblock, changes: string[]): Promise<void> {
  const dirty = await dirtyJournalSlots(dev, sb);
  if (dirty.length === 0) return;
  const found: string[] = [];
  for (const slot of dirty) {
    const state = await inspectJournal(dev, sb, slot);
    if (state.state === 'committed') found.push(`journal ${slot}: replayed a committed transaction of ${state.blocks} block(s)`);
    if (state.state === 'torn') found.push(`journal ${slot}: dropped an uncommitted transaction (${state.reason})`);
  }
  await recoverJournals(dev, dirty, sb);
  changes.push(...found);
}

async function readBlock(dev: BlockDevice, address: number): Promise<Uint8Array> {
  const block = new Uint8Array(BLOCK_SIZE);
  await dev.read(address * BLOCK_SIZE, block);
  return block;
}

/**
 * Each group's bitmap made to mark every block in use (and its reserved bits); with `exact`, blocks nobody uses
 * are freed too. A bitmap that failed its check is rebuilt from scratch either way.
 */
async function writeBitmaps(dev: BlockDevice, facts: FsckFacts, exact: boolean, changes: string[]): Promise<void> {
  const g = new Geometry(facts.superblock);
  const usedIn = new Map<number, number[]>();
  for (const block of facts.owner.keys()) {
    const group = g.groupOf(block);
    let list = usedIn.get(group);
    if (!list) usedIn.set(group, (list = []));
    list.push(block);
  }
  for (let group = 0; group < facts.superblock.groupCount; group++) {
    const address = g.blockBitmap(group);
    const stored = await readBlock(dev, address);
    const used = usedIn.get(group) ?? [];
    const uninitialised = g.isUninitialised(group, stored);
    if (uninitialised && used.length === 0) continue;
    const bad = !uninitialised && checkBlockHeader(stored, BlockType.BlockBitmap, address) !== null;
    const current = uninitialised ? g.initialBitmap(group) : stored;
    const wanted = g.initialBitmap(group);
    const base = g.groupBase(group);
    for (const block of used) setBit(wanted, block - base, true);
    if (!exact && !bad) for (let i = HEADER_SIZE; i < BLOCK_SIZE; i++) wanted[i] |= current[i];
    let marked = 0;
    let freed = 0;
    for (let bit = 0; bit < BITMAP_BITS; bit++) {
      const [was, now] = [bitIsSet(current, bit), bitIsSet(wanted, bit)];
      if (now && !was) marked++;
      if (was && !now) freed++;
    }
    if (!bad && !uninitialised && marked === 0 && freed === 0) continue;
    sealBlock(wanted, BlockType.BlockBitmap, address);
    await dev.write(address * BLOCK_SIZE, wanted);
    const what = bad ? `rebuilt (it failed its check: ${checkBlockHeader(stored, BlockType.BlockBitmap, address)})` : 'corrected';
    changes.push(`group ${group}: bitmap ${what}: ${marked} block(s) marked in use, ${freed} freed`);
  }
}

/** Of the lost inodes, those no lost directory names (the tops of lost trees); read from direct blocks. */
async function topsOf(dev: BlockDevice, lost: number[]): Promise<number[]> {
  const named = new Set<number>();
  for (const ino of lost) {
    const inode = decodeInode(await readBlock(dev, ino), HEADER_SIZE, ino);
    if (!isDir(inode)) continue;
    for (const address of inode.direct.filter((a) => a !== 0)) {
      const entries = parseDirBlock(await readBlock(dev, address), address);
      if (typeof entries === 'string') continue;
      for (const e of entries) if (e.ino !== 0 && !sameName(e.name, DOT) && !sameName(e.name, DOTDOT)) named.add(e.ino);
    }
  }
  return lost.filter((ino) => !named.has(ino));
}

/** Links each lost inode into /lost+found, through the filesystem mounted natively (slot 0: no one holds it). */
async function adoptLost(dev: BlockDevice, tops: number[], changes: string[]): Promise<void> {
  const fs = await FileSystem.mount(dev, { slot: 0, locks: new LocalLockService().client(), commitIntervalMs: 0 });
  try {
    const existing = await fs.getattr(LOST_AND_FOUND).catch((err: IoError) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (!existing) {
      await fs.mkdir(LOST_AND_FOUND, 0o700);
      changes.push(`created ${LOST_AND_FOUND}`);
    }
    for (const ino of tops) {
      const name = `#${ino}`;
      await fs.adoptLost(ino, LOST_AND_FOUND, name);
      changes.push(`inode ${ino}: in use but named by no directory, linked as ${LOST_AND_FOUND}/${name}`);
    }
  } finally {
    await fs.unmount();
  }
}

async function fixLinkCounts(dev: BlockDevice, facts: FsckFacts, changes: string[]): Promise<void> {
  for (const [ino, inode] of facts.inodes) {
    const refs = facts.refs.get(ino) ?? 0;
    if (refs === 0 || inode.nlink === refs) continue;
    const block = await readBlock(dev, ino);
    const stored = decodeInode(block, HEADER_SIZE, ino);
    const was = stored.nlink;
    stored.nlink = refs;
    encodeInode(block, HEADER_SIZE, stored);
    sealBlock(block, BlockType.Inode, ino);
    await dev.write(ino * BLOCK_SIZE, block);
    changes.push(`inode ${ino}: link count ${was} set to ${refs}, the references the tree holds`);
  }
}

