/* Size arithmetic and argument limits of the core: shapes whose element or byte counts pass
 * int64 are refused with a clear error (never a wrapped count or an endless allocator loop),
 * views stay inside their storage, int64 tensors hold only integers, thread counts are
 * bounded, and softmax over a row with nothing to attend to gives zeros. */
#include "check.h"

/* The allocator's entry point (core/alloc.h is private to the core). */
void *ft_alloc(size_t nbytes);

static void test_shape_overflow(void) {
    int64_t big[2] = {(int64_t)1 << 32, (int64_t)1 << 32};
    check_error("ones 2^32 x 2^32", ft_full(big, 2, FT_FLOAT32, 1.0), "shape [4294967296,4294967296] has more than 2^63 elements");
    int64_t numel = -1;
    CHECK(!ft_shape_numel(big, 2, &numel), "ft_shape_numel accepted 2^64 elements");
    /* a zero size does not hide the other dims' overflow (their strides would wrap) */
    int64_t zero_big[3] = {0, (int64_t)1 << 40, (int64_t)1 << 40};
    check_error("zeros 0 x 2^40 x 2^40", ft_zeros(zero_big, 3, FT_FLOAT32), "more than 2^63 elements");
    int64_t fine[3] = {0, (int64_t)1 << 40, 4};
    CHECK(ft_shape_numel(fine, 3, &numel) && numel == 0, "0 x 2^40 x 4: numel %lld", (long long)numel);
    int64_t neg[2] = {2, -3};
    check_error("negative size", ft_zeros(neg, 2, FT_FLOAT32), "negative size in shape [2,-3]");
}

static void test_byte_overflow(void) {
    /* 2^61 float32 elements fit int64 as a count but not as bytes (2^63) */
    int64_t n = (int64_t)1 << 61;
    check_error("zeros 2^61", ft_zeros(&n, 1, FT_FLOAT32), "would need more than 2^62 bytes");
    /* 2^59 elements = 2^61 bytes: within the limits, but no machine has them */
    n = (int64_t)1 << 59;
    check_error("zeros 2^59", ft_zeros(&n, 1, FT_FLOAT32), "out of memory");
    /* the allocator itself refuses what it cannot serve instead of looping over size classes */
    void *p = ft_alloc((size_t)1 << 63);
    CHECK(p == NULL, "ft_alloc(2^63) returned memory");
    p = ft_alloc(SIZE_MAX);
    CHECK(p == NULL, "ft_alloc(SIZE_MAX) returned memory");
}

