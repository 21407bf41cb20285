/**
 * End-to-end POSIX through real mounts: every user of the host, with the host kernel checking modes and owners
 * (allow_other + default_permissions), files owned by whoever creates them, setgid directories and the sticky bit.
 * The unprivileged user is `nobody`, through setpriv (tests run as root).
 */
import test from 'ava';
import { chmod } from 'node:fs/promises';
import { mountedPlatform, ok, rw2, sh, type RunResult } from './helpers/fuse-mounts.js';
import { dumpTree } from './helpers/tree-dump.js';

const NOBODY = '65534:65534';
/** `script` run by the shell as nobody:nogroup, with no supplementary groups and umask 022. */
const asNobody = (script: string): Promise<RunResult> =>
  sh(`exec setpriv --reuid=65534 --regid=65534 --clear-groups sh -c ${JSON.stringify(`umask 022; ${script}`)}`);

test.serial('an unprivileged user works in a 1777 directory of a view and cannot touch root\'s 0644 file', async (t) => {
  const { dir, mounts, finish } = await mountedPlatform(t, rw2);
  await chmod(dir, 0o755); // the mounts sit in a private temp folder: let nobody reach them
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  await ok(t, sh(`cd ${m1} && mkdir pub && chmod 1777 pub && echo root > pub/rootfile && chmod 644 pub/rootfile`), 'root sets up pub');

  await ok(
    t,
    asNobody(`cd ${m1}/pub && echo hi > mine && echo more >> mine && mkdir d && touch d/x && ln -s mine l && mv mine mine2 && cat mine2 rootfile`),
    'nobody works in pub',
  );
  t.is((await ok(t, sh(`stat -c '%u:%g %a' ${m2}/pub/mine2 ${m2}/pub/d ${m2}/pub/d/x`), 'stat through dom2')).trim(),
    [`${NOBODY} 644`, `${NOBODY} 755`, `${NOBODY} 644`].join('\n'), 'owned by nobody, seen so through the other domain');
  t.is((await ok(t, sh(`stat -c '%U' ${m1}/pub/l`), 'stat symlink')).trim(), 'nobody');

  const writeRoot = await asNobody(`echo x >> ${m1}/pub/rootfile`);
  t.not(writeRoot.code, 0);
  t.regex(writeRoot.stderr, /Permission denied/);
  const removeRoot = await asNobody(`rm -f ${m1}/pub/rootfile`);
  t.not(removeRoot.code, 0, 'the sticky bit keeps root\'s file');
  t.regex(removeRoot.stderr, /Operation not permitted/);
  t.regex((await asNobody(`chmod 666 ${m1}/pub/rootfile`)).stderr, /Operation not permitted/);
  t.regex((await asNobody(`chown nobody ${m1}/pub/rootfile`)).stderr, /Operation not permitted/);
  t.regex((await asNobody(`touch ${m1}/newfile`)).stderr, /Permission denied/, 'the root directory is 0755 root');
  t.is((await ok(t, sh(`cat ${m2}/pub/rootfile`), 'cat')).trim(), 'root', 'root\'s file is untouched');
  // Root may remove nobody's files; nobody may remove its own.
  await ok(t, asNobody(`rm -r ${m1}/pub/d`), 'nobody removes its own directory');
  await finish();
});

test.serial('setgid directories hand their group down; chown and chmod are stored as given', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  await ok(t, sh(`cd ${m1} && mkdir sg && chown 10:1234 sg && chmod 2775 sg && touch sg/f && mkdir -m 755 sg/sub && mkdir plain && touch plain/g`), 'setup');
  const stats = await ok(t, sh(`cd ${m2} && stat -c '%n %u:%g %a' sg sg/f sg/sub plain/g`), 'stat through dom2');
  t.deepEqual(stats.trim().split('\n'), ['sg 10:1234 2775', 'sg/f 0:1234 644', 'sg/sub 0:1234 2755', 'plain/g 0:0 644']);
  await ok(t, sh(`chmod 4755 ${m1}/plain/g && chown 7:8 ${m1}/plain/g`), 'chmod + chown');
  // The kernel drops set-user-ID on chown (through a setattr of the mode), as for a local filesystem.
  t.is((await ok(t, sh(`stat -c '%u:%g %a' ${m2}/plain/g`), 'stat')).trim(), '7:8 755');
  await finish();
});

