/* HDF5 checkpoints, writing: one dataset per tensor at the path of its dotted name
 * ("layer1.0.conv1.weight" -> /layer1/0/conv1/weight) in the tensor's own dtype (float32,
 * float64, float16, bfloat16 or int64), uncompressed, with metadata as scalar attributes
 * on "/", through the atomic writer. Also the float types of the dtypes, which the reader
 * (hdf5_load.c) shares. */
#define _GNU_SOURCE   /* qsort_r */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "ft/io.h"
#include "hdf5_internal.h"

/* HDF5 prints its error stack to stderr by default; we report errors ourselves. */
void h5io_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* The most specific message of HDF5's error stack (see hdf5_internal.h). */
static _Thread_local char h5_error[256];

static herr_t innermost_cb(unsigned n, const H5E_error2_t *err, void *data) {
    (void)data;
    if (n == 0 && err->desc) snprintf(h5_error, sizeof h5_error, "%s", err->desc);
    return 0;
}

const char *h5io_capture(void) {
    h5_error[0] = '\0';
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_cb, NULL);
    H5Eclear2(H5E_DEFAULT);
    /* I/O failures read "file write failed: time = ..., errno = 28, error message =
     * 'No space left on device', ...": keep the system's message. */
    const char *tag = "error message = '";
    char *m = strstr(h5_error, tag);
    if (m) {
        m += strlen(tag);
        char *end = strchr(m, '\'');
        if (end) *end = '\0';
        memmove(h5_error, m, strlen(m) + 1);
    }
    char *nl = strchr(h5_error, '\n');
    if (nl) *nl = '\0';
    if (!h5_error[0]) snprintf(h5_error, sizeof h5_error, "HDF5 error");
    return h5_error;
}

/* ---- float types --------------------------------------------------------------- */

/* A float layout: size in bytes, then the bit fields (sign position, exponent position
 * and size, mantissa position and size) and the exponent bias. */
typedef struct {
    ft_dtype dtype;
    size_t size, spos, epos, esize, mpos, msize, ebias;
} float_layout;

static const float_layout LAYOUTS[] = {
    {FT_FLOAT32, 4, 31, 23, 8, 0, 23, 127},
    {FT_FLOAT64, 8, 63, 52, 11, 0, 52, 1023},
    {FT_FLOAT16, 2, 15, 10, 5, 0, 10, 15},
    {FT_BFLOAT16, 2, 15, 7, 8, 0, 7, 127},
};
#define NLAYOUTS ((int)(sizeof LAYOUTS / sizeof LAYOUTS[0]))

hid_t h5io_float_type(ft_dtype dtype, H5T_order_t order) {
    const float_layout *l = NULL;
    for (int k = 0; k < NLAYOUTS; k++)
        if (LAYOUTS[k].dtype == dtype) l = &LAYOUTS[k];
    if (!l) return -1;
    /* As h5py builds its float16: the fields first (they fit a float32's 32 bits), then
     * the size, which cuts the precision to 8 x size bits. */
    hid_t t = H5Tcopy(l->size == 8 ? H5T_IEEE_F64LE : H5T_IEEE_F32LE);
    if (t < 0) return -1;
    if ((l->size < 4 && (H5Tset_fields(t, l->spos, l->epos, l->esize, l->mpos, l->msize) < 0 ||
                         H5Tset_size(t, l->size) < 0 || H5Tset_precision(t, 8 * l->size) < 0 ||
                         H5Tset_ebias(t, l->ebias) < 0)) ||
        H5Tset_order(t, order) < 0) {
        H5Tclose(t);
        H5Eclear2(H5E_DEFAULT);
        return -1;
    }
    return t;
}

