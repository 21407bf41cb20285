import { constants } from 'node:os';

/** errno number (positive or negative, as libuv reports it) -> its name, e.g. 28 -> "ENOSPC". */
const NAMES = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** The name of an errno (either sign), or "errno N" when the platform has none for it. */
export function errnoName(errno: number): string {
  return NAMES.get(Math.abs(errno)) ?? `errno ${errno}`;
}

/**
 * What a backend's exception says, for the event log: its errno's name and number when it has one (Node's system
 * errors do, and I/O threads pass on only the number), then its message.
 */
export function describeBackendError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.errno === 'number') return `${e.code ?? errnoName(e.errno)} (errno ${Math.abs(e.errno)}): ${e.message}`;
  return e instanceof Error ? e.message : String(err);
}
