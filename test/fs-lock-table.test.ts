import test from 'ava';
import { LockTable } from '../hypervisor/lock-table.js';
import { LocalLockService } from '../fs/local-lock-service.js';

test('shared holders coexist; exclusive waits and revokes them', (t) => {
  const table = new LockTable();
  t.deepEqual(table.request('a', 0, 'shared').granted?.mode, 'shared');
  t.deepEqual(table.request('b', 0, 'shared').granted?.mode, 'shared');
  const c = table.request('c', 0, 'exclusive');
  t.is(c.granted, null);
  t.deepEqual(c.revokes.map((r) => r.holder).sort(), ['a', 'b']);
  t.true(c.revokes.every((r) => r.wanted === 'exclusive'));
  t.deepEqual(table.release('a', 0, false).grants, []);
  const last = table.release('b', 0, false);
  t.deepEqual(last.grants, [{ holder: 'c', name: 0, mode: 'exclusive', generation: 0, epoch: 0 }]);
});

test('waiters are granted in FIFO order; shared requests queue behind an exclusive waiter', (t) => {
  const table = new LockTable();
  table.request('a', 0, 'shared');
  t.is(table.request('b', 0, 'exclusive').granted, null);
  const late = table.request('c', 0, 'shared');
  t.is(late.granted, null, 'a compatible late reader must not overtake the writer');
  t.deepEqual(table.waiters(0).map((w) => w.holder), ['b', 'c']);
  const r1 = table.release('a', 0, false);
  t.deepEqual(r1.grants.map((g) => g.holder), ['b']);
  t.deepEqual(r1.revokes, [{ holder: 'b', name: 0, wanted: 'shared' }], 'new holder is asked to give way to the next waiter');
  const r2 = table.release('b', 0, true);
  t.deepEqual(r2.grants, [{ holder: 'c', name: 0, mode: 'shared', generation: 1, epoch: 1 }], 'a dirty release moves the epoch too');
});

test('try-requests never queue or revoke; downgrade lets shared waiters in; the epoch counts changed releases', (t) => {
  const table = new LockTable();
  t.is(table.tryRequest('a', 0xfffffff0, 'exclusive')?.mode, 'exclusive', 'names cover 32 bits');
  t.is(table.tryRequest('b', 0xfffffff0, 'shared'), null, 'conflicts with a holder');
  t.deepEqual(table.waiters(0xfffffff0), [], 'nothing queued');
  t.is(table.request('b', 0xfffffff0, 'shared').granted, null);
  t.is(table.tryRequest('c', 0xfffffff0, 'shared'), null, 'no jumping ahead of a waiter');
  const down = table.downgrade('a', 0xfffffff0, true);
  t.deepEqual(down.grants.map((g) => [g.holder, g.mode, g.generation, g.epoch]), [['b', 'shared', 1, 1]]);
  t.deepEqual(table.holders(0xfffffff0).map((h) => [h.holder, h.mode]).sort(), [['a', 'shared'], ['b', 'shared']]);
  t.throws(() => table.downgrade('a', 0xfffffff0, false), undefined, 'only an exclusive holder downgrades');
  t.is(table.tryRequest('c', 0xfffffff0, 'shared')?.epoch, 1);
  table.release('a', 0xfffffff0, false);
  t.is(table.tryRequest('d', 5, 'exclusive')?.epoch, 1, 'a clean release leaves the epoch');
});

test('dirty release bumps the generation; clean release does not', (t) => {
  const table = new LockTable();
  table.request('a', 7, 'exclusive');
  table.release('a', 7, false);
  t.is(table.generation(7), 0);
  table.request('a', 7, 'exclusive');
  table.release('a', 7, true);
  t.is(table.generation(7), 1);
  t.is(table.request('b', 7, 'shared').granted?.generation, 1);
});

test('upgrade from shared: immediate when alone, queued with revokes otherwise', (t) => {
  const table = new LockTable();
  table.request('a', 0, 'shared');
  t.is(table.request('a', 0, 'exclusive').granted?.mode, 'exclusive');
  t.is(table.request('a', 0, 'shared').granted?.mode, 'exclusive', 'holding exclusive satisfies shared');
  const other = new LockTable();
  other.request('a', 0, 'shared');
  other.request('b', 0, 'shared');
  const up = other.request('a', 0, 'exclusive');
  t.is(up.granted, null);
  t.deepEqual(up.revokes.map((r) => r.holder), ['b']);
  t.deepEqual(other.release('b', 0, false).grants.map((g) => [g.holder, g.mode]), [['a', 'exclusive']]);
});

