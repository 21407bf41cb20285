/**
 * A view's cache mode: how much the host kernel may remember of a domain's view between two requests. The names
 * are virtio-fs's (`cache=none|auto|always`); ours differ in what they promise, so the bound is stated here, in
 * `hvshare up --help` and in the README.
 *
 *  - `strict` (the default): never stale. Every lookup and stat reaches the view (zero entry, attribute and
 *    negative timeouts), and every read(2) too (direct_io, no host page cache), so a view shows what a process in
 *    that domain would see at the same instant. The domain answers from its own caches while it holds the
 *    resource's cluster lock; the view answers a question again itself while the domain's change count shows
 *    nothing changed (answer-cache.ts). MAP_SHARED mmap is refused (ENODEV): direct_io has no pages to share.
 *  - `auto[=MS]` (MS defaults to 1000): the host kernel may serve names, negative lookups and attributes for at
 *    most MS milliseconds after the domain gave them (and the view itself, that a file has no extended attributes). File data is close-to-open, as NFS's: each open drops the
 *    file's pages (libfuse 2.9 without `keep_cache`), and a file held open loses them when a revalidated size
 *    differs; a same-size rewrite by another domain shows in a file held open only once it is opened again.
 *    (libfuse 2.9 has neither `auto_inval_data` nor a way to invalidate one file; its `auto_cache` would keep
 *    pages across opens when size and mtime match, which is weaker than close-to-open.) Reads go through the
 *    kernel's page cache and readahead, and MAP_SHARED works (sqlite WAL on one view).
 */
export type CacheMode = { mode: 'strict' } | { mode: 'auto'; ms: number };

export const STRICT: CacheMode = { mode: 'strict' };
export const DEFAULT_AUTO_MS = 1000;
/** libfuse keeps timeouts as doubles in seconds; a day is far past any sensible bound for a shared view. */
const MAX_AUTO_MS = 86_400_000;

/** Parse `strict`, `auto` or `auto=MS`, as given to `--cache`. Throws a message that names the flag's value. */
export function parseCacheMode(text: string): CacheMode {
  if (text === 'strict') return STRICT;
  const auto = /^auto(?:=(.*))?$/.exec(text);
  if (auto) {
    if (auto[1] === undefined) return { mode: 'auto', ms: DEFAULT_AUTO_MS };
    const ms = Number(auto[1]);
    if (/^\d+$/.test(auto[1]) && ms <= MAX_AUTO_MS) return { mode: 'auto', ms };
    throw new Error(`--cache ${text}: MS must be a whole number of milliseconds from 0 to ${MAX_AUTO_MS}`);
  }
  throw new Error(`--cache ${text}: expected strict, auto or auto=MS`);
}

export function formatCacheMode(cache: CacheMode): string {
  return cache.mode === 'strict' ? 'strict' : `auto=${cache.ms}`;
}

/** The libfuse 2.9 mount options (`-o`) that implement a mode. */
export function cacheOptions(cache: CacheMode): string[] {
  if (cache.mode === 'strict') return ['attr_timeout=0', 'entry_timeout=0', 'negative_timeout=0', 'direct_io'];
  const seconds = String(cache.ms / 1000);
  return [`attr_timeout=${seconds}`, `entry_timeout=${seconds}`, `negative_timeout=${seconds}`];
}
