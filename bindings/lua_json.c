/* JSON for Lua: ft.json.decode / encode / read / write, for HuggingFace config files,
 * adapter configs and tokenizer files.
 *
 * Decoding: objects become tables, arrays sequences (marked with ft.json.array's
 * metatable, so that an empty one encodes back as []), null the ft.json.null sentinel,
 * numbers written as integers (no fraction or exponent) that fit int64 become Lua
 * integers and all others floats. cJSON validates the text and finds the errors; the
 * numbers and strings themselves are then read from the text, so integers beyond 2^53
 * stay exact and strings may hold "\u0000".
 *
 * Encoding: a table whose keys are exactly 1..n (or that carries the array marker) is an
 * array, one with string keys an object written with its keys sorted (stable output);
 * anything else (functions, cycles, other keys, NaN) is an error naming where it is. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ft/io.h"
#include "ftl.h"

#define NULL_KEY "ft.json.null"        /* registry: the null sentinel */
#define ARRAY_MT "ft.json.array"       /* registry: the metatable marking arrays */
#define TREE_MT "ft.json.Tree"
#define BUFFER_MT "ft.json.Buffer"
#define MAX_DEPTH CJSON_NESTING_LIMIT  /* what cJSON reads back */
#define JSON_MAX_FILE ((size_t)1 << 30)  /* ft.json.read: tokenizer files are tens of MB */

/* ---- a growing byte buffer owned by a userdata (freed by the collector on errors) --- */

typedef struct buffer {
    char *p;
    size_t n, cap;
} buffer;

static int buffer_gc(lua_State *L) {
    buffer *b = luaL_checkudata(L, 1, BUFFER_MT);
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    return 0;
}

static buffer *buffer_new(lua_State *L) {
    buffer *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BUFFER_MT);
    return b;
}

/* Room for len more bytes (plus a terminating zero). */
static char *buffer_reserve(lua_State *L, buffer *b, size_t len) {
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + len + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) luaL_error(L, "ft.json: out of memory (%zu bytes)", cap);
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->n;
}

static void buffer_add(lua_State *L, buffer *b, const char *s, size_t len) {
    memcpy(buffer_reserve(L, b, len), s, len);
    b->n += len;
}

/* ---- decoding ------------------------------------------------------------------------ */

typedef struct decoder {
    lua_State *L;
    const char *path;   /* the file being read, or NULL for a string */
    const char *text;
    size_t len;
    size_t pos;   /* the next string or number token is at or after pos */
} decoder;

static int tree_gc(lua_State *L) {
    cJSON **root = luaL_checkudata(L, 1, TREE_MT);
    cJSON_Delete(*root);
    *root = NULL;
    return 0;
}

/* Index just past the string token whose opening quote is at i. */
static size_t skip_string(const char *s, size_t len, size_t i) {
    for (i++; i < len; i++) {
        if (s[i] == '\\') i++;
        else if (s[i] == '"') return i + 1;
    }
    return len;
}

/* The next string token (want_string) or number token from the cursor. cJSON lists
 * values in the order of the text, and true/false/null hold no quote, digit or '-', so
 * the k-th string or number of the tree is the k-th such token of the text. */
static size_t next_token(const decoder *d, int want_string) {
    const char *s = d->text;
    size_t i = d->pos;
    while (i < d->len) {
        char c = s[i];
        if (c == '"') {
            if (want_string) return i;
            i = skip_string(s, d->len, i);
        } else if (!want_string && (c == '-' || (c >= '0' && c <= '9'))) {
            return i;
        } else {
            i++;
        }
    }
    /* Cannot happen for text cJSON accepted; an error beats reading past the end. */
    luaL_error(d->L, "ft.json.decode: internal error: the text and cJSON's tree disagree");
    return d->len;
}

