/**
 * `hvshare bench fuse`: everyday tools through a mount, in five columns measured in one run, repetitions
 * alternating between the columns:
 *  - `native`: a folder on the host disk;
 *  - `pass-through strict|auto`: bench-passthrough.ts over a native folder, mounted with a view's options in that
 *    cache mode (the ceiling of fuse-native for a view);
 *  - `view strict|auto`: a domain's view (mountDomain) in that cache mode.
 * Every column has two mounts of one folder, A and B: dom1's and dom2's views of one volume, two pass-through
 * mounts of one backing folder, or the native folder twice. Trees are written through A and read through B.
 *
 * All work on a mount runs in child processes started asynchronously: the FUSE handlers run on this process's
 * main thread, so a synchronous call (or a child with its cwd in a mount) would wait for itself forever.
 */
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatNewImage } from '../fs/mkfs.js';
import { Platform } from '../hypervisor/toolstack.js';
import type { CacheMode } from '../mount/cache-mode.js';
import { mountDomain } from '../mount/index.js';
import { mountPassthrough } from './bench-passthrough.js';
import { gitEnv, makeTree } from './bench-fuse-tree.js';
import { median, p99 } from './bench-stats.js';

const CLIENT = fileURLToPath(new URL('./bench-fuse-client.js', import.meta.url));
const VISIBILITY = fileURLToPath(new URL('./bench-fuse-visibility.js', import.meta.url));

export const COLUMNS = ['native', 'passthroughStrict', 'passthroughAuto', 'viewStrict', 'viewAuto'] as const;
export type Column = (typeof COLUMNS)[number];
export const COLUMN_LABELS: Record<Column, string> = {
  native: 'native',
  passthroughStrict: 'pass-through strict',
  passthroughAuto: 'pass-through auto',
  viewStrict: 'view strict',
  viewAuto: 'view auto',
};

/** Row groups, as `--only` names them. */
export const GROUPS = ['tree', 'big-dir', 'iops', 'visibility', 'sequential', 'small-files'] as const;
export type Group = (typeof GROUPS)[number];

export interface FuseBenchOptions {
  dir: string;
  /** Regular files in the generated tree. */
  files: number;
  /** Entries of the directory `ls -l` lists. */
  bigDir: number;
  fileMiB: number;
  smallFiles: number;
  repetitions: number;
  autoMs: number;
  /** Rounds of each visibility measurement per column and repetition. */
  rounds: number;
  /** Measurement time of each random I/O case. */
  iopsMs: number;
  groups: readonly Group[];
  onProgress?: (text: string) => void;
  /** Aborting stops the running tool and unmounts everything (SIGINT). */
  signal?: AbortSignal;
}

export interface FuseRow {
  group: Group;
  workload: string;
  unit: string;
  /** Which way is better: time and latency lower, rates higher; counts are not compared. */
  better: 'lower' | 'higher' | 'count';
  values: Record<Column, number>;
  /** How many times slower the view is than the pass-through with the same options (null: not comparable). */
  strictRatio: number | null;
  autoRatio: number | null;
}

export interface FuseBenchResult {
  treeEntries: number;
  /** What ran the 4K random I/O rows (null when they did not run). */
  ioEngine: 'fio' | 'node' | null;
  rows: FuseRow[];
}

/** A column's two sides: the same folder through its first (A) and second (B) mount. */
interface Site {
  a: string;
  b: string;
}

/** What one repetition of one column measured: values per row key, visibility latencies and stale reads. */
type Sample = Record<string, number>;
interface Visibility {
  latencyUs: number[];
  stale: number;
}
type VisibilityResult = Record<'name' | 'rewrite', Visibility>;

/** Run a command as a child process; resolves with its stdout and how long it took. */
function runTool(command: string, args: string[], o: { signal?: AbortSignal; env?: NodeJS.ProcessEnv } = {}): Promise<{ ms: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: o.env, signal: o.signal });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const ms = performance.now() - t0;
      if (code === 0) resolve({ ms, stdout: Buffer.concat(out).toString() });
      else reject(new Error(`${command} ${args.join(' ')}: ${signal ?? `exit ${code}`}${err ? `: ${err.trim().slice(0, 2000)}` : ''}`));
    });
  });
}

/** Tools whose output nobody reads: discarded in the child (`exec ... >/dev/null`), so only the tool is timed. */
const quiet = (command: string, ...args: string[]) => ['sh', ['-c', 'exec "$@" >/dev/null', 'sh', command, ...args]] as const;
/** A tool run in `dir` (a child's cwd must never be in a mount, so the child changes into it itself). */
const inDir = (dir: string, command: string, ...args: string[]) => ['sh', ['-c', 'cd "$1" && shift && exec "$@" >/dev/null', 'sh', dir, command, ...args]] as const;

