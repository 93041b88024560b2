/* ft.json's encoder: a table whose keys are exactly 1..n (or that carries the array
 * marker) is an array, one with string keys an object written with its keys sorted
 * (stable output), or in the order of its metatable's __keys array (ft.json.decode's
 * ordered objects; keys it does not list follow, sorted); anything else (functions, cycles, other keys, NaN) is an error naming
 * where it is. */
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft/utf8.h"
#include "lua_json_internal.h"

typedef struct path_part {
    const char *key;      /* an object key, or NULL for an array index */
    size_t keylen;
    lua_Integer index;
} path_part;

typedef struct encoder {
    lua_State *L;
    const char *op;       /* "encode" or "write" */
    ftl_json_buffer *out;
    int indent;           /* spaces per level; 0 writes everything on one line */
    int visiting;         /* stack index of the set of tables being encoded (cycles) */
    int null_idx;         /* stack index of ft.json.null */
    int array_mt;         /* stack index of the array marker */
    path_part path[FTL_JSON_MAX_DEPTH + 1];
} encoder;

static void add(encoder *e, const char *s, size_t len) { ftl_json_buffer_add(e->L, e->out, s, len); }
static void add_str(encoder *e, const char *s) { add(e, s, strlen(s)); }

static int is_identifier(const char *s, size_t len) {
    if (len == 0 || (s[0] >= '0' && s[0] <= '9')) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return 0;
    }
    return 1;
}

/* Raises "ft.json.<op>: <message> at <path>" with the path in Lua syntax (value.a[2]). */
static int encode_error(encoder *e, int depth, const char *fmt, ...) {
    lua_State *L = e->L;
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "value");
    for (int k = 0; k < depth; k++) {
        const path_part *p = &e->path[k];
        if (!p->key) {
            lua_pushfstring(L, "[%I]", (LUAI_UACINT)p->index);
            luaL_addvalue(&b);
        } else if (is_identifier(p->key, p->keylen)) {
            luaL_addchar(&b, '.');
            luaL_addlstring(&b, p->key, p->keylen);
        } else {
            luaL_addstring(&b, "[\"");
            luaL_addlstring(&b, p->key, p->keylen);
            luaL_addstring(&b, "\"]");
        }
    }
    luaL_pushresult(&b);
    if (depth == 0) return luaL_error(L, "ft.json.%s: %s", e->op, lua_tostring(L, -2));
    return luaL_error(L, "ft.json.%s: %s at %s", e->op, lua_tostring(L, -2), lua_tostring(L, -1));
}

static void encode_string(encoder *e, const char *s, size_t len, int depth) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    add(e, "\"", 1);
    while (p < end) {
        const unsigned char *run = p;   /* copy plain bytes in runs */
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\' && *p < 0x80) p++;
        if (p > run) add(e, (const char *)run, (size_t)(p - run));
        if (p >= end) break;
        unsigned char c = *p;
        if (c >= 0x80) {
            int n = ft_utf8_sequence((const char *)p, (size_t)(end - p));
            if (!n) {
                char hex[8];
                snprintf(hex, sizeof hex, "0x%02X", c);
                encode_error(e, depth, "a string is not valid UTF-8 (byte %d is %s)",
                             (int)(p - (const unsigned char *)s) + 1, hex);
            }
            add(e, (const char *)p, (size_t)n);
            p += n;
            continue;
        }
        char esc[8];
        switch (c) {
        case '"': add_str(e, "\\\""); break;
        case '\\': add_str(e, "\\\\"); break;
        case '\b': add_str(e, "\\b"); break;
        case '\f': add_str(e, "\\f"); break;
        case '\n': add_str(e, "\\n"); break;
        case '\r': add_str(e, "\\r"); break;
        case '\t': add_str(e, "\\t"); break;
        default: add(e, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", c)); break;
        }
        p++;
    }
    add(e, "\"", 1);
}

