import { LOCK_NAME_LIMIT } from './abi.js';
import type { LockSummary } from './control-protocol.js';
import type { HolderId, LockTableEntry } from './lock-table.js';

export interface LockNaming {
  volume(id: number): string;
  domain(holder: HolderId): string;
  /** Revokes posted so far, by the monitor's lock key. */
  revocations: ReadonlyMap<number, number>;
}

/**
 * The monitor's lock table in the terms `hvshare locks` shows: volume and domain names instead of ids, the name a
 * guest knows the lock by, how long each holder has had it. Sorted by volume, then name.
 */
export function summarizeLocks(entries: LockTableEntry[], naming: LockNaming, now = performance.now()): LockSummary[] {
  return entries
    .map((e) => ({
      volume: naming.volume(Math.floor(e.name / LOCK_NAME_LIMIT)),
      name: e.name % LOCK_NAME_LIMIT,
      generation: e.generation,
      holders: e.holders.map((h) => ({ domain: naming.domain(h.holder), mode: h.mode, heldMs: Math.max(0, Math.round(now - h.since)) })),
      waiters: e.waiters.map((w) => ({ domain: naming.domain(w.holder), mode: w.mode })),
      revocations: naming.revocations.get(e.name) ?? 0,
    }))
    .sort((a, b) => (a.volume === b.volume ? a.name - b.name : a.volume < b.volume ? -1 : 1));
}
