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

/* Sets requires_grad on a leaf; an error for a non-leaf or an int64 tensor. */
int ft_set_requires_grad(ft_tensor *t, bool requires_grad);

#endif
