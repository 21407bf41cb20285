import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { emptyJob, PoolControl, type PoolDomain } from './io-pool.js';
import { RawImageBackend } from './raw-image-backend.js';
import { VirtualInterruptController } from './virq.js';
import { registerThread, ThreadClock, ThreadSlot } from './thread-cpu.js';
import { PollWindow } from './spin-policy.js';
import { traceRingOf, type DomainPages } from './monitor.js';

/** What the monitor tells its I/O threads (on a channel of their own; they read it between jobs). */
export type IoWorkerCommand =
  | { type: 'add-volume'; id: number; path: string; readOnly: boolean }
  | { type: 'add-domain'; id: number; pages: DomainPages }
  | { type: 'remove-domain'; id: number };

export interface IoWorkerData {
  control: SharedArrayBuffer;
  port: MessagePort;
  /** The most an idle I/O thread polls the queue before it sleeps, in microseconds (PollWindow). */
  spinMicros: number;
  /** The thread registry (thread-cpu.ts) and this thread's number among the I/O threads. */
  threads?: SharedArrayBuffer;
  index: number;
}

/**
 * An I/O thread of the monitor: takes validated transfers from the pool's queue, performs them between the
 * volume's image and the domain's memory, and posts the responses. It never reads a ring: descriptors were
 * copied out and checked by the monitor thread.
 */
const data = workerData as IoWorkerData;
registerThread(data.threads, ThreadSlot.io(data.index));
const clock = new ThreadClock(data.threads, ThreadSlot.io(data.index));
const poll = new PollWindow(data.spinMicros);
const pool = new PoolControl(data.control);
const volumes = new Map<number, RawImageBackend>();
const domains = new Map<number, PoolDomain>();

function control(): void {
  for (let m = receiveMessageOnPort(data.port); m; m = receiveMessageOnPort(data.port)) {
    const command = m.message as IoWorkerCommand;
    switch (command.type) {
      case 'add-volume':
        volumes.set(command.id, new RawImageBackend(command.path, command.readOnly));
        break;
      case 'add-domain':
        domains.set(command.id, {
          id: command.id,
          ring: new Int32Array(command.pages.ring),
          vic: new VirtualInterruptController(command.pages.vic),
          memory: new Uint8Array(command.pages.memory),
          trace: traceRingOf(command.pages),
        });
        break;
      case 'remove-domain':
        domains.delete(command.id);
        break;
    }
  }
}

const job = emptyJob();
while (!pool.stopped()) {
  if (pool.claim(job)) {
    // The monitor told us about the domain and volume before it published the job; the message may still be on
    // its way through the channel.
    let d = domains.get(job.domain);
    let backend = volumes.get(job.volume);
    while (!d || !backend) {
      control();
      d = domains.get(job.domain);
      backend = volumes.get(job.volume);
    }
    pool.run(job, d, backend, null);
    pool.finished(job);
    continue;
  }
  control();
  poll.wait(clock, () => pool.queued() > 0 || pool.stopped(), () => {
    if (pool.queued() > 0) return false;
    pool.sleep();
    return true;
  });
}
control();
for (const backend of volumes.values()) backend.close();
pool.exited();
data.port.close();
