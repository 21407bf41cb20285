/**
 * `fsck --repair` on real image files: a tree written by the filesystem itself (mounted natively), then damaged
 * by hand the way test/fsck.test.ts and the mount-check tests do, repaired by the real command, then checked
 * clean and its data read back through a fresh mount.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdir, open, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlockDevice, WriteOptions } from '../fs/block-device.js';
import { parseDirBlock } from '../fs/directory.js';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { FileSystem } from '../fs/filesystem.js';
import { imageLockPath } from '../fs/image-lock.js';
import { decodeInode, encodeInode, type Inode } from '../fs/inode.js';
import { decodeJournalHeader } from '../fs/journal.js';
import { BLOCK_SIZE, BlockType, Geometry, HEADER_SIZE, readSuperblock, resealBlock, sealBlock } from '../fs/layout.js';
import { LocalLockService } from '../fs/local-lock-service.js';
import { mkfs } from '../fs/mkfs.js';
import { O_RDONLY } from '../fs/vfs.js';
import { bytes, patternBytes, readBlock, SMALL_FS, tempImage, text } from './fs-helpers.js';
import { hvshare, startUp, testPlatform } from './helpers/cli.js';
import { fsckImage } from './helpers/volume.js';

const BIG = patternBytes(200_000, 7);

/** An image holding /d/f (BIG), /d/g, /d/sub/h, /keep and a hard link /d/f2 -> /d/f, written by the filesystem. */
async function imageWithTree(t: ExecutionContext): Promise<string> {
  const image = await tempImage(32 << 20);
  t.teardown(() => image.cleanup());
  const dev = await FileBlockDevice.open(image.path);
  await mkfs(dev, SMALL_FS);
  const fs = await mount(dev);
  await fs.mkdir('/d', 0o755);
  await fs.mkdir('/d/sub', 0o755);
  for (const [path, data] of [['/d/f', BIG], ['/d/g', bytes('gee')], ['/d/sub/h', bytes('aitch')], ['/keep', bytes('kept')]] as const) {
    const fh = await fs.create(path, 0o100644);
    await fs.write(fh, 0, data);
    await fs.release(fh);
  }
  await fs.link('/d/f', '/d/f2');
  await fs.unmount();
  await dev.close();
  t.true((await fsckImage(image.path)).ok);
  return image.path;
}

function mount(dev: BlockDevice): Promise<FileSystem> {
  return FileSystem.mount(dev, { slot: 1, locks: new LocalLockService().client(), commitIntervalMs: 0 });
}

/** Runs `body` on the image's device (read-write), closed afterwards. */
async function withDevice<T>(path: string, body: (dev: FileBlockDevice, g: Geometry) => Promise<T>): Promise<T> {
  const dev = await FileBlockDevice.open(path);
  try {
    return await body(dev, new Geometry(await readSuperblock(dev)));
  } finally {
    await dev.close();
  }
}

async function changeInode(dev: BlockDevice, ino: number, change: (inode: Inode) => void): Promise<void> {
  const block = await readBlock(dev, ino);
  const inode = decodeInode(block, HEADER_SIZE, ino);
  change(inode);
  encodeInode(block, HEADER_SIZE, inode);
  sealBlock(block, BlockType.Inode, ino);
  await dev.write(ino * BLOCK_SIZE, block);
}

/** The inode number of `path` and the file's content, read through a fresh mount. */
async function readBack(path: string, file: string): Promise<{ ino: number; data: string | Uint8Array }> {
  return withDevice(path, async (dev) => {
    const fs = await mount(dev);
    try {
      const st = await fs.getattr(file);
      const fh = await fs.open(file, O_RDONLY);
      const data = await fs.read(fh, 0, st.size + 1);
      await fs.release(fh);
      return { ino: st.ino, data: data.length === BIG.length ? data : text(data) };
    } finally {
      await fs.unmount();
    }
  });
}

