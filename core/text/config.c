/* Reading tokenizer.json's fields: every type, range and unknown key is checked, and an
 * error names the file and the JSON path of the offending value. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

int tk_fail(const tk_src *src, const char *where, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ft_set_error("tokenizer: %s: %s: %s", src->file, where, msg);
    return -1;
}

const char *tk_path(char *buf, size_t size, const char *where, const char *key, int index) {
    if (key) snprintf(buf, size, "%s.%s", where, key);
    else snprintf(buf, size, "%s[%d]", where, index);
    return buf;
}

static const char *json_kind(const cJSON *v) {
    if (!v) return "nothing";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

int tk_check_object(const tk_src *src, const char *where, const cJSON *obj, const char *const *known) {
    if (!cJSON_IsObject(obj)) return tk_fail(src, where, "expected an object, got %s", json_kind(obj));
    const cJSON *item;
    cJSON_ArrayForEach(item, obj) {
        bool found = false;
        for (const char *const *k = known; *k; k++)
            if (strcmp(item->string, *k) == 0) { found = true; break; }
        if (!found) {
            char list[512];
            size_t used = 0;
            list[0] = '\0';
            for (const char *const *k = known; *k && used < sizeof list; k++)
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", k == known ? "" : ", ", *k);
            char sub[512];
            return tk_fail(src, tk_path(sub, sizeof sub, where, item->string, 0),
                           "unsupported option (known: %s)", list);
        }
    }
    return 0;
}

int tk_get_type(const tk_src *src, const char *where, const cJSON *obj, const char **type) {
    if (!cJSON_IsObject(obj)) return tk_fail(src, where, "expected an object, got %s", json_kind(obj));
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "type");
    char sub[512];
    if (!t) return tk_fail(src, tk_path(sub, sizeof sub, where, "type", 0), "missing");
    if (!cJSON_IsString(t)) return tk_fail(src, tk_path(sub, sizeof sub, where, "type", 0), "expected a string, got %s", json_kind(t));
    *type = t->valuestring;
    return 0;
}

/* The field, NULL when absent or null; fails when required and missing. */
static int field(const tk_src *src, const char *where, const cJSON *obj, const char *key,
                 bool required, const cJSON **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (v && cJSON_IsNull(v)) v = NULL;
    if (!v && required) {
        char sub[512];
        return tk_fail(src, tk_path(sub, sizeof sub, where, key, 0), "missing");
    }
    *out = v;
    return 0;
}

int tk_get_string(const tk_src *src, const char *where, const cJSON *obj, const char *key,
                  bool required, const char **out, size_t *len) {
    const cJSON *v = NULL;
    if (field(src, where, obj, key, required, &v)) return -1;
    if (!v) {
        *out = NULL;
        if (len) *len = 0;
        return 0;
    }
    if (!cJSON_IsString(v)) {
        char sub[512];
        return tk_fail(src, tk_path(sub, sizeof sub, where, key, 0), "expected a string, got %s", json_kind(v));
    }
    *out = v->valuestring;
    if (len) *len = strlen(v->valuestring);
    return 0;
}

int tk_get_bool(const tk_src *src, const char *where, const cJSON *obj, const char *key,
                bool required, bool def, bool *out) {
    const cJSON *v = NULL;
    if (field(src, where, obj, key, required, &v)) return -1;
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v)) {
        char sub[512];
        return tk_fail(src, tk_path(sub, sizeof sub, where, key, 0), "expected a boolean, got %s", json_kind(v));
    }
    *out = cJSON_IsTrue(v);
    return 0;
}

int tk_get_int(const tk_src *src, const char *where, const cJSON *obj, const char *key,
               bool required, int64_t def, int64_t lo, int64_t hi, int64_t *out) {
    const cJSON *v = NULL;
    if (field(src, where, obj, key, required, &v)) return -1;
    if (!v) {
        *out = def;
        return 0;
    }
    char sub[512];
    if (!cJSON_IsNumber(v) || !ft_is_int64_value(v->valuedouble))
        return tk_fail(src, tk_path(sub, sizeof sub, where, key, 0), "expected an integer, got %s", json_kind(v));
    double d = v->valuedouble;
    if (d < (double)lo || d > (double)hi)
        return tk_fail(src, tk_path(sub, sizeof sub, where, key, 0), "%.17g is outside %lld..%lld", d,
                       (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return 0;
}

int tk_get_char(const tk_src *src, const char *where, const cJSON *obj, const char *key,
                bool required, uint32_t def, uint32_t *cp) {
    const char *s;
    size_t len;
    if (tk_get_string(src, where, obj, key, required, &s, &len)) return -1;
    if (!s) {
        *cp = def;
        return 0;
    }
    char sub[512];
    if (len == 0 || tk_utf8_len((unsigned char)s[0]) != len)
        return tk_fail(src, tk_path(sub, sizeof sub, where, key, 0), "expected exactly one character, got \"%s\"", s);
    tk_utf8_decode(s, cp);
    return 0;
}

int tk_get_array(const tk_src *src, const char *where, const cJSON *obj, const char *key,
                 const cJSON **out) {
    const cJSON *v = NULL;
    if (field(src, where, obj, key, true, &v)) return -1;
    if (!cJSON_IsArray(v)) {
        char sub[512];
        return tk_fail(src, tk_path(sub, sizeof sub, where, key, 0), "expected an array, got %s", json_kind(v));
    }
    *out = v;
    return 0;
}

char *tk_strndup(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (!p) {
        ft_set_error("tokenizer: out of memory");
        return NULL;
    }
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
