#define _GNU_SOURCE
/* Decoders: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, WordPiece,
 * BPEDecoder and Sequence, each a map from a list of token strings to a list of strings
 * (joined at the end), as HF's decode_chain. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

static const char *const DECODERS =
    "ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, WordPiece, BPEDecoder, Sequence";

/* ---- string lists -------------------------------------------------------------------------- */

int tk_strs_push(tk_strs *l, const char *s, size_t len) {
    if (l->n == l->cap) {
        size_t cap = l->cap;
        if (tk_grow((void **)&l->off, &cap, l->n + 1, sizeof *l->off)) return -1;
        cap = l->cap;
        if (tk_grow((void **)&l->len, &cap, l->n + 1, sizeof *l->len)) return -1;
        l->cap = cap;
    }
    size_t off = l->text.n;
    if (tk_buf_add(&l->text, s, len)) return -1;
    l->off[l->n] = off;
    l->len[l->n] = len;
    l->n++;
    return 0;
}

void tk_strs_clear(tk_strs *l) {
    l->n = 0;
    l->text.n = 0;
}

void tk_strs_free(tk_strs *l) {
    tk_buf_free(&l->text);
    free(l->off);
    free(l->len);
    memset(l, 0, sizeof *l);
}

/* Appends to the last string of l (a new one when l is empty). */
static int strs_extend(tk_strs *l, const char *s, size_t len) {
    if (l->n == 0) return tk_strs_push(l, s, len);
    if (tk_buf_add(&l->text, s, len)) return -1;
    l->len[l->n - 1] += len;
    return 0;
}

/* ---- parsing ------------------------------------------------------------------------------ */

int tk_decoder_parse(tk_decoder *d, const tk_src *src, const char *where, const cJSON *obj) {
    memset(d, 0, sizeof *d);
    const char *type, *s;
    if (tk_get_type(src, where, obj, &type)) return -1;
    if (strcmp(type, "ByteLevel") == 0) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets", "use_regex", NULL};
        d->kind = TK_DEC_BYTE_LEVEL;
        return tk_check_object(src, where, obj, keys);
    }
    if (strcmp(type, "Replace") == 0) {
        static const char *const keys[] = {"type", "pattern", "content", NULL};
        d->kind = TK_DEC_REPLACE;
        if (tk_check_object(src, where, obj, keys) || tk_get_string(src, where, obj, "content", true, &s, &d->text_len) ||
            !(d->text = tk_strndup(s, d->text_len)))
            return -1;
        return tk_regex_from_json(&d->re, src, where, obj, "pattern");
    }
    if (strcmp(type, "ByteFallback") == 0 || strcmp(type, "Fuse") == 0) {
        static const char *const keys[] = {"type", NULL};
        d->kind = type[0] == 'B' ? TK_DEC_BYTE_FALLBACK : TK_DEC_FUSE;
        return tk_check_object(src, where, obj, keys);
    }
    if (strcmp(type, "Strip") == 0) {
        static const char *const keys[] = {"type", "content", "start", "stop", NULL};
        d->kind = TK_DEC_STRIP;
        return tk_check_object(src, where, obj, keys) || tk_get_char(src, where, obj, "content", true, ' ', &d->cp) ||
               tk_get_int(src, where, obj, "start", true, 0, 0, INT32_MAX, &d->start) ||
               tk_get_int(src, where, obj, "stop", true, 0, 0, INT32_MAX, &d->stop) ? -1 : 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        static const char *const keys[] = {"type", "replacement", "prepend_scheme", "split", "add_prefix_space",
                                           "str_rep", NULL};
        bool split;
        d->kind = TK_DEC_METASPACE;
        return tk_check_object(src, where, obj, keys) ||
               tk_get_char(src, where, obj, "replacement", true, 0x2581, &d->cp) ||
               tk_get_string(src, where, obj, "str_rep", false, &s, NULL) ||
               tk_parse_prepend_scheme(src, where, obj, &d->prepend) ||
               tk_get_bool(src, where, obj, "split", false, true, &split) ? -1 : 0;
    }
    if (strcmp(type, "WordPiece") == 0) {
        static const char *const keys[] = {"type", "prefix", "cleanup", NULL};
        d->kind = TK_DEC_WORDPIECE;
        if (tk_check_object(src, where, obj, keys) || tk_get_string(src, where, obj, "prefix", false, &s, &d->text_len) ||
            tk_get_bool(src, where, obj, "cleanup", false, true, &d->cleanup))
            return -1;
        if (!s) {
            s = "##";
            d->text_len = 2;
        }
        return (d->text = tk_strndup(s, d->text_len)) ? 0 : -1;
    }
    if (strcmp(type, "BPEDecoder") == 0) {
        static const char *const keys[] = {"type", "suffix", NULL};
        d->kind = TK_DEC_BPE;
        if (tk_check_object(src, where, obj, keys) || tk_get_string(src, where, obj, "suffix", false, &s, &d->text_len))
            return -1;
        if (!s) {
            s = "</w>";
            d->text_len = 4;
        }
        return (d->text = tk_strndup(s, d->text_len)) ? 0 : -1;
    }
    if (strcmp(type, "Sequence") == 0) {
        static const char *const keys[] = {"type", "decoders", NULL};
        d->kind = TK_DEC_SEQUENCE;
        const cJSON *arr, *item;
        if (tk_check_object(src, where, obj, keys) || tk_get_array(src, where, obj, "decoders", &arr)) return -1;
        size_t count = (size_t)cJSON_GetArraySize(arr);
        d->items = calloc(count ? count : 1, sizeof *d->items);
        if (!d->items) return tk_fail(src, where, "out of memory");
        char base[512], sub[512];
        tk_path(base, sizeof base, where, "decoders", 0);
        cJSON_ArrayForEach(item, arr) {
            int rc = tk_decoder_parse(&d->items[d->n_items], src, tk_path(sub, sizeof sub, base, NULL, (int)d->n_items), item);
            d->n_items++;
            if (rc) return -1;
        }
        return 0;
    }
    char sub[512];
    return tk_fail(src, tk_path(sub, sizeof sub, where, "type", 0), "unsupported decoder \"%s\" (supported: %s)", type,
                   DECODERS);
}

