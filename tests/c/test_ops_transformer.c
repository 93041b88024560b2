/* Transformer ops (rms_norm, rope, scaled_dot_product_attention): forward against naive
 * double-precision reference loops written here, error messages, and every backward
 * against central finite differences.
 *
 * Finite differences: for output y = f(inputs) and a fixed random G, the scalar
 * L = sum(y * G) is differentiated numerically and compared with the gradient backward
 * produces from grad_output = G: element by element for small cases, along random
 * directions for larger ones. */

#include "check.h"

/* ---- helpers ------------------------------------------------------------------ */

/* Compares t (any strides) with want (n values, row-major): |got - want| <= tol (1 + |want|). */
static void check_close(const char *what, const ft_tensor *t, const double *want, int64_t n, double tol) {
    if (!t) {
        CHECK(0, "%s: NULL result (%s)", what, ft_last_error());
        return;
    }
    CHECK(ft_numel(t) == n, "%s: %lld elements, want %lld", what, (long long)ft_numel(t), (long long)n);
    if (ft_numel(t) != n) return;
    ft_tensor *c = ft_contiguous(t);
    const float *p = ft_f32(c);
    for (int64_t i = 0; i < n; i++) {
        bool ok = fabs(p[i] - want[i]) <= tol * (1.0 + fabs(want[i]));
        CHECK(ok, "%s[%lld] = %.7g, want %.7g", what, (long long)i, p[i], want[i]);
        if (!ok) break;
    }
    ft_release(c);
}

/* Element at a 4-D (or smaller) index of any tensor, in double. */
static double at4(const ft_tensor *t, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t idx[4] = {a, b, c, d};
    return ft_get(t, idx + (4 - t->ndim));
}

/* ---- finite-difference gradient checks ----------------------------------------- */

/* ---- rms_norm ------------------------------------------------------------------ */

/* y = x / sqrt(mean(x^2) + eps) * w over the last dim, x of any strides, in double. */
static double *rms_norm_ref(const ft_tensor *x, const ft_tensor *w, double eps) {
    int64_t n = ft_numel(x), d = x->shape[x->ndim - 1], r = n / d;
    ft_tensor *xc = ft_contiguous(x);
    double *out = malloc((size_t)n * sizeof(double));
    for (int64_t i = 0; i < r; i++) {
        const float *p = ft_f32(xc) + i * d;
        double sq = 0.0;
        for (int64_t j = 0; j < d; j++) sq += (double)p[j] * p[j];
        double k = 1.0 / sqrt(sq / (double)d + eps);
        for (int64_t j = 0; j < d; j++) {
            int64_t jj = j;
            out[i * d + j] = p[j] * k * (w ? ft_get(w, &jj) : 1.0);
        }
    }
    ft_release(xc);
    return out;
}

typedef struct {
    ft_tensor *x, *w;
    bool transpose;   /* normalise x^T (a non-contiguous view) */
} rms_ctx;

static ft_tensor *rms_fwd(void *p) {
    rms_ctx *c = p;
    if (!c->transpose) return ft_rms_norm(c->x, c->w, 1e-6);
    ft_tensor *xt = ft_transpose(c->x, -1, -2);
    ft_tensor *y = ft_rms_norm(xt, c->w, 1e-6);
    ft_release(xt);
    return y;
}

