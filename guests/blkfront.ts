import { performance } from 'node:perf_hooks';
import {
  join64,
  Line,
  MAX_SECTORS_PER_REQUEST,
  Op,
  readResponse,
  REQ_BARRIER,
  REQ_FUA,
  Ring,
  RING_SLOTS,
  SECTOR,
  Status,
  needsNotify,
  statusName,
  VBD_READ_ONLY,
  writeRequest,
  type ResponseSlot,
} from '../hypervisor/abi.js';
import { type BlockDevice, checkRange, IoError, type WriteOptions } from '../fs/block-device.js';
import type { GuestKernel, PolledDriver } from './kernel.js';
import type { GuestMemory } from './guest-memory.js';
import { TraceFront } from './trace-front.js';
import { WaitQueue } from './wait-queue.js';

/** A completed request as the monitor answered it. */
export interface Response {
  status: number;
  valueLo: number;
  valueHi: number;
  infoFlags: number;
}

const MAX_BYTES = MAX_SECTORS_PER_REQUEST * SECTOR;
/**
 * Background writes (WriteOptions.background) published before the doorbell rings for them anyway: request
 * plugging, one notification and one wake-up of the monitor for a run of a file's data writes instead of one each.
 */
const PLUG_REQUESTS = 8;
/** The longest a background write waits, published but not rung for, before the doorbell rings for it. */
const PLUG_MS = 1;
const ERRNO: Record<number, string> = {
  [Status.EIO]: 'EIO',
  [Status.EFAULT]: 'EFAULT',
  [Status.ENODEV]: 'ENODEV',
  [Status.EINVAL]: 'EINVAL',
  [Status.EROFS]: 'EROFS',
  [Status.ERANGE]: 'EIO',
  [Status.EOPNOTSUPP]: 'EOPNOTSUPP',
  [Status.ESHUTDOWN]: 'EIO',
};

/**
 * The frontend block driver. A request is a descriptor written into the domain's ring; publishing the producer
 * index is the hypercall, and the doorbell is rung only when the monitor asked for it (event idx). The calling
 * process sleeps until the completion is reaped, by the interrupt handler or by the kernel's idle poll.
 *
 * Buffers from allocBuffer() are guest memory, so the monitor transfers straight into or out of them; any other
 * buffer goes through a bounce buffer.
 *
 * Background writes are plugged (PLUG_REQUESTS, PLUG_MS): published in the ring at once, in order, but the doorbell
 * rings for them only with the next request that is not in the background, an unplug(), the PLUG_REQUESTSth of
 * them or after PLUG_MS. A monitor that is awake (polling, or draining) takes them up as it finds them anyway.
 * Nobody polls for them either: the idle loop polls only for completions someone waits for.
 */
export class Blkfront implements BlockDevice, PolledDriver {
  private readonly ring: Int32Array;
  private reqProd: number;
  private rspCons: number;
  /** Per request id in flight: who wants the whole response (control requests)... */
  private readonly waiting: ((response: Response) => void)[] = new Array(RING_SLOTS);
  /** ...or, for a transfer, how to settle it. */
  private readonly settle: (() => void)[] = new Array(RING_SLOTS);
  private readonly fail: ((err: IoError) => void)[] = new Array(RING_SLOTS);
  private readonly freeIds: number[] = [];
  private readonly slotFree = new WaitQueue();
  /** Free slots promised to woken waiters that have not run yet. */
  private promised = 0;
  private inFlight = 0;
  /** LOCK requests in flight: their completions wait for other domains, so nothing may wait for them. */
  private locksInFlight = 0;
  /** Background writes in flight (nobody waits for them now), and which request ids they are. */
  private backgroundInFlight = 0;
  private readonly background = new Uint8Array(RING_SLOTS);
  /** The producer index when the doorbell was last rung or found not needed, and background writes since. */
  private reqRung: number;
  private plugged = 0;
  private plugTimer: NodeJS.Timeout | undefined;
  /** The op of each request id in flight. */
  private readonly opOf = new Int32Array(RING_SLOTS);
  private readonly sectorOf = new Float64Array(RING_SLOTS);
  private faulted = false;
  /** When each request id was submitted (performance.now()), and a moving average of completion times. */
  private readonly submittedAt = new Float64Array(RING_SLOTS);
  private latencyMicros = 0;
  sizeBytes = 0;
  readOnly = true;
  /** The ring is served in order (OrderedDevice): a barrier orders behind every request issued before it. */
  readonly ordered = true;

