/**
 * The source tree `hvshare bench fuse` untars into every column: generated from a fixed seed, so every run and
 * every machine gets the same tree. Directories of varied depth, small files of varied size (a few executable),
 * a few symlinks, all committed to a git repository (packed, as a clone would be) and tarred with its .git.
 */
import { execFile } from 'node:child_process';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { rng } from './bench-stats.js';

const run = promisify(execFile);

const WORDS = 'const let return function import export if else for while async await value index result error buffer path name size'.split(' ');

/** Git's environment for the bench: no user or system configuration, an identity, no prompts. */
export function gitEnv(home: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    HOME: home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_AUTHOR_NAME: 'bench',
    GIT_AUTHOR_EMAIL: 'bench@localhost',
    GIT_COMMITTER_NAME: 'bench',
    GIT_COMMITTER_EMAIL: 'bench@localhost',
    GIT_TERMINAL_PROMPT: '0',
  };
}

/**
 * Write a tree of `files` regular files (plus about one symlink per 300 files) under `dir`, commit it to a git
 * repository there, and tar the whole of it (.git included) to `tarPath`. Returns how many entries the tar holds.
 */
export async function makeTree(dir: string, files: number, tarPath: string): Promise<number> {
  const next = rng(0x5eed + files);
  const pick = <T>(items: T[]) => items[Math.floor(next() * items.length)]!;
  // Text so diffs and git behave as on source code: lines of words, cut to the file's size.
  const text = Array.from({ length: 4096 }, () => Array.from({ length: 1 + Math.floor(next() * 9) }, () => pick(WORDS)).join(' ')).join('\n');

  const dirs = [dir];
  const depth = new Map([[dir, 0]]);
  for (let i = 0; i < Math.max(1, Math.round(files / 12)); i++) {
    const parent = pick(dirs.filter((d) => depth.get(d)! < 7));
    const child = join(parent, `d${i}`);
    dirs.push(child);
    depth.set(child, depth.get(parent)! + 1);
    await mkdir(child);
  }
  const written: string[] = [];
  for (let i = 0; i < files; i++) {
    const path = join(pick(dirs), `f${i}.${pick(['ts', 'js', 'md', 'json', 'txt', 'c'])}`);
    // Mostly a few hundred bytes to a few KiB, now and then empty or tens of KiB, as in a source tree.
    const size = Math.floor(Math.exp(next() * Math.log(64 << 10))) - 1;
    const start = Math.floor(next() * (text.length - 1));
    const body = (text.slice(start) + text).slice(0, size);
    await writeFile(path, body, { mode: next() < 0.03 ? 0o755 : 0o644 });
    written.push(path);
  }
  for (let i = 0; i < Math.max(3, Math.floor(files / 300)); i++) {
    const link = join(pick(dirs), `link${i}`);
    await symlink(relative(dirname(link), pick(written)), link);
  }
  const env = gitEnv(dir);
  const git = (...args: string[]) => run('git', ['-C', dir, '-c', 'init.defaultBranch=main', ...args], { env, maxBuffer: 64 << 20 });
  await git('init', '-q');
  await git('add', '-A');
  await git('commit', '-q', '-m', 'generated tree');
  await git('gc', '-q');
  await run('tar', ['-cf', tarPath, '-C', dir, '.'], { maxBuffer: 1 << 20 });
  const { stdout } = await run('tar', ['-tf', tarPath], { maxBuffer: 64 << 20 });
  return stdout.split('\n').filter(Boolean).length;
}
