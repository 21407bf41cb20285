/**
 * The hypercall ABI: the only definitions that cross the boundary between a guest domain and the monitor
 * (in the spirit of Xen's io/blkif.h and io/ring.h). Both sides import this file and nothing else of each other.
 *
 * Shared memory a domain has with the monitor (and nothing else):
 *  - its request ring (one SharedArrayBuffer: a header, then RING_SLOTS slots; a response overwrites the slot of
 *    a request already consumed, as in Xen's shared rings);
 *  - its virtual interrupt controller page (pending lines, a sequence word the guest waits on, the ring of
 *    cluster-lock revokes);
 *  - its memory, into and out of which the monitor performs I/O (the guest's DMA-able buffers live there);
 *  - the monitor's doorbell (one word the monitor sleeps on; guests bump it only when the monitor asked to be
 *    woken, event-idx style).
 */

/** Sector size of the block protocol. */
export const SECTOR = 512;

// ---- operations -----------------------------------------------------------------------------------------------
export const Op = {
  READ: 0,
  WRITE: 1,
  /** Everything completed before it is durable on the backend (fdatasync). */
  FLUSH: 2,
  /** The range's contents are dropped; it reads back as zeros. */
  DISCARD: 3,
  /** Control: size in sectors and grant flags of the vbd. */
  VOLINFO: 16,
  /**
   * Control: take a cluster lock of the vbd's volume (SECTOR_LO = name, read unsigned, SECTOR_HI = 0; count =
   * LOCK_SHARED or LOCK_EXCLUSIVE). The response comes when granted: VALUE_LO the lock's generation, VALUE_HI the
   * lock service's change epoch. With REQ_TRY it is granted at once or fails with EAGAIN, never queued, never
   * revoking anyone, and never ahead of a domain already waiting for the name.
   */
  LOCK: 17,
  /**
   * Control: release a cluster lock (SECTOR_LO = name, SECTOR_HI = 0; flags & REQ_DIRTY bumps its generation and
   * the epoch; count = the mode given up, LOCK_SHARED or LOCK_EXCLUSIVE, or 0 for whatever is held: a release of
   * shared that the grant of an upgrade overtook changes nothing, see lock-table.ts). With REQ_DOWNGRADE an
   * exclusive hold becomes shared instead (EINVAL unless held exclusively).
   */
  UNLOCK: 18,
  /**
   * Control: the domain found corruption on the vbd's volume (fs/volume-errors.ts). The volume turns read-only for
   * every domain that shares it (Ring.VOLUME_ERRORS), as ext4's errors=remount-ro, and the event log says why:
   * UTF-8 text in the `count` sector(s) (1) at MEM_OFFSET, up to its first zero byte. A read-only grant's report is
   * logged and refused (EROFS): a domain that may not write the volume may not stop the others writing it either.
   */
  VOLUME_ERROR: 20,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

/** Request flags. */
export const REQ_FUA = 1;
export const REQ_DIRTY = 2;
/** LOCK: grant at once or fail with EAGAIN. */
export const REQ_TRY = 4;
/** UNLOCK: exclusive -> shared instead of a release. */
export const REQ_DOWNGRADE = 8;
/**
 * LOCK, shared only: join the shared holders even when others wait for the lock (a consistent cut, `hvshare diff`:
 * the other domain of the cut holds it shared and keeps it until the cut ends, so waiting behind a writer that
 * waits for that domain would never end). Queued as usual when someone holds the lock exclusively.
 */
export const REQ_JOIN = 16;
/**
 * WRITE: a barrier (as Linux's old REQ_HARDBARRIER, or a SCSI ordered tag): every write completed before it is
 * durable before this one reaches the backend. It does not wait for that: it may complete at once, and a crash
 * may lose it and later writes (not earlier ones once it is durable) until a FLUSH or FUA write completes.
 */
export const REQ_BARRIER = 32;
/**
 * LOCK: with the grant, the monitor reads the LOCK_BLOCK_BYTES at byte LOCK_BLOCK_BYTES x name of the volume (lock
 * names are block addresses: fs/lock-names.ts) into MEM_OFFSET, after the last holder's release, so the block is
 * what that holder left: one round trip where a grant and then a READ of the block the lock covers took two (an
 * inode handed between domains). The response's INFO_FLAGS say LOCK_BLOCK_READ when the block is there; a read
 * the backend failed still grants the lock, without the flag (the guest reads the block itself and gets its EIO).
 * The block must lie inside the volume (ERANGE) and the buffer inside the domain's memory (EFAULT).
 */
export const REQ_READ_BLOCK = 64;
/**
 * LOCK with REQ_READ_BLOCK: a second block too, a hint (a directory's first block, as the domain last knew it).
 * The buffer is two blocks; its first 4 bytes hold the hint's block address (u32, little-endian) when the request
 * is posted, and the monitor reads that block into the second half with the grant if it lies inside the volume
 * (LOCK_HINT_READ); a hint outside it is no error, just not read. The guest keeps what it read only if the block
 * the grant brought still names the hint (it was read after the grant, so it is then what the lock covers).
 */
export const REQ_READ_HINT = 128;
/** Bytes a LOCK with REQ_READ_BLOCK reads: one filesystem block (two with REQ_READ_HINT). */
export const LOCK_BLOCK_BYTES = 4096;
/** LOCK response INFO_FLAGS: the block REQ_READ_BLOCK asked for is in the buffer. */
export const LOCK_BLOCK_READ = 2;
/** LOCK response INFO_FLAGS: the hint block is in the buffer's second half (REQ_READ_HINT). */
export const LOCK_HINT_READ = 4;

/** Lock names are unsigned 32-bit numbers (fs/lock-names.ts: block addresses, and two volume-wide names). */
export const LOCK_NAME_LIMIT = 2 ** 32;
/** The modes of a cluster lock, as the lock service and every client name them (LOCK_SHARED, LOCK_EXCLUSIVE). */
export type LockMode = 'shared' | 'exclusive';

/** Lock modes carried in the count field of LOCK. */
export const LOCK_SHARED = 1;
export const LOCK_EXCLUSIVE = 2;

/** Largest transfer of one request, in sectors (4 MiB). Bigger transfers are split by the frontend. */
export const MAX_SECTORS_PER_REQUEST = 8192;

// ---- statuses (negative Linux errno values, 0 = success) -----------------------------------------------------
export const Status = {
  OK: 0,
  EIO: -5,
  /** A LOCK with REQ_TRY that could not be granted at once. */
  EAGAIN: -11,
  EFAULT: -14,
  ENODEV: -19,
  EINVAL: -22,
  EROFS: -30,
  ERANGE: -34,
  EOPNOTSUPP: -95,
  /** The domain is being torn down or its ring was shut because of garbage indices. */
  ESHUTDOWN: -108,
} as const;

export function statusName(status: number): string {
  for (const [name, value] of Object.entries(Status)) if (value === status) return name;
  return `status ${status}`;
}

// ---- ring layout (Int32 words) --------------------------------------------------------------------------------
export const RING_SLOTS = 128;
export const RING_HEADER_WORDS = 16;
export const SLOT_WORDS = 8;
export const RING_BYTES = (RING_HEADER_WORDS + RING_SLOTS * SLOT_WORDS) * 4;

/** Header words. Indices are free-running unsigned 32-bit counters; slot = index % RING_SLOTS. */
export const Ring = {
  /** Written by the guest: requests published so far. */
  REQ_PROD: 0,
  /** Written by the monitor: ring the doorbell when REQ_PROD passes this value (event idx). */
  REQ_EVENT: 1,
  /** Written by the monitor: responses published so far. */
  RSP_PROD: 2,
  /** Written by the guest: raise the interrupt when RSP_PROD passes this value. */
  RSP_EVENT: 3,
  /** Written by the monitor: non-zero once the ring is shut (a Status explaining why). */
  FAULT: 4,
  /**
   * Written by the monitor, a hint only: non-zero while this ring's transfers run on the monitor's I/O threads,
   * so a guest polling for completions would take a core from the threads doing its copies (sleep instead).
   */
  BACKEND_BUSY: 5,
  /**
   * Written by the monitor: bit n set = the volume of vbd n has errors (Op.VOLUME_ERROR): the domain's filesystem
   * must not change it any more. Set for every domain with a grant on the volume, also for one booted later.
   */
  VOLUME_ERRORS: 6,
} as const;

/** Request slot words. */
export const Req = {
  ID: 0,
  OP: 1,
  SECTOR_LO: 2,
  SECTOR_HI: 3,
  COUNT: 4,
  /** Byte offset of the buffer in the domain's memory. */
  MEM_OFFSET: 5,
  /** Index of the virtual block device in the domain's grant table. */
  VBD: 6,
  FLAGS: 7,
} as const;

/** Response slot words (overwrite a consumed request slot). */
export const Rsp = {
  ID: 0,
  STATUS: 1,
  /** VOLINFO: size in sectors; LOCK: the lock's generation (VALUE_LO) and the change epoch (VALUE_HI). */
  VALUE_LO: 2,
  VALUE_HI: 3,
  /** VOLINFO: VBD_READ_ONLY; LOCK: LOCK_BLOCK_READ, LOCK_HINT_READ. */
  INFO_FLAGS: 4,
} as const;
export const VBD_READ_ONLY = 1;

// ---- virtual interrupt controller page (Int32 words) ----------------------------------------------------------
/** Entries of the revoke ring; more revokes wait in the monitor until the guest consumed some. */
export const REVOKE_SLOTS = 256;
export const REVOKE_SLOT_WORDS = 4;
export const Vic = {
  /** Bumped on every raise; the guest kernel waits on it (Atomics.waitAsync). */
  SEQ: 0,
  /** Bit n set = line n pending. */
  PENDING: 1,
  /** Written by the monitor: revoke entries posted so far (free-running u32; slot = index % REVOKE_SLOTS). */
  REVOKE_PROD: 2,
  /**
   * Written by the guest: revoke entries consumed so far. A value more than REVOKE_SLOTS behind REVOKE_PROD, or
   * ahead of it, is garbage: the monitor treats that ring as full (its revokes wait) until the guest repairs it.
   */
  REVOKE_CONS: 3,
  /**
   * Written by the monitor, a hint only: non-zero while revokes wait in the monitor for room in the ring. A guest
   * that advanced REVOKE_CONS and sees it set rings the doorbell, so the monitor posts them without waiting for
   * the domain's next request.
   */
  REVOKE_WAITING: 4,
  /** First word of the revoke ring: entries of RevokeEntry words. */
  REVOKE_RING: 16,
} as const;
export const VIC_WORDS = Vic.REVOKE_RING + REVOKE_SLOTS * REVOKE_SLOT_WORDS;

/** Words of one revoke entry: the monitor wants lock NAME of the volume of VBD back, for a waiter wanting WANTED. */
export const RevokeEntry = {
  VBD: 0,
  /** The lock name (unsigned, stored as int32). */
  NAME: 1,
  /** LOCK_SHARED or LOCK_EXCLUSIVE: a holder of an exclusive lock asked for shared may downgrade. */
  WANTED: 2,
} as const;

/** A revoke entry's fields: the vbd, the lock name (unsigned) and the mode wanted (LOCK_SHARED or LOCK_EXCLUSIVE). */
export interface RevokeSlot {
  vbd: number;
  name: number;
  wanted: number;
}

/** The first word of revoke entry number `index` (a free-running u32) in the interrupt controller page. */
function revokeBase(index: number): number {
  return Vic.REVOKE_RING + ((index >>> 0) % REVOKE_SLOTS) * REVOKE_SLOT_WORDS;
}

/** The monitor's side of the revoke ring codec (the producer index is published by the caller). */
export function writeRevoke(vic: Int32Array, index: number, entry: RevokeSlot): void {
  const base = revokeBase(index);
  vic[base + RevokeEntry.VBD] = entry.vbd;
  vic[base + RevokeEntry.NAME] = entry.name | 0;
  vic[base + RevokeEntry.WANTED] = entry.wanted;
}

/** The guest's side: entry number `index`, its name read unsigned. */
export function readRevoke(vic: Int32Array, index: number): RevokeSlot {
  const base = revokeBase(index);
  return { vbd: vic[base + RevokeEntry.VBD]!, name: vic[base + RevokeEntry.NAME]! >>> 0, wanted: vic[base + RevokeEntry.WANTED]! };
}

/** Virtual interrupt lines. */
export const Line = {
  /** Block responses are ready. */
  BLKIF: 0,
  /** The monitor wants locks back (entries in the revoke ring). */
  LOCK_REVOKE: 1,
} as const;

// ---- the monitor's doorbell (Int32 words) ---------------------------------------------------------------------
export const DOORBELL_WORDS = 16;
export const Doorbell = {
  /** Bumped by a guest or the toolstack to wake the monitor. */
  SEQ: 0,
  /**
   * Written by the monitor: how many domains issued requests lately. When they and the monitor outnumber the
   * host's cores, a guest with a deep queue sleeps instead of polling (completions come in bunches anyway, and a
   * polling guest takes the core the monitor copies its data with).
   */
  BUSY_DOMAINS: 1,
} as const;

// ---- the slot codec: every reader and writer of ring slots goes through these ---------------------------------
const TWO_32 = 0x1_0000_0000;

/** The low 32-bit word of a 64-bit field (a sector, a size in sectors), as stored in an Int32 slot word. */
export function low32(value: number): number {
  return value % TWO_32 | 0;
}

/** The high 32-bit word of a 64-bit field. */
export function high32(value: number): number {
  return Math.floor(value / TWO_32) | 0;
}

/** A 64-bit field from its two words, read unsigned (exact up to 2^53; larger values stay larger than any volume). */
export function join64(lo: number, hi: number): number {
  return (hi >>> 0) * TWO_32 + (lo >>> 0);
}

/** First word of the slot that free-running ring index `index` uses. */
export function slotBase(index: number): number {
  return RING_HEADER_WORDS + ((index >>> 0) % RING_SLOTS) * SLOT_WORDS;
}

/** A request descriptor as it sits in a slot, each word read once (unsigned where the ABI says so). */
export interface RequestSlot {
  id: number;
  op: number;
  sector: number;
  count: number;
  memOffset: number;
  vbd: number;
  flags: number;
}

/** A response as it sits in a slot. */
export interface ResponseSlot {
  id: number;
  status: number;
  valueLo: number;
  valueHi: number;
  infoFlags: number;
}

/** Write a request descriptor into the slot of ring index `index` (the guest's side; publishing is the caller's). */
export function writeRequest(
  ring: Int32Array, index: number, id: number, op: number, sector: number, count: number, memOffset: number, vbd: number, flags: number,
): void {
  const base = slotBase(index);
  ring[base + Req.ID] = id;
  ring[base + Req.OP] = op;
  ring[base + Req.SECTOR_LO] = low32(sector);
  ring[base + Req.SECTOR_HI] = high32(sector);
  ring[base + Req.COUNT] = count;
  ring[base + Req.MEM_OFFSET] = memOffset;
  ring[base + Req.VBD] = vbd;
  ring[base + Req.FLAGS] = flags;
}

/** Read the request descriptor in the slot of ring index `index`, every word once. */
export function readRequest(ring: Int32Array, index: number): RequestSlot {
  const base = slotBase(index);
  return {
    id: ring[base + Req.ID],
    op: ring[base + Req.OP] >>> 0,
    sector: join64(ring[base + Req.SECTOR_LO], ring[base + Req.SECTOR_HI]),
    count: ring[base + Req.COUNT] >>> 0,
    memOffset: ring[base + Req.MEM_OFFSET] >>> 0,
    vbd: ring[base + Req.VBD] >>> 0,
    flags: ring[base + Req.FLAGS] >>> 0,
  };
}

/** Write a response into the slot of ring index `index` (the monitor's side; publishing is the caller's). */
export function writeResponse(ring: Int32Array, index: number, id: number, status: number, valueLo: number, valueHi: number, infoFlags: number): void {
  const base = slotBase(index);
  ring[base + Rsp.ID] = id;
  ring[base + Rsp.STATUS] = status;
  ring[base + Rsp.VALUE_LO] = valueLo;
  ring[base + Rsp.VALUE_HI] = valueHi;
  ring[base + Rsp.INFO_FLAGS] = infoFlags;
}

/** Read the response in the slot of ring index `index` into `into` (reused on the hot path), values unsigned. */
export function readResponse(ring: Int32Array, index: number, into: ResponseSlot): ResponseSlot {
  const base = slotBase(index);
  into.id = ring[base + Rsp.ID];
  into.status = ring[base + Rsp.STATUS];
  into.valueLo = ring[base + Rsp.VALUE_LO] >>> 0;
  into.valueHi = ring[base + Rsp.VALUE_HI] >>> 0;
  into.infoFlags = ring[base + Rsp.INFO_FLAGS];
  return into;
}

/** Unsigned 32-bit distance a - b. */
export function u32Sub(a: number, b: number): number {
  return (a - b) >>> 0;
}

/**
 * Event-idx test (as Xen's RING_PUSH_..._AND_CHECK_NOTIFY): the peer asked to be told once the producer index
 * reaches `eventIdx`; moving the producer from `oldIdx` to `newIdx` notifies when eventIdx lies in (oldIdx, newIdx].
 */
export function needsNotify(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return u32Sub(newIdx, eventIdx) < u32Sub(newIdx, oldIdx);
}
