/* safetensors, HuggingFace's tensor file format: an 8-byte little-endian header length
 * N, N bytes of JSON describing each tensor (dtype, shape, data_offsets) plus optional
 * string metadata, then the data buffer. The header is validated as the reference
 * implementation does (known dtypes, sizes matching shapes, tensors covering the buffer
 * exactly) before anything is decoded; reading maps the file instead of copying it. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ft/io.h"

/* The format is little-endian and the decoders below copy values as they are. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors.c assumes a little-endian host");

#define MAX_HEADER ((uint64_t)100000000)   /* the reference implementation's limit */
#define MAX_DIM ((int64_t)1 << 53)         /* integers a JSON number holds exactly */
#define PARALLEL_MIN 32768                 /* elements below which a loop stays serial */

/* ---- dtypes ----------------------------------------------------------------------- */

typedef enum {
    ST_F64, ST_F32, ST_F16, ST_BF16,
    ST_I64, ST_I32, ST_I16, ST_I8, ST_U64, ST_U32, ST_U16, ST_U8, ST_BOOL,
    ST_OTHER   /* known to the format, not decoded here (float8/6/4, complex) */
} st_code;

typedef struct st_dtype {
    const char *name;
    int bits;
    st_code code;
} st_dtype;

/* Every dtype of the format, so that sizes can be validated for all of them. */
static const st_dtype DTYPES[] = {
    {"F64", 64, ST_F64},   {"F32", 32, ST_F32},   {"F16", 16, ST_F16},   {"BF16", 16, ST_BF16},
    {"I64", 64, ST_I64},   {"I32", 32, ST_I32},   {"I16", 16, ST_I16},   {"I8", 8, ST_I8},
    {"U64", 64, ST_U64},   {"U32", 32, ST_U32},   {"U16", 16, ST_U16},   {"U8", 8, ST_U8},
    {"BOOL", 8, ST_BOOL},
    {"F8_E5M2", 8, ST_OTHER}, {"F8_E4M3", 8, ST_OTHER}, {"F8_E8M0", 8, ST_OTHER},
    {"F6_E2M3", 6, ST_OTHER}, {"F6_E3M2", 6, ST_OTHER}, {"F4", 4, ST_OTHER}, {"C64", 64, ST_OTHER},
};
#define NDTYPES ((int)(sizeof DTYPES / sizeof DTYPES[0]))
#define KNOWN_DTYPES "F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, " \
                     "F8_E5M2, F8_E4M3, F8_E8M0, F6_E2M3, F6_E3M2, F4, C64"

static const st_dtype *find_dtype(const char *name) {
    for (int i = 0; i < NDTYPES; i++)
        if (strcmp(DTYPES[i].name, name) == 0) return &DTYPES[i];
    return NULL;
}

static int is_float_code(st_code c) { return c == ST_F64 || c == ST_F32 || c == ST_F16 || c == ST_BF16; }

/* IEEE half -> float (exact). */
static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {                       /* inf, NaN */
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {                   /* normal: rebias the exponent 15 -> 127 */
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else {                                 /* zero, subnormal: mant * 2^-24 */
        float f = (float)mant * 0x1p-24f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* float -> IEEE half, rounded to nearest even; NaN becomes 0x7E00 (as PyTorch). */
static inline uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00);
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);   /* >= 65520 rounds to inf */
    if (ax >= 0x38800000u) {                                    /* >= 2^-14: a normal half */
        uint32_t r = ax - 0x38000000u;                          /* exponent 127 -> 15 */
        r += 0xfffu + ((r >> 13) & 1);                          /* ties to even on 13 bits */
        return (uint16_t)(sign | (r >> 13));
    }
    if (ax < 0x33000000u) return (uint16_t)sign;                /* < 2^-25 rounds to zero */
    /* A subnormal half counts units of 2^-24: f = m * 2^(e-150) = (m >> (126-e)) units. */
    uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;           /* may carry into a normal */
    return (uint16_t)(sign | q);
}

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* float -> bfloat16, rounded to nearest even; NaN becomes 0x7FC0 (as PyTorch). */
static inline uint16_t float_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* ---- header validation --------------------------------------------------------------- */

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* A non-negative integer that a JSON number holds exactly, or -1. */
static int64_t json_count(const cJSON *item) {
    if (!cJSON_IsNumber(item)) return -1;
    double v = item->valuedouble;
    if (!(v >= 0 && v <= (double)MAX_DIM) || v != (double)(int64_t)v) return -1;
    return (int64_t)v;
}

