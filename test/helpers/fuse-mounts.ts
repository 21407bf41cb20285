/**
 * Real FUSE mounts of a platform's domains for end-to-end tests, and real tools run against them.
 *
 * The FUSE handlers run on the test process's main thread, so nothing may touch a mount synchronously
 * (fs.*Sync, execSync): every tool is spawned asynchronously and the event loop stays free to serve it.
 * Not even spawn's `cwd` may point into a mount (libuv's fork path chdirs while the parent thread is held, and
 * both hang for good): tools `cd` themselves.
 */
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { DomainHandle } from '../../hypervisor/toolstack.js';
import { isMounted, mountDomain, type MountedView, type MountOptions } from '../../mount/index.js';
import { bootPlatform, MiB, tempDir } from './platform.js';
import { formattedImage, fsckImage } from './volume.js';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a tool asynchronously; never throws on a non-zero exit (tests assert on the code). */
export function run(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    // A tool that exits without reading its input closes the pipe first (EPIPE): its exit code tells the story.
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}

export const sh = (script: string, options: Parameters<typeof run>[2] = {}) => run('/bin/sh', ['-c', script], options);
/** `script` run in `dir` (the shell changes directory itself; see the top of the file). */
export const shIn = (dir: string, script: string) => sh(`cd '${dir}' && ${script}`);

/** Assert a zero exit and give stdout back. */
export async function ok(t: ExecutionContext, result: Promise<RunResult>, what: string): Promise<string> {
  const r = await result;
  t.is(r.code, 0, `${what} failed (${r.code}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

export interface DomainMount {
  domain: DomainHandle;
  view: MountedView;
  /** The mount point. */
  dir: string;
}

/**
 * A platform on a freshly formatted volume, with the requested domains booted and each mounted on the host.
 * Teardown (registered after the platform's, so it runs first) unmounts every view.
 */
export async function mountedPlatform(
  t: ExecutionContext,
  specs: { name: string; slot: number; readOnly?: boolean; mount?: MountOptions }[],
  imageBytes = 96 * MiB,
) {
  const dir = await tempDir(t, 'hvshare-fuse-');
  const image = await formattedImage(dir, imageBytes);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image }] });
  const views: MountedView[] = [];
  t.teardown(async () => {
    await Promise.all(views.map((v) => v.unmount().catch(() => {})));
  });
  const mounts: Record<string, DomainMount> = {};
  for (const spec of specs) {
    const domain = await platform.createDomain({
      name: spec.name,
      memoryBytes: 48 * MiB,
      grants: [{ volume: 'shared', readOnly: !!spec.readOnly }],
      filesystem: { slot: spec.slot },
    });
    const mnt = join(dir, `mnt-${spec.name}`);
    const view = await mountDomain(domain, mnt, spec.mount ?? {});
    views.push(view);
    mounts[spec.name] = { domain, view, dir: mnt };
  }
  /** Unmount everything, check nothing is left in /proc/mounts, shut the platform down and fsck the image. */
  const finish = async () => {
    await Promise.all(views.map((v) => v.unmount()));
    for (const v of views) t.false(await isMounted(v.mountpoint), `${v.mountpoint} left in /proc/mounts`);
    await platform.shutdown();
    const report = await fsckImage(image);
    t.true(report.ok, `fsck after the run: ${report.errors.join('\n')}`);
  };
  /** One more view of a domain already booted here (a second mount, with its own options), unmounted by finish. */
  const mountAgain = async (name: string, mount: MountOptions): Promise<string> => {
    const mnt = join(dir, `mnt-${name}-${views.length}`);
    views.push(await mountDomain(mounts[name]!.domain, mnt, mount));
    return mnt;
  };
  return { dir, image, platform, mounts, finish, mountAgain };
}

export const rw2 = [
  { name: 'dom1', slot: 0 },
  { name: 'dom2', slot: 1 },
];

/**
 * A Node.js process that runs `script` with `file` as its first argument and holds still: resolves once its output
 * shows `ready`. The script goes on when a line reaches its stdin (`go`), which resolves with its whole output
 * once it exited. For a reader that keeps a file of a mount open while something changes it.
 */
export async function heldReader(script: string, file: string, ready: string): Promise<{ go(): Promise<string> }> {
  const child = spawn(process.execPath, ['-e', script, file], { stdio: ['pipe', 'pipe', 'inherit'] });
  let output = '';
  child.stdout.setEncoding('utf8');
  const exited = new Promise((resolve) => child.on('close', resolve));
  await new Promise<void>((resolve) =>
    child.stdout.on('data', (s: string) => {
      output += s;
      if (output.includes(ready)) resolve();
    }),
  );
  return {
    go: async () => {
      child.stdin.write('go\n');
      await exited;
      return output;
    },
  };
}
