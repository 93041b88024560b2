/* Tensor storage, lifetime, creation, inspection, copies and broadcasting; the views are in
 * tensor_view.c. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "ft/autograd.h"
#include "ft/half.h"
#include "ft/ops.h"
#include "ft/runtime.h"
#include "ft/tensor.h"

/* ---- storage ------------------------------------------------------------------ */

static size_t live_bytes = 0;

size_t ft_live_bytes(void) { return __atomic_load_n(&live_bytes, __ATOMIC_RELAXED); }

/* zeroed: the bytes must read 0 (fresh pages already do, so they are not touched). */
static ft_storage *storage_new(size_t nbytes, bool zeroed) {
    ft_storage *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->data = zeroed ? ft_alloc_zeroed(nbytes) : ft_alloc(nbytes);
    if (!s->data) {
        free(s);
        return NULL;
    }
    s->nbytes = nbytes;
    s->refcount = 1;
    __atomic_add_fetch(&live_bytes, nbytes, __ATOMIC_RELAXED);
    return s;
}

static void storage_release(ft_storage *s) {
    if (!s || --s->refcount > 0) return;
    if (s->release) {
        s->release(s->owner);
    } else {
        __atomic_sub_fetch(&live_bytes, s->nbytes, __ATOMIC_RELAXED);
        ft_free(s->data, s->nbytes);
    }
    free(s);
}

/* ---- lifetime ----------------------------------------------------------------- */

ft_tensor *ft_retain(ft_tensor *t) {
    if (t) t->refcount++;
    return t;
}

void ft_release(ft_tensor *t) {
    if (!t || --t->refcount > 0) return;
    storage_release(t->storage);
    ft_release(t->grad);
    if (t->grad_fn) ft_node_release(t->grad_fn);
    free(t);
}

static void set_contiguous_strides(ft_tensor *t) {
    int64_t stride = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        t->strides[d] = stride;
        stride *= t->shape[d];
    }
}

bool ft_shape_numel(const int64_t *shape, int ndim, int64_t *numel) {
    int64_t n = 1, nonzero = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0) n = 0;
        else if (!ft_size_mul(nonzero, shape[d], &nonzero)) return false;
    }
    *numel = n ? nonzero : 0;
    return true;
}

int ft_check_shape(const int64_t *shape, int ndim, const char *op) {
    char buf[160];
    const char *sep = op ? ": " : "";
    if (!op) op = "";
    if (ndim < 0 || ndim > FT_MAX_DIMS) {
        ft_set_error("%s%s%d dims requested, at most %d supported", op, sep, ndim, FT_MAX_DIMS);
        return -1;
    }
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0) {
            ft_set_error("%s%snegative size in shape %s", op, sep, ft_shape_str(shape, ndim, buf, sizeof buf));
            return -1;
        }
    int64_t numel;
    if (!ft_shape_numel(shape, ndim, &numel)) {
        ft_set_error("%s%sshape %s has more than 2^63 elements", op, sep, ft_shape_str(shape, ndim, buf, sizeof buf));
        return -1;
    }
    return 0;
}

/* The bytes a tensor of shape and dtype needs; -1 with an error when too many. */
static int64_t tensor_nbytes(const int64_t *shape, int ndim, ft_dtype dtype) {
    /* no op name: the message reads as the caller's ("ft.ones: shape [...] has ...") */
    if (ft_check_shape(shape, ndim, NULL) < 0) return -1;
    int64_t numel, nbytes;
    ft_shape_numel(shape, ndim, &numel);
    if (!ft_size_mul(numel, (int64_t)ft_dtype_size(dtype), &nbytes) || nbytes > FT_MAX_TENSOR_BYTES) {
        char buf[160];
        ft_set_error("a %s tensor of shape %s would need more than 2^62 bytes", ft_dtype_name(dtype),
                     ft_shape_str(shape, ndim, buf, sizeof buf));
        return -1;
    }
    return nbytes;
}

/* A contiguous tensor over storage (which it takes over); NULL when storage is NULL. */
static ft_tensor *tensor_over(ft_storage *storage, const int64_t *shape, int ndim, ft_dtype dtype) {
    ft_tensor *t = storage ? calloc(1, sizeof *t) : NULL;
    if (!t) return NULL;
    t->storage = storage;
    t->refcount = 1;
    t->ndim = ndim;
    t->dtype = dtype;
    if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * ndim);
    set_contiguous_strides(t);
    return t;
}

