import { Vic } from './abi.js';

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

  /** Mark lock `name` to be given back (the LOCK_REVOKE line tells the guest to look). */
  requestRevoke(name: number): void {
    const word = Vic.REVOKE_BASE + (name >>> 5);
    if (word >= Vic.REVOKE_BASE + Vic.REVOKE_WORDS) throw new RangeError(`lock name ${name} out of range`);
    Atomics.or(this.page, word, 1 << (name & 31));
  }
}
