/* Added tokens (tokenizer.json "added_tokens"): found in the text before the model sees
 * it, as HF's AddedVocabulary does: the tokens with normalized = false on the raw text, the
 * others on the normalized text (matched in their normalized form); the leftmost match
 * wins, the longest among those starting there; single_word discards a match inside a
 * word, lstrip / rstrip take the whitespace on its left / right into the match. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

/* ---- the tries ----------------------------------------------------------------------- */

static int trie_init(tk_trie *t) {
    memset(t, 0, sizeof *t);
    for (int i = 0; i < 256; i++) t->root_child[i] = -1;
    return 0;
}

static int trie_add(tk_trie *t, const char *s, size_t n, int32_t token) {
    if (n == 0) return 0;
    int32_t node = -1;   /* -1: the root */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t child = node < 0 ? t->root_child[c] : t->nodes[node].child;
        if (node >= 0)
            while (child >= 0 && t->nodes[child].byte != c) child = t->nodes[child].sibling;
        if (child < 0) {
            if (tk_grow((void **)&t->nodes, &t->cap, t->n + 1, sizeof *t->nodes)) return -1;
            child = (int32_t)t->n++;
            t->nodes[child] = (tk_trie_node){-1, -1, -1, c};
            if (node < 0) {
                t->root_child[c] = child;
            } else {
                t->nodes[child].sibling = t->nodes[node].child;
                t->nodes[node].child = child;
            }
        }
        node = child;
    }
    /* A content given twice keeps its first token (both have the same id). */
    if (t->nodes[node].token < 0) t->nodes[node].token = token;
    if (n > t->max_len) t->max_len = n;
    return 0;
}

/* The longest token starting at s[i], its length in *len; -1 when none. */
static int32_t trie_longest(const tk_trie *t, const char *s, size_t n, size_t i, size_t *len) {
    int32_t node = t->root_child[(unsigned char)s[i]], best = -1;
    size_t j = i + 1;
    while (node >= 0) {
        if (t->nodes[node].token >= 0) {
            best = t->nodes[node].token;
            *len = j - i;
        }
        if (j >= n) break;
        unsigned char c = (unsigned char)s[j++];
        int32_t child = t->nodes[node].child;
        while (child >= 0 && t->nodes[child].byte != c) child = t->nodes[child].sibling;
        node = child;
    }
    return best;
}

/* ---- loading --------------------------------------------------------------------------- */

