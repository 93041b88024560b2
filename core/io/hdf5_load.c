/* HDF5 checkpoints, reading: every dataset of the file (any nesting; e.g. written by
 * h5py) as a tensor under its dotted name, float datasets in their own dtype (IEEE
 * float32, float64 and float16, and bfloat16) and integer ones as int64, and the scalar
 * attributes of "/" as metadata. */
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
#include "ft/utf8.h"
#include "hdf5_internal.h"

#define MAX_DEPTH 64                 /* nested groups */

/* ---- load -------------------------------------------------------------------
 *
 * The file is not trusted. libhdf5 has memory bugs on corrupt files, so the loader reads
 * only what a checkpoint needs and checks each thing before HDF5 reads it: datasets of
 * the IEEE float (16, 32, 64 bits), bfloat16 and two's-complement integer types only, whose storage is
 * allocated, inside the file and of the size shape x type claims (so a dataset never
 * written, a fill value of 30000x30000, is an error, not 3.5 GB); hard links only, each
 * object once (no cycles); scalar attributes of those types or strings, fixed-length
 * ones of a bounded size, variable-length ones only when every global heap collection
 * of the file is well formed. */

#define MAX_LINKS 1000000            /* per group and in all */
#define MAX_NAME 4096                /* a link or attribute name, in bytes */
#define MAX_ATTRS 4096               /* attributes of "/" */
#define MAX_STRING ((size_t)64 << 20) /* one string attribute */
#define DEFLATE_RATIO 1032           /* zlib's best case: compressed data expands at most this */

typedef struct {
    const char *path;
    ft_checkpoint *out;
    int cap;
    char **h5paths;      /* where each tensor came from, to report collisions */
    hsize_t file_size;
    haddr_t *seen;       /* addresses of the objects visited */
    int nseen, seen_cap;
    int64_t links;       /* links visited in all */
    uint64_t (*data)[2];  /* contiguous data ranges [begin, end), for the heap scan */
    int ndata, data_cap;
    hid_t f16, bf16;     /* the memory types of float16 and bfloat16 (HDF5 has no predefined ones) */
} loader;

static int push_tensor(loader *ld, char *name, char *h5path, ft_tensor *t) {
    ft_checkpoint *c = ld->out;
    if (c->n == ld->cap) {
        int cap = ld->cap ? 2 * ld->cap : 64;
        char **names = realloc(c->names, (size_t)cap * sizeof *names);
        if (names) c->names = names;
        ft_tensor **ts = realloc(c->tensors, (size_t)cap * sizeof *ts);
        if (ts) c->tensors = ts;
        char **paths = realloc(ld->h5paths, (size_t)cap * sizeof *paths);
        if (paths) ld->h5paths = paths;
        if (!names || !ts || !paths) {
            ft_set_error("out of memory reading '%s'", ld->path);
            return -1;
        }
        ld->cap = cap;
    }
    c->names[c->n] = name;
    c->tensors[c->n] = t;
    ld->h5paths[c->n] = h5path;
    c->n++;
    return 0;
}

/* The file type of a dataset or attribute, if it is one a checkpoint may hold: sets
 * *dtype (the float dtype of the layout, int64 for integers) and *size (bytes per
 * element). A float of another layout returns 0 with its description in layout (when
 * given). */
static int numeric_type(hid_t type, ft_dtype *dtype, size_t *size, char *layout, size_t len) {
    char ignored[8];
    H5T_class_t cls = H5Tget_class(type);
    if (cls == H5T_FLOAT) {
        if (h5io_float_dtype(type, dtype, layout ? layout : ignored, layout ? len : sizeof ignored)) {
            *size = H5Tget_size(type);
            return 1;
        }
    } else if (cls == H5T_INTEGER) {
        hid_t known[] = {H5T_STD_I8LE, H5T_STD_I8BE, H5T_STD_U8LE, H5T_STD_U8BE,
                         H5T_STD_I16LE, H5T_STD_I16BE, H5T_STD_U16LE, H5T_STD_U16BE,
                         H5T_STD_I32LE, H5T_STD_I32BE, H5T_STD_U32LE, H5T_STD_U32BE,
                         H5T_STD_I64LE, H5T_STD_I64BE, H5T_STD_U64LE, H5T_STD_U64BE};
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
            if (H5Tequal(type, known[k]) > 0) {
                *dtype = FT_INT64;
                *size = H5Tget_size(type);
                return 1;
            }
    }
    H5Eclear2(H5E_DEFAULT);
    return 0;
}