static ft_tensor *tensor_new(const int64_t *shape, int ndim, ft_dtype dtype, bool zeroed) {
    int64_t nbytes = tensor_nbytes(shape, ndim, dtype);
    if (nbytes < 0) return NULL;
    ft_storage *s = storage_new((size_t)nbytes, zeroed);
    ft_tensor *t = tensor_over(s, shape, ndim, dtype);
    if (!t) {
        storage_release(s);
        char buf[160];
        ft_set_error("out of memory allocating a %s tensor of shape %s", ft_dtype_name(dtype),
                     ft_shape_str(shape, ndim, buf, sizeof buf));
    }
    return t;
}

ft_tensor *ft_empty(const int64_t *shape, int ndim, ft_dtype dtype) { return tensor_new(shape, ndim, dtype, false); }

/* Large zero tensors stay untouched fresh pages until written, so a model built without
 * initialisation holds no memory for weights a loader has not filled yet. */
ft_tensor *ft_zeros(const int64_t *shape, int ndim, ft_dtype dtype) { return tensor_new(shape, ndim, dtype, true); }

ft_tensor *ft_from_external(void *data, size_t nbytes, const int64_t *shape, int ndim, ft_dtype dtype,
                            void (*release)(void *owner), void *owner) {
    int64_t need = tensor_nbytes(shape, ndim, dtype);
    if (need < 0) return NULL;
    if ((size_t)need > nbytes) {
        char buf[160];
        ft_set_error("a %s tensor of shape %s needs %lld bytes, the memory given holds %zu", ft_dtype_name(dtype),
                     ft_shape_str(shape, ndim, buf, sizeof buf), (long long)need, nbytes);
        return NULL;
    }
    ft_storage *s = calloc(1, sizeof *s);
    ft_tensor *t = tensor_over(s, shape, ndim, dtype);
    if (!t) {
        free(s);
        ft_set_error("out of memory");
        return NULL;
    }
    *s = (ft_storage){.data = data, .nbytes = nbytes, .refcount = 1, .release = release, .owner = owner};
    return t;
}

ft_tensor *ft_full(const int64_t *shape, int ndim, ft_dtype dtype, double value) {
    ft_tensor *t = ft_empty(shape, ndim, dtype);
    if (t && ft_fill_(t, value) < 0) {
        ft_release(t);
        return NULL;
    }
    return t;
}

ft_tensor *ft_empty_like(const ft_tensor *t) { return ft_empty(t->shape, t->ndim, t->dtype); }
ft_tensor *ft_zeros_like(const ft_tensor *t) { return ft_zeros(t->shape, t->ndim, t->dtype); }

ft_tensor *ft_from_data(const void *data, const int64_t *shape, int ndim, ft_dtype dtype) {
    ft_tensor *t = ft_empty(shape, ndim, dtype);
    if (t && t->storage->nbytes) memcpy(t->storage->data, data, t->storage->nbytes);
    return t;
}

ft_tensor *ft_scalar(double value, ft_dtype dtype) { return ft_full(NULL, 0, dtype, value); }

static void store_elem(void *base, ft_dtype d, int64_t i, double v);

ft_tensor *ft_arange(double start, double end, double step, ft_dtype dtype) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step) || (end - start) / step < 0) {
        ft_set_error("arange: cannot go from %g to %g in steps of %g", start, end, step);
        return NULL;
    }
    double count = ceil((end - start) / step);
    if (!(count < 0x1p62)) {   /* converted only once it fits */
        ft_set_error("arange: %g to %g in steps of %g is more than 2^62 elements", start, end, step);
        return NULL;
    }
    int64_t n = (int64_t)count;
    ft_tensor *t = ft_empty(&n, 1, dtype);
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++) {
        double v = start + (double)i * step;
        if (dtype == FT_INT64) ft_i64(t)[i] = (int64_t)v;
        else if (dtype == FT_FLOAT32) ft_f32(t)[i] = (float)v;
        else store_elem(t->storage->data, dtype, i, v);   /* half: through float32, as torch */
    }
    return t;
}

