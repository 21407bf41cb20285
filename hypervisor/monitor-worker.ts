import { MessageChannel, parentPort, receiveMessageOnPort, Worker, workerData, type MessagePort } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Doorbell } from './abi.js';
import { DomainStats } from './domain-stats.js';
import { createPoolBuffer } from './io-pool.js';
import type { IoWorkerCommand, IoWorkerData } from './io-worker.js';
import { Monitor, type MonitorEvent } from './monitor.js';
import type { MonitorCommand, MonitorReply, MonitorWorkerData } from './monitor-protocol.js';
import { RawImageBackend } from './raw-image-backend.js';
import { BackgroundFlush } from './background-flush.js';
import { WriteEpochs } from './write-epochs.js';
import { MAX_IO_THREADS, registerThread, ThreadClock, ThreadSlot } from './thread-cpu.js';
import { PollWindow } from './spin-policy.js';

/**
 * The monitor thread: serves every domain's ring in a loop. While requests keep coming it polls (a served request
 * costs a few microseconds, a wake-up through the doorbell about thirty); after a poll window without work (at most
 * `spinMicros`, as long as its recent waits say polling pays: PollWindow) it arms the guests' doorbells (event idx)
 * and sleeps until one rings. Large transfers it has a backlog of go to its I/O threads, and it runs queued ones
 * itself whenever its rings are quiet.
 */
const data = workerData as MonitorWorkerData;
const port = parentPort!;
const doorbell = new Int32Array(data.doorbell);
const reply = (message: MonitorReply) => port.postMessage(message);
const ioThreads = Math.max(0, Math.min(MAX_IO_THREADS, data.ioThreads ?? Number(process.env.HVSHARE_IO_THREADS ?? availableParallelism() - 1)));
registerThread(data.threads, ThreadSlot.MONITOR);
const clock = new ThreadClock(data.threads, ThreadSlot.MONITOR);
const poll = new PollWindow(data.spinMicros);
const poolBuffer = createPoolBuffer();
const monitor = new Monitor(new DomainStats(data.stats), (event: MonitorEvent) => reply({ type: 'event', event }), {
  pool: poolBuffer,
  ioThreads,
  revokeDeadlineMs: data.revokeDeadlineMs,
});
const backends = new Map<number, WriteEpochs>();
const ioPorts: MessagePort[] = [];
for (let i = 0; i < ioThreads; i++) {
  const channel = new MessageChannel();
  const ioData: IoWorkerData = { control: poolBuffer, port: channel.port2, spinMicros: data.spinMicros, threads: data.threads, index: i };
  const worker = new Worker(new URL('./io-worker.js', import.meta.url), { workerData: ioData, transferList: [channel.port2] });
  worker.unref();
  ioPorts.push(channel.port1);
}
const tellIo = (command: IoWorkerCommand) => {
  for (const p of ioPorts) p.postMessage(command);
};
let running = true;

/** Runs a control command; returns its reply when that is more than an ack. */
function control(command: MonitorCommand): MonitorReply | void {
  switch (command.type) {
    case 'locks':
      return { type: 'locks', seq: command.seq, locks: monitor.lockSummaries() };
    case 'add-volume': {
      // A writable image gets ordered barriers without waiting (write-epochs.ts), flushed by a thread of its own.
      const image = new RawImageBackend(command.path, command.readOnly);
      const backend = new WriteEpochs(image, image.readOnly ? undefined : new BackgroundFlush(command.path, data.doorbell));
      backends.set(command.id, backend);
      monitor.addVolume({ id: command.id, name: command.name, backend });
      tellIo({ type: 'add-volume', id: command.id, path: command.path, readOnly: command.readOnly });
      break;
    }
    case 'add-domain':
      monitor.addDomain(command.id, command.name, command.pages, command.grants);
      tellIo({ type: 'add-domain', id: command.id, pages: command.pages });
      break;
    case 'remove-domain':
      monitor.removeDomain(command.id);
      tellIo({ type: 'remove-domain', id: command.id });
      break;
    case 'drop-locks':
      monitor.dropLocks(command.id);
      break;
    case 'shutdown':
      running = false;
      monitor.quiesce();
      monitor.pool.stop();
      monitor.pool.awaitExit(ioThreads);
      for (const backend of backends.values()) {
        if (!backend.readOnly) backend.flush();
        backend.close();
      }
      break;
  }
}

function pollControl(): void {
  for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
    const command = m.message as MonitorCommand;
    try {
      reply(control(command) ?? { type: 'ack', seq: command.seq });
    } catch (err) {
      reply({ type: 'error', seq: command.seq, message: (err as Error).message });
    }
  }
}

/** Tell the guests how many domains are busy (Doorbell.BUSY_DOMAINS), at most once a millisecond. */
let busyPublishedAt = 0;
function publishBusyDomains(): void {
  const now = performance.now();
  if (now - busyPublishedAt < 1) return;
  busyPublishedAt = now;
  const busy = monitor.busyDomains();
  if (Atomics.load(doorbell, Doorbell.BUSY_DOMAINS) !== busy) Atomics.store(doorbell, Doorbell.BUSY_DOMAINS, busy);
}

while (running) {
  const seq = Atomics.load(doorbell, Doorbell.SEQ);
  pollControl();
  if (!running) break;
  const served = monitor.drain();
  publishBusyDomains();
  if (served > 0) {
    clock.worked(served);
    continue;
  }
  if (monitor.runQueued()) continue;
  poll.wait(clock, () => monitor.hasWork(), () => {
    if (monitor.armDoorbells()) return false;
    // Wake in time to fence a lock holder that never answers its revoke.
    const deadline = monitor.msUntilRevokeDeadline();
    Atomics.wait(doorbell, Doorbell.SEQ, seq, deadline === Infinity ? undefined : deadline + 1);
    return true;
  });
}
for (const p of ioPorts) p.close();
port.close();
