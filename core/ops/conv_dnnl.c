/* 2-D convolution on oneDNN's C API: forward, backward-data and backward-weights.
 *
 * oneDNN's JIT kernels (AVX-512 or AVX2, picked at run time) compute convolutions in blocked
 * layouts (channels in blocks of 16 or 8). Our tensors stay NCHW, so each primitive is made
 * with "any" layouts and reorders carry its tensors from and to NCHW; the blocked copies live
 * in one workspace buffer kept between calls.
 *
 * Making a primitive descriptor and its JIT code costs milliseconds, so each (kind, geometry,
 * thread count) keeps its primitive, reorders and memory objects in a small cache, the least
 * recently used entry making room; a geometry oneDNN has no kernel for keeps an entry that
 * says so, so that it is not asked again on every call.
 *
 * The thread count is part of the key because oneDNN fixes how a kernel splits its work over
 * threads when the kernel is made.
 *
 * Two algorithms: direct, and Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions (oneDNN's
 * jit_wino_4x3 kernels, forward, backward-data and backward-weights, on AVX-512), which does
 * about a quarter of the multiplications on transformed tiles. Its rounding differs from the
 * direct sum's: 1-3e-6 of the output's scale at ResNet sizes, within the fixtures' 1e-5.
 *
 * The engine, the stream and the lock are dnnl_common.c's; the lock also guards this file's
 * workspace and cache. */
#include "conv_dnnl.h"

#include <dnnl.h>
#include <dnnl_debug.h>
#include <omp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "dnnl_common.h"
#include "ft/tensor.h"

enum { FWD, FWD_BIAS, BWD_DATA, BWD_WEIGHTS, BWD_WEIGHTS_BIAS };
static const char *const KIND_NAMES[] = {"forward", "forward", "backward-data", "backward-weights",
                                         "backward-weights"};

#define CACHE_SIZE 64   /* a ResNet uses ~3 kinds x 10 geometries; eval batches add a few */
#define MAX_ARGS 3      /* the large tensors of one primitive */

/* One large tensor of a primitive: our NCHW memory and, when the primitive wants another
 * layout, its own copy in the workspace plus the reorder between the two. */
typedef struct {
    int arg;                    /* DNNL_ARG_SRC, ... */
    bool out;                   /* written by the primitive (reordered back after it) */
    dnnl_memory_t user;         /* NCHW / OIHW, pointed at the caller's buffer per call */
    dnnl_memory_t inner;        /* the primitive's layout; NULL when it is the user's */
    dnnl_primitive_t reorder;   /* user -> inner for inputs, inner -> user for outputs */
    size_t offset;              /* of inner's buffer in the workspace */
} conv_arg;

typedef struct {
    ft_dnnl_slot slot;   /* first: see ft_dnnl_slot_to_fill */
    int kind, threads;
    bool unsupported;           /* oneDNN has no kernel for (kind, g): nothing else is set */
    conv_dnnl_geom g;
    dnnl_primitive_t prim;
    conv_arg args[MAX_ARGS];
    int nargs;
    dnnl_memory_t bias;         /* bias or its gradient, plain [O]; NULL without */
    dnnl_memory_t scratch;      /* the primitive's scratchpad in the workspace; NULL without */
    size_t scratch_offset;
    size_t ws_bytes;            /* workspace this entry needs */
} conv_entry;

static conv_entry cache[CACHE_SIZE];
static void *workspace;
static size_t workspace_len;

static void entry_free(conv_entry *e) {
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        if (a->reorder) dnnl_primitive_destroy(a->reorder);
        if (a->inner) dnnl_memory_destroy(a->inner);
        if (a->user) dnnl_memory_destroy(a->user);
    }
    if (e->bias) dnnl_memory_destroy(e->bias);
    if (e->scratch) dnnl_memory_destroy(e->scratch);
    if (e->prim) dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

/* At exit: every primitive and the workspace. */
static void release_all(void) {
    pthread_mutex_lock(&ft_dnnl_lock);
    for (int i = 0; i < CACHE_SIZE; i++)
        if (cache[i].slot.used) entry_free(&cache[i]);
    free(workspace);
    workspace = NULL;
    workspace_len = 0;
    pthread_mutex_unlock(&ft_dnnl_lock);
}

/* Sets the error for a failed oneDNN call; returns CONV_DNNL_ERROR. */
static int fail(dnnl_status_t st, int kind, const char *what) {
    ft_set_error("conv2d: oneDNN %s: %s failed (%s)", KIND_NAMES[kind], what, dnnl_status2str(st));
    return CONV_DNNL_ERROR;
}