test('dropHolder removes held and queued locks, bumps exclusive generations, grants waiters', (t) => {
  const table = new LockTable();
  table.request('dead', 0, 'exclusive');
  table.request('dead', 1, 'shared');
  table.request('x', 0, 'shared');
  table.request('x', 1, 'exclusive');
  table.request('y', 2, 'exclusive');
  table.request('dead', 2, 'shared');
  const result = table.dropHolder('dead');
  t.deepEqual(result.grants.map((g) => [g.holder, g.name, g.mode, g.generation]).sort(), [
    ['x', 0, 'shared', 1],
    ['x', 1, 'exclusive', 0],
  ]);
  t.deepEqual(table.waiters(2), []);
  t.throws(() => table.release('dead', 0, false));
});

test('release by a non-holder throws', (t) => {
  const table = new LockTable();
  t.throws(() => table.release('a', 0, false));
});

test('LocalLockService delivers grants and asynchronous revokes', async (t) => {
  const service = new LocalLockService();
  const a = service.client();
  const b = service.client();
  const revokes: string[] = [];
  a.onRevoke((name, wanted) => {
    revokes.push(`${name}:${wanted}`);
    void a.unlock(name, true, 'exclusive');
  });
  t.is(await a.lock(0, 'exclusive'), 0);
  const pending = b.lock(0, 'shared');
  t.deepEqual(revokes, [], 'revoke handlers run asynchronously');
  t.is(await pending, 1);
  t.deepEqual(revokes, ['0:shared']);
  await service.kill(b);
  t.is(await a.lock(0, 'exclusive'), 1);
});

test('tryRequest: granted when free or compatible, null on a conflicting holder or a queue; nothing queued or revoked', (t) => {
  const table = new LockTable();
  const top = 2 ** 32 - 1;
  t.deepEqual(table.tryRequest('a', top, 'shared'), { holder: 'a', name: top, mode: 'shared', generation: 0, epoch: 0 }, 'the largest name');
  t.is(table.tryRequest('b', top, 'shared')?.mode, 'shared', 'shared with shared');
  t.is(table.tryRequest('c', top, 'exclusive'), null, 'exclusive against shared holders');
  t.is(table.tryRequest('a', top, 'exclusive'), null, 'no upgrade while another shares it');
  t.deepEqual(table.waiters(top), []);
  t.is(table.request('c', top, 'exclusive').granted, null);
  t.is(table.tryRequest('d', top, 'shared'), null, 'compatible with the holders, but c waits first');
  t.deepEqual(table.waiters(top).map((w) => w.holder), ['c'], 'the failed try left no waiter behind');
  t.is(table.tryRequest('a', top, 'shared')?.mode, 'shared', 'what one holds is granted again');
  table.release('b', top, false);
  table.release('a', top, false);
  t.is(table.holders(top)[0]?.holder, 'c');
  t.is(table.tryRequest('a', top - 1, 'exclusive')?.mode, 'exclusive', 'a neighbour name is another lock');
  t.is(table.tryRequest('a', 0, 'shared')?.mode, 'shared');
  t.is(table.tryRequest('a', 0, 'exclusive')?.mode, 'exclusive', 'a sole shared holder upgrades at once');
});

test('downgrade keeps the holder as a sharer, grants the shared waiters up to the first exclusive one, dirty bumps the generation', (t) => {
  const table = new LockTable();
  const name = 0xfffffff0;
  table.request('a', name, 'exclusive');
  for (const [holder, mode] of [['b', 'shared'], ['c', 'shared'], ['d', 'exclusive'], ['e', 'shared']] as const) {
    t.is(table.request(holder, name, mode).granted, null);
  }
  const clean = new LockTable();
  clean.request('a', 1, 'exclusive');
  clean.request('b', 1, 'shared');
  t.deepEqual(clean.downgrade('a', 1, false).grants.map((g) => g.generation), [0], 'a clean downgrade keeps the generation');
  const down = table.downgrade('a', name, true);
  t.deepEqual(down.grants.map((g) => [g.holder, g.mode, g.generation]), [['b', 'shared', 1], ['c', 'shared', 1]]);
  t.deepEqual(down.revokes.map((r) => [r.holder, r.wanted]).sort(), [['a', 'exclusive'], ['b', 'exclusive'], ['c', 'exclusive']]);
  t.deepEqual(table.waiters(name).map((w) => w.holder), ['d', 'e']);
  t.is(table.heldBy('a', name), 'shared');
  t.throws(() => table.downgrade('a', name, false), undefined, 'a shared holder cannot downgrade');
  t.throws(() => table.downgrade('z', name, false), undefined, 'nor can a stranger');
  for (const holder of ['a', 'b', 'c']) table.release(holder, name, false);
  t.deepEqual(table.holders(name), [{ holder: 'd', mode: 'exclusive' }]);
});

