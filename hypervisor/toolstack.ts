import { once } from 'node:events';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { DOORBELL_WORDS, Doorbell, RING_BYTES, VIC_WORDS } from './abi.js';
import { createStatsBuffer, DomainStats, MAX_DOMAINS, type CounterName } from './domain-stats.js';
import type { DomainPages, Grant, MonitorEvent } from './monitor.js';
import type { MonitorCommand, MonitorReply, MonitorWorkerData } from './monitor-protocol.js';
import { addUse, createThreadRegistry, NO_USE, MAX_IO_THREADS, threadCpuSeconds, ThreadSlot, threadRounds, threadUse, type PlatformCpu, type ThreadRounds, type ThreadUse } from './thread-cpu.js';
import { createTraceControl, createTraceRing, TRACE_OPS, TRACE_SLOTS, TraceControl, traceNow } from './trace-abi.js';
import { measureWakeUpCost, type WakeUpCost } from './wake-up-cost.js';
import { microsFromEnvironment, spinBudget, spinBudgets, type SpinBudgets } from './spin-policy.js';
import type { CallRecord, LockSummary } from './control-protocol.js';
import { ChangeCount } from '../guests/change-count.js';
import { createDataWindow, windowSlot, WindowSlots, WINDOW_SLOT_BYTES } from '../guests/data-window.js';
import type { AgentMessage, AgentReply, AgentRequest, AgentResult, DomainBooted } from '../guests/agent-protocol.js';
import type { DomainWorkerData } from '../guests/domain-worker.js';
import { callerName } from '../guests/trace-front.js';
import { IoError } from '../fs/block-device.js';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { replayJournal } from '../fs/journal.js';
import { stopStep, stopStepMs, type StopDeadline } from './stop-deadline.js';

/** Replay one journal slot of a volume natively (no filesystem knowledge needed). */
async function replayVolumeSlot(path: string, slot: number): Promise<number> {
  const dev = await FileBlockDevice.open(path);
  try {
    return await replayJournal(dev, slot);
  } finally {
    await dev.close();
  }
}

export interface VolumeSpec {
  name: string;
  /** The raw image backing the volume. */
  path: string;
  readOnly?: boolean;
}

export interface DomainSpec {
  name: string;
  memoryBytes: number;
  grants: { volume: string; readOnly: boolean }[];
  /** Mount the filesystem of the first granted volume at boot, with this journal slot. */
  filesystem?: { slot: number };
}

export interface PlatformOptions {
  volumes: VolumeSpec[];
  /** Polling window of the monitor before it sleeps, in microseconds (default: twice a measured wake-up). */
  monitorSpinMicros?: number;
  /** How long a lock holder has to answer a revoke before the monitor fences it (default: the monitor's). */
  revokeDeadlineMs?: number;
}

/** Measured once per process: wake-ups cost what the host makes them cost, not what one platform's boot saw. */
let wakeUpCost: Promise<WakeUpCost> | undefined;

export type PlatformEvent =
  | MonitorEvent
  | { type: 'domain-exit'; domain: string; detail: string }
  | { type: 'domain-boot'; domain: string; detail: string }
  | { type: 'recovery'; domain: string; detail: string };

/** What a traced agent call was about (CallRecord.detail): the path, or a data window transfer's handle and range. */
function callDetail(request: AgentRequest): string {
  switch (request.kind) {
    case 'read-window':
    case 'write-window':
      return `fh ${request.fh} at ${request.position}, ${request.length} bytes`;
    case 'vfs':
    case 'vfs-stat':
      return typeof request.args[0] === 'string' ? request.args[0] : request.args.length > 0 ? `fh ${String(request.args[0])}` : '';
    case 'getattr-many':
      return `${request.paths.length} paths from ${request.paths[0] ?? '-'}`;
    default:
      return '';
  }
}

/** A read into a data window slot held for the caller (DomainHandle.readInWindow). */
export interface WindowRead {
  /** The slot's bytes; the first `await done` of them are the file's once `done` resolves. */
  readonly bytes: Uint8Array;
  readonly done: Promise<number>;
  /** Give the slot back (after `done` settles); idempotent. */
  release(): void;
}

