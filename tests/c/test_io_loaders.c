/* The loaders trust nothing: files that claim more than they hold, never-written HDF5
 * datasets, corrupt HDF5 attributes and links, PNG and gzip bombs, and safetensors headers
 * with the tricks cJSON lets through. Each must be a clear error, without a crash or a big
 * allocation (peak RSS is compared before and after). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if __has_include(<hdf5.h>)
#include <hdf5.h>
#else
#include <hdf5/serial/hdf5.h>   /* Debian's serial HDF5 */
#endif
#include <zlib.h>

#include "check.h"
#include "ft/io.h"

static char dir[64];

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static long maxrss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, n, f) == n, "cannot write %s", path);
    if (f) fclose(f);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int mentions(const char *msg, const char *part) { return msg && strstr(msg, part) != NULL; }

/* Loads path as a checkpoint, expecting an error that mentions want. */
static void expect_h5_error(const char *path, const char *want) {
    ft_checkpoint c;
    long before = maxrss_mb();
    int rc = ft_h5_load(path, &c);
    CHECK(rc != 0, "%s: loaded, expected an error mentioning '%s'", path, want);
    if (rc == 0) ft_checkpoint_free(&c);
    else CHECK(mentions(ft_last_error(), want), "%s: error '%s' does not mention '%s'", path, ft_last_error(), want);
    CHECK(maxrss_mb() - before < 64, "%s: peak RSS grew by %ld MB", path, maxrss_mb() - before);
}

/* ---- HDF5 --------------------------------------------------------------------- */

static hid_t h5_create(const char *path) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
}

