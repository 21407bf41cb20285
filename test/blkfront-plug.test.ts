import test from 'ava';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { blkfrontRig } from './helpers/blkfront-rig.js';

const B = 4096;

/**
 * Background writes (a file's data writes, which nobody waits for when they are issued) are plugged: published
 * in the ring at once, but the doorbell rings for them only with the next request that is not in the background,
 * an unplug, the eighth of them or after a millisecond. Here the monitor is asleep (it asked to be rung for the
 * next request) and drains only when the test says so.
 */
test('background writes ring the doorbell once for a run of them, and none is left unsent', async (t) => {
  const { image, monitor, kernel, front } = await blkfrontRig(t, 64 * B);
  const rang = () => kernel.counters.hypercalls;
  const asleep = () => {
    monitor.drain();
    monitor.armDoorbells();
  };
  const block = (i: number) => front.allocBuffer(B).fill(i);

  // Three background writes: published, not rung for. A flush rings once for all four.
  asleep();
  let before = rang();
  const writes = [1, 2, 3].map((i) => front.write(i * B, block(i), { background: true }));
  t.is(rang(), before, 'no doorbell for background writes alone');
  const flushed = front.flush();
  t.is(rang(), before + 1, 'one doorbell for the three writes and the flush');
  monitor.drain();
  await Promise.all([...writes, flushed]);

  // The eighth background write in a row rings at once.
  asleep();
  before = rang();
  const eight = Array.from({ length: 8 }, (_, i) => front.write((10 + i) * B, block(10 + i), { background: true }));
  t.is(rang(), before + 1, 'one doorbell for eight background writes');
  monitor.drain();
  await Promise.all(eight);

  // A lone background write is rung for after a millisecond, without anything else; unplug() rings at once.
  asleep();
  before = rang();
  const lone = front.write(30 * B, block(30), { background: true });
  await sleep(20);
  t.is(rang(), before + 1, 'the lone background write was rung for after the plug time');
  monitor.drain();
  await lone;
  asleep();
  before = rang();
  const unplugged = front.write(31 * B, block(31), { background: true });
  front.unplug();
  t.is(rang(), before + 1, 'unplug rings at once');
  monitor.drain();
  await unplugged;

  const onImage = await readFile(image.path);
  for (const i of [1, 2, 3, 10, 17, 30, 31]) t.is(onImage[i * B], i, `block ${i} was written`);
});
