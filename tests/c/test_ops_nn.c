/* Neural-network ops: forward on small hand-checkable cases (a few numbers taken from
 * PyTorch 1.13, noted where used), conv2d against a direct-loop reference, error
 * messages, and every backward against central finite differences.
 *
 * Finite differences: for output y = f(inputs) and a fixed random G, the scalar
 * L = sum(y * G) is differentiated numerically element by element and compared with
 * the gradient backward produces from grad_output = G. */

#include "check.h"

/* ---- helpers ------------------------------------------------------------------ */

static ft_tensor *tensor(const float *data, int ndim, ...) {
    int64_t shape[FT_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int d = 0; d < ndim; d++) shape[d] = va_arg(ap, int64_t);
    va_end(ap);
    return ft_from_data(data, shape, ndim, FT_FLOAT32);
}

static ft_tensor *indices(const int64_t *data, int ndim, const int64_t *shape) {
    return ft_from_data(data, shape, ndim, FT_INT64);
}

/* Compares n values of t (contiguous) with want. */
static void check_values(const char *what, const ft_tensor *t, const float *want, int64_t n, double tol) {
    if (!t) {
        CHECK(0, "%s: NULL result (%s)", what, ft_last_error());
        return;
    }
    CHECK(ft_numel(t) == n, "%s: %lld elements, want %lld", what, (long long)ft_numel(t), (long long)n);
    if (ft_numel(t) != n) return;
    ft_tensor *c = ft_contiguous(t);
    const float *p = ft_f32(c);
    for (int64_t i = 0; i < n; i++) {
        bool ok = (isnan(want[i]) && isnan(p[i])) || p[i] == want[i] ||
                  fabs(p[i] - want[i]) <= tol * (1.0 + fabs(want[i]));
        CHECK(ok, "%s[%lld] = %.7g, want %.7g", what, (long long)i, p[i], want[i]);
        if (!ok) break;
    }
    ft_release(c);
}

static void check_shape(const char *what, const ft_tensor *t, int ndim, const int64_t *shape) {
    if (!t) return;
    bool ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    char a[128], b[128];
    CHECK(ok, "%s: shape %s, want %s", what, ft_shape_str(t->shape, t->ndim, a, sizeof a),
          ft_shape_str(shape, ndim, b, sizeof b));
}

/* ---- finite-difference gradient check ---------------------------------------- */

/* ---- conv2d ------------------------------------------------------------------- */

/* Direct-loop convolution in double: the reference. */
static void conv_reference(const ft_tensor *x, const ft_tensor *w, const ft_tensor *b,
                           ft_conv2d_opts o, float *out, int64_t oh_n, int64_t ow_n) {
    int64_t n_n = x->shape[0], c_n = x->shape[1], h = x->shape[2], wd = x->shape[3];
    int64_t o_n = w->shape[0], cg = w->shape[1], kh = w->shape[2], kw = w->shape[3];
    int64_t og = o_n / o.groups;
    const float *xp = ft_f32(x), *wp = ft_f32(w);
    for (int64_t n = 0; n < n_n; n++)
        for (int64_t oc = 0; oc < o_n; oc++)
            for (int64_t oh = 0; oh < oh_n; oh++)
                for (int64_t ow = 0; ow < ow_n; ow++) {
                    double s = b ? ft_f32(b)[oc] : 0.0;
                    int64_t g = oc / og;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < kh; i++)
                            for (int64_t j = 0; j < kw; j++) {
                                int64_t ih = oh * o.stride[0] - o.padding[0] + i * o.dilation[0];
                                int64_t iw = ow * o.stride[1] - o.padding[1] + j * o.dilation[1];
                                if (ih < 0 || ih >= h || iw < 0 || iw >= wd) continue;
                                s += (double)xp[((n * c_n + g * cg + c) * h + ih) * wd + iw] *
                                     wp[((oc * cg + c) * kh + i) * kw + j];
                            }
                    out[((n * o_n + oc) * oh_n + oh) * ow_n + ow] = (float)s;
                }
}

typedef struct {
    ft_tensor *x, *w, *b;
    ft_conv2d_opts o;
} conv_ctx;

static ft_tensor *conv_fwd(void *p) {
    conv_ctx *c = p;
    return ft_conv2d(c->x, c->w, c->b, c->o);
}

static ft_conv2d_opts conv_opts(int sh, int sw, int ph, int pw, int dh, int dw, int groups) {
    ft_conv2d_opts o = {{sh, sw}, {ph, pw}, {dh, dw}, groups};
    return o;
}

