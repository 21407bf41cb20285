import { performance } from 'node:perf_hooks';
import { high32, join64, Line, low32, Ring, SECTOR, Status, needsNotify, writeResponse } from './abi.js';
import type { BlockBackend } from './block-backend.js';
import { MAX_DOMAINS } from './domain-stats.js';
import { PART_MONITOR, Stage, type TraceRing } from './trace-abi.js';
import { VirtualInterruptController } from './virq.js';

/**
 * The monitor's I/O threads (as Xen's blkback kthreads or a vhost worker pool): the monitor thread still reads
 * every ring and validates every descriptor; when it has a backlog of large reads, or several busy domains, it
 * hands jobs of validated reads to a queue that its I/O threads (and the monitor itself, when it has nothing else
 * to do) take from. Whoever finishes a read posts the response and raises the interrupt, so the monitor never has
 * to wake up just to answer.
 *
 * Everything here lives in one SharedArrayBuffer the monitor shares with its I/O threads only (never with a
 * guest): the job queue and, per domain, the response producer index, the lock that serializes response
 * producers, the count of jobs in flight (the fence of removeDomain) and counters the monitor folds into its
 * statistics.
 */

// ---- layout of the pool's control buffer (Int32 words) ---------------------------------------------------------
const Q = {
  /** Jobs published by the monitor (free-running). */
  HEAD: 0,
  /** Jobs claimed by an executor (free-running). */
  CLAIM: 1,
  /** Bumped to wake sleeping I/O threads. */
  SEQ: 2,
  /** I/O threads about to sleep or sleeping. */
  SLEEPERS: 3,
  /** Non-zero: I/O threads exit. */
  STOP: 4,
  /** Non-zero: some per-domain counter of an I/O thread changed (the monitor folds them). */
  DIRTY: 5,
  /** I/O threads that have closed their files and are leaving. */
  EXITED: 6,
} as const;
const HEADER_WORDS = 16;

/** Per-domain words. */
export const Dom = {
  RSP_LOCK: 0,
  RSP_PROD: 1,
  INFLIGHT: 2,
  VIRQS: 3,
  ERRORS: 4,
  /** The errno of the last failed transfer an I/O thread counted in ERRORS (see attempt()). */
  LAST_ERRNO: 5,
} as const;
const DOM_WORDS = 8;
const DOM_BASE = HEADER_WORDS;

/** Job slot words: a header, then up to JOB_REQUESTS requests. */
const Job = {
  /** 0 = free, 1 = published (the producer may not reuse the slot until the claimer copied it out). */
  STATE: 0,
  DOMAIN: 1,
  VOLUME: 2,
  /** Requests in the job. */
  COUNT: 3,
  /** Non-zero: the requests are one contiguous run (one vectored transfer). */
  VECTORED: 4,
} as const;
const JOB_HEADER_WORDS = 5;
/** Words of one request of a job. */
const JobReq = { ID: 0, SECTOR_LO: 1, SECTOR_HI: 2, MEM_OFFSET: 3, COUNT: 4 } as const;
const JOB_REQ_WORDS = 5;
/** The most requests one job carries. */
export const JOB_REQUESTS = 16;
const JOB_WORDS = JOB_HEADER_WORDS + JOB_REQUESTS * JOB_REQ_WORDS;
/** At least every ring's worth of requests of a couple of domains. */
export const JOB_SLOTS = 512;
const JOB_BASE = DOM_BASE + MAX_DOMAINS * DOM_WORDS;
const CONTROL_WORDS = JOB_BASE + JOB_SLOTS * JOB_WORDS;

export function createPoolBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(CONTROL_WORDS * 4);
}

/** A domain as an executor of jobs sees it: its ring, interrupt page and memory. */
export interface PoolDomain {
  id: number;
  ring: Int32Array;
  vic: VirtualInterruptController;
  memory: Uint8Array;
  /** The domain's trace ring (trace-abi.ts): stamps of the requests traced. */
  trace: TraceRing;
}

