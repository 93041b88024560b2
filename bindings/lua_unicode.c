/* ft._unicode_*: the Unicode character properties and case mappings of Python's str methods,
 * for ft.text.jinja.unicode, from utf8proc's tables (Unicode 15 for utf8proc 2.8).
 *
 * utf8proc keeps one character to one case mappings; Python's str.lower/upper/title use the
 * full ones of SpecialCasing ('ß'.upper() == "SS", 'İ'.lower() == "i̇"). The characters that
 * expand there are the ones whose full case folding, which utf8proc does keep, expands, and
 * their mappings are rebuilt from that folding (lower_full, upper_full, title_full). What
 * still differs from Python 3.11 (Unicode 14), compared over every code point:
 *  - title case of the nine polytonic Greek letters with ypogegrammeni that have no titlecase
 *    character (ᾲ ᾴ ᾷ ῂ ῄ ῇ ῲ ῴ ῷ): "Ὰι" where Python writes "Ὰͅ";
 *  - final sigma: the word-break apostrophes, periods and colons (' . : · ’ ...) that Unicode
 *    counts as case-ignorable are not skipped when looking for the cased letters around 'Σ';
 *  - isdigit: 69 digits with no decomposition ('❶', '⓵', the Ethiopic digits) are not digits;
 *  - characters whose properties changed in Unicode 15 (the modifier letters 'ჼ', 'ꟲ' are
 *    lower case there). */
#include <string.h>

#include <utf8proc.h>

#include "ft/utf8.h"
#include "ftl.h"

#define MAP_MAX 8 /* room for any full case mapping or folding (at most 3 code points) */

static utf8proc_category_t category(int32_t c) { return utf8proc_category(c); }

/* Python's notion of cased (Unicode's Cased: Lowercase, Uppercase or a titlecase letter). */
static int is_cased(int32_t c) {
    return utf8proc_islower(c) || utf8proc_isupper(c) || category(c) == UTF8PROC_CATEGORY_LT;
}

/* Unicode's Case_Ignorable, from the general categories only (see the top of the file). */
static int is_case_ignorable(int32_t c) {
    utf8proc_category_t k = category(c);
    return k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
           k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK;
}

/* c's full case folding (CaseFolding.txt, statuses C and F) into out; its length. */
static int fold(int32_t c, int32_t out[MAP_MAX]) {
    utf8proc_int32_t boundclass = 0;
    utf8proc_ssize_t n = utf8proc_decompose_char(c, out, MAP_MAX, UTF8PROC_CASEFOLD, &boundclass);
    if (n < 1 || n > MAP_MAX) { out[0] = c; return 1; }
    return (int)n;
}

static int same(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0;
}

/* Python's full lowercase of c (final sigma aside). The simple mapping is it, except where
 * the simple lowercase does not fold as c does ('İ' -> 'i' loses the dot): there c's folding
 * ("i̇") is its full lowercase. */
static int lower_full(int32_t c, int32_t out[MAP_MAX]) {
    int32_t simple = utf8proc_tolower(c), of_simple[MAP_MAX];
    int n = fold(c, out);
    if (same(out, n, of_simple, fold(simple, of_simple))) {
        out[0] = simple;
        return 1;
    }
    return n;
}

/* Python's full uppercase of c: a character that is not upper case and whose folding expands
 * ('ß' -> "ss", 'ŉ' -> "ʼn", 'ᾳ' -> "αι") has the upper case of that folding ("SS", "ʼN",
 * "ΑΙ"); any other has its simple mapping. */
static int upper_full(int32_t c, int32_t out[MAP_MAX]) {
    int n = fold(c, out);
    if (n > 1 && !utf8proc_isupper(c)) {
        for (int i = 0; i < n; i++) out[i] = utf8proc_toupper(out[i]);
        return n;
    }
    out[0] = utf8proc_toupper(c);
    return 1;
}

/* Python's full titlecase of c: as upper_full, but only the first cased character of the
 * folding is raised ('ß' -> "Ss", 'ŉ' -> "ʼN"), and a titlecase character wins ('ᾳ' -> 'ᾼ'). */
static int title_full(int32_t c, int32_t out[MAP_MAX]) {
    int32_t simple = utf8proc_totitle(c);
    int n = fold(c, out);
    if (n > 1 && !utf8proc_isupper(c) && category(c) != UTF8PROC_CATEGORY_LT &&
        category(simple) != UTF8PROC_CATEGORY_LT) {
        for (int i = 0; i < n; i++)
            if (is_cased(out[i])) {
                out[i] = utf8proc_totitle(out[i]);
                break;
            }
        return n;
    }
    out[0] = simple;
    return 1;
}

