/* Views: tensors that share another's storage with a new shape, strides or offset (detach,
 * view/reshape, transpose, permute, narrow, select, expand, squeeze, unsqueeze), each with
 * the backward that maps a gradient back to the input's shape. reshape copies only when no
 * strides can describe the new shape. */
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/runtime.h"
#include "ft/tensor.h"

static ft_tensor *make_view(const ft_tensor *t, const int64_t *shape, const int64_t *strides, int ndim,
                            int64_t offset) {
    ft_tensor *v = calloc(1, sizeof *v);
    if (!v) {
        ft_set_error("out of memory");
        return NULL;
    }
    v->refcount = 1;
    v->storage = t->storage;
    t->storage->refcount++;
    v->offset = offset;
    v->ndim = ndim;
    v->dtype = t->dtype;
    if (ndim) {
        memcpy(v->shape, shape, sizeof(int64_t) * ndim);
        memcpy(v->strides, strides, sizeof(int64_t) * ndim);
    }
    return v;
}

ft_tensor *ft_detach(const ft_tensor *t) { return make_view(t, t->shape, t->strides, t->ndim, t->offset); }

/* Backward of every view that only changes the shape: reshape the gradient back.
 * i[0..7] = input shape, i[8] = input ndim. */
static int reshape_back(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    gi[0] = ft_reshape(g, n->i, (int)n->i[8]);
    return gi[0] ? 0 : -1;
}

static void record_reshape(ft_tensor *out, const ft_tensor *in, const char *op) {
    if (!ft_grad_needed1(in)) return;
    ft_node *n = ft_node_new(op, reshape_back, out, 1, in);
    memcpy(n->i, in->shape, sizeof(int64_t) * in->ndim);
    n->i[8] = in->ndim;
}

/* Resolves one -1 in `shape` against numel; -1 with an error when impossible. */
static int infer_shape(const ft_tensor *t, const int64_t *shape, int ndim, int64_t *out, const char *op) {
    if (ndim < 0 || ndim > FT_MAX_DIMS) {
        ft_set_error("%s: %d dims requested, at most %d supported", op, ndim, FT_MAX_DIMS);
        return -1;
    }
    int infer = -1;
    int64_t known = 1;
    bool overflow = false;
    for (int d = 0; d < ndim; d++) {
        out[d] = shape[d];
        if (shape[d] == -1) {
            if (infer >= 0) {
                ft_set_error("%s: only one dimension can be -1", op);
                return -1;
            }
            infer = d;
        } else if (shape[d] < 0) {
            ft_set_error("%s: invalid size %lld", op, (long long)shape[d]);
            return -1;
        } else if (!ft_size_mul(known, shape[d], &known)) {
            overflow = true;   /* more elements than any tensor has: a mismatch */
            break;
        }
    }
    int64_t numel = ft_numel(t);
    bool ok = !overflow;
    if (ok && infer >= 0) {
        ok = known > 0 && numel % known == 0;
        if (ok) out[infer] = numel / known;
    } else if (ok) {
        ok = known == numel;
    }
    if (ok && ft_check_shape(out, ndim, op) < 0) return -1;   /* zeros hide overflowing sizes */
    if (!ok) {
        char a[160], b[160];
        ft_set_error("%s: shape %s is invalid for a tensor of shape %s (%lld elements)", op,
                     ft_shape_str(shape, ndim, a, sizeof a), ft_shape_str(t->shape, t->ndim, b, sizeof b),
                     (long long)numel);
        return -1;
    }
    return 0;
}

