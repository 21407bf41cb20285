import test from 'ava';
import { fsck } from '../fs/fsck.js';
import { BLOCK_SIZE, Geometry, readSuperblock } from '../fs/layout.js';
import { mountCheck } from '../fs/mount-check.js';
import { FileSystem } from '../fs/filesystem.js';
import { LocalLockService } from '../fs/local-lock-service.js';
import { LocalVolumeErrors } from '../fs/volume-errors.js';
import { SMALL_FS, errno, freshVolume, patternBytes } from './fs-helpers.js';

const LAZY = { ...SMALL_FS, zeroed: true, eagerGroups: 1 };

async function rawBlock(dev: { read(offset: number, dst: Uint8Array): Promise<void> }, block: number): Promise<Uint8Array> {
  const data = new Uint8Array(BLOCK_SIZE);
  await dev.read(block * BLOCK_SIZE, data);
  return data;
}

test('a lazily initialised volume counts, allocates and checks exactly as one initialised at once', async (t) => {
  const lazy = await freshVolume(32 << 20, LAZY);
  const eager = await freshVolume(32 << 20, SMALL_FS);
  t.teardown(async () => {
    await lazy.close();
    await eager.close();
  });
  const g = new Geometry(await readSuperblock(lazy.dev));
  t.is(g.sb.eagerGroups, 1);
  t.true(g.sb.groupCount >= 4);
  for (let group = 1; group < g.sb.groupCount; group++) {
    t.true((await rawBlock(lazy.dev, g.blockBitmap(group))).every((b) => b === 0), `group ${group}'s bitmap is a hole`);
  }
  // Free counts: statfs and fsck see the holes as the bitmaps they stand for.
  t.deepEqual(await lazy.fs.statfs('/'), await eager.fs.statfs('/'));
  const [lazyReport, eagerReport] = [await fsck(lazy.dev), await fsck(eager.dev)];
  t.deepEqual(lazyReport.errors, []);
  t.deepEqual(lazyReport.stats, eagerReport.stats);
  t.deepEqual(await mountCheck(lazy.dev), []);

  // Fill both volumes the same way until ENOSPC: allocation reaches every lazy group.
  const chunk = patternBytes(256 << 10, 7);
  for (const v of [lazy, eager]) {
    let code = 'OK';
    for (let files = 0; code === 'OK' && files < 200; files++) {
      const fh = await v.fs.create(`/fill${files}`, 0o644);
      for (let i = 0; i < 8 && code === 'OK'; i++) code = await errno(v.fs.write(fh, i * chunk.length, chunk));
      await v.fs.release(fh);
    }
    t.is(code, 'ENOSPC');
    await v.fs.sync();
  }
  for (let group = 1; group < g.sb.groupCount; group++) {
    t.false((await rawBlock(lazy.dev, g.blockBitmap(group))).every((b) => b === 0), `group ${group} was initialised when first used`);
  }
  t.deepEqual(await lazy.fs.statfs('/'), await eager.fs.statfs('/'));
  const full = await fsck(lazy.dev);
  t.deepEqual(full.errors, []);
  t.deepEqual(full.stats, (await fsck(eager.dev)).stats);
  t.true(full.stats.freeBlocks < 64, `${full.stats.freeBlocks} free blocks left`);
  t.deepEqual(await mountCheck(lazy.dev), []);
  t.deepEqual(await lazy.fs.read(await lazy.fs.open('/fill3', 0), 0, chunk.length), chunk);
});

test('a used group whose bitmap became a hole is not taken for a fresh one by fsck', async (t) => {
  const v = await freshVolume(32 << 20, LAZY);
  t.teardown(() => v.close());
  const g = new Geometry(await readSuperblock(v.dev));
  const fh = await v.fs.create('/big', 0o644);
  await v.fs.write(fh, 0, patternBytes(12 << 20, 1));
  await v.fs.release(fh);
  await v.fs.sync();
  // 12 MiB do not fit in group 0 of 2048 blocks: group 1 was initialised and holds part of the file.
  const used = 1;
  t.false((await rawBlock(v.dev, g.blockBitmap(used))).every((b) => b === 0));
  await v.dev.write(g.blockBitmap(used) * BLOCK_SIZE, new Uint8Array(BLOCK_SIZE));
  const report = await fsck(v.dev);
  t.false(report.ok);
  t.true(report.errors.some((e) => new RegExp(`free in the bitmap of group ${used}, but used by inode`).test(e)), report.errors.slice(0, 5).join('\n'));
});

test('a used group whose bitmap became a hole is refused by the allocator too: its first user recorded it', async (t) => {
  const v = await freshVolume(32 << 20, LAZY);
  t.teardown(() => v.close());
  const g = new Geometry(await readSuperblock(v.dev));
  const big = patternBytes(12 << 20, 1);
  const fh = await v.fs.create('/big', 0o644);
  await v.fs.write(fh, 0, big);
  await v.fs.release(fh);
  await v.fs.sync();
  const used = 1;
  t.false((await rawBlock(v.dev, g.blockBitmap(used))).every((b) => b === 0), 'group 1 holds part of the file');
  await v.fs.unmount();
  await v.dev.write(g.blockBitmap(used) * BLOCK_SIZE, new Uint8Array(BLOCK_SIZE));
  const errors = new LocalVolumeErrors();
  const fs = await FileSystem.mount(v.dev, { slot: 1, locks: new LocalLockService().client(), errors });
  // Group 0 is full: a new file's inode would come from group 1, whose blocks /big uses.
  t.is(await errno(fs.create('/more', 0o644)), 'EIO');
  t.regex(errors.reason ?? '', new RegExp(`^group ${used}: its bitmap block ${g.blockBitmap(used)} is a hole, but slot 0's domain initialised the group`));
  t.is(await errno(fs.mkdir('/d', 0o755)), 'EROFS', 'the volume turned read-only');
  const read = await fs.open('/big', 0);
  t.true(Buffer.from(await fs.read(read, 0, big.length)).equals(big), 'no block of /big was handed out');
  await fs.release(read);
  await fs.unmount();
  const report = await fsck(v.dev);
  t.true(report.errors.some((e) => e === `group ${used}: bitmap block ${g.blockBitmap(used)} is a hole, but slot 0's domain initialised the group`), report.errors.slice(0, 5).join('\n'));
});
