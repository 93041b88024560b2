/* ft._quant: quantised frozen weights (NF4, int8) as userdata, and the linear layer over them.
 * ft.quant (bindings/lua/ft/quant.lua) builds on these; they are internal.
 *
 * A quantised weight looks like a frozen [out, in] weight to code that only inspects it
 * (w:size(1), w:shape(), w:dim(), w.requires_grad is false), so layers and adapters that read
 * a weight's shape work over it; tensor methods that need its float32 values (w:detach(),
 * w:copy_(...) as a merge does) raise an error naming the layer and what to do instead. */
#include <string.h>

#include "ft/quant.h"
#include "ftl.h"

#define QWEIGHT_MT "ft.QWeight"

/* The userdata: one reference to the weight; its user value 1 is a label (the layer's path).
 * transposed: the layer's weight is [in, out] (GPT-2's Conv1D) and q holds its transpose
 * [out, in], the layout the kernel multiplies by; shape, size and dequantize answer in the
 * layer's layout, codes and scales in the stored one. */
typedef struct {
    ft_qweight *q;
    int transposed;
} qweight_ud;

static ft_qweight *check_qweight(lua_State *L, int idx) {
    qweight_ud *ud = luaL_checkudata(L, idx, QWEIGHT_MT);
    if (!ud->q) luaL_error(L, "ft._quant: the quantised weight was closed");
    return ud->q;
}

static qweight_ud *ud_of(lua_State *L, int idx) {
    qweight_ud *ud = luaL_checkudata(L, idx, QWEIGHT_MT);
    if (!ud->q) luaL_error(L, "ft._quant: the quantised weight was closed");
    return ud;
}

static void push_qweight(lua_State *L, ft_qweight *q, int transposed, const char *op) {
    if (!q) {
        ftl_error(L, op);
        return;
    }
    qweight_ud *ud = lua_newuserdatauv(L, sizeof *ud, 1);
    ud->q = q;
    ud->transposed = transposed;
    luaL_setmetatable(L, QWEIGHT_MT);
}

/* quantize(w, kind "nf4" | "int8" | "nf4_fp32" [, transposed]) -> quantised weight.
 * w: a float weight [out, in]; with transposed true, a weight [in, out] (Conv1D) whose
 * transpose is quantised. */
static int l_quantize(lua_State *L) {
    ft_tensor *w = ftl_check_tensor(L, 1);
    const char *name = luaL_checkstring(L, 2);
    int transposed = lua_toboolean(L, 3);
    ft_quant_kind kind;
    if (ft_quant_kind_from_name(name, &kind) < 0) return ftl_error(L, "quantize");
    if (transposed && w->ndim == 2) {
        ft_tensor *wt = ft_transpose(w, 0, 1);
        if (!wt) return ftl_error(L, "quantize");
        ft_qweight *q = ft_quantize(wt, kind);
        ft_release(wt);
        push_qweight(L, q, 1, "quantize");
    } else {
        push_qweight(L, ft_quantize(w, kind), 0, "quantize");
    }
    return 1;
}

/* linear(x [..., in], q, bias [out]?) -> x @ dequant(W)^T + bias, with autograd for x and bias */
static int l_linear(lua_State *L) {
    ft_tensor *x = ftl_check_tensor(L, 1);
    ft_qweight *q = check_qweight(L, 2);
    ft_tensor *b = lua_isnoneornil(L, 3) ? NULL : ftl_check_tensor(L, 3);
    ftl_push_tensor(L, ft_quant_linear(x, q, b), "quant_linear");
    return 1;
}

/* is_qweight(v) -> true for a quantised weight */
static int l_is_qweight(lua_State *L) {
    lua_pushboolean(L, luaL_testudata(L, 1, QWEIGHT_MT) != NULL);
    return 1;
}

/* ---- methods ------------------------------------------------------------------------------- */

/* dequantize() -> the float32 weight in the layer's layout ([in, out] when transposed) */
static int m_dequantize(lua_State *L) {
    qweight_ud *ud = ud_of(L, 1);
    ft_tensor *w = ft_dequantize(ud->q);
    if (w && ud->transposed) {
        ft_tensor *wt = ft_transpose(w, 0, 1);
        ft_release(w);
        w = wt ? ft_contiguous(wt) : NULL;
        ft_release(wt);
    }
    ftl_push_tensor(L, w, "dequantize");
    return 1;
}

