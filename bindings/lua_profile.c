/* FT_PROFILE=1: where the time goes, per op. With the variable set when ft loads, every C
 * function of the ft module (and of its tables: ft.image, ft._F of ft.nn.functional ...), every tensor
 * method and every arithmetic metamethod is wrapped by a closure that counts its calls and
 * its self time (its own time less that of the profiled calls inside it, so that
 * ft.no_grad(fn) or ft.backward do not count the ops they run twice). Backward passes are
 * broken down by graph node: "backward:<op>" is the time of that op's backward (through the
 * autograd engine's timer). At exit, or when ft.profile_report() is called, a table sorted by
 * self time goes to stderr. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ft/autograd.h"
#include "ftl.h"

#define PROFILE_KEY "ft.profile"   /* registry: name -> entry userdata */
#define MAX_DEPTH 256

typedef struct {
    double self;       /* seconds in the function itself */
    long long calls;
} entry;

/* The time of profiled calls running inside the one at each depth. */
static double child_time[MAX_DEPTH];
static int depth;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The backward time per op: op names are the engine's static strings, compared by address. */
#define MAX_BACKWARD_OPS 256
static struct {
    const char *op;
    entry e;
} backward_ops[MAX_BACKWARD_OPS];
static int n_backward_ops;

static void time_backward(const char *op, double seconds) {
    int k = 0;
    while (k < n_backward_ops && backward_ops[k].op != op) k++;
    if (k == n_backward_ops) {
        if (k == MAX_BACKWARD_OPS) return;
        backward_ops[k].op = op;
        n_backward_ops++;
    }
    backward_ops[k].e.self += seconds;
    backward_ops[k].e.calls++;
    /* a child of the profiled call running the backward (t:backward) */
    if (depth > 0) child_time[depth - 1 < MAX_DEPTH ? depth - 1 : MAX_DEPTH - 1] += seconds;
}

/* upvalues: the function, its entry */
static int profiled(lua_State *L) {
    entry *e = lua_touserdata(L, lua_upvalueindex(2));
    int nargs = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    int level = depth < MAX_DEPTH ? depth : MAX_DEPTH - 1;
    if (depth < MAX_DEPTH) child_time[depth] = 0;
    depth++;
    double t0 = now();
    int status = lua_pcall(L, nargs, LUA_MULTRET, 0);
    double elapsed = now() - t0;
    depth--;
    e->self += elapsed - child_time[level];
    e->calls++;
    if (level > 0) child_time[level - 1] += elapsed;   /* the caller's children */
    if (status != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}

/* The entry of name, made on first use. */
static entry *entry_of(lua_State *L, const char *name) {
    lua_getfield(L, LUA_REGISTRYINDEX, PROFILE_KEY);
    if (lua_getfield(L, -1, name) != LUA_TUSERDATA) {
        lua_pop(L, 1);
        entry *e = lua_newuserdatauv(L, sizeof *e, 0);
        memset(e, 0, sizeof *e);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);
    }
    entry *e = lua_touserdata(L, -1);
    lua_pop(L, 2);
    return e;
}

/* Wraps every C function of the table at idx, naming each prefix .. key. */
static void wrap_table(lua_State *L, int idx, const char *prefix, int nested) {
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *key = lua_tostring(L, -2);
            int skip = strcmp(key, "__index") == 0 || strcmp(key, "__newindex") == 0 ||
                       strcmp(key, "__gc") == 0 || strcmp(key, "__close") == 0 || strcmp(key, "__name") == 0;
            if (lua_iscfunction(L, -1) && !skip) {
                char name[128];
                snprintf(name, sizeof name, "%s%s", prefix, key);
                entry *e = entry_of(L, name);
                lua_pushvalue(L, -2);          /* key */
                lua_pushvalue(L, -2);          /* the function */
                lua_pushlightuserdata(L, e);
                lua_pushcclosure(L, profiled, 2);
                lua_rawset(L, idx);            /* replacing a key's value keeps lua_next valid */
            } else if (nested && lua_istable(L, -1) && strcmp(key, "Tensor") != 0) {
                char sub[64];
                snprintf(sub, sizeof sub, "%s%s.", prefix, key);
                wrap_table(L, -1, sub, 0);
            }
        }
        lua_pop(L, 1);
    }
}

