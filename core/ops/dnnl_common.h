/* What the oneDNN-backed ops (conv_dnnl.c, matmul_dnnl.c) share: one CPU engine, one stream
 * and the lock that serialises every call on them. Only built with FT_HAVE_DNNL. */
#ifndef FT_DNNL_COMMON_H
#define FT_DNNL_COMMON_H

#include <dnnl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern pthread_mutex_t ft_dnnl_lock;   /* held around every use of the engine and stream */
extern dnnl_engine_t ft_dnnl_engine;
extern dnnl_stream_t ft_dnnl_stream;

/* Creates the engine and stream on first use (call with ft_dnnl_lock held). 0, or -1 with the
 * error set, prefixed by op. */
int ft_dnnl_start(const char *op);

/* The head of an entry of the ops' primitive caches (small arrays, least recently used out). */
typedef struct {
    bool used;
    uint64_t last_use;   /* ft_dnnl_tick() of its last use */
} ft_dnnl_slot;

/* A fresh, increasing use time (call with ft_dnnl_lock held). */
uint64_t ft_dnnl_tick(void);

/* The index of the entry to fill among n entries `stride` bytes apart, each starting with an
 * ft_dnnl_slot: the first unused one, else the least recently used. */
int ft_dnnl_slot_to_fill(const void *entries, size_t stride, int n);

/* The instruction set oneDNN's kernels use on this CPU ("avx512_core_bf16", "avx2", ...). */
const char *ft_dnnl_isa(void);

#endif
