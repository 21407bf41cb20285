import { Command } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CallRecord, TraceBatch, TraceRecord } from '../hypervisor/control-protocol.js';
import { STAGE_NAMES, TRACE_OP_NAMES, TRACE_SLOTS, type TraceOpName } from '../hypervisor/trace-abi.js';
import { statusName } from '../hypervisor/abi.js';
import { CliError, DEFAULT_STATE_DIR, table } from './cli-support.js';
import { EXIT_ERROR, failure, withPlatform, type PlatformClient, usageErrorsExit2 } from './platform-client.js';
import { callHops, stageGaps, TraceTally, type TraceSummary } from './trace-summary.js';

interface TraceOptions {
  state: string;
  domain?: string[];
  ops?: TraceOpName[];
  duration?: number;
  json?: boolean;
}

/** How often the records finished meanwhile are fetched. */
const READ_EVERY_MS = 200;

function parseOps(value: string): TraceOpName[] {
  const ops = value.split(',');
  const bad = ops.find((op) => !(TRACE_OP_NAMES as string[]).includes(op));
  if (bad !== undefined) {
    throw new CliError(`--ops: ${bad === '' ? 'an empty name' : `unknown operation "${bad}"`} in "${value}" (one or more of ${TRACE_OP_NAMES.join(',')})`, EXIT_ERROR);
  }
  return [...new Set(ops as TraceOpName[])];
}

function parseDomains(value: string): string[] {
  const names = value.split(',');
  if (names.some((n) => n === '')) throw new CliError(`--domain: an empty domain name in "${value}"`, EXIT_ERROR);
  return names;
}

function parseDuration(value: string): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0 || value.trim() === '') {
    throw new CliError(`--duration takes seconds (a number above 0), not "${value}"`, EXIT_ERROR);
  }
  return seconds;
}

const us = (x: number | null) => (x === null ? '-' : x < 100 ? x.toFixed(1) : String(Math.round(x)));

/** Wall-clock time of a stamp (microseconds since the epoch), to the microsecond. */
function timeOfDay(stamp: number): string {
  const whole = Math.floor(stamp / 1000);
  return `${new Date(whole).toISOString().slice(11, 19)}.${String(Math.floor(stamp % 1_000_000)).padStart(6, '0')}`;
}

const COLUMNS = ['time', 'domain', 'pid', 'caller', 'op', 'sector', 'count', 'status', ...STAGE_NAMES];
const WIDTHS = [15, 6, 5, 14, 6, 10, 5, 9, ...STAGE_NAMES.map(() => 8)];
const row = (cells: string[]) => cells.map((c, i) => (i < 2 || i === 3 ? c.padEnd(WIDTHS[i]) : c.padStart(WIDTHS[i]))).join(' ');

/** One request: its first stamp's time, then each stage in microseconds after the one before it ('-': did not happen). */
function formatRecord(r: TraceRecord): string {
  const first = r.stamps.find((s): s is number => s !== null) ?? 0;
  const gaps = stageGaps(r.stamps).map((gap, i) => (r.stamps[i] === null ? '-' : gap === null ? '0' : `+${us(gap)}`));
  return row([timeOfDay(first), r.domain, String(r.pid), r.caller, r.op, String(r.sector), String(r.count), r.status === 0 ? 'OK' : statusName(r.status), ...gaps]);
}

/**
 * One agent call: when it was sent, its domain, `call`, the operation and what it was about, then each hop in
 * microseconds (to the domain, in it, back) and the whole, with the answer.
 */
function formatCall(c: CallRecord): string {
  const [to, inside, back] = callHops(c);
  const hops = `to domain +${us(to)}  in domain +${us(inside)}  back +${us(back)}  total ${us(c.answered - c.sent)}`;
  return `${timeOfDay(c.sent).padEnd(WIDTHS[0])} ${c.domain.padEnd(WIDTHS[1])} call  ${`${c.call} ${c.detail}`.padEnd(40)} ${hops}  ${c.result}`;
}

function printSummary(summary: TraceSummary): void {
  const { calls } = summary;
  if (calls.calls > 0) {
    console.log(`\n${calls.calls} agent call(s) traced`);
    console.log(
      table(
        ['hop', 'p50 µs', 'p99 µs'],
        [...calls.hops.map((h) => [h.hop, us(h.p50Us), us(h.p99Us)]), ['sent to answered', us(calls.total.p50Us), us(calls.total.p99Us)]],
      ),
    );
  }
  console.log(`\n${summary.requests} request(s) traced${summary.lost ? `, ${summary.lost} lost (overwritten before they were read)` : ''}`);
  if (summary.requests === 0) return;
  console.log(
    table(
      ['stage', 'requests', 'p50 µs', 'p99 µs'],
      [
        ...summary.stages.map((s) => [s.stage, String(s.requests), us(s.p50Us), us(s.p99Us)]),
        ['first to last', String(summary.total.requests), us(summary.total.p50Us), us(summary.total.p99Us)],
      ],
    ),
  );
}

/** Start tracing, with the errors a user can fix named after the option that caused them. */
async function start(client: PlatformClient, opts: TraceOptions): Promise<{ domains: string[]; ops: TraceOpName[] }> {
  try {
    return await client.request<'trace-start'>({ kind: 'trace-start', domains: opts.domain ?? null, ops: opts.ops ?? TRACE_OP_NAMES });
  } catch (err) {
    const { code, detail } = err as { code?: string; detail?: string };
    if (code === 'ENODOM') throw new CliError(`--domain: ${detail}`, EXIT_ERROR);
    if (code === 'EBUSY') throw new CliError(`${detail}: one trace at a time`, EXIT_ERROR);
    throw failure('trace', err);
  }
}

