import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PlatformConfigError, defaultPlatform } from '../hypervisor/platform-config.js';
import {
  NoPlatformError,
  PlatformStore,
  SNAPSHOT_EVENTS,
  STATUS_FILENAME,
  readPlatformState,
  readSnapshot,
  type PlatformView,
} from '../hypervisor/platform-store.js';

const storeModule = fileURLToPath(new URL('../hypervisor/platform-store.js', import.meta.url));

async function stateDir(t: any): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hvshare-store-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Opens a store with the default platform and closes it when the test ends (close is idempotent). */
async function openStore(t: any, dir: string, opts = {}): Promise<PlatformStore> {
  const store = await PlatformStore.open(dir, { flushIntervalMs: 0, ...opts });
  t.teardown(() => store.close());
  return store;
}

/** Runs an ESM script in a real second node process, asynchronously; resolves with its stdout. */
function child(script: string, env: Record<string, string>, onLine?: (line: string) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, STORE_MODULE: storeModule, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => {
      const text = d.toString();
      out += text;
      if (onLine) for (const line of text.split('\n').filter(Boolean)) onLine(line);
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}: ${err}`))));
  });
}

/** Holds the database (without writing a snapshot) for HOLD_MS, saying when it holds it and when it let go. */
const HOLDER = `
const { PlatformStore } = await import(process.env.STORE_MODULE);
const s = await PlatformStore.open(process.env.DIR, { create: false, snapshot: false });
console.log('holding');
await new Promise((r) => setTimeout(r, Number(process.env.HOLD_MS)));
await s.close();
console.log('released');
`;

const READER = `
const { readPlatformState, PlatformStore } = await import(process.env.STORE_MODULE);
const query = JSON.parse(process.env.QUERY ?? '{}');
let view = await readPlatformState(process.env.DIR, query);
// Like \`hvshare stat --watch\`: poll until the owner has published what we expect (bounded).
for (let i = 0; i < 100 && process.env.UNTIL_SEQ && view.lastSeq < Number(process.env.UNTIL_SEQ); i++) {
  await new Promise((r) => setTimeout(r, 50));
  view = await readPlatformState(process.env.DIR, query);
}
let direct = 'opened';
try { const s = await PlatformStore.open(process.env.DIR, { create: false, lockWaitMs: 100, snapshot: false }); await s.close(); }
catch (e) { direct = e.message; }
console.log(JSON.stringify({ view, direct }));
`;

test('config and domain records persist across reopen', async (t) => {
  const dir = await stateDir(t);
  let store = await openStore(t, dir);
  t.is(store.getConfig(), undefined);
  const config = await store.putConfig(defaultPlatform(dir));
  t.deepEqual(store.listDomains().map((d) => [d.name, d.id, d.state, d.boots]), [
    ['dom1', 1, 'defined', 0],
    ['dom2', 2, 'defined', 0],
    ['dom3', 3, 'defined', 0],
  ]);
  await store.close();
  store = await openStore(t, dir);
  t.deepEqual(store.getConfig(), config);
  t.deepEqual(store.listDomains().map((d) => d.name), ['dom1', 'dom2', 'dom3']);
});

test('putConfig validates and stores nothing on error', async (t) => {
  const dir = await stateDir(t);
  const store = await openStore(t, dir);
  const bad: any = defaultPlatform();
  bad.domains[2].grants[0].volume = 'nope';
  await t.throwsAsync(store.putConfig(bad), { instanceOf: PlatformConfigError, message: /unknown volume "nope"/ });
  t.is(store.getConfig(), undefined);
  t.deepEqual(store.listDomains(), []);
});

test('domain state: boots, stops, crashes are stamped and persist', async (t) => {
  const dir = await stateDir(t);
  let store = await openStore(t, dir);
  await store.putConfig(defaultPlatform());
  const before = Date.now();
  const run = await store.setDomainState('dom1', 'running', { threadId: 7 });
  t.like(run, { state: 'running', pid: process.pid, threadId: 7, boots: 1 });
  t.true(run.bootedAt! >= before);
  const crashed = await store.setDomainState('dom1', 'crashed', { exitCode: 1, reason: 'worker threw' });
  t.like(crashed, { state: 'crashed', exitCode: 1, reason: 'worker threw', boots: 1, bootedAt: run.bootedAt });
  t.is(crashed.threadId, undefined);
  t.true(crashed.stoppedAt! >= run.bootedAt!);
  const again = await store.setDomainState('dom1', 'running', { threadId: 9 });
  t.like(again, { boots: 2, threadId: 9 });
  t.is(again.exitCode, undefined, 'a new boot clears the last exit');
  await store.setDomainState('dom2', 'stopped');
  await t.throwsAsync(store.setDomainState('dom9', 'running'), { message: /unknown domain "dom9"/ });
  await t.throwsAsync(store.setDomainState('dom1', 'paused' as any), { message: /bad domain state/ });
  await store.close();
  store = await openStore(t, dir);
  t.like(store.getDomain('dom1'), { state: 'running', boots: 2, threadId: 9 });
  t.like(store.getDomain('dom2'), { state: 'stopped' });
  t.like(store.getDomain('dom3'), { state: 'defined' });
});

test('a changed config adds and drops domain records, but never a running domain', async (t) => {
  const dir = await stateDir(t);
  const store = await openStore(t, dir);
  const p = defaultPlatform();
  await store.putConfig(p);
  await store.setDomainState('dom3', 'running');
  const without3 = { ...p, domains: p.domains.slice(0, 2) };
  await t.throwsAsync(store.putConfig(without3), { message: /cannot remove domain "dom3".*running/ });
  t.truthy(store.getDomain('dom3'));
  await store.setDomainState('dom3', 'stopped');
  store.addCounters('dom3', { requests: 5 });
  await store.putConfig({
    ...without3,
    domains: [...without3.domains, { name: 'dom4', id: 4, memory: 32, grants: [{ volume: 'shared', mode: 'ro', slot: 3 }] }],
  });
  t.deepEqual(store.listDomains().map((d) => d.name), ['dom1', 'dom2', 'dom4']);
  t.is(store.getDomain('dom3'), undefined);
  t.throws(() => store.addCounters('dom3', { requests: 1 }), { message: /unknown domain "dom3"/ });
});

test('events get monotonic sequence numbers, in call order, across reopen', async (t) => {
  const dir = await stateDir(t);
  let store = await openStore(t, dir);
  await store.putConfig(defaultPlatform());
  // Appended without awaiting in between: they share batches but keep call order.
  const records = await Promise.all(
    Array.from({ length: 50 }, (_, i) => store.appendEvent({ type: 'info', domain: `dom${(i % 3) + 1}`, detail: `e${i}` })),
  );
  t.deepEqual(records.map((r) => r.seq), Array.from({ length: 50 }, (_, i) => i + 1));
  t.is(store.lastSeq, 50);
  await store.close();

  store = await openStore(t, dir);
  t.is(store.lastSeq, 50, 'the sequence is recovered from the log');
  const next = await store.appendEvent({ type: 'boot', domain: 'dom1', detail: 'after reopen' });
  t.is(next.seq, 51);
  const all = await store.listEvents();
  t.deepEqual(all.map((e) => e.seq), Array.from({ length: 51 }, (_, i) => i + 1));
  t.deepEqual(all.slice(0, 50).map((e) => e.detail), Array.from({ length: 50 }, (_, i) => `e${i}`));
  t.is(all[50].detail, 'after reopen');
  for (let i = 1; i < all.length; i++) t.true(all[i].time >= all[i - 1].time);

  t.deepEqual((await store.listEvents({ since: 45 })).map((e) => e.seq), [46, 47, 48, 49, 50, 51]);
  t.deepEqual((await store.listEvents({ since: 10, limit: 3 })).map((e) => e.seq), [11, 12, 13]);
  t.deepEqual((await store.listEvents({ tail: 3 })).map((e) => e.seq), [49, 50, 51]);
  t.deepEqual((await store.listEvents({ since: 49, tail: 5 })).map((e) => e.seq), [50, 51]);
  t.deepEqual((await store.listEvents({ domain: 'dom1', tail: 2 })).map((e) => e.seq), [49, 51]);
  t.deepEqual((await store.listEvents({ type: 'boot' })).map((e) => e.seq), [51]);
  t.deepEqual(await store.listEvents({ since: 51 }), []);
  t.throws(() => store.appendEvent({ type: 'bogus' as any }), { message: /bad event type/ });
});

test('counters accumulate in memory and reach the database only in flush batches', async (t) => {
  const dir = await stateDir(t);
  let store = await openStore(t, dir);
  await store.putConfig(defaultPlatform());
  const countersDb = (store as any).countersDb;
  let writes = 0;
  for (const method of ['put', 'batch']) {
    const original = countersDb[method].bind(countersDb);
    countersDb[method] = (...args: unknown[]) => {
      writes++;
      return original(...args);
    };
  }
  for (let i = 0; i < 10_000; i++) {
    store.addCounters('dom1', { requests: 1, reads: 1, bytesRead: 4096, virqs: 1 });
    if (i % 2 === 0) store.addCounters('dom2', { requests: 1, writes: 1, bytesWritten: 512 });
  }
  await new Promise((r) => setImmediate(r)); // let any write the adds may have queued start
  t.is(writes, 0, 'no I/O per request');
  t.like(store.getCounters('dom1'), { requests: 10_000, bytesRead: 40_960_000, virqs: 10_000, writes: 0 });
  await store.flushCounters();
  t.is(writes, 1, 'one batch for every dirty domain');
  await store.flushCounters();
  t.is(writes, 1, 'nothing dirty, nothing written');
  // What an idle platform's sampler adds every second.
  store.addCounters('dom1', { requests: 0, bytesRead: 0 });
  await store.flushCounters();
  t.is(writes, 1, 'deltas of zero make nothing dirty');
  store.addCounters('dom3', { revocations: 2 });
  t.throws(() => store.addCounters('dom1', { nope: 1 } as any), { message: /unknown counter "nope"/ });
  t.throws(() => store.addCounters('dom1', { requests: NaN }), { message: /bad value/ });
  t.throws(() => store.addCounters('ghost', { requests: 1 }), { message: /unknown domain "ghost"/ });
  await store.close(); // flushes dom3
  store = await openStore(t, dir);
  t.like(store.getCounters('dom1'), { requests: 10_000, bytesRead: 40_960_000 });
  t.like(store.getCounters('dom2'), { requests: 5_000, bytesWritten: 2_560_000 });
  t.like(store.getCounters('dom3'), { revocations: 2 });
  await store.resetCounters('dom1');
  t.is(store.getCounters('dom1').requests, 0);
  t.is(store.getCounters('dom2').requests, 5_000);
});

test('the flush timer writes counters and the status snapshot by itself', async (t) => {
  const dir = await stateDir(t);
  const store = await openStore(t, dir, { flushIntervalMs: 50 });
  await store.putConfig(defaultPlatform());
  const first = await readSnapshot(dir);
  t.like(first, { pid: process.pid, open: true });
  store.addCounters('dom2', { requests: 3 });
  let snap = await readSnapshot(dir);
  for (let i = 0; i < 100 && snap?.counters.dom2?.requests !== 3; i++) {
    await new Promise((r) => setTimeout(r, 20));
    snap = await readSnapshot(dir);
  }
  t.is(snap?.counters.dom2?.requests, 3);
  await store.close();
  t.like(await readSnapshot(dir), { open: false });
  t.like((await PlatformStore.open(dir, { flushIntervalMs: 0 }).then(async (s) => {
    const c = s.getCounters('dom2');
    await s.close();
    return c;
  })), { requests: 3 }, 'the timer flushed to the database');
});

test('readPlatformState reads the database when no one holds it', async (t) => {
  const dir = await stateDir(t);
  await t.throwsAsync(readPlatformState(dir), { instanceOf: NoPlatformError });
  t.false(existsSync(join(dir, 'store')), 'a reader creates nothing');
  const store = await openStore(t, dir);
  await store.putConfig(defaultPlatform());
  for (let i = 0; i < 5; i++) await store.appendEvent({ type: 'info', detail: `n${i}` });
  await store.close();
  const view = await readPlatformState(dir, { since: 2 });
  t.like(view, { source: 'db', live: false, lastSeq: 5, eventsComplete: true });
  t.deepEqual(view.events.map((e) => e.detail), ['n2', 'n3', 'n4']);
  t.is(view.domains.length, 3);
  // The reader let go of the database.
  const again = await PlatformStore.open(dir, { lockWaitMs: 0 });
  await again.close();
});

test('in the owner process, readers get the snapshot, whose event tail says when it is incomplete', async (t) => {
  const dir = await stateDir(t);
  const store = await openStore(t, dir);
  await store.putConfig(defaultPlatform());
  const n = SNAPSHOT_EVENTS + 10;
  for (let i = 1; i <= n; i++) void store.appendEvent({ type: 'revoke', domain: 'dom1', detail: `r${i}` });
  await store.listEvents({ tail: 1 }); // waits for the writes
  await store.writeSnapshot();
  const snap = JSON.parse(await readFile(join(dir, STATUS_FILENAME), 'utf8'));
  t.is(snap.events.length, SNAPSHOT_EVENTS);
  t.is(snap.events[0].seq, 11);
  const head = await readPlatformState(dir, { limit: 3 });
  t.like(head, { source: 'snapshot', live: true, pid: process.pid, lastSeq: n, eventsComplete: false });
  t.deepEqual(head.events.map((e) => e.seq), [11, 12, 13]);
  const tail = await readPlatformState(dir, { tail: 3 });
  t.like(tail, { eventsComplete: true });
  t.deepEqual(tail.events.map((e) => e.seq), [n - 2, n - 1, n]);
  t.like(await readPlatformState(dir, { since: 500, limit: 2 }), { eventsComplete: true });
  // The database itself has them all.
  t.is((await store.listEvents({ limit: 3 }))[0].seq, 1);
});

test('a second process reads the running platform while this one holds the database', async (t) => {
  const dir = await stateDir(t);
  const store = await openStore(t, dir, { flushIntervalMs: 100 });
  await store.putConfig(defaultPlatform(dir));
  await store.appendEvent({ type: 'platform-up' });
  for (const d of ['dom1', 'dom2', 'dom3']) {
    await store.setDomainState(d, 'running', { threadId: Number(d.slice(3)) });
    await store.appendEvent({ type: 'boot', domain: d, detail: 'booted' });
  }
  await store.setDomainState('dom3', 'crashed', { reason: 'killed' });
  await store.appendEvent({ type: 'crash', domain: 'dom3', detail: 'killed' });
  store.addCounters('dom1', { requests: 42, bytesWritten: 8192 });
  // No explicit flush or snapshot: the owner's timers must publish it.
  // Counters are published at the flush tick, later than the events: append a marker after adding them and
  // let the reader wait for it.
  setTimeout(() => void store.appendEvent({ type: 'info', detail: 'marker' }), 150);
  const out = await child(READER, { DIR: dir, QUERY: JSON.stringify({ tail: 3 }), UNTIL_SEQ: '6' });
  const { view, direct } = JSON.parse(out) as { view: PlatformView; direct: string };
  t.like(view, { source: 'snapshot', live: true, pid: process.pid, lastSeq: 6 });
  t.deepEqual(view.domains.map((d) => [d.name, d.state]), [['dom1', 'running'], ['dom2', 'running'], ['dom3', 'crashed']]);
  t.is(view.config?.volumes[0].image, join(dir, 'shared.img'));
  t.like(view.counters.dom1, { requests: 42, bytesWritten: 8192 });
  t.deepEqual(view.events.map((e) => [e.seq, e.type, e.domain]), [[4, 'boot', 'dom3'], [5, 'crash', 'dom3'], [6, 'info', undefined]]);
  t.regex(direct, /in use by another process/, 'the database itself stays locked to the owner');
  // The owner is undisturbed and keeps writing.
  t.is((await store.appendEvent({ type: 'info' })).seq, 7);

  await store.close();
  const after = JSON.parse(await child(READER, { DIR: dir }));
  t.like(after.view, { source: 'db', live: false, lastSeq: 7 });
  t.is(after.view.events.length, 7);
  t.is(after.direct, 'opened');
});

test('the owner waits for a reader that holds the database briefly', async (t) => {
  const dir = await stateDir(t);
  const first = await PlatformStore.open(dir, { flushIntervalMs: 0 });
  await first.putConfig(defaultPlatform());
  await first.close();
  let holding!: () => void;
  const held = new Promise<void>((r) => (holding = r));
  const done = child(HOLDER, { DIR: dir, HOLD_MS: '400' }, (line) => line === 'holding' && holding());
  await held;
  await t.throwsAsync(PlatformStore.open(dir, { lockWaitMs: 0 }), { message: /in use by another process/ });
  const start = Date.now();
  const store = await openStore(t, dir, { lockWaitMs: 5000 });
  t.true(Date.now() - start >= 100, 'it had to wait');
  t.is(store.listDomains().length, 3);
  t.regex(await done, /released/);
});

test('a snapshot left by a dead owner is not taken for the live platform', async (t) => {
  const dir = await stateDir(t);
  const deadPid = Number(await child('console.log(process.pid)', {}));
  const first = await PlatformStore.open(dir, { flushIntervalMs: 0 });
  await first.putConfig(defaultPlatform());
  await first.close();
  const snap = JSON.parse(await readFile(join(dir, STATUS_FILENAME), 'utf8'));
  await writeFile(join(dir, STATUS_FILENAME), JSON.stringify({ ...snap, pid: deadPid, open: true }));
  let holding!: () => void;
  const held = new Promise<void>((r) => (holding = r));
  const done = child(HOLDER, { DIR: dir, HOLD_MS: '1500' }, (line) => line === 'holding' && holding());
  await held;
  await t.throwsAsync(readPlatformState(dir, { waitMs: 300 }), { message: /held by another process that has written no status snapshot/ });
  await done;
  t.like(await readPlatformState(dir), { source: 'db' }, 'once it is released the database is read');
});

test('reapStale marks domains left running by a dead platform process as crashed', async (t) => {
  const dir = await stateDir(t);
  const deadPid = Number(await child('console.log(process.pid)', {}));
  let store = await openStore(t, dir);
  await store.putConfig(defaultPlatform());
  await store.setDomainState('dom1', 'running', { pid: deadPid });
  await store.setDomainState('dom2', 'running'); // this process: alive, left alone
  await store.close();
  store = await openStore(t, dir);
  const reaped = await store.reapStale();
  t.deepEqual(reaped.map((d) => d.name), ['dom1']);
  t.like(store.getDomain('dom1'), { state: 'crashed', pid: deadPid });
  t.regex(store.getDomain('dom1')!.reason!, new RegExp(`process ${deadPid} ended`));
  t.like(store.getDomain('dom2'), { state: 'running' });
});

test('a closed store refuses writes', async (t) => {
  const dir = await stateDir(t);
  const store = await openStore(t, dir);
  await store.putConfig(defaultPlatform());
  await store.close();
  t.throws(() => store.appendEvent({ type: 'info' }), { message: /closed/ });
  t.throws(() => store.addCounters('dom1', { requests: 1 }), { message: /closed/ });
  await t.throwsAsync(store.setDomainState('dom1', 'running'), { message: /closed/ });
  await store.close();
});
