/**
 * The one interface every filesystem and benchmark speaks to storage through.
 *
 * Two implementations exist: the guest's frontend driver (blkfront: every call becomes a hypercall into the
 * monitor's block driver) and the host's native file backend (pread/pwrite on the image). The same filesystem
 * code therefore runs inside a guest domain and natively on the host (mkfs, fsck, the benchmark's baseline).
 *
 * Offsets and lengths are in bytes and must be multiples of SECTOR_SIZE. Buffers handed to read/write should come
 * from allocBuffer(): in a guest that is DMA-able guest memory, so the monitor copies straight into or out of it;
 * any other Uint8Array works too, through a bounce buffer.
 */
export const SECTOR_SIZE = 512;

export interface BlockDeviceInfo {
  /** Size of the device in bytes. */
  readonly sizeBytes: number;
  /** True when the grant (or the backing file) refuses writes. */
  readonly readOnly: boolean;
}

/**
 * A device whose writes take effect in the order they are issued, whether or not the earlier ones have completed
 * (SCSI's ordered tags): a barrier write then orders behind every write issued before it, so a caller may issue
 * a chain of writes and barriers, and other requests (a cluster lock's release) behind them, without waiting
 * between them. The guest's block driver is one: a domain's requests reach the monitor in ring order, and it
 * serves a ring in order, every write inline. The host's file device is not (its writes run on libuv's threads).
 */
export interface OrderedDevice {
  readonly ordered?: boolean;
}

export interface WriteOptions {
  /** Force unit access: the write is durable on the backend before it completes. */
  fua?: boolean;
  /**
   * A barrier: every write completed before this one (on an ordered device: issued before it) is durable before
   * this one is. Ordering without waiting: the monitor answers at once and holds it until its flush of the image
   * completed; a native device flushes first. Only FLUSH or FUA make anything durable by the time they complete.
   */
  barrier?: boolean;
  /**
   * Nobody waits for this write now (a data write its caller tracks and waits for only later, if at all): the
   * device may hold it back briefly, as a plugged Linux queue does, and send it along with later requests, one
   * notification for several. `unplug()` sends what is held; so does any request that is not in the background.
   */
  background?: boolean;
}

export interface BlockDevice extends BlockDeviceInfo, OrderedDevice {
  read(offset: number, dst: Uint8Array): Promise<void>;
  write(offset: number, src: Uint8Array, options?: WriteOptions): Promise<void>;
  /** Everything completed before the call is durable on the backend when it resolves. */
  flush(): Promise<void>;
  /** Send background writes held back (WriteOptions.background) now: someone is about to wait for them. */
  unplug?(): void;
  /** The range may read back as zeros afterwards; its old contents are gone. */
  discard(offset: number, length: number): Promise<void>;
  /** A buffer the device can transfer into/out of without a copy. */
  allocBuffer(size: number): Uint8Array;
  /** Give a buffer from allocBuffer back. */
  freeBuffer(buf: Uint8Array): void;
  close(): Promise<void>;
}

/** An error carrying a POSIX errno name, as the block layer and the filesystem report failures. */
/**
 * Errnos that are a filesystem's routine answers (a lookup of a name that is not there, a create of one that is,
 * an attribute not set): workloads make them by the thousand (a create looks its name up first, git stats names
 * that do not exist), and capturing a stack trace cost each about 8 µs of the ~10 µs it took to raise and catch
 * one across eight async frames. They carry none; every other errno (EIO above all) keeps its stack.
 */
const ROUTINE_ERRNOS = new Set(['ENOENT', 'EEXIST', 'ENODATA', 'ENOTEMPTY', 'ENOTDIR', 'EISDIR', 'EACCES', 'EPERM']);

export class IoError extends Error {
  constructor(readonly code: string, readonly detail: string) {
    const limit = Error.stackTraceLimit;
    if (ROUTINE_ERRNOS.has(code)) Error.stackTraceLimit = 0;
    try {
      super(`${code}: ${detail}`);
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.name = 'IoError';
  }
}

export function checkRange(info: BlockDeviceInfo, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new IoError('EINVAL', `bad range ${offset}+${length}`);
  }
  if (offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0) {
    throw new IoError('EINVAL', `range ${offset}+${length} is not sector aligned`);
  }
  if (offset + length > info.sizeBytes) {
    throw new IoError('EIO', `range ${offset}+${length} beyond device end ${info.sizeBytes}`);
  }
}
