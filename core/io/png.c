/* PNG images through libpng. Loading gives float32 [C,H,W] in [0,1] for every colour
 * type and bit depth (palettes expand to RGB, tRNS to an alpha channel, 1/2/4-bit gray
 * to 8 bits); saving writes 8-bit gray, gray+alpha, RGB or RGBA. libpng reports errors
 * by longjmp: everything allocated under setjmp is volatile and freed on that path. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <png.h>

#include "ft/io.h"

typedef struct {
    jmp_buf jump;
    char msg[256];
    char warning[128];   /* the last warning: libpng explains some errors only there */
    int limit;           /* a size limit was hit: the file need not be corrupt */
} png_failure;

static void on_error(png_structp png, png_const_charp msg) {
    png_failure *f = png_get_error_ptr(png);
    /* libpng's stdio reader says "Read Error" when the file ends early. */
    const char *what = strcmp(msg, "Read Error") == 0 ? "unexpected end of file" : msg;
    if (f->warning[0])
        snprintf(f->msg, sizeof f->msg, "%s (%s)", what, f->warning);
    else
        snprintf(f->msg, sizeof f->msg, "%s", what);
    f->limit = strstr(f->warning, "user limit") != NULL;
    longjmp(f->jump, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    /* warnings (e.g. unknown chunks, bad gamma) do not stop loading */
    png_failure *f = png_get_error_ptr(png);
    snprintf(f->warning, sizeof f->warning, "%s", msg);
}

/* ---- load ------------------------------------------------------------------- */

/* rows [H][W*C] interleaved, 8 or 16 bits (big-endian) -> out [C,H,W] in [0,1]. */
static void planar_from_rows(png_bytep *rows, int depth, int64_t C, int64_t H, int64_t W, float *out) {
    const float scale = depth == 16 ? 1.0f / 65535.0f : 1.0f / 255.0f;
    #pragma omp parallel for
    for (int64_t y = 0; y < H; y++) {
        const png_bytep row = rows[y];
        for (int64_t c = 0; c < C; c++) {
            float *dst = out + (c * H + y) * W;
            if (depth == 16)
                for (int64_t x = 0; x < W; x++) {
                    const png_bytep p = row + 2 * (x * C + c);
                    dst[x] = (float)((p[0] << 8) | p[1]) * scale;
                }
            else
                for (int64_t x = 0; x < W; x++) dst[x] = (float)row[x * C + c] * scale;
        }
    }
}

ft_tensor *ft_png_load(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        ft_set_error("cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        ft_set_error("cannot open '%s': %s", path, S_ISDIR(st.st_mode) ? "Is a directory" : "not a regular file");
        return NULL;
    }
    const off_t file_size = st.st_size;
    unsigned char sig[8];
    if (fread(sig, 1, sizeof sig, fp) != sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0) {
        fclose(fp);
        ft_set_error("'%s' is not a PNG file (no PNG signature)", path);
        return NULL;
    }
    png_failure failure = {.msg = ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &failure, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        fclose(fp);
        ft_set_error("cannot decode '%s': out of memory", path);
        return NULL;
    }
    unsigned char *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    ft_tensor *volatile t = NULL;
    if (setjmp(failure.jump)) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(fp);
        free(pixels);
        free(rows);
        ft_release(t);
        ft_set_error("cannot decode '%s': %s%s", path, failure.msg,
                     failure.limit ? "" : " (corrupt or truncated PNG)");
        return NULL;
    }
    png_init_io(png, fp);
    png_set_sig_bytes(png, sizeof sig);
    /* Limits before anything is read: the image's sides, and what ancillary chunks (text,
     * ICC profiles, unknown chunks) may allocate or how many of them are kept. */
    png_set_user_limits(png, FT_PNG_MAX_SIDE, FT_PNG_MAX_SIDE);
    png_set_chunk_cache_max(png, 1000);
    png_set_chunk_malloc_max(png, (png_alloc_size_t)8 << 20);
    png_read_info(png, info);
    {
        /* The compressed image data is at most the file, and deflate expands at most
         * 1032:1: an image claiming more rows than that (a zlib bomb, or a lying header)
         * is refused before its buffers are allocated. Each row has a filter byte; an
         * interlaced image has up to 7 passes of them. */
        const uint64_t raw_rowbytes = png_get_rowbytes(png, info);
        const uint64_t rows = png_get_image_height(png, info);
        const uint64_t raw = rows * (raw_rowbytes + 7);
        if (raw > ((uint64_t)file_size + 1024) * 1032) {
            snprintf(failure.msg, sizeof failure.msg, "its header claims %ux%u pixels, more than a "
                     "%lld-byte file can hold", (unsigned)png_get_image_width(png, info),
                     (unsigned)png_get_image_height(png, info), (long long)file_size);
            failure.limit = 1;
            longjmp(failure.jump, 1);
        }
    }
    /* palette -> RGB, tRNS -> alpha, gray 1/2/4 bits -> 8 bits; 16 bits stay 16. */
    png_set_expand(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    const int64_t W = png_get_image_width(png, info);
    const int64_t H = png_get_image_height(png, info);
    const int64_t C = png_get_channels(png, info);
    const int depth = png_get_bit_depth(png, info);
    const size_t rowbytes = png_get_rowbytes(png, info);
    if (depth != 8 && depth != 16) png_error(png, "unexpected bit depth after expansion");
    if (C * H * W > FT_PNG_MAX_VALUES) {
        snprintf(failure.msg, sizeof failure.msg, "%lldx%lld pixels of %lld channels are over the "
                 "limit of %lld values", (long long)W, (long long)H, (long long)C, (long long)FT_PNG_MAX_VALUES);
        failure.limit = 1;
        longjmp(failure.jump, 1);
    }
    if ((size_t)H > SIZE_MAX / rowbytes) png_error(png, "image too large");
    pixels = malloc(rowbytes * (size_t)H);
    rows = malloc((size_t)H * sizeof *rows);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (int64_t y = 0; y < H; y++) rows[y] = pixels + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);   /* checks the chunks after the image data too */

    int64_t shape[3] = {C, H, W};
    t = ft_empty(shape, 3, FT_FLOAT32);
    if (!t) png_error(png, "out of memory");
    planar_from_rows(rows, depth, C, H, W, ft_f32(t));

    png_destroy_read_struct(&png, &info, NULL);
    fclose(fp);
    free(pixels);
    free(rows);
    return t;
}