/* Up to 24 bytes of text at p (before end) for an error message, non-printables as '?'
 * and the padding dropped. */
static const char *snippet(const char *p, const char *end, char out[32]) {
    int n = 0;
    for (; p < end && n < 24; p++) out[n++] = (*p >= 32 && *p < 127) ? *p : '?';
    while (n > 0 && out[n - 1] == ' ') n--;
    out[n] = '\0';
    return out;
}

static int parse_entry(const char *path, const cJSON *item, ft_st_entry *e, int64_t data_size) {
    const char *name = item->string;
    char sbuf[128];
    if (!cJSON_IsObject(item)) {
        ft_set_error("safetensors: '%s': the header entry of tensor '%s' is not a JSON object", path, name);
        return -1;
    }
    static const char *const fields[] = {"dtype", "shape", "data_offsets"};
    for (int i = 0; i < 3; i++)
        if (!cJSON_GetObjectItemCaseSensitive(item, fields[i])) {
            ft_set_error("safetensors: '%s': tensor '%s' has no '%s' in the header", path, name, fields[i]);
            return -1;
        }
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");

    if (!cJSON_IsString(dtype)) {
        ft_set_error("safetensors: '%s': tensor '%s' has a 'dtype' that is not a string", path, name);
        return -1;
    }
    const st_dtype *dt = find_dtype(dtype->valuestring);
    if (!dt) {
        ft_set_error("safetensors: '%s': tensor '%s' has an unknown dtype '%.32s' (the format knows "
                     KNOWN_DTYPES ")", path, name, dtype->valuestring);
        return -1;
    }
    snprintf(e->dtype, sizeof e->dtype, "%s", dt->name);

    if (!cJSON_IsArray(shape)) {
        ft_set_error("safetensors: '%s': tensor '%s' has a 'shape' that is not an array", path, name);
        return -1;
    }
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > FT_MAX_DIMS) {
        ft_set_error("safetensors: '%s': tensor '%s' has %d dimensions (at most %d supported)", path,
                     name, ndim, FT_MAX_DIMS);
        return -1;
    }
    e->ndim = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        int64_t v = json_count(d);
        if (v < 0) {
            ft_set_error("safetensors: '%s': tensor '%s' has a 'shape' entry that is not a "
                         "non-negative integer", path, name);
            return -1;
        }
        e->shape[e->ndim++] = v;
    }

    int64_t begin = -1, end = -1;
    if (cJSON_IsArray(offsets) && cJSON_GetArraySize(offsets) == 2) {
        begin = json_count(cJSON_GetArrayItem(offsets, 0));
        end = json_count(cJSON_GetArrayItem(offsets, 1));
    }
    if (begin < 0 || end < 0) {
        ft_set_error("safetensors: '%s': tensor '%s' has 'data_offsets' that are not two "
                     "non-negative integers [begin, end]", path, name);
        return -1;
    }
    e->begin = begin;
    e->end = end;
    if (end < begin) {
        ft_set_error("safetensors: '%s': tensor '%s' has data_offsets [%lld, %lld] that end before "
                     "they begin", path, name, (long long)begin, (long long)end);
        return -1;
    }
    if (end > data_size) {
        ft_set_error("safetensors: '%s': tensor '%s' has data_offsets [%lld, %lld] past the end of "
                     "the data (%lld bytes)", path, name, (long long)begin, (long long)end,
                     (long long)data_size);
        return -1;
    }
    /* Size in bits: no overflow, since each factor is checked against the file's size. */
    int64_t numel = 1, limit = (data_size + 1) * 8 / dt->bits + 1;
    for (int k = 0; k < e->ndim; k++) {
        if (e->shape[k] == 0) { numel = 0; break; }
        numel = numel > limit / e->shape[k] ? limit + 1 : numel * e->shape[k];
    }
    ft_shape_str(e->shape, e->ndim, sbuf, sizeof sbuf);
    if (numel > limit) {
        ft_set_error("safetensors: '%s': tensor '%s' of dtype %s has shape %s, larger than the whole "
                     "file", path, name, dt->name, sbuf);
        return -1;
    }
    int64_t bits = numel * dt->bits;
    if (bits % 8 != 0) {
        ft_set_error("safetensors: '%s': tensor '%s' of dtype %s and shape %s needs %lld bits, not a "
                     "whole number of bytes", path, name, dt->name, sbuf, (long long)bits);
        return -1;
    }
    if (bits / 8 != end - begin) {
        ft_set_error("safetensors: '%s': tensor '%s' of dtype %s and shape %s needs %lld bytes, but "
                     "its data_offsets [%lld, %lld] hold %lld", path, name, dt->name, sbuf,
                     (long long)(bits / 8), (long long)begin, (long long)end, (long long)(end - begin));
        return -1;
    }
    e->name = xstrdup(name);
    if (!e->name) {
        ft_set_error("safetensors: '%s': out of memory", path);
        return -1;
    }
    return 0;
}

