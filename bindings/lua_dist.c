/* ft._dist: the process world, collectives on tensors, the differentiable sum across ranks and
 * the gradient reducer. ft.dist (bindings/lua/ft/dist.lua) builds on these; they are internal
 * (ranks are 0-based, as MPI and torch.distributed number them). */
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/dist.h"
#include "ft/reducer.h"
#include "ftl.h"

#define REDUCER_MT "ft.dist.Reducer"

static ft_reduce_op check_op(lua_State *L, int idx) {
    static const char *const names[] = {"sum", "avg", "max", "min", NULL};
    static const ft_reduce_op ops[] = {FT_REDUCE_SUM, FT_REDUCE_AVG, FT_REDUCE_MAX, FT_REDUCE_MIN};
    return ops[luaL_checkoption(L, idx, "sum", names)];
}

static int l_init(lua_State *L) {
    if (ft_dist_init() < 0) return luaL_error(L, "%s", ft_last_error());
    return 0;
}

static int l_initialized(lua_State *L) {
    lua_pushboolean(L, ft_dist_initialized());
    return 1;
}

static int l_built_with_mpi(lua_State *L) {
    lua_pushboolean(L, ft_dist_built_with_mpi());
    return 1;
}

static int l_rank(lua_State *L) {
    lua_pushinteger(L, ft_dist_rank());
    return 1;
}

static int l_world_size(lua_State *L) {
    lua_pushinteger(L, ft_dist_world_size());
    return 1;
}

static int l_local_rank(lua_State *L) {
    lua_pushinteger(L, ft_dist_local_rank());
    return 1;
}

static int l_launcher(lua_State *L) {
    lua_pushstring(L, ft_dist_launcher());
    return 1;
}

static int l_barrier(lua_State *L) {
    if (ft_dist_barrier() < 0) return luaL_error(L, "%s", ft_last_error());
    return 0;
}

/* all_reduce(t, op): in place; returns t. */
static int l_all_reduce(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (ft_dist_all_reduce(t, check_op(L, 2)) < 0) return luaL_error(L, "%s", ft_last_error());
    lua_settop(L, 1);
    return 1;
}

/* broadcast(t, root): in place; returns t. */
static int l_broadcast(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (ft_dist_broadcast(t, (int)luaL_checkinteger(L, 2)) < 0) return luaL_error(L, "%s", ft_last_error());
    lua_settop(L, 1);
    return 1;
}

static int l_all_gather(lua_State *L) {
    ft_tensor *out = ft_dist_all_gather(ftl_check_tensor(L, 1));
    if (!out) return luaL_error(L, "%s", ft_last_error());
    ftl_push_tensor(L, out, "dist.all_gather");
    return 1;
}

static int l_reduce_scatter(lua_State *L) {
    ft_tensor *out = ft_dist_reduce_scatter(ftl_check_tensor(L, 1), check_op(L, 2));
    if (!out) return luaL_error(L, "%s", ft_last_error());
    ftl_push_tensor(L, out, "dist.reduce_scatter");
    return 1;
}

/* abort(code): ends every rank of the job. */
static int l_abort(lua_State *L) { ft_dist_abort((int)luaL_optinteger(L, 1, 1)); }

/* ---- the sum across ranks, differentiable ----------------------------------------------- */

/* Every rank's output is the sum of every rank's input, so the gradient of a rank's input is
 * the sum of the gradients every rank's output received. */
static int sum_across_backward(void *user, int n_outputs, const ft_tensor *const *grad_outputs, int n_inputs,
                               ft_tensor **grad_inputs) {
    ft_tensor *g = ft_clone(grad_outputs[0]);
    if (!g || ft_dist_all_reduce(g, FT_REDUCE_SUM) < 0) {
        ft_release(g);
        return -1;
    }
    grad_inputs[0] = g;
    return 0;
}

/* sum_across(t) -> a new float32 tensor: the sum of t over the ranks, with that gradient. */
static int l_sum_across(lua_State *L) {
    ft_tensor *t = ftl_check_tensor(L, 1);
    if (t->dtype != FT_FLOAT32) return luaL_error(L, "ft.dist.sum_across: expected a float32 tensor, got %s",
                                                  ft_dtype_name(t->dtype));
    ft_tensor *values = ft_detach(t);
    ft_tensor *sum = values ? ft_clone(values) : NULL; /* a copy off the graph */
    ft_release(values);
    if (!sum || ft_dist_all_reduce(sum, FT_REDUCE_SUM) < 0) {
        ft_release(sum);
        return luaL_error(L, "ft.dist.sum_across: %s", ft_last_error());
    }
    if (!ft_grad_needed1(t)) {
        ftl_push_tensor(L, sum, "dist.sum_across");
        return 1;
    }
    ft_tensor *attached = NULL;
    int rc = ft_function_node("sum_across", sum_across_backward, NULL, (ft_function_owner){NULL, NULL}, 1, &t, 1,
                              &sum, &attached);
    ft_release(sum);
    if (rc < 0) return luaL_error(L, "ft.dist.sum_across: %s", ft_last_error());
    ftl_push_tensor(L, attached, "dist.sum_across");
    return 1;
}

/* ---- the gradient reducer --------------------------------------------------------------- */

