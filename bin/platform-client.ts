import { CommanderError, type Command } from 'commander';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { IoError } from '../fs/block-device.js';
import type { Vfs } from '../fs/vfs.js';
import { VFS_OPS } from '../guests/agent-protocol.js';
import {
  CONTROL_SOCKET_NAME,
  decodeWire,
  encodeWire,
  type ControlKind,
  type ControlReply,
  type ControlRequest,
  type ControlResults,
  type DomainSummary,
} from '../hypervisor/control-protocol.js';
import { CliError } from './cli-support.js';

/** Exit status of the inspection commands on an error (1 is kept for "differ" / "mismatch"). */
export const EXIT_ERROR = 2;

/** Usage errors of an inspection command (a missing argument, an unknown option) exit EXIT_ERROR too. */
export function usageErrorsExit2(command: Command): Command {
  return command.exitOverride((err: CommanderError) => {
    throw new CommanderError(err.exitCode === 0 ? 0 : EXIT_ERROR, err.code, err.message);
  });
}

type Body<K extends ControlKind> = Omit<Extract<ControlRequest, { kind: K }>, 'id'>;

/**
 * A connection to a running platform's control socket (hypervisor/control-protocol.ts). Errors of a request
 * arrive as IoError with the errno name the domain gave (or ENODOM for a domain the platform does not run).
 */
export class PlatformClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private closed: Error | undefined;

  private constructor(private readonly socket: Socket) {
    const lines = createInterface({ input: socket });
    lines.on('error', () => {});
    lines.on('line', (line) => {
      const reply = JSON.parse(line) as ControlReply;
      const call = this.pending.get(reply.id);
      if (!call) return;
      this.pending.delete(reply.id);
      if (reply.ok) call.resolve(decodeWire(reply.result));
      else call.reject(new IoError(reply.code, reply.message));
    });
    socket.on('close', () => {
      this.closed = new CliError('the platform closed the control connection (it stopped)', EXIT_ERROR);
      for (const call of this.pending.values()) call.reject(this.closed);
      this.pending.clear();
    });
  }

  /** Connects to the platform whose state folder is `stateDir`; a CliError saying so when it is not running. */
  static async connect(stateDir: string): Promise<PlatformClient> {
    const path = join(stateDir, CONTROL_SOCKET_NAME);
    const socket = connect(path);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' || code === 'ECONNREFUSED' ? 'nothing listens on' : `cannot connect to (${code})`;
      throw new CliError(`the platform is not running: ${why} ${path} (start it with: hvshare up --state ${stateDir})`, EXIT_ERROR);
    }
    socket.on('error', () => {});
    return new PlatformClient(socket);
  }

  request<K extends ControlKind>(body: Body<K>): Promise<ControlResults[K]> {
    if (this.closed) return Promise.reject(this.closed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      const request = { ...body, id } as ControlRequest;
      if (request.kind === 'vfs') request.args = encodeWire(request.args) as unknown[];
      this.socket.write(`${JSON.stringify(request)}\n`);
    });
  }

  domains(): Promise<DomainSummary[]> {
    return this.request<'domains'>({ kind: 'domains' });
  }

  /** A domain's filesystem, each call run by its guest agent as a FUSE view's calls are. */
  vfs(domain: string): Vfs {
    const vfs = {} as Record<string, (...args: unknown[]) => Promise<unknown>>;
    for (const op of VFS_OPS) vfs[op] = (...args: unknown[]) => this.request<'vfs'>({ kind: 'vfs', domain, op, args });
    return vfs as unknown as Vfs;
  }

  close(): void {
    this.socket.end();
  }
}

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'no such file or directory',
  ENOTDIR: 'not a directory',
  EISDIR: 'is a directory',
  EEXIST: 'file exists',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  EACCES: 'permission denied',
  ENOTEMPTY: 'directory not empty',
  ENAMETOOLONG: 'file name too long',
};

/**
 * An error on `where` (`dom1:/a/b`, a host path) as a CliError: `where: no such file or directory (ENOENT)`.
 * CliErrors (the platform is down, an unknown domain) pass through unchanged.
 */
export function failure(where: string, err: unknown): CliError {
  if (err instanceof CliError) return err;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
    return new CliError(`${where}: ${ERRNO_TEXT[code] ?? (err as { detail?: string }).detail ?? (err as Error).message} (${code})`, EXIT_ERROR);
  }
  return new CliError(`${where}: ${(err as Error).message}`, EXIT_ERROR);
}

/** Runs `body` with a connection to the platform, closed afterwards. */
export async function withPlatform<T>(stateDir: string, body: (client: PlatformClient) => Promise<T>): Promise<T> {
  const client = await PlatformClient.connect(stateDir);
  try {
    return await body(client);
  } finally {
    client.close();
  }
}
