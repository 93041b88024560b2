/* Shape ops: cat, stack, split, index_select, index_add and gather, forward and backward.
 * Kernels see contiguous tensors as [outer, size, inner] around the dim they act on;
 * they copy the elements of every dtype alike (as bits of their size), gradients sum in float32. */
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "ft/tensor.h"

#define PAR_MIN 32768
#define COL_BLOCK 256

static int64_t prod(const int64_t *shape, int from, int to) {
    int64_t p = 1;
    for (int d = from; d < to; d++) p *= shape[d];
    return p;
}

/* A contiguous alias or copy of a that records no autograd. */
static ft_tensor *plain_contiguous(const ft_tensor *a) {
    ft_tensor *d = ft_detach(a);
    if (!d) return NULL;
    ft_tensor *c = ft_contiguous(d);
    ft_release(d);
    return c;
}

/* g contiguous in float32, where the scatter-adds of the backward sum (g is half when the
 * output was, e.g. index_select of a bfloat16 tensor followed by a conversion). */
static ft_tensor *grad_f32(const ft_tensor *g) {
    return g->dtype == FT_FLOAT32 ? ft_contiguous(g) : ft_to_dtype(g, FT_FLOAT32);
}

/* A fresh contiguous copy: gradients handed to the engine must not share storage with
 * the incoming gradient, since the engine may accumulate into them in place. */
static ft_tensor *fresh_copy(const ft_tensor *t) {
    ft_tensor *c = ft_empty(t->shape, t->ndim, t->dtype);
    if (c && ft_copy_(c, t) < 0) {
        ft_release(c);
        return NULL;
    }
    return c;
}

/* ---- cat ----------------------------------------------------------------------- */

/* i[0] = dim; i[1 + 2s], i[2 + 2s] = start and length of input s along dim;
 * i[9] = bitmask of inputs that are chain links (see ft_cat), whose gradient may stay
 * a view because only the next cat node reads it. */
static int cat_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    int dim = (int)n->i[0];
    for (int s = 0; s < n->n_inputs; s++) {
        if (!n->inputs[s]) continue;
        ft_tensor *v = ft_narrow(g, dim, n->i[1 + 2 * s], n->i[2 + 2 * s]);
        if (!v) return -1;
        if (n->i[9] & (1 << s)) {
            gi[s] = v;
        } else {
            gi[s] = fresh_copy(v);
            ft_release(v);
            if (!gi[s]) return -1;
        }
    }
    return 0;
}

typedef struct {
    const ft_tensor *t;
    int64_t start, len;
} cat_segment;

/* Records cat's backward. A node takes at most FT_NODE_MAX_INPUTS inputs, so with more
 * differentiable inputs the last input of each node is a "link": a view of the output
 * covering the remaining inputs, whose own node continues the chain. Links share the
 * output's storage, so no data is copied for them. */
static void record_cat(ft_tensor *out, int dim, const cat_segment *segs, int nseg) {
    ft_tensor *od = ft_detach(out);
    if (!od) return;
    ft_tensor **links = malloc(sizeof *links * (size_t)(nseg / 3 + 1));
    if (!links) {
        ft_release(od);
        return;
    }
    ft_tensor *holder = out;
    int nlinks = 0;
    int64_t base = 0;
    for (int k = 0; k < nseg;) {
        int left = nseg - k;
        int take = left <= FT_NODE_MAX_INPUTS ? left : FT_NODE_MAX_INPUTS - 1;
        const ft_tensor *in[FT_NODE_MAX_INPUTS] = {NULL};
        int64_t start[FT_NODE_MAX_INPUTS], len[FT_NODE_MAX_INPUTS];
        for (int s = 0; s < take; s++) {
            in[s] = segs[k + s].t;
            start[s] = segs[k + s].start - base;
            len[s] = segs[k + s].len;
        }
        ft_tensor *link = NULL;
        int64_t link_start = 0;
        if (take < left) {
            link_start = segs[k + take].start;
            int64_t link_end = segs[nseg - 1].start + segs[nseg - 1].len;
            link = ft_narrow(od, dim, link_start, link_end - link_start);
            if (link) {
                ft_set_requires_grad(link, true);   /* gets its grad_fn below */
                links[nlinks++] = link;
                in[take] = link;
                start[take] = link_start - base;
                len[take] = link_end - link_start;
            }
        }
        int count = take + (link ? 1 : 0);
        ft_node *node = ft_node_new("cat", cat_backward, holder, count, in[0], in[1], in[2], in[3]);
        if (!node) break;
        node->i[0] = dim;
        for (int s = 0; s < count; s++) {
            node->i[1 + 2 * s] = start[s];
            node->i[2 + 2 * s] = len[s];
        }
        node->i[9] = link ? (1 << take) : 0;
        if (!link) break;
        holder = link;
        base = link_start;
        k += take;
    }
    for (int l = 0; l < nlinks; l++) ft_release(links[l]);
    free(links);
    ft_release(od);
}