ft_tensor *ft_randn(const int64_t *shape, int ndim) {
    ft_tensor *t = ft_empty(shape, ndim, FT_FLOAT32);
    if (!t) return NULL;
    float *p = ft_f32(t);
    ft_rng_fill_normal(p, ft_numel(t));
    return t;
}

ft_tensor *ft_rand(const int64_t *shape, int ndim) {
    ft_tensor *t = ft_empty(shape, ndim, FT_FLOAT32);
    if (!t) return NULL;
    float *p = ft_f32(t);
    for (int64_t i = 0, n = ft_numel(t); i < n; i++) p[i] = (float)ft_rng_uniform();
    return t;
}

ft_tensor *ft_randint(int64_t low, int64_t high, const int64_t *shape, int ndim) {
    if (high <= low) {
        ft_set_error("randint: empty range [%lld, %lld)", (long long)low, (long long)high);
        return NULL;
    }
    ft_tensor *t = ft_empty(shape, ndim, FT_INT64);
    if (!t) return NULL;
    uint64_t range = (uint64_t)high - (uint64_t)low;   /* no signed overflow for wide ranges */
    int64_t *p = ft_i64(t);
    /* low + draw in unsigned arithmetic: the sum fits int64, its parts need not */
    for (int64_t i = 0, n = ft_numel(t); i < n; i++) p[i] = (int64_t)((uint64_t)low + ft_rng_next() % range);
    return t;
}

/* ---- inspection --------------------------------------------------------------- */

int64_t ft_numel(const ft_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

bool ft_is_contiguous(const ft_tensor *t) {
    int64_t stride = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->strides[d] != stride) return false;
        stride *= t->shape[d];
    }
    return true;
}

