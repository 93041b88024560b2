/* Basic differentiable ops (elementwise, reductions, matrix products, shape ops):
 * forward values on small hand-computable cases, and every backward against central
 * finite differences. Prints one line per check; exits 1 on any failure. */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ---- tensor helpers ------------------------------------------------------------ */

static ft_tensor *tensor(const float *data, const int64_t *shape, int ndim) {
    return ft_from_data(data, shape, ndim, FT_FLOAT32);
}

static ft_tensor *itensor(const int64_t *data, const int64_t *shape, int ndim) {
    return ft_from_data(data, shape, ndim, FT_INT64);
}

/* Values whose magnitude is at least `gap`, for functions with a kink at 0. */
static ft_tensor *away_from_zero(const int64_t *shape, int ndim, double gap, double hi) {
    ft_tensor *t = uniform(shape, ndim, gap, hi);
    float *p = ft_f32(t);
    for (int64_t i = 0; i < ft_numel(t); i++)
        if (lcg() < 0.5) p[i] = -p[i];
    return t;
}

/* A non-contiguous leaf: the transpose of a fresh [cols, rows] tensor. */
static ft_tensor *transposed_leaf(int64_t rows, int64_t cols, double lo, double hi) {
    int64_t s[2] = {cols, rows};
    ft_tensor *base = uniform(s, 2, lo, hi);
    ft_tensor *t = ft_transpose(base, 0, 1);
    ft_release(base);
    return leaf(t);
}

static bool shape_is(const ft_tensor *t, int ndim, const int64_t *shape) {
    if (!t || t->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return false;
    return true;
}

/* max |t - expected| over all elements (any strides), or INFINITY on a shape mismatch. */
static double max_diff(const ft_tensor *t, const double *expected, int64_t n) {
    if (!t || ft_numel(t) != n) return INFINITY;
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(at(t, i) - expected[i]);
        if (!(d <= m)) m = d;   /* NaN counts as a failure */
    }
    return m;
}

static void check_values(const char *name, ft_tensor *t, const double *expected, int64_t n, double tol) {
    double d = max_diff(t, expected, n);
    CHECK(d <= tol, "%s: values (max error %.3g)%s%s", name, d, t ? "" : " error: ",
          t ? "" : ft_last_error());
}

static void release_all(ft_tensor **ts, int n) {
    for (int i = 0; i < n; i++) ft_release(ts[i]);
}

/* ---- op wrappers for gradcheck ------------------------------------------------- */

typedef struct {
    int dims[4], ndims;
    bool keepdim, flag;
    double p0, p1;
    int64_t size;
} params;

static ft_tensor *f_add(ft_tensor **in, const void *c) { (void)c; return ft_add(in[0], in[1]); }
static ft_tensor *f_sub(ft_tensor **in, const void *c) { (void)c; return ft_sub(in[0], in[1]); }
static ft_tensor *f_mul(ft_tensor **in, const void *c) { (void)c; return ft_mul(in[0], in[1]); }
static ft_tensor *f_div(ft_tensor **in, const void *c) { (void)c; return ft_div(in[0], in[1]); }
static ft_tensor *f_pow(ft_tensor **in, const void *c) { (void)c; return ft_pow(in[0], in[1]); }
static ft_tensor *f_silu_mul(ft_tensor **in, const void *c) { (void)c; return ft_silu_mul(in[0], in[1]); }
static ft_tensor *f_add_s(ft_tensor **in, const void *c) { return ft_add_scalar(in[0], ((const params *)c)->p0); }
static ft_tensor *f_mul_s(ft_tensor **in, const void *c) { return ft_mul_scalar(in[0], ((const params *)c)->p0); }
static ft_tensor *f_pow_s(ft_tensor **in, const void *c) { return ft_pow_scalar(in[0], ((const params *)c)->p0); }
static ft_tensor *f_rsub_s(ft_tensor **in, const void *c) { return ft_rsub_scalar(in[0], ((const params *)c)->p0); }
static ft_tensor *f_rdiv_s(ft_tensor **in, const void *c) { return ft_rdiv_scalar(in[0], ((const params *)c)->p0); }
static ft_tensor *f_neg(ft_tensor **in, const void *c) { (void)c; return ft_neg(in[0]); }
static ft_tensor *f_exp(ft_tensor **in, const void *c) { (void)c; return ft_exp(in[0]); }
static ft_tensor *f_log(ft_tensor **in, const void *c) { (void)c; return ft_log(in[0]); }
static ft_tensor *f_sqrt(ft_tensor **in, const void *c) { (void)c; return ft_sqrt(in[0]); }
static ft_tensor *f_abs(ft_tensor **in, const void *c) { (void)c; return ft_abs(in[0]); }
static ft_tensor *f_tanh(ft_tensor **in, const void *c) { (void)c; return ft_tanh(in[0]); }
static ft_tensor *f_sigmoid(ft_tensor **in, const void *c) { (void)c; return ft_sigmoid(in[0]); }
static ft_tensor *f_relu(ft_tensor **in, const void *c) { (void)c; return ft_relu(in[0]); }
static ft_tensor *f_gelu(ft_tensor **in, const void *c) { return ft_gelu(in[0], ((const params *)c)->flag); }
static ft_tensor *f_silu(ft_tensor **in, const void *c) { (void)c; return ft_silu(in[0]); }
static ft_tensor *f_clamp(ft_tensor **in, const void *c) {
    const params *p = c;
    return ft_clamp(in[0], p->p0, p->p1);
}
static ft_tensor *f_masked_fill(ft_tensor **in, const void *c) { return ft_masked_fill(in[0], in[1], ((const params *)c)->p0); }
static ft_tensor *f_where(ft_tensor **in, const void *c) { (void)c; return ft_where(in[2], in[0], in[1]); }

static ft_tensor *f_sum(ft_tensor **in, const void *c) {
    const params *p = c;
    return ft_sum(in[0], p->dims, p->ndims, p->keepdim);
}
static ft_tensor *f_mean(ft_tensor **in, const void *c) {
    const params *p = c;
    return ft_mean(in[0], p->dims, p->ndims, p->keepdim);
}
static ft_tensor *f_max_dim(ft_tensor **in, const void *c) {
    const params *p = c;
    ft_tensor *v, *i;
    if (ft_max_dim(in[0], p->dims[0], p->keepdim, &v, &i) < 0) return NULL;
    ft_release(i);
    return v;
}
static ft_tensor *f_max_all(ft_tensor **in, const void *c) { (void)c; return ft_max_all(in[0]); }
static ft_tensor *f_softmax(ft_tensor **in, const void *c) { return ft_softmax(in[0], ((const params *)c)->dims[0]); }
static ft_tensor *f_log_softmax(ft_tensor **in, const void *c) { return ft_log_softmax(in[0], ((const params *)c)->dims[0]); }