async function hasFio(): Promise<boolean> {
  return runTool('fio', ['--version']).then(
    () => true,
    () => false,
  );
}

/** Everything one repetition of one column runs; returns the row values (ms, ops/s) by key. */
async function measureColumn(site: Site, rep: number, o: FuseBenchOptions, ctx: { tar: string; source: string; fio: boolean; progress: (what: string) => void }): Promise<{ sample: Sample; visibility?: VisibilityResult }> {
  const tool = (command: string, args: readonly string[], env?: NodeJS.ProcessEnv) => runTool(command, [...args], { signal: o.signal, env });
  const timed = async (what: string, [command, args]: readonly [string, readonly string[]], env?: NodeJS.ProcessEnv) => {
    ctx.progress(what);
    return (await tool(command, args, env)).ms;
  };
  const json = async <T>(script: string, ...args: (string | number)[]) => JSON.parse((await tool('node', [script, ...args.map(String)])).stdout) as T;
  const a = join(site.a, `rep-${rep}`);
  const b = join(site.b, `rep-${rep}`);
  const has = (g: Group) => o.groups.includes(g);
  const sample: Sample = {};
  let visibility: VisibilityResult | undefined;
  await tool('mkdir', ['-p', a]);

  if (has('tree')) {
    const tree = join(b, 'tree');
    sample.untar = await timed('untar', ['sh', ['-c', 'mkdir "$1" && exec tar -xf "$2" -C "$1"', 'sh', join(a, 'tree'), ctx.tar]]);
    sample.find = await timed('find', quiet('find', tree));
    sample.du = await timed('du -s', quiet('du', '-s', tree));
    sample.lsR = await timed('ls -lR', quiet('ls', '-lR', tree));
    sample.diff = await timed('diff -r', quiet('diff', '-r', '--no-dereference', ctx.source, tree));
    const env = gitEnv(o.dir);
    sample.gitStatus1 = await timed('git status', inDir(tree, 'git', '-c', 'safe.directory=*', 'status', '--porcelain'), env);
    sample.gitStatus2 = await timed('git status again', inDir(tree, 'git', '-c', 'safe.directory=*', 'status', '--porcelain'), env);
    sample.rm = await timed('rm -rf', ['rm', ['-rf', tree]]);
  }
  if (has('big-dir')) {
    ctx.progress(`creating ${o.bigDir} entries`);
    await json(CLIENT, 'fill', join(a, 'big'), o.bigDir);
    sample.lsBig = await timed('ls -l big dir', quiet('ls', '-l', join(b, 'big')));
    ctx.progress('removing the big dir');
    await tool('rm', ['-rf', join(a, 'big')]);
  }
  if (has('iops')) {
    ctx.progress('4K random I/O');
    const file = join(a, 'random.bin');
    const fio = async (rw: string) => {
      const args = [`--name=${rw}`, `--filename=${file}`, '--size=16M', '--bs=4k', `--rw=${rw}`, '--ioengine=psync', `--runtime=${o.iopsMs}ms`, '--time_based', '--fallocate=none', '--invalidate=0', '--output-format=json'];
      const { stdout } = await tool('fio', args);
      const job = (JSON.parse(stdout.slice(stdout.indexOf('{'))) as { jobs: Record<'read' | 'write', { iops: number }>[] }).jobs[0]!;
      return rw === 'randread' ? job.read.iops : job.write.iops;
    };
    if (ctx.fio) {
      sample.readIops = await fio('randread');
      sample.writeIops = await fio('randwrite');
    } else Object.assign(sample, await json<Sample>(CLIENT, 'iops', file, 16, o.iopsMs));
    await tool('rm', ['-f', file]);
  }
  if (has('visibility')) {
    ctx.progress('cross-view visibility');
    visibility = await json<VisibilityResult>(VISIBILITY, join(a, 'visibility'), join(b, 'visibility'), o.rounds, o.autoMs + 10_000);
  }
  if (has('sequential')) {
    ctx.progress('sequential write and read');
    const big = join(a, 'sequential.bin');
    // CPU of both sides: the client's (its system time holds the kernel's work for each call) and this whole
    // process's (a view's domain, monitor and FUSE threads; a pass-through's handlers; idle for the native folder).
    const withCpu = async (key: string, ...args: (string | number)[]) => {
      const before = process.cpuUsage();
      const got = await json<Sample>(CLIENT, ...args);
      const host = process.cpuUsage(before);
      sample[key] = got[key]!;
      sample[`${key}Cpu`] = got[`${key}Cpu`]! + (host.user + host.system) / 1000;
    };
    await withCpu('seqWriteMs', 'seq-write', big, o.fileMiB);
    await withCpu('seqReadMs', 'seq-read', big);
    await tool('rm', ['-f', big]);
  }
  if (has('small-files')) {
    ctx.progress('small files');
    Object.assign(sample, await json<Sample>(CLIENT, 'small', a, o.smallFiles));
  }
  await tool('rm', ['-rf', a]);
  return { sample, visibility };
}

