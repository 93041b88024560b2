/* File formats: HDF5 checkpoints, PNG images, IDX(.gz) arrays, and atomic writes.
 *
 * Every function returns 0 / a new tensor reference on success and -1 / NULL with
 * ft_set_error() on failure; the message names the file. Writers are atomic: the data
 * goes to a temporary file in the target's folder, which is fsynced and renamed over
 * the target only when complete, so a failed write leaves any previous file untouched. */
#ifndef FT_IO_H
#define FT_IO_H

#include <stddef.h>
#include <stdint.h>

#include "ft/tensor.h"

/* ---- atomic writes and whole-file reads (core/io/atomic.c) ------------------------ */
/* A file is written to "<path>.tmp-<pid>-<n>" beside path, fsynced, renamed over path,
 * and the folder fsynced. Opening first removes the temporary files (and folders) of
 * path left by processes that no longer exist. */
typedef struct ft_atomic_file {
    char *path;   /* final destination */
    char *tmp;    /* temporary file next to it */
    int fd;       /* open for writing on tmp */
} ft_atomic_file;

/* Creates the temporary file. Error: "cannot write '<path>': <reason>". */
int ft_atomic_open(ft_atomic_file *f, const char *path);
/* fsyncs and closes the temporary file, renames it over path and fsyncs the folder.
 * On failure the temporary file is removed. Always releases f's resources. */
int ft_atomic_commit(ft_atomic_file *f);
/* Removes the temporary file and releases f's resources (after a failed write). */
void ft_atomic_abort(ft_atomic_file *f);
/* Writes size bytes of data to path atomically (open, write, commit). */
int ft_write_file(const char *path, const void *data, size_t size);
/* Removes path's "<path>.tmp-<pid>-<n>" files and folders whose process no longer
 * exists; returns how many were removed. Never fails (what it cannot remove stays). */
int ft_atomic_clean(const char *path);
/* Removes a file, or a folder with everything in it (symbolic links are removed, not
 * followed). A missing path is not an error. */
int ft_remove_tree(const char *path);

/* Replacing a folder as a whole: ft_dir_begin removes path's stale temporaries and
 * creates a fresh empty folder "<path>.tmp-<pid>-<n>" beside path (returned, malloc'd);
 * the caller fills it; ft_dir_commit fsyncs its contents and exchanges it with path in
 * one rename (or renames it to path when there is none), then removes the old contents.
 * path keeps its old contents until the exchange; on failure the caller removes tmp
 * with ft_remove_tree. Error: "cannot replace folder '<path>': <reason>". */
char *ft_dir_begin(const char *path);
int ft_dir_commit(const char *tmp, const char *path);

/* Reads a whole file into a malloc'd buffer with a terminating zero (not counted in
 * *size). max_size > 0 refuses larger files before allocating. Errors: "cannot open
 * '<path>': <reason>", "cannot read '<path>': <reason>". */
char *ft_read_file(const char *path, size_t max_size, size_t *size);

/* ---- HDF5 checkpoints (core/io/hdf5.c) --------------------------------------- */
/* Metadata: attributes on the root group "/". */
typedef enum { FT_META_STRING, FT_META_INT, FT_META_FLOAT } ft_meta_kind;
typedef struct ft_meta {
    char *key;
    ft_meta_kind kind;
    char *str;      /* FT_META_STRING */
    int64_t i;      /* FT_META_INT */
    double f;       /* FT_META_FLOAT */
} ft_meta;

/* The contents of a checkpoint: dotted names with their tensors, and metadata. */
typedef struct ft_checkpoint {
    int n;
    char **names;          /* "layer1.0.conv1.weight" */
    ft_tensor **tensors;   /* contiguous, of any dtype */
    int nmeta;
    ft_meta *meta;
} ft_checkpoint;

#define FT_CHECKPOINT_FORMAT "ftlua-1"   /* value of the "format" attribute on "/" */

