/* Reverse-mode autograd: graph recording and the backward pass. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"

static _Thread_local bool grad_enabled = true;

bool ft_grad_enabled(void) { return grad_enabled; }

bool ft_set_grad_enabled(bool enabled) {
    bool previous = grad_enabled;
    grad_enabled = enabled;
    return previous;
}

bool ft_grad_needed(int n, const ft_tensor *const *ts) {
    if (!grad_enabled) return false;
    for (int i = 0; i < n; i++)
        if (ts[i] && ts[i]->requires_grad) return true;
    return false;
}

/* The edge to an input produced by another node: a tensor of the input's shape that holds
 * the producer (for routing gradients) but not the input's data (stride-0 over one float).
 * Keeping the input itself would hold every intermediate result alive until backward,
 * whether or not a backward function needs it; what they need they save explicitly. */
static ft_tensor *graph_edge(ft_tensor *in) {
    ft_tensor *one = ft_zeros(NULL, 0, FT_FLOAT32);
    ft_tensor *edge = one ? ft_expand(one, in->shape, in->ndim) : NULL;
    ft_release(one);
    if (!edge) return ft_retain(in); /* out of memory: fall back to holding the input */
    edge->grad_fn = in->grad_fn;
    edge->grad_fn->refcount++;
    edge->requires_grad = true;
    return edge;
}

ft_node *ft_node_new(const char *op, ft_backward_fn backward, ft_tensor *out, int n_inputs, ...) {
    ft_node *n = calloc(1, sizeof *n);
    if (!n) return NULL; /* out of memory: the output simply records no history */
    n->refcount = 1;
    n->op = op;
    n->backward = backward;
    n->n_inputs = n_inputs;
    va_list ap;
    va_start(ap, n_inputs);
    for (int i = 0; i < n_inputs; i++) {
        ft_tensor *in = (ft_tensor *)va_arg(ap, const ft_tensor *);
        if (!in || !in->requires_grad) n->inputs[i] = NULL;
        else n->inputs[i] = in->grad_fn ? graph_edge(in) : ft_retain(in); /* leaves: their .grad is filled */
    }
    va_end(ap);
    memcpy(n->out_shape, out->shape, sizeof(int64_t) * out->ndim);
    n->out_ndim = out->ndim;
    if (out->grad_fn) ft_node_release(out->grad_fn);
    out->grad_fn = n;
    out->requires_grad = true;
    return n;
}

static void drop_saved(ft_node *n) {
    for (int i = 0; i < FT_NODE_MAX_SAVED; i++) {
        if (n->saved[i]) n->released = true;
        ft_release(n->saved[i]);
        n->saved[i] = NULL;
    }
}

void ft_node_release(ft_node *n) {
    if (!n || --n->refcount > 0) return;
    for (int i = 0; i < n->n_inputs; i++) ft_release(n->inputs[i]);
    drop_saved(n);
    ft_release(n->grad_accum);
    if (n->free_ctx) n->free_ctx(n->ctx);
    free(n);
}

int ft_set_requires_grad(ft_tensor *t, bool requires_grad) {
    if (t->grad_fn) {
        ft_set_error("requires_grad can only be changed on leaf tensors; use detach() first");
        return -1;
    }
    if (requires_grad && t->dtype != FT_FLOAT32) {
        ft_set_error("only float32 tensors can require gradients, got %s", ft_dtype_name(t->dtype));
        return -1;
    }
    t->requires_grad = requires_grad;
    return 0;
}

/* ---- backward ----------------------------------------------------------------- */

typedef struct {
    ft_node **items;
    size_t len, cap;
} node_list;

static int list_push(node_list *l, ft_node *n) {
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        ft_node **items = realloc(l->items, cap * sizeof *items);
        if (!items) {
            ft_set_error("backward: out of memory");
            return -1;
        }
        l->items = items, l->cap = cap;
    }
    l->items[l->len++] = n;
    return 0;
}

/* *acc += g, where *acc is owned by us; g is consumed (its reference is taken over). */
static int accumulate(ft_tensor **acc, ft_tensor *g) {
    if (!*acc) {
        *acc = g;
        return 0;
    }
    ft_tensor *a = *acc;
    /* In place only when nothing else can see a's storage (views share storage). */
    if (a->refcount == 1 && a->storage->refcount == 1 && ft_is_contiguous(a) && ft_is_contiguous(g) &&
        ft_same_shape(a, g)) {
        float *pa = ft_f32(a);
        const float *pg = ft_f32(g);
        int64_t n = ft_numel(a);
        #pragma omp parallel for simd if (n > 65536)
        for (int64_t i = 0; i < n; i++) pa[i] += pg[i];
        ft_release(g);
        return 0;
    }
    ft_tensor *sum = ft_add(a, g);
    ft_release(g);
    if (!sum) return -1;
    ft_release(a);
    *acc = sum;
    return 0;
}

/* Leaf gradients are fresh tensors owned by the leaf, so later in-place accumulation
 * never writes into a tensor that something else holds. */
