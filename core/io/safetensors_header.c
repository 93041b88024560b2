/* The safetensors header: the JSON text after the length, parsed with cJSON and
 * validated as the reference implementation does (known dtypes, sizes matching shapes,
 * tensors covering the buffer exactly, no duplicate names or keys) before anything is
 * decoded. cJSON is more lenient than the format, so the text itself is checked first. */
#define _POSIX_C_SOURCE 200809L   /* strdup */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ft/io.h"
#include "ft/utf8.h"
#include "safetensors_internal.h"

#define MAX_DIM ((int64_t)1 << 53)   /* integers a JSON number holds exactly */

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
    const st_dtype *dt = st_find_dtype(dtype->valuestring);
    if (!dt) {
        ft_set_error("safetensors: '%s': tensor '%s' has an unknown dtype '%.32s' (the format knows "
                     ST_KNOWN_DTYPES ")", path, name, dtype->valuestring);
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
    e->name = strdup(name);
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
        out->key = strdup(m->string);
        out->str = strdup(m->valuestring);
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
    qsort(names, (size_t)f->n, sizeof *names, st_cmp_str);
    for (int k = 0; k + 1 < f->n; k++)
        if (strcmp(names[k], names[k + 1]) == 0) {
            ft_set_error("safetensors: '%s': tensor '%s' appears twice in the header", path, names[k]);
            free(names);
            return -1;
        }
    free(names);
    return 0;
}

/* The value of the four hex digits at s[0..n), or 0x110000 (no code point) when there
 * are not four. */
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
                    int n = ft_utf8_sequence(header + j, len - j);
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
    qsort(keys, (size_t)k, sizeof *keys, st_cmp_str);
    const char *dup = NULL;
    for (int i = 0; i + 1 < k && !dup; i++)
        if (strcmp(keys[i], keys[i + 1]) == 0) dup = keys[i];
    free(keys);
    return dup;
}

int st_parse_header(const char *path, const char *header, size_t len, ft_st_file *f) {
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
