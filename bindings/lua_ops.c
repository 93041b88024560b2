/* Tensor math from Lua: arithmetic (methods and metamethods), comparisons, reductions,
 * products, joining and indexing. Dims and index values are 1-based here (see ftl.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "ftl.h"

/* ---- arithmetic -------------------------------------------------------------------------- */

typedef ft_tensor *(*binary_fn)(const ft_tensor *, const ft_tensor *);
typedef ft_tensor *(*scalar_fn)(const ft_tensor *, double);

/* A binary operand: a tensor, a number (a 0-dim tensor of the other side's dtype) or a table. */
static ft_tensor *operand(lua_State *L, int idx, const ft_tensor *other) {
    ft_tensor *t = ftl_to_tensor(L, idx);
    if (t) return ft_retain(t);
    if (lua_isnumber(L, idx)) {
        /* an integral number next to an int64 tensor stays int64; 0.5 makes the result float */
        lua_Number v = lua_tonumber(L, idx);
        bool integral = lua_isinteger(L, idx) || ft_is_int64_value(v);
        t = ft_scalar(v, other && other->dtype == FT_INT64 && integral ? FT_INT64 : FT_FLOAT32);
        if (!t) ftl_error(L, "tensor");
        return t;
    }
    return ftl_check_tensor_like(L, idx);
}

/* a op b where either side may be a number; float32 tensors use the scalar kernels. */
static int arith(lua_State *L, const char *op, binary_fn fn, scalar_fn with_scalar, scalar_fn scalar_first) {
    ft_tensor *a = ftl_to_tensor(L, 1), *b = ftl_to_tensor(L, 2);
    if (a && !b && lua_isnumber(L, 2) && with_scalar && a->dtype == FT_FLOAT32) {
        /* float32 tensor op number: the scalar kernels */
        ftl_push_tensor(L, with_scalar(a, lua_tonumber(L, 2)), op);
        return 1;
    }
    if (!a && b && lua_isnumber(L, 1) && scalar_first && b->dtype == FT_FLOAT32) {
        ftl_push_tensor(L, scalar_first(b, lua_tonumber(L, 1)), op);
        return 1;
    }
    ft_tensor *ta = operand(L, 1, b);
    ft_tensor *tb = operand(L, 2, ta);
    ft_tensor *r = fn(ta, tb);
    ft_release(ta);
    ft_release(tb);
    ftl_push_tensor(L, r, op);
    return 1;
}

static ft_tensor *sub_scalar(const ft_tensor *a, double s) { return ft_add_scalar(a, -s); }
static ft_tensor *div_scalar(const ft_tensor *a, double s) { return ft_mul_scalar(a, 1.0 / s); }
static ft_tensor *add_scalar_first(const ft_tensor *a, double s) { return ft_add_scalar(a, s); }
static ft_tensor *mul_scalar_first(const ft_tensor *a, double s) { return ft_mul_scalar(a, s); }

static int l_add(lua_State *L) { return arith(L, "add", ft_add, ft_add_scalar, add_scalar_first); }
static int l_sub(lua_State *L) { return arith(L, "sub", ft_sub, sub_scalar, ft_rsub_scalar); }
static int l_mul(lua_State *L) { return arith(L, "mul", ft_mul, ft_mul_scalar, mul_scalar_first); }
static int l_div(lua_State *L) { return arith(L, "div", ft_div, div_scalar, ft_rdiv_scalar); }
static int l_pow(lua_State *L) { return arith(L, "pow", ft_pow, ft_pow_scalar, NULL); }

static int l_silu_mul(lua_State *L) {
    ftl_push_tensor(L, ft_silu_mul(ftl_check_tensor(L, 1), ftl_check_tensor(L, 2)), "silu_mul");
    return 1;
}

static int l_neg(lua_State *L) {
    ftl_push_tensor(L, ft_neg(ftl_check_tensor(L, 1)), "neg");
    return 1;
}

typedef ft_tensor *(*unary_fn)(const ft_tensor *);

static int unary(lua_State *L) {
    unary_fn fn = (unary_fn)lua_touserdata(L, lua_upvalueindex(1));
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    ftl_promote_arg(L, 1);   /* a closure of its own: promotes as ftl_register_compute's do */
    ftl_push_tensor(L, fn(ftl_check_tensor(L, 1)), name);
    return 1;
}

