/**
 * fallocate in the filesystem: allocation fills holes with zeros (and grows the file unless KEEP_SIZE), PUNCH_HOLE
 * frees whole blocks and zeros the edges, ZERO_RANGE leaves zeros allocated; sparse files stay sparse elsewhere.
 */
import test from 'ava';
import { fsck } from '../fs/fsck.js';
import { BLOCK_SIZE } from '../fs/layout.js';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, O_RDONLY } from '../fs/vfs.js';
import { errno, freshVolume, patternBytes } from './fs-helpers.js';

const B = BLOCK_SIZE;

test('allocate, keep size, punch a hole, zero a range; errnos; fsck clean', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  const fh = await fs.create('/f', 0o644);
  const blocks = async () => (await fs.getattr('/f')).blocks / (B / 512);
  // A sparse file: data in block 0 and block 9, holes between.
  await fs.write(fh, 0, patternBytes(B, 1));
  await fs.write(fh, 9 * B, patternBytes(B, 2));
  t.is(await blocks(), 2);
  // Allocate blocks 2..3 only: the file stays sparse elsewhere.
  await fs.fallocate(fh, 0, 2 * B, 2 * B);
  t.is(await blocks(), 4);
  t.is((await fs.getattr('/f')).size, 10 * B);
  // Growing: mode 0 past the end extends the size; KEEP_SIZE does not (and allocates nothing past the end).
  await fs.fallocate(fh, 0, 10 * B, B + 100);
  t.is((await fs.getattr('/f')).size, 11 * B + 100);
  t.is(await blocks(), 6);
  await fs.fallocate(fh, FALLOC_FL_KEEP_SIZE, 11 * B, 10 * B);
  t.is((await fs.getattr('/f')).size, 11 * B + 100);
  t.is(await blocks(), 6);
  t.true((await fs.read(fh, 10 * B, B + 100)).every((b) => b === 0), 'allocated blocks read as zeros');
  // Punch from the middle of block 0 to the middle of block 9: blocks 1..8 go, the edges are zeroed.
  await fs.fallocate(fh, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 9 * B - 50);
  t.is(await blocks(), 4, 'blocks 0, 9, 10 and 11 are left');
  const data = await fs.read(fh, 0, 11 * B + 100);
  t.deepEqual(data.subarray(0, 100), patternBytes(B, 1).subarray(0, 100));
  t.true(data.subarray(100, 9 * B + 50).every((b) => b === 0));
  t.deepEqual(data.subarray(9 * B + 50, 10 * B), patternBytes(B, 2).subarray(50));
  t.is((await fs.getattr('/f')).size, 11 * B + 100, 'punching keeps the size');
  // ZERO_RANGE: zeros, allocated.
  await fs.fallocate(fh, FALLOC_FL_ZERO_RANGE, 3 * B, 2 * B);
  t.is(await blocks(), 6);
  t.true((await fs.read(fh, 3 * B, 2 * B)).every((b) => b === 0));
  await fs.fallocate(fh, FALLOC_FL_ZERO_RANGE, 0, B);
  t.true((await fs.read(fh, 0, B)).every((b) => b === 0), 'ZERO_RANGE zeros data too');
  t.is(await errno(fs.fallocate(fh, FALLOC_FL_PUNCH_HOLE, 0, B)), 'EOPNOTSUPP', 'PUNCH_HOLE needs KEEP_SIZE');
  t.is(await errno(fs.fallocate(fh, 0x08, 0, B)), 'EOPNOTSUPP', 'COLLAPSE_RANGE');
  t.is(await errno(fs.fallocate(fh, 0, -1, B)), 'EINVAL');
  t.is(await errno(fs.fallocate(fh, 0, 0, 0)), 'EINVAL');
  const ro = await fs.open('/f', O_RDONLY);
  t.is(await errno(fs.fallocate(ro, 0, 0, B)), 'EBADF');
  await fs.release(ro);
  await fs.release(fh);
  await fs.sync();
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});
