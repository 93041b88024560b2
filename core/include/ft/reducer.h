/* The data-parallel gradient reducer: averages the gradients of a model's trainable parameters
 * across the ranks (ft/dist.h) while backward is still running, as PyTorch's DDP does.
 *
 * The parameters are packed into buckets of about bucket_bytes, in reverse registration order
 * (roughly the order backward produces their gradients). Armed before a backward pass, the
 * reducer watches the pass (ft_set_backward_hooks): once every parameter of a bucket has its
 * gradient for the pass, the bucket's gradients are copied into its buffer and a non-blocking
 * sum starts, overlapping the rest of backward. Buckets start in index order on every rank (MPI
 * needs the same order everywhere), so a bucket that completes early waits for the ones before
 * it. At the end of the pass the buckets not yet started (parameters the pass did not reach)
 * start, every sum is waited for, and each gradient becomes the average over ranks. A parameter
 * whose gradient is missing on every rank keeps no gradient (a flag per parameter travels with
 * each bucket), so unused parameters behave as in one process. */
#ifndef FT_REDUCER_H
#define FT_REDUCER_H

#include "ft/tensor.h"

typedef struct ft_reducer ft_reducer;

/* params: float32 leaves in registration order (retained), names: for messages (copied). */
ft_reducer *ft_reducer_new(int n, ft_tensor *const *params, const char *const *names, int64_t bucket_bytes);
void ft_reducer_free(ft_reducer *r);
/* Arms r for the next backward pass (a pass that reaches none of its parameters leaves it
 * armed); disarm forgets an armed pass. Only one reducer is armed at a time. */
int ft_reducer_arm(ft_reducer *r);
void ft_reducer_disarm(ft_reducer *r);
bool ft_reducer_armed(const ft_reducer *r);
/* overlap false: every bucket waits for the end of backward (to measure what overlap saves). */
void ft_reducer_set_overlap(ft_reducer *r, bool overlap);

/* The buckets and the timeline of the last reduction: seconds since arming. */
typedef struct {
    int first, count;      /* parameters [first, first + count) of the bucket order */
    int64_t bytes;         /* gradient bytes sent */
    double started, done;  /* the sum's start and completion (completion as this rank saw it) */
} ft_bucket_info;
typedef struct {
    double backward_start; /* the pass had run its first node */
    double first_gradient; /* the first parameter gradient of the pass was complete */
    double backward_end;   /* the pass had run its last node */
    double reduced;        /* every gradient averaged */
} ft_reducer_times;
int ft_reducer_n_buckets(const ft_reducer *r);
/* Parameter k of the bucket order (an index into the params given to ft_reducer_new). */
int ft_reducer_param_at(const ft_reducer *r, int k);
ft_bucket_info ft_reducer_bucket(const ft_reducer *r, int b);
ft_reducer_times ft_reducer_times_of(const ft_reducer *r);

#endif
