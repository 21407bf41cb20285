import { IoError } from '../fs/block-device.js';

const PAGE = 4096;

/**
 * The domain's physical memory: a SharedArrayBuffer the monitor can reach (grant-style) for I/O, and a page
 * allocator over it for DMA-able buffers. First fit over a sorted list of free extents, coalescing on free.
 */
export class GuestMemory {
  readonly bytes: Uint8Array;
  /** Free extents [offset, length], sorted by offset, never adjacent. */
  private readonly free: [number, number][];
  private readonly allocated = new Map<number, number>();

  constructor(readonly buffer: SharedArrayBuffer) {
    this.bytes = new Uint8Array(buffer);
    this.free = [[0, Math.floor(buffer.byteLength / PAGE) * PAGE]];
  }

  get freeBytes(): number {
    return this.free.reduce((sum, [, len]) => sum + len, 0);
  }

  /** True when `view` lies in this memory (so the monitor can transfer into it directly). */
  owns(view: Uint8Array): boolean {
    return view.buffer === this.buffer;
  }

  alloc(size: number): Uint8Array {
    const length = Math.max(PAGE, Math.ceil(size / PAGE) * PAGE);
    const i = this.free.findIndex(([, len]) => len >= length);
    if (i < 0) throw new IoError('ENOMEM', `guest memory exhausted (${size} bytes wanted, ${this.freeBytes} free)`);
    const [offset, len] = this.free[i];
    if (len === length) this.free.splice(i, 1);
    else this.free[i] = [offset + length, len - length];
    this.allocated.set(offset, length);
    return this.bytes.subarray(offset, offset + size);
  }

  release(view: Uint8Array): void {
    const offset = view.byteOffset;
    const length = this.allocated.get(offset);
    if (view.buffer !== this.buffer || length === undefined) throw new Error('freeing a buffer not from alloc()');
    this.allocated.delete(offset);
    let i = this.free.findIndex(([o]) => o > offset);
    if (i < 0) i = this.free.length;
    this.free.splice(i, 0, [offset, length]);
    // Coalesce with the successor, then the predecessor.
    if (i + 1 < this.free.length && offset + length === this.free[i + 1][0]) {
      this.free[i][1] += this.free[i + 1][1];
      this.free.splice(i + 1, 1);
    }
    if (i > 0 && this.free[i - 1][0] + this.free[i - 1][1] === offset) {
      this.free[i - 1][1] += this.free[i][1];
      this.free.splice(i, 1);
    }
  }
}
