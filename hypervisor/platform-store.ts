/**
 * The platform store: like XenStore, a small key-value store that holds the platform — its description
 * (volumes, domains, grants) and its runtime records (domain state, the event log, counters). It lives in
 * `<state>/store/` as a level (LevelDB) database with one sublevel per kind of record, JSON values:
 *
 *   meta!format            -> 1
 *   config!platform        -> PlatformConfig
 *   domains!<name>         -> DomainRuntime
 *   counters!<name>        -> Counters
 *   events!<seq, 16 digits> -> EventRecord   (zero-padded so key order is sequence order)
 *
 * It is on the control path only: the monitor adds to counters in memory (`addCounters`, no I/O) and the store
 * writes them in one batch per flush interval (default once a second); events are batched per tick too.
 *
 * Readers in other processes. LevelDB admits one process at a time (a LOCK file), and the running platform
 * (`hvshare up`) keeps the store open for its whole life. So the owner also keeps a status snapshot,
 * `<state>/status.json`: the whole platform description, every domain's runtime record, every counter and the
 * last SNAPSHOT_EVENTS events, rewritten atomically (temporary file + rename) right after opening, shortly after
 * every change (≤ 50 ms for config, domain state and events; at the flush interval for counters) and on close.
 * `readPlatformState(stateDir)` is what `ps`, `stat` and `log` call: it opens the database itself when no one
 * holds it (the platform is down: everything, including the full event log, is read from the database), and
 * otherwise reads the snapshot of the live owner (checking the owner's pid is alive). Copying the database
 * directory instead was rejected: LevelDB compacts and deletes files under a concurrent copier, and the copy can
 * tear. The owner in turn waits briefly (`lockWaitMs`) if a reader holds the LOCK for its short read.
 */
import { Level } from 'level';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { processRuns } from '../fs/image-lock.js';
import { validatePlatform, type PlatformConfig } from './platform-config.js';
import type { PlatformCpu } from './thread-cpu.js';

export const STORE_DIRNAME = 'store';
export const STATUS_FILENAME = 'status.json';
/** How many of the latest events the status snapshot carries. */
export const SNAPSHOT_EVENTS = 1000;
const STORE_FORMAT = 1;
const SEQ_DIGITS = 16;

// ---------------------------------------------------------------------------------------------------------------
// records

export type DomainState = 'defined' | 'running' | 'crashed' | 'stopped';
export const DOMAIN_STATES: readonly DomainState[] = ['defined', 'running', 'crashed', 'stopped'];

export interface DomainRuntime {
  name: string;
  id: number;
  state: DomainState;
  /** Host process that runs the domain's worker (the platform process), while running. */
  pid?: number;
  /** The domain worker's thread id, while running. */
  threadId?: number;
  /** When it last entered `running` / left it (ms since the epoch). */
  bootedAt?: number;
  stoppedAt?: number;
  updatedAt: number;
  /** How many times it has been booted. */
  boots: number;
  /** Worker exit code and a human reason, after it stopped or crashed. */
  exitCode?: number;
  reason?: string;
}

export interface DomainStateInfo {
  pid?: number;
  threadId?: number;
  exitCode?: number;
  reason?: string;
}

export type EventType =
  | 'platform-up'
  | 'platform-down'
  | 'config'
  | 'boot'
  | 'shutdown'
  | 'crash'
  | 'recovery'
  | 'revoke'
  | 'fence'
  | 'volume-error'
  | 'mkfs'
  | 'error'
  | 'info';
export const EVENT_TYPES: readonly EventType[] = [
  'platform-up', 'platform-down', 'config', 'boot', 'shutdown', 'crash', 'recovery', 'revoke', 'fence', 'volume-error', 'mkfs',
  'error', 'info',
];

export interface NewEvent {
  type: EventType;
  domain?: string;
  detail?: string;
  /** Small structured extras (JSON). */
  data?: Record<string, unknown>;
}

export interface EventRecord extends NewEvent {
  /** 1, 2, 3, ... in append order, never reused, continued across reopen. */
  seq: number;
  /** ms since the epoch. */
  time: number;
}

