import test from 'ava';
import { hvshare } from './helpers/cli.js';

// The benchmarks are measured by people, not judged here: these runs only check that every case runs and
// reports the figures the closing notes quote. No rate is asserted, not even "above zero": a 20 ms window on a
// busy machine may see no request complete on one side (a native-async run once measured 0 MiB/s).

/** A rate as the JSON carries it: a finite number, zero allowed. */
const isRate = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x >= 0;

test('bench block --json covers every case with both native baselines and the hypervisor path', async (t) => {
  const r = await hvshare('bench', 'block', '--json', '--duration', '20', '--image-size', '64M');
  t.is(r.code, 0, r.stderr);
  type Side = { mibPerSec: number; iops: number };
  const out = JSON.parse(r.stdout) as {
    cases: { pattern: string; op: string; blockSize: number; queueDepth: number; domains: number; nativeSync: Side; nativeAsync: Side; hypervisor: Side; overheadPct: number | null }[];
    targets: { target: string; met: boolean }[];
    roundTrip: { hypercallMicros: number; asyncCallMicros: number };
  };
  t.is(out.cases.length, 2 * 2 * 2 * 3 * 2); // domains x pattern x op x block size x queue depth
  const keys = new Set(out.cases.map((c) => `${c.pattern} ${c.op} ${c.blockSize} ${c.queueDepth} ${c.domains}`));
  t.is(keys.size, out.cases.length, 'no case twice');
  for (const c of out.cases) {
    t.true([c.nativeSync, c.nativeAsync, c.hypervisor].every((side) => isRate(side.mibPerSec) && isRate(side.iops)), JSON.stringify(c));
    // Against a side that measured 0 the overhead is infinite, which JSON writes as null.
    t.true(c.overheadPct === null || Number.isFinite(c.overheadPct), JSON.stringify(c));
  }
  t.deepEqual(out.targets.map((x) => x.target), ['seq read >= 64K', 'seq write >= 64K', '4K qd32']);
  for (const us of [out.roundTrip.hypercallMicros, out.roundTrip.asyncCallMicros]) t.true(Number.isFinite(us) && us > 0, `${us}`);
});

test('bench block --only runs the named cases, --repetitions reports medians, an unknown name is refused', async (t) => {
  const r = await hvshare('bench', 'block', '--json', '--duration', '20', '--image-size', '64M', '--only', 'seq write', '1M', 'x2', '--repetitions', '2');
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { repetitions: number; cases: { pattern: string; op: string; queueDepth: number }[]; targets: { target: string; worstPct: number | null; met: boolean | null }[] };
  t.is(out.repetitions, 2);
  t.deepEqual(out.cases.map((c) => `${c.pattern} ${c.op} qd${c.queueDepth}`), ['seq write qd1', 'seq write qd32']);
  t.like(out.targets[0], { target: 'seq read >= 64K', worstPct: null, met: null });
  // The write target covers the cases that ran, so it is judged (its figure is null in JSON if a side measured 0).
  t.is(out.targets[1].target, 'seq write >= 64K');
  t.is(typeof out.targets[1].met, 'boolean', JSON.stringify(out.targets[1]));
  const bad = await hvshare('bench', 'block', '--only', 'seq', 'sideways');
  t.is(bad.code, 2);
  t.regex(bad.stderr, /no case is named with all of: seq sideways/);
});

test('bench file --json reports every case', async (t) => {
  const file = await hvshare('bench', 'file', '--json', '--size', '4M', '--repetitions', '1', '--rounds', '5');
  t.is(file.code, 0, file.stderr);
  const f = JSON.parse(file.stdout) as { cases: { nativeMiBps: number; hypervisorMiBps: number }[]; latency: { crossDomain: { medianUs: number } } };
  t.is(f.cases.length, 4);
  t.true(f.cases.every((c) => isRate(c.nativeMiBps) && isRate(c.hypervisorMiBps)), JSON.stringify(f.cases));
  t.true(f.latency.crossDomain.medianUs > 0, 'a handover takes time');
});

test('bench fuse --json fills every row of every column, and strict mounts are never stale', async (t) => {
  const fuse = await hvshare(
    'bench', 'fuse', '--json', '--files', '40', '--big-dir', '60', '--file-size', '1M', '--small-files', '10',
    '--repetitions', '1', '--rounds', '3', '--iops-time', '100', '--auto-ms', '100',
  );
  t.is(fuse.code, 0, fuse.stderr);
  type Row = { group: string; workload: string; better: string; values: Record<string, number>; strictRatio: number | null; autoRatio: number | null };
  const u = JSON.parse(fuse.stdout) as { treeEntries: number; columns: Record<string, string>; rows: Row[] };
  const columns = ['native', 'passthroughStrict', 'passthroughAuto', 'viewStrict', 'viewAuto'];
  t.deepEqual(Object.keys(u.columns), columns);
  t.true(u.treeEntries > 40, `${u.treeEntries}`);
  const groups = u.rows.map((r) => r.group);
  for (const [group, count] of [['tree', 8], ['big-dir', 1], ['iops', 2], ['visibility', 6], ['sequential', 2], ['small-files', 4]] as const) {
    t.is(groups.filter((g) => g === group).length, count, group);
  }
  for (const r of u.rows) {
    const latency = r.group === 'visibility';
    for (const c of columns) {
      const v = r.values[c]!;
      // A change can be seen by a poll already under way: a latency may be 0, and counts start at 0.
      t.true(Number.isFinite(v) && (latency ? v >= 0 : v > 0), `${r.workload} ${c}: ${v}`);
    }
    for (const ratio of [r.strictRatio, r.autoRatio]) t.true(ratio === null ? r.better === 'count' || latency : Number.isFinite(ratio) && ratio > 0, `${r.workload}: ${ratio}`);
    if (r.better === 'count') for (const c of ['native', 'passthroughStrict', 'viewStrict']) t.is(r.values[c], 0, `${r.workload} ${c}`);
  }
  t.is(u.rows.filter((r) => r.better === 'count').length, 2);
  const bad = await hvshare('bench', 'fuse', '--only', 'tree', 'sideways');
  t.is(bad.code, 2);
  t.regex(bad.stderr, /no row group sideways/);
});
