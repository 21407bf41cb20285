import { Command, Option } from 'commander';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { benchBlock, blockCases, caseLabel, checkTargets, type BlockBenchResult } from './bench-block.js';
import { benchFile, fileCaseLabel, type FileCaseResult, type LatencyResult } from './bench-file.js';
import { benchFuse, COLUMN_LABELS, COLUMNS, GROUPS, type FuseBenchResult } from './bench-fuse.js';
import { blockReport, fileReport, fuseReport, writeReport } from './bench-report.js';
import { CliError, endProgress, parseIntOption, progressLine, table, withScratchDir } from './cli-support.js';
import { parseSize } from '../hypervisor/platform-config.js';
import type { CpuSplit } from '../hypervisor/thread-cpu.js';
import { DEFAULT_AUTO_MS } from '../mount/index.js';

const fmt = (n: number, digits = 0) => n.toFixed(digits);
const splitLabel = (s: CpuSplit | undefined) => (s ? [s.guests, s.monitor, s.io, s.main].map((x) => fmt(x)).join('/') : '-');

function printBlock({ cases: results, roundTrip, spin }: BlockBenchResult): void {
  const rows = results.map((r) => [
    caseLabel(r),
    fmt(r.nativeSync.mibPerSec),
    fmt(r.nativeAsync.mibPerSec),
    fmt(r.hypervisor.mibPerSec),
    fmt(r.hypervisor.iops),
    fmt(r.hypervisor.meanLatencyUs, 1),
    `${r.overheadPct >= 0 ? '+' : ''}${fmt(r.overheadPct, 1)}%`,
    `${fmt(r.nativeSync.cpuMsPerGiB)}/${fmt(r.nativeAsync.cpuMsPerGiB)}`,
    fmt(r.hypervisor.cpuMsPerGiB),
    splitLabel(r.hypervisor.cpuSplitMsPerGiB),
  ]);
  console.log(
    table(
      ['case (x domains)', 'native-sync MiB/s', 'native-async MiB/s', 'hv MiB/s', 'hv IOPS', 'hv lat us', 'overhead', 'native CPU ms/GiB', 'hv CPU ms/GiB', 'guest/monitor/io/main'],
      rows,
    ),
  );
  console.log('\nwhere the time of the hypervisor path went:');
  console.log(
    table(
      ['case (x domains)', 'req/drain', 'transfers', 'mean KiB', 'offloaded %', 'monitor sleeps/1k req', 'guest IRQs/1k req', 'polled %', 'monitor CPU us/req'],
      results.map((r) => {
        const d = r.diagnostics;
        return [caseLabel(r), fmt(d.requestsPerDrain, 1), fmt(d.transfers), fmt(d.meanTransferKiB), fmt(d.offloadedPct, 1), fmt(d.monitorSleepsPer1k), fmt(d.guestInterruptsPer1k), fmt(d.guestPolledPct, 1), fmt(d.monitorCpuUsPerRequest, 1)];
      }),
    ),
  );
  console.log('\noverhead = time per byte on the hypervisor path versus the faster native baseline, same run');
  console.log('CPU ms/GiB = CPU time of every thread of this process per GiB moved (native: sync/async); hv by part, from /proc in 10 ms steps');
  console.log(
    `one request that moves no data (VOLINFO, queue depth 1): ${fmt(roundTrip.hypercallMicros, 2)} us; ` +
      `awaiting an async no-op on the host: ${fmt(roundTrip.asyncCallMicros, 2)} us`,
  );
  console.log(`polling before sleep, at most: monitor ${fmt(spin.monitorMicros, 1)} us (less while its waits outlast it), guest ${fmt(spin.guestMicros, 1)} us (${spin.reason})`);
  for (const c of checkTargets(results)) {
    if (c.worstPct === null) console.log(`n/a    ${c.target}: none of its cases ran`);
    else console.log(`${c.met ? 'met   ' : 'MISSED'} ${c.target}: worst ${fmt(c.worstPct, 1)}% (target <= ${c.limitPct}%)`);
  }
}

function printFile(cases: FileCaseResult[], latency: LatencyResult, fileBytes: number): void {
  console.log(
    table(
      ['case', 'native MiB/s', 'guest MiB/s', 'overhead', 'native CPU ms/GiB', 'guest CPU ms/GiB', 'guest/monitor/io/main'],
      cases.map((c) => [
        fileCaseLabel(c, fileBytes),
        fmt(c.nativeMiBps),
        fmt(c.hypervisorMiBps),
        `${c.overheadPct >= 0 ? '+' : ''}${fmt(c.overheadPct, 1)}%`,
        fmt(c.nativeCpuMsPerGiB),
        fmt(c.hypervisorCpuMsPerGiB),
        splitLabel(c.hypervisorCpuSplitMsPerGiB),
      ]),
    ),
  );
  console.log(
    `\nwrite+close in dom1 -> open+read in dom2: median ${fmt(latency.crossDomain.medianUs)} us, p99 ${fmt(latency.crossDomain.p99Us)} us` +
      `\nthe same in dom1 alone (no sharing):      median ${fmt(latency.sameDomain.medianUs)} us, p99 ${fmt(latency.sameDomain.p99Us)} us`,
  );
}

