/**
 * The POSIX-style operations a domain's filesystem offers its guest kernel, path based (as FUSE is).
 * Errors are thrown as IoError with a POSIX errno name in `code` (ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY,
 * ENOSPC, ENAMETOOLONG, EROFS, EINVAL, EBADF, ELOOP, EMLINK, EFBIG, EIO).
 *
 * The guest agent serves host requests (the FUSE adapter, `exec`) by calling exactly these, so this file is the
 * contract between fs/, guests/ and mount/.
 */
/**
 * A time as POSIX keeps it (struct timespec): whole seconds since the epoch, below 0 before 1970 and past 2^32
 * after 2106 (any safe integer), and nanoseconds 0..999,999,999. The one time type of this contract.
 */
export interface Timespec {
  sec: number;
  nsec: number;
}

/**
 * What utimens does to one time: set it exactly, set it to 'now' by the domain's own clock (utimensat's UTIME_NOW),
 * or leave it as it is with null (UTIME_OMIT).
 */
export type TimeChange = Timespec | 'now' | null;

export interface Stat {
  ino: number;
  /** File type and permission bits, as in st_mode (S_IFREG | 0o644 ...). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** The device a character or block device file stands for (st_rdev, as makedev encodes it); 0 for others. */
  rdev: number;
  size: number;
  /** 512-byte units allocated, as st_blocks. */
  blocks: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  /** The inode has extended attributes (a view in `auto` mode answers "none" itself for one that has none). */
  xattrs: boolean;
}

/**
 * Who creates a file: the new inode's owner, and its group unless the parent directory is setgid (then the
 * directory's group, as Linux does). FUSE hands over the requesting process's ids; without them, root.
 */
export interface Owner {
  uid: number;
  gid: number;
}

export interface StatFs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namemax: number;
}

/** open(2) flags the filesystem honours (Linux values). */
export const O_ACCMODE = 3;
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;

/** fallocate(2) modes the filesystem honours (Linux values); 0 allocates and may extend the file. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;
export const S_IFSOCK = 0o140000;
export const S_ISGID = 0o2000;
export const S_ISUID = 0o4000;

/**
 * A directory's entries as readdir(3) gives them, `.` and `..` included: names with their inode numbers and file
 * types (the S_IFMT bits of the mode; 0 when the entry does not record one). Reading it takes no inode of the
 * entries, so `find` and `du` learn every type without a stat per name.
 */
export interface DirListing {
  names: string[];
  inos: number[];
  types: number[];
}

export interface Vfs {
  /** lstat semantics: a symlink is reported as itself. */
  getattr(path: string): Promise<Stat>;
  readdir(path: string): Promise<string[]>;
  readdirEntries(path: string): Promise<DirListing>;
  mkdir(path: string, mode: number, owner?: Owner): Promise<void>;
  rmdir(path: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Replaces an existing target as rename(2) does. */
  rename(from: string, to: string): Promise<void>;
  link(existing: string, newPath: string): Promise<void>;
  symlink(target: string, path: string, owner?: Owner): Promise<void>;
  /**
   * A special file (character or block device with its `rdev`, FIFO, socket) or an empty regular file, as
   * mknod(2): `mode` holds the type and permission bits.
   */
  mknod(path: string, mode: number, rdev: number, owner?: Owner): Promise<void>;
  readlink(path: string): Promise<string>;
  /** Returns a file handle. */
  create(path: string, mode: number, flags?: number, owner?: Owner): Promise<number>;
  open(path: string, flags: number): Promise<number>;
  release(fh: number): Promise<void>;
  /**
   * Returns up to `length` bytes, fewer at end of file, in a new array the caller owns (it may be moved away), or
   * at the start of `into` when given (at least `length` long): then the result is a view of `into`.
   */
  read(fh: number, position: number, length: number, into?: Uint8Array): Promise<Uint8Array>;
  /**
   * Returns the number of bytes written (all of them unless an error is thrown). `dropSetId`: the writer is not
   * privileged, so set-user-ID (and set-group-ID with group execute) go, as Linux does on a write.
   */
  write(fh: number, position: number, data: Uint8Array, dropSetId?: boolean): Promise<number>;
  /** Durable on the backend (journal committed, data flushed) before it resolves. */
  fsync(fh: number, datasync: boolean): Promise<void>;
  truncate(path: string, size: number): Promise<void>;
  /** truncate through an open handle (works after the file was unlinked); EBADF when not open for writing. */
  ftruncate(fh: number, size: number): Promise<void>;
  /**
   * fallocate(2) through an open handle: allocate [offset, offset + length) (mode 0, growing the file, or
   * KEEP_SIZE), PUNCH_HOLE | KEEP_SIZE (zeros, whole blocks freed) or ZERO_RANGE (zeros, allocated). Other modes
   * EOPNOTSUPP. Blocks are never allocated past the end of the file (the format has no unwritten extents).
   */
  fallocate(fh: number, mode: number, offset: number, length: number): Promise<void>;
  chmod(path: string, mode: number): Promise<void>;
  chown(path: string, uid: number, gid: number): Promise<void>;
  /** Sets ctime to now unless both are null (then nothing changes, as utimensat(2) with two UTIME_OMITs). */
  utimens(path: string, atime: TimeChange, mtime: TimeChange): Promise<void>;
  statfs(path: string): Promise<StatFs>;
  /**
   * Extended attributes of the path's own inode (as lgetxattr...): user., trusted., security. and
   * system.posix_acl_access/default names (others EOPNOTSUPP), values up to 64 KiB (E2BIG). ENODATA when missing;
   * setxattr's flags are XATTR_CREATE (EEXIST if present) and XATTR_REPLACE (ENODATA if missing).
   */
  getxattr(path: string, name: string): Promise<Uint8Array>;
  listxattr(path: string): Promise<string[]>;
  setxattr(path: string, name: string, value: Uint8Array, flags: number): Promise<void>;
  removexattr(path: string, name: string): Promise<void>;
}
