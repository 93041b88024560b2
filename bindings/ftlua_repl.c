/* ftlua's interactive REPL, started by ftlua.c with no script or with -i.
 *
 * On a terminal: readline editing, a history file, tab completion through dotted/colon
 * paths (fields, methods through metatables and class chains, ft's Lua submodules before
 * they are loaded), Ctrl-C clears the line or interrupts the running statement. With stdin
 * not a terminal the same REPL reads plain lines quietly (no banner, no prompts) so a
 * session can be piped in. Both print the results of expressions (`x = 1; x` too), report
 * errors without leaving, and define the global help (ft.help). */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* sigaction, pselect, getline, SIGWINCH */
#endif

#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/select.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lauxlib.h>
#include <lua.h>

#include "ft/runtime.h"
#include "ft/tensor.h"
#include "ftl.h"
#include "ftlua.h"

#define FTLUA_PROMPT "ft> "
#define FTLUA_PROMPT2 ">> "
#define HISTORY_MAX 2000       /* lines kept in the history file (and entries in memory) */
#define BRIEF_ITEMS 12         /* entries shown of a printed table */
#define BRIEF_NESTED_ITEMS 4   /* entries shown of a table inside a printed table */
#define BRIEF_DEPTH 2          /* nesting levels expanded when printing a table */
#define LINE_INTERRUPTED (-2)  /* loadline: Ctrl-C at the prompt */

static lua_State *replL = NULL; /* the state tab completion looks names up in */

/* ========================================================================== */
/* Printing results                                                            */
/* ========================================================================== */

static const char *const lua_keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
    NULL};

static int is_keyword(const char *s) {
    for (int i = 0; lua_keywords[i]; i++)
        if (strcmp(s, lua_keywords[i]) == 0) return 1;
    return 0;
}

static int is_name(const char *s) {
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
    if (lua_type(L, k) == LUA_TSTRING && is_name(lua_tostring(L, k)) &&
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

static void l_print(lua_State *L) {
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

/* ========================================================================== */
/* Reading lines: readline on a terminal, plain lines otherwise                */
/* ========================================================================== */

static int repl_tty = 0;             /* stdin is a terminal: readline, prompts, history */
static char history_path[4096] = ""; /* "" = no history file */

static volatile sig_atomic_t got_sigint = 0, got_sigwinch = 0;
static char *rl_result = NULL;
static int rl_result_ready = 0;

static void on_prompt_signal(int sig) {
    if (sig == SIGINT) got_sigint = 1;
    else got_sigwinch = 1;
}

static void on_rl_line(char *line) {
    rl_result = line;
    rl_result_ready = 1;
    rl_callback_handler_remove(); /* no new prompt until asked */
}

/* Reads one line with readline's callback interface, so Ctrl-C at the prompt can abandon
 * the line instead of killing the process. Returns 1 (line in *out, malloc'd), 0 at EOF
 * (Ctrl-D), -1 on Ctrl-C. */
static int tty_readline(const char *prompt, char **out) {
    struct sigaction sa, old_int, old_winch;
    sigset_t block, orig;
    sa.sa_handler = on_prompt_signal;
    sa.sa_flags = 0; /* no SA_RESTART: pselect must return */
    sigemptyset(&sa.sa_mask);
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGWINCH);
    /* signals are only delivered inside pselect, so none is lost between check and wait */
    sigprocmask(SIG_BLOCK, &block, &orig);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGWINCH, &sa, &old_winch);
    got_sigint = got_sigwinch = 0;
    rl_result = NULL;
    rl_result_ready = 0;
    rl_callback_handler_install(prompt, on_rl_line);
    int status = 1;
    while (!rl_result_ready) {
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(STDIN_FILENO, &fds);
        int r = pselect(STDIN_FILENO + 1, &fds, NULL, NULL, NULL, &orig);
        if (got_sigwinch) {
            got_sigwinch = 0;
            rl_resize_terminal();
        }
        if (got_sigint) {
            got_sigint = 0;
            rl_free_line_state();
            rl_callback_sigcleanup();
            rl_callback_handler_remove();
            fputs("^C\n", stdout);
            fflush(stdout);
            status = -1;
            break;
        }
        if (r < 0) {
            if (errno == EINTR) continue;
            rl_callback_handler_remove();
            status = 0;
            break;
        }
        if (r > 0) rl_callback_read_char();
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGWINCH, &old_winch, NULL);
    sigprocmask(SIG_SETMASK, &orig, NULL);
    if (status == 1) {
        if (rl_result == NULL) return 0;
        *out = rl_result;
    }
    return status;
}

static int plain_readline(char **out) {
    char *line = NULL;
    size_t cap = 0;
    if (getline(&line, &cap, stdin) < 0) {
        free(line);
        return 0;
    }
    *out = line;
    return 1;
}

static const char *get_prompt(lua_State *L, int firstline) {
    lua_getglobal(L, firstline ? "_PROMPT" : "_PROMPT2");
    const char *p = lua_tostring(L, -1);
    return p ? p : firstline ? FTLUA_PROMPT : FTLUA_PROMPT2;
}

/* Reads a line and pushes it. 1 = pushed, 0 = end of input, -1 = Ctrl-C. */
static int pushline(lua_State *L, int firstline) {
    char *b = NULL;
    int status;
    if (repl_tty) {
        status = tty_readline(get_prompt(L, firstline), &b);
        lua_pop(L, 1); /* prompt */
    } else {
        status = plain_readline(&b);
    }
    if (status <= 0) return status;
    size_t l = strlen(b);
    while (l > 0 && (b[l - 1] == '\n' || b[l - 1] == '\r')) b[--l] = '\0';
    if (firstline && b[0] == '=') /* Lua 5.2's "=expr" */
        lua_pushfstring(L, "return %s", b + 1);
    else
        lua_pushlstring(L, b, l);
    free(b);
    return 1;
}

/* Keeps a complete statement in the readline history and appends it to the file. */
static void saveline(const char *line) {
    if (!repl_tty || line[0] == '\0') return;
    HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last != NULL && strcmp(last->line, line) == 0) return;
    add_history(line);
    if (history_path[0] != '\0') append_history(1, history_path);
}