/** A running domain as the toolstack sees it. */
export class DomainHandle {
  private nextSeq = 1;
  private readonly calls = new Map<number, { resolve: (r: AgentResult) => void; reject: (e: Error) => void }>();
  state: 'booting' | 'running' | 'dead' = 'booting';

  private readonly slots = new WindowSlots();
  /** While `call` is traced (hvshare trace): the calls in flight, and those answered since the trace last read. */
  private readonly tracedCalls = new Map<number, { request: AgentRequest; sent: number }>();
  private callRecords: CallRecord[] = [];
  private callsLost = 0;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly pages: DomainPages,
    readonly worker: Worker | undefined,
    readonly spec: DomainSpec,
    /** The pages a file read's or write's bytes travel through (guests/data-window.ts). */
    private readonly window: SharedArrayBuffer,
    /** What the domain's answers are valid for (guests/change-count.ts). */
    readonly changes: ChangeCount,
    /** The platform's trace control word (hypervisor/trace-abi.ts): whether agent calls are traced. */
    private readonly traceControl = new Int32Array(createTraceControl()),
  ) {
    worker?.on('message', (message: AgentReply | DomainBooted) => {
      if ('booted' in message) return;
      const call = this.calls.get(message.seq);
      if (!call) return;
      this.calls.delete(message.seq);
      if (message.span) this.recordCall(message.seq, message.span, message.ok ? 'OK' : message.code);
      if (message.ok) call.resolve(message.result);
      else call.reject(new IoError(message.code, message.message));
    });
  }

  /**
   * Ask the domain's guest agent to run `request` as a process inside the domain. Buffers in `transfer` move to
   * the domain with the request (the caller gives them up: no copy).
   */
  call<T extends AgentResult>(request: AgentRequest, transfer: ArrayBuffer[] = []): Promise<T> {
    if (!this.worker || this.state === 'dead') return Promise.reject(new IoError('ESRCH', `domain ${this.name} is not running`));
    const seq = this.nextSeq++;
    const traced = (this.traceControl[TraceControl.OPS] & TRACE_OPS.call) !== 0;
    if (traced) this.tracedCalls.set(seq, { request, sent: traceNow() });
    return new Promise<T>((resolve, reject) => {
      this.calls.set(seq, { resolve: resolve as (r: AgentResult) => void, reject });
      this.worker!.postMessage((traced ? { seq, request, traced } : { seq, request }) satisfies AgentMessage, transfer);
    });
  }

  /** A traced call was answered: its record, kept for the trace to read (TRACE_SLOTS at most; past that, lost). */
  private recordCall(seq: number, [began, ended]: [number, number], result: string): void {
    const call = this.tracedCalls.get(seq);
    if (!call) return;
    this.tracedCalls.delete(seq);
    if (this.callRecords.length >= TRACE_SLOTS) {
      this.callsLost++;
      return;
    }
    const { request, sent } = call;
    this.callRecords.push({ domain: this.name, call: callerName(request), detail: callDetail(request), result, sent, began, ended, answered: traceNow() });
  }

  /** The traced calls answered since the last take, and how many were lost meanwhile (hypervisor/trace-session.ts). */
  takeCalls(): { calls: CallRecord[]; lost: number } {
    const taken = { calls: this.callRecords, lost: this.callsLost };
    this.callRecords = [];
    this.callsLost = 0;
    return taken;
  }

  /**
   * Runs `run`, which makes one call that changes the domain once (a write), and tells whether that was all the
   * domain did meanwhile: no other call in flight or sent, and its change count moved by exactly one, so no lock
   * was given up either (guests/change-count.ts). `from` is the count before, or null when anything else ran.
   */
  async soleChange<T>(run: () => Promise<T>): Promise<{ result: T; from: number | null }> {
    const from = this.changes.read();
    const idle = this.calls.size === 0;
    const seq = this.nextSeq;
    const result = await run();
    return { result, from: idle && this.nextSeq === seq + 1 && this.changes.read() === from + 1 ? from : null };
  }

  /**
   * Vfs read of up to `into.length` bytes of open file `fh` at `position`, placed at the start of `into`: through
   * a data window slot when one is free (nothing allocated per call), else moved as a new buffer.
   */
  async readInto(fh: number, position: number, into: Uint8Array): Promise<number> {
    const length = into.length;
    return this.throughWindow(
      length,
      async (slot) => {
        const n = await this.call<number>({ kind: 'read-window', fh, position, length, slot });
        into.set(windowSlot(this.window, slot, n));
        return n;
      },
      async () => {
        const data = await this.read(fh, position, length);
        into.set(data.subarray(0, length));
        return Math.min(data.length, length);
      },
    );
  }

  /**
   * Starts a Vfs read of up to `length` bytes (a slot's worth at most) of open file `fh` at `position` into a data
   * window slot that stays the caller's: the bytes are read where the caller will copy them from, with no copy to
   * this side first. `release` gives the slot back (once the read has settled). Null when no slot is free beyond
   * the `spare` kept for requests that must not wait.
   */
  readInWindow(fh: number, position: number, length: number, spare: number): WindowRead | null {
    if (length > WINDOW_SLOT_BYTES || this.slots.free <= spare || !this.worker || this.state === 'dead') return null;
    const slot = this.slots.take()!;
    const bytes = windowSlot(this.window, slot, length);
    const done = this.call<number>({ kind: 'read-window', fh, position, length, slot });
    let released = false;
    return {
      bytes,
      done,
      release: () => {
        if (released) return;
        released = true;
        // The slot is the domain's to fill until the read settles.
        void done.then(
          () => this.slots.give(slot),
          () => this.slots.give(slot),
        );
      },
    };
  }

  /** Vfs read of `length` bytes of open file `fh` at `position`: the domain's answer, moved here, not copied. */
  read(fh: number, position: number, length: number): Promise<Uint8Array> {
    return this.call<Uint8Array>({ kind: 'vfs', op: 'read', args: [fh, position, length] });
  }

  /** Vfs write of `data` to open file `fh` at `position`, through a data window slot when one is free. */
  writeFrom(fh: number, position: number, data: Uint8Array, dropSetId: boolean): Promise<number> {
    const length = data.length;
    return this.throughWindow(
      length,
      (slot) => {
        windowSlot(this.window, slot, length).set(data);
        return this.call<number>({ kind: 'write-window', fh, position, length, slot, dropSetId });
      },
      () => {
        const copy = new Uint8Array(data); // a copy (Buffer's slice() would be a view, and the transfer detach it)
        return this.call<number>({ kind: 'vfs', op: 'write', args: [fh, position, copy, dropSetId] }, [copy.buffer]);
      },
    );
  }

  /** `viaSlot` with a window slot held for it when `length` fits one and one is free, else `otherwise`. */
  private async throughWindow<T>(length: number, viaSlot: (slot: number) => Promise<T>, otherwise: () => Promise<T>): Promise<T> {
    const slot = length <= WINDOW_SLOT_BYTES ? this.slots.take() : undefined;
    if (slot === undefined) return otherwise();
    try {
      return await viaSlot(slot);
    } finally {
      this.slots.give(slot);
    }
  }

  /** @internal Called by the toolstack once it finished cleaning up after the domain's death. */
  declare finishCleanup: () => void;

  /** Resolves once a dead domain is fully cleaned up: fenced, its journal replayed, its locks released. */
  readonly cleanedUp = new Promise<void>((resolve) => (this.finishCleanup = resolve));

  /** The domain died: fail every call still waiting for it. */
  died(detail: string): void {
    // Before its locks pass on: nothing it answered holds any longer.
    this.changes.add();
    this.state = 'dead';
    this.tracedCalls.clear();
    for (const call of this.calls.values()) call.reject(new IoError('ESRCH', `domain ${this.name} died: ${detail}`));
    this.calls.clear();
  }
}

