import { Command } from 'commander';
import { formatSize, parseSize } from '../hypervisor/platform-config.js';
import { CliError, DEFAULT_STATE_DIR, table } from './cli-support.js';
import { runCheck, type CheckReport } from './consistency-check.js';
import { domainPathOf } from './domain-path.js';
import { EXIT_ERROR, withPlatform, usageErrorsExit2 } from './platform-client.js';

/** Exit status when a reader saw wrong bytes, or missed a change (0: all consistent; EXIT_ERROR: could not run). */
const EXIT_INCONSISTENT = 1;
const MAX_PROBE = 64 << 20;

interface CheckCommandOptions {
  state: string;
  domains?: string[];
  sizes: number[];
  duration: number;
  dir?: string;
  visibleWithin: number;
  json?: boolean;
}

function parseSizes(value: string): number[] {
  return value.split(',').map((s) => {
    let n: number;
    try {
      n = parseSize(s);
    } catch (err) {
      throw new CliError(`--sizes: ${(err as Error).message}`, EXIT_ERROR);
    }
    if (n > MAX_PROBE) throw new CliError(`--sizes: ${s} is larger than the ${formatSize(MAX_PROBE)} a probe may be`, EXIT_ERROR);
    return n;
  });
}

function parseSeconds(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0) throw new CliError(`${name} takes seconds (a number, 0 or more), not "${value}"`, EXIT_ERROR);
    return n;
  };
}

const ms = (x: number) => x.toFixed(2);

function printReport(report: CheckReport): void {
  console.log(
    table(
      ['writer -> reader', 'probes', 'visible median ms', 'p99 ms', 'mismatches', 'errors'],
      report.pairs.map((p) => [
        `${p.writer} -> ${p.reader}`,
        String(p.probes),
        p.latencyMs ? ms(p.latencyMs.median) : '-',
        p.latencyMs ? ms(p.latencyMs.p99) : '-',
        String(p.mismatches),
        String(p.errors),
      ]),
    ),
  );
  for (const p of report.pairs) for (const problem of p.problems) console.log(`${p.writer} -> ${p.reader}: ${problem}`);
}

export function registerCheck(program: Command): void {
  usageErrorsExit2(program.command('check'))
    .description('the consistency check of a running platform: probe files written and fsynced through each read-write domain, read back through every other domain, renamed, unlinked, checked at each step')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .option('--domains <names>', 'the domains taking part, comma-separated (default: all; at least one read-write)', (v: string) => v.split(',').filter(Boolean))
    .option('--sizes <list>', 'probe sizes, comma-separated (K, M suffixes; at most 64M)', parseSizes, parseSizes('0,1,4K,64K,1M,4M'))
    .option('--duration <seconds>', 'repeat rounds until this much time has passed (default: one round)', parseSeconds('--duration'), 0)
    .option('--dir <path>', 'the probe folder made for the run, in the volume (default /.hvshare-check-<pid>)')
    .option('--visible-within <seconds>', 'how long a reader may take to see a change before it counts as an error', parseSeconds('--visible-within'), 5)
    .option('--json', 'the report as JSON')
    .addHelpText(
      'after',
      `
For every read-write domain W and every size: a probe file of random content is written through W and fsynced,
then every other domain R (read-only ones too) must see it whole with the same bytes; it is renamed through W and
R must see the new name (same bytes) and not the old; it is unlinked and R must see it gone. Per pair W -> R the
report gives the time from W's call returning to R seeing the change (median, p99), mismatches (R read the whole
file with other bytes) and errors (a change not seen within --visible-within, or a failed call).
Exit status: 0 consistent, 1 on any mismatch or error, 2 when the check could not run (bad input, an unknown
domain, the platform down). The probe folder is removed at the end, and on Ctrl-C or SIGTERM too.

Examples:
  $ hvshare check
  $ hvshare check --domains dom1,dom3 --sizes 0,4K,4M
  $ hvshare check --duration 60 --json | jq '.pairs[] | {writer, reader, mismatches}'`,
    )
    .action(async (opts: CheckCommandOptions) => {
      const report = await withPlatform(opts.state, async (client) => {
        const running = await client.domains();
        const names = opts.domains ?? running.map((d) => d.name);
        const unknown = names.filter((n) => !running.some((d) => d.name === n));
        if (unknown.length) throw new CliError(`--domains: unknown domain ${unknown.map((n) => `"${n}"`).join(', ')} (the platform runs ${running.map((d) => d.name).join(', ')})`, EXIT_ERROR);
        const domains = running.filter((d) => names.includes(d.name));
        if (!domains.some((d) => !d.readOnly)) throw new CliError('--domains: at least one read-write domain is needed to write the probes', EXIT_ERROR);
        if (domains.length < 2) throw new CliError('--domains: at least two domains are needed (a writer and a reader)', EXIT_ERROR);
        const abort = new AbortController();
        const onSignal = (signal: NodeJS.Signals) => {
          process.stderr.write(`hvshare: ${signal}: stopping after this probe and removing the probe folder\n`);
          abort.abort();
        };
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          const result = await runCheck(client, {
            domains,
            sizes: opts.sizes,
            durationMs: opts.duration * 1000,
            dir: domainPathOf(opts.dir ?? `.hvshare-check-${process.pid}`),
            visibleWithinMs: opts.visibleWithin * 1000,
            signal: abort.signal,
          });
          if (abort.signal.aborted) throw new CliError('interrupted; the probe folder was removed', 130);
          return result;
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      });
      const consistent = report.pairs.every((p) => p.mismatches === 0 && p.errors === 0);
      if (opts.json) console.log(JSON.stringify({ consistent, ...report }, null, 2));
      else {
        printReport(report);
        console.log(`${consistent ? 'consistent' : 'INCONSISTENT'}: ${report.rounds} round(s), sizes ${report.sizes.map(formatSize).join(', ')}`);
      }
      if (!consistent) process.exitCode = EXIT_INCONSISTENT;
    });
}
