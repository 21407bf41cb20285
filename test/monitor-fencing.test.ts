/**
 * Fencing, as GFS2 and OCFS2 fence an unresponsive node: a domain that keeps a cluster lock past its revoke
 * deadline is fenced (its ring stops being served, the toolstack's crash path stops it and releases its locks),
 * and a read-only grant can never take a lock exclusively. Real monitor, real guest kernels and filesystems;
 * the offender is a raw guest that writes its descriptors by hand and never reads its revoke ring.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { LOCK_EXCLUSIVE, LOCK_SHARED, Op, REQ_TRY, Ring, Status, Vic } from '../hypervisor/abi.js';
import { domainVfs } from '../hypervisor/domain-vfs.js';
import type { PlatformEvent } from '../hypervisor/toolstack.js';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { readSuperblock } from '../fs/layout.js';
import { O_CREAT, O_RDONLY, O_RDWR } from '../fs/vfs.js';
import { join } from 'node:path';
import { StoredPlatform } from '../hypervisor/platform-boot.js';
import type { NewEvent } from '../hypervisor/platform-store.js';
import { bootPlatform, MiB, tempDir } from './helpers/platform.js';
import { RawGuest } from './helpers/raw-guest.js';
import { formattedImage, fsckImage } from './helpers/volume.js';

type Test = Parameters<typeof tempDir>[0];
const DEADLINE_MS = 1000;

async function rootInode(image: string): Promise<number> {
  const dev = await FileBlockDevice.open(image, { readOnly: true });
  try {
    return (await readSuperblock(dev)).rootIno;
  } finally {
    await dev.close();
  }
}

/** Polls `cond` (a wait for other threads, not a timing assertion: only a hang ends it). */
async function waitFor(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

async function setup(t: Test) {
  const dir = await tempDir(t);
  const image = await formattedImage(dir, 32 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image }], revokeDeadlineMs: DEADLINE_MS });
  const events: PlatformEvent[] = [];
  platform.onEvent((e) => events.push(e));
  const boot = (name: string, slot: number) =>
    platform.createDomain({ name, memoryBytes: 32 * MiB, grants: [{ volume: 'shared', readOnly: false }], filesystem: { slot } });
  const rawDomain = async (name: string, readOnly: boolean) => {
    const handle = await platform.createDomain({ name, memoryBytes: 1 * MiB, grants: [{ volume: 'shared', readOnly }] }, { guest: false });
    return { handle, raw: new RawGuest(handle.pages, platform.doorbell) };
  };
  return { image, platform, events, boot, rawDomain };
}

async function writeFile(vfs: ReturnType<typeof domainVfs>, path: string, data: Uint8Array, fsync = false): Promise<void> {
  const fh = await vfs.create(path, 0o644, O_RDWR | O_CREAT);
  await vfs.write(fh, 0, data);
  if (fsync) await vfs.fsync(fh, false);
  await vfs.release(fh);
}

async function readFile(vfs: ReturnType<typeof domainVfs>, path: string): Promise<Buffer> {
  const fh = await vfs.open(path, O_RDONLY);
  const data = await vfs.read(fh, 0, 1 << 20);
  await vfs.release(fh);
  return Buffer.from(data);
}

