/* How ftlua's REPL prints results: a value at the top level in full (strings raw, tensors
 * through their __tostring), values inside a table in brief (strings quoted, tensors as
 * shape and dtype, at most a few entries and levels). */
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "ft/tensor.h"
#include "ftl.h"
#include "ftlua.h"
#include "ftlua_repl.h"

#define BRIEF_ITEMS 12         /* entries shown of a printed table */
#define BRIEF_NESTED_ITEMS 4   /* entries shown of a table inside a printed table */
#define BRIEF_DEPTH 2          /* nesting levels expanded when printing a table */

const char *const ftlua_keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    NULL};

static int is_keyword(const char *s) {
    for (int i = 0; ftlua_keywords[i]; i++)
        if (strcmp(s, ftlua_keywords[i]) == 0) return 1;
    return 0;
}

int ftlua_is_name(const char *s) {
    if (!(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) return 0;
    for (const char *p = s + 1; *p; p++)
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9')))
            return 0;
    return 1;
}

static int has_tostring(lua_State *L, int idx) {
    int found = luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL;
    if (found) lua_pop(L, 1);
    return found;
}

static void push_brief(lua_State *L, int idx, int depth);

/* Key order for printing: numbers, then strings, then the rest; 1 if a < b. */
static int key_rank(lua_State *L, int idx) {
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER: return 0;
    case LUA_TSTRING: return 1;
    case LUA_TBOOLEAN: return 2;
    default: return 3;
    }
}

static int key_less(lua_State *L, int a, int b) {
    int ra = key_rank(L, a), rb = key_rank(L, b);
    if (ra != rb) return ra < rb;
    switch (ra) {
    case 0: return lua_compare(L, a, b, LUA_OPLT);
    case 1: {
        size_t la, lb;
        const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
        int c = memcmp(sa, sb, la < lb ? la : lb);
        return c < 0 || (c == 0 && la < lb);
    }
    case 2: return !lua_toboolean(L, a) && lua_toboolean(L, b);
    default: return (const char *)lua_topointer(L, a) < (const char *)lua_topointer(L, b);
    }
}

/* Pushes `k = v` (or `[k] = v`) for the key at index k and value at index v. */
static void push_entry(lua_State *L, int k, int v, int depth) {
    if (lua_type(L, k) == LUA_TSTRING && ftlua_is_name(lua_tostring(L, k)) &&
        !is_keyword(lua_tostring(L, k))) {
        lua_pushvalue(L, k);
    } else {
        lua_pushliteral(L, "[");
        push_brief(L, k, depth + 1);
        lua_pushliteral(L, "]");
        lua_concat(L, 3);
    }
    lua_pushliteral(L, " = ");
    push_brief(L, v, depth + 1);
    lua_concat(L, 3);
}

/* Appends the string on top of the stack to the text below it, with ", " between items. */
static void append_item(lua_State *L, int *shown) {
    if (*shown > 0) {
        lua_pushliteral(L, ", ");
        lua_insert(L, -2);
        lua_concat(L, 3);
    } else {
        lua_concat(L, 2);
    }
    (*shown)++;
}

/* Pushes "{1, 2, x = 3, ... +n more}": the array part in order, then the other keys sorted;
 * at most `limit` entries. The keys are found by repeated scans (limit x size), which
 * keeps this allocation-free and is cheap for the few entries shown. */
static void push_table(lua_State *L, int t, int depth) {
    if (depth >= BRIEF_DEPTH) {
        lua_pushnil(L);
        int empty = !lua_next(L, t);
        if (!empty) lua_pop(L, 2);
        if (empty) lua_pushliteral(L, "{}");
        else lua_pushliteral(L, "{...}");
        return;
    }
    luaL_checkstack(L, 12, "printing a table");
    int limit = depth == 0 ? BRIEF_ITEMS : BRIEF_NESTED_ITEMS;
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    lua_Integer others = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (!(lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1 && lua_tointeger(L, -1) <= n))
            others++;
    }
    lua_pushliteral(L, "{");
    int shown = 0;
    for (lua_Integer i = 1; i <= n && shown < limit; i++) {
        lua_rawgeti(L, t, i);
        push_brief(L, -1, depth + 1);
        lua_remove(L, -2);
        append_item(L, &shown);
    }
    lua_pushnil(L); /* previous key shown */
    int prev = lua_gettop(L);
    lua_pushnil(L); /* best candidate of this scan */
    int best = lua_gettop(L);
    int first = 1;
    while (shown < limit && shown < n + others) {
        int found = 0;
        lua_pushnil(L);
        while (lua_next(L, t)) {
            lua_pop(L, 1);
            int k = lua_gettop(L);
            if (lua_isinteger(L, k) && lua_tointeger(L, k) >= 1 && lua_tointeger(L, k) <= n)
                continue;
            if ((first || key_less(L, prev, k)) && (!found || key_less(L, k, best))) {
                lua_pushvalue(L, k);
                lua_replace(L, best);
                found = 1;
            }
        }
        if (!found) break;
        lua_pushvalue(L, best);
        lua_replace(L, prev);
        first = 0;
        lua_pushvalue(L, best);
        lua_rawget(L, t);
        push_entry(L, best, lua_gettop(L), depth);
        lua_remove(L, -2);
        /* the text sits below prev and best: move the entry there */
        lua_pushvalue(L, prev - 1);
        lua_insert(L, -2);
        append_item(L, &shown);
        lua_replace(L, prev - 1);
    }
    lua_pop(L, 2);
    if (n + others > shown)
        lua_pushfstring(L, "%s... +%I more", shown ? ", " : "", (lua_Integer)(n + others - shown));
    else
        lua_pushliteral(L, "");
    lua_pushliteral(L, "}");
    lua_concat(L, 3);
}

