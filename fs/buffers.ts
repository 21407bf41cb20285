/**
 * Copying and zeroing that stay fast on views of a SharedArrayBuffer (guest memory, where every DMA-able buffer
 * of a guest lives). V8 takes a per-element path for slice() and fill() on shared memory, about 30 times slower
 * than for ordinary memory (measured: 128 KiB slice 32 us vs 12 us, fill 31 us vs 0.8 us), while set() between
 * the two stays a plain memory copy (4 us).
 */
const ZEROS = new Uint8Array(1 << 16);

/** A private (non-shared) copy of `view`. */
export function copyOut(view: Uint8Array): Uint8Array {
  const out = new Uint8Array(view.length);
  out.set(view);
  return out;
}

/** Zero `view` (or its part from `start` to `end`). */
export function zero(view: Uint8Array, start = 0, end = view.length): void {
  for (let at = start; at < end; at += ZEROS.length) view.set(ZEROS.subarray(0, Math.min(ZEROS.length, end - at)), at);
}