export interface EventQuery {
  /** Only events after this sequence number (exclusive; 0 or absent = from the first). */
  since?: number;
  /** At most this many, the first ones after `since`. */
  limit?: number;
  /** The last this many (after `since`), still in ascending order. Takes precedence over `limit`. */
  tail?: number;
  /** Only events about this domain / of this type. */
  domain?: string;
  type?: EventType;
}

export const COUNTER_NAMES = [
  'requests', 'reads', 'writes', 'merged', 'offloaded', 'flushes', 'errors', 'virqs', 'doorbells', 'revocations', 'bytesRead',
  'bytesWritten',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
export type Counters = Record<CounterName, number>;

export function zeroCounters(): Counters {
  return Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Counters;
}

/** The content of status.json. */
export interface PlatformSnapshot {
  format: 1;
  /** The owner process. */
  pid: number;
  /** false in the last snapshot written by close(). */
  open: boolean;
  openedAt: number;
  writtenAt: number;
  config?: PlatformConfig;
  domains: DomainRuntime[];
  counters: Record<string, Counters>;
  /** CPU seconds per thread since the platform booted (while it runs). */
  cpu?: PlatformCpu;
  lastSeq: number;
  /** The last SNAPSHOT_EVENTS events, ascending. */
  events: EventRecord[];
}

/** What readers get from `readPlatformState`. */
export interface PlatformView {
  /** 'db': read from the database (no process had it open); 'snapshot': from the live owner's status.json. */
  source: 'db' | 'snapshot';
  /** A platform process is running (the owner of the snapshot). With source 'db', any `running` domain record is
   *  left over from a platform that died without stopping it. */
  live: boolean;
  pid?: number;
  /** When the snapshot was written (source 'snapshot'). */
  writtenAt?: number;
  config?: PlatformConfig;
  domains: DomainRuntime[];
  counters: Record<string, Counters>;
  /** CPU seconds per thread of the running platform (source 'snapshot'). */
  cpu?: PlatformCpu;
  lastSeq: number;
  /** The events the query asked for. */
  events: EventRecord[];
  /** false when the snapshot's event tail did not reach back far enough to answer the query in full. */
  eventsComplete: boolean;
}

export interface StoreOpenOptions {
  /** Create the state folder and database if missing (default true). */
  create?: boolean;
  /** Write status.json for readers in other processes (default true). */
  snapshot?: boolean;
  /** Counters flush + snapshot period in ms (default 1000; 0 = only on explicit flush and close). */
  flushIntervalMs?: number;
  /** How long to retry while another process holds the database lock (default 5000 ms). */
  lockWaitMs?: number;
}

// ---------------------------------------------------------------------------------------------------------------

const seqKey = (seq: number) => String(seq).padStart(SEQ_DIGITS, '0');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** True for the error level gives (or wraps) when another process or instance holds the database's LOCK. */
export function isLockedError(e: unknown): boolean {
  for (let err = e as { code?: string; cause?: unknown } | undefined, depth = 0; err && depth < 4; depth++) {
    if (err.code === 'LEVEL_LOCKED') return true;
    err = err.cause as typeof err;
  }
  return false;
}

/**
 * Answers an event query. `ascending` / `descending` yield events after `since` (or more: earlier ones are
 * skipped), oldest or newest first: a database iterator or the snapshot's array.
 */
async function collectEvents(
  ascending: () => AsyncIterable<EventRecord> | Iterable<EventRecord>,
  descending: () => AsyncIterable<EventRecord> | Iterable<EventRecord>,
  q: EventQuery,
): Promise<EventRecord[]> {
  const since = q.since ?? 0;
  const fromEnd = q.tail !== undefined;
  const want = q.tail ?? q.limit ?? Infinity;
  const out: EventRecord[] = [];
  if (want <= 0) return out;
  for await (const ev of fromEnd ? descending() : ascending()) {
    if (ev.seq <= since) {
      if (fromEnd) break;
      continue;
    }
    if (q.domain !== undefined && ev.domain !== q.domain) continue;
    if (q.type !== undefined && ev.type !== q.type) continue;
    out.push(ev);
    if (out.length >= want) break;
  }
  return fromEnd ? out.reverse() : out;
}

type Json = Record<string, unknown>;

export class PlatformStore {
  readonly stateDir: string;
  readonly snapshotPath: string;
  private readonly db: Level<string, Json>;
  private readonly meta;
  private readonly configDb;
  private readonly domainsDb;
  private readonly countersDb;
  private readonly eventsDb;
  private readonly writeSnapshots: boolean;
  private readonly openedAt = Date.now();

  private config: PlatformConfig | undefined;
  private readonly domains = new Map<string, DomainRuntime>();
  private readonly counters = new Map<string, Counters>();
  private readonly dirtyCounters = new Set<string>();
  private seq = 0;
  /** The last SNAPSHOT_EVENTS events, for the snapshot. */
  private recent: EventRecord[] = [];
  private pendingEvents: EventRecord[] = [];
  private eventWrite: Promise<void> | undefined;
  /** Serialises writes that must land in order (event batches, state puts, config). */
  private writes: Promise<unknown> = Promise.resolve();
  private snapshotWrite: Promise<void> = Promise.resolve();
  private snapshotDirty = false;
  private cpu: PlatformCpu | undefined;
  private snapshotSoon: NodeJS.Timeout | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(stateDir: string, db: Level<string, Json>, writeSnapshots: boolean) {
    this.stateDir = stateDir;
    this.snapshotPath = join(stateDir, STATUS_FILENAME);
    this.db = db;
    this.writeSnapshots = writeSnapshots;
    const json = { valueEncoding: 'json' } as const;
    this.meta = db.sublevel<string, unknown>('meta', json);
    this.configDb = db.sublevel<string, PlatformConfig>('config', json);
    this.domainsDb = db.sublevel<string, DomainRuntime>('domains', json);
    this.countersDb = db.sublevel<string, Counters>('counters', json);
    this.eventsDb = db.sublevel<string, EventRecord>('events', json);
  }

  /** Opens (by default creating) the store in `<stateDir>/store`, loads it and writes a first status.json. */
  static async open(stateDir: string, opts: StoreOpenOptions = {}): Promise<PlatformStore> {
    const dir = resolve(stateDir);
    const create = opts.create ?? true;
    const location = join(dir, STORE_DIRNAME);
    if (create) await mkdir(dir, { recursive: true });
    else if (!existsSync(join(location, 'CURRENT'))) throw new NoPlatformError(dir);
    const deadline = Date.now() + (opts.lockWaitMs ?? 5000);
    let db: Level<string, Json>;
    for (;;) {
      db = new Level<string, Json>(location, { valueEncoding: 'json', createIfMissing: create });
      try {
        await db.open();
        break;
      } catch (e) {
        if (!isLockedError(e) || Date.now() >= deadline) {
          if (isLockedError(e)) {
            throw new Error(`platform store ${location} is in use by another process (is \`hvshare up\` running?)`, {
              cause: e,
            });
          }
          throw unusableStore(location, e);
        }
        await sleep(50);
      }
    }
    const store = new PlatformStore(dir, db, opts.snapshot ?? true);
    try {
      await store.load(create);
    } catch (e) {
      await db.close();
      throw e instanceof StoreFormatError ? e : unusableStore(location, e);
    }
    if (store.writeSnapshots) await store.writeSnapshot();
    const every = opts.flushIntervalMs ?? 1000;
    if (every > 0) {
      store.ticker = setInterval(() => void store.tick(), every);
      store.ticker.unref();
    }
    return store;
  }

  private async load(create: boolean): Promise<void> {
    const format = await this.meta.get('format');
    if (format === undefined) {
      if (create) await this.meta.put('format', STORE_FORMAT);
    } else if (format !== STORE_FORMAT) {
      throw new StoreFormatError(`platform store ${this.db.location} has format ${String(format)}, this hvshare knows ${STORE_FORMAT}`);
    }
    this.config = await this.configDb.get('platform');
    for await (const [name, rec] of this.domainsDb.iterator()) this.domains.set(name, rec);
    for await (const [name, c] of this.countersDb.iterator()) this.counters.set(name, { ...zeroCounters(), ...c });
    const last: EventRecord[] = [];
    for await (const ev of this.eventsDb.values({ reverse: true, limit: SNAPSHOT_EVENTS })) last.push(ev);
    this.recent = last.reverse();
    this.seq = this.recent.at(-1)?.seq ?? 0;
  }

  private check(): void {
    if (this.closed) throw new Error('platform store is closed');
  }

  /** Runs `fn` after every write queued before it; the queue survives failures. */
  private queue<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.writes.then(fn);
    this.writes = p.catch(() => undefined);
    return p;
  }

  private changed(soon: boolean): void {
    this.snapshotDirty = true;
    if (soon && this.writeSnapshots && !this.snapshotSoon && !this.closed) {
      this.snapshotSoon = setTimeout(() => {
        this.snapshotSoon = undefined;
        void this.snapshotIfDirty();
      }, 50);
      this.snapshotSoon.unref();
    }
  }

  private async tick(): Promise<void> {
    try {
      await this.flushCounters();
      await this.snapshotIfDirty();
    } catch {
      // A failed periodic flush is retried at the next tick; close() reports errors.
    }
  }

  // --- the platform description --------------------------------------------------------------------------------

  /** The stored platform description, if one was ever put. */
  getConfig(): PlatformConfig | undefined {
    return this.config;
  }

  /**
   * Validates and stores the platform description. Creates a `defined` runtime record for each new domain,
   * keeps the records of domains that stay, and drops the records and counters of domains that are gone (refused
   * while such a domain is running).
   */
  async putConfig(input: unknown): Promise<PlatformConfig> {
    this.check();
    const config = validatePlatform(input);
    const names = new Set(config.domains.map((d) => d.name));
    for (const rec of this.domains.values()) {
      if (!names.has(rec.name) && rec.state === 'running') {
        throw new Error(`cannot remove domain "${rec.name}" from the platform while it is running`);
      }
    }
    const now = Date.now();
    const puts: DomainRuntime[] = [];
    const gone = [...this.domains.keys()].filter((name) => !names.has(name));
    for (const d of config.domains) {
      const old = this.domains.get(d.name);
      if (!old) puts.push({ name: d.name, id: d.id, state: 'defined', updatedAt: now, boots: 0 });
      else if (old.id !== d.id) puts.push({ ...old, id: d.id, updatedAt: now });
    }
    const batch = this.db.batch();
    batch.put('platform', config, { sublevel: this.configDb });
    for (const rec of puts) batch.put(rec.name, rec, { sublevel: this.domainsDb });
    for (const name of gone) {
      batch.del(name, { sublevel: this.domainsDb });
      batch.del(name, { sublevel: this.countersDb });
    }
    await this.queue(() => batch.write());
    this.config = config;
    for (const rec of puts) this.domains.set(rec.name, rec);
    for (const name of gone) {
      this.domains.delete(name);
      this.counters.delete(name);
      this.dirtyCounters.delete(name);
    }
    this.changed(true);
    return config;
  }

  // --- domain runtime state ------------------------------------------------------------------------------------

  getDomain(name: string): DomainRuntime | undefined {
    const rec = this.domains.get(name);
    return rec && { ...rec };
  }

  /** Every domain's runtime record, by domain id. */
  listDomains(): DomainRuntime[] {
    return [...this.domains.values()].sort((a, b) => a.id - b.id).map((r) => ({ ...r }));
  }

  /**
   * Records a domain's state. Entering `running` counts a boot, stamps bootedAt and takes pid (default: this
   * process) and threadId from `info`; leaving it stamps stoppedAt, keeps pid for the record, drops threadId and
   * takes exitCode and reason from `info`.
   */
  async setDomainState(name: string, state: DomainState, info: DomainStateInfo = {}): Promise<DomainRuntime> {
    this.check();
    const old = this.domains.get(name);
    if (!old) throw new Error(`unknown domain "${name}"`);
    if (!DOMAIN_STATES.includes(state)) throw new Error(`bad domain state ${JSON.stringify(state)}`);
    const now = Date.now();
    const rec: DomainRuntime = { name, id: old.id, state, updatedAt: now, boots: old.boots };
    if (state === 'running') {
      rec.pid = info.pid ?? process.pid;
      if (info.threadId !== undefined) rec.threadId = info.threadId;
      // Why a running domain is not quite well (its volume turned read-only), shown by `hvshare ps`.
      if (info.reason !== undefined) rec.reason = info.reason;
      if (old.state === 'running') {
        rec.bootedAt = old.bootedAt;
      } else {
        rec.bootedAt = now;
        rec.boots++;
      }
    } else {
      if (old.bootedAt !== undefined) rec.bootedAt = old.bootedAt;
      const pid = info.pid ?? old.pid;
      if (pid !== undefined) rec.pid = pid;
      if (state !== 'defined') rec.stoppedAt = old.state === state ? old.stoppedAt ?? now : now;
      if (info.exitCode !== undefined) rec.exitCode = info.exitCode;
      if (info.reason !== undefined) rec.reason = info.reason;
    }
    this.domains.set(name, rec);
    await this.queue(() => this.domainsDb.put(name, rec));
    this.changed(true);
    return { ...rec };
  }

  /**
   * Marks `crashed` every domain recorded as running in a process other than this one that no longer exists
   * (the platform died without stopping it). The toolstack calls this when it brings a platform up; it returns
   * the domains it marked so the caller can log them.
   */
  async reapStale(): Promise<DomainRuntime[]> {
    const reaped: DomainRuntime[] = [];
    for (const rec of this.listDomains()) {
      if (rec.state !== 'running' || rec.pid === process.pid) continue;
      if (rec.pid !== undefined && processRuns(rec.pid)) continue;
      reaped.push(
        await this.setDomainState(rec.name, 'crashed', { reason: `platform process ${rec.pid ?? '?'} ended while it ran` }),
      );
    }
    return reaped;
  }

  // --- the event log -------------------------------------------------------------------------------------------

  /** The sequence number of the last event appended (0 when there is none). */
  get lastSeq(): number {
    return this.seq;
  }

  /**
   * Appends an event. Its sequence number is assigned at once, so the log keeps call order; the write joins the
   * others of the same tick in one batch. Resolves once it is in the database.
   */
  appendEvent(ev: NewEvent): Promise<EventRecord> {
    this.check();
    if (!EVENT_TYPES.includes(ev.type)) throw new Error(`bad event type ${JSON.stringify(ev.type)}`);
    const rec: EventRecord = { seq: ++this.seq, time: Date.now(), type: ev.type };
    if (ev.domain !== undefined) rec.domain = ev.domain;
    if (ev.detail !== undefined) rec.detail = ev.detail;
    if (ev.data !== undefined) rec.data = ev.data;
    this.pendingEvents.push(rec);
    this.recent.push(rec);
    if (this.recent.length > SNAPSHOT_EVENTS) this.recent.splice(0, this.recent.length - SNAPSHOT_EVENTS);
    if (!this.eventWrite) {
      this.eventWrite = this.queue(async () => {
        await new Promise<void>((r) => setImmediate(r));
        const batch = this.pendingEvents;
        this.pendingEvents = [];
        this.eventWrite = undefined;
        await this.eventsDb.batch(batch.map((e) => ({ type: 'put' as const, key: seqKey(e.seq), value: e })));
      });
    }
    const written = this.eventWrite;
    this.changed(true);
    return written.then(() => rec);
  }

  /** Events from the database, oldest first, as `q` selects (see EventQuery). */
  async listEvents(q: EventQuery = {}): Promise<EventRecord[]> {
    this.check();
    await this.writes;
    const gt = seqKey(q.since ?? 0);
    return collectEvents(
      () => this.eventsDb.values({ gt }),
      () => this.eventsDb.values({ gt, reverse: true }),
      q,
    );
  }

  // --- counters ------------------------------------------------------------------------------------------------

  /** Adds to a domain's counters in memory only (no I/O); the next flush writes them. */
  addCounters(domain: string, delta: Partial<Counters>): void {
    this.check();
    let c = this.counters.get(domain);
    if (!c) {
      if (!this.domains.has(domain)) throw new Error(`unknown domain "${domain}"`);
      this.counters.set(domain, (c = zeroCounters()));
    }
    let changed = false;
    for (const key in delta) {
      const v = delta[key as CounterName];
      if (!(key in c)) throw new Error(`unknown counter "${key}"`);
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`bad value for counter "${key}": ${v}`);
      c[key as CounterName] += v;
      changed ||= v !== 0;
    }
    // Nothing moved (an idle platform): nothing to write.
    if (changed) this.dirtyCounters.add(domain);
  }

  /** The platform's CPU seconds per thread, for status.json (live only, not kept in the database). */
  setCpu(cpu: PlatformCpu): void {
    const before = this.cpu;
    this.cpu = cpu;
    // Rewritten for a tenth of a CPU second somewhere, or a domain come or gone; not for every tick the sampling
    // itself costs, nor for sleeping time that grows whenever a thread wakes (an idle platform writes nothing).
    const cpus = (c: PlatformCpu | undefined) => (c ? [c.main, c.monitor.cpu, c.io.cpu, ...Object.values(c.domains).map((d) => d.cpu)] : []);
    const [a, b] = [cpus(before), cpus(cpu)];
    const domainsChanged = Object.keys(before?.domains ?? {}).join() !== Object.keys(cpu.domains).join();
    if (domainsChanged || b.some((x, i) => Math.abs(x - (a[i] ?? 0)) >= 0.1)) this.snapshotDirty = true;
    else this.cpu = before;
  }

  /** A domain's counters including what is not flushed yet. */
  getCounters(domain: string): Counters {
    return { ...(this.counters.get(domain) ?? zeroCounters()) };
  }

  /** Every domain's counters, by domain name. */
  allCounters(): Record<string, Counters> {
    const out: Record<string, Counters> = {};
    for (const name of this.domains.keys()) out[name] = this.getCounters(name);
    return out;
  }

  /** Writes the counters changed since the last flush, all in one batch. Called by the flush timer and close(). */
  async flushCounters(): Promise<void> {
    if (this.dirtyCounters.size === 0) return;
    const ops = [...this.dirtyCounters].map((name) => ({
      type: 'put' as const,
      key: name,
      value: { ...this.counters.get(name)! },
    }));
    this.dirtyCounters.clear();
    try {
      await this.queue(() => this.countersDb.batch(ops));
    } catch (e) {
      for (const op of ops) this.dirtyCounters.add(op.key);
      throw e;
    }
    this.changed(false);
  }

  /** Zeroes the counters of one domain, or of all. */
  async resetCounters(domain?: string): Promise<void> {
    this.check();
    const names = domain === undefined ? [...this.domains.keys()] : [domain];
    for (const name of names) {
      if (!this.domains.has(name)) throw new Error(`unknown domain "${name}"`);
      this.counters.set(name, zeroCounters());
      this.dirtyCounters.add(name);
    }
    await this.flushCounters();
  }

  // --- the status snapshot for other processes -------------------------------------------------------------------

  /** What status.json holds, from memory. */
  view(): PlatformSnapshot {
    return {
      format: 1,
      pid: process.pid,
      open: !this.closed,
      openedAt: this.openedAt,
      writtenAt: Date.now(),
      ...(this.config ? { config: this.config } : {}),
      domains: this.listDomains(),
      counters: this.allCounters(),
      ...(this.cpu && !this.closed ? { cpu: this.cpu } : {}),
      lastSeq: this.seq,
      events: this.recent.slice(),
    };
  }

  /** Writes status.json now (atomically: temporary file, then rename), after any snapshot already under way. */
  writeSnapshot(): Promise<void> {
    this.snapshotDirty = false;
    const snap = this.view();
    const next = this.snapshotWrite.then(async () => {
      const tmp = `${this.snapshotPath}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify(snap));
      await rename(tmp, this.snapshotPath);
    });
    this.snapshotWrite = next.catch(() => undefined);
    return next;
  }

  private async snapshotIfDirty(): Promise<void> {
    if (this.writeSnapshots && this.snapshotDirty) await this.writeSnapshot();
  }

  /** Flushes events and counters, writes the last snapshot (open: false) and closes the database. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.ticker) clearInterval(this.ticker);
    if (this.snapshotSoon) clearTimeout(this.snapshotSoon);
    try {
      await this.writes;
      await this.flushCounters();
      await this.writes;
    } finally {
      this.closed = true;
      try {
        if (this.writeSnapshots) await this.writeSnapshot();
      } finally {
        await this.db.close();
      }
    }
  }
}

/** The store is of another format than this hvshare's. */
class StoreFormatError extends Error {}

/** level's own words ("Database failed to open") name neither the folder nor what to do: these do. */
function unusableStore(location: string, e: unknown): Error {
  let cause = e as { message?: string; cause?: unknown } | undefined;
  while (cause?.cause) cause = cause.cause as typeof cause;
  return new Error(
    `platform store ${location} cannot be read (${cause?.message ?? String(e)}): it is damaged or not an hvshare ` +
      'platform store; move it away and `hvshare up` makes a new one (volume images are kept apart and stay usable)',
    { cause: e },
  );
}

/** There is no platform store in the state folder. */
export class NoPlatformError extends Error {
  readonly code = 'ENOPLATFORM';
  constructor(stateDir: string) {
    super(`no platform in ${stateDir} (no ${STORE_DIRNAME}/ database): bring one up with \`hvshare up\``);
    this.name = 'NoPlatformError';
  }
}

