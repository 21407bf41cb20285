/**
 * Crash consistency: run a workload on a real image file through a recording device, then rebuild the image as
 * a crash could have left it at many points of the write stream (every prefix at flush boundaries and a sample
 * of the others, plus random subsets of the writes not yet flushed: the reorderings a disk cache may do). Each
 * rebuilt image must fsck clean as found (journals read through), mount (replaying the journal), keep every
 * file whose fsync returned before the crash intact, and fsck clean (no warnings) after unmount; fsck checks every
 * data block against its checksum, and committed data is rewritten too, uncommitted when the cut comes. A second run has
 * two instances (two journals, committing at the same time, handing directory locks back and forth) on one
 * stream; the instance that mounts after the crash replays both. A third hands one file and one directory back
 * and forth between two instances and cuts between every two device writes: whatever a reader saw when the lock
 * reached it was durable then (the journal rule), so every cut after it must still show it.
 */
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { FileSystem } from '../fs/filesystem.js';
import { fsck } from '../fs/fsck.js';
import { LocalLockService } from '../fs/local-lock-service.js';
import { mkfs } from '../fs/mkfs.js';
import { O_CREAT, O_RDONLY, O_TRUNC, O_WRONLY } from '../fs/vfs.js';
import { apply, MemoryBlockDevice, pieces, RecordingBlockDevice, SerialBlockDevice, type Piece, type Recorded } from './fs-recording-device.js';
import { patternBytes, rng, SMALL_FS, tempImage } from './fs-helpers.js';
import type { ExecutionContext } from 'ava';

interface Acked {
  path: string;
  data: Uint8Array;
  /** What a later change (not yet acknowledged) may have left there instead. */
  orLater?: Uint8Array[];
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
  // A path acknowledged again (rewritten, handed over again) must hold what its last acknowledgement saw.
  const last = new Map(ackedLabels.map((label) => [acked.get(label)!.path, label]));
  for (const label of last.values()) {
    const { path, data, orLater = [] } = acked.get(label)!;
    try {
      const fh = await fs.open(path, O_RDONLY);
      const got = await fs.read(fh, 0, Math.max(data.length, ...orLater.map((d) => d.length)) + 100);
      await fs.release(fh);
      if (![data, ...orLater].some((d) => Buffer.from(got).equals(Buffer.from(d)))) return `${where}: ${path} (acknowledged by fsync) has ${got.length} bytes, differs`;
    } catch (error) {
      return `${where}: ${path} (acknowledged by fsync) unreadable: ${String(error)}`;
    }
  }
  await fs.unmount();
  const after = await fsck(dev);
  if (!after.ok || after.warnings.length > 0) return `${where}: fsck after recovery: ${[...after.errors, ...after.warnings].slice(0, 5).join('; ')}`;
  return null;
}

/**
 * Rebuilds the image at cuts of the recorded stream (every cut with `everyCut`, else every flush boundary and a
 * sample of the others) and, at about half of them, with a random subset of the writes not yet flushed; checks
 * each (checkImage). Fails the test on the first bad one; returns the counts and the image after the whole stream.
 */
async function checkCuts(t: ExecutionContext, base: Uint8Array, log: Recorded[], acked: Map<string, Acked>, random: () => number, everyCut: boolean) {
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
    const sampled = everyCut || atFlush || cut === log.length || random() < 0.8;
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
  return { checked, reordered, image };
}

const seed = process.env.HVSHARE_SEED ? Number(process.env.HVSHARE_SEED) : Date.now() % 100000;

/**
 * Runs `run` on a freshly formatted scratch image through a recording device and hands `check` the image before,
 * the recorded stream, what was acknowledged, the image after and the image file (removed afterwards).
 */
async function recorded(
  device: Device,
  run: (dev: RecordingBlockDevice, acked: Map<string, Acked>) => Promise<void>,
  check: (base: Uint8Array, log: Recorded[], acked: Map<string, Acked>, final: Uint8Array, path: string) => Promise<void>,
): Promise<void> {
  const temp = await tempImage(10 << 20);
  try {
    const file = await FileBlockDevice.open(temp.path);
    await mkfs(file, SMALL_FS);
    await file.flush();
    const base = new Uint8Array(await readFile(temp.path));
    const dev = new RecordingBlockDevice(device === 'ordered' ? new SerialBlockDevice(file) : file);
    const acked = new Map<string, Acked>();
    await run(dev, acked);
    await dev.close();
    await check(base, dev.log, acked, new Uint8Array(await readFile(temp.path)), temp.path);
  } finally {
    await temp.cleanup();
  }
}

