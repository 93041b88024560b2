/* ft.json's decoder: objects become tables, arrays sequences (marked with ft.json.array's
 * metatable, so that an empty one encodes back as []), null the ft.json.null sentinel,
 * numbers written as integers (no fraction or exponent) that fit int64 become Lua
 * integers and all others floats. cJSON validates the text and finds the errors; the
 * numbers and strings themselves are then read from the text, so integers beyond 2^53
 * stay exact and strings may hold "\u0000". */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ft/utf8.h"
#include "lua_json_internal.h"

typedef struct decoder {
    lua_State *L;
    const char *path;   /* the file being read, or NULL for a string */
    const char *text;
    size_t len;
    size_t pos;   /* the next string or number token is at or after pos */
    int ordered;  /* objects record their key order in a metatable's __keys */
} decoder;

int ftl_json_tree_gc(lua_State *L) {
    cJSON **root = luaL_checkudata(L, 1, FTL_JSON_TREE_MT);
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

static void push_value(decoder *d, const cJSON *item) {
    lua_State *L = d->L;
    luaL_checkstack(L, 4, "JSON nested too deeply");
    if (cJSON_IsNull(item)) {
        ftl_json_push_null(L);
    } else if (cJSON_IsBool(item)) {
        lua_pushboolean(L, cJSON_IsTrue(item));
    } else if (cJSON_IsNumber(item)) {
        push_number(d, item->valuedouble);
    } else if (cJSON_IsString(item)) {
        push_string(d);
    } else if (cJSON_IsArray(item)) {
        lua_createtable(L, cJSON_GetArraySize(item), 0);
        luaL_setmetatable(L, FTL_JSON_ARRAY_MT);
        lua_Integer i = 0;
        const cJSON *child;
        cJSON_ArrayForEach(child, item) {
            push_value(d, child);
            lua_rawseti(L, -2, ++i);
        }
    } else {   /* object: each key's string token comes before its value's tokens */
        lua_createtable(L, 0, cJSON_GetArraySize(item));
        int object = lua_gettop(L), keys = 0;
        lua_Integer nkeys = 0;
        if (d->ordered) {
            lua_createtable(L, cJSON_GetArraySize(item), 0);
            keys = lua_gettop(L);
        }
        const cJSON *child;
        cJSON_ArrayForEach(child, item) {
            push_string(d);
            if (keys) {   /* a repeated key keeps its first place, as Python's dict does */
                lua_pushvalue(L, -1);
                if (lua_rawget(L, object) == LUA_TNIL) {
                    lua_pushvalue(L, -2);
                    lua_rawseti(L, keys, ++nkeys);
                }
                lua_pop(L, 1);
            }
            push_value(d, child);
            lua_rawset(L, object);
        }
        if (keys) {
            lua_createtable(L, 0, 1);
            lua_insert(L, keys);    /* the metatable below the keys */
            lua_setfield(L, keys, "__keys");
            lua_setmetatable(L, object);
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
            if (++depth > FTL_JSON_MAX_DEPTH) {
                *at = i;
                return push_printf(L, "nested deeper than %d levels", FTL_JSON_MAX_DEPTH);
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
                    int n = ft_utf8_sequence(text + j, len - j);
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

void ftl_json_decode(lua_State *L, const char *text, size_t len, const char *path, int ordered) {
    decoder d = {L, path, text, len, 0, ordered};
    cJSON **root = lua_newuserdatauv(L, sizeof *root, 0);
    *root = NULL;
    luaL_setmetatable(L, FTL_JSON_TREE_MT);
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
