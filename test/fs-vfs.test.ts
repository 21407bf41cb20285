import test from 'ava';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { FileSystem } from '../fs/filesystem.js';
import { fsck } from '../fs/fsck.js';
import { LocalLockService } from '../fs/local-lock-service.js';
import { BLOCK_SIZE, encodeSuperblock, Geometry, readSuperblock, sealBlock, BlockType, HEADER_SIZE } from '../fs/layout.js';
import {
  O_APPEND, O_CREAT, O_EXCL, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK,
} from '../fs/vfs.js';
import { bytes, errno, freshVolume, patternBytes, text } from './fs-helpers.js';

test('files: create, write, read, append, truncate, attributes', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  const fh = await fs.create('/f', 0o640);
  t.is(await fs.write(fh, 0, bytes('hello')), 5);
  t.is(await fs.write(fh, 5, bytes(' world')), 6);
  t.is(text(await fs.read(fh, 0, 100)), 'hello world');
  t.is(text(await fs.read(fh, 6, 3)), 'wor');
  t.is((await fs.read(fh, 11, 10)).length, 0);
  const st = await fs.getattr('/f');
  t.is(st.mode, S_IFREG | 0o640);
  t.is(st.size, 11);
  t.is(st.nlink, 1);
  // A write far past the end leaves a hole of zeros.
  await fs.write(fh, 20000, bytes('x'));
  const hole = await fs.read(fh, 0, 20001);
  t.is(text(hole.subarray(0, 11)), 'hello world');
  t.true(hole.subarray(11, 20000).every((b) => b === 0));
  t.is(hole[20000], 'x'.charCodeAt(0));
  // Shrink to mid-block, then grow: the cut bytes read back as zeros.
  await fs.truncate('/f', 3);
  await fs.truncate('/f', 8);
  t.deepEqual([...(await fs.read(fh, 0, 100))], [...bytes('hel'), 0, 0, 0, 0, 0]);
  await fs.release(fh);
  const ap = await fs.open('/f', O_WRONLY | O_APPEND);
  await fs.write(ap, 0, bytes('Z'));
  await fs.release(ap);
  t.is((await fs.getattr('/f')).size, 9);
  const ro = await fs.open('/f', O_RDONLY);
  t.is(await errno(fs.write(ro, 0, bytes('no'))), 'EBADF');
  t.is(text((await fs.read(ro, 8, 1))), 'Z');
  await fs.release(ro);
  const wo = await fs.open('/f', O_WRONLY | O_TRUNC);
  t.is(await errno(fs.read(wo, 0, 1)), 'EBADF');
  await fs.release(wo);
  t.is((await fs.getattr('/f')).size, 0);
  await fs.chmod('/f', 0o600);
  await fs.chown('/f', 1000, 1001);
  await fs.utimens('/f', { sec: 1, nsec: 0 }, { sec: 2, nsec: 0 });
  const st2 = await fs.getattr('/f');
  t.is(st2.mode, S_IFREG | 0o600);
  t.deepEqual([st2.uid, st2.gid, st2.atime.sec, st2.mtime.sec], [1000, 1001, 1, 2]);
  t.is(await errno(fs.release(fh)), 'EBADF');
  t.is(await errno(fs.read(999, 0, 1)), 'EBADF');
  await v.close();
});

