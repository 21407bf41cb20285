import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEFAULT_SLOTS,
  PlatformConfigError,
  defaultPlatform,
  formatSize,
  grantFor,
  loadPlatformFile,
  parsePlatformJson,
  parseSize,
  resolveImagePath,
  validatePlatform,
} from '../hypervisor/platform-config.js';

const MiB = 1024 * 1024;

/** A small valid description; tests break one field at a time. */
function sample(): any {
  return {
    volumes: [{ name: 'shared', image: 'shared.img', size: '256M' }],
    domains: [
      { name: 'dom1', id: 1, memory: 64, grants: [{ volume: 'shared', mode: 'rw', slot: 0 }] },
      { name: 'dom2', id: 2, memory: '64M', grants: [{ volume: 'shared', mode: 'ro', slot: 1 }] },
    ],
  };
}

/** Validates `input`, expecting a PlatformConfigError, and returns its problems. */
function problemsOf(t: any, input: unknown): string[] {
  const err = t.throws(() => validatePlatform(input), { instanceOf: PlatformConfigError }) as PlatformConfigError;
  return err.problems;
}

test('parseSize reads bytes and binary units', (t) => {
  const cases: Array<[string | number, number]> = [
    [4096, 4096],
    ['4096', 4096],
    ['512K', 512 * 1024],
    ['256M', 256 * MiB],
    ['256m', 256 * MiB],
    ['256MiB', 256 * MiB],
    ['64MB', 64 * MiB],
    ['1G', 1024 * MiB],
    ['1.5G', 1536 * MiB],
    [' 2T ', 2 * 1024 ** 4],
    ['0', 0],
  ];
  for (const [input, bytes] of cases) t.is(parseSize(input), bytes, String(input));
});

test('parseSize rejects what is not a size, naming it', (t) => {
  for (const bad of ['', 'abc', '256Q', '-1', '1.3K', '12 MM', 'M', '1e3']) {
    const err = t.throws(() => parseSize(bad), { instanceOf: RangeError }, JSON.stringify(bad));
    t.true(err!.message.includes(`"${bad}"`), err!.message);
  }
  t.throws(() => parseSize(-5), { instanceOf: RangeError });
  t.throws(() => parseSize(1.5), { instanceOf: RangeError });
});

test('formatSize picks the largest unit, exact when it divides', (t) => {
  t.is(formatSize(256 * MiB), '256M');
  t.is(formatSize(1024 * MiB), '1G');
  t.is(formatSize(1536 * MiB), '1.5G');
  t.is(formatSize(4096), '4K');
  t.is(formatSize(1000), '1000');
  t.is(formatSize(0), '0');
  t.is(formatSize(1024 * 1024 - 1), '1.0M');
  for (const n of [4096, 256 * MiB, 3 * 1024 ** 3, 7 * 1024 ** 4]) t.is(parseSize(formatSize(n)), n);
});

test('the default platform: one shared 256 MiB volume, dom1/dom2 rw and dom3 ro on distinct slots', (t) => {
  const p = defaultPlatform('/var/hv');
  t.deepEqual(validatePlatform(p), p, 'the default platform passes its own validator unchanged');
  t.is(p.volumes.length, 1);
  t.like(p.volumes[0], { name: 'shared', image: '/var/hv/shared.img', size: 256 * MiB });
  t.deepEqual(p.domains.map((d) => [d.name, grantFor(d, 'shared')?.mode]), [['dom1', 'rw'], ['dom2', 'rw'], ['dom3', 'ro']]);
  t.is(new Set(p.domains.map((d) => grantFor(d, 'shared')!.slot)).size, 3);
  t.is(new Set(p.domains.map((d) => d.id)).size, 3);
  for (const d of p.domains) t.is(d.memory, 64);
  t.is(defaultPlatform().volumes[0].image, 'shared.img');
  t.is(resolveImagePath('/var/hv', defaultPlatform().volumes[0]), '/var/hv/shared.img');
  t.is(resolveImagePath('/var/hv', { image: '/img/x.img' }), '/img/x.img');
});

