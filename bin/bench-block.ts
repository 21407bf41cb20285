import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { measureRoundTrips, runBlockWorkload, type BlockWorkload, type RoundTripResult, type WorkloadResult } from '../guests/block-workload.js';
import { Platform } from '../hypervisor/toolstack.js';
import type { SpinBudgets } from '../hypervisor/spin-policy.js';
import { median, withCpuCost } from './bench-stats.js';
import { diagnose, snapshot, type PathDiagnostics } from './bench-block-diagnostics.js';
import { mapSplit, type CpuSplit } from '../hypervisor/thread-cpu.js';

export interface BlockBenchOptions {
  dir: string;
  imageBytes: number;
  durationMs: number;
  /** Only these cases (default: blockCases()). */
  cases?: BlockCase[];
  /** Measure every case this many times (default 1); each side reports its median, the overhead the median ratio. */
  repetitions?: number;
  onProgress?: (done: number, total: number, label: string) => void;
}

export interface BlockCase {
  pattern: 'seq' | 'rand';
  op: 'read' | 'write';
  blockSize: number;
  queueDepth: number;
  domains: number;
}

export interface Side {
  mibPerSec: number;
  iops: number;
  meanLatencyUs: number;
  /** CPU the whole benchmark process spent per GiB moved (every thread: for the hypervisor path, all of its). */
  cpuMsPerGiB: number;
  /** The hypervisor path's CPU per GiB by part: guest kernels, monitor, its I/O threads, host main thread. */
  cpuSplitMsPerGiB?: CpuSplit;
}

export interface BlockCaseResult extends BlockCase {
  nativeSync: Side;
  nativeAsync: Side;
  hypervisor: Side;
  /** Time overhead of the hypervisor path versus the faster native baseline, in percent (negative = faster). */
  overheadPct: number;
  /** Where the hypervisor path's time went (medians of the repetitions). */
  diagnostics: PathDiagnostics;
}

export function blockCases(): BlockCase[] {
  const cases: BlockCase[] = [];
  for (const domains of [1, 2])
    for (const pattern of ['seq', 'rand'] as const)
      for (const op of ['read', 'write'] as const)
        for (const blockSize of [4096, 65536, 1 << 20])
          for (const queueDepth of [1, 32]) cases.push({ pattern, op, blockSize, queueDepth, domains });
  return cases;
}

function medianSide(sides: Side[]): Side {
  const of = (f: (s: Side) => number) => median(sides.map(f));
  const split = sides[0]!.cpuSplitMsPerGiB;
  return {
    mibPerSec: of((x) => x.mibPerSec),
    iops: of((x) => x.iops),
    meanLatencyUs: of((x) => x.meanLatencyUs),
    cpuMsPerGiB: of((x) => x.cpuMsPerGiB),
    ...(split ? { cpuSplitMsPerGiB: mapSplit((k) => of((x) => x.cpuSplitMsPerGiB![k])) } : {}),
  };
}

/** Runs one side of a case and adds what it cost in CPU per GiB (and, given the platform, by part). */
async function measured(run: () => Promise<WorkloadResult[]>, platform?: Platform): Promise<Side> {
  const { result, cpuMsPerGiB, split } = await withCpuCost(run, (results) => results.reduce((s, r) => s + r.bytes, 0), platform);
  return { ...combine(result), cpuMsPerGiB, ...(split ? { cpuSplitMsPerGiB: split } : {}) };
}

/** A case as the table names it, e.g. "seq read 64K qd32 x2". */
export function caseLabel(c: BlockCase): string {
  return `${c.pattern} ${c.op} ${sizeLabel(c.blockSize)} qd${c.queueDepth} x${c.domains}`;
}

/** Sum of the streams' rates; latency averaged. */
function combine(results: WorkloadResult[]): Omit<Side, 'cpuMsPerGiB'> {
  return {
    mibPerSec: results.reduce((s, r) => s + r.mibPerSec, 0),
    iops: results.reduce((s, r) => s + r.iops, 0),
    meanLatencyUs: results.reduce((s, r) => s + r.meanLatencyUs, 0) / results.length,
  };
}

/** The fixed cost of one request, which queue depth 1 pays in full on every transfer. */
export interface RoundTrip {
  /** A VOLINFO hypercall (no data moved) from a guest process, completion included, in microseconds. */
  hypercallMicros: number;
  /** Awaiting an async function that does nothing, on the host: the floor of any asynchronous call. */
  asyncCallMicros: number;
}

export interface BlockBenchResult {
  cases: BlockCaseResult[];
  roundTrip: RoundTrip;
  /** How long the platform's threads polled before sleeping, and why (decided from this host at boot). */
  spin: SpinBudgets;
}

/**
 * Native pread/pwrite on an image versus the same workloads run inside guest domains through hypercalls, the
 * monitor and virtual interrupts, case by case in one run (each case's three measurements back to back).
 * Stream i of a case works in the i-th half of the image, for both sides. Then the round trip of a request that
 * moves no data.
 */