/* ---- strings ------------------------------------------------------------------------ */

/* A string's code points, decoded once (final sigma looks both ways). */
typedef struct text {
    int32_t *cp;
    size_t n;
} text;

/* Decodes the string argument 1 of ft.<op> into a buffer owned by the Lua stack; invalid
 * UTF-8 is an error naming the byte. */
static text check_text(lua_State *L, const char *op) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    text t = {lua_newuserdatauv(L, (len + 1) * sizeof(int32_t), 0), 0};
    for (size_t i = 0; i < len;) {
        int k = ft_utf8_sequence(s + i, len - i);
        if (k == 0) luaL_error(L, "ft.%s: invalid UTF-8 at byte %I", op, (lua_Integer)(i + 1));
        utf8proc_iterate((const utf8proc_uint8_t *)s + i, k, &t.cp[t.n++]);
        i += (size_t)k;
    }
    return t;
}

static void add_cps(luaL_Buffer *b, const int32_t *cps, int n) {
    for (int i = 0; i < n; i++) {
        char *p = luaL_prepbuffsize(b, 4);
        luaL_addsize(b, (size_t)utf8proc_encode_char(cps[i], (utf8proc_uint8_t *)p));
    }
}

/* Whether the capital sigma at t.cp[i] ends a word: a cased letter before it and none after
 * it, case-ignorable characters skipped (Unicode's Final_Sigma, as CPython tests it). */
static int final_sigma(text t, size_t i) {
    size_t j = i;
    while (j > 0 && is_case_ignorable(t.cp[j - 1])) j--;
    if (j == 0 || !is_cased(t.cp[j - 1])) return 0;
    j = i + 1;
    while (j < t.n && is_case_ignorable(t.cp[j])) j++;
    return j == t.n || !is_cased(t.cp[j]);
}

/* Python's lower case of t.cp[i] in its context (final sigma). */
static int lower_at(text t, size_t i, int32_t out[MAP_MAX]) {
    if (t.cp[i] == 0x3A3) {
        out[0] = final_sigma(t, i) ? 0x3C2 : 0x3C3;
        return 1;
    }
    return lower_full(t.cp[i], out);
}

typedef enum { LOWER, UPPER, TITLE, CAPITALIZE, SWAPCASE } case_op;

/* Pushes the string argument 1 mapped as Python's str.<op>() maps it. */
static int map_case(lua_State *L, case_op op, const char *name) {
    text t = check_text(L, name);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int prev_cased = 0;
    for (size_t i = 0; i < t.n; i++) {
        int32_t c = t.cp[i], out[MAP_MAX];
        int n = 1;
        out[0] = c;
        switch (op) {
        case LOWER: n = lower_at(t, i, out); break;
        case UPPER: n = upper_full(c, out); break;
        case TITLE:
            n = prev_cased ? lower_at(t, i, out) : title_full(c, out);
            prev_cased = is_cased(c);
            break;
        case CAPITALIZE: n = i == 0 ? title_full(c, out) : lower_at(t, i, out); break;
        case SWAPCASE:
            if (utf8proc_isupper(c)) n = lower_at(t, i, out);
            else if (utf8proc_islower(c)) n = upper_full(c, out);
            break;
        }
        add_cps(&b, out, n);
    }
    luaL_pushresult(&b);
    return 1;
}

/* ft._unicode_lower(s) --> Python's s.lower(): full lowercase mappings, 'Σ' as 'ς' at the end
 * of a word. Invalid UTF-8 is an error. */
static int l_lower(lua_State *L) { return map_case(L, LOWER, "_unicode_lower"); }

/* ft._unicode_upper(s) --> Python's s.upper(): full uppercase mappings ('ß' -> "SS").
 * Invalid UTF-8 is an error. */
static int l_upper(lua_State *L) { return map_case(L, UPPER, "_unicode_upper"); }

/* ft._unicode_title(s) --> Python's s.title(): a character after a cased one lowered, any
 * other given its titlecase ("ǆemal" -> "ǅemal", "they're" -> "They'Re"). Invalid UTF-8 is
 * an error. */
static int l_title(lua_State *L) { return map_case(L, TITLE, "_unicode_title"); }

