/**
 * The cluster-lock client of one filesystem instance (GFS2's glocks, OCFS2's cluster locks): per lock name the
 * mode held, the generation its cached copies are valid for, whether it was changed since it was granted and a
 * pending revoke. Locks are cached: after an operation they stay held until another domain asks for a
 * conflicting mode, and what they cover stays cached in this domain (block-cache.ts, page-cache.ts) as long as
 * the generation seen at the next grant is the one this domain left behind.
 *
 * An operation pins the locks it uses (need). Deadlock is impossible because of one rule: an operation waits for
 * a lock only while it has changed nothing (it is "clean"), and a clean operation's pins do not stop a revoke.
 * While it waits, revokes are answered (commit, then downgrade or release) even for locks it pinned; it then
 * starts over (Restart) since what it read under them may be stale. Once it changes something it never waits
 * for another domain: a lock it does not hold is only tried (tryLock), and when that fails the operation is
 * undone and started over, taking every lock the last attempt wanted first, one after the other in ascending
 * name order, before it runs; those pins hold while it waits for the next name (waits in one global order form no
 * cycle), so a storm of renames converges instead of trading locks forever. A revoke of a lock pinned by an
 * operation that changes things waits for its end, which only waits for local I/O. Cross-directory moves of directories also take RENAME_LOCK (lock-names.ts).
 *
 * A consistent cut (`hvshare diff`, consistent-cut.ts) keeps the shared locks an operation pinned after it ends
 * (holdForCut): a revoke of one waits until releaseCut, an operation of this domain that wants one exclusively
 * waits too (it may wait: it has changed nothing), and the cut's requests join other shared holders (REQ_JOIN).
 *
 * Lock ping-pong: a revoke of a lock in use (pinned, or operations queued in this domain) less than `minHoldMs`
 * after it was granted waits until then; a lock nobody here is using goes at once, so a file handed from one
 * domain to another waits for nothing but the journal commit.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { LockAndBlock, LockMode, LockService } from './lock-service.js';

/**
 * Thrown through an operation that must start over; `lock` is a lock to take before it does (if any). Control
 * flow, caught by the filesystem: no stack trace is captured (about 8 µs each, see IoError).
 */
export class Restart extends Error {
  constructor(
    readonly lock: number | null,
    readonly mode: LockMode,
  ) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(lock === null ? 'operation restarts' : `operation restarts for lock ${lock}`);
    } finally {
      Error.stackTraceLimit = limit;
    }
  }
}

interface LockState {
  name: number;
  held: LockMode | null;
  /** The generation cached copies of what the lock covers are valid for (null: none seen yet). */
  generation: number | null;
  /** Changed since the grant (or the last downgrade): giving it up bumps its generation. */
  changed: boolean;
  grantedAt: number;
  /** The mode another domain waits for (null: nobody asked). */
  revoke: LockMode | null;
  /** Requests sent and not answered: a revoke may overtake the grant it is about. */
  pending: number;
  /** Set once a request for this lock was granted by the service but not yet taken in (see requestLock). */
  arriving: boolean;
  /** Kept while mounted whatever happens (the instance's own journal slot). */
  sticky: boolean;
  /** When another domain last asked for it, or was seen to have changed it (ms). */
  wantedAt: number;
  /** A request sent ahead of any operation (prefetch), until its grant is taken in. */
  prefetching: Promise<void> | null;
  /** Consistent cuts holding it shared: revokes of it wait until they end. */
  cuts: number;
}

interface Operation {
  pins: Set<number>;
  /** Every lock the operation asked for, in the strongest mode: taken first if it starts over. */
  wanted: Map<number, LockMode>;
  changing: boolean;
  /** Taking the last attempt's locks in ascending name order: its pins hold (no cycle of such waits exists). */
  ordered: boolean;
  waiting: boolean;
  invalidated: boolean;
}