static unsigned hex4(const char *s) {
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static void add_utf8(luaL_Buffer *b, unsigned cp) {
    char out[4];
    int n;
    if (cp < 0x80) { out[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { out[0] = (char)(0xc0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
    else if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12); out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
    } else {
        out[0] = (char)(0xf0 | cp >> 18); out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); out[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
    }
    luaL_addlstring(b, out, (size_t)n);
}

/* Pushes the string token at the cursor, escapes decoded (cJSON has checked them). */
static void push_string(decoder *d) {
    size_t open = next_token(d, 1), end = skip_string(d->text, d->len, open);
    const char *s = d->text + open + 1, *stop = d->text + end - 1;
    d->pos = end;
    const char *esc = memchr(s, '\\', (size_t)(stop - s));
    if (!esc) {
        lua_pushlstring(d->L, s, (size_t)(stop - s));
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(d->L, &b);
    luaL_addlstring(&b, s, (size_t)(esc - s));
    for (const char *p = esc; p < stop; p++) {
        if (*p != '\\') {
            luaL_addchar(&b, *p);
            continue;
        }
        char c = *++p;
        switch (c) {
        case 'b': luaL_addchar(&b, '\b'); break;
        case 'f': luaL_addchar(&b, '\f'); break;
        case 'n': luaL_addchar(&b, '\n'); break;
        case 'r': luaL_addchar(&b, '\r'); break;
        case 't': luaL_addchar(&b, '\t'); break;
        case 'u': {
            unsigned cp = hex4(p + 1);
            p += 4;
            /* A surrogate pair (cJSON rejects lone surrogates). */
            if (cp >= 0xd800 && cp <= 0xdbff && p + 6 < stop && p[1] == '\\' && p[2] == 'u') {
                unsigned lo = hex4(p + 3);
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    p += 6;
                }
            }
            add_utf8(&b, cp);
            break;
        }
        default: luaL_addchar(&b, c); break;   /* \" \\ \/ */
        }
    }
    luaL_pushresult(&b);
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? : all of s[0..n), as JSON requires
 * (cJSON also takes "01", "1." and "-.5"). Sets *integral when there is no fraction or
 * exponent. */
static int is_json_number(const char *s, size_t n, int *integral) {
    size_t i = 0;
    *integral = 1;
    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0') i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9') while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    else return 0;
    if (i < n && s[i] == '.') {
        *integral = 0;
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == start) return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        *integral = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i == start) return 0;
    }
    return i == n;
}

static int decode_error(decoder *d, size_t at, const char *what);

/* Pushes the number token at the cursor: an integer when written as one and in range,
 * else cJSON's double. */
static void push_number(decoder *d, double parsed) {
    const char *s = d->text;
    size_t start = next_token(d, 0), i = start;
    while (i < d->len && s[i] && strchr("0123456789+-.eE", s[i])) i++;
    d->pos = i;
    int integral;
    if (!is_json_number(s + start, i - start, &integral)) {
        lua_pushfstring(d->L, "invalid number '%s'", lua_pushlstring(d->L, s + start, i - start));
        decode_error(d, start, lua_tostring(d->L, -1));
    }
    if (integral && i - start < 24) {
        char digits[24];
        memcpy(digits, s + start, i - start);
        digits[i - start] = '\0';
        errno = 0;
        long long v = strtoll(digits, NULL, 10);
        if (errno == 0 && v >= LUA_MININTEGER && v <= LUA_MAXINTEGER) {
            lua_pushinteger(d->L, (lua_Integer)v);
            return;
        }
    }
    lua_pushnumber(d->L, (lua_Number)parsed);
}

static void push_null(lua_State *L) { lua_getfield(L, LUA_REGISTRYINDEX, NULL_KEY); }

static void push_value(decoder *d, const cJSON *item) {
    lua_State *L = d->L;
    luaL_checkstack(L, 4, "JSON nested too deeply");
    if (cJSON_IsNull(item)) {
        push_null(L);
    } else if (cJSON_IsBool(item)) {
        lua_pushboolean(L, cJSON_IsTrue(item));
    } else if (cJSON_IsNumber(item)) {
        push_number(d, item->valuedouble);
    } else if (cJSON_IsString(item)) {
        push_string(d);
    } else if (cJSON_IsArray(item)) {
        lua_createtable(L, cJSON_GetArraySize(item), 0);
        luaL_setmetatable(L, ARRAY_MT);
        lua_Integer i = 0;
        const cJSON *child;
        cJSON_ArrayForEach(child, item) {
            push_value(d, child);
            lua_rawseti(L, -2, ++i);
        }
    } else {   /* object: each key's string token comes before its value's tokens */
        lua_createtable(L, 0, cJSON_GetArraySize(item));
        const cJSON *child;
        cJSON_ArrayForEach(child, item) {
            push_string(d);
            push_value(d, child);
            lua_rawset(L, -3);
        }
    }
}

/* Raises "ft.json.decode: invalid JSON near position P[ (line L, column C)]: <what>"
 * (ft.json.read: '<path>': ... for a file); positions count bytes from 1. The line is
 * given when the text has several. */
static int decode_error(decoder *d, size_t at, const char *what) {
    lua_State *L = d->L;
    const char *prefix = d->path ? lua_pushfstring(L, "ft.json.read: '%s': ", d->path)
                                 : lua_pushliteral(L, "ft.json.decode: ");
    size_t line = 1, col = 1, lines = 1;
    for (size_t i = 0; i < d->len; i++)
        if (d->text[i] == '\n') {
            lines++;
            if (i < at) { line++; col = 1; }
        } else if (i < at) {
            col++;
        }
    if (lines > 1)
        return luaL_error(L, "%sinvalid JSON near position %I (line %I, column %I): %s", prefix,
                          (LUAI_UACINT)(at + 1), (LUAI_UACINT)line, (LUAI_UACINT)col, what);
    return luaL_error(L, "%sinvalid JSON near position %I: %s", prefix, (LUAI_UACINT)(at + 1), what);
}

/* Describes what cJSON stopped at. It reports running out of input at the last byte, so
 * an unterminated string or unclosed brackets are found by scanning the text. */
static const char *describe_failure(const char *text, size_t len, size_t *at) {
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < len && text[j] != '"') j += text[j] == '\\' ? 2 : 1;
            if (j >= len) {
                *at = i;
                return "unterminated string";
            }
            i = j;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    if (depth > 0 && *at + 1 >= len) {
        *at = len;
        return "unexpected end of input (unclosed brackets)";
    }
    return NULL;
}