test('namespace errnos a POSIX user expects', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  await fs.mkdir('/d', 0o755);
  await fs.release(await fs.create('/d/f', 0o644));
  t.is(await errno(fs.mkdir('/d', 0o755)), 'EEXIST');
  t.is(await errno(fs.create('/d/f', 0o644, O_CREAT | O_EXCL | O_RDWR)), 'EEXIST');
  t.is(await errno(fs.getattr('/nope')), 'ENOENT');
  t.is(await errno(fs.open('/nope', O_RDONLY)), 'ENOENT');
  t.is(await errno(fs.mkdir('/nope/x', 0o755)), 'ENOENT');
  t.is(await errno(fs.getattr('/d/f/x')), 'ENOTDIR');
  t.is(await errno(fs.mkdir('/d/f/x', 0o755)), 'ENOTDIR');
  t.is(await errno(fs.rmdir('/d')), 'ENOTEMPTY');
  t.is(await errno(fs.rmdir('/d/f')), 'ENOTDIR');
  t.is(await errno(fs.unlink('/d')), 'EISDIR');
  t.is(await errno(fs.open('/d', O_RDWR)), 'EISDIR');
  t.is(await errno(fs.truncate('/d', 0)), 'EISDIR');
  t.is(await errno(fs.readdir('/d/f')), 'ENOTDIR');
  t.is(await errno(fs.readlink('/d/f')), 'EINVAL');
  t.is(await errno(fs.link('/d', '/d2')), 'EPERM');
  t.is(await errno(fs.rmdir('/')), 'EBUSY');
  t.is(await errno(fs.truncate('/d/f', -1)), 'EINVAL');
  const long = 'n'.repeat(256);
  t.is(await errno(fs.mkdir('/' + long, 0o755)), 'ENAMETOOLONG');
  t.is(await errno(fs.create('/' + long, 0o644)), 'ENAMETOOLONG');
  const max = 'm'.repeat(255);
  await fs.release(await fs.create('/' + max, 0o644));
  t.true((await fs.readdir('/')).includes(max));
  t.is(await errno(fs.mkdir('/' + 'é'.repeat(128), 0o755)), 'ENAMETOOLONG', 'NAME_MAX counts bytes, not characters');
  // Nothing is counted from the root: a path of 20 names of 250 bytes (5020 bytes) works.
  let deep = '';
  for (let i = 0; i < 20; i++) {
    deep += '/' + String(i).padStart(250, 'd');
    await fs.mkdir(deep, 0o755);
  }
  await fs.release(await fs.create(deep + '/f', 0o644));
  t.is((await fs.getattr(deep + '/f')).size, 0);
  t.is(await errno(fs.symlink('x'.repeat(4096), '/s')), 'ENAMETOOLONG', 'a target is at most PATH_MAX - 1 bytes');
  const longest = 'a/'.repeat(2047) + 'z';
  await fs.symlink(longest, '/longest');
  t.is(await fs.readlink('/longest'), longest, 'a 4095-byte target spans two blocks');
  t.is((await fs.getattr('/longest')).size, 4095);
  const dh = await fs.open('/d', O_RDONLY);
  t.is(await errno(fs.read(dh, 0, 1)), 'EISDIR');
  await fs.release(dh);
  await fs.sync();
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});

test('rename: files, over targets, directories, into own subtree', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  await fs.mkdir('/a', 0o755);
  await fs.mkdir('/a/sub', 0o755);
  await fs.mkdir('/b', 0o755);
  const write = async (path: string, content: string) => {
    const fh = await fs.create(path, 0o644);
    await fs.write(fh, 0, bytes(content));
    await fs.release(fh);
  };
  const read = async (path: string) => {
    const fh = await fs.open(path, O_RDONLY);
    const data = text(await fs.read(fh, 0, 1000));
    await fs.release(fh);
    return data;
  };
  await write('/a/x', 'X');
  await write('/b/y', 'Y');
  await fs.rename('/a/x', '/b/y');
  t.is(await read('/b/y'), 'X');
  t.is(await errno(fs.getattr('/a/x')), 'ENOENT');
  await fs.rename('/b/y', '/b/y');
  t.is(await read('/b/y'), 'X');
  await fs.link('/b/y', '/b/y2');
  await fs.rename('/b/y', '/b/y2');
  t.deepEqual((await fs.readdir('/b')).sort(), ['y', 'y2'], 'rename between hard links of one file does nothing');
  t.is(await errno(fs.rename('/a', '/a/sub/inside')), 'EINVAL');
  t.is(await errno(fs.rename('/a', '/a/sub')), 'EINVAL');
  t.is(await errno(fs.rename('/a', '/b/y')), 'ENOTDIR');
  t.is(await errno(fs.rename('/b/y', '/a')), 'EISDIR');
  t.is(await errno(fs.rename('/b', '/a')), 'ENOTEMPTY');
  t.is(await errno(fs.rename('/nope', '/x')), 'ENOENT');
  await fs.mkdir('/empty', 0o755);
  await fs.rename('/a', '/empty');
  t.deepEqual(await fs.readdir('/empty'), ['sub']);
  t.is((await fs.getattr('/')).nlink, 2 + 2, 'root links: ., .., /b/.., /empty/..');
  await fs.rename('/empty/sub', '/b/sub');
  t.is((await fs.getattr('/empty')).nlink, 2);
  t.is((await fs.getattr('/b')).nlink, 3);
  t.deepEqual((await fs.readdir('/b')).sort(), ['sub', 'y', 'y2']);
  await fs.sync();
  const report = await fsck(v.dev);
  t.deepEqual(report.errors, []);
  await v.close();
});

