#define _POSIX_C_SOURCE 200809L /* fileno, isatty */

/* ft tensors in Lua: creation, inspection, views, arithmetic, reductions and the
 * metatable. Dims, positions and index values are 1-based here (see ftl.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "ft/runtime.h"
#include "ftl.h"

/* ---- creation ------------------------------------------------------------------------ */

static ft_dtype check_dtype_name(lua_State *L, const char *name) {
    if (strcmp(name, "float32") == 0 || strcmp(name, "float") == 0) return FT_FLOAT32;
    if (strcmp(name, "int64") == 0 || strcmp(name, "long") == 0) return FT_INT64;
    luaL_error(L, "ft: unknown dtype '%s' (float32 or int64)", name);
    return FT_FLOAT32;
}

/* The options of the creation functions. */
static const char *const creation_options[] = {"dtype", "requires_grad", NULL};

/* Checks the {dtype=, requires_grad=} table at opts (nil or absent is fine). */
static void check_creation_options(lua_State *L, int opts, const char *op) {
    char where[64];
    snprintf(where, sizeof where, "ft.%s", op);
    ftl_check_options(L, opts, where, creation_options);
}

/* Applies {requires_grad=} at opts (a boolean) to a fresh tensor, then pushes it. */
static int push_created(lua_State *L, ft_tensor *t, int opts, const char *op) {
    ftl_push_tensor(L, t, op);
    if (!lua_istable(L, opts)) return 1;
    int type = lua_getfield(L, opts, "requires_grad");
    if (type != LUA_TNIL && type != LUA_TBOOLEAN)
        return luaL_error(L, "ft.%s: option 'requires_grad' must be a boolean, got %s", op, luaL_typename(L, -1));
    bool rg = lua_toboolean(L, -1);
    lua_pop(L, 1);   /* the tensor is on top again */
    if (rg && ft_set_requires_grad(t, true) < 0) return ftl_error(L, op);
    return 1;
}

static ft_dtype opt_dtype(lua_State *L, int opts, ft_dtype def) {
    if (!lua_istable(L, opts)) return def;
    const char *name = ftl_opt_string_field(L, opts, "dtype", NULL);
    return name ? check_dtype_name(L, name) : def;
}

/* A size given where a shape's integers were expected: names the position and the value. */
static void bad_size(lua_State *L, int idx, const char *op) {
    if (lua_type(L, idx) == LUA_TNUMBER)
        luaL_error(L, "ft.%s: size %s (argument %d) is not an integer", op, lua_tostring(L, idx), idx);
    luaL_error(L, "ft.%s: sizes must be integers or one table of them, got a %s (argument %d)", op,
               luaL_typename(L, idx), idx);
}

/* Shape from integers or one table starting at first, then an optional options table and
 * nothing else; returns the options' index. Sizes are checked by the core (negative, overflow). */
static int creation_shape(lua_State *L, int first, int64_t *shape, int *ndim, const char *op) {
    int top = lua_gettop(L), next;
    if (lua_istable(L, first)) {
        lua_Integer n = luaL_len(L, first);
        for (lua_Integer i = 1; i <= n && i <= FT_MAX_DIMS; i++) {
            int type = lua_geti(L, first, i);
            if (type != LUA_TNUMBER || !lua_isinteger(L, -1)) {
                if (type == LUA_TNUMBER) luaL_error(L, "ft.%s: size %s (entry %I of the shape) is not an integer", op, lua_tostring(L, -1), i);
                luaL_error(L, "ft.%s: the shape's entries must be integers, got a %s (entry %I)", op, luaL_typename(L, -1), i);
            }
            lua_pop(L, 1);
        }
        *ndim = ftl_check_shape(L, first, shape);
        next = first + 1;
    } else {
        for (next = first; next <= top && lua_type(L, next) == LUA_TNUMBER; next++)
            if (!lua_isinteger(L, next)) bad_size(L, next, op);
        *ndim = ftl_check_shape(L, first, shape);
    }
    if (next <= top && !lua_isnil(L, next) && !lua_istable(L, next)) bad_size(L, next, op);
    if (next < top) luaL_error(L, "ft.%s: unexpected argument %d after the options table", op, next + 1);
    check_creation_options(L, next, op);
    return next;
}

