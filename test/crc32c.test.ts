/**
 * crc32c: the addon (fs/native/crc32c.c, hardware and portable table) and the JavaScript fallback give the same
 * answers, on known vectors and on random runs of every alignment, length and seed; the addon is what sums here
 * (npm ci built it) and it loads in worker threads, where domains run.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { crc32c, crc32cImplementation, crc32cJs, crc32cPieces, crc32cPiecesJs } from '../fs/crc32c.js';

const moduleUrl = new URL('../fs/crc32c.js', import.meta.url).href;
const LENGTHS = [0, 1, 3, 7, 8, 15, 16, 100, 4079, 4080, 4081, 4096, 8160, 12240, 12241, 65536 + 5];

test('the addon sums here, with the instruction where the CPU has it', (t) => {
  t.not(crc32cImplementation, 'javascript', 'fs/native was not built or does not load: run npm ci');
  if (process.arch === 'x64') t.is(crc32cImplementation, 'sse4.2');
});

test('known vectors, through the addon and the JavaScript', (t) => {
  const check = new TextEncoder().encode('123456789');
  for (const sum of [crc32c, crc32cJs]) {
    t.is(sum(check), 0xe3069283);
    t.is(sum(new Uint8Array(32)), 0x8a9136aa);
    t.is(sum(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  }
  t.is(crc32c(check, 0, 3, 4), crc32cJs(check.subarray(3, 7)), 'offset and length');
});

test('addon and JavaScript agree on random runs of every alignment, length and seed', (t) => {
  const data = randomBytes(70000);
  for (const length of LENGTHS) {
    for (const offset of [0, 1, 2, 5]) {
      const seed = data.readUInt32LE(length % 1000);
      t.is(crc32c(data, seed, offset, length), crc32cJs(data.subarray(offset, offset + length), seed), `length ${length} at ${offset}`);
    }
  }
  const pieces = data.subarray(0, 5 * 4096 + 100);
  t.deepEqual(crc32cPieces(pieces, 4096, new Uint32Array(6)), crc32cPiecesJs(pieces, 4096, new Uint32Array(6)));
  t.throws(() => crc32cPieces(pieces, 4096, new Uint32Array(5)), { instanceOf: RangeError }, 'too few slots');
});

test('out-of-range offsets and lengths, and data that is not a Uint8Array, are refused', (t) => {
  const data = new Uint8Array(10);
  t.throws(() => crc32c(data, 0, 11), { instanceOf: RangeError });
  t.throws(() => crc32c(data, 0, 5, 6), { instanceOf: RangeError });
  t.throws(() => crc32c(data, 0, -1), { instanceOf: RangeError });
  t.throws(() => crc32c(new Uint16Array(4) as unknown as Uint8Array), { instanceOf: TypeError });
});

test('the portable C table (HVSHARE_CRC32C_PORTABLE) gives the instruction\'s answers', async (t) => {
  const script = `import('${moduleUrl}').then((m) => {
    const data = new Uint8Array(70000).map((_, i) => (i * 131 + (i >> 7)) & 0xff);
    const sums = ${JSON.stringify(LENGTHS)}.map((n) => m.crc32c(data, 7, 3, n));
    console.log(JSON.stringify({ implementation: m.crc32cImplementation, sums }));
  })`;
  const run = async (env: NodeJS.ProcessEnv) => JSON.parse((await promisify(execFile)(process.execPath, ['-e', script], { env: { ...process.env, ...env } })).stdout);
  const [portable, js] = await Promise.all([run({ HVSHARE_CRC32C_PORTABLE: '1' }), run({ HVSHARE_CRC32C: 'js' })]);
  t.is(portable.implementation, 'c-table');
  t.is(js.implementation, 'javascript');
  t.deepEqual(portable.sums, js.sums);
});

test('the addon loads and sums in worker threads (where domains run), several at once', async (t) => {
  const source = `const { parentPort } = require('node:worker_threads');
    import('${moduleUrl}').then((m) => parentPort.postMessage([m.crc32cImplementation, m.crc32c(new TextEncoder().encode('123456789'))]));`;
  const answers = await Promise.all(
    [1, 2, 3].map(
      () =>
        new Promise<[string, number]>((resolve, reject) => {
          const worker = new Worker(source, { eval: true });
          worker.once('message', (m) => void worker.terminate().then(() => resolve(m)));
          worker.once('error', reject);
        }),
    ),
  );
  for (const [implementation, sum] of answers) {
    t.is(implementation, crc32cImplementation);
    t.is(sum, 0xe3069283);
  }
});
