import { ImageLock } from '../fs/image-lock.js';
import { stat } from 'node:fs/promises';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { dirtyJournalSlots, recoverJournals } from '../fs/journal.js';
import { readSuperblock } from '../fs/layout.js';
import { formatNewImage } from '../fs/mkfs.js';
import { mountCheck } from '../fs/mount-check.js';
import { defaultPlatform, formatSize, resolveImagePath, validatePlatform, type PlatformConfig, type VolumeConfig } from './platform-config.js';
import { checkConfigAgainstImages } from './image-config-check.js';
import { stopStep, stopStepMs, type StopDeadline } from './stop-deadline.js';
import { PlatformStore, type Counters, type NewEvent } from './platform-store.js';
import { Platform, type DomainHandle, type DomainSpec, type PlatformEvent } from './toolstack.js';

/** A domain that crashes more often than this within the window is left down. */
const RESTART_LIMIT = 3;
const RESTART_WINDOW_MS = 60_000;
import { Counter, type CounterName } from './domain-stats.js';
import { addUse, NO_USE, type ThreadUse } from './thread-cpu.js';
import type { LockSummary } from './control-protocol.js';

export interface BootOptions {
  stateDir: string;
  /** A validated platform description to (re)define the platform with; default: the stored one, else the embedded default. */
  config?: PlatformConfig;
  /** Told about everything that goes into the event log. */
  onEvent?: (event: NewEvent) => void;
}

/** Monitor counters -> the store's counter names. */
const COUNTER_MAP: [CounterName, keyof Counters][] = [
  ['REQUESTS', 'requests'],
  ['READS', 'reads'],
  ['WRITES', 'writes'],
  ['MERGED', 'merged'],
  ['OFFLOADED', 'offloaded'],
  ['FLUSHES', 'flushes'],
  ['ERRORS', 'errors'],
  ['VIRQS', 'virqs'],
  ['REVOKES', 'revocations'],
  ['READ_BYTES', 'bytesRead'],
  ['WRITE_BYTES', 'bytesWritten'],
];

/**
 * A platform booted from its store, as `hvshare up` runs it: the store holds the description (volumes, domains,
 * grants, memory), the toolstack creates and formats missing images, recovers journals left by a crash, boots the
 * monitor and the domains, and keeps domain states, the event log and counters in the store while it runs.
 */
export class StoredPlatform {
  private ticker: NodeJS.Timeout | undefined;
  private readonly lastCounters = new Map<string, Record<CounterName, number>>();
  /** Per domain, the CPU seconds of the threads it ran on before its last restart, and of its current one. */
  private readonly cpuBefore = new Map<string, ThreadUse>();
  private readonly threadCpu = new Map<string, ThreadUse>();
  /** Samples in a row in which no counter moved (CPU is read once in ten of them). */
  private quietSamples = 0;
  private stopping = false;
  private readonly handles = new Map<string, DomainHandle>();
  private readonly crashTimes = new Map<string, number[]>();
  private readonly restartListeners: ((domain: DomainHandle) => void)[] = [];
  /** Volumes that turned read-only after a domain found corruption, and why (shown per domain by `hvshare ps`). */
  private readonly volumeErrors = new Map<string, string>();
  /** The images' advisory locks (fs/image-lock.ts): `fsck --repair` refuses an image while they are held. */
  private imageLocks: ImageLock[] = [];

  private constructor(
    readonly store: PlatformStore,
    readonly platform: Platform,
    readonly config: PlatformConfig,
    private readonly onEvent: (event: NewEvent) => void,
  ) {}

  static async boot(options: BootOptions): Promise<StoredPlatform> {
    const onEvent = options.onEvent ?? (() => {});
    const store = await PlatformStore.open(options.stateDir);
    const log = (event: NewEvent) => {
      onEvent(event);
      void store.appendEvent(event);
    };
    let platform: Platform | undefined;
    const imageLocks: ImageLock[] = [];
    try {
      const wanted = validatePlatform(options.config ?? store.getConfig() ?? defaultPlatform(store.stateDir));
      await checkConfigAgainstImages(store.stateDir, wanted);
      const config = await store.putConfig(wanted);
      for (const stale of await store.reapStale()) {
        log({ type: 'crash', domain: stale.name, detail: stale.reason ?? 'platform ended while the domain ran' });
      }
      for (const volume of config.volumes) {
        imageLocks.push(await ImageLock.acquire(resolveImagePath(store.stateDir, volume), `hvshare up --state ${store.stateDir}`));
        await prepareVolume(store.stateDir, volume, log);
      }
      platform = await Platform.boot({
        volumes: config.volumes.map((v) => ({ name: v.name, path: resolveImagePath(store.stateDir, v) })),
        revokeDeadlineMs: config.revokeDeadlineMs,
      });
      const running = new StoredPlatform(store, platform, config, onEvent);
      running.imageLocks = imageLocks;
      platform.onEvent((e) => running.record(e));
      const { monitorMicros, guestMicros, reason } = platform.spin;
      log({
        type: 'platform-up',
        detail:
          `${config.volumes.length} volume(s), ${config.domains.length} domain(s); spin budgets ` +
          `${monitorMicros.toFixed(1)} µs (monitor) / ${guestMicros.toFixed(1)} µs (guest): ${reason}`,
      });
      for (const domain of config.domains) {
        const first = domain.grants[0];
        await running.start({
          name: domain.name,
          memoryBytes: domain.memory << 20,
          grants: domain.grants.map((g) => ({ volume: g.volume, readOnly: g.mode === 'ro' })),
          filesystem: first ? { slot: first.slot } : undefined,
        });
      }
      running.ticker = setInterval(() => running.sampleCounters(), 1000);
      running.ticker.unref();
      return running;
    } catch (err) {
      await platform?.shutdown().catch(() => {});
      for (const lock of imageLocks) await lock.release();
      await store.close();
      throw err;
    }
  }