int h5io_float_dtype(hid_t type, ft_dtype *dtype, char *layout, size_t len) {
    size_t size = H5Tget_size(type), prec = H5Tget_precision(type), ebias = H5Tget_ebias(type);
    int off = H5Tget_offset(type);
    H5T_order_t order = H5Tget_order(type);
    H5T_norm_t norm = H5Tget_norm(type);
    size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
    herr_t fields = H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize);
    H5Eclear2(H5E_DEFAULT);
    int ordered = order == H5T_ORDER_LE || order == H5T_ORDER_BE;
    if (fields >= 0 && ordered && off == 0 && prec == 8 * size && norm == H5T_NORM_IMPLIED)
        for (int k = 0; k < NLAYOUTS; k++) {
            const float_layout *l = &LAYOUTS[k];
            if (l->size == size && l->spos == spos && l->epos == epos && l->esize == esize &&
                l->mpos == mpos && l->msize == msize && l->ebias == ebias) {
                *dtype = l->dtype;
                return 1;
            }
        }
    char bits[64] = "";
    if (prec != 8 * size || off != 0) snprintf(bits, sizeof bits, " (%zu significant from bit %d)", prec, off);
    snprintf(layout, len, "%zu bits%s: sign bit %zu, %zu exponent bits at %zu with bias %zu, %zu mantissa bits "
             "at %zu, %s, %s", 8 * size, bits, spos, esize, epos, ebias, msize, mpos,
             norm == H5T_NORM_IMPLIED ? "implied leading 1" : norm == H5T_NORM_MSBSET ? "explicit leading 1" : "no normalisation",
             order == H5T_ORDER_LE ? "little-endian" : order == H5T_ORDER_BE ? "big-endian" : "mixed byte order");
    return 0;
}

/* ---- save ------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int is_name_taken(const char *const *sorted, int n, const char *name) {
    return bsearch(&name, sorted, (size_t)n, sizeof *sorted, cmp_str) != NULL;
}

/* Names must map to distinct HDF5 paths, none of which is a group of another. */
static int check_names(int n, const char *const *names, const char *path) {
    for (int k = 0; k < n; k++) {
        const char *s = names[k];
        size_t len = s ? strlen(s) : 0;
        if (len == 0) {
            ft_set_error("empty tensor name (writing '%s')", path);
            return -1;
        }
        if (strchr(s, '/') || s[0] == '.' || s[len - 1] == '.' || strstr(s, "..")) {
            ft_set_error("invalid tensor name '%s' (writing '%s'): names are dotted paths "
                         "like 'layer1.0.weight', without '/' or empty parts", s, path);
            return -1;
        }
    }
    const char **sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
    char *prefix = NULL;
    if (!sorted) {
        ft_set_error("out of memory (writing '%s')", path);
        return -1;
    }
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
    int rc = 0;
    for (int k = 0; k + 1 < n && rc == 0; k++)
        if (strcmp(sorted[k], sorted[k + 1]) == 0) {
            ft_set_error("duplicate tensor name '%s' (writing '%s')", sorted[k], path);
            rc = -1;
        }
    /* "a" and "a.b": "a" would have to be both a dataset and a group. */
    for (int k = 0; k < n && rc == 0; k++) {
        const char *s = sorted[k];
        free(prefix);
        prefix = strdup(s);
        if (!prefix) {
            ft_set_error("out of memory (writing '%s')", path);
            rc = -1;
            break;
        }
        for (char *dot = strchr(prefix, '.'); dot; dot = strchr(dot + 1, '.')) {
            *dot = '\0';
            if (is_name_taken(sorted, n, prefix)) {
                ft_set_error("tensor names '%s' and '%s' conflict (writing '%s'): '%s' "
                             "cannot be both a tensor and a group", prefix, s, path, prefix);
                rc = -1;
                break;
            }
            *dot = '.';
        }
    }
    free(prefix);
    free(sorted);
    return rc;
}

static int check_meta(int nmeta, const ft_meta *meta, const char *path) {
    for (int k = 0; k < nmeta; k++) {
        if (!meta[k].key || !meta[k].key[0] || strcmp(meta[k].key, ".") == 0) {
            ft_set_error("invalid metadata key '%s' (writing '%s')",
                         meta[k].key ? meta[k].key : "", path);
            return -1;
        }
        if (strcmp(meta[k].key, "format") == 0) {
            ft_set_error("metadata key 'format' is reserved for the file format version "
                         "(writing '%s')", path);
            return -1;
        }
        if (meta[k].kind == FT_META_STRING && !meta[k].str) {
            ft_set_error("metadata '%s' has no string value (writing '%s')", meta[k].key, path);
            return -1;
        }
        for (int j = 0; j < k; j++)
            if (strcmp(meta[j].key, meta[k].key) == 0) {
                ft_set_error("duplicate metadata key '%s' (writing '%s')", meta[k].key, path);
                return -1;
            }
    }
    return 0;
}

