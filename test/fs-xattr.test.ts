/**
 * Extended attributes in the filesystem: namespaces, flags, sizes up to 64 KiB (in the inode block, then a chain
 * of blocks), freed with their inode, journaled (a remount and another instance see them), checked by fsck.
 */
import test from 'ava';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { FileSystem } from '../fs/filesystem.js';
import { fsck } from '../fs/fsck.js';
import { LocalLockService } from '../fs/local-lock-service.js';
import { mkfs } from '../fs/mkfs.js';
import { XATTR_CREATE, XATTR_LIST_MAX, XATTR_REPLACE, XATTR_SIZE_MAX } from '../fs/xattr.js';
import { bytes, errno, freshVolume, patternBytes, SMALL_FS, tempImage, text } from './fs-helpers.js';

test('set, get, list and remove in every namespace; flags and errnos as Linux has them', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  await fs.release(await fs.create('/f', 0o644));
  await fs.symlink('f', '/l');
  const names = ['user.a', 'trusted.b', 'security.selinux', 'system.posix_acl_access'];
  for (const [i, name] of names.entries()) {
    await fs.setxattr('/f', name, name.startsWith('system.') ? acl([0x01, 6], [0x04, 6], [0x08, 4, 7], [0x10, 6], [0x20, 4]) : bytes(`v${i}`), 0);
  }
  t.deepEqual(await fs.listxattr('/f'), names);
  t.is(text(await fs.getxattr('/f', 'security.selinux')), 'v2');
  const ctime = (await fs.getattr('/f')).ctime;
  await fs.setxattr('/f', 'user.a', bytes(''), XATTR_REPLACE);
  t.is((await fs.getxattr('/f', 'user.a')).length, 0, 'an empty value is a value');
  t.not((await fs.getattr('/f')).ctime, ctime);
  t.is(await errno(fs.setxattr('/f', 'user.a', bytes('x'), XATTR_CREATE)), 'EEXIST');
  t.is(await errno(fs.setxattr('/f', 'user.new', bytes('x'), XATTR_REPLACE)), 'ENODATA');
  t.is(await errno(fs.getxattr('/f', 'user.none')), 'ENODATA');
  t.is(await errno(fs.removexattr('/f', 'user.none')), 'ENODATA');
  t.is(await errno(fs.setxattr('/f', 'other.x', bytes('x'), 0)), 'EOPNOTSUPP');
  t.is(await errno(fs.setxattr('/f', 'user.', bytes('x'), 0)), 'EOPNOTSUPP');
  t.is(await errno(fs.setxattr('/f', 'system.other', bytes('x'), 0)), 'EOPNOTSUPP');
  t.is(await errno(fs.setxattr('/f', 'user.' + 'n'.repeat(251), bytes('x'), 0)), 'ERANGE');
  t.is(await errno(fs.setxattr('/f', 'user.big', new Uint8Array(XATTR_SIZE_MAX + 1), 0)), 'E2BIG');
  t.is(await errno(fs.getxattr('/nope', 'user.a')), 'ENOENT');
  await fs.setxattr('/l', 'trusted.link', bytes('own'), 0);
  t.deepEqual(await fs.listxattr('/l'), ['trusted.link'], 'a symlink has its own');
  await fs.removexattr('/f', 'trusted.b');
  t.deepEqual(await fs.listxattr('/f'), names.filter((n) => n !== 'trusted.b'));
  await fs.sync();
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});

test('values up to 64 KiB grow and shrink a chain of blocks; the chain is freed with its inode; fsck stays clean', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  await fs.release(await fs.create('/f', 0o644));
  const free0 = (await fs.statfs('/')).bfree;
  const big = patternBytes(XATTR_SIZE_MAX, 1);
  await fs.setxattr('/f', 'user.big', big, 0);
  await fs.setxattr('/f', 'user.small', bytes('s'), 0);
  t.deepEqual(await fs.getxattr('/f', 'user.big'), big);
  t.is(free0 - (await fs.statfs('/')).bfree, 16, '64 KiB past the inode block: 16 chain blocks');
  await fs.sync();
  t.deepEqual((await fsck(v.dev)).errors, []);
  t.is(await errno(fs.setxattr('/f', 'user.more', new Uint8Array(XATTR_LIST_MAX - XATTR_SIZE_MAX), 0)), 'ENOSPC');
  await fs.setxattr('/f', 'user.big', patternBytes(5000, 2), 0);
  t.deepEqual(await fs.getxattr('/f', 'user.big'), patternBytes(5000, 2));
  t.is(free0 - (await fs.statfs('/')).bfree, 1, 'shrunk to one chain block');
  await fs.setxattr('/f', 'user.big', big, 0);
  await fs.unlink('/f');
  await fs.sync();
  t.is((await fs.statfs('/')).bfree, free0 + 1, 'the inode and its chain are free');
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});

