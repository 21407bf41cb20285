/**
 * Sequential reads through a view, read ahead and still exact. A strict view has no host page cache (direct_io),
 * so `cat` or `cp` of a big file asks for one buffer (st_blksize, 128 KiB) at a time and waits for each: every
 * request pays the whole trip into the domain and back. Once a handle has read two buffers in a row, the view
 * asks the domain for the next 512 KiB, 128 KiB a call through the data window, before the kernel does, and
 * answers the kernel from that: the calls overlap the requests. The kernel may send the pieces of one read(2) at
 * once, so a handle's position moves when a request arrives, not when it is answered. A fetch is read into a data
 * window slot (guests/data-window.ts) that it keeps until the kernel's requests have taken its bytes: one copy on
 * this thread per request (slot -> libfuse's buffer), no buffer of its own, no garbage. Half the window's slots
 * stay free for the requests that go to the domain directly. (1 MiB fetches of the domain's own, moved arrays left
 * 64 MiB of garbage per pass for the main thread's collector, and the sequential writes that followed lost a fifth;
 * 512 KiB window slots read no faster than 128 KiB ones.)
 *
 * Exact as the answer cache is (answer-cache.ts): each fetch is kept with the domain's change count as it read
 * before the fetch went out, and it answers a request only while the count still reads the same. Then nothing
 * changed in the domain, and it gave up no lock, since before the fetch: the bytes are what the domain would read
 * at the instant of the answer. A write through any handle, a change by another domain (its lock revoked here),
 * or a restart makes every fetch in flight useless, and the request goes to the domain as before.
 *
 * Small requests (16 KiB at most: random reads, a database's pages) are kept the same way, by path and position,
 * and a request asked again while the count reads as it did is answered from them: fio 4K random reads of a 16 MiB
 * file through a strict view answer 55-75% of a 2 s run here (`hvshare bench fuse --only iops`: 1.4-1.95x the
 * pass-through before, 1.0-1.3x after).
 */
import { copyOut } from '../fs/buffers.js';
import { WINDOW_SLOT_BYTES, WINDOW_SLOTS } from '../guests/data-window.js';
import type { DomainHandle, WindowRead } from '../hypervisor/toolstack.js';

/** Fetches in flight per sequential handle, each a data window slot's worth (one call into the domain). */
export const READ_AHEAD_DEPTH = 4;
export const FETCH_BYTES = WINDOW_SLOT_BYTES;
/** Data window slots a domain keeps free of fetches, for the requests that go to it directly. */
const SPARE_SLOTS = WINDOW_SLOTS / 2;
/** Requests of at most this many bytes are kept to be answered again (random reads: databases, fio, mmap faults). */
const REREAD_MAX_BYTES = 16 << 10;
/** Bytes kept for rereads at most; past it they start over. */
const REREAD_BYTES = 32 << 20;

interface Fetch {
  position: number;
  /** The domain's change count before the fetch went out. */
  count: number;
  /** The data window slot the domain reads into, held until the fetch is used up or dropped. */
  read: WindowRead;
  /** Bytes read, or -1 when the read failed. */
  done: Promise<number>;
}

interface Stream {
  domain: DomainHandle;
  /** Where the next sequential request starts (set when a request arrives: several may be on their way at once). */
  next: number;
  /** Sequential requests in a row so far. */
  run: number;
  /** Where the file ended at the last short read (nothing is fetched from there on). */
  end: number;
  /** Fetches in flight or done, contiguous. */
  ahead: Fetch[];
}

export class ReadAhead {
  private readonly streams = new Map<number, Stream>();
  /**
   * Small requests the domain answered, by path and position, kept for one domain and one change count (the
   * count before they went out): a request asked again while the count still reads the same, through any handle
   * of that path, is answered here, exact as a fetch is (a path names another file only after a change).
   */
  private rereads = new Map<string, Map<number, { asked: number; bytes: Uint8Array }>>();
  private rereadsOf: { domain: DomainHandle | null; count: number; bytes: number } = { domain: null, count: 0, bytes: 0 };
  /**
   * Requests answered from fetches, fetches asked for, fetches dropped unused, and small requests answered again,
   * for tests and diagnostics.
   */
  readonly stats = { answered: 0, fetched: 0, dropped: 0, reread: 0 };