/** A figure with about three significant digits (counts as they are). */
const figure = (n: number) => (Number.isInteger(n) || n >= 100 ? fmt(n) : fmt(n, n >= 10 ? 1 : 2));
const times = (r: number | null) => (r === null ? '-' : `${fmt(r, 2)}x`);

function printFuse({ rows, ioEngine }: FuseBenchResult, o: { autoMs: number; repetitions: number }): void {
  console.log(
    table(
      ['workload', 'unit', ...COLUMNS.map((c) => COLUMN_LABELS[c]), 'view/pt strict', 'view/pt auto'],
      rows.map((r) => [r.workload, r.unit, ...COLUMNS.map((c) => figure(r.values[c])), times(r.strictRatio), times(r.autoRatio)]),
    ),
  );
  const has = (group: string) => rows.some((r) => r.group === group);
  const notes = [
    'view/pt = how many times slower the view is than the pass-through mounted with the same FUSE options (>1: slower).',
    `auto = --cache auto=${o.autoMs}. Medians of ${o.repetitions} repetition(s).`,
    ...(has('visibility')
      ? [
          'Visibility: latencies pooled over the repetitions, stale reads summed. A stale read is a read through the other',
          'mount that started after the write had returned and still saw the old state. Auto mounts may serve one for up',
          `to ${o.autoMs} ms; their count is then how many polls of a tight loop fit in that window.`,
        ]
      : []),
    ...(has('iops') ? [`4K random I/O: ${ioEngine === 'fio' ? 'fio, psync, a 16 MiB file' : 'node pread/pwrite on a 16 MiB file (no fio on PATH)'}.`] : []),
  ];
  console.log(`\n${notes.join('\n')}`);
}

/** --report FILE.svg|FILE.html, checked before anything runs. */
const reportOption = () =>
  new Option('--report <file>', 'also draw the results into FILE.svg, or FILE.html (the same picture in a page)').argParser((file: string) => {
    if (!/\.(svg|html?)$/i.test(file)) throw new CliError(`--report ${file}: the file must end in .svg or .html`, 2);
    if (!existsSync(dirname(resolve(file)))) throw new CliError(`--report ${file}: no folder ${dirname(resolve(file))}`, 2);
    return file;
  });

/**
 * Run a benchmark in a scratch folder (progress on stderr), then print it as a table or as JSON, and draw it when
 * asked (`draw` gives the picture's title and SVG).
 */
