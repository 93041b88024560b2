/* Raw checks of HDF5 structures, read from the file's bytes before libhdf5 decodes them.
 *
 * libhdf5 1.10.8 decodes a corrupt attribute message only part way and then frees it
 * wrongly when the file is closed (a use-after-free / heap overflow in attribute
 * iteration), and follows a corrupt global heap collection into wild reads or an endless
 * walk. These checks find such damage first, following the HDF5 File Format
 * Specification (version 1 object headers, attribute message versions 1-3, datatype and
 * dataspace messages, global heap collections). Offsets and lengths are 8 bytes, the
 * layout every current writer uses; the loader does not call these for other layouts. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hdf5_internal.h"

#define MAX_CHUNKS 256
#define MAX_CHUNK_BYTES ((uint64_t)64 << 20)
#define MAX_RANK 32

static int fail(char *why, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
    return -1;
}

static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int k = 0; k < n; k++) v |= (uint64_t)p[k] << (8 * k);
    return v;
}

static int read_at(int fd, void *buf, uint64_t n, uint64_t at) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = pread(fd, p, n, (off_t)at);
        if (got <= 0) return -1;
        p += got;
        at += (uint64_t)got;
        n -= (uint64_t)got;
    }
    return 0;
}

/* ---- datatype and dataspace messages ------------------------------------------------ */

/* Checks the datatype message p[0..n): sets *used (its length) and *size (bytes per
 * element on disk). Only the classes a checkpoint's metadata uses are accepted. */
static int check_datatype(const unsigned char *p, uint64_t n, uint64_t *used, uint64_t *size, int depth,
                          char *why, size_t wl) {
    if (n < 8) return fail(why, wl, "datatype message too short");
    unsigned cls = p[0] & 0x0f, version = p[0] >> 4;
    uint32_t bits = (uint32_t)le(p + 1, 3);
    *size = le(p + 4, 4);
    if (version < 1 || version > 3) return fail(why, wl, "datatype version %u", version);
    switch (cls) {
    case 0:   /* fixed-point: bit offset, precision */
        if (n < 12) return fail(why, wl, "integer datatype too short");
        if (*size != 1 && *size != 2 && *size != 4 && *size != 8) return fail(why, wl, "integer of %llu bytes", (unsigned long long)*size);
        if (le(p + 8, 2) + le(p + 10, 2) > 8 * *size || le(p + 10, 2) == 0) return fail(why, wl, "integer bit fields out of range");
        *used = 12;
        return 0;
    case 1: { /* floating-point */
        if (n < 20) return fail(why, wl, "float datatype too short");
        if (*size != 2 && *size != 4 && *size != 8) return fail(why, wl, "float of %llu bytes", (unsigned long long)*size);
        unsigned norm = (bits >> 4) & 3, sign = (bits >> 8) & 0xff;
        uint64_t off = le(p + 8, 2), prec = le(p + 10, 2);
        unsigned epos = p[12], esize = p[13], mpos = p[14], msize = p[15];
        uint64_t nbits = 8 * *size;
        if (norm > 2 || sign >= nbits || off + prec > nbits || prec == 0 || esize == 0 || msize == 0 ||
            epos + esize > nbits || mpos + msize > nbits || esize > 32 || msize > 64)
            return fail(why, wl, "float bit fields out of range");
        *used = 20;
        return 0;
    }
    case 3:   /* string: padding type, character set */
        if ((bits & 0x0f) > 2 || ((bits >> 4) & 0x0f) > 1) return fail(why, wl, "string padding or character set unknown");
        if (*size == 0) return fail(why, wl, "string of 0 bytes");
        *used = 8;
        return 0;
    case 9: { /* variable-length: only strings, whose base type is a 1-byte integer */
        if ((bits & 0x0f) != 1) return fail(why, wl, "variable-length sequence (only strings are read)");
        if (((bits >> 8) & 0x0f) > 1 || ((bits >> 4) & 0x0f) > 2) return fail(why, wl, "string padding or character set unknown");
        if (depth > 0) return fail(why, wl, "nested variable-length type");
        uint64_t base_used, base_size;
        if (check_datatype(p + 8, n - 8, &base_used, &base_size, depth + 1, why, wl) != 0) return -1;
        if ((p[8] & 0x0f) != 0 || base_size != 1) return fail(why, wl, "variable-length string of a base type other than bytes");
        if (*size != 16) return fail(why, wl, "variable-length string of %llu bytes (16 expected)", (unsigned long long)*size);
        *used = 8 + base_used;
        return 0;
    }
    default:
        return fail(why, wl, "datatype class %u (only integers, floats and strings are read)", cls);
    }
}

