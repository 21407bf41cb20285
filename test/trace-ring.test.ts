import test from 'ava';
import { Op } from '../hypervisor/abi.js';
import { createTraceRing, PART_GUEST, PART_MONITOR, Stage, STAGE_COUNT, TRACE_SLOTS, TraceRing } from '../hypervisor/trace-abi.js';

/** The trace ring codec as each side uses it: the guest begins and ends a record, the monitor stamps its part. */

test('a record is read only once both sides finished it, with every field as written and absent stages null', (t) => {
  const buffer = createTraceRing();
  const guest = new TraceRing(buffer);
  const monitor = new TraceRing(buffer);
  const reader = new TraceRing(buffer);
  const sector = 2 ** 33 + 5;
  const seq = guest.begin(7, Op.READ, sector, 8, 42, 'readdirEntries-and-more', 123.5);
  t.is(monitor.recordOf(7), seq);
  t.is(monitor.recordOf(8), 0);
  t.is(reader.read(seq), 'pending');
  monitor.stamp(seq, Stage.PICKED);
  monitor.answered(seq, -5);
  monitor.stamp(seq, Stage.RESPONSE_POSTED);
  monitor.finish(seq, PART_MONITOR);
  t.is(reader.read(seq), 'pending');
  guest.forget(7);
  t.is(monitor.recordOf(7), 0);
  guest.stamp(seq, Stage.WOKEN);
  guest.finish(seq, PART_GUEST);
  const record = reader.read(seq);
  if (typeof record === 'string') return t.fail(record);
  t.like(record, { op: Op.READ, sector, count: 8, pid: 42, caller: 'readdirEntries-a', status: -5 });
  t.is(record.stamps.length, STAGE_COUNT);
  t.is(record.stamps[Stage.ENTERED], 123.5);
  const present = [Stage.POSTED, Stage.PICKED, Stage.BACKEND_DONE, Stage.RESPONSE_POSTED, Stage.WOKEN] as number[];
  record.stamps.forEach((s, i) => {
    if (i === Stage.ENTERED) return;
    if (present.includes(i)) t.true(typeof s === 'number' && s > 1.7e15, `stage ${i}: ${s}`);
    else t.is(s, null, `stage ${i}`);
  });
  const times = present.map((i) => record.stamps[i]!);
  t.deepEqual(times, [...times].sort((a, b) => a - b));
});

test('a slot reused by a newer record: the old one is gone, and a late stamp for it does not land in the new one', (t) => {
  const ring = new TraceRing(createTraceRing());
  const old = ring.begin(1, Op.WRITE, 0, 8, 1, 'write', 0);
  for (let i = 0; i < TRACE_SLOTS - 1; i++) ring.begin(2, Op.READ, i, 8, 1, 'read', 0);
  t.is(ring.produced(), TRACE_SLOTS);
  t.is(ring.read(old), 'pending');
  const newer = ring.begin(3, Op.FLUSH, 0, 0, 1, 'fsync', 0);
  t.is(TraceRing.seqOf(TRACE_SLOTS), newer);
  t.is(ring.read(old), 'gone');
  ring.stamp(old, Stage.VIRQ);
  ring.answered(old, -5);
  ring.finish(old, PART_MONITOR);
  ring.finish(old, PART_GUEST);
  t.is(ring.read(newer), 'pending');
  ring.finish(newer, PART_MONITOR | PART_GUEST);
  const record = ring.read(newer);
  if (typeof record === 'string') return t.fail(record);
  t.like(record, { op: Op.FLUSH, status: 0, caller: 'fsync' });
  t.is(record.stamps[Stage.VIRQ], null);
});

test('a doorbell rung after the monitor picked the request up is left out, never stamped after the pick', (t) => {
  const ring = new TraceRing(createTraceRing());
  const early = ring.begin(1, Op.READ, 0, 8, 1, 'read', 0);
  ring.stampBefore(early, Stage.DOORBELL, Stage.PICKED);
  ring.stamp(early, Stage.PICKED);
  const late = ring.begin(2, Op.READ, 8, 8, 1, 'read', 0);
  ring.stamp(late, Stage.PICKED);
  ring.stampBefore(late, Stage.DOORBELL, Stage.PICKED);
  for (const seq of [early, late]) ring.finish(seq, PART_MONITOR | PART_GUEST);
  const [a, b] = [ring.read(early), ring.read(late)];
  if (typeof a === 'string' || typeof b === 'string') return t.fail(`${String(a)} ${String(b)}`);
  t.true(a.stamps[Stage.DOORBELL]! <= a.stamps[Stage.PICKED]!, 'rung before the pick: stamped');
  t.is(b.stamps[Stage.DOORBELL], null, 'rung after the pick: absent');
  t.true(b.stamps[Stage.PICKED]! > 0);
});
