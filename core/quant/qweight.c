/* Quantised weights: NF4 (with or without QLoRA's double quantisation of the absmaxes) and int8:
 * quantisation, dequantisation, and the object holding them.
 * The packed values and the scales live in ordinary tensor storages so that they count in
 * ft_live_bytes (and in the Lua collector's accounting) like any other tensor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "ft/quant.h"

/* bitsandbytes' NF4 levels (csrc/kernels.cu, nf4_dequantization_lut; the same values as
 * bitsandbytes.functional.get_4bit_type("nf4")): QLoRA's quantiles of N(0, 1), normalised to
 * [-1, 1], with an exact zero. */
const float ft_nf4_levels[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

struct ft_qweight {
    int refcount;
    ft_quant_kind kind;
    int64_t rows, cols;
    int64_t nvalues;      /* bytes of packed values in use */
    int64_t nscales;      /* block absmaxes (NF4) or row scales (int8) */
    ft_tensor *values;    /* NF4: two indices per byte; int8: one value per byte (raw bytes) */
    ft_tensor *scales;    /* float32 [nscales]; FT_QUANT_NF4: one 8-bit code per absmax (raw bytes) */
    ft_tensor *absmax2;   /* FT_QUANT_NF4 only: float32 [ceil(nscales / 256)] */
    float offset;         /* FT_QUANT_NF4 only: the mean absmax */
    float code[256];      /* FT_QUANT_NF4 only: the dynamic map, built once rather than per tile */
};

const char *ft_quant_kind_name(ft_quant_kind kind) {
    switch (kind) {
    case FT_QUANT_NF4: return "nf4";
    case FT_QUANT_INT8: return "int8";
    case FT_QUANT_NF4_FP32: return "nf4_fp32";
    }
    return NULL;
}

int ft_quant_kind_from_name(const char *name, ft_quant_kind *kind) {
    if (name && strcmp(name, "nf4") == 0) { *kind = FT_QUANT_NF4; return 0; }
    if (name && strcmp(name, "int8") == 0) { *kind = FT_QUANT_INT8; return 0; }
    if (name && strcmp(name, "nf4_fp32") == 0) { *kind = FT_QUANT_NF4_FP32; return 0; }
    ft_set_error("unknown quantisation kind '%s' (kinds: nf4, int8, nf4_fp32)", name ? name : "(null)");
    return -1;
}

/* The 15 float32 midpoints between the levels, increasing: the thresholds of bitsandbytes'
 * dQuantizeNF4 (csrc/kernels.cu), a decision tree of strict '>' over them. */
static const float nf4_midpoints[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

/* dQuantizeNF4's index as the count of midpoints below x. The tree is a binary search over these
 * sorted thresholds, so both give the same index for every float32 (checked over all 2^32 bit
 * patterns; tests/c/test_quant.c sweeps each midpoint's neighbours): a tie keeps the lower
 * level, -0 is 0, and a NaN fails every '>': index 0. Branch-free, so that a block vectorises
 * (the form for a short last block, and without AVX2 for all). */
static inline unsigned nf4_index(float x) {
    unsigned idx = 0;
    for (int k = 0; k < 15; k++) idx += x > nf4_midpoints[k];
    return idx;
}

/* The bit pattern of max |x[i]| over n floats. For non-negative floats the integer order of the
 * bits is the numeric order, and an infinity or a NaN (>= FINITE_LIMIT) is above every finite
 * value: one integer max, which vectorises where fmaxf does not, gives both the absmax and
 * whether all n are finite. */
#define FINITE_LIMIT 0x7f800000u
static uint32_t abs_max_bits(const float *x, int64_t n) {
    uint32_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        u &= 0x7fffffffu;
        m = u > m ? u : m;
    }
    return m;
}

static float float_of_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Below this many elements a loop runs on one thread (as the other kernels). */
#define PAR_MIN 32768

static uint8_t *bytes_of(const ft_tensor *t) { return (uint8_t *)ft_data(t); }

/* torch.linspace(0.1, 1, steps, dtype=float32) as PyTorch's x86-64 CPU kernel computes it
 * (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp, AVX2 dispatch), the map bitsandbytes
 * builds there: a float32 step; element i of the first half fma(step, i, start), of the second
 * half fma(-step, steps - 1 - i, end); two vectors of 8 at a time while 16 remain, each from
 * such a base at its first element plus k * step (unfused) for lane k; the rest one by one.
 * (Other capabilities round some elements one ulp apart.) */
static void linspace_f32(int64_t steps, float *out) {
    const float start = 0.1f, end = 1.0f;   /* (float)0.1, as torch converts the double */
    float step = (end - start) / (float)(steps - 1);
    int64_t half = steps / 2, i = 0;
#define AT(j) ((j) < half ? fmaf(step, (float)(j), start) : fmaf(-step, (float)(steps - 1 - (j)), end))
    for (; i <= steps - 16; i += 8) {
        float base = AT(i);
        for (int k = 0; k < 8; k++) {
            volatile float lane = (float)k * step;   /* no contraction into an fma */
            out[i + k] = base + lane;
        }
        i += 8;
        base = AT(i);
        for (int k = 0; k < 8; k++) {
            volatile float lane = (float)k * step;
            out[i + k] = base + lane;
        }
    }
    for (; i < steps; i++) out[i] = AT(i);
#undef AT
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* bitsandbytes.functional.create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)
 * (bitsandbytes/functional.py): for exponent i = 0..6, the 2^i float32 midpoints of
 * linspace(0.1, 1, 2^i + 1) times float32(10^(i - 6)), with both signs; then 0 and 1, sorted.
 * All products in float32, as torch multiplies a float32 tensor by a Python scalar. */
void ft_dynamic_map(float code[256]) {
    static const double scale[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    int k = 0;
    for (int i = 0; i < 7; i++) {
        int64_t items = ((int64_t)1 << i) + 1;
        float b[65];
        linspace_f32(items, b);
        float sc = (float)scale[i];
        for (int64_t j = 0; j + 1 < items; j++) {
            float mean = (b[j] + b[j + 1]) / 2.0f;
            code[k++] = sc * mean;
            code[k++] = -sc * mean;
        }
    }
    code[k++] = 0.0f;
    code[k++] = 1.0f;
    qsort(code, 256, sizeof(float), cmp_float);
}

/* bitsandbytes' dQuantize<0> (csrc/kernels.cu) is a 7-step binary search over the sorted code
 * from pivot 127, then the nearer of the two neighbours by the float32 midpoint; a value on a
 * midpoint keeps the searched pivot. A NaN (0 * inf, an all-zero block) fails every '>' and
 * '<': code 0.
 * Here the same result without its branches, which mispredict at every step. The search
 * compares x with the odd entries only (code[127], code[127 +- 64], ...: a search tree over
 * them in order) and ends on the even entry p = 2 * (the number of odd entries below x); the
 * entries it last went up from and down from are p - 1 (none at p = 0: lower = code[0]) and
 * p + 1 (code[255] at the top). So the midpoints are mid_up[p] = (code[p + 1] + code[p]) / 2 and
 * mid_lo[p] = (code[p - 1] + code[p]) / 2, the same float32 sums; at p = 0 the lower midpoint
 * is code[0] itself and either side gives 0: mid_lo[0] = -inf. The count of odd entries below
 * x is read from a table over the top DQ_BUCKET_BITS bits of x's order key (the count below
 * each bucket's lowest value) plus two compares: no bucket holds more than two odd entries.
 * (Checked equal to bitsandbytes' loop for all 2^32 float32 inputs; tests/c/test_quant.c puts
 * x on and next to every code and midpoint.) */
#define DQ_BUCKET_BITS 13
typedef struct {
    float code[256];
    float odd[129];       /* code[1], code[3], ..., code[253], then +inf twice (never below x) */
    float mid_up[256];    /* [p] = (code[p + 1] + code[p]) * 0.5, p < 255 */
    float mid_lo[256];    /* [p] = mid_up[p - 1]; [0] = -inf */
    uint8_t below[1 << DQ_BUCKET_BITS];   /* odd entries below the bucket's lowest value */
} dq_map;

/* The bits of x as an unsigned key in float order (-inf lowest, -0 just below +0). */
static uint32_t order_key(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint32_t neg = (uint32_t)((int32_t)u >> 31);
    return u ^ (neg | 0x80000000u);
}

static float key_float(uint32_t k) {
    return float_of_bits(k & 0x80000000u ? k ^ 0x80000000u : ~k);
}

static void dq_map_init(dq_map *m, const float code[256]) {
    memcpy(m->code, code, sizeof m->code);
    for (int j = 0; j < 127; j++) m->odd[j] = code[2 * j + 1];
    m->odd[127] = m->odd[128] = INFINITY;
    for (int p = 0; p < 255; p++) m->mid_up[p] = (code[p + 1] + code[p]) * 0.5f;
    m->mid_up[255] = INFINITY;   /* never read: p is even */
    m->mid_lo[0] = -INFINITY;
    for (int p = 1; p < 256; p++) m->mid_lo[p] = m->mid_up[p - 1];
    int below = 0;
    for (uint32_t k = 0; k < (1u << DQ_BUCKET_BITS); k++) {
        float lowest = key_float(k << (32 - DQ_BUCKET_BITS));   /* a NaN below -inf: counts 0 */
        while (below < 127 && lowest > m->odd[below]) below++;
        m->below[k] = (uint8_t)below;
    }
}

static unsigned dquantize(const dq_map *m, float x) {
    x = x == x ? x : -INFINITY;   /* a NaN ends where -inf does: code 0 */
    int b = m->below[order_key(x) >> (32 - DQ_BUCKET_BITS)];
    int p = 2 * (b + (x > m->odd[b]) + (x > m->odd[b + 1]));
    /* arithmetic rather than ?:, which the compiler makes a branch that mispredicts */
    int above = x > m->code[p];
    return (unsigned)(p + above * (x > m->mid_up[p]) - (1 - above) * (x < m->mid_lo[p]));
}

/* QLoRA's double quantisation (bitsandbytes quantize_4bit, compress_statistics=True):
 * offset = mean(absmax) (here: a sequential double sum rounded once to float32), then
 * absmax - offset in blocks of 256 by bitsandbytes' quantize_blockwise with the dynamic map:
 * a float32 absmax per block and x * (1 / absmax2) to 8-bit codes by dquantize. */
static float double_quantize(const float *absmax, int64_t n, const float code[256], uint8_t *codes,
                             float *absmax2) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += absmax[i];   /* in order: the rounding the fixtures have */
    float offset = (float)(sum / (double)n);
    dq_map map;
    dq_map_init(&map, code);
    int64_t nblocks = (n + FT_NF4_BLOCK2 - 1) / FT_NF4_BLOCK2;
    /* a table lookup and a few compares per absmax: worth threads from a few blocks on */
    #pragma omp parallel for schedule(static) if (nblocks > 8)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t i0 = b * FT_NF4_BLOCK2, i1 = i0 + FT_NF4_BLOCK2 < n ? i0 + FT_NF4_BLOCK2 : n;
        float m = 0.0f;
        for (int64_t i = i0; i < i1; i++) {
            float d = fabsf(absmax[i] - offset);   /* finite: the absmaxes are */
            m = d > m ? d : m;
        }
        absmax2[b] = m;
        float inv = 1.0f / m;
        for (int64_t i = i0; i < i1; i++) codes[i] = (uint8_t)dquantize(&map, (absmax[i] - offset) * inv);
    }
    return offset;
}