/* Writes one dataset per tensor at the path of its dotted name (dots become groups), in
 * the tensor's own dtype, uncompressed, plus the attribute format = "ftlua-1" and the given
 * metadata on "/". float32 and float64 are HDF5's IEEE types, int64 a little-endian
 * 64-bit integer; float16 is IEEE binary16 built from a float type (sign bit 15, 5
 * exponent bits at 10, bias 15, 10 mantissa bits: what h5py reads as numpy float16) and
 * bfloat16 a float type of its own layout (sign bit 15, 8 exponent bits at 7, bias 127,
 * 7 mantissa bits; h5py reads it as float32, exactly). Names must be non-empty, without
 * '/', empty components or a name that is a group of another ("a" and "a.b"); the key
 * "format" is reserved. */
int ft_h5_save(const char *path, int n, const char *const *names, ft_tensor *const *tensors,
               int nmeta, const ft_meta *meta);
/* Reads every dataset of the file (any nesting): float datasets in their own dtype, bit
 * for bit (IEEE float16, float32 and float64, either byte order, and the bfloat16 layout
 * ft_h5_save writes; a float of any other layout is an error naming the dataset and the
 * layout), integer datasets (8 to 64 bits, signed or not) as int64; and the scalar
 * string/number attributes of "/" as metadata. Fills *out (free with ft_checkpoint_free). */
int ft_h5_load(const char *path, ft_checkpoint *out);
void ft_checkpoint_free(ft_checkpoint *c);

/* ---- PNG images (core/io/png.c) ---------------------------------------------- */
/* Loading limits: width and height, and channels x height x width of the tensor (256 MB
 * of float32). A header claiming more pixel data than the file can hold (deflate
 * expands at most 1032:1) is refused before anything is allocated. */
#define FT_PNG_MAX_SIDE 32768
#define FT_PNG_MAX_VALUES ((int64_t)1 << 26)
/* Any PNG (1..16-bit gray, gray+alpha, RGB, RGBA, palette; tRNS becomes alpha) as a
 * float32 tensor [C,H,W] with values in [0,1]; C = 1, 2, 3 or 4. */
ft_tensor *ft_png_load(const char *path);
/* Saves a float32 [C,H,W] (C = 1..4) or [H,W] tensor with values in [0,1] (clamped,
 * rounded) as an 8-bit PNG. */
int ft_png_save(const char *path, const ft_tensor *t);

/* ---- IDX arrays (core/io/idx.c) ---------------------------------------------- */
/* The most data (bytes) an IDX file, or what its gzip stream inflates to, may hold. */
#define FT_IDX_MAX_BYTES ((size_t)1 << 31)
/* Reads an IDX file (gzip-compressed or plain) of any element type (ubyte, byte,
 * short, int, float, double) into a tensor of the header's shape with dtype `dtype`,
 * each value v stored as v * scale + offset. The data size must be what the header
 * says (no less, no more: trailing bytes, also after the gzip stream, are refused), a
 * header claiming more than the compressed file can hold is refused before inflating,
 * and the data is at most FT_IDX_MAX_BYTES. */
ft_tensor *ft_idx_read(const char *path, ft_dtype dtype, double scale, double offset);

/* ---- safetensors (core/io/safetensors.c) ------------------------------------- */
/* HuggingFace's format: an 8-byte little-endian header length N, N bytes of JSON
 *   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"<key>": "<string>", ...}}
 * then the data buffer, which the tensors cover exactly (no holes, no overlaps); the
 * offsets count bytes from the start of that buffer. Values are little-endian.
 *
 * Reading gives F64, F32, F16 and BF16 tensors in their own dtype (float64, float32,
 * float16, bfloat16), bit for bit, unless a float dtype to convert them to is given.
 * The integer dtypes I64/I32/I16/I8/U64/U32/U16/U8/BOOL become int64 (the one integer
 * dtype of the runtime) whatever is asked for floats: values as stored (0-based token
 * ids stay 0-based), BOOL as 0/1, a U64 value past INT64_MAX is an error. Every error
 * message starts with "safetensors: " and names the file and, where it applies, the
 * tensor. */

