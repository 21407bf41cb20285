import { IoError } from '../fs/block-device.js';
import { endProgress, progressLine } from './cli-support.js';
import { failure } from './platform-client.js';
import { childPath, type EntryInfo, type TreeSource } from './tree-source.js';
import type { TreeSink } from './tree-sink.js';

/** What `hvshare cp -R` copied (its `--json`). */
export interface CopySummary {
  files: number;
  directories: number;
  symlinks: number;
  bytes: number;
  /** Entries of other types (devices, FIFOs, sockets), named as on the source side: not copied. */
  skipped: string[];
}

/** The source side of a copy: a tree and how messages name its paths. */
export interface CopySource {
  source: TreeSource;
  where(path: string): string;
}

/** A copy taking longer than this shows its progress on stderr (HVSHARE_PROGRESS_AFTER_MS, README knobs). */
const PROGRESS_AFTER_MS = Number(process.env.HVSHARE_PROGRESS_AFTER_MS ?? NaN) >= 0 ? Number(process.env.HVSHARE_PROGRESS_AFTER_MS) : 1000;

/**
 * Copies the tree at `from` to `to` (created; a directory that exists already is filled), as `cp -R` does and
 * keeping what `cp -a` keeps but owners: permission bits, access and modification times, symlinks as symlinks.
 * A directory gets its mode and times after its entries are in (they change its times, and a read-only mode would
 * keep them out). Errors name the path they happened on, source or destination.
 */
export async function copyTree(src: CopySource, from: string, sink: TreeSink, to: string): Promise<CopySummary> {
  const summary: CopySummary = { files: 0, directories: 0, symlinks: 0, bytes: 0, skipped: [] };
  const started = Date.now();
  const progress = (extra = 0) => {
    if (Date.now() - started < PROGRESS_AFTER_MS) return;
    const mib = ((summary.bytes + extra) / 2 ** 20).toFixed(1);
    progressLine(`cp: ${summary.files} files, ${summary.directories} directories, ${summary.symlinks} symlinks, ${mib} MiB`);
  };
  const onSource = <T>(path: string, work: Promise<T>) => work.catch((err) => Promise.reject(failure(src.where(path), err)));
  const onSink = <T>(path: string, work: Promise<T>) => work.catch((err) => Promise.reject(failure(sink.where(path), err)));

  async function* counted(path: string): AsyncIterable<Uint8Array> {
    let bytes = 0;
    try {
      for await (const chunk of src.source.chunks(path)) {
        bytes += chunk.length;
        progress(bytes);
        yield chunk;
      }
    } catch (err) {
      throw failure(src.where(path), err);
    }
  }

  const copy = async (path: string, dst: string, info: EntryInfo): Promise<void> => {
    switch (info.type) {
      case 'file':
        summary.bytes += await onSink(dst, sink.writeFile(dst, info.perm, counted(path), sink.syncAll !== undefined));
        lastFile = dst;
        await onSink(dst, sink.chmod(dst, info.perm));
        summary.files++;
        break;
      case 'symlink': {
        const target = await onSource(path, src.source.readlink(path));
        if ((await onSink(dst, sink.typeOf(dst))) !== null) await onSink(dst, sink.unlink(dst));
        await onSink(dst, sink.symlink(target, dst));
        summary.symlinks++;
        break;
      }
      case 'dir': {
        const existing = await onSink(dst, sink.typeOf(dst));
        if (existing === null) await onSink(dst, sink.mkdir(dst));
        else if (existing !== 'dir') throw failure(sink.where(dst), new IoError('ENOTDIR', 'a directory cannot replace it'));
        for (const name of await onSource(path, src.source.list(path))) {
          const child = childPath(path, name);
          await copy(child, sink.child(dst, name), await onSource(child, src.source.stat(child)));
        }
        await onSink(dst, sink.chmod(dst, info.perm));
        summary.directories++;
        break;
      }
      default:
        summary.skipped.push(src.where(path));
        return;
    }
    await onSink(dst, sink.setTimes(dst, info.atime, info.mtime));
    progress();
  };

  let lastFile: string | null = null;
  try {
    await copy(from, to, await onSource(from, src.source.stat(from)));
    if (lastFile !== null && sink.syncAll) await onSink(lastFile, sink.syncAll(lastFile));
  } finally {
    if (Date.now() - started >= PROGRESS_AFTER_MS) endProgress();
  }
  return summary;
}