/* The absmax of NF4 block b as bitsandbytes' dequantize_4bit rebuilds it: the float32 product
 * code[c] * absmax2 (dequantize_blockwise), then + offset, rounded separately (volatile: no
 * fused multiply-add). */
static float nf4_block_absmax(const ft_qweight *q, int64_t b) {
    const uint8_t *c = bytes_of(q->scales);
    volatile float prod = q->code[c[b]] * ft_f32(q->absmax2)[b / FT_NF4_BLOCK2];
    return prod + q->offset;
}

/* A buffer of n bytes as a float32 tensor storage (rounded up to whole floats). */
static ft_tensor *byte_buffer(int64_t n) {
    int64_t nf = n / 4 + 1;
    return ft_zeros(&nf, 1, FT_FLOAT32);
}

#ifdef __AVX2__
/* nf4_index of 8 values at once: the decision tree itself, level by level, each lane's
 * threshold at levels 2-4 picked by a blend or a permute from the index so far (NaN: 0). About
 * half the work of the 15 compares, which the compiler vectorises but cannot do this way. */
static inline __m256i nf4_index8(__m256 y) {
    const float *t = nf4_midpoints;
    const __m256 t2 = _mm256_setr_ps(t[1], t[5], t[9], t[13], 0, 0, 0, 0);
    const __m256 t3 = _mm256_setr_ps(t[0], t[2], t[4], t[6], t[8], t[10], t[12], t[14]);
    __m256 gt = _mm256_cmp_ps(y, _mm256_set1_ps(t[7]), _CMP_GT_OQ);
    __m256i idx = _mm256_and_si256(_mm256_castps_si256(gt), _mm256_set1_epi32(8));
    __m256 th = _mm256_blendv_ps(_mm256_set1_ps(t[3]), _mm256_set1_ps(t[11]), gt);   /* t[idx + 3] */
    gt = _mm256_cmp_ps(y, th, _CMP_GT_OQ);
    idx = _mm256_or_si256(idx, _mm256_and_si256(_mm256_castps_si256(gt), _mm256_set1_epi32(4)));
    th = _mm256_permutevar8x32_ps(t2, _mm256_srli_epi32(idx, 2));                      /* t[idx + 1] */
    gt = _mm256_cmp_ps(y, th, _CMP_GT_OQ);
    idx = _mm256_or_si256(idx, _mm256_and_si256(_mm256_castps_si256(gt), _mm256_set1_epi32(2)));
    th = _mm256_permutevar8x32_ps(t3, _mm256_srli_epi32(idx, 1));                      /* t[idx] */
    gt = _mm256_cmp_ps(y, th, _CMP_GT_OQ);
    return _mm256_sub_epi32(idx, _mm256_castps_si256(gt));   /* + 1 where above */
}