test('symlinks and hard links', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  await fs.mkdir('/dir', 0o755);
  const fh = await fs.create('/dir/target', 0o644);
  await fs.write(fh, 0, bytes('through the link'));
  await fs.release(fh);
  await fs.symlink('dir/target', '/rel');
  await fs.symlink('/dir', '/abs');
  t.is(await fs.readlink('/rel'), 'dir/target');
  t.is((await fs.getattr('/rel')).mode & S_IFMT, S_IFLNK);
  const h = await fs.open('/rel', O_RDONLY);
  t.is(text(await fs.read(h, 0, 100)), 'through the link');
  await fs.release(h);
  t.deepEqual(await fs.readdir('/abs'), ['target']);
  t.is((await fs.getattr('/abs/target')).size, 16);
  await fs.symlink('/loop', '/loop');
  t.is(await errno(fs.open('/loop', O_RDONLY)), 'ELOOP');
  await fs.link('/dir/target', '/hard');
  t.is((await fs.getattr('/hard')).nlink, 2);
  await fs.unlink('/dir/target');
  t.is((await fs.getattr('/hard')).nlink, 1);
  t.is(await errno(fs.open('/rel', O_RDONLY)), 'ENOENT');
  t.is((await fs.getattr('/dir')).mode & S_IFMT, S_IFDIR);
  await fs.sync();
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});

test('ftruncate works through the handle, also after unlink; EBADF on a read-only handle', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  const fh = await fs.create('/f', 0o644);
  await fs.write(fh, 0, patternBytes(50_000, 3));
  await fs.ftruncate(fh, 10_000);
  t.is((await fs.getattr('/f')).size, 10_000);
  await fs.unlink('/f');
  await fs.ftruncate(fh, 20_000);
  const back = await fs.read(fh, 0, 30_000);
  t.is(back.length, 20_000);
  t.true(Buffer.from(back.subarray(0, 10_000)).equals(Buffer.from(patternBytes(50_000, 3).subarray(0, 10_000))));
  t.true(back.subarray(10_000).every((b) => b === 0));
  await fs.release(fh);
  const ro = await fs.create('/g', 0o644);
  await fs.release(ro);
  const rfh = await fs.open('/g', O_RDONLY);
  t.is(await errno(fs.ftruncate(rfh, 0)), 'EBADF');
  await fs.release(rfh);
  await fs.sync();
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});

test('chmod, chown and utimens change a final symlink itself, not its target (as FUSE and cp -a expect)', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  await fs.release(await fs.create('/target', 0o644));
  await fs.symlink('target', '/link');
  const before = await fs.getattr('/target');
  await fs.chown('/link', 1234, 99);
  await fs.utimens('/link', { sec: 1000, nsec: 0 }, { sec: 2000, nsec: 0 });
  const link = await fs.getattr('/link');
  const target = await fs.getattr('/target');
  t.is(link.uid, 1234);
  t.is(link.gid, 99);
  t.deepEqual(link.mtime, { sec: 2000, nsec: 0 });
  t.is(target.uid, before.uid);
  t.deepEqual(target.mtime, before.mtime);
  await v.close();
});

