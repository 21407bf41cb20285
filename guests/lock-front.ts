import {
  LOCK_BLOCK_BYTES, LOCK_BLOCK_READ, LOCK_EXCLUSIVE, LOCK_HINT_READ, LOCK_NAME_LIMIT, LOCK_SHARED, Line, Op, readRevoke,
  REQ_DIRTY, REQ_DOWNGRADE, REQ_JOIN, REQ_READ_BLOCK, REQ_READ_HINT, REQ_TRY, REVOKE_SLOTS, Status, statusName, u32Sub,
  Vic,
} from '../hypervisor/abi.js';
import { IoError } from '../fs/block-device.js';
import type { LockAndBlock, LockMode, LockService } from '../fs/lock-service.js';
import type { Blkfront } from './blkfront.js';
import type { GuestKernel } from './kernel.js';

/**
 * The guest's side of the monitor's cluster lock service: LOCK and UNLOCK are hypercalls on the block ring,
 * addressed to the vbd of the volume the locks belong to (a LOCK's completion arrives when the lock is granted),
 * and the monitor asks for locks back through the revoke ring of the interrupt controller page, raising
 * LINE_LOCK_REVOKE. The ring is the kernel's, not a vbd's: one RevokeReader per kernel empties it and hands each
 * entry to the LockFront of the entry's vbd, so a domain may run a lock front end on each of its virtual disks.
 */
export class LockFront implements LockService {
  private handler: ((name: number, wanted: LockMode) => void) | null = null;
  epoch = 0;

  constructor(
    kernel: GuestKernel,
    vic: SharedArrayBuffer,
    private readonly ring: Blkfront,
  ) {
    RevokeReader.of(kernel, vic).attach(ring.vbd, this);
  }

  async lock(name: number, mode: LockMode, join = false): Promise<number> {
    return (await this.request(name, mode, join ? REQ_JOIN : 0))!;
  }

  /**
   * LOCK with REQ_READ_BLOCK: the grant and the block the lock is named after, in one round trip; with a `hint`
   * (REQ_READ_HINT) that block too.
   */
  async lockAndRead(name: number, mode: LockMode, join = false, hint: number | null = null): Promise<LockAndBlock> {
    checkName(name);
    const hinting = hint !== null && Number.isInteger(hint) && hint >= 0 && hint < LOCK_NAME_LIMIT;
    let buffer: Uint8Array;
    try {
      buffer = this.ring.allocBuffer((hinting ? 2 : 1) * LOCK_BLOCK_BYTES);
    } catch {
      // Guest memory is short (every page is in some transfer): the grant alone, the block is read after it.
      return { generation: await this.lock(name, mode, join), block: null, hinted: null };
    }
    try {
      if (hinting) new DataView(buffer.buffer, buffer.byteOffset, 4).setUint32(0, hint, true);
      const flags = REQ_READ_BLOCK | (hinting ? REQ_READ_HINT : 0) | (join ? REQ_JOIN : 0);
      const rsp = await this.ring.request(Op.LOCK, name, mode === 'shared' ? LOCK_SHARED : LOCK_EXCLUSIVE, buffer.byteOffset, flags);
      const generation = this.granted(name, rsp);
      const copy = (at: number) => new Uint8Array(buffer.subarray(at, at + LOCK_BLOCK_BYTES));
      return {
        generation,
        block: rsp.infoFlags & LOCK_BLOCK_READ ? copy(0) : null,
        hinted: rsp.infoFlags & LOCK_HINT_READ ? copy(LOCK_BLOCK_BYTES) : null,
      };
    } finally {
      this.ring.freeBuffer(buffer);
    }
  }

  tryLock(name: number, mode: LockMode): Promise<number | null> {
    return this.request(name, mode, REQ_TRY);
  }

  unlock(name: number, dirty: boolean, held: LockMode): Promise<void> {
    return this.release(name, held, dirty ? REQ_DIRTY : 0, 'unlock');
  }

  downgrade(name: number, dirty: boolean): Promise<void> {
    return this.release(name, 'exclusive', REQ_DOWNGRADE | (dirty ? REQ_DIRTY : 0), 'downgrade');
  }

  onRevoke(handler: (name: number, wanted: LockMode) => void): void {
    this.handler = handler;
  }

