/**
 * Cross-view visibility for `hvshare bench fuse`, run as a child process: `node bench-fuse-visibility.js A B
 * ROUNDS TIMEOUT_MS`, where A and B are the same folder seen through two mounts. Prints JSON.
 *
 * Two threads with a shared clock (the monotonic one): this thread writes through A, a worker polls through B in
 * a tight loop, started before each write so that B has already looked at the old state (as a user waiting for
 * the change would have). Each round does both kinds:
 *  - `name`: B stats a name that does not exist yet; A creates it (open with O_CREAT | O_EXCL).
 *  - `rewrite`: B opens, reads and closes a 4 KiB file; A rewrites it in place (same size, new content, one
 *    pwrite).
 * A write is done when A's call returns. The latency of a round is from then to the end of the first poll through
 * B that saw the new state (0 when a poll already in flight saw it). A stale read is a poll through B that
 * started after the write was done and still saw anything but the new state (the name missing; any content other
 * than the new one). A view that is never stale has none.
 */
import { closeSync, mkdirSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread, Worker, workerData } from 'node:worker_threads';

const SIZE = 4096;
const KINDS = ['name', 'rewrite'] as const;
type Kind = (typeof KINDS)[number];

/** Shared state: Int32 control words, then Float64 times in µs of the monotonic clock. */
const CTL_ROUND = 0; // the round being polled, -1 to stop
const CTL_KIND = 1; // index into KINDS
const CTL_STATE = 2;
const CTL_STALE = 3;
const IDLE = 0;
const POLLING = 1; // set by the writer: poll round CTL_ROUND
const PRIMED = 2; // set by the poller: one poll saw the old state
const WRITTEN = 3; // set by the writer: T_DONE is valid
const SEEN = 4; // set by the poller: T_SEEN and CTL_STALE are valid
const FAILED = 5; // set by the poller: it stopped on an error (on stderr)
const T_DONE = 0;
const T_SEEN = 1;

const nowUs = () => Number(process.hrtime.bigint()) / 1000;
const content = (round: number) => {
  const buf = Buffer.alloc(SIZE, 0x61 + (round % 26));
  buf.writeUInt32LE(round, 0);
  return buf;
};
const nameOf = (round: number) => `n${round}`;

interface Shared {
  ctl: Int32Array;
  times: Float64Array;
}
function shared(buffer: SharedArrayBuffer): Shared {
  return { ctl: new Int32Array(buffer, 0, 4), times: new Float64Array(buffer, 16, 2) };
}

/** The poller: one poll of the current round's target through B; true once it shows the new state. */
function poller(dirB: string, { ctl, times }: Shared): void {
  const buf = Buffer.alloc(SIZE);
  const rewritten = join(dirB, 'rewritten');
  for (;;) {
    for (let state = Atomics.load(ctl, CTL_STATE); state !== POLLING; state = Atomics.load(ctl, CTL_STATE)) Atomics.wait(ctl, CTL_STATE, state);
    const round = Atomics.load(ctl, CTL_ROUND);
    if (round < 0) return;
    const kind = KINDS[Atomics.load(ctl, CTL_KIND)];
    const expected = content(round);
    let stale = 0;
    for (;;) {
      const start = nowUs();
      let seen: boolean;
      if (kind === 'name') {
        seen = statSync(join(dirB, nameOf(round)), { throwIfNoEntry: false }) !== undefined;
      } else {
        const fd = openSync(rewritten, 'r');
        const n = readSync(fd, buf, 0, SIZE, 0);
        closeSync(fd);
        seen = n === SIZE && buf.equals(expected);
      }
      const end = nowUs();
      if (seen) {
        times[T_SEEN] = end;
        Atomics.store(ctl, CTL_STALE, stale);
        break;
      }
      const state = Atomics.load(ctl, CTL_STATE);
      if (state === POLLING) Atomics.store(ctl, CTL_STATE, PRIMED);
      if (state === WRITTEN && start > times[T_DONE]) stale++;
    }
    // The writer may not have published T_DONE yet (the poll can see a write before its call returns).
    while (Atomics.load(ctl, CTL_STATE) !== WRITTEN) Atomics.wait(ctl, CTL_STATE, Atomics.load(ctl, CTL_STATE), 1);
    Atomics.store(ctl, CTL_STATE, SEEN);
    Atomics.notify(ctl, CTL_STATE);
  }
}