/* One tensor of a header, as the file describes it. */
typedef struct ft_st_entry {
    char *name;
    char dtype[12];                 /* "F32", "BF16", "I64", ... as in the file */
    int ndim;
    int64_t shape[FT_MAX_DIMS];
    int64_t begin, end;             /* data_offsets: byte range in the data buffer */
} ft_st_entry;

/* The mapping of a file, shared (refcounted) by an ft_st_file and the tensors made over it. */
typedef struct ft_st_mapping ft_st_mapping;

/* An open file with a validated header. The file stays mapped until ft_st_close and until
 * the last tensor made over the mapping is released, so tensors can be decoded one at a time. */
typedef struct ft_st_file {
    char *path;
    int n;
    ft_st_entry *entries;           /* in the order of their data in the file */
    int nmeta;
    ft_meta *meta;                  /* "__metadata__": FT_META_STRING entries */
    const unsigned char *data;      /* the data buffer, data_size bytes */
    int64_t data_size;
    ft_st_mapping *mapping;         /* the whole file */
} ft_st_file;

/* Maps the file read-only and validates the whole header against the file's size;
 * decodes nothing. Tensors read from it are copies. On failure f needs no ft_st_close. */
int ft_st_open(const char *path, ft_st_file *f);
/* As ft_st_open, but the mapping is private and writable (MAP_PRIVATE, copy-on-write):
 * ft_st_read returns tensors over it instead of copies where it can, and writing such a
 * tensor changes this process's pages, never the file. Every check of ft_st_open runs
 * before any tensor is made. Caveat of every mapping: a file truncated (or rewritten in
 * place) by another process while mapped shows the change in the pages not yet touched,
 * and touching a page past the new end kills the process with SIGBUS. ftlua's own writers
 * replace files by renaming, which leaves a mapped file intact. */
int ft_st_open_mapped(const char *path, ft_st_file *f);
/* Entry k as a new contiguous tensor: float entries in float_dtype when it is given (a
 * float dtype: converted while reading, rounded to nearest even), in their own dtype when
 * NULL; integer entries as int64. From a file opened with ft_st_open_mapped, an entry kept
 * in its own dtype (and I64) whose data is aligned to its element size in the file is a
 * tensor over the mapping (holding it until released); others are copies. */
ft_tensor *ft_st_read(const ft_st_file *f, int k, const ft_dtype *float_dtype);
/* Index of the entry called name, or -1 (no error set). */
int ft_st_find(const ft_st_file *f, const char *name);
/* Frees f's contents and drops its hold on the mapping (unmapped once no tensor uses it). */
void ft_st_close(ft_st_file *f);

/* Reads every tensor and the metadata of a file into *out (free with ft_checkpoint_free):
 * float_dtype and mapped as for ft_st_read and ft_st_open_mapped. */
int ft_safetensors_load(const char *path, ft_checkpoint *out, const ft_dtype *float_dtype, bool mapped);

/* The dtypes ft_safetensors_save writes: F64, F32, F16, BF16 and I64. */
#define FT_ST_WRITABLE_DTYPES "F64, F32, F16, BF16 and I64"

/* Writes the tensors under their names with the given metadata (string values only).
 * dtypes is NULL (every tensor in its own dtype: float32 F32, bfloat16 BF16, float16 F16,
 * float64 F64, int64 I64) or n entries, each NULL (that tensor's own dtype) or the
 * format's name of the dtype to store it as: a float tensor as F64, F32, F16 or BF16
 * (converted, rounded to nearest even), an int64 one as I64. Anything else (an int64
 * tensor as BF16, a float one as I64, an unknown name) is an error naming the tensor and
 * the dtype, before anything is written. As the reference implementation does, tensors are
 * laid out by element size (largest first) then name, so each is aligned to its element
 * size, and the header is padded with spaces to a multiple of 8 bytes. The write is atomic. */
int ft_safetensors_save(const char *path, int n, const char *const *names,
                        ft_tensor *const *tensors, int nmeta, const ft_meta *meta,
                        const char *const *dtypes);

#endif