static void test_conv2d_forward(void) {
    /* 3x3 image 1..9 with a 2x2 kernel of ones */
    float xv[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, ones[4] = {1, 1, 1, 1}, half = 0.5f;
    ft_tensor *x = tensor(xv, 4, 1L, 1L, 3L, 3L), *w = tensor(ones, 4, 1L, 1L, 2L, 2L);
    ft_tensor *b = tensor(&half, 1, 1L);
    ft_tensor *y = ft_conv2d(x, w, NULL, conv_opts(1, 1, 0, 0, 1, 1, 1));
    check_values("conv2d plain", y, (float[]){12, 16, 24, 28}, 4, 1e-6);
    ft_release(y);
    /* padding 1, stride 2: windows of the zero-padded 5x5 image, plus bias */
    y = ft_conv2d(x, w, b, conv_opts(2, 2, 1, 1, 1, 1, 1));
    check_values("conv2d stride 2 padding 1", y, (float[]){1.5f, 5.5f, 11.5f, 28.5f}, 4, 1e-6);
    ft_release(y);
    /* dilation 2: the four corners */
    y = ft_conv2d(x, w, NULL, conv_opts(1, 1, 0, 0, 2, 2, 1));
    check_values("conv2d dilation 2", y, (float[]){20}, 1, 1e-6);
    ft_release(y);
    /* unbatched input [C,H,W] */
    ft_tensor *x3 = tensor(xv, 3, 1L, 3L, 3L);
    y = ft_conv2d(x3, w, NULL, conv_opts(1, 1, 0, 0, 1, 1, 1));
    check_shape("conv2d unbatched", y, 3, (int64_t[]){1, 2, 2});
    check_values("conv2d unbatched", y, (float[]){12, 16, 24, 28}, 4, 1e-6);
    ft_release(y);
    ft_release(x3);
    ft_release(x);
    ft_release(w);
    ft_release(b);

    /* groups 2 with a 1x1 kernel (no im2col): each channel scaled by its own weight */
    float xg[8] = {1, 1, 1, 1, 2, 2, 2, 2}, wg[2] = {3, 5};
    x = tensor(xg, 4, 1L, 2L, 2L, 2L);
    w = tensor(wg, 4, 2L, 1L, 1L, 1L);
    y = ft_conv2d(x, w, NULL, conv_opts(1, 1, 0, 0, 1, 1, 2));
    check_values("conv2d groups 1x1", y, (float[]){3, 3, 3, 3, 10, 10, 10, 10}, 8, 1e-6);
    ft_release(y);
    ft_release(x);
    ft_release(w);

    /* random cases against the direct loops: batches below and above the thread count */
    struct { int64_t n, c, h, w, o, kh, kw; ft_conv2d_opts opt; } cases[] = {
        {1, 3, 7, 6, 4, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 1}},
        {5, 4, 9, 8, 6, 3, 2, {{2, 1}, {1, 0}, {1, 2}, 2}},
        {3, 4, 10, 10, 4, 3, 3, {{2, 2}, {2, 2}, {2, 2}, 4}},
        {4, 6, 5, 5, 9, 1, 1, {{1, 1}, {0, 0}, {1, 1}, 3}},
        {2, 2, 6, 6, 3, 1, 1, {{2, 2}, {1, 1}, {1, 1}, 1}},
        {3, 3, 4, 5, 2, 4, 5, {{3, 3}, {2, 2}, {1, 1}, 1}},
        /* stride 1 with output rows as wide as input rows (contiguous tap runs) */
        {2, 2, 3, 4, 3, 5, 5, {{1, 1}, {2, 2}, {1, 1}, 1}},
        {2, 2, 3, 1, 3, 5, 5, {{1, 1}, {2, 2}, {1, 1}, 1}},
        {3, 4, 6, 7, 4, 3, 3, {{1, 1}, {2, 2}, {2, 2}, 2}},
        {3, 2, 5, 6, 2, 3, 3, {{1, 1}, {0, 1}, {1, 1}, 1}},
        {2, 2, 7, 5, 3, 3, 3, {{2, 1}, {1, 1}, {1, 1}, 1}},   /* rows kept, stride 2 down */
        /* more than 2048 output pixels per image: cut into row tiles */
        {2, 2, 50, 50, 3, 3, 3, {{1, 1}, {1, 1}, {1, 1}, 1}},
        {3, 3, 50, 60, 4, 1, 1, {{1, 1}, {0, 0}, {1, 1}, 1}},
        {2, 2, 60, 80, 4, 3, 3, {{1, 2}, {1, 1}, {1, 1}, 2}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        ft_manual_seed(100 + k);
        x = randn(4, cases[k].n, cases[k].c, cases[k].h, cases[k].w);
        w = randn(4, cases[k].o, cases[k].c / cases[k].opt.groups, cases[k].kh, cases[k].kw);
        b = randn(1, cases[k].o);
        y = ft_conv2d(x, w, b, cases[k].opt);
        CHECK(y != NULL, "conv2d case %zu: %s", k, ft_last_error());
        if (y) {
            float *want = malloc(sizeof(float) * ft_numel(y));
            conv_reference(x, w, b, cases[k].opt, want, y->shape[2], y->shape[3]);
            char what[64];
            snprintf(what, sizeof what, "conv2d reference case %zu", k);
            check_values(what, y, want, ft_numel(y), 1e-4);
            free(want);
        }
        ft_release(y);
        ft_release(x);
        ft_release(w);
        ft_release(b);
    }

    /* a non-contiguous input (transposed H and W) */
    ft_manual_seed(7);
    ft_tensor *base = randn(4, 2L, 3L, 6L, 5L);
    x = ft_transpose(base, 2, 3);
    ft_tensor *xc = ft_contiguous(x);
    w = randn(4, 4L, 3L, 3L, 3L);
    ft_tensor *y1 = ft_conv2d(x, w, NULL, conv_opts(1, 1, 1, 1, 1, 1, 1));
    ft_tensor *y2 = ft_conv2d(xc, w, NULL, conv_opts(1, 1, 1, 1, 1, 1, 1));
    if (y1 && y2) check_values("conv2d strided input", y1, ft_f32(y2), ft_numel(y2), 1e-6);
    ft_release(y1);
    ft_release(y2);
    ft_release(xc);
    ft_release(x);
    ft_release(base);
    ft_release(w);
}

static void test_conv2d_errors(void) {
    ft_tensor *x = ft_zeros((int64_t[]){8, 3, 28, 28}, 4, FT_FLOAT32);
    ft_tensor *w = ft_zeros((int64_t[]){16, 1, 3, 3}, 4, FT_FLOAT32);
    check_error("conv2d channels", ft_conv2d(x, w, NULL, conv_opts(1, 1, 0, 0, 1, 1, 1)),
                "conv2d: input [8,3,28,28] has 3 channels, weight [16,1,3,3] expects 1 (groups 1)");
    check_error("conv2d groups", ft_conv2d(x, w, NULL, conv_opts(1, 1, 0, 0, 1, 1, 3)),
                "conv2d: weight [16,1,3,3] has 16 output channels, not divisible by groups 3");
    ft_tensor *wd = ft_zeros((int64_t[]){15, 1, 3, 3}, 4, FT_FLOAT32);
    ft_tensor *y = ft_conv2d(x, wd, NULL, conv_opts(1, 1, 0, 0, 1, 1, 3));
    CHECK(y != NULL, "conv2d depthwise groups 3: %s", ft_last_error());
    int64_t yshape[4] = {8, 15, 26, 26};
    check_shape("conv2d depthwise", y, 4, yshape);
    ft_release(y);
    ft_release(wd);
    ft_tensor *w2 = ft_zeros((int64_t[]){16, 3, 30, 3}, 4, FT_FLOAT32);
    check_error("conv2d kernel too large", ft_conv2d(x, w2, NULL, conv_opts(1, 1, 0, 0, 1, 1, 1)),
                "larger than padded input");
    ft_tensor *x2 = ft_zeros((int64_t[]){3, 28}, 2, FT_FLOAT32);
    check_error("conv2d rank", ft_conv2d(x2, w, NULL, conv_opts(1, 1, 0, 0, 1, 1, 1)),
                "conv2d: expected input [N,C,H,W], got [3,28]");
    ft_tensor *w3 = ft_zeros((int64_t[]){16, 3, 3, 3}, 4, FT_FLOAT32);
    ft_tensor *b = ft_zeros((int64_t[]){15}, 1, FT_FLOAT32);
    check_error("conv2d bias", ft_conv2d(x, w3, b, conv_opts(1, 1, 0, 0, 1, 1, 1)),
                "conv2d: bias [15] does not match weight [16,3,3,3]");
    check_error("conv2d stride", ft_conv2d(x, w3, NULL, conv_opts(0, 1, 0, 0, 1, 1, 1)), "stride");
    ft_release(x);
    ft_release(x2);
    ft_release(w);
    ft_release(w2);
    ft_release(w3);
    ft_release(b);
}

static void test_conv2d_grad(void) {
    /* stride 2, dilation 2, groups 2, padding, bias; batch above the thread count */
    ft_manual_seed(1);
    conv_ctx c = {leaf(randn(4, 3L, 4L, 7L, 6L)), leaf(randn(4, 6L, 2L, 3L, 2L)),
                  leaf(randn(1, 6L)), conv_opts(2, 2, 2, 1, 2, 2, 2)};
    ft_tensor *in[3] = {c.x, c.w, c.b};
    gradcheck("conv2d s2 d2 g2 p(2,1)", conv_fwd, &c, in, 3, 0.05, 2e-3, 2e-3);
    /* same with a batch of one (products threaded by OpenBLAS instead) */
    ft_tensor *x1 = leaf(randn(4, 1L, 4L, 7L, 6L));
    conv_ctx c1 = {x1, c.w, NULL, conv_opts(2, 1, 1, 2, 1, 2, 2)};
    ft_tensor *in1[2] = {c1.x, c1.w};
    gradcheck("conv2d batch 1", conv_fwd, &c1, in1, 2, 0.05, 2e-3, 2e-3);
    /* 1x1 stride 1 without padding: the direct path */
    ft_tensor *w1 = leaf(randn(4, 5L, 4L, 1L, 1L));
    conv_ctx c2 = {c.x, w1, c.b, conv_opts(1, 1, 0, 0, 1, 1, 1)};
    c2.b = leaf(randn(1, 5L));
    ft_tensor *in2[3] = {c2.x, c2.w, c2.b};
    gradcheck("conv2d 1x1", conv_fwd, &c2, in2, 3, 0.05, 2e-3, 2e-3);
    /* only the weight requires grad (a frozen input), and only the input */
    ft_tensor *xf = randn(4, 2L, 4L, 5L, 5L);
    conv_ctx c3 = {xf, c.w, NULL, conv_opts(1, 1, 1, 1, 1, 1, 2)};
    ft_tensor *in3[1] = {c3.w};
    gradcheck("conv2d weight only", conv_fwd, &c3, in3, 1, 0.05, 2e-3, 2e-3);
    /* stride 1, padding 2, dilation 2: output rows as wide as input rows */
    ft_tensor *wd = leaf(randn(4, 6L, 2L, 3L, 3L));
    conv_ctx c5 = {c.x, wd, c.b, conv_opts(1, 1, 2, 2, 2, 2, 2)};
    ft_tensor *in5[3] = {c5.x, c5.w, c5.b};
    gradcheck("conv2d same-size d2 g2", conv_fwd, &c5, in5, 3, 0.05, 2e-3, 2e-3);
    ft_tensor *w5 = leaf(randn(4, 3L, 4L, 5L, 5L));
    conv_ctx c6 = {c.x, w5, NULL, conv_opts(1, 1, 1, 2, 1, 1, 1)};
    ft_tensor *in6[2] = {c6.x, c6.w};
    gradcheck("conv2d 5x5 rows kept, height shrinks", conv_fwd, &c6, in6, 2, 0.05, 2e-3, 2e-3);
    c6.o = conv_opts(2, 1, 1, 2, 1, 1, 1);
    gradcheck("conv2d 5x5 rows kept, stride 2 down", conv_fwd, &c6, in6, 2, 0.05, 2e-3, 2e-3);
    ft_release(wd);
    ft_release(w5);
    /* large images (row tiles): directional checks */
    ft_tensor *xl = leaf(randn(4, 3L, 2L, 50L, 50L)), *bl = leaf(randn(1, 4L));
    ft_tensor *wl = leaf(randn(4, 4L, 2L, 3L, 3L)), *wl1 = leaf(randn(4, 4L, 2L, 1L, 1L));
    conv_ctx cl = {xl, wl, bl, conv_opts(1, 1, 1, 1, 1, 1, 1)};
    ft_tensor *inl[3] = {xl, wl, bl};
    gradcheck_dir("conv2d tiles 3x3", conv_fwd, &cl, inl, 3, 0.05, 1e-3);
    cl.o = conv_opts(1, 2, 1, 1, 1, 1, 1);
    gradcheck_dir("conv2d tiles 3x3 stride (1,2)", conv_fwd, &cl, inl, 3, 0.05, 1e-3);
    cl.w = inl[1] = wl1;
    cl.o = conv_opts(1, 1, 0, 0, 1, 1, 1);
    gradcheck_dir("conv2d tiles 1x1", conv_fwd, &cl, inl, 3, 0.05, 1e-3);
    ft_release(xl);
    ft_release(bl);
    ft_release(wl);
    ft_release(wl1);

    ft_tensor *wf = randn(4, 6L, 2L, 3L, 3L);
    conv_ctx c4 = {c.x, wf, NULL, conv_opts(1, 2, 1, 0, 1, 1, 2)};
    ft_tensor *in4[1] = {c4.x};
    gradcheck("conv2d input only", conv_fwd, &c4, in4, 1, 0.05, 2e-3, 2e-3);

    ft_release(c.x);
    ft_release(c.w);
    ft_release(c.b);
    ft_release(x1);
    ft_release(w1);
    ft_release(c2.b);
    ft_release(xf);
    ft_release(wf);
}

/* ---- pooling ------------------------------------------------------------------ */

static ft_pool2d_opts pool_opts(int k, int s, int p, bool ceil_mode, bool count_include_pad) {
    ft_pool2d_opts o = {{k, k}, {s, s}, {p, p}, ceil_mode, count_include_pad};
    return o;
}

typedef struct {
    ft_tensor *x;
    ft_pool2d_opts o;
    int kind; /* 0 max, 1 avg, 2 adaptive */
    int oh, ow;
} pool_ctx;

static ft_tensor *pool_fwd(void *p) {
    pool_ctx *c = p;
    if (c->kind == 0) return ft_max_pool2d(c->x, c->o);
    if (c->kind == 1) return ft_avg_pool2d(c->x, c->o);
    return ft_adaptive_avg_pool2d(c->x, c->oh, c->ow);
}

static float *iota(float *v, int n) {
    for (int i = 0; i < n; i++) v[i] = (float)(i + 1);
    return v;
}

static void test_pool_forward(void) {
    float v16[16], v25[25], v9[9];
    ft_tensor *x4 = tensor(iota(v16, 16), 4, 1L, 1L, 4L, 4L);
    ft_tensor *x5 = tensor(iota(v25, 25), 4, 1L, 1L, 5L, 5L);
    ft_tensor *x3 = tensor(iota(v9, 9), 4, 1L, 1L, 3L, 3L);
    ft_tensor *y;

    y = ft_max_pool2d(x4, pool_opts(2, 2, 0, false, true));
    check_values("max_pool2d 2x2", y, (float[]){6, 8, 14, 16}, 4, 0);
    ft_release(y);
    y = ft_max_pool2d(x4, pool_opts(3, 2, 1, false, true));
    check_values("max_pool2d k3 s2 p1", y, (float[]){6, 8, 14, 16}, 4, 0);
    ft_release(y);
    y = ft_max_pool2d(x5, pool_opts(2, 2, 0, true, true));
    check_shape("max_pool2d ceil", y, 4, (int64_t[]){1, 1, 3, 3});
    check_values("max_pool2d ceil", y, (float[]){7, 9, 10, 17, 19, 20, 22, 24, 25}, 9, 0);
    ft_release(y);
    /* ceil mode drops a last window that would start in the right padding (PyTorch numbers) */
    y = ft_max_pool2d(x5, pool_opts(2, 2, 1, true, true));
    check_shape("max_pool2d ceil pad", y, 4, (int64_t[]){1, 1, 3, 3});
    check_values("max_pool2d ceil pad", y, (float[]){1, 3, 5, 11, 13, 15, 21, 23, 25}, 9, 0);
    ft_release(y);
    y = ft_avg_pool2d(x5, pool_opts(2, 2, 1, true, true));
    check_values("avg_pool2d ceil pad", y, (float[]){0.25f, 1.25f, 2.25f, 4.25f, 10, 12, 9.25f, 20, 22},
                 9, 1e-6);
    ft_release(y);
    y = ft_avg_pool2d(x5, pool_opts(2, 2, 1, true, false));
    check_values("avg_pool2d ceil pad exclude", y, (float[]){1, 2.5f, 4.5f, 8.5f, 10, 12, 18.5f, 20, 22},
                 9, 1e-6);
    ft_release(y);
    y = ft_max_pool2d(x5, pool_opts(2, 2, 0, false, true));
    check_shape("max_pool2d floor", y, 4, (int64_t[]){1, 1, 2, 2});
    ft_release(y);
    /* stride 0 means stride = kernel */
    y = ft_max_pool2d(x4, pool_opts(2, 0, 0, false, true));
    check_values("max_pool2d default stride", y, (float[]){6, 8, 14, 16}, 4, 0);
    ft_release(y);

    /* ties: the gradient goes to the first maximum only */
    float eq[4] = {1, 1, 1, 1};
    ft_tensor *xe = leaf(tensor(eq, 4, 1L, 1L, 2L, 2L));
    y = ft_max_pool2d(xe, pool_opts(2, 2, 0, false, true));
    ft_tensor *one = ft_full((int64_t[]){1, 1, 1, 1}, 4, FT_FLOAT32, 1.0);
    CHECK(ft_backward(y, one, false) == 0, "max_pool2d tie backward: %s", ft_last_error());
    check_values("max_pool2d tie grad", xe->grad, (float[]){1, 0, 0, 0}, 4, 0);
    ft_release(y);
    ft_release(one);
    ft_release(xe);

    /* an all -inf window keeps its first element as the argmax; a NaN wins its window */
    float inf_nan[8] = {-INFINITY, -INFINITY, 1, NAN, -INFINITY, -INFINITY, 3, 4};
    ft_tensor *xi = leaf(tensor(inf_nan, 4, 1L, 1L, 2L, 4L));
    y = ft_max_pool2d(xi, pool_opts(2, 2, 0, false, true));
    check_values("max_pool2d -inf and NaN", y, (float[]){-INFINITY, NAN}, 2, 0);
    one = ft_full((int64_t[]){1, 1, 1, 2}, 4, FT_FLOAT32, 1.0);
    CHECK(ft_backward(y, one, false) == 0, "max_pool2d -inf backward: %s", ft_last_error());
    check_values("max_pool2d -inf and NaN grad", xi->grad, (float[]){1, 0, 0, 1, 0, 0, 0, 0}, 8, 0);
    ft_release(y);
    ft_release(one);
    ft_release(xi);

    /* numbers from PyTorch: F.avg_pool2d(arange(1,10).view(1,1,3,3), ...) */
    y = ft_avg_pool2d(x3, pool_opts(2, 1, 0, false, true));
    check_values("avg_pool2d k2 s1", y, (float[]){3, 4, 6, 7}, 4, 1e-6);
    ft_release(y);
    y = ft_avg_pool2d(x3, pool_opts(2, 2, 1, false, true));
    check_values("avg_pool2d pad, count_include_pad", y, (float[]){0.25f, 1.25f, 2.75f, 7}, 4, 1e-6);
    ft_release(y);
    y = ft_avg_pool2d(x3, pool_opts(2, 2, 1, false, false));
    check_values("avg_pool2d pad, exclude pad", y, (float[]){1, 2.5f, 5.5f, 7}, 4, 1e-6);
    ft_release(y);
    y = ft_avg_pool2d(x3, pool_opts(2, 2, 0, true, true));
    check_values("avg_pool2d ceil", y, (float[]){3, 4.5f, 7.5f, 9}, 4, 1e-6);
    ft_release(y);
    /* arange(1,26).view(1,1,5,5), kernel 3, stride 2, padding 1, ceil_mode */
    y = ft_avg_pool2d(x5, pool_opts(3, 2, 1, true, true));
    check_values("avg_pool2d k3 s2 p1 ceil", y,
                 (float[]){16.f / 9, 33.f / 9, 28.f / 9, 69.f / 9, 13, 87.f / 9, 76.f / 9, 123.f / 9,
                           88.f / 9},
                 9, 1e-6);
    ft_release(y);

    /* adaptive bins 5 -> 3: [0,2) [1,4) [3,5) */
    y = ft_adaptive_avg_pool2d(x5, 3, 3);
    check_values("adaptive_avg_pool2d 5->3", y,
                 (float[]){4, 5.5f, 7, 11.5f, 13, 14.5f, 19, 20.5f, 22}, 9, 1e-6);
    ft_release(y);
    y = ft_adaptive_avg_pool2d(x4, 1, 1);
    check_values("adaptive_avg_pool2d global", y, (float[]){8.5f}, 1, 1e-6);
    ft_release(y);
    y = ft_adaptive_avg_pool2d(x3, 5, 2);   /* upsampling rows: overlapping single-row bins */
    check_shape("adaptive_avg_pool2d 3->5", y, 4, (int64_t[]){1, 1, 5, 2});
    /* from PyTorch: F.adaptive_avg_pool2d(arange(1,10).view(1,1,3,3), (5,2)) */
    check_values("adaptive_avg_pool2d 3->5", y, (float[]){1.5f, 2.5f, 3, 4, 4.5f, 5.5f, 6, 7, 7.5f,
                                                          8.5f}, 10, 1e-6);
    ft_release(y);

    /* unbatched [C,H,W] */
    ft_tensor *x3d = tensor(v16, 3, 1L, 4L, 4L);
    y = ft_max_pool2d(x3d, pool_opts(2, 2, 0, false, true));
    check_shape("max_pool2d unbatched", y, 3, (int64_t[]){1, 2, 2});
    ft_release(y);
    ft_release(x3d);

    check_error("max_pool2d padding", ft_max_pool2d(x4, pool_opts(2, 2, 2, false, true)),
                "padding should be at most half of the kernel size");
    check_error("avg_pool2d too small", ft_avg_pool2d(x3, pool_opts(4, 1, 0, false, true)),
                "too small");
    ft_tensor *x2 = ft_zeros((int64_t[]){4, 4}, 2, FT_FLOAT32);
    check_error("max_pool2d rank", ft_max_pool2d(x2, pool_opts(2, 2, 0, false, true)),
                "max_pool2d: expected input [N,C,H,W] or [C,H,W], got [4,4]");
    check_error("adaptive size", ft_adaptive_avg_pool2d(x4, 0, 1), "output size must be >= 1");
    ft_release(x2);
    ft_release(x3);
    ft_release(x4);
    ft_release(x5);
}

static void test_pool_grad(void) {
    /* max pool: distinct values spaced well beyond the finite-difference step */
    int64_t n = 2 * 3 * 7 * 6;
    float *v = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) v[i] = (float)((i * 37) % n) * 0.01f - 1.0f;
    pool_ctx c = {leaf(tensor(v, 4, 2L, 3L, 7L, 6L)), pool_opts(3, 2, 1, true, true), 0, 0, 0};
    ft_tensor *in[1] = {c.x};
    gradcheck("max_pool2d k3 s2 p1 ceil", pool_fwd, &c, in, 1, 1e-3, 1e-3, 1e-3);
    c.o = pool_opts(2, 1, 0, false, true);
    gradcheck("max_pool2d k2 s1 (overlapping)", pool_fwd, &c, in, 1, 1e-3, 1e-3, 1e-3);
    free(v);

    ft_manual_seed(3);
    ft_tensor *x = leaf(randn(4, 2L, 3L, 7L, 6L));
    ft_release(c.x);
    c.x = x;
    in[0] = x;
    c.kind = 1;
    c.o = pool_opts(3, 2, 1, true, true);
    gradcheck("avg_pool2d ceil count_include_pad", pool_fwd, &c, in, 1, 0.05, 1e-3, 1e-3);
    c.o = pool_opts(3, 2, 1, true, false);
    gradcheck("avg_pool2d ceil exclude pad", pool_fwd, &c, in, 1, 0.05, 1e-3, 1e-3);
    c.o = (ft_pool2d_opts){{2, 3}, {1, 2}, {1, 0}, false, true};
    gradcheck("avg_pool2d rectangular", pool_fwd, &c, in, 1, 0.05, 1e-3, 1e-3);
    c.kind = 2;
    c.oh = 3;
    c.ow = 4;
    gradcheck("adaptive_avg_pool2d 7x6->3x4", pool_fwd, &c, in, 1, 0.05, 1e-3, 1e-3);
    c.oh = 9;
    c.ow = 1;
    gradcheck("adaptive_avg_pool2d 7x6->9x1", pool_fwd, &c, in, 1, 0.05, 1e-3, 1e-3);
    ft_release(c.x);
}

