/* What the oneDNN-backed ops (conv_dnnl.c, matmul_dnnl.c) share: one CPU engine, one stream
 * and the lock that serialises every call on them. Only built with FT_HAVE_DNNL. */
#ifndef FT_DNNL_COMMON_H
#define FT_DNNL_COMMON_H

#include <dnnl.h>
#include <pthread.h>

extern pthread_mutex_t ft_dnnl_lock;   /* held around every use of the engine and stream */
extern dnnl_engine_t ft_dnnl_engine;
extern dnnl_stream_t ft_dnnl_stream;

/* Creates the engine and stream on first use (call with ft_dnnl_lock held). 0, or -1 with the
 * error set, prefixed by op. */
int ft_dnnl_start(const char *op);

/* The instruction set oneDNN's kernels use on this CPU ("avx512_core_bf16", "avx2", ...). */
const char *ft_dnnl_isa(void);

#endif
