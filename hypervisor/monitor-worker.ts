import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { Doorbell } from './abi.js';
import { DomainStats } from './domain-stats.js';
import { Monitor, type MonitorEvent } from './monitor.js';
import type { MonitorCommand, MonitorReply, MonitorWorkerData } from './monitor-protocol.js';
import { RawImageBackend } from './raw-image-backend.js';

/**
 * The monitor thread: serves every domain's ring in a loop. While requests keep coming it polls (a served request
 * costs a few microseconds, a wake-up through the doorbell about thirty); after `spinMicros` without work it arms
 * the guests' doorbells (event idx) and sleeps until one rings.
 */
const data = workerData as MonitorWorkerData;
const port = parentPort!;
const doorbell = new Int32Array(data.doorbell);
const reply = (message: MonitorReply) => port.postMessage(message);
const monitor = new Monitor(new DomainStats(data.stats), (event: MonitorEvent) => reply({ type: 'event', event }));
const backends = new Map<number, RawImageBackend>();
let running = true;

function control(command: MonitorCommand): void {
  switch (command.type) {
    case 'add-volume': {
      const backend = new RawImageBackend(command.path, command.readOnly);
      backends.set(command.id, backend);
      monitor.addVolume({ id: command.id, name: command.name, backend });
      break;
    }
    case 'add-domain':
      monitor.addDomain(command.id, command.name, command.pages, command.grants);
      break;
    case 'remove-domain':
      monitor.removeDomain(command.id);
      break;
    case 'drop-locks':
      monitor.dropLocks(command.id);
      break;
    case 'shutdown':
      running = false;
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
      control(command);
      reply({ type: 'ack', seq: command.seq });
    } catch (err) {
      reply({ type: 'error', seq: command.seq, message: (err as Error).message });
    }
  }
}

while (running) {
  const seq = Atomics.load(doorbell, Doorbell.SEQ);
  pollControl();
  if (!running) break;
  if (monitor.drain() > 0) continue;
  const spinUntil = performance.now() + data.spinMicros / 1000;
  let work = false;
  while (!work && performance.now() < spinUntil) work = monitor.hasWork();
  if (work) continue;
  if (monitor.armDoorbells()) continue;
  Atomics.wait(doorbell, Doorbell.SEQ, seq);
}
port.close();
