import { workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { Probe } from './wake-up-cost.js';

/**
 * The other end of wake-up-cost.ts's measurement: sleeps on the GO word (blocking first, then as a guest kernel
 * does, with Atomics.waitAsync), notes when it woke, and answers on ACK.
 */
const words = new Int32Array(workerData as SharedArrayBuffer, 0, Probe.WORDS);
const woke = new Float64Array(workerData as SharedArrayBuffer, Probe.WORDS * 4, 1);
const keepAlive = setInterval(() => {}, 1 << 30);

function answer(round: number): void {
  woke[0] = performance.timeOrigin + performance.now();
  Atomics.store(words, Probe.ACK, round);
  Atomics.notify(words, Probe.ACK);
}

const rounds = Atomics.load(words, Probe.ROUNDS);
for (let round = 1; round <= rounds; round++) {
  while (Atomics.load(words, Probe.GO) < round) Atomics.wait(words, Probe.GO, round - 1);
  answer(round);
}
for (let round = rounds + 1; round <= 2 * rounds; round++) {
  while (Atomics.load(words, Probe.GO) < round) {
    const wait = Atomics.waitAsync(words, Probe.GO, round - 1);
    if (wait.async) await wait.value;
  }
  answer(round);
}
clearInterval(keepAlive);
