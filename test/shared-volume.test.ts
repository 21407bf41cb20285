import test from 'ava';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { O_RDONLY, O_RDWR, O_CREAT } from '../fs/vfs.js';
import type { DomainHandle, PlatformEvent } from '../hypervisor/toolstack.js';
import { domainVfs } from '../hypervisor/domain-vfs.js';
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
