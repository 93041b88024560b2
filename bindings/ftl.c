/* Shared helpers of the Lua bindings and the module entry point luaopen_ft. */
#define _GNU_SOURCE /* dladdr, RTLD_NODELETE */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft/ops.h"
#include "ft/runtime.h"
#include "ftl.h"

/* ---- tensors as userdata -------------------------------------------------------- */

ft_tensor *ftl_to_tensor(lua_State *L, int idx) {
    ft_tensor **ud = luaL_testudata(L, idx, FTL_TENSOR_MT);
    if (!ud) return NULL;
    if (!*ud) luaL_error(L, "ft: the tensor was closed");
    return *ud;
}

void ftl_close_tensor(lua_State *L, int idx) {
    ft_tensor **ud = luaL_checkudata(L, idx, FTL_TENSOR_MT);
    ft_release(*ud);
    *ud = NULL;
}

ft_tensor *ftl_check_tensor(lua_State *L, int idx) {
    ft_tensor *t = ftl_to_tensor(L, idx);
    if (!t) {
        const char *got = luaL_typename(L, idx);
        luaL_argerror(L, idx, lua_pushfstring(L, "tensor expected, got %s", got));
    }
    return t;
}

/* Tensor bytes are invisible to Lua's collector: a tensor is a pointer-sized userdata, so on
 * its own Lua would let hundreds of megabytes of unreachable tensors pile up. The bindings
 * pace it by tensor bytes instead, checked as each new tensor is pushed:
 *  - every time the live tensor bytes have grown by GC_STEP_MIN, or by 1/GC_STEP_DIV of the
 *    held set if more, since the last collection: one step of the collector. In generational
 *    mode (ftlua's) that is a young collection, which frees the temporaries of the last few
 *    operations at a cost that follows the young objects only; in incremental mode (stock
 *    lua's default) it is one increment of the current cycle.
 *  - a full collection instead, for garbage that had time to grow old (a tensor that
 *    outlived two young collections, such as a training step's activations), when the live
 *    bytes exceed the held set by GC_FULL_MIN or by 1/GC_FULL_DIV of it if more, or when the
 *    steps since the last full one add up to GC_FULL_EVERY times Lua's heap (at least
 *    GC_FULL_EVERY * GC_STEP_MIN). The second rule reclaims old tensors whose storage is
 *    small or shared (views, scalars), whose C structs and autograd nodes would otherwise
 *    wait for Lua's own major collection; tying it to the heap keeps the cost of a full
 *    collection, which follows the heap, a small fraction of the tensor work.
 * The held set is what a full collection left, lowered whenever fewer bytes are live (fewer
 * can then be reachable). Garbage thus stays below about a quarter of the live set plus a
 * few MB from the first step on, and as a live set grows (a forward pass, a model loading)
 * full collections come at geometric intervals. The counters are per process, as the live
 * bytes are. */
#define GC_STEP_MIN ((size_t)1 << 20)
#define GC_STEP_DIV 8
#define GC_FULL_MIN ((size_t)4 << 20)
#define GC_FULL_DIV 4
#define GC_FULL_EVERY 8

static size_t gc_held = 0;  /* live bytes after the last full collection, or fewer since */
static size_t gc_mark = 0;  /* live bytes after the last collection of either kind, or fewer */
static size_t gc_stepped = 0; /* growth that triggered the steps since the last full collection */

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

static void account_bytes(lua_State *L) {
    size_t live = ft_live_bytes();
    if (live < gc_mark) gc_mark = live;
    if (live < gc_held) gc_held = live;
    if (live - gc_mark < max_size(GC_STEP_MIN, gc_held / GC_STEP_DIV)) return;
    if (!lua_gc(L, LUA_GCISRUNNING)) return; /* stopped by the user (or while ftlua starts) */
    gc_stepped += live - gc_mark;
    size_t heap = (size_t)lua_gc(L, LUA_GCCOUNT) * 1024;
    int full = gc_stepped >= GC_FULL_EVERY * max_size(GC_STEP_MIN, heap);
    if (!full) {
        lua_gc(L, LUA_GCSTEP, 0);
        live = ft_live_bytes();
        full = live > gc_held + max_size(GC_FULL_MIN, gc_held / GC_FULL_DIV);
    }
    if (full) {
        lua_gc(L, LUA_GCCOLLECT);
        live = ft_live_bytes();
        gc_held = live;
        gc_stepped = 0;
    }
    gc_mark = live;
}

