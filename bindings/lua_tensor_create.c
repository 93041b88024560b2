/* Making tensors from Lua: ft.tensor from data, the shape-given factories (zeros, ones,
 * empty, full), random ones (randn, rand, randint, randperm), ranges (arange) and *_like.
 * Each takes the options {dtype=, requires_grad=}, checked by the one options checker. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/runtime.h"
#include "ftl.h"

ft_dtype ftl_check_dtype(lua_State *L, const char *name) {
    ft_dtype dt;
    if (ft_dtype_from_name(name, &dt) < 0)
        luaL_error(L, "ft: unknown dtype '%s' (valid dtypes: float32 or float, int64 or long, bfloat16, "
                      "float16 or half, float64 or double)", name);
    return dt;
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
    return name ? ftl_check_dtype(L, name) : def;
}

/* A size given where a shape's integers were expected: names the position and the value. */
static void bad_size(lua_State *L, int idx, const char *op) {
    if (lua_type(L, idx) == LUA_TNUMBER)
        luaL_error(L, "ft.%s: size %s (argument %d) is not an integer", op, lua_tostring(L, idx), idx);
    luaL_error(L, "ft.%s: sizes must be integers or one table of them, got a %s (argument %d)", op,
               luaL_typename(L, idx), idx);
}

/* Shape from integers or one table starting at first, then an optional options table and
 * nothing else; returns the options' index. The factories take integer-typed sizes only (3,
 * not 3.0); ftl_check_shape refuses any other value, the core negative sizes and overflow. */
static int creation_shape(lua_State *L, int first, int64_t *shape, int *ndim, const char *op) {
    int top = lua_gettop(L), next;
    if (lua_istable(L, first)) {
        lua_Integer n = luaL_len(L, first);
        for (lua_Integer i = 1; i <= n && i <= FT_MAX_DIMS; i++) {
            int type = lua_geti(L, first, i);
            if (type == LUA_TNUMBER && !lua_isinteger(L, -1))
                luaL_error(L, "ft.%s: size %s (entry %I of the shape) is not an integer", op, lua_tostring(L, -1), i);
            lua_pop(L, 1);
            if (type != LUA_TNUMBER) break;   /* ftl_check_shape names it */
        }
        next = first + 1;
    } else {
        for (next = first; next <= top && lua_type(L, next) == LUA_TNUMBER; next++)
            if (!lua_isinteger(L, next)) bad_size(L, next, op);
    }
    *ndim = ftl_check_shape(L, first, shape, op);
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
    int ndim = ftl_check_shape(L, 1, shape, "full");
    double v = luaL_checknumber(L, 2);
    check_creation_options(L, 3, "full");
    ft_dtype dt = opt_dtype(L, 3, FT_FLOAT32);
    if (dt == FT_INT64) check_integer_number(L, 2, "full");
    return push_created(L, ft_full(shape, ndim, dt, v), 3, "full");
}

/* samples drawn in float32, rounded once to dtype (a float dtype); NULL with an error otherwise */
static ft_tensor *random_as(ft_tensor *r, ft_dtype dtype) {
    if (!r || dtype == FT_FLOAT32) return r;
    ft_tensor *t = ft_to_dtype(r, dtype);
    ft_release(r);
    return t;
}

/* Random float tensors: {dtype=} may say any float dtype (drawn in float32, then rounded). */
static int random_float(lua_State *L, const char *op, ft_tensor *(*fn)(const int64_t *, int)) {
    int64_t shape[FT_MAX_DIMS];
    int ndim, opts = creation_shape(L, 1, shape, &ndim, op);
    ft_dtype dt = opt_dtype(L, opts, FT_FLOAT32);
    if (!ft_dtype_is_float(dt)) return luaL_error(L, "ft.%s: makes float tensors only, not %s", op, ft_dtype_name(dt));
    return push_created(L, random_as(fn(shape, ndim), dt), opts, op);
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
    ft_dtype dt = opt_dtype(L, 2, random && !ft_dtype_is_float(t->dtype) ? FT_FLOAT32 : t->dtype);
    if (random && !ft_dtype_is_float(dt)) return luaL_error(L, "ft.randn_like: makes float tensors only, not %s", ft_dtype_name(dt));
    if (random) r = random_as(ft_randn(t->shape, t->ndim), dt);
    else r = ft_full(t->shape, t->ndim, dt, value);
    return push_created(L, r, 2, "like");
}
static int l_zeros_like(lua_State *L) { return l_like(L, 0, 0); }
static int l_ones_like(lua_State *L) { return l_like(L, 1, 0); }
static int l_randn_like(lua_State *L) { return l_like(L, 0, 1); }

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
    {NULL, NULL},
};

void ftl_open_tensor_create(lua_State *L) { ftl_register(L, functions); }
