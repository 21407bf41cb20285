/**
 * Corruption found at run time, on a real platform (monitor and domains in worker threads, a real image file):
 * a flipped data byte fails its checksum on read (EIO, an event), a block pointer into metadata is refused before
 * it is followed (EIO), and either turns the volume read-only for every domain (EROFS, shown by `hvshare ps`),
 * except when found through a read-only grant, which may not stop the others writing.
 */
import test from 'ava';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { decodeInode, encodeInode } from '../fs/inode.js';
import { BLOCK_SIZE, Geometry, HEADER_SIZE, readSuperblock, resealBlock } from '../fs/layout.js';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { fsck } from '../fs/fsck.js';
import { O_CREAT, O_RDONLY, O_RDWR, O_WRONLY, type Vfs } from '../fs/vfs.js';
import { domainVfs } from '../hypervisor/domain-vfs.js';
import { StoredPlatform } from '../hypervisor/platform-boot.js';
import type { NewEvent } from '../hypervisor/platform-store.js';
import { hvshare } from './helpers/cli.js';
import { errno, patternBytes } from './fs-helpers.js';
import { tempDir } from './helpers/platform.js';

interface Booted {
  running: StoredPlatform;
  state: string;
  image: string;
  events: NewEvent[];
  vfs: (name: string) => Vfs;
}

async function boot(t: Parameters<typeof tempDir>[0]): Promise<Booted> {
  const state = join(await tempDir(t, 'hvshare-volume-errors-'), 'state');
  const events: NewEvent[] = [];
  const running = await StoredPlatform.boot({ stateDir: state, onEvent: (e) => events.push(e) });
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await running.shutdown('test teardown');
  });
  const stop = running.shutdown.bind(running);
  running.shutdown = async (...args) => {
    stopped = true;
    return stop(...args);
  };
  return { running, state, image: join(state, 'shared.img'), events, vfs: (name) => domainVfs(running.platform.domain(name)) };
}

/** Writes `data` to `path` through `vfs` and fsyncs it; returns the file's inode number. */
async function writeFile(vfs: Vfs, path: string, data: Uint8Array): Promise<number> {
  const fh = await vfs.create(path, 0o644, O_CREAT | O_RDWR);
  await vfs.write(fh, 0, data);
  await vfs.fsync(fh, false);
  await vfs.release(fh);
  return (await vfs.getattr(path)).ino;
}

async function readAll(vfs: Vfs, path: string, length: number): Promise<Uint8Array> {
  const fh = await vfs.open(path, O_RDONLY);
  try {
    return await vfs.read(fh, 0, length);
  } finally {
    await vfs.release(fh);
  }
}

/** Changes block `block` of the image behind the platform's back (as a failing disk or a stray writer would). */
async function patchBlock(image: string, block: number, change: (data: Uint8Array) => void): Promise<void> {
  const file = await open(image, 'r+');
  try {
    const data = new Uint8Array(BLOCK_SIZE);
    await file.read(data, 0, BLOCK_SIZE, block * BLOCK_SIZE);
    change(data);
    await file.write(data, 0, BLOCK_SIZE, block * BLOCK_SIZE);
  } finally {
    await file.close();
  }
}

async function inodeOf(image: string, ino: number) {
  const dev = await FileBlockDevice.open(image);
  try {
    const data = new Uint8Array(BLOCK_SIZE);
    await dev.read(ino * BLOCK_SIZE, data);
    return { inode: decodeInode(data, HEADER_SIZE, ino), geometry: new Geometry(await readSuperblock(dev)) };
  } finally {
    await dev.close();
  }
}

