import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { exited, fuseMountsUnder, hvshare, sh, startUp } from './helpers/cli.js';
import { tempDir } from './helpers/platform.js';
import type { PlatformCpu } from '../hypervisor/thread-cpu.js';

async function written(state: string, domain: string): Promise<number> {
  const stat = JSON.parse((await hvshare('stat', '--state', state, '--json')).stdout) as { counters: Record<string, { bytesWritten: number }> };
  return stat.counters[domain]?.bytesWritten ?? 0;
}

test('hvshare up: views, sharing, ps/stat/log, SIGKILL during writes, restart, fsck clean, fsynced files intact', async (t) => {
  const dir = await tempDir(t, 'hvshare-up-');
  const state = join(dir, 'state');
  const mnt = join(dir, 'mnt');
  const children: ChildProcess[] = [];
  t.teardown(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const m of await fuseMountsUnder(mnt)) await sh(`fusermount -uz '${m}'`);
  });

  const first = await startUp(state, mnt);
  children.push(first.child);
  t.deepEqual(
    first.lines.filter((l) => 'mountpoint' in l).map((l) => l.domain),
    ['dom1', 'dom2', 'dom3'],
  );
  // Shared through the platform: written in dom1, read in dom2.
  const fsynced = await sh(`head -c 3000000 /dev/urandom > '${dir}/orig' && dd if='${dir}/orig' of='${mnt}/dom1/durable.bin' bs=128k conv=fsync status=none && cmp '${dir}/orig' '${mnt}/dom2/durable.bin'`);
  t.is(fsynced.code, 0, fsynced.stderr);
  const ps = JSON.parse((await hvshare('ps', '--state', state, '--json')).stdout) as { live: boolean; domains: { name: string; state: string }[] };
  t.true(ps.live);
  t.deepEqual(ps.domains.map((d) => `${d.name}:${d.state}`), ['dom1:running', 'dom2:running', 'dom3:running']);
  const ro = await sh(`touch '${mnt}/dom3/nope'`);
  t.not(ro.code, 0);
  t.regex(ro.stderr, /Read-only file system/);

  // Writes in flight in two domains, then the platform process is killed outright.
  const churn = sh(`for i in $(seq 1 400); do dd if=/dev/urandom of='${mnt}/dom1/churn.$((i % 7))' bs=64k count=4 status=none || exit 0; cp '${mnt}/dom1/durable.bin' '${mnt}/dom2/copy.$((i % 3))' || exit 0; done`);
  await sleep(400);
  first.child.kill('SIGKILL');
  await exited(first.child);
  await churn;

  // Restart on the same state: stale mounts recovered, journals replayed, the fsynced file intact.
  const second = await startUp(state, mnt);
  children.push(second.child);
  const intact = await sh(`cmp '${dir}/orig' '${mnt}/dom1/durable.bin' && cmp '${dir}/orig' '${mnt}/dom3/durable.bin'`);
  t.is(intact.code, 0, intact.stderr);
  const log = await hvshare('log', '--state', state, '--tail', '100', '--json');
  const events = log.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; domain?: string });
  t.true(events.some((e) => e.type === 'crash' && e.domain === 'dom1'), `the killed run is logged as a crash:\n${log.stdout}`);
  // Counters reach the store about once a second (a SIGKILL loses at most that much of them).
  const before = await written(state, 'dom2');
  t.is((await sh(`dd if=/dev/zero of='${mnt}/dom2/counted.bin' bs=128k count=16 conv=fsync status=none`)).code, 0);
  let after = before;
  for (let i = 0; i < 50 && after < before + 2 * 1024 * 1024; i++) {
    await sleep(100);
    after = await written(state, 'dom2');
  }
  t.true(after >= before + 2 * 1024 * 1024, `dom2 bytesWritten went from ${before} to ${after}`);
  const { cpu } = JSON.parse((await hvshare('stat', '--state', state, '--json')).stdout) as { cpu?: PlatformCpu };
  t.deepEqual(Object.keys(cpu?.domains ?? {}).sort(), ['dom1', 'dom2', 'dom3'], 'CPU seconds per running domain');
  t.true(cpu!.domains.dom2!.cpu > 0 && cpu!.main > 0, `booting, mounting and writing cost CPU: ${JSON.stringify(cpu)}`);
  t.true(cpu!.monitor.sleep > 0 && cpu!.domains.dom2!.sleep > 0, `the monitor and the guests slept between requests: ${JSON.stringify(cpu)}`);

  second.child.kill('SIGTERM');
  t.is(await exited(second.child), 0);
  t.deepEqual(await fuseMountsUnder(mnt), [], 'every view unmounted');
  const fsck = await hvshare('fsck', join(state, 'shared.img'));
  t.is(fsck.code, 0, fsck.stdout + fsck.stderr);
  t.regex(fsck.stdout, /clean/);
});
