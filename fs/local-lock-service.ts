/**
 * The lock service in-process: one LockTable shared by several filesystem instances in the same process (native
 * use, tests). `client()` hands each instance its own LockService; revoke handlers are called asynchronously, as
 * the monitor's revoke interrupt would arrive. `kill(client)` drops a client's locks as if its domain died.
 */
import { LockTable, type Grant, type HolderId, type ReleaseResult, type Revoke } from '../hypervisor/lock-table.js';
import type { LockMode, LockService } from './lock-service.js';

type Pending = { resolve: (generation: number) => void };

export class LocalLockService {
  private readonly table = new LockTable();
  private readonly clients = new Map<HolderId, LocalLockClient>();
  private nextId = 1;
  /** Counters for tests and diagnostics. */
  readonly stats = { grants: 0, revokes: 0 };

  client(): LocalLockClient {
    const client = new LocalLockClient(this, this.nextId++);
    this.clients.set(client.id, client);
    return client;
  }

  /** Forgets a client and its locks, as the monitor does when a domain dies. */
  kill(client: LocalLockClient): void {
    this.clients.delete(client.id);
    client.dead = true;
    this.dispatch(this.table.dropHolder(client.id));
  }

  generation(name: number): number {
    return this.table.generation(name);
  }

  /** @internal */
  request(client: LocalLockClient, name: number, mode: LockMode): Promise<number> {
    const { granted, revokes } = this.table.request(client.id, name, mode);
    this.sendRevokes(revokes);
    if (granted) {
      this.stats.grants++;
      return Promise.resolve(granted.generation);
    }
    return new Promise((resolve) => client.pending.set(name, { resolve }));
  }

  /** @internal */
  release(client: LocalLockClient, name: number, dirty: boolean): void {
    this.dispatch(this.table.release(client.id, name, dirty));
  }

  private dispatch(result: ReleaseResult): void {
    for (const grant of result.grants) this.deliver(grant);
    this.sendRevokes(result.revokes);
  }

  private deliver(grant: Grant): void {
    const client = this.clients.get(grant.holder);
    const pending = client?.pending.get(grant.name);
    if (!client || !pending) return;
    client.pending.delete(grant.name);
    this.stats.grants++;
    pending.resolve(grant.generation);
  }

  private sendRevokes(revokes: Revoke[]): void {
    for (const revoke of revokes) {
      const client = this.clients.get(revoke.holder);
      if (!client) continue;
      this.stats.revokes++;
      setImmediate(() => client.revoked(revoke.name, revoke.wanted));
    }
  }
}

export class LocalLockClient implements LockService {
  /** @internal */ readonly pending = new Map<number, Pending>();
  /** @internal */ dead = false;
  private handler: ((name: number, wanted: LockMode) => void) | null = null;

  constructor(
    private readonly service: LocalLockService,
    readonly id: number,
  ) {}

  lock(name: number, mode: LockMode): Promise<number> {
    if (this.dead) return Promise.reject(new Error('lock client is dead'));
    return this.service.request(this, name, mode);
  }

  async unlock(name: number, dirty: boolean): Promise<void> {
    if (this.dead) return;
    this.service.release(this, name, dirty);
  }

  onRevoke(handler: (name: number, wanted: LockMode) => void): void {
    this.handler = handler;
  }

  /** @internal */
  revoked(name: number, wanted: LockMode): void {
    if (!this.dead) this.handler?.(name, wanted);
  }
}
