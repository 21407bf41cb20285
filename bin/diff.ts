import { Command, Option } from 'commander';
import { resolve } from 'node:path';
import { CHECKSUM_KINDS, parseChecksumKind, type ChecksumKind } from './checksum.js';
import { IoError } from '../fs/block-device.js';
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
  /** False with --no-cut. */
  cut: boolean;
  maxHold?: number;
}

/** A side of the diff read through a domain (a host folder has no domain and takes no cut). */
interface Side {
  source: TreeSource;
  path: string;
  where: string;
  domain?: string;
}

/** The cuts of one diff: taken in each domain before anything is compared, ended (in any case) afterwards. */
class Cuts {
  private readonly held: { domain: string; id: number }[] = [];
  inodes = 0;
  maxHoldMs = 0;
  heldMs = 0;
  private readonly began = Date.now();

  constructor(private readonly client: PlatformClient) {}

  async take(side: Side, maxHoldMs: number | undefined): Promise<void> {
    if (!side.domain) return;
    const cut = await this.client.request<'cut'>({ kind: 'cut', domain: side.domain, path: side.path, maxHoldMs }).catch((err) => {
      throw err instanceof IoError && err.code === 'EINVAL' ? new CliError(`--max-hold: ${err.detail}`, EXIT_ERROR) : failure(side.where, err);
    });
    this.held.push({ domain: side.domain, id: cut.id });
    this.inodes += cut.inodes;
    this.maxHoldMs = cut.maxHoldMs;
  }

