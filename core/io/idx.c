/* IDX arrays (the MNIST / Fashion-MNIST format), gzip-compressed or plain. Header: two zero bytes, an element type code, the number of
 * dimensions, then each dimension as a big-endian uint32; then the data, big-endian. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "ft/io.h"

#define DEFLATE_RATIO 1032   /* zlib's best case: compressed data expands at most this */

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

/* Inflates the gzip member(s) of src[0..n) into at most cap bytes at *out (grown as data
 * arrives, so a lying header allocates no more than the stream really holds). Members
 * may be concatenated; anything else after the last one is refused. Stops at cap bytes
 * (the caller asks for one more than it expects, to see extra data). Sets *have. Returns
 * 0, 1 when the stream ends early (what it held is kept), or -1 with the error set. */
static int gunzip(const char *path, const unsigned char *src, size_t n, int64_t cap,
                  unsigned char **out, int64_t *have) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + 15) != Z_OK) {
        ft_set_error("cannot read '%s': out of memory", path);
        return -1;
    }
    unsigned char *buf = NULL;
    int64_t size = 0, used = 0;
    z.next_in = (unsigned char *)src;
    int rc = -1;
    for (;;) {
        /* The input is in memory: feed it in pieces that fit zlib's counters. */
        size_t offset = (size_t)(z.next_in - src);
        z.avail_in = (uInt)(n - offset > (1u << 30) ? (1u << 30) : n - offset);
        if (used == size) {
            if (size >= cap) {   /* enough: the caller sees more data than it asked for */
                rc = 0;
                goto done;
            }
            int64_t next = size ? 2 * size : (1 << 20);
            if (next > cap) next = cap;
            unsigned char *grown = realloc(buf, (size_t)next);
            if (!grown) {
                ft_set_error("cannot read '%s': out of memory for %lld bytes", path, (long long)next);
                goto done;
            }
            buf = grown;
            size = next;
        }
        z.next_out = buf + used;
        z.avail_out = (uInt)(size - used > (1 << 30) ? (1 << 30) : size - used);
        uInt before = z.avail_out;
        int r = inflate(&z, Z_NO_FLUSH);
        used += before - z.avail_out;
        if (r == Z_STREAM_END) {
            size_t left = n - (size_t)(z.next_in - src);
            if (left == 0) break;
            if (left >= 2 && z.next_in[0] == 0x1f && z.next_in[1] == 0x8b) {   /* another member */
                inflateReset(&z);
                continue;
            }
            ft_set_error("'%s' has %zu bytes of trailing garbage after its gzip data", path, left);
            goto done;
        }
        if (r == Z_BUF_ERROR && z.avail_out != 0) {
            rc = 1;   /* the stream ends early: keep what it held, the caller says how much */
            goto done;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) {
            ft_set_error("cannot read '%s': corrupt gzip data (%s)", path, z.msg ? z.msg : "inflate failed");
            goto done;
        }
    }
    rc = 0;
done:
    inflateEnd(&z);
    if (rc < 0) {
        free(buf);
        buf = NULL;
        used = 0;
    }
    *out = buf;
    *have = used;
    return rc;
}

