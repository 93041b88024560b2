/* ftlua: the Lua 5.4 stand-alone interpreter with the `ft` module preloaded.
 *
 * Command line and exit statuses follow Lua's own `lua` (script + args in the global
 * `arg`, -e, -l, -i, -v, -E, -W, -, --, LUA_INIT), so tools such as busted run under it.
 * Before any user code runs, the library's Lua directory is appended to package.path (the
 * checkout's for the build-tree executable, <prefix>/share/lua/5.4 for the installed one),
 * luaopen_ft goes into package.preload["ft"] and the global `ft` is set.
 *
 * With no script (or with -i) it starts the REPL of ftlua_repl.c. */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* sigaction, readlink */
#endif

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "ft/dist.h"
#include "ftl.h"
#include "ftlua.h"

static lua_State *globalL = NULL;
static const char *progname = "ftlua";

/* ========================================================================== */
/* Running chunks: messages, tracebacks, Ctrl-C                                */
/* ========================================================================== */

static void setsignal(int sig, void (*handler)(int)) {
    struct sigaction sa;
    sa.sa_handler = handler;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

/* Hook installed by the SIGINT handler: raises the error from inside the Lua code. */
static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted!");
}

/* A C signal cannot touch the Lua state safely; it only sets a hook that stops it at the
 * next instruction. A second Ctrl-C (e.g. inside a long C kernel) ends the process. */
static void laction(int sig) {
    int flag = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT;
    setsignal(sig, SIG_DFL);
    lua_sethook(globalL, lstop, flag, 1);
}

/* The usage text, for `ftlua --help` (stdout) and after a bad option (stderr). */
static const char usage_text[] =
    "usage: %s [options] [script [args]]\n"
    "Available options are:\n"
    "  -e stat   execute string 'stat'\n"
    "  -i        enter interactive mode after executing 'script'\n"
    "  -l mod    require library 'mod' into global 'mod'\n"
    "  -l g=mod  require library 'mod' into global 'g'\n"
    "  -v        show version information\n"
    "  -E        ignore environment variables\n"
    "  -W        turn warnings on\n"
    "  -h, --help  show this help and exit\n"
    "  --        stop handling options\n"
    "  -         stop handling options and execute stdin\n"
    "The module `ft` is preloaded as the global `ft` (require \"ft\" returns it).\n"
    "Scripts: `%s script.lua args...` runs script.lua with its arguments in the global\n"
    "`arg` (and as `...`), as lua does; recipes answer --help themselves, e.g.\n"
    "`%s scripts/finetune_vision.lua --help`.\n"
    "REPL: with no script (or with -i) an interactive session starts: readline editing and\n"
    "history, tab completion over globals and fields, results of expressions printed\n"
    "(tensors with shape and dtype), multi-line input, errors printed without exiting.\n"
    "When stdin is not a terminal its lines are read quietly, one statement after another.\n"
    "Environment: LUA_INIT_5_4 / LUA_INIT run first (a chunk, or @file); package.path is\n"
    "LUA_PATH's entries, then ftlua's own Lua directory, then Lua's default path.\n";

static void print_usage(const char *badoption) {
    lua_writestringerror("%s: ", progname);
    if (badoption[1] == 'e' || badoption[1] == 'l')
        lua_writestringerror("'%s' needs argument\n", badoption);
    else
        lua_writestringerror("unrecognized option '%s'\n", badoption);
    fprintf(stderr, usage_text, progname, progname, progname);
    fflush(stderr);
}

static void print_help(void) {
    printf(usage_text, progname, progname, progname);
    fflush(stdout);
}

void ftlua_message(const char *pname, const char *msg) {
    fflush(stdout); /* keep results and errors in order on a shared terminal */
    if (pname) lua_writestringerror("%s: ", pname);
    if (ft_dist_world_size() > 1) lua_writestringerror("[rank %d] ", ft_dist_rank());
    lua_writestringerror("%s\n", msg);
}

/* Prints the error message on top of the stack if status is not OK (see ftlua.h). */
int ftlua_report(lua_State *L, int status) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        ftlua_message(progname, msg ? msg : "(error object is not a string)");
        lua_pop(L, 1);
    }
    return status;
}

/* Message handler for every chunk: the message plus a traceback. */
static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* lua_pcall with the message handler and the Ctrl-C handler in place. */
int ftlua_docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    globalL = L;
    setsignal(SIGINT, laction);
    int status = lua_pcall(L, narg, nres, base);
    setsignal(SIGINT, SIG_DFL);
    lua_remove(L, base);
    return status;
}

static void print_version(void) {
    lua_writestring("ftlua " FTLUA_VERSION "  ", strlen("ftlua " FTLUA_VERSION "  "));
    lua_writestring(LUA_COPYRIGHT, strlen(LUA_COPYRIGHT));
    lua_writeline();
}