void ftl_push_tensor(lua_State *L, ft_tensor *t, const char *op) {
    if (!t) {
        ftl_error(L, op);
        return;
    }
    ft_tensor **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = t;
    luaL_setmetatable(L, FTL_TENSOR_MT);
    account_bytes(L);
}

/* ---- storage dtypes: the one place where computing ops promote their arguments ---------- */

void ftl_promote_arg(lua_State *L, int idx) {
    ft_tensor **ud = luaL_testudata(L, idx, FTL_TENSOR_MT);
    if (!ud || !*ud || (*ud)->dtype == FT_FLOAT32 || (*ud)->dtype == FT_INT64) return;
    idx = lua_absindex(L, idx);
    ftl_push_tensor(L, ft_promote_f32(*ud), "to");
    lua_replace(L, idx);
}

void ftl_promote_args(lua_State *L, int first) {
    for (int i = first, top = lua_gettop(L); i <= top; i++) ftl_promote_arg(L, i);
}

/* A computing op as registered: upvalue 1 is the C function, called on promoted arguments. */
static int promoting_call(lua_State *L) {
    ftl_promote_args(L, 1);
    return lua_tocfunction(L, lua_upvalueindex(1))(L);
}

void ftl_register_compute(lua_State *L, const luaL_Reg *fns) {
    /* one closure per C function (the registry keeps them), so that a function bound under two
     * names (ft.matmul and t:matmul) stays one value, as plain C functions are */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, "ft.compute_ops");
    for (; fns->name; fns++) {
        lua_pushlightuserdata(L, (void *)fns->func);
        if (lua_rawget(L, -2) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushcfunction(L, fns->func);
            lua_pushcclosure(L, promoting_call, 1);
            lua_pushlightuserdata(L, (void *)fns->func);
            lua_pushvalue(L, -2);
            lua_rawset(L, -4);
        }
        lua_setfield(L, -3, fns->name);
    }
    lua_pop(L, 1);
}

int ftl_error(lua_State *L, const char *op) {
    const char *msg = ft_last_error();
    /* Core messages start with the op name ("add: ..."); avoid "ft.add: add: ...". */
    size_t n = strlen(op);
    if (strncmp(msg, op, n) == 0 && msg[n] == ':') return luaL_error(L, "ft.%s", msg);
    return luaL_error(L, "ft.%s: %s", op, msg);
}

/* ---- numbers, tables and shapes ------------------------------------------------- */

static int table_depth_shape(lua_State *L, int idx, int64_t *shape, int depth) {
    if (lua_type(L, idx) != LUA_TTABLE) return depth;
    if (depth >= FT_MAX_DIMS) luaL_error(L, "ft.tensor: more than %d nested levels", FT_MAX_DIMS);
    lua_Integer n = luaL_len(L, idx);
    shape[depth] = n;
    if (n == 0) return depth + 1;
    lua_geti(L, idx, 1);
    int d = table_depth_shape(L, lua_gettop(L), shape, depth + 1);
    lua_pop(L, 1);
    return d;
}

static void table_fill(lua_State *L, int idx, const int64_t *shape, int ndim, int depth, ft_tensor *t,
                       int64_t *pos) {
    lua_Integer n = luaL_len(L, idx);
    if (n != shape[depth])
        luaL_error(L, "ft.tensor: ragged nested table (a row of %d where %d was expected at depth %d)",
                   (int)n, (int)shape[depth], depth + 1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, idx, i);
        if (depth + 1 < ndim) {
            if (!lua_istable(L, -1)) luaL_error(L, "ft.tensor: ragged nested table (number where a row was expected)");
            table_fill(L, lua_gettop(L), shape, ndim, depth + 1, t, pos);
        } else {
            int isnum;
            lua_Number v = lua_tonumberx(L, -1, &isnum);
            if (!isnum) {
                if (lua_isboolean(L, -1)) v = lua_toboolean(L, -1);
                else luaL_error(L, "ft.tensor: expected numbers, got %s", luaL_typename(L, -1));
            }
            if (t->dtype == FT_INT64) {
                lua_Integer iv;
                if (lua_isinteger(L, -1)) iv = lua_tointeger(L, -1);
                else iv = (lua_Integer)v;
                ft_i64(t)[*pos] = iv;
            } else if (t->dtype == FT_FLOAT64) {
                ((double *)ft_data(t))[*pos] = v;
            } else {
                ft_f32(t)[*pos] = (float)v;
            }
            (*pos)++;
        }
        lua_pop(L, 1);
    }
}

