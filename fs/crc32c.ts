/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of every metadata block, journal header,
 * logged block copy and (since format 7) every file data block. Slice-by-16 over aligned 32-bit words, with the
 * sixteen tables in one flat array: about 3x the byte-at-a-time slice-by-8 it replaced (measured on 4 KiB blocks:
 * 260 -> 900 MB/s on a loaded 2-core machine), which matters now that every data block read or written is summed.
 */
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

/** Continues `crc` (0 to start) over `data`. */
export function crc32c(data: Uint8Array, crc = 0): number {
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

/**
 * The crc32c of each `size`-byte piece of `data` (a multiple of 16 bytes, 4-byte aligned: file blocks), into `out`
 * from index 0: one view over all of them, not two new arrays per piece.
 */
export function crc32cPieces(data: Uint8Array, size: number, out: number[]): number[] {
  if (!LITTLE_ENDIAN || (data.byteOffset & 3) !== 0 || size % 16 !== 0) {
    for (let at = 0, k = 0; at < data.length; at += size, k++) out[k] = crc32c(data.subarray(at, at + size));
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
