/* Tensors: a refcounted storage plus offset, shape and strides (in elements).
 *
 * Ownership: every function returning ft_tensor* returns a new reference that the
 * caller must ft_release(). Arguments are borrowed. On bad input a function returns
 * NULL (or -1) and sets the thread-local error message (ft_last_error()). */
#ifndef FT_TENSOR_H
#define FT_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FT_MAX_DIMS 8

/* Storage dtypes. Compute is float32 (and int64 for indices): bfloat16, float16 and float64
 * tensors hold values (frozen weights above all); ops compute on them in float32. */
typedef enum { FT_FLOAT32 = 0, FT_INT64 = 1, FT_BFLOAT16 = 2, FT_FLOAT16 = 3, FT_FLOAT64 = 4 } ft_dtype;
#define FT_NUM_DTYPES 5

typedef struct ft_storage {
    void *data;     /* 64-byte aligned when the storage allocated it */
    size_t nbytes;
    int refcount;
    /* Memory the storage does not own (a file mapping): release(owner) runs instead of a free. */
    void (*release)(void *owner);
    void *owner;
} ft_storage;

struct ft_node;

typedef struct ft_tensor {
    int refcount;
    ft_storage *storage;
    int64_t offset;                 /* in elements */
    int ndim;
    int64_t shape[FT_MAX_DIMS];
    int64_t strides[FT_MAX_DIMS];   /* in elements */
    ft_dtype dtype;
    bool requires_grad;
    struct ft_tensor *grad;         /* accumulated gradient of a leaf, or NULL */
    struct ft_node *grad_fn;        /* the node that produced this tensor, NULL for leaves */
} ft_tensor;

/* ---- errors ---------------------------------------------------------------- */
const char *ft_last_error(void);
void ft_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ft_clear_error(void);
/* Writes "[2,3,4]" into buf (at least 128 bytes); returns buf. */
char *ft_shape_str(const int64_t *shape, int ndim, char *buf, size_t len);
const char *ft_dtype_name(ft_dtype dtype);
size_t ft_dtype_size(ft_dtype dtype);
/* The dtype a name means ("float32"/"float", "int64"/"long", "bfloat16", "float16"/"half",
 * "float64"/"double"); -1 when none. */
int ft_dtype_from_name(const char *name, ft_dtype *dtype);
/* float32, bfloat16, float16, float64. */
static inline bool ft_dtype_is_float(ft_dtype d) { return d != FT_INT64; }
/* bfloat16 or float16. */
static inline bool ft_dtype_is_half(ft_dtype d) { return d == FT_BFLOAT16 || d == FT_FLOAT16; }


/* ---- size arithmetic --------------------------------------------------------- */
/* Sizes, element counts, strides and byte counts are int64 products and sums of sizes;
 * every one is computed with these, which report overflow instead of wrapping. */
