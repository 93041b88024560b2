/* The data-parallel gradient reducer (ft/reducer.h). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ft/autograd.h"
#include "ft/dist.h"
#include "ft/reducer.h"

typedef struct {
    int first, count;        /* positions in r->order */
    int64_t numel;           /* gradient floats (the flags follow them in buf) */
    float *buf;              /* [numel + count]: gradients, then 1 per parameter that had one */
    int ready;               /* parameters whose gradient this pass has completed */
    bool started, done;
    ft_dist_request *request;
    double started_at, done_at;
} bucket;

struct ft_reducer {
    int n;
    ft_tensor **params;
    char **names;
    int *order;              /* bucket order -> parameter index (reverse registration) */
    int *bucket_of;          /* parameter index -> bucket */
    int64_t *offset;         /* parameter index -> offset in its bucket's buffer */
    int *slot;               /* parameter index -> its place in its bucket (its flag's) */
    bool *ready;             /* parameter index -> completed this pass */
    int *by_address;         /* parameter indices sorted by tensor address, for lookups */
    int n_buckets;
    bucket *buckets;
    int next_start, next_done;
    bool armed, late;        /* late: a gradient completed after its bucket had started */
    bool overlap;            /* start buckets during backward (else all at its end) */
    int late_param;
    double armed_at;
    ft_reducer_times times;
};

static ft_reducer *armed_reducer; /* the one whose hooks are installed */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const ft_tensor *const *sort_params; /* qsort has no context argument */
static int by_address_cmp(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)sort_params[*(const int *)a], y = (uintptr_t)sort_params[*(const int *)b];
    return x < y ? -1 : x > y;
}

