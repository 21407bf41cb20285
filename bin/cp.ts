import { Command } from 'commander';
import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { IoError } from '../fs/block-device.js';
import { CliError, DEFAULT_STATE_DIR } from './cli-support.js';
import { formatDomainPath, isDomainSpec, parseDomainPath } from './domain-path.js';
import { EXIT_ERROR, failure, withPlatform, type PlatformClient, usageErrorsExit2 } from './platform-client.js';
import { copyTree } from './tree-copy.js';
import { domainSink, hostSink, type TreeSink } from './tree-sink.js';
import { domainTree, hostTree, type TreeSource } from './tree-source.js';

/** One side of a copy: a path in a domain or on the host. */
interface Side {
  where: string;
  source: TreeSource;
  sink: TreeSink;
  path: string;
  /** The domain, for a domain side. */
  domain?: string;
}

async function side(client: PlatformClient, spec: string): Promise<Side> {
  const domains = await client.domains();
  if (isDomainSpec(spec, domains)) {
    const p = parseDomainPath(spec, domains);
    const vfs = client.vfs(p.domain);
    return { where: formatDomainPath(p), source: domainTree(p.domain, vfs), sink: domainSink(p.domain, vfs), path: p.path, domain: p.domain };
  }
  return { where: spec, source: hostTree('/'), sink: hostSink(), path: resolve(spec) };
}

/** Where a copy lands: into `dst` when it is an existing directory, as cp(1) does. */
async function target(dst: Side, name: string): Promise<Side> {
  // On the host a symlink to a directory counts as the directory, as for cp(1).
  const isDir = dst.domain
    ? (await dst.sink.typeOf(dst.path).catch(() => null)) === 'dir'
    : await stat(dst.path).then((s) => s.isDirectory(), () => false);
  if (!isDir || name === '') return dst;
  const path = dst.sink.child(dst.path, name);
  return { ...dst, path, where: dst.sink.where(path) };
}

/** The source's chunks; a failure to read them names the source (anything else the copy meets names the destination). */
async function* readingFrom(from: Side): AsyncIterable<Uint8Array> {
  try {
    yield* from.source.chunks(from.path);
  } catch (err) {
    throw failure(from.where, err);
  }
}

/** A directory copied into itself would never end. */
function checkNotInside(from: Side, to: Side): void {
  if (from.domain !== to.domain) return;
  const inside = to.path === from.path || to.path.startsWith(from.path === '/' ? '/' : `${from.path}/`);
  if (inside) throw failure(to.where, new IoError('EINVAL', `cannot copy ${from.where} into itself`));
}

interface CpOptions {
  state: string;
  json?: boolean;
  recursive?: boolean;
}

export function registerCp(program: Command): void {
  usageErrorsExit2(program.command('cp'))
    .description('copy a file, or a tree with -R, between domains or between a domain and the host, through the domains\' own filesystems (no mount needed)')
    .argument('<SRC>', 'DOM:PATH or a host path')
    .argument('<DST>', 'DOM:PATH or a host path; an existing directory receives the copy under its own name')
    .option('-R, --recursive', 'copy a directory and everything in it, keeping permission bits, access and modification times, and symlinks as symlinks')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .option('--json', 'print what was copied as JSON (with -R: files, directories, symlinks, bytes, skipped)')
    .addHelpText(
      'after',
      `
A side is a domain path when it starts with the name of one of the platform's domains and a colon (dom1:/a/b,
dom1:b); anything else is a host path (write ./x:y for a host file whose name has a colon). A copy into a domain
is durable there before cp returns (a tree: one fsync at its end, which commits the domain's journal). Exit status 2 on an error.

With -R, SRC may be a directory: DST is created (or filled, if it is a directory that exists), as cp -R does, and
permission bits, access and modification times are kept, symlinks copied as symlinks (never followed); owners
are not. Times are exact in a domain, to about a microsecond on the host (Node sets them as a double). Devices,
FIFOs and sockets are not copied: they are named on stderr and cp exits 2 after copying the rest. A copy running
longer than a second shows its progress on stderr.

Examples:
  $ hvshare cp big.iso dom1:/big.iso
  $ hvshare cp dom2:/big.iso ./back.iso && cmp big.iso back.iso
  $ hvshare cp dom1:/report.txt dom2:/archive/
  $ hvshare cp -R ./project dom1:/projects/       a host tree into a domain
  $ hvshare cp -R dom1:/projects ./backup --json   a domain's tree to the host, with a summary`,
    )
    .action(async (src: string, dst: string, opts: CpOptions) =>
      withPlatform(opts.state, async (client) => {
        const from = await side(client, src);
        const info = await from.source.stat(from.path).catch((err) => {
          throw failure(from.where, err);
        });
        if (info.type === 'dir' && opts.recursive) {
          const to = await target(await side(client, dst), basename(from.path));
          checkNotInside(from, to);
          const summary = await copyTree({ source: from.source, where: (p) => (from.domain ? `${from.domain}:${p}` : p) }, from.path, to.sink, to.path);
          if (opts.json) console.log(JSON.stringify({ from: from.where, to: to.where, ...summary }));
          if (summary.skipped.length > 0) {
            throw new CliError(`not copied (devices, FIFOs and sockets are not copied): ${summary.skipped.join(', ')}`, EXIT_ERROR);
          }
          return;
        }
        if (info.type !== 'file') {
          throw failure(from.where, new IoError(info.type === 'dir' ? 'EISDIR' : 'EINVAL', info.type === 'dir' ? 'a directory (copy it with -R)' : 'cp copies regular files'));
        }
        const to = await target(await side(client, dst), basename(from.path));
        if ((await to.sink.typeOf(to.path).catch(() => null)) === 'dir') throw failure(to.where, new IoError('EISDIR', to.path));
        const bytes = await to.sink.writeFile(to.path, info.perm, readingFrom(from)).catch((err) => {
          throw err instanceof CliError ? err : failure(to.where, err);
        });
        if (opts.json) console.log(JSON.stringify({ from: from.where, to: to.where, bytes }));
      }),
    );
}