typedef struct {
    const char *name;
    entry e;
} row;

static int by_self_time(const void *a, const void *b) {
    double x = ((const row *)a)->e.self, y = ((const row *)b)->e.self;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* ft.profile_report() --> {name = {calls =, seconds =}}: also prints the table (self time,
 * calls, share) to stderr. Without FT_PROFILE=1 when ft was loaded, the table is empty. */
static int l_profile_report(lua_State *L) {
    lua_newtable(L);
    int out = lua_gettop(L);
    if (lua_getfield(L, LUA_REGISTRYINDEX, PROFILE_KEY) != LUA_TTABLE) {
        lua_settop(L, out);
        return 1;
    }
    int reg = lua_gettop(L);
    size_t n = 0, cap = 64;
    row *rows = malloc(cap * sizeof *rows);
    double total = 0;
    lua_pushnil(L);
    while (rows && lua_next(L, reg)) {
        entry *e = lua_touserdata(L, -1);
        if (e && e->calls > 0) {
            if (n == cap) {
                row *grown = realloc(rows, 2 * cap * sizeof *rows);
                if (!grown) break;
                rows = grown;
                cap *= 2;
            }
            rows[n].name = lua_tostring(L, -2);   /* kept alive as a key of the registry table */
            rows[n].e = *e;
            total += e->self;
            n++;
            lua_createtable(L, 0, 2);
            lua_pushinteger(L, (lua_Integer)e->calls);
            lua_setfield(L, -2, "calls");
            lua_pushnumber(L, e->self);
            lua_setfield(L, -2, "seconds");
            lua_setfield(L, out, lua_tostring(L, -3));
        }
        lua_pop(L, 1);
    }
    for (int k = 0; rows && k < n_backward_ops; k++) {
        if (n == cap) {
            row *grown = realloc(rows, 2 * cap * sizeof *rows);
            if (!grown) break;
            rows = grown;
            cap *= 2;
        }
        lua_pushfstring(L, "backward:%s", backward_ops[k].op);
        rows[n].name = lua_tostring(L, -1);   /* kept alive as a key of the result */
        rows[n].e = backward_ops[k].e;
        total += backward_ops[k].e.self;
        n++;
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, (lua_Integer)backward_ops[k].e.calls);
        lua_setfield(L, -2, "calls");
        lua_pushnumber(L, backward_ops[k].e.self);
        lua_setfield(L, -2, "seconds");
        lua_settable(L, out);
    }
    if (rows) {
        qsort(rows, n, sizeof *rows, by_self_time);
        fprintf(stderr, "ft profile (FT_PROFILE=1): self time per op, %.3f s in all\n", total);
        fprintf(stderr, "  %-36s %10s %12s %7s\n", "op", "calls", "seconds", "share");
        for (size_t k = 0; k < n && k < 40; k++)
            fprintf(stderr, "  %-36s %10lld %12.4f %6.1f%%\n", rows[k].name, rows[k].e.calls, rows[k].e.self,
                    total > 0 ? 100 * rows[k].e.self / total : 0.0);
        free(rows);
    }
    lua_settop(L, out);
    return 1;
}

/* The report at exit: the __gc of a userdata kept in the registry runs when the state closes. */
static int report_at_exit(lua_State *L) {
    lua_pushcfunction(L, l_profile_report);
    lua_call(L, 0, 0);
    return 0;
}

void ftl_open_profile(lua_State *L) {
    int module = lua_gettop(L);
    lua_pushcfunction(L, l_profile_report);
    lua_setfield(L, module, "profile_report");
    const char *on = getenv("FT_PROFILE");
    if (!on || !on[0] || strcmp(on, "0") == 0) return;
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, PROFILE_KEY);
    ft_set_backward_timer(time_backward);
    wrap_table(L, module, "", 1);
    if (lua_getfield(L, module, "Tensor") == LUA_TTABLE) wrap_table(L, -1, "Tensor:", 0);
    lua_pop(L, 1);
    if (luaL_getmetatable(L, FTL_TENSOR_MT) == LUA_TTABLE) wrap_table(L, -1, "Tensor.", 0);
    lua_pop(L, 1);
    lua_newuserdatauv(L, 1, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, report_at_exit);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "ft.profile.exit");
    lua_settop(L, module);
}