/* The shortest of %.14g .. %.17g that reads back as v, always with a '.' or an exponent
 * so that it decodes as a float again ("1.0", not "1"). */
static void encode_float(encoder *e, double v, int depth) {
    if (isnan(v) || isinf(v))
        encode_error(e, depth, "cannot encode %s (JSON has no NaN or infinity)", isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf");
    char num[48];
    for (int prec = 14; prec <= 17; prec++) {
        snprintf(num, sizeof num, "%.*g", prec, v);
        if (strtod(num, NULL) == v) break;
    }
    char point = localeconv()->decimal_point[0];   /* a locale may print 1,5 */
    int has_mark = 0;
    for (char *c = num; *c; c++) {
        if (*c == point) *c = '.';
        if (*c == '.' || *c == 'e') has_mark = 1;
    }
    add_str(e, num);
    if (!has_mark) add_str(e, ".0");
}

static void newline(encoder *e, int depth) {
    if (!e->indent) return;
    size_t n = (size_t)e->indent * (size_t)depth;
    char *p = ftl_json_buffer_reserve(e->L, e->out, n + 1);
    p[0] = '\n';
    memset(p + 1, ' ', n);
    e->out->n += n + 1;
}

typedef struct key_ref {
    const char *s;
    size_t len;
    lua_Integer place;   /* its index in __keys, or LUA_MAXINTEGER when not listed */
} key_ref;

static int cmp_keys(const void *pa, const void *pb) {
    const key_ref *a = pa, *b = pb;
    if (a->place != b->place) return a->place < b->place ? -1 : 1;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->s, b->s, n);
    if (c) return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static void encode_value(encoder *e, int idx, int depth);

static void encode_table(encoder *e, int idx, int depth) {
    lua_State *L = e->L;
    if (depth >= FTL_JSON_MAX_DEPTH)
        encode_error(e, depth, "tables nested more than %d levels deep", FTL_JSON_MAX_DEPTH);
    luaL_checkstack(L, 6, "tables nested too deeply");
    lua_pushvalue(L, idx);
    if (lua_rawget(L, e->visiting) != LUA_TNIL)
        encode_error(e, depth, "a table contains itself (a cycle cannot be encoded)");
    lua_pop(L, 1);

    int marked = 0;
    if (lua_getmetatable(L, idx)) {
        marked = lua_rawequal(L, -1, e->array_mt);
        lua_pop(L, 1);
    }
    /* Classify: keys exactly 1..n -> array, all strings -> object. */
    lua_Integer n = 0, max = 0;
    int nstrings = 0, bad_key = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        n++;
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k > max) max = k;
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            nstrings++;
        }
    }
    int is_array = nstrings == 0 && max == n && (n > 0 || marked);
    if (!is_array && n > 0 && (nstrings != n || marked)) bad_key = 1;
    if (bad_key) {
        /* Name the first key that does not fit. */
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            int t = lua_type(L, -1);
            if (marked ? !(lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1 && lua_tointeger(L, -1) <= n)
                       : t != LUA_TSTRING) {
                const char *what = t == LUA_TNUMBER || t == LUA_TSTRING
                                       ? lua_pushfstring(L, "the key %s", luaL_tolstring(L, -1, NULL))
                                       : lua_pushfstring(L, "a %s key", luaL_typename(L, -1));
                if (marked)
                    encode_error(e, depth, "an array (marked with ft.json.array) has %s; arrays have the keys 1..n",
                                 what);
                encode_error(e, depth, "cannot encode a table with %s: object keys must be strings, and "
                             "arrays have exactly the keys 1..n", what);
            }
        }
    }

    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, e->visiting);
    path_part *part = &e->path[depth];
    if (is_array) {
        add(e, "[", 1);
        for (lua_Integer i = 1; i <= n; i++) {
            if (i > 1) add(e, ",", 1);
            newline(e, depth + 1);
            part->key = NULL;
            part->index = i;
            lua_rawgeti(L, idx, i);
            encode_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
        }
        if (n > 0) newline(e, depth);
        add(e, "]", 1);
    } else {
        /* Sorted keys; the strings stay alive as keys of the table. */
        int base = lua_gettop(L);
        key_ref *keys = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *keys, 0);
        /* the places of an ordered object's keys: key -> index in its __keys */
        int places = 0;
        if (lua_getmetatable(L, idx)) {
            if (lua_getfield(L, -1, "__keys") == LUA_TTABLE) {
                lua_Integer m = (lua_Integer)lua_rawlen(L, -1);
                lua_createtable(L, 0, (int)(m < 1 << 20 ? m : 1 << 20));
                for (lua_Integer i = 1; i <= m; i++) {
                    if (lua_rawgeti(L, -2, i) == LUA_TSTRING) {
                        lua_pushinteger(L, i);
                        lua_rawset(L, -3);
                    } else {
                        lua_pop(L, 1);
                    }
                }
                places = lua_gettop(L);
            }
        }
        lua_Integer k = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            keys[k].s = lua_tolstring(L, -1, &keys[k].len);
            keys[k].place = LUA_MAXINTEGER;
            if (places) {
                lua_pushvalue(L, -1);
                if (lua_rawget(L, places) == LUA_TNUMBER) keys[k].place = lua_tointeger(L, -1);
                lua_pop(L, 1);
            }
            k++;
        }
        qsort(keys, (size_t)n, sizeof *keys, cmp_keys);
        add(e, "{", 1);
        for (lua_Integer i = 0; i < n; i++) {
            if (i > 0) add(e, ",", 1);
            newline(e, depth + 1);
            part->key = keys[i].s;
            part->keylen = keys[i].len;
            encode_string(e, keys[i].s, keys[i].len, depth);
            add_str(e, e->indent ? ": " : ":");
            lua_pushlstring(L, keys[i].s, keys[i].len);
            lua_rawget(L, idx);
            encode_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
        }
        if (n > 0) newline(e, depth);
        add(e, "}", 1);
        lua_settop(L, base);   /* keys, and an ordered object's metatable, __keys and places */
    }
    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, e->visiting);
}

