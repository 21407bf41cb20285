/**
 * fsck on format-3 volumes made by mkfs plus hand-made blocks written straight into the image: the filesystem
 * itself is not mounted, so each test states exactly which invariant it breaks. Every test first checks that its
 * volume is clean, then breaks one thing and looks for the error that names it.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32c } from '../fs/crc32c.js';
import { EntryType } from '../fs/directory.js';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { fsck, type FsckProgress, type FsckReport } from '../fs/fsck.js';
import { decodeInode, emptyInode, encodeInode, type Inode } from '../fs/inode.js';
import {
  BLOCK_SIZE, BlockType, encodeSuperblock, Geometry, HEADER_SIZE, readSuperblock, resealBlock, sealBlock, view,
  type Superblock,
} from '../fs/layout.js';
import { mkfs } from '../fs/mkfs.js';
import { encodeXattrs, spreadXattrList } from '../fs/xattr.js';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFSOCK } from '../fs/vfs.js';

type Entry = [name: string, ino: number, type: EntryType];

/** A formatted image and the means to write blocks into it by hand. */
class Image {
  /** The root directory's records, rewritten into its first block by addEntry. */
  rootEntries: Entry[];

  private constructor(
    readonly dev: FileBlockDevice,
    readonly sb: Superblock,
    readonly g: Geometry,
    readonly rootDirBlock: number,
  ) {
    this.rootEntries = [['.', sb.rootIno, EntryType.Directory], ['..', sb.rootIno, EntryType.Directory]];
  }

  /** 8 MiB: 2 slots, 2 groups of at most 1024 blocks. Removed when the test ends. */
  static async make(t: ExecutionContext): Promise<Image> {
    const dir = await mkdtemp(join(tmpdir(), 'hvshare-fsck-'));
    const path = join(dir, 'volume.img');
    const handle = await open(path, 'w');
    await handle.truncate(8 << 20);
    await handle.close();
    const dev = await FileBlockDevice.open(path);
    t.teardown(async () => {
      await dev.close();
      await rm(dir, { recursive: true, force: true });
    });
    const sb = await mkfs(dev, { slots: 2, journalBlocks: 64, blocksPerGroup: 1024 });
    const root = new Uint8Array(BLOCK_SIZE);
    await dev.read(sb.rootIno * BLOCK_SIZE, root);
    return new Image(dev, sb, new Geometry(sb), decodeInode(root, HEADER_SIZE, sb.rootIno).direct[0]);
  }

  get root(): number {
    return this.sb.rootIno;
  }

  async read(address: number): Promise<Uint8Array> {
    const block = new Uint8Array(BLOCK_SIZE);
    await this.dev.read(address * BLOCK_SIZE, block);
    return block;
  }

  write(address: number, block: Uint8Array): Promise<void> {
    return this.dev.write(address * BLOCK_SIZE, block);
  }

  async bit(block: number): Promise<boolean> {
    const group = this.g.groupOf(block);
    const bit = block - this.g.groupBase(group);
    const bitmap = await this.read(this.g.blockBitmap(group));
    return (bitmap[HEADER_SIZE + (bit >> 3)] & (1 << (bit & 7))) !== 0;
  }

  /** Sets or clears a block's bit in its group's bitmap (the bitmap stays valid). */
  async setBit(block: number, used: boolean): Promise<void> {
    const group = this.g.groupOf(block);
    const bit = block - this.g.groupBase(group);
    const bitmap = await this.read(this.g.blockBitmap(group));
    if (used) bitmap[HEADER_SIZE + (bit >> 3)] |= 1 << (bit & 7);
    else bitmap[HEADER_SIZE + (bit >> 3)] &= ~(1 << (bit & 7));
    resealBlock(bitmap);
    await this.write(this.g.blockBitmap(group), bitmap);
  }