async function measure<T>(
  opts: { json?: boolean; dir?: string; report?: string },
  run: (dir: string) => Promise<T>,
  asJson: (result: T) => object,
  print: (result: T) => void,
  draw: (result: T) => [string, string],
): Promise<void> {
  const result = await withScratchDir(opts.dir, run);
  endProgress();
  if (opts.json) console.log(JSON.stringify(asJson(result), null, 2));
  else print(result);
  if (opts.report) {
    const [title, svg] = draw(result);
    await writeReport(opts.report, title, svg);
    console.error(`report drawn in ${opts.report}`);
  }
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
    .addOption(reportOption())
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
  $ hvshare bench block --json > block.json
  $ hvshare bench block --only x1 --report block.svg    throughput, overhead and CPU per case, drawn`,
    )
    .action(
      async (opts: { json?: boolean; quick?: boolean; duration?: number; imageSize: string; dir?: string; repetitions: number; only?: string[]; report?: string }) => {
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
          (result) => ['hvshare bench block', blockReport(result)],
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
    .addOption(reportOption())
    .addHelpText(
      'after',
      '\nExamples:\n  $ hvshare bench file\n  $ hvshare bench file --size 256M --json\n  $ hvshare bench file --report file.html    throughput, CPU and the latency of every visibility round, drawn',
    )
    .action(async (opts: { json?: boolean; size: string; repetitions: number; rounds: number; dir?: string; report?: string }) => {
      const fileBytes = parseSize(opts.size);
      await measure(
        opts,
        (dir) => benchFile({ dir, fileBytes, repetitions: opts.repetitions, latencyRounds: opts.rounds, onProgress: progressLine }),
        (r) => ({ fileBytes, ...r }),
        (r) => printFile(r.cases, r.latency, fileBytes),
        (r) => ['hvshare bench file', fileReport(r.cases, r.latency, fileBytes)],
      );
    });

  bench
    .command('fuse')
    .description(
      'through mounts: everyday tools on a native folder, a fuse-native pass-through (the ceiling) and a domain\'s ' +
        'view, each in the strict and the auto cache mode, with ratios',
    )
    .option('--json', 'print the results as JSON')
    .option('--files <n>', 'regular files in the generated tree', parseIntOption('--files'), 3000)
    .option('--big-dir <n>', 'entries of the directory listed with ls -l', parseIntOption('--big-dir'), 10_000)
    .option('--file-size <size>', 'size of the sequential file', '64M')
    .option('--small-files <n>', 'files of the create/stat/read/remove rows', parseIntOption('--small-files'), 500)
    .option('--repetitions <n>', 'repetitions, alternating between the columns (medians are reported)', parseIntOption('--repetitions'), 3)
    .option('--auto-ms <ms>', 'the bound of the auto columns (--cache auto=MS)', parseIntOption('--auto-ms'), DEFAULT_AUTO_MS)
    .option('--rounds <n>', 'visibility rounds per column and repetition (each can take up to --auto-ms in auto)', parseIntOption('--rounds'), 10)
    .option('--iops-time <ms>', 'measurement time of each 4K random I/O case', parseIntOption('--iops-time'), 2000)
    .option('--only <groups...>', `only these row groups: ${GROUPS.join(', ')}`)
    .option('--dir <path>', 'scratch folder for the tree, the native side, the backing folder, the image and the mount points (default: the system temp folder)')
    .addOption(reportOption())
    .addHelpText(
      'after',
      `
Columns: native (a folder on the host disk), pass-through strict|auto (a minimal fuse-native pass-through of a
native folder, mounted with exactly a view's FUSE options in that cache mode: what fuse-native allows at best),
view strict|auto (a domain's view). Every column has two mounts of one folder: dom1's and dom2's views of one
volume, two pass-through mounts, or the native folder twice. The tree is written through the first and read
through the second. The ratios compare each view with the pass-through in the same cache mode.

Row groups (--only): tree (untar a generated git repository, then find, du -s, ls -lR, diff -r, git status
twice, rm -rf through the other mount), big-dir (ls -l), iops (4K random read and write, fio when installed),
visibility (a new name and a rewrite in place through one mount, polled through the other in a tight loop:
latency and stale reads; strict mounts have none, auto ones may answer stale for up to MS, so their count is how
many polls fit in that window), sequential (1 MiB writes with fsync, reads), small-files (create, stat, read, remove).

The defaults take 10-15 minutes on a 2-core machine; numbers from a busy machine are noisy, so compare the
columns of one run rather than runs with each other. Ctrl-C stops the bench and unmounts everything.

Examples:
  $ hvshare bench fuse
  $ hvshare bench fuse --files 500 --big-dir 2000 --repetitions 1     a quick look
  $ hvshare bench fuse --only tree big-dir --auto-ms 100
  $ hvshare bench fuse --only visibility --rounds 50 --json > visibility.json
  $ hvshare bench fuse --report fuse.svg    each view against the ceiling, and visibility latencies, drawn`,
    )
    .action(
      async (opts: {
        json?: boolean;
        files: number;
        bigDir: number;
        fileSize: string;
        smallFiles: number;
        repetitions: number;
        autoMs: number;
        rounds: number;
        iopsTime: number;
        only?: string[];
        dir?: string;
        report?: string;
      }) => {
        const fileMiB = Math.max(1, Math.round(parseSize(opts.fileSize) / (1 << 20)));
        const only = (opts.only ?? []).flatMap((w) => w.split(/[\s,]+/)).filter(Boolean);
        const unknown = only.filter((g) => !(GROUPS as readonly string[]).includes(g));
        if (unknown.length) throw new CliError(`bench fuse --only: no row group ${unknown.join(', ')} (groups: ${GROUPS.join(', ')})`, 2);
        const groups = only.length ? GROUPS.filter((g) => only.includes(g)) : GROUPS;
        const abort = new AbortController();
        const interrupt = () => abort.abort(new CliError('interrupted; everything is unmounted', 130));
        process.once('SIGINT', interrupt);
        const o = { files: opts.files, bigDir: opts.bigDir, fileMiB, smallFiles: opts.smallFiles, repetitions: opts.repetitions, autoMs: opts.autoMs, rounds: opts.rounds, iopsMs: opts.iopsTime, groups };
        try {
          await measure(
            opts,
            (dir) => benchFuse({ dir, ...o, onProgress: progressLine, signal: abort.signal }),
            (result) => ({ ...o, columns: COLUMN_LABELS, ...result }),
            (result) => printFuse(result, o),
            (result) => ['hvshare bench fuse', fuseReport(result)],
          );
        } catch (err) {
          throw abort.signal.aborted ? abort.signal.reason : err;
        } finally {
          process.off('SIGINT', interrupt);
        }
      },
    );
}
