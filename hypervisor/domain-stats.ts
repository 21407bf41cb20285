/**
 * Per-domain counters the monitor keeps in a SharedArrayBuffer it shares with the toolstack only (never with a
 * guest): the toolstack reads rates from it without messaging the monitor, and nothing per request leaves the
 * monitor thread.
 */
export const MAX_DOMAINS = 64;

export const Counter = {
  REQUESTS: 0,
  READ_BYTES: 1,
  WRITE_BYTES: 2,
  FLUSHES: 3,
  VIRQS: 4,
  ERRORS: 5,
  REVOKES: 6,
  DOORBELLS: 7,
  LOCKS: 8,
  READS: 9,
  WRITES: 10,
  /** Requests served as part of a merged run, beyond its first. */
  MERGED: 11,
  /** Transfers handed to the monitor's I/O threads. */
  OFFLOADED: 12,
} as const;
export type CounterName = keyof typeof Counter;
const STRIDE = 16;

export function createStatsBuffer(): SharedArrayBuffer {
  return new SharedArrayBuffer(MAX_DOMAINS * STRIDE * 8);
}

export class DomainStats {
  private readonly words: Float64Array;

  constructor(buffer: SharedArrayBuffer) {
    this.words = new Float64Array(buffer);
  }

  add(domainId: number, counter: number, amount = 1): void {
    this.words[domainId * STRIDE + counter] += amount;
  }

  reset(domainId: number): void {
    this.words.fill(0, domainId * STRIDE, domainId * STRIDE + STRIDE);
  }

  read(domainId: number): Record<CounterName, number> {
    const out = {} as Record<CounterName, number>;
    for (const [name, index] of Object.entries(Counter)) out[name as CounterName] = this.words[domainId * STRIDE + index];
    return out;
  }
}
