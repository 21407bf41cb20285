import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { exited, HVSHARE, hvshare, sh, testPlatform } from './helpers/cli.js';
import { STAGE_NAMES } from '../hypervisor/trace-abi.js';
import type { CallRecord, TraceRecord } from '../hypervisor/control-protocol.js';
import { CALL_HOPS, type TraceSummary } from '../bin/trace-summary.js';

/**
 * `hvshare trace` against one running platform (`hvshare up`, default platform), from other processes through its
 * control socket, while real tools read through the mounted views. The platform runs with a monitor that sleeps
 * as soon as its rings are empty and guests that sleep instead of polling for a completion
 * (HVSHARE_MONITOR_SPIN=0, HVSHARE_GUEST_WAKE_UP_US=0): a lone request then takes the whole path, doorbell and
 * virtual interrupt included, which is what the test wants to see stamped.
 */
const platform = testPlatform('hvshare-trace-', { HVSHARE_MONITOR_SPIN: '0', HVSHARE_GUEST_WAKE_UP_US: '0' });
test.before(() => platform.start());
test.after.always(() => platform.stop());

type RequestLine = TraceRecord & { type: 'request' };
type CallLine = CallRecord & { type: 'call' };
type SummaryLine = TraceSummary & { type: 'summary' };
/** The lines of `hvshare trace --json`. */
type TraceLine = { type: 'start'; domains: string[]; ops: string[] } | RequestLine | CallLine | SummaryLine;

const cli = platform.cli;

/** `hvshare trace ... --json` running in the background: its lines as they come, resolved once it started. */
async function startTrace(...args: string[]): Promise<{ child: ChildProcess; lines: TraceLine[]; stderr: () => string }> {
  const child = spawn('node', [HVSHARE, 'trace', '--state', platform.state, '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: TraceLine[] = [];
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const message = JSON.parse(line) as TraceLine;
      lines.push(message);
      if (message.type === 'start') resolve();
    });
    child.once('exit', (code) => reject(new Error(`hvshare trace exited with ${code} before it started: ${stderr}`)));
  });
  return { child, lines, stderr: () => stderr };
}


test.serial('a 4 KiB read through a view: the request shows all nine stages, in order, and the summary each stage', async (t) => {
  // Written through dom1, so dom2 has none of it cached: its reads go down to the block device. Larger than what
  // an open reads whole (fs/file-io.ts, OPEN_AHEAD), so the 4 KiB is read for the read call itself.
  const files = [1, 2, 3, 4].map((n) => `${platform.mnt}/dom1/traced-${n}`);
  const write = await sh(files.map((f) => `head -c 262144 /dev/urandom > '${f}'`).join(' && '));
  t.is(write.code, 0, write.stderr);

  const trace = await startTrace('--domain', 'dom2', '--ops', 'read');
  t.like(trace.lines[0], { type: 'start', domains: ['dom2'], ops: ['read'] });
  for (let n = 1; n <= files.length; n++) {
    const dd = await sh(`dd if='${platform.mnt}/dom2/traced-${n}' of=/dev/null bs=4096 count=1 iflag=direct`);
    t.is(dd.code, 0, dd.stderr);
  }
  trace.child.kill('SIGINT');
  t.is(await exited(trace.child), 0, trace.stderr());

  const requests = trace.lines.filter((l): l is RequestLine => l.type === 'request');
  t.true(requests.length >= files.length, `requests traced: ${requests.length}`);
  for (const r of requests) {
    t.like(r, { domain: 'dom2', op: 'read', status: 0 });
    t.is(r.stamps.length, STAGE_NAMES.length);
    const present = r.stamps.filter((s): s is number => s !== null);
    t.deepEqual(present, [...present].sort((a, b) => a - b), `stages out of order: ${JSON.stringify(r)}`);
  }
  // The data block of each file, read for the view's read call (its inode block is read for the lookup before).
  const dataReads = requests.filter((r) => r.caller === 'read' && r.count === 8);
  t.true(dataReads.length >= 1, JSON.stringify(requests, null, 1));
  const whole = dataReads.filter((r) => r.stamps.every((s) => s !== null));
  t.true(whole.length >= 1, `no 4 KiB read went through all nine stages: ${JSON.stringify(dataReads, null, 1)}`);
  t.true(whole.every((r) => r.pid > 0));

  const summary = trace.lines.at(-1) as SummaryLine;
  t.is(summary.type, 'summary');
  t.is(summary.requests, requests.length);
  t.deepEqual(summary.stages.map((s) => s.stage), [...STAGE_NAMES]);
  for (const s of summary.stages.slice(1)) {
    t.true(s.requests >= whole.length, s.stage);
    t.true(s.p50Us !== null && s.p99Us !== null && s.p50Us >= 0 && s.p99Us >= s.p50Us, JSON.stringify(s));
  }
  t.true(summary.total.p50Us !== null && summary.total.p50Us > 0);
});