static const struct {
    const char *name;
    unary_fn fn;
} unary_ops[] = {
    {"exp", ft_exp},   {"log", ft_log},         {"sqrt", ft_sqrt}, {"abs", ft_abs},
    {"tanh", ft_tanh}, {"sigmoid", ft_sigmoid}, {"relu", ft_relu}, {"silu", ft_silu},
    {NULL, NULL},
};

/* t:gelu([approximate]) and F.gelu(x [, approximate]): approximate is "none" (exact, erf) or
 * "tanh", given as the string itself or as {approximate = ...}. */
static int l_gelu(lua_State *L) {
    static const char *const options[] = {"approximate", NULL};
    ft_tensor *x = ftl_check_tensor(L, 1);
    const char *mode = "none";
    if (lua_type(L, 2) == LUA_TSTRING) {
        mode = lua_tostring(L, 2);
    } else if (lua_istable(L, 2)) {
        ftl_check_options(L, 2, "ft.gelu", options);
        mode = ftl_opt_string_field(L, 2, "approximate", "none");
    } else if (!lua_isnoneornil(L, 2)) {
        return luaL_error(L, "ft.gelu: approximate must be 'none' or 'tanh' (or {approximate = ...}), got %s",
                          luaL_typename(L, 2));
    }
    if (strcmp(mode, "none") != 0 && strcmp(mode, "tanh") != 0)
        return luaL_error(L, "ft.gelu: approximate must be 'none' or 'tanh', got '%s'", mode);
    ftl_push_tensor(L, ft_gelu(x, strcmp(mode, "tanh") == 0), "gelu");
    return 1;
}

static int l_clamp(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    double lo = luaL_optnumber(L, 2, -INFINITY), hi = luaL_optnumber(L, 3, INFINITY);
    ftl_push_tensor(L, ft_clamp(t, lo, hi), "clamp");
    return 1;
}

static int compare(lua_State *L, ft_cmp cmp, const char *op) {
    ft_tensor *a = ftl_check_tensor(L, 1);
    ft_tensor *b = ftl_to_tensor(L, 2);
    ft_tensor *tb = b;
    if (b) {
        ft_retain(b);
    } else {
        /* an int64 tensor compares with 1.5 (or NaN) in float32: no integer holds it */
        double v = luaL_checknumber(L, 2);
        tb = ft_scalar(v, a->dtype == FT_INT64 && ft_is_int64_value(v) ? FT_INT64 : FT_FLOAT32);
        if (!tb) return ftl_error(L, op);
    }
    ft_tensor *r = ft_compare(a, tb, cmp);
    ft_release(tb);
    ftl_push_tensor(L, r, op);
    return 1;
}
static int l_eq(lua_State *L) { return compare(L, FT_EQ, "eq"); }
static int l_ne(lua_State *L) { return compare(L, FT_NE, "ne"); }
static int l_lt(lua_State *L) { return compare(L, FT_LT, "lt"); }
static int l_le(lua_State *L) { return compare(L, FT_LE, "le"); }
static int l_gt(lua_State *L) { return compare(L, FT_GT, "gt"); }
static int l_ge(lua_State *L) { return compare(L, FT_GE, "ge"); }

static int l_masked_fill(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1), *mask = ftl_check_tensor(L, 2);
    ftl_push_tensor(L, ft_masked_fill(t, mask, luaL_checknumber(L, 3)), "masked_fill");
    return 1;
}

/* ft.where(cond, a, b): a and b may be numbers. */
static int l_where(lua_State *L) {
    ft_tensor *cond = ftl_check_tensor(L, 1);
    ft_tensor *a = ftl_check_tensor_like(L, 2), *b = ftl_check_tensor_like(L, 3);
    ft_tensor *r = ft_where(cond, a, b);
    ft_release(a);
    ft_release(b);
    ftl_push_tensor(L, r, "where");
    return 1;
}

/* ---- reductions -------------------------------------------------------------------------- */

/* An optional boolean argument (keepdim): nil/none is false; anything but a boolean is an error. */
static bool opt_flag(lua_State *L, int idx, const char *op, const char *what) {
    if (lua_isnoneornil(L, idx)) return false;
    if (!lua_isboolean(L, idx))
        luaL_error(L, "ft.%s: %s must be a boolean, got %s", op, what, luaL_typename(L, idx));
    return lua_toboolean(L, idx);
}