test('attributes are journaled: a remount and another instance see exactly what was set', async (t) => {
  const image = await tempImage(32 << 20);
  const devA = await FileBlockDevice.open(image.path);
  const devB = await FileBlockDevice.open(image.path);
  t.teardown(async () => {
    await devA.close();
    await devB.close();
    await image.cleanup();
  });
  await mkfs(devA, SMALL_FS);
  const locks = new LocalLockService();
  const a = await FileSystem.mount(devA, { slot: 0, locks: locks.client(), commitIntervalMs: 0 });
  const b = await FileSystem.mount(devB, { slot: 1, locks: locks.client(), commitIntervalMs: 0 });
  await a.mkdir('/d', 0o755);
  const value = patternBytes(20_000, 3);
  await a.setxattr('/d', 'user.x', value, 0);
  t.deepEqual(await b.getxattr('/d', 'user.x'), value, 'the other instance reads it under the inode lock');
  await b.setxattr('/d', 'user.y', bytes('from b'), 0);
  await b.removexattr('/d', 'user.x');
  t.deepEqual(await a.listxattr('/d'), ['user.y']);
  await a.unmount();
  await b.unmount();
  const again = await FileSystem.mount(devA, { slot: 0, locks: new LocalLockService().client(), commitIntervalMs: 0 });
  t.is(text(await again.getxattr('/d', 'user.y')), 'from b');
  await again.unmount();
  t.deepEqual((await fsck(devA)).errors, []);
});

/** A POSIX ACL value as setfacl hands it to the kernel: version 2, then (tag, permissions, id) entries. */
function acl(...entries: [tag: number, perm: number, id?: number][]): Uint8Array {
  const out = new Uint8Array(4 + entries.length * 8);
  const v = new DataView(out.buffer);
  v.setUint32(0, 2, true);
  entries.forEach(([tag, perm, id], i) => {
    v.setUint16(4 + i * 8, tag, true);
    v.setUint16(6 + i * 8, perm, true);
    v.setUint32(8 + i * 8, id ?? 0xffffffff, true);
  });
  return out;
}

test('POSIX ACLs keep the mode in step, as the kernel does for a local filesystem', async (t) => {
  const v = await freshVolume();
  const { fs } = v;
  await fs.release(await fs.create('/f', 0o600));
  await fs.mkdir('/d', 0o700);
  const mode = async (path: string) => (await fs.getattr(path)).mode & 0o7777;
  // A minimal ACL (owner, group, other) is the mode: it sets the bits and is not kept.
  await fs.setxattr('/f', 'system.posix_acl_access', acl([0x01, 6], [0x04, 4], [0x20, 4]), 0);
  t.is(await mode('/f'), 0o644);
  t.deepEqual(await fs.listxattr('/f'), []);
  // An extended one is kept; the mode's group bits are its mask.
  const extended = acl([0x01, 7], [0x02, 7, 65534], [0x04, 0], [0x10, 5], [0x20, 0]);
  await fs.setxattr('/d', 'system.posix_acl_access', extended, 0);
  t.is(await mode('/d'), 0o750);
  t.deepEqual(await fs.getxattr('/d', 'system.posix_acl_access'), extended);
  // chmod moves the owner, mask and other entries with the mode; a named user's entry stays.
  await fs.chmod('/d', 0o1705);
  t.is(await mode('/d'), 0o1705);
  t.deepEqual(await fs.getxattr('/d', 'system.posix_acl_access'), acl([0x01, 7], [0x02, 7, 65534], [0x04, 0], [0x10, 0], [0x20, 5]));
  await fs.setxattr('/d', 'system.posix_acl_default', acl([0x01, 7], [0x04, 5], [0x20, 5]), 0);
  t.is(await errno(fs.setxattr('/f', 'system.posix_acl_default', acl([0x01, 7], [0x04, 5], [0x20, 5]), 0)), 'EACCES');
  t.is(await errno(fs.setxattr('/f', 'system.posix_acl_access', bytes('nonsense'), 0)), 'EINVAL');
  t.is(await errno(fs.setxattr('/f', 'system.posix_acl_access', acl([0x01, 7], [0x20, 5]), 0)), 'EINVAL');
  t.is(await mode('/f'), 0o644, 'a refused ACL changes nothing');
  await fs.sync();
  t.deepEqual((await fsck(v.dev)).errors, []);
  await v.close();
});