interface RepairJson {
  changes: string[];
  ok: boolean;
  errors: string[];
  exitCode: number;
}

async function repair(t: ExecutionContext, path: string, expectedCode = 1): Promise<RepairJson> {
  const r = await hvshare('fsck', path, '--repair', '--json');
  t.is(r.code, expectedCode, r.stdout + r.stderr);
  const json = JSON.parse(r.stdout) as RepairJson;
  t.is(json.exitCode, expectedCode);
  return json;
}

test('bitmaps that say free for blocks in use: marked in use again, the data readable; a second repair finds nothing', async (t) => {
  const path = await imageWithTree(t);
  const { ino } = await readBack(path, '/d/f');
  const group = await withDevice(path, async (dev, g) => {
    const inode = decodeInode(await readBlock(dev, ino), HEADER_SIZE, ino);
    t.is(g.groupOf(inode.direct[1]), g.groupOf(ino));
    for (const block of [ino, inode.direct[0], inode.direct[1]]) await markBlock(dev, g, block, false);
    return g.groupOf(ino);
  });
  const before = await fsckImage(path);
  t.is(before.errors.filter((e) => /free in the bitmap/.test(e)).length, 3, before.errors.join('\n'));
  const fixed = await repair(t, path);
  t.deepEqual(fixed.changes, [`group ${group}: bitmap corrected: 3 block(s) marked in use, 0 freed`]);
  t.true(fixed.ok);
  t.true((await fsckImage(path)).ok);
  t.deepEqual((await readBack(path, '/d/f')).data, BIG);
  const again = await repair(t, path, 0);
  t.deepEqual(again.changes, []);
});

/** Sets or clears the bit of `block` in its group's bitmap, keeping the bitmap's checksum valid. */
async function markBlock(dev: BlockDevice, g: Geometry, block: number, used: boolean): Promise<void> {
  const address = g.blockBitmap(g.groupOf(block));
  const bitmap = await readBlock(dev, address);
  const bit = block - g.groupBase(g.groupOf(block));
  if (used) bitmap[HEADER_SIZE + (bit >> 3)] |= 1 << (bit & 7);
  else bitmap[HEADER_SIZE + (bit >> 3)] &= ~(1 << (bit & 7));
  resealBlock(bitmap);
  await dev.write(address * BLOCK_SIZE, bitmap);
}

/** Link counts of `ino` and the root made wrong, and the volume's last block (nobody's) marked in use. */
async function damageCounts(path: string, ino: number): Promise<number> {
  return withDevice(path, async (dev, g) => {
    const sb = await readSuperblock(dev);
    await changeInode(dev, ino, (inode) => (inode.nlink = 7));
    await changeInode(dev, sb.rootIno, (inode) => (inode.nlink = 9));
    await markBlock(dev, g, sb.totalBlocks - 1, true);
    return sb.rootIno;
  });
}

test('wrong link counts and a leaked block: set to the references, freed; reported as text and as JSON', async (t) => {
  const path = await imageWithTree(t);
  const { ino } = await readBack(path, '/d/f');
  const root = await damageCounts(path, ino);
  t.is((await fsckImage(path)).errors.length, 3);
  const text = await hvshare('fsck', path, '--repair');
  t.is(text.code, 1, text.stderr);
  t.regex(text.stdout, new RegExp(`^fixed: inode ${ino}: link count 7 set to 2, the references the tree holds$`, 'm'));
  t.regex(text.stdout, /: clean; .* \(3 change\(s\) made\)$/m);
  await damageCounts(path, ino);
  const fixed = await repair(t, path);
  t.deepEqual(fixed.changes.sort(), [
    `group ${Math.floor((32 << 20) / BLOCK_SIZE / SMALL_FS.blocksPerGroup!) - 1}: bitmap corrected: 0 block(s) marked in use, 1 freed`,
    `inode ${ino}: link count 7 set to 2, the references the tree holds`,
    `inode ${root}: link count 9 set to 3, the references the tree holds`,
  ].sort());
  t.true((await fsckImage(path)).ok);
  t.deepEqual((await readBack(path, '/d/f2')).data, BIG);
});

