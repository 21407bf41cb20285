import test from 'ava';
import { MAX_DOMAINS } from '../hypervisor/domain-stats.js';
import { domainVfs } from '../hypervisor/domain-vfs.js';
import { bootPlatform, MiB, tempDir } from './helpers/platform.js';
import { formattedImage } from './helpers/volume.js';

test('domain ids are reused: after more boots in total than there are ids, domains still boot and work', async (t) => {
  const dir = await tempDir(t);
  const image = await formattedImage(dir, 32 * MiB);
  const platform = await bootPlatform(t, { volumes: [{ name: 'shared', path: image }] });
  const spec = (name: string) => ({ name, memoryBytes: 4 * MiB, grants: [{ volume: 'shared', readOnly: false }] });
  // One domain lives throughout, so its id is never free; the others come and go (registered with the monitor,
  // no guest thread: a boot costs no kernel).
  const resident = await platform.createDomain(spec('resident'), { guest: false });
  const ids = new Set<number>();
  for (let boot = 0; boot < 2 * MAX_DOMAINS; boot++) {
    const d = await platform.createDomain(spec(`short${boot % 3}`), { guest: false });
    t.not(d.id, resident.id, 'an id in use is never given out');
    ids.add(d.id);
    await platform.killDomain(d.name);
    await d.cleanedUp;
  }
  t.is(ids.size, MAX_DOMAINS - 2, 'every id but 0 and the resident one came into use');
  // A real guest kernel with its filesystem boots after all that, on a reused id, and serves a request.
  const guest = await platform.createDomain({ ...spec('late'), filesystem: { slot: 0 } });
  t.true(ids.has(guest.id));
  t.deepEqual(await domainVfs(guest).readdir('/'), []);
});