ft_tensor *ft_cat(ft_tensor *const *ts, int n, int dim) {
    char s0[128], s1[128];
    if (n <= 0) {
        ft_set_error("cat: expected a non-empty list of tensors");
        return NULL;
    }
    const ft_tensor *ref = ts[0];
    int nd = ref->ndim;
    bool any_float = false, one_dtype = true;
    for (int j = 0; j < n; j++) {
        const ft_tensor *t = ts[j];
        if (t->ndim == 0) {
            ft_set_error("cat: a 0-dim tensor (at position %d) cannot be concatenated", j);
            return NULL;
        }
        any_float = any_float || ft_dtype_is_float(t->dtype);
        one_dtype = one_dtype && t->dtype == ref->dtype;
    }
    int d = ft_wrap_dim(dim, nd, "cat");
    if (d < 0) return NULL;
    int64_t oshape[FT_MAX_DIMS];
    memcpy(oshape, ref->shape, sizeof(int64_t) * (size_t)nd);
    oshape[d] = 0;
    for (int j = 0; j < n; j++) {
        const ft_tensor *t = ts[j];
        bool ok = t->ndim == nd;
        for (int k = 0; ok && k < nd; k++) ok = k == d || t->shape[k] == ref->shape[k];
        if (!ok) {
            ft_set_error("cat: sizes must match except in dim %d: %s at position 0 and %s at position %d",
                         d, ft_shape_str(ref->shape, nd, s0, sizeof s0),
                         ft_shape_str(t->shape, t->ndim, s1, sizeof s1), j);
            return NULL;
        }
        if (!ft_size_add(oshape[d], t->shape[d], &oshape[d])) {
            ft_set_error("cat: the sizes of dim %d add up to more than 2^63", d);
            return NULL;
        }
    }
    /* one dtype stays itself; mixed dtypes concatenate as float32 */
    ft_dtype dtype = one_dtype ? ref->dtype : any_float ? FT_FLOAT32 : FT_INT64;
    ft_tensor *out = ft_empty(oshape, nd, dtype);
    if (!out) return NULL;
    size_t es = ft_dtype_size(dtype);
    int64_t outer = prod(oshape, 0, d), inner = prod(oshape, d + 1, nd), total = oshape[d];
    char *op = (char *)ft_data(out);
    int64_t start = 0;
    for (int j = 0; j < n; j++) {
        int64_t len = ts[j]->shape[d];
        ft_tensor *c = plain_contiguous(ts[j]);
        if (c && c->dtype != dtype) {
            ft_tensor *cf = ft_to_dtype(c, dtype);
            ft_release(c);
            c = cf;
        }
        if (!c) {
            ft_release(out);
            return NULL;
        }
        /* each outer row of input j is one block of len * inner elements */
        const char *ip = (const char *)ft_data(c);
        size_t row = (size_t)(len * inner) * es;
        _Pragma("omp parallel for if (outer > 1 && outer * len * inner > PAR_MIN)")
        for (int64_t o = 0; o < outer; o++)
            memcpy(op + (size_t)((o * total + start) * inner) * es, ip + (size_t)o * row, row);
        ft_release(c);
        start += len;
    }
    if (ft_grad_needed(n, (const ft_tensor *const *)ts)) {
        cat_segment *segs = malloc(sizeof *segs * (size_t)n);
        if (!segs) {
            ft_release(out);
            ft_set_error("cat: out of memory");
            return NULL;
        }
        int nseg = 0;
        start = 0;
        for (int j = 0; j < n; j++) {
            if (ts[j]->requires_grad) segs[nseg++] = (cat_segment){ts[j], start, ts[j]->shape[d]};
            start += ts[j]->shape[d];
        }
        record_cat(out, d, segs, nseg);
        free(segs);
    }
    return out;
}

