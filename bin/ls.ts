import { Command, Option } from 'commander';
import { CHECKSUM_KINDS, checksumOf, parseChecksumKind, type ChecksumKind } from './checksum.js';
import { DEFAULT_STATE_DIR } from './cli-support.js';
import { formatDomainPath, parseDomainPath } from './domain-path.js';
import { failure, withPlatform, usageErrorsExit2 } from './platform-client.js';
import { domainTree, modeString, timeString, walkTree, type EntryInfo } from './tree-source.js';

interface LsOptions {
  state: string;
  recursive?: boolean;
  long?: boolean;
  checksums?: ChecksumKind | true;
  json?: boolean;
}

interface ListedEntry extends EntryInfo {
  path: string;
  target?: string;
  checksum?: string;
}

export function registerLs(program: Command): void {
  usageErrorsExit2(program.command('ls'))
    .description('list a directory of a domain\'s view through the domain\'s own filesystem (no mount needed)')
    .argument('<DOM[:PATH]>', 'a domain, and a path in it (default /)')
    .option('--state <dir>', 'the platform\'s state folder', DEFAULT_STATE_DIR)
    .option('-R, --recursive', 'list subdirectories too, as full paths')
    .option('-l, --long', 'type and permissions, links, owner, group, size, modification time (UTC, ns), symlink target')
    .addOption(new Option('--checksums [kind]', `a checksum of each file's content (${CHECKSUM_KINDS.join(' or ')}, default sha256)`).argParser(parseChecksumKind))
    .option('--json', 'one JSON array of entries')
    .addHelpText(
      'after',
      `
Reads the running platform (hvshare up) through its control socket: each call is run by the domain's guest agent,
as a FUSE view's calls are, so it works on machines without FUSE. Exit status 2 on an error (the platform down,
an unknown domain, a missing path).

Examples:
  $ hvshare ls dom1
  $ hvshare ls dom2:/projects -lR
  $ hvshare ls dom3:/ -R --checksums crc32c
  $ hvshare ls dom1:/etc --long --json | jq '.[] | select(.type == "file") | .path'`,
    )
    .action(async (spec: string, opts: LsOptions) =>
      withPlatform(opts.state, async (client) => {
        const where = parseDomainPath(spec, await client.domains());
        const source = domainTree(where.domain, client.vfs(where.domain));
        const kind = opts.checksums === true ? 'sha256' : opts.checksums;
        const entries: ListedEntry[] = [];
        try {
          for await (const { path, info } of walkTree(source, where.path, !!opts.recursive)) {
            if (path === where.path && info.type === 'dir') continue; // a directory lists its contents
            const entry: ListedEntry = { path, ...info };
            if (info.type === 'symlink') entry.target = await source.readlink(path);
            if (kind && info.type === 'file') entry.checksum = await checksumOf(kind, source.chunks(path));
            entries.push(entry);
          }
        } catch (err) {
          throw failure(formatDomainPath(where), err);
        }
        if (opts.json) return console.log(JSON.stringify(entries, null, 2));
        const name = (e: ListedEntry) => (opts.recursive || e.path === where.path ? e.path : e.path.slice(e.path.lastIndexOf('/') + 1));
        if (!opts.long) {
          for (const e of entries) console.log(kind ? `${e.checksum ?? '-'}  ${name(e)}` : name(e));
          return;
        }
        const rows = entries.map((e) => [
          modeString(e),
          String(e.nlink),
          String(e.uid),
          String(e.gid),
          String(e.size),
          timeString(e.mtime),
          ...(kind ? [e.checksum ?? '-'] : []),
          e.target === undefined ? name(e) : `${name(e)} -> ${e.target}`,
        ]);
        // As ls -l: numbers right-aligned, the name last and unpadded.
        const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => r[i].length))) ?? [];
        for (const r of rows) console.log(r.map((c, i) => (i === 0 || i === r.length - 1 ? c : c.padStart(widths[i]))).join(' '));
      }),
    );
}
