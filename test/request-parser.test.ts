/**
 * The monitor's one request parser and the ABI's slot codec, on a real ring buffer: what a guest's blkfront writes
 * with writeRequest comes back from parse() as the typed request it stands for, and every malformed descriptor
 * comes back as the status the monitor answers it with, whichever path (inline, merged, offloaded, lock) would
 * then have served it.
 */
import test from 'ava';
import {
  high32, join64, LOCK_EXCLUSIVE, LOCK_NAME_LIMIT, LOCK_SHARED, low32, MAX_SECTORS_PER_REQUEST, Op, readRequest, readResponse,
  REQ_BARRIER, REQ_DIRTY, REQ_DOWNGRADE, REQ_FUA, REQ_JOIN, REQ_READ_BLOCK, REQ_READ_HINT, REQ_TRY, Req, RING_BYTES, RING_SLOTS, slotBase, Status, writeRequest, writeResponse,
} from '../hypervisor/abi.js';
import { parse, type ParserGrant } from '../hypervisor/request-parser.js';

const ring = () => new Int32Array(new SharedArrayBuffer(RING_BYTES));
/** vbd 0: a read-write 1 MiB volume; vbd 1: read-only, 2^40 sectors (sectors past 2^32 need the high word). */
const grants: ParserGrant[] = [
  { readOnly: false, sectors: 2048 },
  { readOnly: true, sectors: 2 ** 40 },
];
const MEMORY = 64 * 1024;

function parsed(op: number, sector: number, count: number, memOffset = 0, vbd = 0, flags = 0, index = 0) {
  const r = ring();
  writeRequest(r, index, 7, op, sector, count, memOffset, vbd, flags);
  return parse(r, index, grants, MEMORY);
}

/** A READ whose sector words are written as a hostile guest may write them. */
function sectorWords(lo: number, hi: number) {
  const r = ring();
  writeRequest(r, 0, 7, Op.READ, 0, 1, 0, 0, 0);
  r[slotBase(0) + Req.SECTOR_LO] = lo;
  r[slotBase(0) + Req.SECTOR_HI] = hi;
  return parse(r, 0, grants, MEMORY);
}

test('the 64-bit split: low and high words join back to the value, for every size a volume can have', (t) => {
  for (const v of [0, 1, 0xffffffff, 2 ** 32, 2 ** 32 + 5, 2 ** 40 - 1, 2 ** 52 + 3, Number.MAX_SAFE_INTEGER]) {
    t.is(join64(low32(v), high32(v)), v, String(v));
  }
  t.is(join64(-1, 0), 0xffffffff, 'a low word stored as a negative int32 reads back unsigned');
});

test('slot arithmetic: free-running indices wrap onto RING_SLOTS slots, requests and responses share a slot', (t) => {
  const r = ring();
  t.is(slotBase(0), slotBase(RING_SLOTS));
  t.is(slotBase(0xffffffff), slotBase(RING_SLOTS - 1), 'the u32 index just before wrap-around is the last slot');
  writeRequest(r, 0xffffffff, 3, Op.READ, 2 ** 33 + 9, 8, 4096, 2, REQ_FUA);
  t.deepEqual(readRequest(r, RING_SLOTS - 1), { id: 3, op: Op.READ, sector: 2 ** 33 + 9, count: 8, memOffset: 4096, vbd: 2, flags: REQ_FUA });
  t.is(r[slotBase(RING_SLOTS - 1) + Req.SECTOR_HI], 2);
  writeResponse(r, RING_SLOTS - 1, 3, Status.OK, 0xfffffff0, 1, 0);
  t.deepEqual(readResponse(r, 0xffffffff, { id: 0, status: 0, valueLo: 0, valueHi: 0, infoFlags: 0 }), {
    id: 3, status: Status.OK, valueLo: 0xfffffff0, valueHi: 1, infoFlags: 0,
  });
});

