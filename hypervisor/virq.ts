import { REVOKE_SLOTS, u32Sub, Vic, writeRevoke } from './abi.js';

/**
 * The monitor's side of a domain's virtual interrupt controller page: set a line pending, bump the sequence word
 * and wake the guest kernel waiting on it; produce the domain's revoke ring.
 */
export class VirtualInterruptController {
  private readonly page: Int32Array;
  /** Private copy of the revoke ring's producer index: never read back from shared memory. */
  private revokeProd: number;

  constructor(buffer: SharedArrayBuffer) {
    this.page = new Int32Array(buffer);
    this.revokeProd = Atomics.load(this.page, Vic.REVOKE_PROD) >>> 0;
  }

  raise(line: number): void {
    Atomics.or(this.page, Vic.PENDING, 1 << line);
    Atomics.add(this.page, Vic.SEQ, 1);
    Atomics.notify(this.page, Vic.SEQ);
  }

  /**
   * Puts a revoke entry on the ring (the LOCK_REVOKE line tells the guest to look); false when the ring is full.
   * The consumer index is the guest's to write: a garbage one (behind by more than the ring, or ahead) makes the
   * ring look full, so only its own domain's revokes wait, in the monitor, until the guest repairs it.
   */
  postRevoke(vbd: number, name: number, wanted: number): boolean {
    const prod = this.revokeProd;
    if (u32Sub(prod, Atomics.load(this.page, Vic.REVOKE_CONS) >>> 0) >= REVOKE_SLOTS) return false;
    writeRevoke(this.page, prod, { vbd, name, wanted });
    this.revokeProd = (prod + 1) >>> 0;
    Atomics.store(this.page, Vic.REVOKE_PROD, this.revokeProd | 0);
    return true;
  }

  /**
   * Tells the guest whether revokes wait for room (Vic.REVOKE_WAITING). Set before the caller looks at the ring
   * again: a guest that consumed meanwhile either left room the monitor sees, or sees the flag and rings.
   */
  revokesWaiting(waiting: boolean): void {
    Atomics.store(this.page, Vic.REVOKE_WAITING, waiting ? 1 : 0);
  }
}
