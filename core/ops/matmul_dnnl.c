/* bfloat16 matrix products on oneDNN's matmul primitive.
 *
 * A primitive is made per (shape, strides of b, accumulate, thread count): making one and its
 * JIT code costs milliseconds, so a small cache keeps them, the least recently used making
 * room. A training step has a few dozen distinct products (each linear's forward and
 * backward-input shapes). */
#include "matmul_dnnl.h"

#include <dnnl.h>
#include <dnnl_debug.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dnnl_common.h"
#include "ft/tensor.h"

#define CACHE_SIZE 64

typedef struct {
    int64_t m, n, k, lda, sk, sn, ldy;
    int accumulate, threads;
} product_key;

typedef struct {
    ft_dnnl_slot slot;   /* first: see ft_dnnl_slot_to_fill */
    product_key key;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, y;
} product_entry;

static product_entry cache[CACHE_SIZE];

static void entry_free(product_entry *e) {
    if (e->a) dnnl_memory_destroy(e->a);
    if (e->b) dnnl_memory_destroy(e->b);
    if (e->y) dnnl_memory_destroy(e->y);
    if (e->prim) dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

static void release_all(void) {
    pthread_mutex_lock(&ft_dnnl_lock);
    for (int i = 0; i < CACHE_SIZE; i++)
        if (cache[i].slot.used) entry_free(&cache[i]);
    pthread_mutex_unlock(&ft_dnnl_lock);
}

static int start(void) {
    static bool started;
    if (started) return 0;
    if (ft_dnnl_start("matmul (bfloat16)") < 0) return MATMUL_DNNL_ERROR;
    atexit(release_all);   /* runs before dnnl_common's release of the engine */
    started = true;
    return 0;
}

static int fail(dnnl_status_t st, const char *what) {
    ft_set_error("matmul (bfloat16): oneDNN: %s failed (%s)", what, dnnl_status2str(st));
    return MATMUL_DNNL_ERROR;
}

/* True for oneDNN's reference implementations ("ref:any", "gemm:ref"...): correct but far
 * slower than the float32 path, so such products go there instead. */
static bool is_reference(const char *impl) { return !impl || strstr(impl, "ref") != NULL; }

/* The primitive descriptor of key k (the caller destroys it), or an error / UNSUPPORTED. */
static int describe(const product_key *k, dnnl_primitive_desc_t *pd) {
    dnnl_memory_desc_t a, b, y;
    dnnl_dims_t adims = {k->m, k->k}, bdims = {k->k, k->n}, ydims = {k->m, k->n};
    dnnl_dims_t astr = {k->lda, 1}, bstr = {k->sk, k->sn}, ystr = {k->ldy, 1};
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post = NULL;
    dnnl_matmul_desc_t md;
    dnnl_status_t st;
    *pd = NULL;
    if ((st = dnnl_memory_desc_init_by_strides(&a, 2, adims, dnnl_bf16, astr)) ||
        (st = dnnl_memory_desc_init_by_strides(&b, 2, bdims, dnnl_bf16, bstr)) ||
        (st = dnnl_memory_desc_init_by_strides(&y, 2, ydims, dnnl_f32, ystr)) ||
        (st = dnnl_matmul_desc_init(&md, &a, &b, NULL, &y)))
        return fail(st, "describing the product");
    if (k->accumulate) {   /* y += a @ b: a sum post-op */
        if ((st = dnnl_primitive_attr_create(&attr)) || (st = dnnl_post_ops_create(&post)) ||
            (st = dnnl_post_ops_append_sum(post, 1.0f)) || (st = dnnl_primitive_attr_set_post_ops(attr, post))) {
            if (post) dnnl_post_ops_destroy(post);
            if (attr) dnnl_primitive_attr_destroy(attr);
            return fail(st, "describing the accumulation");
        }
    }
    st = dnnl_primitive_desc_create(pd, &md, attr, ft_dnnl_engine, NULL);
    if (post) dnnl_post_ops_destroy(post);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (st == dnnl_unimplemented) return MATMUL_DNNL_UNSUPPORTED;
    if (st) return fail(st, "making the primitive");
    const char *impl = NULL;
    dnnl_primitive_desc_query(*pd, dnnl_query_impl_info_str, 0, &impl);
    if (is_reference(impl)) {
        dnnl_primitive_desc_destroy(*pd);
        *pd = NULL;
        return MATMUL_DNNL_UNSUPPORTED;
    }
    return MATMUL_DNNL_OK;
}

static int entry_make(product_entry *e, const product_key *k) {
    dnnl_primitive_desc_t pd;
    int rc = describe(k, &pd);
    if (rc != MATMUL_DNNL_OK) return rc;
    e->slot.used = true;
    e->key = *k;
    dnnl_status_t st;
    if ((st = dnnl_primitive_create(&e->prim, pd)) ||
        (st = dnnl_memory_create(&e->a, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), ft_dnnl_engine,
                                 DNNL_MEMORY_NONE)) ||
        (st = dnnl_memory_create(&e->b, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                                 ft_dnnl_engine, DNNL_MEMORY_NONE)) ||
        (st = dnnl_memory_create(&e->y, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), ft_dnnl_engine,
                                 DNNL_MEMORY_NONE))) {
        dnnl_primitive_desc_destroy(pd);
        entry_free(e);
        return fail(st, "making the primitive");
    }
    dnnl_primitive_desc_destroy(pd);
    return MATMUL_DNNL_OK;
}

