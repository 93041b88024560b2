/* Optimizer kernels: hand-computed SGD steps, the parallel path on a large tensor
 * against a double-precision transcription of torch's Adam formulas, skipped
 * parameters, clipping and errors. (The Lua spec compares with torch itself.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ft/optim.h"

static ft_tensor *vec(const float *v, int64_t n) { return ft_from_data(v, &n, 1, FT_FLOAT32); }

static void test_sgd_by_hand(void) {
    /* p = 1, g = 0.5, lr 0.1, momentum 0.9, dampening 0.5, weight_decay 0.1
     * step 1: d = 0.5 + 0.1 * 1 = 0.6; buf = d (no dampening on the first step);
     *         p = 1 - 0.1 * 0.6 = 0.94
     * step 2: d = 0.5 + 0.1 * 0.94 = 0.594; buf = 0.9 * 0.6 + 0.5 * 0.594 = 0.837;
     *         p = 0.94 - 0.0837 = 0.8563 */
    float one = 1.0f, half = 0.5f;
    ft_tensor *p = vec(&one, 1);
    p->grad = vec(&half, 1);
    ft_tensor *buf = NULL;
    ft_sgd_opts o = {.lr = 0.1, .momentum = 0.9, .dampening = 0.5, .weight_decay = 0.1};
    CHECK(ft_sgd_step(&p, &buf, 1, &o) == 0, "sgd step 1: %s", ft_last_error());
    CHECK(buf != NULL, "momentum buffer not created");
    CHECK(fabsf(ft_f32(p)[0] - 0.94f) < 1e-6f, "sgd step 1: p = %.8f", ft_f32(p)[0]);
    CHECK(buf && fabsf(ft_f32(buf)[0] - 0.6f) < 1e-6f, "sgd step 1: buf = %.8f", ft_f32(buf)[0]);
    CHECK(ft_sgd_step(&p, &buf, 1, &o) == 0, "sgd step 2: %s", ft_last_error());
    CHECK(fabsf(ft_f32(p)[0] - 0.8563f) < 1e-6f, "sgd step 2: p = %.8f", ft_f32(p)[0]);
    CHECK(fabsf(ft_f32(buf)[0] - 0.837f) < 1e-6f, "sgd step 2: buf = %.8f", ft_f32(buf)[0]);

    /* nesterov, no decay: d = g + momentum * buf; first step buf = g = 0.5,
     * p = 0.8563 - 0.1 * (0.5 + 0.45) = 0.7613 */
    ft_tensor *nbuf = NULL;
    ft_sgd_opts n = {.lr = 0.1, .momentum = 0.9, .nesterov = true};
    CHECK(ft_sgd_step(&p, &nbuf, 1, &n) == 0, "nesterov: %s", ft_last_error());
    CHECK(fabsf(ft_f32(p)[0] - 0.7613f) < 1e-6f, "nesterov: p = %.8f", ft_f32(p)[0]);

    ft_release(nbuf);
    ft_release(buf);
    ft_release(p);
}

/* Large enough for the OpenMP path. The reference follows torch's _single_tensor_adamw
 * in double precision. */
static void test_adamw_large(void) {
    const int64_t n = 100003;
    ft_set_num_threads(2);
    ft_manual_seed(7);
    ft_tensor *p = ft_randn(&n, 1);
    double *rp = malloc(sizeof(double) * n), *rm = calloc(n, sizeof(double)),
           *rv = calloc(n, sizeof(double));
    for (int64_t i = 0; i < n; i++) rp[i] = ft_f32(p)[i];
    ft_adam_state st = {0};
    ft_adam_opts o = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                      .weight_decay = 0.1, .decoupled = true};
    double worst = 0.0;
    for (int t = 1; t <= 3; t++) {
        ft_release(p->grad);
        p->grad = ft_randn(&n, 1);
        const float *g = ft_f32(p->grad);
        CHECK(ft_adam_step(&p, &st, 1, &o) == 0, "adamw step %d: %s", t, ft_last_error());
        double bc1 = 1 - pow(0.9, t), bc2 = 1 - pow(0.999, t);
        for (int64_t i = 0; i < n; i++) {
            rp[i] *= 1 - 1e-2 * 0.1;
            rm[i] = 0.9 * rm[i] + 0.1 * g[i];
            rv[i] = 0.999 * rv[i] + 0.001 * (double)g[i] * g[i];
            rp[i] -= 1e-2 / bc1 * rm[i] / (sqrt(rv[i]) / sqrt(bc2) + 1e-8);
            double d = fabs(rp[i] - ft_f32(p)[i]);
            if (d > worst) worst = d;
        }
    }
    CHECK(st.step == 3, "adamw: step count %lld", (long long)st.step);
    CHECK(worst < 1e-5, "adamw large: max abs difference from the reference %g", worst);
    ft_release(st.exp_avg);
    ft_release(st.exp_avg_sq);
    ft_release(p);
    free(rp);
    free(rm);
    free(rv);
}

