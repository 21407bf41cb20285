/**
 * Reading and writing file contents. Data blocks bypass the metadata cache and the journal (ordered mode, as
 * ext3's default): they are written in place before the transaction that maps them commits, in runs as long as
 * the allocation is contiguous, so a large write is a few large device requests that the write does not wait
 * for (see track). Reads are served from the page cache (valid under the inode's lock, see page-cache.ts) and
 * fill it; writes update the pages it holds. A file
 * read sequentially is read ahead, 1 MiB past each read, so the device transfer overlaps the reader's round trip.
 *
 * The bytes of the last block past the end of file are not kept zero; whatever extends a file first zeroes them.
 *
 * Every block is checksummed (crc32c, kept next to its pointer: block-map.ts) when it is written and verified when
 * it is read from the device, whichever path reads it (a read, a read ahead, the old contents of a block written in
 * part): a mismatch is a CorruptionError (EIO), and the page is not cached. A block a committed pointer names is
 * never overwritten: a write goes to a block of the running transaction (block-map.ts, mapForWrite), so a crash
 * between the data write and the commit leaves the old data under the old checksum.
 */
import { IoError, type BlockDevice } from './block-device.js';
import type { BlockMap, MappedRun } from './block-map.js';
import { crc32cPieces, crcHex } from './crc32c.js';
import type { Inode } from './inode.js';
import { BLOCK_SIZE } from './layout.js';
import { zero } from './buffers.js';
import type { PageCache } from './page-cache.js';
import { CorruptionError } from './volume-errors.js';

/** Lets a long write commit between runs: called with the file consistent in memory (size covers all mapped). */
export type WriteCheckpoint = () => Promise<void>;

/** A sequential reader's state: where its last read ended, how far ahead blocks were asked for, what is on its way. */
interface Stream {
  next: number;
  ahead: number;
  inflight: { from: number; to: number; done: Promise<void> }[];
}

/** Blocks read ahead of a sequential reader (1 MiB: eight of libfuse's largest reads). */
const READ_AHEAD = 256;
/** Files whose reads are followed. */
const STREAMS_KEPT = 16;
/**
 * Files up to this many blocks opened for reading are read whole at open (128 KiB: one of libfuse's reads), so
 * the transfer overlaps the open's reply and the reader's first request instead of following them.
 */
const OPEN_AHEAD = 32;

/** Bytes of data writes on their way before a write waits for them (guest memory holds their buffers). */
const MAX_IN_FLIGHT = 8 << 20;

export class FileIo {
  /** Counters for tests and diagnostics. */
  readonly stats = { dataReads: 0, dataWrites: 0, readAhead: 0 };
  private readonly streams = new Map<number, Stream>();
  private readonly inFlight = new Set<Promise<void>>();
  private inFlightBytes = 0;
  /** Per file, the first data write that failed since its last fsync (as Linux keeps it per mapping). */
  private readonly writeErrors = new Map<number, Error>();
  /**
   * Volume blocks whose data write failed: their pointers carry the checksum of data they never got, so a read of
   * one is the lost write's EIO, not corruption (until the block is written again).
   */
  private readonly lostWrites = new Set<number>();

  constructor(
    private readonly dev: BlockDevice,
    private readonly map: BlockMap,
    private readonly pages: PageCache,
  ) {}

  /** Up to `length` bytes at `position`, in a new array or at the start of `into` (a view of it is returned). */
  async read(inode: Inode, position: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    if (position >= inode.size || length <= 0) return into ? into.subarray(0, 0) : new Uint8Array(0);
    const end = Math.min(inode.size, position + length);
    const first = Math.floor(position / BLOCK_SIZE);
    const last = Math.ceil(end / BLOCK_SIZE);
    const out = into ? into.subarray(0, end - position) : new Uint8Array(end - position);
    // Copies file block `fb` (a whole block's bytes) into its part of `out`.
    const place = (fb: number, block: Uint8Array) => {
      const from = Math.max(position, fb * BLOCK_SIZE);
      const to = Math.min(end, (fb + 1) * BLOCK_SIZE);
      out.set(block.subarray(from - fb * BLOCK_SIZE, to - fb * BLOCK_SIZE), from - position);
    };
    // Files larger than half the cache pass by it (a scan of a big file would only flush it, at a copy per page).
    const keep = inode.size <= (this.pages.capacityPages * BLOCK_SIZE) / 2;
    const followed = keep ? this.follow(inode.ino, first, last) : null;
    const stream = followed?.stream;
    for (let fb = first; fb < last; ) {
      const page = this.pages.get(inode.ino, fb);
      if (page) {
        place(fb, page);
        fb++;
        continue;
      }
      const ahead = stream?.inflight.find((r) => r.from <= fb && fb < r.to);
      if (ahead) {
        await ahead.done;
        if (this.pages.has(inode.ino, fb)) continue;
      }
      let missEnd = fb + 1;
      while (missEnd < last && !this.pages.has(inode.ino, missEnd)) missEnd++;
      await this.readBlocks(inode, fb, missEnd, (block, data) => {
        place(block, data);
        if (keep) this.pages.put(inode.ino, block, data);
      });
      fb = missEnd;
    }
    if (followed?.sequential) await this.readAhead(inode, followed.stream, last);
    return out;
  }

