import {
  LOCK_EXCLUSIVE,
  LOCK_SHARED,
  Line,
  MAX_SECTORS_PER_REQUEST,
  Op,
  REQ_FUA,
  Req,
  Ring,
  RING_HEADER_WORDS,
  RING_SLOTS,
  Rsp,
  SECTOR,
  SLOT_WORDS,
  REQ_DIRTY,
  Status,
  u32Sub,
  Vic,
  VBD_READ_ONLY,
  needsNotify,
} from './abi.js';
import type { BlockBackend } from './block-backend.js';
import { Counter, DomainStats } from './domain-stats.js';
import { LockTable, type Grant as LockGrant, type ReleaseResult } from './lock-table.js';
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
}

interface Domain {
  id: number;
  name: string;
  ring: Int32Array;
  vic: VirtualInterruptController;
  memory: Uint8Array;
  grants: { volume: Volume; readOnly: boolean }[];
  /** Private copies: never trusted from shared memory. */
  reqCons: number;
  rspProd: number;
  /** Shut because the guest wrote garbage indices, or being torn down. */
  shut: boolean;
}

/** A request copied out of the ring (read once, so the guest cannot change it between check and use). */
interface Request {
  id: number;
  op: number;
  sector: number;
  count: number;
  memOffset: number;
  vbd: number;
  flags: number;
}

export type MonitorEvent =
  | { type: 'ring-fault'; domain: string; detail: string }
  | { type: 'revoke'; domain: string; detail: string };

