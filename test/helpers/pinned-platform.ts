/**
 * Run as a child process under `taskset` by spin-policy.test.ts: boots a platform on the image named by argv[2],
 * moves 64 KiB through a domain (a write, then a read of it at queue depth 1), and prints the spin budgets the
 * platform chose with whether the data came back intact, as JSON.
 */
import { randomBytes } from 'node:crypto';
import { Platform } from '../../hypervisor/toolstack.js';

const platform = await Platform.boot({ volumes: [{ name: 'shared', path: process.argv[2]! }] });
try {
  const dom = await platform.createDomain({ name: 'dom1', memoryBytes: 16 << 20, grants: [{ volume: 'shared', readOnly: false }] });
  const data = randomBytes(64 * 1024);
  await dom.call({ kind: 'block-write', offset: 1 << 20, data });
  const back = await dom.call<Uint8Array>({ kind: 'block-read', offset: 1 << 20, length: data.length });
  console.log(JSON.stringify({ spin: platform.spin, intact: Buffer.from(back).equals(data) }));
} finally {
  await platform.shutdown();
}
