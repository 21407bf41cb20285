import { Command } from 'commander';
import { benchBlock, blockCases, caseLabel, checkTargets, sizeLabel, type BlockBenchResult } from './bench-block.js';
import { benchFile, type FileCaseResult, type LatencyResult } from './bench-file.js';
import { benchFuse, type FusePhase } from './bench-fuse.js';
import { endProgress, parseIntOption, progressLine, table, withScratchDir } from './cli-support.js';
import { parseSize } from '../hypervisor/platform-config.js';

const fmt = (n: number, digits = 0) => n.toFixed(digits);

function printBlock({ cases: results, roundTrip }: BlockBenchResult): void {
  const rows = results.map((r) => [
    caseLabel(r),
    fmt(r.nativeSync.mibPerSec),
    fmt(r.nativeAsync.mibPerSec),
    fmt(r.hypervisor.mibPerSec),
    fmt(r.hypervisor.iops),
    fmt(r.hypervisor.meanLatencyUs, 1),
    `${r.overheadPct >= 0 ? '+' : ''}${fmt(r.overheadPct, 1)}%`,
  ]);
  console.log(
    table(['case (x domains)', 'native-sync MiB/s', 'native-async MiB/s', 'hv MiB/s', 'hv IOPS', 'hv lat us', 'overhead'], rows),
  );
  console.log('\noverhead = time per byte on the hypervisor path versus the faster native baseline, same run');
  console.log(
    `one request that moves no data (VOLINFO, queue depth 1): ${fmt(roundTrip.hypercallMicros, 2)} us; ` +
      `awaiting an async no-op on the host: ${fmt(roundTrip.asyncCallMicros, 2)} us`,
  );
  for (const c of checkTargets(results)) {
    if (c.worstPct === null) console.log(`n/a    ${c.target}: none of its cases ran`);
    else console.log(`${c.met ? 'met   ' : 'MISSED'} ${c.target}: worst ${fmt(c.worstPct, 1)}% (target <= ${c.limitPct}%)`);
  }
}

function printFile(cases: FileCaseResult[], latency: LatencyResult): void {
  console.log(
    table(
      ['case', 'native MiB/s', 'guest MiB/s', 'overhead'],
      cases.map((c) => [
        `${c.op} 64M file, ${sizeLabel(c.chunkBytes)} calls`,
        fmt(c.nativeMiBps),
        fmt(c.hypervisorMiBps),
        `${c.overheadPct >= 0 ? '+' : ''}${fmt(c.overheadPct, 1)}%`,
      ]),
    ),
  );
  console.log(
    `\nwrite+close in dom1 -> open+read in dom2: median ${fmt(latency.crossDomain.medianUs)} us, p99 ${fmt(latency.crossDomain.p99Us)} us` +
      `\nthe same in dom1 alone (no sharing):      median ${fmt(latency.sameDomain.medianUs)} us, p99 ${fmt(latency.sameDomain.p99Us)} us`,
  );
}

function printFuse(phases: FusePhase[]): void {
  console.log(
    table(
      ['phase', 'unit', 'native folder', 'mounted view', 'native / mounted'],
      phases.map((p) => [p.phase, p.unit, fmt(p.native), fmt(p.mounted), `${fmt(p.ratio, 2)}x`]),
    ),
  );
}

/** Run a benchmark in a scratch folder (progress on stderr), then print it as a table or as JSON. */
async function measure<T>(
  opts: { json?: boolean; dir?: string },
  run: (dir: string) => Promise<T>,
  asJson: (result: T) => object,
  print: (result: T) => void,
): Promise<void> {
  const result = await withScratchDir(opts.dir, run);
  endProgress();
  if (opts.json) console.log(JSON.stringify(asJson(result), null, 2));
  else print(result);
}

