/* IDX arrays (the MNIST / Fashion-MNIST format), gzip-compressed or plain (zlib's
 * gzread reads both). Header: two zero bytes, an element type code, the number of
 * dimensions, then each dimension as a big-endian uint32; then the data, big-endian. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "ft/io.h"

#define MAX_NUMEL ((int64_t)1 << 40)

/* Element type codes of the IDX format and their sizes in bytes. */
static int element_size(int code) {
    switch (code) {
    case 0x08: return 1;   /* unsigned byte */
    case 0x09: return 1;   /* signed byte */
    case 0x0B: return 2;   /* short */
    case 0x0C: return 4;   /* int */
    case 0x0D: return 4;   /* float */
    case 0x0E: return 8;   /* double */
    default: return 0;
    }
}

/* Big-endian element k of the data as a double. */
static inline double element(const unsigned char *data, int code, int64_t k) {
    const unsigned char *p = data + k * element_size(code);
    uint64_t bits = 0;
    for (int b = 0; b < element_size(code); b++) bits = (bits << 8) | p[b];
    switch (code) {
    case 0x08: return (double)(uint8_t)bits;
    case 0x09: return (double)(int8_t)bits;
    case 0x0B: return (double)(int16_t)bits;
    case 0x0C: return (double)(int32_t)bits;
    case 0x0D: { uint32_t u = (uint32_t)bits; float f; memcpy(&f, &u, 4); return f; }
    default: { double d; memcpy(&d, &bits, 8); return d; }
    }
}

/* data (numel elements of type code) -> t as v * scale + offset. */
static void convert(const unsigned char *data, int code, int64_t numel, double scale, double offset, ft_tensor *t) {
    if (t->dtype == FT_FLOAT32) {
        float *out = ft_f32(t);
        const float s = (float)scale, o = (float)offset;
        if (code == 0x08) {   /* the common case (images, labels): a plain byte loop */
            #pragma omp parallel for
            for (int64_t k = 0; k < numel; k++) out[k] = (float)data[k] * s + o;
        } else {
            #pragma omp parallel for
            for (int64_t k = 0; k < numel; k++) out[k] = (float)(element(data, code, k) * scale + offset);
        }
    } else {
        int64_t *out = ft_i64(t);
        if (code == 0x08 && scale == 1.0) {
            const int64_t o = (int64_t)offset;
            #pragma omp parallel for
            for (int64_t k = 0; k < numel; k++) out[k] = (int64_t)data[k] + o;
        } else {
            #pragma omp parallel for
            for (int64_t k = 0; k < numel; k++) out[k] = (int64_t)(element(data, code, k) * scale + offset);
        }
    }
}

