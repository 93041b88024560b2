/* Optimizer steps (SGD, Adam, AdamW), gradient clipping and zero_grad.
 *
 * Each step is one fused loop per parameter that reads the gradient once and updates
 * the parameter and its state buffers in place. The arithmetic follows PyTorch's
 * single-tensor implementations op by op in float32 (scalars computed in double and
 * rounded once), so results agree with torch.optim to a few float32 ulps. */
#include "ft/optim.h"

#include <math.h>
#include <string.h>

/* Below this many elements a parameter is updated by one thread: the fork/join cost
 * of a parallel region exceeds the work. */
#define OPTIM_PAR_MIN 32768

/* The i-th parameter must be a contiguous float32 tensor; its grad, when present,
 * a float32 tensor of the same shape. */
static int check_param(const ft_tensor *p, int i, const char *op) {
    char a[128], b[128];
    if (!p) {
        ft_set_error("%s: parameter %d is NULL", op, i);
        return -1;
    }
    if (p->dtype != FT_FLOAT32) {   /* bfloat16/float16/float64 hold frozen values, not trained ones */
        ft_set_error("%s: parameter %d (shape %s) has dtype %s; optimizers update float32 parameters only: "
                     "train float32 parameters (adapters are float32) or convert it with :to(\"float32\")",
                     op, i, ft_shape_str(p->shape, p->ndim, a, sizeof a), ft_dtype_name(p->dtype));
        return -1;
    }
    if (!ft_is_contiguous(p)) {
        ft_set_error("%s: parameter %d (shape %s) is not contiguous", op, i,
                     ft_shape_str(p->shape, p->ndim, a, sizeof a));
        return -1;
    }
    const ft_tensor *g = p->grad;
    if (g && (g->dtype != FT_FLOAT32 || !ft_same_shape(p, g))) {
        ft_set_error("%s: parameter %d has shape %s but its grad is %s %s", op, i,
                     ft_shape_str(p->shape, p->ndim, a, sizeof a), ft_dtype_name(g->dtype),
                     ft_shape_str(g->shape, g->ndim, b, sizeof b));
        return -1;
    }
    return 0;
}

/* A state buffer handed in by the caller must match its parameter. */
static int check_state(const ft_tensor *s, const ft_tensor *p, int i, const char *name,
                       const char *op) {
    char a[128], b[128];
    if (!s) return 0;
    if (s->dtype != FT_FLOAT32 || !ft_is_contiguous(s) || !ft_same_shape(s, p)) {
        ft_set_error("%s: %s of parameter %d is %s %s, expected contiguous float32 %s", op,
                     name, i, ft_dtype_name(s->dtype), ft_shape_str(s->shape, s->ndim, a, sizeof a),
                     ft_shape_str(p->shape, p->ndim, b, sizeof b));
        return -1;
    }
    return 0;
}

static int check_all(ft_tensor *const *params, int n, const char *op) {
    if (n < 0 || (n > 0 && !params)) {
        ft_set_error("%s: bad parameter list (n = %d)", op, n);
        return -1;
    }
    for (int i = 0; i < n; i++)
        if (check_param(params[i], i, op) < 0) return -1;
    return 0;
}

/* A new zero-filled buffer shaped like p (plain tensor, no autograd). */
static ft_tensor *new_buffer(const ft_tensor *p) { return ft_zeros(p->shape, p->ndim, FT_FLOAT32); }

/* ---- SGD --------------------------------------------------------------------- */

/* p, g, buf: [n]. buf is NULL when momentum is off; fresh: buf has no history yet. */
static void sgd_kernel(float *restrict p, const float *restrict g, float *restrict buf,
                       int64_t n, bool fresh, const ft_sgd_opts *o) {
    const float lr = (float)o->lr, wd = (float)o->weight_decay, mom = (float)o->momentum;
    const float keep = (float)(1.0 - o->dampening);
    const float sign = o->maximize ? -1.0f : 1.0f;
    const bool decay = o->weight_decay != 0.0, nesterov = o->nesterov;

    #pragma omp parallel for if (n >= OPTIM_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float d = sign * g[i];
        if (decay) d = d + wd * p[i];
        if (buf) {
            /* torch: buf = clone(d) on the first step, no dampening */
            float b = fresh ? d : mom * buf[i] + keep * d;
            buf[i] = b;
            d = nesterov ? d + mom * b : b;
        }
        p[i] = p[i] - lr * d;
    }
}

