/* Reverse-mode autograd: graph recording and the backward pass. */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    if (n->release_ctx) { /* a context that keeps state for backward, as saved tensors do */
        n->release_ctx(n->ctx);
        n->release_ctx = NULL;
        n->released = true;
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
    if (requires_grad && !ft_dtype_is_float(t->dtype)) {
        ft_set_error("only float tensors (float32, bfloat16, float16, float64) can require gradients, got %s",
                     ft_dtype_name(t->dtype));
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

static bool shape_matches(const ft_tensor *t, const int64_t *shape, int ndim);

/* a + g with the sum in float32, rounded once to `dtype` (a new tensor, no autograd). */
static ft_tensor *sum_as(const ft_tensor *a, const ft_tensor *g, ft_dtype dtype) {
    ft_tensor *sum = ft_add(a, g);
    if (!sum || sum->dtype == dtype) return sum;
    ft_tensor *out = ft_to_dtype(sum, dtype);
    ft_release(sum);
    return out;
}

/* The dtype of a sum of two gradients: theirs when they agree (a half tensor's gradients stay
 * half), float32 otherwise. */
static ft_dtype sum_dtype(const ft_tensor *a, const ft_tensor *g) {
    return a->dtype == g->dtype ? a->dtype : FT_FLOAT32;
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
        ft_same_shape(a, g) && a->dtype == FT_FLOAT32 && g->dtype == FT_FLOAT32) {
        float *pa = ft_f32(a);
        const float *pg = ft_f32(g);
        int64_t n = ft_numel(a);
        #pragma omp parallel for simd if (n > 65536)
        for (int64_t i = 0; i < n; i++) pa[i] += pg[i];
        ft_release(g);
        return 0;
    }
    ft_tensor *sum = sum_as(a, g, sum_dtype(a, g));
    ft_release(g);
    if (!sum) return -1;
    ft_release(a);
    *acc = sum;
    return 0;
}

/* Leaf gradients are fresh tensors owned by the leaf, so later in-place accumulation
 * never writes into a tensor that something else holds. A leaf's gradient has its dtype (a
 * bfloat16 leaf gets a bfloat16 grad: each contribution summed in float32, rounded once). */
static int accumulate_leaf(ft_tensor *leaf, ft_tensor *g) {
    if (leaf->grad && leaf->grad->dtype != FT_FLOAT32) {
        ft_tensor *sum = sum_as(leaf->grad, g, leaf->grad->dtype);
        ft_release(g);
        if (!sum) return -1;
        ft_release(leaf->grad);
        leaf->grad = sum;
        return 0;
    }
    ft_dtype gd = ft_dtype_is_float(leaf->dtype) ? leaf->dtype : FT_FLOAT32;
    if (!leaf->grad && g->refcount == 1 && g->storage->refcount == 1 && !g->storage->release && g->dtype == gd &&
        !g->grad_fn && ft_is_contiguous(g) && g->offset == 0 && shape_matches(g, leaf->shape, leaf->ndim) &&
        g->storage->nbytes == (size_t)ft_numel(g) * ft_dtype_size(gd)) {   /* all of its storage */
        leaf->grad = g;   /* nothing else holds it: taken over, not copied (a weight-sized copy saved) */
        return 0;
    }
    if (!leaf->grad) {
        ft_tensor *copy = ft_empty(leaf->shape, leaf->ndim, gd);
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

/* The marks of the backward passes running on this thread, outermost first: a function node's
 * backward may run a backward of its own (a checkpoint's recomputation), which must not reach
 * the nodes of a pass in progress (it would reset their counts and partial sums). */
#define MAX_NESTED_PASSES 64
static _Thread_local uint64_t active_marks[MAX_NESTED_PASSES];
static _Thread_local int n_active;

static bool in_enclosing_pass(uint64_t visit_mark) {
    for (int k = 0; k < n_active && k < MAX_NESTED_PASSES; k++)
        if (active_marks[k] == visit_mark) return true;
    return false;
}

static ft_backward_timer backward_timer;
static ft_backward_hooks hooks;
static bool hooks_set;

void ft_set_backward_hooks(const ft_backward_hooks *h) {
    hooks_set = h != NULL;
    if (h) hooks = *h;
}

/* The leaves of one pass and how many of its edges into each have still to run (kept only
 * while hooks are set): an open-addressing table keyed by the leaf's address. */
typedef struct {
    ft_tensor *leaf;
    int pending;
} leaf_slot;

typedef struct {
    leaf_slot *slots;
    size_t cap, len; /* cap: a power of two, at least twice len */
} leaf_table;

static size_t leaf_hash(const ft_tensor *t, size_t cap) { return ((uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ull & (cap - 1); }

static leaf_slot *leaf_find(leaf_table *lt, const ft_tensor *t) {
    size_t k = leaf_hash(t, lt->cap);
    while (lt->slots[k].leaf && lt->slots[k].leaf != t) k = (k + 1) & (lt->cap - 1);
    return &lt->slots[k];
}

/* Counts one more edge into leaf t. */
static int leaf_count(leaf_table *lt, ft_tensor *t) {
    if (2 * (lt->len + 1) > lt->cap) {
        leaf_table grown = {calloc(lt->cap ? 2 * lt->cap : 64, sizeof(leaf_slot)), lt->cap ? 2 * lt->cap : 64, 0};
        if (!grown.slots) {
            ft_set_error("backward: out of memory");
            return -1;
        }
        for (size_t k = 0; k < lt->cap; k++)
            if (lt->slots[k].leaf) {
                *leaf_find(&grown, lt->slots[k].leaf) = lt->slots[k];
                grown.len++;
            }
        free(lt->slots);
        *lt = grown;
    }
    leaf_slot *s = leaf_find(lt, t);
    if (!s->leaf) {
        s->leaf = t;
        lt->len++;
    }
    s->pending++;
    return 0;
}

/* One edge into leaf t has run: tells the hooks when it was the last. */
static void leaf_edge_done(leaf_table *lt, ft_tensor *t) {
    leaf_slot *s = leaf_find(lt, t);
    if (s->leaf && --s->pending == 0 && hooks_set) hooks.leaf_done(t, hooks.user);
}

void ft_set_backward_timer(ft_backward_timer timer) { backward_timer = timer; }

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A node's backward, timed when a timer is set. */
static int run_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    if (!backward_timer) return n->backward(n, g, gi);
    double t0 = seconds_now();
    int rc = n->backward(n, g, gi);
    backward_timer(n->op, seconds_now() - t0);
    return rc;
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
        /* the seed has the root's dtype (a half root's gradient is half), as torch casts it */
        seed = ft_to_dtype(grad, ft_dtype_is_float(root->dtype) ? root->dtype : FT_FLOAT32);
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
        seed = ft_full(root->shape, root->ndim, ft_dtype_is_float(root->dtype) ? root->dtype : FT_FLOAT32, 1.0);
    }
    if (!seed) return -1;

    bool previous_mode = ft_set_grad_enabled(false);
    int rc = 0;
    if (!root->grad_fn) { /* a leaf: its gradient is the seed */
        rc = accumulate_leaf(root, seed);
        if (rc == 0 && hooks_set) {
            hooks.leaf_done(root, hooks.user);
            if (n_active == 0) rc = hooks.pass_done(hooks.user);
        }
        ft_set_grad_enabled(previous_mode);
        return rc;
    }

    /* Visit every node reachable from the root (the list doubles as the BFS queue) and
     * count how many edges lead into each. */
    static _Thread_local uint64_t mark = 0;
    mark++;
    node_list all = {0}, ready = {0};
    leaf_table leaves = {0};
    bool observed = hooks_set; /* hooks installed during the pass wait for the next one */
    ft_node *start = root->grad_fn;
    if (in_enclosing_pass(start->visit_mark)) {
        ft_set_error("backward: a backward run inside another (a checkpoint's recomputation) started in the "
                     "other's graph (at %s)",
                     start->op);
        ft_release(seed);
        ft_set_grad_enabled(previous_mode);
        return -1;
    }
    start->visit_mark = mark;
    start->pending = 0;
    if (list_push(&all, start) < 0) rc = -1;
    for (size_t k = 0; rc == 0 && k < all.len; k++) {
        ft_node *n = all.items[k];
        for (int i = 0; i < n->n_inputs; i++) {
            ft_tensor *in = n->inputs[i];
            if (in && !in->grad_fn && observed && leaf_count(&leaves, in) < 0) rc = -1;
            if (!in || !in->grad_fn) continue;
            ft_node *next = in->grad_fn;
            if (next->visit_mark != mark) {
                if (in_enclosing_pass(next->visit_mark)) {
                    ft_set_error("backward: a backward run inside another (a checkpoint's recomputation) reached "
                                 "the other's graph through %s: pass the tensors the checkpointed function uses "
                                 "as its arguments",
                                 next->op);
                    rc = -1;
                    break;
                }
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
    if (n_active < MAX_NESTED_PASSES) active_marks[n_active] = mark;
    n_active++;
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
        } else if (g && run_backward(n, g, gi) < 0) {
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
            } else {
                if (gin && accumulate_leaf(in, gin) < 0) rc = -1;
                if (rc == 0 && observed) leaf_edge_done(&leaves, in);
            }
        }
        if (observed && hooks_set) hooks.node_done(hooks.user);
    }
    n_active--;
    if (rc == 0 && observed && n_active == 0 && hooks_set) rc = hooks.pass_done(hooks.user);
    free(leaves.slots);
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


/* ---- function nodes ------------------------------------------------------------- */

/* A function node M has at most FT_NODE_MAX_INPUTS edges. With more inputs requiring grad,
 * its last edge is a "link": a data-less float vector (stride 0) whose own node, a "split",
 * continues the chain: M hands the link the flattened gradients of the remaining inputs
 * packed one after another, and each split cuts its inputs' gradients out of it (as
 * ft_cat's chain does, in the other direction). With several outputs, M's output is a
 * data-less hub vector of all outputs' elements; each output gets a node that places its
 * gradient at its offset in a hub-sized gradient, so M receives all of them summed into one
 * flat vector, after every output's consumers have run. */

typedef struct {
    ft_function_backward backward;
    void *user;
    ft_function_owner owner;
    int n_inputs, n_outputs;
    int n_edges;                           /* inputs that require grad */
    int *edge_input;                       /* edge k -> position in the caller's inputs */
    int64_t *edge_numel;
    int64_t (*out_shape)[FT_MAX_DIMS];
    int *out_ndim;
    int64_t *out_offset;                   /* n_outputs + 1 offsets into the hub */
} function_ctx;

static void function_ctx_release(void *p) {
    function_ctx *c = p;
    if (c->owner.release) c->owner.release(c->user);
}

static void function_ctx_free(void *p) {
    function_ctx *c = p;
    if (!c) return;
    if (c->owner.free) c->owner.free(c->user);
    free(c->edge_input);
    free(c->edge_numel);
    free(c->out_shape);
    free(c->out_ndim);
    free(c->out_offset);
    free(c);
}

/* A data-less float32 vector of n elements (stride 0 over one zero) that requires grad. */
static ft_tensor *dataless_vector(int64_t n) {
    ft_tensor *one = ft_zeros(NULL, 0, FT_FLOAT32);
    ft_tensor *v = one ? ft_expand(one, &n, 1) : NULL;
    ft_release(one);
    if (v) v->requires_grad = true;
    return v;
}

/* Copies t's elements, in order, to dst[0..numel) (converted to float32). */
static int copy_flat(float *dst, const ft_tensor *t) {
    ft_tensor *c = t->dtype == FT_FLOAT32 ? ft_contiguous(t) : ft_to_dtype(t, FT_FLOAT32);
    if (!c) return -1;
    memcpy(dst, ft_f32(c), sizeof(float) * (size_t)ft_numel(c));
    ft_release(c);
    return 0;
}

/* i[2s], i[2s + 1] = start and length of input s in the packed gradient; i[8] = position of
 * the link (-1: none), whose gradient stays a view because only the next split reads it. */
static int split_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    for (int s = 0; s < n->n_inputs; s++) {
        ft_tensor *v = ft_narrow(g, 0, n->i[2 * s], n->i[2 * s + 1]);
        if (!v) return -1;
        if (s == n->i[8]) {
            gi[s] = v;
            continue;
        }
        const ft_tensor *in = n->inputs[s];
        gi[s] = ft_empty(in->shape, in->ndim, FT_FLOAT32);
        int rc = gi[s] ? copy_flat(ft_f32(gi[s]), v) : -1;
        ft_release(v);
        if (rc < 0) return -1;
    }
    return 0;
}

/* i[0], i[1] = offset and length of this output in the hub. */
static int output_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    gi[0] = ft_zeros(n->inputs[0]->shape, 1, FT_FLOAT32);
    if (!gi[0]) return -1;
    return copy_flat(ft_f32(gi[0]) + n->i[0], g);
}

/* Number of edges a node of the chain takes directly when `left` edges remain. */
static int direct_edges(int left) { return left <= FT_NODE_MAX_INPUTS ? left : FT_NODE_MAX_INPUTS - 1; }

static int function_backward(ft_node *n, const ft_tensor *g, ft_tensor **gi) {
    function_ctx *c = n->ctx;
    int rc = -1;
    const ft_tensor **gout = calloc((size_t)c->n_outputs, sizeof *gout);
    ft_tensor **gin = calloc((size_t)c->n_inputs + 1, sizeof *gin);
    ft_tensor *flat = NULL, *packed = NULL;
    if (!gout || !gin) {
        ft_set_error("%s backward: out of memory", n->op);
        goto done;
    }
    if (c->n_outputs == 1) {
        gout[0] = g;
    } else {
        flat = ft_contiguous(g);
        if (!flat) goto done;
        for (int j = 0; j < c->n_outputs; j++) {
            ft_tensor *v = ft_narrow(flat, 0, c->out_offset[j], c->out_offset[j + 1] - c->out_offset[j]);
            gout[j] = v ? ft_reshape(v, c->out_shape[j], c->out_ndim[j]) : NULL;
            ft_release(v);
            if (!gout[j]) goto done;
        }
    }
    if (c->backward(c->user, c->n_outputs, gout, c->n_inputs, gin) < 0) goto done;

    int direct = direct_edges(c->n_edges);
    for (int k = 0; k < direct; k++) {
        gi[k] = gin[c->edge_input[k]];
        gin[c->edge_input[k]] = NULL;
    }
    if (direct < c->n_edges) { /* the rest, packed for the link */
        int64_t total = 0;
        for (int k = direct; k < c->n_edges; k++) total += c->edge_numel[k];
        packed = ft_zeros(&total, 1, FT_FLOAT32);
        if (!packed) goto done;
        int64_t at = 0;
        for (int k = direct; k < c->n_edges; k++) {
            ft_tensor *gk = gin[c->edge_input[k]];
            if (gk && ft_numel(gk) != c->edge_numel[k]) {
                ft_set_error("%s backward: gradient of %lld elements for input %d of %lld", n->op,
                             (long long)ft_numel(gk), c->edge_input[k] + 1, (long long)c->edge_numel[k]);
                goto done;
            }
            if (gk && copy_flat(ft_f32(packed) + at, gk) < 0) goto done;
            at += c->edge_numel[k];
        }
        gi[direct] = packed;
        packed = NULL;
    }
    rc = 0;
done:
    if (gin)
        for (int i = 0; i < c->n_inputs; i++) ft_release(gin[i]);
    if (gout && c->n_outputs > 1)
        for (int j = 0; j < c->n_outputs; j++) ft_release((ft_tensor *)gout[j]);
    ft_release(flat);
    ft_release(packed);
    free(gout);
    free(gin);
    return rc;
}

/* Records the node for `holder` that takes edges [first, n_edges) of c: the first few
 * directly and, when more remain, a link whose split node takes the rest (recursively).
 * M is the function node (first == 0), splits after it. */
static int record_edges(const char *op, ft_tensor *holder, function_ctx *c, ft_tensor *const *edges, int first,
                        ft_node **made) {
    int left = c->n_edges - first;
    int direct = direct_edges(left);
    const ft_tensor *in[FT_NODE_MAX_INPUTS] = {NULL};
    for (int s = 0; s < direct; s++) in[s] = edges[first + s];
    ft_tensor *link = NULL;
    if (direct < left) {
        int64_t rest = 0;
        for (int k = first + direct; k < c->n_edges; k++) rest += c->edge_numel[k];
        link = dataless_vector(rest);
        if (!link) return -1;
        in[direct] = link;
    }
    int count = direct + (link ? 1 : 0);
    ft_node *node = first == 0 ? ft_node_new(op, function_backward, holder, count, in[0], in[1], in[2], in[3])
                               : ft_node_new("function_split", split_backward, holder, count, in[0], in[1], in[2], in[3]);
    if (!node) {
        ft_release(link);
        ft_set_error("%s: out of memory", op);
        return -1;
    }
    if (first == 0) *made = node;
    else {
        int64_t at = 0;
        for (int s = 0; s < direct; s++) {
            node->i[2 * s] = at;
            node->i[2 * s + 1] = c->edge_numel[first + s];
            at += c->edge_numel[first + s];
        }
        node->i[8] = -1;
        if (link) {
            node->i[2 * direct] = at;
            node->i[2 * direct + 1] = link->shape[0];
            node->i[8] = direct;
        }
    }
    int rc = link ? record_edges(op, link, c, edges, first + direct, made) : 0;
    ft_release(link); /* the node above holds it */
    return rc;
}

int ft_function_node(const char *op, ft_function_backward backward, void *user, ft_function_owner owner,
                     int n_inputs, ft_tensor *const *inputs, int n_outputs, ft_tensor *const *outputs,
                     ft_tensor **attached) {
    ft_tensor *hub = NULL, *root = NULL;
    ft_tensor **edges = NULL;
    function_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        if (owner.free) owner.free(user);
        ft_set_error("%s: out of memory", op);
        return -1;
    }
    c->backward = backward, c->user = user, c->owner = owner;
    c->n_inputs = n_inputs, c->n_outputs = n_outputs;
    for (int j = 0; j < n_outputs; j++) attached[j] = NULL;
    if (n_outputs < 1) {
        ft_set_error("%s: a function node needs at least one output", op);
        goto fail;
    }
    for (int j = 0; j < n_outputs; j++)
        if (outputs[j]->dtype != FT_FLOAT32) {
            ft_set_error("%s: output %d is %s; only float32 outputs can join the graph", op, j + 1,
                         ft_dtype_name(outputs[j]->dtype));
            goto fail;
        }
    c->edge_input = malloc(sizeof *c->edge_input * (size_t)(n_inputs + 1));
    c->edge_numel = malloc(sizeof *c->edge_numel * (size_t)(n_inputs + 1));
    edges = malloc(sizeof *edges * (size_t)(n_inputs + 1));
    c->out_shape = malloc(sizeof *c->out_shape * (size_t)n_outputs);
    c->out_ndim = malloc(sizeof *c->out_ndim * (size_t)n_outputs);
    c->out_offset = malloc(sizeof *c->out_offset * (size_t)(n_outputs + 1));
    if (!c->edge_input || !c->edge_numel || !edges || !c->out_shape || !c->out_ndim || !c->out_offset) {
        ft_set_error("%s: out of memory", op);
        goto fail;
    }
    for (int i = 0; i < n_inputs; i++)
        if (inputs[i] && inputs[i]->requires_grad) {
            edges[c->n_edges] = inputs[i];
            c->edge_input[c->n_edges] = i;
            c->edge_numel[c->n_edges] = ft_numel(inputs[i]);
            c->n_edges++;
        }
    c->out_offset[0] = 0;
    for (int j = 0; j < n_outputs; j++) {
        memcpy(c->out_shape[j], outputs[j]->shape, sizeof(int64_t) * (size_t)outputs[j]->ndim);
        c->out_ndim[j] = outputs[j]->ndim;
        if (!ft_size_add(c->out_offset[j], ft_numel(outputs[j]), &c->out_offset[j + 1])) {
            ft_set_error("%s: the outputs hold more than int64 elements", op);
            goto fail;
        }
    }
    for (int j = 0; j < n_outputs; j++) {
        attached[j] = ft_detach(outputs[j]);
        if (!attached[j]) goto fail;
    }
    if (n_outputs == 1) {
        root = ft_retain(attached[0]);
    } else {
        hub = dataless_vector(c->out_offset[n_outputs]);
        if (!hub) goto fail;
        root = ft_retain(hub);
    }
    ft_node *m = NULL;
    if (record_edges(op, root, c, edges, 0, &m) < 0) goto fail;
    m->ctx = c;
    m->free_ctx = function_ctx_free;
    m->release_ctx = function_ctx_release;
    const int64_t *offset = c->out_offset;
    c = NULL; /* owned by m from here */
    for (int j = 0; hub && j < n_outputs; j++) {
        ft_node *o = ft_node_new("function_output", output_backward, attached[j], 1, hub);
        if (!o) {
            ft_set_error("%s: out of memory", op);
            goto fail;
        }
        o->i[0] = offset[j];
        o->i[1] = ft_numel(attached[j]);
    }
    ft_release(hub);
    ft_release(root);
    free(edges);
    return 0;
fail:
    for (int j = 0; j < n_outputs; j++) {
        ft_release(attached[j]);
        attached[j] = NULL;
    }
    ft_release(hub);
    ft_release(root);
    free(edges);
    function_ctx_free(c);
    return -1;
}