  /**
   * A small file was opened for reading (OPEN_AHEAD): ask the device for its blocks now, as readahead (the first
   * read waits for them instead of asking again). Nothing when its first block is cached or on its way.
   */
  async openAhead(inode: Inode): Promise<void> {
    const fileBlocks = Math.ceil(inode.size / BLOCK_SIZE);
    if (fileBlocks === 0 || fileBlocks > OPEN_AHEAD || fileBlocks * 2 > this.pages.capacityPages) return;
    if (this.pages.has(inode.ino, 0) || this.streams.get(inode.ino)?.inflight.some((r) => r.from === 0)) return;
    const { stream } = this.follow(inode.ino, 0, 0);
    stream.ahead = fileBlocks;
    await this.fetchAhead(inode, stream, 0, fileBlocks);
  }

  /** Notes a read of blocks [first, last): the file's stream, telling whether it continues the previous read. */
  private follow(ino: number, first: number, last: number): { stream: Stream; sequential: boolean } {
    let stream = this.streams.get(ino);
    this.streams.delete(ino);
    if (!stream) stream = { next: -1, ahead: 0, inflight: [] };
    this.streams.set(ino, stream);
    if (this.streams.size > STREAMS_KEPT) this.streams.delete(this.streams.keys().next().value!);
    const sequential = first === stream.next || (first < stream.next && last > stream.next);
    stream.next = last;
    return { stream, sequential };
  }

  /**
   * A sequential reader will want the blocks after `from` next: ask the device for them now, up to READ_AHEAD
   * blocks past the read, so the transfer overlaps the reader's round trip (the kernel's readahead, in the guest).
   * The map is looked up now, under the operation's lock; what arrives is cached only if the file's data did not
   * change meanwhile (page-cache.ts's epoch). Failures are left to the read that wants the blocks.
   */
  private async readAhead(inode: Inode, stream: Stream, from: number): Promise<void> {
    const fileBlocks = Math.ceil(inode.size / BLOCK_SIZE);
    const start = Math.max(from, stream.ahead);
    const end = Math.min(fileBlocks, from + READ_AHEAD);
    if (end - start < READ_AHEAD / 4) return;
    stream.ahead = end;
    await this.fetchAhead(inode, stream, start, end);
  }

  /** Starts reading file blocks [start, end) into the page cache, on `stream`'s list of what is on its way. */
  private async fetchAhead(inode: Inode, stream: Stream, start: number, end: number): Promise<void> {
    const ino = inode.ino;
    const epoch = this.pages.watch(ino);
    const buffer = this.dev.allocBuffer((end - start) * BLOCK_SIZE);
    const reads: Promise<void>[] = [];
    let mapped = true;
    try {
      await this.issueReads(inode, start, end, buffer, reads);
    } catch {
      // Let whatever was issued land, then give the buffer back (nothing cached: some blocks were never read);
      // the reader will look the blocks up itself and meet the error.
      mapped = false;
    }
    const done = Promise.allSettled(reads)
      .then((results) => {
        if (!mapped || results.some((r) => r.status === 'rejected') || this.pages.epoch(ino) !== epoch) return;
        for (let fb = start; fb < end; fb++) {
          if (!this.pages.has(ino, fb)) this.pages.put(ino, fb, buffer.subarray((fb - start) * BLOCK_SIZE, (fb - start + 1) * BLOCK_SIZE));
        }
        this.stats.readAhead += end - start;
      })
      .finally(() => {
        this.pages.unwatch(ino);
        this.dev.freeBuffer(buffer);
        stream.inflight = stream.inflight.filter((r) => r.done !== done);
      });
    stream.inflight.push({ from: start, to: end, done });
  }

