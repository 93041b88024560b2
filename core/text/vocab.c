/* The two hash tables of a tokenizer: token string -> id (open addressing over one
 * string arena) and BPE merge pair -> (rank, merged id). Both load in O(n). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

static size_t table_size(size_t expected) {
    size_t cap = 64;
    while (cap < expected * 2) cap *= 2;
    return cap;
}

int tk_vocab_init(tk_vocab *v, size_t expected) {
    memset(v, 0, sizeof *v);
    v->cap = table_size(expected);
    v->slots = malloc(v->cap * sizeof *v->slots);
    if (!v->slots) {
        ft_set_error("tokenizer: out of memory (vocabulary of %zu tokens)", expected);
        return -1;
    }
    for (size_t i = 0; i < v->cap; i++) v->slots[i].id = -1;
    return 0;
}

static int vocab_rehash(tk_vocab *v) {
    size_t cap = v->cap * 2;
    tk_vocab_slot *slots = malloc(cap * sizeof *slots);
    if (!slots) {
        ft_set_error("tokenizer: out of memory");
        return -1;
    }
    for (size_t i = 0; i < cap; i++) slots[i].id = -1;
    for (size_t i = 0; i < v->cap; i++) {
        if (v->slots[i].id < 0) continue;
        size_t j = (size_t)v->slots[i].hash & (cap - 1);
        while (slots[j].id >= 0) j = (j + 1) & (cap - 1);
        slots[j] = v->slots[i];
    }
    free(v->slots);
    v->slots = slots;
    v->cap = cap;
    return 0;
}

/* Slot of s, or of the empty slot where it would go. */
static size_t vocab_slot(const tk_vocab *v, const char *s, size_t len, uint64_t h) {
    size_t mask = v->cap - 1, i = (size_t)h & mask;
    for (;;) {
        const tk_vocab_slot *e = &v->slots[i];
        if (e->id < 0) return i;
        if (e->hash == h && e->len == len && memcmp(v->arena.p + e->off, s, len) == 0) return i;
        i = (i + 1) & mask;
    }
}

int tk_vocab_add(tk_vocab *v, const char *s, size_t len, int32_t id) {
    if (len > UINT32_MAX / 2 || v->arena.n > UINT32_MAX / 2) {
        ft_set_error("tokenizer: vocabulary strings too large");
        return -1;
    }
    if ((v->count + 1) * 2 > v->cap && vocab_rehash(v)) return -1;
    uint64_t h = tk_hash(s, len);
    size_t i = vocab_slot(v, s, len, h);
    if (v->slots[i].id >= 0) return 1;
    size_t off = v->arena.n;
    if (tk_buf_reserve(&v->arena, len + 1)) return -1;
    memcpy(v->arena.p + off, s, len);
    v->arena.p[off + len] = '\0';
    v->arena.n = off + len + 1;
    v->slots[i] = (tk_vocab_slot){h, (uint32_t)off, (uint32_t)len, id};
    v->count++;
    return 0;
}

int32_t tk_vocab_get(const tk_vocab *v, const char *s, size_t len) {
    if (!v->cap) return -1;
    size_t i = vocab_slot(v, s, len, tk_hash(s, len));
    return v->slots[i].id;
}

const char *tk_vocab_str(const tk_vocab *v, const char *s, size_t len) {
    if (!v->cap) return NULL;
    size_t i = vocab_slot(v, s, len, tk_hash(s, len));
    return v->slots[i].id >= 0 ? v->arena.p + v->slots[i].off : NULL;
}

void tk_vocab_free(tk_vocab *v) {
    tk_buf_free(&v->arena);
    free(v->slots);
    memset(v, 0, sizeof *v);
}

/* ---- merges -------------------------------------------------------------------------- */

int tk_pairs_init(tk_pairs *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = table_size(expected);
    m->slots = malloc(m->cap * sizeof *m->slots);
    if (!m->slots) {
        ft_set_error("tokenizer: out of memory (%zu merges)", expected);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) m->slots[i].key = UINT64_MAX;
    return 0;
}

int tk_pairs_set(tk_pairs *m, int32_t a, int32_t b, uint32_t rank, int32_t merged) {
    if ((m->count + 1) * 2 > m->cap) {
        tk_pairs bigger;
        if (tk_pairs_init(&bigger, m->cap)) return -1;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->slots[i].key == UINT64_MAX) continue;
            size_t j = (size_t)tk_mix64(m->slots[i].key) & (bigger.cap - 1);
            while (bigger.slots[j].key != UINT64_MAX) j = (j + 1) & (bigger.cap - 1);
            bigger.slots[j] = m->slots[i];
        }
        bigger.count = m->count;
        tk_pairs_free(m);
        *m = bigger;
    }
    uint64_t key = tk_pair_key(a, b);
    size_t mask = m->cap - 1, i = (size_t)tk_mix64(key) & mask;
    while (m->slots[i].key != UINT64_MAX && m->slots[i].key != key) i = (i + 1) & mask;
    if (m->slots[i].key == UINT64_MAX) m->count++;
    m->slots[i] = (tk_pair_slot){key, rank, merged};
    return 0;
}

void tk_pairs_free(tk_pairs *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}