/* transposed() -> true when the layer's weight is [in, out] and its transpose is stored */
static int m_transposed(lua_State *L) {
    lua_pushboolean(L, ud_of(L, 1)->transposed);
    return 1;
}

/* The layer's shape: rows and columns, swapped when transposed. */
static void layer_shape(const qweight_ud *ud, int64_t *d0, int64_t *d1) {
    *d0 = ft_qweight_rows(ud->q);
    *d1 = ft_qweight_cols(ud->q);
    if (ud->transposed) {
        int64_t t = *d0;
        *d0 = *d1;
        *d1 = t;
    }
}

static int m_nbytes(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)ft_qweight_nbytes(check_qweight(L, 1)));
    return 1;
}

static int m_kind(lua_State *L) {
    lua_pushstring(L, ft_quant_kind_name(ft_qweight_kind(check_qweight(L, 1))));
    return 1;
}

static int m_shape(lua_State *L) {
    int64_t d0, d1;
    layer_shape(ud_of(L, 1), &d0, &d1);
    lua_createtable(L, 2, 0);
    lua_pushinteger(L, (lua_Integer)d0);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, (lua_Integer)d1);
    lua_rawseti(L, -2, 2);
    return 1;
}

/* size(d): 1-based, negative from the end; without d the shape */
static int m_size(lua_State *L) {
    qweight_ud *ud = ud_of(L, 1);
    if (lua_isnoneornil(L, 2)) return m_shape(L);
    int d = ftl_check_dim(L, 2, 2);
    int64_t d0, d1;
    layer_shape(ud, &d0, &d1);
    lua_pushinteger(L, (lua_Integer)(d == 0 ? d0 : d1));
    return 1;
}

static int m_dim(lua_State *L) {
    check_qweight(L, 1);
    lua_pushinteger(L, 2);
    return 1;
}

static int m_numel(lua_State *L) {
    ft_qweight *q = check_qweight(L, 1);
    lua_pushinteger(L, (lua_Integer)(ft_qweight_rows(q) * ft_qweight_cols(q)));
    return 1;
}

/* codes() -> int64 [out, in]: the 4-bit indices 0..15 (NF4) or the int8 values, as stored */
static int m_codes(lua_State *L) {
    ftl_push_tensor(L, ft_qweight_codes(check_qweight(L, 1)), "quant.codes");
    return 1;
}

/* scales() -> float32: the block absmaxes (NF4) or the row scales (int8) */
static int m_scales(lua_State *L) {
    ftl_push_tensor(L, ft_qweight_scales(check_qweight(L, 1)), "quant.scales");
    return 1;
}

/* absmax_codes() -> int64: the 8-bit codes of the double-quantised absmaxes ("nf4" only) */
static int m_absmax_codes(lua_State *L) {
    ftl_push_tensor(L, ft_qweight_absmax_codes(check_qweight(L, 1)), "quant.absmax_codes");
    return 1;
}

/* absmax2() -> float32: one absmax per 256 absmaxes ("nf4" only) */
static int m_absmax2(lua_State *L) {
    ftl_push_tensor(L, ft_qweight_absmax2(check_qweight(L, 1)), "quant.absmax2");
    return 1;
}

/* offset() -> number: the float32 mean absmax the double quantisation subtracts ("nf4"; 0 else) */
static int m_offset(lua_State *L) {
    lua_pushnumber(L, (lua_Number)ft_qweight_offset(check_qweight(L, 1)));
    return 1;
}

/* dynamic_map() -> float32 [256]: bitsandbytes' signed 8-bit dynamic map */
static int l_dynamic_map(lua_State *L) {
    int64_t n = 256;
    ft_tensor *t = ft_empty(&n, 1, FT_FLOAT32);
    if (t) ft_dynamic_map(ft_f32(t));
    ftl_push_tensor(L, t, "quant.dynamic_map");
    return 1;
}

/* set_label(s): the name errors give the weight (the layer's path) */
static int m_set_label(lua_State *L) {
    check_qweight(L, 1);
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    lua_setiuservalue(L, 1, 1);
    return 0;
}

static const char *label_of(lua_State *L, int idx) {
    lua_getiuservalue(L, idx, 1);
    const char *s = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return s;
}

/* label() -> the name set_label gave, or nil */
static int m_label(lua_State *L) {
    check_qweight(L, 1);
    lua_getiuservalue(L, 1, 1);
    if (!lua_isstring(L, -1)) lua_pushnil(L);
    return 1;
}

