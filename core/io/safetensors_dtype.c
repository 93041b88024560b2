/* safetensors dtypes: the table of the format's dtypes, how they map to the runtime's
 * (F64/F32/F16/BF16 to float64/float32/float16/bfloat16, every integer dtype to int64),
 * and the conversions between them (IEEE half and bfloat16 rounded to nearest even). */
#include <stdint.h>
#include <string.h>

#include "safetensors_internal.h"

#define PARALLEL_MIN 32768   /* elements below which a loop stays serial */

static const st_dtype DTYPES[] = {
    {"F64", 64, ST_F64},   {"F32", 32, ST_F32},   {"F16", 16, ST_F16},   {"BF16", 16, ST_BF16},
    {"I64", 64, ST_I64},   {"I32", 32, ST_I32},   {"I16", 16, ST_I16},   {"I8", 8, ST_I8},
    {"U64", 64, ST_U64},   {"U32", 32, ST_U32},   {"U16", 16, ST_U16},   {"U8", 8, ST_U8},
    {"BOOL", 8, ST_BOOL},
    {"F8_E5M2", 8, ST_OTHER}, {"F8_E4M3", 8, ST_OTHER}, {"F8_E8M0", 8, ST_OTHER},
    {"F6_E2M3", 6, ST_OTHER}, {"F6_E3M2", 6, ST_OTHER}, {"F4", 4, ST_OTHER}, {"C64", 64, ST_OTHER},
};
#define NDTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))

const st_dtype *st_find_dtype(const char *name) {
    for (int i = 0; i < NDTYPES; i++)
        if (strcmp(DTYPES[i].name, name) == 0) return &DTYPES[i];
    return NULL;
}

int st_is_float(st_code c) { return c == ST_F64 || c == ST_F32 || c == ST_F16 || c == ST_BF16; }

/* IEEE half -> float (exact). */
static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {                       /* inf, NaN */
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {                   /* normal: rebias the exponent 15 -> 127 */
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else {                                 /* zero, subnormal: mant * 2^-24 */
        float f = (float)mant * 0x1p-24f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* float -> IEEE half, rounded to nearest even; NaN becomes 0x7E00 (as PyTorch). */
static inline uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00);
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);   /* >= 65520 rounds to inf */
    if (ax >= 0x38800000u) {                                    /* >= 2^-14: a normal half */
        uint32_t r = ax - 0x38000000u;                          /* exponent 127 -> 15 */
        r += 0xfffu + ((r >> 13) & 1);                          /* ties to even on 13 bits */
        return (uint16_t)(sign | (r >> 13));
    }
    if (ax < 0x33000000u) return (uint16_t)sign;                /* < 2^-25 rounds to zero */
    /* A subnormal half counts units of 2^-24: f = m * 2^(e-150) = (m >> (126-e)) units. */
    uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;           /* may carry into a normal */
    return (uint16_t)(sign | q);
}

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* float -> bfloat16, rounded to nearest even; NaN becomes 0x7FC0 (as PyTorch). */
static inline uint16_t float_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* Converts n values at src into out, each v of type TS read with memcpy (any alignment)
 * and written as the TD of expr. */
#define CONVERT(TS, TD, expr)                                                        \
    do {                                                                             \
        _Pragma("omp parallel for if (n > PARALLEL_MIN)")                            \
        for (int64_t i = 0; i < n; i++) {                                            \
            TS v;                                                                    \
            memcpy(&v, src + i * (int64_t)sizeof(TS), sizeof(TS));                   \
            TD o = (expr);                                                           \
            memcpy(out + i * (int64_t)sizeof(TD), &o, sizeof(TD));                   \
        }                                                                            \
    } while (0)

int st_code_size(st_code code) {
    switch (code) {
    case ST_F64: case ST_I64: case ST_U64: return 8;
    case ST_F32: case ST_I32: case ST_U32: return 4;
    case ST_F16: case ST_BF16: case ST_I16: case ST_U16: return 2;
    default: return 1;
    }
}

int st_code_of(ft_dtype dtype, st_code *code) {
    switch (dtype) {
    case FT_FLOAT32: *code = ST_F32; return 0;
    case FT_FLOAT64: *code = ST_F64; return 0;
    case FT_FLOAT16: *code = ST_F16; return 0;
    case FT_BFLOAT16: *code = ST_BF16; return 0;
    case FT_INT64: *code = ST_I64; return 0;
    }
    return -1;
}

ft_dtype st_tensor_dtype(st_code code) {
    switch (code) {
    case ST_F64: return FT_FLOAT64;
    case ST_F32: return FT_FLOAT32;
    case ST_F16: return FT_FLOAT16;
    case ST_BF16: return FT_BFLOAT16;
    default: return FT_INT64;
    }
}

/* Float to float: the same dtype is a copy; float64 to a 16-bit dtype goes through float32
 * (as ft_copy_ and PyTorch's .half() / .bfloat16() of a double do); the rest is exact or
 * rounded once, to nearest even. */
void st_convert_float(st_code from, const unsigned char *src, st_code to, unsigned char *out, int64_t n) {
    if (from == to) {
        memcpy(out, src, (size_t)n * (size_t)st_code_size(from));
        return;
    }
    switch (from) {
    case ST_F64:
        if (to == ST_F32) CONVERT(double, float, (float)v);
        else if (to == ST_F16) CONVERT(double, uint16_t, float_to_half((float)v));
        else CONVERT(double, uint16_t, float_to_bf16((float)v));
        break;
    case ST_F32:
        if (to == ST_F64) CONVERT(float, double, (double)v);
        else if (to == ST_F16) CONVERT(float, uint16_t, float_to_half(v));
        else CONVERT(float, uint16_t, float_to_bf16(v));
        break;
    case ST_F16:
        if (to == ST_F64) CONVERT(uint16_t, double, (double)half_to_float(v));
        else if (to == ST_F32) CONVERT(uint16_t, float, half_to_float(v));
        else CONVERT(uint16_t, uint16_t, float_to_bf16(half_to_float(v)));
        break;
    case ST_BF16:
        if (to == ST_F64) CONVERT(uint16_t, double, (double)bf16_to_float(v));
        else if (to == ST_F32) CONVERT(uint16_t, float, bf16_to_float(v));
        else CONVERT(uint16_t, uint16_t, float_to_half(bf16_to_float(v)));
        break;
    default:
        break;
    }
}

void st_decode_int(st_code code, const unsigned char *src, int64_t n, int64_t *dst) {
    unsigned char *out = (unsigned char *)dst;
    switch (code) {
    case ST_I64: case ST_U64: memcpy(out, src, (size_t)n * 8); break;
    case ST_I32: CONVERT(int32_t, int64_t, (int64_t)v); break;
    case ST_I16: CONVERT(int16_t, int64_t, (int64_t)v); break;
    case ST_I8: CONVERT(int8_t, int64_t, (int64_t)v); break;
    case ST_U32: CONVERT(uint32_t, int64_t, (int64_t)v); break;
    case ST_U16: CONVERT(uint16_t, int64_t, (int64_t)v); break;
    case ST_U8: CONVERT(uint8_t, int64_t, (int64_t)v); break;
    case ST_BOOL: CONVERT(uint8_t, int64_t, (int64_t)(v != 0)); break;
    default: break;
    }
}
