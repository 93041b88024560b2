/* Scaled dot-product attention, forward and backward.
 *
 * For batch b and query head h (reading key/value head h / group), with Q [T,D],
 * K [S,D], V [S,Dv] the matrices of that head:
 *
 *     A = scale * Q K^T + mask       causal: -inf where s > t + (S - T)
 *     P = softmax(A) over keys       lse[t] = log sum_s exp(A[t,s])
 *     O = P V
 *
 * and with G = dO:
 *
 *     dV = P^T G      dP = G V^T      dA = P * (dP - rowsum(G * O))
 *     dQ = scale * dA K                dK = scale * dA^T Q
 *
 * P is never kept whole: the forward saves lse [B,Hq,T] and the backward recomputes
 * P = exp(A - lse) block by block, as flash attention does. A block is BLOCK_ROWS query
 * rows against every key the block can see (with causal masking, keys up to the last
 * row's diagonal), so its softmax is exact and needs no running rescale. Blocks run on
 * OpenMP threads, each product a single-threaded sgemm. In the backward, the blocks
 * sharing a key/value head add into its dK and dV: they are grouped per kv head, and a
 * kv head is split over several private accumulators only when there are fewer kv heads
 * than threads. A row that can see no key gets P = 0: output 0, no gradient. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "fast_exp.h"

#define BLOCK_ROWS 64

static const char *OP = "scaled_dot_product_attention";

/* ---- operands ----------------------------------------------------------------- */

/* A float32 [B,H,R,C] tensor as B*H row-major matrices: element (b,h,r,c) is
 * p[b*sb + h*sh + r*ld + c]. A view whose rows are unit-stride (a transpose of
 * [B,R,H,C], say) is used in place; anything else is copied to contiguous. */
typedef struct {
    const float *p;
    int64_t sb, sh, ld;
    ft_tensor *t;   /* the tensor p points into (one reference) */
} heads;

static int heads_of(const ft_tensor *t, heads *m) {
    int64_t rows = t->shape[2], cols = t->shape[3];
    bool direct = (t->strides[3] == 1 || cols <= 1) &&
                  (rows <= 1 || (t->strides[2] >= cols && t->strides[2] <= INT_MAX));
    m->t = direct ? ft_retain((ft_tensor *)t) : ft_contiguous(t);
    if (!m->t) return -1;
    m->p = ft_f32(m->t);
    m->sb = m->t->strides[0];
    m->sh = m->t->strides[1];
    m->ld = rows <= 1 ? (cols > 1 ? cols : 1) : m->t->strides[2];
    if (m->ld < 1) m->ld = 1;
    return 0;
}

static const float *head_ptr(const heads *m, int64_t b, int64_t h, int64_t r) {
    return m->p + b * m->sb + h * m->sh + r * m->ld;
}

/* The mask broadcast over [B,Hq,T,S] without copying: element (b,h,t,s) at
 * b*sb + h*sh + t*st + s*ss (stride 0 along broadcast dims). */
typedef struct {
    const float *f;       /* additive float32 mask, or */
    const int64_t *i;     /* boolean int64 mask (nonzero = may attend), or both NULL */
    int64_t sb, sh, st, ss;
} attn_mask;

/* Reads an expanded [B,Hq,T,S] mask (or NULL) through its strides. */
static attn_mask mask_view(const ft_tensor *me) {
    attn_mask m = {0};
    if (!me) return m;
    if (me->dtype == FT_FLOAT32) m.f = ft_f32(me);
    else m.i = ft_i64(me);
    m.sb = me->strides[0], m.sh = me->strides[1], m.st = me->strides[2], m.ss = me->strides[3];
    return m;
}

typedef struct {
    int64_t b, hq, hkv, group, t, s, d, dv;
    int64_t off;          /* S - T: causal row t sees keys s <= t + off */
    bool causal;
    float scale;
} attn_geom;

/* Keys [0, n) that row t may see before the mask. */
static int64_t visible(const attn_geom *g, int64_t t) {
    if (!g->causal) return g->s;
    int64_t n = t + g->off + 1;
    return n < 0 ? 0 : n > g->s ? g->s : n;
}

