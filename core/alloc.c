/* Storage buffers. Large buffers come straight from mmap and are kept in a small cache
 * keyed by size when freed: a training loop allocates the same sizes every step, so
 * they are reused instead of faulting fresh pages in, and resident memory follows the
 * loop's peak instead of growing with malloc's heap fragmentation. Sizes are rounded up
 * to classes (four per power of two) so that batches of varying length reuse them too. */
#define _DEFAULT_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "alloc.h"

#define LARGE_BYTES (256u << 10)      /* from this size on, buffers are mmapped pages */
#define PAGE 4096u
#define CACHE_SLOTS 512
#define CACHE_MAX_BYTES (1ull << 30)  /* cached bytes beyond this are returned to the OS */
#define MAX_BYTES ((size_t)1 << 62)     /* larger requests are refused: no machine serves them, and
                                         * the size classes below must not overflow */

typedef struct {
    void *ptr;
    size_t size;
} block;

static block cache[CACHE_SLOTS];
static int cache_len = 0;
static size_t cache_bytes = 0;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

/* The size class of a large request (LARGE_BYTES <= nbytes <= MAX_BYTES): rounded up to a
 * quarter of its power of two (at most 25% more, usually less), then to whole pages. */
static size_t large_size(size_t nbytes) {
    size_t pow2 = LARGE_BYTES;
    while (pow2 <= nbytes / 2) pow2 *= 2;
    size_t step = pow2 / 4;
    size_t size = (nbytes + step - 1) / step * step;
    return (size + PAGE - 1) / PAGE * PAGE;
}

/* Bytes handed out and not yet freed (storages are the only users, so this follows
 * ft_live_bytes), and its high-water mark since the last ft_reset_peak_bytes(). */
static size_t used_bytes = 0;
static size_t peak_bytes = 0;

static void count_alloc(size_t nbytes) {
    size_t now = __atomic_add_fetch(&used_bytes, nbytes, __ATOMIC_RELAXED);
    size_t peak = __atomic_load_n(&peak_bytes, __ATOMIC_RELAXED);
    while (now > peak &&
           !__atomic_compare_exchange_n(&peak_bytes, &peak, now, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

size_t ft_peak_bytes(void) { return __atomic_load_n(&peak_bytes, __ATOMIC_RELAXED); }

void ft_reset_peak_bytes(void) {
    __atomic_store_n(&peak_bytes, __atomic_load_n(&used_bytes, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
}

/* *fresh tells whether the block is new anonymous pages (which read as zero). */
static void *alloc_block(size_t nbytes, bool *fresh) {
    *fresh = false;
    if (nbytes < LARGE_BYTES) {
        size_t rounded = (nbytes + 63) / 64 * 64;
        return aligned_alloc(64, rounded ? rounded : 64);
    }
    size_t size = large_size(nbytes);
    pthread_mutex_lock(&cache_lock);
    for (int i = cache_len - 1; i >= 0; i--) {
        if (cache[i].size == size) {
            void *p = cache[i].ptr;
            cache[i] = cache[--cache_len];
            cache_bytes -= size;
            pthread_mutex_unlock(&cache_lock);
            return p;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *fresh = p != MAP_FAILED;
    return p == MAP_FAILED ? NULL : p;
}

void *ft_alloc(size_t nbytes) {
    if (nbytes > MAX_BYTES) return NULL;   /* the caller reports it as out of memory */
    bool fresh;
    void *p = alloc_block(nbytes, &fresh);
    if (p) count_alloc(nbytes);
    return p;
}

void *ft_alloc_zeroed(size_t nbytes) {
    if (nbytes > MAX_BYTES) return NULL;
    bool fresh;
    void *p = alloc_block(nbytes, &fresh);
    if (!p) return NULL;
    count_alloc(nbytes);
    if (!fresh) memset(p, 0, nbytes);   /* fresh pages stay untouched: no resident memory yet */
    return p;
}

void ft_free(void *ptr, size_t nbytes) {
    if (!ptr) return;
    __atomic_sub_fetch(&used_bytes, nbytes, __ATOMIC_RELAXED);
    if (nbytes < LARGE_BYTES) {
        free(ptr);
        return;
    }
    size_t size = large_size(nbytes);
    pthread_mutex_lock(&cache_lock);
    /* Make room: evict the oldest blocks (front of the array) first. */
    while (cache_len > 0 && (cache_len == CACHE_SLOTS || cache_bytes + size > CACHE_MAX_BYTES)) {
        munmap(cache[0].ptr, cache[0].size);
        cache_bytes -= cache[0].size;
        memmove(cache, cache + 1, sizeof(block) * (size_t)--cache_len);
    }
    if (size <= CACHE_MAX_BYTES) {
        cache[cache_len++] = (block){ptr, size};
        cache_bytes += size;
        ptr = NULL;
    }
    pthread_mutex_unlock(&cache_lock);
    if (ptr) munmap(ptr, size);
}

void ft_empty_cache(void) {
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < cache_len; i++) munmap(cache[i].ptr, cache[i].size);
    cache_len = 0;
    cache_bytes = 0;
    pthread_mutex_unlock(&cache_lock);
}

size_t ft_cached_bytes(void) {
    pthread_mutex_lock(&cache_lock);
    size_t n = cache_bytes;
    pthread_mutex_unlock(&cache_lock);
    return n;
}
