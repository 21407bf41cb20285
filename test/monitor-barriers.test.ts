import test from 'ava';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { DOORBELL_WORDS, Op, REQ_BARRIER, RING_BYTES, SECTOR, Status, VIC_WORDS } from '../hypervisor/abi.js';
import { BackgroundFlush } from '../hypervisor/background-flush.js';
import { createStatsBuffer, DomainStats } from '../hypervisor/domain-stats.js';
import { Monitor, POOL_MIN_BYTES } from '../hypervisor/monitor.js';
import { RawImageBackend } from '../hypervisor/raw-image-backend.js';
import { WriteEpochs } from '../hypervisor/write-epochs.js';
import { randomImage, tempDir } from './helpers/platform.js';
import { RawGuest } from './helpers/raw-guest.js';

const B = 4096;
const S = B / SECTOR;

test('through the ring: a barrier write is answered at once, held off the image until the flush, and read back by every read path', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 2 * POOL_MIN_BYTES + 16 * B);
  const doorbell = new SharedArrayBuffer(DOORBELL_WORDS * 4);
  const flusher = new BackgroundFlush(image.path, doorbell);
  const backend = new WriteEpochs(new RawImageBackend(image.path), flusher);
  // One I/O thread's worth of offloading (its jobs are run here by runQueued), so big reads may be handed over.
  const stats = new DomainStats(createStatsBuffer());
  const monitor = new Monitor(stats, () => {}, { ioThreads: 1 });
  monitor.addVolume({ id: 0, name: 'v', backend });
  const pages = { ring: new SharedArrayBuffer(RING_BYTES), vic: new SharedArrayBuffer(VIC_WORDS * 4), memory: new SharedArrayBuffer(4 * POOL_MIN_BYTES) };
  monitor.addDomain(1, 'd', pages, [{ volumeId: 0, readOnly: false }]);
  const guest = new RawGuest(pages, doorbell);
  t.teardown(() => {
    flusher.hold(false);
    backend.close();
  });
  const serve = () => {
    monitor.drain();
    while (monitor.runQueued());
  };

  const [a, b, c] = [randomBytes(B), randomBytes(B), randomBytes(B)];
  guest.memory.set(a, 0);
  guest.memory.set(b, B);
  guest.memory.set(c, 2 * B);
  flusher.hold(true);
  guest.submitBatch([
    { id: 1, op: Op.WRITE, sector: 0, count: S, memOffset: 0 },
    { id: 2, op: Op.WRITE, sector: S, count: S, memOffset: B, flags: REQ_BARRIER },
    { id: 3, op: Op.WRITE, sector: 2 * S, count: S, memOffset: 2 * B },
  ]);
  serve();
  t.deepEqual((await guest.responses(3)).map((r) => r.status), [Status.OK, Status.OK, Status.OK], 'answered without the flush');
  const onImage = await readFile(image.path);
  t.true(onImage.subarray(0, B).equals(a), 'the write before the barrier is in the image');
  t.true(onImage.subarray(B, 2 * B).equals(image.contents.subarray(B, 2 * B)), 'the barrier write waits for the flush');
  t.true(onImage.subarray(2 * B, 3 * B).equals(image.contents.subarray(2 * B, 3 * B)), 'so does every write after it');

  // Read back: one small read, a merged run of small reads, and big reads with a backlog, which go to the I/O
  // threads when nothing is held; those read the image through descriptors of their own, so while writes are
  // held the monitor must serve them itself.
  const big = POOL_MIN_BYTES / SECTOR;
  const at = 4 * B;
  guest.memory.fill(0);
  guest.submitBatch([
    { id: 4, op: Op.READ, sector: S, count: S, memOffset: at },
    { id: 5, op: Op.READ, sector: 0, count: S, memOffset: at + B },
    { id: 6, op: Op.READ, sector: S, count: S, memOffset: at + 2 * B },
    { id: 7, op: Op.READ, sector: 2 * S, count: S, memOffset: at + 3 * B },
    { id: 8, op: Op.READ, sector: 0, count: big, memOffset: POOL_MIN_BYTES },
    { id: 9, op: Op.READ, sector: 0, count: big, memOffset: 2 * POOL_MIN_BYTES },
  ]);
  serve();
  t.true((await guest.responses(6)).every((r) => r.status === Status.OK));
  const mem = Buffer.from(guest.memory.buffer);
  t.true(mem.subarray(at, at + B).equals(b));
  t.true(mem.subarray(at + B, at + 4 * B).equals(Buffer.concat([a, b, c])));
  t.is(stats.read(1).OFFLOADED, 0, 'no read handed to the I/O threads while writes are held');
  for (const base of [POOL_MIN_BYTES, 2 * POOL_MIN_BYTES]) {
    t.true(mem.subarray(base, base + 3 * B).equals(Buffer.concat([a, b, c])), `big read at ${base}`);
  }

  flusher.hold(false);
  while (backend.holding) {
    serve();
    await sleep(1);
  }
  const after = await readFile(image.path);
  t.true(after.subarray(B, 3 * B).equals(Buffer.concat([b, c])), 'once the flush completed, the held writes are in the image');
  // Nothing held: the same big reads go to the I/O threads again.
  guest.submitBatch([
    { id: 10, op: Op.READ, sector: 0, count: big, memOffset: POOL_MIN_BYTES },
    { id: 11, op: Op.READ, sector: 0, count: big, memOffset: 2 * POOL_MIN_BYTES },
  ]);
  serve();
  t.true((await guest.responses(2)).every((r) => r.status === Status.OK));
  t.true(stats.read(1).OFFLOADED > 0);
});
