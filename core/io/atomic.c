/* Atomic file and folder replacement, and whole-file reads.
 *
 * A file is written to "<path>.tmp-<pid>-<n>" in the target's folder, fsynced, renamed
 * over the target, and the folder is fsynced: a reader sees the old file or the new one,
 * never a partial one; a failed write leaves the old file as it was. A process killed
 * mid-write leaves its temporary file behind; the next write of the same path removes
 * the temporary files of processes that no longer exist.
 *
 * A folder is replaced the same way: filled under a temporary name beside it, then
 * exchanged with the old folder in one rename (renameat2 RENAME_EXCHANGE), after which
 * the old contents (now under the temporary name) are removed. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ft/io.h"

/* One counter for the whole process: temp names differ across threads too. */
static atomic_uint tmp_counter;

/* ---- temporary names --------------------------------------------------------------- */

/* Splits path into its folder ("." when none) and base name; both malloc'd. */
static int split_path(const char *path, char **dir, char **base) {
    const char *slash = strrchr(path, '/');
    if (slash == path) *dir = strdup("/");
    else *dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
    *base = strdup(slash ? slash + 1 : path);
    if (!*dir || !*base) {
        free(*dir);
        free(*base);
        *dir = *base = NULL;
        return -1;
    }
    return 0;
}

/* When name is "<base>.tmp-<pid>-<n>", returns pid (> 0); otherwise 0. */
static long temp_owner(const char *name, const char *base) {
    size_t lb = strlen(base);
    if (strncmp(name, base, lb) != 0 || strncmp(name + lb, ".tmp-", 5) != 0) return 0;
    const char *p = name + lb + 5;
    char *end;
    if (*p < '0' || *p > '9') return 0;
    errno = 0;
    long pid = strtol(p, &end, 10);
    if (errno || pid <= 0 || *end != '-') return 0;
    p = end + 1;
    if (*p < '0' || *p > '9') return 0;
    strtoul(p, &end, 10);
    return *end == '\0' ? pid : 0;
}

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p) == 0 || errno == ENOENT ? 0 : -1;
}

int ft_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        ft_set_error("cannot remove '%s': %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) == 0 || errno == ENOENT) return 0;
        ft_set_error("cannot remove '%s': %s", path, strerror(errno));
        return -1;
    }
    /* FTW_PHYS: never follow a symbolic link out of the folder. */
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        ft_set_error("cannot remove '%s': %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int ft_atomic_clean(const char *path) {
    char *dir, *base;
    if (!path || !*path || split_path(path, &dir, &base) != 0) return 0;
    if (!*base) {   /* "dir/": no file name, no temporaries */
        free(dir);
        free(base);
        return 0;
    }
    int removed = 0;
    DIR *d = opendir(dir);
    if (d) {
        long self = (long)getpid();
        struct dirent *e;
        while ((e = readdir(d))) {
            long pid = temp_owner(e->d_name, base);
            /* Our own temporaries may belong to another thread's write in progress; a
             * live process's are its business (EPERM: alive, another user's). */
            if (pid == 0 || pid == self || (pid_t)pid != pid) continue;
            if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
            size_t len = strlen(dir) + strlen(e->d_name) + 2;
            char *full = malloc(len);
            if (!full) break;
            snprintf(full, len, "%s/%s", dir, e->d_name);
            if (ft_remove_tree(full) == 0) removed++;
            free(full);
        }
        closedir(d);
    }
    free(dir);
    free(base);
    return removed;
}

/* Fills buf (cap bytes) with a fresh "<path>.tmp-<pid>-<n>". */
static void temp_name(char *buf, size_t cap, const char *path) {
    snprintf(buf, cap, "%s.tmp-%ld-%u", path, (long)getpid(), atomic_fetch_add(&tmp_counter, 1));
}

/* ---- atomic files ---------------------------------------------------------------------- */

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
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        ft_set_error("cannot write '%s': Is a directory", path);
        return -1;
    }
    ft_atomic_clean(path);
    f->path = strdup(path);
    f->tmp = malloc(len + 64);
    if (!f->path || !f->tmp) {
        atomic_free(f);
        ft_set_error("cannot write '%s': out of memory", path);
        return -1;
    }
    /* Same folder, so rename() is atomic. O_EXCL with mode 0666 gives the usual
     * umask-derived permissions of a newly created file. */
    for (int attempt = 0; attempt < 100; attempt++) {
        temp_name(f->tmp, len + 64, path);
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f->fd >= 0) return 0;
        if (errno != EEXIST) break;
    }
    ft_set_error("cannot write '%s': %s", path, strerror(errno));
    atomic_free(f);
    return -1;
}

/* fsync the folder holding path so a rename in it is durable. */
static void sync_parent(const char *path) {
    char *dir, *base;
    if (split_path(path, &dir, &base) != 0) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);   /* best effort: some file systems refuse fsync on folders */
        close(fd);
    }
    free(dir);
    free(base);
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

