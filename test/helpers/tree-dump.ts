/**
 * A tree as text, for comparing a copy with its source: per entry (sorted), its type and mode, link count, owner,
 * size (not of directories: each filesystem has its own), device number, symlink target, atime and mtime to the
 * nanosecond, which earlier entry it is a hard link of, and every extended attribute in hex. Block counts are left
 * out. Python's os module reads all of it (lstat, l*xattr) in one process, run asynchronously (see fuse-mounts.ts).
 */
import { ok, run } from './fuse-mounts.js';
import type { ExecutionContext } from 'ava';

const SCRIPT = String.raw`import os, stat, sys

root = sys.argv[1]
seen = {}
lines = []
paths = [root]
for here, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(dirs + files):
        paths.append(os.path.join(here, name))
for path in paths:
    st = os.lstat(path)
    rel = os.path.relpath(path, root)
    fields = [rel, oct(st.st_mode), str(st.st_nlink), f'{st.st_uid}:{st.st_gid}']
    if not stat.S_ISDIR(st.st_mode):
        fields.append(f'size={st.st_size}')
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        fields.append(f'rdev={os.major(st.st_rdev)}:{os.minor(st.st_rdev)}')
    if stat.S_ISLNK(st.st_mode):
        fields.append('-> ' + os.readlink(path))
    fields.append(f'atime={st.st_atime_ns} mtime={st.st_mtime_ns}')
    key = (st.st_dev, st.st_ino)
    if not stat.S_ISDIR(st.st_mode) and key in seen:
        fields.append('link of ' + seen[key])
    seen.setdefault(key, rel)
    for attr in sorted(os.listxattr(path, follow_symlinks=False)):
        fields.append(f'{attr}={os.getxattr(path, attr, follow_symlinks=False).hex()}')
    lines.append(' '.join(fields))
print('\n'.join(lines))`;

export function dumpTree(t: ExecutionContext, dir: string): Promise<string> {
  return ok(t, run('python3', ['-c', SCRIPT, dir]), `dump of ${dir}`);
}