  /** @internal The RevokeReader's delivery of one entry for this vbd. */
  revoked(name: number, wanted: LockMode): void {
    this.handler?.(name, wanted);
  }

  private async request(name: number, mode: LockMode, flags: number): Promise<number | null> {
    checkName(name);
    const rsp = await this.ring.request(Op.LOCK, name, mode === 'shared' ? LOCK_SHARED : LOCK_EXCLUSIVE, 0, flags);
    if (rsp.status === Status.EAGAIN && flags & REQ_TRY) return null;
    return this.granted(name, rsp);
  }

  /** A LOCK's answer: the generation it was granted with (the epoch noted), or its error. */
  private granted(name: number, rsp: { status: number; valueLo: number; valueHi: number }): number {
    if (rsp.status !== Status.OK) throw new IoError('EIO', `lock ${name}: ${statusName(rsp.status)}`);
    this.epoch = Math.max(this.epoch, rsp.valueHi >>> 0);
    return rsp.valueLo >>> 0;
  }

  private async release(name: number, held: LockMode, flags: number, what: string): Promise<void> {
    checkName(name);
    const rsp = await this.ring.request(Op.UNLOCK, name, held === 'shared' ? LOCK_SHARED : LOCK_EXCLUSIVE, 0, flags);
    if (rsp.status !== Status.OK) throw new IoError('EIO', `${what} ${name}: ${statusName(rsp.status)}`);
  }
}

function checkName(name: number): void {
  if (!Number.isInteger(name) || name < 0 || name >= LOCK_NAME_LIMIT) throw new IoError('EINVAL', `lock name ${name} is not an unsigned 32-bit number`);
}

/**
 * Empties a kernel's revoke ring on LINE_LOCK_REVOKE and routes each entry by its vbd. After freeing the slots it
 * rings the monitor's doorbell if the monitor says more revokes wait for room (Vic.REVOKE_WAITING).
 */
class RevokeReader {
  private static readonly readers = new WeakMap<GuestKernel, RevokeReader>();
  private readonly fronts = new Map<number, LockFront>();
  private readonly vic: Int32Array;

  static of(kernel: GuestKernel, vic: SharedArrayBuffer): RevokeReader {
    let reader = RevokeReader.readers.get(kernel);
    if (!reader) {
      reader = new RevokeReader(kernel, vic);
      RevokeReader.readers.set(kernel, reader);
    }
    return reader;
  }

  private constructor(
    private readonly kernel: GuestKernel,
    vic: SharedArrayBuffer,
  ) {
    this.vic = new Int32Array(vic);
    kernel.onInterrupt(Line.LOCK_REVOKE, () => this.read());
  }

  attach(vbd: number, front: LockFront): void {
    this.fronts.set(vbd, front);
  }

  private read(): void {
    const prod = Atomics.load(this.vic, Vic.REVOKE_PROD) >>> 0;
    let cons = Atomics.load(this.vic, Vic.REVOKE_CONS) >>> 0;
    // The monitor never gets more than a ring ahead; anything else means our own index was overwritten: read
    // the whole ring again (giving back a lock twice, or one not held, is harmless).
    if (u32Sub(prod, cons) > REVOKE_SLOTS) cons = (prod - REVOKE_SLOTS) >>> 0;
    const entries: Array<[number, number, LockMode]> = [];
    for (; cons !== prod; cons = (cons + 1) >>> 0) {
      const { vbd, name, wanted } = readRevoke(this.vic, cons);
      entries.push([vbd, name, wanted === LOCK_SHARED ? 'shared' : 'exclusive']);
    }
    // Room first (the handlers may take a while), then the monitor's backlog: it set REVOKE_WAITING before it
    // last looked at our index, so either it saw the room or we see the flag.
    Atomics.store(this.vic, Vic.REVOKE_CONS, cons | 0);
    if (Atomics.load(this.vic, Vic.REVOKE_WAITING) !== 0) this.kernel.notifyMonitor();
    // An entry for a vbd without a lock front end names a lock nobody here could hold: nothing to give back.
    for (const [vbd, name, wanted] of entries) this.fronts.get(vbd)?.revoked(name, wanted);
  }
}
