/* Multi-process communication over MPI: the world of processes started by mpirun, its
 * collectives on tensors, and the non-blocking all-reduce that the gradient reducer
 * (ft/reducer.h) overlaps with backward.
 *
 * Without MPI at build time, or in a process not started by mpirun (no launcher variables in
 * its environment), the world is this one process: rank 0 of 1, every collective a no-op that
 * returns its input's values. A launcher that asks for more than one process of a build
 * without MPI is an error at ft_dist_init.
 *
 * Collectives must be called by every rank in the same order with matching shapes; a shape
 * mismatch that MPI cannot see (same element count) is the caller's to prevent. */
#ifndef FT_DIST_H
#define FT_DIST_H

#include <stdbool.h>
#include <stdint.h>

#include "ft/tensor.h"

typedef enum { FT_REDUCE_SUM, FT_REDUCE_AVG, FT_REDUCE_MAX, FT_REDUCE_MIN } ft_reduce_op;

/* True when this build has MPI. */
bool ft_dist_built_with_mpi(void);
/* Joins the world (MPI_Init when launched by mpirun; idempotent). 0, or -1 with an error. */
int ft_dist_init(void);
bool ft_dist_initialized(void);
int ft_dist_rank(void);        /* 0 before init */
int ft_dist_world_size(void);  /* 1 before init */
int ft_dist_local_rank(void);  /* rank among the processes on this node */
/* The launcher's name for what started this process ("mpirun", or "none"). */
const char *ft_dist_launcher(void);

int ft_dist_barrier(void);
/* In place, on a contiguous float32, float64 or int64 tensor (AVG: float dtypes only). */
int ft_dist_all_reduce(ft_tensor *t, ft_reduce_op op);
/* In place: every rank's t gets root's values. */
int ft_dist_broadcast(ft_tensor *t, int root);
/* [world * d0, d1, ...]: the ranks' tensors one after another along dim 0 (a 0-dim t: [world]). */
ft_tensor *ft_dist_all_gather(const ft_tensor *t);
/* [d0 / world, d1, ...]: rank r's block of dim 0 of the reduction of every rank's t
 * (d0 must divide by the world size). */
ft_tensor *ft_dist_reduce_scatter(const ft_tensor *t, ft_reduce_op op);
/* Ends every process of the job with code (MPI_Abort); a plain exit in a world of one. */
_Noreturn void ft_dist_abort(int code);
/* MPI_Finalize when it was initialised (registered with atexit by ft_dist_init). */
void ft_dist_finalize(void);

/* ---- non-blocking sum of a float buffer, on a communicator of its own ------------------- */
typedef struct ft_dist_request ft_dist_request;
/* Starts summing buf[0..n) across ranks in place; *req is freed by ft_dist_wait/ft_dist_test
 * once complete. In a world of one it is complete at once. */
int ft_dist_isum_f32(float *buf, int64_t n, ft_dist_request **req);
/* Lets the library progress *req; sets *done (and frees it) when it has completed. */
int ft_dist_test(ft_dist_request *req, bool *done);
int ft_dist_wait(ft_dist_request *req);

#endif
