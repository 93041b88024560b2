/* ft._optim: the fused optimizer kernels behind bindings/lua/ft/optim.lua.
 *
 *   _optim.sgd_step(params, states, group)            states[i].momentum_buffer
 *   _optim.adam_step(params, states, group, decoupled) states[i].step/exp_avg/...
 *   _optim.clip_grad_norm(params, max_norm, norm_type) --> total norm
 *   _optim.zero_grad(params, set_to_none)
 *   _optim.param_problem(x)   --> nil, or why x cannot be optimized
 *   _optim.id(t)              --> light userdata naming the tensor (duplicate checks)
 *   _optim.is_tensor(x)       --> boolean
 *   _optim.copy(t)            --> a fresh contiguous float32 copy outside autograd
 *
 * params is an array of tensors; states an array of tables, one per parameter, that
 * the step reads and fills (state tensors created on a parameter's first step). group
 * is a param group table: lr, momentum, betas = {b1, b2}, ... */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ft/optim.h"
#include "ftl.h"

/* ---- argument helpers ----------------------------------------------------------- */

/* group[key] as a number; def when absent (def NaN: required). */
static double group_number(lua_State *L, int idx, const char *key, double def) {
    lua_getfield(L, idx, key);
    double v = def;
    if (lua_isnil(L, -1)) {
        if (isnan(def)) luaL_error(L, "ft.optim: param group has no '%s'", key);
    } else if (lua_isnumber(L, -1)) {
        v = lua_tonumber(L, -1);
    } else {
        luaL_error(L, "ft.optim: param group field '%s' must be a number, got %s", key,
                   luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return v;
}

/* group[key] as a boolean; false when absent. */
static bool group_bool(lua_State *L, int idx, const char *key) {
    int type = lua_getfield(L, idx, key);
    if (type != LUA_TNIL && type != LUA_TBOOLEAN)
        luaL_error(L, "ft.optim: param group field '%s' must be a boolean, got %s", key, luaL_typename(L, -1));
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* group[key] as a finite number >= 0 (lr, momentum, eps, weight_decay ...). */
static double group_nonneg(lua_State *L, int idx, const char *key, double def) {
    double v = group_number(L, idx, key, def);
    if (!(v >= 0 && v < HUGE_VAL)) {
        char buf[160];   /* lua_pushfstring has no %g */
        snprintf(buf, sizeof buf, "ft.optim: param group field '%s' must be a finite number >= 0, got %g", key, v);
        luaL_error(L, "%s", buf);
    }
    return v;
}

/* Pushes why a parameter of dtype other than float32 cannot be optimized: its shape and dtype,
 * and what to do instead (frozen bases stay in their storage dtype; what trains is float32). */
static void push_dtype_problem(lua_State *L, const ft_tensor *t) {
    char shape[128];
    lua_pushfstring(L, "(shape %s) has dtype %s; optimizers update float32 parameters only: train float32 "
                       "parameters (adapters are float32) or convert it with :to(\"float32\")",
                    ft_shape_str(t->shape, t->ndim, shape, sizeof shape), ft_dtype_name(t->dtype));
}

/* Reads the array of tensors at idx into a scratch array (kept alive on the stack as
 * a userdata until the C function returns) and checks each like the core does, but
 * naming positions 1-based. skip_frozen leaves out tensors of a storage dtype that have no
 * gradient (the frozen bfloat16 base of an adapted model, in clip_grad_norm(model:parameters())
 * and zero_grad), which have nothing to clip or zero. */
static ft_tensor **check_params_of(lua_State *L, int idx, int *n_out, bool skip_frozen) {
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer n = luaL_len(L, idx);
    if (n > INT32_MAX / 2) luaL_error(L, "ft.optim: too many parameters (%I)", n);
    ft_tensor **ps = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *ps, 0);
    char a[128], b[128];
    int kept = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        ft_tensor *p = ftl_to_tensor(L, -1);
        if (!p) luaL_error(L, "ft.optim: params[%I] is not a tensor (got %s)", i, luaL_typename(L, -1));
        lua_pop(L, 1);  /* the table keeps the userdata alive */
        if (skip_frozen && p->dtype != FT_FLOAT32 && !p->grad) continue;
        if (p->dtype != FT_FLOAT32) {
            lua_pushfstring(L, "ft.optim: params[%I] ", i);
            push_dtype_problem(L, p);
            lua_concat(L, 2);
            lua_error(L);
        }
        if (!ft_is_contiguous(p)) luaL_error(L, "ft.optim: params[%I] must be a contiguous float32 tensor", i);
        const ft_tensor *g = p->grad;
        if (g && (g->dtype != FT_FLOAT32 || !ft_same_shape(p, g)))
            luaL_error(L, "ft.optim: params[%I] has shape %s but its grad is %s %s", i,
                       ft_shape_str(p->shape, p->ndim, a, sizeof a), ft_dtype_name(g->dtype),
                       ft_shape_str(g->shape, g->ndim, b, sizeof b));
        ps[kept++] = p;
    }
    *n_out = kept;
    return ps;
}

static ft_tensor **check_params(lua_State *L, int idx, int *n_out) { return check_params_of(L, idx, n_out, false); }

/* states[i][key] as a tensor (borrowed) or NULL when absent. */
static ft_tensor *state_tensor(lua_State *L, int states, int i, const char *key) {
    lua_geti(L, states, i + 1);
    if (!lua_istable(L, -1)) luaL_error(L, "ft.optim: state %d is not a table", i + 1);
    lua_getfield(L, -1, key);
    ft_tensor *t = NULL;
    if (!lua_isnil(L, -1)) {
        t = ftl_to_tensor(L, -1);
        if (!t) luaL_error(L, "ft.optim: state %d field '%s' is not a tensor", i + 1, key);
    }
    lua_pop(L, 2);  /* the state table keeps the userdata alive */
    return t;
}

/* Stores a tensor created by the step into states[i][key], taking over the reference. */
static void set_state_tensor(lua_State *L, int states, int i, const char *key, ft_tensor *t) {
    lua_geti(L, states, i + 1);
    ftl_push_tensor(L, t, "optim");
    lua_setfield(L, -2, key);
    lua_pop(L, 1);
}

/* ---- steps ------------------------------------------------------------------------ */

static int l_sgd_step(lua_State *L) {
    int n;
    ft_tensor **ps = check_params(L, 1, &n);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    ft_sgd_opts o = {
        .lr = group_nonneg(L, 3, "lr", NAN),
        .momentum = group_nonneg(L, 3, "momentum", 0.0),
        .dampening = group_nonneg(L, 3, "dampening", 0.0),
        .weight_decay = group_nonneg(L, 3, "weight_decay", 0.0),
        .nesterov = group_bool(L, 3, "nesterov"),
        .maximize = group_bool(L, 3, "maximize"),
    };
    ft_tensor **bufs = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *bufs, 0);
    for (int i = 0; i < n; i++) bufs[i] = state_tensor(L, 2, i, "momentum_buffer");

    ft_tensor **before = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *before, 0);
    memcpy(before, bufs, (size_t)n * sizeof *bufs);
    int rc = ft_sgd_step(ps, bufs, n, &o);
    /* hand new buffers to their state tables, even after a failure (no leak) */
    for (int i = 0; i < n; i++)
        if (bufs[i] != before[i]) set_state_tensor(L, 2, i, "momentum_buffer", bufs[i]);
    if (rc < 0) return ftl_error(L, "optim.SGD");
    return 0;
}

