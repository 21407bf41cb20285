/*
 * crc32c(data, crc = 0, offset = 0, length = data.length - offset) for fs/crc32c.ts: CRC-32C (Castagnoli, reflected
 * polynomial 0x82F63B78) of data[offset, offset + length) continuing `crc`, and crc32cPieces(data, size, out) filling
 * out[k] (a Uint32Array) with the CRC of each `size`-byte piece. On x86-64 with SSE4.2 (checked at run time with cpuid) the crc32
 * instruction sums three interleaved streams over large runs, joined by shifting each partial CRC over the bytes
 * that follow it; elsewhere a slice-by-8 table. An N-API module without global state besides tables built once, so
 * it loads in every worker thread.
 */
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static int have_sse42 = 0;

static void build_tables(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
    table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

/* The register (already inverted) run over n bytes with tables. */
static uint32_t crc_table(uint32_t c, const uint8_t *p, size_t n) {
  while (n && ((uintptr_t)p & 7)) { c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8); n--; }
  while (n >= 8) {
    uint32_t lo, hi;
    memcpy(&lo, p, 4);
    memcpy(&hi, p + 4, 4);
    lo ^= c;
    c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^ table[4][lo >> 24] ^
        table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^ table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__)
#include <cpuid.h>

/* GF(2) multiplication of reflected polynomials a * b mod POLY. */
static uint32_t gf_multiply(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (int i = 0; i < 32; i++) {
    if (a & 0x80000000u) product ^= b;
    a <<= 1;
    b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
  }
  return product;
}

/* x^(8 * n) mod POLY (reflected): multiplying a register by it moves the register past n zero bytes. */
static uint32_t shift_bytes(size_t n) {
  uint32_t result = 0x80000000u; /* x^0 */
  uint32_t square = 0x00800000u; /* x^8 */
  while (n) {
    if (n & 1) result = gf_multiply(result, square);
    square = gf_multiply(square, square);
    n >>= 1;
  }
  return result;
}

#define STREAM 1360 /* bytes per stream per round: 3 * 1360 = 4080, near one 4 KiB block */
static uint32_t shift_stream; /* x^(8 * STREAM) */
static uint32_t shift_stream2; /* x^(8 * 2 * STREAM) */

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n) {
  uint64_t c0 = c;
  while (n && ((uintptr_t)p & 7)) { c0 = __builtin_ia32_crc32qi((uint32_t)c0, *p++); n--; }
  while (n >= 3 * STREAM) {
    uint64_t c1 = 0, c2 = 0;
    const uint8_t *end = p + STREAM;
    while (p < end) {
      uint64_t a, b, d;
      memcpy(&a, p, 8);
      memcpy(&b, p + STREAM, 8);
      memcpy(&d, p + 2 * STREAM, 8);
      c0 = __builtin_ia32_crc32di(c0, a);
      c1 = __builtin_ia32_crc32di(c1, b);
      c2 = __builtin_ia32_crc32di(c2, d);
      p += 8;
    }
    /* c0 covers stream 0 and must pass over streams 1 and 2; c1 over stream 2. Registers start at 0 for 1 and 2,
       so the CRC is linear in them: shift and xor. */
    c0 = gf_multiply((uint32_t)c0, shift_stream2) ^ gf_multiply((uint32_t)c1, shift_stream) ^ (uint32_t)c2;
    p += 2 * STREAM;
    n -= 3 * STREAM;
  }
  while (n >= 8) {
    uint64_t a;
    memcpy(&a, p, 8);
    c0 = __builtin_ia32_crc32di(c0, a);
    p += 8;
    n -= 8;
  }
  while (n--) c0 = __builtin_ia32_crc32qi((uint32_t)c0, *p++);
  return (uint32_t)c0;
}
#endif

static uint32_t crc_run(uint32_t crc, const uint8_t *p, size_t n) {
  uint32_t c = ~crc;
#if defined(__x86_64__)
  if (have_sse42) return ~crc_hw(c, p, n);
#endif
  return ~crc_table(c, p, n);
}

