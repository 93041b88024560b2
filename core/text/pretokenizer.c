/* Pre-tokenizers: Split (regex or string, every split behaviour, invert), ByteLevel,
 * Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer,
 * CharDelimiterSplit and Sequence, as HF's tokenizers cuts and rewrites pre-tokens. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

static const char *const PRETOKENIZERS =
    "Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer, "
    "CharDelimiterSplit, Sequence";

/* GPT-2's pattern, the one HF's ByteLevel pre-tokenizer splits with. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- GPT-2's bytes_to_unicode ------------------------------------------------------- */

static char byte_chars[256][3];
static uint32_t byte_cps[256];
static int16_t char_bytes[512];
static pthread_once_t byte_once = PTHREAD_ONCE_INIT;

/* Printable Latin-1 bytes stand for themselves; the others get 256, 257, ... in order. */
static void byte_level_init(void) {
    int n = 0;
    for (int i = 0; i < 512; i++) char_bytes[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        uint32_t cp = printable ? (uint32_t)b : (uint32_t)(256 + n++);
        byte_cps[b] = cp;
        char_bytes[cp] = (int16_t)b;
        memset(byte_chars[b], 0, 3);
        tk_utf8_encode(cp, byte_chars[b]);
    }
}

const char *tk_byte_char(unsigned char b, size_t *len) {
    pthread_once(&byte_once, byte_level_init);
    *len = byte_chars[b][1] ? 2 : 1;
    return byte_chars[b];
}

uint32_t tk_byte_char_cp(unsigned char b) {
    pthread_once(&byte_once, byte_level_init);
    return byte_cps[b];
}

int tk_char_byte(uint32_t cp) {
    pthread_once(&byte_once, byte_level_init);
    return cp < 512 ? char_bytes[cp] : -1;
}

/* ---- parsing ---------------------------------------------------------------------------- */

static int parse_behavior(const tk_src *src, const char *where, const cJSON *obj, bool required,
                          tk_split_behavior def, tk_split_behavior *out) {
    const char *b;
    if (tk_get_string(src, where, obj, "behavior", required, &b, NULL)) return -1;
    if (!b) {
        *out = def;
        return 0;
    }
    static const struct { const char *name; tk_split_behavior v; } names[] = {
        {"Removed", TK_SPLIT_REMOVED}, {"Isolated", TK_SPLIT_ISOLATED},
        {"MergedWithPrevious", TK_SPLIT_MERGED_WITH_PREVIOUS}, {"MergedWithNext", TK_SPLIT_MERGED_WITH_NEXT},
        {"Contiguous", TK_SPLIT_CONTIGUOUS},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(b, names[i].name) == 0) {
            *out = names[i].v;
            return 0;
        }
    char sub[512];
    return tk_fail(src, tk_path(sub, sizeof sub, where, "behavior", 0),
                   "unknown behavior \"%s\" (known: Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)", b);
}

int tk_parse_prepend_scheme(const tk_src *src, const char *where, const cJSON *obj, tk_prepend_scheme *out) {
    const char *s;
    if (tk_get_string(src, where, obj, "prepend_scheme", false, &s, NULL)) return -1;
    bool add_prefix_space;
    const cJSON *aps = cJSON_GetObjectItemCaseSensitive(obj, "add_prefix_space");
    if (tk_get_bool(src, where, obj, "add_prefix_space", false, true, &add_prefix_space)) return -1;
    *out = TK_PREPEND_ALWAYS;
    if (s) {
        if (strcmp(s, "always") == 0) *out = TK_PREPEND_ALWAYS;
        else if (strcmp(s, "first") == 0) *out = TK_PREPEND_FIRST;
        else if (strcmp(s, "never") == 0) *out = TK_PREPEND_NEVER;
        else {
            char sub[512];
            return tk_fail(src, tk_path(sub, sizeof sub, where, "prepend_scheme", 0),
                           "unknown prepend_scheme \"%s\" (known: always, first, never)", s);
        }
    }
    /* HF's legacy field: add_prefix_space false means never, and must agree with the scheme. */
    if (aps && !cJSON_IsNull(aps) && !add_prefix_space) {
        if (*out != TK_PREPEND_NEVER && s) {
            char sub[512];
            return tk_fail(src, tk_path(sub, sizeof sub, where, "add_prefix_space", 0),
                           "false does not match prepend_scheme \"%s\"", s);
        }
        *out = TK_PREPEND_NEVER;
    }
    return 0;
}