/* What the text holds at position at: the next few characters, or the end. */
static const char *describe_at(lua_State *L, const char *text, size_t len, size_t at) {
    while (at < len && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r')) at++;
    if (at >= len) return "unexpected end of input";
    char shown[40];
    size_t n = 0;
    for (size_t i = at; i < len && n < 24; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n' || c == '\r') break;
        shown[n++] = c >= 32 && c != 127 ? (char)c : '?';
    }
    shown[n] = '\0';
    return lua_pushfstring(L, "unexpected text '%s%s'", shown, at + n < len ? "..." : "");
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (no overlong forms, surrogates
 * or code points past U+10FFFF), or 0. */
static int utf8_sequence(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (len == 0 || (size_t)len > n) return 0;
    for (int k = 1; k < len; k++)
        if ((s[k] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xf0 && s[1] < 0x90)) return 0;   /* overlong */
    if (c == 0xed && s[1] > 0x9f) return 0;                                   /* surrogate */
    if (c == 0xf4 && s[1] > 0x8f) return 0;                                   /* > U+10FFFF */
    return len;
}

/* lua_pushfstring knows no widths or hex: format with snprintf. */
static const char *push_printf(lua_State *L, const char *fmt, ...) {
    char buf[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return lua_pushstring(L, buf);
}

static int hex_digits(const unsigned char *s, size_t n) {
    if (n < 4) return 0;
    for (int k = 0; k < 4; k++)
        if (!((s[k] >= '0' && s[k] <= '9') || ((s[k] | 0x20) >= 'a' && (s[k] | 0x20) <= 'f'))) return 0;
    return 1;
}

/* What cJSON lets through: checks every string (escapes, \u escapes and surrogate pairs,
 * raw control characters, UTF-8) and the nesting depth. Returns NULL, or what is wrong
 * with *at set to its byte offset. */
static const char *check_text(lua_State *L, const char *text, size_t len, size_t *at) {
    const unsigned char *s = (const unsigned char *)text;
    int depth = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '[' || s[i] == '{') {
            if (++depth > MAX_DEPTH) {
                *at = i;
                return push_printf(L, "nested deeper than %d levels", MAX_DEPTH);
            }
        } else if (s[i] == ']' || s[i] == '}') {
            depth--;
        } else if (s[i] == '"') {
            size_t j = i + 1;
            for (;;) {
                if (j >= len) {
                    *at = i;
                    return "unterminated string";
                }
                unsigned c = s[j];
                if (c == '"') break;
                if (c < 0x20) {
                    *at = j;
                    return push_printf(L, "raw control character 0x%02X in a string (write it as \\u%04X)", (int)c, (int)c);
                }
                if (c >= 0x80) {
                    int n = utf8_sequence(s + j, len - j);
                    if (n == 0) {
                        *at = j;
                        return push_printf(L, "invalid UTF-8 byte 0x%02X in a string", (int)c);
                    }
                    j += (size_t)n;
                    continue;
                }
                if (c != '\\') {
                    j++;
                    continue;
                }
                if (j + 1 >= len) {
                    *at = i;
                    return "unterminated string";
                }
                unsigned e = s[j + 1];
                if (e != 'u') {
                    if (!strchr("\"\\/bfnrt", (int)e) || e == 0) {
                        *at = j;
                        return push_printf(L, "invalid escape '\\%c' in a string", e >= 0x20 && e < 0x7f ? (int)e : '?');
                    }
                    j += 2;
                    continue;
                }
                if (!hex_digits(s + j + 2, len - j - 2)) {
                    *at = j;
                    return "invalid \\u escape (four hex digits expected)";
                }
                unsigned cp = hex4(text + j + 2);
                if (cp >= 0xdc00 && cp <= 0xdfff) {
                    *at = j;
                    return push_printf(L, "lone low surrogate \\u%04X in a string", (int)cp);
                }
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned lo = j + 12 <= len && s[j + 6] == '\\' && s[j + 7] == 'u' &&
                                          hex_digits(s + j + 8, len - j - 8) ? hex4(text + j + 8) : 0;
                    if (lo < 0xdc00 || lo > 0xdfff) {
                        *at = j;
                        return push_printf(L, "lone high surrogate \\u%04X in a string (a low surrogate must follow)", (int)cp);
                    }
                    j += 6;
                }
                j += 6;
            }
            i = j;
        }
    }
    return NULL;
}

