/* safetensors, HuggingFace's tensor file format: an 8-byte little-endian header length
 * N, N bytes of JSON describing each tensor (dtype, shape, data_offsets) plus optional
 * string metadata, then the data buffer. This file reads: it maps the file instead of
 * copying it, has the whole header validated (safetensors_header.c) before anything is
 * decoded, then decodes tensors one at a time (safetensors_dtype.c). The writer is
 * safetensors_write.c. */
#define _POSIX_C_SOURCE 200809L
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

int ft_st_open(const char *path, ft_st_file *f) {
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
    /* Read-only private mapping: pages come in as tensors are decoded. (A file truncated
     * by another process while mapped would fault; the format offers no defence.) */
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED) {
        ft_set_error("safetensors: cannot read '%s': %s", path, strerror(err));
        return -1;
    }
    f->map = map;
    f->map_size = (size_t)st.st_size;
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
    posix_madvise(map, f->map_size, POSIX_MADV_SEQUENTIAL);
    if (st_parse_header(path, (const char *)bytes + 8, (size_t)hlen, f) != 0) goto fail;
    return 0;
fail:
    ft_st_close(f);
    return -1;
}

void ft_st_close(ft_st_file *f) {
    for (int k = 0; k < f->n; k++) free(f->entries[k].name);
    free(f->entries);
    for (int k = 0; k < f->nmeta; k++) {
        free(f->meta[k].key);
        free(f->meta[k].str);
    }
    free(f->meta);
    free(f->path);
    if (f->map) munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

int ft_st_find(const ft_st_file *f, const char *name) {
    for (int k = 0; k < f->n; k++)
        if (strcmp(f->entries[k].name, name) == 0) return k;
    return -1;
}

ft_tensor *ft_st_read(const ft_st_file *f, int k) {
    if (k < 0 || k >= f->n) {
        ft_set_error("safetensors: '%s': no tensor number %d (the file has %d)", f->path, k, f->n);
        return NULL;
    }
    const ft_st_entry *e = &f->entries[k];
    const st_dtype *dt = st_find_dtype(e->dtype);
    if (!dt || dt->code == ST_OTHER) {
        ft_set_error("safetensors: '%s': tensor '%s' has dtype %s, which ftlua does not decode "
                     "(it reads F64, F32, F16 and BF16 as float32, and I64, I32, I16, I8, U64, "
                     "U32, U16, U8 and BOOL as int64)", f->path, e->name, e->dtype);
        return NULL;
    }
    int is_float = st_is_float(dt->code);
    ft_tensor *t = ft_empty(e->shape, e->ndim, is_float ? FT_FLOAT32 : FT_INT64);
    if (!t) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", ft_last_error());
        ft_set_error("safetensors: '%s': tensor '%s': %s", f->path, e->name, msg);
        return NULL;
    }
    int64_t n = ft_numel(t);
    const unsigned char *src = f->data + e->begin;
    if (is_float) {
        st_decode_float(dt->code, src, n, ft_f32(t));
        return t;
    }
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
    return t;
}

int ft_safetensors_load(const char *path, ft_checkpoint *out) {
    memset(out, 0, sizeof *out);
    ft_st_file f;
    if (ft_st_open(path, &f) != 0) return -1;
    out->names = calloc(f.n > 0 ? (size_t)f.n : 1, sizeof *out->names);
    out->tensors = calloc(f.n > 0 ? (size_t)f.n : 1, sizeof *out->tensors);
    if (!out->names || !out->tensors) {
        ft_set_error("safetensors: '%s': out of memory", path);
        goto fail;
    }
    for (int k = 0; k < f.n; k++) {
        out->tensors[k] = ft_st_read(&f, k);
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
