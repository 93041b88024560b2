/* Lua bindings of the neural-network ops (ft._F): the C half of ft.nn.functional.
 *
 * Argument conventions follow PyTorch's torch.nn.functional, with options as a trailing
 * table. Index values (class targets, embedding ids, ignore_index) are 1-based in Lua
 * and converted here before the core sees them. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ft/autograd.h"
#include "ft/ops.h"
#include "ftl.h"

/* ---- argument helpers ------------------------------------------------------- */

/* Optional tensor argument: nil/none -> NULL. */
static ft_tensor *opt_tensor(lua_State *L, int idx) {
    return lua_isnoneornil(L, idx) ? NULL : ftl_check_tensor(L, idx);
}

/* An integer in [min, max] at the top of the stack, else an error naming what it is. */
static int check_int_top(lua_State *L, const char *op, const char *what, lua_Integer min, lua_Integer max) {
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "ft.%s: %s must be an integer or a pair of integers, got %s", op, what,
                   lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
    if (v < min || v > max) luaL_error(L, "ft.%s: %s must be in %I..%I, got %I", op, what, min, max, v);
    return (int)v;
}

/* An int in [min, 2^30] given as a number or a {h, w} pair (a kernel size, a stride ...). */
static void check_pair(lua_State *L, int idx, const char *op, const char *what, lua_Integer min, int out[2]) {
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_pushvalue(L, idx);
        out[0] = out[1] = check_int_top(L, op, what, min, 1 << 30);
        lua_pop(L, 1);
    } else if (lua_istable(L, idx) && lua_rawlen(L, idx) == 2) {
        for (int i = 0; i < 2; i++) {
            lua_rawgeti(L, idx, i + 1);
            out[i] = check_int_top(L, op, what, min, 1 << 30);
            lua_pop(L, 1);
        }
    } else {
        luaL_error(L, "ft.%s: %s must be an integer or a pair of integers, got %s", op, what,
                   luaL_typename(L, idx));
    }
}

/* opts[key] through check_pair, def when absent. */
static void pair_option(lua_State *L, int opts, const char *key, int def, lua_Integer min, const char *op,
                        int out[2]) {
    out[0] = out[1] = def;
    if (!lua_istable(L, opts)) return;
    if (lua_getfield(L, opts, key) != LUA_TNIL) check_pair(L, -1, op, key, min, out);
    lua_pop(L, 1);
}