/* Decodes text[0..len) and pushes the value; errors name path when given. */
static void decode(lua_State *L, const char *text, size_t len, const char *path) {
    decoder d = {L, path, text, len, 0};
    cJSON **root = lua_newuserdatauv(L, sizeof *root, 0);
    *root = NULL;
    luaL_setmetatable(L, TREE_MT);
    size_t bad_at = 0;
    const char *bad = check_text(L, text, len, &bad_at);
    if (bad) decode_error(&d, bad_at, bad);
    const char *end = NULL;
    *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!*root) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        const char *what = describe_failure(text, len, &at);
        decode_error(&d, at, what ? what : describe_at(L, text, len, at));
    }
    /* cJSON stops after the first value: only whitespace may follow it. */
    size_t rest = (size_t)(end - text);
    while (rest < len && (text[rest] == ' ' || text[rest] == '\t' || text[rest] == '\n' || text[rest] == '\r'))
        rest++;
    if (rest < len) decode_error(&d, rest, describe_at(L, text, len, rest));
    push_value(&d, *root);
    lua_remove(L, -2);   /* the tree: freed at the next collection */
    cJSON_Delete(*root);
    *root = NULL;
}

/* ft.json.decode(str) --> value */
static int l_decode(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    decode(L, text, len, NULL);
    return 1;
}

/* ---- encoding -------------------------------------------------------------------------- */

typedef struct path_part {
    const char *key;      /* an object key, or NULL for an array index */
    size_t keylen;
    lua_Integer index;
} path_part;

typedef struct encoder {
    lua_State *L;
    const char *op;       /* "encode" or "write" */
    buffer *out;
    int indent;           /* spaces per level; 0 writes everything on one line */
    int visiting;         /* stack index of the set of tables being encoded (cycles) */
    int null_idx;         /* stack index of ft.json.null */
    int array_mt;         /* stack index of the array marker */
    path_part path[MAX_DEPTH + 1];
} encoder;

static void add(encoder *e, const char *s, size_t len) { buffer_add(e->L, e->out, s, len); }
static void add_str(encoder *e, const char *s) { add(e, s, strlen(s)); }

static int is_identifier(const char *s, size_t len) {
    if (len == 0 || (s[0] >= '0' && s[0] <= '9')) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return 0;
    }
    return 1;
}

