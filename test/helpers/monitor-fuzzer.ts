import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  LOCK_EXCLUSIVE, LOCK_NAME_LIMIT, LOCK_SHARED, MAX_SECTORS_PER_REQUEST, Op, readResponse, REQ_DIRTY, REQ_DOWNGRADE, REQ_FUA,
  REQ_TRY, Ring, RING_BYTES, RING_SLOTS, SECTOR, slotBase, Status, VIC_WORDS, Vic, writeRequest, type ResponseSlot,
} from '../../hypervisor/abi.js';
import { createStatsBuffer, DomainStats } from '../../hypervisor/domain-stats.js';
import { Monitor, type DomainPages, type Grant, type MonitorEvent } from '../../hypervisor/monitor.js';
import { RawImageBackend } from '../../hypervisor/raw-image-backend.js';
import { rng } from '../fs-helpers.js';

/**
 * A seeded, in-process fuzzer for the monitor: the real Monitor (parser, block driver, lock service, revoke
 * rings, fencing, the I/O pool's queue run by the monitor itself), real image files and real shared pages, driven
 * on the test's own thread so every case is deterministic for its seed. Hostile domains write random and mutated
 * descriptors, jump their ring indices, scribble over their revoke ring, abuse locks and never answer a revoke;
 * the monitor's clock is the fuzzer's, so deadlines pass without waiting. The fuzzer plays the toolstack too: a
 * fenced domain, or one whose ring was shut, is removed, its locks dropped, and a fresh one takes its place.
 *
 * After every batch, check() asserts: the monitor still serves (a well-behaved domain takes a contested lock,
 * writes, flushes and reads back through it), and no byte outside what a domain may legally change has changed
 * (the volumes hostile domains may only read, the well-behaved domain's private volume and its memory).
 */

const MiB = 1 << 20;
const DEADLINE_MS = 1000;
/** Lock names the domains fight over (the well-behaved domain takes them too), and a few far ones. */
const NAMES = [1, 2, 3, 4, 5, 6, 7, 8, LOCK_NAME_LIMIT - 1, LOCK_NAME_LIMIT - 2];
const HOSTILE_MEMORY = 1 * MiB;
const GOOD_MEMORY = 1 * MiB;
/** The well-behaved domain's I/O buffers; the rest of its memory holds a pattern nobody may change. */
const GOOD_BUFFERS = 256 * 1024;

interface Volume {
  id: number;
  path: string;
  size: number;
}

interface Pages {
  pages: DomainPages;
  ring: Int32Array;
  vic: Int32Array;
  memory: Uint8Array;
}

interface Hostile extends Pages {
  id: number;
  name: string;
  grants: Grant[];
  /** The producer index it publishes next (it may jump). */
  prod: number;
}

export interface FuzzSummary {
  cases: number;
  /** Descriptors the hostile domains published (answered or not). */
  descriptors: number;
  fences: number;
  ringFaults: number;
}

function newPages(memoryBytes: number): Pages {
  const pages = { ring: new SharedArrayBuffer(RING_BYTES), vic: new SharedArrayBuffer(VIC_WORDS * 4), memory: new SharedArrayBuffer(memoryBytes) };
  return { pages, ring: new Int32Array(pages.ring), vic: new Int32Array(pages.vic), memory: new Uint8Array(pages.memory) };
}

export class MonitorFuzzer {
  private clock = 0;
  private readonly random: () => number;
  private readonly monitor: Monitor;
  private readonly stats = new DomainStats(createStatsBuffer());
  private readonly volumes: Volume[] = [];
  private readonly backends: RawImageBackend[] = [];
  private readonly hostiles: Hostile[] = [];
  private readonly good: Pages & { id: number; prod: number; cons: number };
  /** What the volumes hostile domains may only read, and the private one, must hold (written by the good domain). */
  private readonly shadow = new Map<number, Buffer>();
  private readonly goodPattern: Uint8Array;
  private readonly doomed = new Set<number>();
  private readonly rsp: ResponseSlot = { id: 0, status: 0, valueLo: 0, valueHi: 0, infoFlags: 0 };
  readonly summary: FuzzSummary = { cases: 0, descriptors: 0, fences: 0, ringFaults: 0 };

