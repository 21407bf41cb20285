#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { registerBench } from './bench.js';
import { CliError } from './cli-support.js';

const program = new Command()
  .name('hvshare')
  .description(
    'Inter-domain data sharing without a network: guest domains reach one shared volume through hypercalls to a\n' +
      'virtual machine monitor, each through its own journaling filesystem; FUSE shows any domain\'s view on the host.',
  )
  .showHelpAfterError()
  .exitOverride();

registerBench(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`hvshare: ${message}\n`);
  process.exit(err instanceof CliError ? err.exitCode : 1);
}
