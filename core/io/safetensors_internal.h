/* Internal to core/io's safetensors files: the reader (safetensors.c), the header
 * parser and validator (safetensors_header.c), the writer (safetensors_write.c) and the
 * dtypes of the format with their conversions to and from the runtime's
 * (safetensors_dtype.c). */
#ifndef FT_IO_SAFETENSORS_INTERNAL_H
#define FT_IO_SAFETENSORS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ft/io.h"

/* The format is little-endian and the values are copied as they are. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors assumes a little-endian host");

/* ---- safetensors_dtype.c: the dtypes -------------------------------------------------- */

typedef enum {
    ST_F64, ST_F32, ST_F16, ST_BF16,
    ST_I64, ST_I32, ST_I16, ST_I8, ST_U64, ST_U32, ST_U16, ST_U8, ST_BOOL,
    ST_OTHER   /* known to the format, not decoded here (float8/6/4, complex) */
} st_code;

typedef struct st_dtype {
    const char *name;
    int bits;
    st_code code;
} st_dtype;

/* The names of every dtype of the format, for messages. */
#define ST_KNOWN_DTYPES "F64, F32, F16, BF16, I64, I32, I16, I8, U64, U32, U16, U8, BOOL, " \
                        "F8_E5M2, F8_E4M3, F8_E8M0, F6_E2M3, F6_E3M2, F4, C64"

/* The dtype called name (every dtype of the format, so that sizes can be validated for
 * all of them), or NULL. */
const st_dtype *st_find_dtype(const char *name);
/* Whether code is one of the float dtypes (F64, F32, F16, BF16; the others are integers). */
int st_is_float(st_code code);
/* Bytes per element of a decoded code. */
int st_code_size(st_code code);
/* The code a tensor of dtype is stored as by default (float32 F32, bfloat16 BF16, float16
 * F16, float64 F64, int64 I64); -1 for no such dtype. */
int st_code_of(ft_dtype dtype, st_code *code);
/* The dtype a tensor read from code has: the float codes their own, integers int64. */
ft_dtype st_tensor_dtype(st_code code);
/* Converts n values of float code `from` at src to float code `to` at out (either may be
 * unaligned): the same code is a copy; otherwise rounded to nearest even (float64 to a
 * 16-bit code through float32, as ft_copy_ and PyTorch do), NaN to PyTorch's NaN of the
 * target (0x7E00 for F16, 0x7FC0 for BF16). */
void st_convert_float(st_code from, const unsigned char *src, st_code to, unsigned char *out, int64_t n);
/* Decodes n values of an integer code at src (any alignment) into int64 (U64 as stored:
 * values past INT64_MAX come out negative; BOOL as 0 or 1). */
void st_decode_int(st_code code, const unsigned char *src, int64_t n, int64_t *out);

/* ---- safetensors_header.c: the header --------------------------------------------------- */

/* Parses and validates the header text header[0..len) of the file at path as the
 * reference implementation does (known dtypes, sizes matching shapes, tensors covering
 * f->data_size bytes of data exactly, no duplicate names or keys) and fills f's entries
 * (sorted by offsets) and metadata. Returns 0, or -1 with the error set; f's contents
 * are then freed by ft_st_close. */
int st_parse_header(const char *path, const char *header, size_t len, ft_st_file *f);

/* qsort comparator of C strings (an array of const char *). */
static inline int st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

#endif