static void h5_small_dataset(hid_t loc, const char *name) {
    hsize_t dims[1] = {3};
    float v[3] = {1, 2, 3};
    hid_t space = H5Screate_simple(1, dims, NULL);
    hid_t d = H5Dcreate2(loc, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(d);
    H5Sclose(space);
}

static void test_h5_never_written_dataset(void) {
    const char *path = tmp_path("fill.h5");
    hid_t f = h5_create(path);
    hsize_t dims[2] = {30000, 30000};
    hid_t space = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, "big", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(space);
    H5Fclose(f);
    CHECK(file_size(path) < 4096, "the never-written file has %ld bytes", file_size(path));
    expect_h5_error(path, "dataset '/big'");
    expect_h5_error(path, "no data written");
}

static void test_h5_dot_and_slash_collide(void) {
    const char *path = tmp_path("collide.h5");
    hid_t f = h5_create(path);
    h5_small_dataset(f, "a.b");
    hid_t g = H5Gcreate2(f, "a", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    h5_small_dataset(g, "b");
    H5Gclose(g);
    H5Fclose(f);
    expect_h5_error(path, "'/a.b'");
    expect_h5_error(path, "'/a/b'");
    expect_h5_error(path, "tensor name 'a.b'");
}

static void test_h5_hard_links(void) {
    /* a group linked into itself: without a check, a walk that never ends */
    const char *path = tmp_path("cycle.h5");
    hid_t f = h5_create(path);
    hid_t g = H5Gcreate2(f, "g", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    h5_small_dataset(g, "w");
    H5Lcreate_hard(g, ".", g, "again", H5P_DEFAULT, H5P_DEFAULT);
    H5Gclose(g);
    H5Fclose(f);
    expect_h5_error(path, "already loaded");
    /* one dataset under a thousand names would load a thousand times */
    path = tmp_path("links.h5");
    f = h5_create(path);
    h5_small_dataset(f, "w");
    H5Lcreate_hard(f, "w", f, "w2", H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    expect_h5_error(path, "already loaded");
}

/* Offset of the first occurrence of needle in the file's bytes, or -1. */
static long find_in(const unsigned char *bytes, long n, const char *needle) {
    size_t len = strlen(needle);
    for (long k = 0; k + (long)len <= n; k++)
        if (memcmp(bytes + k, needle, len) == 0) return k;
    return -1;
}

static void test_h5_corrupt_attribute(void) {
    /* A checkpoint whose metadata attribute has its datatype damaged: libhdf5 decodes it
     * part way, fails, and crashes when the file is closed, unless the loader refuses
     * the attribute messages first. */
    char good[256];
    snprintf(good, sizeof good, "%s", tmp_path("meta.h5"));
    ft_tensor *w = ft_full((int64_t[]){2}, 1, FT_FLOAT32, 1.5);
    const char *names[] = {"w"};
    ft_meta meta[] = {{.key = "stepcount", .kind = FT_META_INT, .i = 7},
                      {.key = "configjson", .kind = FT_META_STRING, .str = "{\"n\": 1}"}};
    CHECK(ft_h5_save(good, 1, names, &w, 2, meta) == 0, "save: %s", ft_last_error());
    ft_release(w);
    long n = file_size(good);
    unsigned char *bytes = malloc((size_t)n);
    FILE *fp = fopen(good, "rb");
    CHECK(fp && fread(bytes, 1, (size_t)n, fp) == (size_t)n, "cannot read back %s", good);
    if (fp) fclose(fp);
    for (int which = 0; which < 2; which++) {
        const char *name = which ? "configjson" : "stepcount";
        long at = find_in(bytes, n, name);
        CHECK(at > 0, "attribute name '%s' not found in the file", name);
        if (at <= 0) continue;
        /* The datatype message follows the name, padded to 8 bytes (version 1 attribute
         * messages): damage its class and version byte, then its size. */
        long dt = at + (((long)strlen(name) + 1 + 7) / 8) * 8;
        for (int variant = 0; variant < 3; variant++) {
            unsigned char *bad = malloc((size_t)n);
            memcpy(bad, bytes, (size_t)n);
            if (variant == 0) bad[dt] = 0x1b;              /* float class, version 1 -> bad fields */
            else if (variant == 1) bad[dt + 4] = 0xff;      /* element size */
            else bad[dt] ^= 0x40;                           /* datatype version */
            const char *path = tmp_path("meta_bad.h5");
            write_bytes(path, bad, (size_t)n);
            free(bad);
            ft_checkpoint c;
            int rc = ft_h5_load(path, &c);   /* must return, not crash now or at close */
            if (rc == 0) ft_checkpoint_free(&c);
            else CHECK(mentions(ft_last_error(), path), "error '%s' does not name the file", ft_last_error());
        }
    }
    free(bytes);
    /* and the library still works */
    ft_checkpoint c;
    CHECK(ft_h5_load(good, &c) == 0, "good file: %s", ft_last_error());
    if (c.n == 1) CHECK(ft_f32(c.tensors[0])[1] == 1.5f, "value read back");
    ft_checkpoint_free(&c);
}

static void test_h5_data_past_end(void) {
    const char *path = tmp_path("past_end.h5");
    int64_t shape[1] = {100000};
    ft_tensor *w = ft_full(shape, 1, FT_FLOAT32, 2.0);
    const char *names[] = {"w"};
    CHECK(ft_h5_save(path, 1, names, &w, 0, NULL) == 0, "save: %s", ft_last_error());
    ft_release(w);
    CHECK(truncate(path, file_size(path) - 200000) == 0, "truncate");
    expect_h5_error(path, path);
}

/* ---- PNG ---------------------------------------------------------------------- */

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Appends one chunk (length, type, data, CRC) to buf at *n. */
static void chunk(unsigned char *buf, size_t *n, const char *type, const unsigned char *data, uint32_t len) {
    put32(buf + *n, len);
    memcpy(buf + *n + 4, type, 4);
    if (len) memcpy(buf + *n + 8, data, len);
    put32(buf + *n + 8 + len, (uint32_t)crc32(crc32(0, NULL, 0), buf + *n + 4, len + 4));
    *n += 12 + len;
}

/* A gray 8-bit PNG of w x h whose IDAT holds zdata (a zlib stream). */
static size_t make_png(unsigned char *buf, uint32_t w, uint32_t h, const unsigned char *zdata, uint32_t zlen) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t n = 0;
    memcpy(buf, sig, 8);
    n = 8;
    unsigned char ihdr[13] = {0};
    put32(ihdr, w);
    put32(ihdr + 4, h);
    ihdr[8] = 8;   /* bit depth; colour type 0 (gray), no interlace */
    chunk(buf, &n, "IHDR", ihdr, 13);
    chunk(buf, &n, "IDAT", zdata, zlen);
    chunk(buf, &n, "IEND", NULL, 0);
    return n;
}

static void expect_png_error(const char *path, const char *want) {
    long before = maxrss_mb();
    ft_tensor *t = ft_png_load(path);
    CHECK(!t, "%s: loaded, expected an error mentioning '%s'", path, want);
    ft_release(t);
    if (!t) CHECK(mentions(ft_last_error(), want), "%s: error '%s' does not mention '%s'", path, ft_last_error(), want);
    CHECK(maxrss_mb() - before < 64, "%s: peak RSS grew by %ld MB", path, maxrss_mb() - before);
}

static void test_png_claims_more_than_it_holds(void) {
    /* 20000 x 20000 pixels (400 MB of rows, 1.6 GB of floats) from a few hundred bytes */
    unsigned char z[256];
    uLongf zlen = sizeof z;
    unsigned char rows[64] = {0};
    compress2(z, &zlen, rows, sizeof rows, 9);
    unsigned char *png = malloc(1024);
    size_t n = make_png(png, 20000, 20000, z, (uint32_t)zlen);
    const char *path = tmp_path("claims.png");
    write_bytes(path, png, n);
    free(png);
    expect_png_error(path, "claims 20000x20000 pixels");
}

static void test_png_zlib_bomb_over_the_limit(void) {
    /* A real bomb: 8200 x 8200 zero rows deflate to ~65 KB; 67 M values is over the limit. */
    const uint32_t w = 8200, h = 8200;
    size_t raw = (size_t)h * (w + 1);
    unsigned char *rows = calloc(raw, 1);
    uLongf zlen = compressBound((uLong)raw);
    unsigned char *z = malloc(zlen);
    CHECK(rows && z && compress2(z, &zlen, rows, (uLong)raw, 9) == Z_OK, "compress");
    free(rows);
    unsigned char *png = malloc(zlen + 128);
    size_t n = make_png(png, w, h, z, (uint32_t)zlen);
    free(z);
    const char *path = tmp_path("bomb.png");
    write_bytes(path, png, n);
    free(png);
    CHECK(file_size(path) < 200000, "the bomb has %ld bytes", file_size(path));
    expect_png_error(path, "over the limit");
    /* sides past the limit are refused by libpng's user limits, before any row */
    unsigned char small[256];
    uLongf slen = sizeof small;
    unsigned char zero[8] = {0};
    compress2(small, &slen, zero, sizeof zero, 9);
    png = malloc(1024);
    n = make_png(png, 40000, 1, small, (uint32_t)slen);
    path = tmp_path("wide.png");
    write_bytes(path, png, n);
    free(png);
    expect_png_error(path, "limit");
}

/* ---- IDX ---------------------------------------------------------------------- */

static void write_gz(const char *path, const void *data, size_t n, const void *tail, size_t tail_n) {
    gzFile gz = gzopen(path, "wb");
    gzwrite(gz, data, (unsigned)n);
    gzclose(gz);
    if (tail_n) {
        FILE *f = fopen(path, "ab");
        fwrite(tail, 1, tail_n, f);
        fclose(f);
    }
}

static void expect_idx_error(const char *path, const char *want) {
    long before = maxrss_mb();
    ft_tensor *t = ft_idx_read(path, FT_FLOAT32, 1, 0);
    CHECK(!t, "%s: loaded, expected an error mentioning '%s'", path, want);
    ft_release(t);
    if (!t) CHECK(mentions(ft_last_error(), want), "%s: error '%s' does not mention '%s'", path, ft_last_error(), want);
    CHECK(maxrss_mb() - before < 64, "%s: peak RSS grew by %ld MB", path, maxrss_mb() - before);
}

static void test_idx_gz_claims_more_than_it_holds(void) {
    /* header: ubyte, 3 dims, 60000 x 28 x 28 (47 MB); data: 10 bytes */
    unsigned char buf[16 + 10] = {0, 0, 0x08, 3};
    put32(buf + 4, 60000);
    put32(buf + 8, 28);
    put32(buf + 12, 28);
    const char *path = tmp_path("claims-idx3-ubyte.gz");
    write_gz(path, buf, sizeof buf, NULL, 0);
    expect_idx_error(path, "more than a");
    /* a header of 4 x 1 GB dims claims more than the limit */
    put32(buf + 4, 0x7fffffff);
    put32(buf + 8, 0x7fffffff);
    path = tmp_path("huge-idx3-ubyte");
    write_bytes(path, buf, sizeof buf);
    expect_idx_error(path, "over the limit");
}

static void test_idx_trailing_garbage(void) {
    unsigned char buf[8 + 3] = {0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9};
    const char *path = tmp_path("garbage-idx1-ubyte.gz");
    write_gz(path, buf, sizeof buf, "garbage!", 8);
    expect_idx_error(path, "trailing garbage");
    path = tmp_path("ok-idx1-ubyte.gz");
    write_gz(path, buf, sizeof buf, NULL, 0);
    ft_tensor *t = ft_idx_read(path, FT_FLOAT32, 1, 0);
    CHECK(t && ft_numel(t) == 3 && ft_f32(t)[2] == 9.0f, "the clean file loads: %s", t ? "" : ft_last_error());
    ft_release(t);
}

/* ---- safetensors ---------------------------------------------------------------- */

static void write_st(const char *path, const char *header, const void *data, size_t n) {
    size_t hlen = strlen(header);
    unsigned char *buf = malloc(8 + hlen + n);
    for (int b = 0; b < 8; b++) buf[b] = (unsigned char)((uint64_t)hlen >> (8 * b));
    memcpy(buf + 8, header, hlen);
    memcpy(buf + 8 + hlen, data, n);
    write_bytes(path, buf, 8 + hlen + n);
    free(buf);
}

static void expect_st_error(const char *header, const char *want) {
    const char *path = tmp_path("bad.safetensors");
    float data[2] = {1, 2};
    write_st(path, header, data, sizeof data);
    ft_st_file f;
    int rc = ft_st_open(path, &f);
    CHECK(rc != 0, "header %s: opened, expected an error mentioning '%s'", header, want);
    if (rc == 0) ft_st_close(&f);
    else CHECK(mentions(ft_last_error(), want), "header %s: error '%s' does not mention '%s'", header, ft_last_error(), want);
}

static void test_safetensors_header_tricks(void) {
    const char *ok = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    const char *path = tmp_path("ok.safetensors");
    float data[2] = {1, 2};
    write_st(path, ok, data, sizeof data);
    ft_st_file f;
    CHECK(ft_st_open(path, &f) == 0, "the clean file: %s", ft_last_error());
    ft_st_close(&f);
    expect_st_error("{\"w\":{\"dtype\":\"F32\\u0000x\",\"shape\":[2],\"data_offsets\":[0,8]}}", "zero character");
    expect_st_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", "not an integer");
    expect_st_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8e0]}}", "not an integer");
    expect_st_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", "leading zero");
    expect_st_error("{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "not valid UTF-8");
    expect_st_error("{\"w\\ud800\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "lone surrogate");
    expect_st_error("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "'dtype' twice");
    expect_st_error("{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"b\":\"2\"},"
                    "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "'__metadata__' twice");
    expect_st_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", "w");
}

/* ---- atomic writes ------------------------------------------------------------------ */

static void test_atomic_clean(void) {
    const char *path = tmp_path("target.bin");
    char stale[300], live[300];
    pid_t child = fork();
    if (child == 0) _exit(0);
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {}
    snprintf(stale, sizeof stale, "%s.tmp-%ld-0", path, (long)child);   /* a process that is gone */
    snprintf(live, sizeof live, "%s.tmp-%ld-0", path, (long)getppid());   /* one that is alive */
    write_bytes(stale, "x", 1);
    write_bytes(live, "y", 1);
    CHECK(ft_write_file(path, "new", 3) == 0, "write: %s", ft_last_error());
    CHECK(access(stale, F_OK) != 0, "the dead writer's temporary file is still there");
    CHECK(access(live, F_OK) == 0, "a live process's temporary file was removed");
    unlink(live);
    size_t n;
    char *back = ft_read_file(path, 0, &n);
    CHECK(back && n == 3 && memcmp(back, "new", 3) == 0, "read back");
    free(back);
    CHECK(ft_read_file(path, 2, &n) == NULL && mentions(ft_last_error(), "limit"), "the size limit");
}

static void cleanup(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ftlua-io-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    static const check_test tests[] = {
        CHECK_TEST(test_h5_never_written_dataset), CHECK_TEST(test_h5_dot_and_slash_collide),
        CHECK_TEST(test_h5_hard_links),            CHECK_TEST(test_h5_corrupt_attribute),
        CHECK_TEST(test_h5_data_past_end),         CHECK_TEST(test_png_claims_more_than_it_holds),
        CHECK_TEST(test_png_zlib_bomb_over_the_limit), CHECK_TEST(test_idx_gz_claims_more_than_it_holds),
        CHECK_TEST(test_idx_trailing_garbage),     CHECK_TEST(test_safetensors_header_tricks),
        CHECK_TEST(test_atomic_clean),
    };
    int rc = check_run("test_io_loaders", tests, sizeof tests / sizeof tests[0]);
    cleanup();
    return rc;
}
