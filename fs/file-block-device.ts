import { open, type FileHandle } from 'node:fs/promises';
import { type BlockDevice, checkRange, IoError, type WriteOptions } from './block-device.js';

/**
 * The host's native block device: pread/pwrite on an image file. It is what mkfs and fsck run on, and the
 * benchmark's baseline for the hypervisor path.
 */
export class FileBlockDevice implements BlockDevice {
  /** The datasync the FUA writes completing now will share (started on the next turn of the event loop). */
  private groupSync: Promise<void> | null = null;
  /** The flush a barrier write started: every write issued after the barrier waits for it, as the monitor does. */
  private barrierFlush: Promise<void> | null = null;

  private constructor(
    private readonly handle: FileHandle,
    readonly sizeBytes: number,
    readonly readOnly: boolean,
  ) {}

  static async open(path: string, options: { readOnly?: boolean } = {}): Promise<FileBlockDevice> {
    const readOnly = options.readOnly ?? false;
    const handle = await open(path, readOnly ? 'r' : 'r+');
    const { size } = await handle.stat();
    return new FileBlockDevice(handle, size, readOnly);
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    checkRange(this, offset, dst.length);
    let done = 0;
    while (done < dst.length) {
      const { bytesRead } = await this.handle.read(dst, done, dst.length - done, offset + done);
      if (bytesRead === 0) throw new IoError('EIO', `short read at ${offset + done}`);
      done += bytesRead;
    }
  }

  async write(offset: number, src: Uint8Array, options: WriteOptions = {}): Promise<void> {
    this.checkWritable();
    checkRange(this, offset, src.length);
    if (options.barrier) {
      const flush = this.handle.datasync().finally(() => {
        if (this.barrierFlush === flush) this.barrierFlush = null;
      });
      this.barrierFlush = flush;
    }
    if (this.barrierFlush) await this.barrierFlush;
    let done = 0;
    while (done < src.length) {
      const { bytesWritten } = await this.handle.write(src, done, src.length - done, offset + done);
      done += bytesWritten;
    }
    if (options.fua) await this.syncCompleted();
  }

  /**
   * Makes every write completed so far durable, as FUA promises for the caller's: FUA writes that complete in the
   * same turn of the event loop (a journal commit's log and record, its home runs) share one datasync, which
   * starts after all of them completed.
   */
  private syncCompleted(): Promise<void> {
    this.groupSync ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      this.groupSync = null;
      return this.handle.datasync();
    });
    return this.groupSync;
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.handle.datasync();
  }

  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkRange(this, offset, length);
    const zeros = new Uint8Array(Math.min(length, 1 << 20));
    for (let done = 0; done < length; done += zeros.length) {
      await this.write(offset + done, zeros.subarray(0, Math.min(zeros.length, length - done)));
    }
  }

  allocBuffer(size: number): Uint8Array {
    return new Uint8Array(size);
  }

  freeBuffer(): void {}

  async close(): Promise<void> {
    await this.handle.close();
  }

  private checkWritable(): void {
    if (this.readOnly) throw new IoError('EROFS', 'device is read-only');
  }
}