/* opts[key] as a boolean (nil: def). */
static bool bool_option(lua_State *L, int opts, const char *key, bool def, const char *op) {
    if (!lua_istable(L, opts)) return def;
    int type = lua_getfield(L, opts, key);
    bool v = def;
    if (type == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
    else if (type != LUA_TNIL) luaL_error(L, "ft.%s: option '%s' must be a boolean, got %s", op, key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

/* A positional boolean argument (nil/none: def). */
static bool check_flag(lua_State *L, int idx, bool def, const char *op, const char *what) {
    if (lua_isnoneornil(L, idx)) return def;
    if (!lua_isboolean(L, idx)) luaL_error(L, "ft.%s: %s must be a boolean, got %s", op, what, luaL_typename(L, idx));
    return lua_toboolean(L, idx);
}

/* A positional number in [lo, hi] (nil/none: def); NaN is always out of range. */
static double check_number_in(lua_State *L, int idx, double def, double lo, double hi, const char *op,
                              const char *what) {
    double v = luaL_optnumber(L, idx, def);
    if (!(v >= lo && v <= hi)) {
        /* lua_pushfstring has no %g: format here so the message shows the user's number */
        char buf[160];
        snprintf(buf, sizeof buf, "ft.%s: %s must be in [%g, %g], got %g", op, what, lo, hi, v);
        lua_pushstring(L, buf);
        lua_error(L);
    }
    return v;
}

/* The options table at idx (absent/nil allowed), checked against valid; returns idx. */
static int check_opts(lua_State *L, int idx, const char *op, const char *const *valid) {
    char where[64];
    snprintf(where, sizeof where, "ft.%s", op);
    ftl_check_options(L, idx, where, valid);
    return idx;
}

static ft_reduction check_reduction(lua_State *L, int opts, const char *op) {
    const char *r = ftl_opt_string_field(L, opts, "reduction", "mean");
    if (strcmp(r, "mean") == 0) return FT_REDUCE_MEAN;
    if (strcmp(r, "sum") == 0) return FT_REDUCE_SUM;
    if (strcmp(r, "none") == 0) return FT_REDUCE_NONE;
    luaL_error(L, "ft.%s: reduction must be 'mean', 'sum' or 'none', got '%s'", op, r);
    return FT_REDUCE_MEAN;
}

/* ---- linear and convolution ------------------------------------------------- */

/* linear(x [..., in], weight [out, in], bias [out]?) */
static int l_linear(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1), *w = ftl_check_tensor(L, 2);
    ft_tensor *b = opt_tensor(L, 3);
    ftl_push_tensor(L, ft_linear(x, w, b), "linear");
    return 1;
}

/* lora_add(result [..., out], x [..., in], A [r, in], B [out, r], scale [, consume]) */
static int l_lora_add(lua_State *L) {
    ft_tensor *result = ftl_check_tensor(L, 1), *x = ftl_check_tensor(L, 2);
    ft_tensor *a = ftl_check_tensor(L, 3), *b = ftl_check_tensor(L, 4);
    double scale = luaL_checknumber(L, 5);
    if (!lua_isnoneornil(L, 6)) luaL_checktype(L, 6, LUA_TBOOLEAN);
    bool consume = lua_toboolean(L, 6);
    ftl_push_tensor(L, consume ? ft_lora_add_reusing(result, x, a, b, scale) : ft_lora_add(result, x, a, b, scale),
                    "lora_add");
    if (consume) ftl_close_tensor(L, 1);   /* result is given up */
    return 1;
}

/* grouped_linear(x [N, in], weight [E, out, in], sizes): sizes an array of E row counts */
static int l_grouped_linear(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1), *w = ftl_check_tensor(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 3);
    if (n != (w->ndim == 3 ? w->shape[0] : -1))
        return luaL_error(L, "ft.grouped_linear: %d group sizes for a weight of %d groups", (int)n,
                          w->ndim == 3 ? (int)w->shape[0] : -1);
    int64_t *sizes = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)(n > 0 ? n : 1), 0);
    for (lua_Integer e = 1; e <= n; e++) {
        lua_geti(L, 3, e);
        int isnum = 0;
        lua_Integer v = lua_tointegerx(L, -1, &isnum);
        if (!isnum) return luaL_error(L, "ft.grouped_linear: group size %d is not an integer", (int)e);
        sizes[e - 1] = v;
        lua_pop(L, 1);
    }
    ftl_push_tensor(L, ft_grouped_linear(x, w, sizes, n), "grouped_linear");
    return 1;
}

/* conv2d(x [N,C,H,W], w [O,C/g,kH,kW], b [O]?, {stride=, padding=, dilation=, groups=})
 * padding may also be "valid" or "same" (stride 1, odd effective kernel). The bias may
 * be left out: conv2d(x, w, opts). */
static int l_conv2d(lua_State *L) {
    static const char *const options[] = {"stride", "padding", "dilation", "groups", NULL};
    ft_tensor *x = ftl_check_tensor(L, 1), *w = ftl_check_tensor(L, 2);
    ft_tensor *b = NULL;
    int opts = 4;
    if (lua_istable(L, 3)) opts = 3;   /* tensors are userdata, so a table is options */
    else b = opt_tensor(L, 3);
    check_opts(L, opts, "conv2d", options);

    ft_conv2d_opts o;
    pair_option(L, opts, "stride", 1, 1, "conv2d", o.stride);
    pair_option(L, opts, "dilation", 1, 1, "conv2d", o.dilation);
    o.groups = 1;
    if (lua_istable(L, opts) && lua_getfield(L, opts, "groups") != LUA_TNIL) {
        if (!lua_isinteger(L, -1)) luaL_error(L, "ft.conv2d: groups must be an integer, got %s", luaL_typename(L, -1));
        o.groups = check_int_top(L, "conv2d", "groups", 1, 1 << 30);
    }
    if (lua_istable(L, opts)) lua_pop(L, 1);

    int ptype = lua_istable(L, opts) ? lua_getfield(L, opts, "padding") : LUA_TNIL;
    if (ptype == LUA_TSTRING) {
        const char *mode = lua_tostring(L, -1);
        if (strcmp(mode, "valid") == 0) {
            o.padding[0] = o.padding[1] = 0;
        } else if (strcmp(mode, "same") == 0) {
            if (w->ndim != 4) luaL_error(L, "ft.conv2d: weight must be 4-D [O,C/groups,kH,kW]");
            if (o.stride[0] != 1 || o.stride[1] != 1)
                luaL_error(L, "ft.conv2d: padding='same' needs stride 1");
            for (int d = 0; d < 2; d++) {
                int64_t span = (int64_t)o.dilation[d] * (w->shape[2 + d] - 1);
                if (span % 2) luaL_error(L, "ft.conv2d: padding='same' needs an odd effective kernel size");
                if (span / 2 > (1 << 30)) luaL_error(L, "ft.conv2d: padding='same' needs too much padding");
                o.padding[d] = (int)(span / 2);
            }
        } else {
            luaL_error(L, "ft.conv2d: padding must be an integer, a pair, 'valid' or 'same', got '%s'", mode);
        }
    } else if (ptype != LUA_TNIL) {
        check_pair(L, -1, "conv2d", "padding", 0, o.padding);
    } else {
        o.padding[0] = o.padding[1] = 0;
    }
    if (lua_istable(L, opts)) lua_pop(L, 1);
    ftl_push_tensor(L, ft_conv2d(x, w, b, o), "conv2d");
    return 1;
}