/* int64 tensors hold integers: a non-integral, infinite or NaN number at idx is an error. */
static void check_integer_number(lua_State *L, int idx, const char *op) {
    if (lua_isinteger(L, idx)) return;
    lua_Number v = lua_tonumber(L, idx);
    if (!(v == floor(v) && v >= -0x1p63 && v < 0x1p63))
        luaL_error(L, "ft.%s: %s is not an integer (int64 tensors hold integers)", op, lua_tostring(L, idx));
}

/* Every number in the nested table at idx must be an integer (for an int64 tensor). */
static void check_integer_table(lua_State *L, int idx, int depth) {
    if (depth > FT_MAX_DIMS) return;   /* the reader reports the nesting */
    idx = lua_absindex(L, idx);
    lua_Integer n = luaL_len(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        if (lua_istable(L, -1)) check_integer_table(L, -1, depth + 1);
        else if (lua_type(L, -1) == LUA_TNUMBER) check_integer_number(L, -1, "tensor");
        lua_pop(L, 1);
    }
}

static int l_tensor(lua_State *L) {
    int opts = 2;
    if (lua_gettop(L) > 2) return luaL_error(L, "ft.tensor: expected (data [, options]), got %d arguments", lua_gettop(L));
    check_creation_options(L, opts, "tensor");
    ft_tensor *src = ftl_to_tensor(L, 1);
    ft_tensor *t;
    if (src) {
        t = ft_to_dtype(src, opt_dtype(L, opts, src->dtype));
        if (t == src) { ft_release(t); t = ft_clone(src); }
        if (t && t->grad_fn) { ft_tensor *d = ft_detach(t); ft_release(t); t = d; }
    } else if (lua_type(L, 1) == LUA_TNUMBER) {
        ft_dtype dt = opt_dtype(L, opts, FT_FLOAT32);
        if (dt == FT_INT64) check_integer_number(L, 1, "tensor");
        t = ft_scalar(lua_tonumber(L, 1), dt);
    } else {
        if (!lua_istable(L, 1))
            return luaL_error(L, "ft.tensor: expected a tensor, a number or a nested table of numbers, got %s",
                              luaL_typename(L, 1));
        ft_dtype dt = opt_dtype(L, opts, FT_FLOAT32);
        if (dt == FT_INT64) check_integer_table(L, 1, 0);
        t = ftl_table_to_tensor(L, 1, dt);
    }
    return push_created(L, t, opts, "tensor");
}

static int l_zeros(lua_State *L) {
    int64_t shape[FT_MAX_DIMS];
    int ndim, opts = creation_shape(L, 1, shape, &ndim, "zeros");
    return push_created(L, ft_zeros(shape, ndim, opt_dtype(L, opts, FT_FLOAT32)), opts, "zeros");
}

static int l_ones(lua_State *L) {
    int64_t shape[FT_MAX_DIMS];
    int ndim, opts = creation_shape(L, 1, shape, &ndim, "ones");
    return push_created(L, ft_full(shape, ndim, opt_dtype(L, opts, FT_FLOAT32), 1.0), opts, "ones");
}

static int l_empty(lua_State *L) {
    int64_t shape[FT_MAX_DIMS];
    int ndim, opts = creation_shape(L, 1, shape, &ndim, "empty");
    return push_created(L, ft_zeros(shape, ndim, opt_dtype(L, opts, FT_FLOAT32)), opts, "empty");
}

static int l_full(lua_State *L) {
    int64_t shape[FT_MAX_DIMS];
    if (!lua_istable(L, 1)) return luaL_error(L, "ft.full: the shape must be a table of integers, got %s", luaL_typename(L, 1));
    int ndim = ftl_check_shape(L, 1, shape);
    double v = luaL_checknumber(L, 2);
    check_creation_options(L, 3, "full");
    ft_dtype dt = opt_dtype(L, 3, FT_FLOAT32);
    if (dt == FT_INT64) check_integer_number(L, 2, "full");
    return push_created(L, ft_full(shape, ndim, dt, v), 3, "full");
}

/* Random float32 tensors: {dtype=} may only say float32. */
static int random_float(lua_State *L, const char *op, ft_tensor *(*fn)(const int64_t *, int)) {
    int64_t shape[FT_MAX_DIMS];
    int ndim, opts = creation_shape(L, 1, shape, &ndim, op);
    if (opt_dtype(L, opts, FT_FLOAT32) != FT_FLOAT32) return luaL_error(L, "ft.%s: makes float32 tensors only", op);
    return push_created(L, fn(shape, ndim), opts, op);
}
static int l_randn(lua_State *L) { return random_float(L, "randn", ft_randn); }
static int l_rand(lua_State *L) { return random_float(L, "rand", ft_rand); }