test('LocalLockService: tryLock and downgrade; a killed client is fenced, recovered, and only then are its locks passed on', async (t) => {
  const service = new LocalLockService();
  const [a, b, c] = [service.client(), service.client(), service.client()];
  const wanted: string[] = [];
  a.onRevoke((name, mode) => wanted.push(`${name}:${mode}`));
  t.is(await a.lock(0xfffffff0, 'exclusive'), 0);
  t.is(await a.lock(2, 'shared'), 0);
  t.is(await b.tryLock(0xfffffff0, 'shared'), null);
  t.is(service.stats.tryFailures, 1);
  const order: string[] = [];
  const bGot = b.lock(0xfffffff0, 'shared').then((g) => order.push(`b granted ${g}`));
  const cGot = c.lock(2, 'exclusive').then((g) => order.push(`c granted ${g}`));
  await new Promise((resolve) => setImmediate(resolve));
  t.deepEqual(wanted.sort(), ['2:exclusive', `${0xfffffff0}:shared`], 'revokes carry the mode the waiter wants');
  await service.kill(a, async () => {
    order.push('recover starts');
    // The fenced client can no longer hand anything over, and its waiters stay queued while its journal replays.
    await a.unlock(0xfffffff0, true, 'exclusive');
    await a.downgrade(0xfffffff0, true);
    await t.throwsAsync(a.lock(3, 'shared'));
    await t.throwsAsync(a.tryLock(3, 'shared'));
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    order.push('recover ends');
  });
  await Promise.all([bGot, cGot]);
  t.deepEqual(order.slice(0, 2), ['recover starts', 'recover ends']);
  t.deepEqual(order.slice(2).sort(), ['b granted 1', 'c granted 0'], 'an exclusive hold of the dead counts as dirty');
  // Downgrade through the service: the shared waiter gets in beside the downgraded holder.
  t.is(await c.tryLock(2, 'exclusive'), 0, 'c holds it already');
  const bShares = b.lock(2, 'shared');
  await c.downgrade(2, true);
  t.is(await bShares, 1);
  t.is(service.generation(2), 1);
});

test('a release of shared overtaken by the grant of the holder\'s own upgrade changes nothing', (t) => {
  const table = new LockTable();
  table.request('a', 0, 'shared');
  table.request('b', 0, 'shared');
  // a asks to upgrade and waits for b; b gives way, and a is granted exclusive.
  t.is(table.request('a', 0, 'exclusive').granted, null);
  t.deepEqual(table.release('b', 0, false).grants.map((g) => [g.holder, g.mode]), [['a', 'exclusive']]);
  // a's answer to an older revoke, releasing the shared hold it knew of, arrives only now.
  t.deepEqual(table.release('a', 0, false, 'shared'), { grants: [], revokes: [] });
  t.is(table.heldBy('a', 0), 'exclusive', 'the upgrade stands');
  // Without the mode, the release would have let the exclusive hold go behind the holder's back.
  t.is(table.request('c', 0, 'shared').granted, null);
  t.deepEqual(table.release('a', 0, false, 'exclusive').grants.map((g) => [g.holder, g.mode]), [['c', 'shared']]);
});

test('join: a shared request joins shared holders ahead of a queued writer (a cut), and queues behind an exclusive holder', (t) => {
  const table = new LockTable();
  table.request('cut-a', 7, 'shared');
  t.is(table.request('writer', 7, 'exclusive').granted, null);
  t.is(table.request('late', 7, 'shared').granted, null, 'without join it queues behind the writer');
  t.is(table.request('cut-b', 7, 'shared', true).granted?.mode, 'shared', 'with join it shares with cut-a at once');
  t.deepEqual(table.waiters(7).map((w) => w.holder), ['writer', 'late']);
  table.release('cut-a', 7, false);
  t.deepEqual(table.release('cut-b', 7, false).grants.map((g) => g.holder), ['writer']);
  t.is(table.request('other', 7, 'shared', true).granted, null, 'an exclusive holder is never joined');
  t.is(table.request('x', 8, 'exclusive', true).granted?.mode, 'exclusive', 'join means nothing to an exclusive request');
  t.is(table.request('y', 8, 'exclusive', true).granted, null);
});