test('well-formed descriptors parse into typed requests', (t) => {
  t.deepEqual(parsed(Op.READ, 2040, 8, MEMORY - 4096), { kind: 'transfer', id: 7, vbd: 0, op: Op.READ, sector: 2040, count: 8, memOffset: MEMORY - 4096, fua: false, barrier: false });
  t.deepEqual(parsed(Op.WRITE, 0, 1, 0, 0, REQ_FUA), { kind: 'transfer', id: 7, vbd: 0, op: Op.WRITE, sector: 0, count: 1, memOffset: 0, fua: true, barrier: false });
  t.like(parsed(Op.WRITE, 0, 1, 0, 0, REQ_BARRIER), { op: Op.WRITE, fua: false, barrier: true });
  t.like(parsed(Op.READ, 0, 1, 0, 0, REQ_BARRIER), { op: Op.READ, barrier: false }, 'a barrier orders writes only');
  t.deepEqual(parsed(Op.READ, 2 ** 40 - 8, 8, 0, 1), { kind: 'transfer', id: 7, vbd: 1, op: Op.READ, sector: 2 ** 40 - 8, count: 8, memOffset: 0, fua: false, barrier: false });
  t.deepEqual(parsed(Op.FLUSH, 0, 0, 0, 1), { kind: 'flush', id: 7, vbd: 1 });
  t.deepEqual(parsed(Op.DISCARD, 8, 2040), { kind: 'discard', id: 7, vbd: 0, sector: 8, count: 2040 });
  t.deepEqual(parsed(Op.VOLINFO, 0, 0, 0, 1), { kind: 'volinfo', id: 7, vbd: 1 });
  t.deepEqual(parsed(Op.LOCK, LOCK_NAME_LIMIT - 1, LOCK_EXCLUSIVE, 0, 0, REQ_TRY), { kind: 'lock', id: 7, vbd: 0, name: LOCK_NAME_LIMIT - 1, mode: 'exclusive', try: true, join: false, readInto: null, hint: false });
  t.deepEqual(parsed(Op.LOCK, 5, LOCK_SHARED, 0, 1), { kind: 'lock', id: 7, vbd: 1, name: 5, mode: 'shared', try: false, join: false, readInto: null, hint: false });
  t.deepEqual(parsed(Op.LOCK, 5, LOCK_SHARED, 0, 1, REQ_JOIN), { kind: 'lock', id: 7, vbd: 1, name: 5, mode: 'shared', try: false, join: true, readInto: null, hint: false });
  t.deepEqual(parsed(Op.LOCK, 255, LOCK_SHARED, MEMORY - 4096, 0, REQ_READ_BLOCK), { kind: 'lock', id: 7, vbd: 0, name: 255, mode: 'shared', try: false, join: false, readInto: MEMORY - 4096, hint: false }, 'the last block of the volume, into the last page');
  t.like(parsed(Op.LOCK, 5, LOCK_SHARED, 0, 1, REQ_READ_BLOCK), { kind: 'lock', readInto: 0, hint: false }, 'a read-only grant may read with its shared grant');
  t.like(parsed(Op.LOCK, 5, LOCK_SHARED, MEMORY - 8192, 0, REQ_READ_BLOCK | REQ_READ_HINT), { kind: 'lock', readInto: MEMORY - 8192, hint: true });
  t.like(parsed(Op.LOCK, 5, LOCK_SHARED, 0, 0, REQ_READ_HINT), { kind: 'lock', readInto: null, hint: false }, 'a hint without REQ_READ_BLOCK reads nothing');
  t.like(parsed(Op.LOCK, 5, LOCK_EXCLUSIVE, 0, 0, REQ_JOIN), { mode: 'exclusive', join: false }, 'join is for shared requests only');
  t.deepEqual(parsed(Op.UNLOCK, 5, 0, 0, 0, REQ_DIRTY), { kind: 'unlock', id: 7, vbd: 0, name: 5, released: undefined, dirty: true, downgrade: false });
  t.deepEqual(parsed(Op.UNLOCK, 5, LOCK_EXCLUSIVE, 0, 0, REQ_DOWNGRADE), { kind: 'unlock', id: 7, vbd: 0, name: 5, released: 'exclusive', dirty: false, downgrade: true });
});