/* Raises "ft.json.<op>: <message> at <path>" with the path in Lua syntax (value.a[2]). */
static int encode_error(encoder *e, int depth, const char *fmt, ...) {
    lua_State *L = e->L;
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "value");
    for (int k = 0; k < depth; k++) {
        const path_part *p = &e->path[k];
        if (!p->key) {
            lua_pushfstring(L, "[%I]", (LUAI_UACINT)p->index);
            luaL_addvalue(&b);
        } else if (is_identifier(p->key, p->keylen)) {
            luaL_addchar(&b, '.');
            luaL_addlstring(&b, p->key, p->keylen);
        } else {
            luaL_addstring(&b, "[\"");
            luaL_addlstring(&b, p->key, p->keylen);
            luaL_addstring(&b, "\"]");
        }
    }
    luaL_pushresult(&b);
    if (depth == 0) return luaL_error(L, "ft.json.%s: %s", e->op, lua_tostring(L, -2));
    return luaL_error(L, "ft.json.%s: %s at %s", e->op, lua_tostring(L, -2), lua_tostring(L, -1));
}

/* Length of the valid UTF-8 sequence at p (before end), or 0. */
static int utf8_len(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (!len || end - p < len) return 0;
    unsigned cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    for (int i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    static const unsigned min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

static void encode_string(encoder *e, const char *s, size_t len, int depth) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    add(e, "\"", 1);
    while (p < end) {
        const unsigned char *run = p;   /* copy plain bytes in runs */
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\' && *p < 0x80) p++;
        if (p > run) add(e, (const char *)run, (size_t)(p - run));
        if (p >= end) break;
        unsigned char c = *p;
        if (c >= 0x80) {
            int n = utf8_len(p, end);
            if (!n) {
                char hex[8];
                snprintf(hex, sizeof hex, "0x%02X", c);
                encode_error(e, depth, "a string is not valid UTF-8 (byte %d is %s)",
                             (int)(p - (const unsigned char *)s) + 1, hex);
            }
            add(e, (const char *)p, (size_t)n);
            p += n;
            continue;
        }
        char esc[8];
        switch (c) {
        case '"': add_str(e, "\\\""); break;
        case '\\': add_str(e, "\\\\"); break;
        case '\b': add_str(e, "\\b"); break;
        case '\f': add_str(e, "\\f"); break;
        case '\n': add_str(e, "\\n"); break;
        case '\r': add_str(e, "\\r"); break;
        case '\t': add_str(e, "\\t"); break;
        default: add(e, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", c)); break;
        }
        p++;
    }
    add(e, "\"", 1);
}

/* The shortest of %.14g .. %.17g that reads back as v, always with a '.' or an exponent
 * so that it decodes as a float again ("1.0", not "1"). */
static void encode_float(encoder *e, double v, int depth) {
    if (isnan(v) || isinf(v))
        encode_error(e, depth, "cannot encode %s (JSON has no NaN or infinity)", isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf");
    char num[48];
    for (int prec = 14; prec <= 17; prec++) {
        snprintf(num, sizeof num, "%.*g", prec, v);
        if (strtod(num, NULL) == v) break;
    }
    char point = localeconv()->decimal_point[0];   /* a locale may print 1,5 */
    int has_mark = 0;
    for (char *c = num; *c; c++) {
        if (*c == point) *c = '.';
        if (*c == '.' || *c == 'e') has_mark = 1;
    }
    add_str(e, num);
    if (!has_mark) add_str(e, ".0");
}

static void newline(encoder *e, int depth) {
    if (!e->indent) return;
    size_t n = (size_t)e->indent * (size_t)depth;
    char *p = buffer_reserve(e->L, e->out, n + 1);
    p[0] = '\n';
    memset(p + 1, ' ', n);
    e->out->n += n + 1;
}

typedef struct key_ref {
    const char *s;
    size_t len;
} key_ref;

static int cmp_keys(const void *pa, const void *pb) {
    const key_ref *a = pa, *b = pb;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->s, b->s, n);
    if (c) return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static void encode_value(encoder *e, int idx, int depth);

static void encode_table(encoder *e, int idx, int depth) {
    lua_State *L = e->L;
    if (depth >= MAX_DEPTH) encode_error(e, depth, "tables nested more than %d levels deep", MAX_DEPTH);
    luaL_checkstack(L, 6, "tables nested too deeply");
    lua_pushvalue(L, idx);
    if (lua_rawget(L, e->visiting) != LUA_TNIL)
        encode_error(e, depth, "a table contains itself (a cycle cannot be encoded)");
    lua_pop(L, 1);

    int marked = 0;
    if (lua_getmetatable(L, idx)) {
        marked = lua_rawequal(L, -1, e->array_mt);
        lua_pop(L, 1);
    }
    /* Classify: keys exactly 1..n -> array, all strings -> object. */
    lua_Integer n = 0, max = 0;
    int nstrings = 0, bad_key = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        n++;
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k > max) max = k;
        } else if (lua_type(L, -1) == LUA_TSTRING) {
            nstrings++;
        }
    }
    int is_array = nstrings == 0 && max == n && (n > 0 || marked);
    if (!is_array && n > 0 && (nstrings != n || marked)) bad_key = 1;
    if (bad_key) {
        /* Name the first key that does not fit. */
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            int t = lua_type(L, -1);
            if (marked ? !(lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1 && lua_tointeger(L, -1) <= n)
                       : t != LUA_TSTRING) {
                const char *what = t == LUA_TNUMBER || t == LUA_TSTRING
                                       ? lua_pushfstring(L, "the key %s", luaL_tolstring(L, -1, NULL))
                                       : lua_pushfstring(L, "a %s key", luaL_typename(L, -1));
                if (marked)
                    encode_error(e, depth, "an array (marked with ft.json.array) has %s; arrays have the keys 1..n",
                                 what);
                encode_error(e, depth, "cannot encode a table with %s: object keys must be strings, and "
                             "arrays have exactly the keys 1..n", what);
            }
        }
    }

    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, e->visiting);
    path_part *part = &e->path[depth];
    if (is_array) {
        add(e, "[", 1);
        for (lua_Integer i = 1; i <= n; i++) {
            if (i > 1) add(e, ",", 1);
            newline(e, depth + 1);
            part->key = NULL;
            part->index = i;
            lua_rawgeti(L, idx, i);
            encode_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
        }
        if (n > 0) newline(e, depth);
        add(e, "]", 1);
    } else {
        /* Sorted keys; the strings stay alive as keys of the table. */
        key_ref *keys = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *keys, 0);
        lua_Integer k = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            keys[k].s = lua_tolstring(L, -1, &keys[k].len);
            k++;
        }
        qsort(keys, (size_t)n, sizeof *keys, cmp_keys);
        add(e, "{", 1);
        for (lua_Integer i = 0; i < n; i++) {
            if (i > 0) add(e, ",", 1);
            newline(e, depth + 1);
            part->key = keys[i].s;
            part->keylen = keys[i].len;
            encode_string(e, keys[i].s, keys[i].len, depth);
            add_str(e, e->indent ? ": " : ":");
            lua_pushlstring(L, keys[i].s, keys[i].len);
            lua_rawget(L, idx);
            encode_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
        }
        if (n > 0) newline(e, depth);
        add(e, "}", 1);
        lua_pop(L, 1);   /* keys */
    }
    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, e->visiting);
}

