import { closeSync, fdatasyncSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import type { BlockBackend } from './block-backend.js';

const ZEROS = new Uint8Array(1 << 20);

/** A raw image file as the backend of a volume: pread/pwrite on it, fdatasync on FLUSH. */
export class RawImageBackend implements BlockBackend {
  private readonly fd: number;
  readonly sizeBytes: number;

  constructor(readonly path: string, readonly readOnly = false) {
    this.fd = openSync(path, readOnly ? 'r' : 'r+');
    this.sizeBytes = fstatSync(this.fd).size;
  }

  read(position: number, into: Uint8Array): void {
    let done = 0;
    while (done < into.length) {
      const n = readSync(this.fd, into, done, into.length - done, position + done);
      if (n === 0) {
        into.fill(0, done);
        return;
      }
      done += n;
    }
  }

  write(position: number, from: Uint8Array): void {
    let done = 0;
    while (done < from.length) done += writeSync(this.fd, from, done, from.length - done, position + done);
  }

  flush(): void {
    fdatasyncSync(this.fd);
  }

  discard(position: number, length: number): void {
    for (let done = 0; done < length; done += ZEROS.length) {
      this.write(position + done, ZEROS.subarray(0, Math.min(ZEROS.length, length - done)));
    }
  }

  close(): void {
    closeSync(this.fd);
  }
}
