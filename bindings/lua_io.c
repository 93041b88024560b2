/* Files: ft.save / ft.load (HDF5 checkpoints), ft.safetensors (HuggingFace's format),
 * ft.image.load / ft.image.save (PNG), and the raw helpers the Lua side builds on:
 * ft._idx_read and ft._listdir (ft.data), ft._write_file, ft._read_file, ft._dir_begin,
 * ft._dir_commit, ft._remove_tree and ft._remove_stale (ft.fs, over core/io/atomic.c).
 * Every function taking options checks them with ftl_check_options.
 *
 * Tensors are stored and loaded in their own dtype (float32, bfloat16, float16, float64,
 * int64), bit for bit. Integer tensors are stored and loaded as they are: a checkpoint
 * holds the values the Lua program had (1-based labels stay 1-based), and integer data
 * written by 0-based tools loads unchanged (add 1 yourself where it holds indices). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ft/io.h"
#include "ftl.h"

#define CHECKPOINT_MT "ft.Checkpoint"
#define DIR_MT "ft.Dir"
#define BYTES_MT "ft.Bytes"
#define ST_FILE_MT "ft.SafetensorsFile"
#define MAX_NESTING 64

/* ---- ft.save(path, tensors [, {metadata = {...}}]) -------------------------------- */

/* Adds the tensors of the (nested) table at idx to the table at flat as dotted names;
 * errors name the function op ("save", "safetensors.save"). */
static void flatten(lua_State *L, int idx, int flat, const char *prefix, int depth, const char *op) {
    if (depth > MAX_NESTING)
        luaL_error(L, "ft.%s: tables nested more than %d levels deep at '%s' (a cycle?)", op,
                   MAX_NESTING, prefix);
    luaL_checkstack(L, 8, "tables nested too deeply");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int value = lua_gettop(L), key = value - 1;
        const char *part = NULL;
        if (lua_type(L, key) == LUA_TSTRING)
            part = lua_tostring(L, key);
        else if (lua_isinteger(L, key))   /* {[0] = w} or an array: "layers.1.weight" */
            part = lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, key));
        else
            luaL_error(L, "ft.%s: keys must be strings or integers, got a %s key in %s%s%s",
                       op, luaL_typename(L, key), prefix[0] ? "'" : "the table", prefix, prefix[0] ? "'" : "");
        const char *name = prefix[0] ? lua_pushfstring(L, "%s.%s", prefix, part) : lua_pushstring(L, part);
        if (ftl_to_tensor(L, value)) {
            if (lua_getfield(L, flat, name) != LUA_TNIL)
                luaL_error(L, "ft.%s: the name '%s' is given twice", op, name);
            lua_pop(L, 1);
            lua_pushvalue(L, value);
            lua_setfield(L, flat, name);
        } else if (lua_istable(L, value)) {
            flatten(L, value, flat, name, depth + 1, op);
        } else {
            luaL_error(L, "ft.%s: the value at '%s' is a %s; expected a tensor or a table of tensors",
                       op, name, luaL_typename(L, value));
        }
        lua_settop(L, key);   /* keep the key for lua_next */
    }
}

/* Fills meta[] from the table at idx (strings and numbers); returns the count. The
 * strings stay owned by that table, which the caller keeps on the stack. */
