import { Op, Ring, SECTOR, Status, statusName } from '../hypervisor/abi.js';
import { IoError } from '../fs/block-device.js';
import type { VolumeErrors } from '../fs/volume-errors.js';
import type { Blkfront } from './blkfront.js';

/**
 * The guest's side of a volume's errors state (fs/volume-errors.ts): the flag is a bit the monitor raises in the
 * ring header (Ring.VOLUME_ERRORS) for every domain sharing the volume, read without a hypercall before each change;
 * a report is the VOLUME_ERROR hypercall, its reason one sector of guest memory.
 */
export class VolumeErrorsFront implements VolumeErrors {
  private readonly ring: Int32Array;
  /** What this domain reported, if it did. */
  private own: string | null = null;

  constructor(
    ring: SharedArrayBuffer,
    private readonly disk: Blkfront,
  ) {
    this.ring = new Int32Array(ring);
  }

  get reason(): string | null {
    if ((Atomics.load(this.ring, Ring.VOLUME_ERRORS) & (1 << this.disk.vbd)) === 0) return null;
    return this.own ?? 'reported by another domain; `hvshare log` says what was found';
  }

  async report(detail: string): Promise<void> {
    this.own ??= detail;
    const text = this.disk.allocBuffer(SECTOR);
    try {
      text.fill(0);
      text.set(new TextEncoder().encode(detail).subarray(0, SECTOR - 1));
      const rsp = await this.disk.request(Op.VOLUME_ERROR, 0, 1, text.byteOffset, 0);
      // A read-only grant's report is logged but changes nothing: EROFS says so, and is no failure here.
      if (rsp.status !== Status.OK && rsp.status !== Status.EROFS) throw new IoError('EIO', `volume error report: ${statusName(rsp.status)}`);
    } finally {
      this.disk.freeBuffer(text);
    }
  }
}
