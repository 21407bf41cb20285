/**
 * Model-based random test: two or three filesystem instances share a volume and take turns at random operations
 * (renames across directories included); every result (data, listing, attributes, errno) is compared with an
 * in-memory model of POSIX semantics. The instances are either native (two or three slots, one LocalLockService)
 * or two real domains of a platform (guest kernels, hypercalls, the monitor's lock service with revocation). Replay a failure with HVSHARE_SEED=<seed> (printed on
 * failure).
 */
import test from 'ava';
import { FileBlockDevice } from '../fs/file-block-device.js';
import { FileSystem } from '../fs/filesystem.js';
import { fsck } from '../fs/fsck.js';
import { LocalLockService } from '../fs/local-lock-service.js';
import { IoError } from '../fs/block-device.js';
import { mkfs } from '../fs/mkfs.js';
import { O_CREAT, O_RDONLY, O_RDWR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type Vfs } from '../fs/vfs.js';
import { domainVfs } from '../hypervisor/domain-vfs.js';
import { Platform } from '../hypervisor/toolstack.js';
import { patternBytes, rng, SMALL_FS, tempImage } from './fs-helpers.js';

interface MFile { kind: 'file'; data: Uint8Array; nlink: number }
interface MDir { kind: 'dir'; children: Map<string, MNode>; parent: MDir | null }
interface MLink { kind: 'symlink'; target: string; nlink: number }
type MNode = MFile | MDir | MLink;

class Errno extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/** POSIX semantics in memory, resolving paths the way the filesystem does. */
class Model {
  readonly root: MDir = { kind: 'dir', children: new Map(), parent: null };
  constructor() {
    this.root.parent = this.root;
  }

  resolve(parts: string[], follow: boolean, depth = 0): MNode {
    let current: MNode = this.root;
    for (let i = 0; i < parts.length; i++) {
      if (current.kind !== 'dir') throw new Errno('ENOTDIR');
      const next: MNode | undefined = current.children.get(parts[i]);
      if (!next) throw new Errno('ENOENT');
      const last = i === parts.length - 1;
      if (next.kind === 'symlink' && (!last || follow)) {
        if (depth >= 40) throw new Errno('ELOOP');
        return this.resolve([...split(next.target), ...parts.slice(i + 1)], follow, depth + 1);
      }
      current = next;
    }
    return current;
  }

  parent(path: string): { dir: MDir; name: string } {
    const parts = split(path);
    const name = parts.pop()!;
    const dir = this.resolve(parts, true);
    if (dir.kind !== 'dir') throw new Errno('ENOTDIR');
    return { dir, name };
  }

  mkdir(path: string): void {
    const { dir, name } = this.parent(path);
    if (dir.children.has(name)) throw new Errno('EEXIST');
    dir.children.set(name, { kind: 'dir', children: new Map(), parent: dir });
  }

  rmdir(path: string): void {
    const { dir, name } = this.parent(path);
    const node = dir.children.get(name);
    if (!node) throw new Errno('ENOENT');
    if (node.kind !== 'dir') throw new Errno('ENOTDIR');
    if (node.children.size > 0) throw new Errno('ENOTEMPTY');
    dir.children.delete(name);
  }

  unlink(path: string): void {
    const { dir, name } = this.parent(path);
    const node = dir.children.get(name);
    if (!node) throw new Errno('ENOENT');
    if (node.kind === 'dir') throw new Errno('EISDIR');
    dir.children.delete(name);
    node.nlink--;
  }

  /** open(O_CREAT|O_RDWR) + write + release. */
  write(path: string, offset: number, data: Uint8Array): void {
    let node: MNode;
    try {
      node = this.resolve(split(path), true);
    } catch (e) {
      if (!(e instanceof Errno) || e.code !== 'ENOENT') throw e;
      const { dir, name } = this.parent(path);
      if (dir.children.has(name)) throw new Errno('ENOENT'); // a dangling symlink
      node = { kind: 'file', data: new Uint8Array(0), nlink: 1 };
      dir.children.set(name, node);
    }
    if (node.kind === 'dir') throw new Errno('EISDIR');
    const file = node as MFile;
    const end = offset + data.length;
    if (end > file.data.length) {
      const grown = new Uint8Array(end);
      grown.set(file.data);
      file.data = grown;
    }
    file.data.set(data, offset);
  }

