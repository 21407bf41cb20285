import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { hvshare } from './helpers/cli.js';
import { tempDir } from './helpers/platform.js';

/** The marks of a --report picture: bars (series, label, value), reference lines and curves, from their data attributes. */
async function marksOf(path: string) {
  const svg = await readFile(path, 'utf8');
  const text = (s: string) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&amp;/g, '&');
  const attrs = (tag: string) =>
    [...svg.matchAll(new RegExp(`<${tag} class="[^"]*"([^>]*)>`, 'g'))].map((m) => Object.fromEntries([...m[1]!.matchAll(/data-(\w+)="([^"]*)"/g)].map((a) => [a[1]!, text(a[2]!)])));
  return { svg, bars: attrs('rect'), lines: attrs('line'), curves: attrs('polyline') };
}

// The benchmarks are measured by people, not judged here: these runs only check that every case runs and
// reports the figures the closing notes quote. No rate is asserted, not even "above zero": a 20 ms window on a
// busy machine may see no request complete on one side (a native-async run once measured 0 MiB/s).

/** A rate as the JSON carries it: a finite number, zero allowed. */
const isRate = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x >= 0;

type Side = { mibPerSec: number; iops: number; cpuMsPerGiB: number; cpuSplitMsPerGiB?: Record<string, number> };

test('bench block --json covers every case with both native baselines and the hypervisor path', async (t) => {
  const report = join(await tempDir(t), 'block.svg');
  const r = await hvshare('bench', 'block', '--json', '--duration', '20', '--image-size', '64M', '--report', report);
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as {
    cases: { pattern: string; op: string; blockSize: number; queueDepth: number; domains: number; nativeSync: Side; nativeAsync: Side; hypervisor: Side; overheadPct: number | null; diagnostics: Record<string, number> }[];
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
    t.true([c.nativeSync, c.nativeAsync, c.hypervisor].every((side) => isRate(side.cpuMsPerGiB)), 'CPU per GiB on every side');
    t.deepEqual(Object.keys(c.hypervisor.cpuSplitMsPerGiB ?? {}).sort(), ['guests', 'io', 'main', 'monitor'], 'the hypervisor side by part');
    const d = c.diagnostics;
    // Every case moves data through the rings: at least one request per submitter, each drain serving one or more.
    t.true(d.requests >= c.queueDepth * c.domains && d.requestsPerDrain >= 1 && d.transfers >= 1 && d.transfers <= d.requests, JSON.stringify(d));
    t.true(d.meanTransferKiB >= c.blockSize / 1024, `a transfer is at least one request's size: ${JSON.stringify(d)}`);
  }
  t.deepEqual(out.targets.map((x) => x.target), ['seq read >= 64K', 'seq write >= 64K', '4K qd32']);
  for (const us of [out.roundTrip.hypercallMicros, out.roundTrip.asyncCallMicros]) t.true(Number.isFinite(us) && us > 0, `${us}`);
  const drawn = await marksOf(report);
  t.deepEqual(drawn.bars.filter((b) => b.series === 'overhead').map((b) => Number(b.value)), out.cases.flatMap((c) => (c.overheadPct === null ? [] : [c.overheadPct])), 'the overhead of every case, drawn');
  t.deepEqual(drawn.lines.filter((l) => l.label).map((l) => Number(l.value)), [5, 10, 30], 'the targets as lines');
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

test('bench file --json reports every case; --report draws the same figures and every visibility round', async (t) => {
  const report = join(await tempDir(t), 'file.svg');
  const file = await hvshare('bench', 'file', '--json', '--size', '4M', '--repetitions', '1', '--rounds', '5', '--report', report);
  t.is(file.code, 0, file.stderr);
  const f = JSON.parse(file.stdout) as { cases: { nativeMiBps: number; hypervisorMiBps: number; nativeCpuMsPerGiB: number; hypervisorCpuMsPerGiB: number; hypervisorCpuSplitMsPerGiB: Record<string, number> }[]; latency: { crossDomain: { medianUs: number } } };
  t.is(f.cases.length, 4);
  t.true(f.cases.every((c) => isRate(c.nativeMiBps) && isRate(c.hypervisorMiBps)), JSON.stringify(f.cases));
  t.true(f.cases.every((c) => c.nativeCpuMsPerGiB > 0 && c.hypervisorCpuMsPerGiB > 0), 'writing and reading cost CPU on both sides');
  t.deepEqual(Object.keys(f.cases[0]!.hypervisorCpuSplitMsPerGiB).sort(), ['guests', 'io', 'main', 'monitor']);
  t.true(f.latency.crossDomain.medianUs > 0, 'a handover takes time');
  const drawn = await marksOf(report);
  t.true(drawn.svg.startsWith('<svg'), 'an SVG picture');
  const guest = drawn.bars.filter((b) => b.series === 'guest' && b.value !== undefined);
  t.deepEqual(guest.slice(0, 4).map((b) => Number(b.value)), f.cases.map((c) => c.hypervisorMiBps), 'the throughput bars are the JSON figures');
  t.deepEqual(drawn.curves.map((c) => [c.series, c.count]), [['dom1 -> dom2 (the lock moves)', '5'], ['dom1 alone', '5']], 'one curve point per round');
  const bad = await hvshare('bench', 'file', '--report', join(report, '..', 'file.png'));
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--report .*file\.png: the file must end in \.svg or \.html/);
});

test('bench fuse --json fills every row of every column, and strict mounts are never stale; --report draws the ratios', async (t) => {
  const report = join(await tempDir(t), 'fuse.html');
  const fuse = await hvshare(
    'bench', 'fuse', '--json', '--files', '40', '--big-dir', '60', '--file-size', '1M', '--small-files', '10',
    '--repetitions', '1', '--rounds', '3', '--iops-time', '100', '--auto-ms', '100', '--report', report,
  );
  t.is(fuse.code, 0, fuse.stderr);
  type Row = { group: string; workload: string; unit: string; better: string; values: Record<string, number>; strictRatio: number | null; autoRatio: number | null };
  const u = JSON.parse(fuse.stdout) as { treeEntries: number; columns: Record<string, string>; rows: Row[] };
  const columns = ['native', 'passthroughStrict', 'passthroughAuto', 'viewStrict', 'viewAuto'];
  t.deepEqual(Object.keys(u.columns), columns);
  t.true(u.treeEntries > 40, `${u.treeEntries}`);
  const groups = u.rows.map((r) => r.group);
  for (const [group, count] of [['tree', 8], ['big-dir', 1], ['iops', 2], ['visibility', 6], ['sequential', 4], ['small-files', 4]] as const) {
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
  // Every column's sequential rows say what they cost in CPU: the client's at least, whatever serves the folder.
  t.deepEqual(u.rows.filter((r) => r.workload.startsWith('CPU per MiB')).map((r) => r.unit), ['ms', 'ms']);
  const drawn = await marksOf(report);
  t.regex(drawn.svg, /^<!doctype html>/, 'an .html report is a page around the picture');
  const strict = drawn.bars.filter((b) => b.series === 'strict');
  t.deepEqual(strict.map((b) => Number(b.value)), u.rows.filter((r) => r.strictRatio !== null).map((r) => r.strictRatio), 'one bar per compared row');
  t.deepEqual(drawn.lines.filter((l) => l.label).map((l) => Number(l.value)), [1, 1.5], 'the ceiling and the strict target');
  const bad = await hvshare('bench', 'fuse', '--only', 'tree', 'sideways');
  t.is(bad.code, 2);
  t.regex(bad.stderr, /no row group sideways/);
});
