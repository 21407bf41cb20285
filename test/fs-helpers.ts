/** Shared helpers for the filesystem tests: temporary image files, formatting, mounting. */
import { mkdtemp, rm, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { mkfs, type MkfsOptions } from '../fs/mkfs.js';
import { FileSystem } from '../fs/filesystem.js';
import { LocalLockService } from '../fs/local-lock-service.js';
import { IoError, type BlockDevice } from '../fs/block-device.js';
import { BLOCK_SIZE } from '../fs/layout.js';
import { rng } from '../bin/bench-stats.js';

export interface TempImage {
  path: string;
  dir: string;
  cleanup(): Promise<void>;
}

export async function tempImage(sizeBytes: number): Promise<TempImage> {
  const dir = await mkdtemp(join(tmpdir(), 'hvshare-fs-'));
  const path = join(dir, 'volume.img');
  const handle = await open(path, 'w');
  await handle.truncate(sizeBytes);
  await handle.close();
  return { path, dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export const SMALL_FS: MkfsOptions = { slots: 4, journalBlocks: 128, blocksPerGroup: 2048 };

/** A formatted image with one mounted instance (slot 0). */
export async function freshVolume(sizeBytes = 32 << 20, options: MkfsOptions = SMALL_FS) {
  const image = await tempImage(sizeBytes);
  const dev = await FileBlockDevice.open(image.path);
  await mkfs(dev, options);
  const locks = new LocalLockService();
  const fs = await FileSystem.mount(dev, { slot: 0, locks: locks.client(), commitIntervalMs: 0 });
  return {
    image, dev, locks, fs,
    async close() {
      await fs.unmount().catch(() => {});
      await dev.close();
      await image.cleanup();
    },
  };
}

/** The errno of a rejected promise (fails if it resolves). */
export async function errno(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof IoError) return error.code;
    throw error;
  }
  return 'OK';
}

export const bytes = (text: string) => new TextEncoder().encode(text);
export const text = (data: Uint8Array) => new TextDecoder().decode(data);

/** Deterministic pseudo-random generator (mulberry32), shared with the benches. */
export { rng };

export function patternBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  const next = rng(seed);
  for (let i = 0; i < length; i += 4) {
    const v = (next() * 4294967296) >>> 0;
    out[i] = v;
    if (i + 1 < length) out[i + 1] = v >>> 8;
    if (i + 2 < length) out[i + 2] = v >>> 16;
    if (i + 3 < length) out[i + 3] = v >>> 24;
  }
  return out;
}

/** One block of a device, by address. */
export async function readBlock(dev: BlockDevice, address: number): Promise<Uint8Array> {
  const block = new Uint8Array(BLOCK_SIZE);
  await dev.read(address * BLOCK_SIZE, block);
  return block;
}