/* A whole block's 64 indices packed into 32 bytes: to bytes by two saturating packs (exact:
 * the indices are < 16), put back in order, then high * 16 + low per pair by maddubs. */
static void nf4_pack_block_avx2(const float *x, float inv, uint8_t *p) {
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i bytes[2];
    for (int h = 0; h < 2; h++) {
        __m256i v[4];
        for (int k = 0; k < 4; k++) v[k] = nf4_index8(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * h + 8 * k), vinv));
        __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(v[0], v[1]), _mm256_packus_epi32(v[2], v[3]));
        bytes[h] = _mm256_permutevar8x32_epi32(b, order);
    }
    const __m256i high_low = _mm256_set1_epi16(0x0110);   /* bytes 16, 1 */
    __m256i pairs = _mm256_packus_epi16(_mm256_maddubs_epi16(bytes[0], high_low), _mm256_maddubs_epi16(bytes[1], high_low));
    _mm256_storeu_si256((__m256i *)p, _mm256_permute4x64_epi64(pairs, 0xd8));
}
#endif

/* One block of len (<= 64) weights: its NF4 indices packed two per byte into p, the first
 * element in the high nibble (an odd tail leaves the last low nibble 0); returns the absmax bits.
 * A non-finite block is left alone. Called with len = 64 for whole blocks, so that the loops
 * have a constant trip count and vectorise. */
