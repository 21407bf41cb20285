import { performance } from 'node:perf_hooks';
import {
  high32,
  LOCK_BLOCK_BYTES,
  LOCK_BLOCK_READ,
  LOCK_HINT_READ,
  LOCK_EXCLUSIVE,
  LOCK_NAME_LIMIT,
  LOCK_SHARED,
  Line,
  low32,
  Op,
  Ring,
  RING_SLOTS,
  SECTOR,
  Status,
  u32Sub,
  VBD_READ_ONLY,
} from './abi.js';
import { describeBackendError, errnoName } from './backend-errors.js';
import type { BlockBackend } from './block-backend.js';
import { Counter, DomainStats } from './domain-stats.js';
import { createPoolBuffer, Dom, emptyJob, JOB_REQUESTS, PoolControl, type PoolJob } from './io-pool.js';
import { LockTable, type Grant as LockGrant, type LockMode, type ReleaseResult } from './lock-table.js';
import type { LockSummary } from './control-protocol.js';
import { summarizeLocks } from './lock-summary.js';
import { parse, type BlockRequest, type ParserGrant, type RefusedRequest } from './request-parser.js';
import { createTraceRing, Stage, TraceRing } from './trace-abi.js';
import { VirtualInterruptController } from './virq.js';

/** A volume the monitor serves, with its backend. */
export interface Volume {
  id: number;
  name: string;
  backend: BlockBackend;
}

/** One entry of a domain's grant table: which volume it may reach through vbd index i, and how. */
export interface Grant {
  volumeId: number;
  readOnly: boolean;
}

/** The shared pages of a domain, as the toolstack hands them to the monitor. */
export interface DomainPages {
  ring: SharedArrayBuffer;
  vic: SharedArrayBuffer;
  memory: SharedArrayBuffer;
  /** Its trace ring (trace-abi.ts); a domain without one is never traced. */
  trace?: SharedArrayBuffer;
}

/** The trace ring of a domain's pages (a private one, never traced, when the toolstack gave none). */
export function traceRingOf(pages: DomainPages): TraceRing {
  return new TraceRing(pages.trace ?? createTraceRing());
}

interface Domain {
  id: number;
  name: string;
  ring: Int32Array;
  vic: VirtualInterruptController;
  memory: Uint8Array;
  trace: TraceRing;
  grants: DomainGrant[];
  /** Private copy: never trusted from shared memory. (The response index lives in the pool's control buffer.) */
  reqCons: number;
  /** Shut because the guest wrote garbage indices, or being torn down. */
  shut: boolean;
  /** The drain pass in which the domain last had requests. */
  lastBusyPass: number;
  /** Revokes that did not fit the domain's revoke ring yet, oldest first. */
  revokeBacklog: PendingRevoke[];
  /** Fenced for not answering a revoke: nothing of it is served, its locks wait for dropLocks(). */
  fenced: boolean;
}

/** An entry of a domain's grant table as the monitor keeps it (what the parser checks, and the volume). */
interface DomainGrant extends ParserGrant {
  volume: Volume;
}

/** A revoke decided and not answered yet (see Monitor.outstandingRevokes). */
interface OutstandingRevoke {
  holder: Domain;
  pending: PendingRevoke | null;
  deadline: number;
}

/** A revoke for a domain's revoke ring: lock `name` of the volume its `vbd` reaches, for a waiter wanting `wanted`. */
interface PendingRevoke {
  vbd: number;
  name: number;
  wanted: LockMode;
  /** The outstanding-revoke key (see Monitor.outstandingRevokes). */
  key: string;
}

/** A request copied out of the ring and parsed (read once, so the guest cannot change it between check and use). */
type Request = BlockRequest | RefusedRequest;
/** A read or write that passed every check. */
type Transfer = Extract<BlockRequest, { kind: 'transfer' }>;
type LockRequest = Extract<BlockRequest, { kind: 'lock' }>;
type UnlockRequest = Extract<BlockRequest, { kind: 'unlock' }>;

export type MonitorEvent =
  | { type: 'ring-fault'; domain: string; detail: string }
  | { type: 'revoke'; domain: string; detail: string }
  /** A transfer the backend failed: the guest got EIO, the event keeps the backend's errno. */
  | { type: 'io-error'; domain: string; detail: string }
  /**
   * The monitor fenced domain `id`: it did not answer a revoke within its deadline. Its ring is no longer served
   * and its pages no longer touched; its locks stay held until the toolstack replayed its journal and sends
   * drop-locks (fence -> replay -> grant), as after a crash.
   */
  | { type: 'fence'; domain: string; id: number; detail: string }
  /**
   * Domain `domain` reported corruption on `volume` (Op.VOLUME_ERROR): from now on every domain sharing it sees
   * the volume's errors flag (Ring.VOLUME_ERRORS) and its filesystem refuses changes. Reported once per volume,
   * and once per read-only grant (whose report changes nothing).
   */
  | { type: 'volume-error'; domain: string; volume: string; readOnly: boolean; detail: string };

export interface MonitorOptions {
  /** The buffer shared with the I/O threads (io-pool.ts); default: a new one. */
  pool?: SharedArrayBuffer;
  /** I/O threads serving that pool; 0 (the default): every transfer runs inline. */
  ioThreads?: number;
  /** Monotonic milliseconds; default performance.now (a test may step its own clock). */
  now?: () => number;
  /** How long a lock holder has to answer a revoke before it is fenced (default DEFAULT_REVOKE_DEADLINE_MS). */
  revokeDeadlineMs?: number;
}

/**
 * A holder gets this long to give a lock back after a revoke (release, or downgrade when the waiter wants to
 * share) before it is fenced. An answer costs a journal commit at most (two fdatasyncs) after the lock's minimum
 * hold time, so only a domain that hangs or ignores revokes comes near it.
 */
export const DEFAULT_REVOKE_DEADLINE_MS = 10_000;