test('utimens: exact times to the nanosecond with 64-bit seconds, null leaves a time, now is the domain clock, ctime follows', async (t) => {
  const v = await freshVolume();
  await v.fs.unmount();
  // A clock the test sets (ms; a .5 is exact in binary, so its nanoseconds are too).
  let clockMs = 1_700_000_000_000;
  const at = (ms: number) => ({ sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 });
  let fs = await FileSystem.mount(v.dev, { slot: 0, locks: v.locks.client(), commitIntervalMs: 0, now: () => clockMs });
  await fs.release(await fs.create('/f', 0o644));
  t.deepEqual((await fs.getattr('/f')).ctime, at(clockMs));

  const past2to32 = { sec: 2 ** 32 + 7, nsec: 123_456_789 };
  const before1970 = { sec: -2, nsec: 999_999_999 };
  clockMs = 1_700_000_001_250.5;
  await fs.utimens('/f', past2to32, before1970);
  let st = await fs.getattr('/f');
  t.deepEqual([st.atime, st.mtime, st.ctime], [past2to32, before1970, at(clockMs)]);

  clockMs = 1_700_000_002_000;
  await fs.utimens('/f', null, { sec: 5, nsec: 1 });
  st = await fs.getattr('/f');
  t.deepEqual([st.atime, st.mtime, st.ctime], [past2to32, { sec: 5, nsec: 1 }, at(clockMs)], 'null leaves atime');

  clockMs = 1_700_000_003_000.25;
  await fs.utimens('/f', 'now', null);
  st = await fs.getattr('/f');
  t.deepEqual([st.atime, st.mtime, st.ctime], [at(clockMs), { sec: 5, nsec: 1 }, at(clockMs)], "'now' is the domain's clock, null leaves mtime");

  const unchanged = st;
  clockMs = 1_700_000_004_000;
  await fs.utimens('/f', null, null);
  t.deepEqual(await fs.getattr('/f'), unchanged, 'two nulls change nothing, not even ctime');
  t.is(await errno(fs.utimens('/missing', null, null)), 'ENOENT');
  for (const bad of [{ sec: 1.5, nsec: 0 }, { sec: 0, nsec: 1e9 }, { sec: 0, nsec: -1 }, { sec: 2 ** 53, nsec: 0 }, 1000, 'later']) {
    t.is(await errno(fs.utimens('/f', bad as never, null)), 'EINVAL', JSON.stringify(bad));
  }

  // From the disk, not a cache: another mount reads the same times back.
  await fs.utimens('/f', { sec: 2 ** 40, nsec: 999_999_999 }, past2to32);
  await fs.unmount();
  fs = await FileSystem.mount(v.dev, { slot: 1, locks: v.locks.client() });
  st = await fs.getattr('/f');
  t.deepEqual([st.atime, st.mtime], [{ sec: 2 ** 40, nsec: 999_999_999 }, past2to32]);
  await fs.unmount();
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});

test('mount refuses a volume of an older format, saying what to do', async (t) => {
  const v = await freshVolume();
  await v.fs.unmount();
  const sb = await readSuperblock(v.dev);
  await v.dev.write(0, encodeSuperblock({ ...sb, version: 2 }));
  const refused = await t.throwsAsync(FileSystem.mount(v.dev, { slot: 0, locks: v.locks.client() }));
  t.regex(refused.message, /format version 2 is no longer supported .*nanosecond.*hvshare mkfs --force/);
  await v.close();
});

test('unlinked open file keeps its data until release; a remount reclaims leftovers', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  const before = (await fs.statfs('/')).bfree;
  const fh = await fs.create('/tmp', 0o644);
  const data = patternBytes(300_000, 1);
  await fs.write(fh, 0, data);
  await fs.unlink('/tmp');
  t.is(await errno(fs.getattr('/tmp')), 'ENOENT');
  t.deepEqual(await fs.read(fh, 0, data.length), data);
  await fs.write(fh, data.length, bytes('more'));
  await fs.sync();
  const mid = await fsck(v.dev);
  t.deepEqual(mid.errors, []);
  t.is(mid.stats.orphans, 1);
  await fs.release(fh);
  t.is((await fs.statfs('/')).bfree, before);
  await fs.sync();
  t.is((await fsck(v.dev)).stats.orphans, 0);

  // An instance that goes away with an orphan open: the next mount of its slot frees it.
  const fh2 = await fs.create('/tmp2', 0o644);
  await fs.write(fh2, 0, data);
  await fs.unlink('/tmp2');
  await fs.sync();
  // Simulate the instance dying: a new one mounts slot 0 (with a fresh lock service, as after a platform restart).
  const dev2 = await FileBlockDevice.open(v.image.path);
  const lockless = new LocalLockService();
  const again = await FileSystem.mount(dev2, { slot: 0, locks: lockless.client() });
  t.is((await again.statfs('/')).bfree, before);
  await again.unmount();
  t.deepEqual((await fsck(dev2)).errors, []);
  await dev2.close();
  await v.close();
});