static int parse_metadata(const char *path, const cJSON *item, ft_st_file *f) {
    if (cJSON_IsNull(item)) return 0;
    if (!cJSON_IsObject(item)) {
        ft_set_error("safetensors: '%s': '__metadata__' is not a JSON object of strings", path);
        return -1;
    }
    int n = cJSON_GetArraySize(item);
    f->meta = calloc(n > 0 ? (size_t)n : 1, sizeof *f->meta);
    if (!f->meta) {
        ft_set_error("safetensors: '%s': out of memory", path);
        return -1;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, item) {
        if (!cJSON_IsString(m)) {
            ft_set_error("safetensors: '%s': '__metadata__' entry '%s' is not a string", path, m->string);
            return -1;
        }
        ft_meta *out = &f->meta[f->nmeta];
        out->kind = FT_META_STRING;
        out->key = xstrdup(m->string);
        out->str = xstrdup(m->valuestring);
        f->nmeta++;
        if (!out->key || !out->str) {
            ft_set_error("safetensors: '%s': out of memory", path);
            return -1;
        }
    }
    return 0;
}

static int cmp_offsets(const void *pa, const void *pb) {
    const ft_st_entry *a = pa, *b = pb;
    if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end) return a->end < b->end ? -1 : 1;
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Entries sorted by offsets must tile the data: each starts where the previous ended,
 * and the last ends where the file ends. Names must be unique. */
static int check_layout(const char *path, ft_st_file *f) {
    qsort(f->entries, (size_t)f->n, sizeof *f->entries, cmp_offsets);
    int64_t pos = 0;
    const ft_st_entry *prev = NULL;
    for (int k = 0; k < f->n; k++) {
        const ft_st_entry *e = &f->entries[k];
        if (e->begin < pos) {
            ft_set_error("safetensors: '%s': tensors '%s' (data_offsets [%lld, %lld]) and '%s' "
                         "([%lld, %lld]) overlap", path, prev->name, (long long)prev->begin,
                         (long long)prev->end, e->name, (long long)e->begin, (long long)e->end);
            return -1;
        }
        if (e->begin > pos) {
            ft_set_error("safetensors: '%s': bytes %lld to %lld of the data belong to no tensor (a "
                         "hole before tensor '%s', data_offsets [%lld, %lld]); the tensors must "
                         "cover the data without gaps", path, (long long)pos, (long long)e->begin,
                         e->name, (long long)e->begin, (long long)e->end);
            return -1;
        }
        pos = e->end;
        prev = e;
    }
    if (pos != f->data_size) {
        if (prev)
            ft_set_error("safetensors: '%s': the data has %lld bytes but the tensors cover only the "
                         "first %lld (extra bytes after tensor '%s')", path, (long long)f->data_size,
                         (long long)pos, prev->name);
        else
            ft_set_error("safetensors: '%s': the header lists no tensors but %lld bytes of data "
                         "follow it", path, (long long)f->data_size);
        return -1;
    }
    const char **names = malloc((f->n > 0 ? (size_t)f->n : 1) * sizeof *names);
    if (!names) {
        ft_set_error("safetensors: '%s': out of memory", path);
        return -1;
    }
    for (int k = 0; k < f->n; k++) names[k] = f->entries[k].name;
    qsort(names, (size_t)f->n, sizeof *names, cmp_str);
    for (int k = 0; k + 1 < f->n; k++)
        if (strcmp(names[k], names[k + 1]) == 0) {
            ft_set_error("safetensors: '%s': tensor '%s' appears twice in the header", path, names[k]);
            free(names);
            return -1;
        }
    free(names);
    return 0;
}

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0. */
static int utf8_sequence(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (len == 0 || (size_t)len > n) return 0;
    for (int k = 1; k < len; k++)
        if ((s[k] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xf0 && s[1] < 0x90)) return 0;   /* overlong */
    if (c == 0xed && s[1] > 0x9f) return 0;                                   /* surrogate */
    if (c == 0xf4 && s[1] > 0x8f) return 0;                                   /* > U+10FFFF */
    return len;
}

