import test from 'ava';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { PlatformClient } from '../bin/platform-client.js';
import { exited, HVSHARE, hvshare, sh, testPlatform } from './helpers/cli.js';

/**
 * The inspection commands against one running platform (`hvshare up`, default platform: dom1 and dom2 read-write,
 * dom3 read-only), reached from other processes through its control socket. dom2 runs with the test-only read
 * fault for paths containing "planted" (guests/fault-hook.ts): the wrong view check and diff must find.
 */
const platform = testPlatform('hvshare-inspect-', { HVSHARE_FAULT_CORRUPT_READS: 'dom2:planted' });
test.before(() => platform.start());
test.after.always(() => platform.stop());

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const cli = platform.cli;

test.serial('cp, ls and cat go through the domains: written by dom1, read back through dom2 and dom3', async (t) => {
  const data = randomBytes(700_000);
  await writeFile(join(platform.dir, 'orig.bin'), data);
  const cp = await cli('cp', join(platform.dir, 'orig.bin'), 'dom1:/copied.bin', '--json');
  t.is(cp.code, 0, cp.stderr);
  t.deepEqual(JSON.parse(cp.stdout), { from: join(platform.dir, 'orig.bin'), to: 'dom1:/copied.bin', bytes: data.length });
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

  const back = join(platform.dir, 'back.bin');
  t.is((await sh(`node '${HVSHARE}' cat dom3:/copied.bin --state '${platform.state}' > '${back}'`)).code, 0);
  t.is(sha256(await readFile(back)), sha256(data));
  const toHost = await cli('cp', 'dom2:/sub-copy.bin', platform.dir);
  t.is(toHost.code, 0, toHost.stderr);
  t.is(sha256(await readFile(join(platform.dir, 'sub-copy.bin'))), sha256(data));
  // The mount shows the same file (the two paths agree).
  t.is((await sh(`cmp '${join(platform.dir, 'orig.bin')}' '${platform.mnt}/dom2/copied.bin'`)).code, 0);
});