/**
 * The toolstack: boots the monitor thread, attaches volumes, builds domains (their shared pages, grant tables,
 * guest kernel threads), watches them die and tears everything down. It is the only party that holds every
 * domain's pages; each guest gets just its own.
 */
export class Platform {
  readonly doorbell = new SharedArrayBuffer(DOORBELL_WORDS * 4);
  /** The one "tracing on" word of the platform (trace-abi.ts), shared with every domain. */
  readonly traceControl = createTraceControl();
  private readonly bell = new Int32Array(this.doorbell);
  private readonly statsBuffer = createStatsBuffer();
  readonly stats = new DomainStats(this.statsBuffer);
  private readonly threads = createThreadRegistry();
  private readonly monitor: Worker;
  private readonly domains = new Map<string, DomainHandle>();
  private readonly volumeIds = new Map<string, number>();
  private readonly acks = new Map<number, { resolve: (reply: MonitorReply) => void; reject: (e: Error) => void }>();
  private readonly listeners: ((event: PlatformEvent) => void)[] = [];
  private nextSeq = 1;
  /** Domain ids held by a domain or by the clean-up after its death; an id is free again once that finished. */
  private readonly domainIds = new Set<number>();
  private lastDomainId = 0;
  private monitorExited = false;
  private readonly monitorExit: Promise<void>;

