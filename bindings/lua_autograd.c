/* Autograd from Lua: t:backward, ft.no_grad, the grad mode and ft.autograd.checkpoint. */
#include <stdlib.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/runtime.h"
#include "ftl.h"

/* The Lua thread running the backward in progress on this OS thread (set by t:backward for
 * its duration, NULL outside one): graph nodes whose backward is Lua code (checkpoints)
 * run it there. A backward started from C outside Lua has none, and such nodes then fail. */
static _Thread_local lua_State *backward_thread = NULL;

/* How many checkpoint recomputations are running fn on this OS thread (0 outside one): layers
 * with side effects in forward (BatchNorm's running statistics) skip them when it is > 0, so a
 * checkpointed forward has them once. */
static _Thread_local int recomputing = 0;

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
    lua_State *previous = backward_thread;
    backward_thread = L;
    int rc = ft_backward(t, grad, retain);
    backward_thread = previous;
    if (rc < 0) return ftl_error(L, "backward");
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

/* ---- checkpoint ------------------------------------------------------------------- */

/* What a checkpoint node keeps for its backward. */
typedef struct {
    lua_State *anchor; /* a thread of this Lua state that never runs, so its stack is free for
                        * the registry calls of release and free, whichever thread is running */
    int ref;           /* registry: {fn, args...}, tensor args as detached aliases; LUA_NOREF once released */
    int nargs;
    int n_outputs;     /* float32 tensors among fn's results: those attached to the graph */
    uint64_t rng[4];   /* the generator as the forward found it */
} checkpoint_state;