/* ---- save ------------------------------------------------------------------- */

static int write_png(FILE *fp, png_bytep *rows, int64_t C, int64_t H, int64_t W, char *msg, size_t msglen) {
    static const int color_types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                       PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    png_failure failure = {.msg = ""};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &failure, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(png ? &png : NULL, NULL);
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    if (setjmp(failure.jump)) {
        png_destroy_write_struct(&png, &info);
        snprintf(msg, msglen, "%s", failure.msg);
        return -1;
    }
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)W, (png_uint_32)H, 8, color_types[C], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int ft_png_save(const char *path, const ft_tensor *t) {
    char buf[128];
    if (t->dtype != FT_FLOAT32) {
        ft_set_error("cannot save '%s': expected a float32 tensor with values in [0,1], got %s",
                     path, ft_dtype_name(t->dtype));
        return -1;
    }
    const int64_t C = t->ndim == 3 ? t->shape[0] : 1;
    const int64_t H = t->shape[t->ndim - 2 >= 0 ? t->ndim - 2 : 0];
    const int64_t W = t->ndim >= 2 ? t->shape[t->ndim - 1] : 0;
    if ((t->ndim != 2 && t->ndim != 3) || C < 1 || C > 4 || H < 1 || W < 1 ||
        H > 0x7fffffff || W > 0x7fffffff) {
        ft_set_error("cannot save '%s': expected an image [C,H,W] with C = 1, 2, 3 or 4 "
                     "or [H,W], got %s", path, ft_shape_str(t->shape, t->ndim, buf, sizeof buf));
        return -1;
    }
    ft_tensor *c = ft_contiguous(t);
    unsigned char *pixels = c ? malloc((size_t)(C * H * W)) : NULL;
    png_bytep *rows = pixels ? malloc((size_t)H * sizeof *rows) : NULL;
    if (!rows) {
        ft_release(c);
        free(pixels);
        ft_set_error("cannot save '%s': out of memory", path);
        return -1;
    }
    /* [C,H,W] planar floats -> interleaved bytes; clamp to [0,1], round, NaN -> 0. */
    const float *src = ft_f32(c);
    #pragma omp parallel for
    for (int64_t y = 0; y < H; y++) {
        unsigned char *row = pixels + y * W * C;
        for (int64_t ch = 0; ch < C; ch++) {
            const float *plane = src + (ch * H + y) * W;
            for (int64_t x = 0; x < W; x++) {
                float v = plane[x];
                v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;   /* NaN fails v > 0 */
                row[x * C + ch] = (unsigned char)(v * 255.0f + 0.5f);
            }
        }
        rows[y] = row;
    }
    ft_release(c);

    int rc = -1;
    char msg[256] = "";
    ft_atomic_file af;
    if (ft_atomic_open(&af, path) == 0) {
        int fd = dup(af.fd);
        FILE *fp = fd >= 0 ? fdopen(fd, "wb") : NULL;
        if (!fp) {
            snprintf(msg, sizeof msg, "%s", strerror(errno));
            if (fd >= 0) close(fd);
        } else {
            errno = 0;
            rc = write_png(fp, rows, C, H, W, msg, sizeof msg);
            int err = errno;
            if (fclose(fp) != 0 && rc == 0) {
                rc = -1;
                snprintf(msg, sizeof msg, "%s", strerror(errno));
            } else if (rc != 0 && err) {
                size_t used = strlen(msg);
                snprintf(msg + used, sizeof msg - used, ": %s", strerror(err));
            }
        }
        if (rc == 0) {
            rc = ft_atomic_commit(&af);
        } else {
            ft_atomic_abort(&af);
            ft_set_error("cannot write '%s': %s", path, msg);
        }
    }
    free(pixels);
    free(rows);
    return rc;
}
