/**
 * End-to-end: real FUSE mounts of several domains of one platform, driven only by real tools in child processes.
 *
 * The FUSE handlers run on this process's main thread, so nothing here may touch a mount synchronously
 * (fs.*Sync, execSync): every tool is spawned asynchronously and the event loop stays free to serve it.
 * Not even spawn's `cwd` may point into a mount: libuv's fork path chdirs while the parent thread is held, the
 * chdir needs a FUSE answer from that thread, and both hang for good (found the hard way). Tools `cd` themselves.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, link, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { isMounted, mountDomain } from '../mount/index.js';
import { formattedImage } from './helpers/volume.js';
import { heldReader, mountedPlatform, ok, run, rw2, sh, shIn } from './helpers/fuse-mounts.js';
import { MiB } from './helpers/platform.js';

const FIO = ['/usr/bin/fio', '/usr/local/bin/fio'].find((p) => existsSync(p));

test.serial('a random multi-MiB file copied into dom1 compares equal (cmp) read back through dom2', async (t) => {
  const { dir, mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  const source = join(dir, 'random.bin');
  const data = randomBytes(6 * MiB + 4321);
  await writeFile(source, data);
  await ok(t, run('mkdir', [join(m1, 'in')]), 'mkdir');
  await ok(t, run('cp', [source, join(m1, 'in', 'random.bin')]), 'cp');
  await ok(t, run('cmp', [source, join(m2, 'in', 'random.bin')]), 'cmp through dom2');
  t.is((await ok(t, run('stat', ['-c', '%s', join(m2, 'in', 'random.bin')]), 'stat')).trim(), String(6 * MiB + 4321));
  // cmp really compares: a flipped byte in the middle written through dom2 shows up through dom1.
  const flipped = data[3_000_000] === 0x58 ? 'Y' : 'X';
  await ok(t, sh(`printf '${flipped}' | dd of=${join(m2, 'in', 'random.bin')} bs=1 seek=3000000 conv=notrunc status=none`), 'dd patch');
  const differs = await run('cmp', [source, join(m1, 'in', 'random.bin')]);
  t.is(differs.code, 1, `cmp must see the patched byte: ${differs.stdout}${differs.stderr}`);
  t.regex(differs.stdout, /byte 3000001/);
  // Both domains really served requests.
  t.true((mounts.dom1!.view.counters.calls.write ?? 0) > 0);
  t.true((mounts.dom2!.view.counters.calls.read ?? 0) > 0);
  await finish();
});

test.serial('mkdir, mv and rm in one domain are what ls shows in the other', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  await ok(t, shIn(m1, 'mkdir -p proj/src/lib && echo one > proj/src/a.txt && echo two > proj/src/lib/b.txt'), 'mkdir/echo');
  t.is(await ok(t, run('ls', ['-1', join(m2, 'proj', 'src')]), 'ls'), 'a.txt\nlib\n');
  await ok(t, shIn(m2, 'mv proj/src/lib proj/lib && mv proj/src/a.txt proj/lib/a-moved.txt'), 'mv in dom2');
  t.is(await ok(t, run('ls', ['-1', join(m1, 'proj', 'lib')]), 'ls'), 'a-moved.txt\nb.txt\n');
  t.is(await ok(t, run('ls', ['-A', join(m1, 'proj', 'src')]), 'ls'), '');
  t.is(await ok(t, run('cat', [join(m1, 'proj', 'lib', 'a-moved.txt')]), 'cat'), 'one\n');
  // Errors reach the tools with the right errno.
  const notEmpty = await run('rmdir', [join(m1, 'proj', 'lib')]);
  t.not(notEmpty.code, 0);
  t.regex(notEmpty.stderr, /Directory not empty/);
  const missing = await run('cat', [join(m2, 'proj', 'nope')]);
  t.not(missing.code, 0);
  t.regex(missing.stderr, /No such file or directory/);
  const exists = await run('mkdir', [join(m2, 'proj', 'lib')]);
  t.regex(exists.stderr, /File exists/);
  const longName = await run('touch', [join(m2, 'x'.repeat(300))]);
  t.regex(longName.stderr, /File name too long/);
  await ok(t, run('rm', ['-r', join(m1, 'proj')]), 'rm -r in dom1');
  t.is(await ok(t, run('ls', ['-A', m2]), 'ls root'), '');
  const gone = await run('ls', [join(m2, 'proj')]);
  t.not(gone.code, 0);
  t.regex(gone.stderr, /No such file or directory/);
  await finish();
});

test.serial('a domain with a read-only grant refuses writes with EROFS, decided inside the platform', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, [
    { name: 'dom1', slot: 0 },
    { name: 'dom2', slot: 1 },
    { name: 'dom3', slot: 2, readOnly: true },
  ]);
  const m1 = mounts.dom1!.dir;
  const m3 = mounts.dom3!.dir;
  await ok(t, shIn(m1, 'mkdir d && echo "from dom1" > d/file'), 'write in dom1');
  t.is(await ok(t, run('cat', [join(m3, 'd', 'file')]), 'cat in dom3'), 'from dom1\n');
  // The mount itself is rw for the host kernel: each refusal below comes back from the domain.
  const attempts: [string, string[]][] = [
    ['touch', [join(m3, 'd', 'file')]],
    ['touch', [join(m3, 'd', 'new')]],
    ['mkdir', [join(m3, 'd2')]],
    ['rm', ['-f', join(m3, 'd', 'file')]],
    ['mv', [join(m3, 'd', 'file'), join(m3, 'd', 'moved')]],
    ['ln', ['-s', 'file', join(m3, 'd', 'sym')]],
    ['chmod', ['600', join(m3, 'd', 'file')]],
    ['truncate', ['-s', '0', join(m3, 'd', 'file')]],
    ['/bin/sh', ['-c', `echo more >> ${join(m3, 'd', 'file')}`]],
  ];
  const mountLine = (await readFile('/proc/mounts', 'utf8')).split('\n').find((l) => l.split(' ')[1] === m3);
  t.regex(mountLine ?? '', / rw,/, 'the host kernel mounts dom3 read-write');
  for (const [cmd, args] of attempts) {
    const r = await run(cmd, args);
    t.not(r.code, 0, `${cmd} ${args.join(' ')} must fail on dom3`);
    t.regex(r.stderr, /Read-only file system/, `${cmd} ${args.join(' ')}: ${r.stderr}`);
  }
  t.true((mounts.dom3!.view.counters.errors.create ?? 0) > 0 && (mounts.dom3!.view.counters.errors.utimens ?? 0) > 0, 'refused by the domain');
  t.is(await ok(t, run('cat', [join(m1, 'd', 'file')]), 'cat in dom1'), 'from dom1\n', 'nothing changed');
  t.is(await ok(t, run('ls', ['-1', join(m1, 'd')]), 'ls'), 'file\n');
  // A host-read-only view (kernel `ro`) of a read-write domain refuses too.
  const roView = await mountDomain(mounts.dom2!.domain, join(m1, '..', 'ro-view-dom2'), { readOnly: true });
  t.teardown(() => roView.unmount());
  t.is(await ok(t, run('cat', [join(roView.mountpoint, 'd', 'file')]), 'cat ro view'), 'from dom1\n');
  const roTouch = await run('touch', [join(roView.mountpoint, 'd', 'file')]);
  t.not(roTouch.code, 0);
  t.regex(roTouch.stderr, /Read-only file system/);
  await roView.unmount();
  t.false(await isMounted(roView.mountpoint));
  await finish();
});

test.serial('no stale host cache: dom1 sees what dom2 rewrote, also through a file it holds open', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const f1 = join(mounts.dom1!.dir, 'note.txt');
  const f2 = join(mounts.dom2!.dir, 'note.txt');
  await ok(t, sh(`echo "first version, rather long" > ${f1}`), 'write v1');
  t.is(await ok(t, run('cat', [f1]), 'cat'), 'first version, rather long\n');
  t.is(await ok(t, run('cat', [f2]), 'cat'), 'first version, rather long\n');
  await ok(t, sh(`echo "v2" > ${f2}`), 'rewrite in dom2');
  t.is(await ok(t, run('cat', [f1]), 'cat after rewrite'), 'v2\n', 'new content and new size');
  t.is((await ok(t, run('stat', ['-c', '%s', f1]), 'stat')).trim(), '3');
  // A reader in another process keeps the file open across a rewrite by dom2, then reads offset 0 again
  // (close-to-open is not enough: only direct_io keeps this coherent).
  const reader = await heldReader(
    `const fs = require('fs'); const fd = fs.openSync(process.argv[1], 'r'); const b = Buffer.alloc(100);
     const rd = () => b.subarray(0, fs.readSync(fd, b, 0, 100, 0)).toString().trim();
     console.log('A:' + rd());
     process.stdin.once('data', () => { console.log('B:' + rd()); process.exit(0); });`,
    f1,
    'A:',
  );
  // Same size on purpose: a size change alone would make the kernel drop its pages; equal sizes would not.
  await ok(t, sh(`echo "v3" > ${f2}`), 'rewrite while held open');
  t.is(await reader.go(), 'A:v2\nB:v3\n', 'the second read of the open file sees dom2 content, not the host page cache');
  await finish();
});

test.serial('a strict view reads a sequential file ahead, and never answers from what it read before a change', async (t) => {
  const { dir, mounts, finish } = await mountedPlatform(t, rw2);
  const f1 = join(mounts.dom1!.dir, 'seq.bin');
  const f2 = join(mounts.dom2!.dir, 'seq.bin');
  const view2 = mounts.dom2!.view;
  const chunk = 128 * 1024;
  const first = randomBytes(16 * chunk);
  await writeFile(join(dir, 'seq.src'), first);
  await ok(t, run('cp', [join(dir, 'seq.src'), f1]), 'cp into dom1');
  // A reader in another process reads chunks 0-7 through dom2, so the view reads the next ones ahead; then dom1
  // rewrites chunks 8-11 in place (same size), and the reader goes on with chunks 8-15.
  const reader = await heldReader(
    `const fs = require('fs'); const { createHash } = require('crypto');
     const fd = fs.openSync(process.argv[1], 'r'); const b = Buffer.alloc(${chunk});
     const out = []; let at = 0;
     const more = (n) => { for (let i = 0; i < n; i++) { const got = fs.readSync(fd, b, 0, b.length, at); at += got; out.push(createHash('sha1').update(b.subarray(0, got)).digest('hex')); } };
     more(8); console.log('ready');
     process.stdin.once('data', () => { more(8); console.log(JSON.stringify(out)); process.exit(0); });`,
    f2,
    'ready',
  );
  const fetched = view2.readAhead.fetched;
  t.true(fetched > 0, `the view read ahead of the reader (${fetched} fetches)`);
  const second = randomBytes(4 * chunk);
  await writeFile(join(dir, 'seq.patch'), second);
  await ok(t, run('dd', [`if=${join(dir, 'seq.patch')}`, `of=${f1}`, `bs=${chunk}`, 'seek=8', 'conv=notrunc', 'status=none']), 'rewrite chunks 8-11 in dom1');
  const out = await reader.go();
  const chunks = JSON.parse(out.slice(out.indexOf('['))) as string[];
  const expected = Buffer.concat([first.subarray(0, 8 * chunk), second, first.subarray(12 * chunk)]);
  t.is(chunks.length, 16);
  const sha1 = (bytes: Uint8Array) => createHash('sha1').update(bytes).digest('hex');
  for (let i = 0; i < 16; i++) t.is(chunks[i], sha1(expected.subarray(i * chunk, (i + 1) * chunk)), `chunk ${i} is what dom2 holds when it is read`);
  // Unchanged chunks after the rewrite were answered from what was read ahead again.
  t.true(view2.readAhead.answered > 0, 'requests were answered from what the view read ahead');
  await finish();
});

test.serial('a strict view answers repeated stats, listings, links and xattrs itself, and still shows at once what the other domain and its own domain change', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  const view2 = mounts.dom2!.view;
  const statOf = async (name: string) => (await run('stat', ['-c', '%a %s %i', join(m2, name)])).stdout.trim() || 'missing';
  await ok(t, shIn(m1, 'echo one > f && mkdir d'), 'create in dom1');
  t.regex(await statOf('f'), /^644 4 \d+$/);
  const before = view2.answeredHere;
  const offMain = view2.answeredOffMainThread;
  for (let i = 0; i < 3; i++) t.regex(await statOf('f'), /^644 4 \d+$/);
  t.true(view2.answeredHere > before, 'stats with nothing changed are answered by the view itself');
  t.true(view2.answeredOffMainThread > offMain, 'on the libfuse threads, without a hop to the main thread');
  // Every kind of change by the other domain shows through dom2's very next stat.
  await ok(t, run('chmod', ['600', join(m1, 'f')]), 'chmod in dom1');
  t.regex(await statOf('f'), /^600 4 /, 'a mode changed in dom1');
  await ok(t, sh(`echo longer-now >> '${join(m1, 'f')}'`), 'append in dom1');
  t.regex(await statOf('f'), /^600 15 /, 'a size changed in dom1');
  t.is(await statOf('g'), 'missing');
  t.is(await statOf('g'), 'missing');
  await ok(t, run('mv', [join(m1, 'f'), join(m1, 'g')]), 'rename in dom1');
  t.is(await statOf('f'), 'missing', 'a name renamed away in dom1');
  t.regex(await statOf('g'), /^600 15 /, 'a name dom2 had found missing, created by a rename in dom1');
  // And a change the domain makes itself, not through this view (the control socket's way in).
  await mounts.dom2!.domain.call({ kind: 'vfs', op: 'chmod', args: ['/g', 0o640] });
  t.regex(await statOf('g'), /^640 15 /, 'a mode changed inside dom2, not through its view');
  await ok(t, run('rm', [join(m1, 'g')]), 'rm in dom1');
  t.is(await statOf('g'), 'missing', 'a name removed in dom1');
  // Stats looked ahead through a listing are answers like any other: a change after them shows.
  await ok(t, shIn(m1, 'mkdir e && for i in 1 2 3 4 5; do echo $i > e/f$i; done'), 'files in dom1');
  await ok(t, run('ls', ['-l', join(m2, 'e')]), 'ls -l in dom2');
  await ok(t, run('chmod', ['604', join(m1, 'e', 'f4')]), 'chmod in dom1');
  t.regex(await statOf('e/f4'), /^604 2 /, 'a mode changed in dom1 after dom2 listed the directory');
  // Listings, symlink targets and extended attributes alike.
  const list = async () => (await ok(t, run('ls', ['-A', join(m2, 'd')]), 'ls in dom2')).trim();
  t.is(await list(), '');
  const readdirs = view2.counters.calls.readdir;
  t.is(await list(), '');
  t.is(view2.counters.calls.readdir, readdirs, 'a listing repeated is answered on the libfuse threads, not by a handler');
  await ok(t, shIn(m1, 'touch d/new && ln -s one d/link'), 'create in dom1');
  t.is(await list(), 'link\nnew', 'entries added in dom1');
  t.is((await ok(t, run('readlink', [join(m2, 'd', 'link')]), 'readlink')).trim(), 'one');
  await ok(t, shIn(m1, 'rm d/link && ln -s two d/link'), 'relink in dom1');
  t.is((await ok(t, run('readlink', [join(m2, 'd', 'link')]), 'readlink')).trim(), 'two', 'a symlink replaced in dom1');
  const attr = async () => (await run('getfattr', ['--only-values', '-n', 'user.k', join(m2, 'd', 'new')])).stdout;
  t.is(await attr(), '');
  await ok(t, run('setfattr', ['-n', 'user.k', '-v', 'v1', join(m1, 'd', 'new')]), 'setfattr in dom1');
  t.is(await attr(), 'v1', 'an extended attribute set in dom1');
  await ok(t, run('setfattr', ['-n', 'user.k', '-v', 'v2', join(m1, 'd', 'new')]), 'setfattr again in dom1');
  t.is(await attr(), 'v2', 'an extended attribute changed in dom1');
  await finish();
});

test.serial('a view looks stats ahead through a listing only while nothing changed since: ls -l gets them in batches, rm -rf asks no batch per name', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const view2 = mounts.dom2!.view;
  await ok(t, shIn(mounts.dom1!.dir, 'mkdir many && for i in $(seq 1 40); do echo $i > many/f$i; done'), 'files in dom1');
  let before = view2.askedAhead;
  await ok(t, run('ls', ['-l', join(mounts.dom2!.dir, 'many')]), 'ls -l in dom2');
  t.true(view2.askedAhead - before >= 31, `ls -l asked stats ahead (${view2.askedAhead - before})`);
  // rm -rf lists, then looks up and unlinks each name: after the first unlink the listing is out of date, and a
  // batch asked per name would be thrown away by the next unlink.
  before = view2.askedAhead;
  await ok(t, run('rm', ['-rf', join(mounts.dom2!.dir, 'many')]), 'rm -rf in dom2');
  t.true(view2.askedAhead - before <= 31, `at most one batch, before the first unlink (${view2.askedAhead - before})`);
  t.not((await run('stat', [join(mounts.dom1!.dir, 'many')])).code, 0, 'gone for dom1 too');
  await finish();
});

test.serial('changes through a view show at once through it, also a write through a handle another domain renamed', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  const statOf = async (path: string) => (await run('stat', ['-c', '%a %s', path])).stdout.trim() || 'missing';
  await ok(t, shIn(m2, 'echo a > keep && echo b > other && mkdir sub'), 'files in dom2');
  t.is(await statOf(join(m2, 'other')), '644 2');
  await ok(t, run('chmod', ['600', join(m2, 'other')]), 'chmod in dom2');
  t.is(await statOf(join(m2, 'other')), '600 2', 'the changed file is asked again');
  // Files created, written, renamed and removed through the view show as they are.
  await ok(t, shIn(m2, 'echo hello > sub/n && mv sub/n sub/m && chmod 640 sub/m'), 'create, write, rename, chmod in dom2');
  t.is(await statOf(join(m2, 'sub', 'n')), 'missing');
  t.is(await statOf(join(m2, 'sub', 'm')), '640 6');
  t.is((await ok(t, run('ls', [join(m2, 'sub')]), 'ls')).trim(), 'm');
  // A handle opened through dom2's view on a file it created; dom1 renames the file; a write through the handle
  // (libfuse still names the old path) must show under the new name.
  const writer = spawn('/bin/bash', ['-c', `exec 3>>'${join(m2, 'w.txt')}'; echo ready; read line; printf 0123456789 >&3; echo done`], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  const waitFor = (text: string) => new Promise<void>((resolve) => {
    const check = () => (out.includes(text) ? resolve() : writer.stdout.once('data', (d: Buffer) => ((out += d.toString()), check())));
    check();
  });
  await waitFor('ready');
  t.is(await statOf(join(m2, 'w.txt')), '644 0');
  await ok(t, run('mv', [join(m1, 'w.txt'), join(m1, 'w2.txt')]), 'rename in dom1');
  t.is(await statOf(join(m2, 'w2.txt')), '644 0');
  t.is(await statOf(join(m2, 'w.txt')), 'missing');
  writer.stdin.write('go\n');
  await waitFor('done');
  t.is(await statOf(join(m2, 'w2.txt')), '644 10', 'the write through the old handle shows under the new name');
  t.is(await statOf(join(m1, 'w2.txt')), '644 10');
  await finish();
});

test.serial('readdir gives each entry its type and inode number: find -type and du stat nothing, st_blksize is 128 KiB', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  await ok(t, sh(`mkdir -p ${m1}/t/sub && for i in $(seq 1 60); do echo $i > ${m1}/t/f$i; done && ln -s f1 ${m1}/t/link`), 'tree');
  // scandir's DirEntry takes inode() and the type from readdir itself; lstat gives the truth to compare with.
  const script = `
import os, json, stat
out = []
for e in os.scandir(${JSON.stringify(`${m2}/t`)}):
    st = os.lstat(e.path)
    out.append([e.name, e.inode() == st.st_ino, e.is_dir(follow_symlinks=False) == stat.S_ISDIR(st.st_mode),
                e.is_symlink() == stat.S_ISLNK(st.st_mode), e.is_file(follow_symlinks=False) == stat.S_ISREG(st.st_mode)])
print(json.dumps(out))`;
  const entries = JSON.parse(await ok(t, run('python3', ['-c', script]), 'scandir')) as [string, ...boolean[]][];
  t.is(entries.length, 62);
  t.deepEqual(entries.filter((e) => e.slice(1).some((same) => !same)), [], 'd_ino and d_type agree with lstat');
  const view = mounts.dom2!.view;
  const before = view.counters.calls.getattr ?? 0;
  t.is((await ok(t, run('find', [`${m2}/t`, '-type', 'f']), 'find')).trim().split('\n').length, 60);
  t.is((await ok(t, run('find', [`${m2}/t`, '-type', 'l']), 'find')).trim(), `${m2}/t/link`);
  // Without types each find would stat all 62 entries; what remains is the lookups of the path and the subdir.
  const getattrs = (view.counters.calls.getattr ?? 0) - before;
  t.true(getattrs < entries.length, `two finds over ${entries.length} entries took ${getattrs} getattr calls`);
  t.is((await ok(t, run('stat', ['-c', '%o', `${m2}/t/f1`]), 'stat')).trim(), String(128 * 1024), 'st_blksize');
  await finish();
});

test.serial('auto views: file data is close-to-open whatever the bound', async (t) => {
  const hour = { cache: { mode: 'auto', ms: 3_600_000 } } as const;
  const { mounts, finish } = await mountedPlatform(t, [
    { name: 'dom1', slot: 0, mount: hour },
    { name: 'dom2', slot: 1, mount: hour },
  ]);
  const f1 = join(mounts.dom1!.dir, 'note.txt');
  const f2 = join(mounts.dom2!.dir, 'note.txt');
  await ok(t, sh(`echo "version 1" > ${f1}`), 'write v1');
  t.is(await ok(t, run('cat', [f1]), 'cat v1 in dom1 (now in its page cache)'), 'version 1\n');
  // Same size and attributes cached for an hour, so only the open-time drop of the pages can make dom1 see it.
  await ok(t, sh(`echo "version 2" > ${f2}`), 'rewrite in dom2');
  t.is(await ok(t, run('cat', [f1]), 'cat after the rewrite'), 'version 2\n');
  await finish();
});

test.serial('auto=MS views: what another domain changes shows once MS have passed, and may be cached until then', async (t) => {
  const bound = 300;
  const { mounts, finish, mountAgain } = await mountedPlatform(t, [
    { name: 'dom1', slot: 0, mount: { cache: { mode: 'auto', ms: bound } } },
    { name: 'dom2', slot: 1 },
  ]);
  const quick = mounts.dom1!.dir;
  const hourly = await mountAgain('dom1', { cache: { mode: 'auto', ms: 3_600_000 } });
  const m2 = mounts.dom2!.dir;
  await ok(t, sh(`echo ab > ${m2}/grows.txt && echo old > ${m2}/goes.txt && mkdir ${m2}/d && echo x > ${m2}/plain.txt`), 'files made in dom2');
  // Let both dom1 views remember: a negative lookup, the attributes of a file, a name, a directory's listing, that a
  // file has no extended attributes.
  for (const v of [quick, hourly]) {
    t.not((await run('stat', [`${v}/new.txt`])).code, 0, 'new.txt does not exist yet');
    t.is((await ok(t, run('stat', ['-c', '%s', `${v}/grows.txt`]), 'stat')).trim(), '3');
    await ok(t, run('stat', [`${v}/goes.txt`]), 'stat goes.txt');
    await ok(t, run('stat', [`${v}/plain.txt`]), 'stat plain.txt');
  }
  await ok(t, sh(`echo new > ${m2}/new.txt && echo abcdef >> ${m2}/grows.txt && rm ${m2}/goes.txt && setfattr -n user.tag -v on ${m2}/plain.txt`), 'changes in dom2');
  // Within the bound the host may answer from what it remembers: the hour-long view proves the mode caches.
  t.not((await run('stat', [`${hourly}/new.txt`])).code, 0, 'a negative lookup is remembered within the bound');
  t.is((await ok(t, run('stat', ['-c', '%s', `${hourly}/grows.txt`]), 'stat')).trim(), '3', 'attributes are remembered');
  t.not((await run('getfattr', ['-n', 'user.tag', `${hourly}/plain.txt`])).code, 0, '"no extended attributes" is remembered within the bound');
  // Past the bound nothing stale may be served.
  await new Promise((r) => setTimeout(r, bound + 200));
  t.is(await ok(t, run('cat', [`${quick}/new.txt`]), 'new.txt through dom1 after the bound'), 'new\n');
  t.is((await ok(t, run('stat', ['-c', '%s', `${quick}/grows.txt`]), 'stat')).trim(), '10', 'the new size');
  t.is(await ok(t, run('cat', [`${quick}/grows.txt`]), 'cat grows.txt'), 'ab\nabcdef\n');
  t.not((await run('stat', [`${quick}/goes.txt`])).code, 0, 'a removed name is gone');
  t.regex(await ok(t, run('getfattr', ['-n', 'user.tag', `${quick}/plain.txt`]), 'getfattr through dom1 after the bound'), /user\.tag="on"/);
  await finish();
});

test.serial('writes through an auto view: their "no extended attributes" question is answered by the view while the writes were all that changed, and an attribute another domain sets shows', async (t) => {
  // A bound of 1 ms: what the view answers here is exact knowledge, not the auto bound's.
  const { mounts, finish } = await mountedPlatform(t, [
    { name: 'dom1', slot: 0, mount: { cache: { mode: 'auto', ms: 1 } } },
    { name: 'dom2', slot: 1 },
  ]);
  const m1 = mounts.dom1!.dir;
  const view = mounts.dom1!.view;
  await ok(t, sh(`head -c 262144 /dev/zero > ${m1}/f`), 'a file in dom1');
  const getxattrs = view.counters.calls.getxattr ?? 0;
  const offMain = view.answeredOffMainThread;
  // Without a writeback cache the host kernel asks for security.capability before each write(2) (to clear it).
  await ok(t, sh(`dd if=/dev/urandom of=${m1}/f bs=4k count=48 conv=notrunc status=none`), '48 writes');
  const answered = view.answeredOffMainThread - offMain;
  const handled = (view.counters.calls.getxattr ?? 0) - getxattrs;
  if (answered + handled < 48) t.log(`this kernel asked ${answered + handled} questions around 48 writes`);
  // All but the first answered on the libfuse threads, without a hop to the main thread (let alone the domain).
  t.true(handled <= 1, `${handled} getxattr reached the main thread; ${answered} answered on the libfuse threads`);
  // Another domain sets one: dom1 gives its lock up (its change count moves), and nothing carried over holds.
  await mounts.dom2!.domain.call({ kind: 'vfs', op: 'setxattr', args: ['/f', 'user.tag', new TextEncoder().encode('on'), 0] });
  await new Promise((r) => setTimeout(r, 20));
  t.regex(await ok(t, run('getfattr', ['-n', 'user.tag', `${m1}/f`]), 'getfattr through dom1'), /user\.tag="on"/);
  await ok(t, sh(`dd if=/dev/urandom of=${m1}/f bs=4k count=4 conv=notrunc status=none`), 'more writes');
  t.regex(await ok(t, run('getfattr', ['-n', 'user.tag', `${m1}/f`]), 'getfattr through dom1 after more writes'), /user\.tag="on"/);
  await finish();
});

test.serial('an operation that creates a name or changes attributes brings the stat libfuse asks for next: it is answered on the libfuse threads, and exact', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const view = mounts.dom1!.view;
  await ok(t, sh(`touch ${m1}/f`), 'a file in dom1');
  const getattrs = view.counters.calls.getattr ?? 0;
  // libfuse follows each of these with a getattr of the path (the stat its reply carries).
  const modes = ['600', '640', '604', '644', '700', '755', '711', '751', '600', '666'];
  await ok(t, shIn(m1, `for m in ${modes.join(' ')}; do chmod $m f; done; touch -m -d @1000000000 f; mkdir d; ln -s f s; ln f h`), 'attributes changed, names made');
  // Nor does the next one's path walk (/ and f, unchanged by an operation on f alone): only the names looked up
  // before they exist (d, s, h) and f after a name was added beside it reach the main thread, where each operation
  // sent three (/ and f before it, f after it).
  const handled = (view.counters.calls.getattr ?? 0) - getattrs;
  t.true(handled <= 8, `${handled} getattr reached the main thread for ${modes.length + 4} operations`);
  t.is((await ok(t, run('stat', ['-c', '%a %Y %h', `${m1}/f`]), 'stat')).trim(), '666 1000000000 2', 'what the operations left');
  // Another domain's change shows through the very next stat, as always: of the file, of a directory above it, of
  // a name removed here.
  await mounts.dom2!.domain.call({ kind: 'vfs', op: 'chmod', args: ['/f', 0o612] });
  t.is((await ok(t, run('stat', ['-c', '%a', `${m1}/f`]), 'stat after dom2')).trim(), '612');
  await ok(t, shIn(m1, 'touch d/g && chmod 600 d/g && rm s'), 'changes under d, a name removed');
  await mounts.dom2!.domain.call({ kind: 'vfs', op: 'chmod', args: ['/d', 0o701] });
  t.is((await ok(t, run('stat', ['-c', '%a', `${m1}/d`]), 'stat of d after dom2')).trim(), '701');
  t.not((await run('stat', [`${m1}/s`])).code, 0, 'the name removed here is gone');
  await mounts.dom2!.domain.call({ kind: 'vfs', op: 'mkdir', args: ['/s', 0o750, { uid: 0, gid: 0 }] });
  t.is((await ok(t, run('stat', ['-c', '%a %F', `${m1}/s`]), 'stat of s after dom2')).trim(), '750 directory');
  await finish();
});

test.serial('names removed through a view keep what it knew of the rest while that was all its domain did: rm -r asks the domain for no stat, and a hard link count is never stale', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  const view = mounts.dom2!.view;
  await ok(t, shIn(m1, 'mkdir e && echo 1 > e/f1 && ln e/f1 e/link1 && for i in $(seq 2 40); do echo $i > e/f$i; done && ln e/f2 e/link2'), 'files in dom1');
  await ok(t, run('ls', ['-l', join(m2, 'e')]), 'ls -l in dom2');
  // link1's stat (two links) was known when f1 went: it is not kept, since f1 was one of its names.
  await ok(t, run('rm', [join(m2, 'e', 'f1')]), 'rm of a linked name in dom2');
  t.is((await ok(t, run('stat', ['-c', '%h', join(m2, 'e', 'link1')]), 'stat link1')).trim(), '1', 'the other name of the inode removed');
  await ok(t, run('rm', [join(m2, 'e', 'f3')]), 'rm in dom2');
  t.is((await ok(t, run('stat', ['-c', '%s', join(m2, 'e', 'f4')]), 'stat f4')).trim(), '2', 'a name after it, kept');
  // Another domain's change shows at once, kept or not.
  await ok(t, sh(`echo longer > ${m1}/e/f5`), 'rewrite in dom1');
  t.is((await ok(t, run('stat', ['-c', '%s', join(m2, 'e', 'f5')]), 'stat f5')).trim(), '7', 'a size changed in dom1');
  const getattrs = view.counters.calls.getattr ?? 0;
  await ok(t, run('rm', ['-rf', join(m2, 'e')]), 'rm -rf in dom2');
  const handled = (view.counters.calls.getattr ?? 0) - getattrs;
  t.true(handled <= 8, `${handled} getattr reached the main thread for 40 names removed`);
  t.is(await ok(t, run('ls', ['-A', m1]), 'ls in dom1'), '', 'all gone, as dom1 sees it');
  await finish();
});

test.serial('a strict view answers a small read asked again while nothing changed, and what another domain rewrote at once', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  const view = mounts.dom1!.view;
  await ok(t, sh(`head -c 65536 /dev/zero | tr '\\0' a > ${m2}/f`), 'a file in dom2');
  const block = async () => ok(t, run('dd', [`if=${m1}/f`, 'bs=4096', 'skip=5', 'count=1', 'status=none']), 'dd of block 5 through dom1');
  t.is(await block(), 'a'.repeat(4096));
  const reread = view.readAhead.reread;
  t.is(await block(), 'a'.repeat(4096));
  t.is(view.readAhead.reread, reread + 1, 'the same request, nothing changed: answered by the view');
  await ok(t, sh(`printf b | dd of=${m2}/f bs=1 seek=20480 conv=notrunc status=none`), 'one byte of block 5 rewritten in dom2');
  t.is(await block(), 'b' + 'a'.repeat(4095), 'what dom2 wrote, at once');
  await finish();
});

test.serial('auto views map files shared: sqlite in WAL mode works, and mmap writes reach the other domain', async (t) => {
  const auto = { cache: { mode: 'auto', ms: 1000 } } as const;
  const { mounts, finish } = await mountedPlatform(t, [
    { name: 'dom1', slot: 0, mount: auto },
    { name: 'dom2', slot: 1 },
  ]);
  const m1 = mounts.dom1!.dir;
  const sql = 'pragma journal_mode=wal;\ncreate table t(a, b);\n' +
    'with recursive n(i) as (select 1 union all select i + 1 from n where i < 2000) insert into t select i, hex(randomblob(40)) from n;\n' +
    'select count(*) from t;\npragma integrity_check;\n';
  t.is(await ok(t, run('/usr/bin/sqlite3', ['-batch', '-bail', `${m1}/wal.db`], { input: sql }), 'sqlite3 in WAL mode'), 'wal\n2000\nok\n');
  t.is(await ok(t, run('/usr/bin/sqlite3', ['-batch', '-bail', `${m1}/wal.db`], { input: 'pragma wal_checkpoint(truncate);\nselect count(*) from t;\n' }), 'checkpoint'), '0|0|0\n2000\n');
  const script = `
import mmap, os
fd = os.open(${JSON.stringify(`${m1}/mapped.bin`)}, os.O_RDWR | os.O_CREAT, 0o644)
os.ftruncate(fd, 8192)
m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[4096:4101] = b'hello'
m.flush()
m.close()
os.close(fd)`;
  await ok(t, run('python3', ['-c', script]), 'mmap MAP_SHARED write');
  const seen = await ok(t, run('dd', [`if=${mounts.dom2!.dir}/mapped.bin`, 'bs=1', 'skip=4096', 'count=5', 'status=none']), 'read through dom2');
  t.is(seen, 'hello');
  await finish();
});

test.serial('git init, add, commit and fsck on a mount; the repository is sound from the other domain', async (t) => {
  const { dir, mounts, finish } = await mountedPlatform(t, rw2);
  const home = join(dir, 'home');
  await mkdir(home);
  const env = { ...process.env, HOME: home, GIT_CONFIG_NOSYSTEM: '1', GIT_AUTHOR_DATE: '2001-02-03T04:05:06Z', GIT_COMMITTER_DATE: '2001-02-03T04:05:06Z' };
  const git = (cwd: string, ...args: string[]) =>
    run('git', ['-C', cwd, '-c', 'user.name=hvshare', '-c', 'user.email=hvshare@example.invalid', '-c', 'init.defaultBranch=main', ...args], { env });
  const repo1 = join(mounts.dom1!.dir, 'repo');
  const repo2 = join(mounts.dom2!.dir, 'repo');
  await ok(t, git(mounts.dom1!.dir, 'init', '-q', 'repo'), 'git init');
  await ok(t, shIn(repo1, 'mkdir -p src docs && for i in $(seq 1 40); do echo "line $i" > src/f$i.txt; done && head -c 200000 /dev/urandom > docs/blob.bin && ln -s src/f1.txt link'), 'populate');
  await ok(t, git(repo1, 'add', '-A'), 'git add');
  await ok(t, git(repo1, 'commit', '-q', '-m', 'first'), 'git commit');
  await ok(t, shIn(repo1, 'echo changed >> src/f7.txt && rm src/f8.txt'), 'change');
  await ok(t, git(repo1, 'commit', '-q', '-a', '-m', 'second'), 'git commit -a');
  await ok(t, git(repo1, 'gc', '-q'), 'git gc (packs, renames, deletes)');
  await ok(t, git(repo1, 'fsck', '--strict', '--full'), 'git fsck in dom1');
  await ok(t, git(repo2, 'fsck', '--strict', '--full'), 'git fsck in dom2');
  t.is(await ok(t, git(repo2, 'log', '--format=%s'), 'git log in dom2'), 'second\nfirst\n');
  t.is(await ok(t, git(repo2, 'status', '--porcelain'), 'git status in dom2'), '', 'working tree clean as seen from dom2');
  t.is(await ok(t, git(repo2, 'show', 'HEAD~1:src/f8.txt'), 'git show'), 'line 8\n');
  await finish();
});

test.serial('sqlite3: many rows inserted through one domain, pragma integrity_check ok through both', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const db1 = join(mounts.dom1!.dir, 'test.db');
  const db2 = join(mounts.dom2!.dir, 'test.db');
  const sqlite = (db: string, sql: string) => run('/usr/bin/sqlite3', ['-batch', '-bail', db], { input: sql });
  await ok(
    t,
    sqlite(
      db1,
      `create table t(id integer primary key, k text unique, v blob);
       with recursive c(x) as (select 1 union all select x + 1 from c where x < 30000)
       insert into t(k, v) select 'key-' || x, randomblob(100 + x % 300) from c;
       create index t_v on t(length(v));`,
    ),
    'bulk insert',
  );
  // Many small transactions: each creates, fsyncs and deletes a rollback journal (and fsyncs the directory).
  const small = Array.from({ length: 200 }, (_, i) => `insert into t(k, v) values('small-${i}', randomblob(64));`).join('\n');
  await ok(t, sqlite(db2, small), 'small transactions in dom2');
  await ok(t, sqlite(db1, `update t set v = randomblob(50) where id % 7 = 0; delete from t where id % 11 = 0;`), 'update/delete');
  t.is((await ok(t, sqlite(db1, 'pragma integrity_check;'), 'integrity_check dom1')).trim(), 'ok');
  t.is((await ok(t, sqlite(db2, 'pragma integrity_check;'), 'integrity_check dom2')).trim(), 'ok');
  const expected = 30200 - Math.floor(30200 / 11); // ids 1..30200, every 11th deleted
  t.is((await ok(t, sqlite(db2, 'select count(*) from t;'), 'count')).trim(), String(expected));
  await finish();
});

test.serial('cp -a of a tree (files, subdirs, symlink, hard link, owners, modes, times) and diff -r --no-dereference', async (t) => {
  const { dir, mounts, finish } = await mountedPlatform(t, rw2);
  const src = join(dir, 'tree');
  await mkdir(join(src, 'a', 'b', 'c'), { recursive: true });
  await mkdir(join(src, 'empty'));
  await writeFile(join(src, 'top.txt'), 'top\n');
  await writeFile(join(src, 'a', 'big.bin'), randomBytes(700_000));
  await writeFile(join(src, 'a', 'b', 'owned.txt'), 'owned\n');
  await writeFile(join(src, 'a', 'b', 'c', 'deep.txt'), 'deep\n');
  await writeFile(join(src, 'a', 'empty-file'), '');
  await chown(join(src, 'a', 'b', 'owned.txt'), 1234, 99);
  await chmod(join(src, 'a', 'big.bin'), 0o600);
  await chmod(join(src, 'a', 'b', 'c'), 0o700);
  // The symlink points at the chowned file: an lchown/utimensat(NOFOLLOW) applied to its target would show.
  await symlink('b/owned.txt', join(src, 'a', 'link-to-owned'));
  await symlink('../nowhere', join(src, 'a', 'dangling'));
  await link(join(src, 'top.txt'), join(src, 'a', 'hardlink.txt'));
  await ok(t, sh(`find ${src} -exec touch -h -d '2001-02-03 04:05:06' {} +`), 'set times');
  const copy1 = join(mounts.dom1!.dir, 'copy');
  const copy2 = join(mounts.dom2!.dir, 'copy');
  await ok(t, run('cp', ['-a', src, copy1]), 'cp -a');
  await ok(t, run('diff', ['-r', '--no-dereference', src, copy2]), 'diff -r through dom2');
  // Metadata: type, mode, owner, link count and mtime of everything but symlinks; symlinks by target.
  const meta = (root: string) =>
    ok(t, shIn(root, `find . ! -type l -printf '%p %y %m %U:%G %n %T@\\n' | sort && find . -type l -printf '%p -> %l\\n' | sort`), 'find');
  t.is(await meta(copy2), await meta(src));
  const inodes = (await ok(t, run('stat', ['-c', '%i', join(copy2, 'top.txt'), join(copy2, 'a', 'hardlink.txt')]), 'stat')).split('\n');
  t.is(inodes[0], inodes[1], 'the hard link is preserved');
  // diff really compares: a change made through dom1 is reported.
  await ok(t, sh(`echo changed > ${join(copy1, 'a', 'b', 'c', 'deep.txt')}`), 'change');
  const differs = await run('diff', ['-r', '--no-dereference', src, copy2]);
  t.is(differs.code, 1);
  t.regex(differs.stdout, /deep\.txt/);
  await finish();
});

test.serial('times: cp -a then rsync -a finds nothing to do; touch -m, touch -a, UTIME_NOW, nanoseconds, 2^32 s and pre-1970 through the other view', async (t) => {
  const { dir, mounts, finish } = await mountedPlatform(t, rw2);
  const src = join(dir, 'timed');
  await mkdir(join(src, 'sub'), { recursive: true });
  await writeFile(join(src, 'a.txt'), 'a\n');
  await writeFile(join(src, 'sub', 'b.bin'), randomBytes(100_000));
  await writeFile(join(src, 'sub', 'far.txt'), 'after 2106\n');
  await writeFile(join(src, 'old.txt'), 'before 1970\n');
  await symlink('a.txt', join(src, 'link'));
  // A distinct atime and mtime on everything, to the nanosecond; directories last (their entries moved them).
  const times: [path: string, atime: string, mtime: string][] = [
    ['a.txt', '@1000000001.123456789', '@1200000002.987654321'],
    ['sub/b.bin', '@1300000003.000000007', '@1100000004.5'],
    ['sub/far.txt', '@4294967296.123456789', '@8589934592.999999999'],
    ['old.txt', '@-86400.25', '@-1.000000001'],
    ['link', '@1400000005.1', '@1400000006.2'],
    ['sub', '@1500000007.3', '@1500000008.4'],
    ['.', '@1600000009.5', '@1600000010.6'],
  ];
  await ok(t, shIn(src, times.map(([p, a, m]) => `touch -h -a -d ${a} ${p} && touch -h -m -d ${m} ${p}`).join(' && ')), 'set times');
  const utc = { env: { ...process.env, TZ: 'UTC' } };
  /** atime and mtime of `paths` under `root`, as stat prints them (nanoseconds included). */
  const stamps = (root: string, paths = times.map(([p]) => p)) =>
    ok(t, sh(`cd '${root}' && stat -c '%n %x | %y' ${paths.join(' ')}`, utc), 'stat');
  // Taken before cp, which reads the source and so moves its atimes.
  const expected = await stamps(src);
  t.regex(expected, /^sub\/far\.txt 2106-02-07 06:28:16\.123456789 \+0000 \| 2242-03-16 12:56:32\.999999999 \+0000$/m, 'the host keeps them');
  const copy1 = join(mounts.dom1!.dir, 'copy');
  const copy2 = join(mounts.dom2!.dir, 'copy');
  await ok(t, run('cp', ['-a', src, copy1]), 'cp -a into dom1');
  t.is(await stamps(copy2), expected, 'every atime and mtime as cp -a set it, read through dom2');
  const rsync = (...flags: string[]) => ok(t, run('rsync', ['-a', '--itemize-changes', ...flags, `${src}/`, `${copy1}/`]), 'rsync -a');
  t.is(await rsync(), '', 'rsync -a finds nothing to do');
  t.is(await stamps(copy2), expected, 'and changed nothing');

  // touch -m and touch -a change only their own time (libfuse passes UTIME_OMIT for the other).
  const far1 = join(copy1, 'sub', 'far.txt');
  await ok(t, run('touch', ['-m', '-d', '@4294967296.5', far1]), 'touch -m');
  t.is(await stamps(copy2, ['sub/far.txt']), 'sub/far.txt 2106-02-07 06:28:16.123456789 +0000 | 2106-02-07 06:28:16.500000000 +0000\n');
  await ok(t, run('touch', ['-a', '-d', '@-5.000000003', far1]), 'touch -a');
  t.is(await stamps(copy2, ['sub/far.txt']), 'sub/far.txt 1969-12-31 23:59:54.999999997 +0000 | 2106-02-07 06:28:16.500000000 +0000\n');
  // rsync really compares: it wants to fix the mtime touch -m changed, and nothing else.
  t.regex(await rsync('--dry-run'), /^>f\S* sub\/far\.txt\n$/);

  // Both times at once, past 2^32 s; then UTIME_NOW, decided by the domain's clock.
  const a1 = join(copy1, 'a.txt');
  await ok(t, run('touch', ['-d', '@4294967296.123456789', a1]), 'touch -d');
  t.is(await ok(t, run('stat', ['-c', '%X %Y', join(copy2, 'a.txt')]), 'stat'), '4294967296 4294967296\n');
  const before = Math.floor(Date.now() / 1000);
  await ok(t, run('touch', [a1]), 'touch');
  const after = Math.ceil(Date.now() / 1000);
  const now = (await ok(t, run('stat', ['-c', '%X %Y %Z', join(copy2, 'a.txt')]), 'stat')).trim().split(' ').map(Number);
  t.true(now.every((s) => s >= before && s <= after), `touch sets all three times to now: ${now} not in ${before}..${after}`);
  await finish();
});

