/**
 * Path lookup (xv6's namei): from the root, one directory at a time, each read under its inode's lock in shared
 * mode (the last component in the mode the operation asks for), following symbolic links.
 */
import { IoError } from './block-device.js';
import type { Directories } from './directory.js';
import { isDir, isSymlink, type Inode, type InodeStore } from './inode.js';
import type { LockClient } from './lock-client.js';
import type { LockMode } from './lock-service.js';
import { checkName, encodeName, splitParent, splitPath } from './path.js';

const MAX_SYMLINK_DEPTH = 40;
/** Entries looked ahead of the one waited for (lock-client.ts caps the requests in flight). */
const STATAHEAD = 32;
/** Directory listings remembered for statahead. */
const LISTINGS_KEPT = 8;

export class PathLookup {
  constructor(
    private readonly inodes: InodeStore,
    private readonly dirs: Directories,
    private readonly locks: LockClient,
    readonly rootIno: number,
    private readonly readSymlink: (inode: Inode) => Promise<string>,
  ) {}

  /** The entries of the directories listed last, by directory, and where each is in its listing (statahead). */
  private readonly listed = new Map<number, { inos: number[]; at: Map<number, number> }>();

  /**
   * A directory was listed: `ls -l`, du, diff and git stat what they list next, in order, and `rm -r`, `chmod -R`
   * change it. When one of those has to wait for an entry's inode lock (another domain wrote the tree), the locks
   * of the next entries are asked for at once in the same mode, so their round trips overlap instead of following
   * each other (Lustre's statahead).
   */
  noteListing(dir: number, inos: number[]): void {
    this.listed.delete(dir);
    this.listed.set(dir, { inos, at: new Map(inos.map((ino, i) => [ino, i])) });
    // A walk (find, du, rm -r) comes back to a parent after its subdirectories: keep a few levels.
    if (this.listed.size > LISTINGS_KEPT) this.listed.delete(this.listed.keys().next().value!);
  }

  /** Asks ahead for the locks of the entries listed after `ino`; false when no listing noted holds it. */
  private statahead(ino: number, mode: LockMode): boolean {
    for (const listing of this.listed.values()) {
      const at = listing.at.get(ino);
      if (at === undefined) continue;
      this.locks.prefetch(listing.inos.slice(at + 1, at + 1 + STATAHEAD), mode);
      return true;
    }
    return false;
  }

  /** The directory the last removal (unlink, rmdir) was from. */
  private lastRemovalIn = -1;

  /**
   * The inode a removal from `dir` takes away, held exclusively. The second removal in a row from one directory
   * that must wait for its lock lists the directory (from its cached blocks) for the statahead when no listing
   * noted holds the name: `rm -r` through a view whose readdir the view answered itself, so this domain never
   * listed the directory, would otherwise wait for each lock in turn (another domain holding them shared).
   */
  async removing(ino: number, dir: Inode): Promise<Inode> {
    const again = this.lastRemovalIn === dir.ino;
    this.lastRemovalIn = dir.ino;
    if (again && !this.locks.pinIfHeld(ino, 'exclusive') && !this.statahead(ino, 'exclusive')) {
      this.noteListing(dir.ino, await this.dirs.childInos(dir));
    }
    return this.get(ino, 'exclusive');
  }

  /** Inode `ino` in use, under its lock in `mode`. */
  async get(ino: number, mode: LockMode = 'shared'): Promise<Inode> {
    if (!this.locks.pinIfHeld(ino, mode)) {
      this.statahead(ino, mode);
      await this.locks.need(ino, mode);
    }
    return this.inodes.read(ino);
  }

  /** The inode number `name` stands for in `dir` (whose lock the operation holds), or null. */
  async lookupIn(dir: Inode, name: string): Promise<number | null> {
    if (!isDir(dir)) throw new IoError('ENOTDIR', 'not a directory');
    if (name === '.') return dir.ino;
    const entry = await this.dirs.lookup(dir, encodeName(name));
    return entry ? entry.ino : null;
  }

  /** Resolves components from the root, following symlinks (and the last one only if `follow`). */
  async resolve(parts: string[], follow: boolean, mode: LockMode = 'shared', depth = 0): Promise<Inode> {
    let current = await this.get(this.rootIno, parts.length === 0 ? mode : 'shared');
    for (let i = 0; i < parts.length; i++) {
      const last = i === parts.length - 1;
      const ino = await this.lookupIn(current, parts[i]);
      if (ino === null) throw new IoError('ENOENT', `no such file: ${parts[i]}`);
      const next = await this.get(ino, last ? mode : 'shared');
      if (isSymlink(next) && (!last || follow)) {
        if (depth >= MAX_SYMLINK_DEPTH) throw new IoError('ELOOP', 'too many symbolic links');
        const target = await this.readSymlink(next);
        const base = target.startsWith('/') ? [] : parts.slice(0, i);
        return this.resolve([...base, ...splitPath(target === '' ? '/' : target), ...parts.slice(i + 1)], follow, mode, depth + 1);
      }
      current = next;
    }
    return current;
  }

  resolvePath(path: string, follow = false, mode: LockMode = 'shared'): Promise<Inode> {
    return this.resolve(splitPath(path), follow, mode);
  }

  /** The directory a path's last name lives in, held exclusively for a change, and that name. */
  async resolveParent(path: string): Promise<{ dir: Inode; name: string; bytes: Uint8Array }> {
    const { parent, name } = splitParent(path);
    const dir = await this.resolve(parent, true, 'exclusive');
    if (!isDir(dir)) throw new IoError('ENOTDIR', 'not a directory');
    return { dir, name, bytes: checkName(name) };
  }
}
