/* The model of a tokenizer.json: reading its vocabulary (checked: integer ids in range, no
 * token or id twice), choosing BPE / WordPiece / WordLevel, and the two vocabulary-only
 * models, WordPiece (greedy longest match with continuing_subword_prefix) and WordLevel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

static const char *const MODELS = "BPE, WordPiece, WordLevel";

int tk_vocab_parse(tk_model *m, const tk_src *src, const char *where, const cJSON *vocab) {
    if (!vocab || cJSON_IsNull(vocab)) return tk_fail(src, where, "missing");
    if (!cJSON_IsObject(vocab)) return tk_fail(src, where, "expected an object token -> id");
    size_t count = (size_t)cJSON_GetArraySize(vocab);
    if ((int64_t)count > FT_TOKENIZER_MAX_VOCAB)
        return tk_fail(src, where, "%zu tokens, more than the limit of %lld", count, (long long)FT_TOKENIZER_MAX_VOCAB);
    if (tk_vocab_init(&m->vocab, count)) return -1;
    unsigned char *seen = calloc((size_t)FT_TOKENIZER_MAX_VOCAB / 8, 1);
    if (!seen) return tk_fail(src, where, "out of memory");
    m->max_id = -1;
    const cJSON *item;
    char sub[768];
    cJSON_ArrayForEach(item, vocab) {
        const char *tok = item->string;
        if (!cJSON_IsNumber(item) || !ft_is_int64_value(item->valuedouble) || item->valuedouble < 0 ||
            item->valuedouble >= (double)FT_TOKENIZER_MAX_VOCAB) {
            free(seen);
            snprintf(sub, sizeof sub, "%s[\"%.200s\"]", where, tok);
            return tk_fail(src, sub, "expected an id in 0..%lld", (long long)FT_TOKENIZER_MAX_VOCAB - 1);
        }
        int32_t id = (int32_t)item->valuedouble;
        int rc = tk_vocab_add(&m->vocab, tok, strlen(tok), id);
        if (rc < 0) {
            free(seen);
            return -1;
        }
        if (rc > 0 || (seen[id >> 3] & (1u << (id & 7)))) {
            free(seen);
            snprintf(sub, sizeof sub, "%s[\"%.200s\"]", where, tok);
            return tk_fail(src, sub, rc > 0 ? "token appears twice" : "id %d is used by another token too", id);
        }
        seen[id >> 3] |= (unsigned char)(1u << (id & 7));
        if (id > m->max_id) m->max_id = id;
    }
    free(seen);
    return 0;
}

int tk_model_parse(tk_model *m, const tk_src *src, const char *where, const cJSON *obj) {
    memset(m, 0, sizeof *m);
    m->unk_id = -1;
    for (int b = 0; b < 256; b++) m->byte_ids[b] = -1;
    if (!obj || cJSON_IsNull(obj)) return tk_fail(src, where, "missing");
    const char *type = NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    if (cJSON_IsObject(obj) && !t) {
        /* Files written before "type" was serialised: HF tells the model by its fields. */
        if (cJSON_GetObjectItemCaseSensitive(obj, "merges")) type = "BPE";
        else if (cJSON_GetObjectItemCaseSensitive(obj, "continuing_subword_prefix")) type = "WordPiece";
        else if (cJSON_GetObjectItemCaseSensitive(obj, "unk_token")) type = "WordLevel";
    }
    if (!type && tk_get_type(src, where, obj, &type)) return -1;
    if (strcmp(type, "BPE") == 0) return tk_bpe_parse(m, src, where, obj);
    if (strcmp(type, "WordPiece") == 0) return tk_wordpiece_parse(m, src, where, obj, false);
    if (strcmp(type, "WordLevel") == 0) return tk_wordpiece_parse(m, src, where, obj, true);
    char sub[512];
    return tk_fail(src, tk_path(sub, sizeof sub, where, "type", 0), "unsupported model \"%s\" (supported: %s)", type, MODELS);
}

