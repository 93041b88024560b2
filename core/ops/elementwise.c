/* Elementwise ops: unary math, binary arithmetic with broadcasting, comparisons,
 * masked_fill and where. Forward kernels and their backward functions side by side.
 *
 * Every kernel runs over an iter_plan: the operands broadcast to a contiguous output
 * shape, with size-1 dims dropped and adjacent dims merged wherever all operands
 * allow it. Contiguous same-shape inputs then become one long row, a scalar or a
 * bias row becomes a row with stride 0, and only truly strided views (transposes,
 * expands) take the general inner loop. */
#include <math.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "fast_exp.h"
#include "ft/tensor.h"

/* Loops over fewer elements stay on one thread: forking costs more than they take. */
#define PAR_MIN 32768
#define MAX_OPERANDS 3

/* GELU constants (strict C11 has no M_SQRT1_2 and friends). */
#define SQRT1_2 0.70710678118654752440f         /* 1/sqrt(2) */
#define GELU_TANH_BETA 0.79788456080286535588f  /* sqrt(2/pi) */
#define GELU_TANH_KAPPA 0.044715f
#define GELU_PDF_BETA 0.39894228040143267794f   /* 1/sqrt(2*pi) */

/* ---- iteration plan ------------------------------------------------------------ */

typedef struct {
    int ndim, nops;
    int64_t n;                                   /* output elements */
    int64_t shape[FT_MAX_DIMS];
    int64_t stride[MAX_OPERANDS][FT_MAX_DIMS];   /* 0 along broadcast dims */
} iter_plan;

typedef struct {
    int64_t idx[FT_MAX_DIMS];
    int64_t off[MAX_OPERANDS];
} cursor;

/* Operands must broadcast to shape (checked by the caller). */
static void plan_init(iter_plan *p, const int64_t *shape, int ndim, int nops,
                      const ft_tensor *const *ops) {
    p->nops = nops;
    p->ndim = 0;
    p->n = 1;
    for (int d = 0; d < ndim; d++) p->n *= shape[d];
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        int k = p->ndim++;
        p->shape[k] = shape[d];
        for (int o = 0; o < nops; o++) {
            int td = d - (ndim - ops[o]->ndim);   /* operand dims align to the right */
            p->stride[o][k] = (td < 0 || ops[o]->shape[td] == 1) ? 0 : ops[o]->strides[td];
        }
    }
    /* Merge dim k into the previous one when every operand steps through both as one. */
    int m = 0;
    for (int k = 0; k < p->ndim; k++) {
        bool merge = m > 0;
        for (int o = 0; o < nops && merge; o++)
            merge = p->stride[o][m - 1] == p->stride[o][k] * p->shape[k];
        if (merge) {
            p->shape[m - 1] *= p->shape[k];
            for (int o = 0; o < nops; o++) p->stride[o][m - 1] = p->stride[o][k];
            continue;
        }
        p->shape[m] = p->shape[k];
        for (int o = 0; o < nops; o++) p->stride[o][m] = p->stride[o][k];
        m++;
    }
    p->ndim = m;
    if (m == 0) {   /* a single element */
        p->ndim = 1;
        p->shape[0] = 1;
        for (int o = 0; o < nops; o++) p->stride[o][0] = 0;
    }
}

static void cursor_seek(const iter_plan *p, cursor *c, int64_t e) {
    for (int o = 0; o < p->nops; o++) c->off[o] = 0;
    for (int d = p->ndim - 1; d >= 0; d--) {
        c->idx[d] = e % p->shape[d];
        e /= p->shape[d];
        for (int o = 0; o < p->nops; o++) c->off[o] += c->idx[d] * p->stride[o][d];
    }
}

/* Steps over len elements that end at most at the end of the current row. */
static void cursor_advance(const iter_plan *p, cursor *c, int64_t len) {
    int d = p->ndim - 1;
    c->idx[d] += len;
    for (int o = 0; o < p->nops; o++) c->off[o] += len * p->stride[o][d];
    while (d > 0 && c->idx[d] == p->shape[d]) {
        for (int o = 0; o < p->nops; o++) c->off[o] -= p->shape[d] * p->stride[o][d];
        c->idx[d] = 0;
        d--;
        c->idx[d]++;
        for (int o = 0; o < p->nops; o++) c->off[o] += p->stride[o][d];
    }
}

/* This thread's share [lo, hi) of n elements. */
static void thread_range(int64_t n, int64_t *lo, int64_t *hi) {
    int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t chunk = n / nt, rem = n % nt;
    *lo = t * chunk + (t < rem ? t : rem);
    *hi = *lo + chunk + (t < rem ? 1 : 0);
}

/* Row-by-row walk shared by the loops below: each thread takes an equal share of the
 * output, and the block given runs for every piece of a row (len_ elements, first
 * output element e_, operand offsets in c_.off). */
#define PLAN_WALK(P, ...)                                                          \
    do {                                                                           \
        const iter_plan *pp_ = (P);                                                \
        const int64_t npar_ = pp_->n;                                              \
        _Pragma("omp parallel if (npar_ > PAR_MIN)")                               \
        {                                                                          \
            int64_t lo_, hi_;                                                      \
            thread_range(npar_, &lo_, &hi_);                                       \
            cursor c_;                                                             \
            if (lo_ < hi_) cursor_seek(pp_, &c_, lo_);                             \
            const int last_ = pp_->ndim - 1;                                       \
            for (int64_t e_ = lo_; e_ < hi_;) {                                    \
                int64_t len_ = pp_->shape[last_] - c_.idx[last_];                  \
                if (len_ > hi_ - e_) len_ = hi_ - e_;                              \
                __VA_ARGS__                                                        \
                e_ += len_;                                                        \
                cursor_advance(pp_, &c_, len_);                                    \
            }                                                                      \
        }                                                                          \
    } while (0)

