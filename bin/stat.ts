import { Command } from 'commander';
import { COUNTER_NAMES, readPlatformState } from '../hypervisor/platform-store.js';
import { DEFAULT_STATE_DIR, table } from './cli-support.js';

export function registerStat(program: Command): void {
  program
    .command('stat')
    .description('per-domain counters: requests, reads, writes, merged requests, requests offloaded to I/O threads, flushes, errors, vIRQs, lock revocations, bytes')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .option('--json', 'print the counters as JSON')
    .addHelpText(
      'after',
      '\nCounters add up across runs of the platform; a running platform flushes them about once a second.\n\nExamples:\n  $ hvshare stat\n  $ hvshare stat --json | jq .counters.dom1.bytesWritten',
    )
    .action(async (opts: { state: string; json?: boolean }) => {
      const view = await readPlatformState(opts.state, { tail: 0 });
      if (opts.json) {
        console.log(JSON.stringify({ live: view.live, counters: view.counters }, null, 2));
        return;
      }
      const names = Object.keys(view.counters).sort();
      console.log(
        table(
          ['counter', ...names],
          COUNTER_NAMES.map((c) => [c, ...names.map((n) => String(view.counters[n][c]))]),
        ),
      );
    });
}