/* ---- pooling ------------------------------------------------------------------ */

/* Shared option parsing of max_pool2d / avg_pool2d: (x, kernel, {stride=kernel, padding=0,
 * ceil_mode=false} plus dilation=1 (max) or count_include_pad=true (avg)). */
static ft_pool2d_opts check_pool_opts(lua_State *L, const char *op, bool is_max) {
    static const char *const max_options[] = {"stride", "padding", "dilation", "ceil_mode", NULL};
    static const char *const avg_options[] = {"stride", "padding", "ceil_mode", "count_include_pad", NULL};
    ft_pool2d_opts o;
    check_pair(L, 2, op, "kernel size", 1, o.kernel);
    int opts = check_opts(L, 3, op, is_max ? max_options : avg_options);
    /* torch: stride defaults to the kernel size */
    pair_option(L, opts, "stride", 0, 1, op, o.stride);
    if (o.stride[0] == 0) o.stride[0] = o.kernel[0], o.stride[1] = o.kernel[1];
    pair_option(L, opts, "padding", 0, 0, op, o.padding);
    if (is_max) {
        int dil[2];
        pair_option(L, opts, "dilation", 1, 1, op, dil);
        if (dil[0] != 1 || dil[1] != 1) luaL_error(L, "ft.%s: dilation other than 1 is not supported", op);
    }
    o.ceil_mode = bool_option(L, opts, "ceil_mode", false, op);
    o.count_include_pad = bool_option(L, opts, "count_include_pad", true, op);
    return o;
}

static int l_max_pool2d(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1);
    ft_pool2d_opts o = check_pool_opts(L, "max_pool2d", true);
    ftl_push_tensor(L, ft_max_pool2d(x, o), "max_pool2d");
    return 1;
}

static int l_avg_pool2d(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1);
    ft_pool2d_opts o = check_pool_opts(L, "avg_pool2d", false);
    ftl_push_tensor(L, ft_avg_pool2d(x, o), "avg_pool2d");
    return 1;
}

/* adaptive_avg_pool2d(x [N,C,H,W] or [C,H,W], size or {h, w}) */
static int l_adaptive_avg_pool2d(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1);
    int size[2];
    check_pair(L, 2, "adaptive_avg_pool2d", "output size", 1, size);
    ftl_push_tensor(L, ft_adaptive_avg_pool2d(x, size[0], size[1]), "adaptive_avg_pool2d");
    return 1;
}

/* ---- normalisation and regularisation ----------------------------------------- */

/* batch_norm with running statistics held in a storage dtype (a model converted to bfloat16):
 * they are read through float32 copies, and written back (rounded) when training updates them. */
static int batch_norm_stats_f32(lua_State *L, ft_tensor *x, ft_tensor *rm, ft_tensor *rv, ft_tensor *w,
                                ft_tensor *b, bool training, double momentum, double eps) {
    ft_tensor *rm32 = ft_to_dtype(rm, FT_FLOAT32), *rv32 = rm32 ? ft_to_dtype(rv, FT_FLOAT32) : NULL;
    if (rm32 == rm) { ft_release(rm32); rm32 = ft_clone(rm); }   /* private copies: the op writes them */
    if (rv32 == rv) { ft_release(rv32); rv32 = ft_clone(rv); }
    ft_tensor *y = rm32 && rv32 ? ft_batch_norm(x, rm32, rv32, w, b, training, momentum, eps) : NULL;
    if (y && training && (ft_copy_(rm, rm32) < 0 || ft_copy_(rv, rv32) < 0)) {
        ft_release(y);
        y = NULL;
    }
    ft_release(rm32);
    ft_release(rv32);
    ftl_push_tensor(L, y, "batch_norm");
    return 1;
}

