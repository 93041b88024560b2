/* The tokenizer: reading tokenizer.json (cJSON; size-limited, UTF-8 checked) into its
 * components, and the encode / decode pipelines in HF's order. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tokenizer_internal.h"

/* ---- loading ---------------------------------------------------------------------------- */

ft_tokenizer *ft_tokenizer_load(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        ft_set_error("tokenizer: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ft_set_error("tokenizer: %s is not a regular file", path);
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > FT_TOKENIZER_MAX_FILE) {
        ft_set_error("tokenizer: %s: %lld bytes, more than the limit of %zu", path, (long long)st.st_size,
                     FT_TOKENIZER_MAX_FILE);
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    if (!buf) {
        ft_set_error("tokenizer: %s: out of memory (%zu bytes)", path, size);
        close(fd);
        return NULL;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            ft_set_error("tokenizer: %s: read failed: %s", path, r < 0 ? strerror(errno) : "file shrank");
            free(buf);
            close(fd);
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[size] = '\0';
    ft_tokenizer *tok = ft_tokenizer_from_json(buf, size, path);
    free(buf);
    return tok;
}

/* cJSON ends strings at a NUL: "\u0000" would cut a token silently, so it is refused. */
static size_t find_nul_escape(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\') continue;
        if (s[i + 1] == 'u' && i + 6 <= n && memcmp(s + i + 2, "0000", 4) == 0) return i;
        i++;   /* skip the escaped char (so "\\\\u0000" is not one) */
    }
    return n;
}

static int parse_truncation(ft_tokenizer *tok, const tk_src *src, const cJSON *t) {
    if (!t || cJSON_IsNull(t)) return 0;
    static const char *const keys[] = {"direction", "max_length", "strategy", "stride", NULL};
    const char *dir, *strategy;
    int64_t stride;
    if (tk_check_object(src, "truncation", t, keys) ||
        tk_get_int(src, "truncation", t, "max_length", true, 0, 0, INT64_MAX / 2, &tok->trunc_max_length) ||
        tk_get_int(src, "truncation", t, "stride", false, 0, 0, INT64_MAX / 2, &stride) ||   /* overflow only */
        tk_get_string(src, "truncation", t, "direction", false, &dir, NULL) ||
        tk_get_string(src, "truncation", t, "strategy", false, &strategy, NULL))
        return -1;
    if (dir && strcmp(dir, "Left") != 0 && strcmp(dir, "Right") != 0)
        return tk_fail(src, "truncation.direction", "unknown \"%s\" (known: Left, Right)", dir);
    if (strategy && strcmp(strategy, "LongestFirst") != 0)
        return tk_fail(src, "truncation.strategy", "\"%s\" is not supported (supported: LongestFirst)", strategy);
    tok->trunc_left = dir && strcmp(dir, "Left") == 0;
    return 0;
}

static int parse_padding(ft_tokenizer *tok, const tk_src *src, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return 0;
    static const char *const keys[] = {"strategy", "direction", "pad_to_multiple_of", "pad_id", "pad_type_id",
                                       "pad_token", NULL};
    const char *dir, *token;
    int64_t type_id;
    if (tk_check_object(src, "padding", p, keys) ||
        tk_get_int(src, "padding", p, "pad_id", false, 0, 0, FT_TOKENIZER_MAX_VOCAB - 1, &tok->padding.pad_id) ||
        tk_get_int(src, "padding", p, "pad_type_id", false, 0, 0, INT32_MAX, &type_id) ||
        tk_get_int(src, "padding", p, "pad_to_multiple_of", false, 0, 0, INT32_MAX, &tok->padding.multiple_of) ||
        tk_get_string(src, "padding", p, "direction", false, &dir, NULL) ||
        tk_get_string(src, "padding", p, "pad_token", false, &token, NULL))
        return -1;
    if (dir && strcmp(dir, "Left") != 0 && strcmp(dir, "Right") != 0)
        return tk_fail(src, "padding.direction", "unknown \"%s\" (known: Left, Right)", dir);
    tok->padding.left = dir && strcmp(dir, "Left") == 0;
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, "strategy");
    if (s && cJSON_IsObject(s)) {
        if (tk_get_int(src, "padding.strategy", s, "Fixed", true, 0, 1, INT32_MAX, &tok->padding.length)) return -1;
    } else if (s && !(cJSON_IsString(s) && strcmp(s->valuestring, "BatchLongest") == 0)) {
        return tk_fail(src, "padding.strategy", "expected \"BatchLongest\" or {\"Fixed\": n}");
    }
    tok->has_padding = true;
    return 0;
}

