/** Conversions and checks for the contract's time type (vfs.ts's Timespec and TimeChange). */
import { IoError } from './block-device.js';
import type { TimeChange, Timespec } from './vfs.js';

const NSEC_PER_SEC = 1e9;

/** A time in milliseconds (a clock's reading, possibly fractional) as seconds and nanoseconds. */
export function timespecFromMs(ms: number): Timespec {
  const sec = Math.floor(ms / 1000);
  return { sec, nsec: Math.min(NSEC_PER_SEC - 1, Math.floor((ms - sec * 1000) * 1e6)) };
}

/** A Timespec in range: sec a safe integer, nsec a whole number below 10^9. */
export function isValidTimespec(time: unknown): boolean {
  if (typeof time !== 'object' || time === null) return false;
  const { sec, nsec } = time as Timespec;
  return Number.isSafeInteger(sec) && Number.isInteger(nsec) && nsec >= 0 && nsec < NSEC_PER_SEC;
}

/** EINVAL for anything but an exact time in range, 'now' or null (it may come from another thread as data). */
export function checkTimeChange(change: unknown): asserts change is TimeChange {
  if (change !== null && change !== 'now' && !isValidTimespec(change)) {
    throw new IoError('EINVAL', `bad time ${JSON.stringify(change)}: expected {sec, nsec} (sec a safe integer, nsec 0..999999999), 'now' or null`);
  }
}