  /** Reads file blocks [first, last) from the device and hands each to `take` (holes as zeros). */
  private async readBlocks(inode: Inode, first: number, last: number, take: (fb: number, data: Uint8Array) => void): Promise<void> {
    const buffer = this.dev.allocBuffer((last - first) * BLOCK_SIZE);
    try {
      // Every extent of the range is read at once (a fragmented file costs one round trip, not one per extent);
      // all of them are settled before the buffer is given back.
      const reads: Promise<void>[] = [];
      await this.issueReads(inode, first, last, buffer, reads);
      const failed = (await Promise.allSettled(reads)).find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      for (let fb = first; fb < last; fb++) take(fb, buffer.subarray((fb - first) * BLOCK_SIZE, (fb - first + 1) * BLOCK_SIZE));
    } finally {
      this.dev.freeBuffer(buffer);
    }
  }

  /** Looks up file blocks [first, last) and starts a device read per extent into `buffer` (holes zeroed). */
  private async issueReads(inode: Inode, first: number, last: number, buffer: Uint8Array, reads: Promise<void>[]): Promise<void> {
    await this.settled();
    for (let fb = first; fb < last; ) {
      const run = await this.map.lookupRun(inode, fb, last - fb);
      const slice = buffer.subarray((fb - first) * BLOCK_SIZE, (fb - first + run.count) * BLOCK_SIZE);
      if (run.phys) {
        const at = fb;
        reads.push(this.dev.read(run.phys * BLOCK_SIZE, slice).then(() => this.verify(inode, at, run, slice)));
        this.stats.dataReads++;
      } else {
        zero(slice);
      }
      fb += run.count;
    }
  }

  /** Zeroes the bytes of the last block past the end of file, before the file grows over them. */
  async zeroTail(inode: Inode, goal: number, checkpoint: WriteCheckpoint): Promise<void> {
    const within = inode.size % BLOCK_SIZE;
    if (within === 0) return;
    const fb = Math.floor(inode.size / BLOCK_SIZE);
    if (!(await this.map.lookup(inode, fb))) return;
    const buffer = this.dev.allocBuffer(BLOCK_SIZE);
    const writes: Promise<void>[] = [];
    try {
      await this.readPartial(inode, fb, buffer, 0, true);
      zero(buffer, within);
      await this.writeBlocks(inode, fb, buffer, inode.size, goal, checkpoint, writes);
    } finally {
      void Promise.all(writes).then(() => this.dev.freeBuffer(buffer));
    }
  }

  /**
   * Writes `data` at `position`, allocating as needed; grows inode.size run by run (the caller writes the inode).
   * `goal` is where a file without blocks should start.
   */
  async write(inode: Inode, position: number, data: Uint8Array, goal: number, checkpoint: WriteCheckpoint): Promise<void> {
    if (data.length === 0) return;
    if (position > inode.size) await this.zeroTail(inode, goal, checkpoint);
    const end = position + data.length;
    const first = Math.floor(position / BLOCK_SIZE);
    const last = Math.ceil(end / BLOCK_SIZE);
    const buffer = this.dev.allocBuffer((last - first) * BLOCK_SIZE);
    const writes: Promise<void>[] = [];
    try {
      // No zeroing: the data covers every byte but those of a partly written first and last block, which
      // readPartial fills whole (from the page cache, the device or as a hole's zeros).
      await this.readPartial(inode, first, buffer, 0, position % BLOCK_SIZE !== 0);
      if (last - 1 !== first || position % BLOCK_SIZE === 0) {
        await this.readPartial(inode, last - 1, buffer, (last - 1 - first) * BLOCK_SIZE, end % BLOCK_SIZE !== 0);
      }
      buffer.set(data, position - first * BLOCK_SIZE);
      await this.writeBlocks(inode, first, buffer, end, goal, checkpoint, writes);
    } finally {
      // The buffer is the device's until every run issued from it has landed (tracked promises never reject).
      void Promise.all(writes).then(() => this.dev.freeBuffer(buffer));
    }
    // Down to the bound, oldest first (waiting for all of them would leave the device idle while this domain
    // refills its queue).
    while (this.inFlightBytes > MAX_IN_FLIGHT) {
      this.dev.unplug?.();
      await this.inFlight.values().next().value;
    }
  }

