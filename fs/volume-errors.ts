/**
 * Corruption found at run time, and the volume-wide "errors" state it sets, as ext4's errors=remount-ro: the
 * operation that found it gets EIO (naming what is wrong), and from then on every domain sharing the volume
 * refuses to change it (EROFS, naming why) until it is checked and repaired offline (`hvshare fsck`).
 *
 * What counts as corruption: a metadata block whose header or checksum is wrong, a block pointer outside the
 * data area, a data block whose crc32c differs from the one next to its pointer, a bitmap that contradicts
 * itself. A failed transfer (the backend's EIO) is not: the volume may be fine, and the device is to blame.
 *
 * The state is the monitor's to keep (hypervisor/abi.ts, Op.VOLUME_ERROR and Ring.VOLUME_ERRORS): a domain
 * reports, the monitor logs the report and raises the flag in every domain with a grant on the volume.
 * LocalVolumeErrors is the same in one process (native mounts and tests that share one volume between
 * several filesystem instances).
 */
import { IoError } from './block-device.js';

/** An IoError (EIO) that says the volume's contents are wrong, not that a transfer failed. */
export class CorruptionError extends IoError {
  constructor(detail: string) {
    super('EIO', detail);
    this.name = 'CorruptionError';
  }
}

export interface VolumeErrors {
  /** Why the volume turned read-only (the first corruption reported, by any domain), or null. */
  readonly reason: string | null;
  /** Reports corruption found by this instance: the volume turns read-only for every domain sharing it. */
  report(detail: string): Promise<void>;
}

/** The volume's errors state shared by the filesystem instances of one process. */
export class LocalVolumeErrors implements VolumeErrors {
  reason: string | null = null;
  /** Every report, first to last (tests, diagnostics). */
  readonly reports: string[] = [];

  async report(detail: string): Promise<void> {
    this.reports.push(detail);
    this.reason ??= detail;
  }
}

/** The EROFS a change gets once the volume has errors. */
export function readOnlyBecause(reason: string): IoError {
  return new IoError('EROFS', `volume turned read-only after corruption was found (${reason}); check it with hvshare fsck`);
}
