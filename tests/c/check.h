/* The one harness of the C tests (tests/c/test_*.c): the CHECK macro, the runner that is each
 * test's main (check_run), small constructors, and finite-difference gradient checks.
 * L = sum(y * G) is differentiated numerically (element by element, or along random
 * directions for big inputs) and compared with the gradient backward gives from
 * grad_output = G. Each test is one translation unit, so everything here is static; a test
 * that does not use a helper gets no warning for it (CHECK_HELPER). */
#ifndef FT_TEST_CHECK_H
#define FT_TEST_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "ft/runtime.h"

#define CHECK_HELPER static __attribute__((unused))

static int failures = 0;

/* CHECK(condition, printf-style message): counts and reports a failure, and goes on. */
#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);             \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

/* ---- the runner ---------------------------------------------------------------- */

typedef struct {
    const char *name;
    void (*fn)(void);
} check_test;

#define CHECK_TEST(fn) {#fn, fn}

/* Runs the tests in order, one line each, and returns main's exit status:
 *     static const check_test tests[] = {CHECK_TEST(test_a), CHECK_TEST(test_b)};
 *     int main(void) { return check_run("test_x", tests, sizeof tests / sizeof tests[0]); } */
CHECK_HELPER int check_run(const char *suite, const check_test *tests, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int before = failures;
        tests[i].fn();
        printf("%s %s\n", failures == before ? "ok  " : "FAIL", tests[i].name);
        fflush(stdout);
    }
    if (failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", suite, failures);
        return 1;
    }
    printf("%s: all checks passed\n", suite);
    return 0;
}

/* ---- constructors and element access ----------------------------------------------- */

/* Deterministic values in [0, 1) from a small LCG, so runs are reproducible. */
static uint64_t lcg_state = 12345;
CHECK_HELPER double lcg(void) {
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(lcg_state >> 11) / 9007199254740992.0;
}

/* A float32 tensor of LCG values in [lo, hi). */
CHECK_HELPER ft_tensor *uniform(const int64_t *shape, int ndim, double lo, double hi) {
    ft_tensor *t = ft_empty(shape, ndim, FT_FLOAT32);
    float *p = ft_f32(t);
    for (int64_t i = 0; i < ft_numel(t); i++) p[i] = (float)(lo + (hi - lo) * lcg());
    return t;
}

/* Flat index -> multi-index in logical (row-major) order. */
CHECK_HELPER void unravel(const ft_tensor *t, int64_t flat, int64_t *idx) {
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = flat % t->shape[d];
        flat /= t->shape[d];
    }
}

/* Element `flat` (logical order) of t, any strides. */
CHECK_HELPER double at(const ft_tensor *t, int64_t flat) {
    int64_t idx[FT_MAX_DIMS];
    unravel(t, flat, idx);
    return ft_get(t, idx);
}


CHECK_HELPER ft_tensor *randn(int ndim, ...) {
    int64_t shape[FT_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int d = 0; d < ndim; d++) shape[d] = va_arg(ap, int64_t);
    va_end(ap);
    return ft_randn(shape, ndim);
}

CHECK_HELPER ft_tensor *leaf(ft_tensor *t) {
    ft_set_requires_grad(t, true);
    return t;
}

/* result must be NULL with an error message containing want. */
CHECK_HELPER void check_error(const char *what, ft_tensor *result, const char *want) {
    CHECK(result == NULL, "%s: expected an error", what);
    if (result) {
        ft_release(result);
        return;
    }
    CHECK(strstr(ft_last_error(), want) != NULL, "%s: error \"%s\", want \"%s\"", what,
          ft_last_error(), want);
}

typedef ft_tensor *(*forward_fn)(void *ctx);

CHECK_HELPER double weighted_sum(const ft_tensor *y, const ft_tensor *g) {
    ft_tensor *yc = ft_contiguous(y);
    const float *p = ft_f32(yc), *q = ft_f32(g);
    double s = 0.0;
    for (int64_t i = 0; i < ft_numel(yc); i++) s += (double)p[i] * q[i];
    ft_release(yc);
    return s;
}

