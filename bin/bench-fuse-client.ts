/**
 * The client side of `hvshare bench fuse`, run as a separate process (the FUSE handlers live on the benchmark
 * process's main thread, which must stay free to answer): ordinary file I/O in one folder, timed, printed as
 * JSON. The same script runs against a native folder, a pass-through and a mounted domain view.
 *
 *   node bench-fuse-client.js seq-write FILE MIB  sequential 1 MiB writes, then fsync
 *   node bench-fuse-client.js seq-read FILE       sequential 1 MiB reads
 *   node bench-fuse-client.js small DIR FILES     small files: create, stat, read, remove
 * The sequential modes also give the CPU time this process spent (user + system, which holds the kernel's side of
 * every call it made), so the benchmark can add it to its own.
 *   node bench-fuse-client.js fill DIR N          create N empty files in DIR (a big directory)
 *   node bench-fuse-client.js iops FILE MIB MS    4 KiB pread then pwrite at random offsets, MS each: ops/s
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readSync, readdirSync, rmSync, statSync, writeFileSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const [mode, target, ...rest] = process.argv.slice(2);
const [a, b] = rest.map(Number);
const result: Record<string, number> = {};
const time = (name: string, body: () => void) => {
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  body();
  result[name] = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  result[`${name}Cpu`] = (cpu.user + cpu.system) / 1000;
};
const MiB = 1 << 20;

/** Write `mib` MiB of 0x5a to `path` in 1 MiB calls, then fsync. */
function writeBig(path: string, mib: number): void {
  const chunk = Buffer.alloc(MiB, 0x5a);
  const fd = openSync(path, 'w');
  for (let i = 0; i < mib; i++) writeSync(fd, chunk, 0, chunk.length, i * chunk.length);
  fsyncSync(fd);
  closeSync(fd);
}

function readBig(path: string): void {
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(MiB);
  for (let pos = 0; ; ) {
    const n = readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) break;
    pos += n;
  }
  closeSync(fd);
}

function smallFilesIn(dir: string, smallFiles: number): void {
  const small = join(dir, 'small');
  mkdirSync(small);
  const content = Buffer.alloc(4096, 0x33);
  time('smallCreateMs', () => {
    for (let i = 0; i < smallFiles; i++) writeFileSync(join(small, `f${i}`), content);
  });
  time('smallStatMs', () => {
    for (const name of readdirSync(small)) statSync(join(small, name));
  });
  time('smallReadMs', () => {
    for (let i = 0; i < smallFiles; i++) readFileSync(join(small, `f${i}`));
  });
  time('removeMs', () => rmSync(small, { recursive: true }));
}

/** Random 4 KiB-aligned calls on a file of `mib` MiB for `ms` ms; operations per second. */
function iops(path: string, mib: number, ms: number): void {
  writeBig(path, mib);
  const buf = Buffer.alloc(4096, 0x77);
  const blocks = (mib * MiB) / buf.length;
  const fd = openSync(path, 'r+');
  const calls: [string, (pos: number) => number][] = [
    ['readIops', (pos) => readSync(fd, buf, 0, buf.length, pos)],
    ['writeIops', (pos) => writeSync(fd, buf, 0, buf.length, pos)],
  ];
  for (const [name, op] of calls) {
    let ops = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < ms) {
      op(Math.floor(Math.random() * blocks) * buf.length);
      ops++;
    }
    result[name] = ops / ((performance.now() - t0) / 1000);
  }
  closeSync(fd);
}

if (mode === 'seq-write') time('seqWriteMs', () => writeBig(target, a));
else if (mode === 'seq-read') time('seqReadMs', () => readBig(target));
else if (mode === 'small') smallFilesIn(target, a);
else if (mode === 'fill') {
  mkdirSync(target, { recursive: true });
  for (let i = 0; i < a; i++) closeSync(openSync(join(target, `entry-${i}`), 'wx'));
} else if (mode === 'iops') iops(target, a, b);
else throw new Error(`bench-fuse-client: unknown mode ${mode}`);
console.log(JSON.stringify(result));
