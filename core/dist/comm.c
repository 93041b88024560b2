/* The process world and its collectives (ft/dist.h): MPI when the build has it and mpirun
 * started this process, a world of one otherwise. */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft/dist.h"

#ifdef FT_HAVE_MPI
#include <mpi.h>
#endif

static bool initialized = false;
static int world_rank = 0, world_size = 1, local_rank = 0;
static const char *launcher = "none";

bool ft_dist_initialized(void) { return initialized; }
int ft_dist_rank(void) { return world_rank; }
int ft_dist_world_size(void) { return world_size; }
int ft_dist_local_rank(void) { return local_rank; }
const char *ft_dist_launcher(void) { return launcher; }

/* The world size a launcher's environment announces (0: no launcher). Open MPI's mpirun,
 * and the PMI variables of MPICH's hydra and of Slurm's srun. */
static int announced_size(const char **name) {
    static const struct { const char *var, *name; } vars[] = {
        {"OMPI_COMM_WORLD_SIZE", "mpirun"}, {"PMI_SIZE", "a PMI launcher"}, {"PMIX_SIZE", "a PMIx launcher"}};
    for (size_t k = 0; k < sizeof vars / sizeof vars[0]; k++) {
        const char *v = getenv(vars[k].var);
        if (v && *v) {
            *name = vars[k].name;
            return atoi(v) > 0 ? atoi(v) : 1;
        }
    }
    return 0;
}

/* Reductions compute on float32, float64 and int64; broadcast and all_gather move any dtype. */
static int check_dtype(const ft_tensor *t, ft_reduce_op op, const char *what) {
    if (t->dtype != FT_FLOAT32 && t->dtype != FT_FLOAT64 && t->dtype != FT_INT64) {
        ft_set_error("%s: %s tensors cannot be reduced (float32, float64 or int64; convert with :to() first)", what,
                     ft_dtype_name(t->dtype));
        return -1;
    }
    if (op == FT_REDUCE_AVG && t->dtype == FT_INT64) {
        ft_set_error("%s: op 'avg' needs a float tensor, got int64 (use 'sum')", what);
        return -1;
    }
    return 0;
}

static int check_contiguous(const ft_tensor *t, const char *what) {
    if (!ft_is_contiguous(t)) {
        char s[160];
        ft_set_error("%s: the tensor (shape %s) must be contiguous: it is changed in place (call :contiguous() first)",
                     what, ft_shape_str(t->shape, t->ndim, s, sizeof s));
        return -1;
    }
    return 0;
}

/* Divides a float tensor's elements by the world size (the avg of a sum). */
static void divide_by_world(ft_tensor *t) {
    int64_t n = ft_numel(t);
    if (t->dtype == FT_FLOAT32) {
        float *p = ft_f32(t), s = (float)world_size;
        for (int64_t i = 0; i < n; i++) p[i] /= s;
    } else {
        double *p = (double *)t->storage->data + t->offset;
        for (int64_t i = 0; i < n; i++) p[i] /= (double)world_size;
    }
}

#ifdef FT_HAVE_MPI

static MPI_Comm reducer_comm = MPI_COMM_NULL; /* the gradient reducer's, apart from the user's collectives */

static int mpi_failed(int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    ft_set_error("%s: MPI error on rank %d of %d: %.*s", what, world_rank, world_size, len, msg);
    return -1;
}

#define MPI_CHECK(call, what)                          \
    do {                                               \
        int rc_ = (call);                              \
        if (rc_ != MPI_SUCCESS) return mpi_failed(rc_, what); \
    } while (0)

static MPI_Datatype mpi_type(ft_dtype d) {
    switch (d) {
    case FT_FLOAT32: return MPI_FLOAT;
    case FT_FLOAT64: return MPI_DOUBLE;
    case FT_INT64: return MPI_INT64_T;
    default: return MPI_UINT16_T; /* bfloat16, float16: moved, never reduced */
    }
}

static MPI_Op mpi_op(ft_reduce_op op) {
    return op == FT_REDUCE_MAX ? MPI_MAX : op == FT_REDUCE_MIN ? MPI_MIN : MPI_SUM;
}

bool ft_dist_built_with_mpi(void) { return true; }

int ft_dist_init(void) {
    if (initialized) return 0;
    const char *name = "none";
    if (announced_size(&name) == 0) { /* not launched by mpirun: a world of one, MPI untouched */
        initialized = true;
        return 0;
    }
    int already = 0;
    MPI_Initialized(&already);
    if (!already) {
        int provided;
        /* FUNNELED: only the thread that runs Lua calls MPI (OpenMP workers never do). */
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            ft_set_error("ft.dist.init: MPI_Init failed");
            return -1;
        }
        atexit(ft_dist_finalize);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm node;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node),
              "ft.dist.init");
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &reducer_comm), "ft.dist.init");
    MPI_Comm_set_errhandler(reducer_comm, MPI_ERRORS_RETURN);
    launcher = name;
    initialized = true;
    return 0;
}