/* ---- batch norm --------------------------------------------------------------- */

static void test_batch_norm_forward(void) {
    /* numbers from PyTorch: F.batch_norm(x, zeros(2), ones(2), [2,-1], [0.5,0.25], momentum=0.1) */
    float xv[8] = {1, 2, 2, 4, 3, 6, 4, 8}, wv[2] = {2, -1}, bv[2] = {0.5f, 0.25f};
    ft_tensor *x = tensor(xv, 2, 4L, 2L), *w = tensor(wv, 1, 2L), *b = tensor(bv, 1, 2L);
    ft_tensor *rm = ft_zeros((int64_t[]){2}, 1, FT_FLOAT32);
    ft_tensor *rv = ft_full((int64_t[]){2}, 1, FT_FLOAT32, 1.0);
    ft_tensor *y = ft_batch_norm(x, rm, rv, w, b, true, 0.1, 1e-5);
    check_values("batch_norm train", y,
                 (float[]){-2.1832707f, 1.5916393f, -0.3944235f, 0.6972131f, 1.3944237f,
                           -0.1972132f, 3.1832709f, -1.0916395f}, 8, 1e-5);
    check_values("batch_norm running_mean", rm, (float[]){0.25f, 0.5f}, 2, 1e-6);
    check_values("batch_norm running_var (unbiased)", rv, (float[]){1.0666666f, 1.5666666f}, 2, 1e-6);
    ft_release(y);
    y = ft_batch_norm(x, rm, rv, w, b, false, 0.1, 1e-5);
    check_values("batch_norm eval", y,
                 (float[]){1.9523621f, -0.9483994f, 3.8888450f, -2.5462651f, 5.8253279f,
                           -4.1441312f, 7.7618103f, -5.7419968f}, 8, 1e-5);
    check_values("batch_norm eval leaves running_mean", rm, (float[]){0.25f, 0.5f}, 2, 1e-6);
    ft_release(y);

    /* buffers are never recorded, even when the parameters require grad */
    ft_set_requires_grad(w, true);
    y = ft_batch_norm(x, rm, rv, w, b, true, 0.1, 1e-5);
    CHECK(y && y->requires_grad, "batch_norm output should require grad");
    CHECK(!rm->requires_grad && rm->grad_fn == NULL && !rv->requires_grad && rv->grad_fn == NULL,
          "batch_norm running stats must stay plain buffers");
    ft_release(y);

    /* [N,C,H,W]: per-channel statistics over N, H and W; no weight/bias, no running stats */
    float v4[16];
    for (int i = 0; i < 16; i++) v4[i] = (float)(i % 4) + (i / 4 % 2) * 10.0f;  /* [2,2,2,2] */
    ft_tensor *x4 = tensor(v4, 4, 2L, 2L, 2L, 2L);
    y = ft_batch_norm(x4, NULL, NULL, NULL, NULL, true, 0.1, 0.0);
    /* each channel holds {0,1,2,3} (+10) twice: mean 1.5 (+10), biased var 1.25 */
    float want[16];
    for (int i = 0; i < 16; i++) want[i] = (float)(((i % 4) - 1.5) / sqrt(1.25));
    check_values("batch_norm 4-D", y, want, 16, 1e-5);
    ft_release(y);

    ft_tensor *one = ft_zeros((int64_t[]){1, 2}, 2, FT_FLOAT32);
    check_error("batch_norm one value", ft_batch_norm(one, NULL, NULL, NULL, NULL, true, 0.1, 1e-5),
                "expected more than 1 value per channel when training");
    ft_tensor *r3 = ft_zeros((int64_t[]){3}, 1, FT_FLOAT32);
    check_error("batch_norm running shape", ft_batch_norm(x4, r3, rv, NULL, NULL, true, 0.1, 1e-5),
                "batch_norm: running_mean [3]");
    check_error("batch_norm eval without stats", ft_batch_norm(x4, NULL, NULL, NULL, NULL, false, 0.1, 1e-5),
                "required in eval mode");
    ft_release(one);
    ft_release(r3);
    ft_release(x4);
    ft_release(x);
    ft_release(w);
    ft_release(b);
    ft_release(rm);
    ft_release(rv);
}