  /** Called with the new handle each time a crashed domain is booted again. */
  onRestart(listener: (domain: DomainHandle) => void): void {
    this.restartListeners.push(listener);
  }

  private async start(spec: DomainSpec): Promise<DomainHandle> {
    const handle = await this.platform.createDomain(spec);
    this.handles.set(spec.name, handle);
    // A restarted domain's monitor counters start from zero again, and so does its new thread's CPU time.
    this.lastCounters.delete(spec.name);
    const gone = this.threadCpu.get(spec.name);
    if (gone) this.cpuBefore.set(spec.name, addUse(this.cpuBefore.get(spec.name) ?? NO_USE, gone));
    this.threadCpu.delete(spec.name);
    await this.store.setDomainState(spec.name, 'running', { threadId: handle.worker?.threadId, reason: this.volumeErrorsOf(spec) });
    return handle;
  }

  /**
   * Boot a crashed domain again once the toolstack has fenced it, replayed its journal and released its locks;
   * a domain that crashes RESTART_LIMIT times within RESTART_WINDOW_MS stays down.
   */
  private async restart(dead: DomainHandle): Promise<void> {
    const now = Date.now();
    const recent = (this.crashTimes.get(dead.name) ?? []).filter((t) => now - t < RESTART_WINDOW_MS).concat(now);
    this.crashTimes.set(dead.name, recent);
    await dead.cleanedUp;
    if (this.stopping) return;
    if (recent.length > RESTART_LIMIT) {
      this.log({ type: 'error', domain: dead.name, detail: `crashed ${recent.length} times within ${RESTART_WINDOW_MS / 1000} s; left down` });
      return;
    }
    try {
      const handle = await this.start(dead.spec);
      this.log({ type: 'info', domain: dead.name, detail: 'restarted after a crash' });
      for (const listener of this.restartListeners) listener(handle);
    } catch (err) {
      this.log({ type: 'error', domain: dead.name, detail: `restart failed: ${(err as Error).message}` });
    }
  }

  /** What `hvshare ps` says of a domain whose volumes have errors (undefined: none has). */
  private volumeErrorsOf(spec: DomainSpec): string | undefined {
    const reasons = spec.grants.filter((g) => this.volumeErrors.has(g.volume)).map((g) => `volume ${g.volume} read-only (errors): ${this.volumeErrors.get(g.volume)}`);
    return reasons.length > 0 ? reasons.join('; ') : undefined;
  }

  /** A domain found corruption on `volume`: logged, and every domain with a grant on it shows it in `hvshare ps`. */
  private volumeError(e: Extract<PlatformEvent, { type: 'volume-error' }>): void {
    const detail = e.readOnly ? `found on volume ${e.volume} through a read-only grant (the volume stays writable): ${e.detail}` : `volume ${e.volume} turned read-only for every domain: ${e.detail}`;
    this.log({ type: 'volume-error', domain: e.domain, detail, data: { volume: e.volume } });
    if (e.readOnly || this.volumeErrors.has(e.volume)) return;
    this.volumeErrors.set(e.volume, e.detail);
    for (const [name, handle] of this.handles) {
      const reason = this.volumeErrorsOf(handle.spec);
      if (reason && handle.state !== 'dead') void this.store.setDomainState(name, 'running', { reason }).catch(() => {});
    }
  }

  domains(): DomainHandle[] {
    return this.platform.listDomains();
  }

  /** The monitor's cluster locks: holders, waiters, generations, revocations. */
  locks(): Promise<LockSummary[]> {
    return this.platform.locks();
  }

  /** Totals since boot over every domain (for the live status line). */
  totals(): Record<CounterName, number> {
    const sum = Object.fromEntries(Object.keys(Counter).map((k) => [k, 0])) as Record<CounterName, number>;
    for (const d of this.platform.listDomains()) {
      for (const [name, value] of Object.entries(this.platform.counters(d.name))) sum[name as CounterName] += value;
    }
    return sum;
  }

