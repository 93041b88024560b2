/* Normalizers: NFC/NFD/NFKC/NFKD (utf8proc), Lowercase, Replace, Prepend, Strip,
 * StripAccents, ByteLevel, BertNormalizer and Sequence, with HF's semantics (Lowercase maps
 * each char alone, as Rust's char::to_lowercase; Strip uses White_Space). */
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "tokenizer_internal.h"

static const char *const NORMALIZERS =
    "NFC, NFD, NFKC, NFKD, Lowercase, Replace, Prepend, Strip, StripAccents, ByteLevel, "
    "BertNormalizer, Sequence";

int tk_normalizer_parse(tk_normalizer *n, const tk_src *src, const char *where, const cJSON *obj) {
    memset(n, 0, sizeof *n);
    const char *type;
    if (tk_get_type(src, where, obj, &type)) return -1;
    static const char *const only_type[] = {"type", NULL};
    struct { const char *name; tk_norm_kind kind; } simple[] = {
        {"NFC", TK_NORM_NFC}, {"NFD", TK_NORM_NFD}, {"NFKC", TK_NORM_NFKC}, {"NFKD", TK_NORM_NFKD},
        {"Lowercase", TK_NORM_LOWERCASE}, {"StripAccents", TK_NORM_STRIP_ACCENTS},
        {"ByteLevel", TK_NORM_BYTE_LEVEL},
    };
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
        if (strcmp(type, simple[i].name) == 0) {
            n->kind = simple[i].kind;
            return tk_check_object(src, where, obj, only_type);
        }
    }
    if (strcmp(type, "Replace") == 0) {
        static const char *const keys[] = {"type", "pattern", "content", NULL};
        n->kind = TK_NORM_REPLACE;
        const char *content;
        if (tk_check_object(src, where, obj, keys) ||
            tk_get_string(src, where, obj, "content", true, &content, &n->text_len) ||
            !(n->text = tk_strndup(content, n->text_len)))
            return -1;
        return tk_regex_from_json(&n->re, src, where, obj, "pattern");
    }
    if (strcmp(type, "Prepend") == 0) {
        static const char *const keys[] = {"type", "prepend", NULL};
        n->kind = TK_NORM_PREPEND;
        const char *prepend;
        if (tk_check_object(src, where, obj, keys) ||
            tk_get_string(src, where, obj, "prepend", true, &prepend, &n->text_len) ||
            !(n->text = tk_strndup(prepend, n->text_len)))
            return -1;
        return 0;
    }
    if (strcmp(type, "Strip") == 0) {
        static const char *const keys[] = {"type", "strip_left", "strip_right", NULL};
        n->kind = TK_NORM_STRIP;
        return tk_check_object(src, where, obj, keys) ||
               tk_get_bool(src, where, obj, "strip_left", true, false, &n->left) ||
               tk_get_bool(src, where, obj, "strip_right", true, false, &n->right) ? -1 : 0;
    }
    if (strcmp(type, "BertNormalizer") == 0) {
        static const char *const keys[] = {"type", "clean_text", "handle_chinese_chars", "strip_accents",
                                           "lowercase", NULL};
        n->kind = TK_NORM_BERT;
        bool strip = false;
        const cJSON *sa = cJSON_GetObjectItemCaseSensitive(obj, "strip_accents");
        if (tk_check_object(src, where, obj, keys) ||
            tk_get_bool(src, where, obj, "clean_text", true, true, &n->clean_text) ||
            tk_get_bool(src, where, obj, "handle_chinese_chars", true, true, &n->chinese) ||
            tk_get_bool(src, where, obj, "lowercase", true, true, &n->lowercase) ||
            tk_get_bool(src, where, obj, "strip_accents", false, false, &strip))
            return -1;
        n->strip_accents = (!sa || cJSON_IsNull(sa)) ? -1 : strip;
        return 0;
    }
    if (strcmp(type, "Sequence") == 0) {
        static const char *const keys[] = {"type", "normalizers", NULL};
        n->kind = TK_NORM_SEQUENCE;
        const cJSON *arr;
        char sub[512];
        if (tk_check_object(src, where, obj, keys) || tk_get_array(src, where, obj, "normalizers", &arr)) return -1;
        size_t count = (size_t)cJSON_GetArraySize(arr);
        n->items = calloc(count ? count : 1, sizeof *n->items);
        if (!n->items) return tk_fail(src, where, "out of memory");
        const cJSON *item;
        cJSON_ArrayForEach(item, arr) {
            char base[512];
            tk_path(base, sizeof base, where, "normalizers", 0);
            if (tk_normalizer_parse(&n->items[n->n_items], src, tk_path(sub, sizeof sub, base, NULL, (int)n->n_items), item)) {
                n->n_items++;
                return -1;
            }
            n->n_items++;
        }
        return 0;
    }
    char sub[512];
    return tk_fail(src, tk_path(sub, sizeof sub, where, "type", 0), "unsupported normalizer \"%s\" (supported: %s)",
                   type, NORMALIZERS);
}