  /** The first free block of group 0, marked in use. */
  async alloc(): Promise<number> {
    for (let block = this.g.firstDataBlock(0); block < this.g.groupBase(1); block++) {
      if (!(await this.bit(block))) {
        await this.setBit(block, true);
        return block;
      }
    }
    throw new Error('group 0 is full');
  }

  async readInode(ino: number): Promise<Inode> {
    return decodeInode(await this.read(ino), HEADER_SIZE, ino);
  }

  async writeInode(inode: Inode): Promise<void> {
    const block = new Uint8Array(BLOCK_SIZE);
    encodeInode(block, HEADER_SIZE, inode);
    sealBlock(block, BlockType.Inode, inode.ino);
    await this.write(inode.ino, block);
  }

  async writeDirBlock(address: number, records: Entry[]): Promise<void> {
    const block = new Uint8Array(BLOCK_SIZE);
    const v = view(block);
    let offset = HEADER_SIZE;
    records.forEach(([name, ino, type], i) => {
      const bytes = new TextEncoder().encode(name);
      const size = i === records.length - 1 ? BLOCK_SIZE - offset : (8 + bytes.length + 3) & ~3;
      v.setUint32(offset, ino, true);
      v.setUint16(offset + 4, size, true);
      block[offset + 6] = bytes.length;
      block[offset + 7] = type;
      block.set(bytes, offset + 8);
      offset += size;
    });
    sealBlock(block, BlockType.Directory, address);
    await this.write(address, block);
  }

  /** Adds a record to the root directory (a subdirectory's ".." adds a link to the root's nlink). */
  async addEntry(name: string, ino: number, type: EntryType): Promise<void> {
    this.rootEntries.push([name, ino, type]);
    await this.writeDirBlock(this.rootDirBlock, this.rootEntries);
    if (type === EntryType.Directory) await this.changeInode(this.root, (root) => root.nlink++);
  }

  async changeInode(ino: number, change: (inode: Inode) => void): Promise<void> {
    const inode = await this.readInode(ino);
    change(inode);
    await this.writeInode(inode);
  }

  /** A regular file of `blocks` data blocks (direct ones, then an indirect block), not linked anywhere. */
  async file(blocks = 1, nlink = 1): Promise<Inode> {
    const inode = emptyInode(await this.alloc(), S_IFREG | 0o644, 7, { sec: 1, nsec: 0 });
    inode.nlink = nlink;
    inode.size = blocks * BLOCK_SIZE - 10;
    const data: number[] = [];
    const crcs: number[] = [];
    for (let i = 0; i < blocks; i++) {
      data.push(await this.alloc());
      crcs.push(crc32c(await this.read(data[i])));
    }
    data.slice(0, 12).forEach((block, i) => {
      inode.direct[i] = block;
      inode.directCrc[i] = crcs[i];
    });
    inode.blocks = blocks;
    if (blocks > 12) {
      inode.indirect = await this.alloc();
      inode.blocks++;
      const indirect = new Uint8Array(BLOCK_SIZE);
      data.slice(12).forEach((block, i) => {
        view(indirect).setUint32(HEADER_SIZE + i * 8, block, true);
        view(indirect).setUint32(HEADER_SIZE + i * 8 + 4, crcs[12 + i], true);
      });
      sealBlock(indirect, BlockType.Indirect, inode.indirect);
      await this.write(inode.indirect, indirect);
    }
    await this.writeInode(inode);
    return inode;
  }

  /** A file linked from the root as `name`. */
  async addFile(name: string, blocks = 1): Promise<Inode> {
    const inode = await this.file(blocks);
    await this.addEntry(name, inode.ino, EntryType.Regular);
    return inode;
  }

  /** An empty directory linked from the root as `name`. */
  async addDir(name: string): Promise<Inode> {
    const inode = emptyInode(await this.alloc(), S_IFDIR | 0o755, 7, { sec: 1, nsec: 0 });
    inode.nlink = 2;
    inode.direct[0] = await this.alloc();
    inode.blocks = 1;
    inode.size = BLOCK_SIZE;
    await this.writeDirBlock(inode.direct[0], [['.', inode.ino, EntryType.Directory], ['..', this.root, EntryType.Directory]]);
    await this.writeInode(inode);
    await this.addEntry(name, inode.ino, EntryType.Directory);
    return inode;
  }

