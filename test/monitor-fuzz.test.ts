/**
 * The monitor under a seeded, in-process fuzzer (test/helpers/monitor-fuzzer.ts): random and mutated
 * descriptors, ring-index jumps, revoke-ring garbage, lock abuse and revokes never answered, checked after every
 * batch (the monitor serves, a well-behaved domain works, no byte outside what a domain may change has changed).
 * HVSHARE_FUZZ_CASES sets the number of cases (default 10^4; 10^6 for a long run), HVSHARE_FUZZ_SEED replays one
 * seed (printed on failure).
 */
import test from 'ava';
import { tempDir } from './helpers/platform.js';
import { MonitorFuzzer } from './helpers/monitor-fuzzer.js';

const CASES = Number(process.env.HVSHARE_FUZZ_CASES ?? 10_000);
const BATCH = 100;
const SEED = process.env.HVSHARE_FUZZ_SEED ? Number(process.env.HVSHARE_FUZZ_SEED) : (Math.random() * 2 ** 32) >>> 0;

test(`${CASES} fuzz cases against the monitor: it survives, well-behaved domains work, nothing outside a grant changes`, async (t) => {
  t.timeout(Math.max(120_000, CASES * 20));
  const fuzzer = new MonitorFuzzer(await tempDir(t, 'hvshare-fuzz-'), SEED);
  t.teardown(() => fuzzer.close());
  const replay = `replay with HVSHARE_FUZZ_SEED=${SEED} HVSHARE_FUZZ_CASES=${CASES}`;
  let done = 0;
  try {
    while (done < CASES) {
      for (let i = 0; i < BATCH && done < CASES; i++, done++) fuzzer.step();
      const broken = fuzzer.check();
      if (broken.length > 0) throw new Error(broken.join('; '));
    }
  } catch (err) {
    t.fail(`after case ${done}: ${(err as Error).message} (${replay})`);
    return;
  }
  const s = fuzzer.summary;
  t.log(`seed ${SEED}: ${s.cases} cases, ${s.descriptors} hostile descriptors, ${s.fences} fences, ${s.ringFaults} ring faults`);
  t.is(s.cases, CASES);
  // The mix reached what it is for: hostile holders were fenced and garbage indices shut rings.
  t.true(CASES < 1000 || (s.fences > 0 && s.ringFaults > 0), JSON.stringify(s));
});
