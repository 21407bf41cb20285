import test from 'ava';
import { hvshare } from './helpers/cli.js';

// The benchmarks are measured by people, not judged here: these runs only check that every case runs and
// reports the figures the closing notes quote (no timing is asserted).

test('bench block --json covers every case with both native baselines and the hypervisor path', async (t) => {
  const r = await hvshare('bench', 'block', '--json', '--duration', '20', '--image-size', '64M');
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as {
    cases: { pattern: string; op: string; blockSize: number; queueDepth: number; domains: number; overheadPct: number; nativeSync: { mibPerSec: number }; nativeAsync: { mibPerSec: number }; hypervisor: { mibPerSec: number } }[];
    targets: { target: string; met: boolean }[];
    roundTrip: { hypercallMicros: number; asyncCallMicros: number };
  };
  t.is(out.cases.length, 2 * 2 * 2 * 3 * 2); // domains x pattern x op x block size x queue depth
  const keys = new Set(out.cases.map((c) => `${c.pattern} ${c.op} ${c.blockSize} ${c.queueDepth} ${c.domains}`));
  t.is(keys.size, out.cases.length, 'no case twice');
  for (const c of out.cases) {
    t.true(c.nativeSync.mibPerSec > 0 && c.nativeAsync.mibPerSec > 0 && c.hypervisor.mibPerSec > 0, JSON.stringify(c));
    t.true(Number.isFinite(c.overheadPct));
  }
  t.deepEqual(out.targets.map((x) => x.target), ['seq read >= 64K', 'seq write >= 64K', '4K qd32']);
  for (const us of [out.roundTrip.hypercallMicros, out.roundTrip.asyncCallMicros]) t.true(Number.isFinite(us) && us > 0, `${us}`);
});

test('bench block --only runs the named cases, --repetitions reports medians, an unknown name is refused', async (t) => {
  const r = await hvshare('bench', 'block', '--json', '--duration', '20', '--image-size', '64M', '--only', 'seq write', '1M', 'x2', '--repetitions', '2');
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { repetitions: number; cases: { queueDepth: number }[]; targets: { target: string; worstPct: number | null; met: boolean | null }[] };
  t.is(out.repetitions, 2);
  t.deepEqual(out.cases.map((c) => c.queueDepth), [1, 32]);
  t.like(out.targets[0], { target: 'seq read >= 64K', worstPct: null, met: null });
  t.is(typeof out.targets[1].worstPct, 'number');
  const bad = await hvshare('bench', 'block', '--only', 'seq', 'sideways');
  t.is(bad.code, 2);
  t.regex(bad.stderr, /no case is named with all of: seq sideways/);
});

test('bench file and bench fuse --json report every phase', async (t) => {
  const file = await hvshare('bench', 'file', '--json', '--size', '4M', '--repetitions', '1', '--rounds', '5');
  t.is(file.code, 0, file.stderr);
  const f = JSON.parse(file.stdout) as { cases: { nativeMiBps: number; hypervisorMiBps: number }[]; latency: { crossDomain: { medianUs: number } } };
  t.is(f.cases.length, 4);
  t.true(f.cases.every((c) => c.nativeMiBps > 0 && c.hypervisorMiBps > 0));
  t.true(f.latency.crossDomain.medianUs > 0);
  const fuse = await hvshare('bench', 'fuse', '--json', '--file-size', '4M', '--files', '20', '--repetitions', '1');
  t.is(fuse.code, 0, fuse.stderr);
  const u = JSON.parse(fuse.stdout) as { phases: { native: number; mounted: number; ratio: number }[] };
  t.is(u.phases.length, 6);
  t.true(u.phases.every((p) => p.native > 0 && p.mounted > 0 && p.ratio > 0));
});
