/**
 * The cluster-lock ABI through the real monitor: raw guests write LOCK and UNLOCK descriptors into their rings
 * and read the revoke ring of their interrupt controller page by hand, so every field and index a guest could get
 * wrong (or write on purpose) reaches the monitor. The guest kernel's revoke reader is checked against the
 * monitor's own ring producer at the end.
 */
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import {
  LOCK_BLOCK_BYTES, LOCK_BLOCK_READ, LOCK_EXCLUSIVE, LOCK_HINT_READ, LOCK_SHARED, Line, Op, REQ_DIRTY, REQ_DOWNGRADE,
  REQ_READ_BLOCK, REQ_READ_HINT, REQ_TRY, REVOKE_SLOTS, Status, VIC_WORDS, Vic,
} from '../hypervisor/abi.js';
import type { PlatformEvent } from '../hypervisor/toolstack.js';
import { VirtualInterruptController } from '../hypervisor/virq.js';
import { LockFront } from '../guests/lock-front.js';
import type { Blkfront } from '../guests/blkfront.js';
import type { GuestKernel } from '../guests/kernel.js';
import type { LockMode } from '../fs/lock-service.js';
import { bootPlatform, MiB, randomImage, tempDir } from './helpers/platform.js';
import { RawGuest, type RawRequest } from './helpers/raw-guest.js';

type Test = Parameters<typeof tempDir>[0];

/** A platform with raw (hand-driven) domains, each granted the volumes named (vbd i = volumes[i]). */
async function setup(t: Test, domains: Record<string, string[]>, volumes = ['shared']) {
  const dir = await tempDir(t);
  const images = [];
  const contents: Buffer[] = [];
  for (const name of volumes) {
    const image = await randomImage(dir, 1 * MiB, `${name}.img`);
    images.push({ name, path: image.path });
    contents.push(image.contents);
  }
  const platform = await bootPlatform(t, { volumes: images });
  const events: PlatformEvent[] = [];
  platform.onEvent((e) => events.push(e));
  const raw: Record<string, RawGuest> = {};
  for (const [name, grants] of Object.entries(domains)) {
    const handle = await platform.createDomain(
      { name, memoryBytes: 64 * 1024, grants: grants.map((volume) => ({ volume, readOnly: false })) },
      { guest: false },
    );
    raw[name] = new RawGuest(handle.pages, platform.doorbell);
  }
  return { platform, raw, events, contents };
}

const lockReq = (id: number, name: number, mode: number, flags = 0, vbd = 0, memOffset = 0): RawRequest => ({ id, op: Op.LOCK, sector: name, count: mode, flags, vbd, memOffset });
const unlockReq = (id: number, name: number, flags = 0, vbd = 0, released = 0): RawRequest => ({ id, op: Op.UNLOCK, sector: name, count: released, flags, vbd });

/** Submit and wait for the answers (requests that are answered at once). */
async function call(g: RawGuest, ...requests: RawRequest[]) {
  g.submitBatch(requests);
  return (await g.responses(requests.length)).map((r) => [r.id, r.status, r.value]);
}

/** Polls `cond` (a wait for the monitor thread, not a timing assertion: only a hang ends it). */
async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

const revokeProd = (g: RawGuest) => Atomics.load(g.vic, Vic.REVOKE_PROD) >>> 0;

