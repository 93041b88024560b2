/* Quantised weights: NF4 (with or without QLoRA's double quantisation of the absmaxes) and int8:
 * quantisation, dequantisation, and the object holding them.
 * The packed values and the scales live in ordinary tensor storages so that they count in
 * ft_live_bytes (and in the Lua collector's accounting) like any other tensor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* bitsandbytes' dQuantizeNF4: a decision tree over the float32 midpoints between levels. */
static unsigned nf4_index(float x) {
    if (x > 0.03979014977812767f) {
        if (x > 0.3893125355243683f) {
            if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
            return x > 0.5016634166240692f ? 13 : 12;
        }
        if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
        return x > 0.1202552504837513f ? 9 : 8;
    }
    if (x > -0.33967943489551544f) {
        if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
        return x > -0.23460740596055984f ? 5 : 4;
    }
    if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
    return x > -0.8480964004993439f ? 1 : 0;
}

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

/* bitsandbytes' dQuantize<0> (csrc/kernels.cu): a 7-step binary search over the sorted code
 * from pivot 127, then the nearer of the two neighbours by the float32 midpoint; a value on a
 * midpoint keeps the searched pivot. A NaN (0 * inf, an all-zero block) fails every '>' and
 * '<': code 0. */
static unsigned dquantize(const float code[256], float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f, val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) { lower_pivot = pivot; lower = val; pivot += i; }
        else { upper_pivot = pivot; upper = val; pivot -= i; }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) {
        float midpoint = (upper + val) * 0.5f;
        return x > midpoint ? (unsigned)upper_pivot : (unsigned)pivot;
    }
    float midpoint = (lower + val) * 0.5f;
    return x < midpoint ? (unsigned)lower_pivot : (unsigned)pivot;
}

/* QLoRA's double quantisation (bitsandbytes quantize_4bit, compress_statistics=True):
 * offset = mean(absmax) (here: a sequential double sum rounded once to float32), then
 * absmax - offset in blocks of 256 by bitsandbytes' quantize_blockwise with the dynamic map:
 * a float32 absmax per block and x * (1 / absmax2) to 8-bit codes by dquantize. */
static float double_quantize(const float *absmax, int64_t n, uint8_t *codes, float *absmax2) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += absmax[i];
    float offset = (float)(sum / (double)n);
    float code[256];
    ft_dynamic_map(code);
    int64_t nblocks = (n + FT_NF4_BLOCK2 - 1) / FT_NF4_BLOCK2;
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t i0 = b * FT_NF4_BLOCK2, i1 = i0 + FT_NF4_BLOCK2 < n ? i0 + FT_NF4_BLOCK2 : n;
        float m = 0.0f;
        for (int64_t i = i0; i < i1; i++) m = fmaxf(m, fabsf(absmax[i] - offset));
        absmax2[b] = m;
        float inv = 1.0f / m;
        for (int64_t i = i0; i < i1; i++) codes[i] = (uint8_t)dquantize(code, (absmax[i] - offset) * inv);
    }
    return offset;
}

/* The absmax of NF4 block b as bitsandbytes' dequantize_4bit rebuilds it: the float32 product
 * code[c] * absmax2 (dequantize_blockwise), then + offset, rounded separately (volatile: no
 * fused multiply-add). */
static float nf4_block_absmax(const ft_qweight *q, const float code[256], int64_t b) {
    const uint8_t *c = bytes_of(q->scales);
    volatile float prod = code[c[b]] * ft_f32(q->absmax2)[b / FT_NF4_BLOCK2];
    return prod + q->offset;
}

/* A buffer of n bytes as a float32 tensor storage (rounded up to whole floats). */
static ft_tensor *byte_buffer(int64_t n) {
    int64_t nf = n / 4 + 1;
    return ft_zeros(&nf, 1, FT_FLOAT32);
}

