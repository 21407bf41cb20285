import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { O_CREAT, O_TRUNC, O_WRONLY, S_IFREG, type Vfs } from '../fs/vfs.js';
import type { DomainSummary } from '../hypervisor/control-protocol.js';
import { median, p99 } from './bench-stats.js';
import { childPath, domainTree } from './tree-source.js';
import type { PlatformClient } from './platform-client.js';

export interface CheckOptions {
  /** The domains taking part (writers are the read-write ones among them). */
  domains: DomainSummary[];
  sizes: number[];
  /** Rounds run until this many ms have passed (at least one round). */
  durationMs: number;
  /** The probe folder, created for the run and removed after it. */
  dir: string;
  /** How long a reader may take to see a change before that probe counts as an error. */
  visibleWithinMs: number;
  /** Stops the run early (an interrupt); the probe folder is still removed. */
  signal: AbortSignal;
}

/** What one reader saw of one writer's probes. */
export interface PairReport {
  writer: string;
  reader: string;
  /** Changes looked for: each probe's creation, its rename and its unlink. */
  probes: number;
  /** Time from the writer's fsync (or rename, unlink) returning to the reader seeing it, in ms. */
  latencyMs: { median: number; p99: number } | null;
  /** Reads that saw the whole file under its name with other bytes than were written. */
  mismatches: number;
  errors: number;
  /** The first few mismatches and errors, each naming the probe. */
  problems: string[];
}

export interface CheckReport {
  rounds: number;
  sizes: number[];
  pairs: PairReport[];
}

const CHUNK = 1 << 20;
const MAX_PROBLEMS = 5;

class Pair {
  readonly latencies: number[] = [];
  mismatches = 0;
  errors = 0;
  readonly problems: string[] = [];
  probes = 0;
  constructor(
    readonly writer: string,
    readonly reader: string,
  ) {}

  problem(text: string): void {
    if (this.problems.length < MAX_PROBLEMS) this.problems.push(text);
  }

  report(): PairReport {
    const latencyMs = this.latencies.length ? { median: median(this.latencies), p99: p99(this.latencies) } : null;
    const { writer, reader, probes, mismatches, errors, problems } = this;
    return { writer, reader, probes, latencyMs, mismatches, errors, problems };
  }
}

async function writeProbe(vfs: Vfs, path: string, data: Uint8Array): Promise<void> {
  const fh = await vfs.create(path, S_IFREG | 0o644, O_CREAT | O_WRONLY | O_TRUNC);
  try {
    for (let at = 0; at < data.length; at += CHUNK) await vfs.write(fh, at, data.slice(at, at + CHUNK));
    await vfs.fsync(fh, false);
  } finally {
    await vfs.release(fh);
  }
}

async function readAll(vfs: Vfs, reader: string, path: string): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of domainTree(reader, vfs).chunks(path)) parts.push(chunk);
  return Buffer.concat(parts);
}

const missing = (err: unknown) => (err as { code?: string }).code === 'ENOENT';

/**
 * Waits until `reader` sees `path` as expected (absent, or present with `data`'s size), then reads it and
 * compares the bytes; records the latency, a mismatch or an error in `pair`.
 */
async function observe(pair: Pair, vfs: Vfs, path: string, data: Uint8Array | null, since: number, options: CheckOptions): Promise<void> {
  pair.probes++;
  const deadline = since + options.visibleWithinMs;
  for (;;) {
    try {
      const stat = await vfs.getattr(path).catch((err) => {
        if (missing(err)) return null;
        throw err;
      });
      const seen = data === null ? stat === null : stat !== null && stat.size === data.length;
      if (seen) {
        const latency = performance.now() - since;
        if (data !== null) {
          const content = await readAll(vfs, pair.reader, path);
          if (!content.equals(data)) {
            pair.mismatches++;
            pair.problem(`${path}: ${pair.reader} read other bytes than ${pair.writer} wrote (${content.length} of ${data.length} bytes read)`);
            return;
          }
        }
        pair.latencies.push(latency);
        return;
      }
    } catch (err) {
      pair.errors++;
      pair.problem(`${path}: ${(err as Error).message}`);
      return;
    }
    if (performance.now() > deadline) {
      pair.errors++;
      pair.problem(`${path}: ${data === null ? 'still there' : 'not there in full'} ${options.visibleWithinMs} ms after ${pair.writer} changed it`);
      return;
    }
  }
}

/**
 * The consistency check of a running platform: through every read-write domain, probe files of each size with
 * random content are written and fsynced, then read back through every other domain (read-only ones included);
 * renamed, and checked again; unlinked, and checked gone.
 */
export async function runCheck(client: PlatformClient, options: CheckOptions): Promise<CheckReport> {
  const writers = options.domains.filter((d) => !d.readOnly);
  const pairs = writers.flatMap((w) => options.domains.filter((r) => r.name !== w.name).map((r) => new Pair(w.name, r.name)));
  const admin = client.vfs(writers[0].name);
  await admin.mkdir(options.dir, 0o755);
  let rounds = 0;
  try {
    const started = performance.now();
    do {
      rounds++;
      for (const writer of writers) {
        const vfs = client.vfs(writer.name);
        const readers = pairs.filter((p) => p.writer === writer.name);
        const seeAll = (path: string, data: Uint8Array | null, since: number) =>
          Promise.all(readers.map((p) => observe(p, client.vfs(p.reader), path, data, since, options)));
        for (const size of options.sizes) {
          if (options.signal.aborted) return { rounds, sizes: options.sizes, pairs: pairs.map((p) => p.report()) };
          const data = randomBytes(size);
          const path = childPath(options.dir, `${writer.name}-${rounds}-${size}`);
          await writeProbe(vfs, path, data);
          await seeAll(path, data, performance.now());
          await vfs.rename(path, `${path}.renamed`);
          let since = performance.now();
          await seeAll(`${path}.renamed`, data, since);
          await seeAll(path, null, since);
          await vfs.unlink(`${path}.renamed`);
          since = performance.now();
          await seeAll(`${path}.renamed`, null, since);
        }
      }
    } while (performance.now() - started < options.durationMs && !options.signal.aborted);
    return { rounds, sizes: options.sizes, pairs: pairs.map((p) => p.report()) };
  } finally {
    await removeProbes(admin, options.dir);
  }
}

/** Removes the probe folder and whatever is left in it. */
export async function removeProbes(vfs: Vfs, dir: string): Promise<void> {
  const names = await vfs.readdir(dir).catch(() => [] as string[]);
  for (const name of names) if (name !== '.' && name !== '..') await vfs.unlink(childPath(dir, name)).catch(() => {});
  await vfs.rmdir(dir).catch(() => {});
}
