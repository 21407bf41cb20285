/**
 * The write-ahead redo journal, one per domain slot (xv6's log, with ext3/jbd2-style checksummed commit records).
 *
 * On disk a slot has a header block (the commit record) and `journalBlocks` log blocks. The header holds
 * {seq, n, (target, crc32c)[n], checksum}; n > 0 with a valid checksum means "committed, maybe not yet home".
 *
 * Commit of a transaction in three steps, none waiting for durability (barrier writes, see WriteOptions.barrier:
 * the monitor answers them at once and keeps them, and every write after them, from the image until everything
 * written before is durable; ordering without waiting, as Linux's old barriers). On an ordered device (the
 * guest's ring, OrderedDevice) the three are issued at once, one round trip in all; elsewhere each waits for the
 * one before:
 *   1. copy the blocks into the log (one contiguous write, a barrier: the file data written before, ordered
 *      mode, and the previous clear are durable first) and write the header (the commit record) with it: the
 *      commit point. The record checksums every logged copy, so a crash that persisted the record but not all
 *      copies reads as torn and the transaction is dropped, as with jbd2's async commit; so the two need no
 *      order between them.
 *   2. write every block home (contiguous targets coalesced), behind a barrier: the record is durable first.
 *   3. write a clear header (n = 0), behind a barrier: home is durable first.
 * A crash keeps a prefix of these steps' writes (plus any part of the last one reached), so replay finds either
 * no record, a torn one, or a committed one whose home writes it repeats. The commit is durable once a FLUSH
 * (fsync, sync, unmount) completes after it. (Before: log + header with FUA, home with FUA, clear: each step
 * waited for an fdatasync of the image, and a lock passed to another domain only after both.)
 *
 * Recovery (replayJournal) needs no filesystem knowledge beyond the superblock's geometry: if the header is valid
 * and every logged copy matches its checksum, copy the blocks home, FLUSH, clear, FLUSH. Anything else is an
 * uncommitted transaction and is dropped. Replay is idempotent, so a crash during replay is harmless.
 *
 * Several journals, one block. Each domain commits into its own journal, and a block is covered by one cluster
 * lock, given up only after the commit wrote the block home and cleared the log (on an ordered device: issued
 * those writes ahead of the release). With barriers the next holder's record lands in a later epoch than the old
 * holder's clear, so the clear is durable first; on a device without them a crash may keep the old holder's record
 * while the new holder's record of the same block also reached the disk. So every record carries a tag,
 * the lock service's change epoch as last seen by the committing domain (LockService.epoch): the epoch grows
 * with every release of a changed lock, and the new holder saw it grow before it could change the block, so of
 * two records of one block the later has the larger tag. recoverJournals replays the records of all the slots it
 * is given in ascending tag order, so the newest copy of each block lands last. (Records left by two domains
 * with the same tag never share a block: between their changes the lock passed on, changed, and the epoch grew.)
 */
import { IoError, type BlockDevice } from './block-device.js';
import { crc32c } from './crc32c.js';
import { BLOCK_SIZE, BlockType, checkBlockHeader, Geometry, readSuperblock, sealBlock, view, type Superblock } from './layout.js';

const ENTRIES_OFFSET = 40;
/** Most blocks one transaction can hold, whatever the log size. */
export const HEADER_ENTRY_CAPACITY = (BLOCK_SIZE - ENTRIES_OFFSET) / 8;

export function transactionCapacity(sb: Superblock): number {
  return Math.min(HEADER_ENTRY_CAPACITY, sb.journalBlocks);
}

export interface JournalHeader {
  seq: number;
  slot: number;
  /** Orders records of one block across journals (see above). */
  tag: number;
  targets: number[];
  crcs: number[];
}

export function encodeJournalHeader(address: number, header: JournalHeader): Uint8Array {
  const block = new Uint8Array(BLOCK_SIZE);
  const v = view(block);
  v.setFloat64(16, header.seq, true);
  v.setUint32(24, header.targets.length, true);
  v.setUint32(28, header.slot, true);
  v.setFloat64(32, header.tag, true);
  header.targets.forEach((target, i) => {
    v.setUint32(ENTRIES_OFFSET + i * 8, target, true);
    v.setUint32(ENTRIES_OFFSET + i * 8 + 4, header.crcs[i], true);
  });
  sealBlock(block, BlockType.JournalHeader, address);
  return block;
}

/** The header, or a reason it is not a valid one (a torn or never written commit record). */
export function decodeJournalHeader(block: Uint8Array, address: number): JournalHeader | string {
  const problem = checkBlockHeader(block, BlockType.JournalHeader, address);
  if (problem) return problem;
  const v = view(block);
  const n = v.getUint32(24, true);
  if (n > HEADER_ENTRY_CAPACITY) return `journal header ${address}: ${n} entries`;
  const targets: number[] = [];
  const crcs: number[] = [];
  for (let i = 0; i < n; i++) {
    targets.push(v.getUint32(ENTRIES_OFFSET + i * 8, true));
    crcs.push(v.getUint32(ENTRIES_OFFSET + i * 8 + 4, true));
  }
  return { seq: v.getFloat64(16, true), slot: v.getUint32(28, true), tag: v.getFloat64(32, true), targets, crcs };
}

