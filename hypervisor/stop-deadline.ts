import { Worker } from 'node:worker_threads';

/**
 * Deadlines for the steps of a stop (unmount, journal commit, worker exit, monitor exit, store close): a step that
 * does not finish in time is forced by its caller and logged, and a second Ctrl-C forces every step still waiting
 * at once. A step is never cancelled here: the caller does what forcing it means (lazy unmount, terminate).
 */

/** Each step's deadline unless HVSHARE_STOP_STEP_MS says otherwise. */
export const DEFAULT_STOP_STEP_MS = 10_000;

export function stopStepMs(): number {
  const raw = process.env.HVSHARE_STOP_STEP_MS;
  const ms = raw ? Number(raw) : NaN;
  return Number.isFinite(ms) && ms >= 0 ? ms : DEFAULT_STOP_STEP_MS;
}

/** How a step ended: in time (a failure counts: the step is over), past its deadline, or cut short by a force. */
export type StepOutcome = 'done' | 'late' | 'forced';

export interface StopDeadline {
  /** Milliseconds each step may take. */
  stepMs: number;
  /** Aborted when the stop is to be forced at once (a second Ctrl-C). */
  force?: AbortSignal;
  /** Told about each step that was forced, in words for the log. */
  onForced?: (what: string) => void;
}

/** Waits for `work` at most `deadline.stepMs`, or until `deadline.force` aborts. */
export function within(work: Promise<unknown>, deadline: StopDeadline): Promise<StepOutcome> {
  const { force } = deadline;
  // The step's own end is always listened for, so a failure after the deadline is no unhandled rejection.
  const settled = work.then(() => {}, () => {});
  if (force?.aborted) return Promise.resolve('forced');
  return new Promise<StepOutcome>((resolve) => {
    const timer = setTimeout(() => finish('late'), deadline.stepMs);
    const onForce = () => finish('forced');
    force?.addEventListener('abort', onForce);
    function finish(outcome: StepOutcome) {
      clearTimeout(timer);
      force?.removeEventListener('abort', onForce);
      resolve(outcome);
    }
    void settled.then(() => finish('done'));
  });
}

/**
 * Runs one step under its deadline; when it is late or forced, logs `what` with the reason and runs `forceIt`
 * (itself bounded by the deadline). Resolves true when the step finished in time.
 */
export async function stopStep(
  deadline: StopDeadline,
  what: string,
  work: Promise<unknown>,
  forceIt?: () => Promise<unknown>,
): Promise<boolean> {
  const outcome = await within(work, deadline);
  if (outcome === 'done') return true;
  const why = outcome === 'late' ? `not done within ${deadline.stepMs} ms` : 'cut short by a second signal';
  deadline.onForced?.(`${what}: ${why}; forced`);
  if (forceIt) await within(forceIt().catch(() => {}), { stepMs: deadline.stepMs });
  return false;
}

/**
 * The last resort of a stop, on a thread of its own: unless disarmed within `ms`, writes `message` to stderr and
 * kills the process (SIGKILL). Every other deadline is a timer on the main thread, which cannot fire while that
 * thread is stuck in a system call (once, a stop hung minutes in libuv's spawn of fusermount, reading a pipe the
 * child never closed); this one can. What a killed stop leaves (journals not written home, locks not given back,
 * views not unmounted) is what a power cut leaves: the next `up` replays it, and fusermount's auto-unmount
 * detaches the views once the process is gone.
 */
export function armStopWatchdog(ms: number, message: string): { disarm(): void } {
  const flag = new Int32Array(new SharedArrayBuffer(4));
  const watchdog = new Worker(
    `const { workerData } = require('node:worker_threads');
     const { writeSync } = require('node:fs');
     if (Atomics.wait(workerData.flag, 0, 0, workerData.ms) === 'timed-out') {
       writeSync(2, workerData.message);
       process.kill(process.pid, 'SIGKILL');
     }`,
    { eval: true, workerData: { flag, ms, message } },
  );
  // Never what keeps the process alive.
  watchdog.unref();
  return {
    disarm() {
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
    },
  };
}