/* A scalar attribute on loc: variable-length UTF-8 string, int64 or double. */
static int write_attr(hid_t loc, const ft_meta *m) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t type = -1;
    const void *value;
    if (m->kind == FT_META_STRING) {
        type = H5Tcopy(H5T_C_S1);
        H5Tset_size(type, H5T_VARIABLE);
        H5Tset_cset(type, H5T_CSET_UTF8);
        value = &m->str;
    } else if (m->kind == FT_META_INT) {
        type = H5Tcopy(H5T_NATIVE_INT64);
        value = &m->i;
    } else {
        type = H5Tcopy(H5T_NATIVE_DOUBLE);
        value = &m->f;
    }
    hid_t attr = H5Acreate2(loc, m->key, type, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = (attr >= 0 && H5Awrite(attr, type, value) >= 0) ? 0 : -1;
    if (rc != 0) h5io_capture();
    if (attr >= 0) H5Aclose(attr);
    H5Tclose(type);
    H5Sclose(space);
    return rc;
}

/* "a.b.c" -> "/a/b/c" */
static char *dataset_path(const char *name) {
    size_t len = strlen(name);
    char *p = malloc(len + 2);
    if (!p) return NULL;
    p[0] = '/';
    for (size_t k = 0; k <= len; k++) p[k + 1] = name[k] == '.' ? '/' : name[k];
    return p;
}

static int write_dataset(hid_t file, hid_t lcpl, const char *name, const ft_tensor *t) {
    char *h5path = dataset_path(name);
    if (!h5path) {
        snprintf(h5_error, sizeof h5_error, "out of memory");
        return -1;
    }
    hsize_t dims[FT_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) dims[d] = (hsize_t)t->shape[d];
    hid_t space = t->ndim ? H5Screate_simple(t->ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    /* The file type is the memory type (the host is little-endian): the bytes go as they are. */
    hid_t type = t->dtype == FT_INT64 ? H5Tcopy(H5T_STD_I64LE) : h5io_float_type(t->dtype, H5T_ORDER_LE);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_obj_track_times(dcpl, 0);   /* no timestamps: the same tensors give the same bytes */
    hid_t dset = space >= 0 && type >= 0 ? H5Dcreate2(file, h5path, type, space, lcpl, dcpl, H5P_DEFAULT) : -1;
    H5Pclose(dcpl);
    int rc = dset >= 0 ? 0 : -1;
    if (rc == 0 && ft_numel(t) > 0)
        rc = H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, ft_data(t)) >= 0 ? 0 : -1;
    if (rc != 0) h5io_capture();
    if (dset >= 0 && H5Dclose(dset) < 0 && rc == 0) {
        h5io_capture();
        rc = -1;
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    free(h5path);
    return rc;
}

/* An upper bound of the file size: data plus room for object headers, group nodes and
 * heaps (a few hundred bytes per object in practice). */
static int64_t size_bound(int n, const char *const *names, ft_tensor *const *tensors,
                          int nmeta, const ft_meta *meta) {
    int64_t bound = 1 << 20;
    for (int k = 0; k < n; k++)
        bound += ft_numel(tensors[k]) * (int64_t)ft_dtype_size(tensors[k]->dtype) + 8192 +
                 4 * (int64_t)strlen(names[k]);
    for (int k = 0; k < nmeta; k++)
        bound += 8192 + 4 * (int64_t)strlen(meta[k].key) +
                 (meta[k].kind == FT_META_STRING ? 4 * (int64_t)strlen(meta[k].str) : 0);
    return bound;
}

static int cmp_by_string(const void *a, const void *b, void *strings) {
    const char *const *s = strings;
    return strcmp(s[*(const int *)a], s[*(const int *)b]);
}

/* The order 0..n-1 sorted by strings[k] (NULL when out of memory). */
static int *sorted_order(int n, const char *const *strings) {
    int *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order) return NULL;
    for (int k = 0; k < n; k++) order[k] = k;
    qsort_r(order, (size_t)n, sizeof *order, cmp_by_string, (void *)strings);
    return order;
}