test('a name past 2^31 is its own lock: granted, waited for, revoked by name and wanted mode, handed over', async (t) => {
  const { platform, raw, events } = await setup(t, { a: ['shared'], b: ['shared'], c: ['shared'] });
  const high = 0xfffffff0;
  t.deepEqual(await call(raw.a, lockReq(1, high, LOCK_EXCLUSIVE)), [[1, Status.OK, 0]]);
  // Names sharing its low 31 or 16 bits are other locks: granted at once.
  t.deepEqual(await call(raw.c, lockReq(1, high & 0x7fffffff, LOCK_EXCLUSIVE), lockReq(2, high & 0xffff, LOCK_EXCLUSIVE)), [
    [1, Status.OK, 0],
    [2, Status.OK, 0],
  ]);
  raw.b.submit(lockReq(7, high, LOCK_SHARED));
  t.deepEqual(await raw.a.revokes(1), [{ vbd: 0, name: high, wanted: LOCK_SHARED }]);
  t.deepEqual(raw.c.takeRevokes(), [], 'holders of other names are left alone');
  await waitFor('the revoke event', () => events.some((e) => e.type === 'revoke'));
  t.deepEqual(events.filter((e) => e.type === 'revoke'), [{ type: 'revoke', domain: 'a', detail: `lock ${high} of volume shared (vbd 0) wanted shared` }]);
  t.deepEqual(await call(raw.a, unlockReq(2, high, REQ_DIRTY)), [[2, Status.OK, 0]]);
  t.deepEqual((await raw.b.responses(1)).map((r) => [r.id, r.status, r.value]), [[7, Status.OK, 1]], 'granted, with the bumped generation');
  t.is(platform.counters('a').REVOKES, 1);
});

test('UNLOCK names the mode given up: a release of shared that the grant of its own upgrade overtook changes nothing', async (t) => {
  const { raw } = await setup(t, { a: ['shared'], b: ['shared'], c: ['shared'] });
  t.deepEqual(await call(raw.a, lockReq(1, 5, LOCK_SHARED)), [[1, Status.OK, 0]]);
  t.deepEqual(await call(raw.b, lockReq(1, 5, LOCK_SHARED)), [[1, Status.OK, 0]]);
  // a asks to upgrade; b gives way, so a is granted exclusive.
  raw.a.submit(lockReq(2, 5, LOCK_EXCLUSIVE));
  await raw.b.revokes(1);
  t.deepEqual(await call(raw.b, unlockReq(2, 5, 0, 0, LOCK_SHARED)), [[2, Status.OK, 0]]);
  t.deepEqual((await raw.a.responses(1)).map((r) => [r.id, r.status]), [[2, Status.OK]]);
  // a's release of the shared hold it knew of arrives after that grant: a keeps exclusive, so c must wait.
  t.deepEqual(await call(raw.a, unlockReq(3, 5, 0, 0, LOCK_SHARED)), [[3, Status.OK, 0]]);
  raw.c.submit(lockReq(1, 5, LOCK_SHARED));
  t.deepEqual(await raw.a.revokes(1), [{ vbd: 0, name: 5, wanted: LOCK_SHARED }]);
  t.deepEqual(await call(raw.c, lockReq(2, 6, LOCK_SHARED, 0, 0)), [[2, Status.OK, 0]], 'c is still served for other names');
  t.deepEqual(await call(raw.a, unlockReq(4, 5, 0, 0, LOCK_EXCLUSIVE)), [[4, Status.OK, 0]]);
  t.deepEqual((await raw.c.responses(1)).map((r) => [r.id, r.status]), [[1, Status.OK]]);
  t.deepEqual(await call(raw.c, unlockReq(3, 6, 0, 0, 3)), [[3, Status.EINVAL, 0]], 'an unknown mode is refused');
});