int tk_pretokenizer_parse(tk_pretokenizer *p, const tk_src *src, const char *where, const cJSON *obj) {
    memset(p, 0, sizeof *p);
    const char *type;
    if (tk_get_type(src, where, obj, &type)) return -1;
    if (strcmp(type, "Split") == 0) {
        static const char *const keys[] = {"type", "pattern", "behavior", "invert", NULL};
        p->kind = TK_PRE_SPLIT;
        if (tk_check_object(src, where, obj, keys) ||
            parse_behavior(src, where, obj, true, TK_SPLIT_ISOLATED, &p->behavior) ||
            tk_get_bool(src, where, obj, "invert", true, false, &p->invert))
            return -1;
        return tk_regex_from_json(&p->re, src, where, obj, "pattern");
    }
    if (strcmp(type, "ByteLevel") == 0) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets", "use_regex", NULL};
        p->kind = TK_PRE_BYTE_LEVEL;
        bool trim;
        if (tk_check_object(src, where, obj, keys) ||
            tk_get_bool(src, where, obj, "add_prefix_space", true, true, &p->add_prefix_space) ||
            tk_get_bool(src, where, obj, "trim_offsets", false, true, &trim) ||   /* offsets only */
            tk_get_bool(src, where, obj, "use_regex", false, true, &p->use_regex))
            return -1;
        return p->use_regex ? tk_regex_compile(&p->re, src, where, GPT2_PATTERN, strlen(GPT2_PATTERN), false) : 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        static const char *const keys[] = {"type", "replacement", "prepend_scheme", "split", "add_prefix_space",
                                           "str_rep", NULL};
        p->kind = TK_PRE_METASPACE;
        const char *str_rep;
        return tk_check_object(src, where, obj, keys) ||
               tk_get_char(src, where, obj, "replacement", true, 0x2581, &p->cp) ||
               tk_get_string(src, where, obj, "str_rep", false, &str_rep, NULL) ||   /* legacy, unused */
               tk_parse_prepend_scheme(src, where, obj, &p->prepend) ||
               tk_get_bool(src, where, obj, "split", false, true, &p->split) ? -1 : 0;
    }
    if (strcmp(type, "Digits") == 0) {
        static const char *const keys[] = {"type", "individual_digits", NULL};
        p->kind = TK_PRE_DIGITS;
        return tk_check_object(src, where, obj, keys) ||
               tk_get_bool(src, where, obj, "individual_digits", true, false, &p->individual_digits) ? -1 : 0;
    }
    if (strcmp(type, "Whitespace") == 0) {
        static const char *const keys[] = {"type", NULL};
        static const char pattern[] = "\\w+|[^\\w\\s]+";
        p->kind = TK_PRE_WHITESPACE;
        return tk_check_object(src, where, obj, keys) ||
               tk_regex_compile(&p->re, src, where, pattern, strlen(pattern), false) ? -1 : 0;
    }
    if (strcmp(type, "WhitespaceSplit") == 0 || strcmp(type, "BertPreTokenizer") == 0) {
        static const char *const keys[] = {"type", NULL};
        p->kind = type[0] == 'W' ? TK_PRE_WHITESPACE_SPLIT : TK_PRE_BERT;
        return tk_check_object(src, where, obj, keys);
    }
    if (strcmp(type, "Punctuation") == 0) {
        static const char *const keys[] = {"type", "behavior", NULL};
        p->kind = TK_PRE_PUNCTUATION;
        return tk_check_object(src, where, obj, keys) ||
               parse_behavior(src, where, obj, false, TK_SPLIT_ISOLATED, &p->behavior) ? -1 : 0;
    }
    if (strcmp(type, "CharDelimiterSplit") == 0) {
        static const char *const keys[] = {"type", "delimiter", NULL};
        p->kind = TK_PRE_CHAR_DELIMITER;
        return tk_check_object(src, where, obj, keys) ||
               tk_get_char(src, where, obj, "delimiter", true, 0, &p->cp) ? -1 : 0;
    }
    if (strcmp(type, "Sequence") == 0) {
        static const char *const keys[] = {"type", "pretokenizers", NULL};
        p->kind = TK_PRE_SEQUENCE;
        const cJSON *arr, *item;
        if (tk_check_object(src, where, obj, keys) || tk_get_array(src, where, obj, "pretokenizers", &arr)) return -1;
        size_t count = (size_t)cJSON_GetArraySize(arr);
        p->items = calloc(count ? count : 1, sizeof *p->items);
        if (!p->items) return tk_fail(src, where, "out of memory");
        char base[512], sub[512];
        tk_path(base, sizeof base, where, "pretokenizers", 0);
        cJSON_ArrayForEach(item, arr) {
            int rc = tk_pretokenizer_parse(&p->items[p->n_items], src, tk_path(sub, sizeof sub, base, NULL, (int)p->n_items), item);
            p->n_items++;
            if (rc) return -1;
        }
        return 0;
    }
    char sub[512];
    return tk_fail(src, tk_path(sub, sizeof sub, where, "type", 0), "unsupported pre_tokenizer \"%s\" (supported: %s)",
                   type, PRETOKENIZERS);
}