static ft_tensor *f_matmul(ft_tensor **in, const void *c) { (void)c; return ft_matmul(in[0], in[1]); }
static ft_tensor *f_linear(ft_tensor **in, const void *c) {
    const params *p = c;
    return ft_linear(in[0], in[1], p->flag ? in[2] : NULL);
}

static ft_tensor *f_cat(ft_tensor **in, const void *c) {
    const params *p = c;
    return ft_cat(in, (int)p->size, p->dims[0]);
}
static ft_tensor *f_stack(ft_tensor **in, const void *c) {
    const params *p = c;
    return ft_stack(in, (int)p->size, p->dims[0]);
}
/* Splits in[0] and concatenates the pieces in reverse order: every piece's narrow
 * backward lands in its own slice. */
static ft_tensor *f_split_reverse(ft_tensor **in, const void *c) {
    const params *p = c;
    ft_tensor **pieces;
    int n;
    if (ft_split(in[0], p->size, p->dims[0], &pieces, &n) < 0) return NULL;
    ft_tensor *rev[16];
    for (int k = 0; k < n; k++) rev[k] = pieces[n - 1 - k];
    ft_tensor *out = ft_cat(rev, n, p->dims[0]);
    release_all(pieces, n);
    free(pieces);
    return out;
}
static ft_tensor *f_index_select(ft_tensor **in, const void *c) { return ft_index_select(in[0], ((const params *)c)->dims[0], in[1]); }
static ft_tensor *f_gather(ft_tensor **in, const void *c) { return ft_gather(in[0], ((const params *)c)->dims[0], in[1]); }

/* ---- forward value tests ------------------------------------------------------- */

static void test_elementwise_values(void) {
    float a[] = {1, 2, 3, 4, 5, 6}, b[] = {10, 20, 30};
    int64_t s23[] = {2, 3}, s3[] = {3};
    ft_tensor *ta = tensor(a, s23, 2), *tb = tensor(b, s3, 1);

    ft_tensor *r = ft_add(ta, tb);
    check_values("add [2,3]+[3]", r, (double[]){11, 22, 33, 14, 25, 36}, 6, 0);
    CHECK(shape_is(r, 2, s23), "add [2,3]+[3]: shape [2,3]");
    ft_release(r);
    r = ft_sub(tb, ta);
    check_values("sub [3]-[2,3]", r, (double[]){9, 18, 27, 6, 15, 24}, 6, 0);
    ft_release(r);

    /* a transposed (non-contiguous) operand: a^T is [3,2] = {{1,4},{2,5},{3,6}} */
    ft_tensor *at_ = ft_transpose(ta, 0, 1);
    float c[] = {1, 1, 2, 2, 3, 3};
    int64_t s32[] = {3, 2};
    ft_tensor *tc = tensor(c, s32, 2);
    r = ft_mul(at_, tc);
    check_values("mul transposed [3,2]", r, (double[]){1, 4, 4, 10, 9, 18}, 6, 0);
    ft_release(r);
    /* column broadcast [2,1] against [2,3] */
    float col[] = {2, 4};
    int64_t s21[] = {2, 1};
    ft_tensor *tcol = tensor(col, s21, 2);
    r = ft_div(ta, tcol);
    check_values("div [2,3]/[2,1]", r, (double[]){0.5, 1, 1.5, 1, 1.25, 1.5}, 6, 1e-7);
    ft_release(r);
    r = ft_pow(ta, tcol);
    check_values("pow [2,3]^[2,1]", r, (double[]){1, 4, 9, 256, 625, 1296}, 6, 1e-3);
    ft_release(r);

    r = ft_rsub_scalar(ta, 1);
    check_values("rsub_scalar", r, (double[]){0, -1, -2, -3, -4, -5}, 6, 0);
    ft_release(r);
    r = ft_rdiv_scalar(ta, 6);
    check_values("rdiv_scalar", r, (double[]){6, 3, 2, 1.5, 1.2, 1}, 6, 1e-6);
    ft_release(r);
    r = ft_pow_scalar(ta, 2);
    check_values("pow_scalar 2", r, (double[]){1, 4, 9, 16, 25, 36}, 6, 0);
    ft_release(r);
    r = ft_pow_scalar(ta, 0.5);
    check_values("pow_scalar 0.5", r, (double[]){1, sqrt(2), sqrt(3), 2, sqrt(5), sqrt(6)}, 6, 1e-6);
    ft_release(r);

    float u[] = {-2, -0.5, 0, 0.5, 2, 3};
    ft_tensor *tu = tensor(u, s23, 2);
    double e[6];
    r = ft_relu(tu);
    check_values("relu", r, (double[]){0, 0, 0, 0.5, 2, 3}, 6, 0);
    ft_release(r);
    r = ft_abs(tu);
    check_values("abs", r, (double[]){2, 0.5, 0, 0.5, 2, 3}, 6, 0);
    ft_release(r);
    r = ft_clamp(tu, -1, 1);
    check_values("clamp [-1,1]", r, (double[]){-1, -0.5, 0, 0.5, 1, 1}, 6, 0);
    ft_release(r);
    r = ft_clamp(tu, 0, INFINITY);
    check_values("clamp [0,inf]", r, (double[]){0, 0, 0, 0.5, 2, 3}, 6, 0);
    ft_release(r);
    for (int i = 0; i < 6; i++) e[i] = 0.5 * u[i] * (1 + erf(u[i] / sqrt(2.0)));
    r = ft_gelu(tu, false);
    check_values("gelu exact", r, e, 6, 1e-6);
    ft_release(r);
    for (int i = 0; i < 6; i++)
        e[i] = 0.5 * u[i] * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (u[i] + 0.044715 * pow(u[i], 3))));
    r = ft_gelu(tu, true);
    check_values("gelu tanh", r, e, 6, 1e-6);
    ft_release(r);
    for (int i = 0; i < 6; i++) e[i] = u[i] / (1 + exp(-u[i]));
    r = ft_silu(tu);
    check_values("silu", r, e, 6, 1e-6);
    ft_release(r);
    for (int i = 0; i < 6; i++) e[i] = 1 / (1 + exp(-u[i]));
    r = ft_sigmoid(tu);
    check_values("sigmoid", r, e, 6, 1e-6);
    ft_release(r);
    /* silu(u) * [1, 2, 3] broadcast along u's rows */
    {
        float up[] = {1, 2, 3};
        int64_t s3[] = {3};
        ft_tensor *tup = tensor(up, s3, 1);
        for (int i = 0; i < 6; i++) e[i] = u[i] / (1 + exp(-u[i])) * up[i % 3];
        r = ft_silu_mul(tu, tup);
        check_values("silu_mul [2,3]*[3]", r, e, 6, 1e-6);
        ft_release(r);
        ft_release(tup);
    }

    /* comparisons give float 0/1 */
    float v[] = {3, 2, 1};
    ft_tensor *tv = tensor(v, s3, 1);
    r = ft_compare(ta, tv, FT_GT);
    check_values("compare gt [2,3]>[3]", r, (double[]){0, 0, 1, 1, 1, 1}, 6, 0);
    CHECK(r && r->dtype == FT_FLOAT32, "compare: float32 result");
    ft_release(r);
    r = ft_compare(ta, tv, FT_EQ);
    check_values("compare eq", r, (double[]){0, 1, 0, 0, 0, 0}, 6, 0);
    ft_release(r);

    /* masked_fill: int64 mask broadcast over rows */
    int64_t m[] = {1, 0, 1};
    ft_tensor *tm = itensor(m, s3, 1);
    r = ft_masked_fill(ta, tm, -1);
    check_values("masked_fill int64 mask [3]", r, (double[]){-1, 2, -1, -1, 5, -1}, 6, 0);
    ft_release(r);
    /* where with cond [2,1], a [2,3], b scalar-like [1] */
    float cond[] = {1, 0}, zero[] = {0};
    int64_t s1[] = {1};
    ft_tensor *tcond = tensor(cond, s21, 2), *tz = tensor(zero, s1, 1);
    r = ft_where(tcond, ta, tz);
    check_values("where [2,1],[2,3],[1]", r, (double[]){1, 2, 3, 0, 0, 0}, 6, 0);
    ft_release(r);

    /* int64 arithmetic stays int64 */
    int64_t ia[] = {1, 2, 3}, ib[] = {10, 20, 30};
    ft_tensor *tia = itensor(ia, s3, 1), *tib = itensor(ib, s3, 1);
    r = ft_add(tia, tib);
    CHECK(r && r->dtype == FT_INT64, "add int64: int64 result");
    check_values("add int64", r, (double[]){11, 22, 33}, 3, 0);
    ft_release(r);
    r = ft_mul(tia, tib);
    check_values("mul int64", r, (double[]){10, 40, 90}, 3, 0);
    ft_release(r);
    r = ft_neg(tia);
    CHECK(r && r->dtype == FT_INT64, "neg int64: int64 result");
    ft_release(r);
    r = ft_where(tcond, tia, tib);
    CHECK(r && r->dtype == FT_INT64, "where int64: int64 result");
    check_values("where int64", r, (double[]){1, 2, 3, 10, 20, 30}, 6, 0);
    ft_release(r);
    r = ft_masked_fill(tia, tm, 7);
    check_values("masked_fill int64", r, (double[]){7, 2, 7}, 3, 0);
    ft_release(r);
    r = ft_compare(tia, tib, FT_LT);
    check_values("compare int64 lt", r, (double[]){1, 1, 1}, 3, 0);
    ft_release(r);
    r = ft_add(ta, tia);   /* float32 + int64 promotes */
    CHECK(r && r->dtype == FT_FLOAT32, "add float32+int64: float32 result");
    ft_release(r);

    /* errors */
    int64_t s43[] = {4, 3}, s5[] = {5};
    ft_tensor *x43 = ft_zeros(s43, 2, FT_FLOAT32), *x5 = ft_zeros(s5, 1, FT_FLOAT32);
    check_error("add broadcast mismatch", ft_add(x43, x5), "add: shapes [4,3] and [5] cannot broadcast");
    check_error("exp int64", ft_exp(tia), "exp: expected a float32 tensor, got int64");
    check_error("masked_fill growing", ft_masked_fill(tb, ta, 0), "masked_fill:");
    ft_release(x43);
    ft_release(x5);

    ft_tensor *all[] = {ta, tb, at_, tc, tcol, tu, tv, tm, tcond, tz, tia, tib};
    release_all(all, 12);
}