/* The cached entry of key k, made when missing; NULL with *rc set when it cannot be made. */
static product_entry *entry_get(const product_key *k, int *rc) {
    for (int i = 0; i < CACHE_SIZE; i++) {
        product_entry *e = &cache[i];
        if (e->slot.used && memcmp(&e->key, k, sizeof *k) == 0) {
            e->slot.last_use = ft_dnnl_tick();
            return e;
        }
    }
    product_entry *fresh = &cache[ft_dnnl_slot_to_fill(cache, sizeof cache[0], CACHE_SIZE)];
    if (fresh->slot.used) entry_free(fresh);
    *rc = entry_make(fresh, k);
    if (*rc != MATMUL_DNNL_OK) return NULL;
    fresh->slot.last_use = ft_dnnl_tick();
    return fresh;
}

int matmul_dnnl_bf16(int64_t M, int64_t N, int64_t K, const uint16_t *a, int64_t lda, const uint16_t *b,
                     int64_t b_stride_k, int64_t b_stride_n, bool accumulate, float *y, int64_t ldy) {
    product_key k;
    memset(&k, 0, sizeof k);   /* compared with memcmp: no stray padding bytes */
    k.m = M, k.n = N, k.k = K, k.lda = lda, k.sk = b_stride_k, k.sn = b_stride_n, k.ldy = ldy;
    k.accumulate = accumulate, k.threads = omp_get_max_threads();
    int rc;
    pthread_mutex_lock(&ft_dnnl_lock);
    product_entry *e = NULL;
    if ((rc = start()) == 0 && (e = entry_get(&k, &rc))) {
        dnnl_status_t st;
        if ((st = dnnl_memory_set_data_handle(e->a, (void *)a)) || (st = dnnl_memory_set_data_handle(e->b, (void *)b)) ||
            (st = dnnl_memory_set_data_handle(e->y, y))) {
            rc = fail(st, "setting a buffer");
        } else {
            dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->y}};
            if ((st = dnnl_primitive_execute(e->prim, ft_dnnl_stream, 3, args)) ||
                (st = dnnl_stream_wait(ft_dnnl_stream)))
                rc = fail(st, "running the product");
        }
    }
    pthread_mutex_unlock(&ft_dnnl_lock);
    return rc;
}

const char *matmul_dnnl_bf16_kernel(void) {
    static char name[64];
    static _Atomic int known;   /* 0 not asked yet, 1 a fast kernel, -1 none */
    if (known) return known > 0 ? name : NULL;   /* every linear asks: no lock once known */
    pthread_mutex_lock(&ft_dnnl_lock);
    if (!known) {
        /* a probe: the shape of a weight read transposed, as linear's forward does */
        product_key k = {64, 64, 64, 64, 1, 64, 64, 0, 1};
        dnnl_primitive_desc_t pd;
        if (start() == 0 && describe(&k, &pd) == MATMUL_DNNL_OK) {
            const char *impl = NULL;
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
            snprintf(name, sizeof name, "%s", impl ? impl : "oneDNN");
            dnnl_primitive_desc_destroy(pd);
        }
        known = name[0] ? 1 : -1;   /* published after name is written */
    }
    pthread_mutex_unlock(&ft_dnnl_lock);
    return known > 0 ? name : NULL;
}