typedef struct {
    ft_tensor *x, *w, *b, *rm, *rv;
    bool training;
} bn_ctx;

static ft_tensor *bn_fwd(void *p) {
    bn_ctx *c = p;
    return ft_batch_norm(c->x, c->rm, c->rv, c->w, c->b, c->training, 0.1, 1e-5);
}

static void test_batch_norm_grad(void) {
    ft_manual_seed(4);
    bn_ctx c = {leaf(randn(4, 3L, 4L, 2L, 3L)), leaf(randn(1, 4L)), leaf(randn(1, 4L)), NULL, NULL, true};
    ft_tensor *in[3] = {c.x, c.w, c.b};
    gradcheck("batch_norm train 4-D", bn_fwd, &c, in, 3, 1e-2, 2e-3, 5e-3);
    c.rm = randn(1, 4L);
    c.rv = ft_full((int64_t[]){4}, 1, FT_FLOAT32, 0.7);
    c.training = false;
    gradcheck("batch_norm eval 4-D", bn_fwd, &c, in, 3, 1e-2, 2e-3, 5e-3);
    ft_tensor *x2 = leaf(randn(2, 5L, 3L));
    bn_ctx c2 = {x2, NULL, NULL, NULL, NULL, true};
    ft_tensor *in2[1] = {x2};
    gradcheck("batch_norm train 2-D no affine", bn_fwd, &c2, in2, 1, 1e-2, 2e-3, 5e-3);
    ft_release(c.x);
    ft_release(c.w);
    ft_release(c.b);
    ft_release(c.rm);
    ft_release(c.rv);
    ft_release(x2);
}

