import { Command } from 'commander';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { fsck } from '../fs/fsck.js';
import { endProgress, progressLine } from './cli-support.js';

export function registerFsck(program: Command): void {
  program
    .command('fsck')
    .description('check every invariant of a volume image; exit status 0 when clean, 1 on any violation')
    .argument('<image>', 'the image file (opened read-only; run it while the platform is down)')
    .option('--json', 'print the report as JSON')
    .option('--max-errors <n>', 'stop collecting after this many errors', (v) => Number(v), 100)
    .addHelpText(
      'after',
      `
Checks block headers and checksums, modes and sizes against mapped blocks, that every block pointer is in range
and referenced once, bitmaps against the reachable set, directory entries and "..", the tree from the root,
link counts against references, and the state of every journal.

Examples:
  $ hvshare fsck state/shared.img
  $ hvshare fsck state/shared.img --json | jq .stats`,
    )
    .action(async (image: string, opts: { json?: boolean; maxErrors: number }) => {
      const dev = await FileBlockDevice.open(image, { readOnly: true });
      try {
        const report = await fsck(dev, {
          maxErrors: opts.maxErrors,
          onProgress: opts.json ? undefined : (p) => progressLine(`fsck ${p.phase} ${p.done}/${p.total}`),
        });
        endProgress();
        if (opts.json) {
          console.log(JSON.stringify({ image, ...report }, null, 2));
        } else {
          for (const e of report.errors) console.log(`error: ${e}`);
          for (const w of report.warnings) console.log(`warning: ${w}`);
          const s = report.stats;
          console.log(
            `${image}: ${report.ok ? 'clean' : `${report.errors.length} error(s)`}; ${s.files} files, ${s.directories} directories, ` +
              `${s.symlinks} symlinks, ${s.special} special files, ${s.blocksInUse} blocks in use, ${s.freeBlocks} free, ${s.replayableJournals} journal(s) to replay`,
          );
        }
        process.exitCode = report.ok ? 0 : 1;
      } finally {
        await dev.close();
      }
    });
}