test('validatePlatform normalises sizes, memory, slots and missing ids', (t) => {
  const input = sample();
  delete input.domains[1].id;
  input.domains[0].memory = '1G';
  const p = validatePlatform(input);
  t.is(p.volumes[0].size, 256 * MiB);
  t.is(p.volumes[0].slots, DEFAULT_SLOTS);
  t.is(p.domains[0].memory, 1024);
  t.is(p.domains[1].memory, 64);
  t.is(p.domains[1].id, 2);
  t.deepEqual(validatePlatform(p), p, 'its output is a fixed point');
});

test('an unknown volume in a grant is named with its path', (t) => {
  const input = sample();
  input.domains[1].grants[0].volume = 'sharde';
  const problems = problemsOf(t, input);
  t.is(problems.length, 1, problems.join('\n'));
  t.regex(problems[0], /^domains\[1\]\.grants\[0\]\.volume: unknown volume "sharde"/);
  t.true(problems[0].includes('"shared"'), 'lists the known volumes');
});

test('duplicate domain names, ids, volume names and images are refused', (t) => {
  const input = sample();
  input.domains[1].name = 'dom1';
  input.domains[1].id = 1;
  input.volumes.push({ name: 'shared', image: 'shared.img', size: '1G' });
  const problems = problemsOf(t, input).join('\n');
  t.regex(problems, /domains\[1\]\.name: duplicate domain name "dom1"/);
  t.regex(problems, /domains\[1\]\.id: duplicate domain id 1/);
  t.regex(problems, /volumes\[1\]\.name: duplicate volume name "shared"/);
  t.regex(problems, /volumes\[1\]\.image: "shared\.img" already backs volume "shared"/);
});

test('bad sizes and memory are named', (t) => {
  const cases: Array<[(x: any) => void, RegExp]> = [
    [(x) => (x.volumes[0].size = '256Q'), /^volumes\[0\]\.size: bad size "256Q"/],
    [(x) => (x.volumes[0].size = '100K'), /^volumes\[0\]\.size: size 100K is too small: 8 journal slots need at least 16916480 bytes \(17M\)$/],
    // mkfs's layout is the measure: 16M passed a fixed 1M minimum, then failed at boot with ENOSPC.
    [(x) => (x.volumes[0].size = '16M'), /^volumes\[0\]\.size: size 16M is too small: 8 journal slots need at least 16916480 bytes/],
    [(x) => Object.assign(x.volumes[0], { size: '4M', slots: 2 }), /^volumes\[0\]\.size: size 4M is too small: 2 journal slots need at least 4284416 bytes \(5M\)$/],
    [(x) => (x.volumes[0].size = '2T'), /^volumes\[0\]\.size: size 2T is larger than 1T/],
    [(x) => (x.volumes[0].size = 32 * MiB + 512), /^volumes\[0\]\.size: size 33554944 is not a multiple/],
    [(x) => delete x.volumes[0].size, /^volumes\[0\]\.size: missing size/],
    [(x) => (x.domains[0].memory = '1.5M'), /^domains\[0\]\.memory: memory "1.5M" is not a whole number of MiB/],
    [(x) => (x.domains[0].memory = 0), /^domains\[0\]\.memory: bad memory \(MiB\) 0/],
    [(x) => (x.domains[0].memory = '64X'), /^domains\[0\]\.memory: bad size "64X"/],
  ];
  for (const [edit, re] of cases) {
    const input = sample();
    edit(input);
    const problems = problemsOf(t, input);
    t.is(problems.length, 1, problems.join('\n'));
    t.regex(problems[0], re);
  }
});

test('journal slot collisions and out-of-range slots are refused', (t) => {
  const input = sample();
  input.domains[1].grants[0].slot = 0;
  t.deepEqual(problemsOf(t, input), [
    'domains[1].grants[0].slot: slot 0 on volume "shared" is already domain "dom1"\'s journal slot',
  ]);
  const far = sample();
  far.volumes[0].slots = 2;
  far.domains[1].grants[0].slot = 2;
  t.regex(problemsOf(t, far)[0], /^domains\[1\]\.grants\[0\]\.slot: bad journal slot 2: expected a whole number from 0 to 1/);
  // The same slot number on two different volumes is fine.
  const two = sample();
  two.volumes.push({ name: 'scratch', image: 'scratch.img', size: '17M' });
  two.domains[1].grants.push({ volume: 'scratch', mode: 'rw', slot: 0 });
  t.notThrows(() => validatePlatform(two));
});

