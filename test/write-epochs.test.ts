import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { DOORBELL_WORDS } from '../hypervisor/abi.js';
import { BackgroundFlush } from '../hypervisor/background-flush.js';
import { RawImageBackend } from '../hypervisor/raw-image-backend.js';
import { WriteEpochs } from '../hypervisor/write-epochs.js';
import { randomImage, tempDir } from './helpers/platform.js';

const B = 4096;

async function orderedImage(t: ExecutionContext, heldLimit?: number) {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 16 * B);
  const flusher = new BackgroundFlush(image.path, new SharedArrayBuffer(DOORBELL_WORDS * 4));
  const epochs = new WriteEpochs(new RawImageBackend(image.path), flusher, heldLimit);
  t.teardown(() => epochs.close());
  /** Block `n` as the image file holds it (what a crash of the whole process would keep). */
  const onImage = async (n: number) => (await readFile(image.path)).subarray(n * B, (n + 1) * B);
  const read = (n: number) => {
    const into = new Uint8Array(B);
    epochs.read(n * B, into);
    return Buffer.from(into);
  };
  return { image, flusher, epochs, onImage, read };
}

/** Runs progress() until nothing is held (the monitor's loop does it when its doorbell rings). */
async function drained(epochs: WriteEpochs): Promise<void> {
  while (epochs.holding) {
    epochs.progress();
    await sleep(1);
  }
}

test('a barrier write and every write after it stay off the image until the flush of what came before completed', async (t) => {
  const { image, flusher, epochs, onImage, read } = await orderedImage(t);
  const [a, b, c, d] = [randomBytes(B), randomBytes(B), randomBytes(B), randomBytes(B)];
  epochs.write(0, a);
  flusher.hold(true); // the image's fdatasync cannot complete yet
  epochs.writeBarrier(1 * B, b);
  epochs.write(2 * B, c);
  epochs.writeBarrier(1 * B, d); // a second epoch, over the block the first one holds
  t.true(epochs.holding);
  // Taken (readable by everyone) but not in the image: the image holds only what came before the barrier.
  t.true((await onImage(0)).equals(a));
  t.true((await onImage(1)).equals(image.contents.subarray(B, 2 * B)));
  t.true((await onImage(2)).equals(image.contents.subarray(2 * B, 3 * B)));
  t.true(read(1).equals(d));
  t.true(read(2).equals(c));
  // A read across held and unheld blocks (vectored, as merged requests) sees the held copies too.
  const views = [new Uint8Array(B), new Uint8Array(2 * B)];
  epochs.readv(0, views);
  t.true(Buffer.concat(views).equals(Buffer.concat([a, d, c])));
  t.false(epochs.progress(), 'nothing may reach the image before its flush completed');
  flusher.hold(false);
  await drained(epochs);
  t.true((await onImage(1)).equals(d));
  t.true((await onImage(2)).equals(c));
  t.is(epochs.stats.barriers, 2);
});

test('flush writes every held epoch to the image, in order, and returns when it is durable', async (t) => {
  const { epochs, onImage } = await orderedImage(t);
  const writes = Array.from({ length: 6 }, () => randomBytes(B));
  writes.forEach((data, i) => (i % 2 === 0 ? epochs.writeBarrier(3 * B, data) : epochs.write(4 * B, data)));
  epochs.flush();
  t.false(epochs.holding);
  t.true((await onImage(3)).equals(writes[4]));
  t.true((await onImage(4)).equals(writes[5]));
});

test('past the held-bytes limit a write waits for the flushes ahead of it instead of growing the held memory', async (t) => {
  const { epochs, onImage } = await orderedImage(t, 2 * B);
  const [a, b, c] = [randomBytes(B), randomBytes(B), randomBytes(B)];
  epochs.writeBarrier(5 * B, a);
  epochs.write(6 * B, b);
  t.is(epochs.stats.waits, 0, 'within the limit: held, nobody waits');
  epochs.write(7 * B, c); // over the limit: blocks until the flush completed, then writes everything out
  t.false(epochs.holding);
  t.is(epochs.stats.waits, 1);
  t.true((await onImage(5)).equals(a));
  t.true((await onImage(7)).equals(c));
});

test('without a background flusher a barrier is a flush, then the write', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 4 * B);
  const epochs = new WriteEpochs(new RawImageBackend(image.path), undefined);
  t.teardown(() => epochs.close());
  const a = randomBytes(B);
  epochs.writeBarrier(B, a);
  t.false(epochs.holding);
  t.true((await readFile(image.path)).subarray(B, 2 * B).equals(a));
});