static void encode_value(encoder *e, int idx, int depth) {
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: add_str(e, "null"); break;
    case LUA_TBOOLEAN: add_str(e, lua_toboolean(L, idx) ? "true" : "false"); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            char num[32];
            add(e, num, (size_t)snprintf(num, sizeof num, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx)));
        } else {
            encode_float(e, lua_tonumber(L, idx), depth);
        }
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        encode_string(e, s, len, depth);
        break;
    }
    case LUA_TTABLE: encode_table(e, idx, depth); break;
    default:
        if (lua_rawequal(L, idx, e->null_idx)) {
            add_str(e, "null");
        } else if (ftl_to_tensor(L, idx)) {
            encode_error(e, depth, "cannot encode a tensor (convert it with t:totable())");
        } else {
            encode_error(e, depth, "cannot encode a %s", luaL_typename(L, idx));
        }
    }
}

/* The indent option at idx: true = 2 spaces, a number = that many, false/nil = none. */
static int indent_option(lua_State *L, int idx, int def, const char *op) {
    static const char *const options[] = {"indent", NULL};
    char where[32];
    snprintf(where, sizeof where, "ft.json.%s", op);
    ftl_check_options(L, idx, where, options);
    if (lua_isnoneornil(L, idx)) return def;
    int t = lua_getfield(L, idx, "indent");
    int indent = def;
    if (t == LUA_TBOOLEAN) indent = lua_toboolean(L, -1) ? 2 : 0;
    else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0 && lua_tointeger(L, -1) <= 16)
        indent = (int)lua_tointeger(L, -1);
    else if (t != LUA_TNIL)
        luaL_error(L, "ft.json.%s: option 'indent' must be a boolean or a number of spaces 0..16", op);
    lua_pop(L, 1);
    return indent;
}