  read(path: string): Uint8Array {
    const node = this.resolve(split(path), true);
    if (node.kind === 'dir') throw new Errno('EISDIR');
    return (node as MFile).data;
  }

  truncate(path: string, size: number): void {
    const node = this.resolve(split(path), true);
    if (node.kind === 'dir') throw new Errno('EISDIR');
    const file = node as MFile;
    const resized = new Uint8Array(size);
    resized.set(file.data.subarray(0, size));
    file.data = resized;
  }

  rename(from: string, to: string): void {
    const src = this.parent(from);
    const dst = this.parent(to);
    const moving = src.dir.children.get(src.name);
    if (!moving) throw new Errno('ENOENT');
    const replaced = dst.dir.children.get(dst.name);
    if (moving.kind === 'dir') {
      for (let d: MDir = dst.dir; ; d = d.parent!) {
        if (d === moving) throw new Errno('EINVAL');
        if (d === this.root) break;
      }
    }
    if (replaced === moving) return;
    if (replaced) {
      if (moving.kind === 'dir') {
        if (replaced.kind !== 'dir') throw new Errno('ENOTDIR');
        if (replaced.children.size > 0) throw new Errno('ENOTEMPTY');
      } else if (replaced.kind === 'dir') {
        throw new Errno('EISDIR');
      }
      if (replaced.kind !== 'dir') replaced.nlink--;
    }
    src.dir.children.delete(src.name);
    dst.dir.children.set(dst.name, moving);
    if (moving.kind === 'dir') moving.parent = dst.dir;
  }

  link(existing: string, path: string): void {
    const node = this.resolve(split(existing), false);
    if (node.kind === 'dir') throw new Errno('EPERM');
    const { dir, name } = this.parent(path);
    if (dir.children.has(name)) throw new Errno('EEXIST');
    dir.children.set(name, node);
    node.nlink++;
  }

  symlink(target: string, path: string): void {
    const { dir, name } = this.parent(path);
    if (dir.children.has(name)) throw new Errno('EEXIST');
    dir.children.set(name, { kind: 'symlink', target, nlink: 1 });
  }

  readdir(path: string): string[] {
    const node = this.resolve(split(path), true);
    if (node.kind !== 'dir') throw new Errno('ENOTDIR');
    return [...node.children.keys()].sort();
  }

  getattr(path: string): { type: number; size: number; nlink: number } {
    const node = this.resolve(split(path), false);
    if (node.kind === 'dir') {
      const subdirs = [...node.children.values()].filter((c) => c.kind === 'dir').length;
      return { type: S_IFDIR, size: -1, nlink: 2 + subdirs };
    }
    if (node.kind === 'symlink') return { type: S_IFLNK, size: new TextEncoder().encode(node.target).length, nlink: node.nlink };
    return { type: S_IFREG, size: node.data.length, nlink: node.nlink };
  }
}

function split(path: string): string[] {
  return path.split('/').filter((p) => p.length > 0);
}

async function outcome<T>(fn: () => Promise<T>): Promise<T | Errno> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof IoError) return new Errno(error.code);
    if (error instanceof Errno) return error;
    throw error;
  }
}

async function fsWrite(fs: Vfs, path: string, offset: number, data: Uint8Array): Promise<void> {
  const fh = await fs.open(path, O_CREAT | O_RDWR);
  try {
    await fs.write(fh, offset, data);
  } finally {
    await fs.release(fh);
  }
}

async function fsRead(fs: Vfs, path: string): Promise<Uint8Array> {
  const fh = await fs.open(path, O_RDONLY);
  try {
    return await fs.read(fh, 0, 4 << 20);
  } finally {
    await fs.release(fh);
  }
}

const NAMES = ['a', 'b', 'c', 'dd'];