/** The rows: their group, label, unit, and how a column's samples become the value shown. */
function rowSpecs(o: FuseBenchOptions, treeEntries: number) {
  const ms = (key: string) => (s: Sample[]) => median(s.map((x) => x[key]!));
  const rate = (key: string, amount: number) => (s: Sample[]) => amount / (median(s.map((x) => x[key]!)) / 1000);
  const ops = (key: string) => (s: Sample[]) => median(s.map((x) => x[key]!));
  const perMiB = (key: string) => (s: Sample[]) => median(s.map((x) => x[key]!)) / o.fileMiB;
  type Spec = [Group, string, string, FuseRow['better'], (s: Sample[]) => number];
  const specs: Spec[] = [
    ['tree', `untar ${treeEntries} entries (${o.files} files, .git)`, 'ms', 'lower', ms('untar')],
    ['tree', 'find, other mount', 'ms', 'lower', ms('find')],
    ['tree', 'du -s, other mount', 'ms', 'lower', ms('du')],
    ['tree', 'ls -lR, other mount', 'ms', 'lower', ms('lsR')],
    ['tree', 'diff -r with the source, other mount', 'ms', 'lower', ms('diff')],
    ['tree', 'git status, other mount', 'ms', 'lower', ms('gitStatus1')],
    ['tree', 'git status again', 'ms', 'lower', ms('gitStatus2')],
    ['tree', 'rm -rf, other mount', 'ms', 'lower', ms('rm')],
    ['big-dir', `ls -l of ${o.bigDir} entries, other mount`, 'ms', 'lower', ms('lsBig')],
    ['iops', '4K random read', 'IOPS', 'higher', ops('readIops')],
    ['iops', '4K random write', 'IOPS', 'higher', ops('writeIops')],
    ['sequential', `sequential write ${o.fileMiB} MiB (1 MiB writes, fsync)`, 'MiB/s', 'higher', rate('seqWriteMs', o.fileMiB)],
    ['sequential', `sequential read ${o.fileMiB} MiB (1 MiB reads)`, 'MiB/s', 'higher', rate('seqReadMs', o.fileMiB)],
    ['sequential', 'CPU per MiB written (client + host process)', 'ms', 'lower', perMiB('seqWriteMsCpu')],
    ['sequential', 'CPU per MiB read (client + host process)', 'ms', 'lower', perMiB('seqReadMsCpu')],
    ['small-files', `create ${o.smallFiles} files of 4 KiB`, 'files/s', 'higher', rate('smallCreateMs', o.smallFiles)],
    ['small-files', `stat ${o.smallFiles} files`, 'files/s', 'higher', rate('smallStatMs', o.smallFiles)],
    ['small-files', `read ${o.smallFiles} files of 4 KiB`, 'files/s', 'higher', rate('smallReadMs', o.smallFiles)],
    ['small-files', `remove ${o.smallFiles + 1} files`, 'files/s', 'higher', rate('removeMs', o.smallFiles + 1)],
  ];
  return specs.filter(([group]) => o.groups.includes(group));
}

/** How many times slower `view` is than `base` (null when either is 0 or the row is a count). */
function slowdown(better: FuseRow['better'], base: number, view: number): number | null {
  if (better === 'count' || !(base > 0) || !(view > 0)) return null;
  return better === 'lower' ? view / base : base / view;
}

function makeRow(group: Group, workload: string, unit: string, better: FuseRow['better'], values: Record<Column, number>): FuseRow {
  return {
    group,
    workload,
    unit,
    better,
    values,
    strictRatio: slowdown(better, values.passthroughStrict, values.viewStrict),
    autoRatio: slowdown(better, values.passthroughAuto, values.viewAuto),
  };
}

const byColumn = (f: (c: Column) => number) => Object.fromEntries(COLUMNS.map((c) => [c, f(c)])) as Record<Column, number>;