static void test_rms_norm(void) {
    ft_manual_seed(1);
    ft_tensor *x = randn(3, 2L, 3L, 16L), *w = randn(1, 16L);
    ft_tensor *y = ft_rms_norm(x, w, 1e-6);
    double *want = rms_norm_ref(x, w, 1e-6);
    check_close("rms_norm", y, want, 96, 1e-6);
    free(want);
    ft_release(y);
    y = ft_rms_norm(x, NULL, 1e-5);
    want = rms_norm_ref(x, NULL, 1e-5);
    check_close("rms_norm no weight", y, want, 96, 1e-6);
    free(want);
    ft_release(y);
    /* a transposed view [2,16,3]: rows are strided */
    ft_tensor *xt = ft_transpose(x, 1, 2), *w3 = randn(1, 3L);
    y = ft_rms_norm(xt, w3, 1e-6);
    want = rms_norm_ref(xt, w3, 1e-6);
    check_close("rms_norm strided", y, want, 96, 1e-6);
    free(want);
    ft_release(y);
    /* a large row: the double accumulation keeps 1e-6 */
    ft_tensor *big = randn(2, 2L, 4096L);
    for (int64_t i = 0; i < ft_numel(big); i++) ft_f32(big)[i] += 3.0f;
    y = ft_rms_norm(big, NULL, 1e-6);
    want = rms_norm_ref(big, NULL, 1e-6);
    check_close("rms_norm 4096", y, want, 8192, 1e-6);
    free(want);
    ft_release(y);
    ft_release(big);

    check_error("rms_norm weight", ft_rms_norm(x, w3, 1e-6), "rms_norm: weight [3] float32 does not match input [2,3,16]");
    int64_t one = 16;
    ft_tensor *ints = ft_zeros(&one, 1, FT_INT64);
    check_error("rms_norm dtype", ft_rms_norm(ints, NULL, 1e-6), "rms_norm: expected float32 input, got int64");
    ft_release(ints);
    ft_release(xt);
    ft_release(w3);
    ft_release(x);
    ft_release(w);

    rms_ctx c = {leaf(randn(3, 2L, 3L, 5L)), leaf(randn(1, 5L)), false};
    ft_tensor *in[2] = {c.x, c.w};
    gradcheck("rms_norm x, weight", rms_fwd, &c, in, 2, 1e-2, 2e-3, 5e-3);
    rms_ctx c2 = {c.x, NULL, false};
    gradcheck("rms_norm no weight", rms_fwd, &c2, in, 1, 1e-2, 2e-3, 5e-3);
    rms_ctx c3 = {c.x, leaf(randn(1, 3L)), true};
    ft_tensor *in3[2] = {c3.x, c3.w};
    gradcheck("rms_norm strided", rms_fwd, &c3, in3, 2, 1e-2, 2e-3, 5e-3);
    ft_set_requires_grad(c.x, false);
    gradcheck("rms_norm weight only", rms_fwd, &c, in, 2, 1e-2, 2e-3, 5e-3);
    ft_release(c.x);
    ft_release(c.w);
    ft_release(c3.w);
}

/* ---- rope ---------------------------------------------------------------------- */

/* out = x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1); x [..., T, D] of
 * any strides, cos/sin [T, D]; in double. */
static double *rope_ref(const ft_tensor *x, const ft_tensor *cs, const ft_tensor *sn) {
    int64_t n = ft_numel(x), t = x->shape[x->ndim - 2], d = x->shape[x->ndim - 1], h = d / 2;
    ft_tensor *xc = ft_contiguous(x);
    const float *xp = ft_f32(xc), *c = ft_f32(cs), *s = ft_f32(sn);
    double *out = malloc((size_t)n * sizeof(double));
    for (int64_t row = 0; row < n / d; row++) {
        int64_t pos = row % t;
        for (int64_t j = 0; j < d; j++) {
            double rot = j < h ? -(double)xp[row * d + j + h] : (double)xp[row * d + j - h];
            out[row * d + j] = xp[row * d + j] * (double)c[pos * d + j] + rot * s[pos * d + j];
        }
    }
    ft_release(xc);
    return out;
}

typedef struct {
    ft_tensor *x, *cos, *sin;
    bool transpose;   /* x holds [..., D, T]: rope of its transpose */
} rope_ctx;

static ft_tensor *rope_fwd(void *p) {
    rope_ctx *c = p;
    if (!c->transpose) return ft_rope(c->x, c->cos, c->sin);
    ft_tensor *xt = ft_transpose(c->x, -1, -2);
    ft_tensor *y = ft_rope(xt, c->cos, c->sin);
    ft_release(xt);
    return y;
}