/** Sleep 20 µs (waiting for an I/O thread to finish a transfer). */
const napWord = new Int32Array(new SharedArrayBuffer(4));
const nap = () => Atomics.wait(napWord, 0, 0, 0.02);

/** execute() result for a request answered later (a LOCK waiting for its grant). */
const DEFERRED = 1;
/** execute() result for a transfer handed to the I/O threads (whoever performs it answers). */
const QUEUED = 2;
/** execute() result for a FUA write done and not yet durable: answered by settleFua (see drainDomain). */
const FUA_OWED = 3;
/**
 * Reads at least this big go to the I/O threads when there is a backlog; smaller ones cost less inline (measured:
 * handing 64 KiB reads over made one domain's QD32 slower). Writes stay inline: pwrites to one image serialize on
 * its inode lock, so a second writer only adds contention (measured: 1 MiB QD32 writes lost 20%, and 10% again
 * with two domains after interrupt coalescing).
 */
export const POOL_MIN_BYTES = 256 * 1024;
/**
 * The same while several domains are busy: their guests sleep on their deep queues, so a core is free for a second
 * copier (measured with two domains, QD32 64 KiB reads: +25 to +30%).
 */
export const POOL_MIN_BYTES_SHARED = 64 * 1024;
/** Limits of one merged run of requests (mergeableRun). */
const MERGE_MAX_BYTES = 1024 * 1024;
const MERGE_MAX_REQUESTS = 64;
/** Batches of at least this many requests are split with the I/O threads while several domains are busy. */
const SPLIT_MIN_BATCH = 8;

/**
 * The virtual machine monitor's I/O core: the domain table, the block driver serving every domain's request ring,
 * validation of every descriptor against the domain's grants and memory, and virtual interrupts for completions.
 * It owns no thread of its own; monitor-worker.ts runs it on a dedicated worker thread.
 */
export class Monitor {
  private readonly volumes = new Map<number, Volume>();
  private readonly domains = new Map<number, Domain>();
  /** Domains in service order, rebuilt when the table changes (the hot loop iterates an array). */
  private serving: Domain[] = [];
  /** Drain passes so far. */
  private passes = 0;
  /** The cluster lock service: one table for every domain (holders are domain ids). */
  private readonly locks = new LockTable();
  /**
   * LOCK requests waiting for their grant, by domain id and lock name: the request id to answer, and the vbd and
   * buffer of its REQ_READ_BLOCK (null: none).
   */
  private readonly lockWaiters = new Map<string, { domain: Domain; id: number; vbd: number; readInto: number | null; hint: boolean }>();
  /**
   * Revokes posted or backlogged and not answered yet, by `domain:lock:wanted`: the lock table names a holder
   * again for every new waiter, and one entry is enough until the holder releases or downgrades the lock, or is
   * granted it anew (which forgets the key). `pending` is the backlog entry still to post, or null once posted;
   * a backlog entry whose key was forgotten (or now stands for a newer entry) is dropped instead of posted.
   * `deadline`: when the holder is fenced if the key is still here. Every key gets the same time to answer, so
   * the map's insertion order is deadline order and its first entry is the next deadline.
   */
  private readonly outstandingRevokes = new Map<string, OutstandingRevoke>();
  /** Revokes posted per lock key since boot (for `hvshare locks`). */
  private readonly revocationsByLock = new Map<number, number>();
  /** Why each volume with errors has them (the first report from a read-write grant), by volume id. */
  private readonly volumeErrors = new Map<number, string>();
  /** Domains with a read-only grant whose report was logged (one each). */
  private readonly readOnlyReporters = new Set<string>();
  /** Domains with a revoke backlog (checked on every drain pass only while non-zero). */
  private backlogged = 0;

  /**
   * The I/O threads' queue and every domain's response producer. `ioThreads` = 0: every transfer runs inline on
   * the monitor thread.
   */
  readonly pool: PoolControl;
  private readonly job: PoolJob = emptyJob();
  /** The domain whose job the monitor thread runs (for its counters). */
  private jobDomain = 0;
  private readonly monitorCounts = {
    errors: (n: number, errno: number) => {
      this.stats.add(this.jobDomain, Counter.ERRORS, n);
      const d = this.domains.get(this.jobDomain);
      if (d) this.reportBackendErrors(d, n, `read: ${errnoName(errno)} (errno ${errno})`);
    },
    virqs: (n: number) => this.stats.add(this.jobDomain, Counter.VIRQS, n),
  };

  constructor(
    private readonly stats: DomainStats,
    private readonly onEvent: (event: MonitorEvent) => void = () => {},
    options: MonitorOptions = {},
  ) {
    this.pool = new PoolControl(options.pool ?? createPoolBuffer());
    this.ioThreads = options.ioThreads ?? 0;
    this.now = options.now ?? (() => performance.now());
    this.revokeDeadlineMs = options.revokeDeadlineMs ?? DEFAULT_REVOKE_DEADLINE_MS;
  }

  /** How long a holder has to answer a revoke before it is fenced. */
  private readonly revokeDeadlineMs: number;

  /** The monitor's clock in milliseconds (monotonic). */
  private readonly now: () => number;

  private readonly ioThreads: number;

  addVolume(volume: Volume): void {
    if (this.volumes.has(volume.id)) throw new Error(`volume ${volume.id} already attached`);
    this.volumes.set(volume.id, volume);
    this.volumeList = [...this.volumes.values()];
  }

  /** The volumes as an array, for the hot loop (hasWork asks each whether held writes may go out). */
  private volumeList: Volume[] = [];