static int l_adam_step(lua_State *L) {
    int n;
    ft_tensor **ps = check_params(L, 1, &n);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    ft_adam_opts o = {
        .lr = group_nonneg(L, 3, "lr", NAN),
        .eps = group_nonneg(L, 3, "eps", 1e-8),
        .weight_decay = group_nonneg(L, 3, "weight_decay", 0.0),
        .amsgrad = group_bool(L, 3, "amsgrad"),
        .maximize = group_bool(L, 3, "maximize"),
        .decoupled = lua_toboolean(L, 4),
    };
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    if (lua_getfield(L, 3, "betas") != LUA_TNIL) {
        if (!lua_istable(L, -1) || lua_geti(L, -1, 1) != LUA_TNUMBER || lua_geti(L, -2, 2) != LUA_TNUMBER)
            return luaL_error(L, "ft.optim: param group field 'betas' must be {beta1, beta2}");
        o.beta1 = lua_tonumber(L, -2);
        o.beta2 = lua_tonumber(L, -1);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);

    ft_adam_state *st = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *st, 0);
    ft_adam_state *before = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *before, 0);
    for (int i = 0; i < n; i++) {
        st[i].exp_avg = state_tensor(L, 2, i, "exp_avg");
        st[i].exp_avg_sq = state_tensor(L, 2, i, "exp_avg_sq");
        st[i].max_exp_avg_sq = state_tensor(L, 2, i, "max_exp_avg_sq");
        lua_geti(L, 2, i + 1);
        lua_getfield(L, -1, "step");
        int isint;
        lua_Integer step = lua_tointegerx(L, -1, &isint);
        if (!isint && !lua_isnil(L, -1))
            return luaL_error(L, "ft.optim: state %d field 'step' must be an integer", i + 1);
        st[i].step = isint ? (int64_t)step : 0;
        lua_pop(L, 2);
    }
    memcpy(before, st, (size_t)n * sizeof *st);
    const char *name = o.decoupled ? "optim.AdamW" : "optim.Adam";
    int rc = ft_adam_step(ps, st, n, &o);
    for (int i = 0; i < n; i++) {
        if (st[i].exp_avg != before[i].exp_avg) set_state_tensor(L, 2, i, "exp_avg", st[i].exp_avg);
        if (st[i].exp_avg_sq != before[i].exp_avg_sq)
            set_state_tensor(L, 2, i, "exp_avg_sq", st[i].exp_avg_sq);
        if (st[i].max_exp_avg_sq != before[i].max_exp_avg_sq)
            set_state_tensor(L, 2, i, "max_exp_avg_sq", st[i].max_exp_avg_sq);
        if (st[i].step != before[i].step) {
            lua_geti(L, 2, i + 1);
            lua_pushinteger(L, (lua_Integer)st[i].step);
            lua_setfield(L, -2, "step");
            lua_pop(L, 1);
        }
    }
    if (rc < 0) return ftl_error(L, name);
    return 0;
}

