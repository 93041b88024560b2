/* Aligned (64-byte) buffers for tensor storage; see alloc.c. */
#ifndef FT_ALLOC_H
#define FT_ALLOC_H

#include <stddef.h>

void *ft_alloc(size_t nbytes);
void *ft_alloc_zeroed(size_t nbytes);   /* reads as zero; fresh pages are left untouched */
void ft_free(void *ptr, size_t nbytes);
void ft_empty_cache(void);      /* returns cached buffers to the OS */
size_t ft_cached_bytes(void);

#endif