  /**
   * Volumes: 0 read-write for both hostile domains (anything may change, but never its size); 1 read-only for
   * them and read-write for the good domain; 2 the good domain's alone. Each starts with random contents.
   */
  constructor(dir: string, seed: number) {
    this.random = rng(seed);
    this.monitor = new Monitor(this.stats, (e) => this.onEvent(e), { ioThreads: 1, now: () => this.clock, revokeDeadlineMs: DEADLINE_MS });
    for (const [id, size] of [2 * MiB, 2 * MiB, 1 * MiB].entries()) {
      const path = join(dir, `volume${id}.img`);
      const contents = Buffer.from(this.bytes(size));
      writeFileSync(path, contents);
      const backend = new RawImageBackend(path);
      this.backends.push(backend);
      this.monitor.addVolume({ id, name: `volume${id}`, backend });
      this.volumes.push({ id, path, size });
      if (id > 0) this.shadow.set(id, contents);
    }
    this.addHostile(1, [{ volumeId: 0, readOnly: false }, { volumeId: 1, readOnly: true }]);
    this.addHostile(2, [{ volumeId: 1, readOnly: true }, { volumeId: 0, readOnly: false }]);
    const good = newPages(GOOD_MEMORY);
    this.goodPattern = this.bytes(GOOD_MEMORY - GOOD_BUFFERS);
    good.memory.set(this.goodPattern, GOOD_BUFFERS);
    this.good = { ...good, id: 3, prod: 0, cons: 0 };
    this.monitor.addDomain(3, 'good', good.pages, [{ volumeId: 1, readOnly: false }, { volumeId: 2, readOnly: false }]);
  }

  close(): void {
    for (const b of this.backends) b.close();
  }

  // ---- random values, biased to the edges ----------------------------------------------------------------------

  private below(n: number): number {
    return Math.floor(this.random() * n);
  }

  private pick<T>(values: readonly T[]): T {
    return values[this.below(values.length)];
  }

  private u32(): number {
    return (this.random() * 2 ** 32) >>> 0;
  }