/* A[r, s] = scale * (Q K^T)[t0 + r, s] + mask, for `rows` rows and keys [0, kmax); a
 * position the row may not see is -inf. A is rows x kmax, row-major. */
static void block_scores(const attn_geom *g, const attn_mask *m, const float *qb, int64_t ldq,
                         const float *kb, int64_t ldk, int64_t b, int64_t h, int64_t t0,
                         int64_t rows, int64_t kmax, float *a) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)kmax, (int)g->d,
                g->scale, qb, (int)ldq, kb, (int)ldk, 0.0f, a, (int)kmax);
    for (int64_t r = 0; r < rows; r++) {
        float *row = a + r * kmax;
        int64_t t = t0 + r, lim = visible(g, t), ss = m->ss;
        if (m->f) {
            const float *mr = m->f + b * m->sb + h * m->sh + t * m->st;
            if (ss == 1) {
                for (int64_t s = 0; s < lim; s++) row[s] += mr[s];
            } else {
                for (int64_t s = 0; s < lim; s++) row[s] += mr[s * ss];
            }
        } else if (m->i) {
            const int64_t *mr = m->i + b * m->sb + h * m->sh + t * m->st;
            for (int64_t s = 0; s < lim; s++) row[s] = mr[s * ss] ? row[s] : -INFINITY;
        }
        for (int64_t s = lim; s < kmax; s++) row[s] = -INFINITY;
    }
}

/* Row softmax in place; returns the row's logsumexp, +inf for a row that sees nothing
 * (then exp(A - lse) is 0 everywhere, in the backward too). */
static float softmax_row(float *row, int64_t n) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t s = 0; s < n; s++) mx = row[s] > mx ? row[s] : mx;
    if (mx == -INFINITY) {
        memset(row, 0, (size_t)n * sizeof(float));
        return INFINITY;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t s = 0; s < n; s++) {
        float e = exp_nonpos(row[s] - mx);
        row[s] = e;
        sum += e;
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t s = 0; s < n; s++) row[s] *= inv;
    return mx + logf(sum);
}

/* Threads for `items` independent pieces; OpenBLAS is held to one thread meanwhile
 * (restored by blas_release) unless a single thread runs, which lets it thread the
 * products itself. */
static int blas_hold(int64_t items, int *saved) {
    int nt = omp_get_max_threads();
    int threads = items < nt ? (int)(items > 0 ? items : 1) : nt;
    *saved = openblas_get_num_threads();
    if (threads > 1) openblas_set_num_threads(1);
    return threads;
}

static void blas_release(int threads, int saved) {
    if (threads > 1) openblas_set_num_threads(saved);
}

static float *alloc_floats(size_t n) {
    size_t bytes = ((n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (!p) ft_set_error("%s: out of memory for a %zu-byte work buffer", OP, bytes);
    return p;
}

/* ---- forward ------------------------------------------------------------------- */

/* out [B,Hq,T,Dv] and lse [B,Hq,T], both contiguous. */
static int attention_forward(const attn_geom *g, const heads *q, const heads *k, const heads *v,
                             const attn_mask *m, float *out, float *lse) {
    int64_t nblk = (g->t + BLOCK_ROWS - 1) / BLOCK_ROWS, nbh = g->b * g->hq;
    int64_t items = nbh * nblk;
    int saved_blas, threads = blas_hold(items, &saved_blas);
    float *ws = alloc_floats((size_t)threads * BLOCK_ROWS * (size_t)g->s);
    if (!ws) {
        blas_release(threads, saved_blas);
        return -1;
    }

    /* Last blocks first: under causal masking they see the most keys, so the dynamic
     * schedule starts with the longest pieces. */
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t it = 0; it < items; it++) {
        int64_t blk = nblk - 1 - it / nbh, bh = it % nbh;
        int64_t b = bh / g->hq, h = bh % g->hq, hk = h / g->group;
        int64_t t0 = blk * BLOCK_ROWS;
        int64_t rows = g->t - t0 < BLOCK_ROWS ? g->t - t0 : BLOCK_ROWS;
        int64_t kmax = visible(g, t0 + rows - 1);
        float *ob = out + (bh * g->t + t0) * g->dv, *lb = lse + bh * g->t + t0;
        if (kmax == 0) {
            memset(ob, 0, (size_t)(rows * g->dv) * sizeof(float));
            for (int64_t r = 0; r < rows; r++) lb[r] = INFINITY;
            continue;
        }
        float *a = ws + (size_t)omp_get_thread_num() * BLOCK_ROWS * (size_t)g->s;
        block_scores(g, m, head_ptr(q, b, h, t0), q->ld, head_ptr(k, b, hk, 0), k->ld, b, h, t0,
                     rows, kmax, a);
        for (int64_t r = 0; r < rows; r++) lb[r] = softmax_row(a + r * kmax, kmax);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)g->dv, (int)kmax,
                    1.0f, a, (int)kmax, head_ptr(v, b, hk, 0), (int)v->ld, 0.0f, ob, (int)g->dv);
    }
    blas_release(threads, saved_blas);
    free(ws);
    return 0;
}

