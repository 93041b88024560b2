/* Split and replace patterns through Oniguruma, as HF's tokenizers does (the onig crate:
 * Ruby syntax, UTF-8, no options), and its way of walking the matches of a text. */
#include <pthread.h>
#include <string.h>

#include "tokenizer_internal.h"

static pthread_once_t onig_once = PTHREAD_ONCE_INIT;

static void onig_start(void) {
    OnigEncoding encodings[1] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
}

/* The characters the regex crate's escape() escapes (HF escapes String patterns so). */
static bool is_meta(char c) {
    return strchr("\\.+*?()|[]{}^$#&-~", c) != NULL && c != '\0';
}

int tk_regex_compile(tk_regex *r, const tk_src *src, const char *where, const char *pattern,
                     size_t len, bool literal) {
    memset(r, 0, sizeof *r);
    pthread_once(&onig_once, onig_start);
    tk_buf esc = {0};
    if (literal) {
        for (size_t i = 0; i < len; i++) {
            if (is_meta(pattern[i]) && tk_buf_add(&esc, "\\", 1)) goto oom;
            if (tk_buf_add(&esc, pattern + i, 1)) goto oom;
        }
        if (tk_buf_add(&esc, "", 0)) goto oom;
        pattern = esc.p;
        len = esc.n;
    }
    OnigErrorInfo info;
    int rc = onig_new(&r->re, (const OnigUChar *)pattern, (const OnigUChar *)pattern + len, ONIG_OPTION_NONE,
                      ONIG_ENCODING_UTF8, ONIG_SYNTAX_RUBY, &info);
    if (rc != ONIG_NORMAL) {
        OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
        onig_error_code_to_str(msg, rc, &info);
        r->re = NULL;
        tk_buf_free(&esc);
        return tk_fail(src, where, "invalid pattern: %s", (const char *)msg);
    }
    tk_buf_free(&esc);
    r->region = onig_region_new();
    if (!r->region) {
        tk_regex_free(r);
        ft_set_error("tokenizer: out of memory");
        return -1;
    }
    return 0;
oom:
    tk_buf_free(&esc);
    return -1;
}

int tk_regex_from_json(tk_regex *r, const tk_src *src, const char *where, const cJSON *obj,
                       const char *key) {
    char sub[512];
    tk_path(sub, sizeof sub, where, key, 0);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!p || cJSON_IsNull(p)) return tk_fail(src, sub, "missing");
    if (!cJSON_IsObject(p) || cJSON_GetArraySize(p) != 1)
        return tk_fail(src, sub, "expected {\"String\": ...} or {\"Regex\": ...}");
    const cJSON *v = p->child;
    bool literal;
    char sub2[512];
    tk_path(sub2, sizeof sub2, sub, v->string, 0);
    if (strcmp(v->string, "String") == 0) literal = true;
    else if (strcmp(v->string, "Regex") == 0) literal = false;
    else return tk_fail(src, sub2, "unsupported pattern kind (known: String, Regex)");
    if (!cJSON_IsString(v)) return tk_fail(src, sub2, "expected a string");
    return tk_regex_compile(r, src, sub2, v->valuestring, strlen(v->valuestring), literal);
}

/* The matches of the onig crate's find_iter: an empty match right where the previous match
 * ended is skipped by moving one char on. */
int tk_regex_find(tk_regex *r, const char *s, size_t n, tk_spans *out) {
    out->n = 0;
    if (n == 0) return tk_spans_push(out, 0, 0, false);
    const OnigUChar *str = (const OnigUChar *)s, *end = str + n;
    size_t last_end = 0, prev = 0;
    bool have_last = false;
    size_t last_match_end = 0;
    while (last_end <= n) {
        onig_region_clear(r->region);
        int rc = onig_search(r->re, str, end, str + last_end, end, r->region, ONIG_OPTION_NONE);
        if (rc == ONIG_MISMATCH) break;
        if (rc < 0) {
            OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
            onig_error_code_to_str(msg, rc);
            ft_set_error("tokenizer: pattern search failed: %s", (const char *)msg);
            return -1;
        }
        size_t ms = (size_t)r->region->beg[0], me = (size_t)r->region->end[0];
        if (ms == me && have_last && last_match_end == me) {
            last_end += last_end < n ? tk_utf8_len((unsigned char)s[last_end]) : 1;
            continue;
        }
        last_end = me;
        last_match_end = me;
        have_last = true;
        if (prev != ms && tk_spans_push(out, prev, ms, false)) return -1;
        if (tk_spans_push(out, ms, me, true)) return -1;
        prev = me;
    }
    if (prev != n && tk_spans_push(out, prev, n, false)) return -1;
    return 0;
}

int tk_spans_by_char(const char *s, size_t n, bool (*pred)(uint32_t, uint32_t), uint32_t arg,
                     tk_spans *out) {
    out->n = 0;
    if (n == 0) return tk_spans_push(out, 0, 0, false);
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = tk_utf8_decode(s + i, &cp);
        if (pred(cp, arg)) {
            if (last < i && tk_spans_push(out, last, i, false)) return -1;
            if (tk_spans_push(out, i, i + k, true)) return -1;
            last = i + k;
        }
        i += k;
    }
    if (last < n && tk_spans_push(out, last, n, false)) return -1;
    return 0;
}

void tk_regex_free(tk_regex *r) {
    if (r->region) onig_region_free(r->region, 1);
    if (r->re) onig_free(r->re);
    r->region = NULL;
    r->re = NULL;
}