/** Two instances sharing the volume on `path`, how to tell they took turns, and how to stop them. */
interface Instances {
  instances: Vfs[];
  /** null when the lock moved back and forth enough; otherwise what was seen. */
  tookTurns(steps: number): string | null;
  stop(): Promise<void>;
}

async function nativeInstances(path: string, count = 2): Promise<Instances> {
  const devs = await Promise.all(Array.from({ length: count }, () => FileBlockDevice.open(path)));
  const locks = new LocalLockService();
  const instances = await Promise.all(devs.map((dev, slot) => FileSystem.mount(dev, { slot, locks: locks.client(), commitIntervalMs: 0 })));
  return {
    instances,
    tookTurns: (steps) =>
      locks.stats.revokes < steps / 20 || instances.some((fs) => fs.cacheStats.locks.drops < 2) ? JSON.stringify(locks.stats) : null,
    async stop() {
      for (const fs of instances) await fs.unmount();
      for (const dev of devs) await dev.close();
    },
  };
}

async function domainInstances(path: string): Promise<Instances> {
  const platform = await Platform.boot({ volumes: [{ name: 'shared', path }] });
  const grants = [{ volume: 'shared', readOnly: false }];
  const domains = [
    await platform.createDomain({ name: 'dom1', memoryBytes: 32 << 20, grants, filesystem: { slot: 0 } }),
    await platform.createDomain({ name: 'dom2', memoryBytes: 32 << 20, grants, filesystem: { slot: 1 } }),
  ];
  return {
    instances: domains.map(domainVfs),
    tookTurns: (steps) => {
      const revokes = domains.map((d) => platform.counters(d.name).REVOKES);
      return revokes.some((r) => r < steps / 20) ? `revocations per domain: ${revokes.join(', ')}` : null;
    },
    stop: () => platform.shutdown(),
  };
}

