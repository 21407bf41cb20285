/** The block cache's undo: a failed operation gets back exactly what its blocks held, with undo copies reused. */
import test from 'ava';
import { BlockCache } from '../fs/block-cache.js';
import type { BlockDevice } from '../fs/block-device.js';
import { BLOCK_SIZE, BlockType } from '../fs/layout.js';

/** The cache only reads through a device on a miss; these blocks are all made in memory. */
const noDevice = { read: async () => {}, write: async () => {} } as unknown as BlockDevice;

/** Block `block`, made in the cache (dirty, then clean) with every byte past its header set to `fill`. */
function made(cache: BlockCache, block: number, fill: number): void {
  cache.beginOp();
  cache.create(block, BlockType.Inode, block).fill(fill, 64);
  cache.endOp(false);
}

async function change(cache: BlockCache, block: number, fill: number): Promise<void> {
  (await cache.getForWrite(block, BlockType.Inode, block)).fill(fill, 64);
}

const byteOf = async (cache: BlockCache, block: number) => (await cache.get(block, BlockType.Inode, block))[BLOCK_SIZE - 1];

test('operations that fail after others succeeded get back their own blocks, not a reused copy of another', async (t) => {
  const cache = new BlockCache(noDevice);
  made(cache, 1, 0x11);
  made(cache, 2, 0x22);
  cache.markAllClean();

  // A success leaves its undo copies (block 1 as it was: 0x11) to be reused.
  cache.beginOp();
  await change(cache, 1, 0xaa);
  cache.endOp(false);
  t.is(await byteOf(cache, 1), 0xaa);

  // A failure of an operation on block 2 restores 0x22 from a reused copy, whatever that copy held before.
  cache.beginOp();
  await change(cache, 2, 0xbb);
  cache.endOp(true);
  t.is(await byteOf(cache, 2), 0x22);
  t.is(await byteOf(cache, 1), 0xaa);

  // Both blocks changed by one operation and undone: each gets its own previous bytes back, and the entries the
  // undo put back are not shared with any copy reused since.
  for (let round = 0; round < 3; round++) {
    cache.beginOp();
    await change(cache, 1, 0xc0 + round);
    await change(cache, 2, 0xd0 + round);
    cache.endOp(round !== 1);
  }
  t.is(await byteOf(cache, 1), 0xc1);
  t.is(await byteOf(cache, 2), 0xd1);
  cache.beginOp();
  await change(cache, 2, 0xee);
  cache.endOp(false);
  cache.beginOp();
  await change(cache, 1, 0xff);
  cache.endOp(true);
  t.is(await byteOf(cache, 1), 0xc1);
  t.is(await byteOf(cache, 2), 0xee);
});