static int init_engine(void) {
    static bool started;
    if (started) return 0;
    if (ft_dnnl_start("conv2d") < 0) return CONV_DNNL_ERROR;
    atexit(release_all);   /* runs before dnnl_common's release of the engine */
    started = true;
    return 0;
}

/* ---- making a primitive ------------------------------------------------------------ */

/* The plain (our) descriptors of src [N,C,H,W], weights [(G,) O/G, C/G, kH, kW] and
 * dst [N,O,oH,oW]; with tag any instead, those the primitive may choose. */
typedef struct { dnnl_memory_desc_t src, wei, dst, bias; } conv_mds;

static dnnl_status_t make_mds(const conv_dnnl_geom *g, bool any, conv_mds *m) {
    dnnl_dims_t src = {g->n, g->c, g->h, g->w}, dst = {g->n, g->o, g->oh, g->ow};
    dnnl_dims_t wg = {g->groups, g->o / g->groups, g->c / g->groups, g->kh, g->kw};
    dnnl_dims_t w1 = {g->o, g->c, g->kh, g->kw}, bias = {g->o};
    bool grouped = g->groups > 1;
    dnnl_status_t st;
    if ((st = dnnl_memory_desc_init_by_tag(&m->src, 4, src, dnnl_f32, any ? dnnl_format_tag_any : dnnl_nchw)))
        return st;
    if ((st = dnnl_memory_desc_init_by_tag(&m->dst, 4, dst, dnnl_f32, any ? dnnl_format_tag_any : dnnl_nchw)))
        return st;
    if ((st = dnnl_memory_desc_init_by_tag(&m->wei, grouped ? 5 : 4, grouped ? wg : w1, dnnl_f32,
                                           any ? dnnl_format_tag_any : grouped ? dnnl_goihw : dnnl_oihw)))
        return st;
    return dnnl_memory_desc_init_by_tag(&m->bias, 1, bias, dnnl_f32, dnnl_x);
}

/* Fills conv_arg a for argument `arg` whose plain layout is `plain` and whose layout in the
 * primitive is `want`: a reorder when they differ, its buffer placed at *ws in the workspace. */
static dnnl_status_t add_arg(conv_entry *e, int arg, bool out, const dnnl_memory_desc_t *plain,
                             const dnnl_memory_desc_t *want, size_t *ws) {
    conv_arg *a = &e->args[e->nargs++];
    a->arg = arg;
    a->out = out;
    dnnl_status_t st = dnnl_memory_create(&a->user, plain, ft_dnnl_engine, DNNL_MEMORY_NONE);
    if (st || dnnl_memory_desc_equal(plain, want)) return st;
    if ((st = dnnl_memory_create(&a->inner, want, ft_dnnl_engine, DNNL_MEMORY_NONE))) return st;
    dnnl_primitive_desc_t rpd;
    st = out ? dnnl_reorder_primitive_desc_create(&rpd, want, ft_dnnl_engine, plain, ft_dnnl_engine, NULL)
             : dnnl_reorder_primitive_desc_create(&rpd, plain, ft_dnnl_engine, want, ft_dnnl_engine, NULL);
    if (st) return st;
    st = dnnl_primitive_create(&a->reorder, rpd);
    dnnl_primitive_desc_destroy(rpd);
    a->offset = *ws;
    *ws += (dnnl_memory_desc_get_size(want) + 63) & ~(size_t)63;
    return st;
}

/* The operation descriptor of `kind` over the descriptors in m. */
static dnnl_status_t op_desc(int kind, const conv_dnnl_geom *g, const conv_mds *m,
                             dnnl_convolution_desc_t *cd) {
    /* oneDNN counts dilation from 0; the right/bottom padding is the same as the left/top
     * one (its output size formula floors as ours does) */
    dnnl_dims_t strides = {g->sh, g->sw}, dil = {g->dh - 1, g->dw - 1}, pad = {g->ph, g->pw};
    dnnl_alg_kind_t alg = g->winograd ? dnnl_convolution_winograd : dnnl_convolution_direct;
    switch (kind) {
    case FWD:
    case FWD_BIAS:
        return dnnl_dilated_convolution_forward_desc_init(
            cd, dnnl_forward_training, alg, &m->src, &m->wei, kind == FWD_BIAS ? &m->bias : NULL,
            &m->dst, strides, dil, pad, pad);
    case BWD_DATA:
        return dnnl_dilated_convolution_backward_data_desc_init(cd, alg, &m->src, &m->wei, &m->dst,
                                                                strides, dil, pad, pad);
    default:
        return dnnl_dilated_convolution_backward_weights_desc_init(
            cd, alg, &m->src, &m->wei, kind == BWD_WEIGHTS_BIAS ? &m->bias : NULL, &m->dst, strides,
            dil, pad, pad);
    }
}

