import type { CutEnded, CutHeld } from '../fs/consistent-cut.js';
import type { AgentResult, VfsOp } from '../guests/agent-protocol.js';
import type { TraceOpName } from './trace-abi.js';

/**
 * The control channel of a running platform: `hvshare up` listens on a unix socket in its state folder, and the
 * inspection commands (`ls`, `cat`, `cp`, `diff`, `check`, `locks`, `trace`) connect to it from any shell. One JSON object
 * per line each way; a request carries an id its reply repeats, so a client may have several in flight.
 * Byte arrays travel as `{ "bytes": "<base64>" }` (encodeWire/decodeWire).
 */
export const CONTROL_SOCKET_NAME = 'control.sock';

/** A domain as the control channel reports it. */
export interface DomainSummary {
  name: string;
  readOnly: boolean;
  state: 'booting' | 'running' | 'dead';
}

/** One cluster lock of the monitor's table, as `hvshare locks` shows it. */
export interface LockSummary {
  /** The volume the lock belongs to, and the lock's name within it (the address of the block it stands for). */
  volume: string;
  name: number;
  generation: number;
  holders: { domain: string; mode: 'shared' | 'exclusive'; heldMs: number }[];
  waiters: { domain: string; mode: 'shared' | 'exclusive' }[];
  /** Revokes the monitor posted for this lock since the platform booted. */
  revocations: number;
}

/** A lock with what it stands for on its volume (`inode 1234`, `group 3 bitmap`, `journal slot 1`, `rename`). */
export interface DescribedLock extends LockSummary {
  resource: string;
}

/** One block request as `hvshare trace` reports it (hypervisor/trace-abi.ts has the stages). */
export interface TraceRecord {
  domain: string;
  /** The guest process it was issued for (0: the guest kernel's own work, such as a journal commit)... */
  pid: number;
  /** ...and what it was doing: the guest agent's operation (`read`, `getattr`, ...), or `kernel`. */
  caller: string;
  /** read, write, flush, lock or unlock. */
  op: string;
  sector: number;
  count: number;
  /** The monitor's answer: 0 or a negative errno. */
  status: number;
  /** The nine stages (STAGE_NAMES) in microseconds since the epoch, one clock for all threads; null: did not happen. */
  stamps: (number | null)[];
}

/**
 * One call of the host into a domain's guest agent as `hvshare trace --ops call` reports it: a view's FUSE
 * operation, or a CLI command's. Four stamps on the trace clock (microseconds since the epoch): sent by the host,
 * begun and ended by the guest agent's process, its answer taken in by the host.
 */
export interface CallRecord {
  domain: string;
  /** The agent's operation, named as the trace's caller column names it (`getattr`, `read`, `block-workload`...). */
  call: string;
  /** What it was about: the path, or for a read or write through the data window its handle, position and length. */
  detail: string;
  /** The answer: 'OK' or the errno name. */
  result: string;
  sent: number;
  began: number;
  ended: number;
  answered: number;
}

/** Records finished since the last read, and how many were overwritten before they could be read. */
export interface TraceBatch {
  records: TraceRecord[];
  /** Agent calls answered since the last read (when `call` is traced). */
  calls: CallRecord[];
  lost: number;
}

/** What each kind of request answers with. */
export interface ControlResults {
  domains: DomainSummary[];
  vfs: AgentResult;
  locks: DescribedLock[];
  'trace-start': { domains: string[]; ops: TraceOpName[] };
  'trace-read': TraceBatch;
  'trace-stop': TraceBatch;
  cut: CutHeld & { maxHoldMs: number };
  'cut-end': CutEnded;
}

export type ControlRequest =
  | { id: number; kind: 'domains' }
  /** A filesystem call run by the domain's guest agent, as the FUSE adapter makes them. */
  | { id: number; kind: 'vfs'; domain: string; op: VfsOp; args: unknown[] }
  | { id: number; kind: 'locks' }
  /**
   * Switch tracing on for `ops` of `domains` (null: every domain). One trace at a time: it is this connection's
   * until trace-stop, and stops when the connection closes.
   */
  | { id: number; kind: 'trace-start'; domains: string[] | null; ops: TraceOpName[] }
  | { id: number; kind: 'trace-read' }
  | { id: number; kind: 'trace-stop' }
  /**
   * Hold a consistent cut of the tree at `path` in a domain: nothing in it changes, through any domain, until
   * `cut-end` names it, the client disconnects, or `maxHoldMs` (default and most: four fifths of the fencing deadline)
   * ran out. The reply says the maximum hold in force.
   */
  | { id: number; kind: 'cut'; domain: string; path: string; maxHoldMs?: number }
  | { id: number; kind: 'cut-end'; domain: string; cut: number };

export type ControlKind = ControlRequest['kind'];

/** `code` is a POSIX errno name for filesystem errors, ENODOM for an unknown domain, EPROTO for a bad request. */
export type ControlReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; code: string; message: string };

/** A value made JSON-safe: a Uint8Array (at the top level or inside an array) becomes `{ bytes: base64 }`. */
export function encodeWire(value: unknown): unknown {
  if (value instanceof Uint8Array) return { bytes: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
  if (Array.isArray(value)) return value.map(encodeWire);
  return value;
}

export function decodeWire(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(decodeWire);
  if (value && typeof value === 'object' && 'bytes' in value && typeof value.bytes === 'string' && Object.keys(value).length === 1) {
    const buf = Buffer.from(value.bytes, 'base64');
    return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  return value;
}
