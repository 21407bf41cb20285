import test from 'ava';
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Op, Ring, RING_SLOTS, Status, MAX_SECTORS_PER_REQUEST } from '../hypervisor/abi.js';
import type { PlatformEvent } from '../hypervisor/toolstack.js';
import type { Platform } from '../hypervisor/toolstack.js';
import { bootPlatform, MiB, randomImage, tempDir } from './helpers/platform.js';
import { RawGuest } from './helpers/raw-guest.js';

const VOLUME_SECTORS = (8 * MiB) / 512;

async function setup(t: Parameters<typeof tempDir>[0], readOnly = false) {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 8 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image.path }] });
  const events: PlatformEvent[] = [];
  platform.onEvent((e) => events.push(e));
  const hostile = await platform.createDomain(
    { name: 'hostile', memoryBytes: 1 * MiB, grants: [{ volume: 'shared', readOnly }] },
    { guest: false },
  );
  const raw = new RawGuest(hostile.pages, platform.doorbell);
  const good = await platform.createDomain({ name: 'good', memoryBytes: 8 * MiB, grants: [{ volume: 'shared', readOnly: false }] });
  return { image, platform, raw, good, events };
}

/** The well-behaved domain still reads back what it writes. */
async function goodDomainWorks(t: { true(v: boolean, m?: string): void }, platform: Platform, offset: number) {
  const data = randomBytes(64 * 1024);
  const good = platform.domain('good');
  await good.call({ kind: 'block-write', offset, data });
  const back = await good.call<Uint8Array>({ kind: 'block-read', offset, length: data.length });
  t.true(Buffer.from(back).equals(data), `good domain round-trips at ${offset}`);
}

test('a read-only grant is enforced by the monitor: writes and discards are refused, nothing is written', async (t) => {
  const { image, platform, raw } = await setup(t, true);
  raw.memory.fill(0xab, 0, 4096);
  raw.submit({ id: 1, op: Op.WRITE, sector: 0, count: 8, memOffset: 0 });
  raw.submit({ id: 2, op: Op.DISCARD, sector: 8, count: 8 });
  raw.submit({ id: 3, op: Op.WRITE, sector: 16, count: 8, memOffset: 0, flags: 1 });
  raw.submit({ id: 4, op: Op.READ, sector: 0, count: 8, memOffset: 8192 });
  const rsp = await raw.responses(4);
  t.deepEqual(rsp.map((r) => [r.id, r.status]), [[1, Status.EROFS], [2, Status.EROFS], [3, Status.EROFS], [4, Status.OK]]);
  t.true(Buffer.from(raw.memory.subarray(8192, 8192 + 4096)).equals(image.contents.subarray(0, 4096)), 'read works');
  t.true((await readFile(image.path)).equals(image.contents), 'image unchanged');
  t.is(platform.counters('hostile').ERRORS, 3);
});

test('malformed descriptors get error statuses while the monitor and other domains carry on', async (t) => {
  const { image, platform, raw } = await setup(t);
  const cases: [string, Parameters<RawGuest['submit']>[0], number][] = [
    ['unknown op', { id: 10, op: 99, sector: 0, count: 1 }, Status.EOPNOTSUPP],
    ['negative op', { id: 11, op: -1, sector: 0, count: 1 }, Status.EOPNOTSUPP],
    ['sector past the end', { id: 12, op: Op.READ, sector: VOLUME_SECTORS, count: 1 }, Status.ERANGE],
    ['transfer crossing the end', { id: 13, op: Op.WRITE, sector: VOLUME_SECTORS - 1, count: 2 }, Status.ERANGE],
    ['sector with high word set', { id: 14, op: Op.READ, sector: 0, sectorHi: 0x7fffffff, count: 1 }, Status.ERANGE],
    ['zero count', { id: 15, op: Op.READ, sector: 0, count: 0 }, Status.EINVAL],
    ['huge count', { id: 16, op: Op.READ, sector: 0, count: -1 }, Status.EINVAL],
    ['count one over the limit', { id: 17, op: Op.READ, sector: 0, count: MAX_SECTORS_PER_REQUEST + 1 }, Status.EINVAL],
    ['buffer outside guest memory', { id: 18, op: Op.READ, sector: 0, count: 8, memOffset: 1 * MiB - 2048 }, Status.EFAULT],
    ['buffer offset near 4 GiB', { id: 19, op: Op.WRITE, sector: 0, count: 8, memOffset: -4096 }, Status.EFAULT],
    ['unknown vbd', { id: 20, op: Op.READ, sector: 0, count: 1, vbd: 5 }, Status.ENODEV],
    ['op far beyond the table', { id: 21, op: 1234567, sector: 0, count: 0 }, Status.EOPNOTSUPP],
    ['overlapping buffers are the guest\'s own business', { id: 22, op: Op.READ, sector: 0, count: 16, memOffset: 4096 }, Status.OK],
    ['second overlapping read', { id: 23, op: Op.READ, sector: 8, count: 16, memOffset: 4096 }, Status.OK],
  ];
  for (const [, req] of cases) raw.submit(req);
  const responses = await raw.responses(cases.length);
  for (const [i, [what, req, status]] of cases.entries()) {
    t.is(responses[i].id, req.id, what);
    t.is(responses[i].status, status, what);
  }
  t.true((await readFile(image.path)).equals(image.contents), 'no malformed request wrote anything');
  await goodDomainWorks(t, platform, 2 * MiB);
  // The hostile domain's ring still works for well-formed requests.
  raw.submit({ id: 99, op: Op.READ, sector: 0, count: 1, memOffset: 0 });
  t.deepEqual((await raw.responses(1)).map((r) => r.status), [Status.OK]);
});

