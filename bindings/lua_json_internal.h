/* Internal to the bindings' JSON files: the functions of ft.json and their registration
 * (lua_json.c), the decoder (lua_json_decode.c) and the encoder (lua_json_encode.c). */
#ifndef FTL_JSON_INTERNAL_H
#define FTL_JSON_INTERNAL_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "ftl.h"

#define FTL_JSON_NULL_KEY "ft.json.null"       /* registry: the null sentinel */
#define FTL_JSON_ARRAY_MT "ft.json.array"      /* registry: the metatable marking arrays */
#define FTL_JSON_TREE_MT "ft.json.Tree"        /* a cJSON tree being decoded */
#define FTL_JSON_MAX_DEPTH CJSON_NESTING_LIMIT /* what cJSON reads back */

/* A growing byte buffer owned by a userdata (freed by the collector on errors). */
typedef struct ftl_json_buffer {
    char *p;
    size_t n, cap;
} ftl_json_buffer;

/* Pushes a new empty buffer. */
ftl_json_buffer *ftl_json_buffer_new(lua_State *L);
/* Room for len more bytes (plus a terminating zero); a Lua error when out of memory. */
char *ftl_json_buffer_reserve(lua_State *L, ftl_json_buffer *b, size_t len);
void ftl_json_buffer_add(lua_State *L, ftl_json_buffer *b, const char *s, size_t len);
/* Pushes ft.json.null. */
void ftl_json_push_null(lua_State *L);

/* lua_json_decode.c: decodes text[0..len) and pushes the value; errors name path when
 * given ("ft.json.read: '<path>': ..."), else start "ft.json.decode: ". With ordered, each
 * object gets a metatable whose __keys array lists its keys in the text's order (the
 * encoder writes such an object in that order). */
void ftl_json_decode(lua_State *L, const char *text, size_t len, const char *path, int ordered);
/* The __gc of the FTL_JSON_TREE_MT userdata that holds the tree while it is decoded. */
int ftl_json_tree_gc(lua_State *L);

/* lua_json_encode.c: encodes the value at idx, indent spaces per level (0: one line),
 * into a new buffer left on the stack; errors start "ft.json.<op>: ". */
ftl_json_buffer *ftl_json_encode(lua_State *L, int idx, int indent, const char *op);

#endif