  async addSymlink(name: string, target: string): Promise<Inode> {
    const inode = emptyInode(await this.alloc(), S_IFLNK | 0o777, 7, { sec: 1, nsec: 0 });
    const bytes = new TextEncoder().encode(target);
    inode.nlink = 1;
    inode.size = bytes.length;
    inode.direct[0] = await this.alloc();
    inode.blocks = 1;
    const block = new Uint8Array(BLOCK_SIZE);
    view(block).setUint32(HEADER_SIZE, bytes.length, true);
    block.set(bytes, HEADER_SIZE + 4);
    sealBlock(block, BlockType.Symlink, inode.direct[0]);
    await this.write(inode.direct[0], block);
    await this.writeInode(inode);
    await this.addEntry(name, inode.ino, EntryType.Symlink);
    return inode;
  }

  async setOrphans(slot: number, inos: number[]): Promise<void> {
    const block = new Uint8Array(BLOCK_SIZE);
    view(block).setUint32(HEADER_SIZE, inos.length, true);
    inos.forEach((ino, i) => view(block).setUint32(HEADER_SIZE + 4 + i * 4, ino, true));
    sealBlock(block, BlockType.Slot, this.g.slotBlock(slot));
    await this.write(this.g.slotBlock(slot), block);
  }

  async fsck(): Promise<FsckReport> {
    return fsck(this.dev);
  }
}

async function clean(t: ExecutionContext, image: Image): Promise<FsckReport> {
  const report = await image.fsck();
  t.deepEqual(report.errors, [], 'the volume is clean before it is broken');
  t.true(report.ok);
  return report;
}

function hasError(t: ExecutionContext, report: FsckReport, pattern: RegExp): void {
  t.false(report.ok);
  t.true(report.errors.some((e) => pattern.test(e)), `no error matches ${pattern}:\n${report.errors.join('\n')}`);
}

test('a fresh volume is clean: one directory; the bitmaps, the root inode and its directory block in use', async (t) => {
  const image = await Image.make(t);
  const { sb, g } = image;
  const phases: FsckProgress[] = [];
  const report = await fsck(image.dev, { onProgress: (p) => phases.push(p) });
  t.deepEqual(report.errors, []);
  t.deepEqual(report.warnings, []);
  t.true(report.ok);
  t.is(sb.groupCount, 2);
  t.is(image.rootDirBlock, sb.rootIno + 1);
  const inUse = sb.groupCount + 2;
  t.deepEqual(report.stats, {
    inodesInUse: 1, files: 0, directories: 1, symlinks: 0, special: 0, orphans: 0,
    blocksInUse: inUse, freeBlocks: sb.totalBlocks - sb.groupStart - inUse, replayableJournals: 0,
  });
  t.is(g.dataBlockCount + sb.groupCount, report.stats.blocksInUse + report.stats.freeBlocks);
  // Each phase in order, counting up to its total.
  const order = phases.map((p) => p.phase).filter((phase, i, all) => all[i - 1] !== phase);
  t.deepEqual(order, ['superblock', 'journals', 'groups', 'inodes', 'directories', 'tree', 'bitmaps', 'done']);
  t.true(phases.every((p) => p.done <= p.total), JSON.stringify(phases));
});