CHECK_HELPER ft_tensor *grad_weights(const ft_tensor *y) {
    /* |G| >= 0.5, so no output's gradient is scaled to nothing */
    ft_tensor *g = ft_randn(y->shape, y->ndim);
    for (int64_t i = 0; i < ft_numel(g); i++) ft_f32(g)[i] += ft_f32(g)[i] >= 0 ? 0.5f : -0.5f;
    return g;
}

/* Checks d(sum(f() * G))/d(input) element by element for each input that requires grad.
 * The inputs must be contiguous leaves that f reads. */
CHECK_HELPER void gradcheck(const char *what, forward_fn f, void *ctx, ft_tensor **inputs, int n_inputs,
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
CHECK_HELPER void gradcheck_dir(const char *what, forward_fn f, void *ctx, ft_tensor **inputs,
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

/* ---- gradient checks over inputs of any strides ----------------------------------------- */

typedef ft_tensor *(*op_fn)(ft_tensor **in, const void *ctx);

/* For ops over several inputs of any strides: compares the analytic gradient of L = sum(f(in) * w) (w fixed pseudo-random weights,
 * seeded through backward) with central differences of L, for every input that
 * requires grad. eps = 1e-3 in float; tolerance 5e-3, relative above magnitude 1
 * (observed errors stay below 3e-4). */
CHECK_HELPER void gradcheck_ops(const char *name, op_fn f, ft_tensor **in, int nin, const void *ctx) {
    const double eps = 1e-3, tol = 5e-3;
    for (int i = 0; i < nin; i++) {
        ft_release(in[i]->grad);
        in[i]->grad = NULL;
    }
    ft_tensor *out = f(in, ctx);
    if (!out) {
        CHECK(false, "%s: forward failed: %s", name, ft_last_error());
        return;
    }
    ft_tensor *w = uniform(out->shape, out->ndim, -1.0, 1.0);
    if (ft_backward(out, w, false) < 0) {
        CHECK(false, "%s: backward failed: %s", name, ft_last_error());
        ft_release(out);
        ft_release(w);
        return;
    }
    ft_release(out);
    bool prev = ft_set_grad_enabled(false);
    for (int i = 0; i < nin; i++) {
        ft_tensor *x = in[i];
        if (!x->requires_grad) continue;
        if (!x->grad || !ft_same_shape(x->grad, x)) {
            CHECK(false, "%s: input %d got no gradient of its shape", name, i);
            continue;
        }
        double worst = 0;
        int64_t worst_at = -1;
        double worst_num = 0, worst_ana = 0;
        for (int64_t e = 0; e < ft_numel(x); e++) {
            int64_t idx[FT_MAX_DIMS];
            unravel(x, e, idx);
            double orig = ft_get(x, idx);
            ft_set(x, idx, orig + eps);
            double xp = ft_get(x, idx);   /* the float actually stored */
            ft_tensor *op = f(in, ctx);
            ft_set(x, idx, orig - eps);
            double xm = ft_get(x, idx);
            ft_tensor *om = f(in, ctx);
            ft_set(x, idx, orig);
            double num = (op && om) ? (weighted_sum(op, w) - weighted_sum(om, w)) / (xp - xm) : NAN;
            ft_release(op);
            ft_release(om);
            double ana = at(x->grad, e);
            double err = fabs(num - ana) / fmax(1.0, fabs(num));
            if (!(err <= worst)) {
                worst = err;
                worst_at = e;
                worst_num = num;
                worst_ana = ana;
            }
        }
        char where[96] = "";
        if (!(worst <= tol))
            snprintf(where, sizeof where, " at element %lld: numeric %.6g, analytic %.6g",
                     (long long)worst_at, worst_num, worst_ana);
        CHECK(worst <= tol, "%s: grad of input %d (max rel error %.2g)%s", name, i, worst, where);
    }
    ft_set_grad_enabled(prev);
    ft_release(w);
}

#endif
