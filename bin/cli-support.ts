import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A CLI failure: printed as `hvshare: message` and turned into a non-zero exit status. */
export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

let lastProgress = 0;

/** Progress on stderr at most five times a second, overwriting one line when stderr is a terminal. */
export function progressLine(text: string): void {
  const now = Date.now();
  if (now - lastProgress < 200) return;
  lastProgress = now;
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
  else process.stderr.write(`${text}\n`);
}

/** Where `hvshare up` keeps the platform store and images unless --state says otherwise. */
export const DEFAULT_STATE_DIR = 'state';
/** Where `hvshare up` mounts each domain's view unless --mount-root says otherwise. */
export const DEFAULT_MOUNT_ROOT = 'mnt';

export function endProgress(): void {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
}

/** Run `body` with a scratch folder (under `parent` when given), removed afterwards. */
export async function withScratchDir<T>(parent: string | undefined, body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(parent ?? tmpdir(), 'hvshare-bench-'));
  try {
    return await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Render rows as a plain aligned table. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

export function parseIntOption(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) throw new CliError(`${name} must be a positive whole number, not "${value}"`);
    return n;
  };
}