test('a hand-made tree is clean: subdirectory, a file with an indirect block, a symlink, an orphan', async (t) => {
  const image = await Image.make(t);
  const dir = await image.addDir('d');
  const big = await image.file(14);
  await image.writeDirBlock(dir.direct[0], [
    ['.', dir.ino, EntryType.Directory], ['..', image.root, EntryType.Directory], ['big', big.ino, EntryType.Regular],
  ]);
  await image.addSymlink('s', 'd/big');
  // A file unlinked while open: nlink 0, no name, on slot 1's orphan list.
  const open = await image.file(1, 0);
  await image.setOrphans(1, [open.ino]);
  const report = await image.fsck();
  t.deepEqual(report.errors, []);
  t.deepEqual(report.warnings, []);
  // Beyond mkfs's: the inode blocks of d, big, s and open; d's block, big's 14 and its indirect block, s's block,
  // open's block.
  const inUse = image.sb.groupCount + 2 + 4 + 1 + 15 + 1 + 1;
  t.deepEqual(report.stats, {
    inodesInUse: 5, files: 2, directories: 2, symlinks: 1, special: 0, orphans: 1,
    blocksInUse: inUse, freeBlocks: image.sb.totalBlocks - image.sb.groupStart - inUse, replayableJournals: 0,
  });
  t.is((await image.readInode(image.root)).nlink, 3);

  // Without its orphan list entry, nothing leads to the open file: its blocks leak.
  await image.setOrphans(1, []);
  hasError(t, await image.fsck(), new RegExp(`^blocks ${open.ino}\\.\\.${open.direct[0]} \\(group 0\\): allocated but not referenced \\(leaked\\); it holds inode ${open.ino}, linked from nowhere$`));
});

test('a set bit for a block nobody uses is a leak', async (t) => {
  const image = await Image.make(t);
  await clean(t, image);
  const last = image.sb.totalBlocks - 1;
  await image.setBit(last, true);
  await image.setBit(last - 1, true);
  const report = await image.fsck();
  hasError(t, report, new RegExp(`^blocks ${last - 1}\\.\\.${last} \\(group 1\\): allocated but not referenced \\(leaked\\)$`));
  t.is(report.errors.length, 1, report.errors.join('\n'));
});

test('a clear bit for a block in use is an error naming its user', async (t) => {
  const image = await Image.make(t);
  await clean(t, image);
  await image.setBit(image.rootDirBlock, false);
  hasError(t, await image.fsck(), new RegExp(`^block ${image.rootDirBlock}: free in the bitmap of group 0, but used by inode ${image.root} \\(/\\)$`));
  await image.setBit(image.rootDirBlock, true);
  const file = await image.addFile('f');
  await clean(t, image);
  await image.setBit(file.ino, false);
  hasError(t, await image.fsck(), new RegExp(`^block ${file.ino}: free in the bitmap of group 0, but it is the block of inode ${file.ino} \\(/f\\)$`));
});

test('an inode block with a bad checksum is reported where it is linked', async (t) => {
  const image = await Image.make(t);
  const file = await image.addFile('f');
  await clean(t, image);
  const block = await image.read(file.ino);
  block[HEADER_SIZE + 16] ^= 0x40; // the size, without a new checksum
  await image.write(file.ino, block);
  hasError(t, await image.fsck(), new RegExp(`^entry "/f" \\(directory ${image.root}\\) points at block ${file.ino}, which is not an inode in use: block ${file.ino}: checksum mismatch$`));
});

test('a directory entry pointing at a block that is not an inode', async (t) => {
  const image = await Image.make(t);
  const file = await image.addFile('f');
  await clean(t, image);
  // Another name for the file's data block, and one for the root's own directory block.
  await image.addEntry('data', file.direct[0], EntryType.Regular);
  await image.addEntry('dirblock', image.rootDirBlock, EntryType.Regular);
  await image.addEntry('journal', image.g.journalLog(0), EntryType.Regular);
  const report = await image.fsck();
  hasError(t, report, new RegExp(`^entry "/data" \\(directory ${image.root}\\) points at block ${file.direct[0]}, which is not an inode in use: block ${file.direct[0]}: bad magic`));
  hasError(t, report, new RegExp(`^entry "/dirblock" \\(directory ${image.root}\\) points at block ${image.rootDirBlock}, which is not an inode in use: block ${image.rootDirBlock}: type Directory, expected Inode$`));
  hasError(t, report, new RegExp(`^entry "/journal" \\(directory ${image.root}\\) points at block ${image.g.journalLog(0)}, outside the data area$`));
});