/**
 * The host's file device waits between a commit's steps; an ordered device (the guest's ring) gets them all at
 * once, with a lock's release behind them (journal.ts, transactions.ts).
 */
type Device = 'file' | 'ordered';
const DEVICE_NAMES: Record<Device, string> = { file: "the host's file device", ordered: 'an ordered device, as in a guest' };

for (const [instances, device] of [[1, 'file'], [2, 'ordered']] as const) {
  test(`crash at many points of the write stream of ${instances} instance(s) on ${DEVICE_NAMES[device]}, with reorderings (seed ${seed})`, async (t) => {
    t.timeout(120_000);
    await recorded(device, (dev, acked) => workload(dev, seed, acked, instances), async (base, log, acked, final, path) => {
      const writes = log.filter((e) => e.kind === 'write').length;
      const flushes = log.filter((e) => e.kind === 'flush').length;
      t.true(acked.size > 5 && writes > 100 && flushes > 30, `workload too small: ${acked.size} fsyncs, ${writes} writes, ${flushes} flushes`);

      const { checked, reordered, image } = await checkCuts(t, base, log, acked, rng(seed + 1), false);
      t.true(Buffer.from(image).equals(Buffer.from(final)), 'replaying the whole stream gives the final image');
      t.true(checked > 50 && reordered > 10, `checked ${checked}, reordered ${reordered}`);
      t.log(`${log.length} stream entries (${writes} writes, ${flushes} flushes), ${checked} cuts and ${reordered} reorderings checked, ${acked.size} fsyncs`);
      // The final image is fine on a real file too.
      const real = await FileBlockDevice.open(path);
      const report = await fsck(real);
      await real.close();
      t.deepEqual([...report.errors, ...report.warnings], []);
    });
  });
}

/**
 * Two instances take turns with one file and one directory: the writer rewrites /h/f (O_TRUNC: its blocks are
 * freed and others allocated) and creates /h/n<round>, then the reader, which wants the locks the writer holds
 * exclusively, reads both. What the reader saw was durable when the lock reached it; /h/f may since show a later
 * round's rewrite (truncated, or whole), never anything older.
 */
async function handovers(dev: RecordingBlockDevice, acked: Map<string, Acked>, rounds: number): Promise<void> {
  const locks = new LocalLockService();
  const a = await FileSystem.mount(dev, { slot: 1, locks: locks.client(), commitIntervalMs: 0, minHoldMs: 0 });
  const b = await FileSystem.mount(dev, { slot: 2, locks: locks.client(), commitIntervalMs: 0, minHoldMs: 0 });
  await a.mkdir('/h', 0o755);
  const versions = Array.from({ length: rounds }, (_, round) => patternBytes(1000 + round * 3000, round));
  for (let round = 0; round < rounds; round++) {
    const [writer, reader] = round % 2 === 0 ? [a, b] : [b, a];
    const data = versions[round];
    const put = async (path: string) => {
      const fh = await writer.create(path, 0o644, O_WRONLY | O_CREAT | O_TRUNC);
      await writer.write(fh, 0, data);
      await writer.release(fh);
    };
    await put('/h/f');
    await put(`/h/n${round}`);
    for (const path of ['/h/f', `/h/n${round}`]) {
      const fh = await reader.open(path, O_RDONLY);
      const got = await reader.read(fh, 0, data.length + 1);
      await reader.release(fh);
      if (!Buffer.from(got).equals(Buffer.from(data))) throw new Error(`round ${round}: ${path} read stale data`);
      const label = `handed over ${path} in round ${round}`;
      dev.mark(label);
      acked.set(label, { path, data, orLater: path === '/h/f' ? [new Uint8Array(0), ...versions.slice(round + 1)] : [] });
    }
  }
  await a.unmount();
  await b.unmount();
}

for (const device of ['file', 'ordered'] as const) test(`crash between any two device writes of lock handovers between two instances on ${DEVICE_NAMES[device]} (seed ${seed})`, async (t) => {
  t.timeout(120_000);
  await recorded(device, (dev, acked) => handovers(dev, acked, 8), async (base, log, acked, final) => {
    const writes = log.filter((e) => e.kind === 'write').length;
    const { checked, reordered, image } = await checkCuts(t, base, log, acked, rng(seed + 2), true);
    t.is(checked, log.length + 1, 'every cut checked');
    t.true(acked.size === 16 && reordered > 10, `${acked.size} handovers, ${reordered} reorderings`);
    t.true(Buffer.from(image).equals(Buffer.from(final)), 'replaying the whole stream gives the final image');
    t.log(`${log.length} stream entries (${writes} writes), every cut and ${reordered} reorderings checked, ${acked.size} handovers`);
  });
});
