/**
 * CPU time per thread of the platform: the monitor, its I/O threads, each domain's guest kernel and the host's
 * main thread (FUSE, toolstack). Each worker writes its kernel thread id into a registry page at start; the
 * toolstack reads each thread's user + system time from /proc when asked, so nothing is counted or sent on the
 * request path, and an idle platform does no work for it. The threads that poll also add up in the registry how
 * long they polled and how long they slept (ThreadClock), so the CPU a spin policy costs can be seen.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { MAX_DOMAINS } from './domain-stats.js';

/** I/O threads the registry has room for (the monitor starts cores - 1 of them). */
export const MAX_IO_THREADS = 16;

/** Where each thread writes its id in the registry. */
export const ThreadSlot = {
  MONITOR: 0,
  io: (index: number) => 1 + index,
  domain: (id: number) => 1 + MAX_IO_THREADS + id,
} as const;

const SLOTS = 1 + MAX_IO_THREADS + MAX_DOMAINS;
/**
 * After the ids, per slot (Float64, written by that thread only): microseconds spent polling, then sleeping, how
 * many times it slept, how many rounds found work and how many requests those rounds served.
 */
const TALLY = { POLL_US: 0, SLEEP_US: 1, SLEEPS: 2, ROUNDS: 3, SERVED: 4, WORDS: 8 } as const;
const TIMES_OFFSET = SLOTS * 4 + ((SLOTS * 4) % 8);
const tallyOf = (registry: SharedArrayBuffer, slot: number) => new Float64Array(registry, TIMES_OFFSET + slot * TALLY.WORDS * 8, TALLY.WORDS);

export function createThreadRegistry(): SharedArrayBuffer {
  return new SharedArrayBuffer(TIMES_OFFSET + SLOTS * TALLY.WORDS * 8);
}

/** A polling thread's tally of its time spent polling and sleeping, and of its rounds of work, in its registry slot. */
export class ThreadClock {
  private readonly tally: Float64Array | null;

  constructor(registry: SharedArrayBuffer | undefined, slot: number) {
    this.tally = registry && slot >= 0 && slot < SLOTS ? tallyOf(registry, slot) : null;
  }

  polled(micros: number): void {
    if (this.tally) this.tally[TALLY.POLL_US] += micros;
  }

  slept(micros: number): void {
    if (!this.tally) return;
    this.tally[TALLY.SLEEP_US] += micros;
    this.tally[TALLY.SLEEPS]++;
  }

  /** A round that found `requests` to serve (the monitor's drain of every ring). */
  worked(requests: number): void {
    if (!this.tally) return;
    this.tally[TALLY.ROUNDS]++;
    this.tally[TALLY.SERVED] += requests;
  }
}

/** Seconds slot `slot`'s thread has polled and slept so far (a torn read of a double is not possible here). */
function pollAndSleep(registry: SharedArrayBuffer, slot: number): { poll: number; sleep: number } {
  const tally = tallyOf(registry, slot);
  return { poll: Math.round(tally[TALLY.POLL_US]!) / 1e6, sleep: Math.round(tally[TALLY.SLEEP_US]!) / 1e6 };
}

/** How often a thread slept, and its rounds of work with the requests they served, since it started. */
export interface ThreadRounds {
  sleeps: number;
  rounds: number;
  served: number;
}

export function threadRounds(registry: SharedArrayBuffer, slot: number): ThreadRounds {
  const tally = tallyOf(registry, slot);
  return { sleeps: tally[TALLY.SLEEPS]!, rounds: tally[TALLY.ROUNDS]!, served: tally[TALLY.SERVED]! };
}

/** The kernel's id of the calling thread (Linux names it in the /proc/thread-self link, "<pid>/task/<tid>"). */
function currentThreadId(): number {
  const link = readlinkSync('/proc/thread-self');
  return Number(link.slice(link.lastIndexOf('/') + 1));
}

/**
 * The calling thread takes `slot` of `registry`, its tally starting from zero (a domain id is reused by the next
 * domain). A slot out of range is ignored: that thread goes uncounted.
 */
export function registerThread(registry: SharedArrayBuffer | undefined, slot: number): void {
  if (!registry || slot < 0 || slot >= SLOTS) return;
  tallyOf(registry, slot).fill(0);
  Atomics.store(new Int32Array(registry, 0, SLOTS), slot, currentThreadId());
}

function registeredThread(registry: SharedArrayBuffer, slot: number): number {
  return Atomics.load(new Int32Array(registry), slot);
}

/** /proc gives CPU time in ticks of USER_HZ, which Linux fixes at 100 for user space whatever the kernel's HZ. */
const TICKS_PER_SECOND = 100;

/** CPU seconds thread `tid` of this process has used so far; null once it is gone (or 0: not registered). */
export function threadCpuSeconds(tid: number): number | null {
  if (tid <= 0) return null;
  let stat: string;
  try {
    stat = readFileSync(`/proc/self/task/${tid}/stat`, 'latin1');
  } catch {
    return null;
  }
  // The fields after the command name (which may hold spaces): from ") " on, field 3 (state) first; utime is
  // field 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS_PER_SECOND;
}

/** A thread's (or a group's) CPU seconds, and the seconds it spent polling for work and sleeping for it. */
export interface ThreadUse {
  cpu: number;
  poll: number;
  sleep: number;
}

/** Time by part of the platform, since each thread started. */
export interface PlatformCpu {
  /** The host process's main thread: the FUSE adapter and the toolstack (CPU seconds). */
  main: number;
  monitor: ThreadUse;
  /** The monitor's I/O threads together. */
  io: ThreadUse;
  /** Each running domain's guest kernel thread. */
  domains: Record<string, ThreadUse>;
}

/** What the registry says of the thread in `slot` now (zeros for a slot nobody took, or whose thread is gone). */
export function threadUse(registry: SharedArrayBuffer, slot: number): ThreadUse {
  return { cpu: threadCpuSeconds(registeredThread(registry, slot)) ?? 0, ...pollAndSleep(registry, slot) };
}

/** Nothing used yet: what sums of ThreadUse start from. */
export const NO_USE: Readonly<ThreadUse> = Object.freeze({ cpu: 0, poll: 0, sleep: 0 });

export function addUse(a: ThreadUse, b: ThreadUse): ThreadUse {
  const sum = (x: number, y: number) => Math.round((x + y) * 1e6) / 1e6;
  return { cpu: sum(a.cpu, b.cpu), poll: sum(a.poll, b.poll), sleep: sum(a.sleep, b.sleep) };
}

/** CPU milliseconds the platform's parts spent between two readings. */
export interface CpuSplit {
  guests: number;
  monitor: number;
  io: number;
  main: number;
}

export function cpuSplit(before: PlatformCpu, after: PlatformCpu): CpuSplit {
  const ms = (a: number, b: number) => Math.max(0, b - a) * 1000;
  let guests = 0;
  for (const [name, use] of Object.entries(after.domains)) guests += ms(before.domains[name]?.cpu ?? 0, use.cpu);
  return { guests, monitor: ms(before.monitor.cpu, after.monitor.cpu), io: ms(before.io.cpu, after.io.cpu), main: ms(before.main, after.main) };
}

/** A split whose every part is `f` of that part's name (scaling one, taking medians of several). */
export function mapSplit(f: (part: keyof CpuSplit) => number): CpuSplit {
  return { guests: f('guests'), monitor: f('monitor'), io: f('io'), main: f('main') };
}

/** The whole process's CPU milliseconds so far (every thread; microsecond resolution). */
export function processCpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}