static void encode_value(encoder *e, int idx, int depth) {
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: add_str(e, "null"); break;
    case LUA_TBOOLEAN: add_str(e, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            char num[32];
            add(e, num, (size_t)snprintf(num, sizeof num, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx)));
        } else {
            encode_float(e, lua_tonumber(L, idx), depth);
        }
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        encode_string(e, s, len, depth);
        break;
    }
    case LUA_TTABLE: encode_table(e, idx, depth); break;
    default:
        if (lua_rawequal(L, idx, e->null_idx)) {
            add_str(e, "null");
        } else if (ftl_to_tensor(L, idx)) {
            encode_error(e, depth, "cannot encode a tensor (convert it with t:totable())");
        } else {
            encode_error(e, depth, "cannot encode a %s", luaL_typename(L, idx));
        }
    }
}

ftl_json_buffer *ftl_json_encode(lua_State *L, int idx, int indent, const char *op) {
    idx = lua_absindex(L, idx);
    encoder *e = lua_newuserdatauv(L, sizeof *e, 0);   /* the path table is large */
    memset(e, 0, sizeof *e);
    e->L = L;
    e->op = op;
    e->indent = indent;
    lua_newtable(L);
    e->visiting = lua_gettop(L);
    ftl_json_push_null(L);
    e->null_idx = lua_gettop(L);
    luaL_getmetatable(L, FTL_JSON_ARRAY_MT);
    e->array_mt = lua_gettop(L);
    e->out = ftl_json_buffer_new(L);
    encode_value(e, idx, 0);
    lua_replace(L, e->visiting - 1);   /* keep only the buffer */
    lua_settop(L, e->visiting - 1);
    return lua_touserdata(L, -1);
}
