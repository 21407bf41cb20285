import test from 'ava';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { traceNow } from '../hypervisor/trace-abi.js';

/**
 * Every thread of the platform stamps trace records with traceNow(): stamps taken on different threads must be
 * comparable. Ping-pong through shared memory with another worker thread: what the worker stamps after seeing the
 * main thread's signal lies between the main thread's stamps before the signal and after the answer.
 */
test('traceNow agrees across worker threads: a stamp taken after a signal is never earlier than one taken before it', async (t) => {
  const rounds = 200;
  const buffer = new SharedArrayBuffer(8 + 8 * (rounds + 1));
  const words = new Int32Array(buffer, 0, 2);
  const stamps = new Float64Array(buffer, 8);
  const worker = new Worker(new URL('./helpers/clock-echo.js', import.meta.url), { workerData: { buffer, rounds } });
  await once(worker, 'online');
  const skews: number[] = [];
  for (let n = 1; n <= rounds; n++) {
    const before = traceNow();
    Atomics.store(words, 0, n);
    Atomics.notify(words, 0);
    // Waiting asynchronously: the main thread's event loop stays free (the worker is a real thread).
    const answered = Atomics.waitAsync(words, 1, n - 1);
    if (answered.async) await answered.value;
    const after = traceNow();
    t.true(before <= stamps[n] && stamps[n] <= after, `round ${n}: main ${before} .. ${after}, worker ${stamps[n]}`);
    skews.push(stamps[n] - before);
  }
  await worker.terminate();
  t.log(`worker stamp after main's signal: median ${skews.sort((a, b) => a - b)[rounds >> 1].toFixed(1)} µs`);
});