  /**
   * Reads `into.length` bytes of open file `fh` (at `path`) at `position` from `domain`, from fetches or kept
   * answers while they are valid.
   */
  async read(domain: DomainHandle, fh: number, path: string, position: number, into: Uint8Array): Promise<number> {
    let stream = this.streams.get(fh);
    if (stream && stream.domain === domain && stream.next === position) {
      stream.run++;
    } else {
      if (stream) this.drop(stream);
      stream = { domain, next: position, run: position === 0 ? 1 : 0, end: Infinity, ahead: [] };
      this.streams.set(fh, stream);
    }
    stream.next = position + into.length;
    while (stream.ahead.length > 0 && stream.ahead[0].position + FETCH_BYTES <= position) this.recycle(stream.ahead.shift()!);
    if (stream.run >= 2) this.fill(stream, fh, position);
    if (stream.ahead.length > 0 && stream.ahead[0].position <= position) {
      const n = await this.fromFetches(stream, position, into);
      if (n !== null) {
        this.stats.answered++;
        return n;
      }
      this.drop(stream);
    }
    if (into.length > REREAD_MAX_BYTES) return this.readInto(stream, fh, position, into);
    const kept = this.rereadable(domain).get(path)?.get(position);
    if (kept && kept.asked === into.length) {
      into.set(kept.bytes);
      this.stats.reread++;
      return kept.bytes.length;
    }
    const count = domain.changes.read();
    const n = await this.readInto(stream, fh, position, into);
    this.keep(domain, count, path, position, into.length, into.subarray(0, n));
    return n;
  }

  private async readInto(stream: Stream, fh: number, position: number, into: Uint8Array): Promise<number> {
    const n = await stream.domain.readInto(fh, position, into);
    if (n < into.length) stream.end = Math.min(stream.end, position + n);
    return n;
  }

  /** The rereads kept, emptied first unless they were read from `domain` at the change count it reads now. */
  private rereadable(domain: DomainHandle): Map<string, Map<number, { asked: number; bytes: Uint8Array }>> {
    const count = domain.changes.read();
    if (this.rereadsOf.domain !== domain || this.rereadsOf.count !== count || this.rereadsOf.bytes > REREAD_BYTES) {
      this.rereads = new Map();
      this.rereadsOf = { domain, count, bytes: 0 };
    }
    return this.rereads;
  }

  /**
   * Keeps a copy of `bytes`, the answer to a request of `asked` bytes at `position` of `path`, read from `domain`
   * while its count read `count` (and still does: the same request would get the same answer, short or not).
   */
  private keep(domain: DomainHandle, count: number, path: string, position: number, asked: number, bytes: Uint8Array): void {
    const rereads = this.rereadable(domain);
    if (this.rereadsOf.count !== count) return;
    let byPosition = rereads.get(path);
    if (!byPosition) rereads.set(path, (byPosition = new Map()));
    // A copy (a Buffer's slice() is a view, and fuse-native detaches its buffer once the request is answered).
    byPosition.set(position, { asked, bytes: copyOut(bytes) });
    this.rereadsOf.bytes += bytes.length;
  }

  /** The handle is closed: what was fetched for it goes. */
  forget(fh: number): void {
    const stream = this.streams.get(fh);
    if (stream) this.drop(stream);
    this.streams.delete(fh);
  }

  /**
   * Fetches ahead of `position` until READ_AHEAD_DEPTH of them are out, up to where the file ended, as long as the
   * domain has data window slots to spare.
   */
  private fill(stream: Stream, fh: number, position: number): void {
    const last = stream.ahead[stream.ahead.length - 1];
    let at = last ? last.position + FETCH_BYTES : position;
    while (stream.ahead.length < READ_AHEAD_DEPTH && at < stream.end) {
      const count = stream.domain.changes.read();
      const read = stream.domain.readInWindow(fh, at, FETCH_BYTES, SPARE_SLOTS);
      if (!read) return;
      const fetch: Fetch = { position: at, count, read, done: read.done.catch(() => -1) };
      void fetch.done.then((got) => {
        if (got >= 0 && got < FETCH_BYTES) stream.end = Math.min(stream.end, fetch.position + got);
      });
      stream.ahead.push(fetch);
      this.stats.fetched++;
      at += FETCH_BYTES;
    }
  }

  /**
   * Copies [position, position + into.length) out of the stream's fetches, or returns null when they do not hold
   * all of it (up to the end of the file) or one of them is no longer valid: the change count moved since it went
   * out, or it failed.
   */
  private async fromFetches(stream: Stream, position: number, into: Uint8Array): Promise<number | null> {
    const end = position + into.length;
    let at = position;
    for (const fetch of [...stream.ahead]) {
      if (at >= end) break;
      if (fetch.position > at) return null;
      const got = await fetch.done;
      if (got < 0 || stream.domain.changes.read() !== fetch.count) return null;
      const upto = Math.min(got, end - fetch.position);
      if (upto > at - fetch.position) {
        into.set(fetch.read.bytes.subarray(at - fetch.position, upto), at - position);
        at = fetch.position + upto;
      }
      if (got < FETCH_BYTES) return at - position; // the end of the file
    }
    return at === end ? at - position : null;
  }

  /** What was fetched goes; the stream must be sequential twice more before it reads ahead again. */
  private drop(stream: Stream): void {
    this.stats.dropped += stream.ahead.length;
    for (const fetch of stream.ahead) this.recycle(fetch);
    stream.ahead = [];
    stream.run = 0;
  }

  /** A fetch's window slot goes back to the domain once it is done with it. */
  private recycle(fetch: Fetch): void {
    fetch.read.release();
  }
}
