/* safetensors, HuggingFace's tensor file format: an 8-byte little-endian header length
 * N, N bytes of JSON describing each tensor (dtype, shape, data_offsets) plus optional
 * string metadata, then the data buffer. This file reads: it maps the file instead of
 * copying it, has the whole header validated (safetensors_header.c) before anything is
 * decoded, then decodes tensors one at a time (safetensors_dtype.c), or, for a file opened
 * with ft_st_open_mapped, hands out tensors over the mapping itself. The writer is
 * safetensors_write.c. */
#define _DEFAULT_SOURCE   /* madvise, MAP_NORESERVE */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ft/io.h"
#include "safetensors_internal.h"

#define MAX_HEADER ((uint64_t)100000000)   /* the reference implementation's limit */

/* The file's mapping: one reference for the ft_st_file, one for each tensor over it. */
struct ft_st_mapping {
    void *addr;
    size_t size;
    int refs;
    bool cow;   /* private and writable: tensors may be made over it */
};

static void mapping_release(void *owner) {
    ft_st_mapping *m = owner;
    if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    munmap(m->addr, m->size);
    free(m);
}

static int st_open(const char *path, ft_st_file *f, bool cow) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ft_set_error("safetensors: cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        ft_set_error("safetensors: cannot open '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (S_ISDIR(st.st_mode) || !S_ISREG(st.st_mode)) {
        ft_set_error("safetensors: cannot open '%s': %s", path,
                     S_ISDIR(st.st_mode) ? "Is a directory" : "not a regular file");
        close(fd);
        return -1;
    }
    if (st.st_size < 8) {
        ft_set_error("safetensors: '%s' is too short to be a safetensors file: %lld bytes, and the "
                     "header length alone takes 8", path, (long long)st.st_size);
        close(fd);
        return -1;
    }
    /* A private mapping: pages come in as tensors are decoded or touched. Writable
     * (copy-on-write) when tensors are made over it, with MAP_NORESERVE: no swap is
     * reserved for pages that are mostly never written. (A file truncated by another
     * process while mapped faults when touched; the format offers no defence.) */
    int prot = cow ? PROT_READ | PROT_WRITE : PROT_READ;
    void *map = mmap(NULL, (size_t)st.st_size, prot, MAP_PRIVATE | (cow ? MAP_NORESERVE : 0), fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) {
        ft_set_error("safetensors: cannot read '%s': %s", path, strerror(err));
        return -1;
    }
    f->mapping = malloc(sizeof *f->mapping);
    if (!f->mapping) {
        munmap(map, (size_t)st.st_size);
        ft_set_error("safetensors: '%s': out of memory", path);
        return -1;
    }
    *f->mapping = (ft_st_mapping){.addr = map, .size = (size_t)st.st_size, .refs = 1, .cow = cow};
    f->path = strdup(path);
    if (!f->path) {
        ft_set_error("safetensors: '%s': out of memory", path);
        goto fail;
    }
    const unsigned char *bytes = map;
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) hlen = (hlen << 8) | bytes[b];
    uint64_t room = (uint64_t)st.st_size - 8;
    if (hlen > room) {
        ft_set_error("safetensors: '%s': the header length %llu runs past the end of the file "
                     "(%lld bytes)", path, (unsigned long long)hlen, (long long)st.st_size);
        goto fail;
    }
    if (hlen > MAX_HEADER) {
        ft_set_error("safetensors: '%s': the header length %llu is over the format's limit of %llu "
                     "bytes", path, (unsigned long long)hlen, (unsigned long long)MAX_HEADER);
        goto fail;
    }
    f->data = bytes + 8 + hlen;
    f->data_size = (int64_t)(room - hlen);
    /* Copies read the data in order; mapped tensors are touched in any order. */
    if (!cow) posix_madvise(map, (size_t)st.st_size, POSIX_MADV_SEQUENTIAL);
    if (st_parse_header(path, (const char *)bytes + 8, (size_t)hlen, f) != 0) goto fail;
    return 0;
fail:
    ft_st_close(f);
    return -1;
}

int ft_st_open(const char *path, ft_st_file *f) { return st_open(path, f, false); }

int ft_st_open_mapped(const char *path, ft_st_file *f) { return st_open(path, f, true); }

void ft_st_close(ft_st_file *f) {
    for (int k = 0; k < f->n; k++) free(f->entries[k].name);
    free(f->entries);
    for (int k = 0; k < f->nmeta; k++) {
        free(f->meta[k].key);
        free(f->meta[k].str);
    }
    free(f->meta);
    free(f->path);
    if (f->mapping) mapping_release(f->mapping);
    memset(f, 0, sizeof *f);
}

int ft_st_find(const ft_st_file *f, const char *name) {
    for (int k = 0; k < f->n; k++)
        if (strcmp(f->entries[k].name, name) == 0) return k;
    return -1;
}

/* Sets "safetensors: '<path>': tensor '<name>': <the current error>". */
static void tensor_error(const ft_st_file *f, const ft_st_entry *e) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s", ft_last_error());
    ft_set_error("safetensors: '%s': tensor '%s': %s", f->path, e->name, msg);
}