/* ft.randint(low, high, shape): integers in [low, high], both ends included (1-based habit). */
static int l_randint(lua_State *L) {
    lua_Integer lo = luaL_checkinteger(L, 1), hi = luaL_checkinteger(L, 2);
    if (hi < lo) return luaL_error(L, "ft.randint: low %I is greater than high %I", lo, hi);
    if (hi == LUA_MAXINTEGER) return luaL_error(L, "ft.randint: high must be below math.maxinteger, got %I", hi);
    int64_t shape[FT_MAX_DIMS];
    int ndim, opts = creation_shape(L, 3, shape, &ndim, "randint");
    if (opt_dtype(L, opts, FT_INT64) != FT_INT64) return luaL_error(L, "ft.randint: makes int64 tensors only");
    return push_created(L, ft_randint(lo, hi + 1, shape, ndim), opts, "randint");
}

/* ft.randperm(n): a random permutation of 1..n (int64). */
static int l_randperm(lua_State *L) {
    int64_t n = luaL_checkinteger(L, 1);
    if (n < 0) return luaL_error(L, "ft.randperm: n must be 0 or more, got %I", (lua_Integer)n);
    ft_tensor *t = ft_empty(&n, 1, FT_INT64);
    if (!t) return ftl_error(L, "randperm");
    int64_t *p = ft_i64(t);
    for (int64_t i = 0; i < n; i++) p[i] = i + 1;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(ft_rng_next() % (uint64_t)(i + 1));
        int64_t tmp = p[i];
        p[i] = p[j], p[j] = tmp;
    }
    ftl_push_tensor(L, t, "randperm");
    return 1;
}

/* ft.arange([start,] end [, step] [, options]): int64 when every bound is an integer. */
static int l_arange(lua_State *L) {
    int top = lua_gettop(L), opts = top;
    if (top >= 1 && lua_istable(L, top)) check_creation_options(L, opts, "arange");
    else opts = top + 1;   /* none: an absent (acceptable) index */
    int nnum = opts - 1;
    if (nnum < 1 || nnum > 3) return luaL_error(L, "ft.arange: expected ([start,] end [, step] [, options])");
    for (int i = 1; i <= nnum; i++) luaL_checknumber(L, i);
    double start = lua_tonumber(L, 1), end, step = nnum == 3 ? lua_tonumber(L, 3) : 1;
    int all_int = 1;
    for (int i = 1; i <= nnum; i++) all_int = all_int && lua_isinteger(L, i);
    if (nnum == 1) end = start, start = 0;
    else end = lua_tonumber(L, 2);
    ft_dtype dt = opt_dtype(L, opts, all_int ? FT_INT64 : FT_FLOAT32);
    return push_created(L, ft_arange(start, end, step, dt), opts, "arange");
}

static int l_like(lua_State *L, double value, int random) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    check_creation_options(L, 2, random ? "randn_like" : value == 0 ? "zeros_like" : "ones_like");
    ft_tensor *r;
    if (random) r = ft_randn(t->shape, t->ndim);
    else r = ft_full(t->shape, t->ndim, opt_dtype(L, 2, t->dtype), value);
    return push_created(L, r, 2, "like");
}
static int l_zeros_like(lua_State *L) { return l_like(L, 0, 0); }
static int l_ones_like(lua_State *L) { return l_like(L, 1, 0); }
static int l_randn_like(lua_State *L) { return l_like(L, 0, 1); }

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, luaL_testudata(L, 1, FTL_TENSOR_MT) != NULL);
    return 1;
}

/* ---- runtime --------------------------------------------------------------------------- */

static int l_manual_seed(lua_State *L) {
    ft_manual_seed((uint64_t)luaL_checkinteger(L, 1));
    return 0;
}

/* ft.set_num_threads(n): OpenMP and OpenBLAS threads together, n in 1..FT_MAX_THREADS. */
static int l_set_num_threads(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 1 || n > FT_MAX_THREADS)
        return luaL_error(L, "ft.set_num_threads: n must be in 1..%d, got %I", FT_MAX_THREADS, n);
    ft_set_num_threads((int)n);
    return 0;
}

static int l_get_num_threads(lua_State *L) {
    lua_pushinteger(L, ft_get_num_threads());
    return 1;
}

