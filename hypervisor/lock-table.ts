/**
 * The lock table of the cluster lock service: a pure state machine, no I/O and no timers. The monitor embeds it
 * (one table for all domains) and turns its answers into grant completions and "revoke" virtual interrupts;
 * fs/local-lock-service.ts wraps it for several filesystem instances in one process.
 *
 * Per lock name: the holders with their modes (any number shared, or one exclusive), a FIFO queue of waiters,
 * and a generation that every grant reports and every dirty release (or death of an exclusive holder) bumps.
 * A request that cannot be granted at once is queued, and every holder it conflicts with is named in `revokes`;
 * a cached-lock client answers a revoke by writing back and releasing (or downgrading, when the waiter wants
 * shared). Waiters are granted strictly in order, so a stream of shared requests cannot starve an exclusive one,
 * and a try-request never jumps the queue. Names are any numbers the caller picks (the monitor's are volume id *
 * 2^32 + the guest's 32-bit name).
 */
import type { LockMode } from './abi.js';

export type { LockMode };
export type HolderId = number | string;

export interface Grant {
  holder: HolderId;
  name: number;
  mode: LockMode;
  generation: number;
  /** The table's change epoch: it grows with every release of a changed lock (see fs/journal.ts for its use). */
  epoch: number;
}

export interface Revoke {
  holder: HolderId;
  name: number;
  /** The mode the first conflicting waiter wants. */
  wanted: LockMode;
}

export interface RequestResult {
  /** Set when the lock was granted at once; otherwise the request is queued. */
  granted: Grant | null;
  revokes: Revoke[];
}

export interface ReleaseResult {
  /** Waiters granted because of the release, in grant order. */
  grants: Grant[];
  revokes: Revoke[];
}

interface Waiter {
  holder: HolderId;
  mode: LockMode;
}

interface LockState {
  holders: Map<HolderId, LockMode>;
  /** When each holder was granted the lock (performance.now(); for inspection only, never for a decision). */
  since: Map<HolderId, number>;
  waiters: Waiter[];
  generation: number;
}

/** One lock as inspection tools see it (snapshot()). */
export interface LockTableEntry {
  name: number;
  generation: number;
  holders: Array<{ holder: HolderId; mode: LockMode; since: number }>;
  waiters: Array<{ holder: HolderId; mode: LockMode }>;
}

function hold(state: LockState, holder: HolderId, mode: LockMode): void {
  state.holders.set(holder, mode);
  state.since.set(holder, performance.now());
}

function compatible(state: LockState, holder: HolderId, mode: LockMode): boolean {
  for (const [other, held] of state.holders) {
    if (other === holder) continue;
    if (mode === 'exclusive' || held === 'exclusive') return false;
  }
  return true;
}

export class LockTable {
  private readonly locks = new Map<number, LockState>();
  private epoch = 0;

  private state(name: number): LockState {
    let state = this.locks.get(name);
    if (!state) {
      state = { holders: new Map(), since: new Map(), waiters: [], generation: 0 };
      this.locks.set(name, state);
    }
    return state;
  }

  /**
   * Asks for `name` in `mode`. Holding exclusive satisfies shared; holding shared may be upgraded. `join` (shared
   * only): granted alongside the shared holders even when others are queued (abi.ts REQ_JOIN).
   */
  request(holder: HolderId, name: number, mode: LockMode, join = false): RequestResult {
    const state = this.state(name);
    const held = state.holders.get(holder);
    if (held === 'exclusive' || held === mode) {
      return { granted: { holder, name, mode: held, generation: state.generation, epoch: this.epoch }, revokes: [] };
    }
    if (state.waiters.some((w) => w.holder === holder)) {
      throw new Error(`holder ${holder} already waits for lock ${name}`);
    }
    if ((state.waiters.length === 0 || (join && mode === 'shared')) && compatible(state, holder, mode)) {
      hold(state, holder, mode);
      return { granted: { holder, name, mode, generation: state.generation, epoch: this.epoch }, revokes: [] };
    }
    state.waiters.push({ holder, mode });
    return { granted: null, revokes: this.revokesFor(name, state) };
  }

  /**
   * Grants `name` in `mode` only if that needs no waiting: nobody queued for it (no jumping the queue) and no
   * conflicting holder. Null otherwise; nothing is queued and nobody is asked to give anything back.
   */
  tryRequest(holder: HolderId, name: number, mode: LockMode): Grant | null {
    const state = this.state(name);
    const held = state.holders.get(holder);
    if (held === 'exclusive' || held === mode) return { holder, name, mode: held, generation: state.generation, epoch: this.epoch };
    if (state.waiters.length > 0 || !compatible(state, holder, mode)) return null;
    hold(state, holder, mode);
    return { holder, name, mode, generation: state.generation, epoch: this.epoch };
  }