static ft_reducer **check_reducer(lua_State *L, int idx) {
    ft_reducer **r = luaL_checkudata(L, idx, REDUCER_MT);
    if (!*r) luaL_error(L, "ft.dist: the gradient reducer was closed");
    return r;
}

/* reducer(params, names, bucket_bytes): params and names are arrays of the same length. The
 * reducer keeps its own references to the parameters. */
static int l_reducer(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer bucket_bytes = luaL_checkinteger(L, 3);
    int n = (int)luaL_len(L, 1);
    if ((int)luaL_len(L, 2) != n) return luaL_error(L, "ft.dist: %d parameters but %d names", n, (int)luaL_len(L, 2));
    ft_tensor **params = lua_newuserdatauv(L, sizeof *params * (size_t)(n + 1), 0);
    const char **names = lua_newuserdatauv(L, sizeof *names * (size_t)(n + 1), 0);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        params[i] = ftl_check_tensor(L, -1);
        lua_pop(L, 1);
        lua_geti(L, 2, i + 1);
        names[i] = luaL_checkstring(L, -1);
        lua_pop(L, 1); /* the names table keeps the string */
    }
    ft_reducer **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = NULL;
    luaL_setmetatable(L, REDUCER_MT);
    if (!(*ud = ft_reducer_new(n, params, names, bucket_bytes))) return luaL_error(L, "%s", ft_last_error());
    return 1;
}

static int l_reducer_gc(lua_State *L) {
    ft_reducer **r = luaL_checkudata(L, 1, REDUCER_MT);
    ft_reducer_free(*r);
    *r = NULL;
    return 0;
}

static int l_reducer_arm(lua_State *L) {
    if (ft_reducer_arm(*check_reducer(L, 1)) < 0) return luaL_error(L, "%s", ft_last_error());
    return 0;
}

static int l_reducer_disarm(lua_State *L) {
    ft_reducer_disarm(*check_reducer(L, 1));
    return 0;
}

static int l_reducer_set_overlap(lua_State *L) {
    luaL_checktype(L, 2, LUA_TBOOLEAN);
    ft_reducer_set_overlap(*check_reducer(L, 1), lua_toboolean(L, 2));
    return 0;
}

static int l_reducer_armed(lua_State *L) {
    lua_pushboolean(L, ft_reducer_armed(*check_reducer(L, 1)));
    return 1;
}

static void set_number(lua_State *L, const char *key, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

/* r:buckets() -> {{params = {1-based parameter positions}, bytes =, started =, done =}, ...}
 * with the last reduction's times (seconds since the reducer was armed). */
static int l_reducer_buckets(lua_State *L) {
    ft_reducer *r = *check_reducer(L, 1);
    int nb = ft_reducer_n_buckets(r);
    lua_createtable(L, nb, 0);
    for (int b = 0; b < nb; b++) {
        ft_bucket_info info = ft_reducer_bucket(r, b);
        lua_createtable(L, 0, 4);
        lua_createtable(L, info.count, 0);
        for (int k = 0; k < info.count; k++) {
            lua_pushinteger(L, ft_reducer_param_at(r, info.first + k) + 1);
            lua_rawseti(L, -2, k + 1);
        }
        lua_setfield(L, -2, "params");
        lua_pushinteger(L, info.bytes);
        lua_setfield(L, -2, "bytes");
        set_number(L, "started", info.started);
        set_number(L, "done", info.done);
        lua_rawseti(L, -2, b + 1);
    }
    return 1;
}

/* r:times() -> {backward_start =, first_gradient =, backward_end =, reduced =} of the last
 * reduction. */
static int l_reducer_times(lua_State *L) {
    ft_reducer_times t = ft_reducer_times_of(*check_reducer(L, 1));
    lua_createtable(L, 0, 4);
    set_number(L, "backward_start", t.backward_start);
    set_number(L, "first_gradient", t.first_gradient);
    set_number(L, "backward_end", t.backward_end);
    set_number(L, "reduced", t.reduced);
    return 1;
}

static const luaL_Reg reducer_methods[] = {
    {"arm", l_reducer_arm},         {"disarm", l_reducer_disarm}, {"armed", l_reducer_armed},
    {"buckets", l_reducer_buckets}, {"times", l_reducer_times},   {"set_overlap", l_reducer_set_overlap},
    {NULL, NULL},
};

static const luaL_Reg functions[] = {
    {"init", l_init},
    {"initialized", l_initialized},
    {"built_with_mpi", l_built_with_mpi},
    {"rank", l_rank},
    {"world_size", l_world_size},
    {"local_rank", l_local_rank},
    {"launcher", l_launcher},
    {"barrier", l_barrier},
    {"all_reduce", l_all_reduce},
    {"broadcast", l_broadcast},
    {"all_gather", l_all_gather},
    {"reduce_scatter", l_reduce_scatter},
    {"abort", l_abort},
    {"sum_across", l_sum_across},
    {"reducer", l_reducer},
    {NULL, NULL},
};

void ftl_open_dist(lua_State *L) {
    luaL_newmetatable(L, REDUCER_MT);
    lua_pushcfunction(L, l_reducer_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newlib(L, reducer_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "_dist");
}
