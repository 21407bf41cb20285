import type { ExecutionContext } from 'ava';
import { DOORBELL_WORDS, RING_BYTES, VIC_WORDS } from '../../hypervisor/abi.js';
import { createStatsBuffer, DomainStats } from '../../hypervisor/domain-stats.js';
import { Monitor } from '../../hypervisor/monitor.js';
import { RawImageBackend } from '../../hypervisor/raw-image-backend.js';
import { Blkfront } from '../../guests/blkfront.js';
import { GuestKernel } from '../../guests/kernel.js';
import { GuestMemory } from '../../guests/guest-memory.js';
import { randomImage, tempDir } from './platform.js';

/**
 * One guest's block driver attached to a monitor that runs on the test's own thread, over a random image of
 * `bytes`: nothing drains the ring unless the test calls `monitor.drain()` (or `serveEvery`). Torn down with `t`.
 */
export async function blkfrontRig(t: ExecutionContext, bytes: number) {
  const dir = await tempDir(t);
  const image = await randomImage(dir, bytes);
  const monitor = new Monitor(new DomainStats(createStatsBuffer()), () => {}, { ioThreads: 0 });
  const backend = new RawImageBackend(image.path);
  monitor.addVolume({ id: 0, name: 'v', backend });
  const pages = { ring: new SharedArrayBuffer(RING_BYTES), vic: new SharedArrayBuffer(VIC_WORDS * 4), memory: new SharedArrayBuffer(4 << 20) };
  monitor.addDomain(1, 'd', pages, [{ volumeId: 0, readOnly: false }]);
  const kernel = new GuestKernel({ vic: pages.vic, doorbell: new SharedArrayBuffer(DOORBELL_WORDS * 4), spinMicros: 0 });
  kernel.start();
  const timers: NodeJS.Timeout[] = [];
  t.teardown(async () => {
    for (const timer of timers) clearInterval(timer);
    await kernel.stop();
    backend.close();
  });
  /** The monitor's thread, played by a timer: drains every millisecond until `stop` is called (or the teardown). */
  const serveEvery = () => {
    const timer = setInterval(() => monitor.drain(), 1);
    timers.push(timer);
    return () => clearInterval(timer);
  };
  // attach() waits for its VOLINFO.
  const stop = serveEvery();
  const front = await Blkfront.attach(kernel, new GuestMemory(pages.memory), pages.ring);
  stop();
  return { image, monitor, kernel, front, serveEvery };
}