static int build_id_table(ft_tokenizer *tok) {
    int64_t n = tok->model.max_id + 1;
    for (size_t i = 0; i < tok->added.n; i++)
        if (tok->added.tokens[i].id + 1 > n) n = tok->added.tokens[i].id + 1;
    tok->vocab_size = n;
    size_t cap = n ? (size_t)n : 1;
    tok->id_str = calloc(cap, sizeof *tok->id_str);
    tok->id_len = calloc(cap, sizeof *tok->id_len);
    tok->special = calloc(cap, sizeof *tok->special);
    tok->dec_str = calloc(cap, sizeof *tok->dec_str);
    tok->dec_len = calloc(cap, sizeof *tok->dec_len);
    if (!tok->id_str || !tok->id_len || !tok->special || !tok->dec_str || !tok->dec_len) {
        ft_set_error("tokenizer: out of memory");
        return -1;
    }
    const tk_vocab *v = &tok->model.vocab;
    for (size_t i = 0; i < v->cap; i++) {
        if (v->slots[i].id < 0) continue;
        tok->id_str[v->slots[i].id] = v->arena.p + v->slots[i].off;
        tok->id_len[v->slots[i].id] = v->slots[i].len;
    }
    for (size_t i = 0; i < tok->added.n; i++) {
        const tk_added *t = &tok->added.tokens[i];
        tok->id_str[t->id] = t->content;
        tok->id_len[t->id] = (uint32_t)t->len;
        if (t->special) tok->special[t->id] = true;
    }
    return 0;
}

#define PARSE_PART(field, type, fn, key)                                                       \
    do {                                                                                       \
        const cJSON *part = cJSON_GetObjectItemCaseSensitive(root, key);                       \
        if (part && !cJSON_IsNull(part)) {                                                     \
            tok->field = calloc(1, sizeof(type));                                              \
            if (!tok->field) {                                                                 \
                ft_set_error("tokenizer: out of memory");                                      \
                goto fail;                                                                     \
            }                                                                                  \
            if (fn) goto fail;                                                                 \
        }                                                                                      \
    } while (0)

