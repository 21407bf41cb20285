/**
 * The cluster lock service the filesystem uses for coherence between domains sharing one volume.
 *
 * In a guest it is the monitor's lock service reached by hypercall (guests/); natively on the host, and in
 * tests that run several filesystem instances in one process, it is an in-process service with the same
 * semantics. Lock names are unsigned 32-bit numbers chosen by the filesystem (the block address of the metadata
 * block standing for the resource); names of different volumes never meet.
 *
 * Semantics (as OCFS2/GFS2 glocks): any number of shared holders or one exclusive holder. A holder keeps its
 * lock cached after use; when another domain asks for a conflicting mode, the service calls the holder's revoke
 * handler with the mode the waiter wants, and the holder commits its journal, writes back, drops what it may no
 * longer trust and calls unlock (or downgrade, when the waiter only wants to share).
 * Every grant returns the lock's generation; an unlock with `dirty` (the holder changed what the lock protects)
 * bumps it, so a holder whose remembered generation differs knows its cache is stale.
 */
import type { LockMode } from '../hypervisor/abi.js';

export type { LockMode };

/**
 * What lockAndRead answers: the generation granted, the block named by the lock (BLOCK_SIZE bytes) or null, and
 * the hint's block when one was asked for and read (else null).
 */
export interface LockAndBlock {
  generation: number;
  block: Uint8Array | null;
  hinted: Uint8Array | null;
}

export interface LockService {
  /**
   * Resolves with the lock's generation once granted in `mode` (queues; conflicting holders are asked to give it
   * back). `join`: a shared request granted alongside shared holders even when others wait (a consistent cut).
   */
  lock(name: number, mode: LockMode, join?: boolean): Promise<number>;
  /**
   * lock(), and with the grant the block whose address is the lock's name (an inode's lock: its inode block), read
   * after the grant so it is what the last holder left: one round trip instead of two. `block` is null when the
   * read failed (the caller reads it itself). `hint`: a second block to read with the grant (a directory's first
   * block as this domain last knew it); the caller keeps it only if the block the grant brought still names it.
   * Optional: a service without it is asked lock() and a read follows.
   */
  lockAndRead?(name: number, mode: LockMode, join?: boolean, hint?: number | null): Promise<LockAndBlock>;
  /** Granted at once (the generation) or null; never queues, never revokes anyone. */
  tryLock(name: number, mode: LockMode): Promise<number | null>;
  /**
   * Gives the lock back; `dirty` bumps the generation. `held` is the mode given up: a release of shared overtaken by
   * the grant of an upgrade this client asked for changes nothing (hypervisor/lock-table.ts).
   */
  unlock(name: number, dirty: boolean, held: LockMode): Promise<void>;
  /** Exclusive -> shared; `dirty` bumps the generation. */
  downgrade(name: number, dirty: boolean): Promise<void>;
  /** Called when another domain waits for `name` in `wanted`, which conflicts with what we hold. */
  onRevoke(handler: (name: number, wanted: LockMode) => void): void;
  /**
   * The largest change epoch any grant to this client carried: it grows with every release of a changed lock,
   * so journal records tagged with it are ordered across domains (fs/journal.ts).
   */
  readonly epoch: number;
}

/**
 * `service`, calling `before(name)` ahead of every unlock and downgrade: from then on another domain may change
 * what the lock covers, so whoever kept answers derived under it must know first (the host's view, through
 * FileSystem's onChange).
 */
export function noticingGiveUps(service: LockService, before: (name: number) => void): LockService {
  return {
    lock: (name, mode, join) => service.lock(name, mode, join),
    lockAndRead: service.lockAndRead && ((name, mode, join, hint) => service.lockAndRead!(name, mode, join, hint)),
    tryLock: (name, mode) => service.tryLock(name, mode),
    unlock: (name, dirty, held) => {
      before(name);
      return service.unlock(name, dirty, held);
    },
    downgrade: (name, dirty) => {
      before(name);
      return service.downgrade(name, dirty);
    },
    onRevoke: (handler) => service.onRevoke(handler),
    get epoch() {
      return service.epoch;
    },
  };
}