export interface LockClientHooks {
  /** Another domain changed what `name` covers: forget every cached copy of it. */
  drop(name: number): void;
  /** Before `name` is given up or downgraded: commit if the running transaction holds what it covers. */
  writeBack(name: number): Promise<void>;
  /** Run `task` as soon as no operation runs (an idle instance answers revokes through its operation queue). */
  whenIdle(task: () => Promise<void>): void;
  /** True when operations wait behind the running one. */
  busy(): boolean;
  /** Answering a revoke failed (a commit could not be written): the instance must stop. */
  failed(error: Error): void;
  /** A prefetched lock was granted: read ahead what it covers (valid while `stillValid()`). */
  prefetched?(name: number, stillValid: () => boolean): void;
  /**
   * Whether the block whose address is `name` is read right after `name` is granted from nothing held (an inode's
   * lock and its inode block): the grant brings it (LockService.lockAndRead), offered to `delivered`. A number asks
   * for that block too, as a hint (a directory's first block as last known).
   */
  readsOnGrant?(name: number): boolean | number;
  /**
   * The block `name` as its grant brought it, and the hint's block if asked for and read: cache them if nothing
   * newer is cached (valid while `stillValid()`).
   */
  delivered?(name: number, block: Uint8Array, hinted: Uint8Array | null, stillValid: () => boolean): void;
  /** Another domain asked to read what `name` covers, and was answered (handed down or given up). */
  readBy?(name: number): void;
}

export interface LockClientOptions {
  /** How long a lock in use is kept after its grant before a revoke is answered (default 100 ms, as GFS2). */
  minHoldMs?: number;
  now?: () => number;
}

/** Prefetch requests in flight at most (a quarter of the block ring, so I/O and revoke answers find room). */
const PREFETCH_LIMIT = 32;

function satisfies(held: LockMode | null, mode: LockMode): boolean {
  return held === 'exclusive' || (held === 'shared' && mode === 'shared');
}

function stronger(a: LockMode | null | undefined, b: LockMode): LockMode {
  return a === 'exclusive' || b === 'exclusive' ? 'exclusive' : 'shared';
}

export class LockClient {
  private readonly states = new Map<number, LockState>();
  /** The states with a revoke to answer (a lookup per operation, not a walk over every lock held). */
  private readonly revoking = new Set<LockState>();
  private op: Operation | null = null;
  /** Prefetch requests not answered yet. */
  private readonly prefetches = new Set<Promise<void>>();
  private closed = false;
  private processing: Promise<void> | null = null;
  private again = false;
  private idleQueued = false;
  /** A changed lock was given back (giveBack): answer once the caller's own answer is out. */
  private afterCaller = false;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private readonly minHoldMs: number;
  private readonly now: () => number;
  /** Operations waiting for a cut to end before they take a lock exclusively. */
  private cutWaiters: (() => void)[] = [];
  /** Set while a cut's walk runs: its shared requests join other shared holders (REQ_JOIN). */
  joining = false;
  /** Counters for tests and diagnostics. */
  readonly stats = { grants: 0, revokes: 0, released: 0, downgraded: 0, drops: 0, restarts: 0, deferred: 0, prefetched: 0 };

  constructor(
    private readonly service: LockService,
    private readonly hooks: LockClientHooks,
    options: LockClientOptions = {},
  ) {
    this.minHoldMs = options.minHoldMs ?? 100;
    this.now = options.now ?? Date.now;
    service.onRevoke((name, wanted) => this.revoked(name, wanted));
  }

  // ---- operations ----

  /** Starts an operation (one at a time). */
  beginOp(): void {
    if (this.op) throw new Error('an operation is already running');
    this.op = { pins: new Set(), wanted: new Map(), changing: false, ordered: false, waiting: false, invalidated: false };
  }