static unsigned hex4(const unsigned char *s, size_t n) {
    unsigned v = 0;
    if (n < 4) return 0x110000;
    for (int k = 0; k < 4; k++) {
        unsigned c = s[k], d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : 16;
        if (d == 16) return 0x110000;
        v = v * 16 + d;
    }
    return v;
}

/* What cJSON lets through and the format forbids, found in the header's text: strings
 * must be UTF-8 without raw control characters, zero characters (\u0000 would cut a
 * name or a dtype short: "F32\u0000" must not read as F32) or lone surrogates; numbers
 * must be integers written as such (no fraction, exponent or leading zero). Returns
 * NULL, or what is wrong with *at its offset. */
static const char *check_header_text(const char *header, size_t len, size_t *at) {
    const unsigned char *s = (const unsigned char *)header;
    for (size_t i = 0; i < len; i++) {
        unsigned c = s[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < len && s[j] != '"') {
                unsigned b = s[j];
                *at = j;
                if (b < 0x20) return "a raw control character in a string";
                if (b >= 0x80) {
                    int n = utf8_sequence(s + j, len - j);
                    if (!n) return "a string that is not valid UTF-8";
                    j += (size_t)n;
                } else if (b == '\\') {
                    if (j + 1 >= len) break;
                    if (s[j + 1] != 'u') {
                        j += 2;
                        continue;
                    }
                    unsigned cp = hex4(s + j + 2, len - j - 2);
                    if (cp == 0) return "a zero character (\\u0000) in a string";
                    if (cp >= 0xdc00 && cp <= 0xdfff) return "a lone surrogate in a string";
                    if (cp >= 0xd800 && cp <= 0xdbff) {
                        unsigned lo = j + 12 <= len && s[j + 6] == '\\' && s[j + 7] == 'u' ? hex4(s + j + 8, len - j - 8) : 0;
                        if (lo < 0xdc00 || lo > 0xdfff) return "a lone surrogate in a string";
                        j += 6;
                    }
                    j += 6;
                } else {
                    j++;
                }
            }
            i = j;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i;
            while (j < len && strchr("0123456789+-.eE", s[j]) && s[j]) j++;
            *at = i;
            for (size_t k = i; k < j; k++)
                if (s[k] == '.' || s[k] == 'e' || s[k] == 'E') return "a number that is not an integer";
            if (s[i] == '0' && j - i > 1) return "a number with a leading zero";
            i = j - 1;
        }
    }
    return NULL;
}

/* A key that a JSON object has twice (cJSON keeps both; the reference rejects it), or
 * NULL; *oom is set when the check could not run. */
