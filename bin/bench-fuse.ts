import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { formatNewImage } from '../fs/mkfs.js';
import { Platform } from '../hypervisor/toolstack.js';
import { mountDomain } from '../mount/index.js';
import { median } from './bench-stats.js';

const CLIENT = fileURLToPath(new URL('./bench-fuse-client.js', import.meta.url));
const run = promisify(execFile);

export interface FuseBenchOptions {
  dir: string;
  fileMiB: number;
  smallFiles: number;
  repetitions: number;
  onProgress?: (text: string) => void;
}

export interface FusePhase {
  phase: string;
  unit: string;
  native: number;
  mounted: number;
  /** native rate / mounted rate: how many times slower the mounted view is. */
  ratio: number;
}

type ClientResult = Record<'seqWriteMs' | 'seqReadMs' | 'smallCreateMs' | 'smallStatMs' | 'smallReadMs' | 'removeMs', number>;

async function client(dir: string, o: FuseBenchOptions): Promise<ClientResult> {
  await mkdir(dir, { recursive: true });
  const { stdout } = await run('node', [CLIENT, dir, String(o.fileMiB), String(o.smallFiles)], { maxBuffer: 1 << 20 });
  return JSON.parse(stdout) as ClientResult;
}


/**
 * dd-style sequential I/O and small-file work through a mounted domain view (FUSE -> guest agent -> guest fs ->
 * hypercalls -> monitor) versus a native folder on the same host disk, alternating, in one run.
 */
export async function benchFuse(o: FuseBenchOptions): Promise<FusePhase[]> {
  const image = join(o.dir, 'fuse-bench.img');
  await formatNewImage(image, Math.max(256 << 20, o.fileMiB * 3 << 20));
  const platform = await Platform.boot({ volumes: [{ name: 'bench', path: image }] });
  try {
    const dom1 = await platform.createDomain({ name: 'dom1', memoryBytes: 128 << 20, grants: [{ volume: 'bench', readOnly: false }], filesystem: { slot: 0 } });
    const view = await mountDomain(dom1, join(o.dir, 'mnt'));
    const native: ClientResult[] = [];
    const mounted: ClientResult[] = [];
    try {
      for (let rep = 0; rep < o.repetitions; rep++) {
        o.onProgress?.(`bench fuse repetition ${rep + 1}/${o.repetitions}: native folder`);
        native.push(await client(join(o.dir, `native-${rep}`), o));
        o.onProgress?.(`bench fuse repetition ${rep + 1}/${o.repetitions}: dom1's view`);
        mounted.push(await client(join(o.dir, 'mnt', `run-${rep}`), o));
      }
    } finally {
      await view.unmount();
    }
    const mib = o.fileMiB;
    const n = o.smallFiles;
    const phases: [string, string, keyof ClientResult, number][] = [
      [`sequential write ${mib} MiB (1 MiB writes, fsync)`, 'MiB/s', 'seqWriteMs', mib],
      [`sequential read ${mib} MiB (1 MiB reads)`, 'MiB/s', 'seqReadMs', mib],
      [`create ${n} files of 4 KiB`, 'files/s', 'smallCreateMs', n],
      [`stat ${n} files`, 'files/s', 'smallStatMs', n],
      [`read ${n} files of 4 KiB`, 'files/s', 'smallReadMs', n],
      [`remove ${n + 1} files`, 'files/s', 'removeMs', n + 1],
    ];
    return phases.map(([phase, unit, key, amount]) => {
      const nativeRate = amount / (median(native.map((r) => r[key])) / 1000);
      const mountedRate = amount / (median(mounted.map((r) => r[key])) / 1000);
      return { phase, unit, native: nativeRate, mounted: mountedRate, ratio: nativeRate / mountedRate };
    });
  } finally {
    await platform.shutdown();
  }
}