static inline bool ft_size_mul(int64_t a, int64_t b, int64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool ft_size_add(int64_t a, int64_t b, int64_t *out) { return !__builtin_add_overflow(a, b, out); }
/* Elements of a shape; false when the product passes INT64_MAX. Zero sizes count as 1 in
 * the check (the strides of the other dims must fit too) but make *numel 0. */
bool ft_shape_numel(const int64_t *shape, int ndim, int64_t *numel);
/* 0, or -1 with "<op>: ..." (no prefix for a NULL op) when a shape has more than FT_MAX_DIMS dims, a negative size or
 * more elements than int64 (or one allocation) can hold. */
int ft_check_shape(const int64_t *shape, int ndim, const char *op);
/* True when an int64 can hold v exactly (finite, integral, within range). */
static inline bool ft_is_int64_value(double v) {
    if (!(v >= -0x1p63 && v < 0x1p63)) return false;   /* false for NaN too */
    return v == (double)(int64_t)v;
}
/* The most bytes one tensor may hold (what the allocator can serve): 2^62. */
#define FT_MAX_TENSOR_BYTES ((int64_t)1 << 62)

/* ---- lifetime -------------------------------------------------------------- */
ft_tensor *ft_retain(ft_tensor *t);
void ft_release(ft_tensor *t);           /* NULL is fine */
/* Bytes currently held by all storages (for the Lua collector's accounting). */
size_t ft_live_bytes(void);
/* High-water mark of ft_live_bytes since the last reset (a reset starts from the bytes held now). */
size_t ft_peak_bytes(void);
void ft_reset_peak_bytes(void);
/* Freed large buffers are cached for reuse; this returns them to the OS. */
void ft_empty_cache(void);
size_t ft_cached_bytes(void);

/* ---- creation (contiguous, requires_grad = false) -------------------------- */
ft_tensor *ft_empty(const int64_t *shape, int ndim, ft_dtype dtype);
ft_tensor *ft_zeros(const int64_t *shape, int ndim, ft_dtype dtype);
ft_tensor *ft_full(const int64_t *shape, int ndim, ft_dtype dtype, double value);
ft_tensor *ft_empty_like(const ft_tensor *t);
ft_tensor *ft_zeros_like(const ft_tensor *t);
ft_tensor *ft_from_data(const void *data, const int64_t *shape, int ndim, ft_dtype dtype); /* copies */
ft_tensor *ft_scalar(double value, ft_dtype dtype);                /* 0-dim */
ft_tensor *ft_arange(double start, double end, double step, ft_dtype dtype);
ft_tensor *ft_randn(const int64_t *shape, int ndim);               /* N(0,1), global RNG */
ft_tensor *ft_rand(const int64_t *shape, int ndim);                /* U[0,1) */
ft_tensor *ft_randint(int64_t low, int64_t high, const int64_t *shape, int ndim); /* [low,high) */
/* A contiguous tensor over memory it does not own (nbytes must cover the shape): the storage
 * calls release(owner) when its last reference goes. NULL (release not called) on error. */
ft_tensor *ft_from_external(void *data, size_t nbytes, const int64_t *shape, int ndim, ft_dtype dtype,
                            void (*release)(void *owner), void *owner);

/* ---- inspection ------------------------------------------------------------ */
int64_t ft_numel(const ft_tensor *t);
bool ft_is_contiguous(const ft_tensor *t);
bool ft_same_shape(const ft_tensor *a, const ft_tensor *b);
/* t (may be NULL) holds bfloat16, float16 or float64: a storage dtype ops compute in float32. */
static inline bool ft_is_storage_float(const ft_tensor *t) {
    return t && t->dtype != FT_FLOAT32 && ft_dtype_is_float(t->dtype);
}
static inline float *ft_f32(const ft_tensor *t) { return (float *)t->storage->data + t->offset; }
static inline int64_t *ft_i64(const ft_tensor *t) { return (int64_t *)t->storage->data + t->offset; }
/* First element's address whatever the dtype. */
static inline void *ft_data(const ft_tensor *t) {
    return (char *)t->storage->data + (size_t)t->offset * ft_dtype_size(t->dtype);
}
double ft_item(const ft_tensor *t);                                /* error unless numel == 1 */
/* Element at a multi-index (0-based), any strides. */
double ft_get(const ft_tensor *t, const int64_t *index);
void ft_set(ft_tensor *t, const int64_t *index, double value);
/* Normalises a possibly negative 0-based dim; -1 with an error naming op on failure. */
int ft_wrap_dim(int dim, int ndim, const char *op);

/* ---- views (share storage; differentiable) --------------------------------- */
ft_tensor *ft_view(const ft_tensor *t, const int64_t *shape, int ndim);    /* one dim may be -1 */
ft_tensor *ft_reshape(const ft_tensor *t, const int64_t *shape, int ndim); /* view if possible, else copy */
ft_tensor *ft_transpose(const ft_tensor *t, int dim0, int dim1);
ft_tensor *ft_permute(const ft_tensor *t, const int *dims);
ft_tensor *ft_narrow(const ft_tensor *t, int dim, int64_t start, int64_t length);
ft_tensor *ft_select(const ft_tensor *t, int dim, int64_t index);
ft_tensor *ft_expand(const ft_tensor *t, const int64_t *shape, int ndim);  /* -1 keeps a dim */
ft_tensor *ft_squeeze(const ft_tensor *t, int dim);                        /* dim < -ndim: all */
ft_tensor *ft_unsqueeze(const ft_tensor *t, int dim);
ft_tensor *ft_contiguous(const ft_tensor *t);  /* retains t itself when already contiguous */
ft_tensor *ft_clone(const ft_tensor *t);       /* always a fresh contiguous copy (differentiable) */
ft_tensor *ft_detach(const ft_tensor *t);      /* shares storage, no grad_fn, requires_grad false */
ft_tensor *ft_to_dtype(const ft_tensor *t, ft_dtype dtype);
/* t takes src's storage, offset, strides and dtype (nothing is copied; both then share the
 * memory), as torch's t.data = src: the same shape required, a float dtype may change into
 * another (a gradient of the old dtype is dropped), and t must be a leaf (no grad_fn); t keeps
 * requires_grad. For converting a model's weights in place and pointing a parameter at a
 * tensor over a memory-mapped file. 0, or -1 with an error. */
int ft_set_(ft_tensor *t, const ft_tensor *src);

/* ---- raw (non-differentiable) helpers used by kernels ---------------------- */
/* Copies src into dst (same numel, any strides/dtypes); no autograd. */
int ft_copy_(ft_tensor *dst, const ft_tensor *src);
int ft_fill_(ft_tensor *t, double value);
/* Broadcast output shape of a and b; -1 and an error naming op on mismatch. */
int ft_broadcast_shape(const int64_t *a, int na, const int64_t *b, int nb,
                       int64_t *out, int *nout, const char *op);
/* Sums g down to shape (undoing broadcasting); no autograd. */
ft_tensor *ft_sum_to_shape(const ft_tensor *g, const int64_t *shape, int ndim);

#endif
