/**
 * POSIX ACLs as the kernel keeps them in sync with the mode. libfuse 2.9 cannot ask the host kernel for FUSE's
 * POSIX ACL support, so the kernel passes `system.posix_acl_access` through as a plain attribute; the filesystem
 * then does what the kernel's posix_acl code does for a local one: an access ACL sets the mode's permission bits
 * (owner from the owner entry, group from the mask if there is one, else the owning group entry, other), an ACL
 * that says no more than the mode is not stored at all, and chmod updates a stored ACL's owner, mask (or group) and
 * other entries. Enforcing the named entries is the kernel's, and it does not (README).
 *
 * Value format (Linux's posix_acl_xattr): version 2 (u32), then per entry a tag (u16), permissions (u16) and an
 * id (u32), little-endian.
 */
import { IoError } from './block-device.js';
import { view } from './layout.js';

export const ACL_ACCESS = 'system.posix_acl_access';
export const ACL_DEFAULT = 'system.posix_acl_default';
const VERSION = 2;
const USER_OBJ = 0x01;
const USER = 0x02;
const GROUP_OBJ = 0x04;
const GROUP = 0x08;
const MASK = 0x10;
const OTHER = 0x20;
const TAGS = [USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER];

interface Entry {
  tag: number;
  perm: number;
  at: number;
}

function entries(value: Uint8Array): Entry[] {
  const v = view(value);
  if (value.length < 4 || (value.length - 4) % 8 !== 0 || v.getUint32(0, true) !== VERSION) throw new IoError('EINVAL', 'not a POSIX ACL');
  const out: Entry[] = [];
  for (let at = 4; at < value.length; at += 8) {
    const tag = v.getUint16(at, true);
    const perm = v.getUint16(at + 2, true);
    if (!TAGS.includes(tag) || perm > 7) throw new IoError('EINVAL', `ACL entry with tag ${tag}, permissions ${perm}`);
    out.push({ tag, perm, at });
  }
  return out;
}

/** The permission bits an access ACL gives the mode, and whether the ACL says no more than they do. */
export function aclMode(value: Uint8Array): { bits: number; minimal: boolean } {
  const list = entries(value);
  const perm = (tag: number) => list.find((e) => e.tag === tag)?.perm;
  const owner = perm(USER_OBJ);
  const group = perm(GROUP_OBJ);
  const other = perm(OTHER);
  if (owner === undefined || group === undefined || other === undefined) throw new IoError('EINVAL', 'ACL without owner, group or other entry');
  const mask = perm(MASK);
  return { bits: (owner << 6) | ((mask ?? group) << 3) | other, minimal: list.length === 3 };
}

/** A stored access ACL after chmod to `mode`: owner, mask (or owning group) and other follow the mode. */
export function chmodAcl(value: Uint8Array, mode: number): Uint8Array {
  const out = value.slice();
  const list = entries(out);
  const hasMask = list.some((e) => e.tag === MASK);
  const v = view(out);
  for (const e of list) {
    if (e.tag === USER_OBJ) v.setUint16(e.at + 2, (mode >> 6) & 7, true);
    if (e.tag === (hasMask ? MASK : GROUP_OBJ)) v.setUint16(e.at + 2, (mode >> 3) & 7, true);
    if (e.tag === OTHER) v.setUint16(e.at + 2, mode & 7, true);
  }
  return out;
}