test('a block referenced twice, and a pointer to another inode\'s block', async (t) => {
  const image = await Image.make(t);
  const a = await image.addFile('a');
  const b = await image.addFile('b');
  await clean(t, image);
  const shared = a.direct[0];
  await image.changeInode(b.ino, (inode) => (inode.direct[1] = shared));
  await image.changeInode(b.ino, (inode) => {
    inode.blocks++;
    inode.size += BLOCK_SIZE;
  });
  let report = await image.fsck();
  hasError(t, report, new RegExp(`^block ${shared} is referenced twice: file block 1 of inode ${b.ino} \\(/b\\), and it is already used by inode ${a.ino} \\(/a\\)$`));
  t.is(report.errors.length, 1, report.errors.join('\n'));

  await image.changeInode(b.ino, (inode) => (inode.direct[1] = a.ino));
  report = await image.fsck();
  hasError(t, report, new RegExp(`^block ${a.ino} is referenced twice: file block 1 of inode ${b.ino} \\(/b\\), and it is the block of inode ${a.ino} \\(/a\\)$`));
});

test('a wrong link count', async (t) => {
  const image = await Image.make(t);
  const file = await image.addFile('f');
  await image.addDir('d');
  await clean(t, image);
  await image.changeInode(file.ino, (inode) => (inode.nlink = 2));
  await image.changeInode(image.root, (inode) => (inode.nlink = 2)); // 3: ".", "..", and d's ".."
  const report = await image.fsck();
  hasError(t, report, new RegExp(`^inode ${file.ino} \\(/f\\): nlink 2, referenced 1 times$`));
  hasError(t, report, new RegExp(`^inode ${image.root} \\(/\\): nlink 2, referenced 3 times$`));
  t.is(report.errors.length, 2, report.errors.join('\n'));
});

test('volumes of formats 1 to 6 are refused with one clear error each, saying what they lack', async (t) => {
  const image = await Image.make(t);
  await clean(t, image);
  const sb = await readSuperblock(image.dev);
  const cases = [
    [1, /one inode a block.*nanosecond.*first use.*FIFOs.*extended attributes.*data block/],
    [2, /\(this hvshare reads version 7: times to the nanosecond/],
    [3, /version 7: allocation groups initialised on first use.*; devices, FIFOs and sockets; extended attributes; a checksum of every file data block\)/],
    [4, /version 7: devices, FIFOs and sockets; extended attributes; a checksum of every file data block\)/],
    [5, /version 7: extended attributes; a checksum of every file data block\)/],
    [6, /version 7: a checksum of every file data block\)/],
  ] as const;
  for (const [version, lacks] of cases) {
    await image.write(0, encodeSuperblock({ ...sb, version }));
    const report = await image.fsck();
    t.false(report.ok);
    t.is(report.errors.length, 1, report.errors.join('\n'));
    t.regex(report.errors[0], new RegExp(`^superblock: format version ${version} is no longer supported`));
    t.regex(report.errors[0], lacks);
    t.regex(report.errors[0], /mkfs --force/);
    t.is(report.stats.directories, 0);
  }
});

test('an inode time with nanoseconds out of range', async (t) => {
  const image = await Image.make(t);
  const file = await image.addFile('f');
  await clean(t, image);
  await image.changeInode(file.ino, (inode) => (inode.mtime = { sec: 1, nsec: 1e9 }));
  const report = await image.fsck();
  hasError(t, report, new RegExp(`^inode ${file.ino} \\(/f\\): mtime 1 s 1000000000 ns out of range$`));
  t.is(report.errors.length, 1, report.errors.join('\n'));
});