/* The generator state as an int64 tensor of 4 words, for resumable checkpoints. */
static int l_get_rng_state(lua_State *L) {
    uint64_t s[4];
    ft_rng_get_state(s);
    int64_t shape = 4;
    ftl_push_tensor(L, ft_from_data(s, &shape, 1, FT_INT64), "get_rng_state");
    return 1;
}

static int l_set_rng_state(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (t->dtype != FT_INT64 || ft_numel(t) != 4 || !ft_is_contiguous(t))
        return luaL_error(L, "ft.set_rng_state: expected the int64 tensor of 4 words from ft.get_rng_state()");
    ft_rng_set_state((const uint64_t *)ft_i64(t));
    return 0;
}

static int l_isatty(lua_State *L) {
    luaL_Stream *s = luaL_testudata(L, 1, LUA_FILEHANDLE);
    int fd = s && s->f ? fileno(s->f) : (int)luaL_optinteger(L, 1, 2);
    lua_pushboolean(L, isatty(fd));
    return 1;
}

/* ft.clock(): monotonic wall-clock seconds, for timing and ETAs. */
static int l_clock(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

static int l_live_bytes(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)ft_live_bytes());
    return 1;
}

/* Defined in core/alloc.c (declared here until ft/tensor.h exports them). */

/* ft.peak_bytes(): the most ft.live_bytes() reached since the last ft.reset_peak_bytes(). */
static int l_peak_bytes(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)ft_peak_bytes());
    return 1;
}

static int l_reset_peak_bytes(lua_State *L) {
    ft_reset_peak_bytes();
    return 0;
}

static int l_empty_cache(lua_State *L) {
    ft_empty_cache();
    return 0;
}

/* ---- inspection ------------------------------------------------------------------------ */

static int l_shape(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    lua_createtable(L, t->ndim, 0);
    for (int d = 0; d < t->ndim; d++) {
        lua_pushinteger(L, t->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 1;
}

static int l_size(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) return l_shape(L);
    lua_pushinteger(L, t->shape[ftl_check_dim(L, 2, t->ndim)]);
    return 1;
}

static int l_stride(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    lua_pushinteger(L, t->strides[ftl_check_dim(L, 2, t->ndim)]);
    return 1;
}

static int l_dim(lua_State *L) {
    lua_pushinteger(L, ftl_check_tensor(L, 1)->ndim);
    return 1;
}

static int l_numel(lua_State *L) {
    lua_pushinteger(L, ft_numel(ftl_check_tensor(L, 1)));
    return 1;
}

static int l_dtype(lua_State *L) {
    lua_pushstring(L, ft_dtype_name(ftl_check_tensor(L, 1)->dtype));
    return 1;
}

static int l_is_contiguous(lua_State *L) {
    lua_pushboolean(L, ft_is_contiguous(ftl_check_tensor(L, 1)));
    return 1;
}

static void push_value(lua_State *L, const ft_tensor *t, double v) {
    if (t->dtype == FT_INT64) lua_pushinteger(L, (lua_Integer)v);
    else lua_pushnumber(L, v);
}

static int l_item(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (ft_numel(t) != 1) {
        char buf[160];
        return luaL_error(L, "ft.item: a tensor of shape %s has %d elements, not 1",
                          ft_shape_str(t->shape, t->ndim, buf, sizeof buf), (int)ft_numel(t));
    }
    int64_t zero[FT_MAX_DIMS] = {0};
    if (t->dtype == FT_INT64) lua_pushinteger(L, ((int64_t *)t->storage->data)[t->offset]);
    else push_value(L, t, ft_get(t, zero));
    return 1;
}

static void totable_rec(lua_State *L, const ft_tensor *t, int depth, int64_t *index) {
    lua_createtable(L, (int)t->shape[depth], 0);
    for (int64_t i = 0; i < t->shape[depth]; i++) {
        index[depth] = i;
        if (depth + 1 == t->ndim) {
            if (t->dtype == FT_INT64) {
                int64_t off = t->offset;
                for (int d = 0; d < t->ndim; d++) off += index[d] * t->strides[d];
                lua_pushinteger(L, ((int64_t *)t->storage->data)[off]);
            } else {
                lua_pushnumber(L, ft_get(t, index));
            }
        } else {
            totable_rec(L, t, depth + 1, index);
        }
        lua_rawseti(L, -2, i + 1);
    }
}

static int l_totable(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (t->ndim == 0) return l_item(L);
    int64_t index[FT_MAX_DIMS] = {0};
    totable_rec(L, t, 0, index);
    return 1;
}

/* ---- views ------------------------------------------------------------------------------ */

static int l_view(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int64_t shape[FT_MAX_DIMS];
    int ndim = ftl_check_shape(L, 2, shape);
    ftl_push_tensor(L, ft_view(t, shape, ndim), "view");
    return 1;
}

static int l_reshape(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int64_t shape[FT_MAX_DIMS];
    int ndim = ftl_check_shape(L, 2, shape);
    ftl_push_tensor(L, ft_reshape(t, shape, ndim), "reshape");
    return 1;
}

static int l_t(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (t->ndim > 2) {
        char buf[160];
        return luaL_error(L, "ft.t: expects a tensor with <= 2 dims, got %s; use transpose",
                          ft_shape_str(t->shape, t->ndim, buf, sizeof buf));
    }
    ftl_push_tensor(L, t->ndim < 2 ? ft_detach(t) : ft_transpose(t, 0, 1), "t");
    if (t->ndim < 2 && t->requires_grad) {
        lua_pop(L, 1);
        ftl_push_tensor(L, ft_view(t, t->shape, t->ndim), "t");
    }
    return 1;
}

static int l_transpose(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int d0 = ftl_check_dim(L, 2, t->ndim), d1 = ftl_check_dim(L, 3, t->ndim);
    ftl_push_tensor(L, ft_transpose(t, d0, d1), "transpose");
    return 1;
}

static int l_permute(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int dims[FT_MAX_DIMS];
    int64_t raw[FT_MAX_DIMS];
    int n = ftl_check_shape(L, 2, raw);
    if (n != t->ndim) return luaL_error(L, "ft.permute: %d dims given for a %d-dim tensor", n, t->ndim);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, raw[i]);
        dims[i] = ftl_check_dim(L, -1, t->ndim);
        lua_pop(L, 1);
    }
    ftl_push_tensor(L, ft_permute(t, dims), "permute");
    return 1;
}