/* Writes the file at tmp_path, attributes and datasets in name order (the file does not
 * depend on the order of a Lua table); returns 0 or -1 with the failing item in *what. */
static int write_file(const char *tmp_path, int n, const char *const *names,
                      ft_tensor *const *tensors, int nmeta, const ft_meta *meta,
                      const char **what) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);   /* close for real even after errors */
    hid_t file = H5Fcreate(tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (file < 0) h5io_capture();
    H5Pclose(fapl);
    if (file < 0) {
        *what = "file";
        return -1;
    }
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    int rc = 0;
    ft_meta format = {.key = "format", .kind = FT_META_STRING, .str = FT_CHECKPOINT_FORMAT};
    if (write_attr(file, &format) != 0) {
        *what = "format";
        rc = -1;
    }
    const char **keys = malloc((size_t)(nmeta ? nmeta : 1) * sizeof *keys);
    for (int k = 0; keys && k < nmeta; k++) keys[k] = meta[k].key;
    int *meta_order = keys ? sorted_order(nmeta, keys) : NULL;
    int *order = sorted_order(n, names);
    if (rc == 0 && (!meta_order || !order)) {
        snprintf(h5_error, sizeof h5_error, "out of memory");
        rc = -1;
    }
    for (int j = 0; j < nmeta && rc == 0; j++)
        if (write_attr(file, &meta[meta_order[j]]) != 0) {
            *what = meta[meta_order[j]].key;
            rc = -1;
        }
    for (int j = 0; j < n && rc == 0; j++) {
        int k = order[j];
        ft_tensor *c = ft_contiguous(tensors[k]);
        if (!c) snprintf(h5_error, sizeof h5_error, "%s", ft_last_error());
        if (!c || write_dataset(file, lcpl, names[k], c) != 0) {
            *what = names[k];
            rc = -1;
        }
        ft_release(c);
    }
    free(order);
    free(meta_order);
    free(keys);
    H5Pclose(lcpl);
    /* Data is flushed at close. */
    if (H5Fclose(file) < 0 && rc == 0) {
        h5io_capture();
        *what = "file";
        rc = -1;
    }
    return rc;
}

int ft_h5_save(const char *path, int n, const char *const *names, ft_tensor *const *tensors,
               int nmeta, const ft_meta *meta) {
    h5io_quiet();
    if (check_names(n, names, path) != 0 || check_meta(nmeta, meta, path) != 0) return -1;
    for (int k = 0; k < n; k++)
        if (!tensors[k]) {
            ft_set_error("tensor '%s' is NULL (writing '%s')", names[k], path);
            return -1;
        }

    ft_atomic_file af;
    if (ft_atomic_open(&af, path) != 0) return -1;
    /* HDF5 does not recover from a failed write (its metadata cache stays broken and the
     * library crashes at exit). So first make sure the space is there: allocating it
     * fails cleanly on a full disk, an exhausted quota or a file size limit. HDF5 then
     * creates the file afresh (O_TRUNC), which releases the blocks again; only another
     * process filling the disk in between can still make HDF5's writes fail. */
    int err = posix_fallocate(af.fd, 0, (off_t)size_bound(n, names, tensors, nmeta, meta));
    if (err != 0 && err != EOPNOTSUPP && err != EINVAL) {
        ft_set_error("cannot write '%s': %s", path, strerror(err));
        ft_atomic_abort(&af);
        return -1;
    }
    const char *what = "file";
    if (write_file(af.tmp, n, names, tensors, nmeta, meta, &what) != 0) {
        if (strcmp(what, "file") == 0)
            ft_set_error("cannot write '%s': %s", path, h5_error);
        else
            ft_set_error("cannot write '%s' to '%s': %s", what, path, h5_error);
        ft_atomic_abort(&af);
        return -1;
    }
    return ft_atomic_commit(&af);
}