/* ---- backward ------------------------------------------------------------------ */

/* Gradient targets of one piece of work: rows of dq for its blocks, and the dk/dv
 * accumulators [S,D] / [S,Dv] of its kv head (NULL when not wanted). */
typedef struct {
    float *dq, *dk, *dv;
} grads;

/* One block: query head h, rows [t0, t0+rows), recomputing P from lse. a and dp are
 * BLOCK_ROWS x S scratch. dq rows are written, dk/dv added to. */
static void backward_block(const attn_geom *g, const attn_mask *m, const heads *q, const heads *k,
                           const heads *v, const heads *o, const heads *go, const float *lse,
                           int64_t b, int64_t h, int64_t t0, int64_t rows, grads *gr, float *a,
                           float *dp) {
    int64_t hk = h / g->group, kmax = visible(g, t0 + rows - 1);
    float *dqb = gr->dq ? gr->dq + ((b * g->hq + h) * g->t + t0) * g->d : NULL;
    if (kmax == 0) {
        if (dqb) memset(dqb, 0, (size_t)(rows * g->d) * sizeof(float));
        return;
    }
    const float *qb = head_ptr(q, b, h, t0), *kb = head_ptr(k, b, hk, 0),
                *vb = head_ptr(v, b, hk, 0), *gb = head_ptr(go, b, h, t0);
    const float *lb = lse + (b * g->hq + h) * g->t + t0;
    block_scores(g, m, qb, q->ld, kb, k->ld, b, h, t0, rows, kmax, a);
    for (int64_t r = 0; r < rows; r++) {
        float *row = a + r * kmax, l = lb[r];
#pragma omp simd
        for (int64_t s = 0; s < kmax; s++) row[s] = exp_nonpos(row[s] - l);
    }
    /* dV[:kmax] += P^T G */
    if (gr->dv)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kmax, (int)g->dv, (int)rows, 1.0f,
                    a, (int)kmax, gb, (int)go->ld, 1.0f, gr->dv, (int)g->dv);
    if (!dqb && !gr->dk) return;
    /* dP = G V^T, then dA = P * (dP - rowsum(G * O)) in place */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)kmax, (int)g->dv, 1.0f, gb,
                (int)go->ld, vb, (int)v->ld, 0.0f, dp, (int)kmax);
    for (int64_t r = 0; r < rows; r++) {
        const float *gr_row = gb + r * go->ld, *o_row = head_ptr(o, b, h, t0 + r);
        float delta = 0.0f;
#pragma omp simd reduction(+ : delta)
        for (int64_t j = 0; j < g->dv; j++) delta += gr_row[j] * o_row[j];
        float *pr = a + r * kmax, *dr = dp + r * kmax;
#pragma omp simd
        for (int64_t s = 0; s < kmax; s++) dr[s] = pr[s] * (dr[s] - delta);
    }
    /* dQ = scale * dA K[:kmax];  dK[:kmax] += scale * dA^T Q */
    if (dqb)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)g->d, (int)kmax,
                    g->scale, dp, (int)kmax, kb, (int)k->ld, 0.0f, dqb, (int)g->d);
    if (gr->dk)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kmax, (int)g->d, (int)rows,
                    g->scale, dp, (int)kmax, qb, (int)q->ld, 1.0f, gr->dk, (int)g->d);
}

