/**
 * Where the time of a `bench block` case went on the hypervisor path, from counters the platform keeps anyway
 * (read before and after the case, nothing added per request): how many requests each monitor drain served,
 * merged transfers and their size, hand-offs to the I/O threads, how often the monitor slept, how the guests
 * learned of completions (interrupt or polling), and the monitor's CPU per request (parsing, copies, completion).
 */
import type { DomainInfo } from '../guests/agent-protocol.js';
import type { CounterName } from '../hypervisor/domain-stats.js';
import type { PlatformCpu, ThreadRounds } from '../hypervisor/thread-cpu.js';
import type { DomainHandle, Platform } from '../hypervisor/toolstack.js';

export interface PathDiagnostics {
  /** Ring requests the monitor served for the case's domains. */
  requests: number;
  /** Requests per monitor drain that found work (batching: high under load, 1 when each request is alone). */
  requestsPerDrain: number;
  /** Transfers the backend performed (merged runs count once) and their mean size. */
  transfers: number;
  meanTransferKiB: number;
  /** Requests handed to the monitor's I/O threads, in percent. */
  offloadedPct: number;
  /** Times the monitor went to sleep, per 1000 requests (each costs a doorbell and a wake-up later). */
  monitorSleepsPer1k: number;
  /** Guest wake-ups by interrupt per 1000 requests, and completions the guests reaped by polling, in percent. */
  guestInterruptsPer1k: number;
  guestPolledPct: number;
  /** The monitor thread's CPU per request, in microseconds (10 ms resolution over the case). */
  monitorCpuUsPerRequest: number;
}

interface Snapshot {
  counters: Record<CounterName, number>[];
  info: DomainInfo[];
  rounds: ThreadRounds;
  cpu: PlatformCpu;
}

export async function snapshot(platform: Platform, domains: DomainHandle[]): Promise<Snapshot> {
  return {
    counters: domains.map((d) => platform.counters(d.name)),
    info: await Promise.all(domains.map((d) => d.call<DomainInfo>({ kind: 'info' }))),
    rounds: platform.monitorRounds(),
    cpu: platform.cpu(),
  };
}

export function diagnose(before: Snapshot, after: Snapshot): PathDiagnostics {
  const sum = (f: (s: Snapshot, i: number) => number) => after.counters.reduce((n, _, i) => n + f(after, i) - f(before, i), 0);
  const requests = sum((s, i) => s.counters[i]!.REQUESTS);
  const merged = sum((s, i) => s.counters[i]!.MERGED);
  const bytes = sum((s, i) => s.counters[i]!.READ_BYTES + s.counters[i]!.WRITE_BYTES);
  const per = (n: number, of: number, scale = 1) => (of > 0 ? (n * scale) / of : 0);
  const transfers = requests - merged;
  return {
    requests,
    requestsPerDrain: per(after.rounds.served - before.rounds.served, after.rounds.rounds - before.rounds.rounds),
    transfers,
    meanTransferKiB: per(bytes, transfers) / 1024,
    offloadedPct: per(sum((s, i) => s.counters[i]!.OFFLOADED), requests, 100),
    monitorSleepsPer1k: per(after.rounds.sleeps - before.rounds.sleeps, requests, 1000),
    guestInterruptsPer1k: per(sum((s, i) => s.info[i]!.interrupts), requests, 1000),
    guestPolledPct: per(sum((s, i) => s.info[i]!.polledCompletions), requests, 100),
    monitorCpuUsPerRequest: per((after.cpu.monitor.cpu - before.cpu.monitor.cpu) * 1e6, requests),
  };
}
