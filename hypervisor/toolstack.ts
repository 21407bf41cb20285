import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { DOORBELL_WORDS, Doorbell, RING_BYTES, VIC_WORDS } from './abi.js';
import { createStatsBuffer, DomainStats, MAX_DOMAINS, type CounterName } from './domain-stats.js';
import type { DomainPages, Grant, MonitorEvent } from './monitor.js';
import type { MonitorCommand, MonitorReply, MonitorWorkerData } from './monitor-protocol.js';
import { createThreadRegistry, MAX_IO_THREADS, registeredThread, threadCpuSeconds, ThreadSlot, type PlatformCpu } from './thread-cpu.js';
import type { AgentMessage, AgentReply, AgentRequest, AgentResult, DomainBooted } from '../guests/agent-protocol.js';
import type { DomainWorkerData } from '../guests/domain-worker.js';
import { IoError } from '../fs/block-device.js';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { replayJournal } from '../fs/journal.js';

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
  /** Polling window of the monitor before it sleeps, in microseconds. */
  monitorSpinMicros?: number;
  /** Polling window of each guest kernel before it sleeps, in microseconds. */
  guestSpinMicros?: number;
  /** How long a lock holder has to answer a revoke before the monitor fences it (default: the monitor's). */
  revokeDeadlineMs?: number;
}

export type PlatformEvent =
  | MonitorEvent
  | { type: 'domain-exit'; domain: string; detail: string }
  | { type: 'domain-boot'; domain: string; detail: string }
  | { type: 'recovery'; domain: string; detail: string };

/** A running domain as the toolstack sees it. */
export class DomainHandle {
  private nextSeq = 1;
  private readonly calls = new Map<number, { resolve: (r: AgentResult) => void; reject: (e: Error) => void }>();
  state: 'booting' | 'running' | 'dead' = 'booting';

  constructor(
    readonly id: number,
    readonly name: string,
    readonly pages: DomainPages,
    readonly worker: Worker | undefined,
    readonly spec: DomainSpec,
  ) {
    worker?.on('message', (message: AgentReply | DomainBooted) => {
      if ('booted' in message) return;
      const call = this.calls.get(message.seq);
      if (!call) return;
      this.calls.delete(message.seq);
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
    return new Promise<T>((resolve, reject) => {
      this.calls.set(seq, { resolve: resolve as (r: AgentResult) => void, reject });
      this.worker!.postMessage({ seq, request } satisfies AgentMessage, transfer);
    });
  }

  /** @internal Called by the toolstack once it finished cleaning up after the domain's death. */
  declare finishCleanup: () => void;

  /** Resolves once a dead domain is fully cleaned up: fenced, its journal replayed, its locks released. */
  readonly cleanedUp = new Promise<void>((resolve) => (this.finishCleanup = resolve));

  /** The domain died: fail every call still waiting for it. */
  died(detail: string): void {
    this.state = 'dead';
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
  private readonly bell = new Int32Array(this.doorbell);
  private readonly statsBuffer = createStatsBuffer();
  readonly stats = new DomainStats(this.statsBuffer);
  private readonly threads = createThreadRegistry();
  private readonly monitor: Worker;
  private readonly domains = new Map<string, DomainHandle>();
  private readonly volumeIds = new Map<string, number>();
  private readonly acks = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private readonly listeners: ((event: PlatformEvent) => void)[] = [];
  private nextSeq = 1;
  private nextDomainId = 1;
  private monitorExited = false;
  private readonly monitorExit: Promise<void>;

  private constructor(private readonly options: PlatformOptions) {
    const data: MonitorWorkerData = {
      doorbell: this.doorbell,
      stats: this.statsBuffer,
      spinMicros: options.monitorSpinMicros ?? Number(process.env.HVSHARE_MONITOR_SPIN ?? 50),
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
    const platform = new Platform(options);
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

  /** CPU seconds each thread of the platform has used since it started (read from /proc now; 0 for one gone). */
  cpu(): PlatformCpu {
    const of = (slot: number) => threadCpuSeconds(registeredThread(this.threads, slot)) ?? 0;
    let io = 0;
    for (let i = 0; i < MAX_IO_THREADS; i++) io += of(ThreadSlot.io(i));
    const domains: Record<string, number> = {};
    for (const d of this.domains.values()) if (d.worker && d.state !== 'dead') domains[d.name] = of(ThreadSlot.domain(d.id));
    return { main: threadCpuSeconds(process.pid) ?? 0, monitor: of(ThreadSlot.MONITOR), io, domains };
  }

  /**
   * Build a domain and boot its guest kernel on a thread of its own. With `guest: false` only the shared pages
   * are built and registered with the monitor; the caller drives them itself (tests that play a hostile guest).
   */
  async createDomain(spec: DomainSpec, options: { guest?: boolean } = {}): Promise<DomainHandle> {
    if (this.domains.has(spec.name)) throw new Error(`domain ${spec.name} already exists`);
    if (this.nextDomainId >= MAX_DOMAINS) throw new Error(`at most ${MAX_DOMAINS - 1} domains`);
    const grants: Grant[] = spec.grants.map((g) => {
      const volumeId = this.volumeIds.get(g.volume);
      if (volumeId === undefined) throw new Error(`domain ${spec.name}: no volume ${g.volume}`);
      return { volumeId, readOnly: g.readOnly };
    });
    const id = this.nextDomainId++;
    const pages: DomainPages = {
      ring: new SharedArrayBuffer(RING_BYTES),
      vic: new SharedArrayBuffer(VIC_WORDS * 4),
      memory: new SharedArrayBuffer(spec.memoryBytes),
    };
    await this.command({ type: 'add-domain', seq: 0, id, name: spec.name, pages, grants });
    let worker: Worker | undefined;
    if (options.guest !== false) {
      const data: DomainWorkerData = {
        name: spec.name,
        ...pages,
        doorbell: this.doorbell,
        spinMicros: this.options.guestSpinMicros ?? 30,
        filesystem: spec.filesystem && { ...spec.filesystem, volume: spec.grants[0]?.volume ?? '(none granted)' },
        threads: { registry: this.threads, slot: ThreadSlot.domain(id) },
      };
      worker = new Worker(new URL('../guests/domain-worker.js', import.meta.url), { workerData: data });
    }
    const handle = new DomainHandle(id, spec.name, pages, worker, spec);
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

  /** Unmount every domain's filesystem (journals committed, locks given back), then stop every thread. */
  async shutdown(): Promise<void> {
    await Promise.all(
      this.listDomains()
        .filter((d) => d.spec.filesystem && d.state === 'running')
        .map((d) => d.call({ kind: 'unmount' }).catch(() => {})),
    );
    for (const d of this.domains.values()) {
      if (d.worker && d.state !== 'dead') {
        d.state = 'dead';
        await d.worker.terminate();
      }
    }
    if (!this.monitorExited) {
      await this.command({ type: 'shutdown', seq: 0 }).catch(() => {});
      await this.monitorExit.catch(() => {});
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
    d.finishCleanup();
  }

  private command(command: MonitorCommand): Promise<void> {
    const seq = this.nextSeq++;
    return new Promise<void>((resolve, reject) => {
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
    if (reply.type === 'ack') ack.resolve();
    else ack.reject(new Error(reply.message));
  }

  private emit(event: PlatformEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}
