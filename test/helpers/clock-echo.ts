import { workerData } from 'node:worker_threads';
import { traceNow } from '../../hypervisor/trace-abi.js';

/**
 * A worker thread for test/trace-clock.test.ts: for each round n (1..rounds) it waits until word 0 holds n, stamps
 * the trace clock into slot n, then publishes n in word 1.
 */
const { buffer, rounds } = workerData as { buffer: SharedArrayBuffer; rounds: number };
const words = new Int32Array(buffer, 0, 2);
const stamps = new Float64Array(buffer, 8);
for (let n = 1; n <= rounds; n++) {
  Atomics.wait(words, 0, n - 1);
  stamps[n] = traceNow();
  Atomics.store(words, 1, n);
  Atomics.notify(words, 1);
}