export function registerTrace(program: Command): void {
  usageErrorsExit2(program.command('trace'))
    .description('a live trace of each block request along its path (the guest process, the operation, sector and count, and when it passed each of nine stages) and of each call into a domain (a view\'s FUSE operation: how long to reach the domain, in it and back); a summary of each stage and hop at the end')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .option('--domain <names>', 'only these domains, comma-separated (default: all)', parseDomains)
    .option('--ops <list>', `operations to trace, comma-separated: ${TRACE_OP_NAMES.join(',')} (lock covers unlock too; default: all)`, parseOps)
    .option('--duration <seconds>', 'stop after this long (default: at Ctrl-C)', parseDuration)
    .option('--json', 'one JSON object per line: {"type":"start"}, one {"type":"request"} per request (stamps: the nine stages in microseconds since the epoch, null for one not gone through), one {"type":"call"} per agent call (sent, began, ended, answered in microseconds since the epoch), then {"type":"summary"}')
    .addHelpText(
      'after',
      `
The stages of one request (README, "Tracing a request"):
  syscall   the guest agent's filesystem call it is issued for began (absent for the kernel's own work)
  posted    blkfront wrote the descriptor into the ring and publishes it (the hypercall)
  doorbell  blkfront rang the monitor's doorbell (only when the monitor was about to sleep)
  picked    the monitor copied the descriptor out of the ring
  backend   the backend finished the transfer (a flush done, a lock granted)
  response  the response was posted in the ring
  virq      the monitor raised the domain's virtual interrupt (only when the guest was about to sleep)
  irq       the guest kernel's interrupt handler reaped it (absent when the idle loop's poll did; one
            interrupt reaps every response posted by then, so irq may follow another request's virq)
  woken     the waiting process was woken
For lock and unlock, sector is the lock's name and count its mode (1 shared, 2 exclusive).

A call (--ops call) is the host asking a domain's guest agent to run something: a view's FUSE operation (getattr,
open, read, write...) or a CLI command's. Its line gives the operation and what it was about (the path, or the
handle, position and length of a read or write), then three hops in microseconds: to domain (from the host's
main thread sending it to the agent's process starting: the message and the domain's wake-up), in domain (the
guest filesystem's work: lock waits and block requests included, traced on their own lines) and back (the
answer to the host's main thread), the total, and the answer (OK or an errno). A view answers many questions
itself (README, "What one view request costs"): those make no call.
Each line gives the time of the first stage, then each stage in microseconds after the stage before it; '-' is a
stage the request did not go through. The summary gives, per stage, the median and 99th percentile of that gap.
Every thread stamps with one clock (the process's time origin plus its monotonic clock). The process is the guest
agent's process and what it was doing (a FUSE view's call, a call of hvshare ls/cat/cp), or "kernel".
Tracing is on only while a trace runs (one at a time); it stops when this command ends or is killed. Records wait
in a bounded ring per domain (4096): a trace that cannot keep up reports the requests it lost.
Exit status 2 when the platform is down, a domain is unknown, or --ops or --duration is bad.

Examples:
  $ hvshare trace --domain dom2 --ops read --duration 5
  $ hvshare trace --ops lock                          # who waits for which cluster lock, and how long
  $ hvshare trace --domain dom2 --ops call,lock,read  # where a view's operations through dom2 spend their time
  $ hvshare trace --duration 10 --json | jq -c 'select(.type == "summary") | .stages'`,
    )
    .action(async (opts: TraceOptions) =>
      withPlatform(opts.state, async (client) => {
        const started = await start(client, opts);
        const tally = new TraceTally();
        const emit = (batch: TraceBatch) => {
          tally.addLost(batch.lost);
          // Requests and calls of one batch, by when each began.
          const lines: [number, string][] = [];
          for (const r of batch.records) {
            tally.add(r);
            lines.push([r.stamps.find((s): s is number => s !== null) ?? 0, opts.json ? JSON.stringify({ type: 'request', ...r }) : formatRecord(r)]);
          }
          for (const c of batch.calls) {
            tally.addCall(c);
            lines.push([c.sent, opts.json ? JSON.stringify({ type: 'call', ...c }) : formatCall(c)]);
          }
          for (const [, line] of lines.sort((a, b) => a[0] - b[0])) console.log(line);
        };
        if (opts.json) console.log(JSON.stringify({ type: 'start', ...started }));
        else {
          process.stderr.write(`tracing ${started.ops.join(',')} of ${started.domains.join(', ')}${opts.duration ? ` for ${opts.duration} s` : ''} (Ctrl-C stops)\n`);
          console.log(row(COLUMNS));
        }
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        const timer = opts.duration ? setTimeout(onSignal, opts.duration * 1000) : undefined;
        try {
          while (!stop.signal.aborted) {
            const batch = await client.request<'trace-read'>({ kind: 'trace-read' });
            emit(batch);
            // Falling behind (records lost, or a big batch): read again at once.
            if (batch.lost === 0 && batch.records.length < TRACE_SLOTS / 4) await sleep(READ_EVERY_MS, undefined, { signal: stop.signal }).catch(() => {});
          }
          emit(await client.request<'trace-stop'>({ kind: 'trace-stop' }));
        } finally {
          clearTimeout(timer);
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
        const summary = tally.summary();
        if (opts.json) console.log(JSON.stringify({ type: 'summary', ...summary }));
        else printSummary(summary);
      }),
    );
}