static void test_rope(void) {
    ft_manual_seed(2);
    /* arbitrary tables (not HF's cat(freqs, freqs)), so each half of cos/sin matters */
    ft_tensor *x = randn(4, 2L, 3L, 5L, 8L), *cs = randn(2, 5L, 8L), *sn = randn(2, 5L, 8L);
    ft_tensor *y = ft_rope(x, cs, sn);
    double *want = rope_ref(x, cs, sn);
    check_close("rope", y, want, 240, 1e-6);
    ft_release(y);
    /* HF's [1,1,T,D] tables are accepted */
    int64_t s4[4] = {1, 1, 5, 8};
    ft_tensor *cs4 = ft_view(cs, s4, 4), *sn4 = ft_view(sn, s4, 4);
    y = ft_rope(x, cs4, sn4);
    check_close("rope [1,1,T,D] tables", y, want, 240, 1e-6);
    ft_release(y);
    free(want);
    /* a strided input: [2,5,3,8] seen as [2,3,5,8] */
    ft_tensor *xs = randn(4, 2L, 5L, 3L, 8L), *xv = ft_transpose(xs, 1, 2);
    y = ft_rope(xv, cs, sn);
    want = rope_ref(xv, cs, sn);
    check_close("rope strided", y, want, 240, 1e-6);
    free(want);
    ft_release(y);

    ft_tensor *odd = randn(3, 2L, 4L, 5L), *codd = randn(2, 4L, 5L);
    check_error("rope odd D", ft_rope(odd, codd, codd), "rope: the last dim of input [2,4,5] must be even, got D = 5");
    ft_tensor *c6 = randn(2, 5L, 6L);
    check_error("rope D mismatch", ft_rope(x, c6, sn), "rope: cos [5,6] does not match [T,D] of input [2,3,5,8]");
    ft_tensor *c4 = randn(2, 4L, 8L);
    check_error("rope T mismatch", ft_rope(x, cs, c4), "rope: sin [4,8] does not match [T,D] of input [2,3,5,8]");
    ft_tensor *cg = leaf(randn(2, 5L, 8L));
    check_error("rope cos requires grad", ft_rope(x, cg, sn), "rope: cos [5,8] is a table of constants");
    ft_release(odd);
    ft_release(codd);
    ft_release(c6);
    ft_release(c4);
    ft_release(cg);
    ft_release(xs);
    ft_release(xv);
    ft_release(cs4);
    ft_release(sn4);
    ft_release(x);

    rope_ctx c = {leaf(randn(3, 2L, 5L, 8L)), cs, sn, false};
    ft_tensor *in[1] = {c.x};
    gradcheck("rope", rope_fwd, &c, in, 1, 1e-2, 2e-3, 5e-3);
    rope_ctx c2 = {leaf(randn(3, 2L, 8L, 5L)), cs, sn, true};
    ft_tensor *in2[1] = {c2.x};
    gradcheck("rope strided", rope_fwd, &c2, in2, 1, 1e-2, 2e-3, 5e-3);
    ft_release(c.x);
    ft_release(c2.x);
    ft_release(cs);
    ft_release(sn);
}

/* ---- scaled dot-product attention ---------------------------------------------- */

/* softmax(scale * q k^T + mask) v for q [B,Hq,T,D], k [B,Hkv,S,D], v [B,Hkv,S,Dv] of any
 * strides, in double, row by row as written in the header: query head h reads kv head
 * h / (Hq/Hkv); causal: key s visible iff s <= t + S - T; a float mask is added, an int64
 * mask's zeros hide keys; a row that sees nothing gives zeros. lse (may be NULL) gets each
 * row's logsumexp. */
