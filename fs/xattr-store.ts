/**
 * An inode's extended attributes read and written through the block cache (format in xattr.ts): the caller holds
 * the inode's lock (shared to read, exclusive to write) inside an operation, so every block changed is journaled.
 */
import { IoError } from './block-device.js';
import type { BlockCache } from './block-cache.js';
import type { Allocator } from './allocator.js';
import type { Inode } from './inode.js';
import { BlockType } from './layout.js';
import { chainBlocksFor, decodeXattrs, encodeXattrs, gatherXattrList, spreadXattrList, XATTR_LIST_MAX, type Xattrs } from './xattr.js';

export class XattrStore {
  constructor(
    private readonly cache: BlockCache,
    private readonly allocator: Allocator,
  ) {}

  async read(inode: Inode): Promise<Xattrs> {
    const { list } = await this.gather(inode);
    const attrs = decodeXattrs(list);
    if (typeof attrs === 'string') throw new IoError('EIO', `inode ${inode.ino}: ${attrs}`);
    return attrs;
  }

  /** Replaces the inode's attributes with `attrs`, reusing its chain blocks, allocating or freeing the difference. */
  async write(inode: Inode, attrs: Xattrs): Promise<void> {
    const list = encodeXattrs(attrs);
    if (list.length > XATTR_LIST_MAX) throw new IoError('ENOSPC', `attributes of ${list.length} bytes (at most ${XATTR_LIST_MAX} an inode)`);
    const { chain: old } = await this.gather(inode);
    const need = chainBlocksFor(list.length);
    for (const address of old.slice(need)) await this.allocator.freeBlock(address);
    const chain: { address: number; block: Uint8Array }[] = [];
    for (let i = 0; i < need; i++) {
      if (i < old.length) {
        chain.push({ address: old[i]!, block: await this.cache.getForWrite(old[i]!, BlockType.Xattr, inode.ino) });
      } else {
        const { start } = await this.allocator.allocBlocks(chain.at(-1)?.address ?? inode.ino + 1, 1);
        chain.push({ address: start, block: this.cache.create(start, BlockType.Xattr, inode.ino) });
      }
    }
    spreadXattrList(list, await this.cache.getForWrite(inode.ino, BlockType.Inode, inode.ino), chain);
  }

  /** Frees the chain of an inode being freed. */
  async free(inode: Inode): Promise<void> {
    const { chain } = await this.gather(inode);
    if (chain.length === 0) return;
    for (const address of chain) await this.allocator.freeBlock(address);
    spreadXattrList(new Uint8Array(0), await this.cache.getForWrite(inode.ino, BlockType.Inode, inode.ino), []);
  }

  private async gather(inode: Inode): Promise<{ list: Uint8Array; chain: number[] }> {
    const block = await this.cache.get(inode.ino, BlockType.Inode, inode.ino);
    const got = await gatherXattrList(block, (address) => this.cache.get(address, BlockType.Xattr, inode.ino));
    if (typeof got === 'string') throw new IoError('EIO', `inode ${inode.ino}: ${got}`);
    return got;
  }
}