test.serial('a mount left by a server killed with -9 goes away (auto_unmount) and the same mount point mounts again', async (t) => {
  const { dir, mounts, finish } = await mountedPlatform(t, [{ name: 'dom1', slot: 0 }]);
  await ok(t, sh(`echo survives > ${join(mounts.dom1!.dir, 'kept.txt')}`), 'write');
  // Another process boots its own platform on a scratch image and mounts it; we kill it without any cleanup.
  const mnt = join(dir, 'mnt-crashed');
  const scratch = await formattedImage(dir, 32 * MiB, 'scratch.img');
  const script = `
    const { Platform } = await import(${JSON.stringify(new URL('../hypervisor/toolstack.js', import.meta.url).href)});
    const { mountDomain } = await import(${JSON.stringify(new URL('../mount/index.js', import.meta.url).href)});
    const p = await Platform.boot({ volumes: [{ name: 'v', path: ${JSON.stringify(scratch)} }] });
    const d = await p.createDomain({ name: 'doomed', memoryBytes: 32 << 20, grants: [{ volume: 'v', readOnly: false }], filesystem: { slot: 0 } });
    await mountDomain(d, ${JSON.stringify(mnt)});
    console.log('mounted');`;
  const scriptPath = join(dir, 'mount-server.mjs');
  await writeFile(scriptPath, script);
  const server = spawn(process.execPath, [scriptPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  const closed = new Promise((resolve) => server.on('close', resolve));
  await new Promise<void>((resolve, reject) => {
    server.stdout.setEncoding('utf8').on('data', (s: string) => s.includes('mounted') && resolve());
    server.on('close', () => reject(new Error('the mounting process exited early')));
  });
  t.true(await isMounted(mnt));
  t.is(await ok(t, run('ls', ['-A', mnt]), 'ls the other process mount'), '');
  server.kill('SIGKILL');
  await closed;
  let gone = false;
  for (let i = 0; i < 100 && !(gone = !(await isMounted(mnt))); i++) await new Promise((r) => setTimeout(r, 20));
  t.true(gone, 'auto_unmount removed the dead server mount');
  // The same mount point serves again, from this process's dom1.
  const again = await mountDomain(mounts.dom1!.domain, mnt);
  t.teardown(() => again.unmount());
  t.is(await ok(t, run('cat', [join(mnt, 'kept.txt')]), 'cat after remount'), 'survives\n');
  await again.unmount();
  t.false(await isMounted(mnt));
  await finish();
});

(FIO ? test.serial : test.skip)(
  FIO ? 'fio random writes with --verify=crc32c through one domain, verified again through the other' : 'fio verify (skipped: fio is not installed; apt-get install -y fio)',
  async (t) => {
    const { mounts, finish } = await mountedPlatform(t, rw2);
    const job = (directory: string, extra: string[]) =>
      run(FIO!, [
        '--name=verify',
        `--directory=${directory}`,
        '--filename=fio.dat',
        '--size=24M',
        '--ioengine=psync',
        '--bsrange=4k-128k',
        '--rw=randwrite',
        '--verify=crc32c',
        '--verify_fatal=1',
        '--verify_state_save=0',
        '--do_verify=1',
        '--fsync_on_close=1',
        '--output-format=terse',
        '--terse-version=3',
        ...extra,
      ], { timeoutMs: 60_000 });
    await ok(t, job(mounts.dom1!.dir, ['--randseed=1234']), 'fio write+verify in dom1');
    // Same seed, verify only: every block dom1 wrote checks out as dom2 reads it.
    await ok(t, job(mounts.dom2!.dir, ['--randseed=1234', '--verify_only']), 'fio verify in dom2');
    await finish();
  },
);