static void test_skips_params_without_grad(void) {
    float v[3] = {1, 2, 3};
    ft_tensor *ps[2] = {vec(v, 3), vec(v, 3)};
    ps[1]->grad = vec(v, 3);
    ft_adam_state st[2] = {{0}, {0}};
    ft_adam_opts o = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    CHECK(ft_adam_step(ps, st, 2, &o) == 0, "adam: %s", ft_last_error());
    CHECK(st[0].step == 0 && st[0].exp_avg == NULL, "a parameter without grad got state");
    CHECK(memcmp(ft_f32(ps[0]), v, sizeof v) == 0, "a parameter without grad changed");
    CHECK(st[1].step == 1 && st[1].exp_avg != NULL, "the parameter with grad took no step");
    /* first Adam step moves every element by lr (m / sqrt(v) = sign(g) after bias correction) */
    for (int i = 0; i < 3; i++)
        CHECK(fabsf(ft_f32(ps[1])[i] - (v[i] - 0.1f)) < 1e-6f, "adam first step: %g", ft_f32(ps[1])[i]);
    for (int i = 0; i < 2; i++) {
        ft_release(st[i].exp_avg);
        ft_release(st[i].exp_avg_sq);
        ft_release(ps[i]);
    }
}

static void test_clip(void) {
    float a[2] = {3, 0}, b[1] = {4};
    ft_tensor *ps[3] = {vec(a, 2), vec(b, 1), vec(b, 1)};
    ps[0]->grad = vec(a, 2);
    ps[1]->grad = vec(b, 1);  /* ps[2] has no grad */
    double total = 0;
    CHECK(ft_clip_grad_norm(ps, 3, 1.0, 2.0, &total) == 0, "clip: %s", ft_last_error());
    CHECK(fabs(total - 5.0) < 1e-9, "clip: total %g, expected 5", total);
    float c = (float)(1.0 / (5.0 + 1e-6));
    CHECK(fabsf(ft_f32(ps[0]->grad)[0] - 3 * c) < 1e-7f && fabsf(ft_f32(ps[1]->grad)[0] - 4 * c) < 1e-7f,
          "clip: grads %g %g", ft_f32(ps[0]->grad)[0], ft_f32(ps[1]->grad)[0]);
    CHECK(ft_clip_grad_norm(ps, 3, 10.0, INFINITY, &total) == 0, "clip inf: %s", ft_last_error());
    CHECK(fabs(total - 4 * c) < 1e-7, "clip inf: total %g", total);
    CHECK(ft_clip_grad_norm(ps, 3, 10.0, 1.0, &total) == 0, "clip l1: %s", ft_last_error());
    CHECK(fabs(total - 7 * c) < 1e-6, "clip l1: total %g", total);
    CHECK(ft_clip_grad_norm(ps, 3, 1.0, -1.0, &total) < 0, "clip accepted a negative norm_type");

    ft_zero_grad(ps, 3, false);
    CHECK(ps[0]->grad && ft_f32(ps[0]->grad)[0] == 0.0f, "zero_grad(false) did not zero");
    ft_zero_grad(ps, 3, true);
    CHECK(!ps[0]->grad && !ps[1]->grad, "zero_grad(true) kept a grad");
    for (int i = 0; i < 3; i++) ft_release(ps[i]);
}

static void test_errors(void) {
    int64_t shape[2] = {2, 3};
    ft_tensor *m = ft_zeros(shape, 2, FT_FLOAT32);
    ft_tensor *t = ft_transpose(m, 0, 1);
    t->grad = ft_zeros(t->shape, 2, FT_FLOAT32);
    ft_tensor *buf = NULL;
    ft_sgd_opts o = {.lr = 0.1};
    CHECK(ft_sgd_step(&t, &buf, 1, &o) < 0 && strstr(ft_last_error(), "not contiguous"),
          "a non-contiguous parameter was accepted (%s)", ft_last_error());

    m->grad = ft_zeros(shape, 1, FT_FLOAT32);  /* [2]: wrong shape */
    CHECK(ft_sgd_step(&m, &buf, 1, &o) < 0 && strstr(ft_last_error(), "[2,3]") &&
          strstr(ft_last_error(), "[2]"), "a grad of the wrong shape was accepted (%s)", ft_last_error());
    ft_release(m->grad);
    m->grad = ft_zeros(shape, 2, FT_FLOAT32);

    ft_sgd_opts bad = {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true};
    CHECK(ft_sgd_step(&m, &buf, 1, &bad) < 0 && strstr(ft_last_error(), "nesterov"),
          "nesterov with dampening was accepted");

    ft_adam_state st = {0};
    st.exp_avg = ft_zeros(shape, 1, FT_FLOAT32);
    ft_adam_opts a = {.lr = 0.1, .beta1 = 0.9, .beta2 = 0.999};
    CHECK(ft_adam_step(&m, &st, 1, &a) < 0 && strstr(ft_last_error(), "exp_avg"),
          "a state buffer of the wrong shape was accepted (%s)", ft_last_error());
    ft_release(st.exp_avg);
    ft_release(t);
    ft_release(m);
}

static const check_test tests[] = {
    CHECK_TEST(test_sgd_by_hand), CHECK_TEST(test_adamw_large), CHECK_TEST(test_skips_params_without_grad),
    CHECK_TEST(test_clip),        CHECK_TEST(test_errors),
};

int main(void) { return check_run("test_optim", tests, sizeof tests / sizeof tests[0]); }
