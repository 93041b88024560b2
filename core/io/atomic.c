/* Atomic file replacement: write a temporary file in the target's folder, fsync it,
 * rename it over the target, fsync the folder. A reader sees the old file or the new
 * one, never a partial one; a failed write leaves the old file as it was. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ft/io.h"

static void atomic_free(ft_atomic_file *f) {
    free(f->path);
    free(f->tmp);
    f->path = f->tmp = NULL;
    f->fd = -1;
}

int ft_atomic_open(ft_atomic_file *f, const char *path) {
    f->path = f->tmp = NULL;
    f->fd = -1;
    if (!path || !*path) {
        ft_set_error("cannot write '': empty file name");
        return -1;
    }
    size_t len = strlen(path);
    if (path[len - 1] == '/') {
        ft_set_error("cannot write '%s': Is a directory", path);
        return -1;
    }
    f->path = strdup(path);
    f->tmp = malloc(len + 64);
    if (!f->path || !f->tmp) {
        atomic_free(f);
        ft_set_error("cannot write '%s': out of memory", path);
        return -1;
    }
    /* "<path>.tmp-<pid>-<n>": same folder, so rename() is atomic. O_EXCL with mode 0666
     * gives the usual umask-derived permissions of a newly created file. */
    static _Thread_local unsigned counter;
    for (int attempt = 0; attempt < 100; attempt++) {
        snprintf(f->tmp, len + 64, "%s.tmp-%ld-%u", path, (long)getpid(), counter++);
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f->fd >= 0) return 0;
        if (errno != EEXIST) break;
    }
    ft_set_error("cannot write '%s': %s", path, strerror(errno));
    atomic_free(f);
    return -1;
}

/* fsync the folder holding path so the rename itself is durable. */
static void sync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path) + 1) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);   /* best effort: some file systems refuse fsync on folders */
        close(fd);
    }
    free(dir);
}

int ft_atomic_commit(ft_atomic_file *f) {
    int rc = 0;
    if (fsync(f->fd) != 0) {
        ft_set_error("cannot write '%s': %s", f->path, strerror(errno));
        rc = -1;
    }
    if (close(f->fd) != 0 && rc == 0) {
        ft_set_error("cannot write '%s': %s", f->path, strerror(errno));
        rc = -1;
    }
    f->fd = -1;
    if (rc == 0 && rename(f->tmp, f->path) != 0) {
        ft_set_error("cannot write '%s': %s", f->path, strerror(errno));
        rc = -1;
    }
    if (rc == 0)
        sync_parent(f->path);
    else
        unlink(f->tmp);
    atomic_free(f);
    return rc;
}

void ft_atomic_abort(ft_atomic_file *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    atomic_free(f);
}