ft_tensor *ftl_table_to_tensor(lua_State *L, int idx, ft_dtype dtype) {
    idx = lua_absindex(L, idx);
    int64_t shape[FT_MAX_DIMS];
    int ndim = table_depth_shape(L, idx, shape, 0);
    if (ft_dtype_is_half(dtype)) {   /* read exactly, then rounded once (through float32, as torch) */
        ft_tensor *wide = ftl_table_to_tensor(L, idx, FT_FLOAT64);
        ft_tensor *t = ft_to_dtype(wide, dtype);
        ft_release(wide);
        if (!t) ftl_error(L, "tensor");
        return t;
    }
    ft_tensor *t = ft_empty(shape, ndim, dtype);
    if (!t) ftl_error(L, "tensor");
    int64_t pos = 0;
    /* A Lua error inside table_fill would leak t: anchor it on the stack first. */
    ft_tensor **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = t;
    luaL_setmetatable(L, FTL_TENSOR_MT);
    if (ndim > 0 && shape[ndim - 1] > 0) table_fill(L, idx, shape, ndim, 0, t, &pos);
    else if (ndim == 0) luaL_error(L, "ft.tensor: expected a table of numbers");
    ft_retain(t);
    lua_pop(L, 1);
    return t;
}

ft_tensor *ftl_check_tensor_like(lua_State *L, int idx) {
    ft_tensor *t = ftl_to_tensor(L, idx);
    if (t) return ft_retain(t);
    if (lua_isnumber(L, idx)) {
        t = ft_scalar(lua_tonumber(L, idx), FT_FLOAT32);
        if (!t) ftl_error(L, "tensor");
        return t;
    }
    if (lua_istable(L, idx)) return ftl_table_to_tensor(L, idx, FT_FLOAT32);
    luaL_argerror(L, idx, lua_pushfstring(L, "tensor, number or table expected, got %s", luaL_typename(L, idx)));
    return NULL;
}

int ftl_check_dim(lua_State *L, int idx, int ndim) {
    lua_Integer d = luaL_checkinteger(L, idx);
    int n = ndim > 0 ? ndim : 1;
    if (d == 0 || d > n || d < -n)
        luaL_error(L, "ft: dim %d out of range for a %d-dim tensor (dims are 1..%d, or negative from the end)",
                   (int)d, ndim, n);
    return d > 0 ? (int)d - 1 : (int)d + n;
}

int ftl_opt_dim(lua_State *L, int idx, int ndim, int def0) {
    if (lua_isnoneornil(L, idx)) return def0;
    return ftl_check_dim(L, idx, ndim);
}

/* The bad value at idx as an error message shows it after its type: ": \"3\"" for a string
 * (cut to 40 bytes), ": true" for a boolean, "" for the rest (their type says it all). */
static const char *shown_value(lua_State *L, int idx, char *buf, size_t len) {
    int type = lua_type(L, idx);
    if (type == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        snprintf(buf, len, ": \"%.*s%s\"", n > 40 ? 40 : (int)n, s, n > 40 ? "..." : "");
    } else if (type == LUA_TBOOLEAN) {
        snprintf(buf, len, ": %s", lua_toboolean(L, idx) ? "true" : "false");
    } else {
        buf[0] = '\0';
    }
    return buf;
}

int ftl_check_shape(lua_State *L, int idx, int64_t *shape, const char *op) {
    char shown[64];
    int ndim = 0;
    if (lua_istable(L, idx)) {
        lua_Integer n = luaL_len(L, idx);
        if (n > FT_MAX_DIMS) luaL_error(L, "ft.%s: shape has %d dims, at most %d supported", op, (int)n, FT_MAX_DIMS);
        for (lua_Integer i = 1; i <= n; i++) {
            /* a number only: lua_tointegerx alone would take the string "3" */
            if (lua_geti(L, idx, i) != LUA_TNUMBER)
                luaL_error(L, "ft.%s: the shape's entries must be integers, got a %s (entry %I)%s", op,
                           luaL_typename(L, -1), i, shown_value(L, -1, shown, sizeof shown));
            int ok;
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            if (!ok) luaL_error(L, "ft.%s: size %s (entry %I of the shape) is not an integer", op, lua_tostring(L, -1), i);
            shape[ndim++] = v;
            lua_pop(L, 1);
        }
        return ndim;
    }
    int top = lua_gettop(L), i;
    for (i = idx; i <= top && lua_type(L, i) == LUA_TNUMBER; i++) {
        if (ndim >= FT_MAX_DIMS) luaL_error(L, "ft.%s: shape has more than %d dims", op, FT_MAX_DIMS);
        int ok;
        lua_Integer v = lua_tointegerx(L, i, &ok);
        if (!ok) luaL_error(L, "ft.%s: size %s (argument %d) is not an integer", op, lua_tostring(L, i), i);
        shape[ndim++] = v;
    }
    /* what follows the sizes may be an options table, nothing else */
    if (i <= top && !lua_isnil(L, i) && !lua_istable(L, i))
        luaL_error(L, "ft.%s: sizes must be integers or one table of them, got a %s (argument %d)%s", op,
                   luaL_typename(L, i), i, shown_value(L, i, shown, sizeof shown));
    return ndim;
}