static void test_large_values(void) {
    /* big enough for the parallel paths; checked against plain loops */
    int64_t s[] = {300, 257}, srow[] = {257}, st[] = {257, 300};
    ft_tensor *a = uniform(s, 2, -1, 1), *row = uniform(srow, 1, -1, 1), *bt = uniform(st, 2, -1, 1);
    ft_tensor *b = ft_transpose(bt, 0, 1);   /* [300,257] with strides (1,300) */
    int64_t n = 300 * 257;
    double *e = malloc(sizeof(double) * (size_t)n);
    ft_tensor *r = ft_add(a, row);
    for (int64_t i = 0; i < n; i++) e[i] = (double)ft_f32(a)[i] + ft_f32(row)[i % 257];
    check_values("add large [300,257]+[257]", r, e, n, 1e-6);
    ft_release(r);
    r = ft_mul(a, b);
    for (int64_t i = 0; i < n; i++) e[i] = (double)ft_f32(a)[i] * at(b, i);
    check_values("mul large with transposed operand", r, e, n, 1e-6);
    ft_release(r);
    r = ft_tanh(b);
    for (int64_t i = 0; i < n; i++) e[i] = tanh(at(b, i));
    check_values("tanh large transposed", r, e, n, 1e-6);
    ft_release(r);
    int dim0 = 0;
    r = ft_sum(b, &dim0, 1, false);
    for (int64_t j = 0; j < 257; j++) {
        e[j] = 0;
        for (int64_t i = 0; i < 300; i++) e[j] += at(b, i * 257 + j);
    }
    check_values("sum large over dim 0 of a transposed view", r, e, 257, 1e-4);
    ft_release(r);
    r = ft_sum(a, NULL, 0, false);
    double tot = 0;
    for (int64_t i = 0; i < n; i++) tot += ft_f32(a)[i];
    check_values("sum large over everything", r, &tot, 1, 1e-3);
    ft_release(r);
    free(e);
    ft_release(a);
    ft_release(row);
    ft_release(bt);
    ft_release(b);
}