test('REQ_TRY: EAGAIN without queuing or revoking, never ahead of a waiter; a later plain LOCK still works', async (t) => {
  const { platform, raw } = await setup(t, { a: ['shared'], b: ['shared'], c: ['shared'], d: ['shared'] });
  t.deepEqual(await call(raw.a, lockReq(1, 7, LOCK_EXCLUSIVE)), [[1, Status.OK, 0]]);
  t.deepEqual(await call(raw.b, lockReq(1, 7, LOCK_SHARED, REQ_TRY), lockReq(2, 7, LOCK_EXCLUSIVE, REQ_TRY)), [
    [1, Status.EAGAIN, 0],
    [2, Status.EAGAIN, 0],
  ]);
  t.is(revokeProd(raw.a), 0, 'a failed try asks nobody for anything');
  t.is(platform.counters('b').ERRORS, 0, 'EAGAIN is an answer, not an error');
  // Had the try queued, this would wait behind it (or be refused as a second wait by the same domain).
  t.deepEqual(await call(raw.a, unlockReq(2, 7, REQ_DIRTY)), [[2, Status.OK, 0]]);
  t.deepEqual(await call(raw.b, lockReq(3, 7, LOCK_SHARED)), [[3, Status.OK, 1]]);
  t.deepEqual(await call(raw.c, lockReq(1, 7, LOCK_SHARED, REQ_TRY)), [[1, Status.OK, 1]], 'compatible and nobody waits: granted at once');
  // a waits for exclusive; a try for shared is compatible with the holders but would jump the queue.
  raw.a.submit(lockReq(3, 7, LOCK_EXCLUSIVE));
  await raw.b.revokes(1);
  t.deepEqual(await raw.c.revokes(1), [{ vbd: 0, name: 7, wanted: LOCK_EXCLUSIVE }]);
  t.deepEqual(await call(raw.b, unlockReq(4, 7)), [[4, Status.OK, 0]]);
  t.deepEqual(await call(raw.d, lockReq(1, 7, LOCK_SHARED, REQ_TRY)), [[1, Status.EAGAIN, 0]]);
  t.deepEqual(await call(raw.c, unlockReq(2, 7)), [[2, Status.OK, 0]]);
  t.deepEqual((await raw.a.responses(1)).map((r) => [r.id, r.status]), [[3, Status.OK]]);
  t.deepEqual(await call(raw.b, lockReq(5, 8, LOCK_EXCLUSIVE, REQ_TRY)), [[5, Status.OK, 0]], 'a free name');
});

test('REQ_DOWNGRADE: exclusive becomes shared (dirty bumps the generation) and lets shared waiters in; EINVAL unless held exclusively', async (t) => {
  const { raw } = await setup(t, { a: ['shared'], b: ['shared'], c: ['shared'] });
  t.deepEqual(await call(raw.a, lockReq(1, 9, LOCK_EXCLUSIVE)), [[1, Status.OK, 0]]);
  raw.b.submit(lockReq(1, 9, LOCK_SHARED));
  t.deepEqual(await raw.a.revokes(1), [{ vbd: 0, name: 9, wanted: LOCK_SHARED }]);
  raw.c.submit(lockReq(1, 9, LOCK_EXCLUSIVE));
  t.deepEqual(await call(raw.b, lockReq(2, 5, LOCK_SHARED)), [[2, Status.OK, 0]]);
  t.deepEqual(await call(raw.b, unlockReq(3, 5, REQ_DOWNGRADE)), [[3, Status.EINVAL, 0]], 'held shared: nothing to downgrade');
  t.deepEqual(await call(raw.a, unlockReq(2, 9, REQ_DOWNGRADE | REQ_DIRTY)), [[2, Status.OK, 0]]);
  t.deepEqual((await raw.b.responses(1)).map((r) => [r.id, r.status, r.value]), [[1, Status.OK, 1]]);
  // c still waits for exclusive: both sharers are asked to leave now, a again since its answer cleared its revoke.
  t.deepEqual(await raw.a.revokes(1), [{ vbd: 0, name: 9, wanted: LOCK_EXCLUSIVE }]);
  t.deepEqual(await raw.b.revokes(1), [{ vbd: 0, name: 9, wanted: LOCK_EXCLUSIVE }]);
  t.deepEqual(await call(raw.a, unlockReq(3, 9, REQ_DOWNGRADE), unlockReq(4, 11, REQ_DOWNGRADE)), [
    [3, Status.EINVAL, 0],
    [4, Status.EINVAL, 0],
  ]);
  t.deepEqual(await call(raw.a, unlockReq(5, 9), lockReq(6, 9, LOCK_SHARED, REQ_TRY)), [
    [5, Status.OK, 0],
    [6, Status.EAGAIN, 0],
  ]);
  t.deepEqual(await call(raw.b, unlockReq(4, 9)), [[4, Status.OK, 0]]);
  t.deepEqual((await raw.c.responses(1)).map((r) => [r.id, r.status, r.value]), [[1, Status.OK, 1]]);
});

