import test from 'ava';
import type { WorkloadResult } from '../guests/block-workload.js';
import { STAGE_COUNT, TRACE_SLOTS, TraceRing } from '../hypervisor/trace-abi.js';
import { TraceSession } from '../hypervisor/trace-session.js';
import { bootPlatform, MiB, randomImage, tempDir } from './helpers/platform.js';

/**
 * A trace session on a real platform (monitor, I/O threads, a guest kernel on its own thread): every request of
 * a traced kind is either read back or counted lost once the ring wrapped; other kinds, and anything after the
 * stop, leave no record at all.
 */
test('a trace session: reads traced whole or counted lost, writes not, and nothing once stopped', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 8 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'v', path: image.path }] });
  const domain = await platform.createDomain({ name: 'd1', memoryBytes: 16 * MiB, grants: [{ volume: 'v', readOnly: false }] });
  const ring = new TraceRing(domain.pages.trace!);
  const reads = (durationMs: number) =>
    domain.call<WorkloadResult>({
      kind: 'block-workload',
      workload: { pattern: 'seq', op: 'read', blockSize: 4096, queueDepth: 32, regionOffset: 0, regionBytes: 4 * MiB, durationMs, seed: 1 },
    });

  const session = TraceSession.start(platform.traceControl, () => platform.listDomains(), ['d1'], ['read']);
  const { ops } = await reads(500);
  await domain.call({ kind: 'block-write', offset: 0, data: new Uint8Array(4096) });
  const { records, lost } = await session.stop();
  t.log(`${ops} reads: ${records.length} records, ${lost} lost`);
  t.is(records.length + lost, ops);
  t.true(records.length <= TRACE_SLOTS);
  if (ops > TRACE_SLOTS) t.true(lost >= ops - TRACE_SLOTS);
  for (const r of records) {
    t.like(r, { domain: 'd1', op: 'read', count: 8, status: 0, caller: 'block-workload' });
    t.is(r.stamps.length, STAGE_COUNT);
    const present = r.stamps.filter((s): s is number => s !== null);
    t.deepEqual(present, [...present].sort((a, b) => a - b));
  }

  const produced = ring.produced();
  await reads(100);
  t.is(ring.produced(), produced, 'records begun after the stop');
});

/**
 * Agent calls traced (`call`): the toolstack records each call into a chosen domain with the agent's own span,
 * failed ones with their errno; a domain not chosen leaves nothing, nor does a call after the stop.
 */
test('a trace session of agent calls: sent, begun, ended and answered in order, per chosen domain only', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 8 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'v', path: image.path }] });
  const spec = (name: string) => ({ name, memoryBytes: 16 * MiB, grants: [{ volume: 'v', readOnly: true }] });
  const [d1, d2] = [await platform.createDomain(spec('d1')), await platform.createDomain(spec('d2'))];

  const session = TraceSession.start(platform.traceControl, () => platform.listDomains(), ['d1'], ['call']);
  await d1.call({ kind: 'info' });
  await d1.call({ kind: 'block-read', offset: 4096, length: 4096 });
  await t.throwsAsync(d1.call({ kind: 'vfs', op: 'getattr', args: ['/x'] }), { message: /no filesystem|not mounted|ENO/ });
  await d2.call({ kind: 'info' });
  const { records, calls, lost } = await session.stop();
  t.is(lost, 0);
  t.is(records.length, 0, 'block requests were not traced');
  t.deepEqual(
    calls.map((c) => [c.domain, c.call, c.detail, c.result]),
    [
      ['d1', 'info', '', 'OK'],
      ['d1', 'block-read', '', 'OK'],
      ['d1', 'getattr', '/x', calls[2]?.result],
    ],
  );
  t.not(calls[2]?.result, 'OK');
  for (const c of calls) t.true(c.sent <= c.began && c.began <= c.ended && c.ended <= c.answered, JSON.stringify(c));

  await d1.call({ kind: 'info' });
  const next = TraceSession.start(platform.traceControl, () => platform.listDomains(), null, ['call']);
  t.deepEqual((await next.stop()).calls, [], 'nothing from after the first trace stopped');
});