  /** How long the monitor and the guests poll before they sleep, decided from this host (spin-policy.ts). */
  readonly spin: SpinBudgets;
  /** HVSHARE_GUEST_WAKE_UP_US: a guest wake-up's cost to budget by instead of the measured one (README, knobs). */
  private readonly guestWakeUp = microsFromEnvironment('HVSHARE_GUEST_WAKE_UP_US');

  private constructor(
    private readonly options: PlatformOptions,
    /** What a wake-up costs on this host: the spin budgets of the monitor and the guests come from it. */
    readonly wakeUp: WakeUpCost,
  ) {
    this.spin = spinBudgets(wakeUp, availableParallelism());
    const envSpin = microsFromEnvironment('HVSHARE_MONITOR_SPIN');
    const data: MonitorWorkerData = {
      doorbell: this.doorbell,
      stats: this.statsBuffer,
      spinMicros: options.monitorSpinMicros ?? envSpin ?? this.spin.monitorMicros,
      revokeDeadlineMs: options.revokeDeadlineMs,
      threads: this.threads,
    };
    this.monitor = new Worker(new URL('./monitor-worker.js', import.meta.url), { workerData: data });
    this.monitor.on('message', (reply: MonitorReply) => this.onMonitorReply(reply));
    this.monitor.on('error', (err) => this.emit({ type: 'ring-fault', domain: '-', detail: `monitor crashed: ${err.message}` }));
    this.monitorExit = once(this.monitor, 'exit').then(() => {});
    this.monitor.on('exit', () => {
      this.monitorExited = true;
      for (const ack of this.acks.values()) ack.reject(new Error('monitor exited'));
      this.acks.clear();
    });
  }

  static async boot(options: PlatformOptions): Promise<Platform> {
    wakeUpCost ??= measureWakeUpCost();
    const platform = new Platform(options, await wakeUpCost);
    let id = 0;
    for (const volume of options.volumes) {
      await platform.command({ type: 'add-volume', seq: 0, id, name: volume.name, path: volume.path, readOnly: !!volume.readOnly });
      platform.volumeIds.set(volume.name, id++);
    }
    return platform;
  }

  onEvent(listener: (event: PlatformEvent) => void): void {
    this.listeners.push(listener);
  }

  domain(name: string): DomainHandle {
    const d = this.domains.get(name);
    if (!d) throw new Error(`no domain ${name}`);
    return d;
  }

  listDomains(): DomainHandle[] {
    return [...this.domains.values()];
  }

  counters(name: string): Record<CounterName, number> {
    return this.stats.read(this.domain(name).id);
  }

  /** The monitor thread's sleeps and rounds of work (drains that served requests) since it started. */
  monitorRounds(): ThreadRounds {
    return threadRounds(this.threads, ThreadSlot.MONITOR);
  }

  /** Time each thread of the platform has used since it started (CPU read from /proc now; 0 for one gone). */
  cpu(): PlatformCpu {
    let io: ThreadUse = NO_USE;
    for (let i = 0; i < MAX_IO_THREADS; i++) io = addUse(io, threadUse(this.threads, ThreadSlot.io(i)));
    const domains: Record<string, ThreadUse> = {};
    for (const d of this.domains.values()) if (d.worker && d.state !== 'dead') domains[d.name] = threadUse(this.threads, ThreadSlot.domain(d.id));
    return { main: threadCpuSeconds(process.pid) ?? 0, monitor: threadUse(this.threads, ThreadSlot.MONITOR), io, domains };
  }

