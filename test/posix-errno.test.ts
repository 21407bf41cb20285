/**
 * Each syscall's documented errno cases through a view, as root and as an unprivileged user, judged against the
 * host's own filesystem: the same script runs in a native folder and in a view's folder prepared the same way,
 * and every answer (errno name, or "ok") must be the one Linux gives natively. Runs as root; the unprivileged
 * user is nobody, through setpriv.
 */
import test from 'ava';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mountedPlatform, ok, rw2, sh } from './helpers/fuse-mounts.js';

/** Builds the tree the cases run in (as root): directories and files of root's, a 1777 folder, private ones. */
const SETUP = String.raw`import os, sys
os.chdir(sys.argv[1])
os.makedirs('d/sub'); open('d/f', 'w').write('f')
os.mkdir('empty'); open('file', 'w').write('x' * 10)
os.symlink('loop', 'loop'); os.symlink('file', 'link')
os.mkdir('pub'); os.chmod('pub', 0o1777); open('pub/rootfile', 'w').write('r'); os.chmod('pub/rootfile', 0o644)
os.mkdir('priv'); os.chmod('priv', 0o700); open('priv/in', 'w').write('i')
open('secret', 'w').write('s'); os.chmod('secret', 0o600)
os.chmod('.', 0o755)
`;

/** The cases: one line each, "<case>: <errno name or ok>". Run as root (argv[2] == root) or as nobody. */
const CASES = String.raw`import errno, os, sys
os.chdir(sys.argv[1])
me = sys.argv[2]
def case(name, f):
    try:
        f(); print(name + ': ok')
    except OSError as e:
        print(name + ': ' + errno.errorcode.get(e.errno, str(e.errno)))
O = os.O_WRONLY | os.O_CREAT
def opened(path, flags, mode=0o644):
    os.close(os.open(path, flags, mode))
if me == 'root':
    case('mkdir existing', lambda: os.mkdir('d'))
    case('mkdir in missing parent', lambda: os.mkdir('nope/x'))
    case('mkdir under a file', lambda: os.mkdir('file/x'))
    case('rmdir not empty', lambda: os.rmdir('d'))
    case('rmdir a file', lambda: os.rmdir('file'))
    case('rmdir dot', lambda: os.rmdir('empty/.'))
    case('rmdir missing', lambda: os.rmdir('nope'))
    case('unlink a directory', lambda: os.unlink('d'))
    case('unlink missing', lambda: os.unlink('nope'))
    case('open missing', lambda: opened('nope', os.O_RDONLY))
    case('open through a file', lambda: opened('file/x', os.O_RDONLY))
    case('open O_EXCL existing', lambda: opened('file', O | os.O_EXCL))
    case('open a directory to write', lambda: opened('d', os.O_WRONLY))
    case('open O_DIRECTORY on a file', lambda: opened('file', os.O_RDONLY | os.O_DIRECTORY))
    case('open a symlink loop', lambda: opened('loop', os.O_RDONLY))
    case('open O_NOFOLLOW on a symlink', lambda: opened('link', os.O_RDONLY | os.O_NOFOLLOW))
    case('create a 256-byte name', lambda: opened('n' * 256, O))
    case('create a 255-byte name', lambda: opened('n' * 255, O))
    case('rename over a non-empty directory', lambda: os.rename('empty', 'd'))
    case('rename a directory into itself', lambda: os.rename('d', 'd/sub/x'))
    case('rename a file over a directory', lambda: os.rename('file', 'empty'))
    case('rename a directory over a file', lambda: os.rename('empty', 'd/f'))
    case('rename missing', lambda: os.rename('nope', 'x'))
    case('link a directory', lambda: os.link('d', 'dlink'))
    case('link to an existing name', lambda: os.link('file', 'd/f'))
    case('symlink over an existing name', lambda: os.symlink('x', 'file'))
    case('readlink of a file', lambda: os.readlink('file'))
    case('truncate a directory', lambda: os.truncate('d', 0))
    case('truncate to a negative size', lambda: os.truncate('file', -1))
    case('chmod missing', lambda: os.chmod('nope', 0o644))
    case('utime missing', lambda: os.utime('nope'))
    case('mknod over an existing name', lambda: os.mkfifo('file'))
    case('getxattr missing', lambda: os.getxattr('file', 'user.nope'))
    case('setxattr of an unknown namespace', lambda: os.setxattr('file', 'bogus.x', b'1'))
    case('setxattr XATTR_REPLACE missing', lambda: os.setxattr('file', 'user.r', b'1', os.XATTR_REPLACE))
    case('removexattr missing', lambda: os.removexattr('file', 'user.nope'))
    case('getxattr a name too long', lambda: os.getxattr('file', 'user.' + 'x' * 300))
else:
    case('create in root\'s directory', lambda: opened('mine', O))
    case('mkdir in root\'s directory', lambda: os.mkdir('mine'))
    case('unlink root\'s file', lambda: os.unlink('file'))
    case('open root\'s 0600 file', lambda: opened('secret', os.O_RDONLY))
    case('write root\'s 0644 file', lambda: opened('pub/rootfile', os.O_WRONLY))
    case('list a 0700 directory', lambda: os.listdir('priv'))
    case('walk through a 0700 directory', lambda: os.stat('priv/in'))
    case('unlink root\'s file in a sticky directory', lambda: os.unlink('pub/rootfile'))
    case('rename root\'s file in a sticky directory', lambda: os.rename('pub/rootfile', 'pub/taken'))
    case('chmod root\'s file', lambda: os.chmod('pub/rootfile', 0o666))
    case('chown root\'s file', lambda: os.chown('pub/rootfile', 65534, 65534))
    case('utime of root\'s file to a given time', lambda: os.utime('pub/rootfile', (1, 1)))
    case('utime of root\'s file to now', lambda: os.utime('pub/rootfile'))
    case('set a trusted. xattr', lambda: os.setxattr('pub/rootfile', 'trusted.t', b'1'))
    case('set a user. xattr on root\'s file', lambda: os.setxattr('pub/rootfile', 'user.t', b'1'))
    case('create in the sticky directory', lambda: opened('pub/nobodys', O))
    case('chown own file to root', lambda: os.chown('pub/nobodys', 0, 0))
    case('chmod own file', lambda: os.chmod('pub/nobodys', 0o600))
    case('hard link to root\'s file', lambda: os.link('pub/rootfile', 'pub/hl'))
`;