int tk_wordpiece_parse(tk_model *m, const tk_src *src, const char *where, const cJSON *obj, bool wordlevel) {
    static const char *const wp_keys[] = {"type", "unk_token", "continuing_subword_prefix",
                                          "max_input_chars_per_word", "vocab", NULL};
    static const char *const wl_keys[] = {"type", "unk_token", "vocab", NULL};
    char sub[512];
    m->kind = wordlevel ? TK_MODEL_WORDLEVEL : TK_MODEL_WORDPIECE;
    if (tk_check_object(src, where, obj, wordlevel ? wl_keys : wp_keys)) return -1;
    const char *unk, *prefix = NULL;
    size_t unk_len, prefix_len = 0;
    if (tk_get_string(src, where, obj, "unk_token", true, &unk, &unk_len)) return -1;
    if (!wordlevel &&
        (tk_get_string(src, where, obj, "continuing_subword_prefix", false, &prefix, &prefix_len) ||
         tk_get_int(src, where, obj, "max_input_chars_per_word", false, 100, 0, INT64_MAX / 2,
                    &m->max_input_chars_per_word)))
        return -1;
    if (!prefix) {
        prefix = "##";
        prefix_len = 2;
    }
    if (!wordlevel && !(m->prefix = tk_strndup(prefix, prefix_len))) return -1;
    m->prefix_len = wordlevel ? 0 : prefix_len;
    if (tk_vocab_parse(m, src, tk_path(sub, sizeof sub, where, "vocab", 0), cJSON_GetObjectItemCaseSensitive(obj, "vocab")))
        return -1;
    if (!(m->unk_token = tk_strndup(unk, unk_len))) return -1;
    m->unk_id = tk_vocab_get(&m->vocab, unk, unk_len);
    if (m->unk_id < 0)
        return tk_fail(src, tk_path(sub, sizeof sub, where, "unk_token", 0), "\"%s\" is not in the vocabulary", unk);
    return 0;
}

int tk_wordpiece_tokenize(tk_model *m, const char *s, size_t n, ft_token_ids *out) {
    if (m->kind == TK_MODEL_WORDLEVEL) {
        int32_t id = tk_vocab_get(&m->vocab, s, n);
        return tk_ids_push(out, id >= 0 ? id : m->unk_id);
    }
    size_t chars = 0;
    for (size_t i = 0; i < n; i += tk_utf8_len((unsigned char)s[i])) chars++;
    if ((int64_t)chars > m->max_input_chars_per_word) return tk_ids_push(out, m->unk_id);
    size_t mark = out->len;
    tk_buf tmp = {0};
    for (size_t start = 0; start < n;) {
        size_t end = n;
        int32_t found = -1;
        while (start < end) {
            int32_t id;
            if (start == 0) {
                id = tk_vocab_get(&m->vocab, s, end);
            } else {
                tmp.n = 0;
                if (tk_buf_add(&tmp, m->prefix, m->prefix_len) || tk_buf_add(&tmp, s + start, end - start)) {
                    tk_buf_free(&tmp);
                    return -1;
                }
                id = tk_vocab_get(&m->vocab, tmp.p, tmp.n);
            }
            if (id >= 0) {
                found = id;
                break;
            }
            end = start + tk_utf8_last(s + start, end - start);
        }
        if (found < 0) {   /* a word with an unmatchable rest is one unk */
            out->len = mark;
            tk_buf_free(&tmp);
            return tk_ids_push(out, m->unk_id);
        }
        if (tk_ids_push(out, found)) {
            tk_buf_free(&tmp);
            return -1;
        }
        start = end;
    }
    tk_buf_free(&tmp);
    return 0;
}

int tk_model_tokenize(tk_model *m, const char *s, size_t n, tk_work *w, ft_token_ids *out) {
    if (m->kind == TK_MODEL_BPE) return tk_bpe_tokenize(m, s, n, w, out);
    return tk_wordpiece_tokenize(m, s, n, out);
}

void tk_model_free(tk_model *m) {
    tk_vocab_free(&m->vocab);
    tk_pairs_free(&m->merges);
    free(m->prefix);
    free(m->suffix);
    free(m->unk_token);
    free(m->char_ids);
    if (m->cache) {
        for (size_t i = 0; i < TK_CACHE_SLOTS; i++) free(m->cache[i].data);
        free(m->cache);
    }
    memset(m, 0, sizeof *m);
}
