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
    void a.unlock(name, true);
  });
  t.is(await a.lock(0, 'exclusive'), 0);
  const pending = b.lock(0, 'shared');
  t.deepEqual(revokes, [], 'revoke handlers run asynchronously');
  t.is(await pending, 1);
  t.deepEqual(revokes, ['0:shared']);
  await service.kill(b);
  t.is(await a.lock(0, 'exclusive'), 1);
});