/* The bytes of a Uint8Array (or any typed array / Buffer) argument, or NULL after throwing a TypeError. */
static const uint8_t *bytes_of(napi_env env, napi_value value, size_t *length) {
  bool is_typed = false;
  napi_is_typedarray(env, value, &is_typed);
  if (!is_typed) {
    napi_throw_type_error(env, NULL, "crc32c: data must be a Uint8Array");
    return NULL;
  }
  napi_typedarray_type type;
  size_t count;
  void *data;
  napi_get_typedarray_info(env, value, &type, &count, &data, NULL, NULL);
  if (type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "crc32c: data must be a Uint8Array");
    return NULL;
  }
  *length = count;
  return data;
}

static int optional_number(napi_env env, napi_value value, double fallback, double *out) {
  napi_valuetype kind;
  napi_typeof(env, value, &kind);
  if (kind == napi_undefined) { *out = fallback; return 1; }
  if (kind != napi_number) return 0;
  napi_get_value_double(env, value, out);
  return 1;
}

static napi_value js_crc32c(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  for (size_t i = argc; i < 4; i++) napi_get_undefined(env, &argv[i]);
  size_t length;
  const uint8_t *data = bytes_of(env, argv[0], &length);
  if (!data) return NULL;
  double crc, offset, count;
  if (!optional_number(env, argv[1], 0, &crc) || !optional_number(env, argv[2], 0, &offset) ||
      offset < 0 || offset > (double)length || !optional_number(env, argv[3], (double)length - offset, &count) ||
      count < 0 || offset + count > (double)length) {
    napi_throw_range_error(env, NULL, "crc32c: crc, offset or length out of range");
    return NULL;
  }
  napi_value result;
  napi_create_uint32(env, crc_run((uint32_t)(int64_t)crc, data + (size_t)offset, (size_t)count), &result);
  return result;
}

static napi_value js_crc32c_pieces(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "crc32cPieces: (data, size, out) expected");
    return NULL;
  }
  size_t length;
  const uint8_t *data = bytes_of(env, argv[0], &length);
  if (!data) return NULL;
  uint32_t size = 0;
  if (napi_get_value_uint32(env, argv[1], &size) != napi_ok || size == 0) {
    napi_throw_range_error(env, NULL, "crc32cPieces: size must be a positive integer");
    return NULL;
  }
  bool is_typed = false;
  napi_is_typedarray(env, argv[2], &is_typed);
  napi_typedarray_type type = napi_int8_array;
  size_t slots = 0;
  void *out = NULL;
  if (is_typed) napi_get_typedarray_info(env, argv[2], &type, &slots, &out, NULL, NULL);
  if (type != napi_uint32_array) {
    napi_throw_type_error(env, NULL, "crc32cPieces: out must be a Uint32Array");
    return NULL;
  }
  size_t pieces = (length + size - 1) / size;
  if (slots < pieces) {
    napi_throw_range_error(env, NULL, "crc32cPieces: out has fewer slots than data has pieces");
    return NULL;
  }
  /* Written straight into the caller's array: no number object per piece. */
  uint32_t *sums = out;
  for (size_t at = 0, k = 0; at < length; at += size, k++) sums[k] = crc_run(0, data + at, length - at < size ? length - at : size);
  return argv[2];
}

static napi_value js_hardware(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  napi_get_boolean(env, have_sse42, &result);
  return result;
}

/* Runs once when the library is loaded, before any thread can call it: the tables and the CPU check. */
__attribute__((constructor)) static void initialise(void) {
  build_tables();
#if defined(__x86_64__)
  unsigned a, b, c, d;
  if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2)) {
    shift_stream = shift_bytes(STREAM);
    shift_stream2 = shift_bytes(2 * STREAM);
    /* HVSHARE_CRC32C_PORTABLE=1 forces the table code (the test compares both). */
    have_sse42 = getenv("HVSHARE_CRC32C_PORTABLE") == NULL;
  }
#endif
}

NAPI_MODULE_INIT() {
  napi_property_descriptor exports_list[] = {
    { "crc32c", NULL, js_crc32c, NULL, NULL, NULL, napi_default, NULL },
    { "crc32cPieces", NULL, js_crc32c_pieces, NULL, NULL, NULL, napi_default, NULL },
    { "hardware", NULL, js_hardware, NULL, NULL, NULL, napi_default, NULL },
  };
  napi_define_properties(env, exports, 3, exports_list);
  return exports;
}
