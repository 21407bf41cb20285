/**
 * Errno names (as carried by IoError.code from the filesystem, the guest agent and the toolstack) to the
 * negative errno numbers fuse-native's callbacks expect.
 */
import { createRequire } from 'node:module';

const Fuse = createRequire(import.meta.url)('fuse-native') as Record<string, unknown>;

/** -EIO, the answer for anything without a recognisable errno. */
export const EIO = typeof Fuse.EIO === 'number' ? (Fuse.EIO as number) : -5;

/**
 * Names the host side produces that mean something else at a mount. A dead domain makes DomainHandle.call fail
 * with ESRCH ("No such process"), which would puzzle a user of `cat`; the view's backing store is gone, so EIO.
 */
const REMAP: Record<string, string> = {
  ESRCH: 'EIO',
};

/** The negative errno for an errno name ('ENOENT' -> -2); EIO for unknown names. */
export function errnoFromName(name: string | undefined | null): number {
  if (typeof name !== 'string' || !/^E[A-Z0-9]+$/.test(name)) return EIO;
  const mapped = REMAP[name] ?? name;
  const value = Fuse[mapped];
  return typeof value === 'number' && value < 0 ? value : EIO;
}

/** The negative errno to answer FUSE with for anything thrown by a handler (IoError, Node errors, anything). */
export function errnoOf(error: unknown): number {
  if (error && typeof error === 'object' && 'code' in error) {
    return errnoFromName((error as { code?: unknown }).code as string);
  }
  return EIO;
}
