import { Command } from 'commander';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { fsck, type FsckReport } from '../fs/fsck.js';
import { repairImage, REPAIR_OPERATIONAL_ERROR } from '../fs/fsck-repair.js';
import { CliError, endProgress, progressLine } from './cli-support.js';

function summary(image: string, report: FsckReport): string {
  const s = report.stats;
  return (
    `${image}: ${report.ok ? 'clean' : `${report.errors.length} error(s)`}; ${s.files} files, ${s.directories} directories, ` +
    `${s.symlinks} symlinks, ${s.special} special files, ${s.blocksInUse} blocks in use, ${s.freeBlocks} free, ${s.replayableJournals} journal(s) to replay`
  );
}

/** `fsck --repair`: every change made, then what is left; exit status as e2fsck's. */
async function repairCommand(image: string, json: boolean): Promise<void> {
  let result;
  try {
    result = await repairImage(image);
  } catch (err) {
    const code = (err as { code?: string }).code;
    const why = code === 'EBUSY' ? `${(err as { detail: string }).detail} (stop the platform first)` : (err as Error).message;
    throw new CliError(`fsck --repair ${image}: ${why}; nothing was changed`, REPAIR_OPERATIONAL_ERROR);
  }
  const { changes, after, exitCode } = result;
  if (json) {
    console.log(JSON.stringify({ image, repaired: changes.length > 0, changes, ...after, exitCode }, null, 2));
  } else {
    for (const c of changes) console.log(`fixed: ${c}`);
    for (const e of after.errors) console.log(`error left: ${e}`);
    for (const w of after.warnings) console.log(`warning: ${w}`);
    console.log(`${summary(image, after)}${changes.length > 0 ? ` (${changes.length} change(s) made)` : ''}`);
  }
  process.exitCode = exitCode;
}

export function registerFsck(program: Command): void {
  program
    .command('fsck')
    .description('check every invariant of a volume image (exit status 0 when clean, 1 on any violation), or --repair it')
    .argument('<image>', 'the image file (opened read-only unless --repair; run it while the platform is down)')
    .option('--repair', 'repair what needs no decision, as e2fsck -p: replay journals, rebuild bitmaps and link counts, link lost inodes into /lost+found; every change reported')
    .option('--json', 'print the report as JSON')
    .option('--max-errors <n>', 'stop collecting after this many errors', (v) => Number(v), 100)
    .addHelpText(
      'after',
      `
Checks block headers and checksums, modes and sizes against mapped blocks, that every block pointer is in range
and referenced once, bitmaps against the reachable set, directory entries and "..", the tree from the root,
link counts against references, and the state of every journal.

--repair changes the image: committed journal transactions are replayed and uncommitted ones dropped, every
block in use is marked so in its group's bitmap, an inode in use that no directory names is linked into
/lost+found as #INO (the folder is made when missing; of a lost tree only its top), link counts are set to the
references the tree holds, and blocks nobody uses are freed. Each change is printed ("fixed: ..."), then what the
check still finds. An image in use (hvshare up holds <image>.lock while it runs) is refused and left untouched.
Exit status of --repair, as e2fsck's: 0 clean, 1 errors corrected, 4 errors left, 8 operational error (in use,
unreadable, not a volume).

Examples:
  $ hvshare fsck state/shared.img
  $ hvshare fsck state/shared.img --json | jq .stats
  $ hvshare fsck state/shared.img --repair; echo $?        1: corrected, now clean
  $ hvshare fsck state/shared.img --repair --json | jq .changes`,
    )
    .action(async (image: string, opts: { json?: boolean; maxErrors: number; repair?: boolean }) => {
      if (opts.repair) return repairCommand(image, opts.json ?? false);
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
          console.log(summary(image, report));
        }
        process.exitCode = report.ok ? 0 : 1;
      } finally {
        await dev.close();
      }
    });
}