/* O[e] = EXPR(x) over one operand. */
#define LOOP1(P, TX, X0, TO, O0, EXPR)                                             \
    PLAN_WALK(P, {                                                                 \
        const TX *xs_ = (X0) + c_.off[0];                                          \
        TO *os_ = (O0) + e_;                                                       \
        const int64_t sx_ = pp_->stride[0][last_];                                 \
        if (sx_ == 1) {                                                            \
            for (int64_t k_ = 0; k_ < len_; k_++) { TX x = xs_[k_]; os_[k_] = (EXPR); } \
        } else {                                                                   \
            for (int64_t k_ = 0; k_ < len_; k_++) { TX x = xs_[k_ * sx_]; os_[k_] = (EXPR); } \
        }                                                                          \
    })

/* O[e] = EXPR(x, y) over two broadcast operands; unit and zero inner strides get
 * their own loops so the compiler can vectorise them. */
#define LOOP2(P, TX, X0, TY, Y0, TO, O0, EXPR)                                     \
    PLAN_WALK(P, {                                                                 \
        const TX *xs_ = (X0) + c_.off[0];                                          \
        const TY *ys_ = (Y0) + c_.off[1];                                          \
        TO *os_ = (O0) + e_;                                                       \
        const int64_t sx_ = pp_->stride[0][last_], sy_ = pp_->stride[1][last_];    \
        if (sx_ == 1 && sy_ == 1) {                                                \
            for (int64_t k_ = 0; k_ < len_; k_++) { TX x = xs_[k_]; TY y = ys_[k_]; os_[k_] = (EXPR); } \
        } else if (sx_ == 1 && sy_ == 0) {                                         \
            const TY y = ys_[0];                                                   \
            for (int64_t k_ = 0; k_ < len_; k_++) { TX x = xs_[k_]; os_[k_] = (EXPR); } \
        } else if (sx_ == 0 && sy_ == 1) {                                         \
            const TX x = xs_[0];                                                   \
            for (int64_t k_ = 0; k_ < len_; k_++) { TY y = ys_[k_]; os_[k_] = (EXPR); } \
        } else {                                                                   \
            for (int64_t k_ = 0; k_ < len_; k_++) {                                \
                TX x = xs_[k_ * sx_]; TY y = ys_[k_ * sy_]; os_[k_] = (EXPR);      \
            }                                                                      \
        }                                                                          \
    })

/* O[e] = EXPR(x, y, z) over three broadcast operands (where, div/pow backward). */
#define LOOP3(P, TX, X0, TY, Y0, TZ, Z0, TO, O0, EXPR)                             \
    PLAN_WALK(P, {                                                                 \
        const TX *xs_ = (X0) + c_.off[0];                                          \
        const TY *ys_ = (Y0) + c_.off[1];                                          \
        const TZ *zs_ = (Z0) + c_.off[2];                                          \
        TO *os_ = (O0) + e_;                                                       \
        const int64_t sx_ = pp_->stride[0][last_], sy_ = pp_->stride[1][last_];    \
        const int64_t sz_ = pp_->stride[2][last_];                                 \
        if (sx_ == 1 && sy_ == 1 && sz_ == 1) {                                    \
            for (int64_t k_ = 0; k_ < len_; k_++) {                                \
                TX x = xs_[k_]; TY y = ys_[k_]; TZ z = zs_[k_]; os_[k_] = (EXPR);  \
            }                                                                      \
        } else {                                                                   \
            for (int64_t k_ = 0; k_ < len_; k_++) {                                \
                TX x = xs_[k_ * sx_]; TY y = ys_[k_ * sy_]; TZ z = zs_[k_ * sz_];  \
                os_[k_] = (EXPR);                                                  \
            }                                                                      \
        }                                                                          \
    })

/* ---- helpers ------------------------------------------------------------------- */

static int expect_f32(const ft_tensor *a, const char *op) {
    if (a->dtype == FT_FLOAT32) return 0;
    ft_set_error("%s: expected a float32 tensor, got %s", op, ft_dtype_name(a->dtype));
    return -1;
}

/* A float32 alias or copy of a (int64 operands are promoted, as PyTorch does). */
static ft_tensor *as_f32(const ft_tensor *a) {
    return a->dtype == FT_FLOAT32 ? ft_retain((ft_tensor *)a) : ft_to_dtype(a, FT_FLOAT32);
}

/* g summed down to the shape of a broadcast input. Gradients handed back are
 * contiguous and never a different view of g's storage: the engine may accumulate
 * into a gradient in place when it holds the only reference to that tensor. */
static ft_tensor *reduce_grad(const ft_tensor *g, const ft_tensor *input) {
    if (ft_same_shape(g, input)) return ft_contiguous(g);   /* g itself or a fresh copy */
    return ft_sum_to_shape(g, input->shape, input->ndim);
}

/* ---- scalar formulas (inlined into the loops) -------------------------------- */

/* tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|), with the vectorisable exp: libm's
 * tanhf kept the GELU loops scalar (a quarter of a GPT training step). Its error is
 * absolute (~1e-7), not relative near 0: right for GELU, where it is added to 1. */
static inline float tanh_for_gelu(float u) {
    float e = exp_nonpos(-2.0f * fabsf(u));
    return copysignf((1.0f - e) / (1.0f + e), u);
}

/* sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) below, e = exp(-|x|), with the
 * vectorisable exp: libm's expf kept the sigmoid and SiLU loops scalar. Relative error of a
 * few ulp over the whole range; 0 below -87.3, 1 at +inf, NaN stays NaN. */
static inline float sigmoid_no_libm(float x) {
    float e = exp_nonpos(-fabsf(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

static inline float gelu_tanh(float x) {
    return 0.5f * x * (1.0f + tanh_for_gelu(GELU_TANH_BETA * (x + GELU_TANH_KAPPA * x * x * x)));
}

/* d/dx of 0.5 x (1 + tanh(beta (x + kappa x^3))), written as PyTorch writes it. */
static inline float gelu_tanh_grad(float x) {
    float th = tanh_for_gelu(GELU_TANH_BETA * (x + GELU_TANH_KAPPA * x * x * x));
    float left_derivative = 0.5f * (1.0f + th);
    float right_derivative = 0.5f * x * (1.0f - th * th) * GELU_TANH_BETA *
                             (1.0f + 3.0f * GELU_TANH_KAPPA * x * x);
    return left_derivative + right_derivative;
}

/* d/dx of x sigmoid(x) */
static inline float silu_grad(float x) {
    float s = sigmoid_no_libm(x);
    return s * (1.0f + x * (1.0f - s));
}

/* min(max(x, lo), hi) as PyTorch: hi wins when lo > hi; NaN propagates. */
static inline float clamp1(float x, float lo, float hi) {
    float t = x < lo ? lo : x;
    return t > hi ? hi : t;
}

/* ---- the op tables --------------------------------------------------------------
 *
 * Every elementwise float op is declared once, in one of the two tables below; the enums,
 * names, saved tensors and the forward and backward kernels are all generated from them.
 * Adding an op is one line here plus its public function (ft/ops.h) and its binding.
 * int64 tensors have their own small kernels (unary_i64, binary_i64): negation and
 * arithmetic with integers, which wraps around as torch's does.
 *
 * UNARY_OPS(X): X(ENUM, name, forward, saves, backward)
 *   forward:  an expression in x (the input element) and the op's scalars p0, p1
 *   saves:    what backward reads: SAVE_NONE, SAVE_INPUT or SAVE_OUTPUT
 *   backward: the input's gradient as an expression in x (the output's gradient element),
 *             y (the saved element; the gradient itself for SAVE_NONE) and p0, p1
 * Expressions are parenthesised so that their commas stay inside one macro argument. */
typedef enum { SAVE_NONE, SAVE_INPUT, SAVE_OUTPUT } save_kind;

#define UNARY_OPS(X)                                                                               \
    X(NEG, "neg", (-x), SAVE_NONE, (x * -1.0f))                                                    \
    X(ADDS, "add", (x + p0), SAVE_NONE, (x))                                                       \
    X(MULS, "mul", (x * p0), SAVE_NONE, (x * p0))                                                  \
    X(RSUBS, "rsub", (p0 - x), SAVE_NONE, (x * -1.0f))                                             \
    X(RDIVS, "rdiv", (p0 / x), SAVE_INPUT, (-x * p0 / (y * y)))                                    \
    X(POWS, "pow", (powf(x, p0)), SAVE_INPUT, (p0 == 0.0f ? 0.0f : x * (p0 * powf(y, p0 - 1.0f)))) \
    X(SQUARE, "pow", (x * x), SAVE_INPUT, (x * 2.0f * y))                                          \
    X(EXP, "exp", (expf(x)), SAVE_OUTPUT, (x * y))                                                 \
    X(LOG, "log", (logf(x)), SAVE_INPUT, (x / y))                                                  \
    X(SQRT, "sqrt", (sqrtf(x)), SAVE_OUTPUT, (x / (2.0f * y)))                                     \
    X(ABS, "abs", (fabsf(x)), SAVE_INPUT, (y > 0.0f ? x : (y < 0.0f ? -x : 0.0f)))                 \
    X(TANH, "tanh", (tanhf(x)), SAVE_OUTPUT, (x * (1.0f - y * y)))                                 \
    X(SIGMOID, "sigmoid", (sigmoid_no_libm(x)), SAVE_OUTPUT, (x * (1.0f - y) * y))                  \
    X(RELU, "relu", (x < 0.0f ? 0.0f : x), SAVE_OUTPUT, (y > 0.0f ? x : 0.0f)) /* NaN stays NaN */ \
    X(GELU, "gelu", (0.5f * x * (1.0f + erff(x * SQRT1_2))), SAVE_INPUT, /* Phi(y) + y phi(y) */   \
      (x * (0.5f * (1.0f + erff(y * SQRT1_2)) + y * expf(-0.5f * y * y) * GELU_PDF_BETA)))         \
    X(GELU_TANH, "gelu", (gelu_tanh(x)), SAVE_INPUT, (x * gelu_tanh_grad(y)))                      \
    X(SILU, "silu", (x * sigmoid_no_libm(x)), SAVE_INPUT, (x * silu_grad(y)))                       \
    X(CLAMP, "clamp", (clamp1(x, p0, p1)), SAVE_INPUT, ((y >= p0 && y <= p1) ? x : 0.0f))

/* BINARY_OPS(X): X(ENUM, name, forward, backward function, a saved for, b saved for)
 *   forward: an expression in x, y (the broadcast operands' elements)
 *   "saved for": the gradients (GRAD_A, GRAD_B) whose computation reads that operand */
#define GRAD_A 1
#define GRAD_B 2
#define BINARY_OPS(X)                                                                              \
    X(ADD, "add", (x + y), add_backward, 0, 0)                                                     \
    X(SUB, "sub", (x - y), sub_backward, 0, 0)                                                     \
    X(MUL, "mul", (x * y), mul_backward, GRAD_B, GRAD_A)                                           \
    X(DIV, "div", (x / y), div_backward, GRAD_B, GRAD_A | GRAD_B)                                  \
    X(POW, "pow", (powf(x, y)), pow_backward, GRAD_A | GRAD_B, GRAD_A | GRAD_B)                   \
    X(SILU_MUL, "silu_mul", (x * sigmoid_no_libm(x) * y), silu_mul_backward, GRAD_A | GRAD_B, GRAD_A)

#define AS_ENUM_U(E, ...) U_##E,
#define AS_ENUM_B(E, ...) B_##E,
typedef enum { UNARY_OPS(AS_ENUM_U) U_COUNT } unary_op;
typedef enum { BINARY_OPS(AS_ENUM_B) B_COUNT } binary_op;

typedef struct {
    const char *name;
    save_kind saves;
} unary_info;

#define AS_UNARY_INFO(E, NAME, FWD, SAVES, BWD) [U_##E] = {NAME, SAVES},
static const unary_info unary_table[] = {UNARY_OPS(AS_UNARY_INFO)};
_Static_assert(sizeof unary_table / sizeof unary_table[0] == U_COUNT, "one unary_table row per unary op");
/* As ggml's op-count guards: a new op also needs its ft_<op> in ft/ops.h, its binding and its
 * forward and gradient checks in tests/c/test_ops_basic.c; update the counts with them. */
_Static_assert(U_COUNT == 18, "unary op added or removed: update ft/ops.h, the bindings and the tests");

/* ---- binary kernels ------------------------------------------------------------ */

/* out[shape] = op(x, y) for float32 x, y broadcasting to shape. */
static ft_tensor *binary_f32(binary_op op, const ft_tensor *x, const ft_tensor *y,
                             const int64_t *shape, int ndim) {
    ft_tensor *out = ft_empty(shape, ndim, FT_FLOAT32);
    if (!out) return NULL;
    const ft_tensor *ops[2] = {x, y};
    iter_plan p;
    plan_init(&p, shape, ndim, 2, ops);
    const float *X = ft_f32(x), *Y = ft_f32(y);
    float *O = ft_f32(out);
    switch (op) {
#define BINARY_CASE(E, NAME, FWD, BWD, SA, SB) case B_##E: LOOP2(&p, float, X, float, Y, float, O, FWD); break;
    BINARY_OPS(BINARY_CASE)
#undef BINARY_CASE
    case B_COUNT: break;
    }
    return out;
}

/* Gradients through a float 0/1 mask m (same shape as g): g where m != 0 (keep) or where
 * m == 0 (drop). For where's and masked_fill's backward. */
static ft_tensor *masked_grad(const ft_tensor *g, const ft_tensor *m, bool keep) {
    ft_tensor *out = ft_empty(g->shape, g->ndim, FT_FLOAT32);
    if (!out) return NULL;
    const ft_tensor *ops[2] = {g, m};
    iter_plan p;
    plan_init(&p, g->shape, g->ndim, 2, ops);
    const float *X = ft_f32(g), *Y = ft_f32(m);
    float *O = ft_f32(out);
    if (keep) LOOP2(&p, float, X, float, Y, float, O, y != 0.0f ? x : 0.0f);
    else LOOP2(&p, float, X, float, Y, float, O, y != 0.0f ? 0.0f : x);
    return out;
}

/* int64 arithmetic wraps around on overflow, as torch's does (computed unsigned: signed
 * overflow is undefined in C). */
static inline int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
static inline int64_t wrap_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

/* int64 arithmetic (no autograd: int64 tensors never require grad): add, sub and mul. */
static ft_tensor *binary_i64(binary_op op, const ft_tensor *x, const ft_tensor *y,
                             const int64_t *shape, int ndim) {
    ft_tensor *out = ft_empty(shape, ndim, FT_INT64);
    if (!out) return NULL;
    const ft_tensor *ops[2] = {x, y};
    iter_plan p;
    plan_init(&p, shape, ndim, 2, ops);
    const int64_t *X = ft_i64(x), *Y = ft_i64(y);
    int64_t *O = ft_i64(out);
    switch (op) {
    case B_ADD: LOOP2(&p, int64_t, X, int64_t, Y, int64_t, O, wrap_add(x, y)); break;
    case B_SUB: LOOP2(&p, int64_t, X, int64_t, Y, int64_t, O, wrap_sub(x, y)); break;
    case B_MUL: LOOP2(&p, int64_t, X, int64_t, Y, int64_t, O, wrap_mul(x, y)); break;
    default: ft_release(out); ft_set_error("internal: no int64 kernel"); return NULL;
    }
    return out;
}

/* ---- add, sub, mul, div, pow: backward --------------------------------------------- */

static int add_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    if (n->inputs[0] && !(gi[0] = reduce_grad(g, n->inputs[0]))) return -1;
    if (n->inputs[1] && !(gi[1] = reduce_grad(g, n->inputs[1]))) return -1;
    return 0;
}

static int sub_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    if (n->inputs[0] && !(gi[0] = reduce_grad(g, n->inputs[0]))) return -1;
    if (n->inputs[1]) {
        const ft_tensor *b = n->inputs[1];
        if (ft_same_shape(g, b)) {
            gi[1] = ft_neg(g);
        } else {   /* negate after reducing: fewer elements */
            ft_tensor *s = ft_sum_to_shape(g, b->shape, b->ndim);
            gi[1] = s ? ft_neg(s) : NULL;
            ft_release(s);
        }
        if (!gi[1]) return -1;
    }
    return 0;
}

/* saved[0] = a (needed for grad b), saved[1] = b (needed for grad a) */
static int mul_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    for (int k = 0; k < 2; k++) {
        if (!n->inputs[k]) continue;
        const ft_tensor *other = n->saved[1 - k];
        ft_tensor *full = binary_f32(B_MUL, g, other, g->shape, g->ndim);
        if (!full) return -1;
        gi[k] = reduce_grad(full, n->inputs[k]);
        ft_release(full);
        if (!gi[k]) return -1;
    }
    return 0;
}

