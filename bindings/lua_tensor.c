/* ft tensors in Lua: inspection, views, conversions, in-place changes, indexing and the
 * metatable (ft.Tensor holds the methods). Creation is in lua_tensor_create.c, the runtime
 * (seed, threads, memory) in lua_tensor_runtime.c. Dims, positions and index values are
 * 1-based here (see ftl.h). */
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "ft/runtime.h"
#include "ftl.h"

/* ---- inspection ------------------------------------------------------------------------ */

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, luaL_testudata(L, 1, FTL_TENSOR_MT) != NULL);
    return 1;
}

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
    int ndim = ftl_check_shape(L, 2, shape, "view");
    ftl_push_tensor(L, ft_view(t, shape, ndim), "view");
    return 1;
}

static int l_reshape(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    int64_t shape[FT_MAX_DIMS];
    int ndim = ftl_check_shape(L, 2, shape, "reshape");
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
    int n = ftl_check_shape(L, 2, raw, "permute");
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
        ndim = ftl_check_shape(L, 2, shape, "expand");
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

/* t converted to dtype (differentiable between float dtypes); t itself when it has it. */
static int convert(lua_State *L, ft_dtype dt, const char *op) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (t->dtype == dt) {
        lua_settop(L, 1);
        return 1;
    }
    ftl_push_tensor(L, ft_to_dtype(t, dt), op);
    return 1;
}

static int l_to(lua_State *L) {
    ftl_check_tensor(L, 1);
    return convert(L, ftl_check_dtype(L, luaL_checkstring(L, 2)), "to");
}

static int l_float(lua_State *L) { return convert(L, FT_FLOAT32, "float"); }
static int l_long(lua_State *L) { return convert(L, FT_INT64, "long"); }

/* t:element_size(): bytes of one element; t:nbytes(): bytes of its elements (numel * that). */
static int l_element_size(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)ft_dtype_size(ftl_check_tensor(L, 1)->dtype));
    return 1;
}

static int l_nbytes(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    lua_pushinteger(L, (lua_Integer)(ft_numel(t) * (int64_t)ft_dtype_size(t->dtype)));
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

/* Random fills draw into t itself when it is contiguous float32 (a large weight needs no
 * same-size temporary), else into a float32 temporary copied in; the draws are the same. */
static int l_uniform_(lua_State *L) {
    ft_tensor *t = check_inplace(L, "uniform_");
    double lo = luaL_optnumber(L, 2, 0), hi = luaL_optnumber(L, 3, 1);
    bool direct = t->dtype == FT_FLOAT32 && ft_is_contiguous(t);
    ft_tensor *r = direct ? t : ft_empty(t->shape, t->ndim, FT_FLOAT32);
    if (!r) return ftl_error(L, "uniform_");
    float *p = ft_f32(r);
    for (int64_t i = 0, n = ft_numel(r); i < n; i++) {
        float u = (float)ft_rng_uniform();   /* rounded first, as ft_rand's draws */
        p[i] = (float)(lo + (hi - lo) * u);
    }
    if (!direct) {
        ft_copy_(t, r);
        ft_release(r);
    }
    lua_settop(L, 1);
    return 1;
}

static int l_normal_(lua_State *L) {
    ft_tensor *t = check_inplace(L, "normal_");
    double mean = luaL_optnumber(L, 2, 0), std = luaL_optnumber(L, 3, 1);
    bool direct = t->dtype == FT_FLOAT32 && ft_is_contiguous(t);
    ft_tensor *r = direct ? t : ft_empty(t->shape, t->ndim, FT_FLOAT32);
    if (!r) return ftl_error(L, "normal_");
    float *p = ft_f32(r);
    int64_t n = ft_numel(r);
    ft_rng_fill_normal(p, n);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(mean + std * p[i]);
    if (!direct) {
        ft_copy_(t, r);
        ft_release(r);
    }
    lua_settop(L, 1);
    return 1;
}

/* t:add_(u [, alpha]) and t:mul_(number or tensor): t = t + alpha * u, t = t * u. A bfloat16 /
 * float16 / float64 t computes in float32 and is rounded back into its own dtype. */
static int inplace_binary(lua_State *L, const char *op, int is_mul) {
    ft_tensor *t = check_inplace(L, op);
    bool mode = ft_set_grad_enabled(false);
    ft_tensor *r = NULL, *tf = ft_promote_f32(t);
    if (!tf) {
        /* out of memory: reported below */
    } else if (lua_isnumber(L, 2)) {
        double s = lua_tonumber(L, 2);
        r = is_mul ? ft_mul_scalar(tf, s) : ft_add_scalar(tf, s);
    } else {
        ft_tensor *u = ftl_to_tensor(L, 2);
        if (!u) {
            ft_release(tf);
            ft_set_grad_enabled(mode);
            ftl_check_tensor(L, 2);   /* raises */
        }
        double alpha = luaL_optnumber(L, 3, 1);
        ft_tensor *uf = ft_promote_f32(u);
        ft_tensor *su = !uf ? NULL : (alpha == 1 || is_mul) ? ft_retain(uf) : ft_mul_scalar(uf, alpha);
        r = su ? (is_mul ? ft_mul(tf, su) : ft_add(tf, su)) : NULL;
        ft_release(uf);
        ft_release(su);
    }
    ft_release(tf);
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

/* t:set_(src): t shares src's storage and dtype from now on (no copy). Same shape; t a leaf. */
static int l_set_(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1), *src = ftl_check_tensor(L, 2);
    if (ft_set_(t, src) < 0) return ftl_error(L, "set_");
    lua_settop(L, 1);
    return 1;
}

static int l_requires_grad_(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (ft_set_requires_grad(t, lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2)) < 0)
        return ftl_error(L, "requires_grad_");
    lua_settop(L, 1);
    return 1;
}

/* ---- metatable ------------------------------------------------------------------------------ */

static int l_gc(lua_State *L) {
    ftl_close_tensor(L, 1);
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
            /* a gradient has its tensor's dtype (a bfloat16 leaf's is bfloat16) */
            ft_dtype gd = ft_dtype_is_float(t->dtype) ? t->dtype : FT_FLOAT32;
            t->grad = !g ? NULL : g->dtype == gd ? ft_clone(g) : ft_to_dtype(g, gd);
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
    {"element_size", l_element_size},
    {"nbytes", l_nbytes},
    {"set_", l_set_},
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
    {"is_tensor", l_is_tensor},
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