/* ---- layer norm --------------------------------------------------------------- */

typedef struct {
    ft_tensor *x, *w, *b;
    int nnorm;
} ln_ctx;

static ft_tensor *ln_fwd(void *p) {
    ln_ctx *c = p;
    return ft_layer_norm(c->x, c->nnorm, c->w, c->b, 1e-5);
}

static void test_layer_norm(void) {
    float xv[8] = {1, 2, 3, 4, 2, 2, 2, 2}, wv[4] = {1, 2, 3, 4}, bv[4] = {0, 0, 0, 1};
    ft_tensor *x = tensor(xv, 2, 2L, 4L), *w = tensor(wv, 1, 4L), *b = tensor(bv, 1, 4L);
    ft_tensor *y = ft_layer_norm(x, 1, w, b, 1e-5);
    float s = (float)(1.0 / sqrt(1.25 + 1e-5));
    check_values("layer_norm", y, (float[]){-1.5f * s, -0.5f * 2 * s, 0.5f * 3 * s, 1.5f * 4 * s + 1,
                                            0, 0, 0, 1}, 8, 1e-5);
    ft_release(y);
    ft_tensor *w2 = tensor(wv, 1, 3L);
    check_error("layer_norm weight", ft_layer_norm(x, 1, w2, NULL, 1e-5),
                "layer_norm: weight [3] float32 does not match normalized shape [4] of input [2,4]");
    check_error("layer_norm nnorm", ft_layer_norm(x, 3, NULL, NULL, 1e-5), "last 3 dims");
    ft_release(w2);
    ft_release(x);
    ft_release(w);
    ft_release(b);

    ft_manual_seed(5);
    ln_ctx c = {leaf(randn(3, 2L, 3L, 5L)), leaf(randn(1, 5L)), leaf(randn(1, 5L)), 1};
    ft_tensor *in[3] = {c.x, c.w, c.b};
    gradcheck("layer_norm last dim", ln_fwd, &c, in, 3, 1e-2, 2e-3, 5e-3);
    ln_ctx c2 = {c.x, leaf(randn(2, 3L, 5L)), NULL, 2};
    ft_tensor *in2[2] = {c2.x, c2.w};
    gradcheck("layer_norm last 2 dims", ln_fwd, &c2, in2, 2, 1e-2, 2e-3, 5e-3);
    ln_ctx c3 = {c.x, NULL, NULL, 1};
    ft_tensor *in3[1] = {c3.x};
    gradcheck("layer_norm no affine", ln_fwd, &c3, in3, 1, 1e-2, 2e-3, 5e-3);
    ft_release(c.x);
    ft_release(c.w);
    ft_release(c.b);
    ft_release(c2.w);
}