test.serial('calls into a domain: a cat through a view shows its open, read and release calls, each hop timed, with the block reads they made', async (t) => {
  const write = await sh(`head -c 200000 /dev/urandom > '${platform.mnt}/dom1/traced-call'`);
  t.is(write.code, 0, write.stderr);
  const trace = await startTrace('--domain', 'dom2', '--ops', 'call,read');
  const cat = await sh(`cat '${platform.mnt}/dom2/traced-call' > /dev/null`);
  t.is(cat.code, 0, cat.stderr);
  trace.child.kill('SIGINT');
  t.is(await exited(trace.child), 0, trace.stderr());

  const calls = trace.lines.filter((l): l is CallLine => l.type === 'call');
  t.true(calls.every((c) => c.domain === 'dom2'));
  for (const c of calls) t.true(c.sent <= c.began && c.began <= c.ended && c.ended <= c.answered, `hops out of order: ${JSON.stringify(c)}`);
  const open = calls.find((c) => c.call === 'open');
  t.like(open, { detail: '/traced-call', result: 'OK' }, JSON.stringify(calls, null, 1));
  t.true(calls.some((c) => c.call === 'release'), 'the close');
  const reads = calls.filter((c) => c.call === 'read');
  t.true(reads.length >= 1 && reads.every((c) => /^fh \d+ at \d+, \d+ bytes$/.test(c.detail) && c.result === 'OK'), JSON.stringify(reads, null, 1));
  // The data came from the block device (dom1 wrote it): block reads traced for those calls, inside their spans.
  const requests = trace.lines.filter((l): l is RequestLine => l.type === 'request');
  const inSomeCall = (r: RequestLine) => calls.some((c) => c.began <= r.stamps[0]! && r.stamps[0]! <= c.ended);
  t.true(requests.some((r) => r.stamps[0] !== null && inSomeCall(r)), JSON.stringify({ calls, requests }, null, 1));

  const summary = trace.lines.at(-1) as SummaryLine;
  t.is(summary.calls.calls, calls.length);
  t.deepEqual(summary.calls.hops.map((h) => h.hop), [...CALL_HOPS]);
  for (const h of summary.calls.hops) t.true(h.p50Us !== null && h.p50Us >= 0 && h.p99Us! >= h.p50Us, JSON.stringify(h));
});

test.serial('text output: a header with the nine stages, one line per request, a summary table', async (t) => {
  const child = spawn('node', [HVSHARE, 'trace', '--state', platform.state, '--ops', 'read,write,flush,lock'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  // The header comes once tracing is on.
  await new Promise<void>((resolve) =>
    child.stdout!.on('data', (d) => {
      stdout += d;
      if (stdout.includes('\n')) resolve();
    }),
  );
  const io = await sh(`head -c 65536 /dev/urandom > '${platform.mnt}/dom1/traced-text' && sync '${platform.mnt}/dom1/traced-text' && cat '${platform.mnt}/dom2/traced-text' > /dev/null`);
  t.is(io.code, 0, io.stderr);
  child.kill('SIGINT');
  t.is(await exited(child), 0);
  const lines = stdout.split('\n');
  t.regex(lines[0], new RegExp(`^time +domain +pid +caller +op +sector +count +status +${STAGE_NAMES.join(' +')}$`));
  t.true(lines.some((l) => /^\d\d:\d\d:\d\d\.\d{6} dom1 .* write /.test(l)), stdout);
  t.true(lines.some((l) => /^\d\d:\d\d:\d\d\.\d{6} dom2 .* lock /.test(l)), stdout);
  t.regex(stdout, /\n\d+ request\(s\) traced/);
  t.regex(stdout, /stage +requests +p50 µs +p99 µs\nsyscall /);
});

test.serial('one trace at a time; a trace killed with SIGKILL does not keep the platform tracing', async (t) => {
  const first = await startTrace();
  const second = await cli('trace', '--duration', '0.2');
  t.is(second.code, 2);
  t.regex(second.stderr, /another hvshare trace is running on this platform: one trace at a time/);
  first.child.kill('SIGKILL');
  await exited(first.child);
  // The control socket noticed the disconnection and stopped that trace: a new one may start.
  const third = await cli('trace', '--duration', '0.2', '--json');
  t.is(third.code, 0, third.stderr);
  t.like(JSON.parse(third.stdout.trim().split('\n').at(-1)!), { type: 'summary' });
});

test('bad input: an unknown domain, bad --ops and --duration, the platform down: a message and exit 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--domain', 'nosuch'], /^hvshare: --domain: no domain "nosuch" \(the platform runs dom1, dom2, dom3\)$/m],
    [['--ops', 'read,bogus'], /^hvshare: --ops: unknown operation "bogus" in "read,bogus" \(one or more of read,write,flush,lock,call\)$/m],
    [['--ops', ''], /^hvshare: --ops: an empty name in ""/m],
    [['--duration', '0'], /^hvshare: --duration takes seconds \(a number above 0\), not "0"$/m],
    [['--duration', 'soon'], /^hvshare: --duration takes seconds \(a number above 0\), not "soon"$/m],
    [['--domain', 'dom1,'], /^hvshare: --domain: an empty domain name in "dom1,"$/m],
  ];
  for (const [args, message] of cases) {
    const r = await cli('trace', ...args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
  }
  const down = await hvshare('trace', '--state', join(platform.dir, 'no-platform'));
  t.is(down.code, 2);
  t.regex(down.stderr, /the platform is not running: nothing listens on .*control\.sock/);
});