static int read_meta(lua_State *L, int idx, ft_meta **out) {
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        n++;
        lua_pop(L, 1);
    }
    ft_meta *meta = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *meta, 0);
    int k = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "ft.save: metadata keys must be strings, got a %s", luaL_typename(L, -2));
        const char *key = lua_tostring(L, -2);
        ft_meta *m = &meta[k++];
        memset(m, 0, sizeof *m);
        m->key = (char *)key;
        switch (lua_type(L, -1)) {
        case LUA_TSTRING: {
            size_t len;
            m->kind = FT_META_STRING;
            m->str = (char *)lua_tolstring(L, -1, &len);
            if (strlen(m->str) != len)
                luaL_error(L, "ft.save: metadata '%s' contains a zero byte (store binary data as a tensor)", key);
            break;
        }
        case LUA_TNUMBER:
            if (lua_isinteger(L, -1)) {
                m->kind = FT_META_INT;
                m->i = lua_tointeger(L, -1);
            } else {
                m->kind = FT_META_FLOAT;
                m->f = lua_tonumber(L, -1);
            }
            break;
        default:
            luaL_error(L, "ft.save: metadata '%s' is a %s; metadata values must be strings or numbers "
                       "(encode tables as JSON)", key, luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    *out = meta;
    return n;
}

/* m:state_dict() returns the names in order as its second result, so that
 * ft.save(path, m:state_dict()) passes them where the options go: a non-empty array of
 * strings there is that list, and is ignored (the file orders names itself). */
static int is_names_list(lua_State *L, int idx) {
    if (!lua_istable(L, idx)) return 0;
    if (lua_getmetatable(L, idx)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;
    if (n == 0) return 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int ok = lua_isinteger(L, -2) && lua_type(L, -1) == LUA_TSTRING;
        lua_pop(L, 1);
        if (!ok) {
            lua_pop(L, 1);
            return 0;
        }
        count++;
    }
    return count == n;
}

/* ft.save(path, tensors [, {metadata = {k = v}}]): one dataset per tensor, in the
 * tensor's own dtype (float16 as IEEE binary16, which h5py reads as float16; bfloat16 as
 * a float type of its own layout, which h5py reads as float32 with the same values).
 * Metadata values are strings or numbers, stored as attributes on "/" (the option has the
 * name ft.safetensors.save gives it). */
static int l_save(lua_State *L) {
    static const char *const options[] = {"metadata", NULL};
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (is_names_list(L, 3)) lua_settop(L, 2);
    ftl_check_options(L, 3, "ft.save", options);
    int nmeta = 0;
    ft_meta *meta = NULL;
    if (!lua_isnoneornil(L, 3)) {
        int t = lua_getfield(L, 3, "metadata");
        if (t != LUA_TNIL && t != LUA_TTABLE)
            luaL_error(L, "ft.save: option 'metadata' must be a table, got %s", luaL_typename(L, -1));
        if (t == LUA_TTABLE) nmeta = read_meta(L, lua_gettop(L), &meta);
    }
    lua_newtable(L);
    int flat = lua_gettop(L);
    flatten(L, 2, flat, "", 0, "save");

    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, flat)) {
        n++;
        lua_pop(L, 1);
    }
    /* Arrays live in userdata (freed by the collector, also if an error is raised). */
    const char **names = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *names, 0);
    ft_tensor **tensors = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *tensors, 0);
    int k = 0;
    lua_pushnil(L);
    while (lua_next(L, flat)) {
        names[k] = lua_tostring(L, -2);   /* a string key: kept alive by flat */
        tensors[k] = ftl_to_tensor(L, -1);
        k++;
        lua_pop(L, 1);
    }
    if (ft_h5_save(path, n, names, tensors, nmeta, meta) != 0) return ftl_error(L, "save");
    return 0;
}

/* ---- ft.load(path) --> tensors, meta --------------------------------------------- */

static int checkpoint_gc(lua_State *L) {
    ft_checkpoint_free(luaL_checkudata(L, 1, CHECKPOINT_MT));
    return 0;
}

/* ft.load(path) --> flat table name -> tensor, metadata: float datasets in their own
 * dtype (IEEE float16/32/64 as float16/float32/float64, the bfloat16 layout of ft.save as
 * bfloat16; another float layout is an error naming the dataset), integers as int64. */
static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    /* Owned by a userdata so that a Lua error while building the tables leaks nothing. */
    ft_checkpoint *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    luaL_setmetatable(L, CHECKPOINT_MT);
    if (ft_h5_load(path, c) != 0) return ftl_error(L, "load");

    lua_createtable(L, 0, c->n);
    for (int k = 0; k < c->n; k++) {
        ft_tensor *t = c->tensors[k];
        c->tensors[k] = NULL;
        ftl_push_tensor(L, t, "load");
        lua_setfield(L, -2, c->names[k]);
    }
    lua_createtable(L, 0, c->nmeta);
    for (int k = 0; k < c->nmeta; k++) {
        const ft_meta *m = &c->meta[k];
        if (m->kind == FT_META_STRING) lua_pushstring(L, m->str);
        else if (m->kind == FT_META_INT) lua_pushinteger(L, (lua_Integer)m->i);
        else lua_pushnumber(L, m->f);
        lua_setfield(L, -2, m->key);
    }
    ft_checkpoint_free(c);
    return 2;
}