  private constructor(
    private readonly kernel: GuestKernel,
    private readonly memory: GuestMemory,
    ringBuffer: SharedArrayBuffer,
    readonly vbd: number,
    private readonly trace: TraceFront,
  ) {
    this.ring = new Int32Array(ringBuffer);
    this.reqProd = Atomics.load(this.ring, Ring.REQ_PROD) >>> 0;
    this.reqRung = this.reqProd;
    this.rspCons = Atomics.load(this.ring, Ring.RSP_PROD) >>> 0;
    for (let id = RING_SLOTS - 1; id >= 0; id--) this.freeIds.push(id);
    Atomics.store(this.ring, Ring.RSP_EVENT, (this.rspCons + 1) | 0);
  }

  /** Connect to virtual block device `vbd` of this domain and learn its size and grant. */
  static async attach(kernel: GuestKernel, memory: GuestMemory, ring: SharedArrayBuffer, vbd = 0, trace = new TraceFront()): Promise<Blkfront> {
    const front = new Blkfront(kernel, memory, ring, vbd, trace);
    kernel.registerDriver(front);
    kernel.onInterrupt(Line.BLKIF, () => front.poll(true));
    Object.assign(front, await front.volumeInfo());
    return front;
  }

  /** Ask the monitor for the virtual disk's size and grant (VOLINFO: also the cheapest hypercall there is). */
  async volumeInfo(): Promise<{ sizeBytes: number; readOnly: boolean }> {
    const info = await this.request(Op.VOLINFO, 0, 0, 0, 0);
    check(info, 'volume info');
    return { sizeBytes: join64(info.valueLo, info.valueHi) * SECTOR, readOnly: (info.infoFlags & VBD_READ_ONLY) !== 0 };
  }

  /**
   * Requests whose completion is worth polling for. A LOCK waiting for its grant is not: the grant comes when
   * another domain gives the lock up, and polling would take the core that domain needs to commit and release.
   */
  outstanding(): number {
    return this.inFlight - this.locksInFlight - this.backgroundInFlight;
  }

  /** Issue one request and sleep until its completion. */
  async request(op: number, sector: number, count: number, memOffset: number, flags: number): Promise<Response> {
    if (!this.faulted && !this.slotReady()) await this.slotTurn();
    if (this.faulted) throw new IoError('EIO', 'block ring shut by the monitor');
    return new Promise<Response>((resolve) => (this.waiting[this.post(op, sector, count, memOffset, flags)] = resolve));
  }

  /**
   * A transfer straight into or out of guest memory, settled by poll() itself: on the hot path of every read and
   * write, a request costs one promise and no response object.
   */
  private transferDirect(op: number, offset: number, view: Uint8Array, flags: number, background = false): Promise<void> {
    if (!this.slotReady()) return this.transferWhenSlotFree(op, offset, view, flags);
    return new Promise<void>((resolve, reject) => {
      const id = this.post(op, offset / SECTOR, view.length / SECTOR, view.byteOffset, flags, background);
      this.settle[id] = resolve;
      this.fail[id] = reject;
    });
  }

  private async transferWhenSlotFree(op: number, offset: number, view: Uint8Array, flags: number): Promise<void> {
    const rsp = await this.request(op, offset / SECTOR, view.length / SECTOR, view.byteOffset, flags);
    if (rsp.status !== Status.OK) throw transferError(op, offset, rsp.status);
  }

  /**
   * True when a request may take a slot now: one is free and promised to no earlier caller. Requests reach the
   * ring in the order they are issued, queued ones included (the device is ordered: OrderedDevice).
   */
  private slotReady(): boolean {
    return !this.faulted && this.freeIds.length > this.promised && this.slotFree.length === 0;
  }

  /** Waits, behind every earlier caller, until a slot is promised to this one (or the ring was shut). */
  private async slotTurn(): Promise<void> {
    await this.slotFree.sleep();
    if (this.promised > 0) this.promised--;
  }

