/* The matmul precision: how products with a bfloat16 weight are computed.
 *
 * "float32" (the default) widens the weight to float32 a tile at a time and multiplies in
 * float32: the result is the float32 product of the weight's values. "bfloat16" rounds the
 * other operand (activations, or the output gradient in backward) to bfloat16 and runs oneDNN's
 * bf16 dot-product kernels (AVX512-BF16), accumulating in float32: about twice the float32
 * rate, with the rounding error of bfloat16 activations (PyTorch's bfloat16 autocast keeps the
 * same). Where the build has no oneDNN or the CPU no fast bf16 kernel, "bfloat16" computes as
 * "float32". FT_MATMUL_PRECISION sets the value at start; ft_set_matmul_precision changes it. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft/ops.h"
#include "ft/tensor.h"
#include "matmul_precision.h"
#ifdef FT_HAVE_DNNL
#include "matmul_dnnl.h"
#endif

typedef enum { PRECISION_FLOAT32, PRECISION_BFLOAT16, PRECISION_BAD } precision;
static _Atomic precision chosen;
static char env_error[160];
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static int parse(const char *name, precision *p) {
    if (strcmp(name, "float32") == 0) *p = PRECISION_FLOAT32;
    else if (strcmp(name, "bfloat16") == 0) *p = PRECISION_BFLOAT16;
    else return -1;
    return 0;
}

static void read_env(void) {
    const char *v = getenv("FT_MATMUL_PRECISION");
    precision p = PRECISION_FLOAT32;
    if (v && *v && parse(v, &p) < 0) {
        p = PRECISION_BAD;
        snprintf(env_error, sizeof env_error, "FT_MATMUL_PRECISION=%.64s is not one of float32, bfloat16", v);
    }
    chosen = p;
}

int ft_set_matmul_precision(const char *name) {
    precision p;
    if (!name || parse(name, &p) < 0) {
        ft_set_error("set_matmul_precision: '%.64s' is not one of float32, bfloat16", name ? name : "(null)");
        return -1;
    }
    pthread_once(&env_once, read_env);
    chosen = p;
    return 0;
}

const char *ft_matmul_precision(void) {
    pthread_once(&env_once, read_env);
    switch (chosen) {
    case PRECISION_FLOAT32: return "float32";
    case PRECISION_BFLOAT16: return "bfloat16";
    default: return "invalid";
    }
}

const char *ft_matmul_bf16_kernel(void) {
#ifdef FT_HAVE_DNNL
    return matmul_dnnl_bf16_kernel();
#else
    return NULL;
#endif
}

int ft_bf16_products(const char *op) {
    pthread_once(&env_once, read_env);
    precision p = chosen;
    if (p == PRECISION_BAD) {
        ft_set_error("%s: %s", op, env_error);
        return -1;
    }
    return p == PRECISION_BFLOAT16 && ft_matmul_bf16_kernel() != NULL;
}

int ft_bf16_product(int64_t M, int64_t N, int64_t K, const uint16_t *a, int64_t lda, const uint16_t *b,
                    int64_t sk, int64_t sn, bool accumulate, float *y, int64_t ldy) {
#ifdef FT_HAVE_DNNL
    return matmul_dnnl_bf16(M, N, K, a, lda, b, sk, sn, accumulate, y, ldy);
#else
    (void)M, (void)N, (void)K, (void)a, (void)lda, (void)b, (void)sk, (void)sn, (void)accumulate, (void)y, (void)ldy;
    return 1;
#endif
}
