/**
 * What a view answers itself: a stat (or "no such file") the domain gave for a path, kept with the domain's
 * change count as it read before the question went out (guests/change-count.ts). While the count still reads the
 * same, nothing the domain would answer has changed: nothing changed in the domain, and it gave up no lock, so no
 * other domain can have changed what the answer was read under. A repeated lookup or stat (the kernel asks
 * several per path walk with zero timeouts: `ls -l` makes three lookups and two getxattr per entry) is then
 * answered on the host's main thread without a call into the domain, and a strict view stays exact.
 */
import { IoError } from '../fs/block-device.js';
import type { Stat } from '../fs/vfs.js';
import type { DomainHandle } from '../hypervisor/toolstack.js';

interface Answer {
  domain: DomainHandle;
  count: number;
  /** null: the path names nothing. */
  stat: Stat | null;
}

/** Paths remembered at most; past it the cache starts over (a walk over a huge tree). */
const MAX_ANSWERS = 100_000;

export class AnswerCache {
  private readonly answers = new Map<string, Answer>();
  /** Questions answered here, for tests and diagnostics. */
  hits = 0;

  /** The stat of `path`: remembered while the domain's change count stands, else asked of `domain`. */
  async getattr(domain: DomainHandle, path: string): Promise<Stat> {
    const count = domain.changes.read();
    const known = this.answers.get(path);
    if (known && known.count === count && known.domain === domain) {
      this.hits++;
      if (!known.stat) throw new IoError('ENOENT', 'no such file or directory');
      return known.stat;
    }
    if (this.answers.size >= MAX_ANSWERS) this.answers.clear();
    try {
      const stat = await domain.call<Stat>({ kind: 'vfs', op: 'getattr', args: [path] });
      this.answers.set(path, { domain, count, stat });
      return stat;
    } catch (error) {
      if ((error as { code?: unknown }).code === 'ENOENT') this.answers.set(path, { domain, count, stat: null });
      else this.answers.delete(path);
      throw error;
    }
  }

  /** True when `path` is known, as of now, to have no extended attributes. */
  hasNoXattrs(domain: DomainHandle, path: string): boolean {
    const known = this.answers.get(path);
    return !!known?.stat && !known.stat.xattrs && known.count === domain.changes.read() && known.domain === domain;
  }
}