test('large sparse file beyond the double-indirect boundary', async (t) => {
  const v = await freshVolume(64 << 20);
  const { fs } = v;
  const fh = await fs.create('/big', 0o644);
  const chunk = patternBytes(1 << 20, 7);
  const offsets = [0, 5 << 20, 300 << 20, (700 << 20) + 123];
  for (const offset of offsets) await fs.write(fh, offset, chunk);
  t.is((await fs.getattr('/big')).size, (700 << 20) + 123 + (1 << 20));
  for (const offset of offsets) t.deepEqual(await fs.read(fh, offset, chunk.length), chunk);
  t.true((await fs.read(fh, 400 << 20, 65536)).every((b) => b === 0));
  await fs.sync();
  t.deepEqual((await fsck(v.dev)).errors, []);
  const free = (await fs.statfs('/')).bfree;
  await fs.truncate('/big', 6 << 20);
  t.true((await fs.statfs('/')).bfree > free + 2 * 256);
  t.deepEqual(await fs.read(fh, 5 << 20, chunk.length), chunk.subarray(0, 1 << 20));
  await fs.release(fh);
  await fs.unlink('/big');
  await fs.sync();
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});

test('data survives unmount and remount in another slot; the journal is left clean', async (t) => {
  const v = await freshVolume();
  const fh = await v.fs.create('/keep', 0o644);
  const data = patternBytes(123_457, 3);
  await v.fs.write(fh, 0, data);
  await v.fs.release(fh);
  await v.fs.mkdir('/keepdir', 0o700);
  await v.fs.unmount();
  const report = await fsck(v.dev);
  t.deepEqual(report.errors, []);
  t.deepEqual(report.warnings, []);
  const fs2 = await FileSystem.mount(v.dev, { slot: 3, locks: v.locks.client() });
  const h = await fs2.open('/keep', O_RDONLY);
  t.deepEqual(await fs2.read(h, 0, 200_000), data);
  await fs2.release(h);
  t.is((await fs2.getattr('/keepdir')).mode, S_IFDIR | 0o700);
  await fs2.unmount();
  await v.close();
});

test('read-only device: reads work, changes fail with EROFS', async (t) => {
  const v = await freshVolume();
  const fh = await v.fs.create('/r', 0o644);
  await v.fs.write(fh, 0, bytes('read me'));
  await v.fs.release(fh);
  await v.fs.unmount();
  const ro = await FileBlockDevice.open(v.image.path, { readOnly: true });
  const fs = await FileSystem.mount(ro, { slot: 1, locks: v.locks.client() });
  const h = await fs.open('/r', O_RDONLY);
  t.is(text(await fs.read(h, 0, 100)), 'read me');
  await fs.release(h);
  t.is(await errno(fs.mkdir('/x', 0o755)), 'EROFS');
  t.is(await errno(fs.create('/y', 0o644)), 'EROFS');
  t.is(await errno(fs.unlink('/r')), 'EROFS');
  t.is(await errno(fs.open('/r', O_WRONLY)), 'EROFS');
  await fs.unmount();
  await ro.close();
  await v.close();
});

