/* Post-processors: TemplateProcessing (single and pair templates, each special token's ids
 * as listed in special_tokens), BertProcessing, RobertaProcessing, ByteLevel (offsets only:
 * nothing to do on ids) and Sequence. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

static const char *const POSTS = "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence";

static int check_id(const tk_src *src, const char *where, const struct ft_tokenizer *tok, int64_t id) {
    if (id < 0 || id >= tok->vocab_size) return tk_fail(src, where, "id %lld is not in the vocabulary", (long long)id);
    return 0;
}

static int parse_template(tk_post *p, const tk_src *src, const char *where, const cJSON *obj, const char *key,
                          tk_tpl_piece **out, size_t *n_out, bool pair) {
    char base[512], sub[512], sub2[512];
    const cJSON *arr;
    if (tk_get_array(src, where, obj, key, &arr)) return -1;
    tk_path(base, sizeof base, where, key, 0);
    size_t count = (size_t)cJSON_GetArraySize(arr);
    *out = calloc(count ? count : 1, sizeof **out);
    if (!*out) return tk_fail(src, base, "out of memory");
    const cJSON *item;
    cJSON_ArrayForEach(item, arr) {
        tk_path(sub, sizeof sub, base, NULL, (int)*n_out);
        if (cJSON_IsString(item))
            return tk_fail(src, sub, "the \"$A\" string form of templates is not supported (expected {\"Sequence\": ...} or {\"SpecialToken\": ...})");
        if (!cJSON_IsObject(item) || cJSON_GetArraySize(item) != 1)
            return tk_fail(src, sub, "expected {\"Sequence\": {...}} or {\"SpecialToken\": {...}}");
        const cJSON *v = item->child;
        static const char *const keys[] = {"id", "type_id", NULL};
        tk_tpl_piece piece = {0};
        const char *id;
        int64_t type_id;
        tk_path(sub2, sizeof sub2, sub, v->string, 0);
        if (strcmp(v->string, "Sequence") == 0) {
            if (tk_check_object(src, sub2, v, keys) || tk_get_string(src, sub2, v, "id", true, &id, NULL) ||
                tk_get_int(src, sub2, v, "type_id", false, 0, 0, INT32_MAX, &type_id))
                return -1;
            if (strcmp(id, "A") == 0) piece.index = 0;
            else if (strcmp(id, "B") == 0 && pair) piece.index = 1;
            else {
                char sub3[512];
                return tk_fail(src, tk_path(sub3, sizeof sub3, sub2, "id", 0), "expected %s, got \"%s\"",
                               pair ? "\"A\" or \"B\"" : "\"A\"", id);
            }
        } else if (strcmp(v->string, "SpecialToken") == 0) {
            if (tk_check_object(src, sub2, v, keys) || tk_get_string(src, sub2, v, "id", true, &id, NULL) ||
                tk_get_int(src, sub2, v, "type_id", false, 0, 0, INT32_MAX, &type_id))
                return -1;
            piece.special = true;
            piece.index = -1;
            for (size_t k = 0; k < p->n_specials; k++)
                if (strcmp(p->specials[k].name, id) == 0) piece.index = (int)k;
            if (piece.index < 0) {
                char sub3[512];
                return tk_fail(src, tk_path(sub3, sizeof sub3, sub2, "id", 0), "\"%s\" is not in special_tokens", id);
            }
        } else {
            return tk_fail(src, sub, "unsupported template piece \"%s\" (known: Sequence, SpecialToken)", v->string);
        }
        piece.type_id = (int32_t)type_id;
        (*out)[(*n_out)++] = piece;
    }
    return 0;
}

static int parse_specials(tk_post *p, const tk_src *src, const char *where, const cJSON *obj,
                          const struct ft_tokenizer *tok) {
    char base[512], sub[768], sub2[800];
    tk_path(base, sizeof base, where, "special_tokens", 0);
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(obj, "special_tokens");
    if (!sp || cJSON_IsNull(sp)) return 0;
    if (!cJSON_IsObject(sp)) return tk_fail(src, base, "expected an object");
    size_t count = (size_t)cJSON_GetArraySize(sp);
    p->specials = calloc(count ? count : 1, sizeof *p->specials);
    if (!p->specials) return tk_fail(src, base, "out of memory");
    const cJSON *item;
    cJSON_ArrayForEach(item, sp) {
        static const char *const keys[] = {"id", "ids", "tokens", NULL};
        snprintf(sub, sizeof sub, "%s[\"%.200s\"]", base, item->string);
        tk_special_tok *t = &p->specials[p->n_specials++];
        const cJSON *ids, *tokens, *v;
        if (tk_check_object(src, sub, item, keys) || tk_get_array(src, sub, item, "ids", &ids) ||
            tk_get_array(src, sub, item, "tokens", &tokens))
            return -1;
        if (!(t->name = tk_strndup(item->string, strlen(item->string)))) return -1;
        size_t n = (size_t)cJSON_GetArraySize(ids);
        if ((size_t)cJSON_GetArraySize(tokens) != n)
            return tk_fail(src, sub, "ids and tokens differ in length");
        t->ids = malloc((n ? n : 1) * sizeof *t->ids);
        if (!t->ids) return tk_fail(src, sub, "out of memory");
        cJSON_ArrayForEach(v, ids) {
            snprintf(sub2, sizeof sub2, "%s.ids[%zu]", sub, t->n_ids);
            if (!cJSON_IsNumber(v) || !ft_is_int64_value(v->valuedouble)) return tk_fail(src, sub2, "expected an integer id");
            if (check_id(src, sub2, tok, (int64_t)v->valuedouble)) return -1;
            t->ids[t->n_ids++] = (int32_t)v->valuedouble;
        }
    }
    return 0;
}

/* BertProcessing / RobertaProcessing's ["[SEP]", 102]. */
static int parse_pair_token(const tk_src *src, const char *where, const cJSON *obj, const char *key,
                            const struct ft_tokenizer *tok, int32_t *id) {
    char sub[512];
    tk_path(sub, sizeof sub, where, key, 0);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return tk_fail(src, sub, "missing");
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || !cJSON_IsString(v->child) ||
        !cJSON_IsNumber(v->child->next) || !ft_is_int64_value(v->child->next->valuedouble))
        return tk_fail(src, sub, "expected [\"token\", id]");
    if (check_id(src, sub, tok, (int64_t)v->child->next->valuedouble)) return -1;
    *id = (int32_t)v->child->next->valuedouble;
    return 0;
}