static inline uint32_t nf4_block(const float *x, int64_t len, uint8_t *p) {
    uint32_t mb = abs_max_bits(x, len);
    if (mb >= FINITE_LIMIT) return mb;
    /* as bitsandbytes: multiply by the reciprocal. A zero block gives 0 * inf = NaN, which
     * every '>' rejects: index 0, dequantised to -1 * 0 = -0. */
    float inv = 1.0f / float_of_bits(mb);
#ifdef __AVX2__
    if (len == FT_NF4_BLOCK) {
        nf4_pack_block_avx2(x, inv, p);
        return mb;
    }
#endif
    uint32_t idx[FT_NF4_BLOCK];   /* 32-bit lanes like the floats: no narrowing inside the count */
    for (int64_t j = 0; j < len; j++) idx[j] = nf4_index(x[j] * inv);
    for (int64_t j = 0; j < len / 2; j++) p[j] = (uint8_t)(idx[2 * j] << 4 | idx[2 * j + 1]);
    if (len & 1) p[len / 2] = (uint8_t)(idx[len - 1] << 4);
    return mb;
}

/* NF4 indices and the absmax of each block of 64. Returns 0, or -1 when a value is not finite
 * (the outputs are then incomplete; the caller reports the value). */
static int quantize_nf4(const float *w, int64_t n, uint8_t *packed, float *absmax) {
    int64_t nblocks = (n + FT_NF4_BLOCK - 1) / FT_NF4_BLOCK;
    int bad = 0;
    #pragma omp parallel for schedule(static) reduction(|| : bad) if (n > PAR_MIN)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t i0 = b * FT_NF4_BLOCK;   /* even: a byte never spans two blocks */
        uint32_t mb = n - i0 >= FT_NF4_BLOCK ? nf4_block(w + i0, FT_NF4_BLOCK, packed + i0 / 2)
                                             : nf4_block(w + i0, n - i0, packed + i0 / 2);
        if (mb >= FINITE_LIMIT) bad = 1;
        else absmax[b] = float_of_bits(mb);
    }
    return bad ? -1 : 0;
}

