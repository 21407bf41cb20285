/**
 * What waking a sleeping thread costs on this host, measured at boot: the time from one thread's notify until
 * the sleeper runs, plus what the notify itself costs its caller. Spin loops use it as their budget (the
 * competitive rule for spin-then-block: polling for up to twice a wake-up's cost never loses more than a factor
 * of two against knowing when the event comes), so no spin length is a constant tuned on one machine.
 */
import { Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';

/** The probe's shared words (then, 8-byte aligned, the time it woke). */
export const Probe = { GO: 0, ACK: 1, ROUNDS: 2, WORDS: 4 } as const;

export interface WakeUpCost {
  /** A thread asleep in Atomics.wait (the monitor, its I/O threads), in microseconds. */
  blockingMicros: number;
  /** A thread whose event loop waits in Atomics.waitAsync (a guest kernel's idle loop), in microseconds. */
  asyncMicros: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const now = () => performance.timeOrigin + performance.now();

/** Measures both kinds of wake-up, `rounds` times each (about 0.2 ms a round), and gives their medians. */
export async function measureWakeUpCost(rounds = 40): Promise<WakeUpCost> {
  const buffer = new SharedArrayBuffer(Probe.WORDS * 4 + 8);
  const words = new Int32Array(buffer, 0, Probe.WORDS);
  const woke = new Float64Array(buffer, Probe.WORDS * 4, 1);
  words[Probe.ROUNDS] = rounds;
  const probe = new Worker(new URL('./wake-up-probe.js', import.meta.url), { workerData: buffer });
  const exited = new Promise<void>((resolve, reject) => {
    probe.once('error', reject);
    probe.once('exit', () => resolve());
  });
  // Let the probe start and go to sleep on its first round.
  while (!probe.threadId) await new Promise((r) => setTimeout(r, 1));
  await new Promise((r) => setTimeout(r, 20));
  const costs: number[][] = [[], []];
  for (let round = 1; round <= 2 * rounds; round++) {
    // Long enough for the probe to be asleep again, so each round measures a real wake-up.
    const quiet = performance.now() + 0.15;
    while (performance.now() < quiet);
    const t0 = now();
    Atomics.store(words, Probe.GO, round);
    Atomics.notify(words, Probe.GO);
    const notified = now();
    while (Atomics.load(words, Probe.ACK) < round) {
      if (Atomics.wait(words, Probe.ACK, round - 1, 1000) === 'timed-out') throw new Error('wake-up probe did not answer');
    }
    costs[round <= rounds ? 0 : 1]!.push(Math.max(0, woke[0]! - t0) + (notified - t0));
  }
  await exited;
  return { blockingMicros: median(costs[0]!) * 1000, asyncMicros: median(costs[1]!) * 1000 };
}