/* Strides for viewing t with new_shape without copying (PyTorch's rule); false if impossible. */
static bool view_strides(const ft_tensor *t, const int64_t *new_shape, int new_ndim, int64_t *new_strides) {
    if (ft_numel(t) == 0 || t->ndim == 0) {
        int64_t stride = 1;
        for (int d = new_ndim - 1; d >= 0; d--) {
            new_strides[d] = stride;
            stride *= new_shape[d] ? new_shape[d] : 1;
        }
        return true;
    }
    int view_d = new_ndim - 1;
    int64_t chunk_base_stride = t->strides[t->ndim - 1], tensor_numel = 1, view_numel = 1;
    for (int tensor_d = t->ndim - 1; tensor_d >= 0; tensor_d--) {
        tensor_numel *= t->shape[tensor_d];
        if (tensor_d == 0 ||
            (t->shape[tensor_d - 1] != 1 && t->strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
                new_strides[view_d] = view_numel * chunk_base_stride;
                view_numel *= new_shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return false;
            if (tensor_d > 0) {
                chunk_base_stride = t->strides[tensor_d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

ft_tensor *ft_view(const ft_tensor *t, const int64_t *shape, int ndim) {
    int64_t s[FT_MAX_DIMS], st[FT_MAX_DIMS];
    if (infer_shape(t, shape, ndim, s, "view") < 0) return NULL;
    if (!view_strides(t, s, ndim, st)) {
        char a[160], b[160];
        ft_set_error("view: shape %s is not compatible with the strides of a %s view; use reshape",
                     ft_shape_str(s, ndim, a, sizeof a), ft_shape_str(t->shape, t->ndim, b, sizeof b));
        return NULL;
    }
    ft_tensor *v = make_view(t, s, st, ndim, t->offset);
    if (v) record_reshape(v, t, "view");
    return v;
}

ft_tensor *ft_reshape(const ft_tensor *t, const int64_t *shape, int ndim) {
    int64_t s[FT_MAX_DIMS], st[FT_MAX_DIMS];
    if (infer_shape(t, shape, ndim, s, "reshape") < 0) return NULL;
    ft_tensor *v;
    if (view_strides(t, s, ndim, st)) {
        v = make_view(t, s, st, ndim, t->offset);
    } else {
        v = ft_empty(s, ndim, t->dtype);
        if (v && ft_copy_(v, t) < 0) {
            ft_release(v);
            return NULL;
        }
    }
    if (v) record_reshape(v, t, "reshape");
    return v;
}

static int transpose_back(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    gi[0] = ft_transpose(g, (int)n->i[0], (int)n->i[1]);
    return gi[0] ? 0 : -1;
}

ft_tensor *ft_transpose(const ft_tensor *t, int dim0, int dim1) {
    int d0 = ft_wrap_dim(dim0, t->ndim, "transpose"), d1 = ft_wrap_dim(dim1, t->ndim, "transpose");
    if (d0 < 0 || d1 < 0) return NULL;
    if (t->ndim == 0) return ft_detach(t);
    int64_t s[FT_MAX_DIMS], st[FT_MAX_DIMS];
    memcpy(s, t->shape, sizeof s);
    memcpy(st, t->strides, sizeof st);
    s[d0] = t->shape[d1], s[d1] = t->shape[d0];
    st[d0] = t->strides[d1], st[d1] = t->strides[d0];
    ft_tensor *v = make_view(t, s, st, t->ndim, t->offset);
    if (v && ft_grad_needed1(t)) {
        ft_node *n = ft_node_new("transpose", transpose_back, v, 1, t);
        n->i[0] = d0, n->i[1] = d1;
    }
    return v;
}

static int permute_back(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    int inv[FT_MAX_DIMS];
    for (int d = 0; d < g->ndim; d++) inv[n->i[d]] = d;
    gi[0] = ft_permute(g, inv);
    return gi[0] ? 0 : -1;
}

ft_tensor *ft_permute(const ft_tensor *t, const int *dims) {
    int64_t s[FT_MAX_DIMS], st[FT_MAX_DIMS];
    bool seen[FT_MAX_DIMS] = {false};
    int wrapped[FT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        int src = ft_wrap_dim(dims[d], t->ndim, "permute");
        if (src < 0) return NULL;
        if (seen[src]) {
            ft_set_error("permute: dim %d repeated", dims[d]);
            return NULL;
        }
        seen[src] = true;
        wrapped[d] = src;
        s[d] = t->shape[src];
        st[d] = t->strides[src];
    }
    ft_tensor *v = make_view(t, s, st, t->ndim, t->offset);
    if (v && ft_grad_needed1(t)) {
        ft_node *n = ft_node_new("permute", permute_back, v, 1, t);
        for (int d = 0; d < t->ndim; d++) n->i[d] = wrapped[d];
    }
    return v;
}

/* Backward of narrow/select: the gradient lands in a zero tensor of the input's shape.
 * i[0..7] input shape, i[8] ndim, i[9] dim, i[10] start, i[11] length (-1: select). */
static int slice_back(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    ft_tensor *full = ft_zeros(n->i, (int)n->i[8], g->dtype);   /* a half view's gradient stays half */
    if (!full) return -1;
    int dim = (int)n->i[9];
    ft_tensor *part = n->i[11] < 0 ? ft_select(full, dim, n->i[10]) : ft_narrow(full, dim, n->i[10], n->i[11]);
    int rc = part ? ft_copy_(part, g) : -1;
    ft_release(part);
    if (rc < 0) {
        ft_release(full);
        return -1;
    }
    gi[0] = full;
    return 0;
}

static void record_slice(ft_tensor *out, const ft_tensor *in, const char *op, int dim, int64_t start,
                         int64_t length) {
    if (!ft_grad_needed1(in)) return;
    ft_node *n = ft_node_new(op, slice_back, out, 1, in);
    memcpy(n->i, in->shape, sizeof(int64_t) * in->ndim);
    n->i[8] = in->ndim, n->i[9] = dim, n->i[10] = start, n->i[11] = length;
}

ft_tensor *ft_narrow(const ft_tensor *t, int dim, int64_t start, int64_t length) {
    int d = ft_wrap_dim(dim, t->ndim, "narrow");
    if (d < 0) return NULL;
    if (t->ndim == 0) {
        ft_set_error("narrow: cannot narrow a 0-dim tensor");
        return NULL;
    }
    if (start < 0 || length < 0 || start > t->shape[d] || length > t->shape[d] - start) {
        ft_set_error("narrow: start %lld + length %lld exceeds size %lld of dim %d", (long long)start,
                     (long long)length, (long long)t->shape[d], d);
        return NULL;
    }
    int64_t s[FT_MAX_DIMS];
    memcpy(s, t->shape, sizeof s);
    s[d] = length;
    ft_tensor *v = make_view(t, s, t->strides, t->ndim, t->offset + start * t->strides[d]);
    if (v) record_slice(v, t, "narrow", d, start, length);
    return v;
}

ft_tensor *ft_select(const ft_tensor *t, int dim, int64_t index) {
    int d = ft_wrap_dim(dim, t->ndim, "select");
    if (d < 0) return NULL;
    if (t->ndim == 0) {
        ft_set_error("select: cannot index a 0-dim tensor");
        return NULL;
    }
    if (index < 0 || index >= t->shape[d]) {
        ft_set_error("select: index %lld out of range for size %lld of dim %d", (long long)index,
                     (long long)t->shape[d], d);
        return NULL;
    }
    int64_t s[FT_MAX_DIMS], st[FT_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (i != d) s[k] = t->shape[i], st[k++] = t->strides[i];
    ft_tensor *v = make_view(t, s, st, t->ndim - 1, t->offset + index * t->strides[d]);
    if (v) record_slice(v, t, "select", d, index, -1);
    return v;
}

/* i[0..7] input shape, i[8] ndim. */
static int expand_back(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    gi[0] = ft_sum_to_shape(g, n->i, (int)n->i[8]);
    return gi[0] ? 0 : -1;
}

ft_tensor *ft_expand(const ft_tensor *t, const int64_t *shape, int ndim) {
    char a[160], b[160];
    if (ndim < t->ndim || ndim > FT_MAX_DIMS) {
        ft_set_error("expand: cannot expand %s to %d dims", ft_shape_str(t->shape, t->ndim, a, sizeof a), ndim);
        return NULL;
    }
    int64_t s[FT_MAX_DIMS], st[FT_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int d = 0; d < ndim; d++) {
        int td = d - lead;
        int64_t want = shape[d];
        if (td < 0) {
            if (want < 0) goto bad;
            s[d] = want, st[d] = 0;
        } else if (want == -1 || want == t->shape[td]) {
            s[d] = t->shape[td], st[d] = t->strides[td];
        } else if (t->shape[td] == 1 && want >= 0) {
            s[d] = want, st[d] = 0;
        } else {
            goto bad;
        }
    }
    if (ft_check_shape(s, ndim, "expand") < 0) return NULL;
    ft_tensor *v = make_view(t, s, st, ndim, t->offset);
    if (v && ft_grad_needed1(t)) {
        ft_node *n = ft_node_new("expand", expand_back, v, 1, t);
        memcpy(n->i, t->shape, sizeof(int64_t) * t->ndim);
        n->i[8] = t->ndim;
    }
    return v;
bad:
    ft_set_error("expand: cannot expand %s to %s", ft_shape_str(t->shape, t->ndim, a, sizeof a),
                 ft_shape_str(shape, ndim, b, sizeof b));
    return NULL;
}

ft_tensor *ft_squeeze(const ft_tensor *t, int dim) {
    int64_t s[FT_MAX_DIMS], st[FT_MAX_DIMS];
    int k = 0;
    int only = -1;
    if (dim >= -t->ndim) {
        only = ft_wrap_dim(dim, t->ndim, "squeeze");
        if (only < 0) return NULL;
    }
    for (int d = 0; d < t->ndim; d++) {
        bool drop = t->shape[d] == 1 && (only < 0 || only == d);
        if (!drop) s[k] = t->shape[d], st[k++] = t->strides[d];
    }
    ft_tensor *v = make_view(t, s, st, k, t->offset);
    if (v) record_reshape(v, t, "squeeze");
    return v;
}

ft_tensor *ft_unsqueeze(const ft_tensor *t, int dim) {
    if (t->ndim >= FT_MAX_DIMS) {
        ft_set_error("unsqueeze: a tensor already has the maximum of %d dims", FT_MAX_DIMS);
        return NULL;
    }
    int d = ft_wrap_dim(dim, t->ndim + 1, "unsqueeze");
    if (d < 0) return NULL;
    int64_t s[FT_MAX_DIMS], st[FT_MAX_DIMS];
    for (int i = 0, k = 0; i <= t->ndim; i++) {
        if (i == d) {
            s[i] = 1;
            st[i] = d < t->ndim ? t->shape[d] * t->strides[d] : 1;
        } else {
            s[i] = t->shape[k], st[i] = t->strides[k];
            k++;
        }
    }
    ft_tensor *v = make_view(t, s, st, t->ndim + 1, t->offset);
    if (v) record_reshape(v, t, "unsqueeze");
    return v;
}