/* Encodes the value at idx into a new buffer left on the stack. */
static buffer *encode(lua_State *L, int idx, int indent, const char *op) {
    idx = lua_absindex(L, idx);
    encoder *e = lua_newuserdatauv(L, sizeof *e, 0);   /* the path table is large */
    memset(e, 0, sizeof *e);
    e->L = L;
    e->op = op;
    e->indent = indent;
    lua_newtable(L);
    e->visiting = lua_gettop(L);
    push_null(L);
    e->null_idx = lua_gettop(L);
    luaL_getmetatable(L, ARRAY_MT);
    e->array_mt = lua_gettop(L);
    e->out = buffer_new(L);
    encode_value(e, idx, 0);
    lua_replace(L, e->visiting - 1);   /* keep only the buffer */
    lua_settop(L, e->visiting - 1);
    return lua_touserdata(L, -1);
}

/* ft.json.encode(value [, {indent = true | n}]) --> string */
static int l_encode(lua_State *L) {
    luaL_checkany(L, 1);
    int indent = indent_option(L, 2, 0, "encode");
    lua_settop(L, 1);
    buffer *b = encode(L, 1, indent, "encode");
    lua_pushlstring(L, b->p ? b->p : "", b->n);
    return 1;
}

/* ---- files ---------------------------------------------------------------------------- */

/* ft.json.read(path) --> value */
static int l_read(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    char *text = ft_read_file(path, JSON_MAX_FILE, &len);
    if (!text) return luaL_error(L, "ft.json.read: %s", ft_last_error());
    /* Owned by a buffer so that a decoding error frees it. */
    buffer *b = buffer_new(L);
    b->p = text;
    b->n = len;
    b->cap = len + 1;
    decode(L, b->p, b->n, path);
    return 1;
}

/* ft.json.write(path, value [, {indent = 2}]): indented by default (as HuggingFace writes
 * config.json), with a final newline; atomic. */
static int l_write(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    int indent = indent_option(L, 3, 2, "write");
    lua_settop(L, 2);
    buffer *b = encode(L, 2, indent, "write");
    buffer_add(L, b, "\n", 1);
    if (ft_write_file(path, b->p, b->n) != 0) return luaL_error(L, "ft.json.write: %s", ft_last_error());
    return 0;
}

/* ---- ft.json.null and ft.json.array ------------------------------------------------------ */

static int null_tostring(lua_State *L) {
    lua_pushliteral(L, "ft.json.null");
    return 1;
}

/* ft.json.array([t]) --> t (or a new table), marked to encode as an array even when empty. */
static int l_array(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, ARRAY_MT);
        if (!lua_rawequal(L, -1, -2)) luaL_error(L, "ft.json.array: the table already has a metatable");
        lua_pop(L, 2);
    }
    luaL_setmetatable(L, ARRAY_MT);
    return 1;
}

void ftl_open_json(lua_State *L) {
    luaL_newmetatable(L, TREE_MT);
    lua_pushcfunction(L, tree_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, BUFFER_MT);
    lua_pushcfunction(L, buffer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, ARRAY_MT);
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {
        {"decode", l_decode},
        {"encode", l_encode},
        {"read", l_read},
        {"write", l_write},
        {"array", l_array},
        {NULL, NULL},
    };
    lua_createtable(L, 0, 6);
    ftl_register(L, fns);

    lua_newuserdatauv(L, 0, 0);   /* the null sentinel: one value, printed as ft.json.null */
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, null_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "ft.json.null");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, NULL_KEY);
    lua_setfield(L, -2, "null");

    lua_setfield(L, -2, "json");
}