/* ft._unicode_capitalize(s) --> Python's s.capitalize(): the first character in titlecase,
 * the rest lowered. Invalid UTF-8 is an error. */
static int l_capitalize(lua_State *L) { return map_case(L, CAPITALIZE, "_unicode_capitalize"); }

/* ft._unicode_swapcase(s) --> Python's s.swapcase(): upper case characters lowered, lower case
 * ones raised (full mappings), the rest as they are. Invalid UTF-8 is an error. */
static int l_swapcase(lua_State *L) { return map_case(L, SWAPCASE, "_unicode_swapcase"); }

/* ---- code points -------------------------------------------------------------------- */

static int32_t check_cp(lua_State *L, const char *op) {
    lua_Integer cp = luaL_checkinteger(L, 1);
    if (cp < 0 || cp > 0x10FFFF)
        luaL_error(L, "ft.%s: code point %I out of range 0..0x10FFFF", op, cp);
    return (int32_t)cp;
}

/* ft._unicode_category(cp) --> the general category of code point cp, as Python's
 * unicodedata.category writes it ("Lu", "Nd", "Zs" ...; "Cn" when unassigned). */
static int l_category(lua_State *L) {
    lua_pushstring(L, utf8proc_category_string(check_cp(L, "_unicode_category")));
    return 1;
}

/* ft._unicode_case(cp) --> "upper", "lower", "title" or nil: whether cp is Uppercase,
 * Lowercase (Unicode's derived properties, which Python's isupper and islower test) or a
 * titlecase letter ('ǅ'), or none of them (not cased). */
static int l_case(lua_State *L) {
    int32_t c = check_cp(L, "_unicode_case");
    if (utf8proc_isupper(c)) lua_pushliteral(L, "upper");
    else if (utf8proc_islower(c)) lua_pushliteral(L, "lower");
    else if (category(c) == UTF8PROC_CATEGORY_LT) lua_pushliteral(L, "title");
    else lua_pushnil(L);
    return 1;
}

/* ft._unicode_isspace(cp) --> whether cp is whitespace for Python's str.isspace: bidirectional
 * class WS, B or S, or category Zs. */
static int l_isspace(lua_State *L) {
    int32_t c = check_cp(L, "_unicode_isspace");
    utf8proc_propval_t bidi = utf8proc_get_property(c)->bidi_class;
    lua_pushboolean(L, bidi == UTF8PROC_BIDI_CLASS_WS || bidi == UTF8PROC_BIDI_CLASS_B ||
                           bidi == UTF8PROC_BIDI_CLASS_S || category(c) == UTF8PROC_CATEGORY_ZS);
    return 1;
}

/* ft._unicode_isdigit(cp) --> whether cp is a digit for Python's str.isdigit: a decimal digit
 * (Nd), or another number (No) whose compatibility decomposition holds one decimal digit and
 * is not a fraction ('²', '①', '⒈'). utf8proc has no Numeric_Type, so the digits without a
 * decomposition ('❶', '⓵', the Ethiopic digits) are missed. */
static int l_isdigit(lua_State *L) {
    int32_t c = check_cp(L, "_unicode_isdigit");
    utf8proc_category_t k = category(c);
    int digit = k == UTF8PROC_CATEGORY_ND;
    if (k == UTF8PROC_CATEGORY_NO &&
        utf8proc_get_property(c)->decomp_type != UTF8PROC_DECOMP_TYPE_FRACTION) {
        int32_t d[32];
        utf8proc_int32_t boundclass = 0;
        utf8proc_ssize_t n = utf8proc_decompose_char(c, d, 32, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, &boundclass);
        int decimals = 0;
        for (utf8proc_ssize_t i = 0; i < n && i < 32; i++)
            if (category(d[i]) == UTF8PROC_CATEGORY_ND) decimals++;
        digit = decimals == 1;
    }
    lua_pushboolean(L, digit);
    return 1;
}

void ftl_open_unicode(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"_unicode_lower", l_lower},       {"_unicode_upper", l_upper},
        {"_unicode_title", l_title},       {"_unicode_capitalize", l_capitalize},
        {"_unicode_swapcase", l_swapcase}, {"_unicode_category", l_category},
        {"_unicode_case", l_case},         {"_unicode_isspace", l_isspace},
        {"_unicode_isdigit", l_isdigit},   {NULL, NULL},
    };
    ftl_register(L, fns);
}
