/**
 * CPU time per thread of the platform: the monitor, its I/O threads, each domain's guest kernel and the host's
 * main thread (FUSE, toolstack). Each worker writes its kernel thread id into a registry page at start; the
 * toolstack reads each thread's user + system time from /proc when asked, so nothing is counted or sent on the
 * request path, and an idle platform does no work for it.
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

export function createThreadRegistry(): SharedArrayBuffer {
  return new SharedArrayBuffer((1 + MAX_IO_THREADS + MAX_DOMAINS) * 4);
}

/** The kernel's id of the calling thread (Linux names it in the /proc/thread-self link, "<pid>/task/<tid>"). */
export function currentThreadId(): number {
  const link = readlinkSync('/proc/thread-self');
  return Number(link.slice(link.lastIndexOf('/') + 1));
}

/** The calling thread takes `slot` of `registry` (a slot out of range is ignored: that thread goes uncounted). */
export function registerThread(registry: SharedArrayBuffer | undefined, slot: number): void {
  if (!registry) return;
  const ids = new Int32Array(registry);
  if (slot >= 0 && slot < ids.length) Atomics.store(ids, slot, currentThreadId());
}

export function registeredThread(registry: SharedArrayBuffer, slot: number): number {
  return Atomics.load(new Int32Array(registry), slot);
}

/** /proc gives CPU time in ticks of USER_HZ, which Linux fixes at 100 for user space whatever the kernel's HZ. */
const TICKS_PER_SECOND = 100;

/** User + system CPU seconds of a /proc stat line: the fields after the command name, which may hold spaces. */
function statCpuSeconds(stat: string, withChildren: boolean): number {
  // After ") " come field 3 (state) onwards: utime is field 14, stime 15, cutime 16, cstime 17.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  return (f[11] + f[12] + (withChildren ? f[13] + f[14] : 0)) / TICKS_PER_SECOND;
}

/** CPU seconds thread `tid` of this process has used so far; null once it is gone (or 0: not registered). */
export function threadCpuSeconds(tid: number): number | null {
  if (tid <= 0) return null;
  try {
    return statCpuSeconds(readFileSync(`/proc/self/task/${tid}/stat`, 'latin1'), false);
  } catch {
    return null;
  }
}

/** CPU seconds of process `pid` and of the children it has waited for; null once it is gone. */
export function processCpuSeconds(pid: number): number | null {
  try {
    return statCpuSeconds(readFileSync(`/proc/${pid}/stat`, 'latin1'), true);
  } catch {
    return null;
  }
}

/** CPU seconds by part of the platform, since each thread started. */
export interface PlatformCpu {
  /** The host process's main thread: the FUSE adapter and the toolstack. */
  main: number;
  monitor: number;
  /** The monitor's I/O threads together. */
  io: number;
  /** Each running domain's guest kernel thread. */
  domains: Record<string, number>;
}
