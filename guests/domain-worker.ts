import { parentPort, workerData } from 'node:worker_threads';
import { Blkfront } from './blkfront.js';
import { callerName, TraceFront } from './trace-front.js';
import { traceNow } from '../hypervisor/trace-abi.js';
import { measureRoundTrips, runBlockWorkload } from './block-workload.js';
import { runFileWorkload } from './file-workload.js';
import { GuestKernel } from './kernel.js';
import { GuestMemory } from './guest-memory.js';
import { LockFront } from './lock-front.js';
import { VFS_OPS, type AgentMessage, type AgentReply, type AgentRequest, type AgentResult, type DomainBooted, type StatOrError, type VfsOp } from './agent-protocol.js';
import { FileSystem } from '../fs/filesystem.js';
import { IoError } from '../fs/block-device.js';
import { copyOut } from '../fs/buffers.js';
import { registerThread, ThreadClock } from '../hypervisor/thread-cpu.js';
import { ReadCorruption } from './fault-hook.js';
import { windowSlot } from './data-window.js';
import { VolumeErrorsFront } from './volume-errors-front.js';
import { ChangeCount } from './change-count.js';

/** What the toolstack hands a new domain: its own shared pages and the monitor's doorbell, nothing else. */
export interface DomainWorkerData {
  name: string;
  ring: SharedArrayBuffer;
  vic: SharedArrayBuffer;
  memory: SharedArrayBuffer;
  doorbell: SharedArrayBuffer;
  /** The platform's trace control word and this domain's trace ring (hypervisor/trace-abi.ts). */
  traceControl?: SharedArrayBuffer;
  trace?: SharedArrayBuffer;
  /** The idle loop's polling budget (twice a measured wake-up, see hypervisor/wake-up-cost.ts). */
  spinMicros: number;
  /** Mount the shared-volume filesystem of vbd 0 at boot, with this journal slot; `volume` names it in errors. */
  filesystem?: { slot: number; volume: string };
  /** Where this kernel thread writes its id, so the toolstack can read its CPU time (hypervisor/thread-cpu.ts). */
  threads?: { registry: SharedArrayBuffer; slot: number };
  /** The pages file data travels through between the host and this agent (guests/data-window.ts). */
  window: SharedArrayBuffer;
  /** This domain's change count (guests/change-count.ts). */
  changes: SharedArrayBuffer;
}

const data = workerData as DomainWorkerData;
const port = parentPort!;
registerThread(data.threads?.registry, data.threads?.slot ?? -1);
const kernel = new GuestKernel({
  vic: data.vic,
  doorbell: data.doorbell,
  spinMicros: data.spinMicros,
  clock: new ThreadClock(data.threads?.registry, data.threads?.slot ?? -1),
});
const memory = new GuestMemory(data.memory);
const changes = new ChangeCount(data.changes);
kernel.start();
const trace = new TraceFront(data.traceControl, data.trace);
const disk = await Blkfront.attach(kernel, memory, data.ring, 0, trace);
const locks = new LockFront(kernel, data.vic, disk);
let fs: FileSystem | null = data.filesystem
  ? await kernel.spawn('mount', () =>
      // The caches are bounded by the domain's memory (as a guest kernel's page cache is by its RAM).
      FileSystem.mount(disk, {
        slot: data.filesystem!.slot,
        locks,
        errors: new VolumeErrorsFront(data.ring, disk),
        cacheBytes: data.memory.byteLength,
        minHoldMs: lockHoldMs(),
        onChange: () => changes.add(),
      }).catch((error: Error) => {
        throw new Error(`volume ${data.filesystem!.volume}: ${error.message}`);
      }),
    )
  : null;

/** HVSHARE_LOCK_HOLD_MS, the minimum hold of a cluster lock in use (README, knobs); the default when unset or bad. */
function lockHoldMs(): number | undefined {
  const value = Number(process.env.HVSHARE_LOCK_HOLD_MS ?? NaN);
  return Number.isFinite(value) && value >= 0 ? value : undefined;
}

const fault = ReadCorruption.fromEnvironment(data.name);

function mounted(): FileSystem {
  if (!fs) throw new IoError('ENODEV', `domain ${data.name} has no filesystem mounted`);
  return fs;
}