/* saved: [0] q [1] k [2] v [3] out (contiguous) [4] lse [5] mask or NULL.
 * node->i: [0] causal; node->f: [0] scale. inputs: q, k, v. */
static int attention_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    const ft_tensor *qt = nd->saved[0], *kt = nd->saved[1], *vt = nd->saved[2];
    attn_geom g = {.b = qt->shape[0], .hq = qt->shape[1], .hkv = kt->shape[1], .t = qt->shape[2],
                   .s = kt->shape[2], .d = qt->shape[3], .dv = vt->shape[3],
                   .causal = nd->i[0] != 0, .scale = (float)nd->f[0]};
    g.group = g.hq / g.hkv;
    g.off = g.s - g.t;
    bool need_q = nd->inputs[0] != NULL, need_k = nd->inputs[1] != NULL, need_v = nd->inputs[2] != NULL;
    ft_tensor *dq_t = NULL, *dk_t = NULL, *dv_t = NULL;
    heads q = {0}, k = {0}, v = {0}, o = {0}, go = {0};
    float *ws = NULL, *acc = NULL;
    int rc = -1;

    if (need_q && !(dq_t = ft_empty(qt->shape, 4, FT_FLOAT32))) goto done;
    if (need_k && !(dk_t = ft_zeros(kt->shape, 4, FT_FLOAT32))) goto done;
    if (need_v && !(dv_t = ft_zeros(vt->shape, 4, FT_FLOAT32))) goto done;
    if (ft_numel(grad_output) == 0 || g.s == 0) {   /* nothing flows */
        if (dq_t) ft_fill_(dq_t, 0.0);
        rc = 0;
        goto done;
    }
    if (heads_of(qt, &q) < 0 || heads_of(kt, &k) < 0 || heads_of(vt, &v) < 0 ||
        heads_of(nd->saved[3], &o) < 0 || heads_of(grad_output, &go) < 0)
        goto done;
    attn_mask m = mask_view(nd->saved[5]);

    /* Work: per (b, kv head) unit, items (query head of the group, block); a unit is cut
     * into `split` pieces, each adding into its own dk/dv accumulator. Piece p takes
     * items p, p + split, ...: under causal masking, cheap and dear blocks alternate. */
    int64_t nblk = (g.t + BLOCK_ROWS - 1) / BLOCK_ROWS, units = g.b * g.hkv;
    int64_t per_unit = g.group * nblk;
    int nt = omp_get_max_threads();
    int64_t split = 1;
    if (!need_k && !need_v) split = per_unit;              /* no accumulation: any split */
    else if (units < nt) split = (nt + units - 1) / units;
    if (split > per_unit) split = per_unit;
    size_t kv_len = (size_t)(g.s * (g.d + g.dv));
    if (split > 1 && (need_k || need_v) && !(acc = alloc_floats((size_t)(units * split) * kv_len)))
        goto done;
    int saved_blas, threads = blas_hold(units * split, &saved_blas);
    size_t per_thread = (size_t)2 * BLOCK_ROWS * (size_t)g.s;
    if (!(ws = alloc_floats((size_t)threads * per_thread))) {
        blas_release(threads, saved_blas);
        goto done;
    }
    float *dq = dq_t ? ft_f32(dq_t) : NULL, *dk = dk_t ? ft_f32(dk_t) : NULL,
          *dv = dv_t ? ft_f32(dv_t) : NULL;
    const float *lse = ft_f32(nd->saved[4]);

