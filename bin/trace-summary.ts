import type { CallRecord, TraceRecord } from '../hypervisor/control-protocol.js';
import { STAGE_NAMES, type StageName } from '../hypervisor/trace-abi.js';
import { median, p99 } from './bench-stats.js';

/**
 * One stage across the requests traced: how long after the stage before it (the latest earlier stage the request
 * went through) it came, in microseconds. The first stage (the filesystem call) has no stage before it.
 */
export interface StageSummary {
  stage: StageName;
  /** Requests that went through this stage (a doorbell or an interrupt happens only when the other side slept). */
  requests: number;
  p50Us: number | null;
  p99Us: number | null;
}

/** The hops of a traced agent call (CallRecord), in order. */
export const CALL_HOPS = ['to domain', 'in domain', 'back'] as const;
export type CallHop = (typeof CALL_HOPS)[number];

export interface TraceSummary {
  requests: number;
  lost: number;
  stages: StageSummary[];
  /** From the first stage a request has (the filesystem call, or the posting of the kernel's own) to its wake-up. */
  total: { requests: number; p50Us: number | null; p99Us: number | null };
  /** Agent calls traced: each hop (sent -> begun in the domain -> ended there -> answer taken in), and the whole. */
  calls: { calls: number; hops: { hop: CallHop; p50Us: number | null; p99Us: number | null }[]; total: { p50Us: number | null; p99Us: number | null } };
}

/** The microseconds of each hop of a call (CALL_HOPS order): sent to begun, begun to ended, ended to answered. */
export function callHops(call: CallRecord): [number, number, number] {
  return [call.began - call.sent, call.ended - call.began, call.answered - call.ended];
}

/** Microseconds from each present stage to the one before it (null for a stage that did not happen, and for the first). */
export function stageGaps(stamps: (number | null)[]): (number | null)[] {
  let previous: number | null = null;
  return stamps.map((at) => {
    if (at === null) return null;
    const gap = previous === null ? null : at - previous;
    previous = at;
    return gap;
  });
}

function percentiles(values: number[]): { p50Us: number | null; p99Us: number | null } {
  return values.length ? { p50Us: median(values), p99Us: p99(values) } : { p50Us: null, p99Us: null };
}

/** Adds requests up as they arrive (keeping only the gaps, not the records), and summarizes them at the end. */
export class TraceTally {
  private readonly gaps = STAGE_NAMES.map((): number[] => []);
  private readonly seen = STAGE_NAMES.map(() => 0);
  private readonly totals: number[] = [];
  private readonly hops = CALL_HOPS.map((): number[] => []);
  private readonly callTotals: number[] = [];
  private requests = 0;
  private lost = 0;

  add(record: TraceRecord): void {
    this.requests++;
    stageGaps(record.stamps).forEach((gap, i) => {
      if (record.stamps[i] !== null) this.seen[i]++;
      if (gap !== null) this.gaps[i].push(gap);
    });
    const present = record.stamps.filter((s): s is number => s !== null);
    if (present.length > 1) this.totals.push(present[present.length - 1] - present[0]);
  }

  addCall(call: CallRecord): void {
    callHops(call).forEach((us, i) => this.hops[i].push(us));
    this.callTotals.push(call.answered - call.sent);
  }

  addLost(n: number): void {
    this.lost += n;
  }

  summary(): TraceSummary {
    return {
      requests: this.requests,
      lost: this.lost,
      stages: STAGE_NAMES.map((stage, i) => ({ stage, requests: this.seen[i], ...percentiles(this.gaps[i]) })),
      total: { requests: this.totals.length, ...percentiles(this.totals) },
      calls: {
        calls: this.callTotals.length,
        hops: CALL_HOPS.map((hop, i) => ({ hop, ...percentiles(this.hops[i]) })),
        total: percentiles(this.callTotals),
      },
    };
  }
}