/* t:narrow(dim, start, length): positions start .. start + length - 1 (1-based) of dim. */
static int l_narrow(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int d = ftl_check_dim(L, 2, t->ndim);
    lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
    if (t->ndim == 0) return luaL_error(L, "ft.narrow: cannot narrow a 0-dim tensor");
    lua_Integer size = (lua_Integer)t->shape[d];
    /* compared without forming start + length, which may overflow */
    if (start < 1 || len < 0 || start > size + 1 || len > size - (start - 1))
        return luaL_error(L, "ft.narrow: start %I with length %I does not fit in size %I of dim %d", start, len,
                          size, d + 1);
    ftl_push_tensor(L, ft_narrow(t, d, start - 1, len), "narrow");
    return 1;
}

/* t:select(dim, i): the slice at position i (1-based, negative from the end) of dim. */
static int l_select(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int d = ftl_check_dim(L, 2, t->ndim);
    lua_Integer given = luaL_checkinteger(L, 3), i = given;
    if (t->ndim == 0) return luaL_error(L, "ft.select: cannot index a 0-dim tensor");
    lua_Integer size = (lua_Integer)t->shape[d];
    if (i < 0 && i >= -size) i += size + 1; /* -1 = last */
    if (i < 1 || i > size)
        return luaL_error(L, "ft.select: index %I out of range for size %I of dim %d", given, size, d + 1);
    ftl_push_tensor(L, ft_select(t, d, i - 1), "select");
    return 1;
}

static int l_squeeze(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int d = lua_isnoneornil(L, 2) ? -FT_MAX_DIMS - 1 : ftl_check_dim(L, 2, t->ndim);
    ftl_push_tensor(L, ft_squeeze(t, d), "squeeze");
    return 1;
}

static int l_unsqueeze(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int d = ftl_check_dim(L, 2, t->ndim + 1);
    ftl_push_tensor(L, ft_unsqueeze(t, d), "unsqueeze");
    return 1;
}

static int l_expand(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int64_t shape[FT_MAX_DIMS];
    int ndim;
    ft_tensor *other = ftl_to_tensor(L, 2);
    if (other) {
        ndim = other->ndim;
        memcpy(shape, other->shape, sizeof shape);
    } else {
        ndim = ftl_check_shape(L, 2, shape);
    }
    ftl_push_tensor(L, ft_expand(t, shape, ndim), "expand");
    return 1;
}

static int l_contiguous(lua_State *L) {
    ftl_push_tensor(L, ft_contiguous(ftl_check_tensor(L, 1)), "contiguous");
    return 1;
}