/* ---- ft.safetensors ------------------------------------------------------------------
 * Integer tensors come back as the file stores them: token ids and labels written by
 * HuggingFace are 0-based and stay so (add 1 before using them as Lua indices). */

static int st_file_gc(lua_State *L) {
    ft_st_close(luaL_checkudata(L, 1, ST_FILE_MT));
    return 0;
}

/* Raises the core's error as "ft.safetensors.<op>: ..." (its "safetensors: " dropped). */
static int st_error(lua_State *L, const char *op) {
    const char *msg = ft_last_error();
    const char *prefix = "safetensors: ";
    if (strncmp(msg, prefix, strlen(prefix)) == 0) msg += strlen(prefix);
    return luaL_error(L, "ft.safetensors.%s: %s", op, msg);
}

/* Opens path into a userdata left on the stack (closed by the collector on errors). */
static ft_st_file *st_open(lua_State *L, const char *path, const char *op) {
    ft_st_file *f = lua_newuserdatauv(L, sizeof *f, 0);
    memset(f, 0, sizeof *f);
    luaL_setmetatable(L, ST_FILE_MT);
    if (ft_st_open(path, f) != 0) st_error(L, op);
    return f;
}

static void push_st_meta(lua_State *L, const ft_st_file *f) {
    lua_createtable(L, 0, f->nmeta);
    for (int k = 0; k < f->nmeta; k++) {
        lua_pushstring(L, f->meta[k].str);
        lua_setfield(L, -2, f->meta[k].key);
    }
}

static void push_st_tensor(lua_State *L, const ft_st_file *f, int k, const ft_dtype *float_dtype) {
    ft_tensor *t = ft_st_read(f, k, float_dtype);
    if (!t) st_error(L, "load");
    ftl_push_tensor(L, t, "safetensors.load");
    lua_setfield(L, -2, f->entries[k].name);
}

/* The float dtype named by option 'dtype' of ft.safetensors.load at opts, into *out;
 * false when the option is absent. */
static bool st_load_dtype(lua_State *L, int opts, ft_dtype *out) {
    if (lua_isnoneornil(L, opts)) return false;
    int t = lua_getfield(L, opts, "dtype");
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return false;
    }
    if (t != LUA_TSTRING)
        luaL_error(L, "ft.safetensors.load: option 'dtype' must be a dtype name, got %s", luaL_typename(L, -1));
    const char *name = lua_tostring(L, -1);
    if (ft_dtype_from_name(name, out) != 0)
        luaL_error(L, "ft.safetensors.load: option 'dtype': unknown dtype '%s' (float32, bfloat16, float16 "
                   "or float64)", name);
    if (!ft_dtype_is_float(*out))
        luaL_error(L, "ft.safetensors.load: option 'dtype' converts the float tensors, so it must be a float "
                   "dtype (float32, bfloat16, float16 or float64), got '%s' (integer tensors always load "
                   "as int64)", name);
    lua_pop(L, 1);
    return true;
}

/* ft.safetensors.load(path [, {names = {...}, dtype = "float32", mmap = false}]) --> flat
 * table name -> tensor, metadata. F64/F32/F16/BF16 tensors come in their own dtype
 * (float64, float32, float16, bfloat16), or converted to the float dtype `dtype`; the
 * integer dtypes as int64. With names, only those tensors are decoded. With mmap, the
 * file is mapped copy-on-write and tensors kept in their own dtype (aligned in the file)
 * are views of the mapping, which stays until the last of them is collected. */
