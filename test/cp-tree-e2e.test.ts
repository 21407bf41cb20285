import test from 'ava';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HVSHARE, hvshare, sh, testPlatform } from './helpers/cli.js';

/** `hvshare cp -R` against a running platform (dom1 and dom2 read-write, dom3 read-only), host trees both ways. */
const platform = testPlatform('hvshare-cpr-');
const cli = platform.cli;
test.before(() => platform.start());
test.after.always(() => platform.stop());

/** A host tree with modes, nanosecond times, symlinks (one dangling), an empty file and a read-only folder. */
async function hostTree(root: string): Promise<void> {
  const made = await sh(
    `mkdir -p '${root}/src/lib' '${root}/ro' '${root}/empty-dir' && printf 'hello\\n' > '${root}/src/a.txt' && : > '${root}/empty' && ` +
      `printf '#!/bin/sh\\n' > '${root}/src/run.sh' && chmod 755 '${root}/src/run.sh' && chmod 640 '${root}/src/a.txt' && ` +
      `printf inside > '${root}/ro/kept' && ln -s ../src/a.txt '${root}/src/lib/link' && ln -s nowhere '${root}/dangling'`,
  );
  if (made.code !== 0) throw new Error(made.stderr);
  await writeFile(join(root, 'src/lib/big.bin'), randomBytes(3 * 1024 * 1024 + 17));
  const times = await sh(
    `cd '${root}' && touch -h -d '2001-02-03 04:05:06.123456789' src/a.txt src/lib/link dangling && ` +
      `touch -d '1999-12-31 23:59:59.5' src/lib/big.bin && touch -a -d '2010-01-01 00:00:00.25' src/run.sh && ` +
      `touch -d '2005-05-05 05:05:05.000000555' src/lib src empty-dir && chmod 2750 src/lib && chmod 555 ro && touch -d '2004-04-04 04:04:04' ro`,
  );
  if (times.code !== 0) throw new Error(times.stderr);
}

/**
 * Each entry under `root` with type, mode, mtime (seconds), symlink target and size: two copies must agree (not
 * atimes: reading a host tree moves them).
 */
async function listing(root: string): Promise<string> {
  const r = await sh(`cd '${root}' && find . -mindepth 1 -printf '%P %y %m %T@ %l %s\\n' | sort`);
  // Directory sizes are the format's business.
  return r.stdout.replace(/^(\S+ d .*) \d+$/gm, '$1');
}

test.serial('cp -R: a host tree into a domain and back: modes, times, symlinks and content kept', async (t) => {
  const host = join(platform.dir, 'host');
  await hostTree(host);
  const into = await cli('cp', '-R', host, 'dom1:/', '--json');
  t.is(into.code, 0, into.stderr);
  t.deepEqual(JSON.parse(into.stdout), {
    from: host, to: 'dom1:/host', files: 5, directories: 5, symlinks: 2, bytes: 6 + 10 + 6 + 3 * 1024 * 1024 + 17, skipped: [],
  });
  // Names, types, sizes, modes, owners (root, as the host tree's), mtimes to the nanosecond, targets, content.
  const same = await cli('diff', 'dom2', host, '/host');
  t.is(same.code, 0, same.stdout + same.stderr);
  const atime = await sh(`stat -c %X.%x '${platform.mnt}/dom3/host/src/run.sh'`);
  t.regex(atime.stdout, /^1262304000\.2010-01-01 00:00:00\.250000000/);

  const back = join(platform.dir, 'back');
  const out = await cli('cp', '-R', 'dom2:/host', back, '--json');
  t.is(out.code, 0, out.stderr);
  t.like(JSON.parse(out.stdout), { from: 'dom2:/host', to: back, files: 5, directories: 5, symlinks: 2 });
  t.is((await sh(`diff -r --no-dereference '${host}' '${back}'`)).code, 0);
  // Host times are set as a double by Node: mtimes agree to a couple of microseconds, the rest exactly.
  const lines = async (root: string) => (await listing(root)).split('\n').filter(Boolean);
  const [copied, original] = [await lines(back), await lines(host)];
  t.is(copied.length, original.length);
  for (const [i, line] of copied.entries()) {
    const [a, b] = [line.split(' '), original[i].split(' ')];
    t.deepEqual([...a.slice(0, 3), ...a.slice(4)], [...b.slice(0, 3), ...b.slice(4)]);
    t.true(Math.abs(Number(a[3]) - Number(b[3])) < 2e-6, `${line} / ${original[i]}`);
  }
  t.regex(await listing(back), /^src\/lib d 2750 1115269505\.\d+ /m);
  t.regex(await listing(back), /^ro d 555 /m);
});

