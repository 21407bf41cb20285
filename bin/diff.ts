import { Command, Option } from 'commander';
import { resolve } from 'node:path';
import { CHECKSUM_KINDS, parseChecksumKind, type ChecksumKind } from './checksum.js';
import { CliError, DEFAULT_STATE_DIR } from './cli-support.js';
import { domainPathOf, parseDomainPath } from './domain-path.js';
import { EXIT_ERROR, failure, withPlatform, type PlatformClient, usageErrorsExit2 } from './platform-client.js';
import { DIFF_FIELDS, diffTrees, type DiffField } from './tree-diff.js';
import { domainTree, hostTree, type TreeSource } from './tree-source.js';

/** Exit status when the two sides differ (0 when they are the same, EXIT_ERROR on an error). */
const EXIT_DIFFER = 1;

interface DiffOptions {
  state: string;
  checksum: ChecksumKind;
  ignore: DiffField[];
  json?: boolean;
}

function parseIgnore(value: string): DiffField[] {
  const fields = value.split(',').filter(Boolean);
  const bad = fields.find((f) => !(DIFF_FIELDS as readonly string[]).includes(f));
  if (bad !== undefined) throw new CliError(`--ignore: unknown field "${bad}" (fields: ${DIFF_FIELDS.join(', ')})`, EXIT_ERROR);
  return fields as DiffField[];
}

/** The second operand: a domain of the platform, else a host folder. */
async function secondSide(client: PlatformClient, spec: string, path: string): Promise<{ source: TreeSource; path: string; where: string }> {
  const domains = await client.domains();
  if (domains.some((d) => d.name === spec)) return { source: domainTree(spec, client.vfs(spec)), path, where: `${spec}:${path}` };
  const root = resolve(spec);
  return { source: hostTree(root), path: '/', where: root };
}

export function registerDiff(program: Command): void {
  usageErrorsExit2(program.command('diff'))
    .description('compare two domains\' views of a tree, or a domain\'s view with a host folder: names, types, sizes, modes, owners, times, symlink targets and content')
    .argument('<DOM_A>', 'a domain')
    .argument('<DOM_B|HOST_DIR>', 'another domain, or a host folder (compared with DOM_A:PATH)')
    .argument('[PATH]', 'the tree to compare in the domains', '/')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .addOption(new Option('--checksum <kind>', `content checksum: ${CHECKSUM_KINDS.join(' or ')}`).argParser(parseChecksumKind).default('sha256'))
    .addOption(new Option('--ignore <fields>', `leave fields out, comma-separated: ${DIFF_FIELDS.join(', ')}`).argParser(parseIgnore).default([], 'none'))
    .option('--json', 'the differences as JSON')
    .addHelpText(
      'after',
      `
Exit status: 0 when the two are the same, 1 when they differ, 2 on an error (the platform down, an unknown
domain, a missing path). Times compared are files' modification times (to the nanosecond); extended attributes
(ACLs included) only between two domains. Each file is compared as of one instant on each side (read again when
it changed while read); the tree as a whole is not one instant: a file written during the diff may show as a
difference (README, "hvshare diff").

Examples:
  $ hvshare diff dom1 dom3                       every file, as the two domains see it
  $ hvshare diff dom1 dom2 /projects --checksum crc32c
  $ cp -a mnt/dom1/etc ./backup && hvshare diff dom1 ./backup /etc        a host copy
  $ hvshare diff dom1 dom2 --json | jq '.differences[] | .path'`,
    )
    .action(async (first: string, second: string, path: string, opts: DiffOptions) => {
      const same = await withPlatform(opts.state, async (client) => {
        const a = parseDomainPath(first, await client.domains());
        if (a.path !== '/') throw new CliError(`DOM_A is a domain name ("${a.domain}"); give the path as PATH`, EXIT_ERROR);
        const sideA = { source: domainTree(a.domain, client.vfs(a.domain)), path: domainPathOf(path), where: `${a.domain}:${domainPathOf(path)}` };
        const sideB = await secondSide(client, second, domainPathOf(path));
        for (const side of [sideA, sideB]) {
          await side.source.stat(side.path).catch((err) => {
            throw failure(side.where, err);
          });
        }
        const result = await diffTrees(sideA.source, sideA.path, sideB.source, sideB.path, { checksum: opts.checksum, ignore: new Set(opts.ignore) }).catch(
          (err) => {
            throw failure(`diff ${sideA.where} ${sideB.where}`, err);
          },
        );
        if (opts.json) {
          console.log(JSON.stringify({ a: sideA.where, b: sideB.where, same: result.differences.length === 0, checksum: opts.checksum, ...result }, null, 2));
        } else {
          for (const d of result.differences) {
            console.log(d.field === 'exists' ? `only in ${d.a === '-' ? sideB.where : sideA.where}: ${d.path}` : `${d.path}: ${d.field} ${d.a} != ${d.b}`);
          }
          process.stderr.write(
            `${sideA.where} and ${sideB.where}: ${result.differences.length === 0 ? 'same' : `${result.differences.length} difference(s)`} ` +
              `(${result.entries} entries, ${result.contentCompared} files' content compared by ${opts.checksum})\n`,
          );
        }
        return result.differences.length === 0;
      });
      if (!same) process.exitCode = EXIT_DIFFER;
    });
}
