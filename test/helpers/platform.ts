import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Platform, type PlatformOptions } from '../../hypervisor/toolstack.js';

/** A temp folder removed when the test ends. */
export async function tempDir(t: { teardown(fn: () => Promise<void>): void }, prefix = 'hvshare-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A volume image of `bytes` filled with random data (so reads of unwritten blocks are recognisable). */
export async function randomImage(dir: string, bytes: number, name = 'volume.img'): Promise<{ path: string; contents: Buffer }> {
  const path = join(dir, name);
  const contents = randomBytes(bytes);
  await writeFile(path, contents);
  return { path, contents };
}

/** Boot a platform that is shut down when the test ends. */
export async function bootPlatform(
  t: { teardown(fn: () => Promise<void>): void },
  options: PlatformOptions,
): Promise<Platform> {
  const platform = await Platform.boot(options);
  t.teardown(() => platform.shutdown());
  return platform;
}

export const MiB = 1 << 20;