test.serial('a private view is for its mounter only; a read-only domain refuses everyone', async (t) => {
  const { dir, mounts, finish, mountAgain } = await mountedPlatform(t, [
    { name: 'dom1', slot: 0 },
    { name: 'dom3', slot: 1, readOnly: true },
  ]);
  await chmod(dir, 0o755);
  const m1 = mounts.dom1!.dir;
  await ok(t, sh(`mkdir ${m1}/pub && chmod 1777 ${m1}/pub && echo shared > ${m1}/pub/f && sync`), 'setup');
  const own = await mountAgain('dom1', { private: true });
  t.is((await ok(t, sh(`cat ${own}/pub/f`), 'root reads its private view')).trim(), 'shared');
  t.regex((await asNobody(`ls ${own}`)).stderr, /Permission denied/);
  t.is((await ok(t, asNobody(`cat ${m1}/pub/f`), 'nobody reads the shared view')).trim(), 'shared');

  const m3 = mounts.dom3!.dir;
  t.is((await ok(t, asNobody(`cat ${m3}/pub/f`), 'nobody reads dom3')).trim(), 'shared');
  t.regex((await asNobody(`touch ${m3}/pub/g`)).stderr, /Read-only file system/);
  t.regex((await sh(`touch ${m3}/pub/g`)).stderr, /Read-only file system/);
  await finish();
});

test.serial('path limits as Linux has them: 255 bytes a name, 4096 a path argument, none from the root of the volume', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  // 20 directories of 250-byte names, each entered relatively: the file at the bottom is 5000+ bytes from the root.
  const depth = await ok(
    t,
    sh(`cd ${m1} && for i in $(seq 1 20); do n=$(printf '%0250d' $i); mkdir $n && cd -P $n || exit 1; done && echo deep > f && cat f && pwd | wc -c`),
    'a deep tree through dom1',
  );
  const [content, pwdBytes] = depth.trim().split('\n');
  t.is(content, 'deep');
  t.true(Number(pwdBytes) > 5020);
  t.is((await ok(t, sh(`cd ${m2} && find . -name f -type f | wc -l`), 'find through dom2')).trim(), '1');
  const long = await sh(`cd ${m1} && stat "$(printf 'x/%.0s' $(seq 1 2100))"`);
  t.regex(long.stderr, /File name too long/, 'one path argument of 4200 bytes');
  t.regex((await sh(`touch ${m1}/${'n'.repeat(256)}`)).stderr, /File name too long/);
  await ok(t, sh(`touch ${m1}/${'n'.repeat(255)} && rm -r ${m1}/$(printf '%0250d' 1)`), 'a 255-byte name; removing the deep tree');
  await finish();
});

test.serial('special files through a view: mkfifo, mknod c/b, a bound unix socket, the same through the other domain', async (t) => {
  const { dir, mounts, finish } = await mountedPlatform(t, rw2);
  await chmod(dir, 0o755);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  await ok(t, sh(`cd ${m1} && mkfifo -m 640 fifo && mknod -m 620 tty c 4 1 && mknod sda b 8 0 && ` +
    `python3 -c "import socket; s = socket.socket(socket.AF_UNIX); s.bind('sock')" && mkdir -m 1777 pub`), 'make them in dom1');
  await ok(t, asNobody(`mkfifo ${m1}/pub/mine`), 'nobody makes a FIFO');
  const seen = await ok(t, sh(`cd ${m2} && stat -c '%n %F %a %t:%T %u' fifo tty sda sock pub/mine`), 'stat through dom2');
  t.deepEqual(seen.trim().split('\n'), [
    'fifo fifo 640 0:0 0',
    'tty character special file 620 4:1 0',
    'sda block special file 644 8:0 0',
    'sock socket 755 0:0 0',
    'pub/mine fifo 644 0:0 65534',
  ]);
  // The FIFO is a FIFO for the host kernel: what one process writes, another reads.
  t.is((await ok(t, sh(`(echo through > ${m1}/fifo &) && cat ${m1}/fifo`), 'a FIFO carries data')).trim(), 'through');
  t.is((await ok(t, sh(`find ${m2} -type p | wc -l; find ${m2} -type c; find ${m2} -type s`), 'find -type')).trim().split('\n').join(' '),
    `2 ${m2}/tty ${m2}/sock`);
  await finish();
});

