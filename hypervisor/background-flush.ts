import { Worker } from 'node:worker_threads';

/** Words of a background flusher's control buffer (shared by the monitor thread and the flush thread only). */
export const FlushWord = {
  /** Tickets asked for so far (the monitor bumps it to ask for an fdatasync of every write completed before). */
  REQUESTED: 0,
  /** The last ticket whose fdatasync completed (every smaller one completed too). */
  DONE: 1,
  /** Non-zero once an fdatasync failed. */
  FAILED: 2,
  /** Non-zero: the flush thread leaves. */
  STOP: 3,
  /** Non-zero: the flush thread holds its next fdatasync until it is zero again (tests of the ordering). */
  GATE: 4,
} as const;
const WORDS = 8;

export interface FlushWorkerData {
  path: string;
  words: SharedArrayBuffer;
  doorbell: SharedArrayBuffer;
}

/**
 * An fdatasync of a volume's image that the monitor starts and does not wait for: a thread of its own runs it and
 * rings the monitor's doorbell when it completed (flush-worker.ts). Tickets are numbered from 1 and complete in
 * order; one fdatasync may complete several tickets at once.
 */
export class BackgroundFlush {
  readonly words = new Int32Array(new SharedArrayBuffer(WORDS * 4));
  private readonly worker: Worker;

  constructor(path: string, doorbell: SharedArrayBuffer) {
    const data: FlushWorkerData = { path, words: this.words.buffer as SharedArrayBuffer, doorbell };
    this.worker = new Worker(new URL('./flush-worker.js', import.meta.url), { workerData: data });
    this.worker.unref();
  }

  /** Asks for an fdatasync of every write completed so far; returns its ticket. */
  request(): number {
    const ticket = Atomics.add(this.words, FlushWord.REQUESTED, 1) + 1;
    Atomics.notify(this.words, FlushWord.REQUESTED);
    return ticket;
  }

  /** True once `ticket`'s fdatasync completed. */
  completed(ticket: number): boolean {
    return Atomics.load(this.words, FlushWord.DONE) >= ticket;
  }

  /** Blocks until `ticket`'s fdatasync completed. */
  waitFor(ticket: number): void {
    for (let done = Atomics.load(this.words, FlushWord.DONE); done < ticket; done = Atomics.load(this.words, FlushWord.DONE)) {
      Atomics.wait(this.words, FlushWord.DONE, done);
    }
  }

  get failed(): boolean {
    return Atomics.load(this.words, FlushWord.FAILED) !== 0;
  }

  /** Holds (true) or lets go (false) the next fdatasync: for tests that look at the image meanwhile. */
  hold(held: boolean): void {
    Atomics.store(this.words, FlushWord.GATE, held ? 1 : 0);
    Atomics.notify(this.words, FlushWord.GATE);
  }

  /** The thread leaves once its current fdatasync is done. */
  close(): void {
    Atomics.store(this.words, FlushWord.STOP, 1);
    Atomics.store(this.words, FlushWord.GATE, 0);
    Atomics.notify(this.words, FlushWord.GATE);
    Atomics.add(this.words, FlushWord.REQUESTED, 1);
    Atomics.notify(this.words, FlushWord.REQUESTED);
  }
}