test('REQ_READ_BLOCK: the grant brings the block named by the lock, as its last holder left it; bad blocks and buffers are refused', async (t) => {
  const { raw, contents } = await setup(t, { a: ['shared'], b: ['shared'] });
  const block = (name: number) => contents[0].subarray(name * LOCK_BLOCK_BYTES, (name + 1) * LOCK_BLOCK_BYTES);
  const answer = (rs: { id: number; status: number; flags: number }[]) => rs.map((r) => [r.id, r.status, r.flags]);
  // Granted at once: the block as the image holds it.
  raw.a.submit(lockReq(1, 9, LOCK_EXCLUSIVE, REQ_READ_BLOCK, 0, 0));
  t.deepEqual(answer(await raw.a.responses(1)), [[1, Status.OK, LOCK_BLOCK_READ]]);
  t.true(Buffer.from(raw.a.memory.subarray(0, LOCK_BLOCK_BYTES)).equals(block(9)));
  // A waiter gets it with the grant that a's release lets through, with what a wrote under the lock.
  raw.b.submit(lockReq(1, 9, LOCK_SHARED, REQ_READ_BLOCK, 0, 8192));
  t.deepEqual(await raw.a.revokes(1), [{ vbd: 0, name: 9, wanted: LOCK_SHARED }]);
  raw.a.memory.fill(0x5a, 16384, 16384 + LOCK_BLOCK_BYTES);
  t.deepEqual(await call(raw.a, { id: 2, op: Op.WRITE, sector: (9 * LOCK_BLOCK_BYTES) / 512, count: LOCK_BLOCK_BYTES / 512, memOffset: 16384 }, unlockReq(3, 9, REQ_DIRTY)), [
    [2, Status.OK, 0],
    [3, Status.OK, 0],
  ]);
  t.deepEqual(answer(await raw.b.responses(1)), [[1, Status.OK, LOCK_BLOCK_READ]]);
  t.true(raw.b.memory.subarray(8192, 8192 + LOCK_BLOCK_BYTES).every((byte) => byte === 0x5a));
  // Without the flag nothing is read.
  raw.b.memory.fill(0, 0, LOCK_BLOCK_BYTES);
  raw.b.submit(lockReq(2, 10, LOCK_SHARED, 0, 0, 0));
  t.deepEqual(answer(await raw.b.responses(1)), [[2, Status.OK, 0]]);
  t.true(raw.b.memory.subarray(0, LOCK_BLOCK_BYTES).every((byte) => byte === 0));
  // REQ_READ_HINT: the block the buffer's first word names comes too, into its second half; one past the volume
  // is left out (the lock and its own block still come).
  for (const [id, name, hint, flags] of [[5, 20, 7, LOCK_BLOCK_READ | LOCK_HINT_READ], [6, 21, 256, LOCK_BLOCK_READ]]) {
    raw.b.memory.fill(0, 0, 2 * LOCK_BLOCK_BYTES);
    new DataView(raw.b.memory.buffer).setUint32(0, hint, true);
    raw.b.submit(lockReq(id, name, LOCK_SHARED, REQ_READ_BLOCK | REQ_READ_HINT, 0, 0));
    t.deepEqual(answer(await raw.b.responses(1)), [[id, Status.OK, flags]]);
    t.true(Buffer.from(raw.b.memory.subarray(0, LOCK_BLOCK_BYTES)).equals(block(name)));
    const second = raw.b.memory.subarray(LOCK_BLOCK_BYTES, 2 * LOCK_BLOCK_BYTES);
    t.true(hint < 256 ? Buffer.from(second).equals(block(hint)) : second.every((byte) => byte === 0), `hint ${hint}`);
  }
  // A block past the volume's end (1 MiB: 256 blocks) and a buffer past the domain's memory (64 KiB): refused, no lock.
  raw.b.submit(lockReq(3, 256, LOCK_SHARED, REQ_READ_BLOCK, 0, 0));
  raw.b.submit(lockReq(4, 11, LOCK_SHARED, REQ_READ_BLOCK, 0, 64 * 1024 - 512));
  t.deepEqual(answer(await raw.b.responses(2)), [[3, Status.ERANGE, 0], [4, Status.EFAULT, 0]]);
  t.deepEqual(await call(raw.a, lockReq(4, 11, LOCK_EXCLUSIVE, REQ_TRY)), [[4, Status.OK, 0]], 'the refused LOCK of 11 holds nothing');
});

