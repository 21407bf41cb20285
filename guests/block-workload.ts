import { performance } from 'node:perf_hooks';
import type { BlockDevice } from '../fs/block-device.js';

/** A block-level workload, as fio would describe it. */
export interface BlockWorkload {
  pattern: 'seq' | 'rand';
  op: 'read' | 'write';
  blockSize: number;
  queueDepth: number;
  /** The byte range of the device the workload stays in. */
  regionOffset: number;
  regionBytes: number;
  durationMs: number;
  seed: number;
}

export interface WorkloadResult {
  ops: number;
  bytes: number;
  elapsedMs: number;
  /** MiB per second. */
  mibPerSec: number;
  iops: number;
  meanLatencyUs: number;
}

/**
 * Run a workload against any BlockDevice: the guest's blkfront (the hypervisor path) or the host's native file
 * device (the baseline), so both sides of the benchmark execute the very same code. `queueDepth` submitters each
 * keep one request in flight; buffers come from the device's allocator (guest memory on the hypervisor path).
 */
export async function runBlockWorkload(dev: BlockDevice, w: BlockWorkload): Promise<WorkloadResult> {
  const blocks = Math.floor(w.regionBytes / w.blockSize);
  if (blocks < 1) throw new Error(`region of ${w.regionBytes} bytes holds no ${w.blockSize}-byte block`);
  let cursor = 0;
  let rng = w.seed >>> 0 || 1;
  const nextBlock = () => {
    if (w.pattern === 'seq') return cursor++ % blocks;
    rng ^= rng << 13;
    rng ^= rng >>> 17;
    rng ^= rng << 5;
    return (rng >>> 0) % blocks;
  };
  let ops = 0;
  let latencyMs = 0;
  const started = performance.now();
  const deadline = started + w.durationMs;
  const submitter = async (index: number) => {
    const buf = dev.allocBuffer(w.blockSize);
    try {
      if (w.op === 'write') buf.fill(index + 1);
      // At least one request each: a thread scheduled late on a busy machine measures something, not zero.
      do {
        const offset = w.regionOffset + nextBlock() * w.blockSize;
        const t0 = performance.now();
        if (w.op === 'read') await dev.read(offset, buf);
        else await dev.write(offset, buf);
        latencyMs += performance.now() - t0;
        ops++;
      } while (performance.now() < deadline);
    } finally {
      dev.freeBuffer(buf);
    }
  };
  await Promise.all(Array.from({ length: w.queueDepth }, (_, i) => submitter(i)));
  const elapsedMs = performance.now() - started;
  const bytes = ops * w.blockSize;
  return {
    ops,
    bytes,
    elapsedMs,
    mibPerSec: bytes / (1 << 20) / (elapsedMs / 1000),
    iops: ops / (elapsedMs / 1000),
    meanLatencyUs: ops ? (latencyMs / ops) * 1000 : 0,
  };
}

export interface RoundTripResult {
  calls: number;
  meanMicros: number;
}

/** Await `call` back to back for `durationMs` (queue depth 1): the mean time of one call. */
export async function measureRoundTrips(call: () => Promise<unknown>, durationMs: number): Promise<RoundTripResult> {
  let calls = 0;
  const started = performance.now();
  const deadline = started + durationMs;
  do {
    await call();
    calls++;
  } while (performance.now() < deadline);
  return { calls, meanMicros: ((performance.now() - started) * 1000) / calls };
}
