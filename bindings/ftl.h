/* Shared helpers of the Lua bindings (the `ft` C module).
 *
 * Conventions at the boundary:
 *  - dims and positions are 1-based in Lua, negative counts from the end; ftl_check_dim
 *    turns them into the core's 0-based dims.
 *  - index *values* held by int64 tensors are 1-based in Lua: ftl_index_to_core makes a
 *    0-based copy before calling the core; ftl_index_from_core adds 1 in place to a
 *    fresh result (argmax, max indices).
 *  - errors: a core function returning NULL/-1 becomes a Lua error "ft.<op>: <message>". */
#ifndef FTL_H
#define FTL_H

#include <lauxlib.h>
#include <lua.h>

#include "ft/tensor.h"

#define FTL_TENSOR_MT "ft.Tensor"

/* The tensor at idx (borrowed), or a Lua argument error. */
ft_tensor *ftl_check_tensor(lua_State *L, int idx);
/* The tensor at idx, or NULL if the value is not a tensor. */
ft_tensor *ftl_to_tensor(lua_State *L, int idx);
/* A tensor from idx: a tensor (new reference to it), a number (0-dim float32 scalar) or a
 * nested table of numbers (float32). Raises a Lua error otherwise. Caller releases. */
ft_tensor *ftl_check_tensor_like(lua_State *L, int idx);
/* A new tensor of dtype from a (nested) table of numbers at idx. */
ft_tensor *ftl_table_to_tensor(lua_State *L, int idx, ft_dtype dtype);
/* Closes the tensor handle at idx (as <close> and the collector do): its reference is released
 * and later uses raise "the tensor was closed". Closing twice is harmless. */
void ftl_close_tensor(lua_State *L, int idx);
/* Pushes t as a userdata, taking over the caller's reference. t == NULL raises the
 * core's last error prefixed with "ft.<op>: ". */
void ftl_push_tensor(lua_State *L, ft_tensor *t, const char *op);
/* Storage dtypes (bfloat16, float16, float64) hold values; ops compute in float32. A computing
 * op registered with ftl_register_compute sees each such tensor argument replaced (on the Lua
 * stack) by its float32 conversion, made with the differentiable ft_to_dtype so gradients flow
 * back in the argument's dtype. View, shape and copy ops are registered plainly and keep the
 * dtype; ops that read a half weight themselves (linear, embedding) too. */
void ftl_register_compute(lua_State *L, const luaL_Reg *fns);
/* Replaces the tensor at idx by its float32 conversion when it is bfloat16, float16 or float64;
 * ftl_promote_args does so for every argument from first to the top. */
void ftl_promote_arg(lua_State *L, int idx);
void ftl_promote_args(lua_State *L, int first);
/* Raises "ft.<op>: <ft_last_error()>". */
int ftl_error(lua_State *L, const char *op);
/* 1-based/negative Lua dim at idx -> 0-based dim for a tensor of ndim dims. */
int ftl_check_dim(lua_State *L, int idx, int ndim);
int ftl_opt_dim(lua_State *L, int idx, int ndim, int def0);
/* Reads a shape given either as varargs of integers starting at idx (then nothing, nil or a
 * table) or as one table of integers; anything else (the string "3", 2.5) raises an error
 * "ft.<op>: ..." naming the value and its position. Returns the number of dims. */
int ftl_check_shape(lua_State *L, int idx, int64_t *shape, const char *op);
/* The dtype a name means ("float32"/"float", "int64"/"long", "bfloat16", "float16"/"half",
 * "float64"/"double"), or a Lua error naming the valid ones. */
ft_dtype ftl_check_dtype(lua_State *L, const char *name);
/* Field of an options table at idx (absent/nil table allowed). */
double ftl_opt_number_field(lua_State *L, int idx, const char *key, double def);
int64_t ftl_opt_integer_field(lua_State *L, int idx, const char *key, int64_t def);
const char *ftl_opt_string_field(lua_State *L, int idx, const char *key, const char *def);
/* 1-based int64 index tensor -> new 0-based copy (bounds are checked by the core op). */
ft_tensor *ftl_index_to_core(lua_State *L, const ft_tensor *index, const char *op);
/* Raises "ft.<op>: index <i> out of range 1..<size> (dim <d+1>)" for a 1-based int64 index
 * tensor holding a value outside 1..size; dim0 < 0 leaves the dim out of the message. */
void ftl_check_index_range(lua_State *L, const ft_tensor *index, int64_t size, const char *op, int dim0);
/* Adds 1 in place to a freshly computed 0-based int64 result. */
void ftl_index_from_core(ft_tensor *index);
/* The one options checker. The table at idx (nil or absent is fine) may hold only the names in
 * valid (NULL-terminated); anything else raises "<where>: unknown option 'k' (valid options:
 * ...); did you mean '...'?". A non-table raises "<where>: options must be a table". */
void ftl_check_options(lua_State *L, int idx, const char *where, const char *const *valid);
/* Adds the functions to the table on top of the stack. */
void ftl_register(lua_State *L, const luaL_Reg *fns);

/* Each binding file adds its functions to the module table on top of the stack. */
void ftl_open_tensor(lua_State *L);    /* lua_tensor.c: inspection, views, in-place, the metatable */
void ftl_open_tensor_create(lua_State *L); /* lua_tensor_create.c: ft.tensor, zeros, randn, arange ... */
void ftl_open_runtime(lua_State *L);   /* lua_tensor_runtime.c: seed, threads, rng state, memory */
void ftl_open_ops(lua_State *L);       /* lua_ops.c: arithmetic, reductions, products, indexing */
void ftl_open_autograd(lua_State *L);  /* lua_autograd.c: backward, no_grad, grad mode */
void ftl_open_nn(lua_State *L);        /* lua_nn.c: ft._F, the functional kernels */
void ftl_open_optim(lua_State *L);     /* lua_optim.c: ft._optim, fused optimizer steps */
void ftl_open_io(lua_State *L);        /* lua_io.c: save/load, image, _idx */
void ftl_open_json(lua_State *L);      /* lua_json.c: ft.json */
void ftl_open_options(lua_State *L);   /* lua_options.c: ft.check_options */
void ftl_open_tokenizer(lua_State *L); /* lua_tokenizer.c: ft._tokenizer, HF tokenizer.json */
void ftl_open_unicode(lua_State *L);
void ftl_open_dist(lua_State *L);      /* lua_dist.c: ft._dist, MPI collectives and the gradient reducer */
void ftl_open_quant(lua_State *L);     /* lua_quant.c: ft._quant, NF4 / int8 frozen weights */
void ftl_open_profile(lua_State *L);   /* lua_profile.c: FT_PROFILE=1, ft.profile_report */   /* lua_unicode.c: ft._unicode_*, Python's str case and classes */

int luaopen_ft(lua_State *L);

#endif
