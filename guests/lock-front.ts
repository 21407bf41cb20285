import { LOCK_EXCLUSIVE, LOCK_SHARED, Line, Op, REQ_DIRTY, Status, statusName, Vic } from '../hypervisor/abi.js';
import { IoError } from '../fs/block-device.js';
import type { LockMode, LockService } from '../fs/lock-service.js';
import type { Blkfront } from './blkfront.js';
import type { GuestKernel } from './kernel.js';

/**
 * The guest's side of the monitor's cluster lock service: LOCK and UNLOCK are hypercalls on the block ring (a
 * LOCK's completion arrives when the lock is granted), and the monitor asks for locks back by setting their bits
 * in the revoke bitmap of the interrupt controller page and raising LINE_LOCK_REVOKE.
 */
export class LockFront implements LockService {
  private readonly vic: Int32Array;
  private handler: ((name: number, wanted: LockMode) => void) | null = null;

  constructor(
    kernel: GuestKernel,
    vic: SharedArrayBuffer,
    private readonly ring: Blkfront,
  ) {
    this.vic = new Int32Array(vic);
    kernel.onInterrupt(Line.LOCK_REVOKE, () => this.revoked());
  }

  async lock(name: number, mode: LockMode): Promise<number> {
    const rsp = await this.ring.request(Op.LOCK, name, mode === 'shared' ? LOCK_SHARED : LOCK_EXCLUSIVE, 0, 0);
    if (rsp.status !== Status.OK) throw new IoError('EIO', `lock ${name}: ${statusName(rsp.status)}`);
    return rsp.valueLo;
  }

  async unlock(name: number, dirty: boolean): Promise<void> {
    const rsp = await this.ring.request(Op.UNLOCK, name, 0, 0, dirty ? REQ_DIRTY : 0);
    if (rsp.status !== Status.OK) throw new IoError('EIO', `unlock ${name}: ${statusName(rsp.status)}`);
  }

  onRevoke(handler: (name: number, wanted: LockMode) => void): void {
    this.handler = handler;
  }

  private revoked(): void {
    for (let word = 0; word < Vic.REVOKE_WORDS; word++) {
      const bits = Atomics.exchange(this.vic, Vic.REVOKE_BASE + word, 0);
      for (let bit = 0; bits !== 0 && bit < 32; bit++) {
        // The bitmap does not say which mode the waiter wants; giving the lock back satisfies either.
        if (bits & (1 << bit)) this.handler?.(word * 32 + bit, 'exclusive');
      }
    }
  }
}