/* arg[0] = script, arg[1..] = its arguments, interpreter arguments at negative indices. */
static void createargtable(lua_State *L, char **argv, int argc, int script) {
    if (script == argc) script = 0; /* no script: the interpreter's name is arg[0] */
    int narg = argc > script ? argc - (script + 1) : 0;
    lua_createtable(L, narg, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int dochunk(lua_State *L, int status) {
    if (status == LUA_OK) status = ftlua_docall(L, 0, 0);
    return ftlua_report(L, status);
}

static int dofile(lua_State *L, const char *name) { return dochunk(L, luaL_loadfile(L, name)); }

static int dostring(lua_State *L, const char *s, const char *name) {
    return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l mod or -l g=mod: global g = require(mod). */
static int dolibrary(lua_State *L, char *globname) {
    char *modname = strchr(globname, '=');
    if (modname == NULL) {
        modname = globname;
    } else {
        *modname = '\0';
        modname++;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, modname);
    int status = ftlua_docall(L, 1, 1);
    if (status == LUA_OK) lua_setglobal(L, globname);
    return ftlua_report(L, status);
}

/* Pushes arg[1..#arg] as the script's varargs. */
static int pushargs(lua_State *L) {
    if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
    int n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    int i;
    for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
    lua_remove(L, -i);
    return n;
}

static int handle_script(lua_State *L, char **argv) {
    const char *fname = argv[0];
    if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL; /* stdin */
    int status = luaL_loadfile(L, fname);
    if (status == LUA_OK) {
        int n = pushargs(L);
        status = ftlua_docall(L, n, LUA_MULTRET);
    }
    return ftlua_report(L, status);
}

/* Bits of the options seen before running any Lua code. */
#define has_error 1
#define has_i 2
#define has_v 4
#define has_e 8
#define has_E 16
#define has_help 32

/* Scans the options; *first is the script's index (argc if none) or the bad option's. */
static int collectargs(char **argv, int *first) {
    int args = 0;
    int i;
    if (argv[0] == NULL) { /* no program name at all: nothing to parse */
        *first = 0;
        return 0;
    }
    for (i = 1; argv[i] != NULL; i++) {
        *first = i;
        if (argv[i][0] != '-') return args; /* the script */
        switch (argv[i][1]) {
        case '-': /* -- or --help */
            if (strcmp(argv[i], "--help") == 0) return args | has_help;
            if (argv[i][2] != '\0') return has_error;
            *first = i + 1;
            return args;
        case '\0': /* - : stdin is the script */
            return args;
        case 'h':
            if (argv[i][2] != '\0') return has_error;
            return args | has_help;
        case 'E':
            if (argv[i][2] != '\0') return has_error;
            args |= has_E;
            break;
        case 'W':
            if (argv[i][2] != '\0') return has_error;
            break;
        case 'i':
            if (argv[i][2] != '\0') return has_error;
            args |= has_i;
            break;
        case 'v':
            if (argv[i][2] != '\0') return has_error;
            args |= has_v;
            break;
        case 'e':
            args |= has_e;
            /* fall through - both take an argument */
        case 'l':
            if (argv[i][2] == '\0') {
                i++;
                if (argv[i] == NULL || argv[i][0] == '-') return has_error;
            }
            break;
        default:
            return has_error;
        }
    }
    *first = i;
    return args;
}

/* Runs -e, -l and -W in order; 0 if some code raised an error. */
static int runargs(lua_State *L, char **argv, int n) {
    for (int i = 1; i < n; i++) {
        int option = argv[i][1];
        switch (option) {
        case 'e':
        case 'l': {
            char *extra = argv[i] + 2;
            if (*extra == '\0') extra = argv[++i];
            int status = option == 'e' ? dostring(L, extra, "=(command line)")
                                       : dolibrary(L, extra);
            if (status != LUA_OK) return 0;
            break;
        }
        case 'W':
            lua_warning(L, "@on", 0);
            break;
        }
    }
    return 1;
}

static int handle_luainit(lua_State *L) {
    const char *name = "=LUA_INIT_5_4";
    const char *init = getenv(name + 1);
    if (init == NULL) {
        name = "=LUA_INIT";
        init = getenv(name + 1);
    }
    if (init == NULL) return LUA_OK;
    if (init[0] == '@') return dofile(L, init + 1);
    return dostring(L, init, name);
}

/* ========================================================================== */
/* The ft module and the project's Lua directories                            */
/* ========================================================================== */

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Adds "<dir>/?.lua;<dir>/?/init.lua" to the path string on top of the stack, if dir exists
 * and the entry is not there yet (a user's LUA_PATH may already name it): after the user's
 * LUA_PATH entries and before Lua's default path, so that another copy of the library in a
 * system folder (/usr/local/share/lua/5.4) never shadows this one. */
static void add_lua_dir(lua_State *L, const char *dir) {
    if (!is_dir(dir)) return;
    const char *path = lua_tostring(L, -1);
    const char *entry = lua_pushfstring(L, "%s/?.lua", dir);
    int present = strstr(path, entry) != NULL;
    lua_pop(L, 1);
    if (present) return;
    const char *defaults = strstr(path, LUA_PATH_DEFAULT);
    if (defaults) {
        lua_pushlstring(L, path, (size_t)(defaults - path));
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, defaults);
        lua_concat(L, 2);
    } else {
        lua_pushfstring(L, "%s%s%s/?.lua;%s/?/init.lua", path, path[0] ? ";" : "", dir, dir);
    }
    lua_remove(L, -2);
}

#if defined(FT_INSTALLED_LUA_DIR) && !defined(FT_LUA_DIR)
/* The folder of the running executable into buf ("/opt/ftlua/bin"); 0 if unknown. */
static int exe_dir(char *buf, size_t size, const char *argv0) {
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    if (n > 0) {
        buf[n] = '\0';
    } else if (argv0 && strchr(argv0, '/') && strlen(argv0) < size) {
        snprintf(buf, size, "%s", argv0);
    } else {
        return 0;
    }
    char *slash = strrchr(buf, '/');
    if (slash == NULL) return 0;
    *slash = '\0';
    return 1;
}
#endif

/* package.path = <user's LUA_PATH>;<the library's Lua directory>;<Lua's default path>
 *
 * The build-tree executable is compiled with FT_LUA_DIR, the checkout's bindings/lua, so that
 * edits there take effect without a build. The installed executable is a separate build
 * without it: it knows only FT_INSTALLED_LUA_DIR, relative to its own folder
 * (<prefix>/bin -> <prefix>/share/lua/5.4), so an install never reads the source checkout and
 * keeps working when the prefix is moved. */
static void set_package_path(lua_State *L, const char *argv0) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    if (!lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "");
    }
#if defined(FT_LUA_DIR)
    (void)argv0;
    add_lua_dir(L, FT_LUA_DIR);
#elif defined(FT_INSTALLED_LUA_DIR)
    char dir[4096], resolved[PATH_MAX];
    const char *rel = FT_INSTALLED_LUA_DIR;
    if (rel[0] == '/') {
        add_lua_dir(L, rel);
    } else if (exe_dir(dir, sizeof dir, argv0) && strlen(dir) + strlen(rel) + 2 < sizeof dir) {
        strcat(dir, "/");
        strcat(dir, rel);
        add_lua_dir(L, realpath(dir, resolved) ? resolved : dir);
    }
#else
    (void)argv0;
#endif
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
}

/* package.preload.ft = luaopen_ft; ft = require "ft" */
static int open_ft(lua_State *L, const char *argv0) {
    set_package_path(L, argv0);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_ft);
    lua_setfield(L, -2, "ft");
    lua_pop(L, 1);
    char name[] = "ft";
    return dolibrary(L, name);
}