  /** Before an operation runs again: takes what its last attempt wanted, one lock after the other in name order. */
  async takeFirst(previous: Map<number, LockMode>): Promise<void> {
    const op = this.running();
    op.ordered = true;
    for (const name of [...previous.keys()].sort((a, b) => a - b)) await this.need(name, previous.get(name)!);
    op.ordered = false;
  }

  /** Ends the running operation: its pins go, and revokes that waited for it are answered. */
  endOp(): Map<number, LockMode> {
    const op = this.running();
    this.op = null;
    if (this.revoking.size > 0) this.kick();
    return op.wanted;
  }

  /** The running operation will change the volume under `name` (it holds it exclusively). */
  changing(name: number): void {
    const op = this.running();
    const st = this.states.get(name);
    if (!st || st.held !== 'exclusive' || !op.pins.has(name)) throw new Error(`changing what lock ${name} covers without holding it exclusively`);
    op.changing = true;
    st.changed = true;
  }

  /** Throws unless the running operation pinned `name` (the block cache asks before every use). */
  guard(name: number): void {
    if (!this.op?.pins.has(name)) throw new Error(`using what lock ${name} covers without holding it`);
  }

  /** True while the running operation may still wait for a lock (it has changed nothing). */
  get mayWait(): boolean {
    return !this.running().changing;
  }

  /**
   * Pins `name` for the running operation in `mode`, waiting for it if the operation may wait (see above). Hot
   * paths call pinIfHeld first, which costs no promise when the lock is cached.
   */
  async need(name: number, mode: LockMode): Promise<void> {
    if (this.pinIfHeld(name, mode)) return;
    const op = this.running();
    const st = this.state(name);
    if (mode === 'exclusive' && st.cuts > 0) {
      if (op.changing) throw new Restart(name, mode);
      while (st.cuts > 0) await this.waitClean(op, new Promise<void>((resolve) => this.cutWaiters.push(resolve)));
      if (op.invalidated) throw new Restart(null, mode);
    }
    if (st.prefetching && !op.changing) {
      // Its grant is on the way: wait for that instead of asking twice.
      await this.waitClean(op, st.prefetching);
      if (this.pinIfHeld(name, mode)) {
        if (op.invalidated) throw new Restart(null, mode);
        return;
      }
    }
    if (op.changing) {
      if (!(await this.tryPin(name, mode))) throw new Restart(name, mode);
      return;
    }
    const { generation, block, hinted } = await this.waitClean(op, this.requestLock(st, mode));
    this.granted(st, mode, generation);
    if (block) this.hooks.delivered?.(name, block, hinted, () => st.held !== null && st.generation === generation);
    op.pins.add(name);
    if (op.invalidated) throw new Restart(null, mode);
  }

  /** A clean operation waits for `pending`: revokes are answered meanwhile, and have been once it returns. */
  private async waitClean<T>(op: Operation, pending: Promise<T>): Promise<T> {
    op.waiting = true;
    this.kick();
    let result: T;
    try {
      result = await pending;
    } finally {
      op.waiting = false;
    }
    while (this.processing) await this.processing;
    return result;
  }

  /** Pins `name` if it can be had at once (held already, or granted without waiting). */
  async tryPin(name: number, mode: LockMode): Promise<boolean> {
    const op = this.running();
    const st = this.state(name);
    if (mode === 'exclusive' && st.cuts > 0) return false;
    if (!satisfies(st.held, mode)) {
      st.pending++;
      const generation = await this.service.tryLock(name, mode).finally(() => st.pending--);
      if (generation === null) return false;
      this.granted(st, mode, generation);
    }
    op.pins.add(name);
    return true;
  }

  /** Pins `name` when it is held already in `mode` (no request at all); notes it as wanted either way. */
  pinIfHeld(name: number, mode: LockMode): boolean {
    const op = this.running();
    const wanted = op.wanted.get(name);
    if (wanted !== 'exclusive' && wanted !== mode) op.wanted.set(name, stronger(wanted, mode));
    const st = this.states.get(name);
    if (!st || !satisfies(st.held, mode)) return false;
    op.pins.add(name);
    return true;
  }