ft_tokenizer *ft_tokenizer_from_json(const char *json, size_t len, const char *name) {
    tk_src src = {name ? name : "tokenizer.json"};
    if (len > FT_TOKENIZER_MAX_FILE) {
        ft_set_error("tokenizer: %s: %zu bytes, more than the limit of %zu", src.file, len, FT_TOKENIZER_MAX_FILE);
        return NULL;
    }
    size_t bad = tk_utf8_invalid_at(json, len);
    if (bad < len) {
        ft_set_error("tokenizer: %s: not valid UTF-8 at byte %zu", src.file, bad);
        return NULL;
    }
    bad = find_nul_escape(json, len);
    if (bad < len) {
        ft_set_error("tokenizer: %s: a \\u0000 escape at byte %zu (NUL in a token is not supported)", src.file, bad);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        const char *err = cJSON_GetErrorPtr();
        if (err && err >= json && err <= json + len) at = (size_t)(err - json);
        ft_set_error("tokenizer: %s: invalid JSON near byte %zu", src.file, at);
        return NULL;
    }
    ft_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        cJSON_Delete(root);
        ft_set_error("tokenizer: out of memory");
        return NULL;
    }
    static const char *const keys[] = {"version", "truncation", "padding", "added_tokens", "normalizer",
                                       "pre_tokenizer", "post_processor", "decoder", "model", NULL};
    if (!cJSON_IsObject(root)) {
        tk_fail(&src, "(top level)", "expected an object");
        goto fail;
    }
    if (tk_check_object(&src, "(top level)", root, keys)) goto fail;
    const char *version;
    if (tk_get_string(&src, "(top level)", root, "version", false, &version, NULL)) goto fail;
    if (version && strcmp(version, "1.0") != 0) {
        tk_fail(&src, "version", "unknown version \"%s\" (known: 1.0)", version);
        goto fail;
    }
    if (tk_model_parse(&tok->model, &src, "model", cJSON_GetObjectItemCaseSensitive(root, "model")) ||
        tk_added_parse(tok, &src, cJSON_GetObjectItemCaseSensitive(root, "added_tokens")) || build_id_table(tok) ||
        parse_truncation(tok, &src, cJSON_GetObjectItemCaseSensitive(root, "truncation")) ||
        parse_padding(tok, &src, cJSON_GetObjectItemCaseSensitive(root, "padding")))
        goto fail;
    PARSE_PART(normalizer, tk_normalizer, tk_normalizer_parse(tok->normalizer, &src, "normalizer", part), "normalizer");
    if (tk_added_build(tok)) goto fail;
    memcpy(tok->dec_str, tok->id_str, (size_t)tok->vocab_size * sizeof *tok->dec_str);
    memcpy(tok->dec_len, tok->id_len, (size_t)tok->vocab_size * sizeof *tok->dec_len);
    for (size_t i = 0; i < tok->added.n; i++) {
        const tk_added *t = &tok->added.tokens[i];
        if (t->norm) {
            tok->dec_str[t->id] = t->norm;
            tok->dec_len[t->id] = (uint32_t)t->norm_len;
        }
    }
    PARSE_PART(pretokenizer, tk_pretokenizer, tk_pretokenizer_parse(tok->pretokenizer, &src, "pre_tokenizer", part),
               "pre_tokenizer");
    PARSE_PART(post, tk_post, tk_post_parse(tok->post, &src, "post_processor", part, tok), "post_processor");
    PARSE_PART(decoder, tk_decoder, tk_decoder_parse(tok->decoder, &src, "decoder", part), "decoder");
    if (tok->padding.pad_id >= tok->vocab_size) {
        tk_fail(&src, "padding.pad_id", "id %lld is not in the vocabulary", (long long)tok->padding.pad_id);
        goto fail;
    }
    cJSON_Delete(root);
    return tok;
fail:
    cJSON_Delete(root);
    ft_tokenizer_free(tok);
    return NULL;
}

void ft_tokenizer_free(ft_tokenizer *tok) {
    if (!tok) return;
    tk_model_free(&tok->model);
    tk_added_free(&tok->added);
    if (tok->normalizer) tk_normalizer_free(tok->normalizer);
    if (tok->pretokenizer) tk_pretokenizer_free(tok->pretokenizer);
    if (tok->post) tk_post_free(tok->post);
    if (tok->decoder) tk_decoder_free(tok->decoder);
    free(tok->normalizer);
    free(tok->pretokenizer);
    free(tok->post);
    free(tok->decoder);
    free(tok->id_str);
    free(tok->id_len);
    free(tok->dec_str);
    free(tok->dec_len);
    free(tok->special);
    tk_work_free(&tok->work);
    free(tok);
}

/* ---- encoding ----------------------------------------------------------------------------- */