async function eventually(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('a flipped data byte: EIO and an event on read; read-only for every domain (found through a read-write grant); fsck names the block', async (t) => {
  const { running, state, image, events, vfs } = await boot(t);
  const data = patternBytes(3 * BLOCK_SIZE, 7);
  const ino = await writeFile(vfs('dom1'), '/f', data);
  await writeFile(vfs('dom1'), '/intact', patternBytes(5000, 8));
  const { inode } = await inodeOf(image, ino);
  await patchBlock(image, inode.direct[1], (block) => (block[100] ^= 0x01));

  // Found through dom3's read-only grant: logged, but dom3 may not stop the others writing.
  t.is(await errno(readAll(vfs('dom3'), '/f', data.length)), 'EIO');
  await eventually('the read-only grant\'s event', () => events.some((e) => e.type === 'volume-error' && e.domain === 'dom3'));
  t.regex(events.find((e) => e.type === 'volume-error')!.detail!, new RegExp(`read-only grant .*inode ${ino}: data checksum mismatch in file block 1 \\(volume block ${inode.direct[1]}\\)`));
  t.is(await errno(vfs('dom1').mkdir('/still-writable', 0o755)), 'OK');

  t.is(await errno(readAll(vfs('dom2'), '/f', data.length)), 'EIO', 'the reader gets EIO');
  await eventually('the event', () => events.some((e) => e.type === 'volume-error' && e.domain === 'dom2'));
  t.regex(events.find((e) => e.type === 'volume-error' && e.domain === 'dom2')!.detail!, /turned read-only for every domain: inode \d+: data checksum mismatch/);
  t.true(Buffer.from(await readAll(vfs('dom2'), '/intact', 5000)).equals(patternBytes(5000, 8)), 'intact files stay readable');
  for (const name of ['dom1', 'dom2']) {
    const fh = await vfs(name).open('/intact', O_RDONLY);
    t.is(await errno(vfs(name).mkdir(`/${name}-new`, 0o755)), 'EROFS', `${name} may change nothing`);
    t.is(await errno(vfs(name).open('/intact', O_WRONLY)), 'EROFS', `${name} may open nothing for writing`);
    await vfs(name).release(fh);
  }
  const ps = async () => JSON.parse((await hvshare('ps', '--state', state, '--json')).stdout) as { domains: { name: string; reason?: string }[] };
  await eventually('hvshare ps to show it', async () => (await ps()).domains.filter((d) => /volume shared read-only \(errors\): inode/.test(d.reason ?? '')).length === 3);
  const table = await hvshare('ps', '--state', state);
  t.regex(table.stdout, /dom1 .*volume shared read-only \(errors\)/);

  await running.shutdown('test');
  const dev = await FileBlockDevice.open(image);
  const report = await fsck(dev);
  await dev.close();
  const found = report.errors.filter((e) => /checksum/.test(e));
  t.is(found.length, 1, found.join('\n'));
  t.regex(found[0], new RegExp(`^inode ${ino} \\(/f\\): data checksum mismatch in file block 1 \\(block ${inode.direct[1]}\\)`));
});

test('a block pointer into metadata is refused before it is followed: EIO, and the volume is read-only for every domain', async (t) => {
  const { events, image, vfs } = await boot(t);
  const ino = await writeFile(vfs('dom1'), '/g', patternBytes(BLOCK_SIZE, 3));
  const { geometry } = await inodeOf(image, ino);
  const journalBlock = geometry.journalLog(2);
  await patchBlock(image, ino, (block) => {
    const inode = decodeInode(block, HEADER_SIZE, ino);
    inode.direct[0] = journalBlock;
    encodeInode(block, HEADER_SIZE, inode);
    resealBlock(block);
  });
  t.is(await errno(readAll(vfs('dom2'), '/g', BLOCK_SIZE)), 'EIO');
  await eventually('the event', () => events.some((e) => e.type === 'volume-error'));
  t.regex(events.find((e) => e.type === 'volume-error')!.detail!, new RegExp(`inode ${ino}: file block 0 points at block ${journalBlock}, outside the data area`));
  t.is(await errno(vfs('dom1').mkdir('/d', 0o755)), 'EROFS', 'the domain that did not find it is read-only too');
  t.is(await errno(vfs('dom2').unlink('/g')), 'EROFS');
});
