/**
 * Coherence between filesystem instances sharing one volume through per-resource cluster locks: what one
 * instance wrote and released is what the other reads next; instances working on their own files never revoke
 * each other; caches survive as long as nobody else changes what they hold; concurrent operations make
 * progress; a dead instance's committed journal is replayed before any of its locks passes on.
 */
import test from 'ava';
import { IoError, type BlockDevice, type WriteOptions } from '../fs/block-device.js';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { FileSystem } from '../fs/filesystem.js';
import { fsck } from '../fs/fsck.js';
import { LocalLockService } from '../fs/local-lock-service.js';
import { replayJournal } from '../fs/journal.js';
import { mkfs } from '../fs/mkfs.js';
import { O_RDONLY, O_RDWR, O_CREAT } from '../fs/vfs.js';
import { errno, patternBytes, SMALL_FS, tempImage } from './fs-helpers.js';

/** Two instances on one volume; `now` is their clock (the lock client's hold and sharing windows run on it). */
async function twoInstances(now?: () => number) {
  const image = await tempImage(32 << 20);
  const devA = await FileBlockDevice.open(image.path);
  const devB = await FileBlockDevice.open(image.path);
  await mkfs(devA, SMALL_FS);
  const locks = new LocalLockService();
  const clientA = locks.client();
  const a = await FileSystem.mount(devA, { slot: 0, locks: clientA, commitIntervalMs: 0, now });
  const b = await FileSystem.mount(devB, { slot: 1, locks: locks.client(), commitIntervalMs: 0, now });
  return {
    image, devA, devB, locks, clientA, a, b,
    /** Both instances unmounted (their journals committed), then the volume checked. */
    async unmountAndCheck() {
      await a.unmount();
      await b.unmount();
      return fsck(devA);
    },
    async close() {
      await a.unmount().catch(() => {});
      await b.unmount().catch(() => {});
      await devA.close();
      await devB.close();
      await image.cleanup();
    },
  };
}

async function put(fs: FileSystem, path: string, data: Uint8Array): Promise<void> {
  const fh = await fs.open(path, O_CREAT | O_RDWR);
  await fs.write(fh, 0, data);
  await fs.release(fh);
}

async function get(fs: FileSystem, path: string): Promise<Uint8Array> {
  const fh = await fs.open(path, O_RDONLY);
  const data = await fs.read(fh, 0, 8 << 20);
  await fs.release(fh);
  return data;
}

test('what one instance writes and releases, the other reads next', async (t) => {
  const s = await twoInstances();
  for (let round = 0; round < 20; round++) {
    const [writer, reader] = round % 2 ? [s.a, s.b] : [s.b, s.a];
    const data = patternBytes(1000 + round * 37_000, round);
    await put(writer, '/shared', data);
    await writer.mkdir(`/dir${round}`, 0o755);
    t.deepEqual(await get(reader, '/shared'), data, 'sizes grow every round, so the file is exactly the last write');
    t.true((await reader.readdir('/')).includes(`dir${round}`));
  }
  t.true(s.locks.stats.revokes >= 19, `revokes: ${s.locks.stats.revokes}`);
  t.true(s.a.cacheStats.locks.drops > 5 && s.b.cacheStats.locks.drops > 5);
  await s.close();
});

test('instances creating files in their own directories at the same time do not revoke each other', async (t) => {
  const s = await twoInstances();
  await s.a.mkdir('/a', 0o755);
  await s.b.mkdir('/b', 0o755);
  const before = s.locks.stats.revokes;
  const work = async (fs: FileSystem, dir: string) => {
    for (let i = 0; i < 100; i++) {
      await put(fs, `/${dir}/f${i}`, patternBytes(100 + i, i));
      await fs.getattr(`/${dir}/f${i}`);
    }
  };
  await Promise.all([work(s.a, 'a'), work(s.b, 'b')]);
  t.true(s.locks.stats.revokes - before <= 2, `revokes: ${s.locks.stats.revokes - before}`);
  t.is((await s.b.readdir('/a')).length, 100);
  t.deepEqual(await get(s.a, '/b/f99'), patternBytes(199, 99));
  await s.close();
});