/* int8 values and a scale per row; returns 0, or -1 when a value is not finite (as above). */
static int quantize_int8(const float *w, int64_t rows, int64_t cols, int8_t *out, float *scale) {
    int bad = 0;
    #pragma omp parallel for schedule(static) reduction(|| : bad) if (rows * cols > PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        int8_t *o = out + r * cols;
        uint32_t mb = abs_max_bits(row, cols);
        if (mb >= FINITE_LIMIT) {
            bad = 1;
            continue;
        }
        float s = float_of_bits(mb) / 127.0f;
        scale[r] = s;
        if (!(s > 0.0f)) {   /* a zero row, or one whose absmax / 127 underflows to 0 */
            memset(o, 0, (size_t)cols);
            continue;
        }
        for (int64_t c = 0; c < cols; c++) {
            float v = rintf(row[c] / s);   /* a division, not a reciprocal: the rounding defined */
            if (v > 127.0f) v = 127.0f;
            if (v < -127.0f) v = -127.0f;
            o[c] = (int8_t)v;
        }
    }
    return bad ? -1 : 0;
}

/* The error for the first non-finite value of w (a quantiser found one). */
static void nonfinite_error(const float *src, int64_t n, int64_t cols) {
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(src[i])) {
            ft_set_error("quantize: the weight holds a non-finite value (%g at [%lld, %lld])", (double)src[i],
                         (long long)(i / cols), (long long)(i % cols));
            return;
        }
    }
}

ft_qweight *ft_quantize(const ft_tensor *w, ft_quant_kind kind) {
    char sw[128];
    if (!ft_quant_kind_name(kind)) {
        ft_set_error("quantize: unknown quantisation kind %d", (int)kind);
        return NULL;
    }
    if (!ft_dtype_is_float(w->dtype) || w->ndim != 2) {
        ft_set_error("quantize: expected a float weight [out, in] (float32, bfloat16, float16 or float64), got %s %s",
                     ft_dtype_name(w->dtype), ft_shape_str(w->shape, w->ndim, sw, sizeof sw));
        return NULL;
    }
    int64_t rows = w->shape[0], cols = w->shape[1], n = rows * cols;   /* fits: w exists */
    if (n == 0) {
        ft_set_error("quantize: the weight %s has no elements", ft_shape_str(w->shape, 2, sw, sizeof sw));
        return NULL;
    }
    /* a float32 row-major copy (the weight itself when it is one already); a half or float64
     * weight (a checkpoint's bfloat16 layer) is converted one layer at a time, here */
    ft_tensor *d = ft_detach(w);
    ft_tensor *wf = d && w->dtype != FT_FLOAT32 ? ft_to_dtype(d, FT_FLOAT32) : d;
    if (wf != d) ft_release(d);
    ft_tensor *wc = wf ? ft_contiguous(wf) : NULL;
    ft_release(wf);
    if (!wc) return NULL;
    const float *src = ft_f32(wc);
    ft_qweight *q = calloc(1, sizeof *q);
    if (!q) {
        ft_release(wc);
        ft_set_error("quantize: out of memory");
        return NULL;
    }
    q->refcount = 1;
    q->kind = kind;
    q->rows = rows;
    q->cols = cols;
    int nf4 = kind != FT_QUANT_INT8;
    q->nvalues = nf4 ? (n + 1) / 2 : n;
    q->nscales = nf4 ? (n + FT_NF4_BLOCK - 1) / FT_NF4_BLOCK : rows;
    q->values = byte_buffer(q->nvalues);
    q->scales = q->values ? ft_empty(&q->nscales, 1, FT_FLOAT32) : NULL;
    if (!q->scales) {
        ft_release(wc);
        ft_qweight_release(q);
        return NULL;
    }
    /* the values are checked finite in the same pass as the absmaxes */
    int rc = nf4 ? quantize_nf4(src, n, bytes_of(q->values), ft_f32(q->scales))
                 : quantize_int8(src, rows, cols, (int8_t *)bytes_of(q->values), ft_f32(q->scales));
    if (rc < 0) {
        nonfinite_error(src, n, cols);
        ft_release(wc);
        ft_qweight_release(q);
        return NULL;
    }
    ft_release(wc);
    if (kind == FT_QUANT_NF4) {
        /* the float32 absmaxes give way to one byte each plus a float32 per 256 of them */
        int64_t n2 = (q->nscales + FT_NF4_BLOCK2 - 1) / FT_NF4_BLOCK2;
        ft_tensor *codes = byte_buffer(q->nscales);
        q->absmax2 = codes ? ft_empty(&n2, 1, FT_FLOAT32) : NULL;
        if (!q->absmax2) {
            ft_release(codes);
            ft_qweight_release(q);
            return NULL;
        }
        ft_dynamic_map(q->code);
        q->offset = double_quantize(ft_f32(q->scales), q->nscales, q->code, bytes_of(codes), ft_f32(q->absmax2));
        ft_release(q->scales);
        q->scales = codes;
    }
    return q;
}