test.serial('ls: -lR lists a tree with modes, owners, sizes, times and symlink targets', async (t) => {
  const setup = await sh(`mkdir -p '${platform.mnt}/dom1/tree/a/b' && printf hello > '${platform.mnt}/dom1/tree/a/b/f' && chmod 640 '${platform.mnt}/dom1/tree/a/b/f' && ln -s a/b/f '${platform.mnt}/dom1/tree/link'`);
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
    [['cp', join(platform.dir, 'orig.bin'), 'dom3:/x.bin'], /dom3:\/x\.bin: read-only file system \(EROFS\)/],
    [['cp', 'dom1:/missing', join(platform.dir, 'x')], /dom1:\/missing: no such file or directory \(ENOENT\)/],
    [['cp', join(platform.dir, 'no-such-host-file'), 'dom1:/x'], /no-such-host-file: no such file or directory \(ENOENT\)/],
    [['ls', 'dom1', '--checksums', 'md5'], /--checksum must be one of sha256, crc32c, not "md5"/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(...args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
  }
});

test('the platform down: every inspection command says so and exits 2', async (t) => {
  const nowhere = join(platform.dir, 'no-platform');
  for (const args of [['ls', 'dom1'], ['cat', 'dom1:/x'], ['cp', 'dom1:/x', 'dom2:/y']]) {
    const r = await hvshare(...args, '--state', nowhere);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, /the platform is not running: nothing listens on .*control\.sock \(start it with: hvshare up --state /);
  }
});

interface DiffJson {
  same: boolean;
  differences: { path: string; field: string; a: string; b: string }[];
  contentCompared: number;
}

test.serial('diff: two domains agree; a difference planted in dom2 (its reads of /planted go wrong) is found', async (t) => {
  const setup = await sh(`mkdir -p '${platform.mnt}/dom1/planted/sub' && head -c 200000 /dev/urandom > '${platform.mnt}/dom1/planted/sub/data' && printf x > '${platform.mnt}/dom1/planted/small'`);
  t.is(setup.code, 0, setup.stderr);
  const clean = await cli('diff', 'dom1', 'dom3', '--json');
  t.is(clean.code, 0, clean.stdout + clean.stderr);
  const cleanJson = JSON.parse(clean.stdout) as DiffJson;
  t.true(cleanJson.same);
  t.true(cleanJson.contentCompared >= 4, `files compared: ${cleanJson.contentCompared}`);

  const planted = await cli('diff', 'dom1', 'dom2', '/planted', '--json');
  t.is(planted.code, 1, planted.stderr);
  const found = JSON.parse(planted.stdout) as DiffJson;
  t.false(found.same);
  t.deepEqual(found.differences.map((d) => `${d.path} ${d.field}`), ['/small content', '/sub/data content']);
  t.regex(found.differences[0].a, /^sha256:[0-9a-f]{64}$/);
  const text = await cli('diff', 'dom2', 'dom1', 'planted', '--checksum', 'crc32c');
  t.is(text.code, 1);
  t.regex(text.stdout, /^\/small: content crc32c:[0-9a-f]{8} != crc32c:[0-9a-f]{8}$/m);
  t.regex(text.stderr, /dom2:\/planted and dom1:\/planted: 2 difference\(s\)/);
});

test.serial('diff: a domain against a host folder: the same after cp -a, then each change named', async (t) => {
  const host = join(platform.dir, 'host-tree');
  const copy = await sh(`mkdir -p '${platform.mnt}/dom1/cmp/d' && printf abc > '${platform.mnt}/dom1/cmp/d/f' && printf keep > '${platform.mnt}/dom1/cmp/g' && ln -s d/f '${platform.mnt}/dom1/cmp/l' && cp -a '${platform.mnt}/dom1/cmp' '${host}'`);
  t.is(copy.code, 0, copy.stderr);
  const same = await cli('diff', 'dom2', host, '/cmp');
  t.is(same.code, 0, same.stdout + same.stderr);
  t.regex(same.stderr, /same \(5 entries, 2 files' content compared by sha256; one cut, 5 locks held \d+ ms\)/);

  const change = await sh(`printf abd > '${host}/d/f' && touch -d @0 '${host}/d/f' && chmod 600 '${host}/g' && touch '${host}/extra' && rm '${host}/l' && ln -s g '${host}/l'`);
  t.is(change.code, 0, change.stderr);
  const r = await cli('diff', 'dom2', host, '/cmp', '--json');
  t.is(r.code, 1);
  const { differences } = JSON.parse(r.stdout) as DiffJson;
  t.deepEqual(differences.map((d) => `${d.path} ${d.field}`), ['/d/f content', '/d/f mtime', '/extra exists', '/g mode', '/l target']);
  t.like(differences[1], { b: '1970-01-01T00:00:00.000000000Z' });
  t.like(differences[3], { a: '0644', b: '0600' });
  const ignoring = await cli('diff', 'dom2', host, '/cmp', '--ignore', 'content,mtime,mode,target', '--json');
  t.deepEqual((JSON.parse(ignoring.stdout) as DiffJson).differences.map((d) => d.path), ['/extra']);
});

test.serial('diff: bad input and the platform down exit 2 with a message naming what is wrong', async (t) => {
  const cases: [string[], RegExp][] = [
    [['diff', 'dom1', 'dom9'], /dom9: no such file or directory \(ENOENT\)/],
    [['diff', 'dom8', 'dom1'], /unknown domain "dom8"/],
    [['diff', 'dom1', 'dom2', '/no/such/dir'], /dom1:\/no\/such\/dir: no such file or directory \(ENOENT\)/],
    [['diff', 'dom1', 'dom2', '--checksum', 'md5'], /--checksum must be one of sha256, crc32c, not "md5"/],
    [['diff', 'dom1', 'dom2', '--ignore', 'size,colour'], /--ignore: unknown field "colour"/],
    [['diff', 'dom1:/x', 'dom2'], /DOM_A is a domain name \("dom1"\); give the path as PATH/],
    [['diff', 'dom1'], /missing required argument 'DOM_B\|HOST_DIR'/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(...args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
  }
  const down = await hvshare('diff', 'dom1', 'dom2', '--state', join(platform.dir, 'no-platform'));
  t.is(down.code, 2);
  t.regex(down.stderr, /the platform is not running/);
});

interface CheckJson {
  consistent: boolean;
  rounds: number;
  pairs: { writer: string; reader: string; probes: number; latencyMs: { median: number; p99: number } | null; mismatches: number; errors: number; problems: string[] }[];
}

const probeFolders = async (domain: string) => (await cli('ls', `${domain}:/`)).stdout.split('\n').filter((n) => n.includes('check'));

test.serial('check: every pair of domains consistent, the probe folder removed afterwards', async (t) => {
  const r = await cli('check', '--sizes', '0,1,4K,1M', '--json');
  t.is(r.code, 0, r.stdout + r.stderr);
  const report = JSON.parse(r.stdout) as CheckJson;
  t.true(report.consistent);
  t.deepEqual(report.pairs.map((p) => `${p.writer}->${p.reader}`), ['dom1->dom2', 'dom1->dom3', 'dom2->dom1', 'dom2->dom3']);
  for (const p of report.pairs) {
    t.is(p.probes, 4 * 4, `${p.writer}->${p.reader}: creation, new name, old name gone, unlink, for each of 4 sizes`);
    t.true(p.latencyMs !== null && p.latencyMs.median >= 0 && p.latencyMs.p99 >= p.latencyMs.median);
    t.is(p.mismatches + p.errors, 0);
  }
  t.deepEqual(await probeFolders('dom1'), []);
  const text = await cli('check', '--domains', 'dom2,dom3', '--sizes', '4K');
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /^dom2 -> dom3 +4 +[\d.]+ +[\d.]+ +0 +0$/m);
  t.regex(text.stdout, /consistent: 1 round\(s\), sizes 4K/);
});

test.serial('check: a mismatch planted in dom2 (its reads of /planted... go wrong) is found, pair by pair', async (t) => {
  const r = await cli('check', '--dir', '/planted-check', '--sizes', '0,4K,1M', '--json');
  t.is(r.code, 1, r.stderr);
  const report = JSON.parse(r.stdout) as CheckJson;
  t.false(report.consistent);
  const byPair = Object.fromEntries(report.pairs.map((p) => [`${p.writer}->${p.reader}`, p.mismatches]));
  // Two non-empty probes, each read whole twice by dom2 (created, renamed); an empty file cannot be corrupted.
  t.deepEqual(byPair, { 'dom1->dom2': 4, 'dom1->dom3': 0, 'dom2->dom1': 0, 'dom2->dom3': 0 });
  t.regex(report.pairs[0].problems[0], /^\/planted-check\/dom1-1-4096: dom2 read other bytes than dom1 wrote \(4096 of 4096 bytes read\)$/);
  t.deepEqual(await probeFolders('dom1'), []);
});

test.serial('check: interrupted, it stops and removes its probe folder', async (t) => {
  const child = spawn('node', [HVSHARE, 'check', '--state', platform.state, '--duration', '60', '--dir', '/interrupted-check', '--sizes', '64K,1M'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  for (let i = 0; i < 200 && (await probeFolders('dom3')).length === 0; i++) await sleep(50);
  t.deepEqual(await probeFolders('dom3'), ['interrupted-check'], 'the check is running');
  child.kill('SIGINT');
  t.is(await exited(child), 130);
  t.regex(stderr, /SIGINT: stopping after this probe and removing the probe folder/);
  t.deepEqual(await probeFolders('dom3'), []);
});

test.serial('check: bad input exits 2 naming it', async (t) => {
  const cases: [string[], RegExp][] = [
    [['check', '--domains', 'dom1,dom7'], /--domains: unknown domain "dom7" \(the platform runs dom1, dom2, dom3\)/],
    [['check', '--domains', 'dom3'], /--domains: at least one read-write domain/],
    [['check', '--domains', 'dom1'], /--domains: at least two domains/],
    [['check', '--sizes', '4K,lots'], /--sizes: bad size "lots"/],
    [['check', '--sizes', '1G'], /--sizes: 1G is larger than the 64M a probe may be/],
    [['check', '--duration', 'soon'], /--duration takes seconds/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(...args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
  }
  const down = await hvshare('check', '--state', join(platform.dir, 'no-platform'));
  t.is(down.code, 2);
  t.regex(down.stderr, /the platform is not running/);
});

interface LockJson {
  volume: string;
  name: number;
  resource: string;
  generation: number;
  holders: { domain: string; mode: string; heldMs: number }[];
  waiters: { domain: string; mode: string }[];
  revocations: number;
}

const inodeOf = async (spec: string) => (JSON.parse((await cli('ls', spec, '--json')).stdout) as { ino: number }[])[0].ino;

test.serial('locks: a file written by dom1 then read by dom2: dom1 gives its inode lock up (its generation bumped), and a write by dom2 revokes it', async (t) => {
  const write = await sh(`head -c 100000 /dev/urandom > '${platform.mnt}/dom1/locked.bin'`);
  t.is(write.code, 0, write.stderr);
  const ino = await inodeOf('dom1:/locked.bin');
  const lockOf = async () => {
    const r = await cli('locks', '--json');
    t.is(r.code, 0, r.stderr);
    return { all: JSON.parse(r.stdout) as LockJson[], lock: (JSON.parse(r.stdout) as LockJson[]).find((l) => l.name === ino) };
  };
  const before = (await lockOf()).lock;
  t.like(before, { volume: 'shared', resource: `inode ${ino}` });
  t.deepEqual(before!.holders.map((h) => `${h.domain}:${h.mode}`), ['dom1:exclusive'], 'the writer keeps its lock cached');
  // dom1 gives it up when dom2 looks it up: revoked, or handed down with the directory dom2 read first.
  t.is((await sh(`cat '${platform.mnt}/dom2/locked.bin' > /dev/null`)).code, 0);
  const { all, lock: after } = await lockOf();
  t.true(after!.generation >= before!.generation + 1, `generation ${before!.generation} -> ${after!.generation} (dom1 gave up a changed lock)`);
  t.false(after!.holders.some((h) => h.mode === 'exclusive'), JSON.stringify(after));
  t.true(after!.holders.some((h) => h.domain === 'dom1'), 'dom1 keeps it shared');
  // dom2 writes it and keeps it open (it would give it back on close): dom1's shared lock was revoked for that.
  const held = await sh(`exec 3>>'${platform.mnt}/dom2/locked.bin' && echo more >&3 && node '${HVSHARE}' locks --state '${platform.state}' --json; exec 3>&-`);
  t.is(held.code, 0, held.stderr);
  const writing = (JSON.parse(held.stdout) as LockJson[]).find((l) => l.name === ino)!;
  t.true(writing.revocations >= after!.revocations + 1, `revocations ${after!.revocations} -> ${writing.revocations}`);
  t.deepEqual(writing.holders.map((h) => `${h.domain}:${h.mode}`), ['dom2:exclusive']);
  t.true(all.some((l) => l.resource === 'journal slot 0' && l.holders[0]?.domain === 'dom1' && l.holders[0].mode === 'exclusive'));
  const mine = JSON.parse((await cli('locks', '--domain', 'dom1', '--json')).stdout) as LockJson[];
  t.true(mine.length > 0 && mine.every((l) => l.holders.some((h) => h.domain === 'dom1') || l.waiters.some((w) => w.domain === 'dom1')));
  const text = await cli('locks');
  t.regex(text.stdout, /^shared +9 +journal slot 0 +0 +dom1:EX [\d.]+s +- +0$/m);
});

test.serial('locks --watch follows changes: a read through dom3 shows dom3 among the holders', async (t) => {
  const ino = await inodeOf('dom1:/locked.bin');
  const child = spawn('node', [HVSHARE, 'locks', '--state', platform.state, '--watch', '--json', '--interval', '100'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  const lines: { locks: LockJson[] }[] = [];
  createInterface({ input: child.stdout }).on('line', (l) => lines.push(JSON.parse(l) as { locks: LockJson[] }));
  const dom3Holds = (s: { locks: LockJson[] }) => s.locks.some((l) => l.name === ino && l.holders.some((h) => h.domain === 'dom3'));
  for (let i = 0; i < 100 && lines.length === 0; i++) await sleep(50);
  t.false(dom3Holds(lines[0]), 'dom3 has not read it yet');
  t.is((await sh(`cat '${platform.mnt}/dom3/locked.bin' > /dev/null`)).code, 0);
  for (let i = 0; i < 100 && !lines.some(dom3Holds); i++) await sleep(50);
  t.true(lines.some(dom3Holds), JSON.stringify(lines.at(-1)));
});

test.serial('locks: bad input and the platform down exit 2', async (t) => {
  const unknown = await cli('locks', '--domain', 'dom9');
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /--domain: unknown domain "dom9"/);
  const interval = await cli('locks', '--watch', '--interval', '5');
  t.is(interval.code, 2);
  t.regex(interval.stderr, /--interval takes milliseconds, at least 50, not "5"/);
  const down = await hvshare('locks', '--state', join(platform.dir, 'no-platform'));
  t.is(down.code, 2);
  t.regex(down.stderr, /the platform is not running/);
});

test.serial('the control socket: only its owner may connect; garbage gets error replies and the platform carries on', async (t) => {
  const path = join(platform.state, 'control.sock');
  t.is((await stat(path)).mode & 0o777, 0o600);
  const socket = connect(path);
  await once(socket, 'connect');
  const replies: { id: number; ok: boolean; code?: string; message?: string }[] = [];
  createInterface({ input: socket }).on('line', (l) => replies.push(JSON.parse(l) as (typeof replies)[number]));
  const garbage = [
    'not json',
    'null',
    '{"kind":"domains"}',
    '{"id":1,"kind":"reboot"}',
    '{"id":2,"kind":"vfs","domain":"dom1","op":"format","args":[]}',
    '{"id":3,"kind":"vfs","domain":"dom1","op":"getattr","args":"/"}',
    '{"id":4,"kind":"vfs","domain":"nobody","op":"getattr","args":["/"]}',
    '{"id":5,"kind":"vfs","domain":"dom1","op":"read","args":[1,0,1e12]}',
    '{"id":6,"kind":"vfs","domain":"dom1","op":"getattr","args":[42]}',
  ];
  socket.write(garbage.join('\n') + '\n');
  for (let i = 0; i < 100 && replies.length < garbage.length; i++) await sleep(50);
  socket.end();
  t.is(replies.length, garbage.length, JSON.stringify(replies));
  t.true(replies.every((r) => !r.ok), JSON.stringify(replies));
  const byId = (id: number) => replies.find((r) => r.id === id);
  t.is(replies.filter((r) => r.id === -1 && r.code === 'EPROTO').length, 3);
  t.like(byId(1), { code: 'EPROTO', message: 'unknown request kind "reboot"' });
  t.like(byId(2), { code: 'EPROTO', message: 'no filesystem operation "format"' });
  t.like(byId(3), { code: 'EPROTO', message: 'args must be an array' });
  t.like(byId(4), { code: 'ENODOM', message: 'no domain "nobody" (the platform runs dom1, dom2, dom3)' });
  t.like(byId(5), { code: 'EINVAL' });
  t.truthy(byId(6));
  const ps = await cli('ls', 'dom1:/');
  t.is(ps.code, 0, 'the platform still serves');
});

test.serial('diff compares extended attributes: the same through dom1 and dom3, a value planted wrong in dom2 found', async (t) => {
  const made = await sh(`mkdir -p '${platform.mnt}/dom1/xa/planted-x' && printf a > '${platform.mnt}/dom1/xa/plain' && printf b > '${platform.mnt}/dom1/xa/planted-x/f'`);
  t.is(made.code, 0, made.stderr);
  const client = await PlatformClient.connect(platform.state);
  t.teardown(() => client.close());
  const vfs = client.vfs('dom1');
  await vfs.setxattr('/xa/plain', 'user.origin', new TextEncoder().encode('dom1'), 0);
  await vfs.setxattr('/xa/planted-x/f', 'user.origin', new TextEncoder().encode('dom1'), 0);
  const same = await cli('diff', 'dom1', 'dom3', '/xa', '--json');
  t.is(same.code, 0, same.stdout);
  const planted = await cli('diff', 'dom1', 'dom2', '/xa', '--json');
  t.is(planted.code, 1, planted.stderr);
  const { differences } = JSON.parse(planted.stdout) as DiffJson;
  t.deepEqual(differences.map((d) => `${d.path} ${d.field}`), ['/planted-x/f content', '/planted-x/f xattrs']);
  t.is(differences[1].a, JSON.stringify([['user.origin', Buffer.from('dom1').toString('hex')]]));
  const ignored = await cli('diff', 'dom1', 'dom2', '/xa', '--ignore', 'content,xattrs');
  t.is(ignored.code, 0, ignored.stdout);
});
