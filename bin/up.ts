import { Command, Option } from 'commander';
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { loadPlatformFile, type PlatformConfig } from '../hypervisor/platform-config.js';
import { StoredPlatform } from '../hypervisor/platform-boot.js';
import { ControlServer } from '../hypervisor/control-server.js';
import type { NewEvent } from '../hypervisor/platform-store.js';
import { DEFAULT_AUTO_MS, formatCacheMode, mountDomain, mountPointProblem, parseCacheMode, type CacheMode, type MountedView } from '../mount/index.js';
import { armStopWatchdog, DEFAULT_STOP_STEP_MS, stopStep, stopStepMs, type StopDeadline } from '../hypervisor/stop-deadline.js';
import { CliError, DEFAULT_MOUNT_ROOT, DEFAULT_STATE_DIR } from './cli-support.js';

const execFileAsync = promisify(execFile);

/** How long past every deadline the watchdog waits for a stop whose main thread may be stuck. */
const STUCK_GRACE_MS = 2000;

/**
 * HVSHARE_FAULT_STOP_STUCK=1 (tests only): the main thread blocks for good once a stop starts, as in a system
 * call that never returns, so that only the watchdog can end the process.
 */
function stuckForTests(): void {
  if (process.env.HVSHARE_FAULT_STOP_STUCK === '1') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
}

/** A view whose unmount is late is detached from the tree at once; the kernel drops it when its last user goes. */
function detachLazily(mountpoint: string): Promise<unknown> {
  return execFileAsync('fusermount', ['-uz', mountpoint]);
}

interface UpOptions {
  config?: string;
  state: string;
  mountRoot: string;
  json?: boolean;
  status: boolean;
  cache: CacheMode;
  private?: boolean;
  devices?: boolean;
}