test('garbage ring indices shut only that domain\'s ring', async (t) => {
  const { platform, raw, events } = await setup(t);
  raw.prod = (raw.prod + RING_SLOTS * 1000 + 7) >>> 0;
  raw.submit({ id: 1, op: Op.READ, sector: 0, count: 1 });
  // The flag is shared memory, the event a message: wait for both (they may be seen in either order here).
  const reported = () => events.some((e) => e.type === 'ring-fault' && e.domain === 'hostile');
  const deadline = Date.now() + 5000;
  while ((Atomics.load(raw.ring, Ring.FAULT) === 0 || !reported()) && Date.now() < deadline) await sleep(2);
  t.is(Atomics.load(raw.ring, Ring.FAULT), Status.ESHUTDOWN);
  t.true(reported());
  await goodDomainWorks(t, platform, 1 * MiB);
});

test('contiguous requests of one batch are merged into one transfer; a bad one in between fails alone', async (t) => {
  const { image, platform, raw } = await setup(t);
  const chunk = (i: number) => raw.memory.subarray(i * 4096, (i + 1) * 4096);
  const data = Array.from({ length: 8 }, () => randomBytes(4096));
  data.forEach((d, i) => chunk(i).set(d));
  const FUA = 1;
  // Writes 0-2 merge; 3 points outside the domain's memory; 4 stands alone before 5 (FUA); 6-7 merge.
  raw.submitBatch(data.map((_, i) => ({ id: i, op: Op.WRITE, sector: 100 + 8 * i, count: 8, memOffset: i === 3 ? 1 * MiB : i * 4096, flags: i === 5 ? FUA : 0 })));
  const written = await raw.responses(8);
  t.deepEqual(written.map((r) => r.status), data.map((_, i) => (i === 3 ? Status.EFAULT : Status.OK)));
  const expected = (i: number) => (i === 3 ? image.contents.subarray((100 + 24) * 512, (100 + 32) * 512) : data[i]);
  const onDisk = await readFile(image.path);
  for (let i = 0; i < 8; i++) t.true(onDisk.subarray((100 + 8 * i) * 512, (108 + 8 * i) * 512).equals(expected(i)), `image at write ${i}`);
  // Eight contiguous reads merge into one.
  raw.submitBatch(data.map((_, i) => ({ id: 10 + i, op: Op.READ, sector: 100 + 8 * i, count: 8, memOffset: 64 * 1024 + i * 4096 })));
  const read = await raw.responses(8);
  t.deepEqual(read.map((r) => [r.id, r.status]), data.map((_, i) => [10 + i, Status.OK]));
  for (let i = 0; i < 8; i++) t.true(Buffer.from(chunk(16 + i)).equals(expected(i)), `read ${i}`);
  t.is(platform.counters('hostile').MERGED, 2 + 1 + 7);
});

test('FUA writes of one batch share one flush, each answered once it is durable; what follows them sees them', async (t) => {
  const { platform, raw } = await setup(t);
  const FUA = 1;
  const data = Array.from({ length: 3 }, () => randomBytes(4096));
  data.forEach((d, i) => raw.memory.set(d, i * 4096));
  const flushes = platform.counters('hostile').FLUSHES;
  // Three FUA writes (not contiguous: none merges), then a read of the first into other memory.
  raw.submitBatch([
    ...data.map((_, i) => ({ id: i, op: Op.WRITE, sector: 400 + 16 * i, count: 8, memOffset: i * 4096, flags: FUA })),
    { id: 3, op: Op.READ, sector: 400, count: 8, memOffset: 64 * 1024 },
  ]);
  const answered = await raw.responses(4);
  t.deepEqual(answered.map((r) => [r.id, r.status]).sort(), [[0, Status.OK], [1, Status.OK], [2, Status.OK], [3, Status.OK]]);
  t.true(Buffer.from(raw.memory.subarray(64 * 1024, 68 * 1024)).equals(data[0]));
  t.is(platform.counters('hostile').FLUSHES - flushes, 1, 'one flush for the three FUA writes');
});

