/**
 * A view's read ahead: when a file handle is read sequentially, the view asks the domain for the next chunk as
 * soon as it answers one, so the domain's work overlaps the FUSE round trip of the next request (under direct_io
 * libfuse 2.9 sends a large read as 128 KiB requests one after another). A chunk read ahead is used only while
 * the domain's change count still reads what it read before the chunk was asked for (guests/change-count.ts):
 * then it is exactly what the domain would read now, so strict views stay exact. Otherwise it is thrown away.
 */
import { WINDOW_SLOT_BYTES } from '../guests/data-window.js';
import type { DomainHandle, HeldRead } from '../hypervisor/toolstack.js';

interface Ahead {
  domain: DomainHandle;
  position: number;
  length: number;
  count: number;
  read: Promise<HeldRead | null>;
}

interface Stream {
  /** Where the last read ended. */
  next: number;
  ahead?: Ahead;
}

/** Handles read ahead at once at most (each keeps a data window slot). */
const MAX_STREAMS = 6;

export class ReadAhead {
  private readonly streams = new Map<number, Stream>();
  /** Reads answered from a chunk read ahead, for tests and diagnostics. */
  hits = 0;

  /** Up to `into.length` bytes of handle `fh` at `position` into `into`, from what was read ahead if it holds. */
  async read(domain: DomainHandle, fh: number, position: number, into: Uint8Array): Promise<number> {
    const stream = this.streams.get(fh);
    const ahead = stream?.ahead;
    if (stream) stream.ahead = undefined;
    let n: number | null = null;
    if (ahead) {
      const held = await ahead.read.catch(() => null);
      // The chunk read ahead answers any read from its start it covers: a short chunk is the end of the file.
      const fits = held && (held.bytes.length >= into.length || held.bytes.length < ahead.length);
      if (fits && ahead.domain === domain && ahead.position === position && ahead.count === domain.changes.read()) {
        n = Math.min(held.bytes.length, into.length);
        into.set(held.bytes.subarray(0, n));
        this.hits++;
      }
      held?.done();
    }
    n ??= await domain.readInto(fh, position, into);
    const sequential = stream !== undefined && stream.next === position;
    const next = this.streams.get(fh) ?? (this.streams.size < MAX_STREAMS ? { next: 0 } : undefined);
    if (!next) return n;
    this.streams.set(fh, next);
    next.next = position + n;
    // A sequential reader that got all it asked for (less is the end of the file) likely wants what follows.
    if (sequential && n === into.length && !next.ahead) {
      const count = domain.changes.read();
      const read = domain.readHeld(fh, next.next, WINDOW_SLOT_BYTES);
      next.ahead = { domain, position: next.next, length: WINDOW_SLOT_BYTES, count, read };
    }
    return n;
  }

  /** The handle is closed: what was read ahead for it goes. */
  forget(fh: number): void {
    const ahead = this.streams.get(fh)?.ahead;
    this.streams.delete(fh);
    void ahead?.read.then((held) => held?.done(), () => {});
  }
}
