/* ftlua's interactive REPL, started by ftlua.c with no script or with -i: reads a statement
 * (continuation lines until it compiles), runs it, prints its results, reports errors
 * without leaving, and defines the global help (ft.help).
 *
 * On a terminal: readline editing, a history file, tab completion, Ctrl-C clears the line
 * or interrupts the running statement (ftlua_input.c, ftlua_complete.c). With stdin not a
 * terminal the same REPL reads plain lines quietly (no banner, no prompts) so a session can
 * be piped in. Both print the results of expressions (`x = 1; x` too; ftlua_print.c). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "ft/runtime.h"
#include "ftlua.h"
#include "ftlua_repl.h"

#define LINE_INTERRUPTED (-2)  /* loadline: Ctrl-C at the prompt */

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
        ftlua_saveline(line);
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
            ftlua_saveline(line);
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
            ftlua_saveline(line);
            return status;
        }
        int r = ftlua_pushline(L, 0);
        if (r == 0) { /* end of input: report the incomplete statement */
            ftlua_saveline(line);
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
    int r = ftlua_pushline(L, 1);
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
    define_help(L);
    int tty = isatty(STDIN_FILENO);
    ftlua_input_open(tty);
    if (tty) {
        ftlua_completion_open(L);
        print_banner();
    }
    int status;
    while ((status = loadline(L)) != -1) {
        if (status == LINE_INTERRUPTED) continue;
        if (status == LUA_OK) status = ftlua_docall(L, 0, LUA_MULTRET);
        if (status == LUA_OK) ftlua_print_results(L);
        else ftlua_report(L, status);
        fflush(stdout);
    }
    lua_settop(L, 0);
    if (tty) {
        lua_writeline();
        ftlua_input_close();
        ftlua_completion_close();
    }
}
