/* Tab completion in ftlua's REPL: through dotted and colon paths ("ft.nn.Con", "t:res"),
 * over the fields of tables, methods found through metatables and class chains, the fields
 * a tensor answers, and ft's Lua submodules before they are loaded. Inside a string, file
 * names (readline's default). */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* strdup */
#endif

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>

#include "ftl.h"
#include "ftlua_repl.h"

static lua_State *replL = NULL; /* the state tab completion looks names up in */

/* Adds the identifier keys of the table at t to the set at set. */
static void add_keys(lua_State *L, int set, int t) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING && ftlua_is_name(lua_tostring(L, -1))) {
            lua_pushvalue(L, -1);
            lua_pushboolean(L, 1);
            lua_rawset(L, set);
        }
    }
}

/* Fields a tensor's __index answers besides its methods. */
static const char *const tensor_fields[] = {"requires_grad", "grad", "is_leaf", "grad_fn", NULL};

/* Tables of an ft.nn module instance whose entries its __index answers (m.weight, m.fc). */
static const char *const module_member_tables[] = {"_parameters", "_buffers", "_modules", NULL};

static void add_name(lua_State *L, int set, const char *name) {
    lua_pushboolean(L, 1);
    lua_setfield(L, set, name);
}

/* Adds the names of the Lua modules "ft.NAME" that require would find on package.path,
 * loaded or not: for each template "PREFIX?SUFFIX", the entries of PREFIX"ft" that end in
 * SUFFIX (or, for a SUFFIX such as "/init.lua", the folders holding it). */
static void add_submodules(lua_State *L, int set, const char *module) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *path = lua_tostring(L, -1);
    if (path == NULL) {
        lua_pop(L, 2);
        return;
    }
    const char *p = path;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char tmpl[4096];
        if (len > 0 && len < sizeof tmpl) {
            memcpy(tmpl, p, len);
            tmpl[len] = '\0';
            char *q = strchr(tmpl, '?');
            if (q != NULL && strchr(q + 1, '?') == NULL) {
                *q = '\0';
                const char *suffix = q + 1;
                size_t slen = strlen(suffix);
                char dir[4096];
                int dlen = snprintf(dir, sizeof dir, "%s%s", tmpl, module);
                DIR *d = dlen > 0 && (size_t)dlen < sizeof dir ? opendir(dir) : NULL;
                struct dirent *e;
                while (d != NULL && (e = readdir(d)) != NULL) {
                    char name[256];
                    size_t nlen = strlen(e->d_name);
                    if (e->d_name[0] == '.' || nlen >= sizeof name) continue;
                    if (strchr(suffix, '/') != NULL) { /* "?/init.lua": a folder with that file */
                        char file[8192];
                        int flen = snprintf(file, sizeof file, "%s/%s%s", dir, e->d_name, suffix);
                        if (flen < 0 || (size_t)flen >= sizeof file || access(file, R_OK) != 0)
                            continue;
                        memcpy(name, e->d_name, nlen + 1);
                    } else {
                        if (nlen <= slen || strcmp(e->d_name + nlen - slen, suffix) != 0) continue;
                        memcpy(name, e->d_name, nlen - slen);
                        name[nlen - slen] = '\0';
                    }
                    if (ftlua_is_name(name)) add_name(L, set, name);
                }
                if (d != NULL) closedir(d);
            }
        }
        p += len;
        if (*p == ';') p++;
    }
    lua_pop(L, 2);
}

/* Adds the names reachable as v.name or v:name: the keys of a table, and the same for the
 * __index chain of the metatable (methods of strings and of classes, through each class's
 * parent). An __index function hides its names: the tables it keeps as upvalues (the
 * tensor methods, an ft.nn instance's class) and the metatable's own keys are the best
 * guess. For the ft module, its Lua submodules not loaded yet. */
