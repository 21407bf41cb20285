/**
 * Crash consistency: run a workload on a real image file through a recording device, then rebuild the image as
 * a crash could have left it at many points of the write stream (every prefix at flush boundaries and a sample
 * of the others, plus random subsets of the writes not yet flushed: the reorderings a disk cache may do). Each
 * rebuilt image must fsck clean as found (journals read through), mount (replaying the journal), keep every
 * file whose fsync returned before the crash intact, and fsck clean (no warnings) after unmount; fsck checks every
 * data block against its checksum, and committed data is rewritten too, uncommitted when the cut comes. A second run has
 * two instances (two journals, committing at the same time, handing directory locks back and forth) on one
 * stream; the instance that mounts after the crash replays both.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { FileSystem } from '../fs/filesystem.js';
import { fsck } from '../fs/fsck.js';
import { LocalLockService } from '../fs/local-lock-service.js';
import { mkfs } from '../fs/mkfs.js';
import { O_RDONLY } from '../fs/vfs.js';
import { apply, MemoryBlockDevice, pieces, RecordingBlockDevice, type Piece } from './fs-recording-device.js';
import { patternBytes, rng, SMALL_FS, tempImage } from './fs-helpers.js';

interface Acked {
  path: string;
  data: Uint8Array;
}

async function workload(dev: RecordingBlockDevice, seed: number, acked: Map<string, Acked>, instances: number): Promise<void> {
  const locks = new LocalLockService();
  const mounted: FileSystem[] = [];
  for (let n = 0; n < instances; n++) mounted.push(await FileSystem.mount(dev, { slot: 1 + n, locks: locks.client(), commitIntervalMs: 0 }));
  for (const d of ['/d0', '/d1', '/d2']) await mounted[0].mkdir(d, 0o755);
  await Promise.all(mounted.map((fs, n) => steps(fs, dev, seed + n, acked, `i${n}`, Math.ceil(24 / instances))));
  for (const fs of mounted) await fs.unmount();
}

/** One instance's part of the workload; names carry `tag`, directories /d0../d2 are shared. */
async function steps(fs: FileSystem, dev: RecordingBlockDevice, seed: number, acked: Map<string, Acked>, tag: string, count: number): Promise<void> {
  const random = rng(seed);
  let scratch = 0;
  for (let i = 0; i < count; i++) {
    const path = `/d${i % 3}/${tag}f${i}`;
    const data = patternBytes(1 + Math.floor(random() * 150_000), seed * 1000 + i);
    const fh = await fs.create(path, 0o644);
    let at = 0;
    while (at < data.length) {
      const n = Math.min(data.length - at, 1 + Math.floor(random() * 70_000));
      await fs.write(fh, at, data.subarray(at, at + n));
      at += n;
    }
    if (random() < 0.7) {
      await fs.fsync(fh, false);
      const label = `fsync ${path}`;
      dev.mark(label);
      acked.set(label, { path, data });
    }
    await fs.release(fh);
    // Unacknowledged churn around the durable files.
    const s = `/${tag}scratch${scratch++}`;
    const sh = await fs.create(s, 0o600);
    await fs.write(sh, 0, patternBytes(Math.floor(random() * 60_000), i));
    if (random() < 0.5) {
      // Committed data rewritten: a cut before the next commit must leave the old data under the old checksums.
      await fs.fsync(sh, false);
      await fs.write(sh, 1000, patternBytes(9000, i + 500));
    }
    if (random() < 0.5) await fs.truncate(s, Math.floor(random() * 9000));
    await fs.release(sh);
    if (random() < 0.4) await fs.rename(s, `/d${(i + 1) % 3}/${tag}moved${i}`);
    else if (random() < 0.5) await fs.unlink(s);
    if (random() < 0.3) {
      await fs.mkdir(`/${tag}tmpdir${i}`, 0o755);
      if (random() < 0.5) await fs.rmdir(`/${tag}tmpdir${i}`);
    }
    if (i % 7 === 6) {
      // An unlinked file still open across a commit: it sits on the orphan list.
      const o = await fs.create(`/${tag}open${i}`, 0o644);
      await fs.write(o, 0, patternBytes(20_000, i));
      await fs.unlink(`/${tag}open${i}`);
      await fs.fsync(o, false);
      await fs.release(o);
    }
  }
}

