/** The filesystem's public surface, for the CLI (bin/), the guest kernel (guests/) and the monitor. */
export { FileSystem, type MountOptions } from './filesystem.js';
export { mkfs, planVolume, MIN_JOURNAL_BLOCKS, type MkfsOptions } from './mkfs.js';
export { fsck, type FsckOptions, type FsckProgress, type FsckReport, type FsckStats } from './fsck.js';
export { replayJournal, inspectJournal, dirtyJournalSlots, type JournalState } from './journal.js';
export { readSuperblock, BLOCK_SIZE, type Superblock } from './layout.js';
export { LocalLockService, LocalLockClient } from './local-lock-service.js';
export { FileBlockDevice } from './file-block-device.js';
export { IoError, SECTOR_SIZE, type BlockDevice } from './block-device.js';
export type { LockMode, LockService } from './lock-service.js';
export type { Vfs, Stat, StatFs } from './vfs.js';
