import test from 'ava';
import { fsck } from '../fs/fsck.js';
import { errno, freshVolume, patternBytes } from './fs-helpers.js';

test('a full volume returns ENOSPC, stays consistent, and recovers space on unlink', async (t) => {
  const v = await freshVolume(12 << 20);
  const { fs } = v;
  const chunk = patternBytes(256 << 10, 1);
  let files = 0;
  let code = 'OK';
  outer: for (; files < 1000; files++) {
    const fh = await fs.create(`/fill${files}`, 0o644);
    for (let i = 0; i < 8; i++) {
      code = await errno(fs.write(fh, i * chunk.length, chunk));
      if (code !== 'OK') {
        await fs.release(fh);
        break outer;
      }
    }
    await fs.release(fh);
  }
  t.is(code, 'ENOSPC');
  t.true(files >= 2);
  const free = (await fs.statfs('/')).bfree;
  t.true(free < 64, `free blocks left: ${free}`);
  // Metadata changes that need a block fail cleanly too, or succeed; either way the volume stays consistent.
  for (let i = 0; i < 200; i++) {
    const result = await errno(fs.mkdir(`/d${i}`, 0o755));
    if (result !== 'OK') {
      t.is(result, 'ENOSPC');
      break;
    }
  }
  await fs.sync();
  let report = await fsck(v.dev);
  t.deepEqual(report.errors, []);
  // The partly written file has whole chunks only: the failed write left nothing behind.
  const size = (await fs.getattr(`/fill${files}`)).size;
  t.is(size % chunk.length, 0);
  await fs.unlink('/fill0');
  t.true((await fs.statfs('/')).bfree > free + 400);
  const fh = await fs.create('/after', 0o644);
  t.is(await fs.write(fh, 0, chunk), chunk.length);
  t.deepEqual(await fs.read(fh, 0, chunk.length), chunk);
  await fs.release(fh);
  await fs.sync();
  report = await fsck(v.dev);
  t.deepEqual(report.errors, []);
  await v.close();
});

test('running out of inodes is ENOSPC too: every free block became an inode or a directory block', async (t) => {
  const v = await freshVolume(12 << 20, { slots: 2, journalBlocks: 64, blocksPerGroup: 1024 });
  const { fs } = v;
  const { ffree } = await fs.statfs('/');
  const rootBlocks = (await fs.getattr('/')).blocks;
  let created = 0;
  let code = 'OK';
  while (code === 'OK' && created < 5000) {
    code = await errno(fs.create(`/e${created}`, 0o644).then((fh) => fs.release(fh)));
    if (code === 'OK') created++;
  }
  t.is(code, 'ENOSPC');
  const dirBlocks = ((await fs.getattr('/')).blocks - rootBlocks) / 8;
  t.is(created + dirBlocks, ffree);
  t.is((await fs.statfs('/')).ffree, 0);
  await fs.sync();
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});