void tk_decoder_free(tk_decoder *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n_items; i++) tk_decoder_free(&d->items[i]);
    free(d->items);
    free(d->text);
    tk_regex_free(&d->re);
    memset(d, 0, sizeof *d);
}

/* ---- decoding ------------------------------------------------------------------------------ */

/* Appends s as UTF-8, each maximal invalid subpart replaced by U+FFFD (Rust's
 * from_utf8_lossy, the WHATWG decoder). */
static int utf8_lossy(tk_buf *out, const unsigned char *s, size_t n) {
    static const char fffd[] = "\xEF\xBF\xBD";
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            size_t j = i;
            while (j < n && s[j] < 0x80) j++;
            if (tk_buf_add(out, s + i, j - i)) return -1;
            i = j;
            continue;
        }
        size_t width;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) width = 2;
        else if (c == 0xE0) { width = 3; lo = 0xA0; }
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) width = 3;
        else if (c == 0xED) { width = 3; hi = 0x9F; }
        else if (c == 0xF0) { width = 4; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) width = 4;
        else if (c == 0xF4) { width = 4; hi = 0x8F; }
        else {
            if (tk_buf_add(out, fffd, 3)) return -1;
            i++;
            continue;
        }
        size_t j = i + 1;
        bool ok = j < n && s[j] >= lo && s[j] <= hi;
        if (ok) {
            j++;
            while (j < i + width) {
                if (j >= n || (s[j] & 0xC0) != 0x80) {
                    ok = false;
                    break;
                }
                j++;
            }
        }
        if (ok) {
            if (tk_buf_add(out, s + i, width)) return -1;
            i += width;
        } else {
            if (tk_buf_add(out, fffd, 3)) return -1;
            i = j;
        }
    }
    return 0;
}

static int byte_level(tk_strs *in, tk_strs *out) {
    tk_buf bytes = {0};
    for (size_t t = 0; t < in->n; t++) {
        const char *s = in->text.p + in->off[t];
        size_t n = in->len[t], start = bytes.n;
        bool all = true;
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            i += tk_utf8_decode(s + i, &cp);
            int b = tk_char_byte(cp);
            if (b < 0) {
                all = false;
                break;
            }
            unsigned char c = (unsigned char)b;
            if (tk_buf_add(&bytes, &c, 1)) goto fail;
        }
        if (!all) {   /* a token with other chars stands for its own bytes */
            bytes.n = start;
            if (tk_buf_add(&bytes, s, n)) goto fail;
        }
    }
    tk_buf text = {0};
    if (utf8_lossy(&text, (const unsigned char *)bytes.p, bytes.n) || tk_strs_push(out, text.p ? text.p : "", text.n)) {
        tk_buf_free(&text);
        goto fail;
    }
    tk_buf_free(&text);
    tk_buf_free(&bytes);
    return 0;