bool ft_same_shape(const ft_tensor *a, const ft_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

static int64_t offset_of(const ft_tensor *t, const int64_t *index) {
    int64_t off = t->offset;
    for (int d = 0; d < t->ndim; d++) off += index[d] * t->strides[d];
    return off;
}

/* ---- elements of any dtype ------------------------------------------------------ */

static double load_elem(const void *base, ft_dtype d, int64_t i) {
    switch (d) {
    case FT_INT64: return (double)((const int64_t *)base)[i];
    case FT_BFLOAT16: return ft_bf16_to_f32(((const uint16_t *)base)[i]);
    case FT_FLOAT16: return ft_f16_to_f32(((const uint16_t *)base)[i]);
    case FT_FLOAT64: return ((const double *)base)[i];
    default: return ((const float *)base)[i];
    }
}

static void store_elem(void *base, ft_dtype d, int64_t i, double v) {
    switch (d) {
    case FT_INT64: ((int64_t *)base)[i] = (int64_t)v; break;
    case FT_BFLOAT16: ((uint16_t *)base)[i] = ft_f32_to_bf16((float)v); break;
    case FT_FLOAT16: ((uint16_t *)base)[i] = ft_f32_to_f16((float)v); break;
    case FT_FLOAT64: ((double *)base)[i] = v; break;
    default: ((float *)base)[i] = (float)v; break;
    }
}

/* n elements from sp (stride sls, dtype sd) into dp (stride dls, dtype dd), converting.
 * Element offsets are in each side's own elements. */
static void copy_row(void *dp, ft_dtype dd, int64_t dls, const void *sp, ft_dtype sd, int64_t sls, int64_t n) {
    if (dd == sd && ft_dtype_size(dd) == 4) {
        uint32_t *d = dp;
        const uint32_t *s = sp;
        for (int64_t j = 0; j < n; j++) d[j * dls] = s[j * sls];
    } else if (dd == sd && ft_dtype_size(dd) == 8) {
        uint64_t *d = dp;
        const uint64_t *s = sp;
        for (int64_t j = 0; j < n; j++) d[j * dls] = s[j * sls];
    } else if (dd == sd) {
        uint16_t *d = dp;
        const uint16_t *s = sp;
        for (int64_t j = 0; j < n; j++) d[j * dls] = s[j * sls];
    } else if (dd == FT_FLOAT32 && sd == FT_BFLOAT16) {
        float *d = dp;
        const uint16_t *s = sp;
        for (int64_t j = 0; j < n; j++) d[j * dls] = ft_bf16_to_f32(s[j * sls]);
    } else if (dd == FT_FLOAT32 && sd == FT_FLOAT16) {
        float *d = dp;
        const uint16_t *s = sp;
        for (int64_t j = 0; j < n; j++) d[j * dls] = ft_f16_to_f32(s[j * sls]);
    } else if (dd == FT_BFLOAT16 && sd == FT_FLOAT32) {
        uint16_t *d = dp;
        const float *s = sp;
        for (int64_t j = 0; j < n; j++) d[j * dls] = ft_f32_to_bf16(s[j * sls]);
    } else if (dd == FT_FLOAT16 && sd == FT_FLOAT32) {
        uint16_t *d = dp;
        const float *s = sp;
        for (int64_t j = 0; j < n; j++) d[j * dls] = ft_f32_to_f16(s[j * sls]);
    } else {
        for (int64_t j = 0; j < n; j++) store_elem(dp, dd, j * dls, load_elem(sp, sd, j * sls));
    }
}

double ft_get(const ft_tensor *t, const int64_t *index) {
    return load_elem(t->storage->data, t->dtype, offset_of(t, index));
}

void ft_set(ft_tensor *t, const int64_t *index, double value) {
    store_elem(t->storage->data, t->dtype, offset_of(t, index), value);
}

double ft_item(const ft_tensor *t) {
    if (ft_numel(t) != 1) {
        char buf[160];
        ft_set_error("item: a tensor of shape %s has %lld elements, not 1",
                     ft_shape_str(t->shape, t->ndim, buf, sizeof buf), (long long)ft_numel(t));
        return NAN;
    }
    int64_t zero[FT_MAX_DIMS] = {0};
    return ft_get(t, zero);
}

int ft_wrap_dim(int dim, int ndim, const char *op) {
    int n = ndim > 0 ? ndim : 1;
    if (dim < -n || dim >= n) {
        ft_set_error("%s: dim %d out of range for a %d-dim tensor", op, dim, ndim);
        return -1;
    }
    return dim < 0 ? dim + n : dim;
}

/* ---- raw copies --------------------------------------------------------------- */

/* Offset (in elements) of the flat row `row` of t seen as [numel/last, last]. */
static int64_t row_offset(const ft_tensor *t, int64_t row) {
    int64_t off = t->offset;
    for (int d = t->ndim - 2; d >= 0; d--) {
        int64_t i = row % t->shape[d];
        row /= t->shape[d];
        off += i * t->strides[d];
    }
    return off;
}

/* Float values going into an int64 tensor must have an int64 value (truncated toward zero,
 * as C and torch convert): NaN, infinities and magnitudes of 2^63 and more have none. */
static int check_int64_convertible(const ft_tensor *src) {
    int64_t n = ft_numel(src);
    int rc = 0;
    for (int64_t r = 0, last = src->ndim ? src->shape[src->ndim - 1] : 1; last && r < n / last && rc == 0; r++) {
        int64_t off = row_offset(src, r), ls = src->ndim ? src->strides[src->ndim - 1] : 1;
        for (int64_t j = 0; j < last && rc == 0; j++) {
            double v = load_elem(src->storage->data, src->dtype, off + j * ls);
            if (!(v >= -0x1p63 && v < 0x1p63)) {
                ft_set_error("float value %g has no int64 value", v);
                rc = -1;
            }
        }
    }
    return rc;
}

int ft_copy_(ft_tensor *dst, const ft_tensor *src) {
    int64_t n = ft_numel(dst);
    if (dst->dtype == FT_INT64 && ft_dtype_is_float(src->dtype) && n == ft_numel(src) &&
        check_int64_convertible(src) < 0)
        return -1;
    if (n != ft_numel(src)) {
        char a[160], b[160];
        ft_set_error("copy: destination %s and source %s differ in element count",
                     ft_shape_str(dst->shape, dst->ndim, a, sizeof a),
                     ft_shape_str(src->shape, src->ndim, b, sizeof b));
        return -1;
    }
    if (n == 0) return 0;
    /* Walk both in the destination's logical order; views of equal numel but other shape
     * are first seen as contiguous sources. */
    ft_tensor *s = (ft_tensor *)src;
    bool reshaped = false;
    if (!ft_same_shape(dst, src)) {
        s = ft_contiguous(src);
        if (!s) return -1;
        reshaped = true;
    }
    size_t des = ft_dtype_size(dst->dtype), ses = ft_dtype_size(s->dtype);
    char *dbase = dst->storage->data, *sbase = s->storage->data;
    if (ft_is_contiguous(dst) && ft_is_contiguous(s) && dst->dtype == s->dtype) {
        memmove(dbase + dst->offset * des, sbase + s->offset * ses, (size_t)n * des);
    } else {
        int64_t last = dst->ndim ? dst->shape[dst->ndim - 1] : 1, rows = n / last;
        int64_t dls = dst->ndim ? dst->strides[dst->ndim - 1] : 1;
        int64_t sls = s->ndim ? s->strides[s->ndim - 1] : 1;
        bool flat = ft_is_contiguous(s) && reshaped;   /* s has another shape: index it flat */
        #pragma omp parallel for if (n > 65536)
        for (int64_t r = 0; r < rows; r++) {
            int64_t doff = row_offset(dst, r), soff = flat ? s->offset + r * last : row_offset(s, r);
            copy_row(dbase + doff * des, dst->dtype, dls, sbase + soff * ses, s->dtype, flat ? 1 : sls, last);
        }
    }
    if (reshaped) ft_release(s);
    return 0;
}

int ft_fill_(ft_tensor *t, double value) {
    if (t->dtype == FT_INT64 && !ft_is_int64_value(value)) {
        ft_set_error("fill_: %g is not an integer (int64 tensors hold integers)", value);
        return -1;
    }
    int64_t n = ft_numel(t);
    if (ft_is_contiguous(t) && t->dtype == FT_FLOAT32) {
        float *p = ft_f32(t), v = (float)value;
        for (int64_t i = 0; i < n; i++) p[i] = v;
        return 0;
    }
    int64_t last = t->ndim ? t->shape[t->ndim - 1] : 1, rows = n / (last ? last : 1);
    int64_t ls = t->ndim ? t->strides[t->ndim - 1] : 1;
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = row_offset(t, r);
        for (int64_t j = 0; j < last; j++) store_elem(t->storage->data, t->dtype, off + j * ls, value);
    }
    return 0;
}

