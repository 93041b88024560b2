/* The one options checker: every public function that takes an options table checks it here,
 * from C (ftl_check_options) or from Lua (ft.check_options). An unknown key is an error that
 * names the function, the key, the valid keys and the nearest valid one. */
#include <stdlib.h>
#include <string.h>

#include "ftl.h"

/* Edit distance between a and b (both short option names), capped at 64 characters. */
static int edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 64) n = 64;
    if (m > 64) m = 64;
    int row[65];
    for (size_t j = 0; j <= m; j++) row[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int up = row[j];
            int cost = a[i - 1] == b[j - 1] ? 0 : 1;
            int best = diag + cost;
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[m];
}

/* The valid name nearest to key, or NULL when none is near enough to be a likely typo. */
static const char *nearest(const char *key, const char *const *valid, int count) {
    const char *best = NULL;
    int best_d = 0;
    int limit = (int)strlen(key) / 3;
    if (limit < 2) limit = 2;
    for (int i = 0; i < count; i++) {
        int d = edit_distance(key, valid[i]);
        if (d <= limit && (best == NULL || d < best_d)) best = valid[i], best_d = d;
    }
    return best;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Raises "<where>: unknown option 'key' (valid options: a, b, c); did you mean 'b'?". */
static int unknown_option(lua_State *L, const char *where, int key, const char *const *valid, int count) {
    const char *sorted[128];
    if (count > 128) count = 128;
    memcpy(sorted, valid, (size_t)count * sizeof *sorted);
    qsort(sorted, (size_t)count, sizeof *sorted, compare_names);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (lua_type(L, key) == LUA_TSTRING) {
        lua_pushfstring(L, "%s: unknown option '%s' (valid options: ", where, lua_tostring(L, key));
    } else {
        lua_pushfstring(L, "%s: option keys must be names, got a %s key (valid options: ", where,
                        luaL_typename(L, key));
    }
    luaL_addvalue(&b);
    for (int i = 0; i < count; i++) {
        if (i > 0) luaL_addstring(&b, ", ");
        luaL_addstring(&b, sorted[i]);
    }
    if (count == 0) luaL_addstring(&b, "none");
    luaL_addchar(&b, ')');
    const char *near = lua_type(L, key) == LUA_TSTRING ? nearest(lua_tostring(L, key), valid, count) : NULL;
    if (near) {
        luaL_addstring(&b, "; did you mean '");
        luaL_addstring(&b, near);
        luaL_addstring(&b, "'?");
    }
    luaL_pushresult(&b);
    return lua_error(L);
}

void ftl_check_options(lua_State *L, int idx, const char *where, const char *const *valid) {
    idx = lua_absindex(L, idx);
    int t = lua_type(L, idx);
    if (t == LUA_TNONE || t == LUA_TNIL) return;
    if (t != LUA_TTABLE) luaL_error(L, "%s: options must be a table, got %s", where, luaL_typename(L, idx));
    int count = 0;
    while (valid[count]) count++;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        int ok = 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *key = lua_tostring(L, -1);
            for (int i = 0; i < count && !ok; i++) ok = strcmp(key, valid[i]) == 0;
        }
        if (!ok) unknown_option(L, where, lua_gettop(L), valid, count);
    }
}

/* ft.check_options(where, opts, valid): valid is an array of names (or a set: name -> true).
 * Returns opts, or an empty table for nil. */
static int l_check_options(lua_State *L) {
    const char *where = luaL_checkstring(L, 1);
    luaL_checktype(L, 3, LUA_TTABLE);
    const char *names[128];
    int count = 0;
    lua_pushnil(L);
    while (lua_next(L, 3)) {
        int name = lua_type(L, -1) == LUA_TSTRING ? -1 : -2; /* array value or set key */
        if (lua_type(L, name) != LUA_TSTRING) luaL_error(L, "ft.check_options: option names must be strings");
        if (count == 127) luaL_error(L, "ft.check_options: more than 127 option names");
        names[count++] = lua_tostring(L, name); /* anchored by the valid table */
        lua_pop(L, 1);
    }
    names[count] = NULL;
    ftl_check_options(L, 2, where, names);
    if (lua_isnoneornil(L, 2)) lua_newtable(L);
    else lua_pushvalue(L, 2);
    return 1;
}

static const luaL_Reg functions[] = {
    {"check_options", l_check_options},
    {NULL, NULL},
};

void ftl_open_options(lua_State *L) { ftl_register(L, functions); }