fail:
    tk_buf_free(&bytes);
    return -1;
}

static int replace(const tk_decoder *d, tk_strs *in, tk_strs *out, tk_spans *spans) {
    for (size_t t = 0; t < in->n; t++) {
        const char *s = in->text.p + in->off[t];
        if (tk_regex_find((tk_regex *)&d->re, s, in->len[t], spans) || tk_strs_push(out, "", 0)) return -1;
        for (size_t i = 0; i < spans->n; i++) {
            const tk_span *sp = &spans->p[i];
            if (sp->match ? strs_extend(out, d->text, d->text_len) : strs_extend(out, s + sp->start, sp->end - sp->start))
                return -1;
        }
    }
    return 0;
}

/* "<0xNN>" -> its byte, as Rust's u8::from_str_radix (an optional '+', two hex digits). */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (x < 0) {
            if (i == 3 && c == '+') continue;
            return -1;
        }
        v = v * 16 + x;
    }
    return v;
}

static int flush_bytes(tk_buf *bytes, tk_strs *out) {
    if (bytes->n == 0) return 0;
    int rc;
    if (tk_utf8_invalid_at(bytes->p, bytes->n) == bytes->n) {
        rc = tk_strs_push(out, bytes->p, bytes->n);
    } else {   /* HF: one U+FFFD per byte when the run is not valid UTF-8 */
        rc = 0;
        for (size_t i = 0; i < bytes->n && !rc; i++) rc = tk_strs_push(out, "\xEF\xBF\xBD", 3);
    }
    bytes->n = 0;
    return rc;
}

static int byte_fallback(tk_strs *in, tk_strs *out) {
    tk_buf bytes = {0};
    int rc = 0;
    for (size_t t = 0; t < in->n && !rc; t++) {
        const char *s = in->text.p + in->off[t];
        int b = byte_token(s, in->len[t]);
        if (b >= 0) {
            unsigned char c = (unsigned char)b;
            rc = tk_buf_add(&bytes, &c, 1);
        } else {
            rc = flush_bytes(&bytes, out) || tk_strs_push(out, s, in->len[t]) ? -1 : 0;
        }
    }
    if (!rc) rc = flush_bytes(&bytes, out);
    tk_buf_free(&bytes);
    return rc;
}

static int strip(const tk_decoder *d, tk_strs *in, tk_strs *out) {
    char c[4];
    size_t cl = tk_utf8_encode(d->cp, c);
    for (size_t t = 0; t < in->n; t++) {
        const char *s = in->text.p + in->off[t];
        size_t a = 0, b = in->len[t];
        for (int64_t i = 0; i < d->start && a < b && b - a >= cl && memcmp(s + a, c, cl) == 0; i++) a += cl;
        for (int64_t i = 0; i < d->stop && b > a && b - a >= cl && memcmp(s + b - cl, c, cl) == 0; i++) b -= cl;
        if (tk_strs_push(out, s + a, b - a)) return -1;
    }
    return 0;
}

static int metaspace(const tk_decoder *d, tk_strs *in, tk_strs *out) {
    for (size_t t = 0; t < in->n; t++) {
        const char *s = in->text.p + in->off[t];
        if (tk_strs_push(out, "", 0)) return -1;
        for (size_t i = 0; i < in->len[t];) {
            uint32_t cp;
            size_t k = tk_utf8_decode(s + i, &cp);
            if (cp != d->cp) {
                if (strs_extend(out, s + i, k)) return -1;
            } else if (!(t == 0 && d->prepend != TK_PREPEND_NEVER)) {
                if (strs_extend(out, " ", 1)) return -1;
            }
            i += k;
        }
    }
    return 0;
}