/* Three-operand float kernels over a broadcast output shape. */
typedef enum { T_DIV_BW_B, T_POW_BW_A, T_POW_BW_B, T_SILU_MUL_BW_A, T_WHERE } ternary_op;

static ft_tensor *ternary_f32(ternary_op op, const ft_tensor *x, const ft_tensor *y,
                              const ft_tensor *z, const int64_t *shape, int ndim) {
    ft_tensor *out = ft_empty(shape, ndim, FT_FLOAT32);
    if (!out) return NULL;
    const ft_tensor *ops[3] = {x, y, z};
    iter_plan p;
    plan_init(&p, shape, ndim, 3, ops);
    const float *X = ft_f32(x), *Y = ft_f32(y), *Z = ft_f32(z);
    float *O = ft_f32(out);
    switch (op) {
    case T_DIV_BW_B:   /* -g * a / (b * b) */
        LOOP3(&p, float, X, float, Y, float, Z, float, O, -x * y / (z * z));
        break;
    case T_POW_BW_A:   /* g * b * a^(b-1), 0 where b == 0 */
        LOOP3(&p, float, X, float, Y, float, Z, float, O,
              z == 0.0f ? 0.0f : x * (z * powf(y, z - 1.0f)));
        break;
    case T_POW_BW_B:   /* g * a^b * log(a), 0 where a == 0 and b >= 0 */
        LOOP3(&p, float, X, float, Y, float, Z, float, O,
              (y == 0.0f && z >= 0.0f) ? 0.0f : x * (powf(y, z) * logf(y)));
        break;
    case T_SILU_MUL_BW_A:   /* g * up * silu'(gate): x = g, y = gate, z = up */
        LOOP3(&p, float, X, float, Y, float, Z, float, O, x * z * silu_grad(y));
        break;
    case T_WHERE:      /* x is the condition */
        LOOP3(&p, float, X, float, Y, float, Z, float, O, x != 0.0f ? y : z);
        break;
    }
    return out;
}