static int l_st_load(lua_State *L) {
    static const char *const options[] = {"names", "dtype", "mmap", NULL};
    const char *path = luaL_checkstring(L, 1);
    ftl_check_options(L, 2, "ft.safetensors.load", options);
    int names = 0;
    ft_dtype dtype;
    const ft_dtype *float_dtype = st_load_dtype(L, 2, &dtype) ? &dtype : NULL;
    bool mapped = false;
    if (!lua_isnoneornil(L, 2)) {
        int t = lua_getfield(L, 2, "mmap");
        if (t != LUA_TNIL && t != LUA_TBOOLEAN)
            luaL_error(L, "ft.safetensors.load: option 'mmap' must be a boolean, got %s", luaL_typename(L, -1));
        mapped = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (!lua_isnoneornil(L, 2) && lua_getfield(L, 2, "names") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            luaL_error(L, "ft.safetensors.load: option 'names' must be a list of names, got %s",
                       luaL_typename(L, -1));
        names = lua_gettop(L);
    }
    ft_st_file *f = lua_newuserdatauv(L, sizeof *f, 0);
    memset(f, 0, sizeof *f);
    luaL_setmetatable(L, ST_FILE_MT);
    if ((mapped ? ft_st_open_mapped(path, f) : ft_st_open(path, f)) != 0) st_error(L, "load");
    if (names) {
        lua_Integer n = luaL_len(L, names);
        lua_createtable(L, 0, (int)n);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, names, i);
            const char *name = lua_tostring(L, -1);
            if (!name)
                luaL_error(L, "ft.safetensors.load: option 'names' holds a %s at %I; expected strings",
                           luaL_typename(L, -1), (LUAI_UACINT)i);
            int k = ft_st_find(f, name);
            if (k < 0) luaL_error(L, "ft.safetensors.load: '%s' has no tensor '%s'", path, name);
            lua_pop(L, 1);
            push_st_tensor(L, f, k, float_dtype);
        }
    } else {
        lua_createtable(L, 0, f->n);
        for (int k = 0; k < f->n; k++) push_st_tensor(L, f, k, float_dtype);
    }
    push_st_meta(L, f);
    ft_st_close(f);   /* release the file's hold now rather than at the next collection */
    return 2;
}

/* ft.safetensors.info(path) --> {name = {dtype = "F32", shape = {...}, data_offsets = {b, e}}},
 * metadata: the header only; nothing is decoded. */
static int l_st_info(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    ft_st_file *f = st_open(L, path, "info");
    lua_createtable(L, 0, f->n);
    for (int k = 0; k < f->n; k++) {
        const ft_st_entry *e = &f->entries[k];
        lua_createtable(L, 0, 3);
        lua_pushstring(L, e->dtype);
        lua_setfield(L, -2, "dtype");
        lua_createtable(L, e->ndim, 0);
        for (int d = 0; d < e->ndim; d++) {
            lua_pushinteger(L, (lua_Integer)e->shape[d]);
            lua_rawseti(L, -2, d + 1);
        }
        lua_setfield(L, -2, "shape");
        lua_createtable(L, 2, 0);
        lua_pushinteger(L, (lua_Integer)e->begin);
        lua_rawseti(L, -2, 1);
        lua_pushinteger(L, (lua_Integer)e->end);
        lua_rawseti(L, -2, 2);
        lua_setfield(L, -2, "data_offsets");
        lua_setfield(L, -2, e->name);
    }
    push_st_meta(L, f);
    ft_st_close(f);
    return 2;
}

/* The format's name of a dtype given by its format name ("BF16") or ftlua name
 * ("bfloat16", "half", ...); NULL when it is neither. */
static const char *st_format_dtype(const char *name) {
    static const char *const format[] = {"F64", "F32", "F16", "BF16", "I64"};
    for (size_t k = 0; k < sizeof format / sizeof format[0]; k++)
        if (strcmp(name, format[k]) == 0) return format[k];
    ft_dtype dt;
    if (ft_dtype_from_name(name, &dt) != 0) return NULL;
    switch (dt) {
    case FT_FLOAT64: return "F64";
    case FT_FLOAT32: return "F32";
    case FT_FLOAT16: return "F16";
    case FT_BFLOAT16: return "BF16";
    default: return "I64";
    }
}

/* Fills dtypes[0..n) for the tensors at flat (names[], tensors[]) from option 'dtype' at
 * opts: a string applies to every float tensor (int64 ones stay I64), a table maps names
 * to dtypes; returns false when the option is absent (each tensor in its own dtype). */