test('a holder that ignores a revoke is fenced after its deadline; the other domains carry on', async (t) => {
  const { image, platform, events, boot, rawDomain } = await setup(t);
  const dom1 = await boot('dom1', 0);
  const dom2 = await boot('dom2', 1);
  const vfs1 = domainVfs(dom1);
  const vfs2 = domainVfs(dom2);
  await vfs1.mkdir('/before', 0o755);
  // The hostile domain takes the root directory's lock exclusively (dom1 gives it up when asked) and from then
  // on never looks at its revoke ring.
  const { handle, raw } = await rawDomain('hog', false);
  const root = await rootInode(image);
  raw.submit({ id: 1, op: Op.LOCK, sector: root, count: LOCK_EXCLUSIVE });
  t.deepEqual((await raw.responses(1, 20_000)).map((r) => [r.id, r.status]), [[1, Status.OK]]);
  // dom2 needs the root's lock to create a name in it: it waits for the fence, then goes on.
  const data = randomBytes(10_000);
  const created = writeFile(vfs2, '/after', data);
  await waitFor('the revoke to the hog', () => (Atomics.load(raw.vic, Vic.REVOKE_PROD) >>> 0) > 0);
  await created;
  const fence = events.find((e) => e.type === 'fence');
  t.is(fence?.domain, 'hog');
  t.regex((fence as { detail: string }).detail, new RegExp(`^did not answer the revoke of lock ${root} wanted (shared|exclusive) within ${DEADLINE_MS} ms$`));
  t.true(events.some((e) => e.type === 'domain-exit' && e.domain === 'hog' && /^fenced: /.test(e.detail)), 'the crash path ran');
  await handle.cleanedUp;
  t.false(platform.listDomains().some((d) => d.name === 'hog'));
  // Fenced means no more service: the ring is shut and a request on it is never answered.
  t.is(Atomics.load(raw.ring, Ring.FAULT), Status.ESHUTDOWN);
  raw.submit({ id: 2, op: Op.VOLINFO });
  await t.throwsAsync(raw.responses(1, 300), { message: /only 0 of 1/ });
  // Both filesystem domains see each other's work, and the volume is consistent.
  t.true((await readFile(vfs1, '/after')).equals(data));
  await vfs1.mkdir('/later', 0o755);
  t.deepEqual((await vfs2.readdir("/")).filter((n) => !n.startsWith('.')).sort(), ['after', 'before', 'later']);
  await dom1.call({ kind: 'unmount' });
  await dom2.call({ kind: 'unmount' });
  t.deepEqual((await fsckImage(image)).errors, []);
});

test('a holder that answers its revokes in time is never fenced, however long it keeps the lock in all', async (t) => {
  const { platform, events, rawDomain } = await setup(t);
  const a = (await rawDomain('a', false)).raw;
  const b = (await rawDomain('b', false)).raw;
  // Handed back and forth for three deadlines' worth of time; each revoke is answered within half a deadline.
  const until = Date.now() + 3 * DEADLINE_MS;
  let id = 1;
  for (let [holder, waiter] = [a, b]; Date.now() < until; [holder, waiter] = [waiter, holder]) {
    holder.submit({ id: id++, op: Op.LOCK, sector: 77, count: LOCK_EXCLUSIVE });
    await holder.responses(1);
    await sleep(DEADLINE_MS / 4);
    waiter.submit({ id: id++, op: Op.LOCK, sector: 77, count: LOCK_SHARED });
    await holder.revokes(1);
    await sleep(DEADLINE_MS / 4);
    holder.submit({ id: id++, op: Op.UNLOCK, sector: 77, count: 0 });
    await holder.responses(1);
    await waiter.responses(1);
    waiter.submit({ id: id++, op: Op.UNLOCK, sector: 77, count: 0 });
    await waiter.responses(1);
  }
  t.false(events.some((e) => e.type === 'fence'));
  t.deepEqual(platform.listDomains().map((d) => d.name).sort(), ['a', 'b']);
});