static void checkpoint_release(void *user) {
    checkpoint_state *s = user;
    if (s->ref != LUA_NOREF) luaL_unref(s->anchor, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
}

static void checkpoint_free(void *user) {
    checkpoint_release(user);
    free(user);
}

/* The anchor thread of this Lua state (created on first use, kept in the registry). */
static lua_State *anchor_thread(lua_State *L) {
    lua_State *anchor;
    if (lua_getfield(L, LUA_REGISTRYINDEX, "ft.autograd.anchor") == LUA_TTHREAD) {
        anchor = lua_tothread(L, -1);
    } else {
        lua_pop(L, 1);
        anchor = lua_newthread(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "ft.autograd.anchor");
    }
    lua_pop(L, 1);
    return anchor;
}

/* The float32 tensor at idx, or NULL for anything else (results that stay off the graph). */
static ft_tensor *float_tensor(lua_State *L, int idx) {
    ft_tensor *t = ftl_to_tensor(L, idx);
    return t && t->dtype == FT_FLOAT32 ? t : NULL;
}

/* What the engine hands a checkpoint's backward, for the protected recomputation. */
typedef struct {
    checkpoint_state *state;
    int n_outputs;
    const ft_tensor *const *grad_outputs;
    int n_inputs;
    ft_tensor **grad_inputs;
    int *seeded;       /* recomputed outputs that require grad: their positions */
} recompute_call;

/* The seed of the inner backward: hands each recomputed output its incoming gradient. */
static int seed_backward(void *user, int n_outputs, const ft_tensor *const *grad_outputs, int n_inputs,
                         ft_tensor **grad_inputs) {
    (void)n_outputs, (void)grad_outputs;
    recompute_call *c = user;
    for (int k = 0; k < n_inputs; k++) grad_inputs[k] = ft_retain((ft_tensor *)c->grad_outputs[c->seeded[k]]);
    return 0;
}

/* lua_CFunction(call): reruns fn under grad mode on fresh detached inputs with the forward's
 * generator state, backpropagates the outputs' gradients through that graph and sets the
 * inputs' gradients. Runs protected; the caller restores the grad mode, the generator and the
 * recomputing depth. */
static int recompute(lua_State *L) {
    recompute_call *c = lua_touserdata(L, 1);
    checkpoint_state *s = c->state;
    luaL_checkstack(L, s->nargs + LUA_MINSTACK, "ft.autograd.checkpoint");
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    int saved = lua_gettop(L);
    lua_createtable(L, s->nargs, 0); /* the arguments of this run */
    int args = lua_gettop(L);
    for (int i = 1; i <= s->nargs; i++) {
        lua_rawgeti(L, saved, i + 1);
        ft_tensor *t = ftl_to_tensor(L, -1);
        if (t) {
            ft_tensor *d = ft_detach(t);
            if (d && t->requires_grad) d->requires_grad = true; /* a float32 leaf */
            lua_pop(L, 1);
            ftl_push_tensor(L, d, "ft.autograd.checkpoint");
        }
        lua_rawseti(L, args, i);
    }
    lua_rawgeti(L, saved, 1);
    int fn = lua_gettop(L);
    for (int i = 1; i <= s->nargs; i++) lua_rawgeti(L, args, i);
    ft_rng_set_state(s->rng);
    ft_set_grad_enabled(true);
    recomputing++; /* back to its value by the caller, should fn raise an error */
    lua_call(L, s->nargs, LUA_MULTRET);
    recomputing--;
    ft_set_grad_enabled(false);

    int top = lua_gettop(L), found = 0;
    ft_tensor **outs = lua_newuserdatauv(L, sizeof *outs * (size_t)(c->n_outputs + 1), 0);
    c->seeded = lua_newuserdatauv(L, sizeof *c->seeded * (size_t)(c->n_outputs + 1), 0);
    int n_seeded = 0;
    for (int r = fn; r <= top; r++) {
        ft_tensor *t = float_tensor(L, r);
        if (!t) continue;
        if (found == c->n_outputs) {
            found++;
            break;
        }
        const ft_tensor *g = c->grad_outputs[found];
        if (!ft_same_shape(t, g)) {
            char a[160], b[160];
            return luaL_error(L, "ft.autograd.checkpoint: output %d of fn has shape %s in the recomputation but %s "
                                 "in the forward (fn must compute the same thing both times)",
                              found + 1, ft_shape_str(t->shape, t->ndim, a, sizeof a),
                              ft_shape_str(g->shape, g->ndim, b, sizeof b));
        }
        if (t->requires_grad) {
            outs[n_seeded] = t;
            c->seeded[n_seeded++] = found;
        }
        found++;
    }
    if (found != c->n_outputs)
        return luaL_error(L, "ft.autograd.checkpoint: fn returned %s%d float tensors in the recomputation but %d in "
                             "the forward (fn must compute the same thing both times)",
                          found > c->n_outputs ? "more than " : "", found > c->n_outputs ? c->n_outputs : found,
                          c->n_outputs);
    if (n_seeded > 0) { /* else nothing inside fn requires grad */
        ft_tensor *one = ft_zeros(NULL, 0, FT_FLOAT32), *root = NULL;
        if (!one) return ftl_error(L, "ft.autograd.checkpoint");
        int rc = ft_function_node("checkpoint_seed", seed_backward, c, (ft_function_owner){NULL, NULL}, n_seeded,
                                  outs, 1, &one, &root);
        ft_release(one);
        if (rc == 0) rc = ft_backward(root, NULL, false);
        ft_release(root);
        if (rc < 0) return luaL_error(L, "%s", ft_last_error());
    }
    int k = 0;
    for (int i = 1; i <= s->nargs; i++) {
        lua_rawgeti(L, args, i);
        ft_tensor *d = ftl_to_tensor(L, -1);
        lua_pop(L, 1);
        if (!d) continue;
        if (k < c->n_inputs) { /* the leaf's gradient passes on; the leaf is dropped */
            c->grad_inputs[k] = d->grad;
            d->grad = NULL;
        }
        k++;
    }
    return 0;
}

/* The backward of a checkpoint node: the recomputation, protected, on the Lua thread that
 * runs the backward. */
static int checkpoint_backward(void *user, int n_outputs, const ft_tensor *const *grad_outputs, int n_inputs,
                               ft_tensor **grad_inputs) {
    checkpoint_state *s = user;
    lua_State *L = backward_thread;
    if (!L) {
        ft_set_error("ft.autograd.checkpoint: the backward must be started from Lua (t:backward or ft.backward) "
                     "to recompute fn");
        return -1;
    }
    if (s->ref == LUA_NOREF || !lua_checkstack(L, 4)) {
        ft_set_error("ft.autograd.checkpoint: %s", s->ref == LUA_NOREF ? "its inputs were already released"
                                                                        : "Lua stack overflow");
        return -1;
    }
    recompute_call call = {s, n_outputs, grad_outputs, n_inputs, grad_inputs, NULL};
    uint64_t rng[4];
    ft_rng_get_state(rng);
    bool mode = ft_grad_enabled();
    int depth = recomputing;
    lua_pushcfunction(L, recompute);
    lua_pushlightuserdata(L, &call);
    int status = lua_pcall(L, 1, 0, 0);
    ft_rng_set_state(rng); /* what runs after the backward sees the generator as without checkpointing */
    ft_set_grad_enabled(mode);
    recomputing = depth;
    if (status == LUA_OK) return 0;
    const char *msg = lua_tostring(L, -1);
    ft_set_error("ft.autograd.checkpoint: recomputing fn in backward failed: %s",
                 msg ? msg : "(an error object that is not a string)");
    lua_pop(L, 1);
    for (int i = 0; i < n_inputs; i++) {
        ft_release(grad_inputs[i]);
        grad_inputs[i] = NULL;
    }
    return -1;
}

/* ft.autograd.checkpoint(fn, ...) -> what fn(...) returns. Runs fn without recording its
 * graph; its float32 tensor results join the graph through one node whose backward reruns fn
 * (grad mode on, detached inputs, the generator state of this forward) and backpropagates
 * through that. Memory of fn's intermediate results is traded for a second forward. Without
 * grad mode it is fn(...). */
static int l_checkpoint(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int nargs = lua_gettop(L) - 1;
    if (!ft_grad_enabled()) {
        lua_call(L, nargs, LUA_MULTRET);
        return lua_gettop(L);
    }
    luaL_checkstack(L, nargs + LUA_MINSTACK, "ft.autograd.checkpoint");
    uint64_t rng[4];
    ft_rng_get_state(rng);
    for (int i = 1; i <= nargs + 1; i++) lua_pushvalue(L, i);
    ft_set_grad_enabled(false);
    int status = lua_pcall(L, nargs, LUA_MULTRET, 0);
    ft_set_grad_enabled(true);
    if (status != LUA_OK) return lua_error(L);
    int first = nargs + 2, top = lua_gettop(L);
    int n_out = 0, n_in = 0;
    for (int r = first; r <= top; r++) n_out += float_tensor(L, r) != NULL;
    if (n_out == 0) return top - first + 1;
    for (int i = 2; i <= nargs + 1; i++) n_in += ftl_to_tensor(L, i) != NULL;

    /* Scratch arrays as userdata: collected whatever happens. */
    ft_tensor **outputs = lua_newuserdatauv(L, sizeof *outputs * (size_t)(2 * n_out + n_in + 1), 0);
    ft_tensor **attached = outputs + n_out, **inputs = outputs + 2 * n_out;
    int k = 0;
    for (int r = first; r <= top; r++)
        if (float_tensor(L, r)) outputs[k++] = float_tensor(L, r);
    k = 0;
    for (int i = 2; i <= nargs + 1; i++)
        if (ftl_to_tensor(L, i)) inputs[k++] = ftl_to_tensor(L, i);

    /* {fn, args...}, tensor args as detached aliases (a closed or changed original does not matter) */
    lua_createtable(L, nargs + 1, 0);
    for (int i = 1; i <= nargs + 1; i++) {
        ft_tensor *t = i > 1 ? ftl_to_tensor(L, i) : NULL;
        if (t) {
            ft_tensor *d = ft_detach(t);
            if (d && t->requires_grad) d->requires_grad = true;
            ftl_push_tensor(L, d, "ft.autograd.checkpoint");
        } else {
            lua_pushvalue(L, i);
        }
        lua_rawseti(L, -2, i);
    }
    checkpoint_state *s = malloc(sizeof *s);
    if (!s) return luaL_error(L, "ft.autograd.checkpoint: out of memory");
    s->anchor = anchor_thread(L);
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    s->nargs = nargs;
    s->n_outputs = n_out;
    memcpy(s->rng, rng, sizeof rng);
    if (ft_function_node("checkpoint", checkpoint_backward, s, (ft_function_owner){checkpoint_release, checkpoint_free},
                         n_in, inputs, n_out, outputs, attached) < 0)
        return ftl_error(L, "autograd.checkpoint");
    k = 0;
    for (int r = first; r <= top; r++)
        if (float_tensor(L, r)) {
            ftl_push_tensor(L, attached[k++], "ft.autograd.checkpoint");
            lua_replace(L, r);
        }
    lua_settop(L, top);
    return top - first + 1;
}

/* ft.autograd.is_recomputing() -> true while a checkpoint's backward reruns its fn (the
 * recomputation's forward, on this thread), false otherwise, the first forward included. A
 * layer that updates state in forward (BatchNorm's running statistics) leaves it alone then. */
static int l_is_recomputing(lua_State *L) {
    lua_pushboolean(L, recomputing > 0);
    return 1;
}

static const luaL_Reg autograd_functions[] = {
    {"checkpoint", l_checkpoint},
    {"is_recomputing", l_is_recomputing},
    {NULL, NULL},
};

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
    luaL_newlib(L, autograd_functions); /* ft.autograd */
    lua_setfield(L, -2, "autograd");
    /* t:backward(...) as a method too */
    lua_getfield(L, -1, "Tensor");
    lua_pushcfunction(L, l_backward);
    lua_setfield(L, -2, "backward");
    lua_pop(L, 1);
}