static const char *duplicate_key(const cJSON *obj, int *oom) {
    int n = cJSON_GetArraySize(obj);
    if (n < 2) return NULL;
    const char **keys = malloc((size_t)n * sizeof *keys);
    if (!keys) {
        *oom = 1;
        return NULL;
    }
    int k = 0;
    for (const cJSON *a = obj->child; a && k < n; a = a->next) keys[k++] = a->string;
    qsort(keys, (size_t)k, sizeof *keys, cmp_str);
    const char *dup = NULL;
    for (int i = 0; i + 1 < k && !dup; i++)
        if (strcmp(keys[i], keys[i + 1]) == 0) dup = keys[i];
    free(keys);
    return dup;
}

static int parse_header(const char *path, const char *header, size_t len, ft_st_file *f) {
    const char *end = NULL;
    char sbuf[32];
    size_t bad_at = 0;
    const char *bad = check_header_text(header, len, &bad_at);
    if (bad) {
        ft_set_error("safetensors: '%s': the header holds %s (near byte %zu of the header: '%s')", path,
                     bad, bad_at + 1, snippet(header + bad_at, header + len, sbuf));
        return -1;
    }
    cJSON *root = cJSON_ParseWithLengthOpts(header, len, &end, 0);
    if (!root) {
        size_t at = end && end >= header && end <= header + len ? (size_t)(end - header) : 0;
        ft_set_error("safetensors: '%s': the header is not valid JSON (error near byte %zu of the "
                     "header: '%s')", path, at + 1, snippet(header + at, header + len, sbuf));
        return -1;
    }
    int rc = -1;
    /* The reference pads the header with spaces; nothing else may follow the object. */
    for (const char *p = end; p < header + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            ft_set_error("safetensors: '%s': the header has text after its JSON object: '%s'", path,
                         snippet(p, header + len, sbuf));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        ft_set_error("safetensors: '%s': the header is not a JSON object", path);
        goto done;
    }
    int n = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
        if (strcmp(item->string, "__metadata__") != 0) n++;
    f->entries = calloc(n > 0 ? (size_t)n : 1, sizeof *f->entries);
    if (!f->entries) {
        ft_set_error("safetensors: '%s': out of memory", path);
        goto done;
    }
    /* Tensor names are unique (checked with the layout); fields and metadata keys too. */
    int nmetadata = 0;
    cJSON_ArrayForEach(item, root) {
        int oom = 0;
        const char *dup = cJSON_IsObject(item) ? duplicate_key(item, &oom) : NULL;
        if (oom) {
            ft_set_error("safetensors: '%s': out of memory", path);
            goto done;
        }
        if (dup) {
            ft_set_error("safetensors: '%s': the header entry '%s' has the key '%s' twice", path,
                         item->string, dup);
            goto done;
        }
        if (strcmp(item->string, "__metadata__") == 0 && nmetadata++) {
            ft_set_error("safetensors: '%s': the header has '__metadata__' twice", path);
            goto done;
        }
    }
    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (parse_metadata(path, item, f) != 0) goto done;
        } else {
            if (parse_entry(path, item, &f->entries[f->n], f->data_size) != 0) goto done;
            f->n++;
        }
    }
    rc = check_layout(path, f);
done:
    cJSON_Delete(root);
    return rc;
}

/* ---- reading ---------------------------------------------------------------------------- */

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
    f->path = xstrdup(path);
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
    if (parse_header(path, (const char *)bytes + 8, (size_t)hlen, f) != 0) goto fail;
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

/* Decodes n values of code at src (any alignment) into out (float32 or int64). */
#define DECODE(T, expr)                                                              \
    do {                                                                             \
        _Pragma("omp parallel for if (n > PARALLEL_MIN)")                            \
        for (int64_t i = 0; i < n; i++) {                                            \
            T v;                                                                     \
            memcpy(&v, src + i * (int64_t)sizeof(T), sizeof(T));                     \
            out[i] = (expr);                                                         \
        }                                                                            \
    } while (0)

static void decode_float(st_code code, const unsigned char *src, int64_t n, float *out) {
    switch (code) {
    case ST_F32: memcpy(out, src, (size_t)n * 4); break;
    case ST_F64: DECODE(double, (float)v); break;
    case ST_F16: DECODE(uint16_t, half_to_float(v)); break;
    case ST_BF16: DECODE(uint16_t, bf16_to_float(v)); break;
    default: break;
    }
}