test('malformed descriptors parse into the status that refuses them', (t) => {
  const cases: [string, ReturnType<typeof parsed>, number][] = [
    ['unknown vbd (checked before the op)', parsed(99, 0, 1, 0, 2), Status.ENODEV],
    ['unknown op', parsed(99, 0, 1), Status.EOPNOTSUPP],
    ['zero count', parsed(Op.READ, 0, 0), Status.EINVAL],
    ['count over the limit', parsed(Op.READ, 0, MAX_SECTORS_PER_REQUEST + 1), Status.EINVAL],
    ['count of 2^32 - 1', parsed(Op.WRITE, 0, -1), Status.EINVAL],
    ['crossing the end', parsed(Op.READ, 2047, 2), Status.ERANGE],
    ['high word set', parsed(Op.READ, 2 ** 32, 1), Status.ERANGE],
    ['sector 2^64 - 1 (both words all ones)', sectorWords(-1, -1), Status.ERANGE],
    ['buffer past the memory', parsed(Op.READ, 0, 8, MEMORY - 2048), Status.EFAULT],
    ['buffer offset near 4 GiB', parsed(Op.READ, 0, 8, -4096), Status.EFAULT],
    ['write on a read-only grant', parsed(Op.WRITE, 0, 1, 0, 1), Status.EROFS],
    ['barrier write on a read-only grant', parsed(Op.WRITE, 0, 1, 0, 1, REQ_BARRIER), Status.EROFS],
    ['range checked before the grant', parsed(Op.WRITE, 2 ** 40, 1, 0, 1), Status.ERANGE],
    ['discard of nothing', parsed(Op.DISCARD, 0, 0), Status.EINVAL],
    ['discard crossing the end', parsed(Op.DISCARD, 2000, 49), Status.ERANGE],
    ['discard on a read-only grant', parsed(Op.DISCARD, 0, 8, 0, 1), Status.EROFS],
    ['lock mode 0', parsed(Op.LOCK, 5, 0), Status.EINVAL],
    ['lock mode 3', parsed(Op.LOCK, 5, 3), Status.EINVAL],
    ['lock name at 2^32', parsed(Op.LOCK, LOCK_NAME_LIMIT, LOCK_SHARED), Status.EINVAL],
    ['exclusive lock on a read-only grant', parsed(Op.LOCK, 5, LOCK_EXCLUSIVE, 0, 1), Status.EROFS],
    ['exclusive try on a read-only grant', parsed(Op.LOCK, 5, LOCK_EXCLUSIVE, 0, 1, REQ_TRY), Status.EROFS],
    ['lock block past the volume (REQ_READ_BLOCK)', parsed(Op.LOCK, 256, LOCK_SHARED, 0, 0, REQ_READ_BLOCK), Status.ERANGE],
    ['lock block of a name past 2^31 (REQ_READ_BLOCK)', parsed(Op.LOCK, LOCK_NAME_LIMIT - 1, LOCK_SHARED, 0, 0, REQ_READ_BLOCK), Status.ERANGE],
    ['lock block buffer past the memory (REQ_READ_BLOCK)', parsed(Op.LOCK, 5, LOCK_SHARED, MEMORY - 2048, 0, REQ_READ_BLOCK), Status.EFAULT],
    ['lock block and hint buffer past the memory (REQ_READ_HINT: two blocks)', parsed(Op.LOCK, 5, LOCK_SHARED, MEMORY - 4096, 0, REQ_READ_BLOCK | REQ_READ_HINT), Status.EFAULT],
    ['unlock mode 3', parsed(Op.UNLOCK, 5, 3), Status.EINVAL],
    ['unlock name at 2^32', parsed(Op.UNLOCK, LOCK_NAME_LIMIT, 0), Status.EINVAL],
  ];
  for (const [what, got, status] of cases) t.deepEqual(got, { kind: 'refused', id: 7, status }, what);
});

test('a volume error report: one sector of reason inside the domain\'s memory, on any grant', (t) => {
  t.deepEqual(parsed(Op.VOLUME_ERROR, 0, 1, 4096), { kind: 'volume-error', id: 7, vbd: 0, count: 1, memOffset: 4096 });
  t.deepEqual(parsed(Op.VOLUME_ERROR, 0, 1, 512, 1), { kind: 'volume-error', id: 7, vbd: 1, count: 1, memOffset: 512 }, 'a read-only grant may report (the monitor only logs it)');
  for (const count of [0, 2, 0xffffffff]) t.deepEqual(parsed(Op.VOLUME_ERROR, 0, count), { kind: 'refused', id: 7, status: Status.EINVAL }, `count ${count}`);
  t.deepEqual(parsed(Op.VOLUME_ERROR, 0, 1, MEMORY - 511), { kind: 'refused', id: 7, status: Status.EFAULT });
  t.deepEqual(parsed(Op.VOLUME_ERROR, 0, 1, 0, 5), { kind: 'refused', id: 7, status: Status.ENODEV });
});
