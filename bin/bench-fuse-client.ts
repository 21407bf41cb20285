/**
 * The client side of `hvshare bench fuse`, run as a separate process (the FUSE handlers live on the benchmark
 * process's main thread, which must stay free to answer): ordinary file I/O in one folder, timed per phase, printed
 * as JSON. The same script runs against a native folder and a mounted domain view.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readSync, readdirSync, rmSync, statSync, writeFileSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const [dir, fileMiB, smallFiles] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const result: Record<string, number> = {};
const time = (name: string, body: () => void) => {
  const t0 = performance.now();
  body();
  result[name] = performance.now() - t0;
};

const chunk = Buffer.alloc(1 << 20, 0x5a);
const big = join(dir, 'sequential.bin');
time('seqWriteMs', () => {
  const fd = openSync(big, 'w');
  for (let i = 0; i < fileMiB; i++) writeSync(fd, chunk, 0, chunk.length, i * chunk.length);
  fsyncSync(fd);
  closeSync(fd);
});
time('seqReadMs', () => {
  const fd = openSync(big, 'r');
  const buf = Buffer.alloc(1 << 20);
  for (let pos = 0; ; ) {
    const n = readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) break;
    pos += n;
  }
  closeSync(fd);
});
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
time('removeMs', () => {
  rmSync(small, { recursive: true });
  rmSync(big);
});
console.log(JSON.stringify(result));