/** execute() result for a request answered later (a LOCK waiting for its grant). */
const DEFERRED = 1;
/** Lock names fit the revoke bitmap of the interrupt controller page. */
const LOCK_NAMES = Vic.REVOKE_WORDS * 32;

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
  /** The cluster lock service: one table for every domain (holders are domain ids). */
  private readonly locks = new LockTable();
  /** LOCK requests waiting for their grant, by domain id and lock name: the request id to answer. */
  private readonly lockWaiters = new Map<string, { domain: Domain; id: number }>();

  constructor(
    private readonly stats: DomainStats,
    private readonly onEvent: (event: MonitorEvent) => void = () => {},
  ) {}

  addVolume(volume: Volume): void {
    if (this.volumes.has(volume.id)) throw new Error(`volume ${volume.id} already attached`);
    this.volumes.set(volume.id, volume);
  }

  addDomain(id: number, name: string, pages: DomainPages, grants: Grant[]): void {
    if (this.domains.has(id)) throw new Error(`domain ${id} already exists`);
    const table = grants.map((g) => {
      const volume = this.volumes.get(g.volumeId);
      if (!volume) throw new Error(`domain ${name}: grant names unknown volume ${g.volumeId}`);
      return { volume, readOnly: g.readOnly || volume.backend.readOnly };
    });
    const ring = new Int32Array(pages.ring);
    this.domains.set(id, {
      id,
      name,
      ring,
      vic: new VirtualInterruptController(pages.vic),
      memory: new Uint8Array(pages.memory),
      grants: table,
      reqCons: Atomics.load(ring, Ring.REQ_PROD) >>> 0,
      rspProd: Atomics.load(ring, Ring.RSP_PROD) >>> 0,
      shut: false,
    });
    this.stats.reset(id);
    this.serving = [...this.domains.values()];
  }

  /**
   * Fence a domain (destroyed or dead): its ring is no longer served and its pages are no longer touched. Its
   * locks stay held until dropLocks(), so the toolstack can replay its journal before anyone else gets in.
   */
  removeDomain(id: number): void {
    this.domains.delete(id);
    this.serving = [...this.domains.values()];
  }

  /** Release every lock a dead domain held or waited for, granting them to the next waiters. */
  dropLocks(id: number): void {
    for (const key of this.lockWaiters.keys()) if (key.startsWith(`${id}:`)) this.lockWaiters.delete(key);
    this.applyLockResult(this.locks.dropHolder(id));
  }

  /** True when some ring has requests the monitor has not consumed yet. */
  hasWork(): boolean {
    for (const d of this.serving) {
      if (!d.shut && Atomics.load(d.ring, Ring.REQ_PROD) >>> 0 !== d.reqCons) return true;
    }
    return false;
  }

  /** Drain every ring once; returns how many requests were served. */
  drain(): number {
    let served = 0;
    for (const d of this.serving) if (!d.shut) served += this.drainDomain(d);
    return served;
  }

  /**
   * About to sleep: ask every guest to ring the doorbell on its next request (event idx), then report whether
   * requests slipped in meanwhile (the caller must not sleep then).
   */
  armDoorbells(): boolean {
    for (const d of this.serving) if (!d.shut) Atomics.store(d.ring, Ring.REQ_EVENT, (d.reqCons + 1) | 0);
    return this.hasWork();
  }

  private drainDomain(d: Domain): number {
    const prod = Atomics.load(d.ring, Ring.REQ_PROD) >>> 0;
    const pending = u32Sub(prod, d.reqCons);
    if (pending === 0) return 0;
    // More requests than slots, or responses owed beyond the ring: the guest wrote garbage. Shut its ring (as
    // blkback does); every other domain carries on.
    if (pending > RING_SLOTS || u32Sub(d.reqCons, d.rspProd) > RING_SLOTS) {
      this.shutRing(d, `producer index ${prod} is ${pending} ahead of consumer ${d.reqCons}`);
      return 0;
    }
    for (let n = 0; n < pending; n++) {
      const req = this.fetch(d, d.reqCons);
      d.reqCons = (d.reqCons + 1) >>> 0;
      const status = this.execute(d, req);
      if (status !== DEFERRED) this.respond(d, req.id, status);
    }
    return pending;
  }

  private fetch(d: Domain, index: number): Request {
    const base = RING_HEADER_WORDS + (index % RING_SLOTS) * SLOT_WORDS;
    const w = d.ring;
    return {
      id: w[base + Req.ID],
      op: w[base + Req.OP] >>> 0,
      sector: (w[base + Req.SECTOR_HI] >>> 0) * 0x1_0000_0000 + (w[base + Req.SECTOR_LO] >>> 0),
      count: w[base + Req.COUNT] >>> 0,
      memOffset: w[base + Req.MEM_OFFSET] >>> 0,
      vbd: w[base + Req.VBD] >>> 0,
      flags: w[base + Req.FLAGS] >>> 0,
    };
  }

  /** Extra response words of the request being executed (VOLINFO, LOCK). */
  private readonly reply = { lo: 0, hi: 0, flags: 0 };

  private execute(d: Domain, req: Request): number {
    this.stats.add(d.id, Counter.REQUESTS);
    this.reply.lo = this.reply.hi = this.reply.flags = 0;
    const grant = d.grants[req.vbd];
    if (!grant) return this.fail(d, Status.ENODEV);
    const backend = grant.volume.backend;
    switch (req.op) {
      case Op.READ:
      case Op.WRITE: {
        const status = this.checkTransfer(d, backend, req);
        if (status !== Status.OK) return this.fail(d, status);
        if (req.op === Op.WRITE && grant.readOnly) return this.fail(d, Status.EROFS);
        const bytes = req.count * SECTOR;
        const view = d.memory.subarray(req.memOffset, req.memOffset + bytes);
        try {
          if (req.op === Op.READ) {
            backend.read(req.sector * SECTOR, view);
            this.stats.add(d.id, Counter.READS);
            this.stats.add(d.id, Counter.READ_BYTES, bytes);
          } else {
            backend.write(req.sector * SECTOR, view);
            if (req.flags & REQ_FUA) backend.flush();
            this.stats.add(d.id, Counter.WRITES);
            this.stats.add(d.id, Counter.WRITE_BYTES, bytes);
          }
        } catch {
          return this.fail(d, Status.EIO);
        }
        return Status.OK;
      }
      case Op.FLUSH:
        try {
          if (!grant.readOnly) backend.flush();
        } catch {
          return this.fail(d, Status.EIO);
        }
        this.stats.add(d.id, Counter.FLUSHES);
        return Status.OK;
      case Op.DISCARD: {
        if (req.count === 0 || req.sector + req.count > backend.sizeBytes / SECTOR) return this.fail(d, Status.ERANGE);
        if (grant.readOnly) return this.fail(d, Status.EROFS);
        try {
          backend.discard(req.sector * SECTOR, req.count * SECTOR);
        } catch {
          return this.fail(d, Status.EIO);
        }
        return Status.OK;
      }
      case Op.VOLINFO: {
        const sectors = backend.sizeBytes / SECTOR;
        this.reply.lo = sectors % 0x1_0000_0000;
        this.reply.hi = Math.floor(sectors / 0x1_0000_0000);
        this.reply.flags = grant.readOnly ? VBD_READ_ONLY : 0;
        return Status.OK;
      }
      case Op.LOCK:
        return this.lock(d, req);
      case Op.UNLOCK:
        return this.unlock(d, req);
      default:
        return this.fail(d, Status.EOPNOTSUPP);
    }
  }

  private lock(d: Domain, req: Request): number {
    const mode = req.count === LOCK_SHARED ? 'shared' : req.count === LOCK_EXCLUSIVE ? 'exclusive' : null;
    if (mode === null || req.sector >= LOCK_NAMES) return this.fail(d, Status.EINVAL);
    const key = `${d.id}:${req.sector}`;
    if (this.lockWaiters.has(key)) return this.fail(d, Status.EINVAL);
    this.stats.add(d.id, Counter.LOCKS);
    const { granted, revokes } = this.locks.request(d.id, req.sector, mode);
    this.applyLockResult({ grants: [], revokes });
    if (granted) {
      this.reply.lo = granted.generation;
      return Status.OK;
    }
    this.lockWaiters.set(key, { domain: d, id: req.id });
    return DEFERRED;
  }

  private unlock(d: Domain, req: Request): number {
    if (req.sector >= LOCK_NAMES || !this.locks.holders(req.sector).some((h) => h.holder === d.id)) {
      return this.fail(d, Status.EINVAL);
    }
    this.applyLockResult(this.locks.release(d.id, req.sector, (req.flags & REQ_DIRTY) !== 0));
    return Status.OK;
  }

  /** Answer LOCK requests granted meanwhile and ask holders in the way to give their locks back. */
  private applyLockResult(result: ReleaseResult): void {
    for (const grant of result.grants) this.answerGrant(grant);
    for (const revoke of result.revokes) {
      const holder = this.domains.get(revoke.holder as number);
      if (!holder) continue;
      holder.vic.requestRevoke(revoke.name);
      holder.vic.raise(Line.LOCK_REVOKE);
      this.stats.add(holder.id, Counter.REVOKES);
      this.onEvent({ type: 'revoke', domain: holder.name, detail: `lock ${revoke.name} wanted ${revoke.wanted}` });
    }
  }

  private answerGrant(grant: LockGrant): void {
    const key = `${grant.holder}:${grant.name}`;
    const waiter = this.lockWaiters.get(key);
    if (!waiter) return;
    this.lockWaiters.delete(key);
    this.reply.lo = grant.generation;
    this.reply.hi = this.reply.flags = 0;
    this.respond(waiter.domain, waiter.id, Status.OK);
    this.reply.lo = 0;
  }

  private checkTransfer(d: Domain, backend: BlockBackend, req: Request): number {
    if (req.count === 0 || req.count > MAX_SECTORS_PER_REQUEST) return Status.EINVAL;
    if (req.sector + req.count > backend.sizeBytes / SECTOR) return Status.ERANGE;
    if (req.memOffset + req.count * SECTOR > d.memory.length) return Status.EFAULT;
    return Status.OK;
  }

  private fail(d: Domain, status: number): number {
    this.stats.add(d.id, Counter.ERRORS);
    return status;
  }

  /**
   * Post a response and make it visible at once (a polling guest reaps it while the rest of the batch is served);
   * raise the guest's interrupt only if it asked for one (event idx).
   */
  private respond(d: Domain, id: number, status: number): void {
    const base = RING_HEADER_WORDS + (d.rspProd % RING_SLOTS) * SLOT_WORDS;
    const w = d.ring;
    w[base + Rsp.ID] = id;
    w[base + Rsp.STATUS] = status;
    w[base + Rsp.VALUE_LO] = this.reply.lo;
    w[base + Rsp.VALUE_HI] = this.reply.hi;
    w[base + Rsp.INFO_FLAGS] = this.reply.flags;
    const old = d.rspProd;
    d.rspProd = (old + 1) >>> 0;
    Atomics.store(d.ring, Ring.RSP_PROD, d.rspProd | 0);
    if (needsNotify(Atomics.load(d.ring, Ring.RSP_EVENT) >>> 0, d.rspProd, old)) {
      d.vic.raise(Line.BLKIF);
      this.stats.add(d.id, Counter.VIRQS);
    }
  }

  private shutRing(d: Domain, detail: string): void {
    d.shut = true;
    Atomics.store(d.ring, Ring.FAULT, Status.ESHUTDOWN);
    d.vic.raise(Line.BLKIF);
    this.stats.add(d.id, Counter.ERRORS);
    this.onEvent({ type: 'ring-fault', domain: d.name, detail });
  }
}
