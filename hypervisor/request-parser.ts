import {
  LOCK_BLOCK_BYTES,
  LOCK_EXCLUSIVE,
  LOCK_NAME_LIMIT,
  LOCK_SHARED,
  MAX_SECTORS_PER_REQUEST,
  Op,
  readRequest,
  REQ_DIRTY,
  REQ_DOWNGRADE,
  REQ_BARRIER,
  REQ_FUA,
  REQ_JOIN,
  REQ_READ_BLOCK,
  REQ_READ_HINT,
  REQ_TRY,
  SECTOR,
  Status,
  type LockMode,
} from './abi.js';

/** What the parser needs to know of one entry of a domain's grant table. */
export interface ParserGrant {
  readonly readOnly: boolean;
  /** Size of the granted volume in sectors. */
  readonly sectors: number;
}

/**
 * A descriptor the monitor may act on, typed by what it asks for. Everything a descriptor alone can get wrong was
 * checked by parse(); what depends on the lock table (is it held, does this domain already wait) is the lock
 * service's to check. `vbd` names an entry that exists in the domain's grant table.
 */
export type BlockRequest =
  | { kind: 'transfer'; id: number; vbd: number; op: typeof Op.READ | typeof Op.WRITE; sector: number; count: number; memOffset: number; fua: boolean; barrier: boolean }
  | { kind: 'flush'; id: number; vbd: number }
  | { kind: 'discard'; id: number; vbd: number; sector: number; count: number }
  | { kind: 'volinfo'; id: number; vbd: number }
  /** A report of corruption found on the vbd's volume: the reason is in `count` sectors at `memOffset`. */
  | { kind: 'volume-error'; id: number; vbd: number; count: number; memOffset: number }
  /** readInto: REQ_READ_BLOCK's buffer offset (null: no read with the grant); hint: REQ_READ_HINT too. */
  | { kind: 'lock'; id: number; vbd: number; name: number; mode: LockMode; try: boolean; join: boolean; readInto: number | null; hint: boolean }
  /** `released`: the mode given up, or undefined for whatever is held. */
  | { kind: 'unlock'; id: number; vbd: number; name: number; released: LockMode | undefined; dirty: boolean; downgrade: boolean };

/** A descriptor refused on its face: answer `id` with `status` (a negative errno). */
export interface RefusedRequest {
  kind: 'refused';
  id: number;
  status: number;
}

/**
 * The monitor's one request parser (as blkback's dispatch, or virtio-blk's header check): reads the slot of ring
 * index `index` once through the ABI's codec and returns a typed request or the status that refuses it. Every
 * path the monitor serves a request by (inline, merged into a vectored run, handed to the I/O threads, the lock
 * service) takes what this returns, so no rule is written twice. Checks, in order: the vbd exists; the op is
 * known; a transfer's count (a write may carry REQ_FUA and REQ_BARRIER) is 1..MAX_SECTORS_PER_REQUEST (EINVAL), its sectors inside the volume (ERANGE), its
 * buffer inside the domain's memory (EFAULT), and a write needs a read-write grant (EROFS); a discard's range
 * likewise; a lock's name is below LOCK_NAME_LIMIT and its mode known (EINVAL), and exclusive needs a
 * read-write grant (EROFS: a read-only domain may never keep writers out); a volume error report's reason is one
 * sector inside the domain's memory (EINVAL, EFAULT).
 */
