/* How ftlua's REPL reads its input. On a terminal: readline's callback interface (so Ctrl-C
 * at the prompt abandons the line instead of ending the process), prompts from _PROMPT and
 * _PROMPT2, and a history file. With stdin not a terminal: plain lines, no prompts. */
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
#include <sys/select.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include <lua.h>

#include "ftlua_repl.h"

#define FTLUA_PROMPT "ft> "
#define FTLUA_PROMPT2 ">> "
#define HISTORY_MAX 2000       /* lines kept in the history file (and entries in memory) */

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
int ftlua_pushline(lua_State *L, int firstline) {
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
void ftlua_saveline(const char *line) {
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

void ftlua_input_open(int tty) {
    repl_tty = tty;
    if (!repl_tty) return;
    setlocale(LC_CTYPE, ""); /* multibyte input; numbers keep the C locale */
    rl_readline_name = "ftlua";
    rl_catch_signals = 0; /* SIGINT and SIGWINCH are handled in tty_readline */
    rl_catch_sigwinch = 0;
    history_open();
}

void ftlua_input_close(void) {
    if (repl_tty && history_path[0] != '\0') history_truncate_file(history_path, HISTORY_MAX);
}
