/* ftlua: what the command-line runner (ftlua.c) and the interactive REPL (ftlua_repl.c)
 * share. Both are linked only into the ftlua executable, not into the `ft` module. */
#ifndef FTLUA_H
#define FTLUA_H

#include <lua.h>

#define FTLUA_VERSION "0.1"

/* lua_pcall with a traceback message handler and Ctrl-C interrupting the running code. */
int ftlua_docall(lua_State *L, int narg, int nres);

/* Prints the error message on top of the stack (and pops it) if status is not LUA_OK,
 * prefixed with the program name unless the REPL is running. Returns status. */
int ftlua_report(lua_State *L, int status);

/* Prints "pname: msg" (just msg if pname is NULL) to stderr after flushing stdout. */
void ftlua_message(const char *pname, const char *msg);

/* Reads, runs and prints statements until end of input: readline, history and completion
 * on a terminal, plain quiet lines otherwise. */
void ftlua_repl(lua_State *L);

#endif
