import test from 'ava';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { O_RDONLY, O_RDWR, O_CREAT } from '../fs/vfs.js';
import type { DomainHandle, PlatformEvent } from '../hypervisor/toolstack.js';
import { domainVfs } from '../hypervisor/domain-vfs.js';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { encodeSuperblock, readSuperblock } from '../fs/layout.js';
import { bootPlatform, MiB, tempDir } from './helpers/platform.js';
import { formattedImage, fsckImage } from './helpers/volume.js';

async function writeFile(d: DomainHandle, path: string, data: Uint8Array, fsync = false): Promise<void> {
  const vfs = domainVfs(d);
  const fh = await vfs.create(path, 0o644, O_RDWR | O_CREAT);
  for (let pos = 0; pos < data.length; pos += 1 << 20) await vfs.write(fh, pos, data.subarray(pos, pos + (1 << 20)));
  if (fsync) await vfs.fsync(fh, false);
  await vfs.release(fh);
}

async function readFile(d: DomainHandle, path: string): Promise<Buffer> {
  const vfs = domainVfs(d);
  const fh = await vfs.open(path, O_RDONLY);
  const parts: Uint8Array[] = [];
  for (let pos = 0; ; ) {
    const chunk = await vfs.read(fh, pos, 1 << 20);
    if (chunk.length === 0) break;
    parts.push(chunk);
    pos += chunk.length;
  }
  await vfs.release(fh);
  return Buffer.concat(parts);
}

async function sharedPlatform(t: Parameters<typeof tempDir>[0]) {
  const dir = await tempDir(t);
  const image = await formattedImage(dir, 64 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image }] });
  const events: PlatformEvent[] = [];
  platform.onEvent((e) => events.push(e));
  const boot = (name: string, slot: number, readOnly = false) =>
    platform.createDomain({ name, memoryBytes: 48 * MiB, grants: [{ volume: 'shared', readOnly }], filesystem: { slot } });
  return { image, platform, events, boot };
}

test('a file written and closed in one domain is what another domain reads next, through the lock service', async (t) => {
  const { image, platform, boot } = await sharedPlatform(t);
  const [dom1, dom2] = [await boot('dom1', 0), await boot('dom2', 1)];
  const data = randomBytes(3 * MiB + 123);
  await domainVfs(dom1).mkdir('/shared', 0o755);
  await writeFile(dom1, '/shared/a.bin', data);
  t.true((await readFile(dom2, '/shared/a.bin')).equals(data), 'dom2 reads what dom1 wrote');
  // And back: dom2 changes it, dom1 sees the change (its cache was dropped on the revoke).
  const changed = randomBytes(4096);
  const vfs2 = domainVfs(dom2);
  const fh = await vfs2.open('/shared/a.bin', O_RDWR);
  await vfs2.write(fh, 0, changed);
  await vfs2.release(fh);
  const seen = await readFile(dom1, '/shared/a.bin');
  t.true(seen.subarray(0, 4096).equals(changed));
  t.true(seen.subarray(4096).equals(data.subarray(4096)));
  await vfs2.rename('/shared/a.bin', '/shared/b.bin');
  t.deepEqual(await domainVfs(dom1).readdir('/shared'), ['b.bin']);
  t.true(platform.counters('dom1').REVOKES > 0 && platform.counters('dom2').REVOKES > 0, 'locks moved both ways by revocation');
  await platform.shutdown();
  const report = await fsckImage(image);
  t.true(report.ok, report.errors.join('\n'));
});

test('an inode another domain changed comes back with its lock: the grant brings the inode block, no read of it follows', async (t) => {
  const { platform, boot } = await sharedPlatform(t);
  const [dom1, dom2] = [await boot('dom1', 0), await boot('dom2', 1)];
  const [vfs1, vfs2] = [domainVfs(dom1), domainVfs(dom2)];
  await writeFile(dom1, '/f', randomBytes(100));
  t.is((await vfs2.getattr('/f')).mode & 0o777, 0o644);
  for (const mode of [0o600, 0o640, 0o604]) {
    // dom1 takes the inode's lock from dom2 and changes the inode; dom2 then holds nothing of it and must reread.
    await vfs1.chmod('/f', mode);
    const before = platform.counters('dom2');
    t.is((await vfs2.getattr('/f')).mode & 0o777, mode, 'dom2 sees what dom1 changed');
    const after = platform.counters('dom2');
    t.is(after.LOCKS - before.LOCKS, 1, 'one lock asked for: the inode');
    t.is(after.REQUESTS - before.REQUESTS, 1, 'and no other request: the inode block came with the grant');
  }
});

