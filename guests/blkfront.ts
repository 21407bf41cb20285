import { performance } from 'node:perf_hooks';
import {
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
  Status,
  needsNotify,
  statusName,
  VBD_READ_ONLY,
} from '../hypervisor/abi.js';
import { type BlockDevice, checkRange, IoError, type WriteOptions } from '../fs/block-device.js';
import type { GuestKernel, PolledDriver } from './kernel.js';
import type { GuestMemory } from './guest-memory.js';
import { WaitQueue } from './wait-queue.js';

/** A completed request as the monitor answered it. */
export interface Response {
  status: number;
  valueLo: number;
  valueHi: number;
  infoFlags: number;
}

const MAX_BYTES = MAX_SECTORS_PER_REQUEST * SECTOR;
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
 */
export class Blkfront implements BlockDevice, PolledDriver {
  private readonly ring: Int32Array;
  private reqProd: number;
  private rspCons: number;
  private readonly waiting: ((response: Response) => void)[] = new Array(RING_SLOTS);
  private readonly freeIds: number[] = [];
  private readonly slotFree = new WaitQueue();
  private inFlight = 0;
  private faulted = false;
  /** When each request id was submitted (performance.now()), and a moving average of completion times. */
  private readonly submittedAt = new Float64Array(RING_SLOTS);
  private latencyMicros = 0;
  sizeBytes = 0;
  readOnly = true;

  private constructor(
    private readonly kernel: GuestKernel,
    private readonly memory: GuestMemory,
    ringBuffer: SharedArrayBuffer,
    readonly vbd: number,
  ) {
    this.ring = new Int32Array(ringBuffer);
    this.reqProd = Atomics.load(this.ring, Ring.REQ_PROD) >>> 0;
    this.rspCons = Atomics.load(this.ring, Ring.RSP_PROD) >>> 0;
    for (let id = RING_SLOTS - 1; id >= 0; id--) this.freeIds.push(id);
    Atomics.store(this.ring, Ring.RSP_EVENT, (this.rspCons + 1) | 0);
  }

  /** Connect to virtual block device `vbd` of this domain and learn its size and grant. */
  static async attach(kernel: GuestKernel, memory: GuestMemory, ring: SharedArrayBuffer, vbd = 0): Promise<Blkfront> {
    const front = new Blkfront(kernel, memory, ring, vbd);
    kernel.registerDriver(front);
    kernel.onInterrupt(Line.BLKIF, () => front.poll());
    const info = await front.request(Op.VOLINFO, 0, 0, 0, 0);
    front.sizeBytes = (info.valueHi * 0x1_0000_0000 + (info.valueLo >>> 0)) * SECTOR;
    front.readOnly = (info.infoFlags & VBD_READ_ONLY) !== 0;
    return front;
  }

  outstanding(): number {
    return this.inFlight;
  }

  /** Issue one request and sleep until its completion. */
  async request(op: number, sector: number, count: number, memOffset: number, flags: number): Promise<Response> {
    while (this.freeIds.length === 0 && !this.faulted) await this.slotFree.sleep();
    if (this.faulted) throw new IoError('EIO', 'block ring shut by the monitor');
    const id = this.freeIds.pop()!;
    const old = this.reqProd;
    const base = RING_HEADER_WORDS + (old % RING_SLOTS) * SLOT_WORDS;
    const w = this.ring;
    w[base + Req.ID] = id;
    w[base + Req.OP] = op;
    w[base + Req.SECTOR_LO] = sector % 0x1_0000_0000;
    w[base + Req.SECTOR_HI] = Math.floor(sector / 0x1_0000_0000);
    w[base + Req.COUNT] = count;
    w[base + Req.MEM_OFFSET] = memOffset;
    w[base + Req.VBD] = this.vbd;
    w[base + Req.FLAGS] = flags;
    this.reqProd = (old + 1) >>> 0;
    this.inFlight++;
    this.submittedAt[id] = performance.now();
    const done = new Promise<Response>((resolve) => (this.waiting[id] = resolve));
    Atomics.store(w, Ring.REQ_PROD, this.reqProd | 0);
    if (needsNotify(Atomics.load(w, Ring.REQ_EVENT) >>> 0, this.reqProd, old)) this.kernel.notifyMonitor();
    return done;
  }