static double *attention_ref(const ft_tensor *q, const ft_tensor *k, const ft_tensor *v,
                             const ft_tensor *mask, bool causal, double scale) {
    int64_t B = q->shape[0], Hq = q->shape[1], T = q->shape[2], D = q->shape[3];
    int64_t Hkv = k->shape[1], S = k->shape[2], Dv = v->shape[3], group = Hq / Hkv;
    if (scale <= 0) scale = 1.0 / sqrt((double)D);
    int64_t full[4] = {B, Hq, T, S};
    ft_tensor *me = mask ? ft_expand(mask, full, 4) : NULL;
    double *out = calloc((size_t)(B * Hq * T * Dv), sizeof(double));
    double *sc = malloc((size_t)(S > 0 ? S : 1) * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++)
            for (int64_t t = 0; t < T; t++) {
                double mx = -INFINITY;
                for (int64_t s = 0; s < S; s++) {
                    double x = 0.0;
                    for (int64_t j = 0; j < D; j++) x += at4(q, b, h, t, j) * at4(k, b, h / group, s, j);
                    x *= scale;
                    bool ok = !causal || s <= t + S - T;
                    if (me && me->dtype == FT_FLOAT32) x += at4(me, b, h, t, s);
                    if (me && me->dtype == FT_INT64) ok = ok && at4(me, b, h, t, s) != 0;
                    sc[s] = ok ? x : -INFINITY;
                    if (sc[s] > mx) mx = sc[s];
                }
                if (mx == -INFINITY) continue;   /* sees nothing: zeros */
                double sum = 0.0;
                for (int64_t s = 0; s < S; s++) sum += (sc[s] = exp(sc[s] - mx));
                double *o = out + ((b * Hq + h) * T + t) * Dv;
                for (int64_t s = 0; s < S; s++)
                    for (int64_t j = 0; j < Dv; j++) o[j] += sc[s] / sum * at4(v, b, h / group, s, j);
            }
    free(sc);
    ft_release(me);
    return out;
}

typedef struct {
    ft_tensor *q, *k, *v, *mask;
    bool causal;
    double scale;
    bool permuted;   /* q, k, v hold [B,T,H,D]: attention of their [B,H,T,D] views */
} attn_ctx;

static ft_tensor *attn_fwd(void *p) {
    attn_ctx *c = p;
    if (!c->permuted) return ft_scaled_dot_product_attention(c->q, c->k, c->v, c->mask, c->causal, c->scale);
    ft_tensor *q = ft_transpose(c->q, 1, 2), *k = ft_transpose(c->k, 1, 2), *v = ft_transpose(c->v, 1, 2);
    ft_tensor *y = ft_scaled_dot_product_attention(q, k, v, c->mask, c->causal, c->scale);
    ft_release(q);
    ft_release(k);
    ft_release(v);
    return y;
}

/* Forward of one configuration against the reference. */
static void attn_case(const char *what, attn_ctx *c) {
    ft_tensor *y = attn_fwd(c);
    if (!y) {
        CHECK(0, "%s: %s", what, ft_last_error());
        return;
    }
    ft_tensor *q = c->q, *k = c->k, *v = c->v;
    if (c->permuted) q = ft_transpose(c->q, 1, 2), k = ft_transpose(c->k, 1, 2), v = ft_transpose(c->v, 1, 2);
    double *want = attention_ref(q, k, v, c->mask, c->causal, c->scale);
    int64_t n = q->shape[0] * q->shape[1] * q->shape[2] * v->shape[3];
    CHECK(y->ndim == 4 && y->shape[0] == q->shape[0] && y->shape[1] == q->shape[1] &&
          y->shape[2] == q->shape[2] && y->shape[3] == v->shape[3], "%s: output shape", what);
    check_close(what, y, want, n, 2e-6);
    free(want);
    ft_release(y);
    if (c->permuted) {
        ft_release(q);
        ft_release(k);
        ft_release(v);
    }
}

/* An int64 0/1 mask of the given shape, about a quarter zeros. */
static ft_tensor *bool_mask(int ndim, const int64_t *shape) {
    ft_tensor *u = ft_rand(shape, ndim), *m = ft_zeros(shape, ndim, FT_INT64);
    for (int64_t i = 0; i < ft_numel(u); i++) ft_i64(m)[i] = ft_f32(u)[i] > 0.25f;
    ft_release(u);
    return m;
}

