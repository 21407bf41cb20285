import { Command } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DescribedLock } from '../hypervisor/control-protocol.js';
import { CliError, DEFAULT_STATE_DIR, table } from './cli-support.js';
import { EXIT_ERROR, withPlatform, type PlatformClient, usageErrorsExit2 } from './platform-client.js';

interface LocksOptions {
  state: string;
  domain?: string;
  watch?: boolean;
  interval: number;
  json?: boolean;
}

const mode = (m: 'shared' | 'exclusive') => (m === 'exclusive' ? 'EX' : 'SH');
const seconds = (ms: number) => (ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : `${Math.round(ms / 1000)}s`);

function render(locks: DescribedLock[]): string {
  if (locks.length === 0) return 'no lock held or waited for';
  return table(
    ['volume', 'lock', 'resource', 'generation', 'holders (mode, held for)', 'waiters', 'revocations'],
    locks.map((l) => [
      l.volume,
      String(l.name),
      l.resource,
      String(l.generation),
      l.holders.map((h) => `${h.domain}:${mode(h.mode)} ${seconds(h.heldMs)}`).join(', ') || '-',
      l.waiters.map((w) => `${w.domain}:${mode(w.mode)}`).join(', ') || '-',
      String(l.revocations),
    ]),
  );
}

/** The state of the locks without the hold times (which change every instant): what --watch reports changes of. */
const shape = (locks: DescribedLock[]) => JSON.stringify(locks.map((l) => ({ ...l, holders: l.holders.map((h) => ({ domain: h.domain, mode: h.mode })) })));

async function snapshot(client: PlatformClient, domain: string | undefined): Promise<DescribedLock[]> {
  const locks = await client.request<'locks'>({ kind: 'locks' });
  if (!domain) return locks;
  return locks.filter((l) => l.holders.some((h) => h.domain === domain) || l.waiters.some((w) => w.domain === domain));
}

export function registerLocks(program: Command): void {
  usageErrorsExit2(program.command('locks'))
    .description('the monitor\'s cluster locks, as GFS2 shows its glocks: per lock its holders and modes, waiters, hold time, revocations so far and generation')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .option('--domain <name>', 'only locks this domain holds or waits for')
    .option('--watch', 'follow changes live: print the table again (a JSON line with --json) whenever holders, waiters, generations or revocations change')
    .option('--interval <ms>', 'how often --watch looks', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 50) throw new CliError(`--interval takes milliseconds, at least 50, not "${v}"`, EXIT_ERROR);
      return n;
    }, 500)
    .option('--json', 'the locks as JSON')
    .addHelpText(
      'after',
      `
A lock is named by the block that stands for its resource (README, "How domains share the volume"); resource says
which: an inode, an allocation group's bitmap, a journal slot, the rename or the mount lock. Modes: SH shared,
EX exclusive. A domain keeps a lock after use until another asks for it (a revocation), so idle domains still
show as holders. The generation grows with every release of a changed lock. Exit status 2 when the platform is
down or the domain unknown.

Examples:
  $ hvshare locks
  $ hvshare locks --domain dom2 --json | jq '.[] | select(.waiters | length > 0)'
  $ hvshare locks --watch`,
    )
    .action(async (opts: LocksOptions) =>
      withPlatform(opts.state, async (client) => {
        if (opts.domain && !(await client.domains()).some((d) => d.name === opts.domain)) {
          throw new CliError(`--domain: unknown domain "${opts.domain}"`, EXIT_ERROR);
        }
        let last = '';
        for (;;) {
          const locks = await snapshot(client, opts.domain);
          if (shape(locks) !== last) {
            last = shape(locks);
            if (opts.json) console.log(opts.watch ? JSON.stringify({ time: new Date().toISOString(), locks }) : JSON.stringify(locks, null, 2));
            else {
              if (opts.watch) console.log(process.stdout.isTTY ? '\x1b[H\x1b[2J' + new Date().toISOString() : `--- ${new Date().toISOString()}`);
              console.log(render(locks));
            }
          }
          if (!opts.watch) return;
          await sleep(opts.interval);
        }
      }),
    );
}