/* ---- dropout ------------------------------------------------------------------ */

typedef struct {
    ft_tensor *x;
    double p;
} drop_ctx;

static ft_tensor *drop_fwd(void *p) {
    drop_ctx *c = p;
    ft_manual_seed(99);   /* the same mask on every call */
    return ft_dropout(c->x, c->p, true);
}

static void test_dropout(void) {
    int64_t n = 10001;
    ft_tensor *x = ft_full(&n, 1, FT_FLOAT32, 1.0);
    ft_manual_seed(11);
    ft_tensor *y = ft_dropout(x, 0.3, true);
    int64_t zeros = 0, scaled = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = ft_f32(y)[i];
        if (v == 0.0f) zeros++;
        else if (fabsf(v - 1.0f / 0.7f) < 1e-6f) scaled++;
    }
    CHECK(zeros + scaled == n, "dropout: values other than 0 and 1/(1-p)");
    /* 3000 expected, standard deviation ~46 */
    CHECK(zeros > 2800 && zeros < 3200, "dropout p=0.3 dropped %lld of %lld", (long long)zeros, (long long)n);
    ft_manual_seed(11);
    ft_tensor *y2 = ft_dropout(x, 0.3, true);
    check_values("dropout same seed, same mask", y2, ft_f32(y), n, 0);
    ft_release(y);
    ft_release(y2);

    y = ft_dropout(x, 0.3, false);
    CHECK(y == x, "dropout in eval mode should return the input itself");
    ft_release(y);
    y = ft_dropout(x, 0.0, true);
    CHECK(y == x, "dropout with p=0 should return the input itself");
    ft_release(y);
    ft_tensor *xl = leaf(ft_full((int64_t[]){4, 3}, 2, FT_FLOAT32, 2.0));
    y = ft_dropout(xl, 1.0, true);
    check_values("dropout p=1", y, (float[12]){0}, 12, 0);
    ft_tensor *g = ft_full((int64_t[]){4, 3}, 2, FT_FLOAT32, 1.0);
    CHECK(ft_backward(y, g, false) == 0, "dropout p=1 backward: %s", ft_last_error());
    check_values("dropout p=1 grad", xl->grad, (float[12]){0}, 12, 0);
    ft_release(y);
    ft_release(g);
    check_error("dropout p", ft_dropout(x, 1.5, true), "dropout: probability must be in [0, 1], got 1.5");
    ft_release(x);

    ft_manual_seed(6);
    ft_release(xl->grad);
    xl->grad = NULL;
    ft_release(xl);
    drop_ctx c = {leaf(randn(2, 5L, 7L)), 0.4};
    ft_tensor *in[1] = {c.x};
    gradcheck("dropout", drop_fwd, &c, in, 1, 0.05, 1e-3, 1e-3);
    ft_release(c.x);
}

/* ---- embedding ---------------------------------------------------------------- */

typedef struct {
    ft_tensor *w, *idx;
} emb_ctx;

static ft_tensor *emb_fwd(void *p) {
    emb_ctx *c = p;
    return ft_embedding(c->w, c->idx);
}

static void test_embedding(void) {
    float wv[30];
    for (int i = 0; i < 30; i++) wv[i] = (float)i;
    ft_tensor *w = leaf(tensor(wv, 2, 10L, 3L));
    ft_tensor *idx = indices((int64_t[]){1, 3, 3, 9}, 2, (int64_t[]){2, 2});
    ft_tensor *y = ft_embedding(w, idx);
    check_shape("embedding", y, 3, (int64_t[]){2, 2, 3});
    check_values("embedding", y, (float[]){3, 4, 5, 9, 10, 11, 9, 10, 11, 27, 28, 29}, 12, 0);
    float gv[12] = {1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8};
    ft_tensor *g = tensor(gv, 3, 2L, 2L, 3L);
    CHECK(ft_backward(y, g, false) == 0, "embedding backward: %s", ft_last_error());
    float want[30] = {0};
    for (int j = 0; j < 3; j++) {
        want[3 + j] = 1;
        want[9 + j] = 6;   /* index 3 twice: 2 + 4 */
        want[27 + j] = 8;
    }
    check_values("embedding grad (repeated index adds)", w->grad, want, 30, 0);
    ft_release(y);
    ft_release(g);

    /* a 0-dim index gives one row */
    ft_tensor *i0 = indices((int64_t[]){7}, 0, NULL);
    y = ft_embedding(w, i0);
    check_shape("embedding 0-dim index", y, 1, (int64_t[]){3});
    check_values("embedding 0-dim index", y, (float[]){21, 22, 23}, 3, 0);
    ft_release(y);
    ft_release(i0);

    ft_tensor *bad = indices((int64_t[]){1, 12}, 1, (int64_t[]){2});
    check_error("embedding range", ft_embedding(w, bad), "embedding: index 12 out of range for 10 rows");
    ft_tensor *neg = indices((int64_t[]){-1}, 1, (int64_t[]){1});
    check_error("embedding negative", ft_embedding(w, neg), "embedding: index -1 out of range for 10 rows");
    ft_tensor *fl = tensor(wv, 1, 2L);
    check_error("embedding dtype", ft_embedding(w, fl), "expected int64 indices");
    ft_release(bad);
    ft_release(neg);
    ft_release(fl);
    ft_release(idx);
    ft_release(w);

    ft_manual_seed(8);
    emb_ctx c = {leaf(randn(2, 6L, 4L)),
                 indices((int64_t[]){5, 0, 2, 5, 5, 1, 0}, 2, (int64_t[]){7, 1})};
    ft_tensor *in[1] = {c.w};
    gradcheck("embedding", emb_fwd, &c, in, 1, 0.05, 1e-3, 1e-3);
    ft_release(c.w);
    ft_release(c.idx);
}