static void test_reduce_values(void) {
    float a[] = {1, 5, 3, 5, 2, 0, -1, 7};
    int64_t s24[] = {2, 4}, s2[] = {2}, s21[] = {2, 1}, s4[] = {4};
    ft_tensor *ta = tensor(a, s24, 2);
    int d1 = 1, d0 = 0, dm1 = -1;
    ft_tensor *r = ft_sum(ta, &d1, 1, false);
    check_values("sum dim 1", r, (double[]){14, 8}, 2, 0);
    CHECK(shape_is(r, 1, s2), "sum dim 1: shape [2]");
    ft_release(r);
    r = ft_sum(ta, &dm1, 1, true);
    CHECK(shape_is(r, 2, s21), "sum dim -1 keepdim: shape [2,1]");
    ft_release(r);
    r = ft_mean(ta, &d0, 1, false);
    check_values("mean dim 0", r, (double[]){1.5, 2.5, 1, 6}, 4, 1e-7);
    CHECK(shape_is(r, 1, s4), "mean dim 0: shape [4]");
    ft_release(r);
    r = ft_mean(ta, NULL, 0, false);
    check_values("mean all", r, (double[]){22.0 / 8}, 1, 1e-6);
    CHECK(r && r->ndim == 0, "mean all: 0-dim");
    ft_release(r);
    int both[] = {0, 1};
    r = ft_sum(ta, both, 2, true);
    check_values("sum dims {0,1} keepdim", r, (double[]){22}, 1, 0);
    CHECK(r && r->ndim == 2, "sum dims {0,1} keepdim: 2 dims");
    ft_release(r);
    int dup[] = {1, -1};
    check_error("sum repeated dim", ft_sum(ta, dup, 2, false), "appears multiple times");

    /* max: first occurrence of ties (5 at 1 and 3) */
    ft_tensor *v, *ix;
    CHECK(ft_max_dim(ta, 1, false, &v, &ix) == 0, "max dim 1: runs");
    check_values("max dim 1 values", v, (double[]){5, 7}, 2, 0);
    check_values("max dim 1 indices (first of ties, 0-based)", ix, (double[]){1, 3}, 2, 0);
    CHECK(ix && ix->dtype == FT_INT64, "max indices: int64");
    ft_release(v);
    ft_release(ix);
    CHECK(ft_max_dim(ta, 0, true, &v, &ix) == 0, "max dim 0 keepdim: runs");
    check_values("max dim 0 values", v, (double[]){2, 5, 3, 7}, 4, 0);
    check_values("max dim 0 indices", ix, (double[]){1, 0, 0, 1}, 4, 0);
    ft_release(v);
    ft_release(ix);
    r = ft_argmax(ta, -1, false);
    check_values("argmax dim -1", r, (double[]){1, 3}, 2, 0);
    ft_release(r);
    r = ft_max_all(ta);
    check_values("max_all", r, (double[]){7}, 1, 0);
    ft_release(r);

    /* softmax of [1,2,3] and its transpose direction */
    float s[] = {1, 2, 3, 1, 1, 1};
    int64_t s23[] = {2, 3};
    ft_tensor *ts = tensor(s, s23, 2);
    double z = exp(1) + exp(2) + exp(3);
    r = ft_softmax(ts, 1);
    check_values("softmax dim 1", r, (double[]){exp(1) / z, exp(2) / z, exp(3) / z, 1. / 3, 1. / 3, 1. / 3}, 6, 1e-6);
    ft_release(r);
    r = ft_log_softmax(ts, 1);
    check_values("log_softmax dim 1",
                 r, (double[]){1 - log(z), 2 - log(z), 3 - log(z), -log(3), -log(3), -log(3)}, 6, 1e-5);
    ft_release(r);
    double e0 = 1 / (1 + exp(0)), e1 = 1 / (1 + exp(-1)), e2 = 1 / (1 + exp(-2));
    r = ft_softmax(ts, 0);   /* columns {1,1},{2,1},{3,1} */
    check_values("softmax dim 0", r, (double[]){e0, e1, e2, 1 - e0, 1 - e1, 1 - e2}, 6, 1e-6);
    ft_release(r);
    float big[] = {1000, 1001, -INFINITY};
    int64_t s3[] = {3};
    ft_tensor *tbig = tensor(big, s3, 1);
    double zb = 1 + exp(1);
    r = ft_softmax(tbig, 0);
    check_values("softmax large logits and -inf", r, (double[]){1 / zb, exp(1) / zb, 0}, 3, 1e-6);
    ft_release(r);
    ft_release(tbig);

    /* int64 sum and max */
    int64_t ia[] = {4, -2, 9};
    ft_tensor *tia = itensor(ia, s3, 1);
    r = ft_sum(tia, NULL, 0, false);
    CHECK(r && r->dtype == FT_INT64, "sum int64: int64 result");
    check_values("sum int64", r, (double[]){11}, 1, 0);
    ft_release(r);
    r = ft_argmax(tia, 0, false);
    check_values("argmax int64", r, (double[]){2}, 1, 0);
    ft_release(r);
    check_error("softmax int64", ft_softmax(tia, 0), "softmax: expected a float32 tensor, got int64");
    ft_release(tia);
    ft_release(ts);
    ft_release(ta);
}

