import { setTimeout as sleep } from 'node:timers/promises';
import {
  Doorbell, join64, readResponse, readRevoke, Ring, slotBase, Req, Vic, type ResponseSlot,
} from '../../hypervisor/abi.js';
import type { DomainPages } from '../../hypervisor/monitor.js';

/** One entry of the revoke ring, as the monitor wrote it. */
export interface RawRevoke {
  vbd: number;
  name: number;
  wanted: number;
}

export interface RawRequest {
  id: number;
  op: number;
  sector?: number;
  sectorHi?: number;
  count?: number;
  memOffset?: number;
  vbd?: number;
  flags?: number;
}

/**
 * A hostile (or merely hand-driven) guest for tests: writes descriptors straight into its ring through the ABI,
 * with no blkfront in between, so any garbage a guest could write reaches the monitor.
 */
export class RawGuest {
  readonly ring: Int32Array;
  readonly vic: Int32Array;
  readonly memory: Uint8Array;
  private readonly doorbell: Int32Array;
  prod = 0;
  cons = 0;

  constructor(pages: DomainPages, doorbell: SharedArrayBuffer) {
    this.ring = new Int32Array(pages.ring);
    this.vic = new Int32Array(pages.vic);
    this.memory = new Uint8Array(pages.memory);
    this.doorbell = new Int32Array(doorbell);
  }

  /** Write a descriptor and publish it; always rings the doorbell. */
  submit(r: RawRequest): void {
    this.submitBatch([r]);
  }

  /** Write several descriptors, then publish them together (the monitor sees them as one batch). */
  submitBatch(rs: RawRequest[]): void {
    const w = this.ring;
    for (const r of rs) {
      // Word by word: a hostile guest writes whatever it likes into SECTOR_HI (the codec would join it first).
      const base = slotBase(this.prod);
      w[base + Req.ID] = r.id;
      w[base + Req.OP] = r.op;
      w[base + Req.SECTOR_LO] = r.sector ?? 0;
      w[base + Req.SECTOR_HI] = r.sectorHi ?? 0;
      w[base + Req.COUNT] = r.count ?? 0;
      w[base + Req.MEM_OFFSET] = r.memOffset ?? 0;
      w[base + Req.VBD] = r.vbd ?? 0;
      w[base + Req.FLAGS] = r.flags ?? 0;
      this.prod = (this.prod + 1) >>> 0;
    }
    Atomics.store(w, Ring.REQ_PROD, this.prod | 0);
    this.ringDoorbell();
  }

  ringDoorbell(): void {
    Atomics.add(this.doorbell, Doorbell.SEQ, 1);
    Atomics.notify(this.doorbell, Doorbell.SEQ);
  }

  /**
   * Take the revoke entries posted since the last call (advancing the consumer index), and ring the doorbell when
   * the monitor says more wait for room, as the guest kernel's revoke reader does.
   */
  takeRevokes(): RawRevoke[] {
    const prod = Atomics.load(this.vic, Vic.REVOKE_PROD) >>> 0;
    let cons = Atomics.load(this.vic, Vic.REVOKE_CONS) >>> 0;
    const out: RawRevoke[] = [];
    for (; cons !== prod; cons = (cons + 1) >>> 0) {
      out.push(readRevoke(this.vic, cons));
    }
    Atomics.store(this.vic, Vic.REVOKE_CONS, cons | 0);
    if (Atomics.load(this.vic, Vic.REVOKE_WAITING) !== 0) this.ringDoorbell();
    return out;
  }

  /** Take revoke entries until `n` arrived (or time out). */
  async revokes(n: number, timeoutMs = 5000): Promise<RawRevoke[]> {
    const deadline = Date.now() + timeoutMs;
    const out: RawRevoke[] = [];
    while (out.length < n) {
      out.push(...this.takeRevokes());
      if (out.length >= n) break;
      if (Date.now() > deadline) throw new Error(`only ${out.length} of ${n} revokes`);
      await sleep(1);
    }
    return out;
  }

  /** Wait until `n` responses arrived (or time out), and return them as {id, status}. */
  async responses(n: number, timeoutMs = 5000): Promise<{ id: number; status: number; value: number; value64: number; flags: number }[]> {
    const deadline = Date.now() + timeoutMs;
    while (((Atomics.load(this.ring, Ring.RSP_PROD) - this.cons) >>> 0) < n) {
      if (Date.now() > deadline) throw new Error(`only ${(Atomics.load(this.ring, Ring.RSP_PROD) - this.cons) >>> 0} of ${n} responses`);
      await sleep(1);
    }
    const out = [];
    const rsp: ResponseSlot = { id: 0, status: 0, valueLo: 0, valueHi: 0, infoFlags: 0 };
    for (let i = 0; i < n; i++) {
      readResponse(this.ring, this.cons, rsp);
      out.push({ id: rsp.id, status: rsp.status, value: rsp.valueLo, value64: join64(rsp.valueLo, rsp.valueHi), flags: rsp.infoFlags });
      this.cons = (this.cons + 1) >>> 0;
    }
    return out;
  }
}
