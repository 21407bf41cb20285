import { parentPort, workerData } from 'node:worker_threads';
import type { BlockDevice } from '../fs/block-device.js';
import type { BlockBackend } from '../hypervisor/block-backend.js';
import { RawImageBackend } from '../hypervisor/raw-image-backend.js';
import { runBlockWorkload, type BlockWorkload } from '../guests/block-workload.js';

/**
 * The benchmark's synchronous native baseline: one host thread doing pread/pwrite on the image, with exactly the
 * backend code the monitor uses, driven by the same workload code as the guest. No thread hand-off at all, so it
 * is the cost of the copies themselves: the strictest baseline the hypervisor path is compared with.
 */
class SyncDevice implements BlockDevice {
  constructor(private readonly backend: BlockBackend) {}
  get sizeBytes() {
    return this.backend.sizeBytes;
  }
  get readOnly() {
    return this.backend.readOnly;
  }
  async read(offset: number, dst: Uint8Array) {
    this.backend.read(offset, dst);
  }
  async write(offset: number, src: Uint8Array) {
    this.backend.write(offset, src);
  }
  async flush() {
    this.backend.flush();
  }
  async discard(offset: number, length: number) {
    this.backend.discard(offset, length);
  }
  allocBuffer(size: number) {
    return new Uint8Array(size);
  }
  freeBuffer() {}
  async close() {
    this.backend.close();
  }
}

const { path, workload } = workerData as { path: string; workload: BlockWorkload };
const dev = new SyncDevice(new RawImageBackend(path));
parentPort!.postMessage(await runBlockWorkload(dev, workload));
await dev.close();