int ft_sgd_step(ft_tensor *const *params, ft_tensor **momentum_buffers, int n,
                const ft_sgd_opts *o) {
    const char *op = "sgd";
    if (check_all(params, n, op) < 0) return -1;
    const bool use_momentum = o->momentum != 0.0;
    if (use_momentum && !momentum_buffers) {
        ft_set_error("%s: momentum %g needs a momentum buffer list", op, o->momentum);
        return -1;
    }
    if (o->nesterov && (o->momentum <= 0.0 || o->dampening != 0.0)) {
        ft_set_error("%s: nesterov momentum requires a momentum and zero dampening "
                     "(momentum %g, dampening %g)", op, o->momentum, o->dampening);
        return -1;
    }
    if (use_momentum)
        for (int i = 0; i < n; i++)
            if (check_state(momentum_buffers[i], params[i], i, "momentum_buffer", op) < 0) return -1;

    for (int i = 0; i < n; i++) {
        ft_tensor *p = params[i];
        if (!p->grad) continue;
        ft_tensor *g = ft_contiguous(p->grad);
        if (!g) return -1;
        float *buf = NULL;
        bool fresh = false;
        if (use_momentum) {
            if (!momentum_buffers[i]) {
                momentum_buffers[i] = ft_empty(p->shape, p->ndim, FT_FLOAT32);
                if (!momentum_buffers[i]) {
                    ft_release(g);
                    return -1;
                }
                fresh = true;
            }
            buf = ft_f32(momentum_buffers[i]);
        }
        sgd_kernel(ft_f32(p), ft_f32(g), buf, ft_numel(p), fresh, o);
        ft_release(g);
    }
    return 0;
}

/* ---- Adam / AdamW ---------------------------------------------------------------- */

/* p, g, m, v, vmax: [n]; vmax NULL without amsgrad. step_size = lr / (1 - beta1^t),
 * bc2_sqrt = sqrt(1 - beta2^t), decay = 1 - lr * wd (AdamW) or 1. */
static void adam_kernel(float *restrict p, const float *restrict g, float *restrict m,
                        float *restrict v, float *restrict vmax, int64_t n, float step_size,
                        float bc2_sqrt, float decay, const ft_adam_opts *o) {
    const float b1 = (float)o->beta1, b2 = (float)o->beta2;
    const float omb1 = (float)(1.0 - o->beta1), omb2 = (float)(1.0 - o->beta2);
    const float eps = (float)o->eps, wd = (float)o->weight_decay;
    const float sign = o->maximize ? -1.0f : 1.0f;
    const bool l2 = !o->decoupled && o->weight_decay != 0.0;
    const bool decoupled = o->decoupled && decay != 1.0f;

    #pragma omp parallel for if (n >= OPTIM_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = sign * g[i];
        float pi = p[i];
        if (l2) gi = gi + wd * pi;
        if (decoupled) pi = pi * decay;
        float mi = b1 * m[i] + omb1 * gi;
        float vi = b2 * v[i] + omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        if (vmax) {
            vi = vmax[i] > vi ? vmax[i] : vi;
            vmax[i] = vi;
        }
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = pi - step_size * (mi / denom);
    }
}

int ft_adam_step(ft_tensor *const *params, ft_adam_state *states, int n, const ft_adam_opts *o) {
    const char *op = o->decoupled ? "adamw" : "adam";
    if (check_all(params, n, op) < 0) return -1;
    if (n > 0 && !states) {
        ft_set_error("%s: missing state list", op);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (check_state(states[i].exp_avg, params[i], i, "exp_avg", op) < 0 ||
            check_state(states[i].exp_avg_sq, params[i], i, "exp_avg_sq", op) < 0 ||
            check_state(states[i].max_exp_avg_sq, params[i], i, "max_exp_avg_sq", op) < 0)
            return -1;
        if (states[i].step < 0) {
            ft_set_error("%s: step of parameter %d is negative (%lld)", op, i,
                         (long long)states[i].step);
            return -1;
        }
    }

    for (int i = 0; i < n; i++) {
        ft_tensor *p = params[i];
        ft_adam_state *s = &states[i];
        if (!p->grad) continue;
        if (!s->exp_avg && !(s->exp_avg = new_buffer(p))) return -1;
        if (!s->exp_avg_sq && !(s->exp_avg_sq = new_buffer(p))) return -1;
        if (o->amsgrad && !s->max_exp_avg_sq && !(s->max_exp_avg_sq = new_buffer(p))) return -1;
        ft_tensor *g = ft_contiguous(p->grad);
        if (!g) return -1;

        s->step += 1;
        const double t = (double)s->step;
        const double step_size = o->lr / (1.0 - pow(o->beta1, t));
        const double bc2_sqrt = sqrt(1.0 - pow(o->beta2, t));
        const double decay = o->decoupled ? 1.0 - o->lr * o->weight_decay : 1.0;
        adam_kernel(ft_f32(p), ft_f32(g), ft_f32(s->exp_avg), ft_f32(s->exp_avg_sq),
                    o->amsgrad ? ft_f32(s->max_exp_avg_sq) : NULL, ft_numel(p),
                    (float)step_size, (float)bc2_sqrt, (float)decay, o);
        ft_release(g);
    }
    return 0;
}