static void test_matmul_values(void) {
    float a[] = {1, 2, 3, 4, 5, 6}, b[] = {1, 0, 0, 1, 1, 1};
    int64_t s23[] = {2, 3}, s32[] = {3, 2}, s3[] = {3}, s2[] = {2};
    ft_tensor *ta = tensor(a, s23, 2), *tb = tensor(b, s32, 2);
    ft_tensor *r = ft_matmul(ta, tb);
    check_values("matmul [2,3]@[3,2]", r, (double[]){4, 5, 10, 11}, 4, 0);
    ft_release(r);
    /* transposed operands: (b^T)[2,3] @ (a^T)[3,2] */
    ft_tensor *bt = ft_transpose(tb, 0, 1), *at_ = ft_transpose(ta, 0, 1);
    r = ft_matmul(bt, at_);
    check_values("matmul transposed operands", r, (double[]){4, 10, 5, 11}, 4, 0);
    ft_release(r);
    float v[] = {1, 1, 1};
    ft_tensor *tv = tensor(v, s3, 1);
    r = ft_matmul(ta, tv);
    check_values("matmul [2,3]@[3]", r, (double[]){6, 15}, 2, 0);
    CHECK(shape_is(r, 1, s2), "matmul [2,3]@[3]: shape [2]");
    ft_release(r);
    r = ft_matmul(tv, tb);
    check_values("matmul [3]@[3,2]", r, (double[]){2, 2}, 2, 0);
    ft_release(r);
    r = ft_matmul(tv, tv);
    check_values("matmul [3]@[3]", r, (double[]){3}, 1, 0);
    CHECK(r && r->ndim == 0, "matmul [3]@[3]: 0-dim");
    ft_release(r);
    /* batch broadcasting: [2,1,2,3] @ [3,3,2] -> [2,3,2,2] */
    int64_t sa4[] = {2, 1, 2, 3}, sb3[] = {3, 3, 2}, so[] = {2, 3, 2, 2};
    ft_tensor *a4 = uniform(sa4, 4, -1, 1), *b3 = uniform(sb3, 3, -1, 1);
    r = ft_matmul(a4, b3);
    CHECK(shape_is(r, 4, so), "matmul [2,1,2,3]@[3,3,2]: shape [2,3,2,2]");
    double e[24];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int p = 0; p < 2; p++)
                for (int q = 0; q < 2; q++) {
                    double acc = 0;
                    for (int k = 0; k < 3; k++)
                        acc += (double)ft_f32(a4)[(i * 2 + p) * 3 + k] * ft_f32(b3)[(j * 3 + k) * 2 + q];
                    e[((i * 3 + j) * 2 + p) * 2 + q] = acc;
                }
    check_values("matmul batch broadcast values", r, e, 24, 1e-5);
    ft_release(r);
    /* linear: x [2,3] @ W^T + b with W [2,3] = b^T, bias {10, 20} */
    float bias[] = {10, 20};
    ft_tensor *tbias = tensor(bias, s2, 1);
    r = ft_linear(ta, bt, tbias);
    check_values("linear", r, (double[]){14, 25, 20, 31}, 4, 0);
    ft_release(r);
    check_error("matmul shape mismatch", ft_matmul(ta, ta), "matmul: shapes [2,3] and [2,3] cannot be multiplied");
    check_error("linear shape mismatch", ft_linear(ta, tb, NULL), "linear: input [2,3] and weight [3,2]");
    ft_tensor *all[] = {ta, tb, bt, at_, tv, a4, b3, tbias};
    release_all(all, 8);
}

static void test_shape_values(void) {
    float a[] = {1, 2, 3, 4}, b[] = {5, 6};
    int64_t s22[] = {2, 2}, s21[] = {2, 1}, s23[] = {2, 3}, s12[] = {1, 2};
    ft_tensor *ta = tensor(a, s22, 2), *tb = tensor(b, s21, 2), *tb2 = tensor(b, s12, 2);
    ft_tensor *in[] = {ta, tb};
    ft_tensor *r = ft_cat(in, 2, 1);
    check_values("cat dim 1", r, (double[]){1, 2, 5, 3, 4, 6}, 6, 0);
    CHECK(shape_is(r, 2, s23), "cat dim 1: shape [2,3]");
    ft_release(r);
    ft_tensor *in0[] = {ta, tb2};
    r = ft_cat(in0, 2, 0);
    check_values("cat dim 0", r, (double[]){1, 2, 3, 4, 5, 6}, 6, 0);
    ft_release(r);
    check_error("cat mismatch", ft_cat(in, 2, 0), "cat: sizes must match except in dim 0");
    ft_tensor *in2[] = {ta, ta};
    r = ft_stack(in2, 2, 2);
    int64_t s222[] = {2, 2, 2};
    CHECK(shape_is(r, 3, s222), "stack dim 2: shape [2,2,2]");
    check_values("stack dim 2", r, (double[]){1, 1, 2, 2, 3, 3, 4, 4}, 8, 0);
    ft_release(r);

    int64_t s7[] = {7};
    ft_tensor *t7 = ft_arange(0, 7, 1, FT_FLOAT32);
    ft_tensor **pieces;
    int n;
    CHECK(ft_split(t7, 3, 0, &pieces, &n) == 0 && n == 3, "split 7 by 3: 3 pieces");
    if (n == 3) {
        CHECK(pieces[2]->shape[0] == 1, "split: last piece has 1 element");
        check_values("split piece 1", pieces[1], (double[]){3, 4, 5}, 3, 0);
        release_all(pieces, n);
        free(pieces);
    }
    (void)s7;

    int64_t idx[] = {2, 0, 2};
    int64_t s3[] = {3};
    ft_tensor *ti = itensor(idx, s3, 1);
    float m[] = {1, 2, 3, 4, 5, 6};
    ft_tensor *tm = tensor(m, s23, 2);
    r = ft_index_select(tm, 1, ti);
    check_values("index_select dim 1", r, (double[]){3, 1, 3, 6, 4, 6}, 6, 0);
    ft_release(r);
    int64_t bad[] = {0, 3};
    int64_t s2[] = {2};
    ft_tensor *tbad = itensor(bad, s2, 1);
    check_error("index_select out of bounds", ft_index_select(tm, 1, tbad),
                "index 3 is out of bounds for dim 1 with size 3");
    int64_t g[] = {2, 2, 0, 1};
    ft_tensor *tg = itensor(g, s22, 2);
    r = ft_gather(tm, 1, tg);
    check_values("gather dim 1", r, (double[]){3, 3, 4, 5}, 4, 0);
    ft_release(r);
    int64_t gbad[] = {0, -1, 0, 0};
    ft_tensor *tgbad = itensor(gbad, s22, 2);
    check_error("gather negative index", ft_gather(tm, 1, tgbad), "index -1 is out of bounds for dim 1 with size 3");
    /* int64 data through the shape ops */
    int64_t iv[] = {7, 8, 9};
    ft_tensor *tiv = itensor(iv, s3, 1);
    ft_tensor *iin[] = {tiv, tiv};
    r = ft_cat(iin, 2, 0);
    CHECK(r && r->dtype == FT_INT64, "cat int64: int64 result");
    check_values("cat int64", r, (double[]){7, 8, 9, 7, 8, 9}, 6, 0);
    ft_release(r);
    r = ft_index_select(tiv, 0, ti);
    check_values("index_select int64", r, (double[]){9, 7, 9}, 3, 0);
    ft_release(r);
    ft_tensor *all[] = {ta, tb, tb2, t7, ti, tm, tbad, tg, tgbad, tiv};
    release_all(all, 10);
}

/* ---- gradient tests ------------------------------------------------------------ */