static int l_clone(lua_State *L) {
    ftl_push_tensor(L, ft_clone(ftl_check_tensor(L, 1)), "clone");
    return 1;
}

static int l_detach(lua_State *L) {
    ftl_push_tensor(L, ft_detach(ftl_check_tensor(L, 1)), "detach");
    return 1;
}

static int l_to(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    ft_dtype dt = check_dtype_name(L, luaL_checkstring(L, 2));
    ftl_push_tensor(L, ft_to_dtype(t, dt), "to");
    return 1;
}

static int l_float(lua_State *L) {
    ftl_push_tensor(L, ft_to_dtype(ftl_check_tensor(L, 1), FT_FLOAT32), "float");
    return 1;
}

static int l_long(lua_State *L) {
    ftl_push_tensor(L, ft_to_dtype(ftl_check_tensor(L, 1), FT_INT64), "long");
    return 1;
}

/* ---- in-place (no autograd: refused on tensors that require grad while grad is on) -------- */

static ft_tensor *check_inplace(lua_State *L, const char *op) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (t->requires_grad && ft_grad_enabled())
        luaL_error(L, "ft.%s: in-place change of a tensor that requires grad; wrap it in ft.no_grad", op);
    return t;
}

static int l_fill_(lua_State *L) {
    ft_tensor *t = check_inplace(L, "fill_");
    if (ft_fill_(t, luaL_checknumber(L, 2)) < 0) return ftl_error(L, "fill_");
    lua_settop(L, 1);
    return 1;
}

static int l_zero_(lua_State *L) {
    ft_fill_(check_inplace(L, "zero_"), 0);
    lua_settop(L, 1);
    return 1;
}

static int l_copy_(lua_State *L) {
    ft_tensor *t = check_inplace(L, "copy_");
    ft_tensor *src = ftl_check_tensor_like(L, 2);
    ft_tensor *b = NULL;
    if (!ft_same_shape(t, src)) { /* broadcast the source like torch's copy_ */
        b = ft_expand(src, t->shape, t->ndim);
        ft_release(src);
        if (!b) return ftl_error(L, "copy_");
        src = b;
    }
    int rc = ft_copy_(t, src);
    ft_release(src);
    if (rc < 0) return ftl_error(L, "copy_");
    lua_settop(L, 1);
    return 1;
}

static int l_uniform_(lua_State *L) {
    ft_tensor *t = check_inplace(L, "uniform_");
    double lo = luaL_optnumber(L, 2, 0), hi = luaL_optnumber(L, 3, 1);
    ft_tensor *r = ft_rand(t->shape, t->ndim);
    if (!r) return ftl_error(L, "uniform_");
    float *p = ft_f32(r);
    for (int64_t i = 0, n = ft_numel(r); i < n; i++) p[i] = (float)(lo + (hi - lo) * p[i]);
    ft_copy_(t, r);
    ft_release(r);
    lua_settop(L, 1);
    return 1;
}

static int l_normal_(lua_State *L) {
    ft_tensor *t = check_inplace(L, "normal_");
    double mean = luaL_optnumber(L, 2, 0), std = luaL_optnumber(L, 3, 1);
    ft_tensor *r = ft_randn(t->shape, t->ndim);
    if (!r) return ftl_error(L, "normal_");
    float *p = ft_f32(r);
    for (int64_t i = 0, n = ft_numel(r); i < n; i++) p[i] = (float)(mean + std * p[i]);
    ft_copy_(t, r);
    ft_release(r);
    lua_settop(L, 1);
    return 1;
}

/* t:add_(u [, alpha]) and t:mul_(number or tensor): t = t + alpha * u, t = t * u. */
static int inplace_binary(lua_State *L, const char *op, int is_mul) {
    ft_tensor *t = check_inplace(L, op);
    bool mode = ft_set_grad_enabled(false);
    ft_tensor *r;
    if (lua_isnumber(L, 2)) {
        double s = lua_tonumber(L, 2);
        r = is_mul ? ft_mul_scalar(t, s) : ft_add_scalar(t, s);
    } else {
        ft_tensor *u = ftl_check_tensor(L, 2);
        double alpha = luaL_optnumber(L, 3, 1);
        ft_tensor *su = (alpha == 1 || is_mul) ? ft_retain(u) : ft_mul_scalar(u, alpha);
        r = su ? (is_mul ? ft_mul(t, su) : ft_add(t, su)) : NULL;
        ft_release(su);
    }
    ft_set_grad_enabled(mode);
    if (!r) return ftl_error(L, op);
    if (!ft_same_shape(r, t)) {
        ft_release(r);
        return luaL_error(L, "ft.%s: the result's shape differs from the tensor's; in-place ops cannot grow a tensor", op);
    }
    int rc = ft_copy_(t, r);
    ft_release(r);
    if (rc < 0) return ftl_error(L, op);
    lua_settop(L, 1);
    return 1;
}
static int l_add_(lua_State *L) { return inplace_binary(L, "add_", 0); }
static int l_mul_(lua_State *L) { return inplace_binary(L, "mul_", 1); }