/* A tensor method that needs the float32 values: an error saying what to do instead.
 * upvalue 1: the method's name. */
static int m_refused(lua_State *L) {
    ft_qweight *q = check_qweight(L, 1);
    const char *label = label_of(L, 1);
    return luaL_error(L,
                      "ft.quant: the weight of layer %s is quantised (%s): it has no float32 value for '%s' "
                      "(DoRA, (IA)3 merges, copying into it). w:dequantize() gives its float32 values; "
                      "ft.quant.dequantize(model) gives the layers float32 weights back; a LoRA merge takes "
                      "{quantized = \"requantize\"} or {quantized = \"dequantize\"}",
                      label ? label : "this layer", ft_quant_kind_name(ft_qweight_kind(q)),
                      lua_tostring(L, lua_upvalueindex(1)));
}

static const char *const refused_methods[] = {
    "detach", "copy_", "clone", "t", "transpose", "reshape", "view", "matmul", "contiguous", "to",
    "float", "add_", "mul_", "div_", "sub_", "fill_", "zero_", "totable", NULL,
};

static int m_close(lua_State *L) {
    qweight_ud *ud = luaL_checkudata(L, 1, QWEIGHT_MT);
    ft_qweight_release(ud->q);
    ud->q = NULL;
    return 0;
}

static int m_tostring(lua_State *L) {
    qweight_ud *ud = luaL_checkudata(L, 1, QWEIGHT_MT);
    if (!ud->q) {
        lua_pushstring(L, "ft.QWeight(closed)");
        return 1;
    }
    int64_t d0, d1;
    layer_shape(ud, &d0, &d1);
    lua_pushfstring(L, "ft.QWeight(%s [%I, %I]%s, %I bytes)", ft_quant_kind_name(ft_qweight_kind(ud->q)),
                    (lua_Integer)d0, (lua_Integer)d1, ud->transposed ? " stored transposed" : "",
                    (lua_Integer)ft_qweight_nbytes(ud->q));
    return 1;
}

/* __index: the methods table (upvalue 1), then the fields of a frozen weight. */
static int m_index(lua_State *L) {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1)) return 1;
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "requires_grad") == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    lua_pushnil(L);   /* grad and anything else */
    return 1;
}

/* __newindex: the weight is frozen; requires_grad = false is accepted (freezing code sets it). */
static int m_newindex(lua_State *L) {
    const char *k = lua_tostring(L, 2);
    if (k && strcmp(k, "requires_grad") == 0 && !lua_toboolean(L, 3)) return 0;
    ft_qweight *q = check_qweight(L, 1);
    const char *label = label_of(L, 1);
    return luaL_error(L, "ft.quant: the weight of layer %s is quantised (%s) and frozen: cannot set '%s'",
                      label ? label : "this layer", ft_quant_kind_name(ft_qweight_kind(q)), k ? k : "?");
}

static const luaL_Reg qweight_methods[] = {
    {"dequantize", m_dequantize}, {"nbytes", m_nbytes}, {"kind", m_kind},   {"dtype", m_kind},
    {"shape", m_shape},           {"size", m_size},     {"dim", m_dim},     {"numel", m_numel},
    {"codes", m_codes},           {"scales", m_scales}, {"absmax_codes", m_absmax_codes},
    {"absmax2", m_absmax2},       {"offset", m_offset}, {"set_label", m_set_label},
    {"transposed", m_transposed}, {"label", m_label},   {NULL, NULL},
};

static const luaL_Reg quant_functions[] = {
    {"quantize", l_quantize},
    {"linear", l_linear},
    {"is_qweight", l_is_qweight},
    {"dynamic_map", l_dynamic_map},
    {NULL, NULL},
};

void ftl_open_quant(lua_State *L) {
    luaL_newmetatable(L, QWEIGHT_MT);
    lua_newtable(L);   /* the methods */
    luaL_setfuncs(L, qweight_methods, 0);
    for (const char *const *m = refused_methods; *m; m++) {
        lua_pushstring(L, *m);
        lua_pushcclosure(L, m_refused, 1);
        lua_setfield(L, -2, *m);
    }
    lua_pushcclosure(L, m_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, m_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, m_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, m_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, m_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    lua_newtable(L);
    luaL_setfuncs(L, quant_functions, 0);
    lua_setfield(L, -2, "_quant");
}