/* Dims at idx: nil (all), an integer, or a non-empty list of integers. */
static int check_dims(lua_State *L, int idx, int ndim, int *dims, const char *op) {
    if (lua_isnoneornil(L, idx)) return 0;
    if (lua_istable(L, idx)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx), keys = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            keys++;
            lua_pop(L, 1);
        }
        if (n == 0 || keys != n)
            luaL_error(L, "ft.%s: dims must be an integer or a list of integers such as {1, 2}", op);
        if (n > FT_MAX_DIMS) luaL_error(L, "ft.%s: %I dims given, at most %d", op, n, FT_MAX_DIMS);
        for (int i = 0; i < (int)n; i++) {
            lua_rawgeti(L, idx, i + 1);
            if (!lua_isinteger(L, -1))
                luaL_error(L, "ft.%s: dims must be integers, got %s in the list", op, luaL_typename(L, -1));
            dims[i] = ftl_check_dim(L, -1, ndim);
            lua_pop(L, 1);
        }
        return (int)n;
    }
    if (!lua_isinteger(L, idx))
        luaL_error(L, "ft.%s: dims must be an integer or a list of integers, got %s", op,
                   lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : luaL_typename(L, idx));
    dims[0] = ftl_check_dim(L, idx, ndim);
    return 1;
}

/* t:sum([dims [, keepdim]]): over every element, one dim or a list of dims. */
static int l_sum(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int dims[FT_MAX_DIMS];
    int n = check_dims(L, 2, t->ndim, dims, "sum");
    ftl_push_tensor(L, ft_sum(t, dims, n, opt_flag(L, 3, "sum", "keepdim")), "sum");
    return 1;
}

/* t:mean([dims [, keepdim]]): as sum, divided by the number of elements reduced. */
static int l_mean(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int dims[FT_MAX_DIMS];
    int n = check_dims(L, 2, t->ndim, dims, "mean");
    ftl_push_tensor(L, ft_mean(t, dims, n, opt_flag(L, 3, "mean", "keepdim")), "mean");
    return 1;
}

/* 0-based indices from the core -> a private 1-based copy (backward may hold the original). */
static ft_tensor *lua_indices(ft_tensor *core_indices) {
    ft_tensor *copy = ft_clone(core_indices);
    ft_release(core_indices);
    if (copy) ftl_index_from_core(copy);
    return copy;
}

/* t:max() -> 0-dim tensor; t:max(dim, keepdim) -> values, 1-based indices. */
static int l_max(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) {
        ftl_push_tensor(L, ft_max_all(t), "max");
        return 1;
    }
    int d = ftl_check_dim(L, 2, t->ndim);
    ft_tensor *values = NULL, *indices = NULL;
    if (ft_max_dim(t, d, opt_flag(L, 3, "max", "keepdim"), &values, &indices) < 0) return ftl_error(L, "max");
    indices = lua_indices(indices);
    ftl_push_tensor(L, values, "max");
    ftl_push_tensor(L, indices, "max");
    return 2;
}

/* t:min via -max(-t), so it shares max's kernels and gradient. */
static int l_min(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    ft_tensor *neg = ft_neg(t);
    if (!neg) return ftl_error(L, "min");
    if (lua_isnoneornil(L, 2)) {
        ft_tensor *m = ft_max_all(neg);
        ft_release(neg);
        if (!m) return ftl_error(L, "min");
        ftl_push_tensor(L, ft_neg(m), "min");
        ft_release(m);
        return 1;
    }
    int d = ftl_check_dim(L, 2, t->ndim);
    bool keepdim = opt_flag(L, 3, "min", "keepdim");
    ft_tensor *values = NULL, *indices = NULL;
    int rc = ft_max_dim(neg, d, keepdim, &values, &indices);
    ft_release(neg);
    if (rc < 0) return ftl_error(L, "min");
    indices = lua_indices(indices);
    ftl_push_tensor(L, ft_neg(values), "min");
    ft_release(values);
    ftl_push_tensor(L, indices, "min");
    return 2;
}

static int l_argmax(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    ft_tensor *r;
    if (lua_isnoneornil(L, 2)) {
        int64_t n = ft_numel(t);
        ft_tensor *flat = ft_reshape(t, &n, 1);
        if (!flat) return ftl_error(L, "argmax");
        r = ft_argmax(flat, 0, false);
        ft_release(flat);
    } else {
        r = ft_argmax(t, ftl_check_dim(L, 2, t->ndim), opt_flag(L, 3, "argmax", "keepdim"));
    }
    if (!r) return ftl_error(L, "argmax");
    r = lua_indices(r);
    ftl_push_tensor(L, r, "argmax");
    return 1;
}

static int l_softmax(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    ftl_push_tensor(L, ft_softmax(t, ftl_check_dim(L, 2, t->ndim)), "softmax");
    return 1;
}