static void test_attention_forward(void) {
    ft_manual_seed(3);
    ft_tensor *q = randn(4, 2L, 4L, 5L, 8L), *k = randn(4, 2L, 2L, 7L, 8L), *v = randn(4, 2L, 2L, 7L, 6L);
    attn_ctx c = {q, k, v, NULL, false, 0.0, false};
    attn_case("sdpa gqa", &c);
    c.causal = true;
    attn_case("sdpa gqa causal, kv cache offset 2", &c);
    c.scale = 0.3;
    int64_t ms[2] = {5, 7};
    c.mask = bool_mask(2, ms);
    attn_case("sdpa causal + bool mask [T,S], scale 0.3", &c);
    ft_release(c.mask);
    /* float mask [B,1,T,S] with -inf holes, kv heads = 1 */
    ft_tensor *k1 = randn(4, 2L, 1L, 7L, 8L), *v1 = randn(4, 2L, 1L, 7L, 3L);
    int64_t fs[4] = {2, 1, 5, 7};
    ft_tensor *fm = ft_randn(fs, 4);
    for (int64_t i = 0; i < ft_numel(fm); i += 3) ft_f32(fm)[i] = -INFINITY;
    attn_ctx c1 = {q, k1, v1, fm, false, 0.0, false};
    attn_case("sdpa float mask [B,1,T,S], one kv head", &c1);
    c1.causal = true;
    attn_case("sdpa float mask + causal", &c1);
    /* a key-padding mask [B,1,1,S] as int64 */
    int64_t ps[4] = {2, 1, 1, 7};
    c1.mask = bool_mask(4, ps);
    attn_case("sdpa bool padding mask [B,1,1,S]", &c1);
    ft_release(c1.mask);

    /* more queries than keys with causal: the first T - S rows see nothing -> zeros */
    ft_tensor *qt = randn(4, 1L, 2L, 9L, 4L), *ks = randn(4, 1L, 2L, 4L, 4L), *vs = randn(4, 1L, 2L, 4L, 4L);
    attn_ctx c2 = {qt, ks, vs, NULL, true, 0.0, false};
    attn_case("sdpa causal T > S", &c2);
    ft_tensor *y = attn_fwd(&c2);
    bool zeros = true;
    for (int64_t i = 0; i < 5 * 4; i++) zeros = zeros && ft_f32(y)[i] == 0.0f;
    CHECK(zeros, "sdpa causal T > S: rows that see no key must be exactly 0");
    ft_release(y);
    /* a bool mask hiding a whole row */
    int64_t rs[2] = {9, 4};
    ft_tensor *rm = ft_full(rs, 2, FT_INT64, 1.0);
    for (int64_t s = 0; s < 4; s++) ft_i64(rm)[2 * 4 + s] = 0;
    attn_ctx c3 = {qt, ks, vs, rm, false, 0.0, false};
    attn_case("sdpa fully masked row", &c3);
    ft_release(rm);

    /* several row blocks, different thread counts (the split of work changes) */
    ft_tensor *qb = randn(4, 1L, 3L, 150L, 16L), *kb = randn(4, 1L, 1L, 150L, 16L), *vb = randn(4, 1L, 1L, 150L, 16L);
    for (int nt = 1; nt <= 3; nt++) {
        ft_set_num_threads(nt);
        attn_ctx cb = {qb, kb, vb, NULL, true, 0.0, false};
        attn_case("sdpa 150 rows causal", &cb);
        cb.causal = false;
        attn_case("sdpa 150 rows", &cb);
    }
    ft_set_num_threads(2);

    /* q, k, v as transposed views of [B,T,H,D] (the layout after a linear layer) */
    ft_tensor *qp = randn(4, 2L, 6L, 4L, 8L), *kp = randn(4, 2L, 6L, 2L, 8L), *vp = randn(4, 2L, 6L, 2L, 8L);
    attn_ctx cp = {qp, kp, vp, NULL, true, 0.0, true};
    attn_case("sdpa strided q, k, v", &cp);

    /* errors name the shapes */
    ft_tensor *k3 = randn(4, 2L, 3L, 8L, 16L), *q4 = randn(4, 2L, 4L, 8L, 16L);
    check_error("sdpa heads", ft_scaled_dot_product_attention(q4, k3, k3, NULL, false, 0.0),
                "scaled_dot_product_attention: q [2,4,8,16] and k [2,3,8,16]: 4 query heads are not a "
                "multiple of 3 key/value heads");
    ft_tensor *k5 = randn(4, 2L, 2L, 8L, 15L);
    check_error("sdpa head dim", ft_scaled_dot_product_attention(q4, k5, k5, NULL, false, 0.0),
                "scaled_dot_product_attention: q [2,4,8,16], k [2,2,8,15] and v [2,2,8,15] do not match");
    ft_tensor *q3 = randn(3, 4L, 8L, 16L);
    check_error("sdpa ndim", ft_scaled_dot_product_attention(q3, q3, q3, NULL, false, 0.0),
                "expected q [B,Hq,T,D], k [B,Hkv,S,D] and v [B,Hkv,S,Dv], got q [4,8,16]");
    int64_t bad[2] = {3, 7};
    ft_tensor *bm = ft_zeros(bad, 2, FT_FLOAT32);
    check_error("sdpa mask shape", ft_scaled_dot_product_attention(q, k, v, bm, false, 0.0),
                "scaled_dot_product_attention: mask [3,7] does not broadcast to the attention scores "
                "[2,4,5,7] of q [2,4,5,8]");
    ft_tensor *gm = leaf(ft_zeros(ms, 2, FT_FLOAT32));
    check_error("sdpa mask grad", ft_scaled_dot_product_attention(q, k, v, gm, false, 0.0),
                "the mask is a constant here");
    ft_release(gm);
    ft_release(bm);
    ft_release(q3);
    ft_release(k5);
    ft_release(k3);
    ft_release(q4);
    ft_release(qp);
    ft_release(kp);
    ft_release(vp);
    ft_release(qb);
    ft_release(kb);
    ft_release(vb);
    ft_release(qt);
    ft_release(ks);
    ft_release(vs);
    ft_release(fm);
    ft_release(k1);
    ft_release(v1);
    ft_release(q);
    ft_release(k);
    ft_release(v);
}