void tk_pretokenizer_free(tk_pretokenizer *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_items; i++) tk_pretokenizer_free(&p->items[i]);
    free(p->items);
    tk_regex_free(&p->re);
    memset(p, 0, sizeof *p);
}

/* ---- splitting ---------------------------------------------------------------------------- */

static void swap_pieces(tk_work *w) {
    tk_pieces t = w->pieces;
    w->pieces = w->tmp;
    w->tmp = t;
}

/* Turns the spans into the kept ranges of HF's NormalizedString::split (in place: each
 * span's match flag becomes "remove"). */
static void apply_behavior(tk_spans *sp, tk_split_behavior behavior) {
    size_t n = 0;
    bool prev = false;
    switch (behavior) {
    case TK_SPLIT_ISOLATED:
        for (size_t i = 0; i < sp->n; i++) sp->p[i].match = false;
        return;
    case TK_SPLIT_REMOVED:
        return;
    case TK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < sp->n; i++) {
            bool m = sp->p[i].match;
            if (m == prev && n > 0) sp->p[n - 1].end = sp->p[i].end;
            else sp->p[n++] = (tk_span){sp->p[i].start, sp->p[i].end, false};
            prev = m;
        }
        sp->n = n;
        return;
    case TK_SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < sp->n; i++) {
            bool m = sp->p[i].match;
            if (m && !prev && n > 0) sp->p[n - 1].end = sp->p[i].end;
            else sp->p[n++] = (tk_span){sp->p[i].start, sp->p[i].end, false};
            prev = m;
        }
        sp->n = n;
        return;
    case TK_SPLIT_MERGED_WITH_NEXT: {
        /* The same fold from the end; the kept ranges are built back to front. */
        size_t out = sp->n;
        for (size_t i = sp->n; i-- > 0;) {
            tk_span s = sp->p[i];
            if (s.match && !prev && out < sp->n) sp->p[out].start = s.start;
            else sp->p[--out] = (tk_span){s.start, s.end, false};
            prev = s.match;
        }
        memmove(sp->p, sp->p + out, (sp->n - out) * sizeof *sp->p);
        sp->n -= out;
        return;
    }
    }
}

int tk_split_pieces(tk_work *w, tk_split_behavior behavior, bool invert,
                    int (*find)(const void *ctx, const char *s, size_t n, tk_spans *out), const void *ctx) {
    w->tmp.n = 0;
    for (size_t i = 0; i < w->pieces.n; i++) {
        tk_piece p = w->pieces.p[i];
        if (p.id >= 0) {
            if (tk_pieces_push(&w->tmp, p.off, p.len, p.id, p.at_start)) return -1;
            continue;
        }
        if (find(ctx, w->arena.p + p.off, p.len, &w->spans)) return -1;
        if (invert)
            for (size_t k = 0; k < w->spans.n; k++) w->spans.p[k].match = !w->spans.p[k].match;
        apply_behavior(&w->spans, behavior);
        for (size_t k = 0; k < w->spans.n; k++) {
            const tk_span *s = &w->spans.p[k];
            if (s->match || s->end == s->start) continue;
            if (tk_pieces_push(&w->tmp, p.off + s->start, s->end - s->start, -1, p.at_start && s->start == 0)) return -1;
        }
    }
    swap_pieces(w);
    return 0;
}

static int find_regex(const void *ctx, const char *s, size_t n, tk_spans *out) {
    return tk_regex_find((tk_regex *)ctx, s, n, out);
}

typedef struct char_pred {
    bool (*pred)(uint32_t, uint32_t);
    uint32_t arg;
} char_pred;

static int find_chars(const void *ctx, const char *s, size_t n, tk_spans *out) {
    const char_pred *c = ctx;
    return tk_spans_by_char(s, n, c->pred, c->arg, out);
}

static bool is_char(uint32_t cp, uint32_t c) { return cp == c; }
static bool is_numeric(uint32_t cp, uint32_t unused) { (void)unused; return tk_is_numeric(cp); }
static bool is_space(uint32_t cp, uint32_t unused) { (void)unused; return tk_is_whitespace(cp); }
static bool is_punct(uint32_t cp, uint32_t unused) { (void)unused; return tk_is_punctuation(cp); }

static int split_chars(tk_work *w, tk_split_behavior behavior, bool (*pred)(uint32_t, uint32_t), uint32_t arg) {
    char_pred c = {pred, arg};
    return tk_split_pieces(w, behavior, false, find_chars, &c);
}

/* ---- rewriting pre-tokens ----------------------------------------------------------------- */