export function registerBench(program: Command): void {
  const bench = program
    .command('bench')
    .description('measure the hypervisor path against native I/O, both in one run')
    .addHelpText(
      'after',
      `
Examples:
  $ hvshare bench block                 full block-level table (about a minute)
  $ hvshare bench block --quick --json  shorter cases, machine-readable`,
    );

  bench
    .command('block')
    .description(
      'block level: native pread/pwrite on an image vs guest domains through hypercalls and the monitor; ' +
        'sequential and random, 4K/64K/1M, read and write, queue depth 1 and 32, 1 and 2 domains',
    )
    .option('--json', 'print the results as JSON')
    .option('--quick', 'shorter measurement per case (150 ms instead of 400 ms)')
    .option('--duration <ms>', 'measurement time per case and side, in milliseconds', parseIntOption('--duration'))
    .option('--image-size <size>', 'size of the scratch image (e.g. 256M)', '256M')
    .option('--dir <path>', 'where to put the scratch image (default: the system temp folder)')
    .option('--repetitions <n>', 'measure every case n times and report medians (steadier on a busy machine)', parseIntOption('--repetitions'), 1)
    .option('--only <text...>', 'only the cases whose name contains every one of these words, e.g. --only "seq read" x2')
    .addHelpText(
      'after',
      `
Each case runs three ways back to back: native-sync (one host thread, pread/pwrite with the monitor's own backend
code), native-async (Node's fs with the queue depth in flight) and the hypervisor path (the same workload code in
a guest kernel). The overhead compares the hypervisor path with the faster native side. Cases are named as in
the table: "<seq|rand> <read|write> <4K|64K|1M> qd<1|32> x<domains>".

Examples:
  $ hvshare bench block
  $ hvshare bench block --repetitions 3 --only qd32
  $ hvshare bench block --duration 1000 --image-size 512M
  $ hvshare bench block --json > block.json`,
    )
    .action(
      async (opts: { json?: boolean; quick?: boolean; duration?: number; imageSize: string; dir?: string; repetitions: number; only?: string[] }) => {
        const imageBytes = parseSize(opts.imageSize);
        const durationMs = opts.duration ?? (opts.quick ? 150 : 400);
        const words = (opts.only ?? []).flatMap((w) => w.split(/\s+/)).filter(Boolean);
        const cases = blockCases().filter((c) => words.every((w) => caseLabel(c).split(' ').includes(w)));
        if (cases.length === 0) {
          console.error(`hvshare bench block: no case is named with all of: ${words.join(' ')} (names look like "seq read 64K qd32 x1")`);
          process.exitCode = 2;
          return;
        }
        await measure(
          opts,
          (dir) =>
            benchBlock({
              dir,
              imageBytes,
              durationMs,
              cases,
              repetitions: opts.repetitions,
              onProgress: (done, total, label) => progressLine(`bench block ${done}/${total} ${label}`),
            }),
          (result) => ({ durationMs, imageBytes, repetitions: opts.repetitions, ...result, targets: checkTargets(result.cases) }),
          printBlock,
        );
      },
    );

  bench
    .command('file')
    .description(
      'file level: a file written (fsync) and read in a guest vs the same filesystem code natively on the host; ' +
        'and cross-domain visibility latency (write+close in dom1 -> read in dom2)',
    )
    .option('--json', 'print the results as JSON')
    .option('--size <size>', 'file size', '64M')
    .option('--repetitions <n>', 'alternating repetitions per case (the median is reported)', parseIntOption('--repetitions'), 3)
    .option('--rounds <n>', 'rounds of the visibility measurement', parseIntOption('--rounds'), 200)
    .option('--dir <path>', 'where to put the scratch images (default: the system temp folder)')
    .addHelpText('after', '\nExamples:\n  $ hvshare bench file\n  $ hvshare bench file --size 256M --json')
    .action(async (opts: { json?: boolean; size: string; repetitions: number; rounds: number; dir?: string }) => {
      const fileBytes = parseSize(opts.size);
      await measure(
        opts,
        (dir) => benchFile({ dir, fileBytes, repetitions: opts.repetitions, latencyRounds: opts.rounds, onProgress: progressLine }),
        (r) => ({ fileBytes, ...r }),
        (r) => printFile(r.cases, r.latency),
      );
    });

  bench
    .command('fuse')
    .description('through a mount: dd-style sequential and small-file rates in a domain\'s view vs a native folder')
    .option('--json', 'print the results as JSON')
    .option('--file-size <size>', 'size of the sequential file', '64M')
    .option('--files <n>', 'how many small files', parseIntOption('--files'), 500)
    .option('--repetitions <n>', 'alternating repetitions (the median is reported)', parseIntOption('--repetitions'), 3)
    .option('--dir <path>', 'scratch folder for the native side, the image and the mount point (default: the system temp folder)')
    .addHelpText('after', '\nExamples:\n  $ hvshare bench fuse\n  $ hvshare bench fuse --files 2000 --json')
    .action(async (opts: { json?: boolean; fileSize: string; files: number; repetitions: number; dir?: string }) => {
      const fileMiB = Math.max(1, Math.round(parseSize(opts.fileSize) / (1 << 20)));
      await measure(
        opts,
        (dir) => benchFuse({ dir, fileMiB, smallFiles: opts.files, repetitions: opts.repetitions, onProgress: progressLine }),
        (phases) => ({ fileMiB, smallFiles: opts.files, phases }),
        printFuse,
      );
    });
}