/* ---- cross entropy and mse ---------------------------------------------------- */

typedef struct {
    ft_tensor *x, *t;
    ft_reduction red;
    int64_t ignore;
    double eps;
} ce_ctx;

static ft_tensor *ce_fwd(void *p) {
    ce_ctx *c = p;
    return ft_cross_entropy(c->x, c->t, c->red, c->ignore, c->eps);
}

static void test_cross_entropy(void) {
    ft_tensor *z = ft_zeros((int64_t[]){3, 5}, 2, FT_FLOAT32);
    ft_tensor *t = indices((int64_t[]){0, 1, 4}, 1, (int64_t[]){3});
    ft_tensor *y = ft_cross_entropy(z, t, FT_REDUCE_MEAN, -100, 0.0);
    check_values("cross_entropy uniform", y, (float[]){(float)log(5.0)}, 1, 1e-6);
    CHECK(y && y->ndim == 0, "cross_entropy mean should be 0-dim");
    ft_release(y);
    ft_release(t);
    ft_release(z);

    /* numbers from PyTorch: logits below, target [2, -100, 1, 0], label_smoothing 0.2 */
    float lv[12] = {1, 2, 3, 0.5f, -1, 2, 3, 3, 0, 0, 0, 0};
    ft_tensor *l = tensor(lv, 2, 4L, 3L);
    t = indices((int64_t[]){2, -100, 1, 0}, 1, (int64_t[]){4});
    y = ft_cross_entropy(l, t, FT_REDUCE_MEAN, -100, 0.2);
    check_values("cross_entropy smoothing+ignore mean", y, (float[]){0.8746514f}, 1, 1e-6);
    ft_release(y);
    y = ft_cross_entropy(l, t, FT_REDUCE_SUM, -100, 0.2);
    check_values("cross_entropy smoothing+ignore sum", y, (float[]){2.6239543f}, 1, 1e-6);
    ft_release(y);
    y = ft_cross_entropy(l, t, FT_REDUCE_NONE, -100, 0.2);
    check_shape("cross_entropy none", y, 1, (int64_t[]){4});
    check_values("cross_entropy smoothing+ignore none", y,
                 (float[]){0.6076059f, 0, 0.9177359f, 1.0986123f}, 4, 1e-6);
    ft_release(y);
    y = ft_cross_entropy(l, t, FT_REDUCE_MEAN, -100, 0.0);
    check_values("cross_entropy ignore mean", y, (float[]){0.7413180f}, 1, 1e-6);
    ft_release(y);
    /* a single sample [C] with a 0-dim target; (1-0.1)*nll + 0.1*mean(-logp) */
    ft_tensor *l1 = tensor(lv, 1, 3L), *t0 = indices((int64_t[]){0}, 0, NULL);
    y = ft_cross_entropy(l1, t0, FT_REDUCE_MEAN, -100, 0.1);
    check_values("cross_entropy [C]", y, (float[]){2.3076060f}, 1, 1e-6);
    ft_release(y);
    ft_release(l1);
    ft_release(t0);
    /* every target ignored: the mean is 0/0 */
    ft_tensor *tall = indices((int64_t[]){-100, -100, -100, -100}, 1, (int64_t[]){4});
    y = ft_cross_entropy(l, tall, FT_REDUCE_MEAN, -100, 0.0);
    check_values("cross_entropy all ignored", y, (float[]){NAN}, 1, 0);
    ft_release(y);
    ft_release(tall);

    /* a -inf logit is a class with probability 0; a NaN logit makes the loss NaN */
    float odd[6] = {0, -INFINITY, 1, 0, NAN, 1};
    ft_tensor *lo = tensor(odd, 2, 2L, 3L), *t00 = indices((int64_t[]){0, 0}, 1, (int64_t[]){2});
    y = ft_cross_entropy(lo, t00, FT_REDUCE_NONE, -100, 0.0);
    check_values("cross_entropy -inf and NaN logits", y, (float[]){(float)log(1.0 + exp(1.0)), NAN}, 2, 1e-6);
    ft_release(y);
    ft_release(lo);
    ft_release(t00);

    /* wide-ranged logits against log-sum-exp and softmax in double */
    {
        ft_manual_seed(12);
        ft_tensor *lw = randn(2, 64L, 100L);
        for (int64_t i = 0; i < 6400; i++) ft_f32(lw)[i] *= 12.0f;
        ft_set_requires_grad(lw, true);
        int64_t tv[64];
        for (int i = 0; i < 64; i++) tv[i] = (i * 37) % 100;
        ft_tensor *tw = indices(tv, 1, (int64_t[]){64});
        ft_tensor *lw_loss = ft_cross_entropy(lw, tw, FT_REDUCE_NONE, -100, 0.0);
        float want_loss[64], want_grad[6400];
        for (int n = 0; n < 64; n++) {
            const float *r = ft_f32(lw) + n * 100;
            double mx = -INFINITY, se = 0.0;
            for (int k = 0; k < 100; k++) mx = r[k] > mx ? r[k] : mx;
            for (int k = 0; k < 100; k++) se += exp((double)r[k] - mx);
            want_loss[n] = (float)(mx + log(se) - r[tv[n]]);
            for (int k = 0; k < 100; k++)
                want_grad[n * 100 + k] = (float)(exp((double)r[k] - mx) / se - (k == tv[n]));
        }
        check_values("cross_entropy wide logits", lw_loss, want_loss, 64, 2e-6);
        ft_tensor *ones = ft_full((int64_t[]){64}, 1, FT_FLOAT32, 1.0);
        CHECK(ft_backward(lw_loss, ones, false) == 0, "cross_entropy wide backward: %s", ft_last_error());
        check_values("cross_entropy wide logits grad", lw->grad, want_grad, 6400, 2e-6);
        ft_release(ones);
        ft_release(lw_loss);
        ft_release(tw);
        ft_release(lw);
    }

    /* large logits: max subtraction keeps it finite */
    float big[3] = {1000, 0, -1000};
    ft_tensor *lb = tensor(big, 2, 1L, 3L), *t1 = indices((int64_t[]){1}, 1, (int64_t[]){1});
    y = ft_cross_entropy(lb, t1, FT_REDUCE_SUM, -100, 0.0);
    check_values("cross_entropy large logits", y, (float[]){1000}, 1, 1e-6);
    ft_release(y);
    ft_release(lb);
    ft_release(t1);

    ft_tensor *t10 = indices((int64_t[]){3, 10}, 1, (int64_t[]){2});
    ft_tensor *l10 = ft_zeros((int64_t[]){2, 10}, 2, FT_FLOAT32);
    check_error("cross_entropy range", ft_cross_entropy(l10, t10, FT_REDUCE_MEAN, -100, 0.0),
                "cross_entropy: target 10 out of range for 10 classes");
    ft_tensor *t3 = indices((int64_t[]){1, 2, 3}, 1, (int64_t[]){3});
    check_error("cross_entropy shape", ft_cross_entropy(l10, t3, FT_REDUCE_MEAN, -100, 0.0),
                "cross_entropy: logits [2,10] and target [3] do not match (expected target [2])");
    check_error("cross_entropy float target", ft_cross_entropy(l10, l10, FT_REDUCE_MEAN, -100, 0.0),
                "expected int64 class indices");
    ft_release(t10);
    ft_release(l10);
    ft_release(t3);
    ft_release(t);
    ft_release(l);

    /* gradients: smoothing + ignore_index, all reductions, and [N,C,d1,d2] */
    ft_manual_seed(9);
    ce_ctx c = {leaf(randn(2, 6L, 4L)), indices((int64_t[]){3, 1, -1, 0, 2, -1}, 1, (int64_t[]){6}),
                FT_REDUCE_MEAN, -1, 0.15};
    ft_tensor *in[1] = {c.x};
    gradcheck("cross_entropy mean smoothing ignore", ce_fwd, &c, in, 1, 1e-2, 1e-3, 5e-3);
    c.red = FT_REDUCE_SUM;
    gradcheck("cross_entropy sum smoothing ignore", ce_fwd, &c, in, 1, 1e-2, 1e-3, 5e-3);
    c.red = FT_REDUCE_NONE;
    gradcheck("cross_entropy none smoothing ignore", ce_fwd, &c, in, 1, 1e-2, 1e-3, 5e-3);
    ft_release(c.x);
    ft_release(c.t);
    ce_ctx c2 = {leaf(randn(4, 2L, 3L, 2L, 2L)),
                 indices((int64_t[]){0, 2, 1, 1, 2, 0, 5, 1}, 3, (int64_t[]){2, 2, 2}),
                 FT_REDUCE_MEAN, 5, 0.0};
    in[0] = c2.x;
    gradcheck("cross_entropy spatial", ce_fwd, &c2, in, 1, 1e-2, 1e-3, 5e-3);
    /* per-position losses of [N,C,d1,d2] logits (class dim 1), ignored positions 0 */
    y = ft_cross_entropy(c2.x, c2.t, FT_REDUCE_NONE, 5, 0.0);
    check_shape("cross_entropy spatial none", y, 3, (int64_t[]){2, 2, 2});
    if (y) {
        const float *xp = ft_f32(c2.x);
        const int64_t *tp = ft_i64(c2.t);
        for (int n = 0; n < 2; n++)
            for (int s = 0; s < 4; s++) {
                int64_t tt = tp[n * 4 + s];
                double se = 0.0;
                for (int k = 0; k < 3; k++) se += exp(xp[(n * 3 + k) * 4 + s]);
                double li = tt == 5 ? 0.0 : log(se) - xp[(n * 3 + tt) * 4 + s];
                CHECK(fabs(ft_f32(y)[n * 4 + s] - li) < 1e-5, "cross_entropy spatial [%d,%d]: %g, want %g",
                      n, s, ft_f32(y)[n * 4 + s], li);
            }
    }
    ft_release(y);
    ft_release(c2.x);
    ft_release(c2.t);
}

