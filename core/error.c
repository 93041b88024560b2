/* Thread-local error message: core functions never abort on bad input. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ft/tensor.h"

static _Thread_local char last_error[1024];

const char *ft_last_error(void) { return last_error[0] ? last_error : "unknown error"; }

void ft_clear_error(void) { last_error[0] = '\0'; }

void ft_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

char *ft_shape_str(const int64_t *shape, int ndim, char *buf, size_t len) {
    size_t used = 0;
    used += (size_t)snprintf(buf + used, len - used, "[");
    for (int d = 0; d < ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, d ? ",%lld" : "%lld", (long long)shape[d]);
    if (used < len) snprintf(buf + used, len - used, "]");
    return buf;
}

static const char *const dtype_names[FT_NUM_DTYPES] = {"float32", "int64", "bfloat16", "float16", "float64"};
static const size_t dtype_sizes[FT_NUM_DTYPES] = {4, 8, 2, 2, 8};

const char *ft_dtype_name(ft_dtype dtype) {
    return (unsigned)dtype < FT_NUM_DTYPES ? dtype_names[dtype] : "unknown";
}

int ft_dtype_from_name(const char *name, ft_dtype *dtype) {
    static const struct { const char *name; ft_dtype dtype; } aliases[] = {
        {"float", FT_FLOAT32}, {"long", FT_INT64}, {"half", FT_FLOAT16}, {"double", FT_FLOAT64}};
    for (int d = 0; d < FT_NUM_DTYPES; d++)
        if (strcmp(name, dtype_names[d]) == 0) return *dtype = (ft_dtype)d, 0;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(name, aliases[i].name) == 0) return *dtype = aliases[i].dtype, 0;
    return -1;
}

size_t ft_dtype_size(ft_dtype dtype) { return (unsigned)dtype < FT_NUM_DTYPES ? dtype_sizes[dtype] : 4; }