/** Mount everything, measure every column `repetitions` times (alternating), unmount everything. */
export async function benchFuse(o: FuseBenchOptions): Promise<FuseBenchResult> {
  const progress = (text: string) => o.onProgress?.(`bench fuse ${text}`);
  const fio = o.groups.includes('iops') && (await hasFio());
  let treeEntries = 0;
  const tar = join(o.dir, 'tree.tar');
  const source = join(o.dir, 'source');
  if (o.groups.includes('tree')) {
    progress(`generating a tree of ${o.files} files`);
    await mkdir(source);
    treeEntries = await makeTree(source, o.files, tar);
  }

  const auto: CacheMode = { mode: 'auto', ms: o.autoMs };
  const cleanups: (() => Promise<void>)[] = [];
  const samples = Object.fromEntries(COLUMNS.map((c) => [c, [] as Sample[]])) as Record<Column, Sample[]>;
  const visibility = Object.fromEntries(COLUMNS.map((c) => [c, [] as VisibilityResult[]])) as Record<Column, VisibilityResult[]>;
  const image = join(o.dir, 'fuse-bench.img');
  await formatNewImage(image, Math.max(1 << 30, o.fileMiB * 4 << 20));
  const platform = await Platform.boot({ volumes: [{ name: 'bench', path: image }] });
  try {
    const sites = {} as Record<Column, Site>;
    const native = join(o.dir, 'native');
    await mkdir(native);
    sites.native = { a: native, b: native };
    const backing = join(o.dir, 'backing');
    for (const [column, cache] of [['passthroughStrict', { mode: 'strict' }], ['passthroughAuto', auto]] as const) {
      await mkdir(join(backing, column), { recursive: true });
      const [a, b] = [1, 2].map((n) => join(o.dir, 'mnt', `${column}-${n}`));
      for (const mnt of [a, b]) {
        progress(`mounting ${mnt}`);
        const m = await mountPassthrough(backing, mnt, cache);
        cleanups.push(() => m.unmount());
      }
      sites[column] = { a: join(a!, column), b: join(b!, column) };
    }
    const grant = { volume: 'bench', readOnly: false };
    const domains = await Promise.all(
      ['dom1', 'dom2'].map((name, slot) => platform.createDomain({ name, memoryBytes: 128 << 20, grants: [grant], filesystem: { slot } })),
    );
    for (const [column, cache] of [['viewStrict', { mode: 'strict' }], ['viewAuto', auto]] as const) {
      const [a, b] = domains.map((d) => join(o.dir, 'mnt', `${column}-${d.name}`));
      for (const [i, mnt] of [a!, b!].entries()) {
        progress(`mounting ${mnt}`);
        const view = await mountDomain(domains[i]!, mnt, { cache });
        cleanups.push(() => view.unmount());
      }
      sites[column] = { a: join(a!, column), b: join(b!, column) };
    }

    for (let rep = 0; rep < o.repetitions; rep++) {
      for (const column of COLUMNS) {
        o.signal?.throwIfAborted();
        const label = `repetition ${rep + 1}/${o.repetitions}, ${COLUMN_LABELS[column]}:`;
        const got = await measureColumn(sites[column], rep, o, { tar, source, fio, progress: (what) => progress(`${label} ${what}`) });
        samples[column].push(got.sample);
        if (got.visibility) visibility[column].push(got.visibility);
      }
    }
  } finally {
    // Every mount comes down, also after a failure or an interruption; then the domains.
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err: Error) => console.error(`hvshare bench fuse: ${err.message}`));
    await platform.shutdown();
  }

  const rows = rowSpecs(o, treeEntries).map(([group, workload, unit, better, value]) => makeRow(group, workload, unit, better, byColumn((c) => value(samples[c]))));
  if (o.groups.includes('visibility')) {
    for (const [kind, what] of [['name', 'a new name'], ['rewrite', 'a name rewritten in place']] as const) {
      const pooled = (c: Column) => visibility[c].flatMap((v) => v[kind].latencyUs);
      rows.push(
        makeRow('visibility', `${what} seen through the other mount: median`, 'µs', 'lower', byColumn((c) => median(pooled(c)))),
        makeRow('visibility', `${what} seen through the other mount: p99`, 'µs', 'lower', byColumn((c) => p99(pooled(c)))),
        makeRow('visibility', `${what}: stale reads after the write returned`, 'reads', 'count', byColumn((c) => visibility[c].reduce((n, v) => n + v[kind].stale, 0))),
      );
    }
  }
  // In --only's order of groups (visibility after random I/O), each group's rows as listed.
  rows.sort((x, y) => GROUPS.indexOf(x.group) - GROUPS.indexOf(y.group));
  return { treeEntries, ioEngine: o.groups.includes('iops') ? (fio ? 'fio' : 'node') : null, rows };
}
