import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Op, Status } from '../hypervisor/abi.js';
import { bootPlatform, MiB, randomImage, tempDir } from './helpers/platform.js';
import { RawGuest } from './helpers/raw-guest.js';

// The monitor's I/O threads take large reads when it has a backlog. Force two of them whatever the machine has,
// so the pool is exercised (and contended: more executors than cores) on any runner.
process.env.HVSHARE_IO_THREADS = '2';

const rw = [{ volume: 'shared', readOnly: false }];

test('large reads from several domains at once, through the I/O threads, all return the right bytes', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 32 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image.path }] });
  const domains = await Promise.all(
    ['dom1', 'dom2', 'dom3'].map((name) => platform.createDomain({ name, memoryBytes: 48 * MiB, grants: rw })),
  );
  // Every domain keeps dozens of reads in flight (sizes around the hand-over threshold, unaligned offsets),
  // several rounds, so the monitor always has a backlog to hand over.
  for (let round = 0; round < 3; round++) {
    await Promise.all(
      domains.map((dom, d) =>
        Promise.all(
          Array.from({ length: 24 }, async (_, i) => {
            const length = [256 * 1024, 1 * MiB, 768 * 1024 + 512, 4 * MiB][(i + d + round) % 4];
            const offset = (((i * 7 + d * 13 + round * 5) % 27) * MiB + 512 * i) % (32 * MiB - length);
            const back = await dom.call<Uint8Array>({ kind: 'block-read', offset, length });
            t.true(Buffer.from(back).equals(image.contents.subarray(offset, offset + length)), `${dom.name} read ${length} at ${offset}`);
          }),
        ),
      ),
    );
  }
  for (const dom of domains) t.is(platform.counters(dom.name).ERRORS, 0);
});

test('while two domains are busy, batches of 64 KiB reads are shared with the I/O threads (merged where contiguous) and return the right bytes', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 16 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image.path }] });
  const raw = async (name: string) =>
    new RawGuest((await platform.createDomain({ name, memoryBytes: 2 * MiB, grants: rw }, { guest: false })).pages, platform.doorbell);
  const [reader, other] = [await raw('reader'), await raw('other')];
  // The other domain keeps the monitor busy with batches of small reads meanwhile.
  let busy = true;
  const background = (async () => {
    for (let id = 0; busy; id += 8) {
      other.submitBatch(Array.from({ length: 8 }, (_, i) => ({ id: (id + i) % 64, op: Op.READ, sector: 8 * i, count: 8, memOffset: 4096 * i })));
      await other.responses(8);
    }
  })();
  const CHUNK = 64 * 1024;
  for (let round = 0; round < 60 && platform.counters('reader').OFFLOADED === 0; round++) {
    // 16 reads: 0-11 one contiguous run, 12-15 scattered; each into its own place in the domain's memory.
    const sector = (i: number) => (i < 12 ? (round % 8) * 1536 + i * 128 : 16384 + ((i * 7 + round) % 100) * 128);
    reader.submitBatch(Array.from({ length: 16 }, (_, i) => ({ id: i, op: Op.READ, sector: sector(i), count: 128, memOffset: i * CHUNK })));
    const rsp = await reader.responses(16);
    t.deepEqual(rsp.map((r) => r.status).sort(), new Array<number>(16).fill(Status.OK));
    for (let i = 0; i < 16; i++) {
      const at = sector(i) * 512;
      if (!Buffer.from(reader.memory.subarray(i * CHUNK, (i + 1) * CHUNK)).equals(image.contents.subarray(at, at + CHUNK))) {
        t.fail(`round ${round}: read ${i} at ${at}`);
      }
    }
    await sleep(1);
  }
  busy = false;
  await background;
  t.true(platform.counters('reader').OFFLOADED > 0, 'some reads went to the I/O threads');
  t.true(platform.counters('reader').MERGED > 0, 'contiguous reads were merged');
  t.is(platform.counters('reader').ERRORS, 0);
});

test('writes and large reads mixed across domains stay consistent, and a domain killed mid-I/O is fenced', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 32 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image.path }] });
  const [writer, reader, victim] = await Promise.all(
    ['writer', 'reader', 'victim'].map((name) => platform.createDomain({ name, memoryBytes: 48 * MiB, grants: rw })),
  );
  // The victim floods the queue with large reads and is killed while they are in flight.
  const flood = Promise.all(
    Array.from({ length: 32 }, (_, i) => victim.call({ kind: 'block-read', offset: (i % 16) * MiB, length: 2 * MiB }).catch(() => null)),
  );
  await new Promise((r) => setTimeout(r, 5));
  await platform.killDomain('victim');
  await flood;
  // The writer owns the upper half; the reader reads the lower half (unchanged) while the writes happen.
  const expected = Buffer.from(image.contents);
  const writes = Array.from({ length: 16 }, (_, i) => {
    const data = randomBytes(512 * 1024);
    const offset = 16 * MiB + i * 1024 * 1024;
    data.copy(expected, offset);
    return writer.call({ kind: 'block-write', offset, data });
  });
  const reads = Array.from({ length: 32 }, async (_, i) => {
    const offset = (i % 12) * MiB + 4096;
    const back = await reader.call<Uint8Array>({ kind: 'block-read', offset, length: 1 * MiB });
    t.true(Buffer.from(back).equals(expected.subarray(offset, offset + 1 * MiB)), `lower half at ${offset}`);
  });
  await Promise.all([...writes, ...reads]);
  await writer.call({ kind: 'block-flush' });
  for (let i = 0; i < 16; i++) {
    const offset = 16 * MiB + i * MiB;
    const back = await reader.call<Uint8Array>({ kind: 'block-read', offset, length: 1 * MiB });
    t.true(Buffer.from(back).equals(expected.subarray(offset, offset + 1 * MiB)), `upper half at ${offset}`);
  }
  t.true((await readFile(image.path)).equals(expected));
  // The platform still boots domains after the kill.
  const late = await platform.createDomain({ name: 'late', memoryBytes: 16 * MiB, grants: rw });
  const back = await late.call<Uint8Array>({ kind: 'block-read', offset: 16 * MiB, length: 4 * MiB });
  t.true(Buffer.from(back).equals(expected.subarray(16 * MiB, 20 * MiB)));
});
