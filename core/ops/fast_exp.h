/* A vectorisable exp for the softmax-style loops of the core (log-softmax, cross-entropy,
 * attention), where every argument is x - max <= 0. Internal to core/ops. */
#ifndef FT_OPS_FAST_EXP_H
#define FT_OPS_FAST_EXP_H

#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 0 (x - max, or -inf for a masked position), written to vectorise:
 * exp(x) = 2^n * e^r with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2];
 * e^r by Cephes' expf polynomial (about 1 ulp). Below -87.3 (and at -inf) the result is 0
 * (it would be subnormal); a NaN stays NaN. No branches and the final choice is a bit mask: with
 * C's default trapping-math rules a conditional would keep the loop scalar. */
static inline float exp_nonpos(float x) {
    const float magic = 12582912.0f;                  /* 1.5 * 2^23: adds round to integer */
    float t = x * 1.44269504088896341f + magic;      /* n in the low mantissa bits */
    float n = t - magic;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;    /* x - n ln2, ln2 split in two */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t tb, mb, vb;
    memcpy(&tb, &t, sizeof tb);
    memcpy(&mb, &magic, sizeof mb);
    uint32_t eb = (tb - mb + 127u) << 23;             /* 2^n as float bits */
    float scale, v;
    memcpy(&scale, &eb, sizeof scale);
    v = p * scale;
    memcpy(&vb, &v, sizeof vb);
    vb &= (uint32_t)0 - (uint32_t) !(x < -87.3f);     /* all ones unless x < -87.3 */
    memcpy(&v, &vb, sizeof v);
    return v;
}

#endif