async function runSeed(seed: number, steps: number, start: (path: string) => Promise<Instances>): Promise<string[]> {
  const random = rng(seed);
  const pick = <T>(items: T[]) => items[Math.floor(random() * items.length)];
  const randomPath = () => {
    const depth = 1 + Math.floor(random() * 3);
    return '/' + Array.from({ length: depth }, () => pick(NAMES)).join('/');
  };
  const image = await tempImage(24 << 20);
  const log: string[] = [];
  const devA = await FileBlockDevice.open(image.path);
  try {
    await mkfs(devA, SMALL_FS);
    const shared = await start(image.path);
    const { instances } = shared;
    const model = new Model();
    for (let step = 0; step < steps; step++) {
      const which = Math.floor(random() * instances.length);
      const fs = instances[which];
      const p = randomPath();
      const q = randomPath();
      const choice = Math.floor(random() * 12);
      let name: string;
      let expected: unknown;
      let actual: unknown;
      const compare = async (fsOp: () => Promise<unknown>, modelOp: () => unknown) => {
        expected = await outcome(async () => modelOp());
        actual = await outcome(fsOp);
      };
      switch (choice) {
        case 0: name = `mkdir ${p}`; await compare(() => fs.mkdir(p, 0o755), () => model.mkdir(p)); break;
        case 1: name = `rmdir ${p}`; await compare(() => fs.rmdir(p), () => model.rmdir(p)); break;
        case 2: name = `unlink ${p}`; await compare(() => fs.unlink(p), () => model.unlink(p)); break;
        case 3:
        case 4: {
          const offset = random() < 0.5 ? 0 : Math.floor(random() * 20000);
          const data = patternBytes(1 + Math.floor(random() * (random() < 0.2 ? 200_000 : 6000)), seed + step);
          name = `write ${p} @${offset} +${data.length}`;
          await compare(() => fsWrite(fs, p, offset, data), () => model.write(p, offset, data));
          break;
        }
        case 5: {
          name = `read ${p}`;
          await compare(() => fsRead(fs, p), () => model.read(p).slice());
          if (expected instanceof Uint8Array && actual instanceof Uint8Array) {
            expected = Buffer.from(expected).toString('hex').slice(0, 64) + `..(${expected.length})#${Buffer.from(expected).equals(Buffer.from(actual))}`;
            actual = Buffer.from(actual).toString('hex').slice(0, 64) + `..(${actual.length})#true`;
          }
          break;
        }
        case 6: {
          const size = Math.floor(random() * 30000);
          name = `truncate ${p} ${size}`;
          await compare(() => fs.truncate(p, size), () => model.truncate(p, size));
          break;
        }
        case 7: name = `rename ${p} ${q}`; await compare(() => fs.rename(p, q), () => model.rename(p, q)); break;
        case 8: name = `link ${p} ${q}`; await compare(() => fs.link(p, q), () => model.link(p, q)); break;
        case 9: name = `symlink ${q} ${p}`; await compare(() => fs.symlink(q, p), () => model.symlink(q, p)); break;
        case 10: {
          const dir = random() < 0.3 ? '/' : p;
          name = `readdir ${dir}`;
          await compare(async () => (await fs.readdir(dir)).sort(), () => model.readdir(dir));
          break;
        }
        default: {
          name = `getattr ${p}`;
          await compare(
            async () => {
              const st = await fs.getattr(p);
              return { type: st.mode & S_IFMT, size: (st.mode & S_IFMT) === S_IFDIR ? -1 : st.size, nlink: st.nlink };
            },
            () => model.getattr(p),
          );
        }
      }
      log.push(`${step} [${which}] ${name}`);
      const show = (x: unknown) => (x instanceof Errno ? x.code : JSON.stringify(x ?? 'ok'));
      if (show(expected) !== show(actual)) {
        throw new Error(`step ${step} [instance ${which}] ${name}: model says ${show(expected)}, filesystem says ${show(actual)}\n${log.slice(-15).join('\n')}`);
      }
    }
    const turns = shared.tookTurns(steps);
    if (turns !== null) throw new Error(`the instances did not take turns: ${turns}`);
    await shared.stop();
    const report = await fsck(devA);
    if (!report.ok || report.warnings.length > 0) {
      throw new Error(`fsck after ${steps} steps: ${[...report.errors, ...report.warnings].join('\n')}`);
    }
    // A third instance sees the same tree.
    const check = await FileSystem.mount(devA, { slot: 2, locks: new LocalLockService().client() });
    const walk = async (path: string, node: MDir) => {
      const names = (await check.readdir(path)).sort();
      if (JSON.stringify(names) !== JSON.stringify([...node.children.keys()].sort())) throw new Error(`final listing of ${path} differs`);
      for (const [childName, child] of node.children) {
        const childPath = `${path === '/' ? '' : path}/${childName}`;
        if (child.kind === 'dir') await walk(childPath, child);
        if (child.kind === 'file' && !Buffer.from(await fsRead(check, childPath)).equals(Buffer.from(child.data))) {
          throw new Error(`final contents of ${childPath} differ`);
        }
      }
    };
    await walk('/', model.root);
    await check.unmount();
    return log;
  } finally {
    await devA.close();
    await image.cleanup();
  }
}

const envSeed = process.env.HVSHARE_SEED ? Number(process.env.HVSHARE_SEED) : undefined;
const seeds = envSeed !== undefined ? [envSeed] : [Date.now() % 100000, 1, 2];

const variants: [string, (path: string) => Promise<Instances>, number][] = [
  ['two native instances', (path) => nativeInstances(path, 2), 1500],
  ['three native instances', (path) => nativeInstances(path, 3), 1000],
  ['two domains of a platform', domainInstances, 600],
];
for (const [what, start, defaultSteps] of variants) {
  for (const seed of seeds) {
    test(`${what} agree with the model (seed ${seed})`, async (t) => {
      try {
        const log = await runSeed(seed, Number(process.env.HVSHARE_STEPS ?? defaultSteps), start);
        t.true(log.length > 0);
      } catch (error) {
        t.log(`replay with HVSHARE_SEED=${seed}`);
        throw error;
      }
    });
  }
}