#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t p = 0; p < units * split; p++) {
        int64_t unit = p / split, piece = p % split;
        int64_t b = unit / g.hkv, hk = unit % g.hkv;
        grads gr = {dq, NULL, NULL};
        if (acc) {
            float *a = acc + (size_t)p * kv_len;
            memset(a, 0, kv_len * sizeof(float));
            gr.dk = dk ? a : NULL;
            gr.dv = dv ? a + g.s * g.d : NULL;
        } else {
            gr.dk = dk ? dk + unit * g.s * g.d : NULL;
            gr.dv = dv ? dv + unit * g.s * g.dv : NULL;
        }
        float *a = ws + (size_t)omp_get_thread_num() * per_thread, *dp = a + BLOCK_ROWS * g.s;
        for (int64_t i = piece; i < per_unit; i += split) {
            int64_t h = hk * g.group + i / nblk, t0 = (i % nblk) * BLOCK_ROWS;
            int64_t rows = g.t - t0 < BLOCK_ROWS ? g.t - t0 : BLOCK_ROWS;
            backward_block(&g, &m, &q, &k, &v, &o, &go, lse, b, h, t0, rows, &gr, a, dp);
        }
    }
    if (acc) {   /* add up the pieces of each kv head */
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t us = 0; us < units * g.s; us++) {
            int64_t unit = us / g.s, s = us % g.s;
            for (int64_t piece = 0; piece < split; piece++) {
                const float *a = acc + (size_t)(unit * split + piece) * kv_len;
                if (dk) {
                    float *dst = dk + us * g.d;
                    const float *src = a + s * g.d;
                    for (int64_t j = 0; j < g.d; j++) dst[j] += src[j];
                }
                if (dv) {
                    float *dst = dv + us * g.dv;
                    const float *src = a + g.s * g.d + s * g.dv;
                    for (int64_t j = 0; j < g.dv; j++) dst[j] += src[j];
                }
            }
        }
    }
    blas_release(threads, saved_blas);
    rc = 0;

done:
    free(ws);
    free(acc);
    ft_release(q.t);
    ft_release(k.t);
    ft_release(v.t);
    ft_release(o.t);
    ft_release(go.t);
    if (rc < 0) {
        ft_release(dq_t);
        ft_release(dk_t);
        ft_release(dv_t);
        return -1;
    }
    grad_inputs[0] = dq_t;
    grad_inputs[1] = dk_t;
    grad_inputs[2] = dv_t;
    return 0;
}

/* ---- entry ----------------------------------------------------------------------- */

/* The mask expanded (a view, no copy) to the scores' shape [B,Hq,T,S]; NULL with an
 * error unless it broadcasts. */
static ft_tensor *expand_mask(const ft_tensor *mask, const int64_t *full, const ft_tensor *q) {
    char ms[128], qs[128], fs[128];
    ft_shape_str(mask->shape, mask->ndim, ms, sizeof ms);
    if (mask->dtype != FT_FLOAT32 && mask->dtype != FT_INT64) {
        ft_set_error("%s: mask %s must be float32 (additive) or int64 (boolean), got %s", OP, ms,
                     ft_dtype_name(mask->dtype));
        return NULL;
    }
    bool ok = mask->ndim <= 4;
    for (int d = 0; ok && d < mask->ndim; d++) {
        int64_t want = full[4 - mask->ndim + d];
        ok = mask->shape[d] == want || mask->shape[d] == 1;
    }
    if (!ok) {
        ft_set_error("%s: mask %s does not broadcast to the attention scores %s of q %s", OP, ms,
                     ft_shape_str(full, 4, fs, sizeof fs), ft_shape_str(q->shape, q->ndim, qs, sizeof qs));
        return NULL;
    }
    ft_tensor *d = ft_detach(mask);
    ft_tensor *e = d ? ft_expand(d, full, 4) : NULL;
    ft_release(d);
    return e;
}

static int check_args(const ft_tensor *q, const ft_tensor *k, const ft_tensor *v) {
    char qs[128], ks[128], vs[128];
    ft_shape_str(q->shape, q->ndim, qs, sizeof qs);
    ft_shape_str(k->shape, k->ndim, ks, sizeof ks);
    ft_shape_str(v->shape, v->ndim, vs, sizeof vs);
    if (q->dtype != FT_FLOAT32 || k->dtype != FT_FLOAT32 || v->dtype != FT_FLOAT32) {
        ft_set_error("%s: q, k and v must be float32, got %s, %s and %s", OP, ft_dtype_name(q->dtype),
                     ft_dtype_name(k->dtype), ft_dtype_name(v->dtype));
        return -1;
    }
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4) {
        ft_set_error("%s: expected q [B,Hq,T,D], k [B,Hkv,S,D] and v [B,Hkv,S,Dv], got q %s, k %s "
                     "and v %s", OP, qs, ks, vs);
        return -1;
    }
    if (k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] || v->shape[1] != k->shape[1] ||
        v->shape[2] != k->shape[2] || k->shape[3] != q->shape[3]) {
        ft_set_error("%s: q %s, k %s and v %s do not match: expected q [B,Hq,T,D], k [B,Hkv,S,D] and "
                     "v [B,Hkv,S,Dv]", OP, qs, ks, vs);
        return -1;
    }
    if (k->shape[1] == 0 || q->shape[1] % k->shape[1] != 0) {
        ft_set_error("%s: q %s and k %s: %lld query heads are not a multiple of %lld key/value heads",
                     OP, qs, ks, (long long)q->shape[1], (long long)k->shape[1]);
        return -1;
    }
    if (q->shape[3] == 0) {
        ft_set_error("%s: q %s and k %s have an empty head dimension", OP, qs, ks);
        return -1;
    }
    int64_t big = (int64_t)1 << 31;
    for (int d = 1; d < 4; d++) {
        if (q->shape[d] >= big || k->shape[d] >= big || v->shape[d] >= big) {
            ft_set_error("%s: q %s, k %s, v %s: a dimension exceeds the BLAS int range", OP, qs, ks, vs);
            return -1;
        }
    }
    return 0;
}