test('an inode on two orphan lists', async (t) => {
  const image = await Image.make(t);
  const open = await image.file(1, 0);
  await image.setOrphans(0, [open.ino]);
  await clean(t, image);
  await image.setOrphans(1, [open.ino]);
  hasError(t, await image.fsck(), new RegExp(`^inode ${open.ino} is on the orphan lists of slots 0 and 1$`));
});

test('directories: a second link, a wrong "..", a missing "." and a duplicate name', async (t) => {
  const image = await Image.make(t);
  const d = await image.addDir('d');
  const e = await image.addDir('e');
  await clean(t, image);
  // d gets a second name inside e: d's nlink stays 2, but it is now referenced 3 times.
  await image.writeDirBlock(e.direct[0], [
    ['.', e.ino, EntryType.Directory], ['..', d.ino, EntryType.Directory], ['again', d.ino, EntryType.Directory],
  ]);
  let report = await image.fsck();
  hasError(t, report, new RegExp(`^directory inode ${d.ino} \\(/d\\) is linked from inode ${image.root} \\(/\\) and from inode ${e.ino} \\(/e\\)`));
  hasError(t, report, new RegExp(`^inode ${e.ino} \\(/e\\): "\\.\\." points at ${d.ino}, it lives in directory ${image.root}$`));

  await image.writeDirBlock(e.direct[0], [
    ['x', e.ino, EntryType.Directory], ['..', image.root, EntryType.Directory],
    ['f', d.ino, EntryType.Directory], ['f', d.ino, EntryType.Directory],
  ]);
  report = await image.fsck();
  hasError(t, report, new RegExp(`^inode ${e.ino} \\(/e\\): record 0 of its first block is not "\\."$`));
  hasError(t, report, new RegExp(`^inode ${e.ino} \\(/e\\): duplicate name "f"$`));
});

test('sizes and counts: blocks past the end, a wrong block count, a bad indirect block', async (t) => {
  const image = await Image.make(t);
  const f = await image.addFile('f', 13);
  await clean(t, image);
  await image.changeInode(f.ino, (inode) => (inode.size = 2 * BLOCK_SIZE));
  hasError(t, await image.fsck(), new RegExp(`^inode ${f.ino} \\(/f\\): file block 2 is mapped past the end of the file \\(size ${2 * BLOCK_SIZE}\\)$`));
  await image.changeInode(f.ino, (inode) => {
    inode.size = 13 * BLOCK_SIZE;
    inode.blocks = 13;
  });
  hasError(t, await image.fsck(), new RegExp(`^inode ${f.ino} \\(/f\\): block count 13, but 14 data and indirect blocks are mapped$`));
  await image.changeInode(f.ino, (inode) => (inode.blocks = 14));
  await clean(t, image);
  const indirect = await image.read(f.indirect);
  sealBlock(indirect, BlockType.Directory, f.indirect);
  await image.write(f.indirect, indirect);
  hasError(t, await image.fsck(), new RegExp(`^inode ${f.ino} \\(/f\\): indirect block: block ${f.indirect}: type Directory, expected Indirect$`));
});

test('special files: devices keep their number, a FIFO has none; none has blocks or a size; entry types match', async (t) => {
  const image = await Image.make(t);
  const special = async (name: string, mode: number, type: EntryType, rdev = 0) => {
    const inode = emptyInode(await image.alloc(), mode, 7, { sec: 1, nsec: 0 });
    inode.nlink = 1;
    inode.rdev = rdev;
    await image.writeInode(inode);
    await image.addEntry(name, inode.ino, type);
    return inode;
  };
  const tty = await special('tty', S_IFCHR | 0o620, EntryType.CharDevice, (4 << 8) | 1);
  await special('sda', S_IFBLK | 0o660, EntryType.BlockDevice, 8 << 8);
  const fifo = await special('fifo', S_IFIFO | 0o644, EntryType.Fifo);
  await special('sock', S_IFSOCK | 0o755, EntryType.Socket);
  t.is((await clean(t, image)).stats.special, 4);
  t.is((await image.readInode(tty.ino)).rdev, (4 << 8) | 1);
  await image.changeInode(fifo.ino, (inode) => (inode.rdev = 5));
  hasError(t, await image.fsck(), new RegExp(`^inode ${fifo.ino} \\(/fifo\\): device number 5 on a file that is not a device$`));
  await image.changeInode(fifo.ino, (inode) => {
    inode.rdev = 0;
    inode.size = 10;
  });
  hasError(t, await image.fsck(), new RegExp(`^inode ${fifo.ino} \\(/fifo\\): special file with size 10 and 0 blocks mapped \\(none expected\\)$`));
  await image.changeInode(fifo.ino, (inode) => {
    inode.size = 0;
    inode.mode = S_IFSOCK | 0o644;
  });
  hasError(t, await image.fsck(), /\/fifo.* has type Fifo, .* is Socket$/);
});

