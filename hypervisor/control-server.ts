import { createServer, type Server, type Socket } from 'node:net';
import { chmod, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { VFS_OPS } from '../guests/agent-protocol.js';
import {
  CONTROL_SOCKET_NAME,
  decodeWire,
  encodeWire,
  type ControlReply,
  type ControlRequest,
  type ControlResults,
  type DescribedLock,
  type DomainSummary,
  type LockSummary,
} from './control-protocol.js';
import type { CutEnded, CutHeld } from '../fs/consistent-cut.js';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { readSuperblock, type Superblock } from '../fs/layout.js';
import { describeLock } from '../fs/lock-description.js';
import type { StoredPlatform } from './platform-boot.js';
import { resolveImagePath } from './platform-config.js';
import type { DomainHandle } from './toolstack.js';
import { TRACE_OP_NAMES, type TraceOpName } from './trace-abi.js';
import { TraceSession } from './trace-session.js';
import { DEFAULT_REVOKE_DEADLINE_MS } from './monitor.js';

/** The largest read one request may ask a domain for (the CLI reads 256 KiB or 1 MiB at a time). */
const MAX_READ = 16 << 20;
/** The shortest maximum hold a client may ask for. */
const MIN_CUT_HOLD_MS = 100;

/** What a connection holds in the domains: files it opened, cuts it took (`${domain}\0${fh or cut id}`). */
interface Held {
  open: Set<string>;
  cuts: Set<string>;
}

class ControlError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Serves the control channel (control-protocol.ts) of a running platform on `<state>/control.sock`. Filesystem
 * calls go to the named domain's guest agent, exactly as a FUSE view's do. Files a client opened and did not
 * close are closed when it disconnects (an interrupted `hvshare cat` leaves nothing open in the domain).
 */
export class ControlServer {
  private readonly sockets = new Set<Socket>();
  /** The one trace running, and the connection it belongs to. */
  private tracing: { session: TraceSession; socket: Socket } | null = null;

  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {}

  static async listen(running: StoredPlatform): Promise<ControlServer> {
    const path = join(running.store.stateDir, CONTROL_SOCKET_NAME);
    // Left behind by a platform that was killed: the store's lock already proves no other platform runs here.
    await rm(path, { force: true });
    const server = createServer();
    const control = new ControlServer(server, path);
    server.on('connection', (socket) => control.serve(running, socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    // The channel reads and writes every domain's files: only the platform's owner may connect.
    await chmod(path, 0o600);
    return control;
  }

  private serve(running: StoredPlatform, socket: Socket): void {
    this.sockets.add(socket);
    const held: Held = { open: new Set(), cuts: new Set() };
    const send = (reply: ControlReply) => {
      if (!socket.destroyed) socket.write(`${JSON.stringify(reply)}\n`);
    };
    const lines = createInterface({ input: socket });
    // A client that exits with replies on their way resets the connection: readline passes the error on.
    lines.on('error', () => {});
    lines.on('line', (line) => {
      let request: ControlRequest;
      try {
        request = JSON.parse(line) as ControlRequest;
      } catch {
        return send({ id: -1, ok: false, code: 'EPROTO', message: 'a request must be one JSON object per line' });
      }
      if (typeof request !== 'object' || request === null || !Number.isSafeInteger(request.id)) {
        return send({ id: -1, ok: false, code: 'EPROTO', message: 'a request must be a JSON object with a numeric id' });
      }
      (isTraceRequest(request) ? this.trace(running, request, socket) : handle(running, request, held)).then(
        (result) => send({ id: request.id, ok: true, result: encodeWire(result) }),
        (err: Error & { code?: unknown; detail?: string }) =>
          send({ id: request.id, ok: false, code: typeof err.code === 'string' ? err.code : 'EIO', message: err.detail ?? err.message }),
      );
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.sockets.delete(socket);
      // A trace whose client went away (killed, Ctrl-C) does not stay on.
      if (this.tracing?.socket === socket) void this.tracing.session.stop();
      if (this.tracing?.socket === socket) this.tracing = null;
      const undo = (keys: Set<string>, call: (n: number) => Parameters<DomainHandle['call']>[0]) => {
        for (const key of keys) {
          const [domain, n] = key.split('\0');
          running
            .domains()
            .find((d) => d.name === domain)
            ?.call(call(Number(n)))
            .catch(() => {});
        }
      };
      undo(held.cuts, (id) => ({ kind: 'cut-end', id }));
      undo(held.open, (fh) => ({ kind: 'vfs', op: 'release', args: [fh] }));
    });
  }

  /** trace-start, trace-read, trace-stop: one trace at a time, owned by the connection that started it. */
  private async trace(running: StoredPlatform, request: TraceRequest, socket: Socket): Promise<unknown> {
    const mine = this.tracing?.socket === socket ? this.tracing.session : null;
    switch (request.kind) {
      case 'trace-start': {
        if (this.tracing) throw new ControlError('EBUSY', mine ? 'this connection is tracing already' : 'another hvshare trace is running on this platform');
        const names = request.domains === null ? null : checkedList(request.domains, 'domains').map((name) => findDomain(running, name).name);
        const ops = checkedList(request.ops, 'ops');
        const unknown = ops.filter((op) => !(TRACE_OP_NAMES as string[]).includes(op));
        if (ops.length === 0 || unknown.length > 0) {
          throw new ControlError('EINVAL', `ops: ${unknown.length ? `unknown operation "${unknown[0]}"` : 'empty'} (one or more of ${TRACE_OP_NAMES.join(', ')})`);
        }
        const session = TraceSession.start(running.platform.traceControl, () => running.domains(), names, ops as TraceOpName[]);
        this.tracing = { session, socket };
        return { domains: session.names, ops: session.ops };
      }
      case 'trace-read':
        if (!mine) throw new ControlError('EINVAL', 'this connection is not tracing (send trace-start first)');
        return mine.read();
      case 'trace-stop':
        if (!mine) throw new ControlError('EINVAL', 'this connection is not tracing (send trace-start first)');
        this.tracing = null;
        return mine.stop();
    }
  }

  async close(): Promise<void> {
    if (this.tracing) await this.tracing.session.stop();
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.path, { force: true });
  }
}

/** Superblocks by volume name, read once from the images (written at mkfs, never changed after). */
const superblocks = new WeakMap<StoredPlatform, Map<string, Promise<Superblock | null>>>();

function superblockOf(running: StoredPlatform, volume: string): Promise<Superblock | null> {
  let known = superblocks.get(running);
  if (!known) superblocks.set(running, (known = new Map()));
  let sb = known.get(volume);
  if (!sb) {
    const config = running.config.volumes.find((v) => v.name === volume);
    sb = config
      ? FileBlockDevice.open(resolveImagePath(running.store.stateDir, config), { readOnly: true })
          .then((dev) => readSuperblock(dev).finally(() => dev.close()))
          .catch(() => null)
      : Promise.resolve(null);
    known.set(volume, sb);
  }
  return sb;
}

async function describeLocks(running: StoredPlatform, locks: LockSummary[]): Promise<DescribedLock[]> {
  const described: DescribedLock[] = [];
  for (const lock of locks) {
    const sb = await superblockOf(running, lock.volume);
    described.push({ ...lock, resource: sb ? describeLock(sb, lock.name) : `block ${lock.name}` });
  }
  return described;
}

type TraceRequest = Extract<ControlRequest, { kind: 'trace-start' | 'trace-read' | 'trace-stop' }>;

function isTraceRequest(request: ControlRequest): request is TraceRequest {
  return request.kind === 'trace-start' || request.kind === 'trace-read' || request.kind === 'trace-stop';
}

/** A request field that must be an array of strings. */
function checkedList(value: unknown, field: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new ControlError('EPROTO', `${field} must be an array of names`);
  return value as string[];
}

function findDomain(running: StoredPlatform, name: string): DomainHandle {
  const domain = running.domains().find((d) => d.name === name);
  if (!domain) {
    const known = running.domains().map((d) => d.name).join(', ');
    throw new ControlError('ENODOM', `no domain "${name}" (the platform runs ${known})`);
  }
  return domain;
}

/**
 * A cut's maximum hold: what the client asked for, at most (and by default) four fifths of the fencing deadline
 * (revokeDeadlineMs): a writer's revoke waiting for the cut is answered, when the cut lets go, with a fifth of the
 * deadline to spare (at least 200 ms), so the cut never gets its domain fenced.
 */
function cutHoldMs(running: StoredPlatform, asked: unknown): number {
  const deadline = running.config.revokeDeadlineMs ?? DEFAULT_REVOKE_DEADLINE_MS;
  const limit = Math.floor((deadline * 4) / 5);
  if (asked === undefined || asked === null) return limit;
  if (!Number.isSafeInteger(asked) || (asked as number) < MIN_CUT_HOLD_MS || (asked as number) > limit) {
    throw new ControlError(
      'EINVAL',
      `maximum hold ${String(asked)} ms: must be a whole number of ms from ${MIN_CUT_HOLD_MS} to ${limit} (four fifths of the platform's revokeDeadlineMs, ${deadline} ms, so a cut never gets its domain fenced)`,
    );
  }
  return asked as number;
}

async function handle(running: StoredPlatform, request: ControlRequest, held: Held): Promise<ControlResults[ControlRequest['kind']]> {
  switch (request.kind) {
    case 'domains':
      return running.domains().map(
        (d): DomainSummary => ({ name: d.name, readOnly: d.spec.grants[0]?.readOnly ?? true, state: d.state }),
      );
    case 'locks':
      return describeLocks(running, await running.locks());
    case 'vfs': {
      if (!(VFS_OPS as readonly string[]).includes(request.op)) throw new ControlError('EPROTO', `no filesystem operation "${request.op}"`);
      if (!Array.isArray(request.args)) throw new ControlError('EPROTO', 'args must be an array');
      const domain = findDomain(running, String(request.domain));
      if (request.op === 'read' && !(Number.isSafeInteger(request.args[2]) && (request.args[2] as number) <= MAX_READ)) {
        throw new ControlError('EINVAL', `a read takes a length of at most ${MAX_READ} bytes`);
      }
      const result = await domain.call({ kind: 'vfs', op: request.op, args: decodeWire(request.args) as unknown[] });
      if (request.op === 'open' || request.op === 'create') held.open.add(`${request.domain}\0${result as number}`);
      if (request.op === 'release') held.open.delete(`${request.domain}\0${request.args[0] as number}`);
      return result;
    }
    case 'cut': {
      const domain = findDomain(running, String(request.domain));
      if (typeof request.path !== 'string') throw new ControlError('EPROTO', 'a cut names a path');
      const maxHoldMs = cutHoldMs(running, request.maxHoldMs);
      const cut = (await domain.call({ kind: 'cut', path: request.path, maxHoldMs })) as CutHeld;
      held.cuts.add(`${domain.name}\0${cut.id}`);
      return { ...cut, maxHoldMs };
    }
    case 'cut-end': {
      const domain = findDomain(running, String(request.domain));
      const ended = (await domain.call({ kind: 'cut-end', id: Number(request.cut) })) as CutEnded;
      held.cuts.delete(`${domain.name}\0${request.cut}`);
      return ended;
    }
    default:
      throw new ControlError('EPROTO', `unknown request kind "${(request as { kind: unknown }).kind}"`);
  }
}
