import { Command } from 'commander';
import { COUNTER_NAMES, readPlatformState } from '../hypervisor/platform-store.js';
import type { ThreadUse } from '../hypervisor/thread-cpu.js';
import { DEFAULT_STATE_DIR, table } from './cli-support.js';

export function registerStat(program: Command): void {
  program
    .command('stat')
    .description('per-domain counters: requests, reads, writes, merged requests, requests offloaded to I/O threads, flushes, errors, vIRQs, lock revocations, bytes; and CPU seconds per domain, for the monitor, its I/O threads and the host\'s main thread')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .option('--json', 'print the counters as JSON')
    .addHelpText(
      'after',
      '\nCounters add up across runs of the platform; a running platform flushes them about once a second. CPU seconds\n' +
        '(user + system, from /proc, 10 ms steps), and the time each polling thread spent polling for work and asleep\n' +
        'waiting for it, count since the platform booted (a restarted domain\'s included) and are shown while it runs.\n\nExamples:\n  $ hvshare stat\n  $ hvshare stat --json | jq .counters.dom1.bytesWritten\n  $ hvshare stat --json | jq .cpu.monitor.poll',
    )
    .action(async (opts: { state: string; json?: boolean }) => {
      const view = await readPlatformState(opts.state, { tail: 0 });
      if (opts.json) {
        console.log(JSON.stringify({ live: view.live, counters: view.counters, ...(view.cpu ? { cpu: view.cpu } : {}) }, null, 2));
        return;
      }
      const names = Object.keys(view.counters).sort();
      const cpu = view.cpu;
      const seconds = (s: number | undefined) => (s === undefined ? '-' : s.toFixed(2));
      const uses = (what: string, key: keyof ThreadUse) => [what, ...names.map((n) => seconds(cpu?.domains[n]?.[key]))];
      console.log(
        table(
          ['counter', ...names],
          [
            ...COUNTER_NAMES.map((c) => [c, ...names.map((n) => String(view.counters[n][c]))]),
            ...(cpu ? [uses('cpuSeconds', 'cpu'), uses('pollSeconds', 'poll'), uses('sleepSeconds', 'sleep')] : []),
          ],
        ),
      );
      const use = (u: ThreadUse) => `CPU ${seconds(u.cpu)} s (polling ${seconds(u.poll)} s, asleep ${seconds(u.sleep)} s)`;
      console.log(
        cpu
          ? `since boot: monitor ${use(cpu.monitor)}; its I/O threads ${use(cpu.io)}; main thread (FUSE, toolstack) CPU ${seconds(cpu.main)} s`
          : 'CPU, polling and sleeping time: shown while the platform runs',
      );
    });
}