export async function benchBlock(options: BlockBenchOptions): Promise<BlockBenchResult> {
  const path = join(options.dir, 'bench-block.img');
  await fillImage(path, options.imageBytes);
  const platform = await Platform.boot({ volumes: [{ name: 'bench', path }] });
  const asyncDev = await FileBlockDevice.open(path);
  try {
    const domains = await Promise.all(
      ['dom1', 'dom2'].map((name) => platform.createDomain({ name, memoryBytes: 72 << 20, grants: [{ volume: 'bench', readOnly: false }] })),
    );
    const cases = options.cases ?? blockCases();
    const results: BlockCaseResult[] = [];
    // Warm the guest path up (compiled code, the drivers' latency estimates) before the first case counts.
    const warmUp: BlockWorkload = { pattern: 'seq', op: 'read', blockSize: 4096, queueDepth: 1, regionOffset: 0, regionBytes: 1 << 20, durationMs: 100, seed: 1 };
    await Promise.all(domains.map((d) => d.call({ kind: 'block-workload', workload: warmUp })));
    for (const [n, c] of cases.entries()) {
      const label = caseLabel(c);
      options.onProgress?.(n, cases.length, label);
      const workloads = Array.from({ length: c.domains }, (_, i): BlockWorkload => ({
        pattern: c.pattern,
        op: c.op,
        blockSize: c.blockSize,
        queueDepth: c.queueDepth,
        regionOffset: (i * options.imageBytes) / 2,
        regionBytes: options.imageBytes / 2,
        durationMs: options.durationMs,
        seed: 1234 + i,
      }));
      const runs: Omit<BlockCaseResult, keyof BlockCase>[] = [];
      for (let r = 0; r < (options.repetitions ?? 1); r++) {
        const nativeSync = await measured(() => Promise.all(workloads.map((w) => runNativeSync(path, w))));
        const nativeAsync = await measured(() => Promise.all(workloads.map((w) => runBlockWorkload(asyncDev, w))));
        const used = domains.slice(0, c.domains);
        const before = await snapshot(platform, used);
        const hypervisor = await measured(
          () => Promise.all(workloads.map((w, i) => domains[i].call<WorkloadResult>({ kind: 'block-workload', workload: w }))),
          platform,
        );
        const diagnostics = diagnose(before, await snapshot(platform, used));
        const best = Math.max(nativeSync.mibPerSec, nativeAsync.mibPerSec);
        runs.push({ nativeSync, nativeAsync, hypervisor, overheadPct: (best / hypervisor.mibPerSec - 1) * 100, diagnostics });
      }
      const diagnostics = Object.fromEntries(
        Object.keys(runs[0]!.diagnostics).map((k) => [k, median(runs.map((x) => x.diagnostics[k as keyof PathDiagnostics]))]),
      ) as unknown as PathDiagnostics;
      results.push({
        ...c,
        nativeSync: medianSide(runs.map((x) => x.nativeSync)),
        nativeAsync: medianSide(runs.map((x) => x.nativeAsync)),
        hypervisor: medianSide(runs.map((x) => x.hypervisor)),
        overheadPct: median(runs.map((x) => x.overheadPct)),
        diagnostics,
      });
    }
    options.onProgress?.(cases.length, cases.length, 'null requests');
    const hypercall = await domains[0].call<RoundTripResult>({ kind: 'null-requests', durationMs: options.durationMs });
    const asyncCall = await measureRoundTrips(async () => {}, options.durationMs);
    options.onProgress?.(cases.length, cases.length, 'done');
    return { cases: results, roundTrip: { hypercallMicros: hypercall.meanMicros, asyncCallMicros: asyncCall.meanMicros }, spin: platform.spin };
  } finally {
    await asyncDev.close();
    await platform.shutdown();
  }
}

async function runNativeSync(path: string, workload: BlockWorkload): Promise<WorkloadResult> {
  const worker = new Worker(new URL('./bench-native-worker.js', import.meta.url), { workerData: { path, workload } });
  // Both listeners from the start: the worker may be gone by the time its message has been handled.
  const exited = once(worker, 'exit');
  const [result] = (await once(worker, 'message')) as [WorkloadResult];
  await exited;
  return result;
}

/** Write real data over the whole image, so both sides read cached pages, not holes. */
async function fillImage(path: string, bytes: number): Promise<void> {
  const handle = await open(path, 'w');
  const chunk = new Uint8Array(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24;
  for (let done = 0; done < bytes; done += chunk.length) await handle.write(chunk, 0, Math.min(chunk.length, bytes - done), done);
  await handle.close();
}

export function sizeLabel(bytes: number): string {
  return bytes >= 1 << 20 ? `${bytes >> 20}M` : `${bytes >> 10}K`;
}

export interface TargetCheck {
  target: string;
  limitPct: number;
  /** The worst overhead among the cases the target covers; null when none of them ran (--only). */
  worstPct: number | null;
  met: boolean | null;
}

/** The targets: 64 KiB+ sequential read <= 5%, write <= 10%, 4 KiB at QD32 within 30% of native. */
export function checkTargets(results: BlockCaseResult[]): TargetCheck[] {
  const worst = (filter: (r: BlockCaseResult) => boolean) => {
    const covered = results.filter(filter);
    return covered.length ? Math.max(...covered.map((r) => r.overheadPct)) : null;
  };
  const checks = [
    { target: 'seq read >= 64K', limitPct: 5, worstPct: worst((r) => r.pattern === 'seq' && r.op === 'read' && r.blockSize >= 65536) },
    { target: 'seq write >= 64K', limitPct: 10, worstPct: worst((r) => r.pattern === 'seq' && r.op === 'write' && r.blockSize >= 65536) },
    { target: '4K qd32', limitPct: 30, worstPct: worst((r) => r.blockSize === 4096 && r.queueDepth === 32) },
  ];
  return checks.map((c) => ({ ...c, met: c.worstPct === null ? null : c.worstPct <= c.limitPct }));
}