  addDomain(id: number, name: string, pages: DomainPages, grants: Grant[]): void {
    if (this.domains.has(id)) throw new Error(`domain ${id} already exists`);
    const table = grants.map((g) => {
      const volume = this.volumes.get(g.volumeId);
      if (!volume) throw new Error(`domain ${name}: grant names unknown volume ${g.volumeId}`);
      return { volume, readOnly: g.readOnly || volume.backend.readOnly, sectors: Math.floor(volume.backend.sizeBytes / SECTOR) };
    });
    const ring = new Int32Array(pages.ring);
    this.domains.set(id, {
      id,
      name,
      ring,
      vic: new VirtualInterruptController(pages.vic),
      memory: new Uint8Array(pages.memory),
      trace: traceRingOf(pages),
      grants: table,
      reqCons: Atomics.load(ring, Ring.REQ_PROD) >>> 0,
      shut: false,
      lastBusyPass: -Infinity,
      revokeBacklog: [],
      fenced: false,
    });
    this.pool.resetDomain(id, Atomics.load(ring, Ring.RSP_PROD) >>> 0);
    this.showVolumeErrors(this.domains.get(id)!);
    this.stats.reset(id);
    this.serving = [...this.domains.values()];
  }

  /**
   * Fence a domain (destroyed or dead): its ring is no longer served and its pages are no longer touched. Its
   * locks stay held until dropLocks(), so the toolstack can replay its journal before anyone else gets in.
   */
  removeDomain(id: number): void {
    const d = this.domains.get(id);
    if (!d) return;
    // Stop serving its ring, then wait for the transfers already handed to I/O threads (helping with the queue):
    // once none is in flight, nothing touches the domain's pages any more.
    this.serving = this.serving.filter((x) => x !== d);
    while (this.pool.inFlight(id) > 0) if (!this.runQueued()) nap();
    // Its writes held behind barriers go to the image first: the toolstack replays its journal on the image.
    for (const g of d.grants) if (g.volume.backend.holding) g.volume.backend.flush();
    this.foldPoolCounters();
    this.domains.delete(id);
    this.forgetRevokesTo(d);
  }

  /** A domain going away (fenced or removed) will answer no revoke: forget those owed to it, posted or not. */
  private forgetRevokesTo(d: Domain): void {
    for (const [key, r] of this.outstandingRevokes) if (r.holder === d) this.outstandingRevokes.delete(key);
    if (d.revokeBacklog.length > 0) this.backlogged--;
    d.revokeBacklog.length = 0;
  }

  /** Wait until every transfer handed to the I/O threads has completed (shutdown). */
  quiesce(): void {
    while (this.pool.queued() > 0 || [...this.domains.keys()].some((id) => this.pool.inFlight(id) > 0)) {
      if (!this.runQueued()) nap();
    }
  }

  /**
   * Run one transfer from the I/O queue on the monitor thread (it is an I/O thread too when its rings are quiet).
   * Returns false when the queue was empty.
   */
  runQueued(): boolean {
    const job = this.job;
    if (!this.pool.claim(job)) return false;
    this.runJob(job, this.domains.get(job.domain)!);
    this.pool.finished(job);
    return true;
  }

  /** Fold the counters I/O threads keep per domain into the statistics (the monitor thread owns those). */
  private foldPoolCounters(): void {
    if (!this.pool.takeDirty()) return;
    for (const d of this.domains.values()) {
      const virqs = this.pool.takeCounter(d.id, Dom.VIRQS);
      if (virqs) this.stats.add(d.id, Counter.VIRQS, virqs);
      const errors = this.pool.takeCounter(d.id, Dom.ERRORS);
      if (errors) {
        this.stats.add(d.id, Counter.ERRORS, errors);
        const errno = this.pool.takeCounter(d.id, Dom.LAST_ERRNO);
        this.reportBackendErrors(d, errors, `read on an I/O thread: ${errnoName(errno)} (errno ${errno})`);
      }
    }
  }

  /** The lock table for inspection (`hvshare locks`); never on the request path. */
  lockSummaries(): LockSummary[] {
    return summarizeLocks(this.locks.snapshot(), {
      volume: (id) => this.volumes.get(id)?.name ?? `#${id}`,
      domain: (holder) => this.domains.get(holder as number)?.name ?? `#${holder}`,
      revocations: this.revocationsByLock,
    });
  }

  /** Release every lock a dead domain held or waited for, granting them to the next waiters. */
  dropLocks(id: number): void {
    for (const key of this.lockWaiters.keys()) if (key.startsWith(`${id}:`)) this.lockWaiters.delete(key);
    for (const key of this.outstandingRevokes.keys()) if (key.startsWith(`${id}:`)) this.outstandingRevokes.delete(key);
    this.applyLockResult(this.locks.dropHolder(id));
  }

  /** True when some ring has requests the monitor has not consumed yet. */
  hasWork(): boolean {
    for (const d of this.serving) {
      if (!d.shut && Atomics.load(d.ring, Ring.REQ_PROD) >>> 0 !== d.reqCons) return true;
    }
    for (const v of this.volumeList) if (v.backend.ready) return true;
    return false;
  }

  /** Writes held behind a barrier whose flush completed go to the image (write-epochs.ts). */
  private progressHeldWrites(): void {
    for (const v of this.volumeList) if (v.backend.ready) v.backend.progress!();
  }

  /** Drain every ring once; returns how many requests were served. */
  drain(): number {
    this.progressHeldWrites();
    let served = 0;
    const serving = this.serving;
    for (let i = 0; i < serving.length; i++) {
      const d = serving[i];
      if (d.shut) continue;
      const n = this.drainDomain(d, i === serving.length - 1);
      if (n > 0) {
        d.lastBusyPass = this.passes;
        served += n;
      }
    }
    this.passes++;
    this.foldPoolCounters();
    if (this.backlogged > 0) this.postBacklogs();
    if (this.outstandingRevokes.size > 0) this.fenceOverdueHolders();
    return served;
  }

  /**
   * Milliseconds until the next revoke deadline (Infinity: none), so that a monitor about to sleep wakes in time
   * to fence a holder that never answers.
   */
  msUntilRevokeDeadline(): number {
    const first = this.firstOutstandingRevoke();
    return first ? Math.max(0, first.deadline - this.now()) : Infinity;
  }