static int l_log_softmax(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    ftl_push_tensor(L, ft_log_softmax(t, ftl_check_dim(L, 2, t->ndim)), "log_softmax");
    return 1;
}

/* ---- products, joining and indexing -------------------------------------------------------- */

static int l_matmul(lua_State *L) {
    ft_tensor *a = ftl_check_tensor(L, 1), *b = ftl_check_tensor(L, 2);
    ftl_push_tensor(L, ft_matmul(a, b), "matmul");
    return 1;
}

/* Tensors of the list at idx (1), as borrowed pointers in a buffer owned by a userdata pushed
 * on top of the stack: callers read their other arguments before calling this. */
static ft_tensor **check_tensor_list(lua_State *L, int idx, int *n, const char *op) {
    if (!lua_istable(L, idx)) luaL_error(L, "ft.%s: expected a list of tensors, got %s", op, luaL_typename(L, idx));
    lua_Integer len = luaL_len(L, idx);
    if (len == 0) luaL_error(L, "ft.%s: expected a non-empty list of tensors", op);
    if (len > 1 << 20) luaL_error(L, "ft.%s: a list of %I tensors is too long", op, len);
    *n = (int)len;
    ft_tensor **ts = lua_newuserdatauv(L, sizeof(ft_tensor *) * (size_t)*n, 0);
    for (int i = 0; i < *n; i++) {
        lua_geti(L, idx, i + 1);
        ts[i] = ftl_to_tensor(L, -1);
        if (!ts[i]) luaL_error(L, "ft.%s: element %d of the list is a %s, not a tensor", op, i + 1, luaL_typename(L, -1));
        lua_pop(L, 1); /* the list keeps it alive */
    }
    return ts;
}

/* The tensors of a cat must agree in every dim but d (0-based): named here 1-based, as the
 * user wrote them. `stacking` asks for equal shapes (stack). */
static void check_same_sizes(lua_State *L, ft_tensor **ts, int n, int d, bool stacking, const char *op) {
    char a[160], b[160];
    for (int j = 1; j < n; j++) {
        bool ok = ts[j]->ndim == ts[0]->ndim;
        for (int k = 0; ok && k < ts[0]->ndim; k++) ok = (!stacking && k == d) || ts[j]->shape[k] == ts[0]->shape[k];
        if (ok) continue;
        ft_shape_str(ts[0]->shape, ts[0]->ndim, a, sizeof a);
        ft_shape_str(ts[j]->shape, ts[j]->ndim, b, sizeof b);
        if (stacking) luaL_error(L, "ft.%s: expected tensors of equal shape, got %s (tensor 1) and %s (tensor %d)", op, a, b, j + 1);
        luaL_error(L, "ft.%s: sizes must match except in dim %d: %s (tensor 1) and %s (tensor %d)", op, d + 1, a, b, j + 1);
    }
}

/* ft.cat(list [, dim=1]): joins tensors along an existing dim. */
static int l_cat(lua_State *L) {
    lua_settop(L, 2);   /* the list's buffer goes above the arguments */
    int n;
    ft_tensor **ts = check_tensor_list(L, 1, &n, "cat");
    for (int j = 0; j < n; j++)
        if (ts[j]->ndim == 0) return luaL_error(L, "ft.cat: tensor %d of the list is 0-dim and cannot be concatenated", j + 1);
    int d = ftl_opt_dim(L, 2, ts[0]->ndim, 0);
    check_same_sizes(L, ts, n, d, false, "cat");
    ftl_push_tensor(L, ft_cat(ts, n, d), "cat");
    return 1;
}

/* ft.stack(list [, dim=1]): joins equal-shaped tensors along a new dim. */
static int l_stack(lua_State *L) {
    lua_settop(L, 2);
    int n;
    ft_tensor **ts = check_tensor_list(L, 1, &n, "stack");
    int d = ftl_opt_dim(L, 2, ts[0]->ndim + 1, 0);
    check_same_sizes(L, ts, n, d, true, "stack");
    ftl_push_tensor(L, ft_stack(ts, n, d), "stack");
    return 1;
}

/* t:split(size, dim) -> array of views */
static int l_split(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int64_t size = luaL_checkinteger(L, 2);
    int d = ftl_opt_dim(L, 3, t->ndim, 0);
    ft_tensor **parts = NULL;
    int n = 0;
    if (ft_split(t, size, d, &parts, &n) < 0) return ftl_error(L, "split");
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        ftl_push_tensor(L, parts[i], "split");
        lua_rawseti(L, -2, i + 1);
    }
    free(parts);
    return 1;
}