void ft_dist_finalize(void) {
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (!up || down) return;
    if (reducer_comm != MPI_COMM_NULL) MPI_Comm_free(&reducer_comm);
    MPI_Finalize();
}

_Noreturn void ft_dist_abort(int code) {
    fflush(stdout);
    fflush(stderr);
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (up && !down && world_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

static bool single(void) { return !initialized || world_size == 1; }

int ft_dist_barrier(void) {
    if (single()) return 0;
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD), "ft.dist.barrier");
    return 0;
}

int ft_dist_all_reduce(ft_tensor *t, ft_reduce_op op) {
    if (check_dtype(t, op, "ft.dist.all_reduce") < 0 || check_contiguous(t, "ft.dist.all_reduce") < 0) return -1;
    if (single()) return 0;
    char *p = ft_data(t);
    size_t esize = ft_dtype_size(t->dtype);
    for (int64_t at = 0, n = ft_numel(t); at < n;) { /* MPI counts are ints: in pieces */
        int count = n - at > INT_MAX ? INT_MAX : (int)(n - at);
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, p + (size_t)at * esize, count, mpi_type(t->dtype), mpi_op(op),
                                MPI_COMM_WORLD),
                  "ft.dist.all_reduce");
        at += count;
    }
    if (op == FT_REDUCE_AVG) divide_by_world(t);
    return 0;
}

static int check_root(int root, const char *what) {
    if (root < 0 || root >= world_size) {
        ft_set_error("%s: root %d is not a rank of this world (0..%d)", what, root, world_size - 1);
        return -1;
    }
    return 0;
}

int ft_dist_broadcast(ft_tensor *t, int root) {
    if (check_contiguous(t, "ft.dist.broadcast") < 0 || check_root(root, "ft.dist.broadcast") < 0)
        return -1;
    if (single()) return 0;
    char *p = ft_data(t);
    size_t esize = ft_dtype_size(t->dtype);
    for (int64_t at = 0, n = ft_numel(t); at < n;) {
        int count = n - at > INT_MAX ? INT_MAX : (int)(n - at);
        MPI_CHECK(MPI_Bcast(p + (size_t)at * esize, count, mpi_type(t->dtype), root, MPI_COMM_WORLD),
                  "ft.dist.broadcast");
        at += count;
    }
    return 0;
}

static int gather_into(const ft_tensor *src, ft_tensor *dst) {
    int64_t n = ft_numel(src);
    if (n > INT_MAX) {
        ft_set_error("ft.dist.all_gather: %lld elements per rank is more than MPI's count can hold", (long long)n);
        return -1;
    }
    MPI_CHECK(MPI_Allgather(ft_data(src), (int)n, mpi_type(src->dtype), ft_data(dst), (int)n, mpi_type(src->dtype),
                            MPI_COMM_WORLD),
              "ft.dist.all_gather");
    return 0;
}

static int scatter_into(const ft_tensor *src, ft_tensor *dst, ft_reduce_op op) {
    int64_t n = ft_numel(dst);
    if (n > INT_MAX) {
        ft_set_error("ft.dist.reduce_scatter: %lld elements per rank is more than MPI's count can hold", (long long)n);
        return -1;
    }
    MPI_CHECK(MPI_Reduce_scatter_block(ft_data(src), ft_data(dst), (int)n, mpi_type(src->dtype), mpi_op(op),
                                       MPI_COMM_WORLD),
              "ft.dist.reduce_scatter");
    return 0;
}

int ft_dist_isum_f32(float *buf, int64_t n, ft_dist_request **req) {
    *req = NULL;
    if (single()) return 0;
    if (n > INT_MAX) {
        ft_set_error("ft.dist: a bucket of %lld floats is more than MPI's count can hold", (long long)n);
        return -1;
    }
    MPI_Request *r = malloc(sizeof *r);
    if (!r) {
        ft_set_error("ft.dist: out of memory");
        return -1;
    }
    int rc = MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, reducer_comm, r);
    if (rc != MPI_SUCCESS) {
        free(r);
        return mpi_failed(rc, "ft.dist: gradient all-reduce");
    }
    *req = (ft_dist_request *)r;
    return 0;
}

