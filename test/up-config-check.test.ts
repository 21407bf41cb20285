import test from 'ava';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { hvshare, sh } from './helpers/cli.js';
import { tempDir } from './helpers/platform.js';

const platform = (size: string, grants: unknown[] = [{ volume: 'shared', mode: 'rw', slot: 0 }]) =>
  JSON.stringify({ volumes: [{ name: 'shared', image: 'shared.img', size, slots: 2 }], domains: [{ name: 'dom1', memory: 16, grants }] });

/** The domains the store holds after a refused `up` (none when nothing was stored). */
async function storedDomains(state: string): Promise<string[]> {
  const ps = await hvshare('ps', '--state', state, '--json');
  return (JSON.parse(ps.stdout) as { domains: { name: string }[] }).domains.map((d) => d.name);
}

test('up checks the description against the images that exist, before storing it', async (t) => {
  const dir = await tempDir(t, 'hvshare-upcheck-');
  const state = join(dir, 'state');
  const mnt = join(dir, 'mnt');
  const config = join(dir, 'platform.json');
  t.is((await hvshare('mkfs', join(state, 'shared.img'), '--size', '32M', '--slots', '2')).code, 0);

  await writeFile(config, platform('64M'));
  const size = await hvshare('up', '--config', config, '--state', state, '--mount-root', mnt);
  t.is(size.code, 1);
  t.regex(size.stderr, /volumes\[0\]\.size: 64M, but the image .*shared\.img is 32M \(set size to "32M"/);
  t.deepEqual(await storedDomains(state), [], 'nothing stored');

  const slots = JSON.parse(platform('32M')) as { volumes: { slots: number }[]; domains: { grants: { slot: number }[] }[] };
  slots.volumes[0].slots = 4;
  slots.domains[0].grants[0].slot = 3;
  await writeFile(config, JSON.stringify(slots));
  const slot = await hvshare('up', '--config', config, '--state', state, '--mount-root', mnt);
  t.is(slot.code, 1);
  t.regex(slot.stderr, /volumes\[0\]\.slots: 4, but the image .*shared\.img was made with 2 journal slots/);
  t.regex(slot.stderr, /domains\[0\]\.grants\[0\]\.slot: 3, but volume "shared" has slots 0\.\.1/);

  await writeFile(config, platform('32M', []));
  const none = await hvshare('up', '--config', config, '--state', state, '--mount-root', mnt);
  t.is(none.code, 1);
  t.regex(none.stderr, /domains\[0\]\.grants: expected a non-empty array of grants/);
  t.deepEqual(await storedDomains(state), [], 'nothing stored');
  // The description with the image's own figures is stored (and booted, then refused at a mount point that is a file).
  await writeFile(config, platform('32M'));
  await writeFile(mnt, '');
  t.regex((await hvshare('up', '--config', config, '--state', state, '--mount-root', mnt)).stderr, /mount point .*mnt\/dom1 cannot be made: a part of its path is a file/);
  t.deepEqual(await storedDomains(state), ['dom1']);
});

test('up refuses a mount point that is not an empty folder, naming it, and mounts nothing', async (t) => {
  const dir = await tempDir(t, 'hvshare-upcheck-');
  const state = join(dir, 'state');
  const mnt = join(dir, 'mnt');
  await mkdir(join(mnt, 'dom2'), { recursive: true });
  await writeFile(join(mnt, 'dom2', 'notes.txt'), 'mine\n');
  await writeFile(join(mnt, 'dom3'), 'a file\n');
  const r = await hvshare('up', '--state', state, '--mount-root', mnt);
  t.is(r.code, 1);
  t.true(r.stderr.includes(`mount point ${join(mnt, 'dom2')} is not empty (notes.txt)`), r.stderr);
  t.true(r.stderr.includes(`mount point ${join(mnt, 'dom3')} is not a folder`), r.stderr);
  t.false((await sh('cat /proc/mounts')).stdout.includes(mnt), 'nothing left mounted');
});

test('a store that is not one is named, with what to do', async (t) => {
  const dir = await tempDir(t, 'hvshare-upcheck-');
  const state = join(dir, 'state');
  await mkdir(join(state, 'store'), { recursive: true });
  await writeFile(join(state, 'store', 'CURRENT'), 'not a manifest');
  for (const command of [['up', '--mount-root', join(dir, 'mnt')], ['ps']]) {
    const r = await hvshare(...command, '--state', state);
    t.is(r.code, 1, command[0]);
    t.regex(r.stderr, new RegExp(`platform store ${join(state, 'store')} cannot be read \\(.*\\): it is damaged or not an hvshare platform store; move it away`), command[0]);
  }
});