/** Wait until `ctl[CTL_STATE]` is `want`; fail after `timeoutMs`. */
function waitFor(ctl: Int32Array, want: number, timeoutMs: number, what: string): void {
  const deadline = Date.now() + timeoutMs;
  for (let state = Atomics.load(ctl, CTL_STATE); state !== want; state = Atomics.load(ctl, CTL_STATE)) {
    if (state === FAILED) throw new Error(`${what}: the poller failed`);
    if (Date.now() > deadline) throw new Error(`${what}: not seen through the second mount within ${timeoutMs} ms`);
    Atomics.wait(ctl, CTL_STATE, state, 50);
  }
}

function writer(dirA: string, rounds: number, timeoutMs: number): void {
  const buffer = new SharedArrayBuffer(32);
  const { ctl, times } = shared(buffer);
  mkdirSync(dirA, { recursive: true });
  const rewritten = join(dirA, 'rewritten');
  let fd = openSync(rewritten, 'w');
  writeSync(fd, content(-1 >>> 0));
  closeSync(fd);
  new Worker(fileURLToPath(import.meta.url), { workerData: { dirB: process.argv[3], buffer } });
  const result = Object.fromEntries(KINDS.map((k) => [k, { latencyUs: [] as number[], stale: 0 }])) as Record<Kind, { latencyUs: number[]; stale: number }>;
  try {
    for (let round = 0; round < rounds; round++) {
      for (const [k, kind] of KINDS.entries()) {
        Atomics.store(ctl, CTL_ROUND, round);
        Atomics.store(ctl, CTL_KIND, k);
        Atomics.store(ctl, CTL_STATE, POLLING);
        Atomics.notify(ctl, CTL_STATE);
        waitFor(ctl, PRIMED, timeoutMs, `${kind} round ${round} (priming)`);
        // A little jitter, so a write does not always land at the same point of the poller's loop.
        Atomics.wait(ctl, CTL_ROUND, round, 1 + Math.random() * 4);
        if (kind === 'name') {
          fd = openSync(join(dirA, nameOf(round)), 'wx');
          times[T_DONE] = nowUs();
        } else {
          fd = openSync(rewritten, 'r+');
          writeSync(fd, content(round), 0, SIZE, 0);
          times[T_DONE] = nowUs();
        }
        Atomics.store(ctl, CTL_STATE, WRITTEN);
        Atomics.notify(ctl, CTL_STATE);
        closeSync(fd);
        waitFor(ctl, SEEN, timeoutMs, `${kind} round ${round}`);
        result[kind].latencyUs.push(Math.max(0, times[T_SEEN] - times[T_DONE]));
        result[kind].stale += Atomics.load(ctl, CTL_STALE);
        Atomics.store(ctl, CTL_STATE, IDLE);
      }
    }
  } finally {
    Atomics.store(ctl, CTL_ROUND, -1);
    Atomics.store(ctl, CTL_STATE, POLLING);
    Atomics.notify(ctl, CTL_STATE);
  }
  console.log(JSON.stringify(result));
  process.exit(0);
}

if (isMainThread) {
  writer(process.argv[2], Number(process.argv[4]), Number(process.argv[5]));
} else {
  const { dirB, buffer } = workerData as { dirB: string; buffer: SharedArrayBuffer };
  const state = shared(buffer);
  try {
    poller(dirB, state);
  } catch (err) {
    // Straight to fd 2: the main thread, which would relay a worker's console, is busy waiting.
    writeSync(2, `poller: ${err instanceof Error ? err.message : String(err)}\n`);
    Atomics.store(state.ctl, CTL_STATE, FAILED);
    Atomics.notify(state.ctl, CTL_STATE);
  }
}
