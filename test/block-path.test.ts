import test from 'ava';
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import type { DomainInfo } from '../guests/agent-protocol.js';
import type { WorkloadResult } from '../guests/block-workload.js';
import { bootPlatform, MiB, randomImage, tempDir } from './helpers/platform.js';

const rw = (volume = 'shared') => [{ volume, readOnly: false }];

test('a write then a read through the monitor round-trips and lands at the right place in the image', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 16 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image.path }] });
  const dom = await platform.createDomain({ name: 'dom1', memoryBytes: 16 * MiB, grants: rw() });

  const info = await dom.call<DomainInfo>({ kind: 'info' });
  t.is(info.sizeBytes, 16 * MiB);
  t.false(info.readOnly);

  const untouched = await dom.call<Uint8Array>({ kind: 'block-read', offset: 8 * MiB, length: 64 * 1024 });
  t.true(Buffer.from(untouched).equals(image.contents.subarray(8 * MiB, 8 * MiB + 64 * 1024)));

  const writes = [
    { offset: 0, data: randomBytes(512) },
    { offset: 4096 * 3, data: randomBytes(64 * 1024) },
    { offset: 5 * MiB + 512, data: randomBytes(9 * MiB) }, // split into several requests, bounced
  ];
  for (const w of writes) await dom.call({ kind: 'block-write', offset: w.offset, data: w.data });
  await dom.call({ kind: 'block-flush' });
  const onDisk = await readFile(image.path);
  for (const w of writes) {
    const back = await dom.call<Uint8Array>({ kind: 'block-read', offset: w.offset, length: w.data.length });
    t.true(Buffer.from(back).equals(w.data), `read back at ${w.offset}`);
    t.true(onDisk.subarray(w.offset, w.offset + w.data.length).equals(w.data), `image at ${w.offset}`);
  }
  // Bytes next to the writes are untouched.
  t.true(onDisk.subarray(512, 4096 * 3).equals(image.contents.subarray(512, 4096 * 3)));
  const counters = platform.counters('dom1');
  t.true(counters.REQUESTS >= 8, `requests counted: ${counters.REQUESTS}`);
  t.is(counters.ERRORS, 0);
});

test('many concurrent requests from three domains all complete with the right data', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 24 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image.path }] });
  const names = ['dom1', 'dom2', 'dom3'];
  const domains = await Promise.all(names.map((name) => platform.createDomain({ name, memoryBytes: 16 * MiB, grants: rw() })));
  const expected = Buffer.from(image.contents);
  const perDomain = 300; // more than the ring holds, so submitters also wait for free slots
  await Promise.all(
    domains.map((dom, d) =>
      Promise.all(
        Array.from({ length: perDomain }, (_, i) => {
          const offset = d * 8 * MiB + i * 8192;
          const data = randomBytes(8192);
          data.copy(expected, offset);
          return dom.call({ kind: 'block-write', offset, data });
        }),
      ),
    ),
  );
  await domains[0].call({ kind: 'block-flush' });
  // Every domain reads every other domain's region: all see the same volume.
  for (const dom of domains) {
    for (let offset = 0; offset < 24 * MiB; offset += 4 * MiB) {
      const part = await dom.call<Uint8Array>({ kind: 'block-read', offset, length: 4 * MiB });
      t.true(Buffer.from(part).equals(expected.subarray(offset, offset + 4 * MiB)), `${dom.name} sees every write at ${offset}`);
    }
  }
  t.true((await readFile(image.path)).equals(expected));
});

test('the same workload code runs in a guest and reports sane figures', async (t) => {
  const dir = await tempDir(t);
  const image = await randomImage(dir, 8 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image.path }] });
  const dom = await platform.createDomain({ name: 'dom1', memoryBytes: 8 * MiB, grants: rw() });
  const result = await dom.call<WorkloadResult>({
    kind: 'block-workload',
    workload: { pattern: 'rand', op: 'write', blockSize: 4096, queueDepth: 8, regionOffset: 0, regionBytes: 8 * MiB, durationMs: 150, seed: 7 },
  });
  t.true(result.ops > 0);
  t.is(result.bytes, result.ops * 4096);
  // The monitor counted what the guest did (plus the VOLINFO at boot).
  t.is(platform.counters('dom1').WRITE_BYTES, result.bytes);
});