/* Checks that dataset d's data is in the file as its shape and type claim (nbytes bytes
 * uncompressed), before anything is allocated for it. */
static int check_storage(loader *ld, hid_t d, const char *h5path, int ndim, size_t tsize, int64_t nbytes) {
    int rc = -1;
    hid_t dcpl = H5Dget_create_plist(d);
    if (dcpl < 0) {
        ft_set_error("cannot read dataset '%s' in '%s': %s (corrupt file?)", h5path, ld->path, h5io_capture());
        return -1;
    }
    H5D_layout_t layout = H5Pget_layout(dcpl);
    int nfilters = H5Pget_nfilters(dcpl);
    int nexternal = H5Pget_external_count(dcpl);
    H5D_space_status_t status = H5D_SPACE_STATUS_ERROR;
    herr_t st = H5Dget_space_status(d, &status);
    if (layout < 0 || nfilters < 0 || nexternal < 0 || st < 0) {
        ft_set_error("cannot read dataset '%s' in '%s': %s (corrupt file?)", h5path, ld->path, h5io_capture());
        goto done;
    }
    if (nexternal > 0 || (layout != H5D_COMPACT && layout != H5D_CONTIGUOUS && layout != H5D_CHUNKED)) {
        ft_set_error("dataset '%s' in '%s' keeps its data outside the file (external or virtual "
                     "storage is not read)", h5path, ld->path);
        goto done;
    }
    if (nbytes == 0) {
        rc = 0;
        goto done;
    }
    /* HDF5 calls a compressed chunked dataset "partly allocated" (its storage is smaller
     * than its data); the storage bounds below cover chunks that were never written. */
    if (status == H5D_SPACE_STATUS_NOT_ALLOCATED ||
        (status != H5D_SPACE_STATUS_ALLOCATED && !(layout == H5D_CHUNKED && nfilters > 0))) {
        ft_set_error("dataset '%s' in '%s' has no data written (a dataset never written holds "
                     "only its fill value; refusing to expand it)", h5path, ld->path);
        goto done;
    }
    hsize_t storage = H5Dget_storage_size(d);
    if (storage > ld->file_size) {
        ft_set_error("dataset '%s' in '%s' claims %llu bytes of storage in a %llu-byte file "
                     "(corrupt or truncated file?)", h5path, ld->path,
                     (unsigned long long)storage, (unsigned long long)ld->file_size);
        goto done;
    }
    if (layout == H5D_CHUNKED) {
        for (int k = 0; k < nfilters; k++) {
            unsigned flags, values[8];
            size_t nvalues = 8;
            char fname[64];
            H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)k, &flags, &nvalues, values, sizeof fname, fname, NULL);
            if (id != H5Z_FILTER_DEFLATE && id != H5Z_FILTER_SHUFFLE && id != H5Z_FILTER_FLETCHER32) {
                ft_set_error("dataset '%s' in '%s' uses HDF5 filter %d (only gzip, shuffle and "
                             "fletcher32 are read)", h5path, ld->path, (int)id);
                goto done;
            }
        }
        hsize_t chunk[H5S_MAX_RANK];
        int crank = H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk);
        int64_t chunk_elems = 1;
        for (int k = 0; k < crank; k++)
            if (chunk[k] == 0 || chunk[k] > INT64_MAX || !ft_size_mul(chunk_elems, (int64_t)chunk[k], &chunk_elems))
                crank = -1;
        int64_t chunk_bytes;
        if (crank != ndim || !ft_size_mul(chunk_elems, (int64_t)tsize, &chunk_bytes) ||
            chunk_bytes > (int64_t)(ld->file_size + 1) * DEFLATE_RATIO) {
            ft_set_error("dataset '%s' in '%s' has chunks larger than the file could hold "
                         "(corrupt file?)", h5path, ld->path);
            goto done;
        }
        int64_t bound = nfilters ? (int64_t)storage * DEFLATE_RATIO + 4096 : (int64_t)storage;
        if (nbytes > bound) {
            ft_set_error("dataset '%s' in '%s' claims %lld bytes of data but stores %llu "
                         "(corrupt file?)", h5path, ld->path, (long long)nbytes, (unsigned long long)storage);
            goto done;
        }
    } else {
        if (nfilters != 0 || (int64_t)storage != nbytes) {
            ft_set_error("dataset '%s' in '%s' claims %lld bytes of data but stores %llu "
                         "(corrupt or truncated file?)", h5path, ld->path, (long long)nbytes,
                         (unsigned long long)storage);
            goto done;
        }
        if (layout == H5D_CONTIGUOUS) {
            haddr_t at = H5Dget_offset(d);
            if (at == HADDR_UNDEF || at > ld->file_size || ld->file_size - at < storage) {
                ft_set_error("dataset '%s' in '%s' has its data past the end of the file "
                             "(truncated file?)", h5path, ld->path);
                goto done;
            }
            if (ld->ndata == ld->data_cap) {
                int cap = ld->data_cap ? 2 * ld->data_cap : 64;
                void *grown = realloc(ld->data, (size_t)cap * sizeof *ld->data);
                if (!grown) {
                    ft_set_error("out of memory reading '%s'", ld->path);
                    goto done;
                }
                ld->data = grown;
                ld->data_cap = cap;
            }
            ld->data[ld->ndata][0] = at;
            ld->data[ld->ndata][1] = at + storage;
            ld->ndata++;
        }
    }
    rc = 0;
