import { Command } from 'commander';
import { readPlatformState } from '../hypervisor/platform-store.js';
import { DEFAULT_STATE_DIR, table } from './cli-support.js';

function age(ms: number | undefined): string {
  if (ms === undefined) return '-';
  const s = Math.round((Date.now() - ms) / 1000);
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

export function registerPs(program: Command): void {
  program
    .command('ps')
    .description('list the platform\'s domains: state, memory, grants, boots, uptime')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .option('--json', 'print the domains as JSON')
    .addHelpText('after', '\nReads the running platform (or, when it is down, its store).\n\nExamples:\n  $ hvshare ps\n  $ hvshare ps --state /var/lib/hvshare --json')
    .action(async (opts: { state: string; json?: boolean }) => {
      const view = await readPlatformState(opts.state, { tail: 0 });
      const config = new Map(view.config?.domains.map((d) => [d.name, d]) ?? []);
      const domains = view.domains.map((d) => ({ ...d, memoryMiB: config.get(d.name)?.memory, grants: config.get(d.name)?.grants ?? [] }));
      if (opts.json) {
        console.log(JSON.stringify({ live: view.live, pid: view.pid, domains }, null, 2));
        return;
      }
      console.log(view.live ? `platform running (pid ${view.pid})` : 'platform down (read from its store)');
      console.log(
        table(
          ['domain', 'id', 'state', 'memory', 'grants', 'boots', 'up since', 'reason'],
          domains.map((d) => [
            d.name,
            String(d.id),
            d.state,
            d.memoryMiB === undefined ? '-' : `${d.memoryMiB}M`,
            d.grants.map((g) => `${g.volume}:${g.mode}:slot${g.slot}`).join(',') || '-',
            String(d.boots),
            d.state === 'running' ? age(d.bootedAt) : '-',
            d.reason ?? '',
          ]),
        ),
      );
    });
}