/* A tensor over the mapping (no copy), or NULL with the error set. */
static ft_tensor *mapped_tensor(const ft_st_file *f, const ft_st_entry *e, ft_dtype dtype) {
    ft_st_mapping *m = f->mapping;
    __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
    ft_tensor *t = ft_from_external((void *)(f->data + e->begin), (size_t)(e->end - e->begin), e->shape,
                                    e->ndim, dtype, mapping_release, m);
    if (!t) {
        mapping_release(m);   /* not called by a failed ft_from_external */
        tensor_error(f, e);
    }
    return t;
}

ft_tensor *ft_st_read(const ft_st_file *f, int k, const ft_dtype *float_dtype) {
    if (k < 0 || k >= f->n) {
        ft_set_error("safetensors: '%s': no tensor number %d (the file has %d)", f->path, k, f->n);
        return NULL;
    }
    const ft_st_entry *e = &f->entries[k];
    const st_dtype *dt = st_find_dtype(e->dtype);
    if (!dt || dt->code == ST_OTHER) {
        ft_set_error("safetensors: '%s': tensor '%s' has dtype %s, which ftlua does not decode "
                     "(it reads F64, F32, F16 and BF16 as float64, float32, float16 and bfloat16, "
                     "and I64, I32, I16, I8, U64, U32, U16, U8 and BOOL as int64)", f->path, e->name,
                     e->dtype);
        return NULL;
    }
    int is_float = st_is_float(dt->code);
    st_code to = is_float ? dt->code : ST_I64;
    if (is_float && float_dtype && st_code_of(*float_dtype, &to) != 0) to = ST_OTHER;
    if (to == ST_OTHER || (is_float && to == ST_I64)) {
        ft_set_error("safetensors: '%s': tensor '%s' (%s) cannot be read as %s: float tensors convert "
                     "to float64, float32, float16 or bfloat16", f->path, e->name, e->dtype,
                     float_dtype && *float_dtype >= 0 && *float_dtype < FT_NUM_DTYPES ? ft_dtype_name(*float_dtype) : "?");
        return NULL;
    }
    ft_dtype dtype = st_tensor_dtype(to);
    const unsigned char *src = f->data + e->begin;
    /* Over the mapping when nothing needs converting (U64 is checked value by value) and
     * the data is aligned for its elements: the mapping starts on a page. */
    size_t align = (size_t)st_code_size(to);
    if (f->mapping->cow && to == dt->code && e->end > e->begin && (uintptr_t)src % align == 0)
        return mapped_tensor(f, e, dtype);
    ft_tensor *t = ft_empty(e->shape, e->ndim, dtype);
    if (!t) {
        tensor_error(f, e);
        return NULL;
    }
    int64_t n = ft_numel(t);
    if (is_float) {
        st_convert_float(dt->code, src, to, ft_data(t), n);
    } else {
        int64_t *out = ft_i64(t);
        st_decode_int(dt->code, src, n, out);
        if (dt->code == ST_U64)   /* values past INT64_MAX read as negative */
            for (int64_t i = 0; i < n; i++)
                if (out[i] < 0) {
                    ft_set_error("safetensors: '%s': tensor '%s' (U64) holds %llu at element %lld, "
                                 "which does not fit int64", f->path, e->name,
                                 (unsigned long long)out[i], (long long)i);
                    ft_release(t);
                    return NULL;
                }
    }
    /* A read-only mapping's pages of this tensor are not needed again: dropping them keeps
     * the resident memory of a load near the size of the tensors (the page cache keeps the
     * file). Never for a copy-on-write mapping, where a page may hold another tensor's
     * writes. */
    if (!f->mapping->cow) {
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t lo = ((uintptr_t)src + page - 1) / page * page;
        uintptr_t hi = ((uintptr_t)f->data + (uintptr_t)e->end) / page * page;
        if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
    }
    return t;
}

int ft_safetensors_load(const char *path, ft_checkpoint *out, const ft_dtype *float_dtype, bool mapped) {
    memset(out, 0, sizeof *out);
    ft_st_file f;
    if ((mapped ? ft_st_open_mapped(path, &f) : ft_st_open(path, &f)) != 0) return -1;
    out->names = calloc(f.n > 0 ? (size_t)f.n : 1, sizeof *out->names);
    out->tensors = calloc(f.n > 0 ? (size_t)f.n : 1, sizeof *out->tensors);
    if (!out->names || !out->tensors) {
        ft_set_error("safetensors: '%s': out of memory", path);
        goto fail;
    }
    for (int k = 0; k < f.n; k++) {
        out->tensors[k] = ft_st_read(&f, k, float_dtype);
        if (!out->tensors[k]) goto fail;
        out->names[k] = f.entries[k].name;   /* taken over from f */
        f.entries[k].name = NULL;
        out->n++;
    }
    out->meta = f.meta;
    out->nmeta = f.nmeta;
    f.meta = NULL;
    f.nmeta = 0;
    ft_st_close(&f);
    return 0;
fail:
    ft_st_close(&f);
    ft_checkpoint_free(out);
    memset(out, 0, sizeof *out);
    return -1;
}