static bool st_save_dtypes(lua_State *L, int opts, int n, const char **names, ft_tensor **tensors,
                           const char **dtypes) {
    if (lua_isnoneornil(L, opts)) return false;
    int t = lua_getfield(L, opts, "dtype");
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return false;
    }
    if (t == LUA_TSTRING) {
        const char *name = lua_tostring(L, -1);
        const char *format = st_format_dtype(name);
        if (!format || strcmp(format, "I64") == 0)
            luaL_error(L, "ft.safetensors.save: option 'dtype' must be a float dtype (\"F32\", \"F16\", "
                       "\"BF16\", \"F64\" or float32, float16, bfloat16, float64): it converts the float "
                       "tensors (int64 ones are stored as I64), got '%s'", name);
        for (int k = 0; k < n; k++) dtypes[k] = ft_dtype_is_float(tensors[k]->dtype) ? format : NULL;
    } else if (t == LUA_TTABLE) {
        int map = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, map)) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "ft.safetensors.save: option 'dtype' as a table maps tensor names to dtype "
                           "names, got a %s key holding a %s", luaL_typename(L, -2), luaL_typename(L, -1));
            const char *tname = lua_tostring(L, -2), *dname = lua_tostring(L, -1);
            int found = -1;
            for (int k = 0; k < n && found < 0; k++)
                if (strcmp(names[k], tname) == 0) found = k;
            if (found < 0)
                luaL_error(L, "ft.safetensors.save: option 'dtype' names tensor '%s', which is not among "
                           "the tensors to save", tname);
            const char *format = st_format_dtype(dname);
            dtypes[found] = format ? format : dname;   /* the core names what it cannot store */
            lua_pop(L, 1);
        }
    } else {
        luaL_error(L, "ft.safetensors.save: option 'dtype' must be a dtype name or a table of them by "
                   "tensor name, got %s", luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    return true;
}

/* ft.safetensors.save(path, tensors [, {metadata = {k = "v"}, dtype = ...}]): a flat (or
 * nested, joined with dots) table of tensors, each stored in its own dtype (float32 F32,
 * bfloat16 BF16, float16 F16, float64 F64, int64 I64). dtype = "F32"|"F16"|"BF16"|"F64"
 * (or an ftlua float dtype name) converts every float tensor; dtype = {name = "BF16", ...}
 * picks the dtype of each named tensor. Metadata values are strings (numbers are
 * converted). */
static int l_st_save(lua_State *L) {
    static const char *const options[] = {"metadata", "dtype", NULL};
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (is_names_list(L, 3)) lua_settop(L, 2);
    ftl_check_options(L, 3, "ft.safetensors.save", options);

    /* Metadata as a table of strings, which keeps them alive while the core writes. */
    lua_newtable(L);
    int meta_strings = lua_gettop(L);
    int nmeta = 0;
    if (!lua_isnoneornil(L, 3)) {
        int t = lua_getfield(L, 3, "metadata");
        if (t != LUA_TNIL && t != LUA_TTABLE)
            luaL_error(L, "ft.safetensors.save: option 'metadata' must be a table, got %s", luaL_typename(L, -1));
        if (t == LUA_TTABLE) {
            int src = lua_gettop(L);
            lua_pushnil(L);
            while (lua_next(L, src)) {
                if (lua_type(L, -2) != LUA_TSTRING)
                    luaL_error(L, "ft.safetensors.save: metadata keys must be strings, got a %s", luaL_typename(L, -2));
                const char *key = lua_tostring(L, -2);
                if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
                    luaL_error(L, "ft.safetensors.save: metadata '%s' is a %s; the format stores strings "
                               "(encode tables with ft.json.encode)", key, luaL_typename(L, -1));
                size_t len;
                const char *v = lua_tolstring(L, -1, &len);   /* a copy on the stack: safe */
                if (strlen(v) != len || strlen(key) != lua_rawlen(L, -2))
                    luaL_error(L, "ft.safetensors.save: metadata '%s' contains a zero byte", key);
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_settable(L, meta_strings);
                nmeta++;
            }
        }
        lua_settop(L, meta_strings);
    }
    ft_meta *meta = lua_newuserdatauv(L, (size_t)(nmeta ? nmeta : 1) * sizeof *meta, 0);
    int k = 0;
    lua_pushnil(L);
    while (lua_next(L, meta_strings)) {
        memset(&meta[k], 0, sizeof meta[k]);
        meta[k].kind = FT_META_STRING;
        meta[k].key = (char *)lua_tostring(L, -2);
        meta[k].str = (char *)lua_tostring(L, -1);
        k++;
        lua_pop(L, 1);
    }

    lua_newtable(L);
    int flat = lua_gettop(L);
    flatten(L, 2, flat, "", 0, "safetensors.save");
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, flat)) {
        size_t len;
        const char *name = lua_tolstring(L, -2, &len);
        if (strlen(name) != len) luaL_error(L, "ft.safetensors.save: a tensor name contains a zero byte");
        n++;
        lua_pop(L, 1);
    }
    const char **names = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *names, 0);
    ft_tensor **tensors = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *tensors, 0);
    k = 0;
    lua_pushnil(L);
    while (lua_next(L, flat)) {
        names[k] = lua_tostring(L, -2);   /* a string key: kept alive by flat */
        tensors[k] = ftl_to_tensor(L, -1);
        k++;
        lua_pop(L, 1);
    }
    const char **dtypes = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *dtypes, 0);
    memset(dtypes, 0, (size_t)(n ? n : 1) * sizeof *dtypes);
    bool given = st_save_dtypes(L, 3, n, names, tensors, dtypes);   /* strings kept by the options */
    if (ft_safetensors_save(path, n, names, tensors, nmeta, meta, given ? dtypes : NULL) != 0)
        return st_error(L, "save");
    return 0;
}