test('orphans: a file and a whole tree named by no directory go to /lost+found (created), tops only, readable', async (t) => {
  const path = await imageWithTree(t);
  const keep = (await readBack(path, '/keep')).ino;
  const d = (await readBack(path, '/d/g')).ino;
  // Unlink /keep and /d by zeroing their records in the root directory (their inodes stay in use).
  const dIno = await withDevice(path, async (dev) => {
    const sb = await readSuperblock(dev);
    const rootDir = decodeInode(await readBlock(dev, sb.rootIno), HEADER_SIZE, sb.rootIno).direct[0];
    const block = await readBlock(dev, rootDir);
    const entries = parseDirBlock(block, rootDir);
    if (typeof entries === 'string') throw new Error(entries);
    let dir = 0;
    for (const e of entries.filter((e) => ['keep', 'd'].includes(text(e.name)))) {
      if (text(e.name) === 'd') dir = e.ino;
      new DataView(block.buffer).setUint32(e.offset, 0, true);
    }
    resealBlock(block);
    await dev.write(rootDir * BLOCK_SIZE, block);
    await changeInode(dev, sb.rootIno, (inode) => inode.nlink--);
    return dir;
  });
  const before = await fsckImage(path);
  t.false(before.ok);
  t.true(before.errors.some((e) => /linked from nowhere/.test(e)), before.errors.join('\n'));
  const fixed = await repair(t, path);
  t.true(fixed.changes.includes('created /lost+found'), fixed.changes.join('\n'));
  t.true(fixed.changes.includes(`inode ${keep}: in use but named by no directory, linked as /lost+found/#${keep}`));
  t.true(fixed.changes.includes(`inode ${dIno}: in use but named by no directory, linked as /lost+found/#${dIno}`));
  t.is(fixed.changes.filter((c) => c.includes('linked as')).length, 2, 'the files inside the lost directory stay in it');
  t.true(fixed.ok, fixed.errors.join('\n'));
  t.true((await fsckImage(path)).ok);
  t.is((await readBack(path, `/lost+found/#${keep}`)).data, 'kept');
  t.deepEqual((await readBack(path, `/lost+found/#${dIno}/f2`)).data, BIG);
  t.is((await readBack(path, `/lost+found/#${dIno}/sub/h`)).data, 'aitch');
  t.not(d, 0);
});

/** Drops every write after the first commit record of `slot` (a crash between commit and checkpoint). */
class CrashAfterCommit implements BlockDevice {
  crashed = false;
  constructor(
    private readonly inner: BlockDevice,
    private readonly header: number,
  ) {}
  get sizeBytes() {
    return this.inner.sizeBytes;
  }
  get readOnly() {
    return this.inner.readOnly;
  }
  read(offset: number, dst: Uint8Array) {
    return this.inner.read(offset, dst);
  }
  async write(offset: number, src: Uint8Array, options?: WriteOptions) {
    if (this.crashed) return;
    await this.inner.write(offset, src, options);
    if (offset === this.header * BLOCK_SIZE) {
      const header = decodeJournalHeader(src.subarray(0, BLOCK_SIZE), this.header);
      this.crashed = typeof header !== 'string' && header.targets.length > 0;
    }
  }
  async flush() {
    if (!this.crashed) await this.inner.flush();
  }
  async discard(offset: number, length: number) {
    if (!this.crashed) await this.inner.discard(offset, length);
  }
  allocBuffer(length: number) {
    return new Uint8Array(length);
  }
  freeBuffer() {}
  /** The file device is closed by its owner. */
  async close() {}
}