test('fsck catches corruption: bad checksum, leaked block, wrong link count', async (t) => {
  const v = await freshVolume();
  await v.fs.mkdir('/d', 0o755);
  const fh = await v.fs.create('/d/f', 0o644);
  await v.fs.write(fh, 0, patternBytes(50_000, 9));
  await v.fs.release(fh);
  const { ino } = await v.fs.getattr('/d/f');
  await v.fs.unmount();
  t.deepEqual((await fsck(v.dev)).errors, []);
  const sb = await readSuperblock(v.dev);
  const g = new Geometry(sb);
  const readBlock = async (address: number) => {
    const data = new Uint8Array(BLOCK_SIZE);
    await v.dev.read(address * BLOCK_SIZE, data);
    return data;
  };
  const writeBlock = (address: number, data: Uint8Array) => v.dev.write(address * BLOCK_SIZE, data);

  // 1. A flipped byte in the inode block of /d/f (an inode is a block of its own, numbered by its address).
  const inodeBlock = await readBlock(ino);
  const flipped = inodeBlock.slice();
  flipped[HEADER_SIZE + 5] ^= 1;
  await writeBlock(ino, flipped);
  let report = await fsck(v.dev);
  t.false(report.ok);
  t.true(report.errors.some((e) => e.includes('checksum') && e.includes('/d/f') && e.includes(`block ${ino}`)), report.errors.join('\n'));
  await writeBlock(ino, inodeBlock);

  // 2. A free block marked used that nobody references (checksum kept valid).
  const bitmap = await readBlock(g.blockBitmap(0));
  const leaked = bitmap.slice();
  const bit = g.groupSize(0) - 1;
  t.is(bitmap[HEADER_SIZE + (bit >> 3)] & (1 << (bit & 7)), 0, 'the last block of group 0 was free');
  leaked[HEADER_SIZE + (bit >> 3)] |= 1 << (bit & 7);
  sealBlock(leaked, BlockType.BlockBitmap, g.blockBitmap(0));
  await writeBlock(g.blockBitmap(0), leaked);
  report = await fsck(v.dev);
  t.true(report.errors.some((e) => e.startsWith(`block ${g.groupBase(0) + bit} `) && e.includes('allocated but not referenced')), report.errors.join('\n'));
  await writeBlock(g.blockBitmap(0), bitmap);

  // 3. A wrong link count on the root (nlink is at offset 12 of the inode record).
  const rootBlock = await readBlock(sb.rootIno);
  const wrongLinks = rootBlock.slice();
  wrongLinks[HEADER_SIZE + 12] += 1;
  sealBlock(wrongLinks, BlockType.Inode, sb.rootIno);
  await writeBlock(sb.rootIno, wrongLinks);
  report = await fsck(v.dev);
  t.true(report.errors.some((e) => e.includes(`inode ${sb.rootIno} (/)`) && e.includes('nlink 4, referenced 3 times')), report.errors.join('\n'));
  await writeBlock(sb.rootIno, rootBlock);
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});

test('O_CREAT without O_EXCL opens an existing file; O_TRUNC empties it', async (t) => {
  const v = await freshVolume();
  const fh = await v.fs.create('/c', 0o644, O_CREAT | O_RDWR);
  await v.fs.write(fh, 0, bytes('content'));
  await v.fs.release(fh);
  const again = await v.fs.open('/c', O_CREAT | O_RDWR);
  t.is(text(await v.fs.read(again, 0, 100)), 'content');
  await v.fs.release(again);
  const trunc = await v.fs.open('/c', O_CREAT | O_RDWR | O_TRUNC);
  t.is((await v.fs.read(trunc, 0, 100)).length, 0);
  await v.fs.release(trunc);
  await v.close();
});

test('a data write that fails on the device is reported by the next fsync of that file, once; its pages go; its blocks read as EIO, not corruption', async (t) => {
  const v = await freshVolume();
  const { fs, dev } = v;
  const other = await fs.create('/other', 0o644);
  await fs.write(other, 0, patternBytes(100, 1));
  const fh = await fs.create('/f', 0o644);
  await fs.write(fh, 0, patternBytes(8192, 2));
  await fs.fsync(fh, false);
  t.true(Buffer.from(await fs.read(fh, 0, 8192)).equals(patternBytes(8192, 2)), 'cached in the page cache now');
  const write = dev.write.bind(dev);
  let failNext = true;
  dev.write = (offset, data, options) => {
    if (!failNext) return write(offset, data, options);
    failNext = false;
    return Promise.reject(new Error('injected media error'));
  };
  t.is(await fs.write(fh, 0, patternBytes(8192, 3)), 8192, 'the write itself succeeds; the failure is kept for fsync');
  await fs.fsync(other, false);
  // The write went to new blocks (committed ones are copied on write) that never got their data.
  t.is(await errno(fs.read(fh, 0, 8192)), 'EIO', 'what never reached the device is not served from the cache');
  t.is(await errno(fs.mkdir('/still-writable', 0o755)), 'OK', 'a failed write is the device\'s fault, not corruption: the volume stays writable');
  t.is(await errno(fs.fsync(fh, false)), 'EIO', 'the file whose write failed is told, not the first file to fsync');
  await fs.release(other);
  await fs.write(fh, 0, patternBytes(8192, 4));
  await fs.fsync(fh, false);
  t.true(Buffer.from(await fs.read(fh, 0, 8192)).equals(patternBytes(8192, 4)));
  await fs.release(fh);
  await v.close();
});