void tk_normalizer_free(tk_normalizer *n) {
    if (!n) return;
    for (size_t i = 0; i < n->n_items; i++) tk_normalizer_free(&n->items[i]);
    free(n->items);
    free(n->text);
    tk_regex_free(&n->re);
    memset(n, 0, sizeof *n);
}

static bool all_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return false;
    return true;
}

/* Replaces s's text by out's (swapping the buffers). */
static void take(tk_buf *s, tk_buf *out) {
    tk_buf t = *s;
    *s = *out;
    *out = t;
}

static int unicode_form(tk_buf *s, tk_work *w, utf8proc_option_t opts) {
    if (all_ascii(s->p, s->n)) return 0;   /* ASCII is the same in every form */
    opts |= UTF8PROC_STABLE;
    for (;;) {
        utf8proc_ssize_t r = utf8proc_decompose((const utf8proc_uint8_t *)s->p, (utf8proc_ssize_t)s->n,
                                                w->cps, (utf8proc_ssize_t)w->cps_cap, opts);
        if (r < 0) {
            ft_set_error("tokenizer: normalization failed: %s", utf8proc_errmsg(r));
            return -1;
        }
        if ((size_t)r > w->cps_cap) {
            if (tk_grow((void **)&w->cps, &w->cps_cap, (size_t)r, sizeof *w->cps)) return -1;
            continue;
        }
        r = utf8proc_reencode(w->cps, r, opts);
        if (r < 0) {
            ft_set_error("tokenizer: normalization failed: %s", utf8proc_errmsg(r));
            return -1;
        }
        w->norm_b.n = 0;
        if (tk_buf_add(&w->norm_b, w->cps, (size_t)r)) return -1;
        take(s, &w->norm_b);
        return 0;
    }
}

/* Rust's char::to_lowercase: the simple mapping, plus the one unconditional multi-char
 * lowercase mapping of SpecialCasing (U+0130). */
static int lowercase(tk_buf *s, tk_work *w) {
    tk_buf *o = &w->norm_b;
    o->n = 0;
    if (tk_buf_reserve(o, s->n + 8)) return -1;
    for (size_t i = 0; i < s->n;) {
        unsigned char c = (unsigned char)s->p[i];
        if (c < 0x80) {
            char l = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : (char)c;
            if (tk_buf_add(o, &l, 1)) return -1;
            i++;
            continue;
        }
        uint32_t cp;
        i += tk_utf8_decode(s->p + i, &cp);
        char tmp[8];
        size_t k;
        if (cp == 0x130) {
            memcpy(tmp, "i\xCC\x87", 3);
            k = 3;
        } else {
            k = tk_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), tmp);
        }
        if (tk_buf_add(o, tmp, k)) return -1;
    }
    take(s, o);
    return 0;
}

static int replace(const tk_normalizer *n, tk_buf *s, tk_work *w, bool *lead_dropped) {
    if (tk_regex_find((tk_regex *)&n->re, s->p, s->n, &w->spans)) return -1;
    tk_buf *o = &w->norm_b;
    o->n = 0;
    for (size_t i = 0; i < w->spans.n; i++) {
        const tk_span *sp = &w->spans.p[i];
        if (sp->match) {
            if (sp->start == 0 && sp->end > 0 && n->text_len == 0) *lead_dropped = true;
            if (tk_buf_add(o, n->text, n->text_len)) return -1;
        } else if (tk_buf_add(o, s->p + sp->start, sp->end - sp->start)) {
            return -1;
        }
    }
    take(s, o);
    return 0;
}

static int strip(const tk_normalizer *n, tk_buf *s, bool *lead_dropped) {
    size_t a = 0, b = s->n;
    if (n->left) {
        while (a < b) {
            uint32_t cp;
            size_t k = tk_utf8_decode(s->p + a, &cp);
            if (!tk_is_whitespace(cp)) break;
            a += k;
        }
    }
    if (n->right) {
        while (b > a) {
            size_t st = tk_utf8_last(s->p + a, b - a) + a;
            uint32_t cp;
            tk_utf8_decode(s->p + st, &cp);
            if (!tk_is_whitespace(cp)) break;
            b = st;
        }
    }
    if (a > 0) *lead_dropped = true;
    memmove(s->p, s->p + a, b - a);
    s->n = b - a;
    s->p[s->n] = '\0';
    return 0;
}