  private firstOutstandingRevoke(): OutstandingRevoke | undefined {
    return this.outstandingRevokes.size > 0 ? this.outstandingRevokes.values().next().value : undefined;
  }

  /** Fence every holder with a revoke past its deadline (the first entries of outstandingRevokes). */
  private fenceOverdueHolders(): void {
    const now = this.now();
    for (let first = this.firstOutstandingRevoke(); first && first.deadline <= now; first = this.firstOutstandingRevoke()) {
      const overdue = [...this.outstandingRevokes.entries()].filter(([, r]) => r.holder === first!.holder && r.deadline <= now);
      const locks = overdue.map(([key]) => {
        const [, lock, wanted] = key.split(':');
        return `${Number(lock) % LOCK_NAME_LIMIT} wanted ${wanted}`;
      });
      const detail = `did not answer the revoke of lock${locks.length > 1 ? 's' : ''} ${truncate(locks.join(', '))} within ${this.revokeDeadlineMs} ms`;
      this.fence(first.holder, detail);
    }
  }

  /**
   * Fence a domain that does not answer revokes, as GFS2 and OCFS2 fence an unresponsive node: its ring is no
   * longer served (a fault it can see), transfers already handed to I/O threads finish, and the toolstack is told.
   * Its locks stay held: only after its journal is replayed may anyone else have them (dropLocks).
   */
  private fence(d: Domain, detail: string): void {
    d.fenced = true;
    d.shut = true;
    this.serving = this.serving.filter((x) => x !== d);
    while (this.pool.inFlight(d.id) > 0) if (!this.runQueued()) nap();
    this.forgetRevokesTo(d);
    Atomics.store(d.ring, Ring.FAULT, Status.ESHUTDOWN);
    d.vic.raise(Line.BLKIF);
    this.stats.add(d.id, Counter.ERRORS);
    this.onEvent({ type: 'fence', domain: d.name, id: d.id, detail });
  }

  /**
   * Domains that issued requests since the call before last (remembered until asked again). Asked at a steady
   * pace while the monitor runs, this is a window of time: a domain that went quiet stops counting after two
   * calls, however few passes the monitor made meanwhile.
   */
  busyDomains(): number {
    let busy = 0;
    for (const d of this.serving) if (!d.shut && d.lastBusyPass >= this.busyMarks[0]) busy++;
    this.busyMarks[0] = this.busyMarks[1];
    this.busyMarks[1] = this.passes;
    this.busy = busy;
    return busy;
  }

  /** The pass counts at the last two busyDomains() calls, oldest first. */
  private readonly busyMarks = [0, 0];

  /** The last count of busy domains. */
  private busy = 0;

  /**
   * About to sleep: ask every guest to ring the doorbell on its next request (event idx), then report whether
   * requests slipped in meanwhile (the caller must not sleep then).
   */
  armDoorbells(): boolean {
    for (const d of this.serving) if (!d.shut) Atomics.store(d.ring, Ring.REQ_EVENT, (d.reqCons + 1) | 0);
    return this.hasWork();
  }

  private drainDomain(d: Domain, last: boolean): number {
    const prod = Atomics.load(d.ring, Ring.REQ_PROD) >>> 0;
    const pending = u32Sub(prod, d.reqCons);
    if (pending === 0) return 0;
    // More requests than slots, or responses owed beyond the ring: the guest wrote garbage. Shut its ring (as
    // blkback does); every other domain carries on. (The response index is read after the producer index: any
    // response the guest saw before publishing is counted.)
    if (pending > RING_SLOTS || u32Sub(d.reqCons, this.pool.rspProd(d.id)) > RING_SLOTS) {
      this.shutRing(d, `producer index ${prod} is ${pending} ahead of consumer ${d.reqCons}`);
      return 0;
    }
    this.handedOver = false;
    // Copy the whole batch out of the ring first (each descriptor read once), then serve it in order.
    const batch = this.batch;
    batch.length = 0;
    for (let n = 0; n < pending; n++) {
      const req = parse(d.ring, d.reqCons, d.grants, d.memory.length);
      const traced = d.trace.recordOf(req.id);
      if (traced !== 0) d.trace.stamp(traced, Stage.PICKED);
      batch.push(req);
      d.reqCons = (d.reqCons + 1) >>> 0;
    }
    // Several domains busy: their guests sleep on deep queues and leave a core idle, so the reads of the second
    // half of a big batch go to the I/O threads (in jobs of up to JOB_REQUESTS, merged where contiguous) while
    // the monitor serves the first half. (Measured with two domains, QD32: 64 KiB sequential reads +28%; for
    // 4 KiB reads and for writes the hand-over costs more than it saves.)
    const split = this.ioThreads > 0 && this.busy > 1 && pending >= SPLIT_MIN_BATCH ? pending >> 1 : pending;
    for (let n = 0; n < pending; n++) {
      const req = batch[n];
      if (this.fuaOwed.length > 0 && !fuaWrite(req)) this.settleFua(d);
      if (n >= split && offloadable(req) && !heldBy(d, req)) {
        this.stats.add(d.id, Counter.REQUESTS);
        this.addToJob(d, d.grants[req.vbd].volume, req);
        continue;
      }
      const run = this.mergeableRun(batch, n, split);
      if (run > 1) {
        this.executeRun(d, batch, n, run);
        n += run - 1;
        continue;
      }
      // A backlog (more requests behind this one, here or in the queue): big transfers go to the I/O threads,
      // so several copies run at once. A lone request runs inline: no hand-off on the latency path.
      this.backlog = this.ioThreads > 0 && (n + 1 < pending || this.pool.queued() > 0 || (!last && this.othersBusy(d)));
      const status = this.execute(d, req);
      if (status !== DEFERRED && status !== QUEUED && status !== FUA_OWED) this.respond(d, req.id, status);
    }
    if (this.fuaOwed.length > 0) this.settleFua(d);
    if (this.outgoing.count > 0) this.sendJob(d);
    if (this.ioThreads > 0 && (d.ring[Ring.BACKEND_BUSY] !== 0) !== this.handedOver) Atomics.store(d.ring, Ring.BACKEND_BUSY, this.handedOver ? 1 : 0);
    return pending;
  }