/* Makes entry e for `kind` and geometry g. Backward primitives need the forward one as a
 * hint (it fixes the layouts they agree on); it is made here and dropped. */
static int entry_make(conv_entry *e, int kind, const conv_dnnl_geom *g, int threads) {
    e->slot.used = true;
    e->kind = kind;
    e->threads = threads;
    e->g = *g;
    conv_mds plain, any;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd = NULL, hint = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_status_t st;
    const char *what = "describing the convolution";
    if ((st = make_mds(g, false, &plain)) || (st = make_mds(g, true, &any))) goto fail;
    what = "making the primitive";
    if ((st = dnnl_primitive_attr_create(&attr))) goto fail;
    if ((st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user))) goto fail;
    if (kind != FWD && kind != FWD_BIAS) {
        if ((st = op_desc(FWD, g, &any, &cd))) goto fail;
        if ((st = dnnl_primitive_desc_create(&hint, &cd, NULL, ft_dnnl_engine, NULL))) goto fail;
    }
    if ((st = op_desc(kind, g, &any, &cd))) goto fail;
    if ((st = dnnl_primitive_desc_create(&pd, &cd, attr, ft_dnnl_engine, hint))) goto fail;
    if ((st = dnnl_primitive_create(&e->prim, pd))) goto fail;

    what = "making the reorders";
    size_t ws = 0;
    const dnnl_memory_desc_t *q;
#define WANT(query, index) (q = dnnl_primitive_desc_query_md(pd, query, index))
    switch (kind) {
    case FWD:
    case FWD_BIAS:
        if ((st = add_arg(e, DNNL_ARG_SRC, false, &plain.src, WANT(dnnl_query_src_md, 0), &ws))) goto fail;
        if ((st = add_arg(e, DNNL_ARG_WEIGHTS, false, &plain.wei, WANT(dnnl_query_weights_md, 0), &ws))) goto fail;
        if ((st = add_arg(e, DNNL_ARG_DST, true, &plain.dst, WANT(dnnl_query_dst_md, 0), &ws))) goto fail;
        break;
    case BWD_DATA:
        if ((st = add_arg(e, DNNL_ARG_WEIGHTS, false, &plain.wei, WANT(dnnl_query_weights_md, 0), &ws))) goto fail;
        if ((st = add_arg(e, DNNL_ARG_DIFF_DST, false, &plain.dst, WANT(dnnl_query_diff_dst_md, 0), &ws))) goto fail;
        if ((st = add_arg(e, DNNL_ARG_DIFF_SRC, true, &plain.src, WANT(dnnl_query_diff_src_md, 0), &ws))) goto fail;
        break;
    default:   /* grad_y first: its copy may be backward-data's, at the start of this one's buffers */
        if ((st = add_arg(e, DNNL_ARG_DIFF_DST, false, &plain.dst, WANT(dnnl_query_diff_dst_md, 0), &ws))) goto fail;
        if ((st = add_arg(e, DNNL_ARG_SRC, false, &plain.src, WANT(dnnl_query_src_md, 0), &ws))) goto fail;
        if ((st = add_arg(e, DNNL_ARG_DIFF_WEIGHTS, true, &plain.wei, WANT(dnnl_query_diff_weights_md, 0), &ws)))
            goto fail;
        break;
    }
    if (kind == FWD_BIAS || kind == BWD_WEIGHTS_BIAS) {
        /* the bias is plain [O] in every layout oneDNN picks for f32 */
        const dnnl_memory_desc_t *bq = kind == FWD_BIAS ? WANT(dnnl_query_weights_md, 1)
                                                        : WANT(dnnl_query_diff_weights_md, 1);
        if (!bq || !dnnl_memory_desc_equal(bq, &plain.bias)) {
            /* a bias layout this file does not reorder: the geometry goes to the im2col path */
            st = dnnl_unimplemented;
            goto fail;
        }
        if ((st = dnnl_memory_create(&e->bias, &plain.bias, ft_dnnl_engine, DNNL_MEMORY_NONE))) goto fail;
    }
    const dnnl_memory_desc_t *sq = WANT(dnnl_query_scratchpad_md, 0);