function cacheOption(value: string): CacheMode {
  try {
    return parseCacheMode(value);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
}

const rate = (n: number) => (n >= 10_000 ? `${(n / 1000).toFixed(0)}k` : n.toFixed(0));

export function registerUp(program: Command): void {
  program
    .command('up')
    .description('boot the platform (monitor + domains) and mount every domain\'s view of the shared volume')
    .option('--config <platform.json>', 'platform description to (re)define the platform with (default: the stored one, else the embedded default)')
    .option('--state <dir>', 'state folder: platform store, status file, volume images', DEFAULT_STATE_DIR)
    .option('--mount-root <dir>', 'each domain\'s view is mounted at <dir>/<domain>', DEFAULT_MOUNT_ROOT)
    .option('--json', 'print mounts, readiness and events as JSON lines')
    .option('--no-status', 'no live status line')
    .option('--devices', 'device files in the views open the host\'s devices (root only; off by default: any domain can write device nodes into the volume)')
    .option('--private', 'only the user who runs `up` may use the views (default: every user of the host, with modes and owners checked by the host kernel)')
    .addOption(
      new Option(
        '--cache <mode>',
        'what the host kernel may cache of each view: "strict" (never stale: a view shows what a process in the ' +
          'domain sees at that instant) or "auto[=MS]" (names, attributes, missing names and the absence of xattrs may be up to MS ms ' +
          `old, default ${DEFAULT_AUTO_MS}; file data is close-to-open, each open sees the domain's; MAP_SHARED works)`,
      )
        .argParser(cacheOption)
        .default(parseCacheMode('strict'), 'strict'),
    )
    .addHelpText(
      'after',
      `
The embedded default platform is one shared 256 MiB volume (<state>/shared.img), domains dom1 and dom2 with
read-write grants and dom3 read-only. Missing images are created and formatted; journals left by a crash are
replayed. Prints one line per mount, then "ready"; SIGINT or SIGTERM unmounts, commits every journal and stops.
Each step of a stop (a view's unmount, a domain's journal commit, a thread's exit, the store's close) has a
deadline, HVSHARE_STOP_STEP_MS (default ${DEFAULT_STOP_STEP_MS / 1000} s): past it the step is forced and said on stderr, and the exit
status is 1. A second Ctrl-C forces every step at once (exit 130); the next up replays what was committed.
Before anything is stored or mounted, the description is checked against the images and mount points that exist
(size, journal slots, empty folders), and each volume passes a quick check (superblock, bitmaps, journals, root).

Examples:
  $ hvshare up
  $ hvshare up --state /var/lib/hvshare --mount-root /mnt/hvshare
  $ hvshare up --config platform.json --json
  $ hvshare up --cache auto=200             stat/ls/find answered by the host for up to 200 ms
  $ hvshare up --private                    views for this user only (no allow_other)
  $ cp big.iso mnt/dom1/ && cmp big.iso mnt/dom2/big.iso`,
    )
    .action(async (opts: UpOptions) => up(opts));
}

async function up(opts: UpOptions): Promise<void> {
  const config: PlatformConfig | undefined = opts.config ? await loadPlatformFile(opts.config) : undefined;
  const mountRoot = resolve(opts.mountRoot);
  const say = (text: string, json: object) => console.log(opts.json ? JSON.stringify(json) : text);
  const onEvent = (e: NewEvent) => {
    if (e.type === 'revoke') return; // counted in the status line; the log has them all
    if (opts.json) console.log(JSON.stringify({ event: e.type, domain: e.domain, detail: e.detail }));
    else process.stderr.write(`${clearStatus()}[${e.type}] ${e.domain ? `${e.domain}: ` : ''}${e.detail ?? ''}\n`);
  };
  const running = await StoredPlatform.boot({ stateDir: opts.state, config, onEvent });
  // The control socket of hvshare ls, cat, cp, diff, check and locks.
  const control = await ControlServer.listen(running).catch(async (err: Error) => {
    await running.shutdown('control socket failed');
    throw new CliError(`control socket in ${opts.state}: ${err.message}`);
  });
  const views: MountedView[] = [];
  // A crashed domain is booted again by the toolstack; its view carries on with the new instance.
  running.onRestart((domain) => views.find((v) => v.domain.name === domain.name)?.rebind(domain));
  let status: NodeJS.Timeout | undefined;
  let stopping: Promise<boolean> | undefined;
  // A second signal forces every step still waiting at once; each step also has a deadline of its own.
  const force = new AbortController();
  let clean = true;
  const deadline: StopDeadline = {
    stepMs: stopStepMs(),
    force: force.signal,
    onForced: (what) => {
      clean = false;
      process.stderr.write(`${clearStatus()}hvshare: stop: ${what}\n`);
    },
  };
  /** Resolves true when every step finished in time. */
  const stop = (reason: string) =>
    (stopping ??= (async () => {
      clearInterval(status);
      say(`${clearStatus()}stopping (${reason}): each step within ${deadline.stepMs} ms; a second Ctrl-C forces it`, { stopping: true, reason, stepMs: deadline.stepMs });
      // A stop that outlives every deadline (something blocks what the deadlines race against) still ends: by a
      // timer here, or, when this thread is stuck and no timer of it can fire, killed by the watchdog's thread.
      const everyDeadline = 8 * deadline.stepMs + 5000;
      setTimeout(() => {
        process.stderr.write('hvshare: stop: still not done after every deadline; exiting\n');
        process.exit(1);
      }, everyDeadline).unref();
      armStopWatchdog(
        everyDeadline + STUCK_GRACE_MS,
        `${clearStatus()}hvshare: stop: the main thread is stuck (no deadline could fire for ${everyDeadline + STUCK_GRACE_MS} ms); killing the process (the next up replays the journals)\n`,
      );
      stuckForTests();
      await control.close();
      for (const view of views.reverse()) {
        await stopStep(deadline, `${view.mountpoint}: unmount`, view.unmount(), () => detachLazily(view.mountpoint));
      }
      await running.shutdown(reason, deadline);
      process.stderr.write(clearStatus());
      say('stopped', { stopped: true, reason, clean });
      return clean;
    })());
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      if (force.signal.aborted) return;
      process.stderr.write(`${clearStatus()}hvshare: ${signal} again: forcing the stop (the next up replays what was committed)\n`);
      force.abort();
      return;
    }
    void stop(signal).then((clean) => process.exit(force.signal.aborted ? 130 : clean ? 0 : 1));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const problems = (await Promise.all(running.domains().map((d) => mountPointProblem(join(mountRoot, d.name))))).filter((p) => p !== null);
    if (problems.length > 0) throw new CliError(problems.join('\n'));
    for (const domain of running.domains()) {
      const mountpoint = join(mountRoot, domain.name);
      // Mounted read-write on the host even for a read-only grant: the monitor is the one that refuses writes.
      const readOnly = domain.spec.grants[0]?.readOnly ?? true;
      views.push(await mountDomain(domain, mountpoint, { cache: opts.cache, private: opts.private, devices: opts.devices }));
      const cache = formatCacheMode(opts.cache);
      say(`${domain.name}: mounted at ${mountpoint} (${readOnly ? 'read-only' : 'read-write'}, cache ${cache})`, { domain: domain.name, mountpoint, readOnly, cache });
    }
  } catch (err) {
    await stop('mount failed');
    throw err;
  }
  say('ready', { ready: true, state: resolve(opts.state), mountRoot, pid: process.pid });
  if (opts.status && !opts.json) status = startStatusLine(running);
}

let statusShown = false;
function clearStatus(): string {
  if (!statusShown) return '';
  statusShown = false;
  return '\r\x1b[K';
}

/**
 * Requests/s, vIRQs/s and lock revocations on stderr: one line redrawn every second on a terminal; otherwise (a log
 * file) a line every ten seconds, and none while nothing happens.
 */
function startStatusLine(running: StoredPlatform): NodeJS.Timeout {
  let before = running.totals();
  let t0 = Date.now();
  let shown = '';
  const timer = setInterval(() => {
    const now = running.totals();
    const secs = (Date.now() - t0) / 1000;
    t0 = Date.now();
    const per = (k: keyof typeof now) => (now[k] - before[k]) / secs;
    const line =
      `${running.domains().length} domains  ${rate(per('REQUESTS'))} req/s  ${rate(per('VIRQS'))} vIRQ/s  ` +
      `${(per('READ_BYTES') / 2 ** 20).toFixed(1)} MiB/s read  ${(per('WRITE_BYTES') / 2 ** 20).toFixed(1)} MiB/s written  ` +
      `${now.REVOKES} revocations`;
    before = now;
    if (line === shown) return;
    shown = line;
    if (process.stderr.isTTY) {
      process.stderr.write(`\r\x1b[K${line}`);
      statusShown = true;
    } else {
      process.stderr.write(`${line}\n`);
    }
  }, process.stderr.isTTY ? 1000 : 10_000);
  timer.unref();
  return timer;
}
