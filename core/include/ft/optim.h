/* Optimizer steps: fused loops over a list of parameters, following torch.optim.
 *
 * Parameters are contiguous float32 leaves; each one's gradient is param->grad, and a
 * parameter whose grad is NULL is skipped (its state is left untouched), as in PyTorch.
 * State buffers are tensors owned by the caller (the optimizer object): a NULL buffer
 * is created by the first step that needs it and handed over as a new reference.
 * The steps run outside autograd: they write the parameters' storage in place.
 * Each returns 0, or -1 with ft_set_error naming the parameter (0-based position). */
#ifndef FT_OPTIM_H
#define FT_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "ft/tensor.h"

/* torch.optim.SGD:
 *   d = grad (+ weight_decay * p)
 *   buf = d on the first step, else momentum * buf + (1 - dampening) * d
 *   d = nesterov ? d + momentum * buf : buf          (when momentum != 0)
 *   p -= lr * d */
typedef struct {
    double lr, momentum, dampening, weight_decay;
    bool nesterov, maximize;
} ft_sgd_opts;

/* momentum_buffers[i]: in/out, one per parameter (unused when momentum == 0). */
int ft_sgd_step(ft_tensor *const *params, ft_tensor **momentum_buffers, int n,
                const ft_sgd_opts *o);

/* torch.optim.Adam (decoupled = false: weight decay as L2 added to the gradient) and
 * torch.optim.AdamW (decoupled = true: p *= 1 - lr * weight_decay before the update):
 *   m = beta1 m + (1 - beta1) g        v = beta2 v + (1 - beta2) g^2
 *   vmax = max(vmax, v)                (amsgrad; then vmax replaces v below)
 *   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps) */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    bool amsgrad, decoupled, maximize;
} ft_adam_opts;

/* Per-parameter state; step counts the steps this parameter took (grad not NULL). */
typedef struct {
    int64_t step;
    ft_tensor *exp_avg;          /* m, created on the first step */
    ft_tensor *exp_avg_sq;       /* v */
    ft_tensor *max_exp_avg_sq;   /* vmax, only with amsgrad */
} ft_adam_state;

int ft_adam_step(ft_tensor *const *params, ft_adam_state *states, int n, const ft_adam_opts *o);

/* torch.nn.utils.clip_grad_norm_: the norm of all gradients together (norm_type > 0, or
 * INFINITY for the max-abs norm); when it exceeds max_norm, every gradient is scaled in
 * place by max_norm / (total + 1e-6). Parameters without grad are ignored. Writes the
 * total norm (before clipping) to *total. */
int ft_clip_grad_norm(ft_tensor *const *params, int n, double max_norm, double norm_type,
                      double *total);

/* optimizer.zero_grad(): drops each grad (set_to_none) or fills it with zeros. */
void ft_zero_grad(ft_tensor *const *params, int n, bool set_to_none);

#endif
