/**
 * Path syntax: absolute paths split into name components, each checked (no NUL, at most NAME_MAX bytes).
 * Resolution against directories (lookups, `..`, symlinks) is the filesystem's; this file only parses.
 *
 * No limit on a whole path: as on Linux, PATH_MAX bounds one path argument counted from where the caller stands
 * (its working directory or dirfd), which the host kernel checks before a request reaches a view. A path from the
 * root of the volume, as FUSE hands it over, may be longer: a tree as deep as names allow stays usable.
 */
import { IoError } from './block-device.js';
import { NAME_MAX } from './layout.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeName(name: string): Uint8Array {
  return encoder.encode(name);
}

export function decodeName(name: Uint8Array): string {
  return decoder.decode(name);
}

/** Checks one name component and returns its bytes. */
export function checkName(name: string): Uint8Array {
  if (name.length === 0) throw new IoError('ENOENT', 'empty name');
  if (name.includes('\0')) throw new IoError('EINVAL', 'NUL in name');
  const bytes = encodeName(name);
  if (bytes.length > NAME_MAX) throw new IoError('ENAMETOOLONG', `name of ${bytes.length} bytes`);
  return bytes;
}

/** The components of a path, relative ones resolved by the caller from `/` (FUSE and the agent pass absolute paths). */
export function splitPath(path: string): string[] {
  if (typeof path !== 'string' || path.length === 0) throw new IoError('ENOENT', 'empty path');
  const parts = path.split('/').filter((p) => p.length > 0);
  for (const part of parts) checkName(part);
  return parts;
}

/** Splits a path into its parent's components and its last name (which must be a real name, not `.`/`..`). */
export function splitParent(path: string): { parent: string[]; name: string } {
  const parts = splitPath(path);
  const name = parts.pop();
  if (name === undefined) throw new IoError('EBUSY', 'the root has no parent');
  if (name === '.' || name === '..') throw new IoError('EINVAL', `cannot use ${name} as a name`);
  return { parent: parts, name };
}