static void test_attention_grad(void) {
    ft_manual_seed(4);
    /* GQA, causal with a KV-cache offset, a float mask with a -inf hole */
    attn_ctx c = {leaf(randn(4, 1L, 4L, 3L, 4L)), leaf(randn(4, 1L, 2L, 5L, 4L)),
                  leaf(randn(4, 1L, 2L, 5L, 3L)), NULL, true, 0.0, false};
    int64_t ms[2] = {3, 5};
    c.mask = ft_randn(ms, 2);
    ft_f32(c.mask)[6] = -INFINITY;
    ft_tensor *in[3] = {c.q, c.k, c.v};
    gradcheck("sdpa grad gqa causal mask", attn_fwd, &c, in, 3, 1e-2, 2e-3, 5e-3);
    ft_release(c.mask);
    /* more queries than keys, a bool mask hiding one row entirely: no NaN, zero gradient */
    attn_ctx c2 = {leaf(randn(4, 2L, 2L, 6L, 3L)), leaf(randn(4, 2L, 1L, 4L, 3L)),
                   leaf(randn(4, 2L, 1L, 4L, 2L)), NULL, true, 0.7, false};
    int64_t bs[4] = {2, 2, 6, 4};
    c2.mask = ft_full(bs, 4, FT_INT64, 1.0);
    for (int64_t s = 0; s < 4; s++) ft_i64(c2.mask)[(1 * 6 + 4) * 4 + s] = 0;   /* b 0, h 1, t 4 */
    ft_i64(c2.mask)[(3 * 6 + 5) * 4 + 1] = 0;
    ft_tensor *in2[3] = {c2.q, c2.k, c2.v};
    gradcheck("sdpa grad T > S, masked row", attn_fwd, &c2, in2, 3, 1e-2, 2e-3, 5e-3);
    ft_release(c2.mask);
    /* strided q, k, v */
    attn_ctx c3 = {leaf(randn(4, 1L, 4L, 2L, 3L)), leaf(randn(4, 1L, 5L, 2L, 3L)),
                   leaf(randn(4, 1L, 5L, 2L, 3L)), NULL, false, 0.0, true};
    ft_tensor *in3[3] = {c3.q, c3.k, c3.v};
    gradcheck("sdpa grad strided", attn_fwd, &c3, in3, 3, 1e-2, 2e-3, 5e-3);
    /* only some inputs require grad */
    ft_set_requires_grad(c3.k, false);
    ft_set_requires_grad(c3.v, false);
    gradcheck("sdpa grad q only", attn_fwd, &c3, in3, 3, 1e-2, 2e-3, 5e-3);
    ft_set_requires_grad(c3.q, false);
    ft_set_requires_grad(c3.v, true);
    gradcheck("sdpa grad v only", attn_fwd, &c3, in3, 3, 1e-2, 2e-3, 5e-3);
    ft_set_requires_grad(c3.v, false);
    ft_set_requires_grad(c3.k, true);
    gradcheck("sdpa grad k only", attn_fwd, &c3, in3, 3, 1e-2, 2e-3, 5e-3);

    /* several row blocks and one kv head shared by 3 query heads: with more threads than
     * kv heads the backward splits each kv head's dk/dv over private accumulators */
    attn_ctx c4 = {leaf(randn(4, 1L, 3L, 130L, 8L)), leaf(randn(4, 1L, 1L, 130L, 8L)),
                   leaf(randn(4, 1L, 1L, 130L, 8L)), NULL, true, 0.0, false};
    ft_tensor *in4[3] = {c4.q, c4.k, c4.v};
    for (int nt = 1; nt <= 3; nt++) {
        ft_set_num_threads(nt);
        gradcheck_dir("sdpa grad 130 rows gqa causal", attn_fwd, &c4, in4, 3, 1e-2, 2e-3);
        c4.causal = false;
        gradcheck_dir("sdpa grad 130 rows gqa", attn_fwd, &c4, in4, 3, 1e-2, 2e-3);
        c4.causal = true;
    }
    ft_set_num_threads(2);
    /* element-wise on a few: the gradient of k must add up over the query heads */
    attn_ctx c5 = {leaf(randn(4, 2L, 6L, 2L, 2L)), leaf(randn(4, 2L, 2L, 3L, 2L)),
                   leaf(randn(4, 2L, 2L, 3L, 2L)), NULL, false, 0.0, false};
    ft_tensor *in5[3] = {c5.q, c5.k, c5.v};
    for (int nt = 1; nt <= 3; nt += 2) {
        ft_set_num_threads(nt);
        gradcheck("sdpa grad group 3", attn_fwd, &c5, in5, 3, 1e-2, 2e-3, 5e-3);
    }
    ft_set_num_threads(2);

    ft_tensor *all[] = {c.q, c.k, c.v, c2.q, c2.k, c2.v, c3.q, c3.k, c3.v, c4.q, c4.k, c4.v, c5.q, c5.k, c5.v};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ft_release(all[i]);
}

/* No history when grad mode is off or nothing requires grad. */
static void test_no_grad(void) {
    ft_tensor *q = leaf(randn(4, 1L, 2L, 3L, 4L)), *k = randn(4, 1L, 2L, 3L, 4L);
    bool prev = ft_set_grad_enabled(false);
    ft_tensor *y = ft_scaled_dot_product_attention(q, k, k, NULL, true, 0.0);
    CHECK(y && !y->requires_grad && !y->grad_fn, "sdpa under no_grad records a graph");
    ft_release(y);
    ft_set_grad_enabled(prev);
    y = ft_scaled_dot_product_attention(k, k, k, NULL, true, 0.0);
    CHECK(y && !y->requires_grad, "sdpa of constants requires grad");
    ft_release(y);
    ft_release(q);
    ft_release(k);
}

static const check_test tests[] = {
    CHECK_TEST(test_rms_norm),          CHECK_TEST(test_rope), CHECK_TEST(test_attention_forward),
    CHECK_TEST(test_attention_grad),    CHECK_TEST(test_no_grad),
};

int main(void) {
    ft_set_num_threads(2);
    return check_run("test_ops_transformer", tests, sizeof tests / sizeof tests[0]);
}
