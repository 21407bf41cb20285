import { performance } from 'node:perf_hooks';
import { high32, join64, low32, Op, RING_SLOTS } from './abi.js';

/**
 * The trace ABI: what `hvshare trace` records of each block request, in memory the toolstack shares with the
 * monitor, its I/O threads and the domain (as blktrace's per-CPU relay buffers, but per domain). Every writer and
 * the reader go through the codec below, so the layout is type-checked at each end.
 *
 * Two kinds of shared buffer:
 *  - the trace control word, one for the whole platform (createTraceControl): the bitmask of operations being
 *    traced (TRACE_OPS), 0 while nobody traces. It is the only thing a guest looks at before a request when
 *    nobody traces: one load and a branch.
 *  - one trace ring per domain (createTraceRing): a header, a table from request id to the record of the request
 *    in flight under that id (0: not traced), then TRACE_SLOTS records, reused round-robin. Each stage after the
 *    descriptor is posted looks the request up in that table: one load and a branch when it is not traced, and a
 *    request traced when tracing stopped still gets all its stamps.
 *
 * A record is written by the guest (who asked, what, entry, posting, doorbell, interrupt handler, wake-up) and
 * by whichever monitor thread answers the request (pick-up, backend done, response posted, vIRQ). Each side ORs
 * its part into PARTS when it has written its last stamp; the reader takes a record once both parts are in.
 * Everything here is a diagnostic: a guest can write anything into its own ring, so the monitor only bounds the
 * indices it follows, and the reader checks each record's sequence number before and after copying it.
 */

/** The nine stages of one request, in the order they happen. */
export const Stage = {
  /** The guest filesystem call (the guest agent's process) that the request is issued for began. */
  ENTERED: 0,
  /** blkfront wrote the descriptor and is about to publish the producer index (the hypercall). */
  POSTED: 1,
  /**
   * blkfront rang the monitor's doorbell (only when the monitor asked for it: it was going to sleep; absent too
   * when the monitor had picked the request up before the ring, as a monitor still polling does).
   */
  DOORBELL: 2,
  /** The monitor copied the descriptor out of the ring. */
  PICKED: 3,
  /** The backend finished the transfer (or the monitor had its answer: a flush done, a lock granted). */
  BACKEND_DONE: 4,
  /** The response is in the ring and the response producer index published. */
  RESPONSE_POSTED: 5,
  /** The monitor raised the domain's virtual interrupt (only when the guest armed it, event idx). */
  VIRQ: 6,
  /** The guest kernel's interrupt handler reaped the response (absent when the idle loop's poll reaped it). */
  IRQ_HANDLER: 7,
  /** The waiting process was woken: its continuation is the next thing the guest runs. */
  WOKEN: 8,
} as const;
export const STAGE_COUNT = 9;
/** Short names of the stages, as `hvshare trace` prints them (index = Stage value). */
export const STAGE_NAMES = ['syscall', 'posted', 'doorbell', 'picked', 'backend', 'response', 'virq', 'irq', 'woken'] as const;
export type StageName = (typeof STAGE_NAMES)[number];

/**
 * What one may trace, as bits of the control word: block operations (LOCK and UNLOCK are both `lock`), and `call`,
 * the host's calls into a domain's guest agent (a view's FUSE operations, the CLI's), recorded by the toolstack
 * with the guest's own stamps of when the call ran (agent-protocol.ts, AgentReply.span).
 */
export const TRACE_OPS = { read: 1, write: 2, flush: 4, lock: 8, call: 16 } as const;
export type TraceOpName = keyof typeof TRACE_OPS;
export const TRACE_OP_NAMES = Object.keys(TRACE_OPS) as TraceOpName[];

/** The TRACE_OPS bit of a block operation (0: an operation that is never traced). */
export function traceOpBit(op: number): number {
  switch (op) {
    case Op.READ:
      return TRACE_OPS.read;
    case Op.WRITE:
      return TRACE_OPS.write;
    case Op.FLUSH:
      return TRACE_OPS.flush;
    case Op.LOCK:
    case Op.UNLOCK:
      return TRACE_OPS.lock;
    default:
      return 0;
  }
}

/** A block operation's name in a trace (`unlock` for UNLOCK, traced under `lock`). */
export function traceOpName(op: number): string {
  switch (op) {
    case Op.READ:
      return 'read';
    case Op.WRITE:
      return 'write';
    case Op.FLUSH:
      return 'flush';
    case Op.LOCK:
      return 'lock';
    case Op.UNLOCK:
      return 'unlock';
    default:
      return `op ${op}`;
  }
}