#undef WANT
    size_t scratch_bytes = sq ? dnnl_memory_desc_get_size(sq) : 0;
    if (scratch_bytes > 0) {
        if ((st = dnnl_memory_create(&e->scratch, sq, ft_dnnl_engine, DNNL_MEMORY_NONE))) goto fail;
        e->scratch_offset = ws;
        ws += (scratch_bytes + 63) & ~(size_t)63;
    }
    e->ws_bytes = ws;
    dnnl_primitive_desc_destroy(pd);
    if (hint) dnnl_primitive_desc_destroy(hint);
    dnnl_primitive_attr_destroy(attr);
    return CONV_DNNL_OK;

fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (hint) dnnl_primitive_desc_destroy(hint);
    if (attr) dnnl_primitive_attr_destroy(attr);
    entry_free(e);
    if (st == dnnl_unimplemented) {
        /* remembered: asking again would cost the same milliseconds on every call */
        e->slot.used = true;
        e->unsupported = true;
        e->kind = kind;
        e->threads = threads;
        e->g = *g;
        return CONV_DNNL_UNSUPPORTED;
    }
    return fail(st, kind, what);
}

/* The cached entry of (kind, g, current thread count), made when missing; NULL with *rc set
 * when it cannot be made. */
static conv_entry *entry_get(int kind, const conv_dnnl_geom *g, int *rc) {
    int threads = omp_get_max_threads();
    for (int i = 0; i < CACHE_SIZE; i++) {
        conv_entry *e = &cache[i];
        if (e->slot.used && e->kind == kind && e->threads == threads && memcmp(&e->g, g, sizeof *g) == 0) {
            e->slot.last_use = ft_dnnl_tick();
            if (!e->unsupported) return e;
            *rc = CONV_DNNL_UNSUPPORTED;
            return NULL;
        }
    }
    conv_entry *fresh = &cache[ft_dnnl_slot_to_fill(cache, sizeof cache[0], CACHE_SIZE)];
    if (fresh->slot.used) entry_free(fresh);
    *rc = entry_make(fresh, kind, g, threads);
    if (fresh->slot.used) fresh->slot.last_use = ft_dnnl_tick();
    return *rc == CONV_DNNL_OK ? fresh : NULL;
}

/* ---- running one ------------------------------------------------------------------- */

static int workspace_reserve(size_t bytes, int kind) {
    if (bytes <= workspace_len) return 0;
    free(workspace);
    workspace_len = 0;
    workspace = aligned_alloc(64, bytes);
    if (!workspace) {
        ft_set_error("conv2d: oneDNN %s: out of memory for a %zu-byte workspace", KIND_NAMES[kind], bytes);
        return -1;
    }
    workspace_len = bytes;
    return 0;
}

/* Runs entry e with the caller's buffers ptr[i] for e->args[i] and `bias` (or NULL), its own
 * blocked copies at `ws` in the workspace: inputs are reordered in, the primitive runs, outputs
 * are reordered out. When `have` is set, e->args[have_arg]'s copy is already made, at `have`. */
static int entry_run(conv_entry *e, char *ws, void *const ptr[MAX_ARGS], void *bias, int have_arg,
                     void *have) {
    dnnl_exec_arg_t args[MAX_ARGS + 2];
    int nargs = 0;
    dnnl_status_t st;
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        bool made = have && i == have_arg;
        if ((st = dnnl_memory_set_data_handle(a->user, ptr[i]))) return fail(st, e->kind, "setting a buffer");
        if (a->inner && (st = dnnl_memory_set_data_handle(a->inner, made ? have : ws + a->offset)))
            return fail(st, e->kind, "setting a buffer");
        args[nargs++] = (dnnl_exec_arg_t){a->arg, a->inner ? a->inner : a->user};
        if (a->reorder && !a->out && !made) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, a->user}, {DNNL_ARG_TO, a->inner}};
            if ((st = dnnl_primitive_execute(a->reorder, ft_dnnl_stream, 2, r)))
                return fail(st, e->kind, "reordering an input");
        }
    }
    if (e->bias) {
        if ((st = dnnl_memory_set_data_handle(e->bias, bias))) return fail(st, e->kind, "setting a buffer");
        args[nargs++] = (dnnl_exec_arg_t){e->kind == FWD_BIAS ? DNNL_ARG_BIAS : DNNL_ARG_DIFF_BIAS, e->bias};
    }
    if (e->scratch) {
        if ((st = dnnl_memory_set_data_handle(e->scratch, ws + e->scratch_offset)))
            return fail(st, e->kind, "setting a buffer");
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, e->scratch};
    }
    if ((st = dnnl_primitive_execute(e->prim, ft_dnnl_stream, nargs, args)))
        return fail(st, e->kind, "running the convolution");
    for (int i = 0; i < e->nargs; i++) {
        conv_arg *a = &e->args[i];
        if (a->reorder && a->out) {
            dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, a->inner}, {DNNL_ARG_TO, a->user}};
            if ((st = dnnl_primitive_execute(a->reorder, ft_dnnl_stream, 2, r)))
                return fail(st, e->kind, "reordering an output");
        }
    }
    if ((st = dnnl_stream_wait(ft_dnnl_stream))) return fail(st, e->kind, "waiting for the stream");
    return CONV_DNNL_OK;
}

