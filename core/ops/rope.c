/* Rotary position embedding (HuggingFace's rotate_half convention), forward and backward.
 *
 * With h = D/2 and, per row x [D] at position t (c = cos[t], s = sin[t]):
 *
 *     out[j]     = x[j] c[j]         - x[j+h] s[j]          j < h
 *     out[j+h]   = x[j+h] c[j+h]     + x[j] s[j+h]
 *
 * i.e. out = x*cos + rotate_half(x)*sin, rotate_half(x) = cat(-x2, x1). Its adjoint:
 *
 *     gx[j]      = g[j] c[j]         + g[j+h] s[j+h]
 *     gx[j+h]    = g[j+h] c[j+h]     - g[j] s[j]
 *
 * cos and sin are tables of constants (no gradient flows to them). */
#include <omp.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"

/* x [R, T, D] contiguous rows, c/s [T, D]: the forward, or with `adjoint` its transpose
 * (the backward for x). */
static void rope_run(const float *x, const float *c, const float *s, float *out, int64_t r,
                     int64_t t, int64_t d, bool adjoint) {
    int64_t h = d / 2;
#pragma omp parallel for schedule(static) if (r * t * d > 32768)
    for (int64_t row = 0; row < r * t; row++) {
        const float *xr = x + row * d, *cr = c + (row % t) * d, *sr = s + (row % t) * d;
        float *o = out + row * d;
        if (!adjoint) {
#pragma omp simd
            for (int64_t j = 0; j < h; j++) {
                o[j] = xr[j] * cr[j] - xr[j + h] * sr[j];
                o[j + h] = xr[j + h] * cr[j + h] + xr[j] * sr[j + h];
            }
        } else {
#pragma omp simd
            for (int64_t j = 0; j < h; j++) {
                o[j] = xr[j] * cr[j] + xr[j + h] * sr[j + h];
                o[j + h] = xr[j + h] * cr[j + h] - xr[j] * sr[j];
            }
        }
    }
}

/* saved[0] cos, saved[1] sin (contiguous [T, D]). node->i: [0] T [1] D. input: x. */
static int rope_backward(ft_node *nd, const ft_tensor *grad_output, ft_tensor **grad_inputs) {
    int64_t t = nd->i[0], d = nd->i[1];
    ft_tensor *go = ft_contiguous(grad_output);
    if (!go) return -1;
    ft_tensor *gx = ft_empty(go->shape, go->ndim, FT_FLOAT32);
    if (!gx) {
        ft_release(go);
        return -1;
    }
    int64_t n = ft_numel(go);
    if (n > 0) rope_run(ft_f32(go), ft_f32(nd->saved[0]), ft_f32(nd->saved[1]), ft_f32(gx), n / (t * d),
                        t, d, true);
    ft_release(go);
    grad_inputs[0] = gx;
    return 0;
}

/* cos or sin: [T, D], or with extra leading dims of size 1 ([1,1,T,D] as HF builds
 * them); returns it as a contiguous [T, D] tensor. */
static ft_tensor *table_of(const ft_tensor *tab, const char *what, const ft_tensor *x) {
    char ts[128], xs[128];
    ft_shape_str(tab->shape, tab->ndim, ts, sizeof ts);
    ft_shape_str(x->shape, x->ndim, xs, sizeof xs);
    if (tab->dtype != FT_FLOAT32) {
        ft_set_error("rope: %s must be float32, got %s", what, ft_dtype_name(tab->dtype));
        return NULL;
    }
    if (tab->requires_grad && ft_grad_enabled()) {
        ft_set_error("rope: %s %s is a table of constants; detach it (it requires grad)", what, ts);
        return NULL;
    }
    bool ok = tab->ndim >= 2 && tab->shape[tab->ndim - 2] == x->shape[x->ndim - 2] &&
              tab->shape[tab->ndim - 1] == x->shape[x->ndim - 1];
    for (int k = 0; ok && k < tab->ndim - 2; k++) ok = tab->shape[k] == 1;
    if (!ok) {
        ft_set_error("rope: %s %s does not match [T,D] of input %s", what, ts, xs);
        return NULL;
    }
    int64_t td[2] = {tab->shape[tab->ndim - 2], tab->shape[tab->ndim - 1]};
    ft_tensor *c = ft_contiguous(tab);
    ft_tensor *v = c ? ft_view(c, td, 2) : NULL;
    ft_release(c);
    ft_tensor *det = v ? ft_detach(v) : NULL;
    ft_release(v);
    return det;
}

ft_tensor *ft_rope(const ft_tensor *x, const ft_tensor *cos, const ft_tensor *sin) {
    if (!x || !cos || !sin) {
        ft_set_error("rope: x, cos and sin are required");
        return NULL;
    }
    char xs[128];
    ft_shape_str(x->shape, x->ndim, xs, sizeof xs);
    if (x->dtype != FT_FLOAT32) {
        ft_set_error("rope: expected float32 input, got %s", ft_dtype_name(x->dtype));
        return NULL;
    }
    if (x->ndim < 2) {
        ft_set_error("rope: expected input [..., T, D], got %s", xs);
        return NULL;
    }
    int64_t t = x->shape[x->ndim - 2], d = x->shape[x->ndim - 1];
    if (d % 2 != 0) {
        ft_set_error("rope: the last dim of input %s must be even, got D = %lld", xs, (long long)d);
        return NULL;
    }
    ft_tensor *c = table_of(cos, "cos", x), *s = c ? table_of(sin, "sin", x) : NULL;
    ft_tensor *xc = s ? ft_contiguous(x) : NULL;
    ft_tensor *y = xc ? ft_empty(x->shape, x->ndim, FT_FLOAT32) : NULL;
    if (!y) goto fail;
    int64_t n = ft_numel(x);
    if (n > 0) rope_run(ft_f32(xc), ft_f32(c), ft_f32(s), ft_f32(y), n / (t * d), t, d, false);

    if (ft_grad_needed1(x)) {
        ft_node *nd = ft_node_new("rope", rope_backward, y, 1, x);
        if (!nd) {
            ft_set_error("rope: out of memory recording the graph");
            goto fail;
        }
        nd->saved[0] = c;
        nd->saved[1] = s;
        c = s = NULL;
        nd->i[0] = t;
        nd->i[1] = d;
    }
    ft_release(c);
    ft_release(s);
    ft_release(xc);
    return y;

fail:
    ft_release(c);
    ft_release(s);
    ft_release(xc);
    ft_release(y);
    return NULL;
}