/* History file: $FTLUA_HISTORY (empty: none) or ~/.ftlua_history. Entries carry timestamps
 * so that a multi-line statement is recalled as one entry. */
static void history_open(void) {
    const char *env = getenv("FTLUA_HISTORY");
    const char *home = getenv("HOME");
    history_comment_char = '#'; /* timestamps are written as "#<seconds>" lines */
    history_write_timestamps = 1;
    history_multiline_entries = 1;
    if (env != NULL)
        snprintf(history_path, sizeof history_path, "%s", env);
    else if (home != NULL && home[0] != '\0')
        snprintf(history_path, sizeof history_path, "%s/.ftlua_history", home);
    if (history_path[0] == '\0') return;
    int fd = open(history_path, O_WRONLY | O_CREAT | O_APPEND, 0600); /* append needs a file */
    if (fd < 0) {
        history_path[0] = '\0';
        return;
    }
    close(fd);
    history_truncate_file(history_path, HISTORY_MAX);
    read_history(history_path);
    stifle_history(HISTORY_MAX);
}

static void history_close(void) {
    if (history_path[0] != '\0') history_truncate_file(history_path, HISTORY_MAX);
}

/* ========================================================================== */
/* Tab completion                                                              */
/* ========================================================================== */

/* Adds the identifier keys of the table at t to the set at set. */
static void add_keys(lua_State *L, int set, int t) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) == LUA_TSTRING && is_name(lua_tostring(L, -1))) {
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
                    if (is_name(name)) add_name(L, set, name);
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
        for (int i = 0; lua_keywords[i]; i++) {
            lua_pushboolean(L, 1);
            lua_setfield(L, set, lua_keywords[i]);
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
            if (!is_name(lua_tostring(L, -1)) ||
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

static void completion_init(void) {
    /* '.' and ':' are not word breaks: "ft.nn.Con" is one word */
    rl_completer_word_break_characters = " \t\n\"\\'><=;+-*/%^~#&|{}()[],";
    rl_completer_quote_characters = "\"'";
    rl_attempted_completion_function = attempt_completion;
    rl_completion_display_matches_hook = display_matches;
}

/* ========================================================================== */
/* The REPL                                                                    */
/* ========================================================================== */

/* A syntax error ending in "<eof>" means the statement is not finished yet. */
static int incomplete(lua_State *L, int status) {
    if (status == LUA_ERRSYNTAX) {
        size_t lmsg;
        const char *msg = lua_tolstring(L, -1, &lmsg);
        const char *mark = "<eof>";
        size_t marklen = strlen(mark);
        if (lmsg >= marklen && strcmp(msg + lmsg - marklen, mark) == 0) return 1;
    }
    return 0;
}

/* Compiles "return <line>;" so expressions print their values. */
static int addreturn(lua_State *L) {
    const char *line = lua_tostring(L, -1);
    const char *retline = lua_pushfstring(L, "return %s;", line);
    int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
    if (status == LUA_OK) {
        lua_remove(L, -2);
        saveline(line);
    } else {
        lua_pop(L, 2);
    }
    return status;
}

/* Compiles "<statements>; return <expression>;" for a line such as `x = 1; x` whose end is
 * an expression after a ';' that splits it into a valid chunk (the last such ';'). The
 * whole line as a statement comes first: a split is tried only when that is a syntax error
 * (`x = 1; x` fails "near <eof>" as an unfinished statement does; a split of an unfinished
 * one stays unfinished). LUA_OK leaves the line and the function on the stack; otherwise
 * just the line. */
static int addreturn_split(lua_State *L) {
    size_t len;
    const char *line = lua_tolstring(L, -1, &len);
    int status = luaL_loadbuffer(L, line, len, "=stdin");
    lua_pop(L, 1);
    if (status != LUA_ERRSYNTAX) return LUA_ERRSYNTAX; /* multiline() compiles it as it is */
    for (size_t i = len; i-- > 0;) {
        if (line[i] != ';') continue;
        lua_pushlstring(L, line, i + 1);
        lua_pushliteral(L, " return ");
        lua_pushstring(L, line + i + 1);
        lua_pushliteral(L, ";");
        lua_concat(L, 4);
        size_t clen;
        const char *chunk = lua_tolstring(L, -1, &clen);
        status = luaL_loadbuffer(L, chunk, clen, "=stdin");
        lua_remove(L, -2); /* the chunk's text */
        if (status == LUA_OK) {
            saveline(line);
            return LUA_OK;
        }
        lua_pop(L, 1);
    }
    return LUA_ERRSYNTAX;
}

/* Reads continuation lines until the statement compiles or fails for another reason. */
static int multiline(lua_State *L) {
    for (;;) {
        size_t len;
        const char *line = lua_tolstring(L, 1, &len);
        int status = luaL_loadbuffer(L, line, len, "=stdin");
        if (!incomplete(L, status)) {
            saveline(line);
            return status;
        }
        int r = pushline(L, 0);
        if (r == 0) { /* end of input: report the incomplete statement */
            saveline(line);
            return status;
        }
        if (r < 0) return LINE_INTERRUPTED;
        lua_remove(L, -2); /* the "<eof>" message */
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
}

/* Reads and compiles one statement: LUA_OK with the function on top, an error status with
 * the message on top, -1 at end of input, LINE_INTERRUPTED after Ctrl-C. */
static int loadline(lua_State *L) {
    lua_settop(L, 0);
    int r = pushline(L, 1);
    if (r == 0) return -1;
    if (r < 0) return LINE_INTERRUPTED;
    int status = addreturn(L);
    if (status != LUA_OK && strchr(lua_tostring(L, 1), ';') != NULL) status = addreturn_split(L);
    if (status != LUA_OK) status = multiline(L);
    if (status == LINE_INTERRUPTED) return status;
    lua_remove(L, 1);
    return status;
}

static void print_banner(void) {
    int threads = ft_get_num_threads();
    printf("ftlua %s (%s, %d thread%s). help() or help(ft.nn.Linear) for docs, Tab completes,"
           " Ctrl-D exits.\n",
           FTLUA_VERSION, LUA_RELEASE, threads, threads == 1 ? "" : "s");
    fflush(stdout);
}

/* The global help: ft.help (bindings/lua/ft/help.lua), unless the user has a global of that
 * name. A missing or broken ft.help leaves the REPL working without it. */
static int load_help(lua_State *L) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "ft.help");
    lua_call(L, 1, 1);
    return 1;
}

static void define_help(lua_State *L) {
    if (lua_getglobal(L, "help") != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, load_help);
    if (lua_pcall(L, 0, 1, 0) == LUA_OK) lua_setglobal(L, "help");
    else lua_pop(L, 1);
}

void ftlua_repl(lua_State *L) {
    replL = L;
    define_help(L);
    repl_tty = isatty(STDIN_FILENO);
    if (repl_tty) {
        setlocale(LC_CTYPE, ""); /* multibyte input; numbers keep the C locale */
        rl_readline_name = "ftlua";
        rl_catch_signals = 0; /* SIGINT and SIGWINCH are handled in tty_readline */
        rl_catch_sigwinch = 0;
        completion_init();
        history_open();
        print_banner();
    }
    int status;
    while ((status = loadline(L)) != -1) {
        if (status == LINE_INTERRUPTED) continue;
        if (status == LUA_OK) status = ftlua_docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK) l_print(L);
        else ftlua_report(L, status);
        fflush(stdout);
    }
    lua_settop(L, 0);
    if (repl_tty) {
        lua_writeline();
        history_close();
        free_completions();
    }
}
