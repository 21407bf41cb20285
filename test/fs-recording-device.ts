/**
 * Crash-test plumbing (after dm-log-writes / CrashMonkey): a BlockDevice wrapper that records the write stream
 * with flush marks, and an in-memory device to rebuild the image as it may be after a crash at any point.
 */
import { checkRange, IoError, type BlockDevice, type WriteOptions } from '../fs/block-device.js';

export type Recorded =
  | { kind: 'write'; offset: number; data: Uint8Array }
  | { kind: 'flush' }
  | { kind: 'mark'; label: string };

export class RecordingBlockDevice implements BlockDevice {
  readonly log: Recorded[] = [];
  constructor(private readonly inner: BlockDevice) {}

  /**
   * Over an ordered device the stream is recorded as requests are issued (that is the order they take effect
   * in); otherwise as they complete.
   */
  get ordered(): boolean {
    return this.inner.ordered === true;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  read(offset: number, dst: Uint8Array): Promise<void> {
    return this.inner.read(offset, dst);
  }
  async write(offset: number, src: Uint8Array, options: WriteOptions = {}): Promise<void> {
    // A barrier: everything recorded so far is durable before this write or any later one lands, which is what
    // the monitor's epochs (hypervisor/write-epochs.ts) give the image.
    if (options.barrier) this.log.push({ kind: 'flush' });
    const entries: Recorded[] = [{ kind: 'write', offset, data: src.slice() }];
    if (options.fua) entries.push({ kind: 'flush' });
    await this.recorded(entries, () => this.inner.write(offset, src, options));
  }
  flush(): Promise<void> {
    return this.recorded([{ kind: 'flush' }], () => this.inner.flush());
  }
  discard(offset: number, length: number): Promise<void> {
    return this.recorded([{ kind: 'write', offset, data: new Uint8Array(length) }], () => this.inner.discard(offset, length));
  }
  /** Runs `request`, recording `entries` when it is issued (ordered device) or once it completed. */
  private async recorded(entries: Recorded[], request: () => Promise<void>): Promise<void> {
    if (this.ordered) this.log.push(...entries);
    await request();
    if (!this.ordered) this.log.push(...entries);
  }
  /** Notes that something was acknowledged at this point of the stream (an fsync returned). */
  mark(label: string): void {
    this.log.push({ kind: 'mark', label });
  }
  allocBuffer(size: number): Uint8Array {
    return this.inner.allocBuffer(size);
  }
  freeBuffer(buf: Uint8Array): void {
    this.inner.freeBuffer(buf);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * An ordered device (OrderedDevice) over another: each request starts once the one issued before it completed, as
 * the monitor serves a domain's ring, so the filesystem takes the path it takes in a guest.
 */
export class SerialBlockDevice implements BlockDevice {
  readonly ordered = true;
  private tail: Promise<unknown> = Promise.resolve();
  constructor(private readonly inner: BlockDevice) {}

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  read(offset: number, dst: Uint8Array): Promise<void> {
    return this.next(() => this.inner.read(offset, dst));
  }
  write(offset: number, src: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.next(() => this.inner.write(offset, src, options));
  }
  flush(): Promise<void> {
    return this.next(() => this.inner.flush());
  }
  discard(offset: number, length: number): Promise<void> {
    return this.next(() => this.inner.discard(offset, length));
  }
  allocBuffer(size: number): Uint8Array {
    return this.inner.allocBuffer(size);
  }
  freeBuffer(buf: Uint8Array): void {
    this.inner.freeBuffer(buf);
  }
  close(): Promise<void> {
    return this.next(() => this.inner.close());
  }
  private next(request: () => Promise<void>): Promise<void> {
    const started = this.tail.then(request);
    this.tail = started.catch(() => {});
    return started;
  }
}

export class MemoryBlockDevice implements BlockDevice {
  readonly readOnly = false;
  constructor(readonly image: Uint8Array) {}
  get sizeBytes(): number {
    return this.image.length;
  }
  async read(offset: number, dst: Uint8Array): Promise<void> {
    checkRange(this, offset, dst.length);
    dst.set(this.image.subarray(offset, offset + dst.length));
  }
  async write(offset: number, src: Uint8Array): Promise<void> {
    checkRange(this, offset, src.length);
    this.image.set(src, offset);
  }
  async flush(): Promise<void> {}
  async discard(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    this.image.fill(0, offset, offset + length);
  }
  allocBuffer(size: number): Uint8Array {
    return new Uint8Array(size);
  }
  freeBuffer(): void {}
  async close(): Promise<void> {}
}

/** One 4 KiB piece of a recorded write: the unit a crash may keep or lose. */
export interface Piece {
  offset: number;
  data: Uint8Array;
}

export function pieces(write: { offset: number; data: Uint8Array }): Piece[] {
  const out: Piece[] = [];
  for (let at = 0; at < write.data.length; at += 4096) {
    out.push({ offset: write.offset + at, data: write.data.subarray(at, Math.min(at + 4096, write.data.length)) });
  }
  return out;
}

export function apply(image: Uint8Array, piece: Piece): void {
  if (piece.offset + piece.data.length > image.length) throw new IoError('EIO', 'piece beyond image');
  image.set(piece.data, piece.offset);
}