  /**
   * Asks for `names` in `mode` ahead of the operations that will want them (statahead: `ls -l`, du or diff about
   * to stat what a directory listed, `rm -r` about to unlink it), all at once, so the round trips to the domains
   * that hold them overlap. Names held in that mode, asked for, or in use by the running operation are skipped; a
   * grant is taken in when it arrives, as if an operation had waited for it.
   */
  prefetch(names: Iterable<number>, mode: LockMode): void {
    for (const name of names) {
      // A request waiting for its grant holds a slot of the block ring: never more than PREFETCH_LIMIT of them.
      if (this.closed || this.prefetches.size >= PREFETCH_LIMIT) return;
      const st = this.state(name);
      if (satisfies(st.held, mode) || st.pending > 0 || st.arriving || st.prefetching || this.op?.wanted.has(name)) continue;
      st.pending++;
      this.stats.prefetched++;
      const prefetching: Promise<void> = this.ask(st, mode)
        .then(
          ({ generation, block, hinted }) => {
            st.pending--;
            st.prefetching = null;
            this.granted(st, mode, generation);
            const stillValid = () => st.held !== null && st.generation === generation;
            if (st.revoke) this.kick();
            else if (block) this.hooks.delivered?.(name, block, hinted, stillValid);
            else this.hooks.prefetched?.(name, stillValid);
          },
          () => {
            st.pending--;
            st.prefetching = null;
          },
        )
        .catch((error: unknown) => this.hooks.failed(error instanceof Error ? error : new Error(String(error))))
        .finally(() => this.prefetches.delete(prefetching));
      st.prefetching = prefetching;
      this.prefetches.add(prefetching);
    }
  }

  /**
   * A consistent cut: every lock the running operation pinned (but its journal slot) stays held shared after the
   * operation ends, until releaseCut. One it holds exclusively is committed and downgraded first, so the other
   * domain of the cut can join it. Returns the names kept.
   */
  async holdForCut(): Promise<number[]> {
    const names = [...this.running().pins].filter((name) => !this.states.get(name)!.sticky);
    for (const name of names) this.states.get(name)!.cuts++;
    try {
      for (const name of names) {
        const st = this.states.get(name)!;
        if (st.held !== 'exclusive') continue;
        await this.hooks.writeBack(name);
        const dirty = st.changed;
        st.changed = false;
        st.held = 'shared';
        this.stats.downgraded++;
        await this.service.downgrade(name, dirty);
        if (dirty && st.generation !== null) st.generation++;
      }
    } catch (error) {
      this.releaseCut(names);
      throw error;
    }
    return names;
  }

  /** A cut ends: revokes of its locks are answered, operations waiting to change what they cover go on. */
  releaseCut(names: readonly number[]): void {
    for (const name of names) {
      const st = this.states.get(name);
      if (st && st.cuts > 0) st.cuts--;
    }
    const waiters = this.cutWaiters;
    this.cutWaiters = [];
    for (const wake of waiters) wake();
    this.kick();
  }

  /** Keeps `name` until unmount (the instance's journal slot): revokes of it are not answered. */
  stick(name: number): void {
    this.state(name).sticky = true;
  }

  /** Gives `name` back at once (the mount lock after recovery); nothing it covers is cached. */
  async release(name: number): Promise<void> {
    const st = this.states.get(name);
    if (!st?.held) return;
    const dirty = st.changed;
    const held = st.held;
    st.held = null;
    st.changed = false;
    if (dirty && st.generation !== null) st.generation++;
    this.running().pins.delete(name);
    await this.service.unlock(name, dirty, held);
  }