const asNobody = (script: string) => sh(`exec setpriv --reuid=65534 --regid=65534 --clear-groups sh -c ${JSON.stringify(`umask 022; ${script}`)}`);

test.serial('errno of each syscall case through a view is what Linux gives natively, as root and as nobody', async (t) => {
  const { dir, mounts, finish } = await mountedPlatform(t, rw2);
  await chmod(dir, 0o755); // nobody must reach both folders
  const native = join(dir, 'native');
  await mkdir(native);
  const view = join(mounts.dom1!.dir, 'cases');
  const setup = join(dir, 'setup.py');
  const cases = join(dir, 'cases.py');
  await writeFile(setup, SETUP, { mode: 0o644 });
  await writeFile(cases, CASES, { mode: 0o644 });
  const answers: Record<string, string> = {};
  for (const [where, base] of [['native', native], ['view', view]] as const) {
    await ok(t, sh(`mkdir -p ${base} && python3 ${setup} ${base}`), `set up ${where}`);
    const root = await ok(t, sh(`python3 ${cases} ${base} root`), `cases as root in ${where}`);
    const user = await ok(t, asNobody(`python3 ${cases} ${base} nobody`), `cases as nobody in ${where}`);
    answers[where] = root + user;
  }
  const lines = answers.native!.trim().split('\n');
  t.true(lines.length >= 50, `every case answered natively: ${lines.length}`);
  t.true(new Set(lines.map((l) => l.split(': ')[1])).size >= 12, 'the cases cover many errnos');
  // One assertion per case, so a failure names it.
  const viaView = new Map(answers.view!.trim().split('\n').map((l) => l.split(': ') as [string, string]));
  for (const line of lines) {
    const [name, errno] = line.split(': ') as [string, string];
    t.is(viaView.get(name), errno, `${name}: natively ${errno}`);
  }
  // The other domain sees what the cases left, through its own view.
  t.is((await ok(t, sh(`stat -c '%U %a' ${mounts.dom2!.dir}/cases/pub/nobodys`), 'stat through dom2')).trim(), 'nobody 600');
  await finish();
});
