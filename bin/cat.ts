import { Command } from 'commander';
import { IoError } from '../fs/block-device.js';
import { DEFAULT_STATE_DIR } from './cli-support.js';
import { formatDomainPath, parseDomainPath } from './domain-path.js';
import { failure, withPlatform, usageErrorsExit2 } from './platform-client.js';
import { domainTree } from './tree-source.js';

/** Write to stdout, waiting when it is full (a slow pipe); false once the reader has gone (EPIPE). */
async function toStdout(chunk: Uint8Array): Promise<boolean> {
  return new Promise((resolve) => {
    process.stdout.write(chunk, (err) => resolve(!err));
  });
}

export function registerCat(program: Command): void {
  usageErrorsExit2(program.command('cat'))
    .description('print a file of a domain\'s view, read through the domain\'s own filesystem (no mount needed)')
    .argument('<DOM:PATH>', 'a domain and a file in it')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .addHelpText(
      'after',
      `
Exit status 2 on an error (the platform down, an unknown domain, a missing file, a directory).

Examples:
  $ hvshare cat dom2:/notes.txt
  $ hvshare cat dom3:/images/disk.raw | sha256sum`,
    )
    .action(async (spec: string, opts: { state: string }) =>
      withPlatform(opts.state, async (client) => {
        const where = parseDomainPath(spec, await client.domains());
        const source = domainTree(where.domain, client.vfs(where.domain));
        process.stdout.on('error', () => {});
        try {
          if ((await source.stat(where.path)).type === 'dir') throw new IoError('EISDIR', where.path);
          for await (const chunk of source.chunks(where.path)) if (!(await toStdout(chunk))) return;
        } catch (err) {
          throw failure(formatDomainPath(where), err);
        }
      }),
    );
}
