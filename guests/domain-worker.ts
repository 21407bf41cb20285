import { parentPort, workerData } from 'node:worker_threads';
import { Blkfront } from './blkfront.js';
import { runBlockWorkload } from './block-workload.js';
import { GuestKernel } from './kernel.js';
import { GuestMemory } from './guest-memory.js';
import type { AgentMessage, AgentReply, AgentRequest, AgentResult, DomainBooted } from './agent-protocol.js';

/** What the toolstack hands a new domain: its own shared pages and the monitor's doorbell, nothing else. */
export interface DomainWorkerData {
  name: string;
  ring: SharedArrayBuffer;
  vic: SharedArrayBuffer;
  memory: SharedArrayBuffer;
  doorbell: SharedArrayBuffer;
  spinMicros: number;
}

const data = workerData as DomainWorkerData;
const port = parentPort!;
const kernel = new GuestKernel({ vic: data.vic, doorbell: data.doorbell, spinMicros: data.spinMicros });
const memory = new GuestMemory(data.memory);
kernel.start();
const disk = await Blkfront.attach(kernel, memory, data.ring, 0);

async function serve(request: AgentRequest): Promise<AgentResult> {
  switch (request.kind) {
    case 'block-workload':
      return runBlockWorkload(disk, request.workload);
    case 'block-read': {
      const buf = disk.allocBuffer(request.length);
      try {
        await disk.read(request.offset, buf);
        return buf.slice();
      } finally {
        disk.freeBuffer(buf);
      }
    }
    case 'block-write':
      await disk.write(request.offset, request.data, { fua: request.fua });
      return null;
    case 'block-flush':
      await disk.flush();
      return null;
    case 'info':
      return {
        name: data.name,
        sizeBytes: disk.sizeBytes,
        readOnly: disk.readOnly,
        ...kernel.counters,
        processes: kernel.listProcesses().map(({ pid, name }) => ({ pid, name })),
      };
  }
}

port.on('message', (message: AgentMessage) => {
  kernel
    .spawn(message.request.kind, () => serve(message.request))
    .then(
      (result): AgentReply => ({ seq: message.seq, ok: true, result }),
      (err: Error & { code?: string; detail?: string }): AgentReply => ({
        seq: message.seq,
        ok: false,
        code: err.code ?? 'EIO',
        message: err.detail ?? err.message,
      }),
    )
    .then((reply) => port.postMessage(reply));
});
port.postMessage({ booted: true, name: data.name } satisfies DomainBooted);
