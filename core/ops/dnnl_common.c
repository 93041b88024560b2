/* The oneDNN engine and stream shared by the oneDNN-backed ops. */
#include "dnnl_common.h"

#include <dnnl_debug.h>
#include <stdlib.h>

#include "ft/tensor.h"

pthread_mutex_t ft_dnnl_lock = PTHREAD_MUTEX_INITIALIZER;
dnnl_engine_t ft_dnnl_engine;
dnnl_stream_t ft_dnnl_stream;

/* At exit, after the ops' own at-exit releases (registered later, so run earlier). */
static void stop(void) {
    pthread_mutex_lock(&ft_dnnl_lock);
    if (ft_dnnl_stream) dnnl_stream_destroy(ft_dnnl_stream);
    if (ft_dnnl_engine) dnnl_engine_destroy(ft_dnnl_engine);
    ft_dnnl_stream = NULL;
    ft_dnnl_engine = NULL;
    pthread_mutex_unlock(&ft_dnnl_lock);
}

int ft_dnnl_start(const char *op) {
    if (ft_dnnl_engine) return 0;
    dnnl_status_t st = dnnl_engine_create(&ft_dnnl_engine, dnnl_cpu, 0);
    if (st != dnnl_success) {
        ft_dnnl_engine = NULL;
        ft_set_error("%s: oneDNN: creating the CPU engine failed (%s)", op, dnnl_status2str(st));
        return -1;
    }
    st = dnnl_stream_create(&ft_dnnl_stream, ft_dnnl_engine, dnnl_stream_default_flags);
    if (st != dnnl_success) {
        dnnl_engine_destroy(ft_dnnl_engine);
        ft_dnnl_engine = NULL;
        ft_dnnl_stream = NULL;
        ft_set_error("%s: oneDNN: creating a stream failed (%s)", op, dnnl_status2str(st));
        return -1;
    }
    atexit(stop);
    return 0;
}

uint64_t ft_dnnl_tick(void) {
    static uint64_t clock;
    return ++clock;
}

int ft_dnnl_slot_to_fill(const void *entries, size_t stride, int n) {
    int pick = 0;
    for (int i = 0; i < n; i++) {
        const ft_dnnl_slot *e = (const ft_dnnl_slot *)((const char *)entries + (size_t)i * stride);
        const ft_dnnl_slot *best = (const ft_dnnl_slot *)((const char *)entries + (size_t)pick * stride);
        if (!e->used) return i;
        if (e->last_use < best->last_use) pick = i;
    }
    return pick;
}

const char *ft_dnnl_isa(void) {
    switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "all";
    }
}