done:
    H5Pclose(dcpl);
    return rc;
}

/* Reads dataset d (HDF5 path h5path) as tensor `name`; takes name and h5path. */
static int read_dataset(loader *ld, hid_t d, char *h5path, char *name) {
    int rc = -1;
    ft_tensor *t = NULL;
    hid_t type = H5Dget_type(d);
    hid_t space = H5Dget_space(d);
    H5S_class_t scls = space >= 0 ? H5Sget_simple_extent_type(space) : H5S_NO_CLASS;
    int ndim = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (type < 0 || space < 0 || ndim < 0) {
        ft_set_error("cannot read dataset '%s' in '%s': %s (corrupt or truncated file?)",
                     h5path, ld->path, h5io_capture());
        goto done;
    }
    ft_dtype dtype;
    size_t tsize;
    char layout[256] = "";
    if (!numeric_type(type, &dtype, &tsize, layout, sizeof layout)) {
        if (layout[0])
            ft_set_error("dataset '%s' in '%s' is a float of a layout ftlua does not read: %s (it reads "
                         "IEEE float16, float32 and float64, and bfloat16: 16 bits, sign bit 15, 8 exponent "
                         "bits at 7 with bias 127, 7 mantissa bits at 0)", h5path, ld->path, layout);
        else
            ft_set_error("dataset '%s' in '%s' is not of a numeric type a tensor can hold (float "
                         "16/32/64, bfloat16 or integer 8..64 bits)", h5path, ld->path);
        goto done;
    }
    if (scls != H5S_SIMPLE && scls != H5S_SCALAR) {
        ft_set_error("dataset '%s' in '%s' has no data (null dataspace)", h5path, ld->path);
        goto done;
    }
    if (ndim > FT_MAX_DIMS) {
        ft_set_error("dataset '%s' in '%s' has %d dimensions (at most %d supported)",
                     h5path, ld->path, ndim, FT_MAX_DIMS);
        goto done;
    }
    hsize_t dims[FT_MAX_DIMS];
    int64_t shape[FT_MAX_DIMS];
    int64_t numel = 1, nbytes;
    if (H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        ft_set_error("cannot read dataset '%s' in '%s': %s (corrupt file?)", h5path, ld->path, h5io_capture());
        goto done;
    }
    for (int k = 0; k < ndim; k++) {
        if (dims[k] > (hsize_t)INT64_MAX || !ft_size_mul(numel, (int64_t)dims[k], &numel)) numel = -1;
        shape[k] = (int64_t)dims[k];
        if (numel < 0) break;
    }
    if (numel < 0 || !ft_size_mul(numel, (int64_t)tsize, &nbytes)) {
        ft_set_error("dataset '%s' in '%s' has a shape whose size overflows (corrupt file?)",
                     h5path, ld->path);
        goto done;
    }
    if (check_storage(ld, d, h5path, ndim, tsize, nbytes) != 0) goto done;
    t = ft_empty(shape, ndim, dtype);
    if (!t) {
        char buf[128];
        ft_set_error("cannot allocate dataset '%s' %s in '%s'", h5path,
                     ft_shape_str(shape, ndim, buf, sizeof buf), ld->path);
        goto done;
    }
    /* Floats are read in their own layout (HDF5 swaps big-endian bytes), integers of any
     * width and sign converted to int64. */
    hid_t mtype = dtype == FT_FLOAT32 ? H5T_NATIVE_FLOAT : dtype == FT_FLOAT64 ? H5T_NATIVE_DOUBLE
                : dtype == FT_FLOAT16 ? ld->f16 : dtype == FT_BFLOAT16 ? ld->bf16 : H5T_NATIVE_INT64;
    void *data = ft_data(t);
    if (mtype < 0) {
        ft_set_error("cannot read dataset '%s' in '%s': no HDF5 type for %s", h5path, ld->path,
                     ft_dtype_name(dtype));
        goto done;
    }
    if (numel > 0 && H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        ft_set_error("cannot read dataset '%s' in '%s': %s (corrupt or truncated file?)",
                     h5path, ld->path, h5io_capture());
        goto done;
    }
    if (push_tensor(ld, name, h5path, t) == 0) {
        name = h5path = NULL;
        t = NULL;
        rc = 0;
    }
done:
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    ft_release(t);
    free(name);
    free(h5path);
    return rc;
}