/* The parameter index of tensor t, or -1. */
static int param_index(const ft_reducer *r, const ft_tensor *t) {
    int lo = 0, hi = r->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const ft_tensor *p = r->params[r->by_address[mid]];
        if (p == t) return r->by_address[mid];
        if ((uintptr_t)p < (uintptr_t)t) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

void ft_reducer_free(ft_reducer *r) {
    if (!r) return;
    if (armed_reducer == r) ft_reducer_disarm(r);
    for (int b = 0; b < r->n_buckets; b++) {
        ft_dist_wait(r->buckets[b].request); /* never leave MPI writing into freed memory */
        free(r->buckets[b].buf);
    }
    for (int i = 0; i < r->n; i++) {
        ft_release(r->params ? r->params[i] : NULL);
        if (r->names) free(r->names[i]);
    }
    free(r->params), free(r->names), free(r->order), free(r->bucket_of), free(r->offset), free(r->slot), free(r->ready);
    free(r->by_address), free(r->buckets);
    free(r);
}

ft_reducer *ft_reducer_new(int n, ft_tensor *const *params, const char *const *names, int64_t bucket_bytes) {
    if (n < 1) {
        ft_set_error("ft.dist.DataParallel: the model has no parameter that requires grad");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (params[i]->dtype != FT_FLOAT32 || params[i]->grad_fn) {
            ft_set_error("ft.dist.DataParallel: parameter '%s' must be a float32 leaf to be trained across ranks "
                         "(it is %s%s)",
                         names[i], ft_dtype_name(params[i]->dtype), params[i]->grad_fn ? ", not a leaf" : "");
            return NULL;
        }
    ft_reducer *r = calloc(1, sizeof *r);
    if (!r) goto oom;
    r->n = n;
    r->overlap = true;
    r->params = calloc((size_t)n, sizeof *r->params);
    r->names = calloc((size_t)n, sizeof *r->names);
    r->order = malloc(sizeof *r->order * (size_t)n);
    r->bucket_of = malloc(sizeof *r->bucket_of * (size_t)n);
    r->offset = malloc(sizeof *r->offset * (size_t)n);
    r->slot = malloc(sizeof *r->slot * (size_t)n);
    r->ready = calloc((size_t)n, sizeof *r->ready);
    r->by_address = malloc(sizeof *r->by_address * (size_t)n);
    r->buckets = calloc((size_t)n, sizeof *r->buckets); /* at most one per parameter */
    if (!r->params || !r->names || !r->order || !r->bucket_of || !r->offset || !r->slot || !r->ready || !r->by_address ||
        !r->buckets)
        goto oom;
    for (int i = 0; i < n; i++) {
        r->params[i] = ft_retain(params[i]);
        if (!(r->names[i] = strdup(names[i]))) goto oom;
        r->order[i] = n - 1 - i;
        r->by_address[i] = i;
    }
    sort_params = (const ft_tensor *const *)r->params;
    qsort(r->by_address, (size_t)n, sizeof *r->by_address, by_address_cmp);
    for (int i = 1; i < n; i++)
        if (r->params[r->by_address[i]] == r->params[r->by_address[i - 1]]) {
            ft_set_error("ft.dist.DataParallel: parameters '%s' and '%s' are the same tensor",
                         r->names[r->by_address[i - 1]], r->names[r->by_address[i]]);
            ft_reducer_free(r);
            return NULL;
        }

    for (int k = 0; k < n;) { /* fill buckets up to bucket_bytes, in bucket order */
        bucket *b = &r->buckets[r->n_buckets];
        b->first = k;
        do {
            int p = r->order[k++];
            r->bucket_of[p] = r->n_buckets;
            r->offset[p] = b->numel;
            r->slot[p] = b->count;
            b->numel += ft_numel(r->params[p]);
            b->count++;
        } while (k < n && (b->numel + ft_numel(r->params[r->order[k]])) * (int64_t)sizeof(float) <= bucket_bytes);
        if (!(b->buf = malloc(sizeof(float) * (size_t)(b->numel + b->count)))) goto oom;
        r->n_buckets++;
    }
    return r;
oom:
    ft_set_error("ft.dist.DataParallel: out of memory for the gradient buckets");
    ft_reducer_free(r);
    return NULL;
}

static void start_bucket(ft_reducer *r, bucket *b) {
    for (int k = b->first; k < b->first + b->count; k++) {
        int p = r->order[k];
        const ft_tensor *g = r->params[p]->grad;
        float *dst = b->buf + r->offset[p];
        int64_t numel = ft_numel(r->params[p]);
        if (g && ft_is_contiguous(g) && g->dtype == FT_FLOAT32) {
            memcpy(dst, ft_f32(g), sizeof(float) * (size_t)numel);
        } else if (g) { /* a strided or non-float32 gradient: through a float32 view of the buffer */
            ft_tensor *view = ft_from_external(dst, sizeof(float) * (size_t)numel, g->shape, g->ndim, FT_FLOAT32, NULL, NULL);
            if (view) ft_copy_(view, g);
            ft_release(view);
        } else {
            memset(dst, 0, sizeof(float) * (size_t)numel);
        }
        b->buf[b->numel + (k - b->first)] = g ? 1.0f : 0.0f;
    }
    b->started = true;
    b->started_at = now() - r->armed_at;
    if (ft_dist_isum_f32(b->buf, b->numel + b->count, &b->request) < 0) b->request = NULL; /* error: seen at wait */
}

/* Starts the buckets that can start, in order. */
static void start_ready(ft_reducer *r) {
    while (r->next_start < r->n_buckets && r->buckets[r->next_start].ready == r->buckets[r->next_start].count)
        start_bucket(r, &r->buckets[r->next_start++]);
}

/* Lets MPI progress every sum in flight (each one tested: the library may advance only the
 * request it is asked about) and notes those that have completed. */
static int poll(ft_reducer *r) {
    for (int k = r->next_done; k < r->next_start; k++) {
        bucket *b = &r->buckets[k];
        if (b->done) continue;
        bool done;
        if (ft_dist_test(b->request, &done) < 0) return -1;
        if (!done) continue;
        b->request = NULL;
        b->done = true;
        b->done_at = now() - r->armed_at;
    }
    while (r->next_done < r->next_start && r->buckets[r->next_done].done) r->next_done++;
    return 0;
}

static void on_leaf_done(ft_tensor *leaf, void *user) {
    ft_reducer *r = user;
    int p = param_index(r, leaf);
    if (p < 0 || r->ready[p]) return;
    bucket *b = &r->buckets[r->bucket_of[p]];
    if (b->started) { /* its bucket went out without it */
        if (!r->late) r->late_param = p;
        r->late = true;
        return;
    }
    if (r->times.first_gradient == 0) r->times.first_gradient = now() - r->armed_at;
    r->ready[p] = true;
    b->ready++;
    if (r->overlap) start_ready(r);
}

static void on_node_done(void *user) {
    ft_reducer *r = user;
    if (r->times.backward_start == 0) r->times.backward_start = now() - r->armed_at;
    poll(r);
}

/* The gradients' average over ranks, written back to the parameters. */
static int write_back(ft_reducer *r) {
    float inv = 1.0f / (float)ft_dist_world_size();
    for (int p = 0; p < r->n; p++) {
        ft_tensor *param = r->params[p];
        bucket *b = &r->buckets[r->bucket_of[p]];
        if (b->buf[b->numel + r->slot[p]] == 0.0f) continue; /* no rank had a gradient: none */
        ft_tensor *g = param->grad;
        if (!g || !ft_is_contiguous(g) || g->dtype != FT_FLOAT32 || g->storage->refcount > 1) {
            ft_tensor *fresh = ft_empty(param->shape, param->ndim, FT_FLOAT32);
            if (!fresh) return -1;
            ft_release(param->grad);
            param->grad = g = fresh;
        }
        const float *src = b->buf + r->offset[p];
        float *dst = ft_f32(g);
        for (int64_t i = 0, numel = ft_numel(param); i < numel; i++) dst[i] = src[i] * inv;
    }
    return 0;
}

static int on_pass_done(void *user) {
    ft_reducer *r = user;
    bool reached = false;
    for (int p = 0; p < r->n && !reached; p++) reached = r->ready[p];
    if (!reached && !r->late) return 0; /* a pass of some other graph: stay armed */
    r->times.backward_end = now() - r->armed_at;
    ft_set_backward_hooks(NULL);
    armed_reducer = NULL;
    r->armed = false;
    while (r->next_start < r->n_buckets) start_bucket(r, &r->buckets[r->next_start++]);
    int rc = 0;
    for (int b = r->next_done; b < r->n_buckets; b++) {
        bucket *bk = &r->buckets[b];
        if (bk->done) continue;
        if (ft_dist_wait(bk->request) < 0) rc = -1;
        bk->request = NULL;
        bk->done = true;
        bk->done_at = now() - r->armed_at;
    }
    r->next_done = r->n_buckets;
    if (rc < 0) return -1;
    if (r->late) {
        ft_set_error("ft.dist.DataParallel: the gradient of '%s' was completed after its bucket had been reduced "
                     "(a parameter reached by two checkpointed blocks, or by two backward passes of one step: "
                     "backward once per forward)",
                     r->names[r->late_param]);
        return -1;
    }
    if (write_back(r) < 0) return -1;
    r->times.reduced = now() - r->armed_at;
    return 0;
}

int ft_reducer_arm(ft_reducer *r) {
    if (armed_reducer && armed_reducer != r) ft_reducer_disarm(armed_reducer);
    for (int b = 0; b < r->n_buckets; b++) /* sums of an abandoned pass finish before reuse */
        if (ft_dist_wait(r->buckets[b].request) < 0) return -1;
    for (int b = 0; b < r->n_buckets; b++) {
        bucket *bk = &r->buckets[b];
        bk->ready = 0;
        bk->started = bk->done = false;
        bk->request = NULL;
        bk->started_at = bk->done_at = 0;
    }
    memset(r->ready, 0, sizeof *r->ready * (size_t)r->n);
    r->next_start = r->next_done = 0;
    r->late = false;
    memset(&r->times, 0, sizeof r->times);
    r->armed_at = now();
    r->armed = true;
    armed_reducer = r;
    ft_set_backward_hooks(&(ft_backward_hooks){on_leaf_done, on_node_done, on_pass_done, r});
    return 0;
}

void ft_reducer_disarm(ft_reducer *r) {
    if (armed_reducer == r) {
        ft_set_backward_hooks(NULL);
        armed_reducer = NULL;
    }
    r->armed = false;
}

bool ft_reducer_armed(const ft_reducer *r) { return r->armed; }
void ft_reducer_set_overlap(ft_reducer *r, bool overlap) { r->overlap = overlap; }
int ft_reducer_n_buckets(const ft_reducer *r) { return r->n_buckets; }
int ft_reducer_param_at(const ft_reducer *r, int k) { return r->order[k]; }

ft_bucket_info ft_reducer_bucket(const ft_reducer *r, int b) {
    const bucket *bk = &r->buckets[b];
    return (ft_bucket_info){bk->first, bk->count, bk->numel * (int64_t)sizeof(float), bk->started_at, bk->done_at};
}

ft_reducer_times ft_reducer_times_of(const ft_reducer *r) { return r->times; }