export function parse(ring: Int32Array, index: number, grants: readonly ParserGrant[], memoryBytes: number): BlockRequest | RefusedRequest {
  const slot = readRequest(ring, index);
  const { id, vbd } = slot;
  const refuse = (status: number): RefusedRequest => ({ kind: 'refused', id, status });
  const grant = grants[vbd];
  if (!grant) return refuse(Status.ENODEV);
  switch (slot.op) {
    case Op.READ:
    case Op.WRITE: {
      const status = checkRange(slot.sector, slot.count, MAX_SECTORS_PER_REQUEST, grant) ?? checkBuffer(slot.memOffset, slot.count, memoryBytes);
      if (status !== undefined) return refuse(status);
      if (slot.op === Op.WRITE && grant.readOnly) return refuse(Status.EROFS);
      return { kind: 'transfer', id, vbd, op: slot.op, sector: slot.sector, count: slot.count, memOffset: slot.memOffset, fua: (slot.flags & REQ_FUA) !== 0, barrier: slot.op === Op.WRITE && (slot.flags & REQ_BARRIER) !== 0 };
    }
    case Op.FLUSH:
      return { kind: 'flush', id, vbd };
    case Op.DISCARD: {
      const status = checkRange(slot.sector, slot.count, Infinity, grant);
      if (status !== undefined) return refuse(status);
      if (grant.readOnly) return refuse(Status.EROFS);
      return { kind: 'discard', id, vbd, sector: slot.sector, count: slot.count };
    }
    case Op.VOLINFO:
      return { kind: 'volinfo', id, vbd };
    case Op.VOLUME_ERROR: {
      const status = (slot.count !== 1 ? Status.EINVAL : undefined) ?? checkBuffer(slot.memOffset, slot.count, memoryBytes);
      if (status !== undefined) return refuse(status);
      return { kind: 'volume-error', id, vbd, count: slot.count, memOffset: slot.memOffset };
    }
    case Op.LOCK: {
      const mode = lockMode(slot.count);
      if (mode === undefined || slot.sector >= LOCK_NAME_LIMIT) return refuse(Status.EINVAL);
      if (mode === 'exclusive' && grant.readOnly) return refuse(Status.EROFS);
      let readInto: number | null = null;
      const hint = (slot.flags & REQ_READ_BLOCK) !== 0 && (slot.flags & REQ_READ_HINT) !== 0;
      if (slot.flags & REQ_READ_BLOCK) {
        const sectors = LOCK_BLOCK_BYTES / SECTOR;
        const status = checkRange(slot.sector * sectors, sectors, sectors, grant) ?? checkBuffer(slot.memOffset, hint ? 2 * sectors : sectors, memoryBytes);
        if (status !== undefined) return refuse(status);
        readInto = slot.memOffset;
      }
      return { kind: 'lock', id, vbd, name: slot.sector, mode, try: (slot.flags & REQ_TRY) !== 0, join: mode === 'shared' && (slot.flags & REQ_JOIN) !== 0, readInto, hint };
    }
    case Op.UNLOCK: {
      const released = slot.count === 0 ? undefined : lockMode(slot.count);
      if ((slot.count !== 0 && released === undefined) || slot.sector >= LOCK_NAME_LIMIT) return refuse(Status.EINVAL);
      return {
        kind: 'unlock', id, vbd, name: slot.sector, released,
        dirty: (slot.flags & REQ_DIRTY) !== 0,
        downgrade: (slot.flags & REQ_DOWNGRADE) !== 0,
      };
    }
    default:
      return refuse(Status.EOPNOTSUPP);
  }
}

/** The lock mode a LOCK_SHARED / LOCK_EXCLUSIVE count stands for. */
function lockMode(count: number): LockMode | undefined {
  return count === LOCK_SHARED ? 'shared' : count === LOCK_EXCLUSIVE ? 'exclusive' : undefined;
}

/** `count` sectors from `sector`: 1..maxCount of them (EINVAL), all inside the granted volume (ERANGE). */
function checkRange(sector: number, count: number, maxCount: number, grant: ParserGrant): number | undefined {
  if (count === 0 || count > maxCount) return Status.EINVAL;
  if (sector + count > grant.sectors) return Status.ERANGE;
  return undefined;
}

/** A buffer of `count` sectors at `memOffset` lies inside the domain's memory (EFAULT otherwise). */
function checkBuffer(memOffset: number, count: number, memoryBytes: number): number | undefined {
  return memOffset + count * SECTOR > memoryBytes ? Status.EFAULT : undefined;
}