/* saved[0] = a, saved[1] = b */
static int div_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    const ft_tensor *a = n->saved[0], *b = n->saved[1];
    if (n->inputs[0]) {
        ft_tensor *full = binary_f32(B_DIV, g, b, g->shape, g->ndim);
        if (!full) return -1;
        gi[0] = reduce_grad(full, n->inputs[0]);
        ft_release(full);
        if (!gi[0]) return -1;
    }
    if (n->inputs[1]) {
        ft_tensor *full = ternary_f32(T_DIV_BW_B, g, a, b, g->shape, g->ndim);
        if (!full) return -1;
        gi[1] = reduce_grad(full, n->inputs[1]);
        ft_release(full);
        if (!gi[1]) return -1;
    }
    return 0;
}

/* saved[0] = a, saved[1] = b */
static int pow_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    static const ternary_op kernels[2] = {T_POW_BW_A, T_POW_BW_B};
    for (int k = 0; k < 2; k++) {
        if (!n->inputs[k]) continue;
        ft_tensor *full = ternary_f32(kernels[k], g, n->saved[0], n->saved[1], g->shape, g->ndim);
        if (!full) return -1;
        gi[k] = reduce_grad(full, n->inputs[k]);
        ft_release(full);
        if (!gi[k]) return -1;
    }
    return 0;
}

/* saved[0] = gate, saved[1] = up (only when the gate's gradient is needed):
 * d gate = g * up * silu'(gate), d up = g * silu(gate). */
static int silu_mul_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    for (int k = 0; k < 2; k++) {
        if (!n->inputs[k]) continue;
        ft_tensor *full = k == 0 ? ternary_f32(T_SILU_MUL_BW_A, g, n->saved[0], n->saved[1], g->shape, g->ndim)
                                 : binary_f32(B_SILU_MUL, n->saved[0], g, g->shape, g->ndim);
        if (!full) return -1;
        gi[k] = reduce_grad(full, n->inputs[k]);
        ft_release(full);
        if (!gi[k]) return -1;
    }
    return 0;
}

typedef struct {
    const char *name;
    ft_backward_fn backward;
    int a_for, b_for;   /* GRAD_A | GRAD_B: which gradients read a, b */
} binary_info;

#define AS_BINARY_INFO(E, NAME, FWD, BWD, SA, SB) [B_##E] = {NAME, BWD, SA, SB},
static const binary_info binary_table[] = {BINARY_OPS(AS_BINARY_INFO)};
_Static_assert(sizeof binary_table / sizeof binary_table[0] == B_COUNT, "one binary_table row per binary op");
_Static_assert(B_COUNT == 6, "binary op added or removed: update ft/ops.h, the bindings and the tests");

/* Shared driver of the arithmetic binary ops. int64 with int64 stays int64 for
 * add/sub/mul; any other mix computes in float32. */
