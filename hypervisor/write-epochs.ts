import type { BlockBackend } from './block-backend.js';
import type { BackgroundFlush } from './background-flush.js';

/**
 * Held bytes past which a write waits for the flushes ahead of it (back-pressure instead of unbounded memory).
 */
export const HELD_BYTES_LIMIT = 4 * 1024 * 1024;

interface HeldWrite {
  position: number;
  data: Uint8Array;
}

/** Writes that wait for one flush: `ticket` is that flush's, 0 while it is not asked for yet. */
interface Epoch {
  ticket: number;
  writes: HeldWrite[];
}

/**
 * Write barriers without waiting, as old Linux barriers and SCSI ordered tags gave: a volume's image in the
 * monitor's hands, ordered by epochs.
 *
 * A barrier write means: every write completed before it is durable before it reaches the image. It is taken at
 * once (the guest is answered) and starts a background fdatasync of the image (background-flush.ts); the barrier
 * write and every later write to the volume, whichever domain sends it, are held in the monitor's memory, in
 * order, until that flush completed; then they are written to the image. A barrier that comes while writes are
 * held opens a new epoch: its flush is asked for once the epoch before it was written to the image, so epochs
 * reach the image in order, each after everything before it is durable. A crash of the whole process therefore
 * keeps a prefix of the epochs plus any part of the last one written, as a disk's volatile cache with ordered
 * tags would.
 *
 * Reads see the held writes (laid over what the image holds), so every domain reads what was answered as
 * written. FLUSH keeps its meaning: flush() writes every held epoch out (waiting for each one's flush) and then
 * fdatasyncs, so an fsync is durable when answered; a discard and close do the same first. Past HELD_BYTES_LIMIT
 * held, a write waits for the epochs ahead of it.
 *
 * Without a background flusher (a read-only image, or a monitor run without threads) a barrier is a flush
 * followed by the write, the same order with waiting.
 */
export class WriteEpochs implements BlockBackend {
  private readonly epochs: Epoch[] = [];
  private heldBytes = 0;
  /** Counters for tests and diagnostics. */
  readonly stats = { barriers: 0, heldWrites: 0, waits: 0 };

  constructor(
    readonly image: BlockBackend,
    private readonly flusher: BackgroundFlush | undefined,
    private readonly heldLimit = HELD_BYTES_LIMIT,
  ) {}

  get sizeBytes(): number {
    return this.image.sizeBytes;
  }

  get readOnly(): boolean {
    return this.image.readOnly;
  }

  /** True while writes wait in memory for a flush. */
  get holding(): boolean {
    return this.epochs.length > 0;
  }

  /** True when the first epoch's flush completed and its writes can go to the image (progress() does it). */
  get ready(): boolean {
    const first = this.epochs[0];
    return first !== undefined && !this.flusher!.failed && this.flusher!.completed(first.ticket);
  }

  read(position: number, into: Uint8Array): void {
    this.image.read(position, into);
    if (this.holding) this.overlay(position, into);
  }

  readv(position: number, into: Uint8Array[]): void {
    this.image.readv(position, into);
    if (!this.holding) return;
    for (const view of into) {
      this.overlay(position, view);
      position += view.length;
    }
  }

  write(position: number, from: Uint8Array): void {
    if (this.holding) this.hold(position, from);
    else this.image.write(position, from);
  }

  writev(position: number, from: Uint8Array[]): void {
    if (!this.holding) return this.image.writev(position, from);
    for (const view of from) {
      this.hold(position, view);
      position += view.length;
    }
  }

  /** Every write completed before this one is durable before this one reaches the image; taken at once. */
  writeBarrier(position: number, from: Uint8Array): void {
    this.stats.barriers++;
    if (!this.flusher) return this.image.writeBarrier(position, from);
    this.progress();
    this.epochs.push({ ticket: this.holding ? 0 : this.flusher.request(), writes: [] });
    this.hold(position, from);
  }

  /**
   * Writes to the image every epoch whose flush completed, in order, and asks for the flush of the next one.
   * Returns true when it wrote anything. The monitor calls it whenever it runs (a failed flush stops it).
   */
  progress(): boolean {
    let wrote = false;
    while (this.ready) {
      const epoch = this.epochs.shift()!;
      for (const w of epoch.writes) {
        this.image.write(w.position, w.data);
        this.heldBytes -= w.data.length;
      }
      wrote = true;
      const next = this.epochs[0];
      if (next) next.ticket = this.flusher!.request();
    }
    return wrote;
  }

  /** Writes every held epoch to the image, in order, waiting for each one's flush. */
  settle(): void {
    while (this.holding) {
      this.stats.waits++;
      this.flusher!.waitFor(this.epochs[0].ticket);
      // The held writes stay held: nothing after a failed flush may reach the image, and every FLUSH fails.
      if (this.flusher!.failed) throw new Error('a background flush of the image failed');
      this.progress();
    }
  }

  flush(): void {
    this.settle();
    this.image.flush();
  }

  discard(position: number, length: number): void {
    this.settle();
    this.image.discard(position, length);
  }

  close(): void {
    this.settle();
    this.flusher?.close();
    this.image.close();
  }

  private hold(position: number, from: Uint8Array): void {
    this.epochs[this.epochs.length - 1].writes.push({ position, data: from.slice() });
    this.heldBytes += from.length;
    this.stats.heldWrites++;
    if (this.heldBytes > this.heldLimit) {
      // Back-pressure: the writer waits for the epochs ahead of it instead of the monitor's memory growing.
      this.settle();
    }
  }

  /** Lays the held writes that overlap [position, position + into.length) over it, oldest first. */
  private overlay(position: number, into: Uint8Array): void {
    const end = position + into.length;
    for (const epoch of this.epochs) {
      for (const { position: at, data } of epoch.writes) {
        const from = Math.max(at, position);
        const to = Math.min(at + data.length, end);
        if (from < to) into.set(data.subarray(from - at, to - at), from - position);
      }
    }
  }
}
