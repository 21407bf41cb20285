import { AsyncLocalStorage } from 'node:async_hooks';
import { createTraceControl, createTraceRing, PART_GUEST, Stage, TraceControl, TraceRing, traceNow, traceOpBit } from '../hypervisor/trace-abi.js';
import type { AgentRequest } from './agent-protocol.js';

/** The guest process a request is issued for, and when its filesystem call began. */
interface Caller {
  pid: number;
  name: string;
  entered: number;
}

/**
 * The guest's side of `hvshare trace` (hypervisor/trace-abi.ts): which process a block request is issued for,
 * and the stamps only the guest sees (the call entering the filesystem, the descriptor posted, the doorbell, the
 * interrupt handler, the process woken). While nobody traces, the guest looks at the shared control word once
 * per agent call and once per request, and at its by-id table once per completion.
 *
 * The process a request belongs to follows the agent call through its awaits (AsyncLocalStorage), only while
 * tracing: the storage's hooks are switched off again at the first call after tracing stopped.
 */
export class TraceFront {
  private readonly control: Int32Array;
  private readonly ring: TraceRing;
  private readonly callers = new AsyncLocalStorage<Caller>();
  private following = false;

  /** Without buffers (a domain the toolstack gives none, a test's kernel) nothing is ever traced. */
  constructor(control?: SharedArrayBuffer, ring?: SharedArrayBuffer) {
    this.control = new Int32Array(control ?? createTraceControl());
    this.ring = new TraceRing(ring ?? createTraceRing());
  }

  /** True while someone traces this platform: one load. */
  on(): boolean {
    return this.control[TraceControl.OPS] !== 0;
  }

  /** Run `body`, an agent call, as process `pid` doing `name`: while tracing, its requests carry both. */
  runAs<T>(pid: number, name: string, body: () => Promise<T>): Promise<T> {
    if (!this.on()) {
      if (this.following) {
        this.following = false;
        this.callers.disable();
      }
      return body();
    }
    this.following = true;
    return this.callers.run({ pid, name, entered: traceNow() }, body);
  }

  /**
   * Descriptor `id` is written and about to be published (call only while on()): begin its record if its
   * operation is traced. Returns the record's sequence number, or 0.
   */
  posting(id: number, op: number, sector: number, count: number): number {
    if ((this.control[TraceControl.OPS] & traceOpBit(op)) === 0) return 0;
    const caller = this.callers.getStore();
    return this.ring.begin(id, op, sector, count, caller?.pid ?? 0, caller?.name ?? 'kernel', caller?.entered ?? 0);
  }

  /** The record of request `id` in flight, or 0: one load. */
  recordOf(id: number): number {
    return this.ring.recordOf(id);
  }

  /** The doorbell is rung for record `seq` (after publishing it: the monitor may have picked it up already). */
  rang(seq: number): void {
    this.ring.stampBefore(seq, Stage.DOORBELL, Stage.PICKED);
  }

  /** Request `id` left flight (reaped, or failed by a ring shutdown): its id may be reused. */
  forget(id: number): void {
    this.ring.forget(id);
  }

  /**
   * The response of record `seq` was reaped, by the interrupt handler or by the idle loop's poll. Called before
   * the waiter is settled: the wake-up stamp runs as the microtask queued just ahead of the waiter's continuation.
   */
  reaped(seq: number, fromInterrupt: boolean): void {
    if (fromInterrupt) this.ring.stamp(seq, Stage.IRQ_HANDLER);
    queueMicrotask(() => {
      this.ring.stamp(seq, Stage.WOKEN);
      this.ring.finish(seq, PART_GUEST);
    });
  }
}

/** What a guest agent call is doing, as a trace names it: the filesystem operation, or the kind of request. */
export function callerName(request: AgentRequest): string {
  switch (request.kind) {
    case 'vfs':
    case 'vfs-stat':
      return request.op;
    // A FUSE view's reads and writes, their bytes through the data window.
    case 'read-window':
      return 'read';
    case 'write-window':
      return 'write';
    default:
      return request.kind;
  }
}