static bool adds_tokens(const tk_post *p) {
    return p->kind == TK_POST_TEMPLATE || p->kind == TK_POST_BERT || p->kind == TK_POST_ROBERTA;
}

int tk_post_parse(tk_post *p, const tk_src *src, const char *where, const cJSON *obj,
                  const struct ft_tokenizer *tok) {
    memset(p, 0, sizeof *p);
    const char *type;
    if (tk_get_type(src, where, obj, &type)) return -1;
    if (strcmp(type, "TemplateProcessing") == 0) {
        static const char *const keys[] = {"type", "single", "pair", "special_tokens", NULL};
        p->kind = TK_POST_TEMPLATE;
        return tk_check_object(src, where, obj, keys) || parse_specials(p, src, where, obj, tok) ||
               parse_template(p, src, where, obj, "single", &p->single, &p->n_single, false) ||
               parse_template(p, src, where, obj, "pair", &p->pair, &p->n_pair, true) ? -1 : 0;
    }
    if (strcmp(type, "BertProcessing") == 0 || strcmp(type, "RobertaProcessing") == 0) {
        static const char *const bert_keys[] = {"type", "sep", "cls", NULL};
        static const char *const roberta_keys[] = {"type", "sep", "cls", "trim_offsets", "add_prefix_space", NULL};
        bool bert = type[0] == 'B', unused;
        p->kind = bert ? TK_POST_BERT : TK_POST_ROBERTA;
        return tk_check_object(src, where, obj, bert ? bert_keys : roberta_keys) ||
               parse_pair_token(src, where, obj, "sep", tok, &p->sep_id) ||
               parse_pair_token(src, where, obj, "cls", tok, &p->cls_id) ||
               tk_get_bool(src, where, obj, "trim_offsets", false, true, &unused) ||
               tk_get_bool(src, where, obj, "add_prefix_space", false, true, &unused) ? -1 : 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        static const char *const keys[] = {"type", "add_prefix_space", "trim_offsets", "use_regex", NULL};
        p->kind = TK_POST_BYTE_LEVEL;
        return tk_check_object(src, where, obj, keys);
    }
    if (strcmp(type, "Sequence") == 0) {
        static const char *const keys[] = {"type", "processors", NULL};
        p->kind = TK_POST_SEQUENCE;
        const cJSON *arr, *item;
        if (tk_check_object(src, where, obj, keys) || tk_get_array(src, where, obj, "processors", &arr)) return -1;
        size_t count = (size_t)cJSON_GetArraySize(arr), adding = 0;
        p->items = calloc(count ? count : 1, sizeof *p->items);
        if (!p->items) return tk_fail(src, where, "out of memory");
        char base[512], sub[512];
        tk_path(base, sizeof base, where, "processors", 0);
        cJSON_ArrayForEach(item, arr) {
            tk_path(sub, sizeof sub, base, NULL, (int)p->n_items);
            int rc = tk_post_parse(&p->items[p->n_items], src, sub, item, tok);
            p->n_items++;
            if (rc) return -1;
            if (p->items[p->n_items - 1].kind == TK_POST_SEQUENCE)
                return tk_fail(src, sub, "a Sequence inside a Sequence is not supported");
            if (adds_tokens(&p->items[p->n_items - 1]) && ++adding > 1)
                return tk_fail(src, sub, "a second processor that adds tokens is not supported (HF cannot run it either)");
        }
        return 0;
    }
    char sub[512];
    return tk_fail(src, tk_path(sub, sizeof sub, where, "type", 0), "unsupported post_processor \"%s\" (supported: %s)",
                   type, POSTS);
}