test('names must be [a-z0-9-]+', (t) => {
  for (const bad of ['Dom1', 'dom_1', 'dom 1', 'dóm', '']) {
    const input = sample();
    input.domains[0].name = bad;
    const problems = problemsOf(t, input);
    t.true(problems.some((p) => p.startsWith('domains[0].name: ')), `${JSON.stringify(bad)}: ${problems.join('; ')}`);
  }
  const vol = sample();
  vol.volumes[0].name = 'Shared';
  t.true(problemsOf(t, vol).some((p) => /^volumes\[0\]\.name: bad name "Shared"/.test(p)));
  const ok = sample();
  ok.domains[0].name = 'web-2';
  t.is(validatePlatform(ok).domains[0].name, 'web-2');
});

test('unknown fields, bad modes and wrong shapes are named; all problems are reported at once', (t) => {
  const input = sample();
  input.domains[0].memroy = 64;
  input.domains[0].grants[0].mode = 'write';
  input.extra = true;
  const problems = problemsOf(t, input);
  t.true(problems.some((p) => p.startsWith('domains[0].memroy: unknown field')), problems.join('\n'));
  t.true(problems.some((p) => p.startsWith('domains[0].grants[0].mode: bad mode "write"')), problems.join('\n'));
  t.true(problems.some((p) => p.startsWith('extra: unknown field')), problems.join('\n'));
  t.is(problems.length, 3);
  t.regex(problemsOf(t, null)[0], /expected an object/);
  t.regex(problemsOf(t, { volumes: [], domains: [] }).join('\n'), /volumes: expected a non-empty array/);
  t.regex(problemsOf(t, { ...sample(), domains: [{ ...sample().domains[0], grants: {} }] })[0], /domains\[0\]\.grants: expected a non-empty array/);
  // A domain without grants has no filesystem to boot: refused here, before anything is stored.
  for (const grants of [[], undefined]) {
    t.deepEqual(problemsOf(t, { ...sample(), domains: [{ ...sample().domains[0], grants }] }), [
      'domains[0].grants: expected a non-empty array of grants (a domain mounts the volume of its first grant)',
    ]);
  }
});

test('platform.json: parse errors and file names appear in the message', async (t) => {
  t.throws(() => parsePlatformJson('{ "volumes": [', 'p.json'), { instanceOf: PlatformConfigError, message: /p\.json[\s\S]*not valid JSON/ });
  const dir = await mkdtemp(join(tmpdir(), 'hvshare-cfg-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'platform.json');
  await writeFile(file, JSON.stringify(sample()));
  t.is((await loadPlatformFile(file)).volumes[0].size, 256 * MiB);
  const bad = sample();
  bad.domains[0].grants[0].volume = 'nope';
  await writeFile(file, JSON.stringify(bad));
  const err = await t.throwsAsync(loadPlatformFile(file), { instanceOf: PlatformConfigError });
  t.true(err!.message.includes(file), err!.message);
  t.true(err!.message.includes('domains[0].grants[0].volume: unknown volume "nope"'), err!.message);
});

test('revokeDeadlineMs: optional, kept when valid, and a bad one is named with its range', (t) => {
  t.false('revokeDeadlineMs' in validatePlatform(sample()), 'absent: the monitor default applies');
  const valid = validatePlatform({ ...sample(), revokeDeadlineMs: 2500 });
  t.is(valid.revokeDeadlineMs, 2500);
  t.deepEqual(validatePlatform(valid), valid, 'its own output is accepted unchanged');
  for (const bad of [0, 999, 600_001, 1.5e3 + 0.5, '5s', null, -1]) {
    const problems = problemsOf(t, { ...sample(), revokeDeadlineMs: bad });
    t.deepEqual(problems, [`revokeDeadlineMs: bad revoke deadline (ms) ${JSON.stringify(bad)}: expected a whole number from 1000 to 600000`]);
  }
});
