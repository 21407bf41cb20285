import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { exited, fuseMountsUnder, hvshare, sh, startUp } from './helpers/cli.js';
import { tempDir } from './helpers/platform.js';

// Stops of a real `hvshare up` by real signals. No duration is asserted: `up` itself judges each step against its
// deadline, and says so in its exit status (0: every step in time, 1: a step was forced, 130: forced by a second
// signal) and in its last line ({"stopped":true,"clean":...}).

/** Mounts left under `root` once a stopped `up` is gone (a forced exit leaves them to fusermount's auto-unmount). */
async function mountsLeft(root: string): Promise<string[]> {
  for (let i = 0; i < 100 && (await fuseMountsUnder(root)).length > 0; i++) await sleep(50);
  return fuseMountsUnder(root);
}

/**
 * Cross-domain load until the views go: files written through dom1 and read back and copied through dom2. They
 * live in a folder made through the view, so once a view is gone nothing lands in the bare mount point.
 */
async function crossDomainLoad(mnt: string, tag: string): Promise<{ ended: Promise<unknown> }> {
  const made = await sh(`mkdir '${mnt}/dom1/${tag}'`);
  if (made.code !== 0) throw new Error(made.stderr);
  const a = `'${mnt}/dom1/${tag}'`;
  const b = `'${mnt}/dom2/${tag}'`;
  const ended = sh(
    `i=0; while [ $i -lt 2000 ]; do i=$((i+1)); ` +
      `dd if=/dev/urandom of=${a}/f.$((i % 5)) bs=64k count=2 status=none 2>/dev/null || exit 0; ` +
      `cat ${b}/f.$(((i + 2) % 5)) > /dev/null 2>&1; cp ${b}/f.$(((i + 3) % 5)) ${b}/copy 2>/dev/null; done`,
  );
  // Wrapped: an async function returning the promise itself would wait for the whole load.
  return { ended };
}

function setUp(t: Parameters<typeof tempDir>[0] & { teardown(fn: () => Promise<void>): void }) {
  const children: ChildProcess[] = [];
  return {
    children,
    async dirs() {
      const dir = await tempDir(t, 'hvshare-stop-');
      t.teardown(async () => {
        for (const c of children) c.kill('SIGKILL');
        for (const m of await fuseMountsUnder(dir)) await sh(`fusermount -uz '${m}'`);
      });
      return { dir, state: join(dir, 'state'), mnt: join(dir, 'mnt') };
    },
  };
}

async function fsckClean(t: { is(a: unknown, b: unknown, m?: string): void }, state: string): Promise<void> {
  const fsck = await hvshare('fsck', join(state, 'shared.img'));
  t.is(fsck.code, 0, fsck.stdout + fsck.stderr);
}

const STOPS = Number(process.env.HVSHARE_STOPS ?? 10);

test(`${STOPS} SIGINT stops in a row under cross-domain load each finish every step within its deadline`, async (t) => {
  t.timeout(STOPS * 30_000);
  const { children, dirs } = setUp(t);
  const { state, mnt } = await dirs();
  for (let stop = 0; stop < STOPS; stop++) {
    const up = await startUp(state, mnt);
    children.push(up.child);
    const load = await crossDomainLoad(mnt, `s${stop}`);
    await sleep(150 + (stop % 5) * 100);
    up.child.kill('SIGINT');
    const code = await exited(up.child);
    await load.ended;
    t.is(code, 0, `stop ${stop}: ${up.stderr()}`);
    t.like(up.lines.at(-1), { stopped: true, reason: 'SIGINT', clean: true }, `stop ${stop}`);
    t.true(up.lines.some((l) => l.stopping === true), 'the stop says it began');
    t.deepEqual(await mountsLeft(mnt), [], `stop ${stop}: every view unmounted`);
  }
  await fsckClean(t, state);
});

test('a step past its deadline is forced and logged; a second signal forces the stop at once; the next up recovers', async (t) => {
  const { children, dirs } = setUp(t);
  const { state, mnt } = await dirs();

  // Deadlines of 0 ms: every step is late, so every step is forced, said on stderr and in the event log.
  const late = await startUp(state, mnt, { HVSHARE_STOP_STEP_MS: '0' });
  children.push(late.child);
  const load = await crossDomainLoad(mnt, 'late');
  await sleep(300);
  late.child.kill('SIGINT');
  t.is(await exited(late.child), 1, late.stderr());
  await load.ended;
  t.like(late.lines.at(-1), { stopped: true, clean: false });
  // A view's unmount spawns fusermount, surely late; a domain's steps may end within the timer's first tick.
  for (const name of ['dom1', 'dom2', 'dom3']) {
    t.true(late.stderr().includes(`hvshare: stop: ${join(mnt, name)}: unmount: not done within 0 ms; forced`), name);
  }
  t.regex(late.stderr(), /hvshare: stop: dom\d: (unmount \(journal commit\)|worker exit): not done within 0 ms; forced/);
  t.true(late.lines.some((l) => l.event === 'error' && /^stop: .*: not done within 0 ms; forced$/.test(String(l.detail))), 'logged as events');
  t.deepEqual(await mountsLeft(mnt), []);

  // Two signals at once (a second Ctrl-C): nothing is waited for; views go with the process.
  const twice = await startUp(state, mnt);
  children.push(twice.child);
  const load2 = await crossDomainLoad(mnt, 'twice');
  await sleep(300);
  twice.child.kill('SIGINT');
  twice.child.kill('SIGTERM');
  t.is(await exited(twice.child), 130, twice.stderr());
  await load2.ended;
  t.regex(twice.stderr(), /hvshare: SIG(INT|TERM) again: forcing the stop/);
  t.deepEqual(await mountsLeft(mnt), []);

  // What the forced stops left (journals not replayed, locks not given back) is recovered by the next up.
  const next = await startUp(state, mnt);
  children.push(next.child);
  const both = await sh(`echo after > '${mnt}/dom1/after.txt' && cat '${mnt}/dom2/after.txt'`);
  t.is(both.stdout, 'after\n', both.stderr);
  next.child.kill('SIGINT');
  t.is(await exited(next.child), 0, next.stderr());
  await fsckClean(t, state);
});

test('a stop whose main thread is stuck still ends: the watchdog thread kills the process after every deadline; the next up recovers', async (t) => {
  const { children, dirs } = setUp(t);
  const { state, mnt } = await dirs();
  // The fault blocks the main thread once the stop starts, so no timer of it (the deadlines') can ever fire.
  const stuck = await startUp(state, mnt, { HVSHARE_STOP_STEP_MS: '100', HVSHARE_FAULT_STOP_STUCK: '1' });
  children.push(stuck.child);
  const wrote = await sh(`echo before > '${mnt}/dom1/before.txt' && sync '${mnt}/dom1/before.txt'`);
  t.is(wrote.code, 0, wrote.stderr);
  stuck.child.kill('SIGTERM');
  await exited(stuck.child);
  t.is(stuck.child.signalCode, 'SIGKILL', stuck.stderr());
  t.regex(stuck.stderr(), /hvshare: stop: the main thread is stuck \(no deadline could fire for \d+ ms\); killing the process/);
  t.deepEqual(await mountsLeft(mnt), []);

  const next = await startUp(state, mnt);
  children.push(next.child);
  const read = await sh(`cat '${mnt}/dom2/before.txt'`);
  t.is(read.stdout, 'before\n', read.stderr);
  next.child.kill('SIGINT');
  t.is(await exited(next.child), 0, next.stderr());
  await fsckClean(t, state);
});