test('a name another domain added comes back with the directory\'s lock: the grant brings its inode and first block', async (t) => {
  const { platform, boot } = await sharedPlatform(t);
  const [dom1, dom2] = [await boot('dom1', 0), await boot('dom2', 1)];
  const [vfs1, vfs2] = [domainVfs(dom1), domainVfs(dom2)];
  await vfs1.mkdir('/d', 0o755);
  await writeFile(dom1, '/d/a', randomBytes(10));
  t.deepEqual(await vfs2.readdir('/d'), ['a']);
  for (const name of ['b', 'c', 'd']) {
    // dom1 adds a name: the directory's lock goes to dom1 exclusively and dom2 holds nothing of it any more.
    await writeFile(dom1, `/d/${name}`, randomBytes(10));
    const before = platform.counters('dom2');
    t.true((await vfs2.readdir('/d')).includes(name), 'dom2 lists what dom1 added');
    const after = platform.counters('dom2');
    t.is(after.LOCKS - before.LOCKS, 1, 'one lock asked for: the directory');
    t.is(after.REQUESTS - before.REQUESTS, 1, 'and no read: its inode and its block came with the grant');
  }
});

test('a read-only domain reads the volume and gets EROFS on writes', async (t) => {
  const { boot } = await sharedPlatform(t);
  const dom1 = await boot('dom1', 0);
  const dom3 = await boot('dom3', 2, true);
  await writeFile(dom1, '/hello.txt', Buffer.from('hello from dom1\n'));
  t.is((await readFile(dom3, '/hello.txt')).toString(), 'hello from dom1\n');
  await t.throwsAsync(domainVfs(dom3).mkdir('/nope', 0o755), { code: 'EROFS' });
  await t.throwsAsync(writeFile(dom3, '/hello.txt', Buffer.from('x')), { code: 'EROFS' });
  t.is((await domainVfs(dom1).getattr('/hello.txt')).size, 16);
});

test('a domain killed after fsync loses nothing: its journal is replayed before its locks pass on', async (t) => {
  const { image, platform, events, boot } = await sharedPlatform(t);
  const dom1 = await boot('dom1', 0);
  const dom2 = await boot('dom2', 1);
  const durable = randomBytes(2 * MiB);
  await writeFile(dom1, '/durable.bin', durable, true);
  // More writes in flight when it dies; they may or may not survive, but must not corrupt anything.
  const inFlight = writeFile(dom1, '/inflight.bin', randomBytes(4 * MiB)).catch(() => {});
  await sleep(5);
  await platform.killDomain('dom1');
  await inFlight;
  t.true((await readFile(dom2, '/durable.bin')).equals(durable), 'the fsynced file survives');
  t.true(events.some((e) => e.type === 'recovery' && e.domain === 'dom1'));
  await platform.shutdown();
  const report = await fsckImage(image);
  t.true(report.ok, report.errors.join('\n'));
});

test('lock names belong to a volume: domains on different volumes never revoke each other, sharers of one still do', async (t) => {
  const dir = await tempDir(t);
  const [a, b] = [await formattedImage(dir, 32 * MiB, 'a.img'), await formattedImage(dir, 32 * MiB, 'b.img')];
  const platform = await bootPlatform(t, { volumes: [{ name: 'a', path: a }, { name: 'b', path: b }] });
  const events: PlatformEvent[] = [];
  platform.onEvent((e) => events.push(e));
  const boot = (name: string, volume: string, slot: number) =>
    platform.createDomain({ name, memoryBytes: 32 * MiB, grants: [{ volume, readOnly: false }], filesystem: { slot } });
  const [onA, onB] = [await boot('on-a', 'a', 0), await boot('on-b', 'b', 0)];
  // Both change their volume over and over (each write takes its volume lock exclusively).
  for (let i = 0; i < 10; i++) {
    await Promise.all([writeFile(onA, `/a${i}`, randomBytes(8192)), writeFile(onB, `/b${i}`, randomBytes(8192))]);
  }
  t.is(platform.counters('on-a').REVOKES + platform.counters('on-b').REVOKES, 0, 'no revocation across volumes');
  // A second domain on volume a does take the lock away from the first, and the event names the volume.
  const alsoA = await boot('also-a', 'a', 1);
  t.is((await readFile(alsoA, '/a3')).length, 8192);
  await writeFile(alsoA, '/from-also-a', randomBytes(100));
  t.true(platform.counters('on-a').REVOKES > 0);
  t.is(platform.counters('on-b').REVOKES, 0);
  t.true(events.some((e) => e.type === 'revoke' && e.domain === 'on-a' && /of volume a\b/.test(e.detail)), JSON.stringify(events));
  for (const image of [a, b]) t.is((await fsckImage(image)).errors.length, 0, image);
});