  /**
   * Write a descriptor into the next slot and publish it (the hypercall), ringing the doorbell if the monitor asked
   * for it, unless the request is a background write that may wait for company; returns the request id.
   */
  private post(op: number, sector: number, count: number, memOffset: number, flags: number, background = false): number {
    const id = this.freeIds.pop()!;
    const old = this.reqProd;
    const w = this.ring;
    writeRequest(w, old, id, op, sector, count, memOffset, this.vbd, flags);
    this.reqProd = (old + 1) >>> 0;
    this.inFlight++;
    this.opOf[id] = op;
    this.sectorOf[id] = sector;
    if (op === Op.LOCK) this.locksInFlight++;
    this.background[id] = background ? 1 : 0;
    if (background) this.backgroundInFlight++;
    this.submittedAt[id] = performance.now();
    const traced = this.trace.on() ? this.trace.posting(id, op, sector, count) : 0;
    Atomics.store(w, Ring.REQ_PROD, this.reqProd | 0);
    if (background && ++this.plugged < PLUG_REQUESTS) {
      this.plugTimer ??= setTimeout(() => {
        this.plugTimer = undefined;
        this.unplug();
      }, PLUG_MS);
    } else {
      this.ringDoorbell(traced);
    }
    return id;
  }

  /** Ring the doorbell for every request published so far, if the monitor asked for it (event idx). */
  unplug(): void {
    this.ringDoorbell(0);
  }

  private ringDoorbell(traced: number): void {
    this.plugged = 0;
    if (this.plugTimer) {
      clearTimeout(this.plugTimer);
      this.plugTimer = undefined;
    }
    const old = this.reqRung;
    this.reqRung = this.reqProd;
    if (needsNotify(Atomics.load(this.ring, Ring.REQ_EVENT) >>> 0, this.reqProd, old)) {
      if (traced !== 0) this.trace.rang(traced);
      this.kernel.notifyMonitor();
    }
  }

  /** The response being reaped (reused). */
  private readonly rsp: ResponseSlot = { id: 0, status: 0, valueLo: 0, valueHi: 0, infoFlags: 0 };

  /** Reap completions: from the BLKIF interrupt handler, or polled by the idle loop. */
  poll(fromInterrupt = false): number {
    const w = this.ring;
    const prod = Atomics.load(w, Ring.RSP_PROD) >>> 0;
    let reaped = 0;
    const rsp = this.rsp;
    while (this.rspCons !== prod) {
      const id = readResponse(w, this.rspCons, rsp).id;
      this.rspCons = (this.rspCons + 1) >>> 0;
      const traced = this.trace.recordOf(id);
      if (!this.retire(id)) continue;
      if (traced !== 0) this.trace.reaped(traced, fromInterrupt);
      reaped++;
      // A lock's wait is another domain's time, not the device's: it does not set how long to poll.
      if (this.opOf[id] !== Op.LOCK) this.latencyMicros += ((performance.now() - this.submittedAt[id]) * 1000 - this.latencyMicros) / 16;
      this.complete(id, rsp.status, rsp.valueLo, rsp.valueHi, rsp.infoFlags);
    }
    if (Atomics.load(w, Ring.FAULT) !== 0 && !this.faulted) this.shutDown();
    // Freed slots go to the oldest waiters first, promised to them until they run.
    while (this.slotFree.length > 0 && this.freeIds.length > this.promised) {
      this.promised++;
      this.slotFree.wakeOne();
    }
    return reaped;
  }

  /** Take request `id` out of flight; false when it was not in flight (a response the guest never asked for). */
  private retire(id: number): boolean {
    if (id < 0 || id >= RING_SLOTS || (!this.waiting[id] && !this.settle[id])) return false;
    if (this.trace.recordOf(id) !== 0) this.trace.forget(id);
    this.freeIds.push(id);
    this.inFlight--;
    if (this.opOf[id] === Op.LOCK) this.locksInFlight--;
    if (this.background[id]) this.backgroundInFlight--;
    return true;
  }

  /** Hand a retired request's response to whoever waits for it. */
  private complete(id: number, status: number, valueLo: number, valueHi: number, infoFlags: number): void {
    const settle = this.settle[id];
    if (settle) {
      const fail = this.fail[id];
      this.settle[id] = this.fail[id] = undefined!;
      if (status === Status.OK) settle();
      else fail(transferError(this.opOf[id], this.sectorOf[id] * SECTOR, status));
      return;
    }
    const wake = this.waiting[id];
    this.waiting[id] = undefined!;
    wake({ status, valueLo, valueHi, infoFlags });
  }