async function serve(request: AgentRequest): Promise<AgentResult> {
  switch (request.kind) {
    case 'block-workload':
      // It may write any block of the volume under the filesystem's feet.
      changes.add();
      return runBlockWorkload(disk, request.workload).finally(() => changes.add());
    case 'file-workload':
      return runFileWorkload(mounted(), request.workload);
    case 'block-read': {
      const buf = disk.allocBuffer(request.length);
      try {
        await disk.read(request.offset, buf);
        return copyOut(buf);
      } finally {
        disk.freeBuffer(buf);
      }
    }
    case 'block-write':
      changes.add();
      await disk.write(request.offset, request.data, { fua: request.fua });
      changes.add();
      return null;
    case 'block-flush':
      await disk.flush();
      return null;
    case 'null-requests':
      return measureRoundTrips(() => disk.volumeInfo(), request.durationMs);
    case 'vfs':
      return vfs(request.op, request.args);
    case 'vfs-stat': {
      const result = await vfs(request.op, request.args);
      return { result, stats: await statsOf(request.paths) };
    }
    case 'getattr-many':
      return statsOf(request.paths);
    case 'read-window': {
      const { fh, position, length } = request;
      const target = windowSlot(data.window, request.slot, length);
      const bytes = await mounted().read(fh, position, length, target);
      fault?.observe('read', [fh], bytes);
      if (bytes.buffer !== target.buffer) target.set(bytes);
      return bytes.length;
    }
    case 'write-window':
      return mounted().write(request.fh, request.position, windowSlot(data.window, request.slot, request.length), request.dropSetId);
    case 'cut':
      return mounted().holdCut(request.path, request.maxHoldMs);
    case 'cut-end':
      return mounted().endCut(request.id);
    case 'unmount':
      await mounted().unmount();
      fs = null;
      return null;
    case 'info':
      return {
        name: data.name,
        sizeBytes: disk.sizeBytes,
        readOnly: disk.readOnly,
        slot: fs ? data.filesystem!.slot : null,
        ...kernel.counters,
        processes: kernel.listProcesses().map(({ pid, name }) => ({ pid, name })),
      };
  }
}

/** Vfs getattr of each path, in order, or the error the domain answered instead. */
async function statsOf(paths: string[]): Promise<StatOrError[]> {
  const stats: StatOrError[] = [];
  for (const path of paths) stats.push(await mounted().getattr(path).catch(errorAnswer));
  return stats;
}

/** Vfs operation `name` of the mounted filesystem. */
async function vfs(name: VfsOp, args: unknown[]): Promise<AgentResult> {
  if (!(VFS_OPS as readonly string[]).includes(name)) throw new IoError('ENOSYS', `no operation ${name}`);
  const op = mounted()[name] as (...args: unknown[]) => Promise<AgentResult>;
  const result = await op.apply(fs, args);
  return fault ? (fault.observe(name, args, result) as AgentResult) : result;
}

/**
 * Byte results are moved, not copied, to the host (a 128 KiB read would otherwise be copied once more): every
 * operation that returns bytes returns a new array it keeps no reference to (Vfs.read, block-read's copyOut).
 */
function transferable(reply: AgentReply): ArrayBuffer[] {
  if (!reply.ok || !(reply.result instanceof Uint8Array)) return [];
  const { buffer, byteOffset, byteLength } = reply.result;
  return buffer instanceof ArrayBuffer && byteOffset === 0 && byteLength === buffer.byteLength && byteLength > 0 ? [buffer] : [];
}

/** What the host is told of a failed call: its errno name and what went wrong. */
function errorAnswer(err: Error & { code?: string; detail?: string }): { code: string; message: string } {
  return { code: err.code ?? 'EIO', message: err.detail ?? err.message };
}

port.on('message', (message: AgentMessage) => {
  const began = message.traced ? traceNow() : 0;
  kernel
    .spawn(message.request.kind, (process) => trace.runAs(process.pid, callerName(message.request), () => serve(message.request)))
    .then(
      (result): AgentReply => ({ seq: message.seq, ok: true, result }),
      (err: Error & { code?: string; detail?: string }): AgentReply => ({ seq: message.seq, ok: false, ...errorAnswer(err) }),
    )
    .then((reply) => {
      if (message.traced) reply.span = [began, traceNow()];
      port.postMessage(reply, transferable(reply));
    });
});
port.postMessage({ booted: true, name: data.name } satisfies DomainBooted);