/* ---- gradient clipping ------------------------------------------------------------ */

/* sum |x|^q over x[n] (q = 2 and 1 without pow), or max |x| when q is infinite. */
static double norm_part(const float *x, int64_t n, double q) {
    double acc = 0.0;
    if (isinf(q)) {
        float mx = 0.0f;
        #pragma omp parallel for if (n >= OPTIM_PAR_MIN) reduction(max : mx) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float a = fabsf(x[i]);
            if (a > mx || a != a) mx = a;  /* keep a NaN visible */
        }
        return mx;
    }
    if (q == 2.0) {
        #pragma omp parallel for if (n >= OPTIM_PAR_MIN) reduction(+ : acc) schedule(static)
        for (int64_t i = 0; i < n; i++) acc += (double)x[i] * x[i];
    } else if (q == 1.0) {
        #pragma omp parallel for if (n >= OPTIM_PAR_MIN) reduction(+ : acc) schedule(static)
        for (int64_t i = 0; i < n; i++) acc += fabs((double)x[i]);
    } else {
        #pragma omp parallel for if (n >= OPTIM_PAR_MIN) reduction(+ : acc) schedule(static)
        for (int64_t i = 0; i < n; i++) acc += pow(fabs((double)x[i]), q);
    }
    return acc;
}

static void scale_inplace(float *x, int64_t n, float c) {
    #pragma omp parallel for if (n >= OPTIM_PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) x[i] *= c;
}

int ft_clip_grad_norm(ft_tensor *const *params, int n, double max_norm, double norm_type,
                      double *total) {
    const char *op = "clip_grad_norm";
    if (check_all(params, n, op) < 0) return -1;
    if (!(norm_type > 0.0)) {
        ft_set_error("%s: norm_type must be positive or inf, got %g", op, norm_type);
        return -1;
    }
    if (isnan(max_norm)) {
        ft_set_error("%s: max_norm is NaN", op);
        return -1;
    }

    double acc = 0.0;
    const bool inf_norm = isinf(norm_type);
    for (int i = 0; i < n; i++) {
        const ft_tensor *g = params[i]->grad;
        if (!g) continue;
        ft_tensor *gc = ft_contiguous(g);
        if (!gc) return -1;
        double part = norm_part(ft_f32(gc), ft_numel(gc), norm_type);
        ft_release(gc);
        if (inf_norm) acc = (part > acc || isnan(part)) ? part : acc;
        else acc += part;
    }
    double norm = inf_norm ? acc : (norm_type == 1.0 ? acc : pow(acc, 1.0 / norm_type));
    if (total) *total = norm;

    /* torch multiplies by min(coef, 1); skipping the multiply by 1 changes nothing.
     * A NaN norm still propagates into the grads, as in torch. */
    double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return 0;
    for (int i = 0; i < n; i++) {
        ft_tensor *g = params[i]->grad;
        if (!g) continue;
        if (ft_is_contiguous(g)) {
            scale_inplace(ft_f32(g), ft_numel(g), (float)coef);
        } else {
            /* a strided grad: scale a contiguous copy and write it back */
            ft_tensor *c = ft_contiguous(g);
            if (!c) return -1;
            scale_inplace(ft_f32(c), ft_numel(c), (float)coef);
            int rc = ft_copy_(g, c);
            ft_release(c);
            if (rc < 0) return -1;
        }
    }
    return 0;
}

/* ---- zero_grad -------------------------------------------------------------------- */

void ft_zero_grad(ft_tensor *const *params, int n, bool set_to_none) {
    for (int i = 0; i < n; i++) {
        ft_tensor *p = params[i];
        if (!p || !p->grad) continue;
        if (set_to_none) {
            ft_release(p->grad);
            p->grad = NULL;
        } else {
            ft_fill_(p->grad, 0.0);
        }
    }
}