/* ---- clipping, zero_grad, checks ---------------------------------------------------- */

static int l_clip_grad_norm(lua_State *L) {
    int n;
    ft_tensor **ps = check_params_of(L, 1, &n, true);
    double max_norm = luaL_checknumber(L, 2);
    double norm_type = 2.0;
    if (lua_type(L, 3) == LUA_TSTRING) {
        const char *s = lua_tostring(L, 3);
        if (strcmp(s, "inf") != 0)
            return luaL_error(L, "ft.optim.clip_grad_norm: norm_type must be a number or \"inf\", got \"%s\"", s);
        norm_type = INFINITY;
    } else {
        norm_type = luaL_optnumber(L, 3, 2.0);
    }
    double total = 0.0;
    if (ft_clip_grad_norm(ps, n, max_norm, norm_type, &total) < 0)
        return ftl_error(L, "optim.clip_grad_norm");
    lua_pushnumber(L, total);
    return 1;
}

static int l_zero_grad(lua_State *L) {
    int n;
    ft_tensor **ps = check_params_of(L, 1, &n, true);
    bool set_to_none = lua_isnone(L, 2) || lua_toboolean(L, 2);
    ft_zero_grad(ps, n, set_to_none);
    return 0;
}

/* nil when x can be optimized, else a phrase saying why not. */
static int l_param_problem(lua_State *L) {
    ft_tensor *t = ftl_to_tensor(L, 1);
    if (!t)
        lua_pushfstring(L, "is not a tensor (got %s)", luaL_typename(L, 1));
    else if (t->dtype != FT_FLOAT32)
        push_dtype_problem(L, t);
    else if (t->grad_fn)
        lua_pushliteral(L, "is not a leaf tensor (it was computed by an op); optimize the "
                           "tensor it was computed from, or detach it");
    else if (!ft_is_contiguous(t))
        lua_pushliteral(L, "is not contiguous; pass a contiguous tensor");
    else
        lua_pushnil(L);
    return 1;
}

static int l_id(lua_State *L) {
    lua_pushlightuserdata(L, ftl_check_tensor(L, 1));
    return 1;
}

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, ftl_to_tensor(L, 1) != NULL);
    return 1;
}

/* State tensors loaded from a state dict are copied, so the optimizer never shares
 * storage with the table it was given (as torch deep-copies). */
static int l_copy(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    ft_tensor *c = ft_empty(t->shape, t->ndim, FT_FLOAT32);
    if (c && ft_copy_(c, t) < 0) {
        ft_release(c);
        c = NULL;
    }
    ftl_push_tensor(L, c, "optim.load_state_dict");
    return 1;
}

void ftl_open_optim(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"sgd_step", l_sgd_step},
        {"adam_step", l_adam_step},
        {"clip_grad_norm", l_clip_grad_norm},
        {"zero_grad", l_zero_grad},
        {"param_problem", l_param_problem},
        {"id", l_id},
        {"is_tensor", l_is_tensor},
        {"copy", l_copy},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "_optim");
}