static char *join(const char *a, const char *sep, const char *b) {
    size_t la = strlen(a), ls = strlen(sep), lb = strlen(b);
    char *s = malloc(la + ls + lb + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, sep, ls);
    memcpy(s + la + ls, b, lb + 1);
    return s;
}

/* Records obj as visited; an object reached twice (two hard links, or a cycle of groups)
 * is an error: each tensor must come from one place (and one dataset linked a thousand
 * times must not load a thousand times). The set is an open-addressing hash of addresses. */
static int visit_once(loader *ld, hid_t obj, const char *h5path) {
    H5O_info_t info;
    if (H5Oget_info2(obj, &info, H5O_INFO_BASIC) < 0) {
        ft_set_error("cannot read '%s' in '%s': %s (corrupt file?)", h5path, ld->path, h5io_capture());
        return -1;
    }
    if (2 * (ld->nseen + 1) > ld->seen_cap) {
        int cap = ld->seen_cap ? 2 * ld->seen_cap : 256;
        haddr_t *grown = malloc((size_t)cap * sizeof *grown);
        if (!grown) {
            ft_set_error("out of memory reading '%s'", ld->path);
            return -1;
        }
        for (int k = 0; k < cap; k++) grown[k] = HADDR_UNDEF;
        for (int k = 0; k < ld->seen_cap; k++) {
            if (ld->seen[k] == HADDR_UNDEF) continue;
            size_t h = (size_t)(ld->seen[k] * 0x9E3779B97F4A7C15ull) & (size_t)(cap - 1);
            while (grown[h] != HADDR_UNDEF) h = (h + 1) & (size_t)(cap - 1);
            grown[h] = ld->seen[k];
        }
        free(ld->seen);
        ld->seen = grown;
        ld->seen_cap = cap;
    }
    size_t h = (size_t)(info.addr * 0x9E3779B97F4A7C15ull) & (size_t)(ld->seen_cap - 1);
    while (ld->seen[h] != HADDR_UNDEF) {
        if (ld->seen[h] == info.addr) {
            ft_set_error("'%s' in '%s' links to an object already loaded (hard links to one "
                         "object, or a cycle of groups)", h5path, ld->path);
            return -1;
        }
        h = (h + 1) & (size_t)(ld->seen_cap - 1);
    }
    ld->seen[h] = info.addr;
    ld->nseen++;
    return 0;
}

/* Visits the hard links of group g (by name order); `prefix` is the dotted name of g
 * ("" for the root) and h5prefix its HDF5 path. Soft and external links are skipped. */