test.serial('xattrs through views: setfattr/getfattr in every namespace, 64 KiB values, ERANGE, setfacl/getfacl round-trip', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  await ok(t, sh(`cd ${m1} && touch f && mkdir d && setfattr -n user.color -v blue f && setfattr -n trusted.t -v 0x00ff f && ` +
    `setfattr -n security.s -v label f && head -c 65536 /dev/urandom > big && ` +
    `python3 -c "import os; os.setxattr('f', 'user.big', open('big', 'rb').read())"`), 'setfattr');
  const dump = await ok(t, sh(`cd ${m2} && getfattr -d -m - -e hex f`), 'getfattr through dom2');
  t.regex(dump, /user\.color=0x626c7565/);
  t.regex(dump, /trusted\.t=0x00ff/);
  t.regex(dump, /security\.s=0x6c6162656c/);
  await ok(t, sh(`cd ${m2} && getfattr --only-values -n user.big f > /tmp/hvshare-xattr-big.$$ && cmp /tmp/hvshare-xattr-big.$$ big; s=$?; rm -f /tmp/hvshare-xattr-big.$$; exit $s`), '64 KiB value back through dom2');
  // A buffer too small is ERANGE, not a short value.
  const small = await ok(t, sh(`cd ${m1} && python3 -c "
import errno, os
try:
    os.getxattr('f', 'user.big')
    print('whole')
except OSError as e:
    print(e.errno)
print(len(os.getxattr('f', 'user.color')))
"`), 'python getxattr');
  t.is(small.trim(), 'whole\n4', 'python retries with a larger buffer after ERANGE');
  const tooBig = await sh(`cd ${m1} && python3 -c "import os; os.setxattr('f', 'user.big2', bytes(65537))"`);
  t.regex(tooBig.stderr, /Errno 7\]/, 'over 64 KiB: E2BIG');
  t.regex((await sh(`getfattr -n user.none ${m1}/f`)).stderr, /No such attribute/);
  await ok(t, sh(`setfattr -x user.color ${m1}/f`), 'remove');
  t.notRegex(await ok(t, sh(`getfattr -d ${m2}/f`), 'getfattr'), /user\.color/);
  // POSIX ACLs are stored as system.posix_acl_* attributes: setfacl's ACL reads back through the other domain.
  await ok(t, sh(`setfacl -m u:65534:rwx,g:65534:r-x ${m1}/d && setfacl -d -m u:65534:rx ${m1}/d`), 'setfacl');
  const acl = await ok(t, sh(`getfacl -n ${m2}/d`), 'getfacl through dom2');
  t.regex(acl, /^user:65534:rwx$/m);
  t.regex(acl, /^group:65534:r-x$/m);
  t.regex(acl, /^default:user:65534:r-x$/m);
  await finish();
});

/**
 * A source tree with every kind of file, xattrs in every namespace, ACLs and exact times (atimes past every mtime
 * and ctime, so that reading the source does not move them under relatime).
 */
const MAKE_TREE = String.raw`import os, socket, sys
os.chdir(sys.argv[1])
os.makedirs('sub/deep')
with open('file', 'wb') as f: f.write(os.urandom(300000))
with open('small', 'w') as f: f.write('small\n')
os.link('file', 'sub/hardlink')
os.symlink('../file', 'sub/link')
os.symlink('nowhere', 'dangling')
os.mkfifo('fifo', 0o640)
os.mknod('chr', 0o620 | 0o020000, os.makedev(4, 1))
os.mknod('blk', 0o660 | 0o060000, os.makedev(7, 0))
s = socket.socket(socket.AF_UNIX); s.bind('sock'); s.close()
os.setxattr('file', 'user.color', b'blue')
os.setxattr('file', 'trusted.t', bytes(range(256)))
os.setxattr('file', 'security.label', b'lbl')
os.setxattr('small', 'user.big', os.urandom(3000))  # ext4 (the source) holds one block of them
os.setxattr('sub', 'user.dir', b'd')
os.setxattr('sub/link', 'trusted.onlink', b'l', follow_symlinks=False)
os.setxattr('fifo', 'trusted.onfifo', b'f')
os.chown('small', 1234, 5678)
os.chmod('sub/deep', 0o2750)
times = {'file': -86400 * 365 * 10, 'small': 2**33, 'sub/hardlink': 123456789, 'fifo': 1, 'chr': 2, 'blk': 3}
for i, (here, dirs, files) in enumerate(sorted(os.walk('.'), reverse=True)):
    for j, name in enumerate(sorted(dirs + files) + ['.']):
        path = os.path.join(here, name)
        mtime = times.get(os.path.normpath(path), 1600000000 + i * 1000 + j) * 10**9 + 123456789 + j
        os.utime(path, ns=(2**34 * 10**9 + i * 1000 + j, mtime), follow_symlinks=False)
`;