static int accumulate_leaf(ft_tensor *leaf, ft_tensor *g) {
    if (!leaf->grad) {
        ft_tensor *copy = ft_empty(leaf->shape, leaf->ndim, FT_FLOAT32);
        int rc = copy ? ft_copy_(copy, g) : -1;
        ft_release(g);
        if (rc < 0) {
            ft_release(copy);
            return -1;
        }
        leaf->grad = copy;
        return 0;
    }
    if (leaf->grad->refcount > 1 || leaf->grad->storage->refcount > 1) { /* someone holds the old gradient */
        ft_tensor *sum = ft_add(leaf->grad, g);
        ft_release(g);
        if (!sum) return -1;
        ft_release(leaf->grad);
        leaf->grad = sum;
        return 0;
    }
    return accumulate(&leaf->grad, g);
}

static bool shape_matches(const ft_tensor *t, const int64_t *shape, int ndim) {
    if (t->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return false;
    return true;
}

int ft_backward(ft_tensor *root, const ft_tensor *grad, bool retain_graph) {
    char a[160], b[160];
    if (!root->requires_grad) {
        ft_set_error("backward: the tensor does not require grad and has no grad_fn");
        return -1;
    }
    ft_tensor *seed;
    if (grad) {
        if (!ft_same_shape(grad, root)) {
            ft_set_error("backward: gradient of shape %s given for a tensor of shape %s",
                         ft_shape_str(grad->shape, grad->ndim, a, sizeof a),
                         ft_shape_str(root->shape, root->ndim, b, sizeof b));
            return -1;
        }
        seed = ft_to_dtype(grad, FT_FLOAT32);
        if (seed == grad) { /* take a private copy: accumulation may write into it */
            ft_release(seed);
            seed = ft_clone(grad);
        }
    } else {
        if (ft_numel(root) != 1) {
            ft_set_error("backward: a gradient can be implied only for one-element outputs, got shape %s; "
                         "pass a gradient",
                         ft_shape_str(root->shape, root->ndim, a, sizeof a));
            return -1;
        }
        seed = ft_full(root->shape, root->ndim, FT_FLOAT32, 1.0);
    }
    if (!seed) return -1;

    bool previous_mode = ft_set_grad_enabled(false);
    int rc = 0;
    if (!root->grad_fn) { /* a leaf: its gradient is the seed */
        rc = accumulate_leaf(root, seed);
        ft_set_grad_enabled(previous_mode);
        return rc;
    }

    /* Visit every node reachable from the root (the list doubles as the BFS queue) and
     * count how many edges lead into each. */
    static _Thread_local uint64_t mark = 0;
    mark++;
    node_list all = {0}, ready = {0};
    ft_node *start = root->grad_fn;
    start->visit_mark = mark;
    start->pending = 0;
    if (list_push(&all, start) < 0) rc = -1;
    for (size_t k = 0; rc == 0 && k < all.len; k++) {
        ft_node *n = all.items[k];
        for (int i = 0; i < n->n_inputs; i++) {
            ft_tensor *in = n->inputs[i];
            if (!in || !in->grad_fn) continue;
            ft_node *next = in->grad_fn;
            if (next->visit_mark != mark) {
                next->visit_mark = mark;
                next->pending = 0;
                ft_release(next->grad_accum);
                next->grad_accum = NULL;
                if (list_push(&all, next) < 0) rc = -1;
            }
            next->pending++;
        }
    }

    /* Run each node once all its consumers have contributed (Kahn's order). A node that
     * received no gradient still releases its inputs' counts. */
    if (rc == 0) {
        ft_release(start->grad_accum);
        start->grad_accum = seed;
        seed = NULL;
        rc = list_push(&ready, start);
    }
    while (rc == 0 && ready.len) {
        ft_node *n = ready.items[--ready.len];
        ft_tensor *g = n->grad_accum;
        n->grad_accum = NULL;
        ft_tensor *gi[FT_NODE_MAX_INPUTS] = {NULL};
        if (g && n->released) {
            ft_set_error("backward: trying to backward through the graph a second time (through %s); "
                         "pass retain_graph=true to the first backward",
                         n->op);
            rc = -1;
        } else if (g && n->backward(n, g, gi) < 0) {
            rc = -1;
        }
        ft_release(g);
        if (!retain_graph) drop_saved(n);
        for (int i = 0; i < n->n_inputs; i++) {
            ft_tensor *in = n->inputs[i];
            ft_tensor *gin = gi[i];
            gi[i] = NULL;
            if (rc < 0 || !in) {
                ft_release(gin);
                continue;
            }
            if (gin && !shape_matches(gin, in->shape, in->ndim)) {
                ft_set_error("backward of %s: gradient %s for input %d of shape %s", n->op,
                             ft_shape_str(gin->shape, gin->ndim, a, sizeof a), i,
                             ft_shape_str(in->shape, in->ndim, b, sizeof b));
                ft_release(gin);
                rc = -1;
                continue;
            }
            if (in->grad_fn) {
                ft_node *next = in->grad_fn;
                if (gin && accumulate(&next->grad_accum, gin) < 0) rc = -1;
                if (--next->pending == 0 && list_push(&ready, next) < 0) rc = -1;
            } else if (gin) {
                if (accumulate_leaf(in, gin) < 0) rc = -1;
            }
        }
    }
    /* Partial sums left by an error must not leak into a later backward. */
    for (size_t k = 0; k < all.len; k++) {
        ft_release(all.items[k]->grad_accum);
        all.items[k]->grad_accum = NULL;
    }
    ft_release(seed);
    free(all.items);
    free(ready.items);
    ft_set_grad_enabled(previous_mode);
    return rc;
}
