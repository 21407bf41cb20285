import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { FileSystem } from '../fs/filesystem.js';
import { LocalLockService } from '../fs/local-lock-service.js';
import { formatNewImage } from '../fs/mkfs.js';
import { O_CREAT, O_RDONLY, O_TRUNC, O_WRONLY } from '../fs/vfs.js';
import { runFileWorkload, type FileWorkload, type FileWorkloadResult } from '../guests/file-workload.js';
import { Platform, type DomainHandle } from '../hypervisor/toolstack.js';
import { domainVfs } from '../hypervisor/domain-vfs.js';
import { median, p99, withCpuCost, type CpuCost } from './bench-stats.js';
import { sizeLabel } from './bench-block.js';
import { mapSplit, type CpuSplit } from '../hypervisor/thread-cpu.js';

export interface FileBenchOptions {
  dir: string;
  fileBytes: number;
  repetitions: number;
  latencyRounds: number;
  onProgress?: (text: string) => void;
}

export interface FileCaseResult {
  op: 'write' | 'read';
  chunkBytes: number;
  nativeMiBps: number;
  hypervisorMiBps: number;
  /** Time overhead of the guest versus native, percent. */
  overheadPct: number;
  /** CPU of every thread of the benchmark process per GiB written or read (medians of the repetitions). */
  nativeCpuMsPerGiB: number;
  hypervisorCpuMsPerGiB: number;
  /** The hypervisor side's by part: guest kernels, monitor, its I/O threads, the host's main thread. */
  hypervisorCpuSplitMsPerGiB: CpuSplit;
}

/** Latencies of the rounds, in microseconds: median, 99th percentile and every round's, in order. */
export interface Visibility {
  medianUs: number;
  p99Us: number;
  samplesUs: number[];
}

/** A case as the table and the report name it, e.g. "write 64M file, 128K calls". */
export function fileCaseLabel(c: FileCaseResult, fileBytes: number): string {
  return `${c.op} ${sizeLabel(fileBytes)} file, ${sizeLabel(c.chunkBytes)} calls`;
}

export interface LatencyResult {
  /** write+close in dom1, then open+read in dom2: the lock moves, dom1 commits, dom2 drops its cache. */
  crossDomain: Visibility;
  /** write+close then open+read, both in dom1 (the lock stays cached): the same work without sharing. */
  sameDomain: Visibility;
}


/**
 * File level: a 64 MiB file written (with fsync) and read back inside a guest domain versus the very same
 * filesystem code mounted natively on the host (each on its own image), medians of alternating repetitions; and
 * how long data written and closed in one domain takes to be read in another.
 */
export async function benchFile(options: FileBenchOptions): Promise<{ cases: FileCaseResult[]; latency: LatencyResult }> {
  const imageBytes = Math.max(256 << 20, options.fileBytes * 3);
  const nativePath = join(options.dir, 'native.img');
  const guestPath = join(options.dir, 'guest.img');
  await formatNewImage(nativePath, imageBytes);
  await formatNewImage(guestPath, imageBytes);
  const nativeDev = await FileBlockDevice.open(nativePath);
  const native = await FileSystem.mount(nativeDev, { slot: 0, locks: new LocalLockService().client() });
  const platform = await Platform.boot({ volumes: [{ name: 'bench', path: guestPath }] });
  try {
    const grants = [{ volume: 'bench', readOnly: false }];
    const dom1 = await platform.createDomain({ name: 'dom1', memoryBytes: 64 << 20, grants, filesystem: { slot: 0 } });
    const dom2 = await platform.createDomain({ name: 'dom2', memoryBytes: 64 << 20, grants, filesystem: { slot: 1 } });
    const cases: FileCaseResult[] = [];
    for (const chunkBytes of [128 << 10, 1 << 20]) {
      for (const op of ['write', 'read'] as const) {
        const workload: FileWorkload = { op, path: '/bench.bin', bytes: options.fileBytes, chunkBytes };
        const nativeRuns: Measured[] = [];
        const guestRuns: Measured[] = [];
        for (let rep = 0; rep < options.repetitions; rep++) {
          options.onProgress?.(`bench file ${op} ${chunkBytes >> 10}K chunks, repetition ${rep + 1}/${options.repetitions}`);
          nativeRuns.push(await measured(() => runFileWorkload(native, workload)));
          guestRuns.push(await measured(() => dom1.call<FileWorkloadResult>({ kind: 'file-workload', workload }), platform));
        }
        const of = (runs: Measured[], f: (m: Measured) => number) => median(runs.map(f));
        const nativeMiBps = of(nativeRuns, (m) => m.result.mibPerSec);
        const hypervisorMiBps = of(guestRuns, (m) => m.result.mibPerSec);
        cases.push({
          op,
          chunkBytes,
          nativeMiBps,
          hypervisorMiBps,
          overheadPct: (nativeMiBps / hypervisorMiBps - 1) * 100,
          nativeCpuMsPerGiB: of(nativeRuns, (m) => m.cpuMsPerGiB),
          hypervisorCpuMsPerGiB: of(guestRuns, (m) => m.cpuMsPerGiB),
          hypervisorCpuSplitMsPerGiB: mapSplit((part) => of(guestRuns, (m) => m.split![part])),
        });
      }
    }
    options.onProgress?.('bench file cross-domain latency');
    const latency: LatencyResult = {
      crossDomain: await visibility(dom1, dom2, options.latencyRounds, '/visible.bin'),
      // A file of its own: one another domain used a moment ago is handed back on every close (close-to-open).
      sameDomain: await visibility(dom1, dom1, options.latencyRounds, '/private.bin'),
    };
    return { cases, latency };
  } finally {
    await native.unmount();
    await nativeDev.close();
    await platform.shutdown();
  }
}


type Measured = { result: FileWorkloadResult } & CpuCost;
const measured = (run: () => Promise<FileWorkloadResult>, platform?: Platform): Promise<Measured> => withCpuCost(run, (r) => r.bytes, platform);

/** Rounds of: `writer` writes 4 KiB and closes, `reader` opens and reads it; checks the bytes; times each round. */
async function visibility(writer: DomainHandle, reader: DomainHandle, rounds: number, path: string): Promise<Visibility> {
  const times: number[] = [];
  const data = new Uint8Array(4096);
  const [w, r] = [domainVfs(writer), domainVfs(reader)];
  for (let round = 0; round < rounds; round++) {
    data.fill(round & 255);
    const t0 = performance.now();
    const wfh = await w.create(path, 0o644, O_WRONLY | O_CREAT | O_TRUNC);
    await w.write(wfh, 0, data);
    await w.release(wfh);
    const rfh = await r.open(path, O_RDONLY);
    const got = await r.read(rfh, 0, 4096);
    await r.release(rfh);
    times.push((performance.now() - t0) * 1000);
    if (got.length !== 4096 || got[0] !== (round & 255) || got[4095] !== (round & 255)) {
      throw new Error(`${reader.name} read stale data in round ${round}`);
    }
  }
  return { medianUs: median(times), p99Us: p99(times), samplesUs: times.map((us) => Math.round(us * 10) / 10) };
}