test('re-reading an unchanged file reads nothing from the device; a change elsewhere is seen', async (t) => {
  const s = await twoInstances();
  const data = patternBytes(8 << 20, 3);
  await put(s.a, '/big', data);
  // Buffer.equals: ava's deepEqual takes seconds on 8 MiB.
  const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
  t.true(same(await get(s.b, '/big'), data));
  const reads = s.b.cacheStats.data.dataReads;
  const misses = s.b.cacheStats.misses;
  t.true(same(await get(s.b, '/big'), data));
  t.is(s.b.cacheStats.data.dataReads, reads, 'file pages come from the page cache');
  t.is(s.b.cacheStats.misses, misses, 'metadata comes from the block cache');
  const fh = await s.a.open('/big', O_RDWR);
  await s.a.write(fh, 4096, patternBytes(10, 9));
  await s.a.release(fh);
  const changed = data.slice();
  changed.set(patternBytes(10, 9), 4096);
  t.true(same(await get(s.b, '/big'), changed));
  t.true(s.b.cacheStats.data.dataReads > reads);
  await s.close();
});

test('a lookup in a big directory reads one of its blocks; the index follows the other instance\'s changes', async (t) => {
  const s = await twoInstances();
  await s.a.mkdir('/big', 0o755);
  const long = 'file-with-a-long-name-'.repeat(4);
  for (let i = 0; i < 1500; i++) await s.a.release(await s.a.create(`/big/${long}${i}`, 0o644));
  const blocks = (await s.a.getattr('/big')).size / 4096;
  t.true(blocks >= 30, `${blocks} directory blocks`);
  const hits = async (path: string) => {
    const before = s.a.cacheStats.hits + s.a.cacheStats.misses;
    await s.a.getattr(path);
    return s.a.cacheStats.hits + s.a.cacheStats.misses - before;
  };
  // Root inode, its directory block, /big's inode, one block of /big, the file's inode, plus a map block or two.
  const used = await hits(`/big/${long}1499`);
  t.true(used < 10, `looking up the last name took ${used} cache lookups, not one per directory block (${blocks})`);
  t.is(await errno(s.a.getattr('/big/missing')), 'ENOENT');
  await s.b.unlink(`/big/${long}1499`);
  await s.b.release(await s.b.create('/big/new', 0o644));
  await s.b.rename(`/big/${long}3`, '/big/renamed');
  t.is(await errno(s.a.getattr(`/big/${long}1499`)), 'ENOENT');
  t.is(await errno(s.a.getattr(`/big/${long}3`)), 'ENOENT');
  t.true((await s.a.getattr('/big/new')).ino > 0);
  t.true((await s.a.getattr('/big/renamed')).ino > 0);
  // A's own changes keep its index current: the free slot B left is reused, every name is where it says.
  await s.a.unlink(`/big/${long}700`);
  await s.a.release(await s.a.create('/big/again', 0o644));
  const names = await s.a.readdir('/big');
  t.is(names.length, 1500);
  for (const name of names) await s.a.getattr(`/big/${name}`);
  const report = await s.unmountAndCheck();
  t.deepEqual(report.errors, []);
  await s.close();
});

test('statahead: stats after a listing find their locks asked for and their inodes read ahead, and stay exact', async (t) => {
  const s = await twoInstances();
  await s.a.mkdir('/tree', 0o755);
  for (let i = 0; i < 200; i++) await put(s.a, `/tree/f${i}`, patternBytes(i + 1, i));
  const names = await s.b.readdir('/tree');
  t.is(names.length, 200);
  const locks = s.b.cacheStats.locks;
  const [grants, waits] = [locks.grants, s.b.cacheStats.misses];
  // A changes one file B's statahead may already cover: the lock goes back and B reads it again.
  await put(s.a, '/tree/f150', patternBytes(5000, 9));
  for (const name of names) {
    const size = (await s.b.getattr(`/tree/${name}`)).size;
    t.is(size, name === 'f150' ? 5000 : Number(name.slice(1)) + 1, name);
  }
  t.true(s.b.cacheStats.locks.prefetched >= 150, `${s.b.cacheStats.locks.prefetched} locks asked for ahead`);
  t.true(s.b.cacheStats.readAhead >= 150, `${s.b.cacheStats.readAhead} inode blocks read ahead`);
  t.true(s.b.cacheStats.misses - waits < 50, `${s.b.cacheStats.misses - waits} inode reads waited for`);
  t.true(s.b.cacheStats.locks.grants - grants >= 200);
  // rm -r through B of what A wrote again: the unlinks find their inode locks asked for ahead, exclusively.
  for (let i = 0; i < 100; i++) await put(s.a, `/tree/f${i}`, patternBytes(10, i));
  const prefetched = s.b.cacheStats.locks.prefetched;
  for (const name of await s.b.readdir('/tree')) await s.b.unlink(`/tree/${name}`);
  t.true(s.b.cacheStats.locks.prefetched - prefetched >= 50, `${s.b.cacheStats.locks.prefetched - prefetched} locks asked for ahead`);
  t.deepEqual(await s.a.readdir('/tree'), []);
  t.deepEqual((await s.unmountAndCheck()).errors, []);
  await s.close();
});

