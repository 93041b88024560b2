/* ft._tokenizer: HuggingFace tokenizers (tokenizer.json) for Lua, the C object under
 * ft.text.hf_tokenizer. Ids are 1-based here (HF's id + 1), as int64 tensors; the Lua
 * class adds tokenizer_config.json, options checking and the documented methods. */
#include <stdlib.h>
#include <string.h>

#include "ft/tokenizer.h"
#include "ftl.h"

#define TOKENIZER_MT "ft.HFTokenizer"

typedef struct ud_tokenizer {
    ft_tokenizer *tok;
    ft_token_ids ids;   /* reused across encodes */
} ud_tokenizer;

static ud_tokenizer *check_tok(lua_State *L) {
    ud_tokenizer *u = luaL_checkudata(L, 1, TOKENIZER_MT);
    if (!u->tok) luaL_error(L, "ft.tokenizer: the tokenizer was closed");
    return u;
}

static int l_gc(lua_State *L) {
    ud_tokenizer *u = luaL_checkudata(L, 1, TOKENIZER_MT);
    ft_tokenizer_free(u->tok);
    ft_token_ids_free(&u->ids);
    u->tok = NULL;
    return 0;
}

static void push_new(lua_State *L, ft_tokenizer *tok) {
    if (!tok) ftl_error(L, "tokenizer");
    ud_tokenizer *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    u->tok = tok;
    luaL_setmetatable(L, TOKENIZER_MT);
}

/* load(path) -> tokenizer */
static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    push_new(L, ft_tokenizer_load(path));
    return 1;
}

/* from_string(json [, name]) -> tokenizer */
static int l_from_string(lua_State *L) {
    size_t len;
    const char *json = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "tokenizer.json");
    push_new(L, ft_tokenizer_from_json(json, len, name));
    return 1;
}

/* Pushes ids + 1 as an int64 tensor [n]. */
static void push_ids(lua_State *L, const int32_t *ids, size_t n) {
    int64_t shape[1] = {(int64_t)n};
    ft_tensor *t = ft_empty(shape, 1, FT_INT64);
    if (t) {
        int64_t *d = ft_i64(t);
        for (size_t i = 0; i < n; i++) d[i] = (int64_t)ids[i] + 1;
    }
    ftl_push_tensor(L, t, "tokenizer");
}

/* tok:encode(text, add_special_tokens, pair|nil, max_length, truncate_left) -> int64 [T] */
static int l_encode(lua_State *L) {
    ud_tokenizer *u = check_tok(L);
    size_t len, pair_len = 0;
    const char *text = luaL_checklstring(L, 2, &len);
    ft_encode_opts opts = {lua_isnoneornil(L, 3) ? true : lua_toboolean(L, 3), 0, false};
    const char *pair = luaL_optlstring(L, 4, NULL, &pair_len);
    opts.max_length = luaL_optinteger(L, 5, 0);
    opts.truncate_left = lua_toboolean(L, 6);
    if (ft_tokenizer_encode(u->tok, text, len, pair, pair_len, &opts, &u->ids)) ftl_error(L, "tokenizer");
    push_ids(L, u->ids.ids, u->ids.len);
    return 1;
}

/* tok:encode_batch(texts, add_special_tokens, max_length, truncate_left, pad_id, pad_left,
 *                  length, multiple_of) -> input_ids [B,T], attention_mask [B,T].
 * pad_id is 1-based; length 0 pads to the longest row (rounded up to multiple_of). */