/* Replaces every from by to in buf (non-overlapping, left to right). */
static int replace_all(tk_buf *buf, tk_buf *tmp, const char *from, const char *to) {
    size_t fl = strlen(from), tl = strlen(to);
    if (buf->n < fl || !memmem(buf->p, buf->n, from, fl)) return 0;
    tmp->n = 0;
    size_t i = 0;
    while (i < buf->n) {
        const char *hit = buf->n - i >= fl ? memmem(buf->p + i, buf->n - i, from, fl) : NULL;
        if (!hit) {
            if (tk_buf_add(tmp, buf->p + i, buf->n - i)) return -1;
            break;
        }
        size_t h = (size_t)(hit - buf->p);
        if (tk_buf_add(tmp, buf->p + i, h - i) || tk_buf_add(tmp, to, tl)) return -1;
        i = h + fl;
    }
    tk_buf t = *buf;
    *buf = *tmp;
    *tmp = t;
    return 0;
}

static int cleanup(tk_buf *s, bool wordpiece) {
    static const char *const pairs[][2] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"}, {" 'm", "'m"},
        {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
    };
    tk_buf tmp = {0};
    int rc = 0;
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0] && !rc; i++) {
        if (!wordpiece && strcmp(pairs[i][0], " do not") == 0) continue;   /* WordPiece's own rule */
        rc = replace_all(s, &tmp, pairs[i][0], pairs[i][1]);
    }
    tk_buf_free(&tmp);
    return rc;
}

void tk_clean_up_tokenization(tk_buf *s) { cleanup(s, false); }

static int wordpiece(const tk_decoder *d, tk_strs *in, tk_strs *out) {
    tk_buf tok = {0};
    int rc = 0;
    for (size_t t = 0; t < in->n && !rc; t++) {
        const char *s = in->text.p + in->off[t];
        size_t n = in->len[t];
        tok.n = 0;
        if (t != 0) {
            if (n >= d->text_len && memcmp(s, d->text, d->text_len) == 0) {
                s += d->text_len;
                n -= d->text_len;
            } else if (tk_buf_add(&tok, " ", 1)) {
                rc = -1;
                break;
            }
        }
        rc = tk_buf_add(&tok, s, n) || (d->cleanup && cleanup(&tok, true)) || tk_strs_push(out, tok.p, tok.n) ? -1 : 0;
    }
    tk_buf_free(&tok);
    return rc;
}

static int bpe(const tk_decoder *d, tk_strs *in, tk_strs *out) {
    tk_buf tok = {0}, tmp = {0};
    char *suffix = d->text;
    int rc = 0;
    for (size_t t = 0; t < in->n && !rc; t++) {
        tok.n = 0;
        rc = tk_buf_add(&tok, in->text.p + in->off[t], in->len[t]) ||
             (d->text_len && replace_all(&tok, &tmp, suffix, t + 1 == in->n ? "" : " ")) ||
             tk_strs_push(out, tok.p ? tok.p : "", tok.n) ? -1 : 0;
    }
    tk_buf_free(&tok);
    tk_buf_free(&tmp);
    return rc;
}

int tk_decode_chain(const tk_decoder *d, tk_strs *in, tk_strs *out) {
    tk_strs_clear(out);
    if (d->kind == TK_DEC_SEQUENCE) {
        for (size_t i = 0; i < d->n_items; i++) {
            if (tk_decode_chain(&d->items[i], in, out)) return -1;
            tk_strs t = *in;
            *in = *out;
            *out = t;
        }
        /* The result is in in: hand it over. */
        tk_strs t = *in;
        *in = *out;
        *out = t;
        return 0;
    }
    tk_spans spans = {0};
    int rc = 0;
    switch (d->kind) {
    case TK_DEC_BYTE_LEVEL: rc = byte_level(in, out); break;
    case TK_DEC_REPLACE: rc = replace(d, in, out, &spans); break;
    case TK_DEC_BYTE_FALLBACK: rc = byte_fallback(in, out); break;
    case TK_DEC_FUSE: {
        rc = tk_strs_push(out, "", 0);
        for (size_t t = 0; t < in->n && !rc; t++) rc = strs_extend(out, in->text.p + in->off[t], in->len[t]);
        break;
    }
    case TK_DEC_STRIP: rc = strip(d, in, out); break;
    case TK_DEC_METASPACE: rc = metaspace(d, in, out); break;
    case TK_DEC_WORDPIECE: rc = wordpiece(d, in, out); break;
    case TK_DEC_BPE: rc = bpe(d, in, out); break;
    case TK_DEC_SEQUENCE: break;
    }
    free(spans.p);
    return rc;
}