/* Checks the dataspace message p[0..n); sets *npoints. */
static int check_dataspace(const unsigned char *p, uint64_t n, uint64_t *npoints, char *why, size_t wl) {
    if (n < 4) return fail(why, wl, "dataspace message too short");
    unsigned version = p[0], rank = p[1], flags = p[2];
    uint64_t at;
    int null = 0;
    if (version == 1) {
        at = 8;
        if (flags & ~3u) return fail(why, wl, "dataspace flags 0x%x", flags);
    } else if (version == 2) {
        at = 4;
        if (p[3] > 2 || flags & ~1u) return fail(why, wl, "dataspace type %u, flags 0x%x", p[3], flags);
        null = p[3] == 2;
        if (p[3] == 0 && rank != 0) return fail(why, wl, "scalar dataspace of rank %u", rank);
    } else {
        return fail(why, wl, "dataspace version %u", version);
    }
    if (rank > MAX_RANK) return fail(why, wl, "dataspace of rank %u", rank);
    uint64_t need = at + 8ull * rank * (1 + (flags & 1) + (version == 1 && (flags & 2)));
    if (need > n) return fail(why, wl, "dataspace message too short for rank %u", rank);
    uint64_t count = 1;
    for (unsigned k = 0; k < rank; k++) {
        uint64_t d = le(p + at + 8 * k, 8);
        if (d != 0 && count > UINT64_MAX / d) return fail(why, wl, "dataspace size overflows");
        count *= d;
    }
    *npoints = null ? 0 : count;
    return 0;
}

/* Checks one attribute message p[0..n). */
static int check_attribute(const unsigned char *p, uint64_t n, char *why, size_t wl) {
    if (n < 8) return fail(why, wl, "attribute message too short");
    unsigned version = p[0], flags = p[1];
    uint64_t name_size = le(p + 2, 2), dt_size = le(p + 4, 2), ds_size = le(p + 6, 2);
    uint64_t at = version == 3 ? 9 : 8;
    if (version < 1 || version > 3) return fail(why, wl, "attribute message version %u", version);
    if (version >= 2 && flags != 0) return fail(why, wl, "attribute with shared datatype or dataspace");
    if (version == 3 && p[8] > 1) return fail(why, wl, "attribute name encoding %u", p[8]);
#define PAD(x) (version == 1 ? (((x) + 7) & ~(uint64_t)7) : (x))
    if (name_size == 0 || at + PAD(name_size) > n) return fail(why, wl, "attribute name past its message");
    const unsigned char *name = p + at;
    if (name[name_size - 1] != 0 || memchr(name, 0, name_size) != name + name_size - 1)
        return fail(why, wl, "attribute name not terminated");
    at += PAD(name_size);
    if (at + PAD(dt_size) > n) return fail(why, wl, "attribute datatype past its message");
    uint64_t used, elem;
    if (check_datatype(p + at, dt_size, &used, &elem, 0, why, wl) != 0) return -1;
    if (used > dt_size) return fail(why, wl, "attribute datatype longer than declared");
    at += PAD(dt_size);
    if (at + PAD(ds_size) > n) return fail(why, wl, "attribute dataspace past its message");
    uint64_t npoints = 0;
    if (check_dataspace(p + at, ds_size, &npoints, why, wl) != 0) return -1;
    at += PAD(ds_size);
#undef PAD
    if (npoints != 0 && elem > UINT64_MAX / npoints) return fail(why, wl, "attribute data size overflows");
    if (npoints * elem > n - at)
        return fail(why, wl, "attribute data of %llu bytes in a %llu-byte message",
                    (unsigned long long)(npoints * elem), (unsigned long long)n);
    return 0;
}

/* ---- object headers ----------------------------------------------------------------- */