  private bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    const words = new Uint32Array(out.buffer, 0, n >> 2);
    for (let i = 0; i < words.length; i++) words[i] = this.u32();
    return out;
  }

  private sector(sectors: number): number {
    return this.pick([0, 1, sectors - 1, sectors, sectors + 1, this.below(sectors), this.below(sectors), 2 ** 32 - 1, 2 ** 32, this.u32()]);
  }

  private count(): number {
    return this.pick([0, 1, 8, 16, 128, 1 + this.below(64), 1 + this.below(64), 512, MAX_SECTORS_PER_REQUEST, MAX_SECTORS_PER_REQUEST + 1, this.u32()]);
  }

  private memOffset(): number {
    const m = HOSTILE_MEMORY;
    return this.pick([0, m - 512, m - 4096, m, m + 1, this.below(m) & ~511, this.below(m), this.u32(), 2 ** 32 - 4096]);
  }

  // ---- hostile domains -----------------------------------------------------------------------------------------

  private addHostile(id: number, grants: Grant[]): void {
    const pages = newPages(HOSTILE_MEMORY);
    this.monitor.addDomain(id, `hostile${id}`, pages.pages, grants);
    this.hostiles[id - 1] = { ...pages, id, name: `hostile${id}`, grants, prod: 0 };
  }

  private onEvent(e: MonitorEvent): void {
    if (e.type === 'fence') {
      if (e.id === this.good.id) throw new Error(`the well-behaved domain was fenced: ${e.detail}`);
      this.summary.fences++;
      this.doomed.add(e.id);
    } else if (e.type === 'ring-fault') {
      if (e.domain === 'good') throw new Error(`the well-behaved domain's ring was shut: ${e.detail}`);
      this.summary.ringFaults++;
      this.doomed.add(Number(e.domain.replace('hostile', '')));
    }
  }

  /** As the toolstack does after a fence (and here after a ring fault too): remove, drop its locks, boot anew. */
  private replaceDoomed(): void {
    for (const id of this.doomed) {
      const h = this.hostiles[id - 1];
      this.monitor.removeDomain(id);
      this.monitor.dropLocks(id);
      this.addHostile(id, h.grants);
    }
    this.doomed.clear();
  }

  /** A random descriptor into the next slot of `h` (not published). */
  private randomDescriptor(h: Hostile): void {
    const vbd = this.pick([0, 0, 0, 1, 1, 2, this.u32()]);
    const sectors = (this.volumes[h.grants[vbd]?.volumeId ?? 0].size / SECTOR) | 0;
    const op = this.pick([Op.READ, Op.READ, Op.WRITE, Op.WRITE, Op.FLUSH, Op.DISCARD, Op.VOLINFO, Op.LOCK, Op.LOCK, Op.UNLOCK, Op.UNLOCK, 4, 15, 19, this.u32()]);
    const flags = this.pick([0, 0, 0, REQ_FUA, REQ_DIRTY, REQ_TRY, REQ_DOWNGRADE, REQ_DIRTY | REQ_DOWNGRADE, this.u32()]);
    if (op === Op.LOCK || op === Op.UNLOCK) {
      const mode = this.pick([LOCK_SHARED, LOCK_EXCLUSIVE, LOCK_SHARED, LOCK_EXCLUSIVE, 0, 3, this.u32()]);
      const name = this.random() < 0.9 ? this.pick(NAMES) : this.u32() + this.pick([0, 0, 2 ** 32]);
      writeRequest(h.ring, h.prod, this.u32(), op, name, mode, 0, vbd, flags);
    } else {
      writeRequest(h.ring, h.prod, this.u32(), op, this.sector(sectors), this.count(), this.memOffset(), vbd, flags);
    }
    h.prod = (h.prod + 1) >>> 0;
  }

  /** A well-formed read or write, then one of its words changed (a bit flipped, or replaced by anything). */
  private mutatedDescriptor(h: Hostile): void {
    const vbd = this.below(2);
    const sectors = this.volumes[h.grants[vbd].volumeId].size / SECTOR;
    const count = 1 + this.below(64);
    writeRequest(h.ring, h.prod, this.u32(), this.pick([Op.READ, Op.WRITE]), this.below(sectors - count), count, this.below(HOSTILE_MEMORY / 2) & ~511, vbd, 0);
    const word = slotBase(h.prod) + this.below(8);
    h.ring[word] = this.random() < 0.5 ? h.ring[word] ^ (1 << this.below(32)) : this.u32();
    h.prod = (h.prod + 1) >>> 0;
  }

  /** Contiguous reads or writes (what the monitor merges, or hands to the I/O pool when large) with a bad one among them. */
  private run(h: Hostile): void {
    const vbd = this.below(2);
    const sectors = this.volumes[h.grants[vbd].volumeId].size / SECTOR;
    const op = this.pick([Op.READ, Op.WRITE]);
    const each = this.pick([8, 16, 128, 512, 1024]);
    const n = 2 + this.below(12);
    let sector = this.below(sectors);
    for (let i = 0; i < n; i++) {
      if (this.random() < 0.15) this.mutatedDescriptor(h);
      else {
        writeRequest(h.ring, h.prod, this.u32(), op, sector, each, this.below(HOSTILE_MEMORY - each * SECTOR) & ~511, vbd, this.random() < 0.1 ? REQ_FUA : 0);
        h.prod = (h.prod + 1) >>> 0;
      }
      sector += each;
    }
  }

  /** Header and revoke-ring words a guest can write, set to anything. */
  private scribble(h: Hostile): void {
    switch (this.below(6)) {
      case 0: // a jump of the producer index, near or far
        h.prod = (h.prod + this.pick([RING_SLOTS + 1, 2 ** 31, this.u32(), -1, -RING_SLOTS])) >>> 0;
        break;
      case 1:
        Atomics.store(h.ring, this.pick([Ring.REQ_EVENT, Ring.RSP_PROD, Ring.RSP_EVENT, Ring.FAULT, Ring.BACKEND_BUSY]), this.u32());
        break;
      case 2:
        Atomics.store(h.vic, Vic.REVOKE_CONS, this.pick([this.u32(), Atomics.load(h.vic, Vic.REVOKE_PROD) + 1, 0]));
        break;
      case 3: // a guest that consumes its revokes but never answers them
        Atomics.store(h.vic, Vic.REVOKE_CONS, Atomics.load(h.vic, Vic.REVOKE_PROD));
        break;
      default:
        Atomics.store(h.vic, this.pick([Vic.SEQ, Vic.PENDING, Vic.REVOKE_PROD, Vic.REVOKE_WAITING, Vic.REVOKE_RING + this.below(64)]), this.u32());
    }
  }

  /** One fuzz case: a hostile action, then the monitor serves (its clock moves on a little, or past a deadline). */
  step(): void {
    const h = this.hostiles[this.below(this.hostiles.length)];
    const action = this.below(100);
    if (action < 35) this.randomDescriptor(h);
    else if (action < 55) this.mutatedDescriptor(h);
    else if (action < 70) this.run(h);
    else if (action < 78) this.scribble(h);
    else if (action < 95) for (let i = 1 + this.below(8); i > 0; i--) this.randomDescriptor(h);
    // else: nothing published, time passes
    this.summary.descriptors += (h.prod - Atomics.load(h.ring, Ring.REQ_PROD)) >>> 0 <= RING_SLOTS * 4 ? (h.prod - Atomics.load(h.ring, Ring.REQ_PROD)) >>> 0 : 0;
    Atomics.store(h.ring, Ring.REQ_PROD, h.prod | 0);
    this.clock += this.random() < 0.03 ? DEADLINE_MS + 1 : this.below(20);
    this.pump();
    this.summary.cases++;
  }

  /** Let the monitor serve everything it has (as its thread would), then replace the domains it fenced. */
  private pump(): void {
    for (let i = 0; i < 3; i++) {
      this.monitor.busyDomains();
      this.monitor.drain();
      while (this.monitor.runQueued());
      this.replaceDoomed();
    }
  }

  // ---- the well-behaved domain and the invariants -------------------------------------------------------------

  private goodSubmit(op: number, sector: number, count: number, memOffset: number, vbd: number, flags: number): number {
    const g = this.good;
    const id = g.prod % RING_SLOTS;
    writeRequest(g.ring, g.prod, id, op, sector, count, memOffset, vbd, flags);
    g.prod = (g.prod + 1) >>> 0;
    Atomics.store(g.ring, Ring.REQ_PROD, g.prod | 0);
    return id;
  }

  /**
   * Wait for the answer to request `id`, as the guest would: serve, and while a hostile holder keeps the lock the
   * request waits for, let the revoke deadline pass (it is fenced, another may be next in line).
   */
  private goodAnswer(id: number, what: string): number {
    const g = this.good;
    for (let round = 0; round < 12; round++) {
      this.pump();
      // A well-behaved guest takes its revokes off the ring (it answers them by releasing, below).
      Atomics.store(g.vic, Vic.REVOKE_CONS, Atomics.load(g.vic, Vic.REVOKE_PROD));
      while (g.cons !== Atomics.load(g.ring, Ring.RSP_PROD) >>> 0) {
        readResponse(g.ring, g.cons, this.rsp);
        g.cons = (g.cons + 1) >>> 0;
        if (this.rsp.id === id) return this.rsp.status;
      }
      this.clock += DEADLINE_MS + 1;
    }
    throw new Error(`the well-behaved domain got no answer to its ${what}`);
  }

  /** The good domain's work: returns what went wrong ('' when nothing). */
  private goodDomainWorks(): string {
    const lock = this.pick(NAMES.slice(0, 8));
    const lockStatus = this.goodAnswer(this.goodSubmit(Op.LOCK, lock, LOCK_EXCLUSIVE, 0, 0, 0), `LOCK ${lock}`);
    if (lockStatus !== Status.OK) return `LOCK ${lock}: status ${lockStatus}`;
    for (const vbd of [0, 1]) {
      const volume = this.volumes[vbd + 1];
      const bytes = (1 + this.below(GOOD_BUFFERS / 2 / 4096)) * 4096;
      const sector = this.below((volume.size - bytes) / SECTOR + 1);
      const data = this.bytes(bytes);
      this.good.memory.set(data, 0);
      const flags = this.random() < 0.5 ? REQ_FUA : 0;
      const steps: [string, number][] = [
        ['write', this.goodSubmit(Op.WRITE, sector, bytes / SECTOR, 0, vbd, flags)],
        ['flush', this.goodSubmit(Op.FLUSH, 0, 0, 0, vbd, 0)],
        ['read', this.goodSubmit(Op.READ, sector, bytes / SECTOR, GOOD_BUFFERS / 2, vbd, 0)],
      ];
      for (const [what, id] of steps) {
        const status = this.goodAnswer(id, what);
        if (status !== Status.OK) return `${what} on vbd ${vbd}: status ${status}`;
      }
      if (!Buffer.from(this.good.memory.subarray(GOOD_BUFFERS / 2, GOOD_BUFFERS / 2 + bytes)).equals(data)) return `read back on vbd ${vbd} differs`;
      this.shadow.get(volume.id)!.set(data, sector * SECTOR);
    }
    const unlock = this.goodAnswer(this.goodSubmit(Op.UNLOCK, lock, 0, 0, 0, REQ_DIRTY), `UNLOCK ${lock}`);
    return unlock === Status.OK ? '' : `UNLOCK ${lock}: status ${unlock}`;
  }

  /** After a batch: every invariant, as a list of what is broken (empty: all hold). */
  check(): string[] {
    const broken: string[] = [];
    const works = this.goodDomainWorks();
    if (works) broken.push(`the well-behaved domain: ${works}`);
    for (const [id, expected] of this.shadow) {
      const actual = readFileSync(this.volumes[id].path);
      if (!actual.equals(expected)) {
        let at = 0;
        while (actual[at] === expected[at]) at++;
        broken.push(`volume ${id} (read-only to hostile domains${id === 2 ? ', not granted to them' : ''}) changed at byte ${at}`);
      }
    }
    const size = statSync(this.volumes[0].path).size;
    if (size !== this.volumes[0].size) broken.push(`volume 0 grew or shrank to ${size} bytes`);
    if (!Buffer.from(this.good.memory.subarray(GOOD_BUFFERS)).equals(this.goodPattern)) broken.push('the well-behaved domain\'s memory outside its buffers changed');
    return broken;
  }
}