  /** The batch being served (reused between passes). */
  private readonly batch: Request[] = [];

  /**
   * FUA writes of the batch being served that are written and not yet durable. Consecutive FUA writes of a batch
   * (a journal commit's log and header, or its few home runs) share one flush of their backend: each is answered
   * only after that flush, so each is durable when its completion arrives, as FUA promises, for one fdatasync.
   */
  private readonly fuaOwed: Array<{ id: number; backend: BlockBackend }> = [];

  /** Flush the backends of the owed FUA writes (each once), then answer them. */
  private settleFua(d: Domain): void {
    const failed = new Set<BlockBackend>();
    for (const backend of new Set(this.fuaOwed.map((w) => w.backend))) {
      try {
        backend.flush();
        this.stats.add(d.id, Counter.FLUSHES);
      } catch (err) {
        failed.add(backend);
        this.backendError(d, 'flush after a FUA write', 0, 0, err);
      }
    }
    this.reply.lo = this.reply.hi = this.reply.flags = 0;
    for (const { id, backend } of this.fuaOwed) this.respond(d, id, failed.has(backend) ? this.fail(d, Status.EIO) : Status.OK);
    this.fuaOwed.length = 0;
  }

  /**
   * How many requests from batch[first] on form one run to merge (1: none): valid reads or writes of the same
   * virtual disk, each starting where the previous one ends, smaller than what the I/O threads take, without FUA,
   * MERGE_MAX_BYTES in all (offloadable reads from batch[split] on are the I/O threads'). As QEMU's virtio-blk
   * merges a guest's sequential requests, or the Linux block layer a plugged queue: one vectored system call
   * instead of one per request.
   */
  private mergeableRun(batch: Request[], first: number, split: number): number {
    const head = batch[first];
    if (!mergeable(head)) return 1;
    let end = head.sector + head.count;
    let bytes = head.count * SECTOR;
    let n = 1;
    while (first + n < batch.length && n < MERGE_MAX_REQUESTS) {
      const next = batch[first + n];
      if (first + n >= split && offloadable(next)) break;
      if (!mergeable(next) || next.op !== head.op || next.vbd !== head.vbd || next.sector !== end) break;
      if (bytes + next.count * SECTOR > MERGE_MAX_BYTES) break;
      end += next.count;
      bytes += next.count * SECTOR;
      n++;
    }
    return n;
  }

  /** The job being filled for the I/O threads, and what it holds so far. */
  private readonly outgoing: PoolJob = emptyJob();
  private outgoingEnd = 0;
  private outgoingBytes = 0;

  /**
   * Add a valid read to the outgoing job (sent first when full, for another volume, or when the read would end a
   * vectored run of several). A job stays vectored while its reads are one contiguous run, MERGE_MAX_BYTES in
   * all. Its bytes are counted now.
   */
  private addToJob(d: Domain, volume: Volume, req: Transfer): void {
    const job = this.outgoing;
    const bytes = req.count * SECTOR;
    const continues = job.count > 0 && job.volume === volume.id && req.sector === this.outgoingEnd && this.outgoingBytes + bytes <= MERGE_MAX_BYTES;
    if (job.count > 0 && (job.count === JOB_REQUESTS || job.volume !== volume.id || (job.vectored && job.count > 1 && !continues))) {
      this.sendJob(d);
    }
    if (job.count === 0) {
      job.domain = d.id;
      job.volume = volume.id;
      job.vectored = true;
      this.outgoingBytes = 0;
    } else job.vectored &&= continues;
    const i = job.count++;
    job.ids[i] = req.id;
    job.sectors[i] = req.sector;
    job.counts[i] = req.count;
    job.memOffsets[i] = req.memOffset;
    this.outgoingEnd = req.sector + req.count;
    this.outgoingBytes += bytes;
    this.countTransfers(d, Op.READ, 1, bytes);
  }

  /** Count `requests` reads or writes of `bytes` in all. */
  private countTransfers(d: Domain, op: number, requests: number, bytes: number): void {
    this.stats.add(d.id, op === Op.READ ? Counter.READS : Counter.WRITES, requests);
    this.stats.add(d.id, op === Op.READ ? Counter.READ_BYTES : Counter.WRITE_BYTES, bytes);
  }

  /** Publish the outgoing job; if the queue is full, the monitor performs it itself at once. */
  private sendJob(d: Domain): void {
    const job = this.outgoing;
    if (job.vectored) this.stats.add(d.id, Counter.MERGED, job.count - 1);
    if (this.pool.publish(job)) {
      this.handedOver = true;
      this.stats.add(d.id, Counter.OFFLOADED, job.count);
    } else this.runJob(job, d);
    job.count = 0;
  }

  private runJob(job: PoolJob, d: Domain): void {
    this.jobDomain = d.id;
    this.pool.run(job, d, this.volumes.get(job.volume)!.backend, this.monitorCounts);
  }

  /** Serve batch[first .. first+count) (checked by mergeableRun) with one vectored transfer, then answer each. */
  private executeRun(d: Domain, batch: Request[], first: number, count: number): void {
    const head = batch[first] as Transfer;
    const backend = d.grants[head.vbd].volume.backend;
    const views: Uint8Array[] = [];
    let bytes = 0;
    for (let i = first; i < first + count; i++) {
      const req = batch[i] as Transfer;
      views.push(d.memory.subarray(req.memOffset, req.memOffset + req.count * SECTOR));
      bytes += req.count * SECTOR;
    }
    let status: number = Status.OK;
    try {
      if (head.op === Op.READ) backend.readv(head.sector * SECTOR, views);
      else backend.writev(head.sector * SECTOR, views);
    } catch (err) {
      status = this.backendError(d, head.op === Op.READ ? 'read' : 'write', head.sector, bytes / SECTOR, err);
    }
    this.stats.add(d.id, Counter.REQUESTS, count);
    this.stats.add(d.id, Counter.MERGED, count - 1);
    if (status !== Status.OK) this.stats.add(d.id, Counter.ERRORS, count);
    else this.countTransfers(d, head.op, count, bytes);
    this.reply.lo = this.reply.hi = this.reply.flags = 0;
    for (let i = first; i < first + count; i++) this.respond(d, batch[i].id, status);
  }