  /**
   * Unmount every domain's filesystem (journals committed), stop the threads, record it all, close the store;
   * each step under `deadline` (a forced step is logged as an error event).
   */
  async shutdown(reason: string, deadline: StopDeadline = { stepMs: stopStepMs() }): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.ticker);
    this.sampleCounters();
    const names = this.platform.listDomains().map((d) => d.name);
    const logged: StopDeadline = {
      ...deadline,
      onForced: (what) => {
        deadline.onForced?.(what);
        this.log({ type: 'error', detail: `stop: ${what}` });
      },
    };
    await this.platform.shutdown(logged);
    for (const name of names) {
      await this.store.setDomainState(name, 'stopped', { reason });
      this.log({ type: 'shutdown', domain: name, detail: reason });
    }
    this.log({ type: 'platform-down', detail: reason });
    for (const lock of this.imageLocks) await lock.release();
    // Told to the caller only: the store cannot log its own close.
    await stopStep(deadline, 'platform store close', this.store.close());
  }

  private log(event: NewEvent): void {
    this.onEvent(event);
    void this.store.appendEvent(event);
  }

  private record(e: PlatformEvent): void {
    switch (e.type) {
      case 'domain-exit': {
        if (this.stopping) return;
        this.log({ type: 'crash', domain: e.domain, detail: e.detail });
        void this.store.setDomainState(e.domain, 'crashed', { reason: e.detail }).catch(() => {});
        const dead = this.handles.get(e.domain);
        if (dead) void this.restart(dead);
        return;
      }
      case 'domain-boot':
        return this.log({ type: 'boot', domain: e.domain, detail: e.detail });
      case 'recovery':
        return this.log({ type: 'recovery', domain: e.domain, detail: e.detail });
      case 'revoke':
        return this.log({ type: 'revoke', domain: e.domain, detail: e.detail });
      case 'ring-fault':
      case 'io-error':
        return this.log({ type: 'error', domain: e.domain, detail: e.detail });
      case 'fence':
        return this.log({ type: 'fence', domain: e.domain, detail: e.detail });
      case 'volume-error':
        return this.volumeError(e);
    }
  }

  /** Move the monitor's counters into the store (batched there; never per request). */
  private sampleCounters(): void {
    let moved = false;
    for (const d of this.platform.listDomains()) {
      const now = this.platform.counters(d.name);
      const before = this.lastCounters.get(d.name);
      const delta: Partial<Counters> = {};
      for (const [from, to] of COUNTER_MAP) {
        delta[to] = now[from] - (before?.[from] ?? 0);
        moved ||= delta[to] !== 0;
      }
      this.lastCounters.set(d.name, now);
      this.store.addCounters(d.name, delta);
    }
    // Reading every thread's CPU costs the idle platform more than anything else it does: while no request moves,
    // once in ten samples is enough (stat then shows CPU at most ten seconds old).
    if (moved || ++this.quietSamples >= 10) {
      this.quietSamples = 0;
      this.sampleCpu();
    }
  }

  /** Time per thread since boot, for stat; a domain's includes the threads it ran on before it was restarted. */
  private sampleCpu(): void {
    const now = this.platform.cpu();
    for (const [name, use] of Object.entries(now.domains)) {
      this.threadCpu.set(name, use);
      const before = this.cpuBefore.get(name);
      if (before) now.domains[name] = addUse(use, before);
    }
    this.store.setCpu(now);
  }
}

/** Create and format a missing image; replay journals a crash left committed (no domain runs yet). */
async function prepareVolume(stateDir: string, volume: VolumeConfig, log: (e: NewEvent) => void): Promise<void> {
  const path = resolveImagePath(stateDir, volume);
  if (!(await stat(path).then((s) => s.size > 0, () => false))) {
    await formatNewImage(path, volume.size, { slots: volume.slots });
    log({ type: 'mkfs', detail: `${volume.name}: ${formatSize(volume.size)} at ${path}, ${volume.slots} journal slots` });
    return;
  }
  const dev = await FileBlockDevice.open(path);
  try {
    const sb = await readSuperblock(dev).catch((error: Error & { detail?: string }) => {
      throw new Error(`volume ${volume.name} (${path}): ${error.detail ?? error.message}`);
    });
    // All of them at once: records of one block in several journals replay in the order they were made.
    const slots = await dirtyJournalSlots(dev, sb);
    if (slots.length > 0) {
      const blocks = await recoverJournals(dev, slots, sb);
      log({ type: 'recovery', detail: `${volume.name}: journal slot${slots.length > 1 ? 's' : ''} ${slots.join(', ')} replayed (${blocks} blocks)` });
    }
    const problems = await mountCheck(dev);
    if (problems.length > 0) {
      throw new Error(
        `volume ${volume.name} (${path}) fails the check before mounting: ${problems.join('; ')}. ` +
          `It is not mounted; \`hvshare fsck ${path}\` gives the full report`,
      );
    }
  } finally {
    await dev.close();
  }
}