int tk_added_parse(struct ft_tokenizer *tok, const tk_src *src, const cJSON *arr) {
    tk_added_vocab *a = &tok->added;
    if (tk_vocab_init(&a->map, 64)) return -1;
    trie_init(&a->raw);
    trie_init(&a->normalized);
    if (!arr || cJSON_IsNull(arr)) return 0;
    if (!cJSON_IsArray(arr)) return tk_fail(src, "added_tokens", "expected an array");
    size_t count = (size_t)cJSON_GetArraySize(arr);
    a->tokens = calloc(count ? count : 1, sizeof *a->tokens);
    if (!a->tokens) return tk_fail(src, "added_tokens", "out of memory");
    static const char *const keys[] = {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special", NULL};
    /* HF numbers tokens missing from the model after the model's vocabulary, in file order. */
    int64_t next_id = (int64_t)tok->model.vocab.count;
    const cJSON *item;
    int index = 0;
    cJSON_ArrayForEach(item, arr) {
        char where[512];
        tk_path(where, sizeof where, "added_tokens", NULL, index++);
        const char *content;
        size_t len;
        int64_t id;
        tk_added t = {0};
        if (tk_check_object(src, where, item, keys) ||
            tk_get_int(src, where, item, "id", true, 0, 0, FT_TOKENIZER_MAX_VOCAB - 1, &id) ||
            tk_get_string(src, where, item, "content", true, &content, &len) ||
            tk_get_bool(src, where, item, "special", false, false, &t.special) ||
            tk_get_bool(src, where, item, "single_word", false, false, &t.single_word) ||
            tk_get_bool(src, where, item, "lstrip", false, false, &t.lstrip) ||
            tk_get_bool(src, where, item, "rstrip", false, false, &t.rstrip) ||
            tk_get_bool(src, where, item, "normalized", false, !t.special, &t.normalized))
            return -1;
        if (len == 0) continue;   /* HF ignores empty tokens */
        int32_t prior = tk_vocab_get(&a->map, content, len);
        int32_t in_model = tk_vocab_get(&tok->model.vocab, content, len);
        int64_t expect = in_model >= 0 ? in_model : prior >= 0 ? prior : next_id;
        if (id != expect) {
            char sub[512];
            if (in_model >= 0 || prior >= 0)
                return tk_fail(src, tk_path(sub, sizeof sub, where, "id", 0),
                               "%lld, but \"%s\" already has id %lld", (long long)id, content, (long long)expect);
            return tk_fail(src, tk_path(sub, sizeof sub, where, "id", 0),
                           "%lld, but a token outside the model's vocabulary gets the next free id, %lld",
                           (long long)id, (long long)expect);
        }
        if (in_model < 0 && prior < 0) next_id++;
        t.id = (int32_t)id;
        if (!(t.content = tk_strndup(content, len))) return -1;
        t.len = len;
        a->tokens[a->n++] = t;
        if (prior < 0 && tk_vocab_add(&a->map, content, len, t.id) < 0) return -1;
    }
    return 0;
}

/* Normalizes the contents of normalized tokens and builds both tries. */
int tk_added_build(struct ft_tokenizer *tok) {
    tk_added_vocab *a = &tok->added;
    for (size_t i = 0; i < a->n; i++) {
        tk_added *t = &a->tokens[i];
        const char *pattern = t->content;
        size_t plen = t->len;
        if (t->normalized && tok->normalizer) {
            tk_buf *s = &tok->work.norm_a;
            s->n = 0;
            bool dropped = false;
            if (tk_buf_add(s, t->content, t->len) || tk_normalize(tok->normalizer, s, &tok->work, &dropped)) return -1;
            if (!(t->norm = tk_strndup(s->p, s->n))) return -1;
            t->norm_len = s->n;
            pattern = t->norm;
            plen = t->norm_len;
        }
        if (trie_add(t->normalized ? &a->normalized : &a->raw, pattern, plen, (int32_t)i)) return -1;
    }
    return 0;
}

void tk_added_free(tk_added_vocab *a) {
    for (size_t i = 0; i < a->n; i++) {
        free(a->tokens[i].content);
        free(a->tokens[i].norm);
    }
    free(a->tokens);
    tk_vocab_free(&a->map);
    free(a->raw.nodes);
    free(a->normalized.nodes);
    memset(a, 0, sizeof *a);
}

/* ---- matching --------------------------------------------------------------------------- */

static bool ends_with_word(const char *s, size_t n) {
    if (n == 0) return false;
    uint32_t cp;
    tk_utf8_decode(s + tk_utf8_last(s, n), &cp);
    return tk_is_word(cp);
}

static bool starts_with_word(const char *s, size_t n) {
    if (n == 0) return false;
    uint32_t cp;
    tk_utf8_decode(s, &cp);
    return tk_is_word(cp);
}

/* Start of the whitespace run that ends s[0..n). */
static size_t trailing_space_start(const char *s, size_t n) {
    while (n > 0) {
        size_t st = tk_utf8_last(s, n);
        uint32_t cp;
        tk_utf8_decode(s + st, &cp);
        if (!tk_is_whitespace(cp)) break;
        n = st;
    }
    return n;
}

/* Length of the whitespace run that starts s[0..n). */
static size_t leading_space_len(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = tk_utf8_decode(s + i, &cp);
        if (!tk_is_whitespace(cp)) break;
        i += k;
    }
    return i;
}

int tk_added_split(const struct ft_tokenizer *tok, bool normalized, tk_work *w) {
    const tk_added_vocab *a = &tok->added;
    const tk_trie *t = normalized ? &a->normalized : &a->raw;
    if (t->n == 0) return 0;
    w->tmp.n = 0;
    for (size_t pi = 0; pi < w->pieces.n; pi++) {
        tk_piece p = w->pieces.p[pi];
        if (p.id >= 0) {
            if (tk_pieces_push(&w->tmp, p.off, p.len, p.id, p.at_start)) return -1;
            continue;
        }
        const char *s = w->arena.p + p.off;
        size_t n = p.len, done = 0, i = 0;
        while (i < n) {
            if (t->root_child[(unsigned char)s[i]] < 0) {
                i++;
                continue;
            }
            size_t mlen = 0;
            int32_t ti = trie_longest(t, s, n, i, &mlen);
            if (ti < 0) {
                i++;
                continue;
            }
            const tk_added *tokn = &a->tokens[ti];
            size_t start = i, stop = i + mlen;
            i = stop;   /* the search goes on after this match, whatever becomes of it */
            if (tok->split_special && tokn->special) continue;
            if (tokn->single_word) {
                bool space_before = start == 0 || !ends_with_word(s, start);
                bool space_after = stop == n || !starts_with_word(s + stop, n - stop);
                if (!space_before || !space_after) continue;
            }
            if (tokn->lstrip) {
                size_t ns = trailing_space_start(s, start);
                start = ns > done ? ns : done;
            }
            if (tokn->rstrip) stop += leading_space_len(s + stop, n - stop);
            if (done < start && tk_pieces_push(&w->tmp, p.off + done, start - done, -1, p.at_start && done == 0)) return -1;
            if (tk_pieces_push(&w->tmp, p.off + start, stop - start, tokn->id, false)) return -1;
            done = stop;
            i = stop;
        }
        if (done < n && tk_pieces_push(&w->tmp, p.off + done, n - done, -1, p.at_start && done == 0)) return -1;
    }
    tk_pieces t2 = w->pieces;
    w->pieces = w->tmp;
    w->tmp = t2;
    return 0;
}