test.serial('cp -R: into an existing folder, over an earlier copy, and with progress', async (t) => {
  await sh(`mkdir -p '${platform.mnt}/dom1/dest'`);
  const first = await cli('cp', '-R', 'dom1:/host/src', 'dom1:/dest');
  t.is(first.code, 0, first.stderr);
  await sh(`printf changed > '${platform.mnt}/dom1/host/src/a.txt'`);
  const again = await hvshare('cp', '-R', 'dom1:/host/src', 'dom1:/dest', '--state', platform.state);
  t.is(again.code, 0, again.stderr);
  t.is((await sh(`cat '${platform.mnt}/dom2/dest/src/a.txt'`)).stdout, 'changed');
  t.is((await cli('diff', 'dom1', 'dom3', '/dest')).code, 0);
  const shown = await sh(`HVSHARE_PROGRESS_AFTER_MS=0 node '${HVSHARE}' cp -R dom1:/host/src '${join(platform.dir, 'progress')}' --state '${platform.state}'`);
  t.is(shown.code, 0, shown.stderr);
  t.regex(shown.stderr, /^cp: \d+ files, \d+ directories, \d+ symlinks, \d+\.\d MiB$/m);
});

test.serial('cp -R: bad input exits 2 naming what is wrong; what cannot be copied is named', async (t) => {
  await sh(`mkdir -p '${platform.mnt}/dom1/t/sub' && printf x > '${platform.mnt}/dom1/t/file' && printf y > '${join(platform.dir, 'plain')}'`);
  const cases: [string[], RegExp][] = [
    [['cp', 'dom1:/t', join(platform.dir, 'x')], /dom1:\/t: is a directory \(EISDIR\)/],
    [['cp', '-R', 'dom1:/t', 'dom1:/t/sub'], /dom1:\/t\/sub\/t: .*cannot copy dom1:\/t into itself/],
    [['cp', '-R', 'dom1:/', 'dom1:/t'], /into itself/],
    [['cp', '-R', 'dom1:/missing', platform.dir], /dom1:\/missing: no such file or directory \(ENOENT\)/],
    [['cp', '-R', 'dom1:/t', 'dom3:/t'], /dom3:\/t\/t: read-only file system \(EROFS\)/],
    [['cp', '-R', 'dom1:/t', join(platform.dir, 'plain')], /plain: not a directory \(ENOTDIR\)/],
    [['cp', '-R', 'dom9:/t', platform.dir], /dom9:\/t: no such file or directory \(ENOENT\)/],
    [['cp', '-R'], /missing required argument 'SRC'/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(...args);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, message, args.join(' '));
  }
  // A FIFO is not copied: named, exit 2, the rest copied.
  const special = join(platform.dir, 'special');
  await sh(`mkdir -p '${special}' && mkfifo '${special}/pipe' && printf z > '${special}/z'`);
  const r = await cli('cp', '-R', special, 'dom2:/special', '--json');
  t.is(r.code, 2);
  t.regex(r.stderr, /not copied \(devices, FIFOs and sockets are not copied\): .*special\/pipe/);
  t.like(JSON.parse(r.stdout), { files: 1, skipped: [join(special, 'pipe')] });
  t.is((await sh(`cat '${platform.mnt}/dom1/special/z'`)).stdout, 'z');
  const down = await hvshare('cp', '-R', special, 'dom1:/x', '--state', join(platform.dir, 'nothing'));
  t.is(down.code, 2);
  t.regex(down.stderr, /the platform is not running/);
});