int ft_dist_test(ft_dist_request *req, bool *done) {
    *done = true;
    if (!req) return 0;
    int flag = 0;
    MPI_Request *r = (MPI_Request *)req;
    int rc = MPI_Test(r, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return mpi_failed(rc, "ft.dist: gradient all-reduce");
    *done = flag != 0;
    if (flag) free(r);
    return 0;
}

int ft_dist_wait(ft_dist_request *req) {
    if (!req) return 0;
    MPI_Request *r = (MPI_Request *)req;
    int rc = MPI_Wait(r, MPI_STATUS_IGNORE);
    free(r);
    if (rc != MPI_SUCCESS) return mpi_failed(rc, "ft.dist: gradient all-reduce");
    return 0;
}

#else /* a world of one */

bool ft_dist_built_with_mpi(void) { return false; }

int ft_dist_init(void) {
    const char *name = "none";
    int n = announced_size(&name);
    if (n > 1) {
        ft_set_error("ft.dist.init: %s started %d processes, but this ftlua was built without MPI "
                     "(install libopenmpi-dev and rebuild)",
                     name, n);
        return -1;
    }
    initialized = true;
    return 0;
}

void ft_dist_finalize(void) {}

_Noreturn void ft_dist_abort(int code) {
    fflush(stdout);
    fflush(stderr);
    exit(code);
}

int ft_dist_barrier(void) { return 0; }

int ft_dist_all_reduce(ft_tensor *t, ft_reduce_op op) {
    return check_dtype(t, op, "ft.dist.all_reduce") < 0 || check_contiguous(t, "ft.dist.all_reduce") < 0 ? -1 : 0;
}

int ft_dist_broadcast(ft_tensor *t, int root) {
    if (check_contiguous(t, "ft.dist.broadcast") < 0) return -1;
    if (root != 0) {
        ft_set_error("ft.dist.broadcast: root %d is not a rank of this world (0..0)", root);
        return -1;
    }
    return 0;
}

/* never called: a world of one copies */
static int gather_into(const ft_tensor *src, ft_tensor *dst) { return ft_copy_(dst, src); }
static int scatter_into(const ft_tensor *src, ft_tensor *dst, ft_reduce_op op) { return ft_copy_(dst, src); }

int ft_dist_isum_f32(float *buf, int64_t n, ft_dist_request **req) {
    *req = NULL;
    return 0;
}

int ft_dist_test(ft_dist_request *req, bool *done) {
    *done = true;
    return 0;
}

int ft_dist_wait(ft_dist_request *req) { return 0; }

#endif

ft_tensor *ft_dist_all_gather(const ft_tensor *t) {
    int64_t shape[FT_MAX_DIMS];
    int ndim = t->ndim > 0 ? t->ndim : 1;
    shape[0] = t->ndim > 0 ? t->shape[0] : 1;
    for (int d = 1; d < t->ndim; d++) shape[d] = t->shape[d];
    if (!ft_size_mul(shape[0], world_size, &shape[0])) {
        ft_set_error("ft.dist.all_gather: the gathered size overflows");
        return NULL;
    }
    ft_tensor *src = ft_contiguous(t);
    ft_tensor *out = src ? ft_empty(shape, ndim, t->dtype) : NULL;
    /* the world-of-one copy goes through a view of src's shape */
    ft_tensor *dst = out && world_size == 1 ? ft_view(out, t->shape, t->ndim) : ft_retain(out);
    int rc = !dst ? -1 : world_size == 1 ? ft_copy_(dst, src) : gather_into(src, dst);
    ft_release(dst);
    ft_release(src);
    if (rc < 0) {
        ft_release(out);
        return NULL;
    }
    return out;
}

ft_tensor *ft_dist_reduce_scatter(const ft_tensor *t, ft_reduce_op op) {
    char s[160];
    if (check_dtype(t, op, "ft.dist.reduce_scatter") < 0) return NULL;
    if (t->ndim == 0 || t->shape[0] % world_size != 0) {
        ft_set_error("ft.dist.reduce_scatter: dim 1 of shape %s must divide by the world size %d",
                     ft_shape_str(t->shape, t->ndim, s, sizeof s), world_size);
        return NULL;
    }
    int64_t shape[FT_MAX_DIMS];
    memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    shape[0] /= world_size;
    ft_tensor *src = ft_contiguous(t);
    ft_tensor *out = src ? ft_empty(shape, t->ndim, t->dtype) : NULL;
    int rc = !out ? -1 : world_size == 1 ? ft_copy_(out, src) : scatter_into(src, out, op);
    ft_release(src);
    if (rc == 0 && op == FT_REDUCE_AVG) divide_by_world(out);
    if (rc < 0) {
        ft_release(out);
        return NULL;
    }
    return out;
}
