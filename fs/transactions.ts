/**
 * Transactions of one filesystem instance: admission to the log, begin and end of an operation, group commit
 * through the instance's own journal (journal.ts).
 *
 * Changes collect in one running transaction: the dirty blocks of the block cache, whole operations only (an
 * operation that fails is undone in memory by the cache). It is committed on fsync, when it is half full, at
 * most `commitIntervalMs` after it started, before a lock that covers any of its blocks is given up (the journal
 * rule, per lock: lock-client.ts asks through writeBack), and at unmount. Since every metadata block is covered
 * by exactly one lock and an exclusive lock is given up only after the commit wrote the blocks home and cleared
 * the log (on an ordered device: after those writes were issued, ahead of the release), a block is in one
 * journal at most, but for the crash window journal.ts describes (records carry tags for it).
 */
import { IoError } from './block-device.js';
import type { Allocator } from './allocator.js';
import type { BlockCache } from './block-cache.js';
import type { Journal } from './journal.js';
import { resealBlock } from './layout.js';

/** Journal blocks an operation step may dirty at most; a transaction with less room left commits first. */
const STEP_RESERVE = 32;

export class Transactions {
  private timer: NodeJS.Timeout | null = null;
  /** Set when a commit failed: the instance cannot go on (what is on disk is the last commit). */
  failure: Error | null = null;
  /** The last commit issued on an ordered device, until it landed (see issue()). */
  private landing: Promise<void> | null = null;

  constructor(
    private readonly cache: BlockCache,
    private readonly journal: Journal,
    private readonly allocator: Allocator,
    private readonly commitIntervalMs: number,
    /** Runs a commit as an operation of the instance (the timer's). */
    private readonly schedule: (commit: () => Promise<void>) => void,
    /** The tag of the next record: the lock service's change epoch as this instance last saw it (journal.ts). */
    private readonly tag: () => number,
    /**
     * Waits for the file data written so far to land (ordered mode: data before the commit record that names it
     * and its checksums). The journal's commit then writes behind a barrier, which makes what landed durable
     * before the record: a record never outlives the data its pointers' checksums describe.
     */
    private readonly dataSettled: () => Promise<void>,
  ) {}

  get stats() {
    return this.journal.stats;
  }

  /** Admits an operation that may change the volume: commits first if it might not fit. */
  async begin(): Promise<void> {
    if (this.cache.dirtyCount + STEP_RESERVE > this.journal.capacity) await this.issue();
    this.cache.beginOp();
  }

  /** Ends an operation; a failed one is undone in memory. A transaction half full commits. */
  async end(failed: boolean): Promise<void> {
    this.cache.endOp(failed);
    if (failed) return;
    if (this.cache.dirtyCount * 2 > this.journal.capacity) await this.issue();
    this.startTimer();
  }

  /** Inside an operation: commit what is done so far if room is short (`consistent` makes the state whole). */
  async checkpoint(consistent: () => Promise<void>): Promise<void> {
    if (this.cache.dirtyCount + STEP_RESERVE <= this.journal.capacity) return;
    await consistent();
    this.cache.endOp(false);
    await this.issue();
    this.cache.beginOp();
  }

  /** Commits the running transaction through this instance's journal; resolves once every commit landed. */
  async commit(): Promise<void> {
    await this.issue();
    await this.landed();
  }

  /**
   * Commits the running transaction, resolving once its writes are ordered before anything issued after it: on an
   * ordered device (OrderedDevice) as soon as they are issued, so a lock released next passes on behind them in
   * the same round trip; elsewhere once they landed. A commit that fails after that fails the instance, and
   * landed() (every commit(), so fsync, sync and unmount) reports it.
   */
  async issue(): Promise<void> {
    this.stopTimer();
    if (this.cache.dirtyCount === 0) return;
    this.throwIfFailed();
    // Data first (ordered mode). One that failed is fsync's EIO to report, not the journal's: the instance goes on.
    // On an ordered device the data writes issued so far are ahead of the commit's barrier already.
    if (!this.journal.ordered) await this.dataSettled();
    const blocks = this.cache.dirtyBlocks();
    for (const { data } of blocks) resealBlock(data);
    // The journal copies the blocks before it issues anything: the cache may change them once this returns.
    const writing = this.journal.commit(blocks, this.tag()).catch((error: unknown) => {
      this.failure ??= error instanceof Error ? error : new Error(String(error));
    });
    if (this.journal.ordered) this.landing = writing;
    else await writing;
    this.throwIfFailed();
    this.cache.markAllClean();
    this.allocator.transactionCommitted();
  }

  /** Resolves once every commit issued so far landed; throws if one failed. */
  async landed(): Promise<void> {
    const landing = this.landing;
    if (landing) {
      await landing;
      if (this.landing === landing) this.landing = null;
    }
    this.throwIfFailed();
  }

  /** Commits if the running transaction holds a block covered by lock `name` (ordered as issue() says). */
  async writeBack(name: number): Promise<void> {
    if (this.cache.hasDirty(name)) await this.issue();
  }

  private throwIfFailed(): void {
    if (this.failure) throw new IoError('EIO', `commit failed: ${this.failure.message}`);
  }

  stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private startTimer(): void {
    if (this.timer || this.commitIntervalMs <= 0 || this.cache.dirtyCount === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.schedule(() => this.commit());
    }, this.commitIntervalMs);
    this.timer.unref?.();
  }
}