ft_tensor *ft_stack(ft_tensor *const *ts, int n, int dim) {
    char s0[128], s1[128];
    if (n <= 0) {
        ft_set_error("stack: expected a non-empty list of tensors");
        return NULL;
    }
    for (int j = 1; j < n; j++) {
        if (!ft_same_shape(ts[j], ts[0])) {
            ft_set_error("stack: expected tensors of equal shape, got %s at position 0 and %s at position %d",
                         ft_shape_str(ts[0]->shape, ts[0]->ndim, s0, sizeof s0),
                         ft_shape_str(ts[j]->shape, ts[j]->ndim, s1, sizeof s1), j);
            return NULL;
        }
    }
    int d = ft_wrap_dim(dim, ts[0]->ndim + 1, "stack");
    if (d < 0) return NULL;
    ft_tensor **us = calloc((size_t)n, sizeof *us);
    if (!us) {
        ft_set_error("stack: out of memory");
        return NULL;
    }
    ft_tensor *out = NULL;
    int j = 0;
    for (; j < n; j++)   /* unsqueeze is a differentiable view: cat's gradient flows back */
        if (!(us[j] = ft_unsqueeze(ts[j], d))) break;
    if (j == n) out = ft_cat(us, n, d);
    for (int k = 0; k < j; k++) ft_release(us[k]);
    free(us);
    return out;
}

/* ---- split --------------------------------------------------------------------- */

int ft_split(const ft_tensor *a, int64_t size, int dim, ft_tensor ***out, int *n) {
    *out = NULL;
    *n = 0;
    if (a->ndim == 0) {
        ft_set_error("split: cannot split a 0-dim tensor");
        return -1;
    }
    int d = ft_wrap_dim(dim, a->ndim, "split");
    if (d < 0) return -1;
    if (size <= 0) {
        ft_set_error("split: split size must be positive, got %lld", (long long)size);
        return -1;
    }
    int64_t total = a->shape[d];
    int64_t count = total == 0 ? 1 : (total + size - 1) / size;
    ft_tensor **pieces = calloc((size_t)count, sizeof *pieces);
    if (!pieces) {
        ft_set_error("split: out of memory");
        return -1;
    }
    for (int64_t k = 0; k < count; k++) {
        int64_t start = k * size, len = total - start < size ? total - start : size;
        pieces[k] = ft_narrow(a, d, start, len);   /* a view with its own narrow node */
        if (!pieces[k]) {
            for (int64_t j = 0; j < k; j++) ft_release(pieces[j]);
            free(pieces);
            return -1;
        }
    }
    *out = pieces;
    *n = (int)count;
    return 0;
}

/* ---- index checks -------------------------------------------------------------- */

static int check_index(const ft_tensor *index, const char *op) {
    if (index->dtype != FT_INT64) {
        ft_set_error("%s: expected an int64 index tensor, got %s", op, ft_dtype_name(index->dtype));
        return -1;
    }
    return 0;
}

/* Every value of contiguous idx within [0, size); else an error naming the first bad one. */
static int check_bounds(const int64_t *idx, int64_t n, int64_t size, int dim, const char *op) {
    for (int64_t k = 0; k < n; k++) {
        if (idx[k] < 0 || idx[k] >= size) {
            ft_set_error("%s: index %lld is out of bounds for dim %d with size %lld", op,
                         (long long)idx[k], dim, (long long)size);
            return -1;
        }
    }
    return 0;
}

/* ---- index_select -------------------------------------------------------------- */

/* out[o, j, :] = a[o, idx[j], :] */
#define INDEX_SELECT_RUN(T)                                                        \
    static void index_select_##T(const T *a, const int64_t *idx, T *out, int64_t outer, \
                                 int64_t size, int64_t nidx, int64_t inner) {      \
        _Pragma("omp parallel for if (outer * nidx * inner > PAR_MIN)")            \
        for (int64_t r = 0; r < outer * nidx; r++) {                               \
            int64_t o = r / nidx, j = r % nidx;                                    \
            const T *src = a + (o * size + idx[j]) * inner;                        \
            T *dst = out + r * inner;                                              \
            for (int64_t i = 0; i < inner; i++) dst[i] = src[i];                   \
        }                                                                          \
    }

INDEX_SELECT_RUN(uint16_t)
INDEX_SELECT_RUN(uint32_t)
INDEX_SELECT_RUN(uint64_t)

