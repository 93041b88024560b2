/* safetensors, writing: each tensor in its own dtype or the one asked for it, the header
 * built as the reference implementation writes it (tensors laid out by element size then
 * name, the header padded with spaces to a multiple of 8 bytes), then the data, through an
 * atomic write. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ft/io.h"
#include "ft/utf8.h"
#include "safetensors_internal.h"

/* A growing string for the header. */
typedef struct strbuf {
    char *p;
    size_t n, cap;
    int oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t len) {
    if (b->oom) return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void sb_str(strbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_int(strbuf *b, int64_t v) {
    char num[32];
    sb_add(b, num, (size_t)snprintf(num, sizeof num, "%lld", (long long)v));
}

/* s as a JSON string: quotes, backslashes and control characters escaped. */
static void sb_json_string(strbuf *b, const char *s) {
    sb_add(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sb_add(b, esc, 2);
        } else if (c < 0x20) {
            char esc[8];
            sb_add(b, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", c));
        } else {
            sb_add(b, p, 1);
        }
    }
    sb_add(b, "\"", 1);
}

/* Other readers (the reference parses the header as UTF-8) reject anything else. */
static int is_utf8(const char *s) { return ft_utf8_valid(s, strlen(s)); }

typedef struct st_out {
    const char *name;
    const ft_tensor *t;
    const st_dtype *dt;
    int64_t begin, end;
} st_out;

/* The reference's layout: larger elements first (so every tensor is aligned to its
 * element size), then by name. */
static int cmp_layout(const void *pa, const void *pb) {
    const st_out *a = pa, *b = pb;
    if (a->dt->bits != b->dt->bits) return a->dt->bits > b->dt->bits ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int write_all(int fd, const void *data, size_t len, const char *path) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            ft_set_error("safetensors: cannot write '%s': %s", path, strerror(errno));
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Writes the values of one contiguous tensor as code: as they are in its own dtype,
 * otherwise converted a chunk at a time. */
static int write_tensor(int fd, const ft_tensor *t, st_code code, const char *path) {
    int64_t n = ft_numel(t);
    st_code from;
    st_code_of(t->dtype, &from);
    if (from == code) return write_all(fd, ft_data(t), (size_t)n * ft_dtype_size(t->dtype), path);
    const int64_t chunk = (int64_t)1 << 20;
    size_t size = (size_t)st_code_size(code);
    unsigned char *buf = malloc((size_t)(n < chunk ? (n ? n : 1) : chunk) * size);
    if (!buf) {
        ft_set_error("safetensors: cannot write '%s': out of memory", path);
        return -1;
    }
    const unsigned char *src = ft_data(t);
    size_t src_size = ft_dtype_size(t->dtype);
    int rc = 0;
    for (int64_t at = 0; at < n && rc == 0; at += chunk) {
        int64_t m = n - at < chunk ? n - at : chunk;
        st_convert_float(from, src + (size_t)at * src_size, code, buf, m);
        rc = write_all(fd, buf, (size_t)m * size, path);
    }
    free(buf);
    return rc;
}

/* The dtype tensor t (called name) is stored as: its own, or `want` (a name of the
 * format) where one is given and the tensor can be stored so. */
static const st_dtype *stored_dtype(const char *path, const char *name, const ft_tensor *t, const char *want) {
    st_code own;
    if (st_code_of(t->dtype, &own) != 0) {
        ft_set_error("safetensors: cannot write '%s': tensor '%s' has an unknown dtype", path, name);
        return NULL;
    }
    if (!want) {
        static const char *const names[] = {[ST_F64] = "F64", [ST_F32] = "F32", [ST_F16] = "F16",
                                            [ST_BF16] = "BF16", [ST_I64] = "I64"};
        return st_find_dtype(names[own]);
    }
    const st_dtype *dt = st_find_dtype(want);
    if (!dt) {
        ft_set_error("safetensors: cannot write '%s': tensor '%s' cannot be stored as '%.32s', which is "
                     "not a dtype of the format (ftlua writes " FT_ST_WRITABLE_DTYPES ")", path, name, want);
        return NULL;
    }
    int is_float = st_is_float(dt->code);
    if (!is_float && dt->code != ST_I64) {
        ft_set_error("safetensors: cannot write '%s': tensor '%s' cannot be stored as %s (ftlua writes "
                     FT_ST_WRITABLE_DTYPES ")", path, name, dt->name);
        return NULL;
    }
    if (is_float != ft_dtype_is_float(t->dtype)) {
        ft_set_error("safetensors: cannot write '%s': tensor '%s' is %s and cannot be stored as %s (%s)",
                     path, name, ft_dtype_name(t->dtype), dt->name,
                     is_float ? "int64 tensors are stored as I64"
                              : "float tensors are stored as F64, F32, F16 or BF16");
        return NULL;
    }
    return dt;
}

static int check_save_args(const char *path, int n, const char *const *names, ft_tensor *const *tensors,
                           int nmeta, const ft_meta *meta) {
    for (int k = 0; k < n; k++) {
        if (!names[k] || !tensors[k]) {
            ft_set_error("safetensors: cannot write '%s': tensor %d has no name or no value", path, k + 1);
            return -1;
        }
        if (strcmp(names[k], "__metadata__") == 0) {
            ft_set_error("safetensors: cannot write '%s': the name '__metadata__' is reserved for "
                         "the metadata", path);
            return -1;
        }
        if (!is_utf8(names[k])) {
            ft_set_error("safetensors: cannot write '%s': the tensor name '%s' is not valid UTF-8",
                         path, names[k]);
            return -1;
        }
    }
    const char **sorted = malloc((n > 0 ? (size_t)n : 1) * sizeof *sorted);
    if (!sorted) {
        ft_set_error("safetensors: cannot write '%s': out of memory", path);
        return -1;
    }
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, st_cmp_str);
    for (int k = 0; k + 1 < n; k++)
        if (strcmp(sorted[k], sorted[k + 1]) == 0) {
            ft_set_error("safetensors: cannot write '%s': the name '%s' is given twice", path, sorted[k]);
            free(sorted);
            return -1;
        }
    free(sorted);
    for (int k = 0; k < nmeta; k++) {
        if (meta[k].kind != FT_META_STRING || !meta[k].key || !meta[k].str) {
            ft_set_error("safetensors: cannot write '%s': metadata '%s' is not a string (the format "
                         "stores string values only)", path, meta[k].key ? meta[k].key : "?");
            return -1;
        }
        if (!is_utf8(meta[k].key) || !is_utf8(meta[k].str)) {
            ft_set_error("safetensors: cannot write '%s': metadata '%s' is not valid UTF-8", path,
                         meta[k].key);
            return -1;
        }
    }
    return 0;
}

int ft_safetensors_save(const char *path, int n, const char *const *names, ft_tensor *const *tensors,
                        int nmeta, const ft_meta *meta, const char *const *dtypes) {
    if (check_save_args(path, n, names, tensors, nmeta, meta) != 0) return -1;

    st_out *out = calloc(n > 0 ? (size_t)n : 1, sizeof *out);
    strbuf h = {0};
    int rc = -1;
    if (!out) {
        ft_set_error("safetensors: cannot write '%s': out of memory", path);
        return -1;
    }
    for (int k = 0; k < n; k++) {
        out[k].name = names[k];
        out[k].t = tensors[k];
        out[k].dt = stored_dtype(path, names[k], tensors[k], dtypes ? dtypes[k] : NULL);
        if (!out[k].dt) goto done;
    }
    qsort(out, (size_t)n, sizeof *out, cmp_layout);
    int64_t pos = 0;
    for (int k = 0; k < n; k++) {
        out[k].begin = pos;
        pos += ft_numel(out[k].t) * out[k].dt->bits / 8;
        out[k].end = pos;
    }

    /* {"__metadata__":{...},"name":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},...} */
    sb_str(&h, "{");
    if (nmeta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int k = 0; k < nmeta; k++) {
            if (k) sb_str(&h, ",");
            sb_json_string(&h, meta[k].key);
            sb_str(&h, ":");
            sb_json_string(&h, meta[k].str);
        }
        sb_str(&h, n > 0 ? "}," : "}");
    }
    for (int k = 0; k < n; k++) {
        const st_out *o = &out[k];
        if (k) sb_str(&h, ",");
        sb_json_string(&h, o->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, o->dt->name);
        sb_str(&h, "\",\"shape\":[");
        for (int d = 0; d < o->t->ndim; d++) {
            if (d) sb_str(&h, ",");
            sb_int(&h, o->t->shape[d]);
        }
        sb_str(&h, "],\"data_offsets\":[");
        sb_int(&h, o->begin);
        sb_str(&h, ",");
        sb_int(&h, o->end);
        sb_str(&h, "]}");
    }
    sb_str(&h, "}");
    while (h.n % 8 != 0) sb_str(&h, " ");
    if (h.oom) {
        ft_set_error("safetensors: cannot write '%s': out of memory", path);
        goto done;
    }

    ft_atomic_file af;
    if (ft_atomic_open(&af, path) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ft_last_error());
        ft_set_error("safetensors: %s", msg);
        goto done;
    }
    unsigned char len8[8];
    for (int b = 0; b < 8; b++) len8[b] = (unsigned char)((uint64_t)h.n >> (8 * b));
    if (write_all(af.fd, len8, 8, path) != 0 || write_all(af.fd, h.p, h.n, path) != 0) {
        ft_atomic_abort(&af);
        goto done;
    }
    for (int k = 0; k < n; k++) {
        ft_tensor *c = ft_contiguous(out[k].t);
        if (!c) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", ft_last_error());
            ft_set_error("safetensors: cannot write '%s': tensor '%s': %s", path, out[k].name, msg);
            ft_atomic_abort(&af);
            goto done;
        }
        int w = write_tensor(af.fd, c, out[k].dt->code, path);
        ft_release(c);
        if (w != 0) {
            ft_atomic_abort(&af);
            goto done;
        }
    }
    if (ft_atomic_commit(&af) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ft_last_error());
        ft_set_error("safetensors: %s", msg);
        goto done;
    }
    rc = 0;
done:
    free(h.p);
    free(out);
    return rc;
}
