import { spawn, type ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const HVSHARE = fileURLToPath(new URL('../../bin/hvshare.js', import.meta.url));
export const run = promisify(execFile);

/** Run a shell command asynchronously (never a sync call: our own FUSE handlers may have to answer it). */
export async function sh(command: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('sh', ['-c', command], { maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

export async function hvshare(...args: string[]) {
  return sh(['node', HVSHARE, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' '));
}

/** `hvshare up --json` as a child process; resolves once it printed {"ready":true}. */
export async function startUp(
  state: string,
  mountRoot: string,
  env: NodeJS.ProcessEnv = {},
  extraArgs: string[] = [],
): Promise<{ child: ChildProcess; lines: Record<string, unknown>[]; stderr: () => string }> {
  const child = spawn('node', [HVSHARE, 'up', '--state', state, '--mount-root', mountRoot, '--json', ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const lines: Record<string, unknown>[] = [];
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const msg = JSON.parse(line) as Record<string, unknown>;
      lines.push(msg);
      if (msg.ready) resolve();
    });
    child.once('exit', (code) => reject(new Error(`hvshare up exited with ${code} before ready: ${stderr}`)));
  });
  await ready;
  return { child, lines, stderr: () => stderr };
}

export async function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const [code] = (await once(child, 'exit')) as [number | null];
  return code;
}

/** FUSE (and other) mounts under `root`, from /proc/mounts. */
export async function fuseMountsUnder(root: string): Promise<string[]> {
  const { stdout } = await sh('cat /proc/mounts');
  return stdout.split('\n').map((l) => l.split(' ')[1]).filter((m) => m?.startsWith(root));
}

/**
 * `hvshare up --json` in a temp folder of its own, for the tests of one file: `start()` in test.before,
 * `stop()` in test.after.always (stops it, lazily unmounts any view left, removes the folder).
 */
export function testPlatform(prefix: string, env: NodeJS.ProcessEnv = {}, config?: object) {
  let up: ChildProcess | undefined;
  const platform = {
    dir: '',
    state: '',
    mnt: '',
    upStderr: () => '',
    async start(): Promise<void> {
      platform.dir = await mkdtemp(join(tmpdir(), prefix));
      platform.state = join(platform.dir, 'state');
      platform.mnt = join(platform.dir, 'mnt');
      const args: string[] = [];
      if (config) {
        await writeFile(join(platform.dir, 'platform.json'), JSON.stringify(config));
        args.push('--config', join(platform.dir, 'platform.json'));
      }
      const started = await startUp(platform.state, platform.mnt, env, args);
      up = started.child;
      platform.upStderr = started.stderr;
    },
    async stop(): Promise<void> {
      up?.kill('SIGTERM');
      if (up) await exited(up);
      for (const m of await fuseMountsUnder(platform.mnt)) await sh(`fusermount -uz '${m}'`);
      await rm(platform.dir, { recursive: true, force: true });
    },
    /** An hvshare command against this platform. */
    cli: (...args: string[]) => hvshare(...args, '--state', platform.state),
  };
  return platform;
}