  /** True when a domain served after `d` in this pass has requests waiting. */
  private othersBusy(d: Domain): boolean {
    const serving = this.serving;
    for (let i = serving.indexOf(d) + 1; i < serving.length; i++) {
      const o = serving[i];
      if (!o.shut && Atomics.load(o.ring, Ring.REQ_PROD) >>> 0 !== o.reqCons) return true;
    }
    return false;
  }

  /** Set by drainDomain for execute(): the request may go to the I/O threads. */
  private backlog = false;
  /** Set by execute(): a transfer of the batch being drained went to the I/O threads. */
  private handedOver = false;

  /** Extra response words of the request being executed (VOLINFO, LOCK). */
  private readonly reply = { lo: 0, hi: 0, flags: 0 };

  private execute(d: Domain, req: Request): number {
    this.stats.add(d.id, Counter.REQUESTS);
    this.reply.lo = this.reply.hi = this.reply.flags = 0;
    if (req.kind === 'refused') return this.fail(d, req.status);
    const grant = d.grants[req.vbd];
    const backend = grant.volume.backend;
    switch (req.kind) {
      case 'transfer': {
        const bytes = req.count * SECTOR;
        if (this.backlog && req.op === Op.READ && !backend.holding && bytes >= (this.busy > 1 ? POOL_MIN_BYTES_SHARED : POOL_MIN_BYTES)) {
          // Alone in its job, so that several of them are copied at once.
          if (this.outgoing.count > 0) this.sendJob(d);
          this.addToJob(d, grant.volume, req);
          this.sendJob(d);
          return QUEUED;
        }
        const view = d.memory.subarray(req.memOffset, req.memOffset + bytes);
        try {
          if (req.op === Op.READ) backend.read(req.sector * SECTOR, view);
          else if (req.barrier) backend.writeBarrier(req.sector * SECTOR, view);
          else backend.write(req.sector * SECTOR, view);
        } catch (err) {
          return this.fail(d, this.backendError(d, req.op === Op.READ ? 'read' : 'write', req.sector, req.count, err));
        }
        this.countTransfers(d, req.op, 1, bytes);
        if (fuaWrite(req)) {
          this.fuaOwed.push({ id: req.id, backend });
          return FUA_OWED;
        }
        return Status.OK;
      }
      case 'flush':
        try {
          if (!grant.readOnly) backend.flush();
        } catch (err) {
          return this.fail(d, this.backendError(d, 'flush', 0, 0, err));
        }
        this.stats.add(d.id, Counter.FLUSHES);
        return Status.OK;
      case 'discard':
        try {
          backend.discard(req.sector * SECTOR, req.count * SECTOR);
        } catch (err) {
          return this.fail(d, this.backendError(d, 'discard', req.sector, req.count, err));
        }
        return Status.OK;
      case 'volinfo':
        this.reply.lo = low32(grant.sectors);
        this.reply.hi = high32(grant.sectors);
        this.reply.flags = grant.readOnly ? VBD_READ_ONLY : 0;
        return Status.OK;
      case 'volume-error':
        return this.volumeError(d, req);
      case 'lock':
        return this.lock(d, req);
      case 'unlock':
        return this.unlock(d, req);
    }
  }

  /** A domain found corruption on a volume: it turns read-only for every domain sharing it (see Op.VOLUME_ERROR). */
  private volumeError(d: Domain, req: Extract<BlockRequest, { kind: 'volume-error' }>): number {
    const grant = d.grants[req.vbd];
    const volume = grant.volume;
    const detail = reasonText(d.memory.subarray(req.memOffset, req.memOffset + req.count * SECTOR));
    if (grant.readOnly) {
      const key = `${d.id}:${volume.id}`;
      if (!this.readOnlyReporters.has(key)) {
        this.readOnlyReporters.add(key);
        this.onEvent({ type: 'volume-error', domain: d.name, volume: volume.name, readOnly: true, detail });
      }
      return Status.EROFS;
    }
    if (this.volumeErrors.has(volume.id)) return Status.OK;
    this.volumeErrors.set(volume.id, detail);
    for (const other of this.domains.values()) this.showVolumeErrors(other);
    this.onEvent({ type: 'volume-error', domain: d.name, volume: volume.name, readOnly: false, detail });
    return Status.OK;
  }

  /** Raises Ring.VOLUME_ERRORS bit n of `d` for each vbd n whose volume has errors. */
  private showVolumeErrors(d: Domain): void {
    let bits = 0;
    d.grants.forEach((g, vbd) => {
      if (vbd < 32 && this.volumeErrors.has(g.volume.id)) bits |= 1 << vbd;
    });
    if (bits) Atomics.or(d.ring, Ring.VOLUME_ERRORS, bits);
  }

  /**
   * Lock names belong to a volume: the lock table's key is the volume's id and the name, so domains working on
   * different volumes never wait for (or revoke) each other (volume id * 2^32 + name, a safe integer). A revoke
   * names the vbd of the holder's that reaches the volume. A name is SECTOR_LO read unsigned; a non-zero
   * SECTOR_HI puts the sector at or past LOCK_NAME_LIMIT, which LOCK and UNLOCK refuse (EINVAL).
   */
  private lockKey(d: Domain, req: LockRequest | UnlockRequest): number {
    return d.grants[req.vbd].volume.id * LOCK_NAME_LIMIT + req.name;
  }

