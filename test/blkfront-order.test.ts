import test from 'ava';
import { readFile } from 'node:fs/promises';
import { RING_SLOTS } from '../hypervisor/abi.js';
import { blkfrontRig } from './helpers/blkfront-rig.js';

const B = 4096;

/**
 * The guest's block driver is an ordered device (fs/block-device.ts OrderedDevice): the journal issues a commit's
 * steps, and a lock's release, without waiting between them. So a request issued later must never reach the ring
 * before one issued earlier, even when the earlier one waited for a free slot and the later one found a slot
 * freed in between (here: a write issued from the completion of the first write, while the ring is full).
 */
test('requests reach the ring in the order they are issued, when the earlier ones waited for a free slot too', async (t) => {
  const { image, front, serveEvery } = await blkfrontRig(t, 16 * B);
  // The monitor's thread, played by a timer: a few requests per turn, so slots free up while others wait.
  serveEvery();

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