/* dst [outer, size, inner] at [o, idx[j], :] += src [outer, nidx, inner] at [o, j, :]: the
 * backward of index_select and the forward of index_add. Blocks of columns never collide, so
 * the j loop inside stays serial (repeated indices accumulate in order). */
static void scatter_add(float *dst, const float *src, const int64_t *idx, int64_t outer, int64_t size,
                        int64_t nidx, int64_t inner) {
    int64_t nblk = (inner + COL_BLOCK - 1) / COL_BLOCK;
    _Pragma("omp parallel for if (outer * nidx * inner > PAR_MIN)")
    for (int64_t b = 0; b < outer * nblk; b++) {
        int64_t o = b / nblk, i0 = (b % nblk) * COL_BLOCK;
        int64_t w = inner - i0 < COL_BLOCK ? inner - i0 : COL_BLOCK;
        for (int64_t j = 0; j < nidx; j++) {
            const float *from = src + (o * nidx + j) * inner + i0;
            float *to = dst + (o * size + idx[j]) * inner + i0;
            for (int64_t i = 0; i < w; i++) to[i] += from[i];
        }
    }
}

/* i[0] = dim; saved[0] = the contiguous index. ga[o, idx[j], :] += g[o, j, :] */
static int index_select_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    const ft_tensor *a = n->inputs[0], *index = n->saved[0];
    int d = (int)n->i[0];
    int64_t outer = prod(a->shape, 0, d), size = a->shape[d], inner = prod(a->shape, d + 1, a->ndim);
    int64_t nidx = ft_numel(index);
    ft_tensor *gc = grad_f32(g);
    ft_tensor *ga = gc ? ft_zeros(a->shape, a->ndim, FT_FLOAT32) : NULL;
    if (ga) scatter_add(ft_f32(ga), ft_f32(gc), ft_i64(index), outer, size, nidx, inner);
    ft_release(gc);
    gi[0] = ga;
    return ga ? 0 : -1;
}

ft_tensor *ft_index_select(const ft_tensor *a, int dim, const ft_tensor *index) {
    char s[128];
    if (check_index(index, "index_select") < 0) return NULL;
    if (index->ndim > 1) {
        ft_set_error("index_select: index must be 1-D, got shape %s",
                     ft_shape_str(index->shape, index->ndim, s, sizeof s));
        return NULL;
    }
    if (a->ndim == 0) {
        ft_set_error("index_select: cannot index a 0-dim tensor");
        return NULL;
    }
    int d = ft_wrap_dim(dim, a->ndim, "index_select");
    if (d < 0) return NULL;
    ft_tensor *ic = plain_contiguous(index);
    if (!ic) return NULL;
    int64_t nidx = ft_numel(ic);
    if (check_bounds(ft_i64(ic), nidx, a->shape[d], d, "index_select") < 0) {
        ft_release(ic);
        return NULL;
    }
    int64_t oshape[FT_MAX_DIMS];
    memcpy(oshape, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    oshape[d] = nidx;
    ft_tensor *x = plain_contiguous(a);
    ft_tensor *out = x ? ft_empty(oshape, a->ndim, a->dtype) : NULL;
    if (out) {
        int64_t outer = prod(a->shape, 0, d), inner = prod(a->shape, d + 1, a->ndim);
        /* elements are moved as bits of their size: every dtype alike */
        const int64_t *ip = ft_i64(ic);
        switch (ft_dtype_size(a->dtype)) {
        case 2: index_select_uint16_t(ft_data(x), ip, ft_data(out), outer, a->shape[d], nidx, inner); break;
        case 4: index_select_uint32_t(ft_data(x), ip, ft_data(out), outer, a->shape[d], nidx, inner); break;
        default: index_select_uint64_t(ft_data(x), ip, ft_data(out), outer, a->shape[d], nidx, inner); break;
        }
        if (ft_grad_needed1(a)) {
            ft_node *node = ft_node_new("index_select", index_select_backward, out, 1, a);
            if (node) {
                node->i[0] = d;
                node->saved[0] = ft_retain(ic);   /* a detached alias already */
            }
        }
    }
    ft_release(x);
    ft_release(ic);
    return out;
}

/* ---- index_add ----------------------------------------------------------------- */

/* i[0] = dim; saved[0] = the contiguous index. grad_base = g, grad_src = index_select(g, dim, index). */
static int index_add_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    int d = (int)n->i[0];
    if (n->inputs[0]) {
        gi[0] = fresh_copy(g);
        if (!gi[0]) return -1;
    }
    if (n->inputs[1]) {
        ft_tensor *gd = ft_detach(g);
        gi[1] = gd ? ft_index_select(gd, d, n->saved[0]) : NULL;
        ft_release(gd);
        if (!gi[1]) return -1;
    }
    return 0;
}