static ft_tensor *arith(binary_op op, const ft_tensor *a, const ft_tensor *b) {
    const binary_info *info = &binary_table[op];
    int64_t shape[FT_MAX_DIMS];
    int ndim;
    if (ft_broadcast_shape(a->shape, a->ndim, b->shape, b->ndim, shape, &ndim, info->name) < 0)
        return NULL;
    if (a->dtype == FT_INT64 && b->dtype == FT_INT64) {
        if (op == B_ADD || op == B_SUB || op == B_MUL) return binary_i64(op, a, b, shape, ndim);
        if (op == B_POW) {
            ft_set_error("%s: expected a float32 tensor, got int64", info->name);
            return NULL;
        }
    }
    ft_tensor *af = as_f32(a), *bf = af ? as_f32(b) : NULL;
    ft_tensor *out = bf ? binary_f32(op, af, bf, shape, ndim) : NULL;
    if (out && ft_grad_needed2(a, b)) {
        ft_node *node = ft_node_new(info->name, info->backward, out, 2, a, b);
        if (node) {
            /* keep only what the needed gradients read: saved[0] = a, saved[1] = b */
            int needed = (node->inputs[0] ? GRAD_A : 0) | (node->inputs[1] ? GRAD_B : 0);
            if (info->a_for & needed) node->saved[0] = ft_detach(af);
            if (info->b_for & needed) node->saved[1] = ft_detach(bf);
        }
    }
    ft_release(af);
    ft_release(bf);
    return out;
}

ft_tensor *ft_add(const ft_tensor *a, const ft_tensor *b) { return arith(B_ADD, a, b); }
ft_tensor *ft_sub(const ft_tensor *a, const ft_tensor *b) { return arith(B_SUB, a, b); }
ft_tensor *ft_mul(const ft_tensor *a, const ft_tensor *b) { return arith(B_MUL, a, b); }
ft_tensor *ft_div(const ft_tensor *a, const ft_tensor *b) { return arith(B_DIV, a, b); }
ft_tensor *ft_pow(const ft_tensor *a, const ft_tensor *b) { return arith(B_POW, a, b); }
ft_tensor *ft_silu_mul(const ft_tensor *gate, const ft_tensor *up) { return arith(B_SILU_MUL, gate, up); }

/* ---- unary kernels ------------------------------------------------------------- */

static ft_tensor *unary_f32(unary_op op, const ft_tensor *a, float p0, float p1) {
    ft_tensor *out = ft_empty(a->shape, a->ndim, FT_FLOAT32);
    if (!out) return NULL;
    iter_plan p;
    plan_init(&p, a->shape, a->ndim, 1, &a);
    const float *X = ft_f32(a);
    float *O = ft_f32(out);
    switch (op) {
#define UNARY_CASE(E, NAME, FWD, SAVES, BWD) case U_##E: LOOP1(&p, float, X, float, O, FWD); break;
    UNARY_OPS(UNARY_CASE)
#undef UNARY_CASE
    case U_COUNT: break;
    }
    return out;
}

/* The input's gradient from g and the saved tensor s (g itself when nothing is saved). */
static ft_tensor *unary_grad_f32(unary_op op, const ft_tensor *g, const ft_tensor *s, float p0, float p1) {
    ft_tensor *out = ft_empty(g->shape, g->ndim, FT_FLOAT32);
    if (!out) return NULL;
    const ft_tensor *ops[2] = {g, s};
    iter_plan p;
    plan_init(&p, g->shape, g->ndim, 2, ops);
    const float *X = ft_f32(g), *Y = ft_f32(s);
    float *O = ft_f32(out);
    switch (op) {
#define UNARY_GRAD_CASE(E, NAME, FWD, SAVES, BWD) \
    case U_##E: LOOP2(&p, float, X, float, Y, float, O, ((void)y, BWD)); break;
    UNARY_OPS(UNARY_GRAD_CASE)
#undef UNARY_GRAD_CASE
    case U_COUNT: break;
    }
    return out;
}

static ft_tensor *unary_i64(unary_op op, const ft_tensor *a, int64_t p0) {
    ft_tensor *out = ft_empty(a->shape, a->ndim, FT_INT64);
    if (!out) return NULL;
    iter_plan p;
    plan_init(&p, a->shape, a->ndim, 1, &a);
    const int64_t *X = ft_i64(a);
    int64_t *O = ft_i64(out);
    switch (op) {
    case U_NEG: LOOP1(&p, int64_t, X, int64_t, O, wrap_sub(0, x)); break;
    case U_ADDS: LOOP1(&p, int64_t, X, int64_t, O, wrap_add(x, p0)); break;
    case U_MULS: LOOP1(&p, int64_t, X, int64_t, O, wrap_mul(x, p0)); break;
    case U_RSUBS: LOOP1(&p, int64_t, X, int64_t, O, wrap_sub(p0, x)); break;
    default: ft_release(out); ft_set_error("internal: no int64 kernel"); return NULL;
    }
    return out;
}

/* node->i[0] = unary_op, node->f[0..1] = its scalars, saved[0] = input or output */
static int unary_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    const ft_tensor *s = n->saved[0] ? n->saved[0] : g;
    gi[0] = unary_grad_f32((unary_op)n->i[0], g, s, (float)n->f[0], (float)n->f[1]);
    return gi[0] ? 0 : -1;
}