static int l_requires_grad_(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (ft_set_requires_grad(t, lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2)) < 0)
        return ftl_error(L, "requires_grad_");
    lua_settop(L, 1);
    return 1;
}

/* ---- metatable ------------------------------------------------------------------------------ */

static int l_gc(lua_State *L) {
    ft_tensor **ud = luaL_checkudata(L, 1, FTL_TENSOR_MT);
    ft_release(*ud);
    *ud = NULL;
    return 0;
}

static int l_index(lua_State *L) {
    /* methods first */
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1)) return 1;
    lua_pop(L, 1);
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *key = lua_tostring(L, 2);
        if (strcmp(key, "requires_grad") == 0) {
            lua_pushboolean(L, t->requires_grad);
            return 1;
        }
        if (strcmp(key, "grad") == 0) {
            if (!t->grad) return 0;
            ftl_push_tensor(L, ft_retain(t->grad), "grad");
            return 1;
        }
        if (strcmp(key, "is_leaf") == 0) {
            lua_pushboolean(L, t->grad_fn == NULL);
            return 1;
        }
        if (strcmp(key, "grad_fn") == 0) {
            if (!t->grad_fn) return 0;
            lua_pushstring(L, t->grad_fn->op);
            return 1;
        }
        return 0;
    }
    if (lua_type(L, 2) == LUA_TNUMBER) { /* t[i] = t:select(1, i) */
        int exact;
        lua_tointegerx(L, 2, &exact);   /* 2.0 is fine, 1.5 is not */
        if (!exact) return luaL_error(L, "ft: tensor index %s is not an integer", lua_tostring(L, 2));
        lua_settop(L, 2);
        lua_pushinteger(L, 1);
        lua_insert(L, 2);
        return l_select(L);
    }
    return 0;
}

static int l_newindex(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *key = lua_tostring(L, 2);
        if (strcmp(key, "requires_grad") == 0) {
            if (ft_set_requires_grad(t, lua_toboolean(L, 3)) < 0) return ftl_error(L, "requires_grad");
            return 0;
        }
        if (strcmp(key, "grad") == 0) {
            ft_tensor *g = lua_isnil(L, 3) ? NULL : ftl_check_tensor(L, 3);
            if (g && !ft_same_shape(g, t)) {
                char a[160], b[160];
                return luaL_error(L, "ft.grad: a gradient of shape %s for a tensor of shape %s",
                                  ft_shape_str(g->shape, g->ndim, a, sizeof a), ft_shape_str(t->shape, t->ndim, b, sizeof b));
            }
            ft_tensor *old = t->grad;
            t->grad = g ? ft_clone(g) : NULL;
            if (t->grad && t->grad->grad_fn) {
                ft_tensor *d = ft_detach(t->grad);
                ft_release(t->grad);
                t->grad = d;
            }
            ft_release(old);
            return 0;
        }
        return luaL_error(L, "ft: cannot set field '%s' of a tensor", key);
    }
    if (lua_type(L, 2) == LUA_TNUMBER) { /* t[i] = value */
        int exact;
        lua_tointegerx(L, 2, &exact);   /* 2.0 is fine, 1.5 is not */
        if (!exact) return luaL_error(L, "ft: tensor index %s is not an integer", lua_tostring(L, 2));
        lua_Integer i = lua_tointeger(L, 2);
        if (t->ndim == 0 || i < 1 || i > t->shape[0])
            return luaL_error(L, "ft: index %I out of range for dim 1 of size %I", i,
                              (lua_Integer)(t->ndim ? t->shape[0] : 0));
        if (t->requires_grad && ft_grad_enabled())
            return luaL_error(L, "ft: in-place change of a tensor that requires grad; wrap it in ft.no_grad");
        /* the value first: a bad one raises before anything needs releasing */
        ft_tensor *src = lua_isnumber(L, 3) ? NULL : ftl_check_tensor_like(L, 3);
        ft_tensor *row = ft_select(t, 0, i - 1);
        bool mode = ft_set_grad_enabled(false);
        int rc;
        if (!src) rc = ft_fill_(row, lua_tonumber(L, 3));
        else {
            ft_tensor *e = ft_same_shape(src, row) ? ft_retain(src) : ft_expand(src, row->shape, row->ndim);
            rc = e ? ft_copy_(row, e) : -1;
            ft_release(e);
        }
        ft_set_grad_enabled(mode);
        ft_release(src);
        ft_release(row);
        if (rc < 0) return ftl_error(L, "setindex");
        return 0;
    }
    return luaL_error(L, "ft: cannot index a tensor with a %s", luaL_typename(L, 2));
}