int ft_write_file(const char *path, const void *data, size_t size) {
    ft_atomic_file f;
    if (ft_atomic_open(&f, path) != 0) return -1;
    const char *p = data;
    while (size > 0) {
        ssize_t w = write(f.fd, p, size);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            ft_set_error("cannot write '%s': %s", path, strerror(errno));
            ft_atomic_abort(&f);
            return -1;
        }
        p += w;
        size -= (size_t)w;
    }
    return ft_atomic_commit(&f);
}

/* ---- atomic folders -------------------------------------------------------------------- */

char *ft_dir_begin(const char *path) {
    size_t len = path ? strlen(path) : 0;
    if (len == 0) {
        ft_set_error("cannot replace folder '': empty path");
        return NULL;
    }
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) {
        ft_set_error("cannot replace folder '%s': it exists and is not a folder", path);
        return NULL;
    }
    /* "out/adapter/" names the same folder as "out/adapter". */
    char *clean = strdup(path);
    if (!clean) {
        ft_set_error("cannot replace folder '%s': out of memory", path);
        return NULL;
    }
    while (len > 1 && clean[len - 1] == '/') clean[--len] = '\0';
    ft_atomic_clean(clean);
    char *tmp = malloc(len + 64);
    if (!tmp) {
        free(clean);
        ft_set_error("cannot replace folder '%s': out of memory", path);
        return NULL;
    }
    for (int attempt = 0; attempt < 100; attempt++) {
        temp_name(tmp, len + 64, clean);
        if (mkdir(tmp, 0777) == 0) {
            free(clean);
            return tmp;
        }
        if (errno != EEXIST) break;
    }
    ft_set_error("cannot replace folder '%s': %s", path, strerror(errno));
    free(clean);
    free(tmp);
    return NULL;
}

static int sync_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    if (flag != FTW_F && flag != FTW_DP && flag != FTW_D) return 0;
    int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return 0;
    int rc = fsync(fd) == 0 || errno == EINVAL ? 0 : -1;   /* EINVAL: not syncable here */
    close(fd);
    return rc;
}

int ft_dir_commit(const char *tmp, const char *path) {
    /* Files written into tmp by other means than ft_atomic_* are not synced yet. */
    if (nftw(tmp, sync_entry, 16, FTW_PHYS | FTW_DEPTH) != 0) {
        ft_set_error("cannot replace folder '%s': %s", path, strerror(errno));
        return -1;
    }
    size_t len = strlen(path);
    char *clean = strdup(path);
    if (!clean) {
        ft_set_error("cannot replace folder '%s': out of memory", path);
        return -1;
    }
    while (len > 1 && clean[len - 1] == '/') clean[--len] = '\0';
    int rc = 0;
    struct stat st;
    if (lstat(clean, &st) != 0 && errno == ENOENT) {
        if (rename(tmp, clean) != 0) rc = -1;   /* nothing to keep: a plain rename */
    } else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, clean, RENAME_EXCHANGE) == 0) {
        sync_parent(clean);
        /* tmp now holds the old contents. A kill here leaves them under the temporary
         * name, which the next replacement of path removes. */
        ft_remove_tree(tmp);
    } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
        /* A file system without exchange: move the old folder aside, then the new one
         * in. A kill between the two renames leaves path missing. */
        char *old = malloc(len + 64);
        if (!old) {
            errno = ENOMEM;
            rc = -1;
        } else {
            temp_name(old, len + 64, clean);
            if (rename(clean, old) != 0 || rename(tmp, clean) != 0) rc = -1;
            else ft_remove_tree(old);
            free(old);
        }
    } else {
        rc = -1;
    }
    if (rc != 0) ft_set_error("cannot replace folder '%s': %s", path, strerror(errno));
    else sync_parent(clean);
    free(clean);
    return rc;
}

/* ---- whole-file reads ------------------------------------------------------------------ */

char *ft_read_file(const char *path, size_t max_size, size_t *size) {
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ft_set_error("cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        ft_set_error("cannot read '%s': %s", path, S_ISDIR(st.st_mode) ? "Is a directory" : strerror(errno));
        close(fd);
        return NULL;
    }
    /* Regular files: one allocation of the known size; pipes and the like grow. */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
    if (max_size && S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_size) {
        ft_set_error("cannot read '%s': %lld bytes, more than the limit of %zu", path,
                     (long long)st.st_size, max_size);
        close(fd);
        return NULL;
    }
    char *buf = malloc(cap);
    size_t n = 0;
    while (buf) {
        if (n + 1 >= cap) {
            if (max_size && n > max_size) {
                ft_set_error("cannot read '%s': more than the limit of %zu bytes", path, max_size);
                free(buf);
                close(fd);
                return NULL;
            }
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            ft_set_error("cannot read '%s': %s", path, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    close(fd);
    if (!buf) {
        ft_set_error("cannot read '%s': out of memory", path);
        return NULL;
    }
    if (max_size && n > max_size) {
        ft_set_error("cannot read '%s': more than the limit of %zu bytes", path, max_size);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *size = n;
    return buf;
}