void tk_post_free(tk_post *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_items; i++) tk_post_free(&p->items[i]);
    free(p->items);
    free(p->single);
    free(p->pair);
    for (size_t i = 0; i < p->n_specials; i++) {
        free(p->specials[i].name);
        free(p->specials[i].ids);
    }
    free(p->specials);
    memset(p, 0, sizeof *p);
}

static int append(ft_token_ids *out, const int32_t *ids, size_t n) {
    if (tk_ids_reserve(out, n)) return -1;
    if (n) memcpy(out->ids + out->len, ids, n * sizeof *ids);
    out->len += n;
    return 0;
}

int tk_post_process(const tk_post *p, const ft_token_ids *a, const ft_token_ids *b, bool add_special,
                    ft_token_ids *out, ft_token_ids *tmp) {
    const tk_post *q = p;
    if (p && p->kind == TK_POST_SEQUENCE) {
        q = NULL;
        for (size_t i = 0; i < p->n_items; i++)
            if (adds_tokens(&p->items[i])) q = &p->items[i];
    }
    (void)tmp;
    if (!q || q->kind == TK_POST_BYTE_LEVEL) {
        return append(out, a->ids, a->len) || (b && append(out, b->ids, b->len)) ? -1 : 0;
    }
    if (q->kind == TK_POST_BERT || q->kind == TK_POST_ROBERTA) {
        if (add_special && tk_ids_push(out, q->cls_id)) return -1;
        if (append(out, a->ids, a->len) || (add_special && tk_ids_push(out, q->sep_id))) return -1;
        if (b) {
            if (add_special && q->kind == TK_POST_ROBERTA && tk_ids_push(out, q->sep_id)) return -1;
            if (append(out, b->ids, b->len) || (add_special && tk_ids_push(out, q->sep_id))) return -1;
        }
        return 0;
    }
    const tk_tpl_piece *tpl = b ? q->pair : q->single;
    size_t n = b ? q->n_pair : q->n_single;
    for (size_t i = 0; i < n; i++) {
        if (tpl[i].special) {
            const tk_special_tok *t = &q->specials[tpl[i].index];
            if (add_special && append(out, t->ids, t->n_ids)) return -1;
        } else {
            const ft_token_ids *seq = tpl[i].index == 0 ? a : b;
            if (append(out, seq->ids, seq->len)) return -1;
        }
    }
    return 0;
}

int64_t tk_post_added(const tk_post *p, bool pair) {
    if (!p) return 0;
    if (p->kind == TK_POST_SEQUENCE) {
        int64_t n = 0;
        for (size_t i = 0; i < p->n_items; i++) n += tk_post_added(&p->items[i], pair);
        return n;
    }
    if (p->kind == TK_POST_BERT) return pair ? 3 : 2;
    if (p->kind == TK_POST_ROBERTA) return pair ? 4 : 2;
    if (p->kind != TK_POST_TEMPLATE) return 0;
    const tk_tpl_piece *tpl = pair ? p->pair : p->single;
    size_t n = pair ? p->n_pair : p->n_single;
    int64_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (tpl[i].special) count += (int64_t)p->specials[tpl[i].index].n_ids;
    return count;
}