  /** Runs `body`, failing it once the first cut's maximum hold has run out (its locks are let go then). */
  async within<T>(body: Promise<T>): Promise<T> {
    if (this.held.length === 0) return body;
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.expiredError()), Math.max(0, this.began + this.maxHoldMs - Date.now()));
    });
    try {
      return await Promise.race([body, expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends every cut; throws if one ran out of time before the comparison ended (its result is not one cut). */
  async end(): Promise<void> {
    let expired = false;
    for (const { domain, id } of this.held.splice(0)) {
      const ended = await this.client.request<'cut-end'>({ kind: 'cut-end', domain, cut: id });
      expired ||= ended.expired;
      this.heldMs = Math.max(this.heldMs, ended.heldMs);
    }
    if (expired) throw this.expiredError();
  }

  private expiredError(): CliError {
    return new CliError(
      `gave up: the comparison took longer than the cut may be held (--max-hold ${this.maxHoldMs} ms), and writers waiting for it were let ` +
        'through; compare a smaller PATH, raise revokeDeadlineMs in platform.json (--max-hold may be four fifths of it), or use --no-cut',
      EXIT_ERROR,
    );
  }
}

function parseIgnore(value: string): DiffField[] {
  const fields = value.split(',').filter(Boolean);
  const bad = fields.find((f) => !(DIFF_FIELDS as readonly string[]).includes(f));
  if (bad !== undefined) throw new CliError(`--ignore: unknown field "${bad}" (fields: ${DIFF_FIELDS.join(', ')})`, EXIT_ERROR);
  return fields as DiffField[];
}

function parseMaxHold(value: string): number {
  const ms = Number(value);
  if (!Number.isSafeInteger(ms) || ms <= 0) throw new CliError(`--max-hold: "${value}" is not a positive whole number of milliseconds`, EXIT_ERROR);
  return ms;
}

/** The second operand: a domain of the platform, else a host folder. */
async function secondSide(client: PlatformClient, spec: string, path: string): Promise<Side> {
  const domains = await client.domains();
  if (domains.some((d) => d.name === spec)) return { source: domainTree(spec, client.vfs(spec)), path, where: `${spec}:${path}`, domain: spec };
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
    .addOption(new Option('--max-hold <ms>', 'give up (exit 2) when the cut has been held this long; at most four fifths of the platform\'s revokeDeadlineMs').argParser(parseMaxHold).default(undefined, 'four fifths of revokeDeadlineMs: 8000'))
    .option('--no-cut', 'hold no locks: writers never wait, each file is still compared as of one instant, the tree is not')
    .option('--json', 'the differences as JSON')
    .addHelpText(
      'after',
      `
Exit status: 0 when the two are the same, 1 when they differ, 2 on an error (the platform down, an unknown
domain, a missing path, the cut held longer than --max-hold). Times compared are files' modification times (to
the nanosecond); extended attributes (ACLs included) only between two domains.

One consistent cut: before comparing anything, each domain side walks PATH and takes the shared cluster lock of
every file, directory and symlink in it, and keeps them until the diff ends. Both sides then see the tree as it
was at one instant. What that means for writers: a change to anything in the tree, through any domain (a view,
hvshare cp, a program in a guest), waits until the diff ends; writes elsewhere do not wait. The wait is bounded
by --max-hold (default and most: four fifths of revokeDeadlineMs, 8 s by default): past it the locks go, the waiting writers go on, and diff exits 2 without a result.
A diff whose compared domain is also writing into the tree waits for itself until then. With --no-cut no lock is
held: each file is compared as of one instant (read again when it changed while read), the tree as a whole is
not, so a file written during the diff may show as a difference (README, "hvshare diff").

Examples:
  $ hvshare diff dom1 dom3                       every file, as the two domains see it
  $ hvshare diff dom1 dom2 /projects --checksum crc32c
  $ cp -a mnt/dom1/etc ./backup && hvshare diff dom1 ./backup /etc        a host copy
  $ hvshare diff dom1 dom2 --json | jq '.differences[] | .path'
  $ hvshare diff dom1 dom2 /big-tree --max-hold 4000          writers wait at most 4 s
  $ hvshare diff dom1 dom2 --no-cut                           never makes a writer wait`,
    )
    .action(async (first: string, second: string, path: string, opts: DiffOptions) => {
      const same = await withPlatform(opts.state, async (client) => {
        const a = parseDomainPath(first, await client.domains());
        if (a.path !== '/') throw new CliError(`DOM_A is a domain name ("${a.domain}"); give the path as PATH`, EXIT_ERROR);
        const sideA: Side = { source: domainTree(a.domain, client.vfs(a.domain)), path: domainPathOf(path), where: `${a.domain}:${domainPathOf(path)}`, domain: a.domain };
        const sideB = await secondSide(client, second, domainPathOf(path));
        for (const side of [sideA, sideB]) {
          await side.source.stat(side.path).catch((err) => {
            throw failure(side.where, err);
          });
        }
        const cuts = new Cuts(client);
        const compared = async () => {
          if (opts.cut) for (const side of [sideA, sideB]) await cuts.take(side, opts.maxHold);
          return cuts.within(diffTrees(sideA.source, sideA.path, sideB.source, sideB.path, { checksum: opts.checksum, ignore: new Set(opts.ignore) }));
        };
        let result: Awaited<ReturnType<typeof diffTrees>>;
        try {
          result = await compared();
        } catch (err) {
          throw failure(`diff ${sideA.where} ${sideB.where}`, err);
        } finally {
          await cuts.end().catch((err) => {
            throw failure(`diff ${sideA.where} ${sideB.where}`, err);
          });
        }
        const cut = opts.cut ? { inodes: cuts.inodes, heldMs: cuts.heldMs, maxHoldMs: cuts.maxHoldMs } : null;
        if (opts.json) {
          console.log(JSON.stringify({ a: sideA.where, b: sideB.where, same: result.differences.length === 0, checksum: opts.checksum, cut, ...result }, null, 2));
        } else {
          for (const d of result.differences) {
            console.log(d.field === 'exists' ? `only in ${d.a === '-' ? sideB.where : sideA.where}: ${d.path}` : `${d.path}: ${d.field} ${d.a} != ${d.b}`);
          }
          process.stderr.write(
            `${sideA.where} and ${sideB.where}: ${result.differences.length === 0 ? 'same' : `${result.differences.length} difference(s)`} ` +
              `(${result.entries} entries, ${result.contentCompared} files' content compared by ${opts.checksum}; ` +
              `${cut ? `one cut, ${cut.inodes} locks held ${cut.heldMs} ms` : 'no cut'})\n`,
          );
        }
        return result.differences.length === 0;
      });
      if (!same) process.exitCode = EXIT_DIFFER;
    });
}
