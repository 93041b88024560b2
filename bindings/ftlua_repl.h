/* The parts of ftlua's REPL (ftlua_repl.c runs the read-eval-print loop): what each file
 * gives the others. Linked only into the ftlua executable. */
#ifndef FTLUA_REPL_H
#define FTLUA_REPL_H

#include <lua.h>

/* ---- ftlua_print.c: printing results ---- */

/* Lua's reserved words, NULL-terminated (tab completion offers them too). */
extern const char *const ftlua_keywords[];
/* 1 if s is a Lua identifier (letters, digits, '_', not starting with a digit). */
int ftlua_is_name(const char *s);
/* Prints the values on the stack as the REPL shows results (tensors in full, tables in brief)
 * and leaves the stack empty; an error while printing is reported, not raised. */
void ftlua_print_results(lua_State *L);

/* ---- ftlua_input.c: reading lines ---- */

/* Starts reading: on a terminal (tty) readline with prompts and the history file, otherwise
 * plain lines read quietly. */
void ftlua_input_open(int tty);
/* Reads a line and pushes it (a first line "=expr" as "return expr"). 1 = pushed, 0 = end
 * of input, -1 = Ctrl-C at the prompt. */
int ftlua_pushline(lua_State *L, int firstline);
/* Keeps a complete statement in the history (memory and file), on a terminal only. */
void ftlua_saveline(const char *line);
/* Trims the history file to its limit. */
void ftlua_input_close(void);

/* ---- ftlua_complete.c: tab completion ---- */

/* Installs readline's completion of names looked up in L (globals, fields, methods). */
void ftlua_completion_open(lua_State *L);
/* Frees the last list of candidates. */
void ftlua_completion_close(void);

#endif
