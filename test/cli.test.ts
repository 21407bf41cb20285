import test from 'ava';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { encodeSuperblock, readSuperblock } from '../fs/layout.js';
import { hvshare } from './helpers/cli.js';
import { tempDir } from './helpers/platform.js';

test('mkfs and fsck: create, refuse to overwrite, check clean, report corruption with exit 1 and --json', async (t) => {
  const dir = await tempDir(t, 'hvshare-cli-');
  const image = join(dir, 'vol.img');
  const missing = await hvshare('mkfs', image);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /does not exist; give --size/);
  t.regex((await hvshare('mkfs', image, '--size', '12Q')).stderr, /bad size "12Q"/);
  const made = await hvshare('mkfs', image, '--size', '32M', '--slots', '4');
  t.is(made.code, 0, made.stderr);
  t.regex(made.stdout, /32M, 4 journal slots, formatted/);
  const again = await hvshare('mkfs', image, '--size', '32M');
  t.is(again.code, 1);
  t.regex(again.stderr, /exists; add --force/);
  t.regex((await hvshare('mkfs', image)).stderr, /already holds an hvshare filesystem/);

  const clean = await hvshare('fsck', image, '--json');
  t.is(clean.code, 0, clean.stderr);
  const report = JSON.parse(clean.stdout) as { ok: boolean; errors: string[]; stats: { directories: number } };
  t.true(report.ok);
  t.is(report.stats.directories, 1);

  const notAnImage = join(dir, 'junk.img');
  await writeFile(notAnImage, Buffer.alloc(1 << 20, 0x5a));
  const junk = await hvshare('fsck', notAnImage);
  t.is(junk.code, 1);
  t.regex(junk.stdout, /error/);
});

/** A volume image made by mkfs, then marked as an older format. */
async function oldImage(image: string, version: number): Promise<void> {
  await mkdir(dirname(image), { recursive: true });
  const made = await hvshare('mkfs', image, '--size', '16M', '--slots', '2');
  if (made.code !== 0) throw new Error(made.stderr);
  const dev = await FileBlockDevice.open(image);
  await dev.write(0, encodeSuperblock({ ...(await readSuperblock(dev)), version }));
  await dev.close();
}

test('fsck refuses volumes of formats 1, 2 and 3 with exit 1, naming the image and saying what to do', async (t) => {
  const dir = await tempDir(t, 'hvshare-cli-');
  for (const version of [1, 2, 3]) {
    const image = join(dir, `old${version}.img`);
    await oldImage(image, version);
    const old = await hvshare('fsck', image);
    t.is(old.code, 1);
    t.regex(old.stdout, new RegExp(`error: superblock: format version ${version} is no longer supported .*mkfs --force`));
    t.regex(old.stdout, new RegExp(`${image}: 1 error`));
    const json = await hvshare('fsck', image, '--json');
    t.is(json.code, 1);
    t.is((JSON.parse(json.stdout) as { errors: string[] }).errors.length, 1);
  }
});

test('up refuses a format-2 volume before booting anything, naming the volume and saying what to do', async (t) => {
  const dir = await tempDir(t, 'hvshare-cli-');
  const state = join(dir, 'state');
  await oldImage(join(state, 'old.img'), 2);
  const config = join(dir, 'platform.json');
  await writeFile(
    config,
    JSON.stringify({
      volumes: [{ name: 'archive', size: '16M', image: 'old.img', slots: 2 }],
      domains: [{ name: 'dom1', memory: 64, grants: [{ volume: 'archive', mode: 'rw', slot: 0 }] }],
    }),
  );
  const r = await hvshare('up', '--config', config, '--state', state, '--mount-root', join(dir, 'mnt'));
  t.is(r.code, 1);
  t.regex(r.stderr, /volume archive \(.*old\.img\): format version 2 is no longer supported .*nanosecond.*hvshare mkfs --force/);
});

test('ps, stat and log: a clear message and exit 1 without a platform or with bad options', async (t) => {
  const dir = await tempDir(t, 'hvshare-cli-');
  for (const command of ['ps', 'stat', 'log']) {
    const r = await hvshare(command, '--state', join(dir, 'nothing'));
    t.is(r.code, 1, command);
    t.regex(r.stderr, /no platform in .*nothing/, command);
  }
  const badType = await hvshare('log', '--state', dir, '--type', 'bogus');
  t.is(badType.code, 1);
  t.regex(badType.stderr, /unknown event type "bogus"/);
  const badTail = await hvshare('log', '--state', dir, '--tail', 'many');
  t.is(badTail.code, 1);
  t.regex(badTail.stderr, /--tail must be a positive whole number/);
  const unknown = await hvshare('frobnicate');
  t.not(unknown.code, 0);
  t.regex(unknown.stderr, /unknown command/);
});

test('up refuses an invalid platform.json, naming every bad field', async (t) => {
  const dir = await tempDir(t, 'hvshare-cli-');
  const config = join(dir, 'platform.json');
  await writeFile(
    config,
    JSON.stringify({ volumes: [{ name: 'v', size: '64M' }], domains: [{ name: 'Dom1', memory: 64, grants: [{ volume: 'w', mode: 'rx', slot: 0 }] }] }),
  );
  const r = await hvshare('up', '--config', config, '--state', join(dir, 'state'), '--mount-root', join(dir, 'mnt'));
  t.is(r.code, 1);
  t.regex(r.stderr, /domains\[0\]\.name: bad name "Dom1"/);
  t.regex(r.stderr, /domains\[0\]\.grants\[0\]\.volume: unknown volume "w"/);
  t.regex(r.stderr, /domains\[0\]\.grants\[0\]\.mode: bad mode "rx"/);
});

test('up refuses a bad --cache before booting anything, naming the value', async (t) => {
  const dir = await tempDir(t, 'hvshare-cli-');
  for (const [value, message] of [
    ['sometimes', /--cache sometimes: expected strict, auto or auto=MS/],
    ['auto=-5', /--cache auto=-5: MS must be a whole number of milliseconds/],
  ] as const) {
    const r = await hvshare('up', '--cache', value, '--state', join(dir, 'state'), '--mount-root', join(dir, 'mnt'));
    t.is(r.code, 1);
    t.regex(r.stderr, message);
  }
  t.false(existsSync(join(dir, 'state')), 'nothing was booted or created');
});