test.serial('acceptance: cp -a --preserve=all of every kind of file, diff -r and xattrs and times through another domain', async (t) => {
  // diff opens device files to compare them: the reading view needs `dev` (without it, EACCES as on any nodev mount).
  const { dir, mounts, finish } = await mountedPlatform(t, [
    { name: 'dom1', slot: 0 },
    { name: 'dom2', slot: 1, mount: { devices: true } },
  ]);
  const src = `${dir}/src`;
  await ok(t, sh(`mkdir ${src} && python3 -c "$0" ${src} && setfacl -m u:65534:rwx,g:65534:r-x ${src}/sub && setfacl -d -m u:65534:rx ${src}/sub`.replace('$0', '$TREE'), { env: { ...process.env, TREE: MAKE_TREE } }), 'make the source tree');
  const before = await dumpTree(t, src);
  t.regex(before, /^chr 0o20600 1 0:0 size=0 rdev=4:1 /m);
  t.regex(before, /^sub\/hardlink .* link of file/m);
  t.regex(before, /system\.posix_acl_default=/);
  await ok(t, sh(`cp -a --preserve=all ${src} ${mounts.dom1!.dir}/dst`), 'cp -a --preserve=all into dom1');
  const copied = `${mounts.dom2!.dir}/dst`;
  t.is(await dumpTree(t, copied), before, 'types, modes, owners, sizes, devices, links, times and xattrs through dom2');
  // diff reports FIFOs and sockets even for a native copy: what it says of the view's copy must be exactly that.
  const native = `${dir}/native`;
  await ok(t, sh(`cp -a --preserve=all ${src} ${native}`), 'native cp -a');
  const reference = await sh(`diff -r --no-dereference ${src} ${native}`);
  const viaView = await sh(`diff -r --no-dereference ${src} ${copied}`);
  t.is(viaView.stdout.split(copied).join('<copy>'), reference.stdout.split(native).join('<copy>'), 'diff -r --no-dereference finds nothing a native copy does not show');
  t.is(viaView.code, reference.code);
  t.is(await dumpTree(t, src), before, 'the source did not move');
  await finish();
});

test.serial('fallocate through a view: allocate, --keep-size, --punch-hole, --zero-range, --dig-holes; sparse stays sparse', async (t) => {
  const { mounts, finish } = await mountedPlatform(t, rw2);
  const m1 = mounts.dom1!.dir;
  const m2 = mounts.dom2!.dir;
  /** Size and allocated KiB of f through dom2. */
  const usage = async () => (await ok(t, sh(`stat -c '%s %b' ${m2}/f`), 'stat')).trim();
  await ok(t, sh(`cd ${m1} && truncate -s 1M f && head -c 8192 /dev/urandom | dd of=f bs=4096 seek=100 conv=notrunc status=none`), 'a sparse file');
  t.is(await usage(), `${1 << 20} 24`, 'two blocks of data in 1 MiB, and the indirect block that maps them');
  await ok(t, sh(`fallocate -o 0 -l 64K ${m1}/f`), 'allocate the first 64 KiB');
  t.is(await usage(), `${1 << 20} ${24 + 128}`);
  await ok(t, sh(`fallocate -l 2M ${m1}/f`), 'allocate and grow');
  t.is(await usage(), `${2 << 20} ${4096 + 8}`, 'every block of 2 MiB');
  await ok(t, sh(`fallocate -n -o 2M -l 1M ${m1}/f`), 'keep size');
  t.is(await usage(), `${2 << 20} ${4096 + 8}`, 'nothing past the end');
  await ok(t, sh(`fallocate -p -o 1M -l 1M ${m1}/f`), 'punch the second MiB');
  t.is(await usage(), `${2 << 20} ${2048 + 8}`);
  await ok(t, sh(`fallocate -z -o 1M -l 4K ${m1}/f && cp ${m1}/f ${m1}/copy && fallocate -d ${m1}/copy`), 'zero range, dig holes');
  t.is(await usage(), `${2 << 20} ${2048 + 8 + 8}`);
  // fallocate -d digs st_blksize (128 KiB) pieces: the one holding the random data stays, with its indirect block.
  t.is((await ok(t, sh(`stat -c '%b' ${m2}/copy`), 'stat copy')).trim(), String(33 * 8), 'only the piece of random data is left after digging');
  await ok(t, sh(`cmp ${m2}/f ${m2}/copy && head -c 409600 ${m2}/f | cmp - /dev/zero 2>&1 | grep -q 'EOF on -'`), 'same data, zeros before the random blocks');
  await finish();
});
