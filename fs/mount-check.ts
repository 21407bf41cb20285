/**
 * The quick check a volume passes before any domain mounts it (`hvshare up`): what every mount trusts blindly and
 * a full fsck would take too long for. The superblock's geometry against the device, each group's bitmap (a
 * valid header, its own block and the bits past the group's end marked used: a bitmap with a valid checksum that
 * says "all free" fails here; a lazily initialised group not used yet has a hole instead, see layout.ts), the journal headers and slot blocks, and the root directory (its inode, its first
 * block, and that the bitmaps mark them used). Run after journal recovery, on the host's native device.
 */
import { type BlockDevice } from './block-device.js';
import { bitIsSet } from './allocator.js';
import { geometryProblem } from './fsck.js';
import { decodeInode, isDir } from './inode.js';
import { parseDirBlock } from './directory.js';
import { BITMAP_BITS, BLOCK_SIZE, BlockType, checkBlockHeader, decodeSuperblock, Geometry, HEADER_SIZE, MAGIC, view } from './layout.js';

/** Bitmap blocks read at once. */
const BITMAP_BATCH = 256;

/** What is wrong with the volume, most basic first; empty when it may be mounted. */
export async function mountCheck(dev: BlockDevice): Promise<string[]> {
  const problems: string[] = [];
  const read = async (block: number, count = 1) => {
    const data = new Uint8Array(count * BLOCK_SIZE);
    await dev.read(block * BLOCK_SIZE, data);
    return data;
  };
  if (dev.sizeBytes < BLOCK_SIZE) return [`the device of ${dev.sizeBytes} bytes has no room for a superblock`];
  let g: Geometry;
  try {
    g = new Geometry(decodeSuperblock(await read(0)));
  } catch (err) {
    return [`superblock: ${(err as { detail?: string }).detail ?? (err as Error).message}`];
  }
  const { sb } = g;
  const geometry = geometryProblem(sb, g, dev.sizeBytes);
  if (geometry) return [`superblock: ${geometry}`];

  for (let slot = 0; slot < sb.slotCount; slot++) {
    // A commit record torn by a crash is dropped by the mount (its checksum may fail); anything else is damage.
    const address = g.journalHeader(slot);
    const header = view(await read(address));
    if (header.getUint32(0, true) !== MAGIC || header.getUint32(4, true) !== BlockType.JournalHeader || header.getUint32(8, true) !== address) {
      problems.push(`journal ${slot}: header block ${address} is not a journal header`);
    }
    const slotProblem = checkBlockHeader(await read(g.slotBlock(slot)), BlockType.Slot, g.slotBlock(slot));
    if (slotProblem) problems.push(`slot ${slot}: ${slotProblem}`);
  }

  for (let first = 0; first < sb.groupCount; first += BITMAP_BATCH) {
    const groups = Array.from({ length: Math.min(BITMAP_BATCH, sb.groupCount - first) }, (_, i) => first + i);
    const blocks = await Promise.all(groups.map((group) => read(g.blockBitmap(group))));
    groups.forEach((group, i) => {
      const problem = bitmapProblem(g, group, blocks[i]);
      if (problem) problems.push(`group ${group}: ${problem}`);
    });
  }

  const rootProblem = await checkRoot(g, read, async (block) => {
    const group = g.groupOf(block);
    return bitIsSet(await read(g.blockBitmap(group)), block - g.groupBase(group));
  });
  if (rootProblem) problems.push(`root directory (inode ${sb.rootIno}): ${rootProblem}`);
  return problems;
}

/** Why a group's bitmap cannot be trusted, or null. */
function bitmapProblem(g: Geometry, group: number, bitmap: Uint8Array): string | null {
  if (g.isUninitialised(group, bitmap)) return null;
  const address = g.blockBitmap(group);
  const header = checkBlockHeader(bitmap, BlockType.BlockBitmap, address);
  if (header) return header;
  if (!bitIsSet(bitmap, 0)) return `bitmap block ${address} marks itself free (a bitmap that says "all free" cannot be trusted)`;
  const size = g.groupSize(group);
  for (let bit = size; bit < BITMAP_BITS; bit++) {
    if (!bitIsSet(bitmap, bit)) return `bitmap block ${address} marks bit ${bit}, past the group's ${size} blocks, free`;
  }
  return null;
}

async function checkRoot(
  g: Geometry,
  read: (block: number) => Promise<Uint8Array>,
  markedUsed: (block: number) => Promise<boolean>,
): Promise<string | null> {
  const ino = g.sb.rootIno;
  const block = await read(ino);
  const header = checkBlockHeader(block, BlockType.Inode, ino);
  if (header) return header;
  const root = decodeInode(block, HEADER_SIZE, ino);
  if (!isDir(root)) return `mode 0o${root.mode.toString(8)} is not a directory`;
  if (root.nlink < 2) return `nlink ${root.nlink}`;
  if (root.size < BLOCK_SIZE || root.size % BLOCK_SIZE !== 0) return `size ${root.size} is not a whole number of blocks`;
  if (!(await markedUsed(ino))) return `its block ${ino} is free in the bitmap of group ${g.groupOf(ino)}`;
  const first = root.direct[0];
  if (!g.isDataBlock(first)) return `its first block pointer ${first} is outside the data area`;
  if (!(await markedUsed(first))) return `its first block ${first} is free in the bitmap of group ${g.groupOf(first)}`;
  const content = await read(first);
  const problem = checkBlockHeader(content, BlockType.Directory, first);
  if (problem) return `first block: ${problem}`;
  const entries = parseDirBlock(content, first);
  if (typeof entries === 'string') return entries;
  if (entries[0]?.ino !== ino) return `first block ${first} does not start with "." naming it`;
  return null;
}