test('per-inode locks keep writers of two directories apart; hundreds of inode locks (names past 2^12) are revoked and granted', async (t) => {
  const { platform, boot } = await sharedPlatform(t);
  const [dom1, dom2] = [await boot('dom1', 0), await boot('dom2', 1)];
  const [vfs1, vfs2] = [domainVfs(dom1), domainVfs(dom2)];
  await vfs1.mkdir('/one', 0o755);
  await vfs2.mkdir('/two', 0o755);
  const quiet = platform.counters('dom1').REVOKES + platform.counters('dom2').REVOKES;
  // Each writes files in its own directory: no lock of one is ever wanted by the other.
  await Promise.all([
    (async () => { for (let i = 0; i < 300; i++) await vfs1.release(await vfs1.create(`/one/f${i}`, 0o644)); })(),
    (async () => { for (let i = 0; i < 40; i++) await vfs2.release(await vfs2.create(`/two/f${i}`, 0o644)); })(),
  ]);
  t.true(platform.counters('dom1').REVOKES + platform.counters('dom2').REVOKES - quiet <= 4, 'writers of different directories do not trade locks');
  // dom1 holds some 300 inode locks (an inode's lock is named by its block address, past 4096 here): exclusively,
  // or shared once dom2 read their directory (fs/filesystem.ts, readBy). dom2 changing each revokes it either way.
  const before = platform.counters('dom1').REVOKES;
  const names = Array.from({ length: 300 }, (_, i) => `/one/f${i}`);
  await Promise.all(names.map((name) => vfs2.chmod(name, 0o600)));
  const stats = await Promise.all(names.map((name) => vfs2.getattr(name)));
  t.true(stats.every((s) => s.size === 0 && s.ino > 4096 && (s.mode & 0o777) === 0o600));
  t.true(platform.counters('dom1').REVOKES - before >= 300, `revokes posted to dom1: ${platform.counters('dom1').REVOKES - before}`);
});

test('a domain does not boot on a volume of an older format, and says which volume', async (t) => {
  const dir = await tempDir(t);
  const image = await formattedImage(dir, 64 * MiB);
  const dev = await FileBlockDevice.open(image);
  await dev.write(0, encodeSuperblock({ ...(await readSuperblock(dev)), version: 2 }));
  await dev.close();
  const platform = await bootPlatform(t, { volumes: [{ name: 'archive', path: image }] });
  const refused = await t.throwsAsync(
    platform.createDomain({ name: 'dom1', memoryBytes: 48 * MiB, grants: [{ volume: 'archive', readOnly: false }], filesystem: { slot: 0 } }),
  );
  t.regex(refused.message, /domain dom1 failed to boot: volume archive: .*format version 2 is no longer supported .*mkfs --force/);
});

test('file bytes through the data window: more requests in flight than it has slots, and larger than a slot, each lands where it belongs', async (t) => {
  const { platform, boot } = await sharedPlatform(t);
  const [dom1, dom2] = [await boot('dom1', 0), await boot('dom2', 1)];
  const vfs1 = domainVfs(dom1);
  // 40 chunks at once (the window has 16 slots), every fifth larger than a slot (moved the old way).
  const chunks = Array.from({ length: 40 }, (_, i) => randomBytes(i % 5 === 4 ? 200_000 : 128 * 1024 - i));
  const offsets = chunks.map((_, i) => i * 256 * 1024);
  const fh = await vfs1.create('/window.bin', 0o644, O_RDWR | O_CREAT);
  const written = await Promise.all(chunks.map((c, i) => dom1.writeFrom(fh, offsets[i]!, c, false)));
  t.deepEqual(written, chunks.map((c) => c.length));
  await vfs1.release(fh);
  for (const reader of [dom1, dom2]) {
    const rfh = await domainVfs(reader).open('/window.bin', O_RDONLY);
    const into = chunks.map((c) => new Uint8Array(c.length + 7));
    const read = await Promise.all(chunks.map((_, i) => reader.readInto(rfh, offsets[i]!, into[i]!)));
    await domainVfs(reader).release(rfh);
    const last = chunks.length - 1;
    // The last chunk ends the file: a read past its end gets fewer bytes; the others read on into the gap's zeros.
    t.is(read[last], chunks[last]!.length, `${reader.name}: the read at end of file is short`);
    chunks.forEach((c, i) => t.true(Buffer.from(into[i]!.subarray(0, c.length)).equals(c), `${reader.name}: chunk ${i}`));
  }
  void platform;
});