ft_qweight *ft_qweight_retain(ft_qweight *q) {
    q->refcount++;
    return q;
}

void ft_qweight_release(ft_qweight *q) {
    if (!q || --q->refcount > 0) return;
    ft_release(q->values);
    ft_release(q->scales);
    ft_release(q->absmax2);
    free(q);
}

ft_quant_kind ft_qweight_kind(const ft_qweight *q) { return q->kind; }
int64_t ft_qweight_rows(const ft_qweight *q) { return q->rows; }
int64_t ft_qweight_cols(const ft_qweight *q) { return q->cols; }
int64_t ft_qweight_nbytes(const ft_qweight *q) {
    if (q->kind == FT_QUANT_NF4)   /* codes, absmax2, offset */
        return q->nvalues + q->nscales + ft_numel(q->absmax2) * (int64_t)sizeof(float) + (int64_t)sizeof(float);
    return q->nvalues + q->nscales * (int64_t)sizeof(float);
}

/* Elements [e0, e1) of one block with absmax a from their packed indices: a table of the 16
 * values level * a, the same float32 products as one per element. */
static void nf4_dequant_span(const uint8_t *v, int64_t e0, int64_t e1, float a, float *o) {
    float lut[16];
    for (int k = 0; k < 16; k++) lut[k] = ft_nf4_levels[k] * a;
    int64_t i = e0;
    if (i & 1) *o++ = lut[v[i++ >> 1] & 15u];
    for (; i + 1 < e1; i += 2, o += 2) {
        unsigned byte = v[i >> 1];
        o[0] = lut[byte >> 4];
        o[1] = lut[byte & 15u];
    }
    if (i < e1) *o = lut[v[i >> 1] >> 4];
}

#ifdef __AVX2__
/* A whole block (32 bytes) the same way, 8 values at a time, since the compiler makes no vector
 * code of the table lookups: each byte twice, the first shifted 4 (its high nibble comes
 * first), masked to the index; the 16-entry table as two 8-entry permutes and a blend on bit 3. */
static void nf4_dequant_block_avx2(const uint8_t *p, float a, float *o) {
    const __m256i shifts = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0), low4 = _mm256_set1_epi32(15);
    const __m256 va = _mm256_set1_ps(a);
    const __m256 t0 = _mm256_mul_ps(_mm256_loadu_ps(ft_nf4_levels), va);
    const __m256 t1 = _mm256_mul_ps(_mm256_loadu_ps(ft_nf4_levels + 8), va);
    for (int j = 0; j < FT_NF4_BLOCK / 2; j += 4) {
        uint32_t w;
        memcpy(&w, p + j, sizeof w);
        __m128i bytes = _mm_cvtsi32_si128((int)w);
        __m256i idx = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(bytes, bytes));
        idx = _mm256_and_si256(_mm256_srlv_epi32(idx, shifts), low4);
        __m256 lo = _mm256_permutevar8x32_ps(t0, idx), hi = _mm256_permutevar8x32_ps(t1, idx);
        __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
        _mm256_storeu_ps(o + 2 * j, _mm256_blendv_ps(lo, hi, bit3));
    }
}
#endif