ft_tensor *ft_idx_read(const char *path, ft_dtype dtype, double scale, double offset) {
    size_t file_size;
    char *file = ft_read_file(path, FT_IDX_MAX_BYTES, &file_size);
    if (!file) return NULL;
    const unsigned char *raw = (const unsigned char *)file;
    int gz = file_size >= 2 && raw[0] == 0x1f && raw[1] == 0x8b;

    ft_tensor *t = NULL;
    unsigned char *inflated = NULL;
    const unsigned char *bytes = raw;
    int64_t nbytes = (int64_t)file_size;
    int truncated = 0;
    char shape_buf[128];
    if (gz) {
        /* The header first (at most 36 bytes) for the claimed size, then the rest. */
        int64_t head_have = 0;
        z_stream z;
        memset(&z, 0, sizeof z);
        unsigned char hbuf[4 + 4 * FT_MAX_DIMS];
        if (inflateInit2(&z, 16 + 15) == Z_OK) {
            z.next_in = (unsigned char *)raw;
            z.avail_in = (uInt)(file_size > (1u << 30) ? (1u << 30) : file_size);
            z.next_out = hbuf;
            z.avail_out = sizeof hbuf;
            while (z.avail_out > 0 && inflate(&z, Z_NO_FLUSH) == Z_OK) {}
            head_have = (int64_t)(sizeof hbuf - z.avail_out);
            inflateEnd(&z);
        }
        if (head_have >= 4 && hbuf[0] == 0 && hbuf[1] == 0 && element_size(hbuf[2]) && hbuf[3] >= 1 &&
            hbuf[3] <= FT_MAX_DIMS && head_have >= 4 + 4 * hbuf[3]) {
            int64_t claimed = element_size(hbuf[2]);
            for (int d = 0; d < hbuf[3] && claimed >= 0; d++) {
                const unsigned char *p = hbuf + 4 + 4 * d;
                int64_t dim = ((int64_t)p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
                if (!ft_size_mul(claimed, dim, &claimed)) claimed = -1;
            }
            /* deflate expands at most 1032:1: a header claiming more lies. */
            int64_t room = ((int64_t)file_size + 64) * DEFLATE_RATIO;
            if (claimed < 0 || claimed > room) {
                ft_set_error("'%s': the IDX header claims %lld bytes of data, more than a %zu-byte "
                             "gzip file can hold", path, (long long)claimed, file_size);
                goto fail;
            }
            truncated = gunzip(path, raw, file_size, 4 + 4 * hbuf[3] + claimed + 1, &inflated, &nbytes);
        } else {   /* too short or not IDX: the checks below say which */
            truncated = gunzip(path, raw, file_size, 4 + 4 * FT_MAX_DIMS, &inflated, &nbytes);
        }
        if (truncated < 0) goto fail;
        bytes = inflated;
    }

    if (nbytes < 4 || bytes[0] != 0 || bytes[1] != 0) {
        ft_set_error("'%s' is not an IDX file (bad magic number)", path);
        goto fail;
    }
    const int code = bytes[2], ndim = bytes[3], esize = element_size(code);
    if (esize == 0) {
        ft_set_error("'%s': unknown IDX element type 0x%02X", path, code);
        goto fail;
    }
    if (ndim < 1 || ndim > FT_MAX_DIMS) {
        ft_set_error("'%s': IDX header gives %d dimensions (1 to %d supported)", path, ndim, FT_MAX_DIMS);
        goto fail;
    }
    const int64_t header = 4 + 4 * (int64_t)ndim;
    if (nbytes < header) {
        ft_set_error("'%s' is truncated: the IDX header needs %lld bytes", path, (long long)header);
        goto fail;
    }
    int64_t shape[FT_MAX_DIMS], numel = 1;
    for (int d = 0; d < ndim; d++) {
        const unsigned char *p = bytes + 4 + 4 * d;
        shape[d] = ((int64_t)p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
        if (!ft_size_mul(numel, shape[d], &numel)) numel = INT64_MAX;
    }
    ft_shape_str(shape, ndim, shape_buf, sizeof shape_buf);
    int64_t expected;
    if (!ft_size_mul(numel, esize, &expected) || expected > (int64_t)FT_IDX_MAX_BYTES) {
        ft_set_error("'%s': IDX header gives a shape %s over the limit of %lld bytes of data", path,
                     shape_buf, (long long)FT_IDX_MAX_BYTES);
        goto fail;
    }
    const int64_t have = nbytes - header;
    if (have < expected) {
        ft_set_error("'%s' is truncated: the header says %s values of %d byte%s = %lld bytes of "
                     "data, the file has %lld%s", path, shape_buf, esize, esize > 1 ? "s" : "",
                     (long long)expected, (long long)have, truncated ? " (its gzip stream ends early)" : "");
        goto fail;
    }
    if (truncated) {
        ft_set_error("'%s' is truncated: its gzip stream ends before its checksum", path);
        goto fail;
    }
    if (have > expected) {
        ft_set_error("'%s' has more data than its header says (%s = %lld bytes)", path,
                     shape_buf, (long long)expected);
        goto fail;
    }
    t = ft_empty(shape, ndim, dtype);
    if (!t) {
        ft_set_error("cannot read '%s': out of memory for a tensor %s", path, shape_buf);
        goto fail;
    }
    convert(bytes + header, code, numel, scale, offset, t);
    free(inflated);
    free(file);
    return t;

fail:
    free(inflated);
    free(file);
    ft_release(t);
    return NULL;
}
