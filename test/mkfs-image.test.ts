import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatNewImage, minimumVolumeBytes } from '../fs/mkfs.js';
import { exited, fuseMountsUnder, HVSHARE, hvshare, sh, startUp } from './helpers/cli.js';
import { MiB, tempDir } from './helpers/platform.js';
import { fsckImage } from './helpers/volume.js';

test('mkfs refuses a size below the layout\'s minimum, names it, and leaves no file', async (t) => {
  const dir = await tempDir(t, 'hvshare-mkfs-');
  const image = join(dir, 'vol.img');
  t.is(minimumVolumeBytes({ slots: 8 }), 16916480);
  for (const size of ['1.5M', '16M']) {
    const r = await hvshare('mkfs', image, '--size', size);
    t.is(r.code, 1, size);
    t.is(r.stderr, `hvshare: --size ${size} is too small: 8 journal slots need at least 16916480 bytes (17M)\n`);
  }
  const two = await hvshare('mkfs', image, '--size', '4M', '--slots', '2');
  t.regex(two.stderr, /--size 4M is too small: 2 journal slots need at least 4284416 bytes \(5M\)/);
  t.deepEqual(await readdir(dir), [], 'no image and no temporary file');
  // The figure is exact: one byte-block less fails, the minimum itself formats and checks clean.
  t.is((await hvshare('mkfs', image, '--size', String(16916480 - 4096))).code, 1);
  const made = await hvshare('mkfs', image, '--size', '16916480');
  t.is(made.code, 0, made.stderr);
  t.true((await fsckImage(image)).ok);
  t.deepEqual(await readdir(dir), ['vol.img']);
});

test('a failed format leaves what was there and no temporary file', async (t) => {
  const dir = await tempDir(t, 'hvshare-mkfs-');
  // The rename into place fails: the target is a folder.
  const folder = join(dir, 'taken');
  await mkdir(folder);
  await t.throwsAsync(formatNewImage(folder, 32 * MiB));
  t.deepEqual(await readdir(dir), ['taken']);
  t.true((await stat(folder)).isDirectory());
  // A layout that does not fit fails before any file is made.
  await t.throwsAsync(formatNewImage(join(dir, 'small.img'), 8 * MiB), { message: /too small.*need at least 16916480 bytes/ });
  t.deepEqual(await readdir(dir), ['taken']);
});

test('mkfs killed at any moment leaves no image or a whole one, never a half-formatted one', async (t) => {
  const dir = await tempDir(t, 'hvshare-mkfs-');
  const image = join(dir, 'vol.img');
  let whole = 0;
  for (let attempt = 0; attempt < 10; attempt++) {
    const child = spawn('node', [HVSHARE, 'mkfs', image, '--size', '256M', '--force'], { stdio: 'ignore' });
    // From before node has loaded to after mkfs has finished (about 0.3-0.5 s on this machine).
    await sleep(attempt * 60);
    child.kill('SIGKILL');
    await exited(child);
    const files = (await readdir(dir)).filter((f) => f !== '.vol.img.formatting');
    if (files.length === 0) continue;
    t.deepEqual(files, ['vol.img']);
    const report = await fsckImage(image);
    t.true(report.ok, `attempt ${attempt}: ${report.errors.join('; ')}`);
    whole++;
  }
  t.log(`${whole} of 10 kills came after the rename`);
  // A leftover temporary file is simply replaced by the next format.
  const made = await hvshare('mkfs', image, '--size', '64M', '--force');
  t.is(made.code, 0, made.stderr);
  t.deepEqual(await readdir(dir), ['vol.img']);
});

test('up killed during its first format leaves a state the next up boots', async (t) => {
  const dir = await tempDir(t, 'hvshare-mkfs-');
  const state = join(dir, 'state');
  const mnt = join(dir, 'mnt');
  t.teardown(async () => {
    for (const m of await fuseMountsUnder(dir)) await sh(`fusermount -uz '${m}'`);
  });
  for (let attempt = 0; attempt < 5; attempt++) {
    const child = spawn('node', [HVSHARE, 'up', '--state', state, '--mount-root', mnt, '--json'], { stdio: 'ignore' });
    // Node's start, the store, then the format of the 256 MiB image: cut somewhere along the way.
    await sleep(150 + attempt * 100);
    child.kill('SIGKILL');
    await exited(child);
    for (const m of await fuseMountsUnder(mnt)) await sh(`fusermount -uz '${m}'`);
    const images = (await readdir(state).catch(() => [] as string[])).filter((f) => f === 'shared.img');
    if (images.length > 0) t.true((await fsckImage(join(state, 'shared.img'))).ok, `attempt ${attempt}`);
  }
  const up = await startUp(state, mnt);
  const both = await sh(`echo booted > '${mnt}/dom1/x' && cat '${mnt}/dom2/x'`);
  up.child.kill('SIGINT');
  t.is(await exited(up.child), 0, up.stderr());
  t.is(both.stdout, 'booted\n', both.stderr);
});