test('removals in a row from a directory never listed here look ahead too (a view answered the readdir): one in a directory alone does not', async (t) => {
  const s = await twoInstances();
  await s.a.mkdir('/rm', 0o755);
  for (let i = 0; i < 60; i++) await put(s.a, `/rm/f${i}`, patternBytes(i + 1, i));
  await put(s.a, '/lone', patternBytes(3, 1));
  // B never lists /rm (its view answered the readdir): each unlink would wait for A's lock in turn.
  const before = s.b.cacheStats.locks.prefetched;
  await s.b.unlink('/lone');
  await s.b.unlink('/rm/f0');
  t.is(s.b.cacheStats.locks.prefetched, before, 'a single removal from a directory asks for nothing ahead');
  for (let i = 1; i < 60; i++) await s.b.unlink(`/rm/f${i}`);
  t.true(s.b.cacheStats.locks.prefetched - before >= 32, `${s.b.cacheStats.locks.prefetched - before} locks asked for ahead`);
  t.deepEqual(await s.a.readdir('/rm'), []);
  t.deepEqual((await s.unmountAndCheck()).errors, []);
  await s.close();
});

test('sequential reads are read ahead; a write, here or in the other instance, is never hidden by a read ahead', async (t) => {
  const s = await twoInstances();
  const size = 3 << 20;
  await put(s.a, '/seq', patternBytes(size, 1));
  const chunk = 128 << 10;
  const fh = await s.b.open('/seq', O_RDWR);
  const expected = Buffer.from(patternBytes(size, 1));
  for (let pos = 0; pos < size; pos += chunk) {
    if (pos === 8 * chunk) {
      // B changes a block its read ahead has asked for already; A then changes one further on.
      await s.b.write(fh, 9 * chunk + 100, patternBytes(10, 7));
      expected.set(patternBytes(10, 7), 9 * chunk + 100);
    }
    if (pos === 12 * chunk) {
      await put(s.a, '/seq', patternBytes(size, 2));
      expected.set(patternBytes(size, 2));
    }
    const got = await s.b.read(fh, pos, chunk);
    t.true(Buffer.from(got).equals(expected.subarray(pos, pos + chunk)), `bytes at ${pos}`);
  }
  await s.b.release(fh);
  t.true(s.b.cacheStats.data.readAhead > 0, `${s.b.cacheStats.data.readAhead} blocks read ahead`);
  await s.close();
});

test('a small file opened for reading is read at open; its first read waits for that, and a change is never hidden by it', async (t) => {
  const s = await twoInstances();
  const first = patternBytes(20_000, 1);
  await put(s.a, '/small', first);
  const before = { ...s.b.cacheStats.data };
  const fh = await s.b.open('/small', O_RDONLY);
  t.is(s.b.cacheStats.data.dataReads, before.dataReads + 1, 'its blocks are asked for at open, in one request');
  t.true(Buffer.from(await s.b.read(fh, 0, 1 << 20)).equals(first));
  t.is(s.b.cacheStats.data.dataReads, before.dataReads + 1, 'the read asks the device for nothing more');
  t.is(s.b.cacheStats.data.readAhead, before.readAhead + 5);
  // The other instance rewrites it between this open and the read: the blocks read at open are not served.
  const second = patternBytes(20_000, 2);
  const again = await s.b.open('/small', O_RDONLY);
  await put(s.a, '/small', second);
  t.true(Buffer.from(await s.b.read(again, 0, 1 << 20)).equals(second));
  await s.b.release(fh);
  await s.b.release(again);
  // A file too big for it is read as before: nothing at open.
  await put(s.a, '/big', patternBytes(33 * 4096, 3));
  const reads = s.b.cacheStats.data.dataReads;
  const big = await s.b.open('/big', O_RDONLY);
  t.is(s.b.cacheStats.data.dataReads, reads);
  await s.b.release(big);
  await s.close();
});

