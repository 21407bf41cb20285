import { performance } from 'node:perf_hooks';
import { O_CREAT, O_RDONLY, O_TRUNC, O_WRONLY, type Vfs } from '../fs/vfs.js';

/** Write or read one file sequentially in `chunkBytes` steps (write: create, write, fsync, close). */
export interface FileWorkload {
  op: 'write' | 'read';
  path: string;
  bytes: number;
  chunkBytes: number;
}

export interface FileWorkloadResult {
  bytes: number;
  elapsedMs: number;
  mibPerSec: number;
}

/**
 * Runs against any Vfs: the filesystem inside a guest (every block through hypercalls) or the same filesystem
 * code mounted natively on the host, so the file benchmark compares like with like.
 */
export async function runFileWorkload(vfs: Vfs, w: FileWorkload): Promise<FileWorkloadResult> {
  const chunk = new Uint8Array(w.chunkBytes);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + 7) & 255;
  const started = performance.now();
  let done = 0;
  if (w.op === 'write') {
    const fh = await vfs.create(w.path, 0o644, O_WRONLY | O_CREAT | O_TRUNC);
    for (; done < w.bytes; done += w.chunkBytes) await vfs.write(fh, done, chunk.subarray(0, Math.min(w.chunkBytes, w.bytes - done)));
    await vfs.fsync(fh, false);
    await vfs.release(fh);
  } else {
    const fh = await vfs.open(w.path, O_RDONLY);
    for (;;) {
      const got = await vfs.read(fh, done, w.chunkBytes);
      if (got.length === 0) break;
      done += got.length;
    }
    await vfs.release(fh);
  }
  const elapsedMs = performance.now() - started;
  return { bytes: done, elapsedMs, mibPerSec: done / (1 << 20) / (elapsedMs / 1000) };
}