static ft_tensor *unary(unary_op op, const ft_tensor *a, double p0, double p1) {
    const char *name = unary_table[op].name;
    if (a->dtype == FT_INT64) {
        /* integer arithmetic with an integral scalar stays int64, as in PyTorch */
        bool integral = fabs(p0) < 9.0e18 && p0 == (double)(int64_t)p0;
        bool int_ok = op == U_NEG || ((op == U_ADDS || op == U_MULS || op == U_RSUBS) && integral);
        if (int_ok) return unary_i64(op, a, (int64_t)p0);
        if (op == U_ADDS || op == U_MULS || op == U_RSUBS || op == U_RDIVS) {
            ft_tensor *af = ft_to_dtype(a, FT_FLOAT32);
            ft_tensor *out = af ? unary_f32(op, af, (float)p0, (float)p1) : NULL;
            ft_release(af);
            return out;
        }
    }
    if (expect_f32(a, name) < 0) return NULL;
    ft_tensor *out = unary_f32(op, a, (float)p0, (float)p1);
    if (out && ft_grad_needed1(a)) {
        ft_node *node = ft_node_new(name, unary_backward, out, 1, a);
        if (!node) return out;
        node->i[0] = op;
        node->f[0] = p0;
        node->f[1] = p1;
        if (unary_table[op].saves == SAVE_INPUT) node->saved[0] = ft_detach(a);
        if (unary_table[op].saves == SAVE_OUTPUT) node->saved[0] = ft_detach(out);
    }
    return out;
}

ft_tensor *ft_add_scalar(const ft_tensor *a, double s) { return unary(U_ADDS, a, s, 0); }
ft_tensor *ft_mul_scalar(const ft_tensor *a, double s) { return unary(U_MULS, a, s, 0); }
ft_tensor *ft_rsub_scalar(const ft_tensor *a, double s) { return unary(U_RSUBS, a, s, 0); }
ft_tensor *ft_rdiv_scalar(const ft_tensor *a, double s) { return unary(U_RDIVS, a, s, 0); }
ft_tensor *ft_pow_scalar(const ft_tensor *a, double e) {
    return e == 2.0 ? unary(U_SQUARE, a, e, 0) : unary(U_POWS, a, e, 0);
}
ft_tensor *ft_neg(const ft_tensor *a) { return unary(U_NEG, a, 0, 0); }
ft_tensor *ft_exp(const ft_tensor *a) { return unary(U_EXP, a, 0, 0); }
ft_tensor *ft_log(const ft_tensor *a) { return unary(U_LOG, a, 0, 0); }
ft_tensor *ft_sqrt(const ft_tensor *a) { return unary(U_SQRT, a, 0, 0); }
ft_tensor *ft_abs(const ft_tensor *a) { return unary(U_ABS, a, 0, 0); }
ft_tensor *ft_tanh(const ft_tensor *a) { return unary(U_TANH, a, 0, 0); }
ft_tensor *ft_sigmoid(const ft_tensor *a) { return unary(U_SIGMOID, a, 0, 0); }
ft_tensor *ft_relu(const ft_tensor *a) { return unary(U_RELU, a, 0, 0); }
ft_tensor *ft_gelu(const ft_tensor *a, bool tanh_approx) {
    return unary(tanh_approx ? U_GELU_TANH : U_GELU, a, 0, 0);
}
ft_tensor *ft_silu(const ft_tensor *a) { return unary(U_SILU, a, 0, 0); }
ft_tensor *ft_clamp(const ft_tensor *a, double lo, double hi) {
    if (isnan(lo) || isnan(hi)) {
        ft_set_error("clamp: bounds must not be NaN");
        return NULL;
    }
    return unary(U_CLAMP, a, lo, hi);
}

/* ---- comparisons --------------------------------------------------------------- */

#define CMP_CASES(T, X, Y)                                                         \
    switch (cmp) {                                                                 \
    case FT_EQ: LOOP2(&p, T, X, T, Y, float, O, x == y ? 1.0f : 0.0f); break;      \
    case FT_NE: LOOP2(&p, T, X, T, Y, float, O, x != y ? 1.0f : 0.0f); break;      \
    case FT_LT: LOOP2(&p, T, X, T, Y, float, O, x < y ? 1.0f : 0.0f); break;       \
    case FT_LE: LOOP2(&p, T, X, T, Y, float, O, x <= y ? 1.0f : 0.0f); break;      \
    case FT_GT: LOOP2(&p, T, X, T, Y, float, O, x > y ? 1.0f : 0.0f); break;       \
    case FT_GE: LOOP2(&p, T, X, T, Y, float, O, x >= y ? 1.0f : 0.0f); break;      \
    }

ft_tensor *ft_compare(const ft_tensor *a, const ft_tensor *b, ft_cmp cmp) {
    static const char *names[] = {"eq", "ne", "lt", "le", "gt", "ge"};
    int64_t shape[FT_MAX_DIMS];
    int ndim;
    if ((unsigned)cmp > FT_GE) {
        ft_set_error("compare: unknown comparison %d", (int)cmp);
        return NULL;
    }
    if (ft_broadcast_shape(a->shape, a->ndim, b->shape, b->ndim, shape, &ndim, names[cmp]) < 0)
        return NULL;
    /* mixed dtypes compare in float32 */
    bool ints = a->dtype == FT_INT64 && b->dtype == FT_INT64;
    ft_tensor *x = ints ? ft_retain((ft_tensor *)a) : as_f32(a);
    ft_tensor *y = ints ? ft_retain((ft_tensor *)b) : (x ? as_f32(b) : NULL);
    ft_tensor *out = y ? ft_empty(shape, ndim, FT_FLOAT32) : NULL;
    if (out) {
        const ft_tensor *ops[2] = {x, y};
        iter_plan p;
        plan_init(&p, shape, ndim, 2, ops);
        float *O = ft_f32(out);
        if (ints) {
            const int64_t *X = ft_i64(x), *Y = ft_i64(y);
            CMP_CASES(int64_t, X, Y)
        } else {
            const float *X = ft_f32(x), *Y = ft_f32(y);
            CMP_CASES(float, X, Y)
        }
    }
    ft_release(x);
    ft_release(y);
    return out;
}