test('ordered mode with data writes in flight: no write is still on its way when the journal flushes', async (t) => {
  const v = await freshVolume();
  const { fs, dev } = v;
  const write = dev.write.bind(dev);
  const flush = dev.flush.bind(dev);
  let inFlight = 0;
  let plainInFlight = 0;
  let flushesWithWritesOut = 0;
  let flushes = 0;
  // File data (the large writes here) lands late, so a commit that did not wait for it would flush with some out.
  // A FUA write is a flush for itself, and a barrier write (the journal's log, home and clear) one for what came
  // before it: no plain write may be out either.
  dev.write = async (offset, data, options) => {
    const plain = !options?.fua && !options?.barrier;
    if (!plain) {
      flushes++;
      if (plainInFlight > 0) flushesWithWritesOut++;
    }
    inFlight++;
    if (plain) plainInFlight++;
    try {
      await new Promise((r) => setTimeout(r, data.length >= 256 << 10 ? 30 : 1));
      return await write(offset, data, options);
    } finally {
      inFlight--;
      if (plain) plainInFlight--;
    }
  };
  dev.flush = async () => {
    flushes++;
    if (inFlight > 0) flushesWithWritesOut++;
    return flush();
  };
  for (let i = 0; i < 20; i++) {
    const fh = await fs.create(`/f${i}`, 0o644);
    await fs.write(fh, 0, patternBytes(300_000 + i, i));
    if (i % 5 === 4) await fs.fsync(fh, false);
    await fs.release(fh);
  }
  await fs.unmount();
  t.true(flushes > 0);
  t.is(flushesWithWritesOut, 0, 'a flush found writes still on their way');
  t.deepEqual((await fsck(dev)).errors, []);
  await v.close();
});

test('a commit after data writes adds no flush of its own: its barrier orders the data before the record', async (t) => {
  const v = await freshVolume();
  const { fs, dev } = v;
  const flush = dev.flush.bind(dev);
  let flushes = 0;
  dev.flush = async () => {
    flushes++;
    return flush();
  };
  const fh = await fs.create('/f', 0o644);
  await fs.write(fh, 0, patternBytes(8192, 1));
  await fs.fsync(fh, false);
  t.is(flushes, 1, 'fsync\'s own flush, after the commit; none before it');
  await fs.release(fh);
  await v.close();
});

test('mknod: devices with their number, FIFOs and sockets, owned by their creator; readdir types; fsck clean', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  const tty = (4 << 8) | 1;
  await fs.mknod('/tty', S_IFCHR | 0o620, tty, { uid: 5, gid: 6 });
  await fs.mknod('/sda', S_IFBLK | 0o660, 8 << 8);
  await fs.mknod('/fifo', S_IFIFO | 0o644, 99);
  await fs.mknod('/sock', S_IFSOCK | 0o755, 0);
  await fs.mknod('/plain', 0o600, 0);
  const st = await fs.getattr('/tty');
  t.deepEqual([st.mode, st.rdev, st.uid, st.gid, st.size, st.blocks, st.nlink], [S_IFCHR | 0o620, tty, 5, 6, 0, 0, 1]);
  t.is((await fs.getattr('/sda')).rdev, 8 << 8);
  t.is((await fs.getattr('/fifo')).rdev, 0, 'only devices keep a number');
  t.is((await fs.getattr('/plain')).mode, S_IFREG | 0o600, 'no type bits: a regular file');
  const listing = await fs.readdirEntries('/');
  const typeOf = (name: string) => listing.types[listing.names.indexOf(name)];
  t.deepEqual(['tty', 'sda', 'fifo', 'sock'].map(typeOf), [S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK]);
  t.is(await errno(fs.mknod('/fifo', S_IFIFO | 0o644, 0)), 'EEXIST');
  t.is(await errno(fs.mknod('/d', S_IFDIR | 0o755, 0)), 'EINVAL');
  t.is(await errno(fs.mknod('/l', S_IFLNK | 0o777, 0)), 'EINVAL');
  t.is(await errno(fs.mknod('/bad', 0o170000 | 0o644, 0)), 'EINVAL');
  await fs.link('/tty', '/tty2');
  await fs.rename('/sock', '/sock2');
  await fs.unlink('/fifo');
  await fs.sync();
  const report = await fsck(v.dev);
  t.deepEqual(report.errors, []);
  t.is(report.stats.special, 3);
  await v.close();
});