/* batch_norm(x [N,C,...], running_mean?, running_var?, weight?, bias?, training, momentum, eps)
 * The running statistics are updated in place when training. */
static int l_batch_norm(lua_State *L) {
    ftl_promote_arg(L, 1);
    ftl_promote_arg(L, 4);
    ftl_promote_arg(L, 5);
    ft_tensor *x = ftl_check_tensor(L, 1);
    ft_tensor *rm = opt_tensor(L, 2), *rv = opt_tensor(L, 3);
    ft_tensor *w = opt_tensor(L, 4), *b = opt_tensor(L, 5);
    bool training = check_flag(L, 6, false, "batch_norm", "training");
    double momentum = check_number_in(L, 7, 0.1, 0.0, 1.0, "batch_norm", "momentum");
    double eps = check_number_in(L, 8, 1e-5, 0.0, HUGE_VAL, "batch_norm", "eps");
    if ((rm == NULL) != (rv == NULL))
        luaL_error(L, "ft.batch_norm: running_mean and running_var must be given together");
    if (!training && rm == NULL)
        luaL_error(L, "ft.batch_norm: running_mean and running_var are required when training is false");
    if ((rm && rm->dtype != FT_FLOAT32) || (rv && rv->dtype != FT_FLOAT32))
        return batch_norm_stats_f32(L, x, rm, rv, w, b, training, momentum, eps);
    ftl_push_tensor(L, ft_batch_norm(x, rm, rv, w, b, training, momentum, eps), "batch_norm");
    return 1;
}

/* normalized_shape at idx (an integer or a table) must equal the trailing dims of x;
 * returns how many trailing dims it covers. */
static int check_normalized_shape(lua_State *L, int idx, const ft_tensor *x, const char *op) {
    int64_t shape[FT_MAX_DIMS];
    int nnorm;
    if (lua_isinteger(L, idx)) {
        shape[0] = lua_tointeger(L, idx);
        nnorm = 1;
    } else {
        luaL_checktype(L, idx, LUA_TTABLE);
        nnorm = (int)lua_rawlen(L, idx);
        if (nnorm < 1 || nnorm > FT_MAX_DIMS) luaL_error(L, "ft.%s: normalized_shape must have 1 to 8 dims", op);
        for (int i = 0; i < nnorm; i++) {
            lua_rawgeti(L, idx, i + 1);
            shape[i] = luaL_checkinteger(L, -1);
            lua_pop(L, 1);
        }
    }
    int ok = nnorm <= x->ndim;
    for (int i = 0; ok && i < nnorm; i++) ok = x->shape[x->ndim - nnorm + i] == shape[i];
    if (!ok) {
        char a[128], b[128];
        luaL_error(L, "ft.%s: normalized_shape %s does not match the trailing dims of input %s", op,
                   ft_shape_str(shape, nnorm, b, sizeof b), ft_shape_str(x->shape, x->ndim, a, sizeof a));
    }
    return nnorm;
}

/* layer_norm(x, normalized_shape (integer or table), weight?, bias?, eps) */
static int l_layer_norm(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1);
    int nnorm = check_normalized_shape(L, 2, x, "layer_norm");
    ft_tensor *w = opt_tensor(L, 3), *b = opt_tensor(L, 4);
    double eps = check_number_in(L, 5, 1e-5, 0.0, HUGE_VAL, "layer_norm", "eps");
    ftl_push_tensor(L, ft_layer_norm(x, nnorm, w, b, eps), "layer_norm");
    return 1;
}

/* rms_norm(x, normalized_shape (integer or table), weight?, eps): over the trailing dims,
 * which the core sees flattened into one. */