test('malformed LOCK and UNLOCK descriptors get EINVAL and change nothing', async (t) => {
  const { platform, raw } = await setup(t, { a: ['shared'], b: ['shared'] });
  t.deepEqual(await call(raw.b, lockReq(1, 5, LOCK_EXCLUSIVE)), [[1, Status.OK, 0]]);
  const cases: [string, RawRequest][] = [
    ['LOCK with SECTOR_HI set (name 5 + 2^32)', { ...lockReq(10, 5, LOCK_SHARED), sectorHi: 1 }],
    ['LOCK with SECTOR_HI all ones', { ...lockReq(11, 5, LOCK_SHARED), sectorHi: -1 }],
    ['UNLOCK with SECTOR_HI set', { ...unlockReq(12, 5), sectorHi: 1 }],
    ['mode 0', lockReq(13, 6, 0)],
    ['mode 3', lockReq(14, 6, 3)],
    ['mode -1', lockReq(15, 6, -1)],
    ['try with a bad mode', lockReq(16, 6, 7, REQ_TRY)],
    ['UNLOCK of a lock not held', unlockReq(17, 6)],
    ['UNLOCK of a lock another domain holds', unlockReq(18, 5, REQ_DIRTY)],
  ];
  t.deepEqual(await call(raw.a, ...cases.map(([, r]) => r)), cases.map(([, r]) => [r.id, Status.EINVAL, 0]), cases.map(([w]) => w).join('; '));
  t.is(platform.counters('a').ERRORS, cases.length);
  t.is(revokeProd(raw.b), 0, 'no malformed request reached lock 5');
  t.deepEqual(await call(raw.a, lockReq(20, 0xffffffff, LOCK_EXCLUSIVE), unlockReq(21, 0xffffffff, REQ_DIRTY), lockReq(22, 0xffffffff, LOCK_SHARED)), [
    [20, Status.OK, 0],
    [21, Status.OK, 0],
    [22, Status.OK, 1],
  ], 'the largest name is fine');
  t.deepEqual(await call(raw.b, unlockReq(2, 5, REQ_DIRTY), lockReq(3, 5, LOCK_SHARED)), [[2, Status.OK, 0], [3, Status.OK, 1]]);
});

