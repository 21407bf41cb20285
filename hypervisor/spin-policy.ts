/**
 * How long the monitor, its I/O threads and the guest kernels poll before they sleep, decided once per platform
 * from what this host offers: the cost of a wake-up (measured at boot, wake-up-cost.ts) and the cores this
 * process may run on (os.availableParallelism() honours the affinity mask, so `taskset -c 1` counts as one).
 *
 * - Several cores: poll for up to twice a wake-up's cost (the competitive rule for spin-then-block: never more
 *   than twice what knowing the event's time would have cost), within sane bounds for a noisy measurement.
 * - One core: never poll. The thread that would end the wait (the monitor for a guest, a guest for the monitor)
 *   needs the very core the poller holds, so every microsecond polled delays the event it waits for, until the
 *   scheduler preempts the poller. Measured pinned to one core, queue depth 1: a request that moves no data took
 *   145 µs with the two-core budgets and 16 µs without polling; 64 KiB reads went from 206 to 1608 MiB/s.
 */

import { performance } from 'node:perf_hooks';
import type { ThreadClock } from './thread-cpu.js';

/** The widest window any spin loop gets, in microseconds, however slow a wake-up measured. */
export const MAX_SPIN_MICROS = 200;
/** The narrowest window on a host with several cores (a wake-up measured as nearly free is measurement noise). */
export const MIN_SPIN_MICROS = 5;

export interface SpinBudgets {
  /** Cores this process may run on, as the budgets were decided from. */
  cores: number;
  /** Polling window of the monitor and its I/O threads before they sleep, in microseconds. */
  monitorMicros: number;
  /** Polling window of a guest kernel's idle loop while I/O is outstanding, in microseconds. */
  guestMicros: number;
  /** Why: one line a person reads in the platform's log and in the benches. */
  reason: string;
}

/** The spin window for a thread whose wake-up costs `wakeUpMicros`, on a host offering `cores` cores. */
export function spinBudget(wakeUpMicros: number, cores: number): number {
  if (cores < 2) return 0;
  return Math.min(MAX_SPIN_MICROS, Math.max(MIN_SPIN_MICROS, 2 * wakeUpMicros));
}

/** Both budgets and their reason, from the measured wake-up costs (monitor: blocking; guest: async). */
export function spinBudgets(wakeUp: { blockingMicros: number; asyncMicros: number }, cores: number): SpinBudgets {
  const monitorMicros = spinBudget(wakeUp.blockingMicros, cores);
  const guestMicros = spinBudget(wakeUp.asyncMicros, cores);
  const reason =
    cores < 2
      ? 'one core: no polling (a poller would hold the core the thread it waits for needs)'
      : `${cores} cores: poll up to twice a wake-up (${wakeUp.blockingMicros.toFixed(1)} µs monitor, ${wakeUp.asyncMicros.toFixed(1)} µs guest)`;
  return { cores, monitorMicros, guestMicros, reason };
}

/**
 * A knob in microseconds from the environment (HVSHARE_MONITOR_SPIN, HVSHARE_GUEST_WAKE_UP_US): undefined when
 * unset or empty; an error naming the variable for anything but a number of microseconds, 0 or more.
 */
export function microsFromEnvironment(name: string, env: NodeJS.ProcessEnv = process.env): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const micros = Number(raw);
  if (!Number.isFinite(micros) || micros < 0) throw new Error(`${name} must be a number of microseconds, 0 or more (got ${JSON.stringify(raw)})`);
  return micros;
}

/**
 * How long one polling thread (the monitor, an I/O thread) polls before it sleeps, adapted to how long its waits
 * for work turn out to be, as KVM's haltpoll governor adapts a guest's idle polling. The budget (spinBudget) is the
 * most a poll may last. A wait that ended within the budget but after the window (a poll of the whole budget would
 * have caught it) doubles the window, from a quarter of the budget; a wait longer than the budget, which no poll
 * it allows could have caught, halves it, down to nothing. A wait the poll caught changes nothing. So a thread
 * polls while work comes back sooner than a wake-up costs and sleeps at once while it comes later: a view's
 * sequential reads reach the monitor once per FUSE request, 100-300 µs apart, where its budget is 40-140 µs, and
 * its polls were a third of its CPU.
 */
export class PollWindow {
  private window: number;

  constructor(readonly budgetMicros: number) {
    this.window = budgetMicros;
  }

  /** How long to poll now, in microseconds. */
  get micros(): number {
    return this.window;
  }

  /**
   * Waits for work as a polling thread does: polls `work()` for the window; if none came, `sleep()`, which tells
   * whether it slept (false: work slipped in as it got ready to). Tallies the polling and the sleeping on `clock`
   * and adapts the window to how long the wait turned out to be.
   */
  wait(clock: ThreadClock, work: () => boolean, sleep: () => boolean): void {
    const from = performance.now();
    const until = from + this.window / 1000;
    let found = false;
    let at = from;
    while (!found && (at = performance.now()) < until) found = work();
    clock.polled((at - from) * 1000);
    if (!found && sleep()) {
      const woke = performance.now();
      clock.slept((woke - at) * 1000);
      at = woke;
    }
    this.waited((at - from) * 1000);
  }

  /** The thread waited `micros` for work in all: polling for the window, then sleeping if the poll found none. */
  waited(micros: number): void {
    if (micros <= this.window) return;
    const growFrom = this.budgetMicros / 4;
    if (micros <= this.budgetMicros) this.window = Math.min(this.budgetMicros, Math.max(growFrom, this.window * 2));
    else this.window = this.window / 2 < growFrom ? 0 : this.window / 2;
  }
}
