import type { LockSummary } from './control-protocol.js';
import type { DomainPages, Grant, MonitorEvent } from './monitor.js';

/**
 * Control messages between the toolstack and the monitor thread (the control path, like Xen's domctl; never on
 * the per-request path). The toolstack posts a command and rings the doorbell; the monitor acknowledges it.
 */
export type MonitorCommand =
  | { type: 'add-volume'; seq: number; id: number; name: string; path: string; readOnly: boolean }
  | { type: 'add-domain'; seq: number; id: number; name: string; pages: DomainPages; grants: Grant[] }
  | { type: 'remove-domain'; seq: number; id: number }
  | { type: 'drop-locks'; seq: number; id: number }
  | { type: 'shutdown'; seq: number }
  /** The lock table, answered with a 'locks' reply instead of an ack. */
  | { type: 'locks'; seq: number };

export type MonitorReply =
  | { type: 'ack'; seq: number }
  | { type: 'locks'; seq: number; locks: LockSummary[] }
  | { type: 'error'; seq: number; message: string }
  | { type: 'event'; event: MonitorEvent };

export interface MonitorWorkerData {
  doorbell: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  /** How long the monitor polls its rings after the last request before it sleeps on the doorbell. */
  spinMicros: number;
  /** I/O threads that share large transfers with the monitor thread when it has a backlog (default: cores - 1). */
  ioThreads?: number;
  /** How long a lock holder has to answer a revoke before it is fenced (default: the monitor's). */
  revokeDeadlineMs?: number;
  /** Where the monitor and its I/O threads write their kernel thread ids (thread-cpu.ts). */
  threads?: SharedArrayBuffer;
}
