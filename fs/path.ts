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

const decoder = new TextDecoder();

/**
 * A name's UTF-8 bytes. Node's Buffer.from places a short string in a slice of a shared pool, where
 * TextEncoder.encode makes a new ArrayBuffer each time: about 3 µs on this VM (a backing store allocated, zeroed
 * and registered with the collector), and a path lookup encodes every component.
 */
export function encodeName(name: string): Uint8Array {
  return Buffer.from(name, 'utf8');
}

export function decodeName(name: Uint8Array): string {
  return decoder.decode(name);
}

/** Checks one name component (not empty, no NUL, at most NAME_MAX bytes), without encoding it. */
function checkNameOnly(name: string): void {
  if (name.length === 0) throw new IoError('ENOENT', 'empty name');
  if (name.includes('\0')) throw new IoError('EINVAL', 'NUL in name');
  // A UTF-16 unit is at most 3 UTF-8 bytes (a surrogate pair: 4 for 2): short names need no counting.
  if (name.length * 3 > NAME_MAX) {
    const bytes = Buffer.byteLength(name, 'utf8');
    if (bytes > NAME_MAX) throw new IoError('ENAMETOOLONG', `name of ${bytes} bytes`);
  }
}

/** Checks one name component and returns its bytes. */
export function checkName(name: string): Uint8Array {
  checkNameOnly(name);
  return encodeName(name);
}

/** The components of a path, relative ones resolved by the caller from `/` (FUSE and the agent pass absolute paths). */
export function splitPath(path: string): string[] {
  if (typeof path !== 'string' || path.length === 0) throw new IoError('ENOENT', 'empty path');
  const parts = path.split('/').filter((p) => p.length > 0);
  for (const part of parts) checkNameOnly(part);
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