static int byte_level(const tk_pretokenizer *p, tk_work *w) {
    if (p->add_prefix_space) {
        /* A space before each pre-token that does not start with one. */
        w->tmp.n = 0;
        for (size_t i = 0; i < w->pieces.n; i++) {
            tk_piece q = w->pieces.p[i];
            if (q.id < 0 && q.len > 0 && w->arena.p[q.off] != ' ') {
                size_t off = w->arena.n;
                if (tk_buf_reserve(&w->arena, q.len + 1)) return -1;
                w->arena.p[off] = ' ';
                memcpy(w->arena.p + off + 1, w->arena.p + q.off, q.len);
                w->arena.n = off + q.len + 1;
                q.off = off;
                q.len += 1;
            }
            if (tk_pieces_push(&w->tmp, q.off, q.len, q.id, q.at_start)) return -1;
        }
        swap_pieces(w);
    }
    if (p->use_regex && tk_split_pieces(w, TK_SPLIT_ISOLATED, false, find_regex, &p->re)) return -1;
    /* Every byte becomes its byte-level char. */
    pthread_once(&byte_once, byte_level_init);
    for (size_t i = 0; i < w->pieces.n; i++) {
        tk_piece *q = &w->pieces.p[i];
        if (q->id >= 0) continue;
        size_t off = w->arena.n;
        if (tk_buf_reserve(&w->arena, q->len * 2)) return -1;
        const unsigned char *s = (const unsigned char *)w->arena.p + q->off;
        char *o = w->arena.p + off;
        size_t k = 0;
        for (size_t j = 0; j < q->len; j++) {
            const char *c = byte_chars[s[j]];
            o[k++] = c[0];
            if (c[1]) o[k++] = c[1];
        }
        w->arena.n = off + k;
        q->off = off;
        q->len = k;
    }
    return 0;
}

static int metaspace(const tk_pretokenizer *p, tk_work *w) {
    char rep[4];
    size_t rep_len = tk_utf8_encode(p->cp, rep);
    for (size_t i = 0; i < w->pieces.n; i++) {
        tk_piece *q = &w->pieces.p[i];
        if (q->id < 0 && q->len > 0) {
            size_t off = w->arena.n;
            /* The replacement first, then the text with spaces replaced; the replacement
             * is kept only when the scheme asks for it. */
            if (tk_buf_reserve(&w->arena, rep_len * (q->len + 1))) return -1;
            char *o = w->arena.p + off;
            memcpy(o, rep, rep_len);
            size_t k = rep_len;
            for (size_t j = 0; j < q->len; j++) {
                char c = w->arena.p[q->off + j];
                if (c == ' ') {
                    memcpy(o + k, rep, rep_len);
                    k += rep_len;
                } else {
                    o[k++] = c;
                }
            }
            w->arena.n = off + k;
            size_t tlen = k - rep_len;
            bool starts = tlen >= rep_len && memcmp(o + rep_len, rep, rep_len) == 0;
            bool prepend = !starts && (p->prepend == TK_PREPEND_ALWAYS || (p->prepend == TK_PREPEND_FIRST && q->at_start));
            q->off = prepend ? off : off + rep_len;
            q->len = w->arena.n - q->off;
        }
    }
    if (p->split) return split_chars(w, TK_SPLIT_MERGED_WITH_NEXT, is_char, p->cp);
    return 0;
}

int tk_pretokenize(const tk_pretokenizer *p, tk_work *w) {
    switch (p->kind) {
    case TK_PRE_SPLIT: return tk_split_pieces(w, p->behavior, p->invert, find_regex, &p->re);
    case TK_PRE_BYTE_LEVEL: return byte_level(p, w);
    case TK_PRE_METASPACE: return metaspace(p, w);
    case TK_PRE_DIGITS:
        return split_chars(w, p->individual_digits ? TK_SPLIT_ISOLATED : TK_SPLIT_CONTIGUOUS, is_numeric, 0);
    case TK_PRE_WHITESPACE: return tk_split_pieces(w, TK_SPLIT_REMOVED, true, find_regex, &p->re);
    case TK_PRE_WHITESPACE_SPLIT: return split_chars(w, TK_SPLIT_REMOVED, is_space, 0);
    case TK_PRE_PUNCTUATION: return split_chars(w, p->behavior, is_punct, 0);
    case TK_PRE_BERT:
        return split_chars(w, TK_SPLIT_REMOVED, is_space, 0) || split_chars(w, TK_SPLIT_ISOLATED, is_punct, 0) ? -1 : 0;
    case TK_PRE_CHAR_DELIMITER: return split_chars(w, TK_SPLIT_REMOVED, is_char, p->cp);
    case TK_PRE_SEQUENCE:
        for (size_t i = 0; i < p->n_items; i++)
            if (tk_pretokenize(&p->items[i], w)) return -1;
        return 0;
    }
    return 0;
}
