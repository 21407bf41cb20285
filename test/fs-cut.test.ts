/**
 * Consistent cuts (fs/consistent-cut.ts) between filesystem instances sharing one volume in one process: what a
 * cut holds, who waits for it, and the REQ_JOIN that lets a second instance join a cut a writer waits behind.
 */
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { FileSystem } from '../fs/filesystem.js';
import { O_CREAT, O_RDONLY, O_TRUNC, O_WRONLY, S_IFREG } from '../fs/vfs.js';
import { bytes, freshVolume, text } from './fs-helpers.js';

async function put(fs: FileSystem, path: string, content: string): Promise<void> {
  const fh = await fs.create(path, S_IFREG | 0o644, O_CREAT | O_WRONLY | O_TRUNC);
  await fs.write(fh, 0, bytes(content));
  await fs.release(fh);
}

async function get(fs: FileSystem, path: string): Promise<string> {
  const fh = await fs.open(path, O_RDONLY);
  try {
    return text(await fs.read(fh, 0, 1000));
  } finally {
    await fs.release(fh);
  }
}

/** Three instances on one volume; /t holds x and y, written (and so held exclusively) by the first. */
async function threeInstances(t: { teardown(fn: () => Promise<void>): void }) {
  const v = await freshVolume();
  const mount = (slot: number) => FileSystem.mount(v.dev, { slot, locks: v.locks.client(), commitIntervalMs: 0 });
  const [b, c] = [await mount(1), await mount(2)];
  t.teardown(async () => {
    await b.unmount().catch(() => {});
    await c.unmount().catch(() => {});
    await v.close();
  });
  await v.fs.mkdir('/t', 0o755);
  await put(v.fs, '/t/x', 'old x');
  await put(v.fs, '/t/y', 'old y');
  return { a: v.fs, b, c };
}

/** Starts `write` and says whether it has finished. */
function started(write: Promise<void>) {
  const state = { done: false, promise: write.then(() => void (state.done = true)) };
  return state;
}

test('a cut in two instances: a writer in a third waits until both end, the second joins ahead of it, both read the old content', async (t) => {
  const { a, b, c } = await threeInstances(t);
  const cutA = await a.holdCut('/t', 20_000);
  t.is(cutA.inodes, 3, '/t, x and y (the root is pinned too, as the path to them)');
  const writer = started(put(c, '/t/x', 'new x'));
  await sleep(300);
  t.false(writer.done, 'the writer waits for the cut');
  // The writer waits for x exclusively behind a's shared hold: b's request joins a's hold instead of queuing.
  const cutB = await b.holdCut('/t', 20_000);
  t.is(await get(b, '/t/x'), 'old x');
  t.is(await get(a, '/t/x'), 'old x');
  t.like(a.endCut(cutA.id), { expired: false });
  await sleep(200);
  t.false(writer.done, 'b still holds its cut');
  t.like(b.endCut(cutB.id), { expired: false });
  await writer.promise;
  t.is(await get(a, '/t/x'), 'new x');
  t.is(await get(b, '/t/x'), 'new x');
});

test('a write in the cutting instance itself waits too; writes outside the tree do not', async (t) => {
  const { a, c } = await threeInstances(t);
  await a.mkdir('/elsewhere', 0o755);
  const cut = await a.holdCut('/t', 20_000);
  const own = started(put(a, '/t/y', 'own y'));
  await put(c, '/elsewhere/z', 'free');
  t.is(await get(c, '/elsewhere/z'), 'free');
  await sleep(200);
  t.false(own.done);
  a.endCut(cut.id);
  await own.promise;
  t.is(await get(c, '/t/y'), 'own y');
});

test('a cut past its maximum hold lets go by itself; ending it then says so; an unknown cut is EINVAL', async (t) => {
  const { a, c } = await threeInstances(t);
  const cut = await a.holdCut('/t', 250);
  await put(c, '/t/x', 'after the hold');
  t.like(a.endCut(cut.id), { expired: true });
  t.is(await get(a, '/t/x'), 'after the hold');
  t.throws(() => a.endCut(cut.id), { message: /EINVAL: no cut \d+ is held/ });
  t.throws(() => a.endCut(12345), { message: /no cut 12345/ });
});