int ft_dequantize_rows(const ft_qweight *q, int64_t row0, int64_t nrows, float *dst) {
    if (row0 < 0 || nrows < 0 || row0 > q->rows || nrows > q->rows - row0) {
        ft_set_error("dequantize: rows [%lld, %lld) outside the weight's %lld rows", (long long)row0,
                     (long long)(row0 + nrows), (long long)q->rows);
        return -1;
    }
    int64_t i0 = row0 * q->cols, n = nrows * q->cols;
    const uint8_t *v = bytes_of(q->values);
    const float *s = ft_f32(q->scales);
    if (q->kind != FT_QUANT_INT8) {
        if (n == 0) return 0;
        int64_t b0 = i0 / FT_NF4_BLOCK, b1 = (i0 + n - 1) / FT_NF4_BLOCK;
        #pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t b = b0; b <= b1; b++) {
            float a = q->kind == FT_QUANT_NF4 ? nf4_block_absmax(q, b) : s[b];
            /* the part of the block in range; it may start or end inside a byte (odd cols) */
            int64_t e0 = b * FT_NF4_BLOCK > i0 ? b * FT_NF4_BLOCK : i0;
            int64_t e1 = (b + 1) * FT_NF4_BLOCK < i0 + n ? (b + 1) * FT_NF4_BLOCK : i0 + n;
#ifdef __AVX2__
            if (e1 - e0 == FT_NF4_BLOCK) {
                nf4_dequant_block_avx2(v + e0 / 2, a, dst + (e0 - i0));
                continue;
            }
#endif
            nf4_dequant_span(v, e0, e1, a, dst + (e0 - i0));
        }
    } else {
        const int8_t *c = (const int8_t *)v;
        #pragma omp parallel for schedule(static) if (n > PAR_MIN)
        for (int64_t r = 0; r < nrows; r++) {
            float sc = s[row0 + r];
            const int8_t *row = c + (row0 + r) * q->cols;
            float *out = dst + r * q->cols;
            for (int64_t j = 0; j < q->cols; j++) out[j] = (float)row[j] * sc;
        }
    }
    return 0;
}

ft_tensor *ft_dequantize(const ft_qweight *q) {
    int64_t shape[2] = {q->rows, q->cols};
    ft_tensor *out = ft_empty(shape, 2, FT_FLOAT32);
    if (out && ft_dequantize_rows(q, 0, q->rows, ft_f32(out)) < 0) {
        ft_release(out);
        return NULL;
    }
    return out;
}

ft_tensor *ft_qweight_codes(const ft_qweight *q) {
    int64_t shape[2] = {q->rows, q->cols}, n = q->rows * q->cols;
    ft_tensor *out = ft_empty(shape, 2, FT_INT64);
    if (!out) return NULL;
    int64_t *o = ft_i64(out);
    const uint8_t *v = bytes_of(q->values);
    for (int64_t i = 0; i < n; i++) {
        if (q->kind != FT_QUANT_INT8) o[i] = (i & 1) ? (v[i >> 1] & 15) : (v[i >> 1] >> 4);
        else o[i] = ((const int8_t *)v)[i];
    }
    return out;
}

ft_tensor *ft_qweight_scales(const ft_qweight *q) {
    if (q->kind != FT_QUANT_NF4) return ft_clone(q->scales);
    ft_tensor *out = ft_empty(&q->nscales, 1, FT_FLOAT32);
    if (!out) return NULL;
    for (int64_t b = 0; b < q->nscales; b++) ft_f32(out)[b] = nf4_block_absmax(q, b);
    return out;
}

ft_tensor *ft_qweight_absmax_codes(const ft_qweight *q) {
    if (q->kind != FT_QUANT_NF4) {
        ft_set_error("absmax_codes: a %s weight has no quantised absmaxes", ft_quant_kind_name(q->kind));
        return NULL;
    }
    ft_tensor *out = ft_empty(&q->nscales, 1, FT_INT64);
    if (!out) return NULL;
    const uint8_t *c = bytes_of(q->scales);
    for (int64_t b = 0; b < q->nscales; b++) ft_i64(out)[b] = c[b];
    return out;
}

ft_tensor *ft_qweight_absmax2(const ft_qweight *q) {
    if (q->kind != FT_QUANT_NF4) {
        ft_set_error("absmax2: a %s weight has no quantised absmaxes", ft_quant_kind_name(q->kind));
        return NULL;
    }
    return ft_clone(q->absmax2);
}

float ft_qweight_offset(const ft_qweight *q) { return q->kind == FT_QUANT_NF4 ? q->offset : 0.0f; }