/**
 * The one clock of every thread: microseconds since the epoch, from the process's time origin (shared by all
 * worker threads of a process) and the monotonic performance.now(). Resolution about 0.25 µs at today's epoch.
 */
export function traceNow(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

// ---- the control word -----------------------------------------------------------------------------------------
export const TRACE_CONTROL_WORDS = 4;
export const TraceControl = {
  /** TRACE_OPS bits being traced; 0: tracing is off. */
  OPS: 0,
} as const;

export function createTraceControl(): SharedArrayBuffer {
  return new SharedArrayBuffer(TRACE_CONTROL_WORDS * 4);
}

// ---- the per-domain ring (Int32 words; stamps are Float64 at even word offsets) ------------------------------
/** Records kept per domain; the oldest are overwritten. A power of two. */
export const TRACE_SLOTS = 4096;
const HEADER_WORDS = 16;
const TraceHeader = {
  /** Written by the guest: records begun so far (free-running). */
  PROD: 0,
} as const;
/** Per request id (0..RING_SLOTS-1): the sequence number of its record while traced and in flight, else 0. */
const BY_ID = HEADER_WORDS;
const RECORDS = BY_ID + RING_SLOTS;
const RECORD_WORDS = 32;
const Rec = {
  /** 1 + the record's number modulo 2^30: which request the slot holds now. */
  SEQ: 0,
  /** PART_GUEST | PART_MONITOR once each side wrote its last stamp. */
  PARTS: 1,
  OP: 2,
  FLAGS: 3,
  SECTOR_LO: 4,
  SECTOR_HI: 5,
  COUNT: 6,
  /** The guest process the request was issued for (0: the kernel's own work, such as a journal commit). */
  PID: 7,
  /** NAME_BYTES of ASCII: what that process was doing (the guest agent's operation), NUL-padded. */
  NAME: 8,
  /** STAGE_COUNT Float64 stamps in microseconds (traceNow); 0: the stage did not happen. */
  STAMPS: 12,
  /** The response status (negative errno). */
  STATUS: 30,
} as const;
const NAME_BYTES = 16;
export const PART_GUEST = 1;
export const PART_MONITOR = 2;
const PARTS_DONE = PART_GUEST | PART_MONITOR;
const SEQ_MODULUS = 2 ** 30;
export const TRACE_RING_BYTES = (RECORDS + TRACE_SLOTS * RECORD_WORDS) * 4;

export function createTraceRing(): SharedArrayBuffer {
  return new SharedArrayBuffer(TRACE_RING_BYTES);
}

/** A finished record as the reader copies it out. */
export interface TraceRecordFields {
  op: number;
  sector: number;
  count: number;
  status: number;
  pid: number;
  caller: string;
  /** STAGE_COUNT stamps in microseconds since the epoch; null for a stage that did not happen. */
  stamps: (number | null)[];
}

/** A domain's trace ring, as each side maps it. Records are numbered by sequence (1..2^30, wrapping). */
export class TraceRing {
  readonly words: Int32Array;
  private readonly stamps: Float64Array;
  private readonly bytes: Uint8Array;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.words = new Int32Array(buffer);
    this.stamps = new Float64Array(buffer);
    this.bytes = new Uint8Array(buffer);
  }

  private static base(seq: number): number {
    return RECORDS + ((seq - 1) & (TRACE_SLOTS - 1)) * RECORD_WORDS;
  }

  // ---- the guest's side ----

  /** Records begun so far (the guest's producer index). */
  produced(): number {
    return Atomics.load(this.words, TraceHeader.PROD) >>> 0;
  }

  /**
   * Begin the record of request `id`: numbered `produced() + 1`, published with the producer index, and entered
   * in the by-id table before the descriptor is (so the monitor finds it). Returns its sequence number.
   */
  begin(id: number, op: number, sector: number, count: number, pid: number, caller: string, entered: number): number {
    const n = this.produced();
    const seq = (n % SEQ_MODULUS) + 1;
    const base = TraceRing.base(seq);
    const w = this.words;
    Atomics.store(w, base + Rec.PARTS, 0);
    Atomics.store(w, base + Rec.SEQ, seq);
    w[base + Rec.OP] = op;
    w[base + Rec.FLAGS] = 0;
    w[base + Rec.SECTOR_LO] = low32(sector);
    w[base + Rec.SECTOR_HI] = high32(sector);
    w[base + Rec.COUNT] = count;
    w[base + Rec.PID] = pid;
    w[base + Rec.STATUS] = 0;
    const name = this.bytes.subarray((base + Rec.NAME) * 4, (base + Rec.NAME) * 4 + NAME_BYTES);
    name.fill(0);
    for (let i = 0; i < Math.min(caller.length, NAME_BYTES); i++) name[i] = caller.charCodeAt(i) & 0x7f;
    const s = (base + Rec.STAMPS) >> 1;
    this.stamps.fill(0, s, s + STAGE_COUNT);
    this.stamps[s + Stage.ENTERED] = entered;
    this.stamps[s + Stage.POSTED] = traceNow();
    Atomics.store(w, BY_ID + id, seq);
    Atomics.store(w, TraceHeader.PROD, (n + 1) | 0);
    return seq;
  }

  /** The record of request `id` in flight, or 0 (not traced; also for an id out of range): one load. */
  recordOf(id: number): number {
    return this.words[BY_ID + (id & (RING_SLOTS - 1))];
  }

  /** The guest reaped request `id`: its id may be reused (the record stays, reached by its sequence number). */
  forget(id: number): void {
    Atomics.store(this.words, BY_ID + (id & (RING_SLOTS - 1)), 0);
  }

  // ---- both sides ----

  /** Stamp `stage` of record `seq` now, unless the slot holds a newer record by now. */
  stamp(seq: number, stage: number): void {
    const base = TraceRing.base(seq);
    if (this.words[base + Rec.SEQ] === seq) this.stamps[((base + Rec.STAMPS) >> 1) + stage] = traceNow();
  }

  /**
   * Stamp `stage` of record `seq` now, unless the other side stamped `later` already: then `stage` stays absent.
   * The time is taken before the check, so a `later` stamped after the check is later still.
   */
  stampBefore(seq: number, stage: number, later: number): void {
    const now = traceNow();
    const base = TraceRing.base(seq);
    const s = (base + Rec.STAMPS) >> 1;
    if (this.words[base + Rec.SEQ] === seq && this.stamps[s + later] === 0) this.stamps[s + stage] = now;
  }

  /** The monitor has its answer to the request of record `seq` (BACKEND_DONE), with this status. */
  answered(seq: number, status: number): void {
    const base = TraceRing.base(seq);
    if (this.words[base + Rec.SEQ] !== seq) return;
    this.words[base + Rec.STATUS] = status;
    this.stamps[((base + Rec.STAMPS) >> 1) + Stage.BACKEND_DONE] = traceNow();
  }

  /** One side wrote its last stamp of record `seq` (PART_GUEST or PART_MONITOR). */
  finish(seq: number, part: number): void {
    const base = TraceRing.base(seq);
    if (Atomics.load(this.words, base + Rec.SEQ) === seq) Atomics.or(this.words, base + Rec.PARTS, part);
  }

  // ---- the reader's side ----

  /** The sequence number of the record numbered `n` (a producer index). */
  static seqOf(n: number): number {
    return (n % SEQ_MODULUS) + 1;
  }

  /**
   * Record `seq` if both sides finished it; 'pending' while one has not; 'gone' once its slot holds another
   * record (overwritten before it was read, or never written).
   */
  read(seq: number): TraceRecordFields | 'pending' | 'gone' {
    const base = TraceRing.base(seq);
    const w = this.words;
    if (Atomics.load(w, base + Rec.SEQ) !== seq) return 'gone';
    if ((Atomics.load(w, base + Rec.PARTS) & PARTS_DONE) !== PARTS_DONE) return 'pending';
    const s = (base + Rec.STAMPS) >> 1;
    const stamps: (number | null)[] = [];
    for (let i = 0; i < STAGE_COUNT; i++) stamps.push(this.stamps[s + i] || null);
    const name = this.bytes.subarray((base + Rec.NAME) * 4, (base + Rec.NAME) * 4 + NAME_BYTES);
    const end = name.indexOf(0);
    const record: TraceRecordFields = {
      op: w[base + Rec.OP],
      sector: join64(w[base + Rec.SECTOR_LO], w[base + Rec.SECTOR_HI]),
      count: w[base + Rec.COUNT] >>> 0,
      status: w[base + Rec.STATUS],
      pid: w[base + Rec.PID],
      caller: String.fromCharCode(...name.subarray(0, end < 0 ? NAME_BYTES : end)),
      stamps,
    };
    // Reused while being copied: the copy may mix two requests.
    return Atomics.load(w, base + Rec.SEQ) === seq ? record : 'gone';
  }
}