static int l_encode_batch(lua_State *L) {
    ud_tokenizer *u = check_tok(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    ft_encode_opts opts = {lua_toboolean(L, 3), luaL_optinteger(L, 4, 0), lua_toboolean(L, 5)};
    lua_Integer pad_id = luaL_checkinteger(L, 6);
    int pad_left = lua_toboolean(L, 7);
    lua_Integer length = luaL_optinteger(L, 8, 0), multiple = luaL_optinteger(L, 9, 0);
    lua_Integer b = luaL_len(L, 2);
    if (b < 1) luaL_error(L, "ft.tokenizer.encode_batch: an empty list of texts");
    /* All rows first (kept as one flat array with offsets), then the padded tensors. */
    ft_token_ids all = {0};
    size_t *start = malloc(((size_t)b + 1) * sizeof *start);
    if (!start) luaL_error(L, "ft.tokenizer.encode_batch: out of memory");
    size_t width = 0;
    for (lua_Integer i = 1; i <= b; i++) {
        size_t len;
        if (lua_geti(L, 2, i) != LUA_TSTRING) {
            free(start);
            ft_token_ids_free(&all);
            luaL_error(L, "ft.tokenizer.encode_batch: entry %d is a %s, not a string", (int)i, luaL_typename(L, -1));
        }
        const char *s = lua_tolstring(L, -1, &len);
        if (ft_tokenizer_encode(u->tok, s, len, NULL, 0, &opts, &u->ids)) {
            free(start);
            ft_token_ids_free(&all);
            luaL_error(L, "ft.%s (entry %d)", ft_last_error(), (int)i);
        }
        lua_pop(L, 1);
        start[i - 1] = all.len;
        size_t need = all.len + u->ids.len;
        if (need > all.cap) {
            size_t cap = all.cap ? all.cap : 1024;
            while (cap < need) cap *= 2;
            int32_t *p = realloc(all.ids, cap * sizeof *p);
            if (!p) {
                free(start);
                ft_token_ids_free(&all);
                luaL_error(L, "ft.tokenizer.encode_batch: out of memory");
            }
            all.ids = p;
            all.cap = cap;
        }
        memcpy(all.ids + all.len, u->ids.ids, u->ids.len * sizeof *all.ids);
        all.len = need;
        if (u->ids.len > width) width = u->ids.len;
    }
    start[b] = all.len;
    if (length > 0) {
        if ((size_t)length < width) {
            free(start);
            ft_token_ids_free(&all);
            luaL_error(L, "ft.tokenizer.encode_batch: a row of %d ids is longer than the padding length %d (truncate it)",
                       (int)width, (int)length);
        }
        width = (size_t)length;
    }
    if (multiple > 0 && width % (size_t)multiple) width += (size_t)multiple - width % (size_t)multiple;
    int64_t shape[2] = {(int64_t)b, (int64_t)width};
    ft_tensor *ids = ft_empty(shape, 2, FT_INT64), *mask = ids ? ft_empty(shape, 2, FT_INT64) : NULL;
    if (!ids || !mask) {
        ft_release(ids);
        free(start);
        ft_token_ids_free(&all);
        ftl_error(L, "tokenizer.encode_batch");
    }
    int64_t *di = ft_i64(ids), *dm = ft_i64(mask);
    for (lua_Integer i = 0; i < b; i++) {
        size_t n = start[i + 1] - start[i], off = pad_left ? width - n : 0;
        int64_t *ri = di + (size_t)i * width, *rm = dm + (size_t)i * width;
        for (size_t j = 0; j < width; j++) {
            ri[j] = pad_id;
            rm[j] = 0;
        }
        for (size_t j = 0; j < n; j++) {
            ri[off + j] = (int64_t)all.ids[start[i] + j] + 1;
            rm[off + j] = 1;
        }
    }
    free(start);
    ft_token_ids_free(&all);
    ftl_push_tensor(L, ids, "tokenizer");
    ftl_push_tensor(L, mask, "tokenizer");
    return 2;
}

/* Reads 1-based ids at idx (a 1-D int64 tensor or a Lua array) as 0-based into out. */
static void read_ids(lua_State *L, int idx, ft_tokenizer *tok, ft_token_ids *out) {
    out->len = 0;
    int64_t vocab = ft_tokenizer_vocab_size(tok);
    ft_tensor *t = ftl_to_tensor(L, idx);
    size_t n;
    if (t) {
        if (t->dtype != FT_INT64 || t->ndim != 1) {
            char buf[128];
            luaL_error(L, "ft.tokenizer.decode: ids must be a 1-D int64 tensor, got a %s tensor %s",
                       ft_dtype_name(t->dtype), ft_shape_str(t->shape, t->ndim, buf, sizeof buf));
        }
        n = (size_t)t->shape[0];
    } else if (lua_istable(L, idx)) {
        n = (size_t)luaL_len(L, idx);
    } else {
        return (void)luaL_error(L, "ft.tokenizer.decode: ids must be a tensor or a list of ids, got %s", luaL_typename(L, idx));
    }
    if (n > out->cap) {
        int32_t *p = realloc(out->ids, n * sizeof *p);
        if (!p) luaL_error(L, "ft.tokenizer.decode: out of memory");
        out->ids = p;
        out->cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        if (t) {
            v = ft_i64(t)[i * t->strides[0]];
        } else {
            lua_geti(L, idx, (lua_Integer)i + 1);
            int ok;
            v = lua_tointegerx(L, -1, &ok);
            if (!ok) luaL_error(L, "ft.tokenizer.decode: id at position %d is %s, not an integer", (int)i + 1,
                                lua_type(L, -1) == LUA_TNUMBER ? "a fraction" : luaL_typename(L, -1));
            lua_pop(L, 1);
        }
        if (v < 1 || v > vocab || !ft_tokenizer_id_to_token(tok, v - 1, NULL))
            luaL_error(L, "ft.tokenizer.decode: id %I at position %d is not in the vocabulary (1..%I)", (lua_Integer)v,
                       (int)i + 1, (lua_Integer)vocab);
        out->ids[i] = (int32_t)(v - 1);
    }
    out->len = n;
}

/* tok:decode(ids, skip_special_tokens, clean_up_tokenization_spaces) -> string */
static int l_decode(lua_State *L) {
    ud_tokenizer *u = check_tok(L);
    read_ids(L, 2, u->tok, &u->ids);
    ft_decode_opts opts = {lua_toboolean(L, 3), lua_toboolean(L, 4)};
    size_t len;
    char *s = ft_tokenizer_decode(u->tok, u->ids.ids, u->ids.len, &opts, &len);
    if (!s) ftl_error(L, "tokenizer");
    lua_pushlstring(L, s, len);
    free(s);
    return 1;
}

/* tok:token_to_id(s) -> 1-based id or nil */
static int l_token_to_id(lua_State *L) {
    ud_tokenizer *u = check_tok(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int64_t id = ft_tokenizer_token_to_id(u->tok, s, len);
    if (id < 0) lua_pushnil(L);
    else lua_pushinteger(L, id + 1);
    return 1;
}

/* tok:id_to_token(id) -> string or nil (id 1-based) */
static int l_id_to_token(lua_State *L) {
    ud_tokenizer *u = check_tok(L);
    lua_Integer id = luaL_checkinteger(L, 2);
    size_t len;
    const char *s = ft_tokenizer_id_to_token(u->tok, id - 1, &len);
    if (!s) lua_pushnil(L);
    else lua_pushlstring(L, s, len);
    return 1;
}

static int l_vocab_size(lua_State *L) {
    lua_pushinteger(L, ft_tokenizer_vocab_size(check_tok(L)->tok));
    return 1;
}

static int l_is_special(lua_State *L) {
    ud_tokenizer *u = check_tok(L);
    lua_pushboolean(L, ft_tokenizer_is_special(u->tok, luaL_checkinteger(L, 2) - 1));
    return 1;
}

static int l_mark_special(lua_State *L) {
    ud_tokenizer *u = check_tok(L);
    if (ft_tokenizer_mark_special(u->tok, luaL_checkinteger(L, 2) - 1)) ftl_error(L, "tokenizer");
    return 0;
}

static int l_set_split_special(lua_State *L) {
    ft_tokenizer_set_split_special(check_tok(L)->tok, lua_toboolean(L, 2));
    return 0;
}

static int l_num_special_tokens(lua_State *L) {
    ud_tokenizer *u = check_tok(L);
    lua_pushinteger(L, ft_tokenizer_num_special_tokens(u->tok, lua_toboolean(L, 2)));
    return 1;
}

/* tok:added_ids() -> {1-based id, ...} in file order */
static int l_added_ids(lua_State *L) {
    ud_tokenizer *u = check_tok(L);
    size_t n = ft_tokenizer_num_added(u->tok);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, ft_tokenizer_added_id(u->tok, i) + 1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* tok:padding() -> {pad_id (1-based), left, length, multiple_of} or nil */
static int l_padding(lua_State *L) {
    ud_tokenizer *u = check_tok(L);
    ft_tokenizer_padding p;
    if (!ft_tokenizer_padding_of(u->tok, &p)) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, p.pad_id + 1);
    lua_setfield(L, -2, "pad_id");
    lua_pushboolean(L, p.left);
    lua_setfield(L, -2, "left");
    lua_pushinteger(L, p.length);
    lua_setfield(L, -2, "length");
    lua_pushinteger(L, p.multiple_of);
    lua_setfield(L, -2, "multiple_of");
    return 1;
}

static int l_truncation(lua_State *L) {
    int64_t n = ft_tokenizer_truncation_of(check_tok(L)->tok);
    if (n > 0) lua_pushinteger(L, n);
    else lua_pushnil(L);
    return 1;
}

void ftl_open_tokenizer(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"encode", l_encode},
        {"encode_batch", l_encode_batch},
        {"decode", l_decode},
        {"token_to_id", l_token_to_id},
        {"id_to_token", l_id_to_token},
        {"vocab_size", l_vocab_size},
        {"is_special", l_is_special},
        {"mark_special", l_mark_special},
        {"set_split_special", l_set_split_special},
        {"num_special_tokens", l_num_special_tokens},
        {"added_ids", l_added_ids},
        {"padding", l_padding},
        {"truncation", l_truncation},
        {NULL, NULL},
    };
    luaL_newmetatable(L, TOKENIZER_MT);
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__close");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {
        {"load", l_load},
        {"from_string", l_from_string},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "_tokenizer");
}
