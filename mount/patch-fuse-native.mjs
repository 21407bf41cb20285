/**
 * postinstall: fuse-native with exact times, the requesting process's uid and gid, and stats answered on the libfuse
 * threads while the view's change count stands (README, "Times through a view", "Who may use a view", "What one
 * view request costs").
 *
 * Applies fuse-native-times.patch to the installed fuse-native and builds its addon from the patched source with
 * node-gyp. node-gyp-build loads build/Release before prebuilds/, so the prebuilt binary is never used again, and
 * the patched index.js refuses to load any addon that lacks the patch's exports.
 *
 * Idempotent: a hunk already in place is skipped, and the addon is rebuilt only when it was not built from this
 * very patch (a stamp next to it holds the patch's hash). Exits 1, saying why, when a hunk neither applies nor is
 * in place (fuse-native is not the source the patch was written against) or when the build fails.
 * Plain JavaScript: it runs before `prepare` compiles the TypeScript.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeGypRebuild } from '../fs/native/node-gyp.mjs';

const FOR_VERSION = '2.2.6';
const patchFile = fileURLToPath(new URL('./fuse-native-times.patch', import.meta.url));
const require = createRequire(import.meta.url);

function fail(message) {
  console.error(`hvshare: ${message}`);
  process.exit(1);
}

/** The patch as files and hunks; a hunk is the text it replaces and its replacement (found by content, not line). */
function parsePatch(text) {
  const files = [];
  let hunk = null;
  for (const line of text.split('\n')) {
    if (line.startsWith('--- ')) continue;
    if (line.startsWith('+++ ')) {
      files.push({ path: line.slice(4).replace(/^b\//, ''), hunks: [] });
    } else if (line.startsWith('@@')) {
      hunk = { header: line, before: '', after: '' };
      files.at(-1).hunks.push(hunk);
    } else if (hunk && (line.startsWith(' ') || line.startsWith('-') || line.startsWith('+'))) {
      if (line[0] !== '+') hunk.before += `${line.slice(1)}\n`;
      if (line[0] !== '-') hunk.after += `${line.slice(1)}\n`;
    }
  }
  return files;
}

/** Where `text` starts a line of `content`: every position. */
function linesAt(content, text) {
  const found = [];
  for (let at = ('\n' + content).indexOf('\n' + text); at !== -1; at = ('\n' + content).indexOf('\n' + text, at + 1)) found.push(at);
  return found;
}

function applyPatch(pkgDir, patch) {
  let applied = 0;
  for (const file of parsePatch(patch)) {
    const path = join(pkgDir, file.path);
    const original = readFileSync(path, 'utf8');
    let content = original;
    for (const hunk of file.hunks) {
      if (linesAt(content, hunk.after).length > 0) continue;
      const at = linesAt(content, hunk.before);
      if (at.length !== 1) {
        fail(
          `${file.path} of fuse-native does not take ${hunk.header} of ${patchFile} (its text is ${at.length === 0 ? 'missing' : 'not unique'}). ` +
            'Start from a clean copy (npm ci); if that fails too, fuse-native changed and the patch must be redone.',
        );
      }
      content = content.slice(0, at[0]) + hunk.after + content.slice(at[0] + hunk.before.length);
      applied++;
    }
    if (content !== original) writeFileSync(path, content);
  }
  return applied;
}

/** node-gyp rebuild of fuse-native from the patched source. */
function build(pkgDir) {
  try {
    nodeGypRebuild(pkgDir);
  } catch (err) {
    fail(`building fuse-native from source failed (${err.message}); it needs python3, make and g++.`);
  }
}

const pkgDir = dirname(require.resolve('fuse-native/package.json'));
const { version } = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
if (version !== FOR_VERSION) fail(`fuse-native ${version} is installed, ${patchFile} is written for ${FOR_VERSION}: redo the patch.`);

const patch = readFileSync(patchFile, 'utf8');
const applied = applyPatch(pkgDir, patch);
const addon = join(pkgDir, 'build', 'Release', 'fuse.node');
const stamp = join(pkgDir, 'build', 'Release', 'hvshare-times.sha256');
const hash = createHash('sha256').update(patch).digest('hex');
const built = applied === 0 && existsSync(addon) && existsSync(stamp) && readFileSync(stamp, 'utf8') === hash;
if (!built) {
  build(pkgDir);
  writeFileSync(stamp, hash);
}

const loaded = createRequire(join(pkgDir, 'index.js'))('node-gyp-build').resolve(pkgDir);
if (loaded !== addon) fail(`fuse-native would load ${loaded}, not the addon built from the patched source (${addon}).`);
const Fuse = require('fuse-native');
if (typeof Fuse.UTIME_NOW !== 'number' || typeof Fuse.prototype.answerListing !== 'function') fail('fuse-native loaded without the patch in place.');
console.error(`hvshare: fuse-native ${version} patched (${applied} hunks applied now), addon ${built ? 'already built' : 'built'} from source`);
