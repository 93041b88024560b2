/* The BPE model as HF's tokenizers runs it: each char of a pre-token becomes a symbol
 * (continuing_subword_prefix on all but the first, end_of_word_suffix on the last; an
 * unknown char becomes its <0xNN> byte tokens with byte_fallback, else unk_token, runs of
 * unk fused with fuse_unk), then the lowest-ranked adjacent pair is merged, the leftmost
 * first on ties, until no pair has a merge (a binary heap of candidate merges). Words up
 * to TK_CACHE_MAX_WORD bytes are remembered in a fixed-size cache. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

typedef struct symbol {
    int32_t id;
    int32_t prev, next;
    bool removed;
} symbol;

typedef struct merge {
    uint32_t rank;
    uint32_t pos;
    int32_t merged;
} merge;

/* ---- loading ---------------------------------------------------------------------------- */

/* The two sides of one merge: "a b" (HF's legacy form: exactly one space) or ["a", "b"]. */
static int merge_pair(const cJSON *item, const char **a, size_t *la, const char **b, size_t *lb) {
    if (cJSON_IsString(item)) {
        const char *s = item->valuestring, *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' ')) return -1;
        *a = s;
        *la = (size_t)(sp - s);
        *b = sp + 1;
        *lb = strlen(sp + 1);
        return 0;
    }
    if (cJSON_IsArray(item) && cJSON_GetArraySize(item) == 2 && cJSON_IsString(item->child) &&
        cJSON_IsString(item->child->next)) {
        *a = item->child->valuestring;
        *la = strlen(*a);
        *b = item->child->next->valuestring;
        *lb = strlen(*b);
        return 0;
    }
    return -1;
}

int tk_bpe_parse(tk_model *m, const tk_src *src, const char *where, const cJSON *obj) {
    static const char *const keys[] = {"type", "dropout", "unk_token", "continuing_subword_prefix",
                                       "end_of_word_suffix", "fuse_unk", "byte_fallback", "ignore_merges",
                                       "vocab", "merges", NULL};
    char sub[512];
    m->kind = TK_MODEL_BPE;
    if (tk_check_object(src, where, obj, keys)) return -1;
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(obj, "dropout");
    if (dropout && !cJSON_IsNull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
        return tk_fail(src, tk_path(sub, sizeof sub, where, "dropout", 0),
                       "BPE dropout is not supported (only null: encoding is deterministic)");
    const char *unk, *prefix, *suffix;
    size_t unk_len, prefix_len, suffix_len;
    if (tk_get_string(src, where, obj, "unk_token", false, &unk, &unk_len) ||
        tk_get_string(src, where, obj, "continuing_subword_prefix", false, &prefix, &prefix_len) ||
        tk_get_string(src, where, obj, "end_of_word_suffix", false, &suffix, &suffix_len) ||
        tk_get_bool(src, where, obj, "fuse_unk", false, false, &m->fuse_unk) ||
        tk_get_bool(src, where, obj, "byte_fallback", false, false, &m->byte_fallback) ||
        tk_get_bool(src, where, obj, "ignore_merges", false, false, &m->ignore_merges))
        return -1;
    if ((prefix && !(m->prefix = tk_strndup(prefix, prefix_len))) ||
        (suffix && !(m->suffix = tk_strndup(suffix, suffix_len))))
        return -1;
    m->prefix_len = prefix_len;
    m->suffix_len = suffix_len;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(obj, "vocab");
    if (tk_vocab_parse(m, src, tk_path(sub, sizeof sub, where, "vocab", 0), vocab)) return -1;
    if (unk) {
        m->unk_id = tk_vocab_get(&m->vocab, unk, unk_len);
        if (m->unk_id < 0)
            return tk_fail(src, tk_path(sub, sizeof sub, where, "unk_token", 0), "\"%s\" is not in the vocabulary", unk);
        if (!(m->unk_token = tk_strndup(unk, unk_len))) return -1;
    }

    const cJSON *merges;
    if (tk_get_array(src, where, obj, "merges", &merges)) return -1;
    size_t n_merges = (size_t)cJSON_GetArraySize(merges);
    if (tk_pairs_init(&m->merges, n_merges)) return -1;
    tk_buf joined = {0};
    uint32_t rank = 0;
    const cJSON *item;
    char base[512];
    tk_path(base, sizeof base, where, "merges", 0);
    cJSON_ArrayForEach(item, merges) {
        const char *a, *b;
        size_t la, lb;
        if (merge_pair(item, &a, &la, &b, &lb)) {
            tk_buf_free(&joined);
            return tk_fail(src, tk_path(sub, sizeof sub, base, NULL, (int)rank),
                           "expected \"left right\" or [\"left\", \"right\"]");
        }
        int32_t ia = tk_vocab_get(&m->vocab, a, la), ib = tk_vocab_get(&m->vocab, b, lb);
        const char *missing = NULL;
        size_t missing_len = 0;
        if (ia < 0) { missing = a; missing_len = la; }
        else if (ib < 0) { missing = b; missing_len = lb; }
        /* The merged token drops the right side's continuing_subword_prefix (its length, as HF). */
        size_t cut = m->prefix ? m->prefix_len : 0;
        if (cut > lb) cut = lb;
        joined.n = 0;
        if (tk_buf_add(&joined, a, la) || tk_buf_add(&joined, b + cut, lb - cut)) {
            tk_buf_free(&joined);
            return -1;
        }
        int32_t im = missing ? -1 : tk_vocab_get(&m->vocab, joined.p, joined.n);
        if (!missing && im < 0) { missing = joined.p; missing_len = joined.n; }
        if (missing) {
            tk_fail(src, tk_path(sub, sizeof sub, base, NULL, (int)rank), "token \"%.*s\" is not in the vocabulary",
                    (int)missing_len, missing);
            tk_buf_free(&joined);
            return -1;
        }
        if (tk_pairs_set(&m->merges, ia, ib, rank, im)) {
            tk_buf_free(&joined);
            return -1;
        }
        rank++;
    }
    tk_buf_free(&joined);

    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_ids[b] = tk_vocab_get(&m->vocab, name, 6);
    }
    /* Whole-char symbols without prefix or suffix: looked up once here. */
    if (!m->prefix_len && !m->suffix_len) {
        m->char_ids = malloc(TK_CHAR_IDS * sizeof *m->char_ids);
        if (!m->char_ids) return tk_fail(src, where, "out of memory");
        for (uint32_t cp = 0; cp < TK_CHAR_IDS; cp++) {
            char c[4];
            size_t k = tk_utf8_encode(cp, c);
            m->char_ids[cp] = (cp >= 0xD800 && cp <= 0xDFFF) ? -1 : tk_vocab_get(&m->vocab, c, k);
        }
    }
    m->cache = calloc(TK_CACHE_SLOTS, sizeof *m->cache);
    if (!m->cache) return tk_fail(src, where, "out of memory");
    return 0;
}

