/* The storage allocator's cache of freed large buffers (core/alloc.c): a size freed and asked
 * for again is served from the cache; and the cache never takes the large buffers' memory
 * (handed out plus cached) more than a quarter above the most ever handed out at once, so a
 * phase that frees one set of sizes and then needs another (a recomputed stage) does not hold
 * both. */
#include "check.h"

#define MIB ((int64_t)1 << 18)   /* float32 elements in 1 MiB */

static ft_tensor *block_of(int64_t mib) {
    int64_t n = mib * MIB;
    return ft_empty(&n, 1, FT_FLOAT32);
}

static void test_same_size_comes_back_from_the_cache(void) {
    ft_empty_cache();
    ft_tensor *a = block_of(8);
    void *p = ft_data(a);
    ft_release(a);
    CHECK(ft_cached_bytes() >= (size_t)(8 << 20), "a freed 8 MiB buffer is cached (%zu bytes cached)",
          ft_cached_bytes());
    ft_tensor *b = block_of(8);
    CHECK(ft_data(b) == p, "the same size is served from the cache");
    CHECK(ft_cached_bytes() == 0, "and leaves it (%zu bytes cached)", ft_cached_bytes());
    ft_release(b);
    ft_empty_cache();
}

static void test_other_sizes_make_room(void) {
    ft_empty_cache();
    /* phase 1: 8 x 16 MiB held at once (the peak), then freed into the cache */
    ft_tensor *first[8];
    for (int i = 0; i < 8; i++) first[i] = block_of(16);
    for (int i = 0; i < 8; i++) ft_release(first[i]);
    size_t peak = (size_t)8 * (16 << 20);
    CHECK(ft_cached_bytes() == peak, "phase 1 is cached (%zu bytes)", ft_cached_bytes());
    /* phase 2: the same bytes in another size class; the cache cannot serve them, so it must
     * give back phase 1's buffers instead of keeping them beside phase 2's */
    ft_tensor *second[8];
    for (int i = 0; i < 8; i++) second[i] = block_of(12);
    size_t held = (size_t)8 * (12 << 20);
    CHECK(held + ft_cached_bytes() <= peak + peak / 4,
          "handed out %zu + cached %zu stays within a quarter above the peak %zu", held, ft_cached_bytes(), peak);
    CHECK(ft_cached_bytes() < peak, "phase 1's buffers were returned (%zu bytes still cached)", ft_cached_bytes());
    for (int i = 0; i < 8; i++) ft_release(second[i]);
    ft_empty_cache();
    CHECK(ft_cached_bytes() == 0, "ft_empty_cache empties it");
}

static const check_test tests[] = {
    CHECK_TEST(test_same_size_comes_back_from_the_cache),
    CHECK_TEST(test_other_sizes_make_room),
};

int main(void) { return check_run("test_alloc", tests, sizeof tests / sizeof tests[0]); }
