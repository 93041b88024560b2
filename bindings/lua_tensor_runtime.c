#define _POSIX_C_SOURCE 200809L /* fileno, isatty */

/* The runtime from Lua: the seeded generator (manual_seed, its state for checkpoints),
 * threads, the tensor memory counters and the cache, the kernels in use, and the small host
 * helpers the Lua half needs (isatty, a monotonic clock). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ft/ops.h"
#include "ft/runtime.h"
#include "ftl.h"

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

/* ft.peak_bytes(): the most ft.live_bytes() reached since the last ft.reset_peak_bytes(). */
static int l_peak_bytes(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)ft_peak_bytes());
    return 1;
}

/* ft.resident_bytes() -> rss, peak: the process's resident memory now and its peak (Linux's
 * VmRSS and VmHWM from /proc/self/status), in bytes; nil where the system has no such file. */
static int l_resident_bytes(lua_State *L) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long long rss = -1, hwm = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) rss = atoll(line + 6);
        else if (strncmp(line, "VmHWM:", 6) == 0) hwm = atoll(line + 6);
    }
    fclose(f);
    if (rss < 0 || hwm < 0) return 0;
    lua_pushinteger(L, (lua_Integer)rss * 1024);
    lua_pushinteger(L, (lua_Integer)hwm * 1024);
    return 2;
}

static int l_reset_peak_bytes(lua_State *L) {
    ft_reset_peak_bytes();
    return 0;
}

static int l_empty_cache(lua_State *L) {
    ft_empty_cache();
    return 0;
}

/* ft.kernels() -> {blas =, blas_config =, conv =, dnnl_isa =, matmul_precision =,
 * matmul_bf16 =}: OpenBLAS's core and config, the convolution path, oneDNN's instruction set,
 * the matmul precision and the kernel of bfloat16 products (ft/help/builtins.lua documents it). */
static int l_kernels(lua_State *L) {
    lua_createtable(L, 0, 6);
    lua_pushstring(L, ft_blas_core());
    lua_setfield(L, -2, "blas");
    lua_pushstring(L, ft_blas_config());
    lua_setfield(L, -2, "blas_config");
    lua_pushstring(L, ft_conv_path_name());
    lua_setfield(L, -2, "conv");
    const char *isa = ft_conv_dnnl_isa();
    if (isa) {
        lua_pushstring(L, isa);
        lua_setfield(L, -2, "dnnl_isa");
    }
    lua_pushstring(L, ft_matmul_precision());
    lua_setfield(L, -2, "matmul_precision");
    const char *bf16 = ft_matmul_bf16_kernel();
    if (bf16) {
        lua_pushstring(L, bf16);
        lua_setfield(L, -2, "matmul_bf16");
    }
    return 1;
}

/* ft.set_matmul_precision(name) -> the previous one: "float32" or "bfloat16" (see
 * ft_set_matmul_precision; ft/help/builtins.lua documents it). */
static int l_set_matmul_precision(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    lua_pushstring(L, ft_matmul_precision());
    if (ft_set_matmul_precision(name) < 0) return ftl_error(L, "set_matmul_precision");
    return 1;
}

static int l_get_matmul_precision(lua_State *L) {
    lua_pushstring(L, ft_matmul_precision());
    return 1;
}

static const luaL_Reg functions[] = {
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
    {"resident_bytes", l_resident_bytes},
    {"empty_cache", l_empty_cache},
    {"kernels", l_kernels},
    {"set_matmul_precision", l_set_matmul_precision},
    {"get_matmul_precision", l_get_matmul_precision},
    {NULL, NULL},
};

void ftl_open_runtime(lua_State *L) { ftl_register(L, functions); }