static int visit_group(loader *ld, hid_t g, const char *prefix, const char *h5prefix, int depth) {
    if (depth > MAX_DEPTH) {
        ft_set_error("groups nested too deeply at '%s' in '%s'", h5prefix, ld->path);
        return -1;
    }
    if (visit_once(ld, g, h5prefix[0] ? h5prefix : "/") != 0) return -1;
    H5G_info_t info;
    if (H5Gget_info(g, &info) < 0) {
        ft_set_error("cannot read group '%s' in '%s': %s (corrupt or truncated file?)",
                     h5prefix[0] ? h5prefix : "/", ld->path, h5io_capture());
        return -1;
    }
    if (info.nlinks > MAX_LINKS || (ld->links += (int64_t)info.nlinks) > MAX_LINKS) {
        ft_set_error("group '%s' in '%s' claims %llu links (corrupt file?)", h5prefix[0] ? h5prefix : "/",
                     ld->path, (unsigned long long)info.nlinks);
        return -1;
    }
    for (hsize_t k = 0; k < info.nlinks; k++) {
        ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, k, NULL, 0, H5P_DEFAULT);
        char *link = len > 0 && len <= MAX_NAME ? malloc((size_t)len + 1) : NULL;
        if (!link || H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, k, link,
                                        (size_t)len + 1, H5P_DEFAULT) != len) {
            free(link);
            ft_set_error("cannot read group '%s' in '%s': %s (corrupt or truncated file?)",
                         h5prefix[0] ? h5prefix : "/", ld->path,
                         len > MAX_NAME || len == 0 ? "a link name of a bad length" : h5io_capture());
            return -1;
        }
        if (strlen(link) != (size_t)len || !ft_utf8_valid(link, (size_t)len) ||
            strcmp(link, ".") == 0) {
            free(link);
            ft_set_error("group '%s' in '%s' holds a link whose name is not valid UTF-8 text "
                         "(corrupt file?)", h5prefix[0] ? h5prefix : "/", ld->path);
            return -1;
        }
        H5L_info_t linfo;
        if (H5Lget_info(g, link, &linfo, H5P_DEFAULT) < 0 || linfo.type != H5L_TYPE_HARD) {
            H5Eclear2(H5E_DEFAULT);
            free(link);
            continue;
        }
        char *name = prefix[0] ? join(prefix, ".", link) : join("", "", link);
        char *h5path = join(h5prefix, "/", link);
        if (!name || !h5path) {
            free(link);
            free(name);
            free(h5path);
            ft_set_error("out of memory reading '%s'", ld->path);
            return -1;
        }
        int rc = 0;
        hid_t obj = H5Oopen(g, link, H5P_DEFAULT);
        free(link);
        H5I_type_t kind = obj >= 0 ? H5Iget_type(obj) : H5I_BADID;
        if (obj < 0) {
            ft_set_error("cannot open '%s' in '%s': %s (corrupt or truncated file?)",
                         h5path, ld->path, h5io_capture());
            rc = -1;
        } else if (kind == H5I_GROUP) {
            rc = visit_group(ld, obj, name, h5path, depth + 1);
        } else if (kind == H5I_DATASET) {
            rc = visit_once(ld, obj, h5path);
            if (rc == 0) {
                rc = read_dataset(ld, obj, h5path, name);   /* takes h5path and name */
                h5path = name = NULL;
            }
        }
        /* committed datatypes: nothing to load */
        if (obj >= 0) H5Oclose(obj);
        free(name);
        free(h5path);
        if (rc != 0) return -1;
    }
    return 0;
}

/* ---- attributes of "/" ---------------------------------------------------------- */

/* Variable-length strings live in the file's global heap, where libhdf5 1.10 crashes or
 * loops on a corrupt collection: every collection is checked before any is read. */