/* Normalizes every text piece (dropping those that become empty). */
static int normalize_pieces(ft_tokenizer *tok, tk_work *w) {
    w->tmp.n = 0;
    for (size_t i = 0; i < w->pieces.n; i++) {
        tk_piece p = w->pieces.p[i];
        if (p.id < 0) {
            tk_buf *s = &w->norm_a;
            s->n = 0;
            bool dropped = false;
            if (tk_buf_add(s, w->arena.p + p.off, p.len) || tk_normalize(tok->normalizer, s, w, &dropped)) return -1;
            if (s->n == 0) continue;
            p.off = w->arena.n;
            p.len = s->n;
            p.at_start = p.at_start && !dropped;
            if (tk_buf_add(&w->arena, s->p, s->n)) return -1;
        }
        if (tk_pieces_push(&w->tmp, p.off, p.len, p.id, p.at_start)) return -1;
    }
    tk_pieces t = w->pieces;
    w->pieces = w->tmp;
    w->tmp = t;
    return 0;
}

/* The ids of one text, before the post-processor. */
static int encode_text(ft_tokenizer *tok, const char *text, size_t len, ft_token_ids *out) {
    tk_work *w = &tok->work;
    out->len = 0;
    if (len > FT_TOKENIZER_MAX_TEXT) {
        ft_set_error("tokenizer: a text of %zu bytes, more than the limit of %zu", len, FT_TOKENIZER_MAX_TEXT);
        return -1;
    }
    size_t bad = tk_utf8_invalid_at(text, len);
    if (bad < len) {
        ft_set_error("tokenizer: the text is not valid UTF-8 at byte %zu (0x%02X)", bad, (unsigned char)text[bad]);
        return -1;
    }
    if (len == 0) return 0;
    w->arena.n = 0;
    w->pieces.n = 0;
    if (tk_buf_add(&w->arena, text, len) || tk_pieces_push(&w->pieces, 0, len, -1, true)) return -1;
    if (tk_added_split(tok, false, w)) return -1;
    if (tok->normalizer && normalize_pieces(tok, w)) return -1;
    if (tk_added_split(tok, true, w)) return -1;
    if (tok->pretokenizer && tk_pretokenize(tok->pretokenizer, w)) return -1;
    for (size_t i = 0; i < w->pieces.n; i++) {
        const tk_piece *p = &w->pieces.p[i];
        if (p->id >= 0) {
            if (tk_ids_push(out, p->id)) return -1;
        } else if (tk_model_tokenize(&tok->model, w->arena.p + p->off, p->len, w, out)) {
            return -1;
        }
    }
    return 0;
}

static void cut(ft_token_ids *ids, size_t keep, bool left) {
    if (ids->len <= keep) return;
    if (left) memmove(ids->ids, ids->ids + (ids->len - keep), keep * sizeof *ids->ids);
    ids->len = keep;
}

int ft_tokenizer_encode(ft_tokenizer *tok, const char *text, size_t len, const char *pair, size_t pair_len,
                        const ft_encode_opts *opts, ft_token_ids *out) {
    ft_encode_opts def = {true, 0, false};
    if (!opts) opts = &def;
    tk_work *w = &tok->work;
    out->len = 0;
    if (encode_text(tok, text, len, &w->seq_a)) return -1;
    if (pair && encode_text(tok, pair, pair_len, &w->seq_b)) return -1;
    int64_t max_length = opts->max_length > 0 ? opts->max_length : tok->trunc_max_length;
    bool left = opts->max_length > 0 ? opts->truncate_left : tok->trunc_left;
    if (max_length > 0) {
        int64_t added = opts->add_special_tokens ? tk_post_added(tok->post, pair != NULL) : 0;
        if (added > max_length) {
            ft_set_error("tokenizer: max_length %lld is shorter than the %lld special tokens added", (long long)max_length,
                         (long long)added);
            return -1;
        }
        size_t room = (size_t)(max_length - added), na = w->seq_a.len, nb = pair ? w->seq_b.len : 0;
        /* Of two texts, the longer loses a token first (HF's LongestFirst). */
        while (na + nb > room) {
            if (na > nb) na--;
            else nb--;
        }
        cut(&w->seq_a, na, left);
        if (pair) cut(&w->seq_b, nb, left);
    }
    return tk_post_process(tok->post, &w->seq_a, pair ? &w->seq_b : NULL, opts->add_special_tokens, out, NULL);
}

