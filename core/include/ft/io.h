/* File formats: HDF5 checkpoints, PNG images, IDX(.gz) arrays, and atomic writes.
 *
 * Every function returns 0 / a new tensor reference on success and -1 / NULL with
 * ft_set_error() on failure; the message names the file. Writers are atomic: the data
 * goes to a temporary file in the target's folder, which is fsynced and renamed over
 * the target only when complete, so a failed write leaves any previous file untouched. */
#ifndef FT_IO_H
#define FT_IO_H

#include <stdint.h>

#include "ft/tensor.h"

/* ---- atomic writes (core/io/atomic.c) ---------------------------------------- */
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
    ft_tensor **tensors;   /* float32 or int64, contiguous */
    int nmeta;
    ft_meta *meta;
} ft_checkpoint;

#define FT_CHECKPOINT_FORMAT "ftlua-1"   /* value of the "format" attribute on "/" */

/* Writes one dataset per tensor at the path of its dotted name (dots become groups),
 * float32 or int64, uncompressed, plus the attribute format = "ftlua-1" and the given
 * metadata on "/". Names must be non-empty, without '/', empty components or a name
 * that is a group of another ("a" and "a.b"); the key "format" is reserved. */
int ft_h5_save(const char *path, int n, const char *const *names, ft_tensor *const *tensors,
               int nmeta, const ft_meta *meta);
/* Reads every dataset of the file (any nesting): float datasets as float32, integer
 * datasets as int64; and the scalar string/number attributes of "/" as metadata.
 * Fills *out (free with ft_checkpoint_free). */
int ft_h5_load(const char *path, ft_checkpoint *out);
void ft_checkpoint_free(ft_checkpoint *c);

/* ---- PNG images (core/io/png.c) ---------------------------------------------- */
/* Any PNG (1..16-bit gray, gray+alpha, RGB, RGBA, palette; tRNS becomes alpha) as a
 * float32 tensor [C,H,W] with values in [0,1]; C = 1, 2, 3 or 4. */
ft_tensor *ft_png_load(const char *path);
/* Saves a float32 [C,H,W] (C = 1..4) or [H,W] tensor with values in [0,1] (clamped,
 * rounded) as an 8-bit PNG. */
int ft_png_save(const char *path, const ft_tensor *t);

/* ---- IDX arrays (core/io/idx.c) ---------------------------------------------- */
/* Reads an IDX file (gzip-compressed or plain) of any element type (ubyte, byte,
 * short, int, float, double) into a tensor of the header's shape with dtype `dtype`,
 * each value v stored as v * scale + offset. The data size is checked against the
 * header. */
ft_tensor *ft_idx_read(const char *path, ft_dtype dtype, double scale, double offset);

#endif
