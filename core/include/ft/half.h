/* Scalar conversions between float32 and the 16-bit storage dtypes.
 *
 * bfloat16 is the top half of a float32 (1 sign, 8 exponent, 7 mantissa bits); float16 is
 * IEEE 754 binary16 (1, 5, 10). float32 -> 16 bit rounds to nearest, ties to even, as
 * PyTorch's .to(torch.bfloat16 / torch.float16) does; NaN stays NaN (quiet), overflow of
 * float16's range gives infinity. 16 bit -> float32 is exact. */
#ifndef FT_HALF_H
#define FT_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t ft_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float ft_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float ft_bf16_to_f32(uint16_t h) { return ft_bits_f32((uint32_t)h << 16); }

static inline uint16_t ft_f32_to_bf16(float f) {
    uint32_t u = ft_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);   /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                           /* ties to even */
    return (uint16_t)(u >> 16);
}

/* float16 through the compiler's _Float16 (F16C instructions where the target has them,
 * correctly rounded software conversion otherwise). */
static inline float ft_f16_to_f32(uint16_t h) {
    _Float16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}

static inline uint16_t ft_f32_to_f16(float f) {
    _Float16 x = (_Float16)f;
    uint16_t h;
    memcpy(&h, &x, 2);
    return h;
}

#endif
