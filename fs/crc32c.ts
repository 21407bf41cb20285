/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every metadata block, journal header,
 * logged block copy and (since format 7) every file data block. Summed by our own small addon (fs/native/crc32c.c,
 * built at install by fs/native/build-addon.mjs): the SSE4.2 crc32 instruction in three interleaved streams where
 * the CPU has it, a C table elsewhere; about 14x the JavaScript below on 4 KiB blocks, and no garbage. The JavaScript
 * (slice-by-16 over aligned 32-bit words, sixteen tables in one flat array) is used when the addon cannot load,
 * and the tests check that both give the same answers.
 */
import { createRequire } from 'node:module';

/** What the addon exports (fs/native/crc32c.c). */
interface NativeCrc32c {
  crc32c(data: Uint8Array, crc?: number, offset?: number, length?: number): number;
  crc32cPieces(data: Uint8Array, size: number, out: Uint32Array): Uint32Array;
  hardware(): boolean;
}

/** The addon, or null when it is not built or does not load here (HVSHARE_CRC32C=js asks for the JavaScript). */
function loadNative(): NativeCrc32c | null {
  if (process.env.HVSHARE_CRC32C === 'js') return null;
  try {
    return createRequire(import.meta.url)('../../fs/native/build/Release/crc32c.node') as NativeCrc32c;
  } catch {
    return null;
  }
}

const native = loadNative();

/** Which code sums: 'sse4.2' (the addon, hardware), 'c-table' (the addon, portable) or 'javascript'. */
export const crc32cImplementation: 'sse4.2' | 'c-table' | 'javascript' = native ? (native.hardware() ? 'sse4.2' : 'c-table') : 'javascript';

/** Continues `crc` (0 to start) over `data`, or over its `length` bytes from `offset` (no subarray needed). */
export function crc32c(data: Uint8Array, crc = 0, offset = 0, length = data.length - offset): number {
  if (native) return native.crc32c(data, crc, offset, length);
  return crc32cJs(offset === 0 && length === data.length ? data : data.subarray(offset, offset + length), crc);
}

/**
 * The crc32c of each `size`-byte piece of `data` (the last may be shorter), into `out` from index 0 (as many
 * slots as pieces): one call for a run of file blocks, no number object per piece.
 */
export function crc32cPieces(data: Uint8Array, size: number, out: Uint32Array): Uint32Array {
  if (native) return native.crc32cPieces(data, size, out);
  return crc32cPiecesJs(data, size, out);
}

/** A crc32c as eight hex digits, as messages and `hvshare checksum` print it. */
export const crcHex = (crc: number) => crc.toString(16).padStart(8, '0');

const POLY = 0x82f63b78;
const SLICES = 16;
/** Table t (0..15) at t * 256: the CRC of a byte followed by t zero bytes. */
const TABLE: Int32Array = buildTable();
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function buildTable(): Int32Array {
  const table = new Int32Array(SLICES * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    table[i] = c;
  }
  for (let t = 1; t < SLICES; t++) {
    for (let i = 0; i < 256; i++) {
      const prev = table[(t - 1) * 256 + i];
      table[t * 256 + i] = (prev >>> 8) ^ table[prev & 0xff];
    }
  }
  return table;
}

/** crc32c in JavaScript: continues `crc` (0 to start) over `data`. */
export function crc32cJs(data: Uint8Array, crc = 0): number {
  let c = ~crc;
  let i = 0;
  const n = data.length;
  if (LITTLE_ENDIAN && (data.byteOffset & 3) === 0 && n >= 16) {
    c = sliceBy16(new Int32Array(data.buffer, data.byteOffset, n >>> 2), 0, (n >>> 2) & ~3, c);
    i = (n >>> 4) << 4;
  }
  const t = TABLE;
  for (; i < n; i++) c = t[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** crc32cPieces in JavaScript: one view over all the pieces when they are whole 16-byte multiples, aligned. */
export function crc32cPiecesJs(data: Uint8Array, size: number, out: Uint32Array): Uint32Array {
  if (!LITTLE_ENDIAN || (data.byteOffset & 3) !== 0 || size % 16 !== 0 || data.length % size !== 0) {
    for (let at = 0, k = 0; at < data.length; at += size, k++) out[k] = crc32cJs(data.subarray(at, at + size));
    return out;
  }
  const words = new Int32Array(data.buffer, data.byteOffset, data.length >>> 2);
  const step = size >>> 2;
  for (let from = 0, k = 0; from < words.length; from += step, k++) out[k] = ~sliceBy16(words, from, from + step, -1) >>> 0;
  return out;
}

/** The CRC register `c` run over words[from, to) (to - from a multiple of 4). */
function sliceBy16(words: Int32Array, from: number, to: number, c: number): number {
  const t = TABLE;
  for (let k = from; k < to; k += 4) {
    const a = c ^ words[k];
    const b = words[k + 1];
    const d = words[k + 2];
    const e = words[k + 3];
    c =
      t[3840 + (a & 0xff)] ^ t[3584 + ((a >>> 8) & 0xff)] ^ t[3328 + ((a >>> 16) & 0xff)] ^ t[3072 + (a >>> 24)] ^
      t[2816 + (b & 0xff)] ^ t[2560 + ((b >>> 8) & 0xff)] ^ t[2304 + ((b >>> 16) & 0xff)] ^ t[2048 + (b >>> 24)] ^
      t[1792 + (d & 0xff)] ^ t[1536 + ((d >>> 8) & 0xff)] ^ t[1280 + ((d >>> 16) & 0xff)] ^ t[1024 + (d >>> 24)] ^
      t[768 + (e & 0xff)] ^ t[512 + ((e >>> 8) & 0xff)] ^ t[256 + ((e >>> 16) & 0xff)] ^ t[e >>> 24];
  }
  return c;
}
