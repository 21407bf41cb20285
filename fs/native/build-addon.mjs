/**
 * postinstall: builds fs/native/crc32c.c, our crc32c addon (fs/crc32c.ts), with node-gyp, and checks that it loads
 * and sums the standard check value. A failed build is a warning, not a failed install: fs/crc32c.ts falls back to
 * JavaScript, which works but sums about 14x slower (0.9 against 13 GB/s a core on 4 KiB blocks).
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { nodeGypRebuild } from './node-gyp.mjs';

const dir = fileURLToPath(new URL('.', import.meta.url));
try {
  nodeGypRebuild(dir);
  const addon = createRequire(import.meta.url)('./build/Release/crc32c.node');
  const check = addon.crc32c(new TextEncoder().encode('123456789'));
  if (check !== 0xe3069283) throw new Error(`it sums "123456789" to ${check.toString(16)}, not e3069283`);
  console.error(`hvshare: crc32c addon built (${addon.hardware() ? 'SSE4.2 crc32 instruction' : 'portable C table'})`);
} catch (err) {
  console.error(`hvshare: warning: the crc32c addon (fs/native) was not built, data checksums will be summed in JavaScript, about 14x slower: ${err.message}. It needs python3, make and g++.`);
}