test('more revokes than the ring holds: all arrive in order with their wanted modes, none twice, and every waiter is granted', async (t) => {
  const waiters = ['w0', 'w1', 'w2', 'w3', 'w4'];
  const { platform, raw, events } = await setup(t, Object.fromEntries(['a', 'x', ...waiters].map((n) => [n, ['shared']])));
  const names = Array.from({ length: 600 }, (_, i) => 0x80000000 + i * 3);
  const mode = (i: number) => (i % 2 === 0 ? LOCK_SHARED : LOCK_EXCLUSIVE);
  for (let i = 0; i < names.length; i += 100) {
    const got = await call(raw.a, ...names.slice(i, i + 100).map((name, k) => lockReq(i + k, name, LOCK_EXCLUSIVE)));
    t.true(got.every(([, status]) => status === Status.OK));
  }
  // One waiter per name (a ring holds at most 128 requests, so five domains share them), in a known order.
  for (const [w, domain] of waiters.entries()) {
    raw[domain].submitBatch(names.slice(w * 120, w * 120 + 120).map((name, k) => lockReq(w * 120 + k, name, mode(w * 120 + k))));
    await waitFor(`${domain}'s requests`, () => platform.counters(domain).LOCKS === 120);
  }
  await waitFor('the backlog flag', () => Atomics.load(raw.a.vic, Vic.REVOKE_WAITING) === 1);
  t.is(revokeProd(raw.a), REVOKE_SLOTS, 'the ring is full; the rest waits in the monitor');
  t.is(platform.counters('a').REVOKES, REVOKE_SLOTS, 'only posted entries count');
  // Another sharer of ten of them while a's revokes are outstanding: the revoke a has (or will get) covers it.
  raw.x.submitBatch(names.slice(0, 20).filter((_, i) => i % 2 === 0).map((name, k) => lockReq(k, name, LOCK_SHARED)));
  await waitFor("x's requests", () => platform.counters('x').LOCKS === 10);

  const got = await raw.a.revokes(names.length);
  await waitFor('the backlog to empty', () => Atomics.load(raw.a.vic, Vic.REVOKE_WAITING) === 0);
  got.push(...raw.a.takeRevokes());
  t.deepEqual(got, names.map((name, i) => ({ vbd: 0, name, wanted: mode(i) })));
  t.is(platform.counters('a').REVOKES, names.length);

  // a answers: a downgrade where the waiter wants to share, a dirty release where it wants exclusive.
  for (let i = 0; i < names.length; i += 100) {
    const answers = names.slice(i, i + 100).map((name, k) => unlockReq(i + k, name, mode(i + k) === LOCK_SHARED ? REQ_DOWNGRADE : REQ_DIRTY));
    t.true((await call(raw.a, ...answers)).every(([, status]) => status === Status.OK));
  }
  for (const [w, domain] of waiters.entries()) {
    const expected = names.slice(w * 120, w * 120 + 120).map((_, k) => [w * 120 + k, Status.OK, mode(w * 120 + k) === LOCK_SHARED ? 0 : 1]);
    t.deepEqual((await raw[domain].responses(120)).map((r) => [r.id, r.status, r.value]), expected, domain);
  }
  t.deepEqual((await raw.x.responses(10)).map((r) => [r.id, r.status]), Array.from({ length: 10 }, (_, k) => [k, Status.OK]));
  t.deepEqual(raw.a.takeRevokes(), []);
  t.is(platform.counters('a').REVOKES, names.length);
  await waitFor('the revoke events', () => events.filter((e) => e.type === 'revoke').length >= names.length);
  t.is(events.filter((e) => e.type === 'revoke' && e.domain === 'a').length, names.length);
});

test('a vbd other than 0: the revoke names the vbd of the holder that reaches the lock\'s volume', async (t) => {
  const { raw } = await setup(t, { d: ['a', 'b'], e: ['b'] }, ['a', 'b']);
  t.deepEqual(await call(raw.d, lockReq(1, 5, LOCK_EXCLUSIVE, 0, 0), lockReq(2, 5, LOCK_EXCLUSIVE, 0, 1)), [[1, Status.OK, 0], [2, Status.OK, 0]]);
  raw.e.submit(lockReq(1, 5, LOCK_SHARED));
  t.deepEqual(await raw.d.revokes(1), [{ vbd: 1, name: 5, wanted: LOCK_SHARED }]);
  t.deepEqual(await call(raw.d, unlockReq(3, 5, REQ_DOWNGRADE, 1)), [[3, Status.OK, 0]]);
  t.deepEqual((await raw.e.responses(1)).map((r) => [r.id, r.status]), [[1, Status.OK]]);
  t.deepEqual(raw.d.takeRevokes(), [], 'lock 5 of volume a was never wanted');
});