static void decode_int(st_code code, const unsigned char *src, int64_t n, int64_t *out) {
    switch (code) {
    case ST_I64: case ST_U64: memcpy(out, src, (size_t)n * 8); break;
    case ST_I32: DECODE(int32_t, (int64_t)v); break;
    case ST_I16: DECODE(int16_t, (int64_t)v); break;
    case ST_I8: DECODE(int8_t, (int64_t)v); break;
    case ST_U32: DECODE(uint32_t, (int64_t)v); break;
    case ST_U16: DECODE(uint16_t, (int64_t)v); break;
    case ST_U8: DECODE(uint8_t, (int64_t)v); break;
    case ST_BOOL: DECODE(uint8_t, (int64_t)(v != 0)); break;
    default: break;
    }
}

ft_tensor *ft_st_read(const ft_st_file *f, int k) {
    if (k < 0 || k >= f->n) {
        ft_set_error("safetensors: '%s': no tensor number %d (the file has %d)", f->path, k, f->n);
        return NULL;
    }
    const ft_st_entry *e = &f->entries[k];
    const st_dtype *dt = find_dtype(e->dtype);
    if (!dt || dt->code == ST_OTHER) {
        ft_set_error("safetensors: '%s': tensor '%s' has dtype %s, which ftlua does not decode "
                     "(it reads F64, F32, F16 and BF16 as float32, and I64, I32, I16, I8, U64, "
                     "U32, U16, U8 and BOOL as int64)", f->path, e->name, e->dtype);
        return NULL;
    }
    int is_float = is_float_code(dt->code);
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
        decode_float(dt->code, src, n, ft_f32(t));
        return t;
    }
    int64_t *out = ft_i64(t);
    decode_int(dt->code, src, n, out);
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

/* ---- writing -------------------------------------------------------------------------- */

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
static int is_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
        if (!len) return 0;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
        for (int i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        p += len;
    }
    return 1;
}

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

/* Writes the values of one contiguous tensor as dtype code. */
static int write_tensor(int fd, const ft_tensor *t, st_code code, const char *path) {
    int64_t n = ft_numel(t);
    if (code == ST_F32) return write_all(fd, ft_f32(t), (size_t)n * 4, path);
    if (code == ST_I64) return write_all(fd, ft_i64(t), (size_t)n * 8, path);
    /* F16 / BF16: convert a chunk at a time. */
    const int64_t chunk = (int64_t)1 << 20;
    uint16_t *buf = malloc((size_t)(n < chunk ? (n ? n : 1) : chunk) * sizeof *buf);
    if (!buf) {
        ft_set_error("safetensors: cannot write '%s': out of memory", path);
        return -1;
    }
    const float *src = ft_f32(t);
    int rc = 0;
    for (int64_t at = 0; at < n && rc == 0; at += chunk) {
        int64_t m = n - at < chunk ? n - at : chunk;
        if (code == ST_F16) {
            #pragma omp parallel for if (m > PARALLEL_MIN)
            for (int64_t i = 0; i < m; i++) buf[i] = float_to_half(src[at + i]);
        } else {
            #pragma omp parallel for if (m > PARALLEL_MIN)
            for (int64_t i = 0; i < m; i++) buf[i] = float_to_bf16(src[at + i]);
        }
        rc = write_all(fd, buf, (size_t)m * sizeof *buf, path);
    }
    free(buf);
    return rc;
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
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
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
                        int nmeta, const ft_meta *meta, const char *float_dtype) {
    const st_dtype *fdt = find_dtype(float_dtype ? float_dtype : "F32");
    if (!fdt || (fdt->code != ST_F32 && fdt->code != ST_F16 && fdt->code != ST_BF16)) {
        ft_set_error("safetensors: cannot write '%s': float tensors are stored as F32, F16 or BF16, "
                     "not '%s'", path, float_dtype);
        return -1;
    }
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
        out[k].dt = tensors[k]->dtype == FT_INT64 ? find_dtype("I64") : fdt;
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