static int push_field(lua_State *L, int idx, const char *key) {
    if (!lua_istable(L, idx)) return 0;
    lua_getfield(L, idx, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

double ftl_opt_number_field(lua_State *L, int idx, const char *key, double def) {
    idx = lua_absindex(L, idx);
    if (!push_field(L, idx, key)) return def;
    if (!lua_isnumber(L, -1)) luaL_error(L, "ft: option '%s' must be a number, got %s", key, luaL_typename(L, -1));
    double v = lua_tonumber(L, -1);
    lua_pop(L, 1);
    return v;
}

int64_t ftl_opt_integer_field(lua_State *L, int idx, const char *key, int64_t def) {
    idx = lua_absindex(L, idx);
    if (!push_field(L, idx, key)) return def;
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok) luaL_error(L, "ft: option '%s' must be an integer, got %s", key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

const char *ftl_opt_string_field(lua_State *L, int idx, const char *key, const char *def) {
    idx = lua_absindex(L, idx);
    if (!push_field(L, idx, key)) return def;
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "ft: option '%s' must be a string", key);
    const char *v = lua_tostring(L, -1);
    lua_pop(L, 1); /* the options table keeps the string alive */
    return v;
}

ft_tensor *ftl_index_to_core(lua_State *L, const ft_tensor *index, const char *op) {
    if (index->dtype != FT_INT64) luaL_error(L, "ft.%s: indices must be an int64 tensor, got %s", op, ft_dtype_name(index->dtype));
    ft_tensor *c = ft_empty(index->shape, index->ndim, FT_INT64);
    if (!c || ft_copy_(c, index) < 0) {
        ft_release(c);
        ftl_error(L, op);
    }
    int64_t *p = ft_i64(c);
    for (int64_t i = 0, n = ft_numel(c); i < n; i++) p[i] -= 1;
    return c;
}

void ftl_check_index_range(lua_State *L, const ft_tensor *index, int64_t size, const char *op, int dim0) {
    if (index->dtype != FT_INT64) luaL_error(L, "ft.%s: indices must be an int64 tensor, got %s", op, ft_dtype_name(index->dtype));
    ft_tensor *c = ft_contiguous(index);
    if (!c) ftl_error(L, op);
    const int64_t *p = ft_i64(c);
    for (int64_t i = 0, n = ft_numel(c); i < n; i++) {
        if (p[i] < 1 || p[i] > size) {
            lua_Integer bad = (lua_Integer)p[i];
            ft_release(c);
            if (dim0 >= 0)
                luaL_error(L, "ft.%s: index %I out of range 1..%I of dim %d", op, bad, (lua_Integer)size, dim0 + 1);
            luaL_error(L, "ft.%s: index %I out of range 1..%I", op, bad, (lua_Integer)size);
        }
    }
    ft_release(c);
}

void ftl_index_from_core(ft_tensor *index) {
    int64_t *p = ft_i64(index);
    for (int64_t i = 0, n = ft_numel(index); i < n; i++) p[i] += 1;
}

void ftl_register(lua_State *L, const luaL_Reg *fns) { luaL_setfuncs(L, fns, 0); }

/* ---- module ------------------------------------------------------------------------ */

/* Names of ft whose module lives elsewhere in the room layout: ft.tokenizer is ft.text.tokenizer. */
static const char *const module_aliases[][2] = {{"tokenizer", "ft.text.tokenizer"}};

/* Most names a missing-module cache remembers before it starts afresh (bounds its memory
 * when a program probes many names). */
#define MODULE_MISSES_MAX 1024

/* package.searchpath(name, package.path): 1 when a file for the module exists. */
static int module_file_exists(lua_State *L, int name_index, int path_index) {
    if (lua_type(L, path_index) != LUA_TSTRING) return 0;
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "package");
    if (!lua_istable(L, -1) || lua_getfield(L, -1, "searchpath") != LUA_TFUNCTION) {
        lua_pop(L, 3);
        return 0;
    }
    lua_pushvalue(L, name_index);
    lua_pushvalue(L, path_index);
    lua_call(L, 2, 1);
    int found = !lua_isnil(L, -1);
    lua_pop(L, 3);
    return found;
}

/* ft.<key> for any Lua half under ft/: `ft.foo` requires "ft.foo" on first use and keeps it
 * in ft. A key with no such module is nil; an error while loading one that exists
 * propagates. A miss is remembered (upvalue 1: key -> the package.path it was searched on;
 * upvalue 2: how many misses it holds),
 * so that code testing `if ft.foo then` in a loop costs no file-system search each time;
 * a changed package.path, or the name appearing in package.preload, is looked at afresh. */
static int module_index(lua_State *L) {
    if (lua_type(L, 2) != LUA_TSTRING) return 0; /* (lua_tostring would turn a number key into a string) */
    const char *key = lua_tostring(L, 2);
    if (key[0] == '_' || strchr(key, '.')) return 0;
    const char *name = NULL;
    for (size_t i = 0; i < sizeof module_aliases / sizeof module_aliases[0]; i++)
        if (strcmp(key, module_aliases[i][0]) == 0) name = module_aliases[i][1];
    if (name) lua_pushstring(L, name);
    else lua_pushfstring(L, "ft.%s", key);
    int name_index = lua_gettop(L);

    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    int found = lua_getfield(L, -1, lua_tostring(L, name_index)) != LUA_TNIL;
    lua_pop(L, 2);
    if (!found) {
        luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        lua_getfield(L, -1, "package");
        if (lua_istable(L, -1)) lua_getfield(L, -1, "path");
        else lua_pushnil(L);
        int path_index = lua_gettop(L);
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
        if (lua_rawequal(L, -1, path_index)) return 0; /* already searched for on this path */
        lua_pop(L, 1);
        if (!module_file_exists(L, name_index, path_index)) {
            lua_Integer misses = lua_tointeger(L, lua_upvalueindex(2)) + 1;
            if (misses > MODULE_MISSES_MAX) {
                lua_newtable(L);
                lua_replace(L, lua_upvalueindex(1));
                misses = 1;
            }
            lua_pushinteger(L, misses);
            lua_replace(L, lua_upvalueindex(2));
            lua_pushvalue(L, 2);
            lua_pushvalue(L, path_index);
            lua_rawset(L, lua_upvalueindex(1));
            return 0;
        }
        lua_settop(L, name_index);
    }
    lua_getglobal(L, "require");
    lua_pushvalue(L, name_index);
    lua_call(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

/* Keeps this library (ft.so) loaded until the process ends. Stock lua unloads C modules
 * (dlclose) when its state closes at exit; unloading ft.so would unmap libgomp and OpenBLAS
 * with it while their worker threads still run, and the process died with SIGSEGV after
 * any multi-threaded op. Marking ft.so RTLD_NODELETE keeps its code and its libraries
 * mapped; the threads end with the process. Inside ftlua, where the bindings are part of
 * the executable, the executable is found instead and nothing changes. */
static void pin_library(void) {
    Dl_info info;
    if (!dladdr((void *)pin_library, &info) || !info.dli_fname) return;
    /* RTLD_NOLOAD: only the already loaded object, which this flags as never to unload. */
    dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
}

int luaopen_ft(lua_State *L) {
    pin_library();
    lua_newtable(L);
    int module = lua_gettop(L);
    ftl_open_tensor(L);
    ftl_open_tensor_create(L);
    ftl_open_runtime(L);
    ftl_open_ops(L);
    ftl_open_autograd(L);
    ftl_open_nn(L);
    ftl_open_optim(L);
    ftl_open_io(L);
    ftl_open_json(L);
    ftl_open_options(L);
    ftl_open_tokenizer(L);
    ftl_open_unicode(L);
    ftl_open_quant(L);
    ftl_open_dist(L);
    ftl_open_profile(L);   /* last: it wraps what the others registered */
    lua_settop(L, module);

    lua_pushliteral(L, "0.1.0");
    lua_setfield(L, module, "_VERSION");

    lua_createtable(L, 0, 1);
    lua_newtable(L);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, module_index, 2);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, module);

    /* Register before loading the Lua half, which itself does require "ft". */
    lua_pushvalue(L, module);
    lua_setfield(L, LUA_REGISTRYINDEX, "ft.module");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, module);
    lua_setfield(L, -2, "ft");
    lua_pop(L, 1);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "ft.tensor");
    lua_call(L, 1, 0);
    lua_settop(L, module);
    return 1;
}