/** The runs of consecutive targets: [first index, end index) pairs. */
function homeRuns(targets: number[]): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  let i = 0;
  while (i < targets.length) {
    let j = i + 1;
    while (j < targets.length && targets[j] === targets[j - 1] + 1) j++;
    runs.push([i, j]);
    i = j;
  }
  return runs;
}

/** Waits for every write (one batch for the monitor, not a round trip each); the first failure is thrown. */
async function settleAll(writes: Promise<void>[]): Promise<void> {
  const failed = (await Promise.allSettled(writes)).find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/**
 * Issues the writes of consecutive targets, one request each, all at once: `blocks[i]` lives at `buffer[i * BLOCK_SIZE]`.
 * With `barrier`, everything completed before is durable before any of them (the first run is a barrier write,
 * the others are issued after it).
 */
function writeHome(dev: BlockDevice, targets: number[], buffer: Uint8Array, barrier: boolean): Promise<void>[] {
  const runs = homeRuns(targets);
  return runs.map(([i, j], run) => dev.write(targets[i] * BLOCK_SIZE, buffer.subarray(i * BLOCK_SIZE, j * BLOCK_SIZE), { barrier: barrier && run === 0 }));
}

export type JournalState =
  | { state: 'clean'; seq: number }
  | { state: 'committed'; seq: number; blocks: number }
  | { state: 'torn'; seq: number; reason: string };

/** What a slot's journal holds: nothing, a replayable transaction, or an uncommitted (torn) one. */
export async function inspectJournal(dev: BlockDevice, sb: Superblock, slot: number): Promise<JournalState> {
  const found = await loadTransaction(dev, sb, slot);
  if (found.kind === 'clean') return { state: 'clean', seq: found.seq };
  if (found.kind === 'torn') return { state: 'torn', seq: found.seq, reason: found.reason };
  return { state: 'committed', seq: found.header.seq, blocks: found.header.targets.length };
}

type Loaded =
  | { kind: 'clean'; seq: number }
  | { kind: 'torn'; seq: number; reason: string }
  | { kind: 'committed'; header: JournalHeader; log: Uint8Array };

async function loadTransaction(dev: BlockDevice, sb: Superblock, slot: number): Promise<Loaded> {
  const geometry = new Geometry(sb);
  const address = geometry.journalHeader(slot);
  const block = new Uint8Array(BLOCK_SIZE);
  await dev.read(address * BLOCK_SIZE, block);
  const header = decodeJournalHeader(block, address);
  if (typeof header === 'string') return { kind: 'torn', seq: 0, reason: header };
  const n = header.targets.length;
  if (n === 0) return { kind: 'clean', seq: header.seq };
  if (n > transactionCapacity(sb)) return { kind: 'torn', seq: header.seq, reason: `${n} blocks exceed the log` };
  const log = new Uint8Array(n * BLOCK_SIZE);
  await dev.read(geometry.journalLog(slot) * BLOCK_SIZE, log);
  for (let i = 0; i < n; i++) {
    const target = header.targets[i];
    if (target < 1 || target >= sb.totalBlocks) {
      return { kind: 'torn', seq: header.seq, reason: `target ${target} out of range` };
    }
    if (crc32c(log.subarray(i * BLOCK_SIZE, (i + 1) * BLOCK_SIZE)) !== header.crcs[i]) {
      return { kind: 'torn', seq: header.seq, reason: `logged copy ${i} (for block ${target}) does not match` };
    }
  }
  return { kind: 'committed', header, log };
}

/**
 * Recovers one slot: replays its committed transaction, drops an uncommitted one, leaves the journal clean.
 * Returns how many blocks were copied home. Safe to call on a clean journal; the caller must make sure the slot's
 * owner is not running (the monitor fences a dead domain first).
 */
export async function replayJournal(dev: BlockDevice, slot: number, sb?: Superblock): Promise<number> {
  return recoverJournals(dev, [slot], sb);
}

/**
 * Recovers several slots at once: their committed records are replayed in ascending tag order (see above), then
 * every one of them is cleared. Returns how many blocks were copied home.
 */
export async function recoverJournals(dev: BlockDevice, slots: number[], sb?: Superblock): Promise<number> {
  sb ??= await readSuperblock(dev);
  const geometry = new Geometry(sb);
  const found: Array<{ slot: number; loaded: Loaded }> = [];
  for (const slot of slots) {
    if (!Number.isInteger(slot) || slot < 0 || slot >= sb.slotCount) throw new IoError('EINVAL', `no journal slot ${slot}`);
    const loaded = await loadTransaction(dev, sb, slot);
    if (loaded.kind !== 'clean') found.push({ slot, loaded });
  }
  if (found.length === 0) return 0;
  let replayed = 0;
  const committed = found
    .map(({ loaded }) => loaded)
    .filter((l): l is Extract<Loaded, { kind: 'committed' }> => l.kind === 'committed')
    .sort((a, b) => a.header.tag - b.header.tag);
  for (const { header, log } of committed) {
    await settleAll(writeHome(dev, header.targets, log, false));
    replayed += header.targets.length;
  }
  if (committed.length > 0) await dev.flush();
  for (const { slot, loaded } of found) {
    const seq = loaded.kind === 'committed' ? loaded.header.seq : loaded.seq;
    const address = geometry.journalHeader(slot);
    await dev.write(address * BLOCK_SIZE, encodeJournalHeader(address, { seq, slot, tag: 0, targets: [], crcs: [] }));
  }
  await dev.flush();
  return replayed;
}

/** Writes a clean header (mkfs). */
export function cleanJournalHeader(geometry: Geometry, slot: number): Uint8Array {
  return encodeJournalHeader(geometry.journalHeader(slot), { seq: 0, slot, tag: 0, targets: [], crcs: [] });
}

/** The journal of the slot this filesystem instance owns. */
export class Journal {
  private readonly geometry: Geometry;
  readonly capacity: number;
  /** Counters for tests and diagnostics. */
  readonly stats = { commits: 0, blocksLogged: 0 };

  constructor(
    private readonly dev: BlockDevice,
    sb: Superblock,
    readonly slot: number,
    private seq: number,
  ) {
    this.geometry = new Geometry(sb);
    this.capacity = transactionCapacity(sb);
  }

  /** Commits are issued at once, their three steps in one batch (OrderedDevice). */
  get ordered(): boolean {
    return this.dev.ordered === true;
  }

  static async open(dev: BlockDevice, sb: Superblock, slot: number): Promise<Journal> {
    const state = await inspectJournal(dev, sb, slot);
    if (state.state !== 'clean') throw new IoError('EIO', `journal ${slot} is not clean; replay it first`);
    return new Journal(dev, sb, slot, state.seq);
  }

  /** Commits sealed blocks (ascending, distinct addresses) durably and writes them home; `tag` orders the record. */
  async commit(blocks: Array<{ block: number; data: Uint8Array }>, tag = 0): Promise<void> {
    const n = blocks.length;
    if (n === 0) return;
    if (n > this.capacity) throw new Error(`transaction of ${n} blocks exceeds the journal (${this.capacity})`);
    const log = this.dev.allocBuffer(n * BLOCK_SIZE);
    try {
      const targets: number[] = [];
      const crcs: number[] = [];
      blocks.forEach(({ block, data }, i) => {
        log.set(data, i * BLOCK_SIZE);
        targets.push(block);
        crcs.push(crc32c(data));
      });
      const headerAddress = this.geometry.journalHeader(this.slot);
      this.seq++;
      // Log and commit record go out together behind one barrier (the data written before them, ordered mode,
      // and the previous clear are durable first), in no order between them (as jbd2's async commit): the record
      // carries a checksum of every logged copy, so a crash that persisted the record but not all copies reads
      // as torn and is dropped, never replayed. Then home behind a barrier, then the clear behind a barrier.
      // Nothing waits for durability (fsync, sync and unmount FLUSH after the commit), so a lock passes on at once.
      const record = encodeJournalHeader(headerAddress, { seq: this.seq, slot: this.slot, tag, targets, crcs });
      const clear = encodeJournalHeader(headerAddress, { seq: this.seq, slot: this.slot, tag: 0, targets: [], crcs: [] });
      const logged = () => [
        this.dev.write(this.geometry.journalLog(this.slot) * BLOCK_SIZE, log, { barrier: true }),
        this.dev.write(headerAddress * BLOCK_SIZE, record),
      ];
      const cleared = () => this.dev.write(headerAddress * BLOCK_SIZE, clear, { barrier: true });
      if (this.dev.ordered) {
        // All three steps are issued before this returns to its caller, which may issue more behind them.
        await settleAll([...logged(), ...writeHome(this.dev, targets, log, true), cleared()]);
      } else {
        await settleAll(logged());
        await settleAll(writeHome(this.dev, targets, log, true));
        await cleared();
      }
      this.stats.commits++;
      this.stats.blocksLogged += n;
    } finally {
      this.dev.freeBuffer(log);
    }
  }
}

/** The slots whose journal is not clean, read with one request (the headers are contiguous). */
export async function dirtyJournalSlots(dev: BlockDevice, sb: Superblock): Promise<number[]> {
  const geometry = new Geometry(sb);
  const headers = new Uint8Array(sb.slotCount * BLOCK_SIZE);
  await dev.read(geometry.journalHeader(0) * BLOCK_SIZE, headers);
  const dirty: number[] = [];
  for (let slot = 0; slot < sb.slotCount; slot++) {
    const header = decodeJournalHeader(headers.subarray(slot * BLOCK_SIZE, (slot + 1) * BLOCK_SIZE), geometry.journalHeader(slot));
    if (typeof header === 'string' || header.targets.length > 0) dirty.push(slot);
  }
  return dirty;
}