/* ---- ft.image ---------------------------------------------------------------------- */

static int l_image_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    ftl_push_tensor(L, ft_png_load(path), "image.load");
    return 1;
}

static int l_image_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    ft_tensor *t = ftl_check_tensor(L, 2);
    if (ft_png_save(path, t) != 0) return ftl_error(L, "image.save");
    return 0;
}

/* ---- raw helpers for ft.data ---------------------------------------------------- */

/* ft._idx_read(path [, {dtype = "float32"|"int64", scale = 1, offset = 0}]) --> tensor of
 * the file's values v as v * scale + offset. */
static int l_idx_read(lua_State *L) {
    static const char *const options[] = {"dtype", "scale", "offset", NULL};
    const char *path = luaL_checkstring(L, 1);
    ftl_check_options(L, 2, "ft._idx_read", options);
    const char *dtype = ftl_opt_string_field(L, 2, "dtype", "float32");
    double scale = ftl_opt_number_field(L, 2, "scale", 1.0);
    double offset = ftl_opt_number_field(L, 2, "offset", 0.0);
    ft_dtype dt;
    if (strcmp(dtype, "float32") == 0) dt = FT_FLOAT32;
    else if (strcmp(dtype, "int64") == 0) dt = FT_INT64;
    else return luaL_error(L, "ft._idx_read: dtype must be 'float32' or 'int64', got '%s'", dtype);
    ftl_push_tensor(L, ft_idx_read(path, dt, scale, offset), "_idx_read");
    return 1;
}

static int dir_gc(lua_State *L) {
    DIR **d = luaL_checkudata(L, 1, DIR_MT);
    if (*d) closedir(*d);
    *d = NULL;
    return 0;
}

/* ft._listdir(path) --> {name = "directory" | "file" | "other", ...} without "." and
 * "..". Symbolic links are followed. */
