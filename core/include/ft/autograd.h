/* Define-by-run reverse-mode autograd.
 *
 * An op whose inputs require grad creates one ft_node for its (single) output:
 *
 *     ft_tensor *y = ...compute...;
 *     if (ft_grad_needed2(a, b)) {
 *         ft_node *n = ft_node_new("mul", mul_backward, y, 2, a, b);
 *         n->saved[0] = ft_detach(a); n->saved[1] = ft_detach(b);
 *     }
 *
 * Saved tensors must be detached aliases (ft_detach), never the output itself, so the
 * graph holds no reference cycle. Backward functions compute with raw kernels (grad
 * mode is off while they run) and set grad_inputs[i] for each input i that needs a
 * gradient (inputs[i] != NULL). Nodes are freed when the last tensor using them dies;
 * backward without retain_graph drops the saved tensors at once. */
#ifndef FT_AUTOGRAD_H
#define FT_AUTOGRAD_H

#include "ft/tensor.h"

#define FT_NODE_MAX_INPUTS 4
#define FT_NODE_MAX_SAVED 6

typedef struct ft_node ft_node;
/* grad_output has the output's shape; returns 0, or -1 with ft_set_error. */
typedef int (*ft_backward_fn)(ft_node *node, const ft_tensor *grad_output, ft_tensor **grad_inputs);

/* Told, when set, the op name and the seconds of each node's backward (FT_PROFILE's per-op
 * times of a backward pass); NULL turns it off. */
typedef void (*ft_backward_timer)(const char *op, double seconds);
void ft_set_backward_timer(ft_backward_timer timer);

/* Observers of backward passes (one set at a time; the data-parallel gradient reducer):
 * leaf_done(leaf) once a pass has run every edge into a leaf (its gradient for this pass is
 * complete; a leaf reached inside a checkpoint's recomputation is told by that inner pass),
 * node_done after each node (a chance to progress communication), pass_done when the
 * outermost pass has finished without error (its failure fails the backward). */
typedef struct {
    void (*leaf_done)(ft_tensor *leaf, void *user);
    void (*node_done)(void *user);
    int (*pass_done)(void *user);
    void *user;
} ft_backward_hooks;
/* Installs hooks (copied; NULL removes them). */
void ft_set_backward_hooks(const ft_backward_hooks *hooks);

struct ft_node {
    int refcount;
    const char *op;
    ft_backward_fn backward;
    int n_inputs;
    ft_tensor *inputs[FT_NODE_MAX_INPUTS];  /* NULL where no gradient is needed; a leaf itself, or a
                                             * data-less edge of the same shape to its producer */
    ft_tensor *saved[FT_NODE_MAX_SAVED];    /* detached aliases, dropped after backward */
    int64_t out_shape[FT_MAX_DIMS];
    int out_ndim;
    double f[8];                            /* op parameters: scalars */
    int64_t i[16];                          /* op parameters: integers, dims, shapes */
    void *ctx;                              /* op parameters that do not fit above */
    void (*free_ctx)(void *ctx);
    void (*release_ctx)(void *ctx);         /* when set: drops what ctx keeps for backward, as
                                             * the saved tensors are dropped (then released) */
    bool released;                          /* saved tensors dropped by backward */
    /* used during backward */
    ft_tensor *grad_accum;
    int pending;
    uint64_t visit_mark;
};

/* Grad mode (thread-local). ft_set_grad_enabled returns the previous mode. */
bool ft_grad_enabled(void);
bool ft_set_grad_enabled(bool enabled);

/* True when grad mode is on and at least one of the tensors requires grad. NULLs ignored. */
bool ft_grad_needed(int n, const ft_tensor *const *ts);
static inline bool ft_grad_needed1(const ft_tensor *a) { const ft_tensor *t[1] = {a}; return ft_grad_needed(1, t); }
static inline bool ft_grad_needed2(const ft_tensor *a, const ft_tensor *b) { const ft_tensor *t[2] = {a, b}; return ft_grad_needed(2, t); }
static inline bool ft_grad_needed3(const ft_tensor *a, const ft_tensor *b, const ft_tensor *c) { const ft_tensor *t[3] = {a, b, c}; return ft_grad_needed(3, t); }

/* Creates a node for output `out` (sets out->grad_fn and out->requires_grad) with the
 * given inputs (those not requiring grad are stored as NULL). Returns the node, owned
 * by `out`. Variadic inputs are const ft_tensor* (NULL allowed). */
ft_node *ft_node_new(const char *op, ft_backward_fn backward, ft_tensor *out, int n_inputs, ...);

/* Drops one reference to a node (tensors call this on their grad_fn). */
void ft_node_release(ft_node *node);

/* Runs backward from `root`. grad may be NULL only for a one-element root (then 1).
 * Leaf gradients accumulate into ->grad. Returns 0 or -1 with an error. */
int ft_backward(ft_tensor *root, const ft_tensor *grad, bool retain_graph);

/* ---- function nodes: a backward supplied by the caller ------------------------------- */

/* The backward of a function node. grad_outputs[j] has output j's shape (zeros where no
 * gradient reached that output). Sets grad_inputs[i] (a new reference of input i's shape, or
 * NULL: no gradient) for each of the n_inputs inputs given to ft_function_node, in that
 * order; a gradient for an input that does not require grad is ignored. Runs with grad mode
 * off; it may run a backward of its own. Returns 0, or -1 with ft_set_error. */
typedef int (*ft_function_backward)(void *user, int n_outputs, const ft_tensor *const *grad_outputs,
                                    int n_inputs, ft_tensor **grad_inputs);

/* The callbacks that own `user`: release drops what it keeps for backward (after a backward
 * without retain_graph; NULL: nothing to drop), free frees it (when the node dies). Both may be
 * NULL, both must tolerate being called after release. */
typedef struct {
    void (*release)(void *user);
    void (*free)(void *user);
} ft_function_owner;

/* Attaches n_outputs float32 tensors, computed outside the graph, to it through one node
 * named op whose backward is `backward` (for checkpointing and other functions whose
 * gradient the caller computes). Any number of inputs and outputs: inputs that require grad
 * become the node's edges (none is fine: the backward still runs, e.g. to reach parameters it
 * uses itself). attached[j] receives a new tensor sharing outputs[j]'s storage that requires
 * grad; outputs[j] itself is left as it is. The node owns user from this call on (freed with
 * owner.free, also when this call fails). Returns 0, or -1 with an error (nothing attached). */
int ft_function_node(const char *op, ft_function_backward backward, void *user, ft_function_owner owner,
                     int n_inputs, ft_tensor *const *inputs, int n_outputs, ft_tensor *const *outputs,
                     ft_tensor **attached);

/* Sets requires_grad on a leaf; an error for a non-leaf or an int64 tensor. */
int ft_set_requires_grad(ft_tensor *t, bool requires_grad);

#endif