static void test_views_stay_inside(void) {
    int64_t five = 5;
    ft_tensor *t = ft_zeros(&five, 1, FT_FLOAT32);
    check_error("narrow past the end by overflow", ft_narrow(t, 0, 1, INT64_MAX), "exceeds size 5");
    check_error("narrow start past the end", ft_narrow(t, 0, 6, 0), "exceeds size 5");
    ft_tensor *ok = ft_narrow(t, 0, 5, 0);
    CHECK(ok && ft_numel(ok) == 0, "narrow(5, 0) of 5 should be an empty view");
    ft_release(ok);
    int64_t huge[3] = {(int64_t)1 << 40, (int64_t)1 << 40, 5};
    check_error("expand to 2^80 elements", ft_expand(t, huge, 3), "more than 2^63 elements");
    int64_t zero = 0;
    ft_tensor *e = ft_zeros(&zero, 1, FT_FLOAT32);
    int64_t vz[3] = {0, (int64_t)1 << 40, (int64_t)1 << 40};
    check_error("view of an empty tensor with overflowing sizes", ft_view(e, vz, 3), "more than 2^63 elements");
    int64_t vbig[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
    check_error("view with a product past int64", ft_view(t, vbig, 2), "is invalid for a tensor of shape [5]");
    ft_release(e);
    ft_release(t);
}

static void test_cat_sizes_add_up(void) {
    int64_t one = 1, half[1] = {(int64_t)1 << 62};
    ft_tensor *base = ft_zeros(&one, 1, FT_FLOAT32);
    ft_tensor *wide = ft_expand(base, half, 1);   /* stride 0: no memory */
    CHECK(wide != NULL, "expand to 2^62: %s", ft_last_error());
    if (wide) {
        ft_tensor *parts[2] = {wide, wide};
        check_error("cat of 2 x 2^62", ft_cat(parts, 2, 0), "add up to more than 2^63");
    }
    ft_release(wide);
    ft_release(base);
}

/* BLAS counts in int: a matrix with 2^31 rows is refused before anything is allocated */
static void test_blas_dims(void) {
    int64_t one[2] = {1, 1}, tall[2] = {(int64_t)1 << 31, 1};
    ft_tensor *small = ft_zeros(one, 2, FT_FLOAT32);
    ft_tensor *big = ft_expand(small, tall, 2);   /* stride 0: no memory */
    CHECK(big != NULL, "expand: %s", ft_last_error());
    if (big) {
        check_error("matmul with 2^31 rows", ft_matmul(big, small), "more than BLAS supports");
        check_error("linear with 2^31 rows", ft_linear(big, small, NULL), "more than BLAS supports");
    }
    ft_release(big);
    ft_release(small);
}

static void test_int64_values(void) {
    int64_t three = 3;
    check_error("full int64 NaN", ft_full(&three, 1, FT_INT64, NAN), "is not an integer");
    check_error("full int64 1.5", ft_full(&three, 1, FT_INT64, 1.5), "is not an integer");
    check_error("full int64 1e30", ft_full(&three, 1, FT_INT64, 1e30), "is not an integer");
    ft_tensor *t = ft_full(&three, 1, FT_INT64, -7);
    CHECK(t && ft_i64(t)[2] == -7, "full int64 -7");
    CHECK(t && ft_fill_(t, INFINITY) < 0, "fill_ int64 inf accepted");
    CHECK(t && ft_i64(t)[0] == -7, "a refused fill_ changed the tensor");
    ft_release(t);
    CHECK(ft_is_int64_value(-0x1p63) && !ft_is_int64_value(0x1p63), "int64 range ends");
    /* float values without an int64 value are refused, others truncate toward zero */
    float bad[3] = {1.0f, NAN, 2.0f}, ok[2] = {-1.7f, 1e18f};
    ft_tensor *fb = ft_from_data(bad, &three, 1, FT_FLOAT32);
    check_error("float NaN to int64", ft_to_dtype(fb, FT_INT64), "float value nan has no int64 value");
    ft_release(fb);
    int64_t two = 2;
    ft_tensor *fo = ft_from_data(ok, &two, 1, FT_FLOAT32);
    ft_tensor *io = ft_to_dtype(fo, FT_INT64);
    CHECK(io && ft_i64(io)[0] == -1 && ft_i64(io)[1] == 999999984306749440LL, "float to int64 truncation");
    ft_release(io);
    ft_release(fo);
    /* int64 arithmetic wraps around (as torch), without signed overflow */
    int64_t one = 1, max = INT64_MAX;
    ft_tensor *m = ft_from_data(&max, &one, 1, FT_INT64), *mm = ft_mul_scalar(m, 2), *ma = ft_add(m, m);
    ft_tensor *mn = ft_add_scalar(m, 1), *neg = mn ? ft_neg(mn) : NULL;
    CHECK(mm && ft_i64(mm)[0] == -2, "int64 max * 2");
    CHECK(ma && ft_i64(ma)[0] == -2, "int64 max + max");
    CHECK(mn && ft_i64(mn)[0] == INT64_MIN, "int64 max + 1");
    CHECK(neg && ft_i64(neg)[0] == INT64_MIN, "-int64 min");
    ft_release(neg);
    ft_release(mn);
    ft_release(ma);
    ft_release(mm);
    ft_release(m);
    /* the widest range draws without signed overflow */
    ft_tensor *r = ft_randint(INT64_MIN, INT64_MAX, &three, 1);
    CHECK(r != NULL, "randint over the whole int64 range: %s", ft_last_error());
    ft_release(r);
}

static void test_thread_limit(void) {
    int before = ft_get_num_threads();
    CHECK(ft_set_num_threads(FT_MAX_THREADS + 1) < 0, "set_num_threads above the limit accepted");
    CHECK(strstr(ft_last_error(), "at most 256") != NULL, "error: %s", ft_last_error());
    CHECK(ft_get_num_threads() == before, "a refused set_num_threads changed the count");
    CHECK(ft_set_num_threads(2) == 0, "set_num_threads(2)");
}

/* softmax over -inf only (a fully masked attention row): zeros and a zero gradient. Along
 * dim 1 of [2,3] (rows, the inner-1 path) and dim 0 of its [3,2] transpose copy (columns,
 * the blocked path); the first row/column is fully masked. */
static void test_softmax_masked_row(void) {
    static const float rows[6] = {-INFINITY, -INFINITY, -INFINITY, 1, 2, -INFINITY};
    static const float cols[6] = {-INFINITY, 1, -INFINITY, 2, -INFINITY, -INFINITY};
    int64_t shape_rows[2] = {2, 3}, shape_cols[2] = {3, 2};
    for (int k = 0; k < 2; k++) {
        ft_tensor *x = leaf(ft_from_data(k == 0 ? rows : cols, k == 0 ? shape_rows : shape_cols, 2, FT_FLOAT32));
        ft_tensor *y = ft_softmax(x, k == 0 ? 1 : 0);
        CHECK(y != NULL, "softmax: %s", ft_last_error());
        if (!y) {
            ft_release(x);
            continue;
        }
        double masked = 0;
        for (int i = 0; i < 3; i++) masked += fabs(at(y, k == 0 ? i : 2 * i));
        CHECK(masked == 0, "softmax %d: a masked row gives sum |y| = %g", k, masked);
        for (int64_t i = 0; i < 6; i++) CHECK(!isnan(at(y, i)), "softmax %d: element %lld is NaN", k, (long long)i);
        double live = at(y, k == 0 ? 3 : 1) + at(y, k == 0 ? 4 : 3);
        CHECK(fabs(live - 1.0) < 1e-6, "softmax %d: the unmasked row sums to %g", k, live);
        ft_tensor *g = uniform(y->shape, y->ndim, -1, 1);
        CHECK(ft_backward(y, g, false) == 0, "backward: %s", ft_last_error());
        for (int64_t i = 0; x->grad && i < 6; i++)
            CHECK(isfinite(at(x->grad, i)), "softmax %d: gradient %lld is not finite", k, (long long)i);
        ft_release(g);
        ft_release(y);
        ft_release(x);
    }
    /* a NaN still propagates */
    float nan_row[2] = {NAN, -INFINITY};
    int64_t two = 2;
    ft_tensor *x = ft_from_data(nan_row, &two, 1, FT_FLOAT32);
    ft_tensor *y = ft_softmax(x, 0);
    CHECK(y && isnan(ft_f32(y)[0]) && ft_f32(y)[1] == 0, "softmax of {nan, -inf}");
    ft_release(y);
    ft_release(x);
}

static const check_test tests[] = {
    CHECK_TEST(test_shape_overflow),   CHECK_TEST(test_byte_overflow), CHECK_TEST(test_views_stay_inside),
    CHECK_TEST(test_cat_sizes_add_up), CHECK_TEST(test_blas_dims),     CHECK_TEST(test_int64_values),  CHECK_TEST(test_thread_limit),
    CHECK_TEST(test_softmax_masked_row),
};

int main(void) { return check_run("test_tensor_limits", tests, sizeof tests / sizeof tests[0]); }