/* out = base with out[o, idx[j], :] += src[o, j, :] (repeated indices accumulate), float32. */
ft_tensor *ft_index_add(const ft_tensor *base, int dim, const ft_tensor *index, const ft_tensor *src) {
    char s1[128], s2[128];
    if (check_index(index, "index_add") < 0) return NULL;
    if (index->ndim > 1) {
        ft_set_error("index_add: index must be 1-D, got shape %s",
                     ft_shape_str(index->shape, index->ndim, s1, sizeof s1));
        return NULL;
    }
    if (base->dtype != FT_FLOAT32 || src->dtype != FT_FLOAT32) {
        ft_set_error("index_add: expected float32 tensors, got %s and %s", ft_dtype_name(base->dtype),
                     ft_dtype_name(src->dtype));
        return NULL;
    }
    if (base->ndim == 0) {
        ft_set_error("index_add: cannot index a 0-dim tensor");
        return NULL;
    }
    int d = ft_wrap_dim(dim, base->ndim, "index_add");
    if (d < 0) return NULL;
    int64_t nidx = ft_numel(index);
    bool ok = src->ndim == base->ndim;
    for (int k = 0; ok && k < base->ndim; k++) ok = src->shape[k] == (k == d ? nidx : base->shape[k]);
    if (!ok) {
        ft_set_error("index_add: source of shape %s does not fit base %s with %lld indices along dim %d",
                     ft_shape_str(src->shape, src->ndim, s1, sizeof s1),
                     ft_shape_str(base->shape, base->ndim, s2, sizeof s2), (long long)nidx, d);
        return NULL;
    }
    ft_tensor *ic = plain_contiguous(index);
    if (!ic) return NULL;
    if (check_bounds(ft_i64(ic), nidx, base->shape[d], d, "index_add") < 0) {
        ft_release(ic);
        return NULL;
    }
    ft_tensor *sc = plain_contiguous(src);
    ft_tensor *out = NULL;
    if (sc) {
        out = ft_empty(base->shape, base->ndim, FT_FLOAT32);
        ft_tensor *bd = out ? ft_detach(base) : NULL;
        if (!bd || ft_copy_(out, bd) < 0) {
            ft_release(out);
            out = NULL;
        }
        ft_release(bd);
    }
    if (out) {
        int64_t outer = prod(base->shape, 0, d), size = base->shape[d], inner = prod(base->shape, d + 1, base->ndim);
        scatter_add(ft_f32(out), ft_f32(sc), ft_i64(ic), outer, size, nidx, inner);
        if (ft_grad_needed2(base, src)) {
            ft_node *node = ft_node_new("index_add", index_add_backward, out, 2, base, src);
            if (node) {
                node->i[0] = d;
                node->saved[0] = ft_retain(ic);   /* a detached alias already */
            }
        }
    }
    ft_release(sc);
    ft_release(ic);
    return out;
}

/* ---- gather -------------------------------------------------------------------- */

/* Walks the lines of a gather: every position of index except along dim. For line l,
 * io is the offset of its first element in the contiguous index/output and ao the
 * offset of the matching line of contiguous a. */
typedef struct {
    int ndim, dim;
    int64_t ishape[FT_MAX_DIMS], istride[FT_MAX_DIMS], astride[FT_MAX_DIMS];
    int64_t nlines, len;   /* len = index size along dim */
} gather_plan;

static void gather_plan_init(gather_plan *p, const ft_tensor *a, const ft_tensor *index, int dim) {
    p->ndim = a->ndim;
    p->dim = dim;
    int64_t is = 1, as = 1;
    for (int d = a->ndim - 1; d >= 0; d--) {
        p->ishape[d] = index->shape[d];
        p->istride[d] = is;
        p->astride[d] = as;
        is *= index->shape[d];
        as *= a->shape[d];
    }
    p->len = index->shape[dim];
    p->nlines = p->len ? ft_numel(index) / p->len : 0;
}