int conv_dnnl_forward(const conv_dnnl_geom *g, const float *x, const float *w, const float *bias,
                      float *y) {
    void *ptr[MAX_ARGS] = {(void *)x, (void *)w, y};
    int kind = bias ? FWD_BIAS : FWD, rc;
    pthread_mutex_lock(&ft_dnnl_lock);
    conv_entry *e = NULL;
    if ((rc = init_engine()) == 0 && (e = entry_get(kind, g, &rc)) &&
        (rc = workspace_reserve(e->ws_bytes, kind)) == 0)
        rc = entry_run(e, workspace, ptr, (void *)bias, -1, NULL);
    pthread_mutex_unlock(&ft_dnnl_lock);
    return rc;
}

/* The argument index of diff_dst in the backward entries (see entry_make). */
enum { DATA_DIFF_DST = 1, WEIGHTS_DIFF_DST = 0 };

int conv_dnnl_backward(const conv_dnnl_geom *g, const float *x, const float *w, const float *gy,
                       float *gx, float *gw, float *gb) {
    void *data_ptr[MAX_ARGS] = {(void *)w, (void *)gy, gx}, *wei_ptr[MAX_ARGS] = {(void *)gy, (void *)x, gw};
    int wkind = gb ? BWD_WEIGHTS_BIAS : BWD_WEIGHTS, rc;
    pthread_mutex_lock(&ft_dnnl_lock);
    conv_entry *data = NULL, *wei = NULL;
    if ((rc = init_engine()) != 0) goto out;
    /* both entries first (the second cannot evict the first: it was used last) */
    if (gx && !(data = entry_get(BWD_DATA, g, &rc))) goto out;
    if (gw && !(wei = entry_get(wkind, g, &rc))) goto out;
    /* Backward-weights runs after backward-data is done (its output copied out), so its buffers
     * lie over backward-data's, Winograd's large scratchpads included. Only grad_y's blocked
     * copy may outlive backward-data: it serves backward-weights too when both primitives read
     * it in the same layout, and backward-weights' buffers then start at it (their first slot
     * is that copy). */
    bool share = false;
    size_t wei_at = 0;
    if (data && wei) {
        const conv_arg *da = &data->args[DATA_DIFF_DST], *wa = &wei->args[WEIGHTS_DIFF_DST];
        const dnnl_memory_desc_t *dm, *wm;
        if (da->inner && wa->inner && !dnnl_memory_get_memory_desc(da->inner, &dm) &&
            !dnnl_memory_get_memory_desc(wa->inner, &wm) && dnnl_memory_desc_equal(dm, wm)) {
            share = true;
            wei_at = da->offset;
        }
    }
    size_t need = data ? data->ws_bytes : 0;
    if (wei && wei_at + wei->ws_bytes > need) need = wei_at + wei->ws_bytes;
    if ((rc = workspace_reserve(need, data ? BWD_DATA : wkind))) goto out;
    if (data && (rc = entry_run(data, workspace, data_ptr, NULL, -1, NULL))) goto out;
    if (wei) {
        void *have = share ? (char *)workspace + wei_at : NULL;
        rc = entry_run(wei, (char *)workspace + wei_at, wei_ptr, gb, WEIGHTS_DIFF_DST, have);
    }
out:
    pthread_mutex_unlock(&ft_dnnl_lock);
    return rc;
}
