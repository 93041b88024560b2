/* Autograd from Lua: t:backward, ft.no_grad and the grad mode. */
#include "ft/autograd.h"
#include "ftl.h"

/* t:backward([grad] [, {retain_graph=false}]): gradients of t into the leaves' .grad; grad
 * (t's shape) may be left out for a one-element t. */
static int l_backward(lua_State *L) {
    static const char *const options[] = {"retain_graph", NULL};
    ft_tensor *t = ftl_check_tensor(L, 1);
    ft_tensor *grad = ftl_to_tensor(L, 2);
    int opts = grad ? 3 : 2;
    if (!grad && !lua_isnoneornil(L, 2) && !lua_istable(L, 2))
        return luaL_argerror(L, 2, "gradient tensor or options table expected");
    if (!grad && lua_isnil(L, 2)) opts = 3;
    ftl_check_options(L, opts, "ft.backward", options);
    bool retain = false;
    if (lua_istable(L, opts) && lua_getfield(L, opts, "retain_graph") != LUA_TNIL) {
        if (!lua_isboolean(L, -1))
            return luaL_error(L, "ft.backward: option 'retain_graph' must be a boolean, got %s", luaL_typename(L, -1));
        retain = lua_toboolean(L, -1);
    }
    if (ft_backward(t, grad, retain) < 0) return ftl_error(L, "backward");
    return 0;
}

/* Runs fn(...) with grad mode set to `mode`, restoring the previous mode even on error. */
static int run_with_mode(lua_State *L, bool mode) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    bool previous = ft_set_grad_enabled(mode);
    int status = lua_pcall(L, nargs, LUA_MULTRET, 0);
    ft_set_grad_enabled(previous);
    if (status != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

static int l_no_grad(lua_State *L) { return run_with_mode(L, false); }
static int l_enable_grad(lua_State *L) { return run_with_mode(L, true); }

static int l_is_grad_enabled(lua_State *L) {
    lua_pushboolean(L, ft_grad_enabled());
    return 1;
}

/* ft.set_grad_enabled(bool) -> previous mode */
static int l_set_grad_enabled(lua_State *L) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    lua_pushboolean(L, ft_set_grad_enabled(lua_toboolean(L, 1)));
    return 1;
}

static const luaL_Reg functions[] = {
    {"no_grad", l_no_grad},
    {"enable_grad", l_enable_grad},
    {"is_grad_enabled", l_is_grad_enabled},
    {"set_grad_enabled", l_set_grad_enabled},
    {"backward", l_backward},
    {NULL, NULL},
};

void ftl_open_autograd(lua_State *L) {
    luaL_setfuncs(L, functions, 0);
    /* t:backward(...) as a method too */
    lua_getfield(L, -1, "Tensor");
    lua_pushcfunction(L, l_backward);
    lua_setfield(L, -2, "backward");
    lua_pop(L, 1);
}
