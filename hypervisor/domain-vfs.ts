import type { Vfs } from '../fs/vfs.js';
import { VFS_OPS } from '../guests/agent-protocol.js';
import type { DomainHandle } from './toolstack.js';

/**
 * A running domain's filesystem as a Vfs on the host: every call is a request to the domain's guest agent, which
 * runs it as a process in the domain (its kernel, its hypercalls, the monitor). Errors arrive as IoError with the
 * errno the guest filesystem gave.
 */
export function domainVfs(domain: DomainHandle): Vfs {
  const vfs = {} as Record<string, (...args: unknown[]) => Promise<unknown>>;
  for (const op of VFS_OPS) vfs[op] = (...args: unknown[]) => domain.call({ kind: 'vfs', op, args });
  return vfs as unknown as Vfs;
}