  /**
   * Writes `buffer` (whole blocks) as file blocks from `first` on, run by run, each to blocks the map names with
   * the blocks' checksums (copies of committed blocks: block-map.ts); grows inode.size up to `end`. Each run's
   * write is pushed on `writes` when issued (the buffer is the device's until all have landed).
   */
  private async writeBlocks(inode: Inode, first: number, buffer: Uint8Array, end: number, goal: number, checkpoint: WriteCheckpoint, writes: Promise<void>[]): Promise<void> {
    const blocks = buffer.length / BLOCK_SIZE;
    const crcs = crc32cPieces(buffer, BLOCK_SIZE, new Uint32Array(blocks));
    for (let fb = first; fb < first + blocks; ) {
      await checkpoint();
      const from = fb - first;
      const run = await this.map.mapForWrite(inode, fb, first + blocks - fb, goal, (i) => crcs[from + i]);
      const at = from * BLOCK_SIZE;
      // Tracked at once: a checkpoint before the next run may commit, and must find this run's data in flight.
      for (let i = 0; i < run.count; i++) this.lostWrites.delete(run.phys + i);
      const write = this.dev.write(run.phys * BLOCK_SIZE, buffer.subarray(at, at + run.count * BLOCK_SIZE), { background: true });
      writes.push(this.track(inode.ino, write, run.phys, run.count));
      this.stats.dataWrites++;
      for (let i = 0; i < run.count; i++) {
        this.pages.update(inode.ino, fb + i, buffer.subarray(at + i * BLOCK_SIZE, at + (i + 1) * BLOCK_SIZE));
      }
      fb += run.count;
      inode.size = Math.max(inode.size, Math.min(end, fb * BLOCK_SIZE));
    }
  }

  /**
   * Data writes are not awaited by the write that issues them: the caller's round trip overlaps the transfer, and
   * they go to the device as background writes (sent on in runs: WriteOptions.background). They are waited for
   * where ordering needs them: before a commit (ordered mode), an fsync's flush, a lock given to another domain,
   * blocks freed, a failed attempt's retry, and any read of file data from the device here.
   * Resolves when the write has landed, failed or not. A failure is kept for the file's next fsync, and the file's
   * cached pages go: they hold bytes the device may not, and reads must show what the device has.
   */
  private track(ino: number, write: Promise<void>, phys: number, count: number): Promise<void> {
    const bytes = count * BLOCK_SIZE;
    this.inFlightBytes += bytes;
    const landed: Promise<void> = write
      .catch((error: unknown) => {
        if (!this.writeErrors.has(ino)) this.writeErrors.set(ino, error instanceof Error ? error : new Error(String(error)));
        for (let i = 0; i < count; i++) this.lostWrites.add(phys + i);
        this.pages.drop(ino);
      })
      .finally(() => {
        this.inFlightBytes -= bytes;
        this.inFlight.delete(landed);
      });
    this.inFlight.add(landed);
    return landed;
  }

  /** Resolves once every data write issued so far has landed, failed or not (fsync asks for failures). */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) {
      this.dev.unplug?.();
      await Promise.all(this.inFlight);
    }
  }

  /** Throws EIO, once, if a data write of file `ino` failed since the last call (fsync's report, as Linux gives it). */
  reportWriteError(ino: number): void {
    const error = this.writeErrors.get(ino);
    this.writeErrors.delete(ino);
    if (error) throw new IoError('EIO', `a data write of inode ${ino} failed: ${error.message}`);
  }

  /** The file is gone: an error nobody can fsync any more is forgotten. */
  forget(ino: number): void {
    this.writeErrors.delete(ino);
  }

  /** Reads file block `fb` into `buffer` at `at` (verified; a hole as zeros) when only part of it is overwritten. */
  private async readPartial(inode: Inode, fb: number, buffer: Uint8Array, at: number, partial: boolean): Promise<void> {
    if (!partial) return;
    const page = this.pages.get(inode.ino, fb);
    if (page) {
      buffer.set(page, at);
      return;
    }
    await this.readBlocks(inode, fb, fb + 1, (_, data) => buffer.set(data, at));
  }

  /** Checks each block of a mapped run, just read into `data`, against the crc its pointer carries. */
  private verify(inode: Inode, fb: number, run: MappedRun, data: Uint8Array): void {
    const sums = crc32cPieces(data, BLOCK_SIZE, new Uint32Array(run.count));
    for (let i = 0; i < run.count; i++) {
      const actual = sums[i];
      if (actual === run.crcs[i]) continue;
      if (this.lostWrites.has(run.phys + i)) {
        throw new IoError('EIO', `inode ${inode.ino}: file block ${fb + i} (volume block ${run.phys + i}) lost its data: the write to it failed`);
      }
      throw new CorruptionError(
        `inode ${inode.ino}: data checksum mismatch in file block ${fb + i} (volume block ${run.phys + i}): ` +
          `the pointer says crc32c ${crcHex(run.crcs[i])}, the block has ${crcHex(actual)}`,
      );
    }
  }
}