  /**
   * Build a domain and boot its guest kernel on a thread of its own. With `guest: false` only the shared pages
   * are built and registered with the monitor; the caller drives them itself (tests that play a hostile guest).
   */
  async createDomain(spec: DomainSpec, options: { guest?: boolean } = {}): Promise<DomainHandle> {
    if (this.domains.has(spec.name)) throw new Error(`domain ${spec.name} already exists`);
    const grants: Grant[] = spec.grants.map((g) => {
      const volumeId = this.volumeIds.get(g.volume);
      if (volumeId === undefined) throw new Error(`domain ${spec.name}: no volume ${g.volume}`);
      return { volumeId, readOnly: g.readOnly };
    });
    const id = this.takeDomainId();
    const pages: DomainPages = {
      ring: new SharedArrayBuffer(RING_BYTES),
      vic: new SharedArrayBuffer(VIC_WORDS * 4),
      memory: new SharedArrayBuffer(spec.memoryBytes),
      trace: createTraceRing(),
    };
    try {
      await this.command({ type: 'add-domain', seq: 0, id, name: spec.name, pages, grants });
    } catch (err) {
      this.domainIds.delete(id);
      throw err;
    }
    let worker: Worker | undefined;
    const window = createDataWindow();
    const changes = new ChangeCount();
    if (options.guest !== false) {
      const data: DomainWorkerData = {
        name: spec.name,
        ...pages,
        doorbell: this.doorbell,
        traceControl: this.traceControl,
        spinMicros: this.guestWakeUp === undefined ? this.spin.guestMicros : spinBudget(this.guestWakeUp, this.spin.cores),
        filesystem: spec.filesystem && { ...spec.filesystem, volume: spec.grants[0]?.volume ?? '(none granted)' },
        threads: { registry: this.threads, slot: ThreadSlot.domain(id) },
        window,
        changes: changes.buffer,
      };
      worker = new Worker(new URL('../guests/domain-worker.js', import.meta.url), { workerData: data });
    }
    const handle = new DomainHandle(id, spec.name, pages, worker, spec, window, changes, new Int32Array(this.traceControl));
    this.domains.set(spec.name, handle);
    if (!worker) {
      handle.state = 'running';
      return handle;
    }
    const booted = new Promise<void>((resolve, reject) => {
      worker.on('message', (m: DomainBooted) => m.booted && resolve());
      worker.on('error', (err) => reject(new Error(`domain ${spec.name} failed to boot: ${err.message}`)));
      worker.on('exit', (code) => reject(new Error(`domain ${spec.name} exited with code ${code} while booting`)));
    });
    worker.on('error', (err) => void this.domainDied(handle, `crashed: ${err.message}`));
    worker.on('exit', (code) => void this.domainDied(handle, `exited with code ${code}`));
    await booted;
    handle.state = 'running';
    this.emit({ type: 'domain-boot', domain: spec.name, detail: `id ${id}` });
    return handle;
  }

  /** Kill a domain's guest kernel abruptly, as a crash would. */
  async killDomain(name: string): Promise<void> {
    const d = this.domain(name);
    await d.worker?.terminate();
    await this.domainDied(d, 'killed');
  }

  /**
   * Unmount every domain's filesystem (journals committed, locks given back), then stop every thread. Each step
   * has a deadline (see stop-deadline.ts): a domain whose unmount is late is stopped without it (what it committed
   * is in its journal, replayed at the next boot), a thread that does not exit is left to the process's exit, and
   * a monitor that does not answer is terminated.
   */
  async shutdown(deadline: StopDeadline = { stepMs: stopStepMs() }): Promise<void> {
    await Promise.all(
      this.listDomains()
        .filter((d) => d.spec.filesystem && d.state === 'running')
        .map((d) => stopStep(deadline, `${d.name}: unmount (journal commit)`, d.call({ kind: 'unmount' }))),
    );
    for (const d of this.domains.values()) {
      if (d.worker && d.state !== 'dead') {
        d.state = 'dead';
        await stopStep(deadline, `${d.name}: worker exit`, d.worker.terminate());
      }
    }
    if (!this.monitorExited) {
      const stopped = this.command({ type: 'shutdown', seq: 0 }).catch(() => {}).then(() => this.monitorExit);
      await stopStep(deadline, 'monitor exit', stopped, () => this.monitor.terminate());
    }
  }