test('an unreplayed journal: replayed by the repair, what it held readable', async (t) => {
  const path = await imageWithTree(t);
  await withDevice(path, async (file, g) => {
    const dev = new CrashAfterCommit(file, g.journalHeader(1));
    const fs = await mount(dev);
    const fh = await fs.create('/late', 0o100644);
    await fs.write(fh, 0, bytes('committed, not written home'));
    await fs.fsync(fh, false);
    t.true(dev.crashed);
  });
  const before = await fsckImage(path);
  t.is(before.stats.replayableJournals, 1);
  const fixed = await repair(t, path);
  t.is(fixed.changes.length, 1, fixed.changes.join('\n'));
  t.regex(fixed.changes[0], /^journal 1: replayed a committed transaction of \d+ block\(s\)$/);
  t.is((await fsckImage(path)).stats.replayableJournals, 0);
  t.is((await readBack(path, '/late')).data, 'committed, not written home');
});

test('an image in use is refused and left as it was; bad images and bad input exit 8', async (t) => {
  const path = await imageWithTree(t);
  const { ino } = await readBack(path, '/d/f');
  await withDevice(path, (dev) => changeInode(dev, ino, (inode) => (inode.nlink = 5)));
  const image = await readFile(path);
  // A running platform's lock: this very process holds it.
  await writeFile(await imageLockPath(path), JSON.stringify({ pid: process.pid, holder: 'hvshare up --state x' }));
  const refused = await hvshare('fsck', path, '--repair');
  t.is(refused.code, 8);
  t.regex(refused.stderr, new RegExp(`fsck --repair .*: .* is in use by hvshare up --state x \\(pid ${process.pid}\\): lock file .*\\.lock \\(stop the platform first\\); nothing was changed`));
  t.true((await readFile(path)).equals(image));
  // A lock left by a process that is gone is taken over.
  await writeFile(await imageLockPath(path), JSON.stringify({ pid: 2 ** 22 + 1, holder: 'hvshare up' }));
  await repair(t, path, 1);
  const missing = await hvshare('fsck', `${path}.missing`, '--repair');
  t.is(missing.code, 8);
  t.regex(missing.stderr, /no such file or directory.*nothing was changed/);
  const garbage = `${path}.garbage`;
  const handle = await open(garbage, 'w');
  await handle.write(patternBytes(BLOCK_SIZE * 4, 3));
  await handle.close();
  const notVolume = await hvshare('fsck', garbage, '--repair');
  t.is(notVolume.code, 8, notVolume.stdout);
  t.regex(notVolume.stderr, /fsck --repair .*garbage: .*nothing was changed/);
});

test('hvshare up holds its images: fsck --repair refuses one while it runs, and up refuses one being repaired', async (t) => {
  const platform = testPlatform('hvshare-repair-up-');
  await platform.start();
  t.teardown(() => platform.stop());
  const image = join(platform.state, 'shared.img');
  const refused = await hvshare('fsck', image, '--repair');
  t.is(refused.code, 8, refused.stdout);
  t.regex(refused.stderr, /is in use by hvshare up --state .* \(pid \d+\): lock file .*shared\.img\.lock \(stop the platform first\); nothing was changed/);
  t.true((await hvshare('fsck', image)).code === 0, 'a read-only check still runs');
  // Another spelling of the same image finds the same lock.
  const link = join(platform.dir, 'alias.img');
  await symlink(image, link);
  const viaLink = await hvshare('fsck', link, '--repair');
  t.is(viaLink.code, 8);
  t.regex(viaLink.stderr, /is in use by hvshare up/);

  const dir = await tempImage(0);
  t.teardown(() => dir.cleanup());
  const state = join(dir.dir, 'state');
  await mkdir(state);
  await writeFile(await imageLockPath(join(state, 'shared.img')), JSON.stringify({ pid: process.pid, holder: 'hvshare fsck --repair' }));
  const err = await startUp(state, join(dir.dir, 'mnt')).then(
    () => null,
    (e: Error) => e.message,
  );
  t.regex(err ?? 'it started', /shared\.img is in use by hvshare fsck --repair \(pid \d+\): lock file/);
});
