/**
 * node-gyp rebuild of the addon in `dir`, as install scripts run it: npm's own node-gyp (npm names it when it
 * runs a script; the one bundled with this Node's npm otherwise), with Node's own headers when it ships them (else
 * node-gyp downloads them). Throws an Error naming the command when the build fails. Plain JavaScript: install
 * scripts run before `prepare` compiles the TypeScript.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

export function nodeGypRebuild(dir) {
  const prefix = resolve(dirname(process.execPath), '..');
  const bundled = join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  const gyp = process.env.npm_config_node_gyp || (existsSync(bundled) ? bundled : 'node-gyp');
  const [command, args] = gyp.endsWith('.js') ? [process.execPath, [gyp]] : [gyp, []];
  if (existsSync(join(prefix, 'include', 'node', 'common.gypi'))) args.push(`--nodedir=${prefix}`);
  args.push('rebuild', `--directory=${dir}`);
  try {
    execFileSync(command, args, { stdio: ['ignore', process.stderr, process.stderr] });
  } catch (err) {
    throw new Error(`${command} ${args.join(' ')}: ${err.message}`);
  }
}