static void quantize_nf4(const float *w, int64_t n, uint8_t *packed, float *absmax) {
    int64_t nblocks = (n + FT_NF4_BLOCK - 1) / FT_NF4_BLOCK;
    #pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t i0 = b * FT_NF4_BLOCK, i1 = i0 + FT_NF4_BLOCK < n ? i0 + FT_NF4_BLOCK : n;
        float m = 0.0f;
        for (int64_t i = i0; i < i1; i++) m = fmaxf(m, fabsf(w[i]));
        absmax[b] = m;
        /* as bitsandbytes: multiply by the reciprocal. A zero block gives 0 * inf = NaN, which
         * every '>' rejects: index 0, dequantised to -1 * 0 = -0. */
        float inv = 1.0f / m;
        for (int64_t i = i0; i < i1; i++) {
            unsigned idx = nf4_index(w[i] * inv);
            /* a block has an even length (64), so a byte never spans two blocks */
            if ((i & 1) == 0) packed[i >> 1] = (uint8_t)(idx << 4);
            else packed[i >> 1] |= (uint8_t)idx;
        }
    }
}

static void quantize_int8(const float *w, int64_t rows, int64_t cols, int8_t *out, float *scale) {
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        float m = 0.0f;
        for (int64_t c = 0; c < cols; c++) m = fmaxf(m, fabsf(row[c]));
        float s = m / 127.0f;
        scale[r] = s;
        for (int64_t c = 0; c < cols; c++) {
            float v = s > 0.0f ? rintf(row[c] / s) : 0.0f;
            if (v > 127.0f) v = 127.0f;
            if (v < -127.0f) v = -127.0f;
            out[r * cols + c] = (int8_t)v;
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
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(src[i])) {
            ft_set_error("quantize: the weight holds a non-finite value (%g at [%lld, %lld])", (double)src[i],
                         (long long)(i / cols), (long long)(i % cols));
            ft_release(wc);
            return NULL;
        }
    }
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
    if (nf4) quantize_nf4(src, n, bytes_of(q->values), ft_f32(q->scales));
    else quantize_int8(src, rows, cols, (int8_t *)bytes_of(q->values), ft_f32(q->scales));
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
        q->offset = double_quantize(ft_f32(q->scales), q->nscales, bytes_of(codes), ft_f32(q->absmax2));
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

int ft_dequantize_rows(const ft_qweight *q, int64_t row0, int64_t nrows, float *dst) {
    if (row0 < 0 || nrows < 0 || row0 > q->rows || nrows > q->rows - row0) {
        ft_set_error("dequantize: rows [%lld, %lld) outside the weight's %lld rows", (long long)row0,
                     (long long)(row0 + nrows), (long long)q->rows);
        return -1;
    }
    int64_t i0 = row0 * q->cols, n = nrows * q->cols;
    const uint8_t *v = bytes_of(q->values);
    const float *s = ft_f32(q->scales);
    float *blk = NULL;
    if (q->kind == FT_QUANT_NF4 && n > 0) {
        /* the absmaxes of the blocks in range, rebuilt once */
        int64_t b0 = i0 / FT_NF4_BLOCK, b1 = (i0 + n - 1) / FT_NF4_BLOCK;
        float code[256];
        ft_dynamic_map(code);
        blk = malloc((size_t)(b1 - b0 + 1) * sizeof(float));
        if (!blk) {
            ft_set_error("dequantize: out of memory");
            return -1;
        }
        for (int64_t b = b0; b <= b1; b++) blk[b - b0] = nf4_block_absmax(q, code, b);
        s = blk - b0;
    }
    if (q->kind != FT_QUANT_INT8) {
        #pragma omp parallel for schedule(static) if (n > 32768)
        for (int64_t k = 0; k < n; k++) {
            int64_t i = i0 + k;
            unsigned byte = v[i >> 1];
            unsigned idx = (i & 1) ? (byte & 15u) : (byte >> 4);
            dst[k] = ft_nf4_levels[idx] * s[i / FT_NF4_BLOCK];
        }
        free(blk);
    } else {
        const int8_t *c = (const int8_t *)v;
        #pragma omp parallel for schedule(static) if (n > 32768)
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
    float code[256];
    ft_dynamic_map(code);
    for (int64_t b = 0; b < q->nscales; b++) ft_f32(out)[b] = nf4_block_absmax(q, code, b);
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