  /**
   * A domain died: fence its I/O, replay its journal (committed transactions reach their home blocks, so nothing
   * committed is lost), and only then release its locks to the domains waiting for them.
   */
  private async domainDied(d: DomainHandle, detail: string): Promise<void> {
    if (this.domains.get(d.name) !== d) return;
    this.domains.delete(d.name);
    const deliberate = d.state === 'dead';
    d.died(detail);
    this.emit({ type: 'domain-exit', domain: d.name, detail });
    // Fenced while it ran: its guest kernel is stopped before anything is replayed behind its back.
    await d.worker?.terminate();
    // After shutdown the monitor is gone and has forgotten every domain anyway.
    await this.command({ type: 'remove-domain', seq: 0, id: d.id }).catch(() => {});
    const grant = d.spec.grants[0];
    if (d.spec.filesystem && grant && !grant.readOnly && !deliberate) {
      const volume = this.options.volumes.find((v) => v.name === grant.volume)!;
      try {
        const replayed = await replayVolumeSlot(volume.path, d.spec.filesystem.slot);
        this.emit({ type: 'recovery', domain: d.name, detail: `journal slot ${d.spec.filesystem.slot}: ${replayed} blocks replayed` });
      } catch (err) {
        this.emit({ type: 'recovery', domain: d.name, detail: `journal replay failed: ${(err as Error).message}` });
      }
    }
    await this.command({ type: 'drop-locks', seq: 0, id: d.id }).catch(() => {});
    // The monitor has forgotten the domain and its locks: the next domain may have its id (and counter slot).
    this.domainIds.delete(d.id);
    d.finishCleanup();
  }

  /**
   * The next free domain id after the last one given, wrapping round as Xen's domids do (0 is never a domain's):
   * a restarted domain gets a new id, and ids come back into use, so any number of boots in total works.
   */
  private takeDomainId(): number {
    for (let step = 1; step < MAX_DOMAINS; step++) {
      const id = ((this.lastDomainId - 1 + step) % (MAX_DOMAINS - 1)) + 1;
      if (this.domainIds.has(id)) continue;
      this.domainIds.add(id);
      this.lastDomainId = id;
      return id;
    }
    throw new Error(`at most ${MAX_DOMAINS - 1} domains at once`);
  }

  /** The monitor's lock table, for inspection. */
  async locks(): Promise<LockSummary[]> {
    const reply = await this.command({ type: 'locks', seq: 0 });
    return reply.type === 'locks' ? reply.locks : [];
  }

  private command(command: MonitorCommand): Promise<MonitorReply> {
    const seq = this.nextSeq++;
    return new Promise<MonitorReply>((resolve, reject) => {
      if (this.monitorExited) return reject(new Error('monitor exited'));
      this.acks.set(seq, { resolve, reject });
      this.monitor.postMessage({ ...command, seq });
      Atomics.add(this.bell, Doorbell.SEQ, 1);
      Atomics.notify(this.bell, Doorbell.SEQ);
    });
  }

  /**
   * The monitor fenced a domain that ignored a revoke past its deadline (its I/O is already stopped): the crash
   * path takes it from there (worker stopped, journal replayed, locks released, restart policy of the caller).
   */
  private fenced(id: number, detail: string): void {
    const d = this.listDomains().find((x) => x.id === id);
    if (d && d.state !== 'dead') void this.domainDied(d, `fenced: ${detail}`);
  }

  private onMonitorReply(reply: MonitorReply): void {
    if (reply.type === 'event') {
      this.emit(reply.event);
      if (reply.event.type === 'fence') this.fenced(reply.event.id, reply.event.detail);
      return;
    }
    const ack = this.acks.get(reply.seq);
    if (!ack) return;
    this.acks.delete(reply.seq);
    if (reply.type === 'error') ack.reject(new Error(reply.message));
    else ack.resolve(reply);
  }

  private emit(event: PlatformEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}