/* ========================================================================== */
/* main                                                                        */
/* ========================================================================== */

/* Runs in protected mode: handles the options, opens the libraries, runs the chunks. */
static int pmain(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    int script;
    int args = collectargs(argv, &script);
    luaL_checkversion(L);
    if (argv[0] && argv[0][0]) progname = argv[0];
    if (args == has_error) {
        print_usage(argv[script]);
        return 0;
    }
    if (args & has_help) { /* usage on stdout, nothing run */
        print_help();
        lua_pushboolean(L, 1);
        return 1;
    }
    if (args & has_v) print_version();
    if (args & has_E) { /* tells the package library to ignore LUA_PATH and LUA_CPATH */
        lua_pushboolean(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    }
    luaL_openlibs(L);
    createargtable(L, argv, argc, script);
    lua_gc(L, LUA_GCRESTART);
    lua_gc(L, LUA_GCGEN, 0, 0);
    if (open_ft(L, argv[0]) != LUA_OK) return 0;
    if (!(args & has_E) && handle_luainit(L) != LUA_OK) return 0;
    if (!runargs(L, argv, script)) return 0;
    if (script < argc && handle_script(L, argv + script) != LUA_OK) return 0;
    /* the REPL runs on a terminal or, quietly, over piped lines */
    if ((args & has_i) || (script == argc && !(args & (has_e | has_v)))) {
        const char *oldprogname = progname;
        progname = NULL; /* no program name in front of interactive errors */
        ftlua_repl(L);
        progname = oldprogname;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Idle OpenMP threads spin by default, burning the cores that OpenBLAS, the main thread or
 * other processes need (measured: a ResNet-S training step takes ~1.5x longer on a busy
 * 2-core machine). libgomp reads OMP_WAIT_POLICY only when it loads, so when the user has
 * not chosen a policy, set "passive" and re-execute once. */
static void prefer_passive_openmp(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv); /* returns only on failure: carry on as we are */
}

int main(int argc, char **argv) {
    prefer_passive_openmp(argv);
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        ftlua_message(argv[0], "cannot create state: not enough memory");
        return EXIT_FAILURE;
    }
    lua_gc(L, LUA_GCSTOP); /* no collection while the state is being set up */
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int status = lua_pcall(L, 2, 1, 0);
    int result = lua_toboolean(L, -1);
    ftlua_report(L, status);
    /* Under mpirun a rank that fails ends the job: the others would wait for it forever. */
    if (!(result && status == LUA_OK) && ft_dist_world_size() > 1) ft_dist_abort(EXIT_FAILURE);
    lua_close(L);
    return (result && status == LUA_OK) ? EXIT_SUCCESS : EXIT_FAILURE;
}