test('a reader that holds the lock keeps its cache; the generation tells it when to drop it', async (t) => {
  const s = await twoInstances();
  await put(s.a, '/f', patternBytes(10, 1));
  await s.b.getattr('/f');
  const drops = s.b.cacheStats.locks.drops;
  for (let i = 0; i < 5; i++) await s.b.getattr('/f');
  await s.a.getattr('/f'); // a shared request: b stays a holder, nothing changes
  await s.b.getattr('/f');
  t.is(s.b.cacheStats.locks.drops, drops, 'no writer in between: cache kept');
  await s.a.mkdir('/x', 0o755);
  await s.b.getattr('/x');
  t.true(s.b.cacheStats.locks.drops > drops, 'a writer in between: cache dropped');
  await s.close();
});

test('concurrent operations from both instances all complete, volume stays consistent', async (t) => {
  const s = await twoInstances();
  const work = (fs: FileSystem, tag: string) =>
    Promise.all(
      Array.from({ length: 25 }, async (_, i) => {
        await put(fs, `/${tag}${i}`, patternBytes(5000 + i * 300, i));
        await fs.getattr(`/${tag}${i}`);
        if (i % 3 === 0) await fs.unlink(`/${tag}${i}`);
      }),
    );
  await Promise.all([work(s.a, 'a'), work(s.b, 'b'), work(s.a, 'c'), work(s.b, 'd')]);
  const names = (await s.a.readdir('/')).sort();
  t.is(names.length, 4 * 25 - 4 * 9);
  for (const name of names) {
    const i = Number(name.slice(1));
    t.deepEqual(await get(s.b, `/${name}`), patternBytes(5000 + i * 300, i));
  }
  const report = await s.unmountAndCheck();
  t.deepEqual([...report.errors, ...report.warnings], []);
  await s.close();
});

/** Passes I/O through until fenced; then every write and flush fails, as for a domain the monitor cut off. */
class FencedDevice implements BlockDevice {
  fenced = false;
  flushesUntilFence = -1;
  constructor(private readonly inner: BlockDevice) {}
  get sizeBytes() { return this.inner.sizeBytes; }
  get readOnly() { return this.inner.readOnly; }
  read(offset: number, dst: Uint8Array) { return this.inner.read(offset, dst); }
  async write(offset: number, src: Uint8Array, options?: WriteOptions) {
    if (options?.barrier) this.flushed();
    if (this.fenced) throw new IoError('EIO', 'fenced');
    await this.inner.write(offset, src, options);
    if (options?.fua) this.flushed();
  }
  async flush() {
    if (this.fenced) throw new IoError('EIO', 'fenced');
    await this.inner.flush();
    this.flushed();
  }
  /** A FLUSH, a barrier write (a flush before it) or a FUA write (one after it): counts towards the fence. */
  private flushed() {
    if (this.flushesUntilFence > 0 && --this.flushesUntilFence === 0) this.fenced = true;
  }
  discard(offset: number, length: number) { return this.inner.discard(offset, length); }
  allocBuffer(size: number) { return this.inner.allocBuffer(size); }
  freeBuffer(buf: Uint8Array) { this.inner.freeBuffer(buf); }
  close() { return this.inner.close(); }
}

test('a domain dying after its commit record: its journal is replayed before any of its locks passes on', async (t) => {
  const image = await tempImage(32 << 20);
  const raw = await FileBlockDevice.open(image.path);
  const devB = await FileBlockDevice.open(image.path);
  await mkfs(raw, SMALL_FS);
  const locks = new LocalLockService();
  const fenced = new FencedDevice(raw);
  const clientA = locks.client();
  const a = await FileSystem.mount(fenced, { slot: 2, locks: clientA, commitIntervalMs: 0 });
  const b = await FileSystem.mount(devB, { slot: 3, locks: locks.client(), commitIntervalMs: 0 });
  const data = patternBytes(200_000, 5);
  await a.mkdir('/from-a', 0o755);
  await put(a, '/from-a/file', data);
  // Die right after the commit record is written (the log, a barrier write, and the record): the home writes,
  // the next barrier, are refused, so the blocks never reach home.
  fenced.flushesUntilFence = 2;
  t.is(await errno(a.sync()), 'EIO');
  const events: string[] = [];
  // b waits for the locks a died with (the root directory, /from-a, the file).
  const read = get(b, '/from-a/file').then((got) => {
    events.push('read');
    return got;
  });
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.deepEqual(events, [], 'nothing passes on while a is not fenced and replayed');
  await locks.kill(clientA, async () => {
    events.push('replay');
    t.true((await replayJournal(devB, 2)) > 0);
  });
  t.deepEqual(await read, data);
  t.deepEqual(events, ['replay', 'read']);
  await b.unmount();
  const report = await fsck(devB);
  t.deepEqual([...report.errors, ...report.warnings], []);
  await raw.close();
  await devB.close();
  await image.cleanup();
});

