#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { registerBench } from './bench.js';
import { CliError } from './cli-support.js';
import { registerCat } from './cat.js';
import { registerCheck } from './check.js';
import { registerCp } from './cp.js';
import { registerDiff } from './diff.js';
import { registerFsck } from './fsck.js';
import { registerLs } from './ls.js';
import { registerLocks } from './locks.js';
import { registerLog } from './log.js';
import { registerMkfs } from './mkfs.js';
import { registerPs } from './ps.js';
import { registerStat } from './stat.js';
import { registerTrace } from './trace.js';
import { registerUp } from './up.js';

const program = new Command()
  .name('hvshare')
  .description(
    'Inter-domain data sharing without a network: guest domains reach one shared volume through hypercalls to a ' +
      'virtual machine monitor, each through its own journaling filesystem; FUSE shows any domain\'s view on the host.',
  )
  .addHelpText(
    'after',
    `
Examples:
  $ hvshare up                              boot the default platform, mount mnt/dom1 mnt/dom2 mnt/dom3
  $ hvshare ps; hvshare stat; hvshare log   inspect it from another shell
  $ hvshare ls dom2:/ -lR                   list, read and copy through a domain, no mount needed
  $ hvshare cp notes.txt dom1:/ && hvshare cat dom3:/notes.txt
  $ hvshare diff dom1 dom3                  compare two domains' views (exit 1 when they differ)
  $ hvshare check                           write, fsync, read back through every other domain, rename, unlink
  $ hvshare locks --watch                   the cluster locks: holders, waiters, hold times, revocations
  $ hvshare trace --domain dom2 --ops read  each block request's path, stage by stage, with a summary
  $ hvshare mkfs vol.img --size 256M        make a volume image
  $ hvshare fsck state/shared.img           check it (exit 1 on any violation)
  $ hvshare bench block                     hypervisor path vs native I/O`,
  )
  .showHelpAfterError()
  .exitOverride();

registerUp(program);
registerPs(program);
registerStat(program);
registerLog(program);
registerLs(program);
registerCat(program);
registerCp(program);
registerDiff(program);
registerCheck(program);
registerLocks(program);
registerTrace(program);
registerMkfs(program);
registerFsck(program);
registerBench(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`hvshare: ${message}\n`);
  process.exit(err instanceof CliError ? err.exitCode : 1);
}