static int global_heap_sound(loader *ld) {
    int fd = open(ld->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char why[160];
    int rc = ft_h5check_global_heaps(fd, ld->file_size, (const uint64_t (*)[2])ld->data, ld->ndata,
                                     why, sizeof why);
    close(fd);
    return rc == 0;
}

typedef struct {
    loader *ld;
    int heap_checked, heap_sound;
    int failed;          /* the error is set: do not replace it */
    size_t sizeof_size;
} attr_reader;

/* Scalar (or one-element) string and number attributes become metadata; others are
 * skipped. */
static herr_t attr_cb(hid_t loc, const char *name, const H5A_info_t *ainfo, void *data) {
    attr_reader *ar = data;
    loader *ld = ar->ld;
    ft_checkpoint *c = ld->out;
    (void)ainfo;
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > MAX_NAME || !ft_utf8_valid(name, name_len))
        return 0;
    if (c->nmeta >= MAX_ATTRS) return 0;
    hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
    if (attr < 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    hid_t type = H5Aget_type(attr);
    hid_t space = H5Aget_space(attr);
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    hssize_t npoints = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    hsize_t storage = H5Aget_storage_size(attr);
    ft_meta m = {0};
    int ok = 0;
    ft_dtype dtype;
    size_t tsize = 0;
    if (npoints != 1) {
        /* arrays and empty attributes are not metadata */
    } else if (cls == H5T_STRING) {
        htri_t vlen = H5Tis_variable_str(type);
        H5T_cset_t cset = H5Tget_cset(type);
        size_t size = H5Tget_size(type);
        if (cset != H5T_CSET_ASCII && cset != H5T_CSET_UTF8) {
            /* unknown character set: skipped */
        } else if (vlen > 0) {
            if (!ar->heap_checked) {
                ar->heap_sound = global_heap_sound(ld);
                ar->heap_checked = 1;
            }
            /* A variable-length string on disk is its length (4 bytes) and a heap id
             * (an 8-byte address and a 4-byte index). */
            if (!ar->heap_sound) {
                ft_set_error("cannot read the string attribute '%s' of '/' in '%s': the file's "
                             "global heap is corrupt", name, ld->path);
                ar->failed = 1;
                H5Sclose(space);
                H5Tclose(type);
                H5Aclose(attr);
                return -1;
            }
            if (storage == 16) {
                hid_t mtype = H5Tcopy(H5T_C_S1);
                H5Tset_size(mtype, H5T_VARIABLE);
                H5Tset_cset(mtype, cset);
                char *s = NULL;
                if (mtype >= 0 && H5Aread(attr, mtype, &s) >= 0 && s) {
                    size_t len = strnlen(s, ld->file_size + 1);
                    if (len <= ld->file_size) m.str = strdup(s);
                    H5free_memory(s);
                    ok = m.str != NULL;
                }
                if (mtype >= 0) H5Tclose(mtype);
            }
        } else if (vlen == 0 && size > 0 && size <= MAX_STRING && storage == size) {
            hid_t mtype = H5Tcopy(type);   /* same size and character set as stored */
            m.str = calloc(size + 1, 1);
            ok = mtype >= 0 && m.str && H5Aread(attr, mtype, m.str) >= 0;
            if (mtype >= 0) H5Tclose(mtype);
        }
        if (ok && !ft_utf8_valid(m.str, strlen(m.str))) ok = 0;
        m.kind = FT_META_STRING;
    } else if (numeric_type(type, &dtype, &tsize, NULL, 0) && storage == tsize) {
        if (dtype == FT_INT64) {
            m.kind = FT_META_INT;
            ok = H5Aread(attr, H5T_NATIVE_INT64, &m.i) >= 0;
        } else {
            m.kind = FT_META_FLOAT;
            ok = H5Aread(attr, H5T_NATIVE_DOUBLE, &m.f) >= 0;
        }
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Aclose(attr);
    if (!ok) {
        free(m.str);
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    m.key = strdup(name);
    ft_meta *grown = m.key ? realloc(c->meta, (size_t)(c->nmeta + 1) * sizeof *grown) : NULL;
    if (!grown) {
        free(m.key);
        free(m.str);
        return -1;
    }
    c->meta = grown;
    c->meta[c->nmeta++] = m;
    return 0;
}

/* The attribute messages of "/" are checked in the file's bytes before the library
 * decodes any (it frees a half-decoded one wrongly: a crash when the file is closed). */
static int check_root_attributes(loader *ld, hid_t root, size_t sizeof_size) {
    H5O_info_t info;
    if (H5Oget_info2(root, &info, H5O_INFO_BASIC) < 0) {
        ft_set_error("cannot read '/' in '%s': %s (corrupt file?)", ld->path, h5io_capture());
        return -1;
    }
    char why[160] = "";
    int rc = -1;
    if (sizeof_size != 8) {
        snprintf(why, sizeof why, "offsets or lengths of other than 8 bytes");
    } else {
        int fd = open(ld->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) snprintf(why, sizeof why, "%s", strerror(errno));
        else {
            rc = ft_h5check_attributes(fd, ld->file_size, (uint64_t)info.addr, why, sizeof why);
            close(fd);
        }
    }
    if (rc != 0)
        ft_set_error("cannot read the attributes of '/' in '%s': %s (corrupt file?)", ld->path, why);
    return rc;
}

static int cmp_index_by_name(const void *a, const void *b, void *names) {
    char **n = names;
    return strcmp(n[*(const int *)a], n[*(const int *)b]);
}

/* "a.b" (one dataset with a dot in its name) and "a/b" would both be tensor "a.b". */
static int check_collisions(loader *ld) {
    ft_checkpoint *c = ld->out;
    if (c->n < 2) return 0;
    int *order = malloc((size_t)c->n * sizeof *order);
    if (!order) {
        ft_set_error("out of memory reading '%s'", ld->path);
        return -1;
    }
    for (int k = 0; k < c->n; k++) order[k] = k;
    qsort_r(order, (size_t)c->n, sizeof *order, cmp_index_by_name, c->names);
    int rc = 0;
    for (int k = 0; k + 1 < c->n && rc == 0; k++) {
        int a = order[k], b = order[k + 1];
        if (strcmp(c->names[a], c->names[b]) == 0) {
            ft_set_error("HDF5 datasets '%s' and '%s' in '%s' both give the tensor name '%s' "
                         "(a dot in a dataset name); rename one", ld->h5paths[a], ld->h5paths[b],
                         ld->path, c->names[a]);
            rc = -1;
        }
    }
    free(order);
    return rc;
}

int ft_h5_load(const char *path, ft_checkpoint *out) {
    memset(out, 0, sizeof *out);
    h5io_quiet();
    struct stat st;
    if (stat(path, &st) != 0) {
        ft_set_error("cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        ft_set_error("cannot open '%s': Is a directory", path);
        return -1;
    }
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        ft_set_error("cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    fclose(probe);
    htri_t is_h5 = H5Fis_hdf5(path);
    if (is_h5 == 0) {
        ft_set_error("'%s' is not an HDF5 file (no HDF5 signature)", path);
        return -1;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    hid_t file = is_h5 > 0 ? H5Fopen(path, H5F_ACC_RDONLY, fapl) : -1;
    if (file < 0)
        ft_set_error("cannot read '%s': corrupt or truncated HDF5 file (%s)", path, h5io_capture());
    H5Pclose(fapl);
    if (file < 0) return -1;
    loader ld = {.path = path, .out = out, .file_size = (hsize_t)st.st_size,
                 .f16 = h5io_float_type(FT_FLOAT16, H5T_ORDER_LE),
                 .bf16 = h5io_float_type(FT_BFLOAT16, H5T_ORDER_LE)};
    attr_reader ar = {.ld = &ld, .sizeof_size = 0};
    hid_t fcpl = H5Fget_create_plist(file);
    if (fcpl >= 0) {
        size_t sizeof_addr = 0;
        if (H5Pget_sizes(fcpl, &sizeof_addr, &ar.sizeof_size) < 0 || sizeof_addr != 8) ar.sizeof_size = 0;
        H5Pclose(fcpl);
    }
    H5Eclear2(H5E_DEFAULT);
    hid_t root = H5Gopen2(file, "/", H5P_DEFAULT);
    int rc = -1;
    if (root < 0)
        ft_set_error("cannot read '%s': corrupt or truncated HDF5 file (%s)", path,
                     h5io_capture());
    else if (visit_group(&ld, root, "", "", 0) == 0 && check_collisions(&ld) == 0 &&
             check_root_attributes(&ld, root, ar.sizeof_size) == 0) {
        hsize_t idx = 0;
        if (H5Aiterate2(root, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_cb, &ar) < 0) {
            if (!ar.failed)
                ft_set_error("cannot read the attributes of '/' in '%s': %s", path, h5io_capture());
            else
                H5Eclear2(H5E_DEFAULT);
        }
        else
            rc = 0;
    }
    if (root >= 0) H5Gclose(root);
    H5Fclose(file);
    for (int k = 0; k < out->n; k++) free(ld.h5paths[k]);
    free(ld.h5paths);
    free(ld.seen);
    free(ld.data);
    if (ld.f16 >= 0) H5Tclose(ld.f16);
    if (ld.bf16 >= 0) H5Tclose(ld.bf16);
    if (rc != 0) ft_checkpoint_free(out);
    return rc;
}

void ft_checkpoint_free(ft_checkpoint *c) {
    for (int k = 0; k < c->n; k++) {
        free(c->names[k]);
        ft_release(c->tensors[k]);
    }
    for (int k = 0; k < c->nmeta; k++) {
        free(c->meta[k].key);
        free(c->meta[k].str);
    }
    free(c->names);
    free(c->tensors);
    free(c->meta);
    memset(c, 0, sizeof *c);
}