test('a read-only grant can never take a lock exclusively, whatever the guest sends; shared is granted', async (t) => {
  const { platform, rawDomain } = await setup(t);
  const { raw: ro } = await rawDomain('reader', true);
  const { raw: rw } = await rawDomain('writer', false);
  ro.submitBatch([
    { id: 1, op: Op.LOCK, sector: 5, count: LOCK_EXCLUSIVE },
    { id: 2, op: Op.LOCK, sector: 5, count: LOCK_EXCLUSIVE, flags: REQ_TRY },
    { id: 3, op: Op.LOCK, sector: 6, count: LOCK_SHARED },
  ]);
  t.deepEqual((await ro.responses(3)).map((r) => [r.id, r.status]), [[1, Status.EROFS], [2, Status.EROFS], [3, Status.OK]]);
  // Nothing was queued for lock 5: a writer gets it at once, and the reader's shared hold of 6 is revoked for it.
  rw.submit({ id: 1, op: Op.LOCK, sector: 5, count: LOCK_EXCLUSIVE, flags: REQ_TRY });
  t.deepEqual((await rw.responses(1)).map((r) => [r.id, r.status]), [[1, Status.OK]]);
  rw.submit({ id: 2, op: Op.LOCK, sector: 6, count: LOCK_EXCLUSIVE });
  t.deepEqual(await ro.revokes(1), [{ vbd: 0, name: 6, wanted: LOCK_EXCLUSIVE }]);
  ro.submit({ id: 4, op: Op.UNLOCK, sector: 6, count: LOCK_SHARED });
  t.deepEqual((await ro.responses(1)).map((r) => [r.id, r.status]), [[4, Status.OK]]);
  t.deepEqual((await rw.responses(1)).map((r) => [r.id, r.status]), [[2, Status.OK]]);
  t.is(platform.counters('reader').ERRORS, 2);
});

test('hvshare up: a real domain whose revokes never reach it is fenced within revokeDeadlineMs from platform.json, replayed and restarted', async (t) => {
  const dir = await tempDir(t, 'hvshare-fence-');
  const events: NewEvent[] = [];
  const running = await StoredPlatform.boot({
    stateDir: join(dir, 'state'),
    onEvent: (e) => events.push(e),
    config: {
      volumes: [{ name: 'shared', image: 'shared.img', size: 32 * MiB, slots: 4 }],
      domains: [1, 2].map((id) => ({ name: `dom${id}`, id, memory: 32, grants: [{ volume: 'shared', mode: 'rw' as const, slot: id - 1 }] })),
      revokeDeadlineMs: DEADLINE_MS,
    },
  });
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await running.shutdown('test teardown');
  });
  const restarted: string[] = [];
  running.onRestart((d) => restarted.push(d.name));
  const dom1 = running.platform.domain('dom1');
  const durable = randomBytes(5000);
  await writeFile(domainVfs(dom1), '/durable', durable, true);
  // dom1's revoke consumer index is garbage from now on (a guest whose memory got scribbled on): the revokes for
  // the locks it caches wait in the monitor and never reach it.
  Atomics.store(new Int32Array(dom1.pages.vic), Vic.REVOKE_CONS, 0x12345678);
  const data = randomBytes(7000);
  await writeFile(domainVfs(running.platform.domain('dom2')), '/from-dom2', data);
  await waitFor('dom1 to come back', () => restarted.includes('dom1'));
  const kinds = events.filter((e) => e.domain === 'dom1' && e.type !== 'revoke').map((e) => e.type);
  t.deepEqual(kinds.slice(kinds.indexOf('fence')), ['fence', 'crash', 'recovery', 'boot', 'info'], kinds.join(', '));
  t.regex(events.find((e) => e.type === 'fence')?.detail ?? '', new RegExp(`^did not answer the revoke of locks? .* within ${DEADLINE_MS} ms$`));
  t.regex(events.find((e) => e.type === 'crash' && e.domain === 'dom1')?.detail ?? '', /^fenced: /);
  t.is(running.store.getDomain('dom1')?.state, 'running');
  // The new dom1 reads what the old one fsynced and what dom2 wrote while it was fenced.
  const vfs1 = domainVfs(running.platform.domain('dom1'));
  t.true((await readFile(vfs1, '/durable')).equals(durable));
  t.true((await readFile(vfs1, '/from-dom2')).equals(data));
  await running.shutdown('test');
  stopped = true;
  t.deepEqual((await fsckImage(join(dir, 'state', 'shared.img'))).errors, []);
});
