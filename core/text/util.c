/* Small tools of the tokenizer: growable buffers, UTF-8, hashing and the Unicode classes
 * (read from utf8proc's and Oniguruma's tables, never from tables of our own). */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "tokenizer_internal.h"

int tk_grow(void **p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / size) {
            ft_set_error("tokenizer: out of memory");
            return -1;
        }
        c *= 2;
    }
    void *q = realloc(*p, c * size);
    if (!q) {
        ft_set_error("tokenizer: out of memory (%zu bytes)", c * size);
        return -1;
    }
    *p = q;
    *cap = c;
    return 0;
}

int tk_buf_reserve(tk_buf *b, size_t extra) {
    if (extra > SIZE_MAX / 2 - b->n) {
        ft_set_error("tokenizer: out of memory");
        return -1;
    }
    return tk_grow((void **)&b->p, &b->cap, b->n + extra + 1, 1);
}

int tk_buf_add(tk_buf *b, const void *s, size_t len) {
    if (tk_buf_reserve(b, len)) return -1;
    if (len) memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
    return 0;
}

void tk_buf_free(tk_buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

int tk_ids_reserve(ft_token_ids *ids, size_t extra) {
    return tk_grow((void **)&ids->ids, &ids->cap, ids->len + extra, sizeof *ids->ids);
}

int tk_ids_push(ft_token_ids *ids, int32_t id) {
    if (ids->len == ids->cap && tk_ids_reserve(ids, 1)) return -1;
    ids->ids[ids->len++] = id;
    return 0;
}

void ft_token_ids_free(ft_token_ids *ids) {
    if (!ids) return;
    free(ids->ids);
    ids->ids = NULL;
    ids->len = ids->cap = 0;
}

int tk_pieces_push(tk_pieces *ps, size_t off, size_t len, int32_t id, bool at_start) {
    if (ps->n == ps->cap && tk_grow((void **)&ps->p, &ps->cap, ps->n + 1, sizeof *ps->p)) return -1;
    ps->p[ps->n++] = (tk_piece){off, len, id, at_start};
    return 0;
}

int tk_spans_push(tk_spans *sp, size_t start, size_t end, bool match) {
    if (sp->n == sp->cap && tk_grow((void **)&sp->p, &sp->cap, sp->n + 1, sizeof *sp->p)) return -1;
    sp->p[sp->n++] = (tk_span){start, end, match};
    return 0;
}

void tk_work_free(tk_work *w) {
    tk_buf_free(&w->arena);
    free(w->pieces.p);
    free(w->tmp.p);
    tk_buf_free(&w->norm_a);
    tk_buf_free(&w->norm_b);
    free(w->cps);
    free(w->spans.p);
    ft_token_ids_free(&w->seq_a);
    ft_token_ids_free(&w->seq_b);
    free(w->symbols);
    free(w->heap);
    memset(w, 0, sizeof *w);
}

/* ---- UTF-8 ------------------------------------------------------------------------- */

size_t tk_utf8_invalid_at(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        /* Eight ASCII bytes at a time. */
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (v & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        uint32_t min;
        if (c >= 0xC2 && c <= 0xDF) { len = 2; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; min = 0x10000; }
        else return i;
        if (i + len > n) return i;
        uint32_t cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

size_t tk_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t tk_utf8_last(const char *s, size_t n) {
    size_t i = n - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    return i;
}

/* A 64-bit hash of bytes, eight at a time (wyhash-style multiply-mix). */
uint64_t tk_hash(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xC2B2AE3D27D4EB4FULL);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ tk_mix64(v)) * 0x9FB21C651E98DF25ULL;
        p += 8;
        n -= 8;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    h = (h ^ tk_mix64(v ^ 0x5851F42D4C957F2DULL)) * 0x9FB21C651E98DF25ULL;
    return tk_mix64(h);
}

/* ---- Unicode classes --------------------------------------------------------------- */

bool tk_is_whitespace(uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    return ONIGENC_IS_CODE_SPACE(ONIG_ENCODING_UTF8, cp);
}

bool tk_is_word(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    return ONIGENC_IS_CODE_WORD(ONIG_ENCODING_UTF8, cp);
}

bool tk_is_numeric(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool tk_is_punctuation(uint32_t cp) {
    if (cp < 0x80)
        return (cp >= 0x21 && cp <= 0x2F) || (cp >= 0x3A && cp <= 0x40) || (cp >= 0x5B && cp <= 0x60) ||
               (cp >= 0x7B && cp <= 0x7E);
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO;
}

bool tk_is_alphanumeric(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
    return ONIGENC_IS_CODE_ALPHA(ONIG_ENCODING_UTF8, cp) || tk_is_numeric(cp);
}