async function checkImage(image: Uint8Array, ackedLabels: string[], acked: Map<string, Acked>, where: string): Promise<string | null> {
  const dev = new MemoryBlockDevice(image);
  const before = await fsck(dev);
  if (!before.ok) return `${where}: fsck before recovery: ${before.errors.slice(0, 5).join('; ')}`;
  let fs: FileSystem;
  try {
    // Slot 0 was never used: mounting it replays whatever the workload's slots left committed.
    fs = await FileSystem.mount(dev, { slot: 0, locks: new LocalLockService().client(), commitIntervalMs: 0 });
  } catch (error) {
    return `${where}: mount failed: ${String(error)}`;
  }
  for (const label of ackedLabels) {
    const { path, data } = acked.get(label)!;
    try {
      const fh = await fs.open(path, O_RDONLY);
      const got = await fs.read(fh, 0, data.length + 100);
      await fs.release(fh);
      if (!Buffer.from(got).equals(Buffer.from(data))) return `${where}: ${path} (acknowledged by fsync) has ${got.length} bytes, differs`;
    } catch (error) {
      return `${where}: ${path} (acknowledged by fsync) unreadable: ${String(error)}`;
    }
  }
  await fs.unmount();
  const after = await fsck(dev);
  if (!after.ok || after.warnings.length > 0) return `${where}: fsck after recovery: ${[...after.errors, ...after.warnings].slice(0, 5).join('; ')}`;
  return null;
}

const seed = process.env.HVSHARE_SEED ? Number(process.env.HVSHARE_SEED) : Date.now() % 100000;

for (const instances of [1, 2]) {
  test(`crash at many points of the write stream of ${instances} instance(s), with reorderings (seed ${seed})`, async (t) => {
    t.timeout(120_000);
    const temp = await tempImage(10 << 20);
    try {
      const file = await FileBlockDevice.open(temp.path);
      await mkfs(file, SMALL_FS);
      await file.flush();
      const base = new Uint8Array(await readFile(temp.path));
      const dev = new RecordingBlockDevice(file);
      const acked = new Map<string, Acked>();
      await workload(dev, seed, acked, instances);
      await dev.close();
      const final = new Uint8Array(await readFile(temp.path));

      const log = dev.log;
      const random = rng(seed + 1);
      const writes = log.filter((e) => e.kind === 'write').length;
      const flushes = log.filter((e) => e.kind === 'flush').length;
      t.true(acked.size > 5 && writes > 100 && flushes > 30, `workload too small: ${acked.size} fsyncs, ${writes} writes, ${flushes} flushes`);

      const image = base.slice();
      let flushedImage = base.slice();
      let epoch: Piece[] = [];
      const ackedLabels: string[] = [];
      let checked = 0;
      let reordered = 0;
      const failures: string[] = [];
      for (let cut = 0; cut <= log.length && failures.length === 0; cut++) {
        const previous = log[cut - 1];
        const atFlush = previous?.kind === 'flush';
        const sampled = atFlush || cut === log.length || random() < 0.8;
        if (sampled) {
          checked++;
          const problem = await checkImage(image.slice(), ackedLabels, acked, `cut ${cut}/${log.length}`);
          if (problem) failures.push(problem);
        }
        if (epoch.length > 1 && random() < 0.5) {
          // Some of the unflushed writes reached the disk, in any order, and others did not.
          reordered++;
          const variant = flushedImage.slice();
          for (const piece of epoch) if (random() < 0.5) apply(variant, piece);
          const problem = await checkImage(variant, ackedLabels, acked, `cut ${cut} with a subset of ${epoch.length} unflushed blocks`);
          if (problem) failures.push(problem);
        }
        const entry = log[cut];
        if (!entry) break;
        if (entry.kind === 'write') {
          for (const piece of pieces(entry)) {
            apply(image, piece);
            epoch.push(piece);
          }
        } else if (entry.kind === 'flush') {
          flushedImage = image.slice();
          epoch = [];
        } else {
          ackedLabels.push(entry.label);
        }
      }
      t.deepEqual(failures, [], `replay with HVSHARE_SEED=${seed}`);
      t.true(Buffer.from(image).equals(Buffer.from(final)), 'replaying the whole stream gives the final image');
      t.true(checked > 50 && reordered > 10, `checked ${checked}, reordered ${reordered}`);
      t.log(`${log.length} stream entries (${writes} writes, ${flushes} flushes), ${checked} cuts and ${reordered} reorderings checked, ${acked.size} fsyncs`);
      // The final image is fine on a real file too.
      const real = await FileBlockDevice.open(temp.path);
      const report = await fsck(real);
      await real.close();
      t.deepEqual([...report.errors, ...report.warnings], []);
    } finally {
      await temp.cleanup();
    }
  });
}