/* ---- decoding ----------------------------------------------------------------------------- */

char *ft_tokenizer_decode(const ft_tokenizer *tok, const int32_t *ids, size_t n, const ft_decode_opts *opts,
                          size_t *len_out) {
    ft_decode_opts def = {false, false};
    if (!opts) opts = &def;
    tk_strs in = {0}, out = {0};
    tk_buf text = {0};
    char *result = NULL;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->vocab_size || !tok->id_str[id]) {
            ft_set_error("tokenizer: decode: id %d at position %zu is not in the vocabulary (0..%lld)", id, i,
                         (long long)tok->vocab_size - 1);
            goto done;
        }
        if (opts->skip_special_tokens && tok->special[id]) continue;
        if (tk_strs_push(&in, tok->dec_str[id], tok->dec_len[id])) goto done;
    }
    if (tok->decoder) {
        if (tk_decode_chain(tok->decoder, &in, &out)) goto done;
        for (size_t i = 0; i < out.n; i++)
            if (tk_buf_add(&text, out.text.p + out.off[i], out.len[i])) goto done;
    } else {
        for (size_t i = 0; i < in.n; i++)
            if ((i && tk_buf_add(&text, " ", 1)) || tk_buf_add(&text, in.text.p + in.off[i], in.len[i])) goto done;
    }
    if (tk_buf_add(&text, "", 0)) goto done;
    if (opts->clean_up_tokenization_spaces) tk_clean_up_tokenization(&text);
    result = text.p;
    if (len_out) *len_out = text.n;
    text.p = NULL;
done:
    tk_buf_free(&text);
    tk_strs_free(&in);
    tk_strs_free(&out);
    return result;
}

/* ---- queries ------------------------------------------------------------------------------ */

int64_t ft_tokenizer_token_to_id(const ft_tokenizer *tok, const char *token, size_t len) {
    int32_t id = tk_vocab_get(&tok->added.map, token, len);
    if (id >= 0) return id;
    return tk_vocab_get(&tok->model.vocab, token, len);
}

const char *ft_tokenizer_id_to_token(const ft_tokenizer *tok, int64_t id, size_t *len) {
    if (id < 0 || id >= tok->vocab_size || !tok->id_str[id]) return NULL;
    if (len) *len = tok->id_len[id];
    return tok->id_str[id];
}

int64_t ft_tokenizer_vocab_size(const ft_tokenizer *tok) { return tok->vocab_size; }

bool ft_tokenizer_is_special(const ft_tokenizer *tok, int64_t id) {
    return id >= 0 && id < tok->vocab_size && tok->special[id];
}

int ft_tokenizer_mark_special(ft_tokenizer *tok, int64_t id) {
    if (id < 0 || id >= tok->vocab_size || !tok->id_str[id]) {
        ft_set_error("tokenizer: id %lld is not in the vocabulary", (long long)id);
        return -1;
    }
    tok->special[id] = true;
    return 0;
}

void ft_tokenizer_set_split_special(ft_tokenizer *tok, bool on) { tok->split_special = on; }

int64_t ft_tokenizer_num_special_tokens(const ft_tokenizer *tok, bool pair) { return tk_post_added(tok->post, pair); }

bool ft_tokenizer_padding_of(const ft_tokenizer *tok, ft_tokenizer_padding *out) {
    if (tok->has_padding && out) *out = tok->padding;
    return tok->has_padding;
}

int64_t ft_tokenizer_truncation_of(const ft_tokenizer *tok) { return tok->trunc_max_length; }

size_t ft_tokenizer_num_added(const ft_tokenizer *tok) { return tok->added.n; }

int64_t ft_tokenizer_added_id(const ft_tokenizer *tok, size_t i) {
    return i < tok->added.n ? tok->added.tokens[i].id : -1;
}