/* Keeps the chars for which keep() holds. */
static int filter(tk_buf *s, tk_work *w, bool (*drop)(uint32_t), bool *lead_dropped) {
    tk_buf *o = &w->norm_b;
    o->n = 0;
    if (tk_buf_reserve(o, s->n)) return -1;
    bool kept_any = false;
    for (size_t i = 0; i < s->n;) {
        uint32_t cp;
        size_t k = tk_utf8_decode(s->p + i, &cp);
        if (!drop(cp)) {
            memcpy(o->p + o->n, s->p + i, k);
            o->n += k;
            kept_any = true;
        } else if (!kept_any) {
            *lead_dropped = true;
        }
        i += k;
    }
    o->p[o->n] = '\0';
    take(s, o);
    return 0;
}

static bool is_mark(uint32_t cp) {
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME;
}

static bool is_nonspacing_mark(uint32_t cp) {
    return utf8proc_category((utf8proc_int32_t)cp) == UTF8PROC_CATEGORY_MN;
}

/* BertNormalizer's clean_text: NUL, U+FFFD and "other" chars (but \t \n \r) go. */
static bool bert_drop(uint32_t cp) {
    if (cp == 0 || cp == 0xFFFD) return true;
    if (cp == '\t' || cp == '\n' || cp == '\r') return false;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_CN ||
           c == UTF8PROC_CATEGORY_CO || c == UTF8PROC_CATEGORY_CS;
}

static bool is_chinese(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static int bert(const tk_normalizer *n, tk_buf *s, tk_work *w, bool *lead_dropped) {
    if (n->clean_text) {
        if (filter(s, w, bert_drop, lead_dropped)) return -1;
        for (size_t i = 0; i < s->n;) {   /* whitespace becomes ' ' (\t \n \r too) */
            uint32_t cp;
            size_t k = tk_utf8_decode(s->p + i, &cp);
            if (tk_is_whitespace(cp)) {
                memmove(s->p + i + 1, s->p + i + k, s->n - i - k);
                s->n -= k - 1;
                s->p[i] = ' ';
                k = 1;
            }
            i += k;
        }
        s->p[s->n] = '\0';
    }
    if (n->chinese) {
        tk_buf *o = &w->norm_b;
        o->n = 0;
        for (size_t i = 0; i < s->n;) {
            uint32_t cp;
            size_t k = tk_utf8_decode(s->p + i, &cp);
            bool c = is_chinese(cp);
            if ((c && tk_buf_add(o, " ", 1)) || tk_buf_add(o, s->p + i, k) || (c && tk_buf_add(o, " ", 1))) return -1;
            i += k;
        }
        take(s, o);
    }
    bool strip_accents = n->strip_accents < 0 ? n->lowercase : n->strip_accents;
    if (strip_accents &&
        (unicode_form(s, w, UTF8PROC_DECOMPOSE) || filter(s, w, is_nonspacing_mark, lead_dropped)))
        return -1;
    if (n->lowercase && lowercase(s, w)) return -1;
    return 0;
}

static int byte_level(tk_buf *s, tk_work *w) {
    tk_buf *o = &w->norm_b;
    o->n = 0;
    if (tk_buf_reserve(o, s->n * 2)) return -1;
    for (size_t i = 0; i < s->n; i++) {
        size_t k;
        const char *c = tk_byte_char((unsigned char)s->p[i], &k);
        memcpy(o->p + o->n, c, k);
        o->n += k;
    }
    o->p[o->n] = '\0';
    take(s, o);
    return 0;
}

int tk_normalize(const tk_normalizer *n, tk_buf *s, tk_work *w, bool *lead_dropped) {
    switch (n->kind) {
    case TK_NORM_NFC: return unicode_form(s, w, UTF8PROC_COMPOSE);
    case TK_NORM_NFD: return unicode_form(s, w, UTF8PROC_DECOMPOSE);
    case TK_NORM_NFKC: return unicode_form(s, w, UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    case TK_NORM_NFKD: return unicode_form(s, w, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
    case TK_NORM_LOWERCASE: return lowercase(s, w);
    case TK_NORM_REPLACE: return replace(n, s, w, lead_dropped);
    case TK_NORM_PREPEND:
        if (s->n == 0) return 0;   /* HF prepends to non-empty text only */
        w->norm_b.n = 0;
        if (tk_buf_add(&w->norm_b, n->text, n->text_len) || tk_buf_add(&w->norm_b, s->p, s->n)) return -1;
        take(s, &w->norm_b);
        return 0;
    case TK_NORM_STRIP: return strip(n, s, lead_dropped);
    case TK_NORM_STRIP_ACCENTS: return filter(s, w, is_mark, lead_dropped);
    case TK_NORM_BYTE_LEVEL: return byte_level(s, w);
    case TK_NORM_BERT: return bert(n, s, w, lead_dropped);
    case TK_NORM_SEQUENCE:
        for (size_t i = 0; i < n->n_items; i++)
            if (tk_normalize(&n->items[i], s, w, lead_dropped)) return -1;
        return 0;
    }
    return 0;
}