static void gather_line(const gather_plan *p, int64_t l, int64_t *io, int64_t *ao) {
    *io = 0;
    *ao = 0;
    for (int d = p->ndim - 1; d >= 0; d--) {
        if (d == p->dim) continue;
        int64_t k = l % p->ishape[d];
        l /= p->ishape[d];
        *io += k * p->istride[d];
        *ao += k * p->astride[d];
    }
}

#define GATHER_RUN(T)                                                              \
    static void gather_##T(const gather_plan *p, const T *a, const int64_t *idx, T *out) { \
        const int64_t is = p->istride[p->dim], as = p->astride[p->dim];            \
        _Pragma("omp parallel for if (p->nlines * p->len > PAR_MIN)")              \
        for (int64_t l = 0; l < p->nlines; l++) {                                  \
            int64_t io, ao;                                                        \
            gather_line(p, l, &io, &ao);                                           \
            for (int64_t j = 0; j < p->len; j++)                                   \
                out[io + j * is] = a[ao + idx[io + j * is] * as];                  \
        }                                                                          \
    }

GATHER_RUN(uint16_t)
GATHER_RUN(uint32_t)
GATHER_RUN(uint64_t)

/* i[0] = dim; saved[0] = the contiguous index. ga[.., idx, ..] += g along each line;
 * lines never share a destination, so they run in parallel. */
static int gather_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    const ft_tensor *a = n->inputs[0], *index = n->saved[0];
    gather_plan p;
    gather_plan_init(&p, a, index, (int)n->i[0]);
    ft_tensor *gc = grad_f32(g);
    ft_tensor *ga = gc ? ft_zeros(a->shape, a->ndim, FT_FLOAT32) : NULL;
    if (ga) {
        const float *gp = ft_f32(gc);
        const int64_t *idx = ft_i64(index);
        float *ap = ft_f32(ga);
        const int64_t is = p.istride[p.dim], as = p.astride[p.dim];
        _Pragma("omp parallel for if (p.nlines * p.len > PAR_MIN)")
        for (int64_t l = 0; l < p.nlines; l++) {
            int64_t io, ao;
            gather_line(&p, l, &io, &ao);
            for (int64_t j = 0; j < p.len; j++) ap[ao + idx[io + j * is] * as] += gp[io + j * is];
        }
    }
    ft_release(gc);
    gi[0] = ga;
    return ga ? 0 : -1;
}

ft_tensor *ft_gather(const ft_tensor *a, int dim, const ft_tensor *index) {
    char sa[128], si[128];
    if (check_index(index, "gather") < 0) return NULL;
    if (a->ndim == 0) {
        ft_set_error("gather: cannot gather from a 0-dim tensor");
        return NULL;
    }
    int d = ft_wrap_dim(dim, a->ndim, "gather");
    if (d < 0) return NULL;
    bool ok = index->ndim == a->ndim;
    for (int k = 0; ok && k < a->ndim; k++) ok = k == d || index->shape[k] <= a->shape[k];
    if (!ok) {
        ft_set_error("gather: index %s does not fit input %s (same number of dims, and no larger "
                     "outside dim %d)",
                     ft_shape_str(index->shape, index->ndim, si, sizeof si),
                     ft_shape_str(a->shape, a->ndim, sa, sizeof sa), d);
        return NULL;
    }
    ft_tensor *ic = plain_contiguous(index);
    if (!ic) return NULL;
    if (check_bounds(ft_i64(ic), ft_numel(ic), a->shape[d], d, "gather") < 0) {
        ft_release(ic);
        return NULL;
    }
    ft_tensor *x = plain_contiguous(a);
    ft_tensor *out = x ? ft_empty(index->shape, index->ndim, a->dtype) : NULL;
    if (out) {
        gather_plan p;
        gather_plan_init(&p, x, ic, d);
        switch (ft_dtype_size(a->dtype)) {
        case 2: gather_uint16_t(&p, ft_data(x), ft_i64(ic), ft_data(out)); break;
        case 4: gather_uint32_t(&p, ft_data(x), ft_i64(ic), ft_data(out)); break;
        default: gather_uint64_t(&p, ft_data(x), ft_i64(ic), ft_data(out)); break;
        }
        if (ft_grad_needed1(a)) {
            ft_node *node = ft_node_new("gather", gather_backward, out, 1, a);
            if (node) {
                node->i[0] = d;
                node->saved[0] = ft_retain(ic);
            }
        }
    }
    ft_release(x);
    ft_release(ic);
    return out;
}