/* ---- broadcasting ------------------------------------------------------------- */

int ft_broadcast_shape(const int64_t *a, int na, const int64_t *b, int nb, int64_t *out, int *nout,
                       const char *op) {
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t da = i < na ? a[na - 1 - i] : 1, db = i < nb ? b[nb - 1 - i] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[160], sb[160];
            ft_set_error("%s: shapes %s and %s cannot broadcast", op, ft_shape_str(a, na, sa, sizeof sa),
                         ft_shape_str(b, nb, sb, sizeof sb));
            return -1;
        }
        out[n - 1 - i] = da == 1 ? db : da;
    }
    *nout = n;
    return 0;
}

/* A fresh copy of t in dtype (no autograd). */
static ft_tensor *copy_as(const ft_tensor *t, const int64_t *shape, int ndim, ft_dtype dtype) {
    ft_tensor *out = ft_empty(shape, ndim, dtype);
    if (out && ft_copy_(out, t) < 0) {
        ft_release(out);
        return NULL;
    }
    return out;
}

ft_tensor *ft_sum_to_shape(const ft_tensor *g, const int64_t *shape, int ndim) {
    bool same = g->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = g->shape[d] == shape[d];
    if (same) return copy_as(g, shape, ndim, g->dtype);
    if (g->dtype != FT_FLOAT32) {   /* the gradient of a half view: sum in float32, round once */
        ft_tensor *gf = copy_as(g, g->shape, g->ndim, FT_FLOAT32);
        ft_tensor *sum = gf ? ft_sum_to_shape(gf, shape, ndim) : NULL;
        ft_tensor *out = sum ? copy_as(sum, shape, ndim, g->dtype) : NULL;
        ft_release(gf);
        ft_release(sum);
        return out;
    }
    ft_tensor *out = ft_zeros(shape, ndim, FT_FLOAT32);
    if (!out) return NULL;
    /* Output strides seen from g's dims: 0 where out broadcasts. */
    int64_t ostr[FT_MAX_DIMS];
    int lead = g->ndim - ndim;
    for (int d = 0; d < g->ndim; d++) {
        int od = d - lead;
        ostr[d] = (od < 0 || shape[od] == 1) ? 0 : out->strides[od];
    }
    float *o = ft_f32(out);
    const float *gp = (const float *)g->storage->data;
    int64_t idx[FT_MAX_DIMS] = {0}, n = ft_numel(g);
    int64_t goff = g->offset, ooff = 0;
    for (int64_t k = 0; k < n; k++) {
        o[ooff] += gp[goff];
        for (int d = g->ndim - 1; d >= 0; d--) {
            if (++idx[d] < g->shape[d]) {
                goff += g->strides[d];
                ooff += ostr[d];
                break;
            }
            goff -= (g->shape[d] - 1) * g->strides[d];
            ooff -= (g->shape[d] - 1) * ostr[d];
            idx[d] = 0;
        }
    }
    return out;
}