static int l_len(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    lua_pushinteger(L, t->ndim ? t->shape[0] : 0);
    return 1;
}

/* __tostring defers to the Lua formatter ft._format_tensor (bindings/lua/ft/tensor.lua). */
static int l_tostring(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "ft.module");
    lua_getfield(L, -1, "_format_tensor");
    if (lua_isfunction(L, -1)) {
        lua_pushvalue(L, 1);
        lua_call(L, 1, 1);
        return 1;
    }
    char buf[160];
    lua_pushfstring(L, "ft.Tensor of shape %s (%s)", ft_shape_str(t->shape, t->ndim, buf, sizeof buf),
                    ft_dtype_name(t->dtype));
    return 1;
}

static const luaL_Reg methods[] = {
    {"shape", l_shape},
    {"size", l_size},
    {"stride", l_stride},
    {"dim", l_dim},
    {"numel", l_numel},
    {"dtype", l_dtype},
    {"item", l_item},
    {"totable", l_totable},
    {"is_contiguous", l_is_contiguous},
    {"view", l_view},
    {"reshape", l_reshape},
    {"t", l_t},
    {"transpose", l_transpose},
    {"permute", l_permute},
    {"narrow", l_narrow},
    {"select", l_select},
    {"squeeze", l_squeeze},
    {"unsqueeze", l_unsqueeze},
    {"expand", l_expand},
    {"contiguous", l_contiguous},
    {"clone", l_clone},
    {"detach", l_detach},
    {"to", l_to},
    {"float", l_float},
    {"long", l_long},
    {"fill_", l_fill_},
    {"zero_", l_zero_},
    {"copy_", l_copy_},
    {"uniform_", l_uniform_},
    {"normal_", l_normal_},
    {"add_", l_add_},
    {"mul_", l_mul_},
    {"requires_grad_", l_requires_grad_},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__gc", l_gc},       {"__close", l_gc},  {"__newindex", l_newindex}, {"__len", l_len},
    {"__tostring", l_tostring}, {NULL, NULL},
};

static const luaL_Reg functions[] = {
    {"tensor", l_tensor},
    {"zeros", l_zeros},
    {"ones", l_ones},
    {"empty", l_empty},
    {"full", l_full},
    {"randn", l_randn},
    {"rand", l_rand},
    {"randint", l_randint},
    {"randperm", l_randperm},
    {"arange", l_arange},
    {"zeros_like", l_zeros_like},
    {"ones_like", l_ones_like},
    {"randn_like", l_randn_like},
    {"is_tensor", l_is_tensor},
    {"manual_seed", l_manual_seed},
    {"set_num_threads", l_set_num_threads},
    {"get_num_threads", l_get_num_threads},
    {"get_rng_state", l_get_rng_state},
    {"set_rng_state", l_set_rng_state},
    {"isatty", l_isatty},
    {"clock", l_clock},
    {"live_bytes", l_live_bytes},
    {"peak_bytes", l_peak_bytes},
    {"reset_peak_bytes", l_reset_peak_bytes},
    {"empty_cache", l_empty_cache},
    {NULL, NULL},
};

void ftl_open_tensor(lua_State *L) {
    int module = lua_gettop(L);
    luaL_newmetatable(L, FTL_TENSOR_MT);
    int mt = lua_gettop(L);
    luaL_setfuncs(L, metamethods, 0);

    lua_newtable(L); /* methods */
    int m = lua_gettop(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushvalue(L, m);
    lua_setfield(L, module, "Tensor"); /* ft.Tensor: the methods table, extensible from Lua */
    lua_pushvalue(L, m);
    lua_pushcclosure(L, l_index, 1);
    lua_setfield(L, mt, "__index");
    lua_settop(L, module);
    luaL_setfuncs(L, functions, 0);
}