test('the monitor honours the event index: a guest that asks for its interrupt at the 16th of 32 responses gets one', async (t) => {
  // What the guest kernel's batched sleep relies on (one interrupt per half queue, not one per completion).
  const { platform, raw } = await setup(t);
  Atomics.store(raw.ring, Ring.RSP_EVENT, (raw.cons + 16) | 0);
  const read = (i: number) => raw.submit({ id: i, op: Op.READ, sector: i * 8, count: 8, memOffset: i * 4096 });
  for (let i = 0; i < 15; i++) read(i);
  const first = await raw.responses(15);
  t.is(platform.counters('hostile').VIRQS, 0, 'no interrupt before the 16th response');
  for (let i = 15; i < 32; i++) read(i);
  const rest = await raw.responses(17);
  t.deepEqual([...first, ...rest].map((r) => r.status), new Array<number>(32).fill(Status.OK));
  t.is(platform.counters('hostile').VIRQS, 1);
});

test('a flood of doorbells and full rings from one domain does not starve another', async (t) => {
  const { platform, raw } = await setup(t);
  let flooding = true;
  const flood = (async () => {
    let id = 0;
    while (flooding) {
      for (let i = 0; i < RING_SLOTS; i++) raw.submit({ id: id++, op: Op.READ, sector: i, count: 1, memOffset: 0 });
      for (let i = 0; i < 1000; i++) raw.ringDoorbell();
      await raw.responses(RING_SLOTS);
      await sleep(0);
    }
  })();
  for (let i = 0; i < 20; i++) await goodDomainWorks(t, platform, 4 * MiB + i * 65536);
  flooding = false;
  await flood;
  t.true(platform.counters('hostile').REQUESTS > RING_SLOTS, 'the flood was served too');
});

test('a guest killed mid-I/O does not hurt the others, and the platform can boot a new domain', async (t) => {
  const { platform, events } = await setup(t);
  const victim = await platform.createDomain({ name: 'victim', memoryBytes: 8 * MiB, grants: [{ volume: 'shared', readOnly: false }] });
  const busy = victim.call({
    kind: 'block-workload',
    workload: { pattern: 'rand', op: 'write', blockSize: 65536, queueDepth: 32, regionOffset: 6 * MiB, regionBytes: 2 * MiB, durationMs: 5000, seed: 3 },
  });
  const good = goodDomainWorks(t, platform, 0);
  await sleep(100);
  t.true(platform.counters('victim').WRITE_BYTES > 0, 'victim was writing when killed');
  await platform.killDomain('victim');
  await t.throwsAsync(busy, { message: /victim/ });
  await good;
  t.true(events.some((e) => e.type === 'domain-exit' && e.domain === 'victim'));
  t.false(platform.listDomains().some((d) => d.name === 'victim'));
  for (let i = 0; i < 5; i++) await goodDomainWorks(t, platform, i * 65536);
  const again = await platform.createDomain({ name: 'victim', memoryBytes: 4 * MiB, grants: [{ volume: 'shared', readOnly: false }] });
  const data = randomBytes(4096);
  await again.call({ kind: 'block-write', offset: 512 * 1024, data });
  t.true(Buffer.from(await again.call<Uint8Array>({ kind: 'block-read', offset: 512 * 1024, length: 4096 })).equals(data));
});

test('a backend error reaches the guest as EIO and the event log with its errno, inline and merged', async (t) => {
  // A directory as a read-only volume: it opens, has a size (its 4 KiB block on ext4), and every pread fails
  // with EISDIR, a real error from the kernel.
  const dir = await tempDir(t);
  const platform = await bootPlatform(t, { volumes: [{ name: 'odd', path: dir, readOnly: true }] });
  const events: PlatformEvent[] = [];
  platform.onEvent((e) => events.push(e));
  const handle = await platform.createDomain({ name: 'reader', memoryBytes: 1 * MiB, grants: [{ volume: 'odd', readOnly: true }] }, { guest: false });
  const raw = new RawGuest(handle.pages, platform.doorbell);
  raw.submit({ id: 1, op: Op.VOLINFO });
  const [info] = await raw.responses(1);
  t.true(info.status === Status.OK && info.value > 1, `the directory has ${info.value} sectors`);
  raw.submit({ id: 2, op: Op.READ, sector: 0, count: 1, memOffset: 0 });
  t.deepEqual((await raw.responses(1)).map((r) => [r.id, r.status]), [[2, Status.EIO]]);
  const reported = () => events.filter((e) => e.type === 'io-error' && e.domain === 'reader');
  const deadline = Date.now() + 5000;
  while (reported().length === 0 && Date.now() < deadline) await sleep(2);
  t.regex(reported()[0]?.detail ?? '', /^read of 1 sector\(s\) at 0: EISDIR \(errno 21\)/);
  // Two contiguous reads in one batch are one vectored transfer: both fail, and the event log is not flooded.
  raw.submitBatch([{ id: 3, op: Op.READ, sector: 0, count: 1, memOffset: 0 }, { id: 4, op: Op.READ, sector: 1, count: 1, memOffset: 512 }]);
  t.deepEqual((await raw.responses(2)).map((r) => [r.id, r.status]), [[3, Status.EIO], [4, Status.EIO]]);
  t.is(platform.counters('reader').MERGED, 1);
  t.is(platform.counters('reader').ERRORS, 3);
  t.is(reported().length, 1, 'one event a second per domain; the next one counts the rest');
});
