/**
 * Extended attributes (format 5): every namespace Linux has (user., trusted., security., system.posix_acl_access
 * and system.posix_acl_default), names of 1..255 bytes, values up to 64 KiB.
 *
 * An inode's attributes are one list, kept in the inode's own block after the inode record and, when it does not
 * fit there, continued in a chain of Xattr blocks. Both are covered by the inode's cluster lock (a chain block's
 * cache owner is the inode) and change through the journal like every metadata block, so another domain sees an
 * attribute exactly when it would see a change of the inode's mode.
 *
 *   inode block, after the record (HEADER_SIZE + INODE_SIZE = 192):
 *     192 list length in bytes (u32)   196 first chain block (u32, 0: none)   200.. the list's first bytes
 *   Xattr block: header, next chain block (u32, 0: the last), then the list's next bytes
 *   the list: per attribute, name length (u8), value length (u32), the name, the value; no name twice
 */
import { IoError } from './block-device.js';
import { BLOCK_SIZE, BlockType, checkBlockHeader, HEADER_SIZE, INODE_SIZE, view } from './layout.js';
import { decodeName, encodeName } from './path.js';

/** Where the attribute list starts in an inode block. */
const META = HEADER_SIZE + INODE_SIZE;
const INLINE_START = META + 8;
const INLINE_BYTES = BLOCK_SIZE - INLINE_START;
const CHAIN_START = HEADER_SIZE + 4;
const CHAIN_BYTES = BLOCK_SIZE - CHAIN_START;
export const XATTR_NAME_MAX = 255;
export const XATTR_SIZE_MAX = 64 << 10;
/**
 * All of one inode's attributes together (names, values and 5 bytes each): a value of the largest size and 32 KiB
 * more. Its chain (24 blocks) and the inode and bitmap blocks stay within what one operation step may log.
 */
export const XATTR_LIST_MAX = 96 << 10;
/** setxattr(2) flags. */
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

const NAMESPACES = ['user.', 'trusted.', 'security.'];
const SYSTEM_NAMES = ['system.posix_acl_access', 'system.posix_acl_default'];

/** An inode's attributes, by name, in the order they were first set. */
export type Xattrs = Map<string, Uint8Array>;

/** Why a name cannot be an attribute's (EOPNOTSUPP for an unknown namespace, ERANGE for a long name), or null. */
export function xattrNameProblem(name: string): IoError | null {
  const bytes = encodeName(name).length;
  if (bytes > XATTR_NAME_MAX) return new IoError('ERANGE', `attribute name of ${bytes} bytes`);
  const known = SYSTEM_NAMES.includes(name) || NAMESPACES.some((ns) => name.startsWith(ns) && name.length > ns.length);
  return known ? null : new IoError('EOPNOTSUPP', `no attribute namespace for ${JSON.stringify(name)}`);
}

export function encodeXattrs(attrs: Xattrs): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [name, value] of attrs) {
    const nameBytes = encodeName(name);
    const head = new Uint8Array(5);
    head[0] = nameBytes.length;
    view(head).setUint32(1, value.length, true);
    parts.push(head, nameBytes, value);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The attributes a list holds, or why it is not a well-formed list. */
export function decodeXattrs(list: Uint8Array): Xattrs | string {
  const attrs: Xattrs = new Map();
  const v = view(list);
  for (let at = 0; at < list.length; ) {
    if (at + 5 > list.length) return `attribute list cut at byte ${at}`;
    const nameLength = list[at]!;
    const valueLength = v.getUint32(at + 1, true);
    if (nameLength === 0 || valueLength > XATTR_SIZE_MAX || at + 5 + nameLength + valueLength > list.length) {
      return `attribute at byte ${at}: name of ${nameLength} bytes, value of ${valueLength}, in a list of ${list.length}`;
    }
    const name = decodeName(list.subarray(at + 5, at + 5 + nameLength));
    if (xattrNameProblem(name)) return `attribute ${JSON.stringify(name)}: not a name of a known namespace`;
    if (attrs.has(name)) return `attribute ${JSON.stringify(name)} twice`;
    attrs.set(name, list.slice(at + 5 + nameLength, at + 5 + nameLength + valueLength));
    at += 5 + nameLength + valueLength;
  }
  return attrs;
}

/** The list length and first chain block an inode block records. */
export function xattrHead(inodeBlock: Uint8Array): { length: number; chain: number } {
  const v = view(inodeBlock);
  return { length: v.getUint32(META, true), chain: v.getUint32(META + 4, true) };
}

/**
 * Gathers an inode's list from its block and its chain, reading chain blocks with `readBlock` (which returns null
 * for a block it refuses); the list and the chain's addresses, or why they cannot be read.
 */
export async function gatherXattrList(
  inodeBlock: Uint8Array,
  readBlock: (address: number, index: number) => Promise<Uint8Array | null | string>,
): Promise<{ list: Uint8Array; chain: number[] } | string> {
  const { length, chain: first } = xattrHead(inodeBlock);
  if (length > XATTR_LIST_MAX) return `attribute list of ${length} bytes (at most ${XATTR_LIST_MAX})`;
  const list = new Uint8Array(length);
  list.set(inodeBlock.subarray(INLINE_START, INLINE_START + Math.min(length, INLINE_BYTES)));
  const chain: number[] = [];
  let at = Math.min(length, INLINE_BYTES);
  for (let next = first; next !== 0; ) {
    if (at >= length) return `attribute chain block ${next} past the end of a list of ${length} bytes`;
    const block = await readBlock(next, chain.length);
    if (typeof block === 'string') return block;
    if (!block) return `attribute chain block ${next} unreadable`;
    chain.push(next);
    const n = Math.min(length - at, CHAIN_BYTES);
    list.set(block.subarray(CHAIN_START, CHAIN_START + n), at);
    at += n;
    next = view(block).getUint32(HEADER_SIZE, true);
  }
  if (at < length) return `attribute list of ${length} bytes, ${at} found in the inode block and its chain`;
  return { list, chain };
}

/** Chain blocks a list of `length` bytes needs. */
export function chainBlocksFor(length: number): number {
  return Math.max(0, Math.ceil((length - INLINE_BYTES) / CHAIN_BYTES));
}

/** Checks a chain block as fsck reads it: the header, or why not. */
export function chainBlockProblem(block: Uint8Array, address: number): string | null {
  return checkBlockHeader(block, BlockType.Xattr, address);
}

/** Writes `list` into the inode block and the chain blocks given (as many as chainBlocksFor says), in order. */
export function spreadXattrList(list: Uint8Array, inodeBlock: Uint8Array, chain: { address: number; block: Uint8Array }[]): void {
  const v = view(inodeBlock);
  v.setUint32(META, list.length, true);
  v.setUint32(META + 4, chain[0]?.address ?? 0, true);
  inodeBlock.fill(0, INLINE_START);
  inodeBlock.set(list.subarray(0, INLINE_BYTES), INLINE_START);
  chain.forEach(({ block }, i) => {
    const from = INLINE_BYTES + i * CHAIN_BYTES;
    block.fill(0, HEADER_SIZE);
    view(block).setUint32(HEADER_SIZE, chain[i + 1]?.address ?? 0, true);
    block.set(list.subarray(from, from + CHAIN_BYTES), CHAIN_START);
  });
}
