import test from 'ava';
import { execFile } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { MAX_SPIN_MICROS, microsFromEnvironment, MIN_SPIN_MICROS, PollWindow, spinBudget, spinBudgets, type SpinBudgets } from '../hypervisor/spin-policy.js';
import { MiB, randomImage, tempDir } from './helpers/platform.js';

const run = promisify(execFile);
const PINNED = fileURLToPath(new URL('./helpers/pinned-platform.js', import.meta.url));

test('with several cores a thread polls for twice its wake-up, within bounds; with one core it never polls', (t) => {
  t.is(spinBudget(30, 2), 60);
  t.is(spinBudget(30, 8), 60);
  t.is(spinBudget(1000, 2), MAX_SPIN_MICROS);
  t.is(spinBudget(0, 2), MIN_SPIN_MICROS);
  t.is(spinBudget(30, 1), 0);
  t.is(spinBudget(1000, 1), 0);
  const one = spinBudgets({ blockingMicros: 20, asyncMicros: 40 }, 1);
  t.deepEqual([one.cores, one.monitorMicros, one.guestMicros], [1, 0, 0]);
  t.regex(one.reason, /one core/);
  const two = spinBudgets({ blockingMicros: 20, asyncMicros: 40 }, 2);
  t.deepEqual([two.cores, two.monitorMicros, two.guestMicros], [2, 40, 80]);
  t.regex(two.reason, /2 cores/);
});

test('a poll window shrinks to nothing while waits outlast the budget and grows back while polling would catch them', (t) => {
  const poll = new PollWindow(80);
  t.is(poll.micros, 80);
  // Work the poll caught changes nothing.
  poll.waited(30);
  t.is(poll.micros, 80);
  // Waits no poll within the budget could catch (requests 200 µs apart): half, half again, then none.
  const windows = [200, 200, 200, 200].map((wait) => (poll.waited(wait), poll.micros));
  t.deepEqual(windows, [40, 20, 0, 0]);
  // Waits a longer poll would have caught (the sleep ended within the budget): from a quarter of it, doubling.
  const regrown = [50, 50, 50, 50].map((wait) => (poll.waited(wait), poll.micros));
  t.deepEqual(regrown, [20, 40, 80, 80]);
  // One core: the budget is nothing, and so is every window.
  const none = new PollWindow(0);
  for (const wait of [1, 10, 1000]) none.waited(wait);
  t.is(none.micros, 0);
});

async function pinned(cpus: string | undefined, image: string): Promise<{ spin: SpinBudgets; intact: boolean }> {
  const { stdout } = cpus === undefined ? await run(process.execPath, [PINNED, image]) : await run('taskset', ['-c', cpus, process.execPath, PINNED, image]);
  return JSON.parse(stdout) as { spin: SpinBudgets; intact: boolean };
}

test('a platform pinned to one core (taskset) chooses no polling anywhere and still serves its domains', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 4 * MiB);
  const { spin, intact } = await pinned('0', image.path);
  t.is(spin.cores, 1);
  t.is(spin.monitorMicros, 0);
  t.is(spin.guestMicros, 0);
  t.true(intact);
});

test('a platform with every core of this host polls when the host has several', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 4 * MiB);
  const { spin, intact } = await pinned(undefined, image.path);
  t.is(spin.cores, availableParallelism());
  if (spin.cores > 1) t.true(spin.monitorMicros >= MIN_SPIN_MICROS && spin.guestMicros >= MIN_SPIN_MICROS);
  else t.is(spin.monitorMicros, 0);
  t.true(intact);
});

test('the spin knobs from the environment: unset or empty means measured; anything but microseconds, 0 or more, is an error naming the variable', (t) => {
  t.is(microsFromEnvironment('HVSHARE_MONITOR_SPIN', {}), undefined);
  t.is(microsFromEnvironment('HVSHARE_MONITOR_SPIN', { HVSHARE_MONITOR_SPIN: '' }), undefined);
  t.is(microsFromEnvironment('HVSHARE_MONITOR_SPIN', { HVSHARE_MONITOR_SPIN: '0' }), 0);
  t.is(microsFromEnvironment('HVSHARE_GUEST_WAKE_UP_US', { HVSHARE_GUEST_WAKE_UP_US: '12.5' }), 12.5);
  for (const bad of ['abc', '-1', 'Infinity', '5us']) {
    t.throws(() => microsFromEnvironment('HVSHARE_GUEST_WAKE_UP_US', { HVSHARE_GUEST_WAKE_UP_US: bad }), {
      message: new RegExp(`^HVSHARE_GUEST_WAKE_UP_US must be a number of microseconds, 0 or more \\(got "${bad}"\\)$`),
    });
  }
});
