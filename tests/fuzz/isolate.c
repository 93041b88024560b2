/* isolate: runs a Lua function in a forked child with a time limit and an address-space
 * limit, so that the fuzz driver survives whatever a loader does to the child (a crash, a
 * hang, a huge allocation) and can tell which it was.
 *
 *   local isolate = require "isolate"
 *   local r = isolate.run(fn, {timeout = 10, mem_mb = 2048})
 *   -- r.status: "exit" (r.code), "signal" (r.signal), "timeout"
 *   -- r.output: what fn returned as its second value (a string), r.maxrss_kb
 *
 * fn runs under pcall in the child; it returns an exit code (integer) and a message. An
 * error raised by fn exits with code 70 and the error as the message. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#define MAX_OUTPUT 4096

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void child(lua_State *L, int fd, long mem_mb) {
    if (mem_mb > 0) {
        struct rlimit rl = {(rlim_t)mem_mb << 20, (rlim_t)mem_mb << 20};
        setrlimit(RLIMIT_AS, &rl);
    }
    struct rlimit core = {0, 0};   /* a crash is reported by its signal, not a core file */
    setrlimit(RLIMIT_CORE, &core);
    lua_pushvalue(L, 1);
    int code;
    size_t len = 0;
    const char *msg = "";
    if (lua_pcall(L, 0, 2, 0) != LUA_OK) {
        code = 70;
        msg = lua_tolstring(L, -1, &len);
        if (!msg) msg = "(error object is not a string)";
    } else {
        code = (int)luaL_optinteger(L, -2, 0);
        msg = lua_tolstring(L, -1, &len);
        if (!msg) msg = "";
    }
    len = strlen(msg) < MAX_OUTPUT ? strlen(msg) : MAX_OUTPUT;
    while (len > 0) {
        ssize_t w = write(fd, msg, len);
        if (w <= 0) break;
        msg += w;
        len -= (size_t)w;
    }
    close(fd);
    /* exit, not _exit: the sanitizers' leak check runs at exit. */
    exit(code);
}

static int l_run(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    double timeout = 10;
    long mem_mb = 0;
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "timeout");
        timeout = luaL_optnumber(L, -1, 10);
        lua_getfield(L, 2, "mem_mb");
        mem_mb = (long)luaL_optinteger(L, -1, 0);
        lua_pop(L, 2);
    }
    int fds[2];
    if (pipe(fds) != 0) return luaL_error(L, "isolate.run: pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return luaL_error(L, "isolate.run: fork: %s", strerror(errno));
    if (pid == 0) {
        close(fds[0]);
        child(L, fds[1], mem_mb);
    }
    close(fds[1]);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char buf[512];
    double start = now();
    int status = 0, timed_out = 0, done = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    /* Poll: read what the child says, reap it, kill it at the deadline. */
    while (!done) {
        fd_set set;
        FD_ZERO(&set);
        if (fds[0] >= 0) FD_SET(fds[0], &set);
        struct timeval tv = {0, 10000};
        if (fds[0] >= 0 && select(fds[0] + 1, &set, NULL, NULL, &tv) > 0) {
            ssize_t got = read(fds[0], buf, sizeof buf);
            if (got > 0) luaL_addlstring(&b, buf, (size_t)got);
            else {
                close(fds[0]);
                fds[0] = -1;
            }
        } else if (fds[0] < 0) {
            usleep(2000);
        }
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid) done = 1;
        else if (now() - start > timeout && !timed_out) {
            timed_out = 1;
            kill(pid, SIGKILL);
        }
    }
    if (fds[0] >= 0) {
        ssize_t got;
        while ((got = read(fds[0], buf, sizeof buf)) > 0) luaL_addlstring(&b, buf, (size_t)got);
        close(fds[0]);
    }
    luaL_pushresult(&b);
    int output = lua_gettop(L);
    lua_createtable(L, 0, 5);
    if (timed_out) {
        lua_pushliteral(L, "timeout");
    } else if (WIFSIGNALED(status)) {
        lua_pushliteral(L, "signal");
        lua_pushinteger(L, WTERMSIG(status));
        lua_setfield(L, -3, "signal");
    } else {
        lua_pushliteral(L, "exit");
        lua_pushinteger(L, WEXITSTATUS(status));
        lua_setfield(L, -3, "code");
    }
    lua_setfield(L, -2, "status");
    lua_pushvalue(L, output);
    lua_setfield(L, -2, "output");
    lua_pushinteger(L, ru.ru_maxrss);
    lua_setfield(L, -2, "maxrss_kb");
    lua_pushnumber(L, now() - start);
    lua_setfield(L, -2, "seconds");
    return 1;
}

/* isolate.maxrss_kb() --> this process's peak resident size so far. */
static int l_maxrss(lua_State *L) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    lua_pushinteger(L, ru.ru_maxrss);
    return 1;
}

int luaopen_isolate(lua_State *L) {
    static const luaL_Reg fns[] = {{"run", l_run}, {"maxrss_kb", l_maxrss}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