  /** LOCK (its name, mode and the grant's right to that mode were checked by parse()). */
  private lock(d: Domain, req: LockRequest): number {
    const mode = req.mode;
    const lock = this.lockKey(d, req);
    const key = `${d.id}:${lock}`;
    if (this.lockWaiters.has(key)) return this.fail(d, Status.EINVAL);
    this.stats.add(d.id, Counter.LOCKS);
    if (req.try) {
      const granted = this.locks.tryRequest(d.id, lock, mode);
      if (!granted) return Status.EAGAIN;
      this.granted(granted);
      this.readLockBlock(d, req.vbd, req.name, req.readInto, req.hint);
      return Status.OK;
    }
    const { granted, revokes } = this.locks.request(d.id, lock, mode, req.join);
    this.applyLockResult({ grants: [], revokes });
    if (granted) {
      this.granted(granted);
      this.readLockBlock(d, req.vbd, req.name, req.readInto, req.hint);
      return Status.OK;
    }
    this.lockWaiters.set(key, { domain: d, id: req.id, vbd: req.vbd, readInto: req.readInto, hint: req.hint });
    return DEFERRED;
  }

  private unlock(d: Domain, req: UnlockRequest): number {
    const { released, downgrade, dirty } = req;
    const lock = this.lockKey(d, req);
    const held = this.locks.heldBy(d.id, lock);
    if (!held || (downgrade && held !== 'exclusive')) return this.fail(d, Status.EINVAL);
    // A superseded release (see lock-table.ts) keeps the revokes owed for the upgrade just granted.
    if (released === 'shared' && held === 'exclusive' && !downgrade) return Status.OK;
    this.forgetRevokes(d.id, lock);
    this.applyLockResult(downgrade ? this.locks.downgrade(d.id, lock, dirty) : this.locks.release(d.id, lock, dirty, released));
    return Status.OK;
  }

  /**
   * REQ_READ_BLOCK of a granted LOCK: the block the lock is named after, and with REQ_READ_HINT the block the
   * buffer's first word names (if inside the volume), read now (after the release that let the grant through, so
   * as its last holder left them) into the buffer the parser checked. A failed read still grants.
   */
  private readLockBlock(d: Domain, vbd: number, name: number, readInto: number | null, hint: boolean): void {
    if (readInto === null) return;
    const grant = d.grants[vbd];
    // Read before the buffer is overwritten: the guest's word, whatever it holds (range-checked below).
    const m = d.memory;
    const hinted = hint ? (m[readInto] | (m[readInto + 1] << 8) | (m[readInto + 2] << 16) | (m[readInto + 3] << 24)) >>> 0 : -1;
    const read = (block: number, at: number): boolean => {
      try {
        grant.volume.backend.read(block * LOCK_BLOCK_BYTES, d.memory.subarray(at, at + LOCK_BLOCK_BYTES));
      } catch (err) {
        this.backendError(d, 'read', (block * LOCK_BLOCK_BYTES) / SECTOR, LOCK_BLOCK_BYTES / SECTOR, err);
        return false;
      }
      this.countTransfers(d, Op.READ, 1, LOCK_BLOCK_BYTES);
      return true;
    };
    if (!read(name, readInto)) return;
    this.reply.flags = LOCK_BLOCK_READ;
    if (hinted >= 0 && (hinted + 1) * (LOCK_BLOCK_BYTES / SECTOR) <= grant.sectors && read(hinted, readInto + LOCK_BLOCK_BYTES)) {
      this.reply.flags |= LOCK_HINT_READ;
    }
  }

  /** The response words of a grant: the generation and the epoch. */
  private granted(grant: LockGrant): void {
    this.forgetRevokes(grant.holder as number, grant.name);
    this.reply.lo = grant.generation;
    this.reply.hi = grant.epoch;
  }

  private forgetRevokes(holder: number, lock: number): void {
    if (this.outstandingRevokes.size === 0) return;
    this.outstandingRevokes.delete(`${holder}:${lock}:shared`);
    this.outstandingRevokes.delete(`${holder}:${lock}:exclusive`);
  }

  /**
   * Answer LOCK requests granted meanwhile and ask holders in the way to give their locks back: each revoke goes
   * on the holder's revoke ring, or, while that is full (or older revokes wait), to the tail of its backlog, so a
   * domain sees its revokes in the order the monitor decided them.
   */
  private applyLockResult(result: ReleaseResult): void {
    for (const grant of result.grants) this.answerGrant(grant);
    for (const revoke of result.revokes) {
      const holder = this.domains.get(revoke.holder as number);
      if (!holder || holder.fenced) continue;
      const key = `${holder.id}:${revoke.name}:${revoke.wanted}`;
      if (this.outstandingRevokes.has(key)) continue;
      const volumeId = Math.floor(revoke.name / LOCK_NAME_LIMIT);
      // The holder's first vbd on the lock's volume (a lock is the domain's, whichever vbd took it).
      const vbd = holder.grants.findIndex((g) => g.volume.id === volumeId);
      if (vbd < 0) continue;
      const entry: PendingRevoke = { vbd, name: revoke.name % LOCK_NAME_LIMIT, wanted: revoke.wanted, key };
      const deadline = this.now() + this.revokeDeadlineMs;
      if (holder.revokeBacklog.length === 0 && this.postRevoke(holder, entry)) {
        this.outstandingRevokes.set(key, { holder, pending: null, deadline });
        holder.vic.raise(Line.LOCK_REVOKE);
        continue;
      }
      this.outstandingRevokes.set(key, { holder, pending: entry, deadline });
      if (holder.revokeBacklog.push(entry) === 1) {
        this.backlogged++;
        // Before the ring is looked at again (postBacklogs, at the end of this drain pass): see virq.ts.
        holder.vic.revokesWaiting(true);
      }
    }
  }

