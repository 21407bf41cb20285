/**
 * A consistent cut of a tree, as `hvshare diff` takes one in each domain it compares: one operation walks the tree
 * and pins the shared lock of every inode it meets (lstat semantics: a symlink's target is not followed), and
 * lock-client.ts keeps those locks after the operation ends (holdForCut) until the cut is released. While the cut
 * is held nothing in the tree can change, in any domain: a writer's exclusive request waits (its revoke to this
 * domain is answered only when the cut ends). Each inode is frozen from the moment it was pinned, and the walk
 * ends with all of them pinned, so what any later read sees is the tree as it was at that instant.
 *
 * The walk is an ordinary operation: it waits for a lock only while it has changed nothing, and starts over
 * (taking what it wanted in name order) when it had to give a pinned lock back, so it cannot deadlock with
 * writers. Its requests join other shared holders (REQ_JOIN): the second domain of a diff finds every inode
 * pinned shared by the first and must not queue behind a writer that waits for the first.
 *
 * A cut is released when its holder ends it, or after its maximum hold, whichever comes first, so a domain never
 * keeps a lock past the monitor's fencing deadline because of a cut.
 */
import { IoError } from './block-device.js';
import type { Directories } from './directory.js';
import { isDir, type Inode } from './inode.js';
import type { PathLookup } from './path-lookup.js';
import { decodeName } from './path.js';

/** A cut held: its id (for endCut) and how many inodes it pinned. */
export interface CutHeld {
  id: number;
  inodes: number;
}

/** A cut ended: how long its locks were held, and whether its maximum hold ran out first (then it was released early). */
export interface CutEnded {
  heldMs: number;
  expired: boolean;
}

/** Pins every inode of the tree at `start` for the running operation (shared); returns how many it met. */
export async function pinTree(path: PathLookup, dirs: Directories, start: string): Promise<number> {
  let inodes = 1;
  const walk = async (dir: Inode): Promise<void> => {
    const children: number[] = [];
    for (const entry of await dirs.list(dir)) {
      const name = decodeName(entry.name);
      if (name !== '.' && name !== '..') children.push(entry.ino);
    }
    // Statahead asks for the next entries' locks at once when one has to be waited for.
    path.noteListing(dir.ino, children);
    for (const ino of children) {
      const child = await path.get(ino);
      inodes++;
      if (isDir(child)) await walk(child);
    }
  };
  const top = await path.resolvePath(start);
  if (isDir(top)) await walk(top);
  return inodes;
}

interface Cut {
  names: readonly number[];
  started: number;
  timer: NodeJS.Timeout | null;
  expired: boolean;
}

/** The cuts a filesystem instance holds, each released by its holder or when its maximum hold runs out. */
export class CutRegistry {
  private nextId = 1;
  private readonly cuts = new Map<number, Cut>();

  constructor(
    private readonly release: (names: readonly number[]) => void,
    private readonly now: () => number,
  ) {}

  /** Registers the locks of a cut whose walk began at `started`; they go at the latest `maxHoldMs` after that. */
  hold(names: readonly number[], inodes: number, started: number, maxHoldMs: number): CutHeld {
    const id = this.nextId++;
    const cut: Cut = { names, started, timer: null, expired: false };
    this.cuts.set(id, cut);
    cut.timer = setTimeout(() => {
      cut.timer = null;
      cut.expired = true;
      this.release(names);
    }, Math.max(0, started + maxHoldMs - this.now()));
    cut.timer.unref?.();
    return { id, inodes };
  }

  end(id: number): CutEnded {
    const cut = this.cuts.get(id);
    if (!cut) throw new IoError('EINVAL', `no cut ${id} is held`);
    this.cuts.delete(id);
    if (cut.timer) {
      clearTimeout(cut.timer);
      this.release(cut.names);
    }
    return { heldMs: this.now() - cut.started, expired: cut.expired };
  }
}