/**
 * Validated reads of one domain and volume, handed over together (a job copied out of the queue, or being built
 * to publish): request ids[i] reads counts[i] sectors from sectors[i] into the domain's memory at memOffsets[i].
 * Writes always stay on the monitor thread: pwrites to one image serialize on its inode lock, so a second writer
 * only adds contention (measured).
 */
export interface PoolJob {
  domain: number;
  volume: number;
  count: number;
  /** One contiguous run: a single vectored transfer. */
  vectored: boolean;
  ids: Int32Array;
  sectors: Float64Array;
  counts: Uint32Array;
  memOffsets: Uint32Array;
}

/**
 * Both ends of the pool's control buffer. The monitor thread is the only producer of jobs; the monitor and every
 * I/O thread are consumers and response producers.
 */
export class PoolControl {
  readonly words: Int32Array;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.words = new Int32Array(buffer);
  }

  // ---- per domain --------------------------------------------------------------------------------------------

  resetDomain(id: number, rspProd: number): void {
    const base = DOM_BASE + id * DOM_WORDS;
    for (let i = 0; i < DOM_WORDS; i++) Atomics.store(this.words, base + i, 0);
    Atomics.store(this.words, base + Dom.RSP_PROD, rspProd | 0);
  }

  rspProd(id: number): number {
    return Atomics.load(this.words, DOM_BASE + id * DOM_WORDS + Dom.RSP_PROD) >>> 0;
  }

  inFlight(id: number): number {
    return Atomics.load(this.words, DOM_BASE + id * DOM_WORDS + Dom.INFLIGHT);
  }

  /** Take (and clear) an I/O-thread counter of a domain, when any changed. */
  takeCounter(id: number, which: number): number {
    return Atomics.exchange(this.words, DOM_BASE + id * DOM_WORDS + which, 0);
  }

  takeDirty(): boolean {
    return Atomics.load(this.words, Q.DIRTY) !== 0 && Atomics.exchange(this.words, Q.DIRTY, 0) !== 0;
  }

  private bump(id: number, which: number): void {
    Atomics.add(this.words, DOM_BASE + id * DOM_WORDS + which, 1);
    Atomics.store(this.words, Q.DIRTY, 1);
  }

  /**
   * Post a response on a domain's ring, whichever thread finished the request: producers are serialized by the
   * domain's response lock (a few stores long). The producer index is published with a sequentially consistent
   * store before RSP_EVENT is read, and the guest stores RSP_EVENT before it re-reads RSP_PROD when it arms, so
   * either the guest sees the response or the producer sees the armed event (no lost interrupt).
   * Returns true when it raised the interrupt.
   */
  respond(d: PoolDomain, id: number, status: number, lo = 0, hi = 0, flags = 0): boolean {
    const w = this.words;
    const lock = DOM_BASE + d.id * DOM_WORDS + Dom.RSP_LOCK;
    for (let spins = 0; Atomics.compareExchange(w, lock, 0, 1) !== 0; spins++) {
      // The holder runs a handful of stores; if it was preempted, let it run.
      if (spins > 64) Atomics.wait(w, lock, 1, 0.05);
    }
    const old = Atomics.load(w, lock + (Dom.RSP_PROD - Dom.RSP_LOCK)) >>> 0;
    const ring = d.ring;
    const traced = d.trace.recordOf(id);
    if (traced !== 0) d.trace.answered(traced, status);
    writeResponse(ring, old, id, status, lo, hi, flags);
    const prod = (old + 1) >>> 0;
    Atomics.store(w, lock + (Dom.RSP_PROD - Dom.RSP_LOCK), prod | 0);
    if (traced !== 0) d.trace.stamp(traced, Stage.RESPONSE_POSTED);
    Atomics.store(ring, Ring.RSP_PROD, prod | 0);
    const notify = needsNotify(Atomics.load(ring, Ring.RSP_EVENT) >>> 0, prod, old);
    Atomics.store(w, lock, 0);
    if (notify) {
      if (traced !== 0) d.trace.stamp(traced, Stage.VIRQ);
      d.vic.raise(Line.BLKIF);
    }
    if (traced !== 0) d.trace.finish(traced, PART_MONITOR);
    return notify;
  }

  // ---- the job queue -----------------------------------------------------------------------------------------

  /** Jobs published and not yet claimed. */
  queued(): number {
    return (Atomics.load(this.words, Q.HEAD) - Atomics.load(this.words, Q.CLAIM)) | 0;
  }

  /**
   * Monitor thread only: publish a validated transfer. Returns false when the queue is full (the caller runs it
   * inline). The domain's in-flight count is raised before the job is visible, so a fence that sees zero in flight
   * knows no executor can still touch the domain.
   */
  publish(job: PoolJob): boolean {
    const w = this.words;
    const head = Atomics.load(w, Q.HEAD);
    const slot = JOB_BASE + ((head >>> 0) % JOB_SLOTS) * JOB_WORDS;
    if (Atomics.load(w, slot + Job.STATE) !== 0) return false;
    Atomics.add(w, DOM_BASE + job.domain * DOM_WORDS + Dom.INFLIGHT, 1);
    w[slot + Job.DOMAIN] = job.domain;
    w[slot + Job.VOLUME] = job.volume;
    w[slot + Job.COUNT] = job.count;
    w[slot + Job.VECTORED] = job.vectored ? 1 : 0;
    for (let i = 0; i < job.count; i++) {
      const r = slot + JOB_HEADER_WORDS + i * JOB_REQ_WORDS;
      w[r + JobReq.ID] = job.ids[i];
      w[r + JobReq.SECTOR_LO] = low32(job.sectors[i]);
      w[r + JobReq.SECTOR_HI] = high32(job.sectors[i]);
      w[r + JobReq.MEM_OFFSET] = job.memOffsets[i];
      w[r + JobReq.COUNT] = job.counts[i];
    }
    // The slot's words are published by these sequentially consistent stores (the claimer loads them first).
    Atomics.store(w, slot + Job.STATE, 1);
    Atomics.store(w, Q.HEAD, (head + 1) | 0);
    // Dekker pair with sleep(): the sleeper counts itself before re-checking HEAD; we publish HEAD before reading
    // the count. One of the two sees the other.
    if (Atomics.load(w, Q.SLEEPERS) > 0) {
      Atomics.add(w, Q.SEQ, 1);
      Atomics.notify(w, Q.SEQ, 1);
    }
    return true;
  }

  /** Claim the oldest published job into `into`; false when there is none. */
  claim(into: PoolJob): boolean {
    const w = this.words;
    for (;;) {
      const claim = Atomics.load(w, Q.CLAIM);
      if (claim === Atomics.load(w, Q.HEAD)) return false;
      if (Atomics.compareExchange(w, Q.CLAIM, claim, (claim + 1) | 0) !== claim) continue;
      const slot = JOB_BASE + ((claim >>> 0) % JOB_SLOTS) * JOB_WORDS;
      // Its words were stored before HEAD was (sequentially consistent), so they are all visible here.
      into.domain = w[slot + Job.DOMAIN];
      into.volume = w[slot + Job.VOLUME];
      into.count = w[slot + Job.COUNT];
      into.vectored = w[slot + Job.VECTORED] !== 0;
      for (let i = 0; i < into.count; i++) {
        const r = slot + JOB_HEADER_WORDS + i * JOB_REQ_WORDS;
        into.ids[i] = w[r + JobReq.ID];
        into.sectors[i] = join64(w[r + JobReq.SECTOR_LO], w[r + JobReq.SECTOR_HI]);
        into.memOffsets[i] = w[r + JobReq.MEM_OFFSET];
        into.counts[i] = w[r + JobReq.COUNT];
      }
      Atomics.store(w, slot + Job.STATE, 0);
      return true;
    }
  }

  /**
   * Perform a job's reads from the backend into the domain's memory (all validated by the monitor) and post each
   * response. `onMonitor`: the caller is the monitor thread and counts errors and interrupts itself; an I/O thread
   * leaves them in the domain's words for the monitor to fold.
   */
  run(job: PoolJob, d: PoolDomain, backend: BlockBackend, onMonitor: { errors(n: number, errno: number): void; virqs(n: number): void } | null): void {
    const view = (i: number) => d.memory.subarray(job.memOffsets[i], job.memOffsets[i] + job.counts[i] * SECTOR);
    const statuses = this.statuses;
    if (job.vectored) {
      const views: Uint8Array[] = [];
      for (let i = 0; i < job.count; i++) views.push(view(i));
      statuses.fill(this.attempt(() => backend.readv(job.sectors[0] * SECTOR, views)), 0, job.count);
    } else {
      for (let i = 0; i < job.count; i++) statuses[i] = this.attempt(() => backend.read(job.sectors[i] * SECTOR, view(i)));
    }
    for (let i = 0; i < job.count; i++) {
      const raised = this.respond(d, job.ids[i], statuses[i]);
      if (onMonitor) {
        if (statuses[i] !== Status.OK) onMonitor.errors(1, this.lastErrno);
        if (raised) onMonitor.virqs(1);
      } else {
        if (statuses[i] !== Status.OK) {
          // Before the count the monitor folds it with.
          Atomics.store(this.words, DOM_BASE + d.id * DOM_WORDS + Dom.LAST_ERRNO, this.lastErrno);
          this.bump(d.id, Dom.ERRORS);
        }
        if (raised) this.bump(d.id, Dom.VIRQS);
      }
    }
  }

  private readonly statuses = new Int32Array(JOB_REQUESTS);

  /** Status.OK, or Status.EIO when the transfer threw (its errno kept in lastErrno: the event log wants it). */
  private attempt(transfer: () => void): number {
    try {
      transfer();
      return Status.OK;
    } catch (err) {
      const errno = (err as NodeJS.ErrnoException).errno;
      this.lastErrno = typeof errno === 'number' ? Math.abs(errno) : Math.abs(Status.EIO);
      return Status.EIO;
    }
  }

  private lastErrno = 0;

  /** A claimed job is done: the last touch of the domain's pages is over (the fence of removeDomain). */
  finished(job: PoolJob): void {
    Atomics.sub(this.words, DOM_BASE + job.domain * DOM_WORDS + Dom.INFLIGHT, 1);
  }

  /** I/O thread: sleep until a job may be there (or the pool stops). */
  sleep(): void {
    const w = this.words;
    Atomics.add(w, Q.SLEEPERS, 1);
    const seq = Atomics.load(w, Q.SEQ);
    if (this.queued() === 0 && !this.stopped()) Atomics.wait(w, Q.SEQ, seq);
    Atomics.sub(w, Q.SLEEPERS, 1);
  }

  stop(): void {
    Atomics.store(this.words, Q.STOP, 1);
    Atomics.add(this.words, Q.SEQ, 1);
    Atomics.notify(this.words, Q.SEQ);
  }

  /** I/O thread: its files are closed, it is leaving. */
  exited(): void {
    Atomics.add(this.words, Q.EXITED, 1);
  }

  /** Monitor: wait (bounded) until `threads` I/O threads have left. */
  awaitExit(threads: number, timeoutMs = 2000): void {
    const deadline = performance.now() + timeoutMs;
    while (Atomics.load(this.words, Q.EXITED) < threads && performance.now() < deadline) Atomics.wait(this.words, Q.STOP, 1, 0.1);
  }

  stopped(): boolean {
    return Atomics.load(this.words, Q.STOP) !== 0;
  }
}

export function emptyJob(): PoolJob {
  return {
    domain: 0,
    volume: 0,
    count: 0,
    vectored: false,
    ids: new Int32Array(JOB_REQUESTS),
    sectors: new Float64Array(JOB_REQUESTS),
    counts: new Uint32Array(JOB_REQUESTS),
    memOffsets: new Uint32Array(JOB_REQUESTS),
  };
}
