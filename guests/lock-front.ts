import {
  LOCK_EXCLUSIVE, LOCK_SHARED, Line, Op, REQ_DIRTY, REQ_DOWNGRADE, REQ_TRY, REVOKE_SLOT_WORDS, REVOKE_SLOTS,
  RevokeEntry, Status, statusName, u32Sub, Vic,
} from '../hypervisor/abi.js';
import { IoError } from '../fs/block-device.js';
import type { LockMode, LockService } from '../fs/lock-service.js';
import type { Blkfront } from './blkfront.js';
import type { GuestKernel } from './kernel.js';

/**
 * The guest's side of the monitor's cluster lock service: LOCK and UNLOCK are hypercalls on the block ring of
 * the volume's vbd (a LOCK's completion arrives when the lock is granted), and the monitor asks for locks back
 * through the revoke ring of the interrupt controller page, raising LINE_LOCK_REVOKE. One reader per kernel
 * empties that ring and hands each entry to the LockFront of the entry's vbd.
 */
export class LockFront implements LockService {
  private handler: ((name: number, wanted: LockMode) => void) | null = null;
  epoch = 0;

  constructor(
    kernel: GuestKernel,
    vic: SharedArrayBuffer,
    private readonly ring: Blkfront,
  ) {
    RevokeReader.of(kernel, vic).fronts.set(ring.vbd, this);
  }

  async lock(name: number, mode: LockMode): Promise<number> {
    return (await this.request(name, mode, 0))!;
  }

  tryLock(name: number, mode: LockMode): Promise<number | null> {
    return this.request(name, mode, REQ_TRY);
  }

  async unlock(name: number, dirty: boolean): Promise<void> {
    const rsp = await this.ring.request(Op.UNLOCK, name, 0, 0, dirty ? REQ_DIRTY : 0);
    if (rsp.status !== Status.OK) throw new IoError('EIO', `unlock ${name}: ${statusName(rsp.status)}`);
  }

  async downgrade(name: number, dirty: boolean): Promise<void> {
    const rsp = await this.ring.request(Op.UNLOCK, name, 0, 0, REQ_DOWNGRADE | (dirty ? REQ_DIRTY : 0));
    if (rsp.status !== Status.OK) throw new IoError('EIO', `downgrade ${name}: ${statusName(rsp.status)}`);
  }

  onRevoke(handler: (name: number, wanted: LockMode) => void): void {
    this.handler = handler;
  }

  /** @internal A request that moves nothing, to wake the monitor. */
  async nudge(): Promise<void> {
    await this.ring.request(Op.VOLINFO, 0, 0, 0, 0);
  }

  /** @internal */
  revoked(name: number, wanted: LockMode): void {
    this.handler?.(name, wanted);
  }

  private async request(name: number, mode: LockMode, flags: number): Promise<number | null> {
    const rsp = await this.ring.request(Op.LOCK, name, mode === 'shared' ? LOCK_SHARED : LOCK_EXCLUSIVE, 0, flags);
    if (rsp.status === Status.EAGAIN && flags & REQ_TRY) return null;
    if (rsp.status !== Status.OK) throw new IoError('EIO', `lock ${name}: ${statusName(rsp.status)}`);
    this.epoch = Math.max(this.epoch, rsp.valueHi >>> 0);
    return rsp.valueLo >>> 0;
  }
}

/** Empties a kernel's revoke ring on LINE_LOCK_REVOKE. */
class RevokeReader {
  private static readonly readers = new WeakMap<SharedArrayBuffer, RevokeReader>();
  readonly fronts = new Map<number, LockFront>();
  private readonly vic: Int32Array;

  static of(kernel: GuestKernel, vic: SharedArrayBuffer): RevokeReader {
    let reader = RevokeReader.readers.get(vic);
    if (!reader) {
      reader = new RevokeReader(kernel, vic);
      RevokeReader.readers.set(vic, reader);
    }
    return reader;
  }

  private constructor(kernel: GuestKernel, vic: SharedArrayBuffer) {
    this.vic = new Int32Array(vic);
    kernel.onInterrupt(Line.LOCK_REVOKE, () => this.read());
  }

  private read(): void {
    const prod = Atomics.load(this.vic, Vic.REVOKE_PROD) >>> 0;
    let cons = Atomics.load(this.vic, Vic.REVOKE_CONS) >>> 0;
    if (u32Sub(prod, cons) > REVOKE_SLOTS) return;
    const entries: Array<[number, number, LockMode]> = [];
    for (; cons !== prod; cons = (cons + 1) >>> 0) {
      const base = Vic.REVOKE_RING + (cons % REVOKE_SLOTS) * REVOKE_SLOT_WORDS;
      const wanted = this.vic[base + RevokeEntry.WANTED] === LOCK_SHARED ? 'shared' : 'exclusive';
      entries.push([this.vic[base + RevokeEntry.VBD], this.vic[base + RevokeEntry.NAME] >>> 0, wanted]);
    }
    // Room first: the monitor may post what waited for it while the handlers run.
    Atomics.store(this.vic, Vic.REVOKE_CONS, cons | 0);
    for (const [vbd, name, wanted] of entries) this.fronts.get(vbd)?.revoked(name, wanted);
    // A full ring may have left revokes waiting in the monitor: any request wakes it to post them.
    if (entries.length === REVOKE_SLOTS) void this.fronts.values().next().value?.nudge().catch(() => {});
  }
}
