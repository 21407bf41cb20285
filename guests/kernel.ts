import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { setImmediate as yieldToProcesses } from 'node:timers/promises';
import { Doorbell, Vic } from '../hypervisor/abi.js';
import type { ThreadClock } from '../hypervisor/thread-cpu.js';

/** A device driver that can be polled for completions instead of waiting for its interrupt. */
export interface PolledDriver {
  /** Requests issued and not completed. */
  outstanding(): number;
  /** Reap completions; returns how many. */
  poll(): number;
  /**
   * About to sleep: ask the monitor to interrupt on the next completion, or with `batch` once a good part of a
   * deep queue has completed; true when completions slipped in.
   */
  arm(batch: boolean): boolean;
  /** Recent mean time from submission to completion, in microseconds. */
  typicalLatencyMicros(): number;
  /** The backend hints that its I/O threads are busy with this driver's requests (polling would compete). */
  backendBusy(): boolean;
}

export interface Process {
  pid: number;
  name: string;
  startedAt: number;
}

export interface KernelOptions {
  vic: SharedArrayBuffer;
  doorbell: SharedArrayBuffer;
  /**
   * The idle loop's polling budget: twice what a wake-up costs on this host (the competitive rule for
   * spin-then-block). It polls at least this long for a completion expected soon, and sleeps at once for one
   * expected much later (see LATENCY_SHARE), so polling never burns a core through a long transfer.
   */
  spinMicros: number;
  /** Where the idle loop adds up its polling and sleeping (hypervisor/thread-cpu.ts). */
  clock?: ThreadClock;
}

/**
 * A completion expected within this many polling budgets (eight wake-ups) is polled for, as long as it is
 * expected: sleeping would add a wake-up, more than a tenth, to such a request's latency. One expected later is
 * slept for at once (a large transfer, a request the monitor hands to its I/O threads): a wake-up is noise there.
 */
const LATENCY_SHARE = 4;
/** Requests outstanding from which the idle loop sleeps at once instead of polling. */
const DEEP_QUEUE = 8;

/**
 * The guest kernel: a process table (processes are async tasks), interrupt dispatch and the idle loop.
 *
 * The idle loop never blocks the event loop: it waits for the virtual interrupt controller's sequence word with
 * Atomics.waitAsync, dispatches pending lines to their handlers (which wake the processes sleeping on wait queues),
 * and lets the woken processes run before it looks again. While I/O is outstanding it first polls the drivers
 * for a short while, since a completion reaped by polling costs a few microseconds and a wake-up about thirty.
 */
export class GuestKernel {
  private readonly vic: Int32Array;
  private readonly doorbell: Int32Array;
  private readonly cores = availableParallelism();
  private readonly handlers = new Map<number, () => void>();
  private readonly drivers: PolledDriver[] = [];
  private readonly processes = new Map<number, Process>();
  private nextPid = 1;
  private stopped = false;
  private idle: Promise<void> | undefined;
  private alive: NodeJS.Timeout | undefined;
  readonly counters = { interrupts: 0, hypercalls: 0, polledCompletions: 0 };

  constructor(private readonly options: KernelOptions) {
    this.vic = new Int32Array(options.vic);
    this.doorbell = new Int32Array(options.doorbell);
  }

  start(): void {
    // A pending Atomics.waitAsync does not keep Node's event loop alive; this handle does, while the kernel runs.
    this.alive ??= setInterval(() => {}, 1 << 30);
    this.idle ??= this.idleLoop();
  }

  /** Stop the idle loop (the domain is shutting down). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.alive);
    Atomics.add(this.vic, Vic.SEQ, 1);
    Atomics.notify(this.vic, Vic.SEQ);
    await this.idle;
  }

  onInterrupt(line: number, handler: () => void): void {
    this.handlers.set(line, handler);
  }

  registerDriver(driver: PolledDriver): void {
    this.drivers.push(driver);
  }

  /** The hypercall that wakes the monitor (only issued when the monitor asked for it). */
  notifyMonitor(): void {
    this.counters.hypercalls++;
    Atomics.add(this.doorbell, Doorbell.SEQ, 1);
    Atomics.notify(this.doorbell, Doorbell.SEQ, 1);
  }

  /** Run `body` as a process of this domain. */
  async spawn<T>(name: string, body: (process: Process) => Promise<T>): Promise<T> {
    const process: Process = { pid: this.nextPid++, name, startedAt: Date.now() };
    this.processes.set(process.pid, process);
    try {
      return await body(process);
    } finally {
      this.processes.delete(process.pid);
    }
  }

  listProcesses(): Process[] {
    return [...this.processes.values()];
  }

  private dispatch(): boolean {
    const pending = Atomics.exchange(this.vic, Vic.PENDING, 0);
    if (pending === 0) return false;
    this.counters.interrupts++;
    for (let line = 0; line < 32; line++) if (pending & (1 << line)) this.handlers.get(line)?.();
    return true;
  }

  private pollDrivers(): number {
    let reaped = 0;
    for (const driver of this.drivers) reaped += driver.poll();
    return reaped;
  }

  private async idleLoop(): Promise<void> {
    while (!this.stopped) {
      const seq = Atomics.load(this.vic, Vic.SEQ);
      if (this.dispatch() || this.pollDrivers() > 0) {
        await yieldToProcesses();
        continue;
      }
      const busy = this.drivers.filter((d) => d.outstanding() > 0);
      const queued = busy.reduce((n, d) => n + d.outstanding(), 0);
      // Poll only when the completion is expected soon (see LATENCY_SHARE; requests lately took about this long),
      // and for about as long as it is expected. With a deep queue, when the monitor says it hands over to its
      // I/O threads or when busy domains and the monitor outnumber the cores, completions come in bunches and a
      // poll would take a core from the threads doing the copies: sleep at once, one wake-up per bunch.
      const crowded = Atomics.load(this.doorbell, Doorbell.BUSY_DOMAINS) + 1 > this.cores;
      const bunched = queued >= DEEP_QUEUE && (crowded || busy.some((d) => d.backendBusy()));
      const expected = busy.length > 0 ? Math.max(...busy.map((d) => d.typicalLatencyMicros())) * 1.5 : 0;
      if (busy.length > 0 && !bunched && expected <= LATENCY_SHARE * this.options.spinMicros) {
        const from = performance.now();
        const until = from + Math.max(this.options.spinMicros, expected) / 1000;
        let reaped = 0;
        let at = from;
        while (reaped === 0 && Atomics.load(this.vic, Vic.SEQ) === seq && (at = performance.now()) < until) {
          reaped = this.pollDrivers();
        }
        this.options.clock?.polled((at - from) * 1000);
        if (reaped > 0) {
          this.counters.polledCompletions += reaped;
          await yieldToProcesses();
          continue;
        }
      }
      let slipped = false;
      for (const driver of this.drivers) slipped = driver.arm(bunched) || slipped;
      if (slipped || Atomics.load(this.vic, Vic.SEQ) !== seq) continue;
      const wait = Atomics.waitAsync(this.vic, Vic.SEQ, seq);
      if (wait.async) {
        const from = performance.now();
        await wait.value;
        this.options.clock?.slept((performance.now() - from) * 1000);
      }
    }
  }
}
