/**
 * An advisory lock on a volume image: a file `<image>.lock` beside it, created exclusively (O_EXCL) by whoever
 * writes the image as a whole (`hvshare up` while it runs, `hvshare fsck --repair` while it repairs), holding the
 * holder's pid and what it is. A lock whose pid no longer runs was left by a process that was killed, and is
 * taken over. Node has no flock(2); an O_EXCL file is what it has, and tells a user which process holds it.
 */
import { open, readFile, realpath, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { IoError } from './block-device.js';

interface LockRecord {
  pid: number;
  holder: string;
}

/**
 * The lock file of `image`: beside the file the path leads to, so a relative path, a symlink or another spelling
 * of the same image finds the same lock (an image not made yet: beside it in its real folder).
 */
export async function imageLockPath(image: string): Promise<string> {
  const real = await realpath(image).catch(async () => join(await realpath(dirname(image)).catch(() => resolve(dirname(image))), basename(image)));
  return `${real}.lock`;
}

/** True while a process `pid` runs (EPERM: it runs, as another user). */
export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Who holds the lock of `image` (a running process), or null. */
export async function imageLockHolder(image: string): Promise<LockRecord | null> {
  let record: LockRecord;
  try {
    record = JSON.parse(await readFile(await imageLockPath(image), 'utf8')) as LockRecord;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    // Being written this very moment, or garbage: taken over below only if its pid is gone.
    return { pid: -1, holder: 'unknown (unreadable lock file)' };
  }
  return Number.isSafeInteger(record.pid) && record.pid > 0 && processRuns(record.pid) ? record : null;
}

export class ImageLock {
  private released = false;

  private constructor(readonly path: string) {}

  /**
   * Takes the lock of `image` for this process (`holder` says what it is: `hvshare up`). EBUSY naming the holder,
   * its pid and the lock file when a running process has it.
   */
  static async acquire(image: string, holder: string): Promise<ImageLock> {
    const path = await imageLockPath(image);
    for (let attempt = 0; ; attempt++) {
      try {
        const handle = await open(path, 'wx', 0o644);
        await handle.writeFile(JSON.stringify({ pid: process.pid, holder } satisfies LockRecord));
        await handle.close();
        return new ImageLock(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const current = await imageLockHolder(image);
      if (current || attempt > 0) {
        const who = current ? `${current.holder} (pid ${current.pid})` : 'another process';
        throw new IoError('EBUSY', `${image} is in use by ${who}: lock file ${path}`);
      }
      // Left by a process that is gone.
      await unlink(path).catch(() => {});
    }
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await unlink(this.path).catch(() => {});
  }
}
