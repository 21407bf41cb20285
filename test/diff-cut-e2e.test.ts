import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { PlatformClient } from '../bin/platform-client.js';
import { O_CREAT, O_TRUNC, O_WRONLY, S_IFREG, type Vfs } from '../fs/vfs.js';
import { testPlatform } from './helpers/cli.js';

/**
 * `hvshare diff` as one consistent cut, against a running platform (dom1 and dom2 read-write, dom3 read-only):
 * writers rewrite files of the compared tree in a loop, through the control socket as any process would.
 */
const platform = testPlatform('hvshare-cut-');
const cli = platform.cli;
test.before(() => platform.start());
test.after.always(() => platform.stop());

/** Rewrites `files` of `folder` in `vfs` together, each pass with new content of a new size, until stopped. */
function rewriter(vfs: Vfs, folder: string, files: string[]) {
  let passes = 0;
  let stopped = false;
  let failure: unknown = null;
  const rewrite = async (pass: number) => {
    for (const name of files) {
      const fh = await vfs.create(`${folder}/${name}`, S_IFREG | 0o644, O_CREAT | O_WRONLY | O_TRUNC);
      try {
        await vfs.write(fh, 0, new Uint8Array(1000 + (pass % 13) * 700).fill(pass & 0xff));
        await vfs.fsync(fh, false);
      } finally {
        await vfs.release(fh);
      }
    }
  };
  const done = (async () => {
    await vfs.mkdir(folder, 0o755).catch(() => {});
    while (!stopped) {
      await rewrite(passes + 1);
      passes++;
    }
  })().catch((err) => {
    failure = err;
  });
  return {
    get passes() {
      return passes;
    },
    async stop() {
      stopped = true;
      await done;
      if (failure) throw failure;
    },
  };
}

interface DiffJson {
  same: boolean;
  differences: { path: string; field: string }[];
  cut: { inodes: number; heldMs: number; maxHoldMs: number } | null;
}

test.serial('diff: a writer rewriting the tree in another domain never makes the two sides differ, and goes on after', async (t) => {
  const client = await PlatformClient.connect(platform.state);
  t.teardown(() => client.close());
  const writer = rewriter(client.vfs('dom1'), '/cut', ['a', 'b', 'c']);
  t.teardown(() => writer.stop().catch(() => {}));
  while (writer.passes < 3) await sleep(10);
  for (let run = 0; run < 6; run++) {
    const diff = await cli('diff', 'dom2', 'dom3', '/cut', '--json');
    t.is(diff.code, 0, `run ${run}: ${diff.stdout}${diff.stderr}`);
    const result = JSON.parse(diff.stdout) as DiffJson;
    t.true(result.same);
    t.is(result.cut?.inodes, 2 * 4, 'each side pinned /cut and its three files');
    t.is(result.cut?.maxHoldMs, 8000);
    // The writer is let through once the diff ended.
    const after = writer.passes;
    while (writer.passes <= after) await sleep(5);
  }
  await writer.stop();
  t.true(writer.passes > 6);
});

test.serial('diff: a tree held past --max-hold is given up (exit 2) and the writers it held go on', async (t) => {
  const client = await PlatformClient.connect(platform.state);
  t.teardown(() => client.close());
  // The writer runs in dom2, one of the compared domains: its own rewrites wait for the cut, and its operations
  // queue behind them, so the diff cannot end before the cut's maximum hold.
  const writer = rewriter(client.vfs('dom2'), '/held', ['x', 'y']);
  t.teardown(() => writer.stop().catch(() => {}));
  while (writer.passes < 2) await sleep(10);
  const diff = await cli('diff', 'dom2', 'dom3', '/held', '--max-hold', '400');
  t.is(diff.code, 2, diff.stderr);
  t.regex(diff.stderr, /hvshare: gave up: the comparison took longer than the cut may be held \(--max-hold 400 ms\)/);
  const after = writer.passes;
  while (writer.passes <= after + 1) await sleep(5);
  await writer.stop();
  // Nothing is held any more: the tree is compared as the same once the writer stopped.
  const same = await cli('diff', 'dom2', 'dom3', '/held', '--max-hold', '400');
  t.is(same.code, 0, same.stderr);
});

test.serial('diff: --max-hold bad values and --no-cut', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--max-hold', '0'], /--max-hold: "0" is not a positive whole number of milliseconds/],
    [['--max-hold', 'soon'], /--max-hold: "soon" is not a positive whole number/],
    [['--max-hold', '50'], /--max-hold: maximum hold 50 ms: must be a whole number of ms from 100 to 8000 \(four fifths of the platform's revokeDeadlineMs, 10000 ms/],
    [['--max-hold', '9000'], /--max-hold: maximum hold 9000 ms: must be .* to 8000/],
  ];
  for (const [args, message] of cases) {
    const r = await cli('diff', 'dom1', 'dom3', ...args);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.stderr, message, args.join(' '));
  }
  const noCut = await cli('diff', 'dom1', 'dom3', '/', '--no-cut', '--json');
  t.is(noCut.code, 0, noCut.stderr);
  t.is((JSON.parse(noCut.stdout) as DiffJson).cut, null);
  const text = await cli('diff', 'dom1', 'dom3');
  t.regex(text.stderr, /; one cut, \d+ locks held \d+ ms\)/);
});

test('diff: cuts held to their maximum under the shortest fencing deadline (1 s) never get a domain fenced', async (t) => {
  const grant = (slot: number, mode: string) => [{ volume: 'shared', mode, slot }];
  const fast = testPlatform('hvshare-cut-fence-', {}, {
    volumes: [{ name: 'shared', image: 'shared.img', size: 64 << 20, slots: 8 }],
    domains: [
      { name: 'dom1', id: 1, memory: 64, grants: grant(0, 'rw') },
      { name: 'dom2', id: 2, memory: 64, grants: grant(1, 'rw') },
      { name: 'dom3', id: 3, memory: 64, grants: grant(2, 'ro') },
    ],
    revokeDeadlineMs: 1000,
  });
  await fast.start();
  t.teardown(() => fast.stop());
  const client = await PlatformClient.connect(fast.state);
  t.teardown(() => client.close());
  // dom1's writer waits for the cuts of dom2 and dom3; dom2's own writer keeps the diff from ending before its hold.
  const writers = [rewriter(client.vfs('dom1'), '/held', ['x']), rewriter(client.vfs('dom2'), '/held', ['y'])];
  t.teardown(() => Promise.all(writers.map((w) => w.stop().catch(() => {}))));
  while (writers.some((w) => w.passes < 1)) await sleep(10);
  for (let run = 0; run < 3; run++) {
    const diff = await fast.cli('diff', 'dom2', 'dom3', '/held');
    t.is(diff.code, 2, diff.stderr);
    t.regex(diff.stderr, /--max-hold 800 ms/);
  }
  for (const w of writers) await w.stop();
  const events = async (type: string) => {
    const log = await fast.cli('log', '--type', type, '--tail', '100000', '--json');
    t.is(log.code, 0, log.stderr);
    return log.stdout.split('\n').filter(Boolean);
  };
  t.is((await events('boot')).length, 3, 'the log is read whole');
  t.deepEqual(await events('fence'), []);
  t.deepEqual(await events('crash'), []);
  const ps = await fast.cli('ps', '--json');
  t.regex(ps.stdout, /"boots":\s*1\b/);
  t.notRegex(ps.stdout, /"boots":\s*[2-9]/);
});
