/* Thread-local error message: core functions never abort on bad input. */
#include <stdarg.h>
#include <stdio.h>

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

const char *ft_dtype_name(ft_dtype dtype) { return dtype == FT_INT64 ? "int64" : "float32"; }

size_t ft_dtype_size(ft_dtype dtype) { return dtype == FT_INT64 ? 8 : 4; }
