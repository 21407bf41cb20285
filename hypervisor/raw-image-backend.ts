import { closeSync, fdatasyncSync, fstatSync, openSync, readSync, readvSync, writeSync, writevSync } from 'node:fs';
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

  readv(position: number, into: Uint8Array[]): void {
    const done = readvSync(this.fd, into, position);
    if (done < byteLength(into)) eachRest(position, into, done, (at, view) => this.read(at, view));
  }

  writev(position: number, from: Uint8Array[]): void {
    const done = writevSync(this.fd, from, position);
    if (done < byteLength(from)) eachRest(position, from, done, (at, view) => this.write(at, view));
  }

  writeBarrier(position: number, from: Uint8Array): void {
    this.flush();
    this.write(position, from);
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

function byteLength(views: Uint8Array[]): number {
  let n = 0;
  for (const v of views) n += v.length;
  return n;
}

/** After a short vectored transfer of `done` bytes: the part of each buffer still to do, with its file position. */
function eachRest(position: number, views: Uint8Array[], done: number, each: (position: number, view: Uint8Array) => void): void {
  let offset = 0;
  for (const view of views) {
    const end = offset + view.length;
    if (end > done) {
      const skip = Math.max(0, done - offset);
      each(position + offset + skip, view.subarray(skip));
    }
    offset = end;
  }
}