static void test_elementwise_grads(void) {
    int64_t s23[] = {2, 3}, s3[] = {3}, s213[] = {2, 1, 3}, s41[] = {4, 1}, s12[] = {1, 2}, s32[] = {3, 2};
    params none = {0};
    {
        ft_tensor *in[] = {leaf(uniform(s23, 2, -1, 1)), leaf(uniform(s3, 1, -1, 1))};
        gradcheck_ops("add [2,3]+[3] (broadcast)", f_add, in, 2, &none);
        release_all(in, 2);
    }
    {
        ft_tensor *in[] = {leaf(uniform(s213, 3, -1, 1)), leaf(uniform(s41, 2, -1, 1))};
        gradcheck_ops("sub [2,1,3]-[4,1] (broadcast both)", f_sub, in, 2, &none);
        release_all(in, 2);
    }
    {
        ft_tensor *in[] = {leaf(uniform(s23, 2, -1, 1)), leaf(uniform(s23, 2, -1, 1))};
        gradcheck_ops("add [2,3]+[2,3]", f_add, in, 2, &none);
        gradcheck_ops("sub [2,3]-[2,3]", f_sub, in, 2, &none);
        gradcheck_ops("mul [2,3]*[2,3]", f_mul, in, 2, &none);
        release_all(in, 2);
    }
    {
        ft_tensor *in[] = {transposed_leaf(3, 2, -1, 1), leaf(uniform(s12, 2, -1, 1))};
        gradcheck_ops("mul transposed [3,2]*[1,2]", f_mul, in, 2, &none);
        release_all(in, 2);
    }
    {
        ft_tensor *in[] = {leaf(uniform(s23, 2, -3, 3)), leaf(uniform(s3, 1, -2, 2))};
        gradcheck_ops("silu_mul [2,3]*[3] (broadcast)", f_silu_mul, in, 2, &none);
        release_all(in, 2);
    }
    {
        ft_tensor *in[] = {transposed_leaf(3, 2, -3, 3), leaf(uniform(s32, 2, -2, 2))};
        gradcheck_ops("silu_mul transposed gate [3,2]*[3,2]", f_silu_mul, in, 2, &none);
        release_all(in, 2);
    }
    {
        ft_tensor *in[] = {leaf(uniform(s23, 2, -1, 1)), leaf(uniform(s3, 1, 0.5, 2))};
        gradcheck_ops("div [2,3]/[3]", f_div, in, 2, &none);
        release_all(in, 2);
    }
    {
        ft_tensor *in[] = {leaf(uniform(s23, 2, 0.5, 2)), leaf(uniform(s23, 2, -1.5, 1.5))};
        gradcheck_ops("pow [2,3]^[2,3]", f_pow, in, 2, &none);
        release_all(in, 2);
    }
    {
        /* pow at a == 0: the gradient wrt b is 0 where b >= 0 (PyTorch), not NaN */
        float a[] = {0, 2}, b[] = {2, 3};
        int64_t s2[] = {2};
        ft_tensor *ta = leaf(tensor(a, s2, 1)), *tb = leaf(tensor(b, s2, 1));
        ft_tensor *r = ft_pow(ta, tb);
        ft_tensor *ones = ft_full(s2, 1, FT_FLOAT32, 1);
        ft_backward(r, ones, false);
        check_values("pow grad b at a=0", tb->grad, (double[]){0, 8 * log(2.0)}, 2, 1e-5);
        check_values("pow grad a at a=0", ta->grad, (double[]){0, 12}, 2, 1e-5);
        ft_tensor *all[] = {ta, tb, r, ones};
        release_all(all, 4);
    }
    struct {
        const char *name;
        op_fn f;
        params p;
        double lo, hi, gap;   /* gap > 0: values at least gap away from 0 */
        bool transposed;
    } unary[] = {
        {"add_scalar", f_add_s, {.p0 = 2.5}, -1, 1, 0, false},
        {"mul_scalar (transposed input)", f_mul_s, {.p0 = -3}, -1, 1, 0, true},
        {"rsub_scalar", f_rsub_s, {.p0 = 1}, -1, 1, 0, false},
        {"rdiv_scalar", f_rdiv_s, {.p0 = 2}, 0.5, 2, 0, false},
        {"pow_scalar 2", f_pow_s, {.p0 = 2}, -1, 1, 0, false},
        {"pow_scalar 1.5", f_pow_s, {.p0 = 1.5}, 0.5, 2, 0, false},
        {"pow_scalar -1", f_pow_s, {.p0 = -1}, 0.5, 2, 0, false},
        {"neg", f_neg, {.p0 = 0}, -1, 1, 0, false},
        {"exp", f_exp, {.p0 = 0}, -1, 1, 0, false},
        {"log", f_log, {.p0 = 0}, 0.5, 2, 0, false},
        {"sqrt", f_sqrt, {.p0 = 0}, 0.5, 2, 0, false},
        {"abs", f_abs, {.p0 = 0}, 0, 2, 0.1, false},
        {"tanh (transposed input)", f_tanh, {.p0 = 0}, -2, 2, 0, true},
        {"sigmoid", f_sigmoid, {.p0 = 0}, -3, 3, 0, false},
        {"relu", f_relu, {.p0 = 0}, 0, 2, 0.1, false},
        {"gelu exact", f_gelu, {.flag = false}, -3, 3, 0, false},
        {"gelu tanh", f_gelu, {.flag = true}, -3, 3, 0, false},
        {"silu", f_silu, {.p0 = 0}, -3, 3, 0, false},
        {"clamp [-0.5,0.5]", f_clamp, {.p0 = -0.5, .p1 = 0.5}, 0, 1, 0.05, false},
    };
    for (size_t k = 0; k < sizeof unary / sizeof unary[0]; k++) {
        ft_tensor *x;
        if (unary[k].transposed) x = transposed_leaf(3, 4, unary[k].lo, unary[k].hi);
        else if (unary[k].gap > 0) x = leaf(away_from_zero(s23, 2, unary[k].gap, unary[k].hi));
        else x = leaf(uniform(s23, 2, unary[k].lo, unary[k].hi));
        if (unary[k].f == f_clamp) {   /* keep points off the bounds */
            float *p = ft_f32(x);
            for (int i = 0; i < 6; i++)
                if (fabsf(fabsf(p[i]) - 0.5f) < 0.05f) p[i] *= 0.8f;
        }
        ft_tensor *in[] = {x};
        char name[96];
        snprintf(name, sizeof name, "%s", unary[k].name);
        gradcheck_ops(name, unary[k].f, in, 1, &unary[k].p);
        ft_release(x);
    }
    {
        /* relu at exactly 0 and clamp at its bounds: gradient 0 below, passed at bounds */
        float u[] = {-1, 0, 0.5, 1, -0.5, 2};
        ft_tensor *x = leaf(tensor(u, s23, 2));
        ft_tensor *ones = ft_full(s23, 2, FT_FLOAT32, 1);
        ft_tensor *r = ft_relu(x);
        ft_backward(r, ones, false);
        check_values("relu grad (0 at x <= 0)", x->grad, (double[]){0, 0, 1, 1, 0, 1}, 6, 0);
        ft_release(r);
        ft_release(x->grad);
        x->grad = NULL;
        r = ft_clamp(x, -0.5, 1);
        ft_backward(r, ones, false);
        check_values("clamp grad (passed where lo <= x <= hi)", x->grad, (double[]){0, 1, 1, 1, 1, 0}, 6, 0);
        ft_release(r);
        ft_release(x);
        ft_release(ones);
    }
    {
        int64_t mask[] = {0, 1, 0};
        params p = {.p0 = -2};
        ft_tensor *in[] = {leaf(uniform(s23, 2, -1, 1)), itensor(mask, s3, 1)};
        gradcheck_ops("masked_fill mask [3] over [2,3]", f_masked_fill, in, 2, &p);
        release_all(in, 2);
    }
    {
        float cond[] = {1, 0};
        int64_t s21[] = {2, 1};
        ft_tensor *in[] = {leaf(uniform(s23, 2, -1, 1)), leaf(uniform(s3, 1, -1, 1)), tensor(cond, s21, 2)};
        gradcheck_ops("where [2,1] ? [2,3] : [3]", f_where, in, 3, &none);
        release_all(in, 3);
    }
}