static int l_index_select(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int d = ftl_check_dim(L, 2, t->ndim);
    ftl_check_index_range(L, ftl_check_tensor(L, 3), t->ndim ? t->shape[d] : 1, "index_select", d);
    ft_tensor *idx = ftl_index_to_core(L, ftl_check_tensor(L, 3), "index_select");
    ft_tensor *r = ft_index_select(t, d, idx);
    ft_release(idx);
    ftl_push_tensor(L, r, "index_select");
    return 1;
}

/* t:index_add(dim, index, src): a copy of t with src's slices added at the (1-based) index
 * along dim, repeats accumulating; differentiable in t and src. */
static int l_index_add(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int d = ftl_check_dim(L, 2, t->ndim);
    ftl_check_index_range(L, ftl_check_tensor(L, 3), t->ndim ? t->shape[d] : 1, "index_add", d);
    ft_tensor *src = ftl_check_tensor(L, 4);
    ft_tensor *idx = ftl_index_to_core(L, ftl_check_tensor(L, 3), "index_add");
    ft_tensor *r = ft_index_add(t, d, idx, src);
    ft_release(idx);
    ftl_push_tensor(L, r, "index_add");
    return 1;
}

static int l_gather(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int d = ftl_check_dim(L, 2, t->ndim);
    ftl_check_index_range(L, ftl_check_tensor(L, 3), t->ndim ? t->shape[d] : 1, "gather", d);
    ft_tensor *idx = ftl_index_to_core(L, ftl_check_tensor(L, 3), "gather");
    ft_tensor *r = ft_gather(t, d, idx);
    ft_release(idx);
    ftl_push_tensor(L, r, "gather");
    return 1;
}

/* Computing ops: bfloat16 / float16 / float64 arguments are promoted to float32 first (see
 * ftl_register_compute); results are float32 (int64 where the op keeps integers). */
static const luaL_Reg methods[] = {
    {"add", l_add},         {"sub", l_sub},
    {"mul", l_mul},         {"div", l_div},
    {"pow", l_pow},         {"neg", l_neg},
    {"gelu", l_gelu},       {"clamp", l_clamp},
    {"eq", l_eq},           {"ne", l_ne},
    {"lt", l_lt},           {"le", l_le},
    {"gt", l_gt},           {"ge", l_ge},
    {"masked_fill", l_masked_fill},
    {"sum", l_sum},         {"mean", l_mean},
    {"max", l_max},         {"min", l_min},
    {"argmax", l_argmax},   {"softmax", l_softmax},
    {"log_softmax", l_log_softmax},
    {"matmul", l_matmul},   {"mm", l_matmul},
    {"index_add", l_index_add},
    {NULL, NULL},
};

/* Shape ops and index reads keep the dtype. */
static const luaL_Reg shape_methods[] = {
    {"split", l_split}, {"index_select", l_index_select}, {"gather", l_gather}, {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__add", l_add}, {"__sub", l_sub}, {"__mul", l_mul}, {"__div", l_div},
    {"__pow", l_pow}, {"__unm", l_neg}, {NULL, NULL},
};

static const luaL_Reg functions[] = {
    {"where", l_where}, {"matmul", l_matmul}, {"gelu", l_gelu}, {"silu_mul", l_silu_mul}, {NULL, NULL},
};

static const luaL_Reg shape_functions[] = {
    {"cat", l_cat}, {"stack", l_stack}, {NULL, NULL},
};

void ftl_open_ops(lua_State *L) {
    int module = lua_gettop(L);
    ftl_register_compute(L, functions);
    luaL_setfuncs(L, shape_functions, 0);
    luaL_getmetatable(L, FTL_TENSOR_MT);
    ftl_register_compute(L, metamethods);
    lua_getfield(L, module, "Tensor");
    int m = lua_gettop(L);
    ftl_register_compute(L, methods);
    luaL_setfuncs(L, shape_methods, 0);
    for (int i = 0; unary_ops[i].name; i++) {
        lua_pushlightuserdata(L, (void *)unary_ops[i].fn);
        lua_pushstring(L, unary_ops[i].name);
        lua_pushcclosure(L, unary, 2);
        lua_pushvalue(L, -1);
        lua_setfield(L, m, unary_ops[i].name);
        lua_setfield(L, module, unary_ops[i].name); /* also ft.exp(t), ... */
    }
    lua_settop(L, module);
}