  poll(): number {
    const w = this.ring;
    const prod = Atomics.load(w, Ring.RSP_PROD) >>> 0;
    let reaped = 0;
    while (this.rspCons !== prod) {
      const base = RING_HEADER_WORDS + (this.rspCons % RING_SLOTS) * SLOT_WORDS;
      const id = w[base + Rsp.ID];
      this.rspCons = (this.rspCons + 1) >>> 0;
      const wake = this.waiting[id];
      if (!wake) continue;
      this.waiting[id] = undefined!;
      this.freeIds.push(id);
      this.inFlight--;
      reaped++;
      this.latencyMicros += ((performance.now() - this.submittedAt[id]) * 1000 - this.latencyMicros) / 16;
      wake({
        status: w[base + Rsp.STATUS],
        valueLo: w[base + Rsp.VALUE_LO] >>> 0,
        valueHi: w[base + Rsp.VALUE_HI] >>> 0,
        infoFlags: w[base + Rsp.INFO_FLAGS],
      });
    }
    if (Atomics.load(w, Ring.FAULT) !== 0 && !this.faulted) this.shutDown();
    if (reaped > 0) for (let i = 0; i < reaped && this.slotFree.length > 0; i++) this.slotFree.wakeOne();
    return reaped;
  }

  typicalLatencyMicros(): number {
    return this.latencyMicros;
  }

  backendBusy(): boolean {
    return Atomics.load(this.ring, Ring.BACKEND_BUSY) !== 0;
  }

  arm(): boolean {
    Atomics.store(this.ring, Ring.RSP_EVENT, (this.rspCons + 1) | 0);
    return (Atomics.load(this.ring, Ring.RSP_PROD) >>> 0) !== this.rspCons;
  }

  /** The monitor shut the ring: fail every waiting request. */
  private shutDown(): void {
    this.faulted = true;
    const shut = { status: Status.ESHUTDOWN, valueLo: 0, valueHi: 0, infoFlags: 0 };
    for (let id = 0; id < RING_SLOTS; id++) {
      const wake = this.waiting[id];
      if (wake) {
        this.waiting[id] = undefined!;
        this.inFlight--;
        wake(shut);
      }
    }
    this.slotFree.wakeAll();
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    checkRange(this, offset, dst.length);
    await this.transfer(Op.READ, offset, dst, 0);
  }

  async write(offset: number, src: Uint8Array, options: WriteOptions = {}): Promise<void> {
    if (this.readOnly) throw new IoError('EROFS', 'read-only grant');
    checkRange(this, offset, src.length);
    await this.transfer(Op.WRITE, offset, src, options.fua ? REQ_FUA : 0);
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
    while (this.inFlight > 0) await new Promise((r) => setTimeout(r, 1));
  }

  /** Split into requests of at most MAX_BYTES, all in flight at once; bounce buffers for foreign memory. */
  private async transfer(op: number, offset: number, buf: Uint8Array, flags: number): Promise<void> {
    const direct = this.memory.owns(buf);
    // The common case, one request straight into guest memory, without the machinery around it.
    if (direct && buf.length <= MAX_BYTES) return this.transferDirect(op, offset, buf, flags);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < buf.length; done += MAX_BYTES) {
      const piece = buf.subarray(done, Math.min(buf.length, done + MAX_BYTES));
      parts.push(direct ? this.transferDirect(op, offset + done, piece, flags) : this.transferBounced(op, offset + done, piece, flags));
    }
    await Promise.all(parts);
  }

  private async transferDirect(op: number, offset: number, view: Uint8Array, flags: number): Promise<void> {
    const rsp = await this.request(op, offset / SECTOR, view.length / SECTOR, view.byteOffset, flags);
    check(rsp, op === Op.READ ? `read at ${offset}` : `write at ${offset}`);
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