static void test_reduce_grads(void) {
    int64_t s234[] = {2, 3, 4}, s35[] = {3, 5};
    {
        params p = {.dims = {1}, .ndims = 1};
        ft_tensor *in[] = {leaf(uniform(s234, 3, -1, 1))};
        gradcheck_ops("sum dim 1", f_sum, in, 1, &p);
        p = (params){.dims = {0, 2}, .ndims = 2, .keepdim = true};
        gradcheck_ops("sum dims {0,2} keepdim", f_sum, in, 1, &p);
        p = (params){.dims = {-1}, .ndims = 1};
        gradcheck_ops("mean dim -1", f_mean, in, 1, &p);
        p = (params){0};
        gradcheck_ops("mean all", f_mean, in, 1, &p);
        release_all(in, 1);
    }
    {
        ft_tensor *in[] = {transposed_leaf(4, 3, -1, 1)};
        params p = {0};
        gradcheck_ops("sum all of a transposed input", f_sum, in, 1, &p);
        p = (params){.dims = {0}, .ndims = 1};
        gradcheck_ops("sum dim 0 of a transposed input", f_sum, in, 1, &p);
        release_all(in, 1);
    }
    {
        /* distinct values (no ties): a permutation of 0..59 scaled */
        ft_tensor *x = ft_empty(s234, 3, FT_FLOAT32);
        float *px = ft_f32(x);
        for (int i = 0; i < 24; i++) px[i] = (float)((i * 7) % 24) * 0.1f;
        leaf(x);
        ft_tensor *in[] = {x};
        params p = {.dims = {1}};
        gradcheck_ops("max dim 1", f_max_dim, in, 1, &p);
        p = (params){.dims = {-1}, .keepdim = true};
        gradcheck_ops("max dim -1 keepdim", f_max_dim, in, 1, &p);
        gradcheck_ops("max_all", f_max_all, in, 1, &p);
        ft_release(x);
    }
    {
        ft_tensor *in[] = {leaf(uniform(s35, 2, -2, 2))};
        params p = {.dims = {-1}};
        gradcheck_ops("softmax dim -1", f_softmax, in, 1, &p);
        gradcheck_ops("log_softmax dim -1", f_log_softmax, in, 1, &p);
        p.dims[0] = 0;
        gradcheck_ops("softmax dim 0", f_softmax, in, 1, &p);
        gradcheck_ops("log_softmax dim 0", f_log_softmax, in, 1, &p);
        release_all(in, 1);
    }
    {
        ft_tensor *in[] = {leaf(uniform(s234, 3, -2, 2))};
        params p = {.dims = {1}};
        gradcheck_ops("softmax middle dim of [2,3,4]", f_softmax, in, 1, &p);
        gradcheck_ops("log_softmax middle dim of [2,3,4]", f_log_softmax, in, 1, &p);
        release_all(in, 1);
    }
}

static void test_matmul_grads(void) {
    params none = {0};
    {
        int64_t sa[] = {3, 4}, sb[] = {4, 2};
        ft_tensor *in[] = {leaf(uniform(sa, 2, -1, 1)), leaf(uniform(sb, 2, -1, 1))};
        gradcheck_ops("matmul [3,4]@[4,2]", f_matmul, in, 2, &none);
        release_all(in, 2);
    }
    {
        ft_tensor *in[] = {transposed_leaf(3, 4, -1, 1), transposed_leaf(4, 2, -1, 1)};
        gradcheck_ops("matmul transposed [3,4]@[4,2]", f_matmul, in, 2, &none);
        release_all(in, 2);
    }
    {
        int64_t s4[] = {4}, s42[] = {4, 2}, s34[] = {3, 4};
        ft_tensor *in[] = {leaf(uniform(s4, 1, -1, 1)), leaf(uniform(s42, 2, -1, 1))};
        gradcheck_ops("matmul [4]@[4,2]", f_matmul, in, 2, &none);
        release_all(in, 2);
        ft_tensor *in2[] = {leaf(uniform(s34, 2, -1, 1)), leaf(uniform(s4, 1, -1, 1))};
        gradcheck_ops("matmul [3,4]@[4]", f_matmul, in2, 2, &none);
        release_all(in2, 2);
        ft_tensor *in3[] = {leaf(uniform(s4, 1, -1, 1)), leaf(uniform(s4, 1, -1, 1))};
        gradcheck_ops("matmul [4]@[4]", f_matmul, in3, 2, &none);
        release_all(in3, 2);
    }
    {
        int64_t sa[] = {2, 1, 3, 4}, sb[] = {3, 4, 2};
        ft_tensor *in[] = {leaf(uniform(sa, 4, -1, 1)), leaf(uniform(sb, 3, -1, 1))};
        gradcheck_ops("matmul batch broadcast [2,1,3,4]@[3,4,2]", f_matmul, in, 2, &none);
        release_all(in, 2);
    }
    {
        int64_t sa[] = {2, 3, 4}, sb[] = {4, 5};
        ft_tensor *in[] = {leaf(uniform(sa, 3, -1, 1)), leaf(uniform(sb, 2, -1, 1))};
        gradcheck_ops("matmul [2,3,4]@[4,5]", f_matmul, in, 2, &none);
        release_all(in, 2);
        int64_t sv[] = {4}, sbb[] = {2, 4, 3};
        ft_tensor *in2[] = {leaf(uniform(sv, 1, -1, 1)), leaf(uniform(sbb, 3, -1, 1))};
        gradcheck_ops("matmul [4]@[2,4,3]", f_matmul, in2, 2, &none);
        release_all(in2, 2);
    }
    {
        int64_t sx[] = {2, 3, 4}, sw[] = {5, 4}, sb[] = {5};
        params p = {.flag = true};
        ft_tensor *in[] = {leaf(uniform(sx, 3, -1, 1)), leaf(uniform(sw, 2, -1, 1)), leaf(uniform(sb, 1, -1, 1))};
        gradcheck_ops("linear [2,3,4] w[5,4] b[5]", f_linear, in, 3, &p);
        release_all(in, 3);
        p.flag = false;
        ft_tensor *in2[] = {transposed_leaf(3, 4, -1, 1), transposed_leaf(5, 4, -1, 1)};
        gradcheck_ops("linear transposed x and w, no bias", f_linear, in2, 2, &p);
        release_all(in2, 2);
    }
}

