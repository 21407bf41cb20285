import { Command } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import { EVENT_TYPES, readPlatformState, type EventRecord, type EventType } from '../hypervisor/platform-store.js';
import { CliError, DEFAULT_STATE_DIR, parseIntOption } from './cli-support.js';

function line(e: EventRecord): string {
  return `${String(e.seq).padStart(6)} ${new Date(e.time).toISOString()} ${e.type.padEnd(13)} ${(e.domain ?? '-').padEnd(8)} ${e.detail ?? ''}`;
}

export function registerLog(program: Command): void {
  program
    .command('log')
    .description('the platform\'s event log: boots, shutdowns, crashes, journal recoveries, lock revocations, errors')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .option('--since <seq>', 'only events after this sequence number', (v) => Number(v))
    .option('--tail <n>', 'the last n events', parseIntOption('--tail'), 20)
    .option('--domain <name>', 'only events about this domain')
    .option('--type <type>', `only events of this type (${EVENT_TYPES.join(', ')})`)
    .option('-f, --follow', 'keep printing new events until interrupted')
    .option('--json', 'one JSON object per event and line')
    .addHelpText(
      'after',
      '\nExamples:\n  $ hvshare log\n  $ hvshare log --type crash --tail 100\n  $ hvshare log --since 120 --json\n  $ hvshare log -f',
    )
    .action(async (opts: { state: string; since?: number; tail: number; domain?: string; type?: string; follow?: boolean; json?: boolean }) => {
      if (opts.type && !EVENT_TYPES.includes(opts.type as EventType)) throw new CliError(`unknown event type "${opts.type}" (one of ${EVENT_TYPES.join(', ')})`);
      if (opts.since !== undefined && (!Number.isInteger(opts.since) || opts.since < 0)) throw new CliError('--since takes a sequence number');
      const filter = { domain: opts.domain, type: opts.type as EventType | undefined };
      const print = (e: EventRecord) => console.log(opts.json ? JSON.stringify(e) : line(e));
      const first = await readPlatformState(opts.state, opts.since !== undefined ? { ...filter, since: opts.since } : { ...filter, tail: opts.tail });
      if (!first.eventsComplete) process.stderr.write('hvshare: older events are in the store; they are readable once the platform is down\n');
      first.events.forEach(print);
      let seen = Math.max(first.lastSeq, ...first.events.map((e) => e.seq));
      while (opts.follow) {
        await sleep(1000);
        const next = await readPlatformState(opts.state, { ...filter, since: seen });
        next.events.forEach(print);
        seen = Math.max(seen, next.lastSeq);
      }
    });
}