  /** One entry onto `d`'s revoke ring (false: no room), counted and reported. */
  private postRevoke(d: Domain, entry: PendingRevoke): boolean {
    if (!d.vic.postRevoke(entry.vbd, entry.name, entry.wanted === 'shared' ? LOCK_SHARED : LOCK_EXCLUSIVE)) return false;
    this.stats.add(d.id, Counter.REVOKES);
    const lock = d.grants[entry.vbd].volume.id * LOCK_NAME_LIMIT + entry.name;
    this.revocationsByLock.set(lock, (this.revocationsByLock.get(lock) ?? 0) + 1);
    const volume = d.grants[entry.vbd].volume.name;
    this.onEvent({ type: 'revoke', domain: d.name, detail: `lock ${entry.name} of volume ${volume} (vbd ${entry.vbd}) wanted ${entry.wanted}` });
    return true;
  }

  /**
   * Moves backlogged revokes into revoke rings that have room again (run by every drain pass while some domain
   * has a backlog: the pass after the guest's doorbell, or after any request of its). Entries answered meanwhile
   * are dropped.
   */
  private postBacklogs(): void {
    for (const d of this.domains.values()) {
      const backlog = d.revokeBacklog;
      if (backlog.length === 0) continue;
      let done = 0;
      let posted = 0;
      for (; done < backlog.length; done++) {
        const entry = backlog[done];
        const outstanding = this.outstandingRevokes.get(entry.key);
        if (outstanding?.pending !== entry) continue;
        if (!this.postRevoke(d, entry)) break;
        outstanding.pending = null;
        posted++;
      }
      if (done > 0) backlog.splice(0, done);
      if (backlog.length === 0) {
        this.backlogged--;
        d.vic.revokesWaiting(false);
      }
      if (posted > 0) d.vic.raise(Line.LOCK_REVOKE);
    }
  }

  private answerGrant(grant: LockGrant): void {
    const key = `${grant.holder}:${grant.name}`;
    const waiter = this.lockWaiters.get(key);
    if (!waiter) return;
    this.lockWaiters.delete(key);
    this.granted(grant);
    this.reply.flags = 0;
    this.readLockBlock(waiter.domain, waiter.vbd, grant.name % LOCK_NAME_LIMIT, waiter.readInto, waiter.hint);
    this.respond(waiter.domain, waiter.id, Status.OK);
    this.reply.lo = this.reply.hi = this.reply.flags = 0;
  }

  /**
   * A transfer the backend failed: the guest gets EIO (what a block device reports), the event log the backend's
   * own errno. At most one event per domain a second, counting the failures in between.
   */
  private backendError(d: Domain, what: string, sector: number, count: number, err: unknown): number {
    this.reportBackendErrors(d, 1, `${what} of ${count} sector(s) at ${sector}: ${describeBackendError(err)}`);
    return Status.EIO;
  }

  /** Report `failures` transfer errors of `d` (rate-limited per domain; see backendError). */
  private reportBackendErrors(d: Domain, failures: number, last: string): void {
    const now = this.now();
    const quiet = this.errorReports.get(d.id);
    if (quiet && now < quiet.until) {
      quiet.suppressed += failures;
      return;
    }
    const more = (quiet?.suppressed ?? 0) + failures - 1;
    this.errorReports.set(d.id, { until: now + 1000, suppressed: 0 });
    this.onEvent({ type: 'io-error', domain: d.name, detail: more > 0 ? `${last} (and ${more} more failed transfer(s))` : last });
  }

  /** Per domain: until when backend errors are only counted, and how many were. */
  private readonly errorReports = new Map<number, { until: number; suppressed: number }>();

  private fail(d: Domain, status: number): number {
    this.stats.add(d.id, Counter.ERRORS);
    return status;
  }

  /**
   * Post a response and make it visible at once (a polling guest reaps it while the rest of the batch is served);
   * raise the guest's interrupt only if it asked for one (event idx).
   */
  private respond(d: Domain, id: number, status: number): void {
    if (this.pool.respond(d, id, status, this.reply.lo, this.reply.hi, this.reply.flags)) this.stats.add(d.id, Counter.VIRQS);
  }

  private shutRing(d: Domain, detail: string): void {
    d.shut = true;
    this.onEvent({ type: 'ring-fault', domain: d.name, detail });
    this.stats.add(d.id, Counter.ERRORS);
    Atomics.store(d.ring, Ring.FAULT, Status.ESHUTDOWN);
    d.vic.raise(Line.BLKIF);
  }
}

/** A run may merge this request: a read or write without FUA, smaller than what the I/O threads take. */
function mergeable(req: Request): req is Transfer {
  return req.kind === 'transfer' && !req.fua && !req.barrier && req.count * SECTOR < POOL_MIN_BYTES;
}

/** A write with FUA: durable before it is answered (see Monitor.settleFua). */
function fuaWrite(req: Request): req is Transfer {
  return req.kind === 'transfer' && req.op === Op.WRITE && req.fua;
}

/** A read the I/O threads take when a batch is split (see drainDomain). */
/** True while the volume `req` reaches holds writes in the monitor's memory: its reads must see them. */
function heldBy(d: Domain, req: Transfer): boolean {
  return d.grants[req.vbd].volume.backend.holding === true;
}

function offloadable(req: Request): req is Transfer {
  return req.kind === 'transfer' && req.op === Op.READ && req.count * SECTOR >= POOL_MIN_BYTES_SHARED;
}


/** A volume error report's reason as the guest wrote it: text up to its first zero byte, printable, cut short. */
function reasonText(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  const text = new TextDecoder().decode(bytes.slice(0, end < 0 ? bytes.length : end)).replace(/[\u0000-\u001f\u007f]/g, '?');
  return truncate(text, 300) || '(no reason given)';
}

/** A long list cut for the event log. */
function truncate(text: string, max = 200): string {
  return text.length > max ? `${text.slice(0, max)}...` : text;
}