static void test_shape_grads(void) {
    int64_t s23[] = {2, 3}, s21[] = {2, 1}, s24[] = {2, 4};
    {
        params p = {.dims = {1}, .size = 3};
        ft_tensor *in[] = {leaf(uniform(s23, 2, -1, 1)), leaf(uniform(s21, 2, -1, 1)), transposed_leaf(2, 4, -1, 1)};
        gradcheck_ops("cat 3 tensors dim 1", f_cat, in, 3, &p);
        release_all(in, 3);
        (void)s24;
    }
    {
        /* more inputs than a node holds; one of them needs no gradient */
        params p = {.dims = {0}, .size = 7};
        ft_tensor *in[7];
        for (int k = 0; k < 7; k++) {
            int64_t s[] = {1 + k % 2, 3};
            in[k] = uniform(s, 2, -1, 1);
            if (k != 4) leaf(in[k]);
        }
        gradcheck_ops("cat 7 tensors dim 0", f_cat, in, 7, &p);
        release_all(in, 7);
    }
    {
        params p = {.dims = {1}, .size = 3};
        ft_tensor *in[] = {leaf(uniform(s23, 2, -1, 1)), leaf(uniform(s23, 2, -1, 1)), transposed_leaf(2, 3, -1, 1)};
        gradcheck_ops("stack 3 tensors dim 1", f_stack, in, 3, &p);
        release_all(in, 3);
    }
    {
        int64_t s52[] = {5, 2};
        params p = {.dims = {0}, .size = 2};
        ft_tensor *in[] = {leaf(uniform(s52, 2, -1, 1))};
        gradcheck_ops("split [5,2] by 2 on dim 0", f_split_reverse, in, 1, &p);
        release_all(in, 1);
    }
    {
        int64_t idx[] = {2, 0, 2, 3}, s4[] = {4}, s43[] = {4, 3};
        params p = {.dims = {0}};
        ft_tensor *in[] = {leaf(uniform(s43, 2, -1, 1)), itensor(idx, s4, 1)};
        gradcheck_ops("index_select dim 0 (repeated index)", f_index_select, in, 2, &p);
        release_all(in, 2);
        int64_t idx1[] = {1, 1, 0};
        int64_t s3[] = {3};
        p.dims[0] = 1;
        ft_tensor *in2[] = {transposed_leaf(4, 3, -1, 1), itensor(idx1, s3, 1)};
        gradcheck_ops("index_select dim 1 of a transposed input", f_index_select, in2, 2, &p);
        release_all(in2, 2);
    }
    {
        int64_t idx[] = {0, 2, 2, 1, 1, 1}, s32[] = {3, 2}, s34[] = {3, 4};
        params p = {.dims = {1}};
        ft_tensor *in[] = {leaf(uniform(s34, 2, -1, 1)), itensor(idx, s32, 2)};
        gradcheck_ops("gather dim 1 (repeated index)", f_gather, in, 2, &p);
        release_all(in, 2);
        int64_t idx0[] = {2, 0, 1, 2}, s14[] = {1, 4};
        p.dims[0] = 0;
        ft_tensor *in2[] = {leaf(uniform(s34, 2, -1, 1)), itensor(idx0, s14, 2)};
        gradcheck_ops("gather dim 0", f_gather, in2, 2, &p);
        release_all(in2, 2);
    }
}

/* Freezing: an input that does not require grad gets none and records no graph. */
static void test_no_grad_paths(void) {
    int64_t s23[] = {2, 3};
    ft_tensor *a = uniform(s23, 2, -1, 1), *b = leaf(uniform(s23, 2, -1, 1));
    ft_tensor *r = ft_mul(a, a);
    CHECK(r && r->grad_fn == NULL && !r->requires_grad, "mul of frozen inputs records nothing");
    ft_release(r);
    bool prev = ft_set_grad_enabled(false);
    ft_tensor *bt = ft_transpose(b, 0, 1);
    r = ft_matmul(b, bt);
    CHECK(r && r->grad_fn == NULL, "no_grad mode records nothing");
    ft_set_grad_enabled(prev);
    ft_release(r);
    ft_release(bt);
    ft_release(a);
    ft_release(b);
}

static const check_test tests[] = {
    CHECK_TEST(test_elementwise_values), CHECK_TEST(test_large_values), CHECK_TEST(test_reduce_values),
    CHECK_TEST(test_matmul_values),      CHECK_TEST(test_shape_values), CHECK_TEST(test_elementwise_grads),
    CHECK_TEST(test_reduce_grads),       CHECK_TEST(test_matmul_grads), CHECK_TEST(test_shape_grads),
    CHECK_TEST(test_no_grad_paths),
};

int main(void) { return check_run("test_ops_basic", tests, sizeof tests / sizeof tests[0]); }
