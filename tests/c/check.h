/* Shared by the C op tests: the CHECK macro, small constructors, and finite-difference
 * gradient checks. L = sum(y * G) is differentiated numerically (element by element, or
 * along random directions for big inputs) and compared with the gradient backward gives
 * from grad_output = G. Each test is one translation unit, so everything here is static. */
#ifndef FT_TEST_CHECK_H
#define FT_TEST_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "ft/runtime.h"

static int failures = 0;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);             \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)


static ft_tensor *randn(int ndim, ...) {
    int64_t shape[FT_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int d = 0; d < ndim; d++) shape[d] = va_arg(ap, int64_t);
    va_end(ap);
    return ft_randn(shape, ndim);
}

static ft_tensor *leaf(ft_tensor *t) {
    ft_set_requires_grad(t, true);
    return t;
}

static void check_error(const char *what, ft_tensor *result, const char *want) {
    CHECK(result == NULL, "%s: expected an error", what);
    if (result) {
        ft_release(result);
        return;
    }
    CHECK(strstr(ft_last_error(), want) != NULL, "%s: error \"%s\", want \"%s\"", what,
          ft_last_error(), want);
}

typedef ft_tensor *(*forward_fn)(void *ctx);

static double weighted_sum(const ft_tensor *y, const ft_tensor *g) {
    ft_tensor *yc = ft_contiguous(y);
    const float *p = ft_f32(yc), *q = ft_f32(g);
    double s = 0.0;
    for (int64_t i = 0; i < ft_numel(yc); i++) s += (double)p[i] * q[i];
    ft_release(yc);
    return s;
}

static ft_tensor *grad_weights(const ft_tensor *y) {
    /* |G| >= 0.5, so no output's gradient is scaled to nothing */
    ft_tensor *g = ft_randn(y->shape, y->ndim);
    for (int64_t i = 0; i < ft_numel(g); i++) ft_f32(g)[i] += ft_f32(g)[i] >= 0 ? 0.5f : -0.5f;
    return g;
}

/* Checks d(sum(f() * G))/d(input) element by element for each input that requires grad.
 * The inputs must be contiguous leaves that f reads. */
static void gradcheck(const char *what, forward_fn f, void *ctx, ft_tensor **inputs, int n_inputs,
                      double eps, double atol, double rtol) {
    ft_tensor *y = f(ctx);
    if (!y) {
        CHECK(0, "%s: forward failed: %s", what, ft_last_error());
        return;
    }
    CHECK(y->requires_grad, "%s: output does not require grad", what);
    ft_tensor *g = grad_weights(y);
    for (int k = 0; k < n_inputs; k++) {
        ft_release(inputs[k]->grad);
        inputs[k]->grad = NULL;
    }
    int rc = ft_backward(y, g, false);
    CHECK(rc == 0, "%s: backward failed: %s", what, ft_last_error());
    ft_release(y);
    if (rc != 0) {
        ft_release(g);
        return;
    }
    bool prev = ft_set_grad_enabled(false);
    for (int k = 0; k < n_inputs; k++) {
        ft_tensor *in = inputs[k];
        if (!in->requires_grad) {
            CHECK(in->grad == NULL, "%s: input %d got a gradient it did not ask for", what, k);
            continue;
        }
        CHECK(in->grad != NULL, "%s: input %d has no gradient", what, k);
        if (!in->grad) continue;
        ft_tensor *gc = ft_contiguous(in->grad);
        const float *an = ft_f32(gc);
        float *p = ft_f32(in);
        for (int64_t i = 0; i < ft_numel(in); i++) {
            float v = p[i];
            p[i] = (float)(v + eps);
            ft_tensor *yp = f(ctx);
            p[i] = (float)(v - eps);
            ft_tensor *ym = f(ctx);
            p[i] = v;
            double num = (weighted_sum(yp, g) - weighted_sum(ym, g)) / (2.0 * eps);
            ft_release(yp);
            ft_release(ym);
            if (!(fabs(num - an[i]) <= atol + rtol * fabs(num))) {
                CHECK(0, "%s: input %d element %lld: backward %.6g, finite difference %.6g", what, k,
                      (long long)i, an[i], num);
                break;
            }
        }
        ft_release(gc);
        ft_release(in->grad);
        in->grad = NULL;
    }
    ft_set_grad_enabled(prev);
    ft_release(g);
}

/* For big inputs: compares sum_k <grad_k, D_k> with the central difference of L along
 * random directions D_k of the inputs that require grad. */
static void gradcheck_dir(const char *what, forward_fn f, void *ctx, ft_tensor **inputs,
                          int n_inputs, double eps, double rtol) {
    ft_tensor *y = f(ctx);
    if (!y) {
        CHECK(0, "%s: forward failed: %s", what, ft_last_error());
        return;
    }
    ft_tensor *g = grad_weights(y);
    int rc = ft_backward(y, g, false);
    CHECK(rc == 0, "%s: backward failed: %s", what, ft_last_error());
    ft_release(y);
    bool prev = ft_set_grad_enabled(false);
    ft_tensor *dirs[8] = {NULL};
    double analytic = 0.0;
    for (int k = 0; rc == 0 && k < n_inputs; k++) {
        if (!inputs[k]->requires_grad || !inputs[k]->grad) continue;
        dirs[k] = ft_randn(inputs[k]->shape, inputs[k]->ndim);
        ft_tensor *gc = ft_contiguous(inputs[k]->grad);
        for (int64_t i = 0; i < ft_numel(gc); i++) analytic += (double)ft_f32(gc)[i] * ft_f32(dirs[k])[i];
        ft_release(gc);
    }
    double l[2];
    for (int side = 0; rc == 0 && side < 2; side++) {
        double h = side == 0 ? eps : -eps;
        for (int k = 0; k < n_inputs; k++)
            if (dirs[k])
                for (int64_t i = 0; i < ft_numel(dirs[k]); i++) ft_f32(inputs[k])[i] += (float)(h * ft_f32(dirs[k])[i]);
        ft_tensor *yy = f(ctx);
        l[side] = weighted_sum(yy, g);
        ft_release(yy);
        for (int k = 0; k < n_inputs; k++)
            if (dirs[k])
                for (int64_t i = 0; i < ft_numel(dirs[k]); i++) ft_f32(inputs[k])[i] -= (float)(h * ft_f32(dirs[k])[i]);
    }
    if (rc == 0) {
        double num = (l[0] - l[1]) / (2.0 * eps);
        CHECK(fabs(num - analytic) <= rtol * (1.0 + fabs(num)), "%s: directional derivative %.6g, "
              "finite difference %.6g", what, analytic, num);
    }
    for (int k = 0; k < n_inputs; k++) {
        ft_release(dirs[k]);
        ft_release(inputs[k]->grad);
        inputs[k]->grad = NULL;
    }
    ft_set_grad_enabled(prev);
    ft_release(g);
}

#endif