test('garbage in the revoke consumer index: that domain\'s revokes wait in the monitor until it repairs the index; nobody else is hurt', async (t) => {
  const { platform, raw } = await setup(t, { h: ['shared'], g: ['shared'] });
  const good = await platform.createDomain({ name: 'good', memoryBytes: 8 * MiB, grants: [{ volume: 'shared', readOnly: false }] });
  const held = [3, 4, 5];
  const wanted = [LOCK_SHARED, LOCK_EXCLUSIVE, LOCK_SHARED];
  t.true((await call(raw.h, ...held.map((name) => lockReq(name, name, LOCK_EXCLUSIVE)))).every(([, status]) => status === Status.OK));
  // Far ahead of the producer, more than a ring behind it, a little ahead of it.
  for (const [i, garbage] of [0x12345678, 0x80000000, 5].entries()) {
    Atomics.store(raw.h.vic, Vic.REVOKE_CONS, garbage | 0);
    raw.h.ringDoorbell();
    raw.g.submit(lockReq(10 + i, held[i], wanted[i]));
    await waitFor('the backlog flag', () => Atomics.load(raw.h.vic, Vic.REVOKE_WAITING) === 1);
    // Many drain passes later nothing was posted, and the monitor serves everyone as before.
    const data = randomBytes(64 * 1024);
    await good.call({ kind: 'block-write', offset: 128 * 1024, data });
    t.true(Buffer.from(await good.call<Uint8Array>({ kind: 'block-read', offset: 128 * 1024, length: data.length })).equals(data));
    t.deepEqual(await call(raw.h, { id: 30 + i, op: Op.VOLINFO }), [[30 + i, Status.OK, (1 * MiB) / 512]]);
    t.deepEqual(await call(raw.g, { id: 40 + i, op: Op.VOLINFO }), [[40 + i, Status.OK, (1 * MiB) / 512]]);
    t.is(revokeProd(raw.h), i, `nothing posted with consumer index ${garbage}`);
    t.is(Atomics.load(raw.h.vic, Vic.REVOKE_WAITING), 1);
    // Repaired: the revoke arrives (takeRevokes rings the doorbell, as the flag asks).
    Atomics.store(raw.h.vic, Vic.REVOKE_CONS, i);
    t.deepEqual(await raw.h.revokes(1), [{ vbd: 0, name: held[i], wanted: wanted[i] }]);
    await waitFor('the backlog to empty', () => Atomics.load(raw.h.vic, Vic.REVOKE_WAITING) === 0);
  }
  t.true((await call(raw.h, ...held.map((name) => unlockReq(name, name)))).every(([, status]) => status === Status.OK));
  t.deepEqual((await raw.g.responses(3)).map((r) => [r.id, r.status]), [[10, Status.OK], [11, Status.OK], [12, Status.OK]]);
  t.is(platform.counters('h').REVOKES, 3);
});

test('the guest\'s revoke reader routes entries by vbd, frees the ring, and rings the doorbell only when revokes wait', (t) => {
  const vic = new SharedArrayBuffer(VIC_WORDS * 4);
  const handlers = new Map<number, () => void>();
  let doorbells = 0;
  const kernel = { onInterrupt: (line: number, h: () => void) => handlers.set(line, h), notifyMonitor: () => doorbells++ } as unknown as GuestKernel;
  const disk = (vbd: number) => ({ vbd, request: async () => ({ status: Status.OK, valueLo: 0, valueHi: 0, infoFlags: 0 }) }) as unknown as Blkfront;
  const seen: Record<number, [number, LockMode][]> = { 0: [], 2: [] };
  for (const vbd of [0, 2]) new LockFront(kernel, vic, disk(vbd)).onRevoke((name, wanted) => seen[vbd].push([name, wanted]));
  t.is(handlers.size, 1, 'one reader per kernel');
  const monitorSide = new VirtualInterruptController(vic);
  for (let i = 0; i < REVOKE_SLOTS; i++) t.true(monitorSide.postRevoke(i % 3, 0xfffffff0 + (i % 16), i % 2 ? LOCK_EXCLUSIVE : LOCK_SHARED));
  t.false(monitorSide.postRevoke(0, 1, LOCK_SHARED), 'full');
  monitorSide.raise(Line.LOCK_REVOKE);
  handlers.get(Line.LOCK_REVOKE)!();
  t.is(Atomics.load(new Int32Array(vic), Vic.REVOKE_CONS), REVOKE_SLOTS);
  t.is(doorbells, 0, 'nothing waits in the monitor');
  const expect = (vbd: number) =>
    Array.from({ length: REVOKE_SLOTS }, (_, i) => i)
      .filter((i) => i % 3 === vbd)
      .map((i) => [0xfffffff0 + (i % 16), i % 2 ? 'exclusive' : 'shared']);
  t.deepEqual(seen[0], expect(0));
  t.deepEqual(seen[2], expect(2));
  t.true(monitorSide.postRevoke(2, 42, LOCK_SHARED), 'room again');
  monitorSide.revokesWaiting(true);
  handlers.get(Line.LOCK_REVOKE)!();
  t.deepEqual(seen[2].at(-1), [42, 'shared']);
  t.is(doorbells, 1);
});
