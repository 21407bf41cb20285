import { setTimeout as sleep } from 'node:timers/promises';
import type { CallRecord, TraceBatch, TraceRecord } from './control-protocol.js';
import { Stage, TRACE_OPS, TRACE_SLOTS, TraceControl, TraceRing, traceOpName, type TraceOpName } from './trace-abi.js';
import type { DomainHandle } from './toolstack.js';

/** The most records one read hands out (the client reads again at once when it got this many). */
const MAX_BATCH = 5000;
/** How long a stop waits for the requests in flight to finish their records before the last read. */
const STOP_GRACE_MS = 50;

/** Reads one domain's trace ring from where tracing started: records both sides finished, in order begun. */
class DomainTraceReader {
  private readonly ring: TraceRing;
  /** The producer index read up to. */
  private next: number;
  /** Records begun but not finished when last looked at, by sequence number. */
  private pending: number[] = [];

  constructor(
    readonly domain: string,
    readonly buffer: SharedArrayBuffer,
  ) {
    this.ring = new TraceRing(buffer);
    this.next = this.ring.produced();
  }

  /** Move finished records into `out` (at most `room`); returns how many were lost (overwritten before read). */
  drain(out: TraceRecord[], room: number): number {
    let lost = 0;
    const produced = this.ring.produced();
    const behind = (produced - this.next) >>> 0;
    if (behind > TRACE_SLOTS) {
      lost += behind - TRACE_SLOTS;
      this.next = (produced - TRACE_SLOTS) >>> 0;
    }
    for (; this.next !== produced; this.next = (this.next + 1) >>> 0) this.pending.push(TraceRing.seqOf(this.next));
    const still: number[] = [];
    for (const seq of this.pending) {
      if (out.length >= room) {
        still.push(seq);
        continue;
      }
      const record = this.ring.read(seq);
      if (record === 'pending') still.push(seq);
      else if (record === 'gone') lost++;
      else out.push({ domain: this.domain, ...record, op: traceOpName(record.op) });
    }
    // A record never finished (its domain died, or a lock that waits longer than TRACE_SLOTS requests) is lost
    // once its slot is reused.
    this.pending = still;
    return lost;
  }
}

/**
 * One `hvshare trace` at a time on a running platform: it switches tracing on (the platform's control word),
 * reads the chosen domains' trace rings, and switches tracing off when stopped or when its client disconnects.
 */
export class TraceSession {
  private readonly readers = new Map<string, DomainTraceReader>();
  private lost = 0;
  private stopped = false;

  private constructor(
    private readonly control: Int32Array,
    private readonly domains: () => DomainHandle[],
    readonly names: string[],
    readonly ops: TraceOpName[],
  ) {}

  /** Start tracing `ops` of the domains named (all when null); the caller checked the names and ops. */
  static start(control: SharedArrayBuffer, domains: () => DomainHandle[], names: string[] | null, ops: TraceOpName[]): TraceSession {
    const chosen = names ?? domains().map((d) => d.name);
    const session = new TraceSession(new Int32Array(control), domains, chosen, ops);
    session.follow();
    // Calls kept from a trace before this one (answered after it stopped reading) are not this trace's.
    for (const d of domains()) d.takeCalls();
    Atomics.store(session.control, TraceControl.OPS, ops.reduce((mask, op) => mask | TRACE_OPS[op], 0));
    return session;
  }

  /** A reader per chosen domain, anew for a domain restarted since (it has a new ring). */
  private follow(): void {
    for (const d of this.domains()) {
      if (!this.names.includes(d.name) || !d.pages.trace) continue;
      if (this.readers.get(d.name)?.buffer !== d.pages.trace) this.readers.set(d.name, new DomainTraceReader(d.name, d.pages.trace));
    }
  }

  /**
   * The records finished since the last read, oldest first per domain, the agent calls answered meanwhile (when
   * `call` is traced: the toolstack keeps them per domain), and how many of either were lost meanwhile.
   */
  read(): TraceBatch {
    this.follow();
    const records: TraceRecord[] = [];
    for (const reader of this.readers.values()) this.lost += reader.drain(records, MAX_BATCH);
    records.sort((a, b) => (a.stamps[Stage.POSTED] ?? 0) - (b.stamps[Stage.POSTED] ?? 0));
    const calls: CallRecord[] = [];
    for (const d of this.domains()) {
      // Every domain's calls are kept while `call` is traced: those of domains not chosen are dropped here.
      const taken = d.takeCalls();
      if (!this.names.includes(d.name)) continue;
      calls.push(...taken.calls);
      this.lost += taken.lost;
    }
    calls.sort((a, b) => a.sent - b.sent);
    const lost = this.lost;
    this.lost = 0;
    return { records, calls, lost };
  }

  /** Switch tracing off; the records finished meanwhile are the last batch. */
  async stop(): Promise<TraceBatch> {
    if (this.stopped) return { records: [], calls: [], lost: 0 };
    this.stopped = true;
    Atomics.store(this.control, TraceControl.OPS, 0);
    await sleep(STOP_GRACE_MS);
    return this.read();
  }
}