  /** Unmount: every lock goes back (the caller committed), prefetched ones too once their grants are in. */
  async releaseAll(): Promise<void> {
    this.closed = true;
    while (this.prefetches.size > 0) await Promise.all(this.prefetches);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const st of this.states.values()) {
      const held = st.held;
      if (!held) continue;
      st.held = null;
      await this.service.unlock(st.name, st.changed, held);
    }
    this.states.clear();
    this.revoking.clear();
  }

  /**
   * Gives `name` back soon, committing first what it covers, as if another domain had asked for it: for a file
   * being handed between domains, whose next user then finds it free instead of waiting for a revoke.
   */
  giveBack(name: number): void {
    const st = this.states.get(name);
    if (!st?.held || st.sticky) return;
    // Handed back on purpose: no minimum hold (that is for locks in use), even with operations queued.
    st.grantedAt = -Infinity;
    this.setRevoke(st, 'exclusive');
    // A changed lock is committed first: that work waits until the caller's answer is out (see kick).
    if (st.changed) this.afterCaller = true;
    this.kick();
  }

  /**
   * Keeps `name` only shared from now on, committing first what it covers, as if another domain had asked to
   * read it: for what another domain is about to look at. Nothing unless it is held exclusively and nothing else
   * is asked of it already. It counts as wanted by another domain (wantedWithin), as a revoke would have.
   */
  handDown(name: number): void {
    const st = this.states.get(name);
    if (st?.held !== 'exclusive' || st.sticky || st.revoke !== null) return;
    st.grantedAt = -Infinity;
    st.wantedAt = this.now();
    this.setRevoke(st, 'shared');
    this.kick();
  }

  /** True when another domain asked for `name`, or changed it, within the last `windowMs` (it is being shared). */
  wantedWithin(name: number, windowMs: number): boolean {
    const st = this.states.get(name);
    return st !== undefined && this.now() - st.wantedAt <= windowMs;
  }

  /** What is held, for tests and diagnostics. */
  held(name: number): LockMode | null {
    return this.states.get(name)?.held ?? null;
  }

  private running(): Operation {
    if (!this.op) throw new Error('no operation is running');
    return this.op;
  }

  private state(name: number): LockState {
    let st = this.states.get(name);
    if (!st) {
      st = { name, held: null, generation: null, changed: false, grantedAt: 0, revoke: null, pending: 0, arriving: false, sticky: false, wantedAt: -Infinity, prefetching: null, cuts: 0 };
      this.states.set(name, st);
    }
    return st;
  }

  /** The service's grant of `mode`, with the lock's block when nothing is held and the hooks want it read. */
  private ask(st: LockState, mode: LockMode): Promise<LockAndBlock> {
    const join = this.joining && mode === 'shared';
    const reads = st.held === null && this.service.lockAndRead ? (this.hooks.readsOnGrant?.(st.name) ?? false) : false;
    if (reads !== false) return this.service.lockAndRead!(st.name, mode, join, reads === true ? null : reads);
    return this.service.lock(st.name, mode, join).then((generation) => ({ generation, block: null, hinted: null }));
  }

  private requestLock(st: LockState, mode: LockMode): Promise<LockAndBlock> {
    st.pending++;
    return this.ask(st, mode).then(
      (granted) => {
        st.pending--;
        st.arriving = true;
        return granted;
      },
      (error) => {
        st.pending--;
        throw error;
      },
    );
  }

  /** A grant taken in: what is cached under the lock stays only if nobody changed it meanwhile. */
  private granted(st: LockState, mode: LockMode, generation: number): void {
    st.arriving = false;
    st.held = stronger(st.held, mode);
    st.grantedAt = this.now();
    this.stats.grants++;
    if (st.generation !== generation) {
      if (st.generation !== null) {
        this.hooks.drop(st.name);
        this.stats.drops++;
        // Another domain changed it since this one last held it: it is being shared.
        st.wantedAt = st.grantedAt;
        // The operation may have read what it covers under an earlier grant of this very lock (an upgrade).
        if (this.op?.pins.has(st.name)) this.op.invalidated = true;
      }
      st.generation = generation;
    }
  }

  // ---- revokes ----

  private revoked(name: number, wanted: LockMode): void {
    const st = this.states.get(name);
    if (!st || (!st.held && st.pending === 0 && !st.arriving)) return;
    this.setRevoke(st, stronger(st.revoke, wanted));
    st.wantedAt = this.now();
    this.stats.revokes++;
    this.kick();
  }

  /** Answers pending revokes now if no operation runs, or the running one waits with nothing changed. */
  private kick(): void {
    const op = this.op;
    if (!op) {
      if (this.idleQueued) return;
      this.idleQueued = true;
      this.hooks.whenIdle(async () => {
        // A changed lock given back waits for the next turn of the event loop, so the close that gave it back is
        // answered before the commit's work runs; operations queued meanwhile still run after it.
        if (this.afterCaller) await nextTurn();
        this.afterCaller = false;
        this.idleQueued = false;
        return this.process();
      });
      return;
    }
    if (op.waiting && !op.changing) void this.process();
  }

  private process(): Promise<void> {
    if (this.processing) {
      this.again = true;
      return this.processing;
    }
    this.processing = (async () => {
      do {
        this.again = false;
        await this.answerRevokes();
      } while (this.again);
    })()
      .catch((error) => this.hooks.failed(error instanceof Error ? error : new Error(String(error))))
      .finally(() => {
        this.processing = null;
      });
    return this.processing;
  }

  private async answerRevokes(): Promise<void> {
    // The downgrades and releases go out together (one ring batch for a burst of revokes, as statahead causes).
    const answers: Promise<void>[] = [];
    try {
      await this.answerEach(answers);
    } finally {
      await Promise.all(answers);
    }
  }

  private async answerEach(answers: Promise<void>[]): Promise<void> {
    for (const st of [...this.revoking]) {
      if (!st.revoke) continue;
      if (!st.held) {
        if (st.pending === 0 && !st.arriving) this.setRevoke(st, null);
        continue;
      }
      if (st.held === 'shared' && st.revoke === 'shared') {
        // Nothing in the way now; but an upgrade on its way in will be (the revoke is about it: keep it).
        if (st.pending === 0 && !st.arriving) this.setRevoke(st, null);
        continue;
      }
      if (st.sticky || st.arriving || st.cuts > 0) continue;
      const op = this.op;
      // An operation that runs (not waiting for a lock) may be changing things: answer after it.
      if (op && !op.waiting) return;
      if (op?.ordered && op.pins.has(st.name)) continue;
      const now = this.now();
      const holdUntil = st.grantedAt + this.minHoldMs;
      if (now < holdUntil && ((op?.pins.has(st.name) ?? false) || this.hooks.busy())) {
        this.stats.deferred++;
        this.wakeAt(holdUntil);
        continue;
      }
      const wanted = st.revoke;
      this.setRevoke(st, null);
      await this.hooks.writeBack(st.name);
      const dirty = st.changed;
      st.changed = false;
      if (wanted === 'shared' && st.held === 'exclusive') {
        st.held = 'shared';
        this.stats.downgraded++;
        answers.push(this.service.downgrade(st.name, dirty));
      } else {
        answers.push(this.service.unlock(st.name, dirty, st.held));
        st.held = null;
        this.stats.released++;
      }
      // The service bumps the generation by one for a dirty release: our copies stay valid for that one.
      if (dirty && st.generation !== null) st.generation++;
      if (op?.pins.has(st.name)) op.invalidated = true;
      if (wanted === 'shared') this.hooks.readBy?.(st.name);
    }
  }

  private setRevoke(st: LockState, wanted: LockMode | null): void {
    st.revoke = wanted;
    if (wanted) this.revoking.add(st);
    else this.revoking.delete(st);
  }

  private wakeAt(at: number): void {
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.kick();
    }, Math.max(0, at - this.now()) + 1);
    this.timer.unref?.();
  }
}