  typicalLatencyMicros(): number {
    return this.latencyMicros;
  }

  backendBusy(): boolean {
    return Atomics.load(this.ring, Ring.BACKEND_BUSY) !== 0;
  }

  arm(batch: boolean): boolean {
    // Event idx: interrupt when the response numbered RSP_EVENT is posted. For a batch, half the requests in
    // flight: the guest wakes while the other half still keeps the monitor busy, with one interrupt (and one
    // wake-up) per half queue instead of one per completion. Never past a LOCK, whose answer may take long.
    const ahead = batch && this.locksInFlight === 0 ? Math.max(1, this.inFlight >> 1) : 1;
    Atomics.store(this.ring, Ring.RSP_EVENT, (this.rspCons + ahead) | 0);
    return (Atomics.load(this.ring, Ring.RSP_PROD) >>> 0) !== this.rspCons;
  }

  /** The monitor shut the ring: fail every waiting request. */
  private shutDown(): void {
    this.faulted = true;
    for (let id = 0; id < RING_SLOTS; id++) if (this.retire(id)) this.complete(id, Status.ESHUTDOWN, 0, 0, 0);
    this.promised = 0;
    this.slotFree.wakeAll();
  }

  read(offset: number, dst: Uint8Array): Promise<void> {
    try {
      checkRange(this, offset, dst.length);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.transfer(Op.READ, offset, dst, 0);
  }

  write(offset: number, src: Uint8Array, options: WriteOptions = {}): Promise<void> {
    try {
      if (this.readOnly) throw new IoError('EROFS', 'read-only grant');
      checkRange(this, offset, src.length);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.transfer(Op.WRITE, offset, src, (options.fua ? REQ_FUA : 0) | (options.barrier ? REQ_BARRIER : 0), options.background === true);
  }

  async flush(): Promise<void> {
    check(await this.request(Op.FLUSH, 0, 0, 0, 0), 'flush');
  }

  async discard(offset: number, length: number): Promise<void> {
    if (this.readOnly) throw new IoError('EROFS', 'read-only grant');
    checkRange(this, offset, length);
    for (let done = 0; done < length; ) {
      const bytes = Math.min(length - done, 0x1_0000_0000 - SECTOR);
      check(await this.request(Op.DISCARD, (offset + done) / SECTOR, bytes / SECTOR, 0, 0), 'discard');
      done += bytes;
    }
  }

  allocBuffer(size: number): Uint8Array {
    return this.memory.alloc(size);
  }

  freeBuffer(buf: Uint8Array): void {
    this.memory.release(buf);
  }

  async close(): Promise<void> {
    this.unplug();
    while (this.inFlight > 0) await new Promise((r) => setTimeout(r, 1));
  }

  /** Split into requests of at most MAX_BYTES, all in flight at once; bounce buffers for foreign memory. */
  private transfer(op: number, offset: number, buf: Uint8Array, flags: number, background = false): Promise<void> {
    const direct = this.memory.owns(buf);
    // The common case, one request straight into guest memory, without the machinery around it.
    if (direct && buf.length <= MAX_BYTES) return this.transferDirect(op, offset, buf, flags, background);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < buf.length; done += MAX_BYTES) {
      const piece = buf.subarray(done, Math.min(buf.length, done + MAX_BYTES));
      parts.push(direct ? this.transferDirect(op, offset + done, piece, flags, background) : this.transferBounced(op, offset + done, piece, flags));
    }
    return Promise.all(parts).then(() => {});
  }

  private async transferBounced(op: number, offset: number, view: Uint8Array, flags: number): Promise<void> {
    const bounce = this.memory.alloc(view.length);
    try {
      if (op === Op.WRITE) bounce.set(view);
      await this.transferDirect(op, offset, bounce, flags);
      if (op === Op.READ) view.set(bounce);
    } finally {
      this.memory.release(bounce);
    }
  }
}

function check(rsp: Response, what: string): void {
  if (rsp.status !== Status.OK) throw new IoError(ERRNO[rsp.status] ?? 'EIO', `${what}: ${statusName(rsp.status)}`);
}

function transferError(op: number, offset: number, status: number): IoError {
  return new IoError(ERRNO[status] ?? 'EIO', `${op === Op.READ ? 'read' : 'write'} at ${offset}: ${statusName(status)}`);
}