static int l_listdir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    DIR **d = lua_newuserdatauv(L, sizeof *d, 0);
    *d = NULL;
    luaL_setmetatable(L, DIR_MT);
    *d = opendir(path);
    if (!*d) return luaL_error(L, "ft._listdir: cannot open '%s': %s", path, strerror(errno));
    lua_newtable(L);
    struct dirent *e;
    while ((errno = 0, e = readdir(*d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        const char *full = lua_pushfstring(L, "%s/%s", path, e->d_name);
        struct stat st;
        const char *kind = stat(full, &st) != 0 ? "other"
                         : S_ISDIR(st.st_mode)  ? "directory"
                         : S_ISREG(st.st_mode)  ? "file" : "other";
        lua_pop(L, 1);
        lua_pushstring(L, kind);
        lua_setfield(L, -2, e->d_name);
    }
    if (errno) return luaL_error(L, "ft._listdir: cannot read '%s': %s", path, strerror(errno));
    closedir(*d);
    *d = NULL;
    return 1;
}

/* ---- raw helpers for ft.fs ------------------------------------------------------ */

/* Raises "<op>: <core error>" without a position (these are called from ft/fs.lua,
 * whose line would only confuse). */
static int fs_error(lua_State *L, const char *op) {
    lua_pushfstring(L, "%s: %s", op, ft_last_error());
    return lua_error(L);
}

/* ft._write_file(path, data): atomic (see core/io/atomic.c). */
static int l_write_file(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    if (ft_write_file(path, data, len) != 0) return fs_error(L, "ft.fs.write");
    return 0;
}

static int bytes_gc(lua_State *L) {
    char **p = luaL_checkudata(L, 1, BYTES_MT);
    free(*p);
    *p = NULL;
    return 0;
}

/* ft._read_file(path) --> the whole file as a string. */
static int l_read_file(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    char **box = lua_newuserdatauv(L, sizeof *box, 0);   /* frees the buffer if pushing fails */
    *box = NULL;
    luaL_setmetatable(L, BYTES_MT);
    size_t len;
    *box = ft_read_file(path, 0, &len);
    if (!*box) return fs_error(L, "ft.fs.read");
    lua_pushlstring(L, *box, len);
    free(*box);
    *box = NULL;
    return 1;
}

/* ft._dir_begin(path) --> a fresh empty temporary folder beside path. */
static int l_dir_begin(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    char *tmp = ft_dir_begin(path);
    if (!tmp) return fs_error(L, "ft.fs.replace_dir");
    lua_pushstring(L, tmp);
    free(tmp);
    return 1;
}

/* ft._dir_commit(tmp, path): tmp replaces path as a whole. */
static int l_dir_commit(lua_State *L) {
    const char *tmp = luaL_checkstring(L, 1);
    const char *path = luaL_checkstring(L, 2);
    if (ft_dir_commit(tmp, path) != 0) return fs_error(L, "ft.fs.replace_dir");
    return 0;
}

/* ft._remove_tree(path): a file or a folder with its contents. */
static int l_remove_tree(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    if (ft_remove_tree(path) != 0) return fs_error(L, "ft.fs.remove_tree");
    return 0;
}

/* ft._remove_stale(path) --> how many stale temporaries of path were removed. */
static int l_remove_stale(lua_State *L) {
    lua_pushinteger(L, ft_atomic_clean(luaL_checkstring(L, 1)));
    return 1;
}

void ftl_open_io(lua_State *L) {
    luaL_newmetatable(L, CHECKPOINT_MT);
    lua_pushcfunction(L, checkpoint_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, ST_FILE_MT);
    lua_pushcfunction(L, st_file_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, DIR_MT);
    lua_pushcfunction(L, dir_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, BYTES_MT);
    lua_pushcfunction(L, bytes_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    static const luaL_Reg fns[] = {
        {"save", l_save},
        {"load", l_load},
        {"_idx_read", l_idx_read},
        {"_listdir", l_listdir},
        {"_write_file", l_write_file},
        {"_read_file", l_read_file},
        {"_dir_begin", l_dir_begin},
        {"_dir_commit", l_dir_commit},
        {"_remove_tree", l_remove_tree},
        {"_remove_stale", l_remove_stale},
        {NULL, NULL},
    };
    ftl_register(L, fns);

    static const luaL_Reg image_fns[] = {
        {"load", l_image_load},
        {"save", l_image_save},
        {NULL, NULL},
    };
    lua_createtable(L, 0, 2);
    ftl_register(L, image_fns);
    lua_setfield(L, -2, "image");

    static const luaL_Reg st_fns[] = {
        {"load", l_st_load},
        {"save", l_st_save},
        {"info", l_st_info},
        {NULL, NULL},
    };
    lua_createtable(L, 0, 3);
    ftl_register(L, st_fns);
    lua_setfield(L, -2, "safetensors");
}