  /** Exclusive -> shared for `holder`; `dirty` bumps the generation. Throws unless it holds `name` exclusively. */
  downgrade(holder: HolderId, name: number, dirty: boolean): ReleaseResult {
    const state = this.locks.get(name);
    if (state?.holders.get(holder) !== 'exclusive') throw new Error(`holder ${holder} does not hold lock ${name} exclusively`);
    state.holders.set(holder, 'shared');
    if (dirty) this.changed(state);
    return this.grantWaiters(name, state);
  }

  /**
   * Gives `name` back; `dirty` bumps the generation. Throws when `holder` does not hold it. `released` is the mode
   * the holder gives up as it last knew it: a holder of shared that also waits to upgrade may answer a revoke by
   * releasing its shared hold just as the table grants the upgrade, so its release of `shared` arrives when it holds
   * exclusive. That release is superseded by the grant on its way to the holder, and changes nothing.
   */
  release(holder: HolderId, name: number, dirty: boolean, released?: LockMode): ReleaseResult {
    const state = this.locks.get(name);
    const held = state?.holders.get(holder);
    if (!state || !held) throw new Error(`holder ${holder} does not hold lock ${name}`);
    if (released === 'shared' && held === 'exclusive') return { grants: [], revokes: [] };
    state.holders.delete(holder);
    if (dirty) this.changed(state);
    return this.grantWaiters(name, state);
  }

  /** Removes every lock and queued request of a dead holder. Its exclusive locks count as dirty. */
  dropHolder(holder: HolderId): ReleaseResult {
    const result: ReleaseResult = { grants: [], revokes: [] };
    for (const [name, state] of this.locks) {
      const held = state.holders.get(holder);
      const queued = state.waiters.some((w) => w.holder === holder);
      if (held === undefined && !queued) continue;
      state.waiters = state.waiters.filter((w) => w.holder !== holder);
      if (held !== undefined) {
        state.holders.delete(holder);
        if (held === 'exclusive') this.changed(state);
      }
      const step = this.grantWaiters(name, state);
      result.grants.push(...step.grants);
      result.revokes.push(...step.revokes);
    }
    return result;
  }

  private changed(state: LockState): void {
    state.generation++;
    this.epoch++;
  }

  generation(name: number): number {
    return this.locks.get(name)?.generation ?? 0;
  }

  /** The mode `holder` holds `name` in, if any. */
  heldBy(holder: HolderId, name: number): LockMode | undefined {
    return this.locks.get(name)?.holders.get(holder);
  }

  holders(name: number): Array<{ holder: HolderId; mode: LockMode }> {
    return [...(this.locks.get(name)?.holders ?? [])].map(([holder, mode]) => ({ holder, mode }));
  }

  waiters(name: number): Array<{ holder: HolderId; mode: LockMode }> {
    return (this.locks.get(name)?.waiters ?? []).map((w) => ({ ...w }));
  }

  /** Every lock someone holds or waits for, with the time each holder was granted it. */
  snapshot(): LockTableEntry[] {
    const entries: LockTableEntry[] = [];
    for (const [name, state] of this.locks) {
      if (state.holders.size === 0 && state.waiters.length === 0) continue;
      const holders = [...state.holders].map(([holder, mode]) => ({ holder, mode, since: state.since.get(holder) ?? 0 }));
      entries.push({ name, generation: state.generation, holders, waiters: this.waiters(name) });
    }
    return entries;
  }

  private grantWaiters(name: number, state: LockState): ReleaseResult {
    const grants: Grant[] = [];
    while (state.waiters.length > 0 && compatible(state, state.waiters[0].holder, state.waiters[0].mode)) {
      const waiter = state.waiters.shift()!;
      hold(state, waiter.holder, waiter.mode);
      grants.push({ holder: waiter.holder, name, mode: waiter.mode, generation: state.generation, epoch: this.epoch });
    }
    return { grants, revokes: this.revokesFor(name, state) };
  }

  /** Holders that stand in the way of the first waiter. */
  private revokesFor(name: number, state: LockState): Revoke[] {
    const first = state.waiters[0];
    if (!first) return [];
    const revokes: Revoke[] = [];
    for (const [holder, held] of state.holders) {
      if (holder === first.holder) continue;
      if (first.mode === 'exclusive' || held === 'exclusive') revokes.push({ holder, name, wanted: first.mode });
    }
    return revokes;
  }
}