static void add_fields(lua_State *L, int set, int v, int depth) {
    v = lua_absindex(L, v);
    luaL_checkstack(L, 8, "completing a name");
    if (lua_type(L, v) == LUA_TTABLE) {
        add_keys(L, set, v);
        for (int i = 0; module_member_tables[i]; i++) {
            lua_pushstring(L, module_member_tables[i]);
            if (lua_rawget(L, v) == LUA_TTABLE) add_keys(L, set, lua_gettop(L));
            lua_pop(L, 1);
        }
        luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        lua_getfield(L, -1, "ft");
        if (lua_rawequal(L, -1, v)) add_submodules(L, set, "ft");
        lua_pop(L, 2);
    }
    if (depth < 8 && lua_getmetatable(L, v)) {
        int mt = lua_gettop(L);
        lua_pushliteral(L, "__index");
        int t = lua_rawget(L, mt);
        if (t == LUA_TTABLE) {
            add_fields(L, set, -1, depth + 1);
        } else if (t == LUA_TFUNCTION) {
            int fn = lua_gettop(L);
            add_keys(L, set, mt);
            const char *up;
            for (int i = 1; (up = lua_getupvalue(L, fn, i)) != NULL; i++) {
                /* a Lua closure's _ENV is the global table, not the object's names */
                if (lua_istable(L, -1) && strcmp(up, "_ENV") != 0) {
                    if (lua_iscfunction(L, fn)) add_keys(L, set, lua_gettop(L));
                    else add_fields(L, set, lua_gettop(L), depth + 1);
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 2);
    }
    if (lua_type(L, v) == LUA_TUSERDATA && luaL_testudata(L, v, FTL_TENSOR_MT) != NULL) {
        for (int i = 0; tensor_fields[i]; i++) add_name(L, set, tensor_fields[i]);
    }
}

/* Completion candidates for text such as "ft.nn.Con" or "t:res": a sorted array of full
 * texts; after ':' only the names whose value is a function (methods, not fields). Walking
 * the path may run __index functions (lazy submodules), hence the protected call. */
static int collect_completions(lua_State *L) {
    const char *text = luaL_checkstring(L, 1);
    const char *sep = NULL;
    for (const char *p = text; *p; p++)
        if (*p == '.' || *p == ':') sep = p;
    lua_newtable(L);
    int set = lua_gettop(L);
    const char *partial = text;
    int obj = 0; /* for "v:name", the index of v */
    if (sep == NULL) {
        lua_pushglobaltable(L);
        add_fields(L, set, -1, 0);
        lua_pop(L, 1);
        for (int i = 0; ftlua_keywords[i]; i++) {
            lua_pushboolean(L, 1);
            lua_setfield(L, set, ftlua_keywords[i]);
        }
    } else {
        partial = sep + 1;
        lua_pushglobaltable(L);
        const char *p = text;
        while (p < sep) { /* walk "a.b.c" up to the last separator */
            const char *end = p;
            while (end < sep && *end != '.' && *end != ':') end++;
            if (end < sep && *end == ':') return 0; /* ':' only before the last name */
            lua_pushlstring(L, p, (size_t)(end - p));
            int t = lua_type(L, -2);
            if (!ftlua_is_name(lua_tostring(L, -1)) ||
                !(t == LUA_TTABLE || t == LUA_TUSERDATA || t == LUA_TSTRING))
                return 0;
            lua_gettable(L, -2);
            lua_remove(L, -2);
            p = end + 1;
        }
        add_fields(L, set, -1, 0);
        if (*sep == ':') obj = lua_gettop(L);
        else lua_pop(L, 1);
    }
    size_t plen = strlen(partial);
    size_t head = (size_t)(partial - text);
    lua_newtable(L);
    int out = lua_gettop(L);
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, set)) {
        lua_pop(L, 1);
        const char *name = lua_tostring(L, -1);
        /* names starting with '_' only when asked for */
        if (strncmp(name, partial, plen) == 0 && (name[0] != '_' || partial[0] == '_')) {
            if (obj != 0) {
                lua_pushvalue(L, -1);
                int is_method = lua_gettable(L, obj) == LUA_TFUNCTION;
                lua_pop(L, 1);
                if (!is_method) continue;
            }
            lua_pushlstring(L, text, head);
            lua_pushvalue(L, -2);
            lua_concat(L, 2);
            lua_rawseti(L, out, ++n);
        }
    }
    return 1;
}

static char **completions = NULL;
static int ncompletions = 0, next_completion = 0;
static int completing_names = 0; /* the last matches are Lua names, not file names */

static void free_completions(void) {
    for (int i = 0; i < ncompletions; i++) free(completions[i]);
    free(completions);
    completions = NULL;
    ncompletions = 0;
}

static char *completion_generator(const char *text, int state) {
    (void)text;
    if (state == 0) next_completion = 0;
    return next_completion < ncompletions ? strdup(completions[next_completion++]) : NULL;
}

static char **attempt_completion(const char *text, int start, int end) {
    (void)start;
    (void)end;
    rl_completion_append_character = '\0';
    completing_names = 0;
    if (rl_completion_quote_character != 0) return NULL; /* inside a string: file names */
    completing_names = 1;
    rl_attempted_completion_over = 1;
    lua_State *L = replL;
    int top = lua_gettop(L);
    free_completions();
    lua_pushcfunction(L, collect_completions);
    lua_pushstring(L, text);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
        int n = (int)lua_rawlen(L, -1);
        completions = calloc((size_t)n + 1, sizeof *completions);
        for (int i = 0; completions != NULL && i < n; i++) {
            lua_rawgeti(L, -1, i + 1);
            const char *s = lua_tostring(L, -1);
            char *copy = s ? strdup(s) : NULL;
            if (copy != NULL) completions[ncompletions++] = copy;
            lua_pop(L, 1);
        }
    }
    lua_settop(L, top);
    return ncompletions > 0 ? rl_completion_matches(text, completion_generator) : NULL;
}

/* Lists candidates by their last name only ("Conv2d", not "ft.nn.Conv2d"). */
static void display_matches(char **matches, int num, int max_length) {
    if (!completing_names) {
        rl_display_match_list(matches, num, max_length);
        rl_forced_update_display();
        return;
    }
    const char *last = NULL;
    for (const char *p = matches[1] ? matches[1] : matches[0]; *p; p++)
        if (*p == '.' || *p == ':') last = p;
    size_t skip = last ? (size_t)(last - (matches[1] ? matches[1] : matches[0]) + 1) : 0;
    char **shown = malloc(((size_t)num + 2) * sizeof *shown);
    if (shown == NULL) return;
    for (int i = 0; i <= num; i++)
        shown[i] = strlen(matches[i]) >= skip ? matches[i] + skip : matches[i];
    shown[num + 1] = NULL;
    rl_display_match_list(shown, num, max_length - (int)skip);
    free(shown);
    rl_forced_update_display();
}

void ftlua_completion_close(void) { free_completions(); }

void ftlua_completion_open(lua_State *L) {
    replL = L;
    /* '.' and ':' are not word breaks: "ft.nn.Con" is one word */
    rl_completer_word_break_characters = " \t\n\"\\'><=;+-*/%^~#&|{}()[],";
    rl_completer_quote_characters = "\"'";
    rl_attempted_completion_function = attempt_completion;
    rl_completion_display_matches_hook = display_matches;
}