static int l_rms_norm(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1);
    int nnorm = check_normalized_shape(L, 2, x, "rms_norm");
    ft_tensor *w = opt_tensor(L, 3);
    luaL_checknumber(L, 4);
    double eps = check_number_in(L, 4, 0.0, 0.0, HUGE_VAL, "rms_norm", "eps");
    if (nnorm == 1) {
        ftl_push_tensor(L, ft_rms_norm(x, w, eps), "rms_norm");
        return 1;
    }
    /* [..., n1, n2, ...] -> [..., n1*n2*...] and back; the weight likewise */
    int64_t flat[FT_MAX_DIMS], n = 1;
    int lead = x->ndim - nnorm;
    const int64_t *shape = x->shape + lead; /* the normalized shape */
    for (int i = 0; i < lead; i++) flat[i] = x->shape[i];
    for (int i = 0; i < nnorm; i++) n *= shape[i];
    flat[lead] = n;
    if (w && (w->ndim != nnorm || memcmp(w->shape, shape, (size_t)nnorm * sizeof(int64_t)) != 0)) {
        char a[128], b[128];
        luaL_error(L, "ft.rms_norm: weight %s does not match normalized_shape %s",
                   ft_shape_str(w->shape, w->ndim, a, sizeof a), ft_shape_str(shape, nnorm, b, sizeof b));
    }
    ft_tensor *x2 = ft_reshape(x, flat, lead + 1), *w2 = w ? ft_reshape(w, &n, 1) : NULL;
    ft_tensor *y2 = x2 && (w2 || !w) ? ft_rms_norm(x2, w2, eps) : NULL;
    ft_tensor *y = y2 ? ft_reshape(y2, x->shape, x->ndim) : NULL;
    ft_release(x2);
    ft_release(w2);
    ft_release(y2);
    ftl_push_tensor(L, y, "rms_norm");
    return 1;
}

/* dropout(x, p, training) */
static int l_dropout(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1);
    double p = check_number_in(L, 2, 0.5, 0.0, 1.0, "dropout", "probability");
    bool training = check_flag(L, 3, true, "dropout", "training");
    ftl_push_tensor(L, ft_dropout(x, p, training), "dropout");
    return 1;
}

/* embedding(indices (int64, 1-based, any shape), weight [num, dim]) -> [..., dim] */
static int l_embedding(lua_State *L) {
    ft_tensor *idx = ftl_check_tensor(L, 1), *w = ftl_check_tensor(L, 2);
    if (w->ndim == 2) ftl_check_index_range(L, idx, w->shape[0], "embedding", -1);
    ft_tensor *idx0 = ftl_index_to_core(L, idx, "embedding");
    ft_tensor *y = ft_embedding(w, idx0);
    ft_release(idx0);
    ftl_push_tensor(L, y, "embedding");
    return 1;
}

/* ---- transformer ops ---------------------------------------------------------------- */

/* rope(x [..., T, D], cos [T, D], sin [T, D]) */
static int l_rope(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1), *c = ftl_check_tensor(L, 2), *s = ftl_check_tensor(L, 3);
    ftl_push_tensor(L, ft_rope(x, c, s), "rope");
    return 1;
}

/* scaled_dot_product_attention(q [B,Hq,T,D], k [B,Hkv,S,D], v [B,Hkv,S,Dv], mask?, causal,
 * scale): the kernel as it is; ft.nn.functional adapts torch's signature to it. mask is a
 * float32 additive mask or an int64 0/1 mask (1 = may attend); scale <= 0 or nil means
 * 1/sqrt(D); causal aligns the diagonal bottom-right (query t sees keys s <= t + S - T). */
static int l_scaled_dot_product_attention(lua_State *L) {
    ft_tensor *q = ftl_check_tensor(L, 1), *k = ftl_check_tensor(L, 2), *v = ftl_check_tensor(L, 3);
    ft_tensor *mask = opt_tensor(L, 4);
    bool causal = check_flag(L, 5, false, "scaled_dot_product_attention", "causal");
    double scale = lua_isnoneornil(L, 6) ? 0.0
                   : check_number_in(L, 6, 0.0, 0.0, HUGE_VAL, "scaled_dot_product_attention", "scale");
    ftl_push_tensor(L, ft_scaled_dot_product_attention(q, k, v, mask, causal, scale),
                    "scaled_dot_product_attention");
    return 1;
}

/* ---- losses ------------------------------------------------------------------------- */

