import test from 'ava';
import { join } from 'node:path';
import { StoredPlatform } from '../hypervisor/platform-boot.js';
import type { DomainHandle } from '../hypervisor/toolstack.js';
import type { NewEvent } from '../hypervisor/platform-store.js';
import { mountDomain, type MountedView } from '../mount/index.js';
import { sh } from './helpers/cli.js';
import { tempDir } from './helpers/platform.js';

test('a crashed domain is booted again after recovery and its view carries on; a crash loop is left down', async (t) => {
  const dir = await tempDir(t, 'hvshare-restart-');
  const events: NewEvent[] = [];
  const running = await StoredPlatform.boot({ stateDir: join(dir, 'state'), onEvent: (e) => events.push(e) });
  const views: MountedView[] = [];
  let stopped = false;
  t.teardown(async () => {
    for (const v of views) await v.unmount().catch(() => {});
    if (!stopped) await running.shutdown('test teardown');
  });
  const restarted: DomainHandle[] = [];
  running.onRestart((domain) => {
    restarted.push(domain);
    views.find((v) => v.domain.name === domain.name)?.rebind(domain);
  });
  const nextRestart = async (name: string) => {
    const seen = restarted.length;
    for (let i = 0; i < 500 && !restarted.slice(seen).some((d) => d.name === name); i++) await new Promise((r) => setTimeout(r, 10));
    return restarted.slice(seen).find((d) => d.name === name);
  };
  for (const name of ['dom1', 'dom2']) views.push(await mountDomain(running.platform.domain(name), join(dir, 'mnt', name)));
  const [m1, m2] = views.map((v) => v.mountpoint);

  t.is((await sh(`echo durable > '${m1}/before.txt' && sync '${m1}/before.txt'`)).code, 0);
  const oldId = running.platform.domain('dom1').id;
  await running.platform.killDomain('dom1');
  const again = await nextRestart('dom1');
  t.truthy(again, 'dom1 came back');
  t.not(again!.id, oldId);
  t.is(running.store.getDomain('dom1')?.state, 'running');
  // The same view serves the new instance: old data, new writes, seen by the other domain.
  t.is((await sh(`cat '${m1}/before.txt'`)).stdout, 'durable\n');
  t.is((await sh(`echo after > '${m1}/after.txt' && cat '${m2}/after.txt'`)).stdout, 'after\n');
  t.true(events.some((e) => e.type === 'crash' && e.domain === 'dom1'));
  t.true(events.some((e) => e.type === 'info' && e.domain === 'dom1' && /restarted/.test(e.detail ?? '')));

  // dom3 crashing over and over within a minute: three restarts, then it stays down.
  for (let crash = 1; crash <= 4; crash++) {
    await running.platform.killDomain('dom3');
    if (crash <= 3) t.truthy(await nextRestart('dom3'), `restart ${crash}`);
  }
  for (let i = 0; i < 200 && !events.some((e) => e.type === 'error' && e.domain === 'dom3'); i++) await new Promise((r) => setTimeout(r, 10));
  t.true(events.some((e) => e.type === 'error' && e.domain === 'dom3' && /left down/.test(e.detail ?? '')));
  t.false(running.platform.listDomains().some((d) => d.name === 'dom3'));

  for (const v of views) await v.unmount();
  await running.shutdown('test');
  stopped = true;
});
