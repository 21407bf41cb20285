/**
 * Whether a folder can take a view before anything is mounted on it. FUSE mounts over a folder that holds files
 * (they are hidden until the view goes) and fails on a file with "fuse failed"; both are refused here by path.
 */
import { readdir, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isMounted } from './fuse-adapter.js';

/** Why `mountpoint` cannot take a view, or null: it must be missing, an empty folder, or a mount left behind. */
export async function mountPointProblem(mountpoint: string): Promise<string | null> {
  const path = resolve(mountpoint);
  // A mount left by a killed run (ENOTCONN) is cleared when the view is mounted; never list a mount, which may hang.
  if (await isMounted(path)) return null;
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? null : err));
  if (info === null) return null;
  if (info instanceof Error) {
    const code = (info as NodeJS.ErrnoException).code;
    return code === 'ENOTDIR' ? `mount point ${path} cannot be made: a part of its path is a file` : `mount point ${path}: ${info.message}`;
  }
  if (!info.isDirectory()) return `mount point ${path} is not a folder`;
  const entries = await readdir(path);
  if (entries.length === 0) return null;
  const shown = entries.slice(0, 3).join(', ') + (entries.length > 3 ? ', ...' : '');
  return `mount point ${path} is not empty (${shown}): a view would hide what it holds; empty it or choose another --mount-root`;
}