test('a file handed between instances goes back to the lock service on close, committed; others keep their locks', async (t) => {
  // A clock at a tenth of the real pace: a machine slowed by other work must not stretch a round of this test past
  // the window in which a file counts as shared (the test is about what is handed back, not about how fast).
  const start = Date.now();
  const s = await twoInstances(() => start + (Date.now() - start) / 10);
  const commits = () => s.a.cacheStats.journal!.commits;
  const before = commits();
  for (let i = 0; i < 5; i++) await put(s.a, '/solo', patternBytes(1000, i));
  await s.a.getattr('/'); // runs after anything the closes queued
  t.is(commits(), before, 'nobody else wants /solo: no commit on close');
  t.is(await s.a.heldLock('/solo'), 'exclusive');
  await put(s.a, '/shared', patternBytes(1000, 1));
  await get(s.b, '/shared'); // b's revoke: a commits then
  const afterRevoke = commits();
  t.true(afterRevoke > before);
  // From now on both know /shared is shared: each gives it back when it closes it.
  await put(s.a, '/shared', patternBytes(1000, 2));
  await s.a.getattr('/');
  t.is(commits(), afterRevoke + 1, 'closing a file b used lately commits it');
  const revokes = s.locks.stats.revokes;
  for (let round = 3; round < 8; round++) {
    t.deepEqual(await get(s.b, '/shared'), patternBytes(1000, round - 1));
    await s.b.getattr('/');
    await put(s.a, '/shared', patternBytes(1000, round));
    await s.a.getattr('/');
  }
  t.is(s.locks.stats.revokes, revokes, 'handed back and forth without a single revoke');
  await s.close();
});

test('names made in a directory another instance reads go down to shared with it: their lookups there revoke nothing, but for a file still open or a directory of more than 64 new names', async (t) => {
  const s = await twoInstances();
  await s.a.mkdir('/d', 0o755);
  await s.a.mkdir('/e', 0o755);
  for (let i = 0; i < 5; i++) await put(s.a, `/d/made${i}`, patternBytes(100, i));
  const open = await s.a.open('/e/open', O_CREAT | O_RDWR);
  t.is(await s.a.heldLock('/d/made0'), 'exclusive');

  // b reads the directory: a commits it and answers; the files a made there and closed follow it down to shared.
  t.deepEqual((await s.b.readdir('/d')).sort(), ['made0', 'made1', 'made2', 'made3', 'made4']);
  await s.a.getattr('/'); // runs after the hand-downs a queued
  for (let i = 0; i < 5; i++) t.is(await s.a.heldLock(`/d/made${i}`), 'shared', `made${i}`);
  const revokes = s.locks.stats.revokes;
  for (let i = 0; i < 5; i++) t.deepEqual(await get(s.b, `/d/made${i}`), patternBytes(100, i));
  t.is(s.locks.stats.revokes, revokes, 'b looked up and read five new files without a revoke');

  // More new names than are handed down at once (64): left to b's statahead, as before.
  await s.a.mkdir('/big', 0o755);
  for (let i = 0; i < 65; i++) await s.a.release(await s.a.open(`/big/f${i}`, O_CREAT | O_RDWR));
  t.is((await s.b.readdir('/big')).length, 65);
  await s.a.getattr('/');
  t.is(await s.a.heldLock('/big/f0'), 'exclusive', 'a directory of 65 new names: none handed down');

  t.deepEqual(await s.b.readdir('/e'), ['open']);
  await s.a.getattr('/');
  t.is(await s.a.heldLock('/e/open'), 'exclusive', 'a file open here is being written: kept');
  const before = s.locks.stats.revokes;
  await s.b.getattr('/e/open');
  t.is(s.locks.stats.revokes, before + 1, 'its lookup revokes it');
  await s.a.release(open);
  await s.close();
});
