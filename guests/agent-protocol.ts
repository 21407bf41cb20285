import type { BlockWorkload, RoundTripResult, WorkloadResult } from './block-workload.js';
import type { FileWorkload, FileWorkloadResult } from './file-workload.js';
import type { CutEnded, CutHeld } from '../fs/consistent-cut.js';
import type { DirListing, Stat, StatFs, Vfs } from '../fs/vfs.js';

/** The filesystem operations the agent runs for the host (the FUSE adapter, tests, scripts). */
export const VFS_OPS = [
  'getattr', 'readdir', 'readdirEntries', 'mkdir', 'rmdir', 'unlink', 'rename', 'link', 'symlink', 'mknod', 'readlink', 'create', 'open',
  'release', 'read', 'write', 'fsync', 'truncate', 'ftruncate', 'chmod', 'chown', 'utimens', 'statfs',
  'getxattr', 'listxattr', 'setxattr', 'removexattr', 'fallocate',
] as const satisfies readonly (keyof Vfs)[];
export type VfsOp = (typeof VFS_OPS)[number];

/**
 * Requests the host sends a domain's guest agent, which runs each as a process inside the domain (so the work
 * really goes through the guest kernel, its hypercalls and the monitor), and the replies.
 */
export type AgentRequest =
  | { kind: 'block-workload'; workload: BlockWorkload }
  | { kind: 'file-workload'; workload: FileWorkload }
  | { kind: 'block-read'; offset: number; length: number }
  | { kind: 'block-write'; offset: number; data: Uint8Array; fua?: boolean }
  | { kind: 'block-flush' }
  /** VOLINFO requests back to back for `durationMs`: the round trip of a hypercall that moves no data. */
  | { kind: 'null-requests'; durationMs: number }
  | { kind: 'info' }
  | { kind: 'vfs'; op: VfsOp; args: unknown[] }
  /**
   * A Vfs operation, then the stats of `paths` as it left them (post-op attributes, as NFS replies carry them):
   * the path it changed (the host kernel asks for its stat right after every operation that creates a name or
   * changes attributes) and, for one that adds a name, its directory.
   */
  | { kind: 'vfs-stat'; op: VfsOp; args: unknown[]; paths: string[] }
  /** Vfs getattr of each path, in order, as one process: a view's look ahead through a directory it listed. */
  | { kind: 'getattr-many'; paths: string[] }
  /** Vfs read into data window slot `slot` (guests/data-window.ts); the result is the number of bytes read. */
  | { kind: 'read-window'; fh: number; position: number; length: number; slot: number }
  /** Vfs write of the first `length` bytes of data window slot `slot`; the result is the number of bytes written. */
  | { kind: 'write-window'; fh: number; position: number; length: number; slot: number; dropSetId: boolean }
  /** Hold a consistent cut of the tree at `path` (fs/consistent-cut.ts) for at most `maxHoldMs`; `cut-end` releases it. */
  | { kind: 'cut'; path: string; maxHoldMs: number }
  | { kind: 'cut-end'; id: number }
  /** Commit the journal, close every handle and give the volume lock back. */
  | { kind: 'unmount' };

export interface DomainInfo {
  name: string;
  sizeBytes: number;
  readOnly: boolean;
  interrupts: number;
  hypercalls: number;
  polledCompletions: number;
  /** The journal slot of the mounted filesystem, if any. */
  slot: number | null;
  processes: { pid: number; name: string }[];
}

/** Per path of a getattr-many, its stat or the error the domain answered instead. */
export type StatOrError = Stat | { code: string; message: string };

/** What a vfs-stat request answers: the operation's result, and per path its stat after it (or getattr's error). */
export interface ResultWithStats {
  result: AgentResult;
  stats: StatOrError[];
}

export type AgentResult = ResultWithStats | StatOrError[] | CutHeld | CutEnded | WorkloadResult | FileWorkloadResult | RoundTripResult | Uint8Array | DomainInfo | Stat | StatFs | DirListing | string[] | string | number | null | void;

/** `traced`: the host traces this call (`hvshare trace --ops call`): the reply carries its span. */
export type AgentMessage = { seq: number; request: AgentRequest; traced?: true };
/**
 * `span`, for a traced call only: when the guest agent's process for it began and ended, in microseconds on the
 * trace clock (hypervisor/trace-abi.ts, traceNow), one clock for every thread of the platform.
 */
export type AgentReply = ({ seq: number; ok: true; result: AgentResult } | { seq: number; ok: false; code: string; message: string }) & {
  span?: [number, number];
};

/** Sent by the domain worker once its kernel has booted and attached its block devices. */
export type DomainBooted = { booted: true; name: string };
