import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exited, HVSHARE, hvshare, sh, startUp } from './helpers/cli.js';

/**
 * The inspection commands against one running platform (`hvshare up`, default platform: dom1 and dom2 read-write,
 * dom3 read-only), reached from other processes through its control socket. dom2 runs with the test-only read
 * fault for paths containing "planted" (guests/fault-hook.ts): the wrong view check and diff must find.
 */
let dir = '';
let state = '';
let mnt = '';
let up: ChildProcess | undefined;

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hvshare-inspect-'));
  state = join(dir, 'state');
  mnt = join(dir, 'mnt');
  up = (await startUp(state, mnt, { ...process.env, HVSHARE_FAULT_CORRUPT_READS: 'dom2:planted' })).child;
});

test.after.always(async () => {
  up?.kill('SIGTERM');
  if (up) await exited(up);
  const { stdout } = await sh('cat /proc/mounts');
  for (const m of stdout.split('\n').map((l) => l.split(' ')[1]).filter((m) => m?.startsWith(mnt))) await sh(`fusermount -uz '${m}'`);
  await rm(dir, { recursive: true, force: true });
});

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const cli = (...args: string[]) => hvshare(...args, '--state', state);

test.serial('cp, ls and cat go through the domains: written by dom1, read back through dom2 and dom3', async (t) => {
  const data = randomBytes(700_000);
  await writeFile(join(dir, 'orig.bin'), data);
  const cp = await cli('cp', join(dir, 'orig.bin'), 'dom1:/copied.bin', '--json');
  t.is(cp.code, 0, cp.stderr);
  t.deepEqual(JSON.parse(cp.stdout), { from: join(dir, 'orig.bin'), to: 'dom1:/copied.bin', bytes: data.length });
  t.is((await cli('cp', 'dom1:/copied.bin', 'dom2:/sub-copy.bin')).code, 0);

  const ls = await cli('ls', 'dom3:/', '--checksums', '--json');
  t.is(ls.code, 0, ls.stderr);
  const entries = JSON.parse(ls.stdout) as { path: string; type: string; size: number; checksum?: string }[];
  for (const path of ['/copied.bin', '/sub-copy.bin']) {
    const e = entries.find((x) => x.path === path);
    t.like(e, { type: 'file', size: data.length, checksum: sha256(data) }, path);
  }
  const crc = await cli('ls', 'dom2:/copied.bin', '--checksums', 'crc32c');
  t.regex(crc.stdout, /^[0-9a-f]{8} {2}\/copied\.bin$/m);

  const back = join(dir, 'back.bin');
  t.is((await sh(`node '${HVSHARE}' cat dom3:/copied.bin --state '${state}' > '${back}'`)).code, 0);
  t.is(sha256(await readFile(back)), sha256(data));
  const toHost = await cli('cp', 'dom2:/sub-copy.bin', dir);
  t.is(toHost.code, 0, toHost.stderr);
  t.is(sha256(await readFile(join(dir, 'sub-copy.bin'))), sha256(data));
  // The mount shows the same file (the two paths agree).
  t.is((await sh(`cmp '${join(dir, 'orig.bin')}' '${mnt}/dom2/copied.bin'`)).code, 0);
});

test.serial('ls: -lR lists a tree with modes, owners, sizes, times and symlink targets', async (t) => {
  const setup = await sh(`mkdir -p '${mnt}/dom1/tree/a/b' && printf hello > '${mnt}/dom1/tree/a/b/f' && chmod 640 '${mnt}/dom1/tree/a/b/f' && ln -s a/b/f '${mnt}/dom1/tree/link'`);
  t.is(setup.code, 0, setup.stderr);
  const ls = await cli('ls', 'dom2:/tree', '-lR');
  t.is(ls.code, 0, ls.stderr);
  const lines = ls.stdout.trim().split('\n');
  t.deepEqual(lines.map((l) => l.split(' ').slice(-1)[0]), ['/tree/a', '/tree/a/b', '/tree/a/b/f', 'a/b/f']);
  t.regex(lines[2], /^-rw-r----- +1 +0 +0 +5 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z \/tree\/a\/b\/f$/);
  t.regex(lines[3], /^lrwxrwxrwx .* \/tree\/link -> a\/b\/f$/);
  const plain = await cli('ls', 'dom1:tree');
  t.deepEqual(plain.stdout.trim().split('\n'), ['a', 'link']);
});

test.serial('ls, cat, cp: bad input is refused with a message naming it, exit status 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['ls', 'dom9:/'], /unknown domain "dom9" in "dom9:\/" \(the platform runs dom1, dom2, dom3\)/],
    [['ls', 'dom1:/missing'], /dom1:\/missing: no such file or directory \(ENOENT\)/],
    [['cat', 'dom2:/missing'], /dom2:\/missing: no such file or directory \(ENOENT\)/],
    [['cat', 'dom2:/tree'], /dom2:\/tree: is a directory \(EISDIR\)/],
    [['cp', join(dir, 'orig.bin'), 'dom3:/x.bin'], /dom3:\/x\.bin: read-only file system \(EROFS\)/],
    [['cp', 'dom1:/missing', join(dir, 'x')], /dom1:\/missing: no such file or directory \(ENOENT\)/],
    [['cp', join(dir, 'no-such-host-file'), 'dom1:/x'], /no-such-host-file: no such file or directory \(ENOENT\)/],
    [['ls', 'dom1', '--checksums', 'md5'], /--checksum must be one of sha256, crc32c, not "md5"/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(...args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
  }
});

test('the platform down: every inspection command says so and exits 2', async (t) => {
  const nowhere = join(dir, 'no-platform');
  for (const args of [['ls', 'dom1'], ['cat', 'dom1:/x'], ['cp', 'dom1:/x', 'dom2:/y']]) {
    const r = await hvshare(...args, '--state', nowhere);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, /the platform is not running: nothing listens on .*control\.sock \(start it with: hvshare up --state /);
  }
});
