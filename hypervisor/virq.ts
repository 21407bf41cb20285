import { REVOKE_SLOT_WORDS, REVOKE_SLOTS, RevokeEntry, u32Sub, Vic } from './abi.js';

/**
 * The monitor's side of a domain's virtual interrupt controller page: set a line pending, bump the sequence word
 * and wake the guest kernel waiting on it.
 */
export class VirtualInterruptController {
  private readonly page: Int32Array;

  constructor(buffer: SharedArrayBuffer) {
    this.page = new Int32Array(buffer);
  }

  raise(line: number): void {
    Atomics.or(this.page, Vic.PENDING, 1 << line);
    Atomics.add(this.page, Vic.SEQ, 1);
    Atomics.notify(this.page, Vic.SEQ);
  }

  /**
   * Puts a revoke entry on the ring (the LOCK_REVOKE line tells the guest to look); false when the ring is full.
   * The consumer index is the guest's to write: whatever garbage it holds only makes the ring look full to its
   * own domain, whose revokes then wait in the monitor.
   */
  postRevoke(vbd: number, name: number, wanted: number): boolean {
    const prod = Atomics.load(this.page, Vic.REVOKE_PROD) >>> 0;
    if (u32Sub(prod, Atomics.load(this.page, Vic.REVOKE_CONS) >>> 0) >= REVOKE_SLOTS) return false;
    const base = Vic.REVOKE_RING + (prod % REVOKE_SLOTS) * REVOKE_SLOT_WORDS;
    this.page[base + RevokeEntry.VBD] = vbd;
    this.page[base + RevokeEntry.NAME] = name | 0;
    this.page[base + RevokeEntry.WANTED] = wanted;
    Atomics.store(this.page, Vic.REVOKE_PROD, (prod + 1) | 0);
    return true;
  }
}
