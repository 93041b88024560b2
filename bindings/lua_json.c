/* JSON for Lua: ft.json.decode / encode / read / write, for HuggingFace config files,
 * adapter configs and tokenizer files. This file holds the functions of ft.json and
 * their registration, the buffer the text is built in, and the ft.json.null and
 * ft.json.array markers; the decoder is lua_json_decode.c, the encoder lua_json_encode.c. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft/io.h"
#include "lua_json_internal.h"

#define BUFFER_MT "ft.json.Buffer"
#define JSON_MAX_FILE ((size_t)1 << 30)  /* ft.json.read: tokenizer files are tens of MB */

/* ---- a growing byte buffer owned by a userdata (freed by the collector on errors) --- */

static int buffer_gc(lua_State *L) {
    ftl_json_buffer *b = luaL_checkudata(L, 1, BUFFER_MT);
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    return 0;
}

ftl_json_buffer *ftl_json_buffer_new(lua_State *L) {
    ftl_json_buffer *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BUFFER_MT);
    return b;
}

char *ftl_json_buffer_reserve(lua_State *L, ftl_json_buffer *b, size_t len) {
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + len + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) luaL_error(L, "ft.json: out of memory (%zu bytes)", cap);
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->n;
}

void ftl_json_buffer_add(lua_State *L, ftl_json_buffer *b, const char *s, size_t len) {
    memcpy(ftl_json_buffer_reserve(L, b, len), s, len);
    b->n += len;
}

void ftl_json_push_null(lua_State *L) { lua_getfield(L, LUA_REGISTRYINDEX, FTL_JSON_NULL_KEY); }

/* ---- the functions ----------------------------------------------------------------------- */

/* The ordered option at idx of function where. */
static int ordered_option(lua_State *L, int idx, const char *where) {
    static const char *const options[] = {"ordered", NULL};
    ftl_check_options(L, idx, where, options);
    if (lua_isnoneornil(L, idx)) return 0;
    int t = lua_getfield(L, idx, "ordered");
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        luaL_error(L, "%s: option 'ordered' must be a boolean, got %s", where, luaL_typename(L, -1));
    int ordered = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return ordered;
}

/* ft.json.decode(str [, {ordered = false}]) --> value. ordered: every object keeps the
 * order of its keys (its metatable's __keys array), which ft.json.encode and chat
 * templates' tojson follow. */
static int l_decode(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    int ordered = ordered_option(L, 2, "ft.json.decode");
    ftl_json_decode(L, text, len, NULL, ordered);
    return 1;
}

/* The indent option at idx: true = 2 spaces, a number = that many, false/nil = none. */
static int indent_option(lua_State *L, int idx, int def, const char *op) {
    static const char *const options[] = {"indent", NULL};
    char where[32];
    snprintf(where, sizeof where, "ft.json.%s", op);
    ftl_check_options(L, idx, where, options);
    if (lua_isnoneornil(L, idx)) return def;
    int t = lua_getfield(L, idx, "indent");
    int indent = def;
    if (t == LUA_TBOOLEAN) indent = lua_toboolean(L, -1) ? 2 : 0;
    else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0 && lua_tointeger(L, -1) <= 16)
        indent = (int)lua_tointeger(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "ft.json.%s: option 'indent' must be a boolean or a number of spaces 0..16", op);
    lua_pop(L, 1);
    return indent;
}

/* ft.json.encode(value [, {indent = true | n}]) --> string */
static int l_encode(lua_State *L) {
    luaL_checkany(L, 1);
    int indent = indent_option(L, 2, 0, "encode");
    lua_settop(L, 1);
    ftl_json_buffer *b = ftl_json_encode(L, 1, indent, "encode");
    lua_pushlstring(L, b->p ? b->p : "", b->n);
    return 1;
}

/* ft.json.read(path [, {ordered = false}]) --> value */
static int l_read(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int ordered = ordered_option(L, 2, "ft.json.read");
    size_t len;
    char *text = ft_read_file(path, JSON_MAX_FILE, &len);
    if (!text) return luaL_error(L, "ft.json.read: %s", ft_last_error());
    /* Owned by a buffer so that a decoding error frees it. */
    ftl_json_buffer *b = ftl_json_buffer_new(L);
    b->p = text;
    b->n = len;
    b->cap = len + 1;
    ftl_json_decode(L, b->p, b->n, path, ordered);
    return 1;
}

/* ft.json.write(path, value [, {indent = 2}]): indented by default (as HuggingFace writes
 * config.json), with a final newline; atomic. */
static int l_write(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    int indent = indent_option(L, 3, 2, "write");
    lua_settop(L, 2);
    ftl_json_buffer *b = ftl_json_encode(L, 2, indent, "write");
    ftl_json_buffer_add(L, b, "\n", 1);
    if (ft_write_file(path, b->p, b->n) != 0) return luaL_error(L, "ft.json.write: %s", ft_last_error());
    return 0;
}

/* ---- ft.json.null and ft.json.array ------------------------------------------------------ */

static int null_tostring(lua_State *L) {
    lua_pushliteral(L, "ft.json.null");
    return 1;
}

/* ft.json.array([t]) --> t (or a new table), marked to encode as an array even when empty. */
static int l_array(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, FTL_JSON_ARRAY_MT);
        if (!lua_rawequal(L, -1, -2)) luaL_error(L, "ft.json.array: the table already has a metatable");
        lua_pop(L, 2);
    }
    luaL_setmetatable(L, FTL_JSON_ARRAY_MT);
    return 1;
}

void ftl_open_json(lua_State *L) {
    luaL_newmetatable(L, FTL_JSON_TREE_MT);
    lua_pushcfunction(L, ftl_json_tree_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, BUFFER_MT);
    lua_pushcfunction(L, buffer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, FTL_JSON_ARRAY_MT);
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {
        {"decode", l_decode},
        {"encode", l_encode},
        {"read", l_read},
        {"write", l_write},
        {"array", l_array},
        {NULL, NULL},
    };
    lua_createtable(L, 0, 6);
    ftl_register(L, fns);

    lua_newuserdatauv(L, 0, 0);   /* the null sentinel: one value, printed as ft.json.null */
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "ft.json.null");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, FTL_JSON_NULL_KEY);
    lua_setfield(L, -2, "null");

    lua_setfield(L, -2, "json");
}