typedef struct {
    ft_tensor *x, *t;
    ft_reduction red;
} mse_ctx;

static ft_tensor *mse_fwd(void *p) {
    mse_ctx *c = p;
    return ft_mse_loss(c->x, c->t, c->red);
}

static void test_mse(void) {
    float a[4] = {1, 2, 3, 4}, b[4] = {1, 0, 5, 1};
    ft_tensor *x = tensor(a, 2, 2L, 2L), *t = tensor(b, 2, 2L, 2L);
    ft_tensor *y = ft_mse_loss(x, t, FT_REDUCE_MEAN);
    check_values("mse mean", y, (float[]){17.0f / 4}, 1, 1e-6);
    ft_release(y);
    y = ft_mse_loss(x, t, FT_REDUCE_SUM);
    check_values("mse sum", y, (float[]){17}, 1, 1e-6);
    ft_release(y);
    y = ft_mse_loss(x, t, FT_REDUCE_NONE);
    check_values("mse none", y, (float[]){0, 4, 4, 9}, 4, 1e-6);
    ft_release(y);
    ft_tensor *t2 = tensor(b, 1, 2L);
    check_error("mse shapes", ft_mse_loss(x, t2, FT_REDUCE_MEAN),
                "mse_loss: input [2,2] and target [2] must have the same shape");
    ft_release(t2);
    ft_release(x);
    ft_release(t);

    ft_manual_seed(10);
    mse_ctx c = {leaf(randn(2, 3L, 4L)), leaf(randn(2, 3L, 4L)), FT_REDUCE_MEAN};
    ft_tensor *in[2] = {c.x, c.t};
    gradcheck("mse mean", mse_fwd, &c, in, 2, 1e-2, 1e-3, 1e-3);
    c.red = FT_REDUCE_SUM;
    gradcheck("mse sum", mse_fwd, &c, in, 2, 1e-2, 1e-3, 1e-3);
    c.red = FT_REDUCE_NONE;
    gradcheck("mse none", mse_fwd, &c, in, 2, 1e-2, 1e-3, 1e-3);
    ft_release(c.x);
    ft_release(c.t);
}

/* the convolution splits work by thread count: check other counts too */
static void test_conv2d_thread_counts(void) {
    for (int nt = 1; nt <= 3; nt += 2) {
        ft_set_num_threads(nt);
        test_conv2d_forward();
        test_conv2d_grad();
    }
    ft_set_num_threads(2);
}

static const check_test tests[] = {
    CHECK_TEST(test_conv2d_forward),   CHECK_TEST(test_conv2d_errors),   CHECK_TEST(test_conv2d_grad),
    CHECK_TEST(test_pool_forward),     CHECK_TEST(test_pool_grad),       CHECK_TEST(test_batch_norm_forward),
    CHECK_TEST(test_batch_norm_grad),  CHECK_TEST(test_layer_norm),      CHECK_TEST(test_dropout),
    CHECK_TEST(test_embedding),        CHECK_TEST(test_cross_entropy),   CHECK_TEST(test_mse),
    CHECK_TEST(test_conv2d_thread_counts),
};

int main(void) {
    ft_set_num_threads(2);
    return check_run("test_ops_nn", tests, sizeof tests / sizeof tests[0]);
}