int ft_h5check_attributes(int fd, uint64_t file_size, uint64_t addr, char *why, size_t wl) {
    unsigned char prefix[16];
    if (addr > file_size || file_size - addr < 16 || read_at(fd, prefix, 16, addr) != 0)
        return fail(why, wl, "object header past the end of the file");
    if (memcmp(prefix, "OHDR", 4) == 0) return 0;   /* version 2: checksummed, verified by the library */
    if (prefix[0] != 1) return fail(why, wl, "object header version %u", prefix[0]);
    uint64_t chunks[MAX_CHUNKS][2];
    int nchunks = 1;
    chunks[0][0] = addr + 16;
    chunks[0][1] = le(prefix + 8, 4);
    for (int c = 0; c < nchunks; c++) {
        uint64_t at = chunks[c][0], len = chunks[c][1];
        if (len > MAX_CHUNK_BYTES || at > file_size || file_size - at < len)
            return fail(why, wl, "object header chunk past the end of the file");
        unsigned char *buf = malloc(len ? len : 1);
        if (!buf) return fail(why, wl, "out of memory");
        if (read_at(fd, buf, len, at) != 0) {
            free(buf);
            return fail(why, wl, "cannot read an object header chunk");
        }
        uint64_t off = 0;
        while (off + 8 <= len) {
            unsigned type = (unsigned)le(buf + off, 2);
            uint64_t size = le(buf + off + 2, 2);
            unsigned flags = buf[off + 4];
            if (size > len - off - 8) {
                free(buf);
                return fail(why, wl, "object header message past its chunk");
            }
            const unsigned char *msg = buf + off + 8;
            int rc = 0;
            if (type == 0x000C) {
                rc = (flags & 0x02) ? fail(why, wl, "shared attribute message")
                                    : check_attribute(msg, size, why, wl);
            } else if (type == 0x0015) {
                rc = fail(why, wl, "attributes in dense storage in a version 1 header");
            } else if (type == 0x0010) {   /* continuation: offset, length */
                if (size < 16) rc = fail(why, wl, "continuation message too short");
                else if (nchunks == MAX_CHUNKS) rc = fail(why, wl, "more than %d object header chunks", MAX_CHUNKS);
                else {
                    uint64_t caddr = le(msg, 8), clen = le(msg + 8, 8);
                    for (int k = 0; k < nchunks && rc == 0; k++)
                        if (chunks[k][0] == caddr) rc = fail(why, wl, "object header chunks in a loop");
                    chunks[nchunks][0] = caddr;
                    chunks[nchunks][1] = clen;
                    nchunks++;
                }
            }
            if (rc != 0) {
                free(buf);
                return -1;
            }
            off += 8 + size;
        }
        free(buf);
    }
    return 0;
}

/* ---- global heap collections ------------------------------------------------------- */

int ft_h5check_global_heaps(int fd, uint64_t file_size, const uint64_t (*skip)[2], int nskip,
                            char *why, size_t wl) {
    enum { BLOCK = 1 << 20 };
    unsigned char *buf = malloc(BLOCK);
    if (!buf) return fail(why, wl, "out of memory");
    int rc = 0;
    /* Blocks overlap by 3 bytes so a signature across a block edge is seen once. */
    for (uint64_t pos = 0; pos < file_size && rc == 0;) {
        ssize_t got = pread(fd, buf, BLOCK, (off_t)pos);
        if (got <= 0) break;
        for (ssize_t i = 0; i + 4 <= got && rc == 0; i++) {
            if (buf[i] != 'G' || memcmp(buf + i, "GCOL", 4) != 0) continue;
            uint64_t at = pos + (uint64_t)i;
            int in_data = 0;
            for (int k = 0; k < nskip && !in_data; k++) in_data = at >= skip[k][0] && at < skip[k][1];
            if (in_data) continue;
            unsigned char head[16];
            if (file_size < 16 || at > file_size - 16 || read_at(fd, head, 16, at) != 0 || head[4] != 1) {
                rc = fail(why, wl, "global heap collection at %llu: bad header", (unsigned long long)at);
                break;
            }
            uint64_t size = le(head + 8, 8);
            if (size < 16 || size > file_size || at > file_size - size) {
                rc = fail(why, wl, "global heap collection at %llu: size past the end of the file", (unsigned long long)at);
                break;
            }
            /* Objects: index (2), references (2), reserved (4), size (8), data padded to
             * 8 bytes. The walk is the library's: index 0 is free space whose size counts
             * its own header, and the walk goes on after it (a free space of size 0 is an
             * endless loop in libhdf5); a tail too short for a header is free space. */
            for (uint64_t off = 16; off + 16 <= size;) {
                unsigned char oh[16];
                if (read_at(fd, oh, 16, at + off) != 0) {
                    rc = fail(why, wl, "global heap collection at %llu: truncated", (unsigned long long)at);
                    break;
                }
                uint64_t osize = le(oh + 8, 8);
                uint64_t need = le(oh, 2) == 0 ? osize : 16 + ((osize + 7) & ~(uint64_t)7);
                if (le(oh, 2) == 0 && osize < 16) {
                    rc = fail(why, wl, "global heap collection at %llu: free space of %llu bytes",
                              (unsigned long long)at, (unsigned long long)osize);
                    break;
                }
                if (osize > size || need > size - off) {
                    rc = fail(why, wl, "global heap collection at %llu: object past its end", (unsigned long long)at);
                    break;
                }
                off += need;
            }
        }
        if (got < BLOCK) break;
        pos += (uint64_t)got - 3;
    }
    free(buf);
    return rc;
}