/* ---- the cache --------------------------------------------------------------------------- */

static tk_cache_entry *cache_find(tk_model *m, const char *s, size_t n, uint64_t h) {
    tk_cache_entry *e = &m->cache[h & (TK_CACHE_SLOTS - 1)];
    if (e->data && e->hash == h && e->key_len == n && memcmp(e->data, s, n) == 0) return e;
    return NULL;
}

static void cache_put(tk_model *m, const char *s, size_t n, uint64_t h, const int32_t *ids, size_t n_ids) {
    tk_cache_entry *e = &m->cache[h & (TK_CACHE_SLOTS - 1)];
    size_t key = (n + 3) & ~(size_t)3;
    size_t need = key + n_ids * sizeof(int32_t);
    if (need > e->cap) {
        char *d = realloc(e->data, need);
        if (!d) return;   /* a cache miss later, nothing worse */
        e->data = d;
        e->cap = need;
    }
    memcpy(e->data, s, n);
    memcpy(e->data + key, ids, n_ids * sizeof(int32_t));
    e->hash = h;
    e->key_len = (uint32_t)n;
    e->n_ids = (uint32_t)n_ids;
}

/* ---- merging ----------------------------------------------------------------------------- */

static bool merge_less(const merge *a, const merge *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(merge *h, size_t *n, merge v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!merge_less(&v, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = v;
}

static merge heap_pop(merge *h, size_t *n) {
    merge top = h[0], last = h[--(*n)];
    size_t i = 0, count = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= count) break;
        if (c + 1 < count && merge_less(&h[c + 1], &h[c])) c++;
        if (!merge_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (count) h[i] = last;
    return top;
}

/* Adds symbol id to the word; -1 on no memory. */
static int add_symbol(tk_work *w, size_t *n, int32_t id) {
    if (tk_grow(&w->symbols, &w->symbols_cap, *n + 1, sizeof(symbol))) return -1;
    symbol *s = w->symbols;
    s[*n] = (symbol){id, (int32_t)*n - 1, (int32_t)*n + 1, false};
    (*n)++;
    return 0;
}

/* The id of one char as a symbol (prefix when not first, suffix when last), or -1. */
static int32_t char_id(tk_model *m, const char *c, size_t k, uint32_t cp, bool first, bool last, tk_buf *tmp) {
    if (m->char_ids && cp < TK_CHAR_IDS) return m->char_ids[cp];
    if ((first || !m->prefix) && (!last || !m->suffix)) return tk_vocab_get(&m->vocab, c, k);
    tmp->n = 0;
    if ((!first && m->prefix && tk_buf_add(tmp, m->prefix, m->prefix_len)) || tk_buf_add(tmp, c, k) ||
        (last && m->suffix && tk_buf_add(tmp, m->suffix, m->suffix_len)))
        return -2;
    return tk_vocab_get(&m->vocab, tmp->p, tmp->n);
}

int tk_bpe_tokenize(tk_model *m, const char *s, size_t n, tk_work *w, ft_token_ids *out) {
    if (n == 0) return 0;
    if (m->ignore_merges) {
        int32_t id = tk_vocab_get(&m->vocab, s, n);
        if (id >= 0) return tk_ids_push(out, id);
    }
    uint64_t h = 0;
    if (n < TK_CACHE_MAX_WORD) {
        h = tk_hash(s, n);
        tk_cache_entry *e = cache_find(m, s, n, h);
        if (e) {
            if (tk_ids_reserve(out, e->n_ids)) return -1;
            memcpy(out->ids + out->len, e->data + ((e->key_len + 3) & ~(size_t)3), e->n_ids * sizeof(int32_t));
            out->len += e->n_ids;
            return 0;
        }
    }

    /* Symbols, as HF's merge_word. */
    size_t ns = 0;
    int32_t unk_pending = -1;   /* an unk symbol not yet added (fuse_unk joins a run into it) */
    tk_buf *tmp = &w->norm_b;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = tk_utf8_decode(s + i, &cp);
        bool first = i == 0, last = i + k == n;
        int32_t id = char_id(m, s + i, k, cp, first, last, tmp);
        if (id == -2) return -1;
        if (id >= 0) {
            if (unk_pending >= 0) {
                if (add_symbol(w, &ns, unk_pending)) return -1;
                unk_pending = -1;
            }
            if (add_symbol(w, &ns, id)) return -1;
        } else {
            bool done = false;
            if (m->byte_fallback) {
                /* The bytes of the symbol's string (prefix and suffix included). */
                tmp->n = 0;
                if ((!first && m->prefix && tk_buf_add(tmp, m->prefix, m->prefix_len)) || tk_buf_add(tmp, s + i, k) ||
                    (last && m->suffix && tk_buf_add(tmp, m->suffix, m->suffix_len)))
                    return -1;
                bool all = true;
                for (size_t j = 0; j < tmp->n; j++)
                    if (m->byte_ids[(unsigned char)tmp->p[j]] < 0) all = false;
                if (all) {
                    for (size_t j = 0; j < tmp->n; j++)
                        if (add_symbol(w, &ns, m->byte_ids[(unsigned char)tmp->p[j]])) return -1;
                    done = true;
                }
            }
            if (!done && m->unk_id >= 0) {
                if (unk_pending >= 0 && !m->fuse_unk && add_symbol(w, &ns, unk_pending)) return -1;
                unk_pending = m->unk_id;
            }
            /* Neither: HF drops the char. */
        }
        i += k;
    }
    if (unk_pending >= 0 && add_symbol(w, &ns, unk_pending)) return -1;
    if (ns == 0) return 0;
    symbol *sym = w->symbols;
    sym[ns - 1].next = -1;

    /* Merges, lowest rank first, leftmost on ties. */
    if (ns > 1 && m->merges.count) {
        if (tk_grow(&w->heap, &w->heap_cap, 2 * ns + 8, sizeof(merge))) return -1;
        merge *heap = w->heap;
        size_t nh = 0;
        for (size_t i = 0; i + 1 < ns; i++) {
            int64_t j = tk_pairs_find(&m->merges, sym[i].id, sym[i + 1].id);
            if (j >= 0) heap_push(heap, &nh, (merge){m->merges.slots[j].rank, (uint32_t)i, m->merges.slots[j].merged});
        }
        while (nh) {
            merge top = heap_pop(heap, &nh);
            symbol *cur = &sym[top.pos];
            if (cur->removed || cur->next < 0) continue;
            symbol *right = &sym[cur->next];
            int64_t j = tk_pairs_find(&m->merges, cur->id, right->id);
            if (j < 0 || m->merges.slots[j].merged != top.merged) continue;   /* stale */
            cur->id = top.merged;
            cur->next = right->next;
            right->removed = true;
            if (cur->next >= 0) sym[cur->next].prev = (int32_t)top.pos;
            /* Room for two more candidates. */
            if (nh + 2 > w->heap_cap) {
                if (tk_grow(&w->heap, &w->heap_cap, nh + 2, sizeof(merge))) return -1;
                heap = w->heap;
            }
            if (cur->prev >= 0) {
                j = tk_pairs_find(&m->merges, sym[cur->prev].id, cur->id);
                if (j >= 0) heap_push(heap, &nh, (merge){m->merges.slots[j].rank, (uint32_t)cur->prev, m->merges.slots[j].merged});
            }
            if (cur->next >= 0) {
                j = tk_pairs_find(&m->merges, cur->id, sym[cur->next].id);
                if (j >= 0) heap_push(heap, &nh, (merge){m->merges.slots[j].rank, top.pos, m->merges.slots[j].merged});
            }
        }
    }

    size_t start = out->len;
    for (int32_t i = 0; i >= 0; i = sym[i].next)
        if (tk_ids_push(out, sym[i].id)) return -1;
    if (n < TK_CACHE_MAX_WORD) cache_put(m, s, n, h, out->ids + start, out->len - start);
    return 0;
}