test('extended attributes: a well-formed list and chain are clean; a bad name, a lost chain block, a bad length are not', async (t) => {
  const image = await Image.make(t);
  const f = await image.addFile('f');
  /** Writes `attrs` into f's inode block, with `chain` as its chain blocks (sealed as Xattr blocks). */
  const setList = async (attrs: [string, Uint8Array][], chain: number[] = []) => {
    const block = await image.read(f.ino);
    const blocks = chain.map((address) => {
      const b = new Uint8Array(BLOCK_SIZE);
      sealBlock(b, BlockType.Xattr, address);
      return { address, block: b };
    });
    spreadXattrList(encodeXattrs(new Map(attrs)), block, blocks);
    resealBlock(block);
    await image.write(f.ino, block);
    for (const { address, block: b } of blocks) {
      resealBlock(b);
      await image.write(address, b);
    }
  };
  await setList([['user.a', new Uint8Array([1, 2])], ['system.posix_acl_access', new Uint8Array(30)]]);
  await clean(t, image);
  const chainBlock = await image.alloc();
  await setList([['user.big', new Uint8Array(6000)]], [chainBlock]);
  await clean(t, image);
  await image.setBit(chainBlock, false);
  hasError(t, await image.fsck(), new RegExp(`${chainBlock}`));
  await image.setBit(chainBlock, true);
  await setList([['bogus.a', new Uint8Array(1)]]);
  await image.setBit(chainBlock, false);
  hasError(t, await image.fsck(), new RegExp(`^inode ${f.ino} \\(/f\\): attribute "bogus.a": not a name of a known namespace$`));
  await setList([['user.big', new Uint8Array(6000)]], [chainBlock]);
  await image.setBit(chainBlock, true);
  const sealedAsDirectory = await image.read(chainBlock);
  sealBlock(sealedAsDirectory, BlockType.Directory, chainBlock);
  await image.write(chainBlock, sealedAsDirectory);
  hasError(t, await image.fsck(), new RegExp(`^inode ${f.ino} \\(/f\\): block ${chainBlock}: type Directory, expected Xattr$`));
});

test('a flipped byte in a file data block, direct or mapped by an indirect block, fails its checksum', async (t) => {
  const image = await Image.make(t);
  const file = await image.addFile('f', 14);
  await clean(t, image);
  const indirect = await image.read(file.indirect);
  const viaIndirect = view(indirect).getUint32(HEADER_SIZE + 1 * 8, true);
  for (const block of [file.direct[3], viaIndirect]) {
    const data = await image.read(block);
    data[1234] ^= 0x20;
    await image.write(block, data);
  }
  const report = await image.fsck();
  hasError(t, report, new RegExp(`^inode ${file.ino} \\(/f\\): data checksum mismatch in file block 3 \\(block ${file.direct[3]}\\): the pointer says crc32c [0-9a-f]{8}, the block has [0-9a-f]{8}$`));
  hasError(t, report, new RegExp(`^inode ${file.ino} \\(/f\\): data checksum mismatch in file block 13 \\(block ${viaIndirect}\\)`));
  t.is(report.errors.length, 2, report.errors.join('\n'));
});
