import test from 'ava';
import { readFile } from 'node:fs/promises';
import { DOORBELL_WORDS, RING_BYTES, RING_SLOTS, VIC_WORDS } from '../hypervisor/abi.js';
import { createStatsBuffer, DomainStats } from '../hypervisor/domain-stats.js';
import { Monitor } from '../hypervisor/monitor.js';
import { RawImageBackend } from '../hypervisor/raw-image-backend.js';
import { Blkfront } from '../guests/blkfront.js';
import { GuestKernel } from '../guests/kernel.js';
import { GuestMemory } from '../guests/guest-memory.js';
import { randomImage, tempDir } from './helpers/platform.js';

const B = 4096;

/**
 * The guest's block driver is an ordered device (fs/block-device.ts OrderedDevice): the journal issues a commit's
 * steps, and a lock's release, without waiting between them. So a request issued later must never reach the ring
 * before one issued earlier, even when the earlier one waited for a free slot and the later one found a slot
 * freed in between (here: a write issued from the completion of the first write, while the ring is full).
 */
test('requests reach the ring in the order they are issued, when the earlier ones waited for a free slot too', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 16 * B);
  const monitor = new Monitor(new DomainStats(createStatsBuffer()), () => {}, { ioThreads: 0 });
  const backend = new RawImageBackend(image.path);
  monitor.addVolume({ id: 0, name: 'v', backend });
  const pages = { ring: new SharedArrayBuffer(RING_BYTES), vic: new SharedArrayBuffer(VIC_WORDS * 4), memory: new SharedArrayBuffer(4 << 20) };
  monitor.addDomain(1, 'd', pages, [{ volumeId: 0, readOnly: false }]);
  const kernel = new GuestKernel({ vic: pages.vic, doorbell: new SharedArrayBuffer(DOORBELL_WORDS * 4), spinMicros: 0 });
  kernel.start();
  // The monitor's thread, played by a timer: a few requests per turn, so slots free up while others wait.
  const serving = setInterval(() => monitor.drain(), 1);
  t.teardown(async () => {
    clearInterval(serving);
    await kernel.stop();
    backend.close();
  });
  const front = await Blkfront.attach(kernel, new GuestMemory(pages.memory), pages.ring);

  // Twice the ring's slots of writes of one block, each with its own bytes, issued without waiting.
  const count = 2 * RING_SLOTS;
  const buffers = Array.from({ length: count + 1 }, (_, i) => front.allocBuffer(B).fill(i & 255));
  buffers[count].fill(0xee);
  let last: Promise<void> = Promise.resolve();
  const writes = buffers.slice(0, count).map((buffer, i) => {
    const write = front.write(0, buffer);
    // Issued once the first write completed: after every one of the others, so its bytes must stay.
    if (i === 0) write.then(() => (last = front.write(0, buffers[count])));
    return write;
  });
  await Promise.all(writes);
  await last;
  await front.flush();
  const onImage = await readFile(image.path);
  t.is(onImage[0], 0xee, 'the write issued last is what the block holds');
  t.is(onImage[B - 1], 0xee);
});