/* ---- copies into new storage -------------------------------------------------- */

static int identity_back(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    gi[0] = ft_retain((ft_tensor *)g);
    return 0;
}

ft_tensor *ft_clone(const ft_tensor *t) {
    ft_tensor *c = ft_empty(t->shape, t->ndim, t->dtype);
    if (!c) return NULL;
    if (ft_copy_(c, t) < 0) {
        ft_release(c);
        return NULL;
    }
    if (ft_grad_needed1(t)) ft_node_new("clone", identity_back, c, 1, t);
    return c;
}

ft_tensor *ft_contiguous(const ft_tensor *t) {
    if (ft_is_contiguous(t)) return ft_retain((ft_tensor *)t);
    return ft_clone(t);
}

/* The gradient of a conversion between float dtypes is the incoming gradient in the source's
 * dtype (rounded once there, as torch's .to() does). */
static int to_dtype_back(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    gi[0] = ft_to_dtype(g, (ft_dtype)n->i[0]);
    return gi[0] ? 0 : -1;
}

ft_tensor *ft_promote_f32(const ft_tensor *t) {
    if (t->dtype == FT_FLOAT32 || t->dtype == FT_INT64) return ft_retain((ft_tensor *)t);
    return ft_to_dtype(t, FT_FLOAT32);
}

ft_tensor *ft_to_dtype(const ft_tensor *t, ft_dtype dtype) {
    if (t->dtype == dtype) return ft_retain((ft_tensor *)t);
    ft_tensor *c = ft_empty(t->shape, t->ndim, dtype);
    if (c && ft_copy_(c, t) < 0) {
        ft_release(c);
        return NULL;
    }
    if (c && ft_dtype_is_float(dtype) && ft_dtype_is_float(t->dtype) && ft_grad_needed1(t)) {
        ft_node *node = ft_node_new("to", to_dtype_back, c, 1, t);
        if (node) node->i[0] = t->dtype;
    }
    return c;
}

/* ---- storage swap ------------------------------------------------------------- */

int ft_set_(ft_tensor *t, const ft_tensor *src) {
    char a[160], b[160];
    if (t->grad_fn) {
        ft_set_error("set_: the tensor was computed by an op (grad_fn %s); only a leaf can take another "
                     "tensor's storage", t->grad_fn->op);
        return -1;
    }
    if (!ft_same_shape(t, src)) {
        ft_set_error("set_: the tensor has shape %s, the source %s; set_ needs the same shape",
                     ft_shape_str(t->shape, t->ndim, a, sizeof a), ft_shape_str(src->shape, src->ndim, b, sizeof b));
        return -1;
    }
    if (t->dtype != src->dtype && !(ft_dtype_is_float(t->dtype) && ft_dtype_is_float(src->dtype))) {
        ft_set_error("set_: the tensor is %s, the source %s; only float dtypes change into each other",
                     ft_dtype_name(t->dtype), ft_dtype_name(src->dtype));
        return -1;
    }
    if (t->dtype != src->dtype && t->grad) {   /* a gradient of the old dtype no longer fits */
        ft_release(t->grad);
        t->grad = NULL;
    }
    t->dtype = src->dtype;
    ft_storage *old = t->storage;
    src->storage->refcount++;   /* before the release: src may already share t's storage */
    t->storage = src->storage;
    t->offset = src->offset;
    memcpy(t->strides, src->strides, sizeof t->strides);
    storage_release(old);
    return 0;
}