ft_tensor *ft_scaled_dot_product_attention(const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                                           const ft_tensor *mask, bool causal, double scale) {
    if (!q || !k || !v) {
        ft_set_error("%s: q, k and v are required", OP);
        return NULL;
    }
    if (check_args(q, k, v) < 0) return NULL;
    attn_geom g = {.b = q->shape[0], .hq = q->shape[1], .hkv = k->shape[1], .t = q->shape[2],
                   .s = k->shape[2], .d = q->shape[3], .dv = v->shape[3], .causal = causal};
    g.group = g.hq / g.hkv;
    g.off = g.s - g.t;
    if (!(scale > 0.0)) scale = 1.0 / sqrt((double)g.d);
    g.scale = (float)scale;

    int64_t full[4] = {g.b, g.hq, g.t, g.s};
    if (mask && mask->requires_grad && ft_grad_enabled()) {
        ft_set_error("%s: the mask is a constant here; detach it (it requires grad)", OP);
        return NULL;
    }
    ft_tensor *me = mask ? expand_mask(mask, full, q) : NULL;
    if (mask && !me) return NULL;
    attn_mask m = mask_view(me);

    int64_t oshape[4] = {g.b, g.hq, g.t, g.dv};
    heads hq = {0}, hk = {0}, hv = {0};
    ft_tensor *out = ft_empty(oshape, 4, FT_FLOAT32), *lse = ft_empty(full, 3, FT_FLOAT32);
    if (!out || !lse) goto fail;
    if (heads_of(q, &hq) < 0 || heads_of(k, &hk) < 0 || heads_of(v, &hv) < 0) goto fail;
    if (ft_numel(out) > 0) {
        if (g.s == 0) {   /* no key at all: every row sees nothing */
            ft_fill_(out, 0.0);
            ft_fill_(lse, INFINITY);
        } else if (attention_forward(&g, &hq, &hk, &hv, &m, ft_f32(out), ft_f32(lse)) < 0) {
            goto fail;
        }
    }

    if (ft_grad_needed3(q, k, v)) {
        ft_node *nd = ft_node_new("scaled_dot_product_attention", attention_backward, out, 3, q, k, v);
        if (!nd) {
            ft_set_error("%s: out of memory recording the graph", OP);
            goto fail;
        }
        /* what the forward read (a view or its contiguous copy), detached */
        nd->saved[0] = ft_detach(hq.t);
        nd->saved[1] = ft_detach(hk.t);
        nd->saved[2] = ft_detach(hv.t);
        nd->saved[3] = ft_detach(out);
        nd->saved[4] = lse;
        lse = NULL;
        nd->saved[5] = me;   /* the expanded view: backward reads it the same way */
        me = NULL;
        nd->i[0] = causal;
        nd->f[0] = scale;
    }
    ft_release(me);
    ft_release(lse);
    ft_release(hq.t);
    ft_release(hk.t);
    ft_release(hv.t);
    return out;

fail:
    ft_release(me);
    ft_release(out);
    ft_release(lse);
    ft_release(hq.t);
    ft_release(hk.t);
    ft_release(hv.t);
    return NULL;
}