/* zlib's message without the "<path>: " it prefixes. */
static const char *gz_message(gzFile gz, const char *path, int *errnum) {
    const char *msg = gzerror(gz, errnum);
    if (!msg) return "";
    size_t n = strlen(path);
    if (strncmp(msg, path, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ') msg += n + 2;
    return msg;
}

ft_tensor *ft_idx_read(const char *path, ft_dtype dtype, double scale, double offset) {
    struct stat st;
    if (stat(path, &st) != 0) {
        ft_set_error("cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        ft_set_error("cannot open '%s': Is a directory", path);
        return NULL;
    }
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        ft_set_error("cannot open '%s': %s", path, errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    gzbuffer(gz, 1 << 20);

    ft_tensor *t = NULL;
    unsigned char *data = NULL;
    char shape_buf[128];
    int errnum = Z_OK;
    unsigned char header[4 + 4 * FT_MAX_DIMS];
    int got = gzread(gz, header, 4);
    if (got < 0) {
        ft_set_error("cannot read '%s': corrupt gzip data (%s)", path, gz_message(gz, path, &errnum));
        goto fail;
    }
    if (got < 4 || header[0] != 0 || header[1] != 0) {
        ft_set_error("'%s' is not an IDX file (bad magic number)", path);
        goto fail;
    }
    const int code = header[2], ndim = header[3], esize = element_size(code);
    if (esize == 0) {
        ft_set_error("'%s': unknown IDX element type 0x%02X", path, code);
        goto fail;
    }
    if (ndim < 1 || ndim > FT_MAX_DIMS) {
        ft_set_error("'%s': IDX header gives %d dimensions (1 to %d supported)", path, ndim, FT_MAX_DIMS);
        goto fail;
    }
    got = gzread(gz, header + 4, (unsigned)(4 * ndim));
    if (got < 0) {
        ft_set_error("cannot read '%s': corrupt gzip data (%s)", path, gz_message(gz, path, &errnum));
        goto fail;
    }
    if (got != 4 * ndim) {
        ft_set_error("'%s' is truncated: the IDX header needs %d bytes", path, 4 + 4 * ndim);
        goto fail;
    }
    int64_t shape[FT_MAX_DIMS], numel = 1;
    for (int d = 0; d < ndim; d++) {
        const unsigned char *p = header + 4 + 4 * d;
        shape[d] = ((int64_t)p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
        numel = numel <= MAX_NUMEL ? numel * shape[d] : numel;
    }
    ft_shape_str(shape, ndim, shape_buf, sizeof shape_buf);
    if (numel > MAX_NUMEL) {
        ft_set_error("'%s': IDX header gives an implausible shape %s", path, shape_buf);
        goto fail;
    }
    const int64_t expected = numel * esize;

    /* Grow the buffer as data arrives, so a lying header cannot make us allocate
     * more than the file holds (plus one chunk). */
    int64_t have = 0, cap = 0;
    const int64_t chunk = 1 << 24;
    while (have < expected) {
        if (have == cap) {
            int64_t next = cap ? 2 * cap : chunk;
            cap = next < expected ? next : expected;
            unsigned char *grown = realloc(data, (size_t)cap);
            if (!grown) {
                ft_set_error("cannot read '%s': out of memory for %lld bytes", path, (long long)cap);
                goto fail;
            }
            data = grown;
        }
        int64_t want = cap - have < chunk ? cap - have : chunk;
        int r = gzread(gz, data + have, (unsigned)want);
        if (r < 0) {
            ft_set_error("cannot read '%s': corrupt gzip data (%s)", path, gz_message(gz, path, &errnum));
            goto fail;
        }
        if (r == 0) break;
        have += r;
    }
    if (have < expected) {
        const char *msg = gz_message(gz, path, &errnum);
        ft_set_error("'%s' is truncated: the header says %s values of %d byte%s = %lld bytes of "
                     "data, the file has %lld%s%s", path, shape_buf, esize, esize > 1 ? "s" : "",
                     (long long)expected, (long long)have, errnum != Z_OK ? "; " : "",
                     errnum != Z_OK ? msg : "");
        goto fail;
    }
    /* One more read: extra bytes mean the header does not describe the file, and the
     * end of a gzip stream is where its checksum is verified. */
    unsigned char extra;
    int r = gzread(gz, &extra, 1);
    if (r != 0) {
        if (r > 0)
            ft_set_error("'%s' has more data than its header says (%s = %lld bytes)", path,
                         shape_buf, (long long)expected);
        else
            ft_set_error("cannot read '%s': corrupt gzip data (%s)", path, gz_message(gz, path, &errnum));
        goto fail;
    }
    gz_message(gz, path, &errnum);
    if (errnum != Z_OK) {
        ft_set_error("cannot read '%s': corrupt gzip data (%s)", path, gz_message(gz, path, &errnum));
        goto fail;
    }
    gzclose(gz);
    gz = NULL;

    t = ft_empty(shape, ndim, dtype);
    if (!t) {
        ft_set_error("cannot read '%s': out of memory for a tensor %s", path, shape_buf);
        goto fail;
    }
    convert(data, code, numel, scale, offset, t);
    free(data);
    return t;

fail:
    if (gz) gzclose(gz);
    free(data);
    ft_release(t);
    return NULL;
}