/** Reads and parses status.json; undefined when it is missing or unreadable (e.g. torn by a crash). */
export async function readSnapshot(stateDir: string): Promise<PlatformSnapshot | undefined> {
  try {
    const snap = JSON.parse(await readFile(join(resolve(stateDir), STATUS_FILENAME), 'utf8')) as PlatformSnapshot;
    return snap?.format === 1 && typeof snap.pid === 'number' ? snap : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads the platform from any process: from the database when no process holds it, otherwise from the live
 * owner's status.json. Retries for `waitMs` (default 3000) while the database is locked but no live snapshot is
 * there yet (the owner is opening). Throws NoPlatformError when the state folder has no store.
 */
export async function readPlatformState(
  stateDir: string,
  q: EventQuery & { waitMs?: number } = {},
): Promise<PlatformView> {
  const dir = resolve(stateDir);
  const deadline = Date.now() + (q.waitMs ?? 3000);
  for (;;) {
    let locked = false;
    try {
      const store = await PlatformStore.open(dir, { create: false, snapshot: false, flushIntervalMs: 0, lockWaitMs: 0 });
      try {
        const events = await store.listEvents(q);
        return {
          source: 'db',
          live: false,
          ...(store.getConfig() ? { config: store.getConfig() } : {}),
          domains: store.listDomains(),
          counters: store.allCounters(),
          lastSeq: store.lastSeq,
          events,
          eventsComplete: true,
        };
      } finally {
        await store.close();
      }
    } catch (e) {
      if (!isLockedError(e)) throw e;
      locked = true;
    }
    const snap = locked ? await readSnapshot(dir) : undefined;
    if (snap && processRuns(snap.pid)) return viewOfSnapshot(snap, q);
    if (Date.now() >= deadline) {
      throw new Error(`platform store in ${dir} is held by another process that has written no status snapshot`);
    }
    await sleep(50);
  }
}

async function viewOfSnapshot(snap: PlatformSnapshot, q: EventQuery): Promise<PlatformView> {
  const events = await collectEvents(
    () => snap.events,
    () => snap.events.slice().reverse(),
    q,
  );
  const since = q.since ?? 0;
  const oldest = snap.events[0]?.seq ?? snap.lastSeq + 1;
  const reachesBack = oldest <= since + 1;
  // A tail that got all it asked for is complete even when the snapshot does not reach back to `since`.
  const filled = q.tail !== undefined && events.length >= q.tail;
  return {
    source: 'snapshot',
    live: true,
    pid: snap.pid,
    writtenAt: snap.writtenAt,
    ...(snap.config ? { config: snap.config } : {}),
    domains: snap.domains,
    counters: snap.counters,
    ...(snap.cpu ? { cpu: snap.cpu } : {}),
    lastSeq: snap.lastSeq,
    events,
    eventsComplete: reachesBack || filled,
  };
}