/* Pushes s quoted as a Lua string literal. */
static void push_quoted(lua_State *L, int idx) {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            luaL_addchar(&b, '\\');
            luaL_addchar(&b, (char)c);
        } else if (c == '\n') {
            luaL_addstring(&b, "\\n");
        } else if (c < 32 || c == 127) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\%d", c);
            luaL_addstring(&b, esc);
        } else {
            luaL_addchar(&b, (char)c);
        }
    }
    luaL_addchar(&b, '"');
    luaL_pushresult(&b);
}

/* Pushes the text of the value at idx. Depth 0 is a result printed by the REPL: strings
 * raw, __tostring in full. Deeper (inside a table): strings quoted, tensors as their shape
 * and dtype, other __tostring output cut to its first line. */
static void push_brief(lua_State *L, int idx, int depth) {
    idx = lua_absindex(L, idx);
    int type = lua_type(L, idx);
    if (type == LUA_TSTRING) {
        if (depth == 0) lua_pushvalue(L, idx);
        else push_quoted(L, idx);
        return;
    }
    if (type == LUA_TTABLE && !has_tostring(L, idx)) {
        push_table(L, idx, depth);
        return;
    }
    if (depth > 0) {
        const ft_tensor *t = type == LUA_TUSERDATA ? ftl_to_tensor(L, idx) : NULL;
        if (t != NULL) {
            char shape[128];
            if (t->ndim == 0) /* a scalar: its value says more than its shape */
                snprintf(shape, sizeof shape, "(%.6g)", ft_item(t));
            else
                ft_shape_str(t->shape, t->ndim, shape, sizeof shape);
            lua_pushfstring(L, "tensor%s %s", shape, ft_dtype_name(t->dtype));
            return;
        }
        if (type == LUA_TFUNCTION || type == LUA_TTHREAD ||
            (type == LUA_TUSERDATA && !has_tostring(L, idx))) {
            lua_pushfstring(L, "<%s>", luaL_typename(L, idx));
            return;
        }
    }
    size_t len;
    const char *s = luaL_tolstring(L, idx, &len);
    const char *nl = depth > 0 ? memchr(s, '\n', len) : NULL;
    if (nl != NULL) {
        lua_pushlstring(L, s, (size_t)(nl - s));
        lua_pushliteral(L, " ...");
        lua_concat(L, 2);
        lua_remove(L, -2);
    }
}

/* print-like function for REPL results: values separated by tabs, as lua's REPL does,
 * unless one of them takes several lines (a tensor): then each result is printed on its
 * own lines after a "[i]" label, so that `return a, b` shows where b starts. */
static int repl_print(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checkstack(L, n + LUA_MINSTACK, "too many results to print");
    int multiline = 0;
    for (int i = 1; i <= n; i++) {
        size_t len;
        push_brief(L, i, 0);
        const char *s = lua_tolstring(L, -1, &len);
        if (memchr(s, '\n', len) != NULL) multiline = 1;
    }
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = lua_tolstring(L, n + i, &len);
        if (multiline && n > 1) {
            char label[32];
            snprintf(label, sizeof label, "%s[%d]", i > 1 ? "\n" : "", i);
            lua_writestring(label, strlen(label));
            lua_writeline();
        } else if (i > 1) {
            lua_writestring("\t", 1);
        }
        lua_writestring(s, len);
        if (multiline && i < n) lua_writeline();
    }
    lua_writeline();
    return 0;
}

void ftlua_print_results(lua_State *L) {
    int n = lua_gettop(L);
    if (n == 0) return;
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_pushcfunction(L, repl_print);
    lua_insert(L, 1);
    if (lua_pcall(L, n, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        ftlua_message(NULL, lua_pushfstring(L, "error printing the result (%s)", msg));
    }
}
