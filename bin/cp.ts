import { Command } from 'commander';
import { open, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { IoError } from '../fs/block-device.js';
import { O_CREAT, O_TRUNC, O_WRONLY, S_IFREG, type Vfs } from '../fs/vfs.js';
import { CliError, DEFAULT_STATE_DIR } from './cli-support.js';
import { formatDomainPath, isDomainSpec, parseDomainPath } from './domain-path.js';
import { failure, withPlatform, type PlatformClient, usageErrorsExit2 } from './platform-client.js';
import { childPath, domainTree, hostTree, type TreeSource } from './tree-source.js';

/** One side of a copy: a file in a domain or on the host. */
interface Side {
  where: string;
  source: TreeSource;
  path: string;
  /** Set for a domain side: where writes go. */
  vfs?: Vfs;
}

async function side(client: PlatformClient, spec: string): Promise<Side> {
  const domains = await client.domains();
  if (isDomainSpec(spec, domains)) {
    const p = parseDomainPath(spec, domains);
    const vfs = client.vfs(p.domain);
    return { where: formatDomainPath(p), source: domainTree(p.domain, vfs), path: p.path, vfs };
  }
  return { where: spec, source: hostTree('/'), path: resolve(spec) };
}

/** Where a copy lands: into `dst` when it is an existing directory, as cp(1) does. */
async function target(dst: Side, name: string): Promise<Side> {
  const isDir = await dst.source.stat(dst.path).then((i) => i.type === 'dir', () => false);
  if (!isDir) return dst;
  const path = dst.vfs ? childPath(dst.path, name) : join(dst.path, name);
  return { ...dst, path, where: dst.vfs ? `${dst.where.slice(0, dst.where.indexOf(':'))}:${path}` : join(dst.where, name) };
}

/** Copy into a domain: created or truncated with the source's permissions, written, fsynced, closed. */
async function writeDomain(vfs: Vfs, path: string, perm: number, chunks: AsyncIterable<Uint8Array>): Promise<number> {
  const fh = await vfs.create(path, S_IFREG | perm, O_CREAT | O_WRONLY | O_TRUNC);
  let position = 0;
  try {
    for await (const chunk of chunks) position += await vfs.write(fh, position, chunk);
    await vfs.fsync(fh, false);
  } finally {
    await vfs.release(fh);
  }
  return position;
}

async function writeHost(path: string, perm: number, chunks: AsyncIterable<Uint8Array>): Promise<number> {
  const handle = await open(path, 'w', perm);
  let position = 0;
  try {
    for await (const chunk of chunks) position += (await handle.write(chunk, 0, chunk.length, position)).bytesWritten;
    await handle.sync();
  } finally {
    await handle.close();
  }
  return position;
}

/** The source's chunks; a failure to read them names the source (anything else the copy meets names the destination). */
async function* readingFrom(from: Side): AsyncIterable<Uint8Array> {
  try {
    yield* from.source.chunks(from.path);
  } catch (err) {
    throw failure(from.where, err);
  }
}

export function registerCp(program: Command): void {
  usageErrorsExit2(program.command('cp'))
    .description('copy one file between domains, or between a domain and the host, through the domains\' own filesystems (no mount needed)')
    .argument('<SRC>', 'DOM:PATH or a host path')
    .argument('<DST>', 'DOM:PATH or a host path; an existing directory receives the file under its own name')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .option('--json', 'print what was copied as JSON')
    .addHelpText(
      'after',
      `
A side is a domain path when it starts with the name of one of the platform's domains and a colon (dom1:/a/b,
dom1:b); anything else is a host path (write ./x:y for a host file whose name has a colon). A copy into a domain
is fsynced there before cp returns. Exit status 2 on an error.

Examples:
  $ hvshare cp big.iso dom1:/big.iso
  $ hvshare cp dom2:/big.iso ./back.iso && cmp big.iso back.iso
  $ hvshare cp dom1:/report.txt dom2:/archive/`,
    )
    .action(async (src: string, dst: string, opts: { state: string; json?: boolean }) =>
      withPlatform(opts.state, async (client) => {
        const from = await side(client, src);
        const info = await from.source.stat(from.path).catch((err) => {
          throw failure(from.where, err);
        });
        if (info.type !== 'file') throw failure(from.where, new IoError(info.type === 'dir' ? 'EISDIR' : 'EINVAL', 'cp copies one regular file'));
        const to = await target(await side(client, dst), basename(from.path));
        if (!to.vfs && (await stat(to.path).then((s) => s.isDirectory(), () => false))) throw failure(to.where, new IoError('EISDIR', to.path));
        const chunks = readingFrom(from);
        const bytes = await (to.vfs ? writeDomain(to.vfs, to.path, info.perm, chunks) : writeHost(to.path, info.perm, chunks)).catch((err) => {
          throw err instanceof CliError ? err : failure(to.where, err);
        });
        if (opts.json) console.log(JSON.stringify({ from: from.where, to: to.where, bytes }));
      }),
    );
}