/* Class ids outside 1..C (other than ignore_index) are reported as the user wrote them. */
static void check_targets(lua_State *L, const ft_tensor *logits, const ft_tensor *target, int64_t ignore_index) {
    if (target->dtype != FT_INT64 || logits->ndim == 0) return; /* the core names these */
    int64_t classes = logits->ndim == 1 ? logits->shape[0] : logits->shape[1];
    ft_tensor *c = ft_contiguous(target);
    if (!c) ftl_error(L, "cross_entropy");
    const int64_t *p = ft_i64(c);
    for (int64_t i = 0, n = ft_numel(c); i < n; i++) {
        if (p[i] != ignore_index && (p[i] < 1 || p[i] > classes)) {
            lua_Integer bad = (lua_Integer)p[i];
            ft_release(c);
            luaL_error(L, "ft.cross_entropy: target %I out of range for %I classes (class ids are 1..%I)", bad,
                       (lua_Integer)classes, (lua_Integer)classes);
        }
    }
    ft_release(c);
}

/* cross_entropy(logits [N,C] or [N,C,d...], target int64 1-based [N] or [N,d...],
 *               {reduction="mean", ignore_index=-100, label_smoothing=0}) */
static int l_cross_entropy(lua_State *L) {
    static const char *const options[] = {"reduction", "ignore_index", "label_smoothing", NULL};
    ft_tensor *logits = ftl_check_tensor(L, 1), *target = ftl_check_tensor(L, 2);
    int opts = check_opts(L, 3, "cross_entropy", options);
    ft_reduction red = check_reduction(L, opts, "cross_entropy");
    int64_t user_ignore = ftl_opt_integer_field(L, opts, "ignore_index", -100);
    if (user_ignore == INT64_MIN) luaL_error(L, "ft.cross_entropy: ignore_index must be above math.mininteger");
    /* Shift with the targets so that a user's ignore_index still matches its label. */
    int64_t ignore_index = user_ignore - 1;
    double smoothing = 0.0;
    if (lua_istable(L, opts)) {
        lua_getfield(L, opts, "label_smoothing");
        if (!lua_isnil(L, -1) && !lua_isnumber(L, -1))
            luaL_error(L, "ft.cross_entropy: option 'label_smoothing' must be a number, got %s", luaL_typename(L, -1));
        smoothing = check_number_in(L, -1, 0.0, 0.0, 1.0, "cross_entropy", "label_smoothing");
        lua_pop(L, 1);
    }
    check_targets(L, logits, target, user_ignore);
    ft_tensor *t0 = ftl_index_to_core(L, target, "cross_entropy");
    ft_tensor *loss = ft_cross_entropy(logits, t0, red, ignore_index, smoothing);
    ft_release(t0);
    ftl_push_tensor(L, loss, "cross_entropy");
    return 1;
}

/* mse_loss(input, target, {reduction="mean"}) */
static int l_mse_loss(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1), *t = ftl_check_tensor(L, 2);
    static const char *const options[] = {"reduction", NULL};
    int opts = check_opts(L, 3, "mse_loss", options);
    ftl_push_tensor(L, ft_mse_loss(x, t, check_reduction(L, opts, "mse_loss")), "mse_loss");
    return 1;
}

/* Computing ops: bfloat16 / float16 / float64 tensors among the arguments are promoted to
 * float32 first (ftl_register_compute); conv2d thereby works on a temporary float32 copy of a
 * half weight (conv weights are small) and its gradient flows back rounded to the weight's dtype. */
static const luaL_Reg nn_functions[] = {
    {"conv2d", l_conv2d},
    {"max_pool2d", l_max_pool2d},
    {"avg_pool2d", l_avg_pool2d},
    {"adaptive_avg_pool2d", l_adaptive_avg_pool2d},

    {"layer_norm", l_layer_norm},
    {"rms_norm", l_rms_norm},
    {"dropout", l_dropout},
    {"rope", l_rope},
    {"scaled_dot_product_attention", l_scaled_dot_product_attention},
    {"cross_entropy", l_cross_entropy},
    {"mse_loss", l_mse_loss},
    {NULL, NULL},
};

/* Ops that read a half weight themselves (linear tile by tile, embedding row by row; the core
 * promotes a half input or bias of linear) or promote only some arguments (batch_norm). */
static const luaL_Reg weight_functions[] = {
    {"linear", l_linear},
    {"lora_add", l_lora_add},
    {"grouped_linear", l_grouped_linear},
    {"embedding", l_embedding},
    {"batch_norm", l_batch_norm},
    {NULL, NULL},
};

void ftl_open_nn(lua_State *L) {
    lua_newtable(L);
    ftl_register_compute(L, nn_functions);
    luaL_setfuncs(L, weight_functions, 0);
    lua_setfield(L, -2, "_F");
}