/* ---- masked_fill and where ----------------------------------------------------- */

/* A float32 0/1-valued view or copy of a mask of any dtype (nonzero = true). */
static ft_tensor *mask_f32(const ft_tensor *m) {
    if (m->dtype == FT_FLOAT32) return ft_detach(m);
    ft_tensor *out = ft_empty(m->shape, m->ndim, FT_FLOAT32);
    if (!out) return NULL;
    iter_plan p;
    plan_init(&p, m->shape, m->ndim, 1, &m);
    const int64_t *X = ft_i64(m);
    float *O = ft_f32(out);
    LOOP1(&p, int64_t, X, float, O, x != 0 ? 1.0f : 0.0f);
    return out;
}

/* saved[0] = the float mask; the gradient is zero where the value was filled. */
static int masked_fill_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    gi[0] = masked_grad(g, n->saved[0], false);
    return gi[0] ? 0 : -1;
}

ft_tensor *ft_masked_fill(const ft_tensor *a, const ft_tensor *mask, double value) {
    int64_t shape[FT_MAX_DIMS];
    int ndim;
    char sa[128], sm[128];
    if (ft_broadcast_shape(a->shape, a->ndim, mask->shape, mask->ndim, shape, &ndim,
                           "masked_fill") < 0)
        return NULL;
    if (ndim != a->ndim) {   /* the mask may broadcast against a, never grow it */
        ft_set_error("masked_fill: mask %s does not broadcast to input %s",
                     ft_shape_str(mask->shape, mask->ndim, sm, sizeof sm),
                     ft_shape_str(a->shape, a->ndim, sa, sizeof sa));
        return NULL;
    }
    for (int d = 0; d < ndim; d++) {
        if (shape[d] != a->shape[d]) {
            ft_set_error("masked_fill: mask %s does not broadcast to input %s",
                         ft_shape_str(mask->shape, mask->ndim, sm, sizeof sm),
                         ft_shape_str(a->shape, a->ndim, sa, sizeof sa));
            return NULL;
        }
    }
    if (a->dtype == FT_INT64 && !ft_is_int64_value(value)) {
        ft_set_error("masked_fill: %g is not an integer (int64 tensors hold integers)", value);
        return NULL;
    }
    ft_tensor *m = mask_f32(mask);
    if (!m) return NULL;
    ft_tensor *out = ft_empty(a->shape, a->ndim, a->dtype);
    if (out) {
        const ft_tensor *ops[2] = {a, m};
        iter_plan p;
        plan_init(&p, a->shape, a->ndim, 2, ops);
        const float *M = ft_f32(m);
        if (a->dtype == FT_INT64) {
            const int64_t v = (int64_t)value;
            LOOP2(&p, int64_t, ft_i64(a), float, M, int64_t, ft_i64(out), y != 0.0f ? v : x);
        } else {
            const float v = (float)value;
            LOOP2(&p, float, ft_f32(a), float, M, float, ft_f32(out), y != 0.0f ? v : x);
        }
        if (ft_grad_needed1(a)) {
            ft_node *node = ft_node_new("masked_fill", masked_fill_backward, out, 1, a);
            if (node) node->saved[0] = ft_detach(m);
        }
    }
    ft_release(m);
    return out;
}

/* saved[0] = the float condition */
static int where_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    for (int k = 0; k < 2; k++) {
        if (!n->inputs[k]) continue;
        ft_tensor *full = masked_grad(g, n->saved[0], k == 0);   /* a where cond, b elsewhere */
        if (!full) return -1;
        gi[k] = reduce_grad(full, n->inputs[k]);
        ft_release(full);
        if (!gi[k]) return -1;
    }
    return 0;
}

ft_tensor *ft_where(const ft_tensor *cond, const ft_tensor *a, const ft_tensor *b) {
    int64_t ab[FT_MAX_DIMS], shape[FT_MAX_DIMS];
    int nab, ndim;
    if (ft_broadcast_shape(a->shape, a->ndim, b->shape, b->ndim, ab, &nab, "where") < 0 ||
        ft_broadcast_shape(cond->shape, cond->ndim, ab, nab, shape, &ndim, "where") < 0)
        return NULL;
    bool ints = a->dtype == FT_INT64 && b->dtype == FT_INT64;
    ft_tensor *c = mask_f32(cond);
    ft_tensor *x = c ? (ints ? ft_retain((ft_tensor *)a) : as_f32(a)) : NULL;
    ft_tensor *y = x ? (ints ? ft_retain((ft_tensor *)b) : as_f32(b)) : NULL;
    ft_tensor *out = NULL;
    if (y) {
        if (ints) {
            out = ft_empty(shape, ndim, FT_INT64);
            if (out) {
                const ft_tensor *ops[3] = {c, x, y};
                iter_plan p;
                plan_init(&p, shape, ndim, 3, ops);
                LOOP3(&p, float, ft_f32(c), int64_t, ft_i64(x), int64_t, ft_i64(y),
                      int64_t, ft_i64(out), x != 0.0f ? y : z);
            }
        } else {
            out = ternary_f32(T_WHERE, c, x, y, shape, ndim);
            if (out && ft_grad_needed2(a, b)) {
                ft_node *node = ft_node_new("where", where_backward, out, 2, a, b);
                if (node) node->saved[0] = ft_detach(c);
            }
        }
    }
    ft_release(c);
    ft_release(x);
    ft_release(y);
    return out;
}
