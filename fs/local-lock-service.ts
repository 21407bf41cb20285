/**
 * The lock service in-process: one LockTable shared by several filesystem instances in the same process (native
 * use, tests). `client()` hands each instance its own LockService; revoke handlers are called asynchronously, as
 * the monitor's revoke interrupt would arrive. `kill(client, recover)` fences a client, lets the caller replay its
 * journal, and only then drops its locks, in the order the monitor and toolstack keep for a dead domain.
 */
import { LockTable, type Grant, type HolderId, type ReleaseResult, type Revoke } from '../hypervisor/lock-table.js';
import type { LockMode, LockService } from './lock-service.js';

type Pending = { resolve: (generation: number) => void };

export class LocalLockService {
  private readonly table = new LockTable();
  private readonly clients = new Map<HolderId, LocalLockClient>();
  private nextId = 1;
  /** Counters for tests and diagnostics. */
  readonly stats = { grants: 0, revokes: 0, tryFailures: 0 };

  client(): LocalLockClient {
    const client = new LocalLockClient(this, this.nextId++);
    this.clients.set(client.id, client);
    return client;
  }

  /** A client's domain died: fence it, await `recover` (replay its journal), then pass its locks on. */
  async kill(client: LocalLockClient, recover?: () => Promise<void>): Promise<void> {
    client.dead = true;
    try {
      await recover?.();
    } finally {
      this.clients.delete(client.id);
      this.dispatch(this.table.dropHolder(client.id));
    }
  }

  generation(name: number): number {
    return this.table.generation(name);
  }

  /** @internal */
  request(client: LocalLockClient, name: number, mode: LockMode, join = false): Promise<number> {
    const { granted, revokes } = this.table.request(client.id, name, mode, join);
    this.sendRevokes(revokes);
    if (granted) {
      this.stats.grants++;
      client.saw(granted.epoch);
      return Promise.resolve(granted.generation);
    }
    return new Promise((resolve) => client.pending.set(name, { resolve }));
  }

  /** @internal */
  tryRequest(client: LocalLockClient, name: number, mode: LockMode): number | null {
    const granted = this.table.tryRequest(client.id, name, mode);
    if (!granted) {
      this.stats.tryFailures++;
      return null;
    }
    this.stats.grants++;
    client.saw(granted.epoch);
    return granted.generation;
  }

  /** @internal */
  release(client: LocalLockClient, name: number, dirty: boolean, held: LockMode): void {
    this.dispatch(this.table.release(client.id, name, dirty, held));
  }

  /** @internal */
  downgrade(client: LocalLockClient, name: number, dirty: boolean): void {
    this.dispatch(this.table.downgrade(client.id, name, dirty));
  }

  private dispatch(result: ReleaseResult): void {
    for (const grant of result.grants) this.deliver(grant);
    this.sendRevokes(result.revokes);
  }

  private deliver(grant: Grant): void {
    const client = this.clients.get(grant.holder);
    const pending = client?.pending.get(grant.name);
    // A fenced client's grant stays in the table (dropped with the rest of its locks) but reaches nobody.
    if (!client || !pending || client.dead) return;
    client.pending.delete(grant.name);
    this.stats.grants++;
    client.saw(grant.epoch);
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
  epoch = 0;
  private handler: ((name: number, wanted: LockMode) => void) | null = null;

  constructor(
    private readonly service: LocalLockService,
    readonly id: number,
  ) {}

  lock(name: number, mode: LockMode, join = false): Promise<number> {
    if (this.dead) return Promise.reject(new Error('lock client is dead'));
    return this.service.request(this, name, mode, join);
  }

  async tryLock(name: number, mode: LockMode): Promise<number | null> {
    if (this.dead) throw new Error('lock client is dead');
    return this.service.tryRequest(this, name, mode);
  }

  async unlock(name: number, dirty: boolean, held: LockMode): Promise<void> {
    if (this.dead) return;
    this.service.release(this, name, dirty, held);
  }

  async downgrade(name: number, dirty: boolean): Promise<void> {
    if (this.dead) return;
    this.service.downgrade(this, name, dirty);
  }

  onRevoke(handler: (name: number, wanted: LockMode) => void): void {
    this.handler = handler;
  }

  /** @internal */
  saw(epoch: number): void {
    this.epoch = Math.max(this.epoch, epoch);
  }

  /** @internal */
  revoked(name: number, wanted: LockMode): void {
    if (!this.dead) this.handler?.(name, wanted);
  }
}
