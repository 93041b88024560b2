/* Internals of the tokenizer (core/text): the pieces each stage works on and the
 * component types. Every stage works on UTF-8 bytes; the input is validated once. */
#ifndef FT_TOKENIZER_INTERNAL_H
#define FT_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <oniguruma.h>

#include "ft/tensor.h"
#include "ft/tokenizer.h"

/* ---- bytes, UTF-8, hashing (util.c) --------------------------------------------------- */

typedef struct tk_buf {
    char *p;
    size_t n, cap;
} tk_buf;

/* Room for extra more bytes plus a NUL; -1 with an error when memory runs out. */
int tk_buf_reserve(tk_buf *b, size_t extra);
int tk_buf_add(tk_buf *b, const void *s, size_t len);
void tk_buf_free(tk_buf *b);
/* Appends one id; -1 when memory runs out. */
int tk_ids_push(ft_token_ids *ids, int32_t id);
int tk_ids_reserve(ft_token_ids *ids, size_t extra);
/* Grows *p (elements of size each) to hold at least need elements. */
int tk_grow(void **p, size_t *cap, size_t need, size_t size);

/* Offset of the first byte that does not start a valid UTF-8 sequence (as Rust's str
 * defines it: no overlongs, surrogates or values past U+10FFFF), or n when all is valid. */
size_t tk_utf8_invalid_at(const char *s, size_t n);
/* Decodes the char at s (valid UTF-8); returns its byte length. */
static inline size_t tk_utf8_decode(const char *s, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) { *cp = u[0]; return 1; }
    if (u[0] < 0xE0) { *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F); return 2; }
    if (u[0] < 0xF0) {
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
          ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
    return 4;
}
/* Byte length of the char starting with byte c (valid UTF-8). */
static inline size_t tk_utf8_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}
/* Writes cp as UTF-8 into out (4 bytes of room); returns the length. */
size_t tk_utf8_encode(uint32_t cp, char *out);
/* Start of the last char of s[0..n) (n > 0, valid UTF-8). */
size_t tk_utf8_last(const char *s, size_t n);
uint64_t tk_hash(const void *s, size_t n);

/* Unicode classes as Rust's char methods define them, read from utf8proc's and
 * Oniguruma's tables. */
bool tk_is_whitespace(uint32_t cp);   /* White_Space (char::is_whitespace) */
bool tk_is_word(uint32_t cp);         /* \w */
bool tk_is_numeric(uint32_t cp);      /* Nd, Nl, No (char::is_numeric) */
bool tk_is_punctuation(uint32_t cp);  /* ASCII punctuation or a P* category */
bool tk_is_alphanumeric(uint32_t cp); /* Alphabetic or numeric */

/* ---- token string -> id (vocab.c) ---------------------------------------------------- */

typedef struct tk_vocab_slot {
    uint64_t hash;
    uint32_t off, len;   /* in the arena */
    int32_t id;          /* -1: empty slot */
} tk_vocab_slot;

typedef struct tk_vocab {
    tk_buf arena;        /* token strings, each NUL-terminated */
    tk_vocab_slot *slots;
    size_t cap, count;   /* cap: a power of two */
} tk_vocab;

int tk_vocab_init(tk_vocab *v, size_t expected);
/* Adds s -> id. Returns 0, 1 when s is already there (left unchanged), -1 on no memory. */
int tk_vocab_add(tk_vocab *v, const char *s, size_t len, int32_t id);
/* The id of s, or -1. */
int32_t tk_vocab_get(const tk_vocab *v, const char *s, size_t len);
/* The string of the slot that holds s (NUL-terminated, in the arena), or NULL. */
const char *tk_vocab_str(const tk_vocab *v, const char *s, size_t len);
void tk_vocab_free(tk_vocab *v);

/* (left id, right id) -> (rank, merged id), the BPE merges; one 16-byte slot per pair so
 * that a lookup touches one cache line. */
typedef struct tk_pair_slot {
    uint64_t key;        /* UINT64_MAX: empty */
    uint32_t rank;
    int32_t merged;
} tk_pair_slot;

typedef struct tk_pairs {
    tk_pair_slot *slots;
    size_t cap, count;
} tk_pairs;

int tk_pairs_init(tk_pairs *m, size_t expected);
/* Sets (a, b) -> (rank, merged); a later merge of the same pair replaces the earlier one. */
int tk_pairs_set(tk_pairs *m, int32_t a, int32_t b, uint32_t rank, int32_t merged);
static inline uint64_t tk_pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }
static inline uint64_t tk_mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
    return x;
}
/* Index of the slot of (a, b), or -1. */
static inline int64_t tk_pairs_find(const tk_pairs *m, int32_t a, int32_t b) {
    if (!m->cap) return -1;
    uint64_t key = tk_pair_key(a, b);
    size_t mask = m->cap - 1, i = (size_t)tk_mix64(key) & mask;
    for (;;) {
        if (m->slots[i].key == key) return (int64_t)i;
        if (m->slots[i].key == UINT64_MAX) return -1;
        i = (i + 1) & mask;
    }
}
void tk_pairs_free(tk_pairs *m);

/* ---- reading tokenizer.json (config.c) ------------------------------------------------ */

/* Where a component sits: the file and the JSON path, for error messages. */
typedef struct tk_src {
    const char *file;
} tk_src;

/* Sets "<file>: <where>: <message>". Returns -1. */
int tk_fail(const tk_src *src, const char *where, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Builds "<where>.<key>" (or "<where>[i]" for key NULL) into buf. */
const char *tk_path(char *buf, size_t size, const char *where, const char *key, int index);
/* Checks that obj is an object holding only keys from known (NULL-terminated). */
int tk_check_object(const tk_src *src, const char *where, const cJSON *obj, const char *const *known);
/* obj's "type" string (required). */
int tk_get_type(const tk_src *src, const char *where, const cJSON *obj, const char **type);
/* Field getters. An absent or null field gives the default when required is false. */
int tk_get_string(const tk_src *src, const char *where, const cJSON *obj, const char *key,
                  bool required, const char **out, size_t *len);
int tk_get_bool(const tk_src *src, const char *where, const cJSON *obj, const char *key,
                bool required, bool def, bool *out);
int tk_get_int(const tk_src *src, const char *where, const cJSON *obj, const char *key,
               bool required, int64_t def, int64_t lo, int64_t hi, int64_t *out);
/* A string holding exactly one char; its code point and UTF-8 bytes. */
int tk_get_char(const tk_src *src, const char *where, const cJSON *obj, const char *key,
                bool required, uint32_t def, uint32_t *cp);
/* A required array field. */
int tk_get_array(const tk_src *src, const char *where, const cJSON *obj, const char *key,
                 const cJSON **out);
/* strdup of n bytes (NUL-terminated); NULL with an error on no memory. */
char *tk_strndup(const char *s, size_t n);

/* ---- regular expressions (regex.c) ---------------------------------------------------- */

/* A compiled Oniguruma pattern (Ruby syntax, UTF-8), as HF's onig-based SysRegex. */
typedef struct tk_regex {
    OnigRegex re;
    OnigRegion *region;
} tk_regex;

/* One stretch of a text: a match of the pattern or the text between two matches. */
typedef struct tk_span {
    size_t start, end;
    bool match;
} tk_span;

typedef struct tk_spans {
    tk_span *p;
    size_t n, cap;
} tk_spans;

/* Compiles pattern; literal escapes it first (a "String" pattern). */
int tk_regex_compile(tk_regex *r, const tk_src *src, const char *where, const char *pattern,
                     size_t len, bool literal);
/* Reads a {"String": s} or {"Regex": r} pattern object at obj[key] and compiles it. */
int tk_regex_from_json(tk_regex *r, const tk_src *src, const char *where, const cJSON *obj,
                       const char *key);
/* Spans of s covering it in order, as HF's Pattern::find_matches (an empty text gives one
 * empty non-match; empty matches appear as empty match spans). */
int tk_regex_find(tk_regex *r, const char *s, size_t n, tk_spans *out);
void tk_regex_free(tk_regex *r);
int tk_spans_push(tk_spans *sp, size_t start, size_t end, bool match);
/* Spans of s for a char predicate, as HF's Pattern for Fn(char) -> bool: each matching
 * char alone, the runs between as non-matches. */
int tk_spans_by_char(const char *s, size_t n, bool (*pred)(uint32_t, uint32_t), uint32_t arg,
                     tk_spans *out);

/* ---- the pieces a text is cut into ---------------------------------------------------- */

/* A stretch of the work arena: still text (id < 0) or an added token already found. */
typedef struct tk_piece {
    size_t off, len;
    int32_t id;
    bool at_start;   /* begins at offset 0 of the original text (Metaspace's "first") */
} tk_piece;

typedef struct tk_pieces {
    tk_piece *p;
    size_t n, cap;
} tk_pieces;

int tk_pieces_push(tk_pieces *ps, size_t off, size_t len, int32_t id, bool at_start);

/* Work buffers of one tokenizer, reused across encodes. */
typedef struct tk_work {
    tk_buf arena;            /* text of every piece */
    tk_pieces pieces, tmp;   /* the current cut and the one being built */
    tk_buf norm_a, norm_b;   /* normalizer in/out */
    int32_t *cps;            /* code points for utf8proc */
    size_t cps_cap;
    tk_spans spans;
    ft_token_ids seq_a, seq_b;
    /* BPE */
    void *symbols, *heap;
    size_t symbols_cap, heap_cap;
} tk_work;

void tk_work_free(tk_work *w);

/* ---- normalizers (normalizer.c) ------------------------------------------------------- */

typedef enum {
    TK_NORM_NFC, TK_NORM_NFD, TK_NORM_NFKC, TK_NORM_NFKD, TK_NORM_LOWERCASE, TK_NORM_REPLACE,
    TK_NORM_PREPEND, TK_NORM_STRIP, TK_NORM_STRIP_ACCENTS, TK_NORM_BYTE_LEVEL, TK_NORM_BERT,
    TK_NORM_SEQUENCE
} tk_norm_kind;

typedef struct tk_normalizer {
    tk_norm_kind kind;
    char *text;                  /* Prepend's prefix, Replace's content */
    size_t text_len;
    tk_regex re;                 /* Replace */
    bool left, right;            /* Strip */
    bool clean_text, chinese, lowercase;   /* BertNormalizer */
    int strip_accents;           /* BertNormalizer: -1 unset (follows lowercase), 0, 1 */
    struct tk_normalizer *items; /* Sequence */
    size_t n_items;
} tk_normalizer;

/* Parses the normalizer at obj (non-null) into n. */
int tk_normalizer_parse(tk_normalizer *n, const tk_src *src, const char *where, const cJSON *obj);
/* Normalizes s in place. *lead_dropped is set when leading chars of the text were removed
 * (the result then no longer starts at the text's first char). */
int tk_normalize(const tk_normalizer *n, tk_buf *s, tk_work *w, bool *lead_dropped);
void tk_normalizer_free(tk_normalizer *n);

/* ---- pre-tokenizers (pretokenizer.c) -------------------------------------------------- */

typedef enum {
    TK_SPLIT_REMOVED, TK_SPLIT_ISOLATED, TK_SPLIT_MERGED_WITH_PREVIOUS, TK_SPLIT_MERGED_WITH_NEXT,
    TK_SPLIT_CONTIGUOUS
} tk_split_behavior;

typedef enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER } tk_prepend_scheme;

typedef enum {
    TK_PRE_SPLIT, TK_PRE_BYTE_LEVEL, TK_PRE_METASPACE, TK_PRE_DIGITS, TK_PRE_WHITESPACE,
    TK_PRE_WHITESPACE_SPLIT, TK_PRE_PUNCTUATION, TK_PRE_BERT, TK_PRE_CHAR_DELIMITER,
    TK_PRE_SEQUENCE
} tk_pre_kind;

typedef struct tk_pretokenizer {
    tk_pre_kind kind;
    tk_regex re;                    /* Split, ByteLevel (the GPT-2 pattern), Whitespace */
    tk_split_behavior behavior;     /* Split, Punctuation */
    bool invert;                    /* Split */
    bool add_prefix_space, use_regex;  /* ByteLevel */
    uint32_t cp;                    /* Metaspace's replacement, CharDelimiterSplit's delimiter */
    tk_prepend_scheme prepend;      /* Metaspace */
    bool split;                     /* Metaspace */
    bool individual_digits;         /* Digits */
    struct tk_pretokenizer *items;  /* Sequence */
    size_t n_items;
} tk_pretokenizer;

int tk_pretokenizer_parse(tk_pretokenizer *p, const tk_src *src, const char *where, const cJSON *obj);
/* Cuts the text pieces of w->pieces further (added-token pieces pass through). */
int tk_pretokenize(const tk_pretokenizer *p, tk_work *w);
void tk_pretokenizer_free(tk_pretokenizer *p);
/* Splits the text pieces of w->pieces by spans from fn, with HF's split behaviours. */
int tk_split_pieces(tk_work *w, tk_split_behavior behavior, bool invert,
                    int (*find)(const void *ctx, const char *s, size_t n, tk_spans *out),
                    const void *ctx);
/* Reads a Metaspace "prepend_scheme" (and the legacy "add_prefix_space") at obj. */
int tk_parse_prepend_scheme(const tk_src *src, const char *where, const cJSON *obj, tk_prepend_scheme *out);
/* The byte -> char map of byte-level BPE (GPT-2's bytes_to_unicode): the UTF-8 of the
 * char byte b stands for (its length in *len), and its code point. */
const char *tk_byte_char(unsigned char b, size_t *len);
uint32_t tk_byte_char_cp(unsigned char b);
/* The byte a byte-level char stands for, or -1. */
int tk_char_byte(uint32_t cp);

/* ---- models (bpe.c, wordpiece.c) ------------------------------------------------------ */

typedef enum { TK_MODEL_BPE, TK_MODEL_WORDPIECE, TK_MODEL_WORDLEVEL } tk_model_kind;

/* One remembered word of the BPE cache. */
typedef struct tk_cache_entry {
    uint64_t hash;
    uint32_t key_len, n_ids;
    size_t cap;
    char *data;   /* key bytes, then n_ids int32 ids (4-byte aligned) */
} tk_cache_entry;

typedef struct tk_model {
    tk_model_kind kind;
    tk_vocab vocab;
    int32_t max_id;           /* largest id of the vocabulary */
    int32_t unk_id;           /* -1: none */
    char *unk_token;
    /* BPE */
    tk_pairs merges;
    char *prefix, *suffix;    /* continuing_subword_prefix, end_of_word_suffix (NULL: none) */
    size_t prefix_len, suffix_len;
    bool fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_ids[256];    /* ids of <0x00>..<0xFF>, -1 where missing */
    int32_t *char_ids;        /* id of each code point below TK_CHAR_IDS as a whole symbol, -2: look up */
    tk_cache_entry *cache;    /* word -> ids, TK_CACHE_SLOTS slots */
    /* WordPiece */
    int64_t max_input_chars_per_word;
} tk_model;

#define TK_CHAR_IDS 1024
#define TK_CACHE_SLOTS 16384     /* a power of two: words whose ids are remembered */
#define TK_CACHE_MAX_WORD 256    /* longer words are not cached (as HF) */

int tk_model_parse(tk_model *m, const tk_src *src, const char *where, const cJSON *obj);
int tk_bpe_parse(tk_model *m, const tk_src *src, const char *where, const cJSON *obj);
int tk_wordpiece_parse(tk_model *m, const tk_src *src, const char *where, const cJSON *obj, bool wordlevel);
/* Fills vocab (object token -> id) into m->vocab, checking types, ranges and duplicates. */
int tk_vocab_parse(tk_model *m, const tk_src *src, const char *where, const cJSON *vocab);
/* Appends the ids of one pre-token to out. */
int tk_model_tokenize(tk_model *m, const char *s, size_t n, tk_work *w, ft_token_ids *out);
int tk_bpe_tokenize(tk_model *m, const char *s, size_t n, tk_work *w, ft_token_ids *out);
int tk_wordpiece_tokenize(tk_model *m, const char *s, size_t n, ft_token_ids *out);
void tk_model_free(tk_model *m);

/* ---- added tokens (added_tokens.c) ---------------------------------------------------- */

typedef struct tk_added {
    char *content;
    size_t len;
    char *norm;            /* the normalized content (normalized tokens), else NULL */
    size_t norm_len;
    int32_t id;
    bool single_word, lstrip, rstrip, normalized, special;
} tk_added;

typedef struct tk_trie_node {
    int32_t child, sibling;  /* first child, next sibling (-1: none) */
    int32_t token;           /* index in tokens of the token ending here, -1 */
    unsigned char byte;
} tk_trie_node;

typedef struct tk_trie {
    tk_trie_node *nodes;
    size_t n, cap;
    int32_t root_child[256];  /* the root's children, by byte */
    size_t max_len;
} tk_trie;

typedef struct tk_added_vocab {
    tk_added *tokens;
    size_t n;
    tk_vocab map;              /* content -> id */
    tk_trie raw, normalized;   /* matched before / after the normalizer */
} tk_added_vocab;

struct ft_tokenizer;
/* Reads "added_tokens" (array) against the model's vocabulary; builds the two tries (the
 * normalized one with the contents as the normalizer makes them). */
int tk_added_parse(struct ft_tokenizer *tok, const tk_src *src, const cJSON *arr);
/* Normalizes the contents of normalized tokens and builds both tries (after the
 * normalizer is read). */
int tk_added_build(struct ft_tokenizer *tok);
/* Cuts each text piece of w->pieces around the added tokens of one trie. */
int tk_added_split(const struct ft_tokenizer *tok, bool normalized, tk_work *w);
void tk_added_free(tk_added_vocab *a);

/* ---- post-processors (post_processor.c) ----------------------------------------------- */

typedef struct tk_tpl_piece {
    bool special;     /* a special token (name index), else a sequence (A = 0, B = 1) */
    int index;
    int32_t type_id;
} tk_tpl_piece;

typedef struct tk_special_tok {
    char *name;
    int32_t *ids;
    size_t n_ids;
} tk_special_tok;

typedef enum { TK_POST_TEMPLATE, TK_POST_BYTE_LEVEL, TK_POST_BERT, TK_POST_ROBERTA, TK_POST_SEQUENCE } tk_post_kind;

typedef struct tk_post {
    tk_post_kind kind;
    tk_tpl_piece *single, *pair;
    size_t n_single, n_pair;
    tk_special_tok *specials;
    size_t n_specials;
    int32_t cls_id, sep_id;    /* Bert, Roberta */
    struct tk_post *items;     /* Sequence */
    size_t n_items;
} tk_post;

int tk_post_parse(tk_post *p, const tk_src *src, const char *where, const cJSON *obj,
                  const struct ft_tokenizer *tok);
/* Appends the final ids of a (and b, NULL for one text) to out. */
int tk_post_process(const tk_post *p, const ft_token_ids *a, const ft_token_ids *b,
                    bool add_special, ft_token_ids *out, ft_token_ids *tmp);
/* Ids the post-processor adds (for truncation). */
int64_t tk_post_added(const tk_post *p, bool pair);
void tk_post_free(tk_post *p);

/* ---- decoders (decoder.c) ------------------------------------------------------------- */

/* A list of strings, all in one buffer. */
typedef struct tk_strs {
    tk_buf text;
    size_t *off, *len;
    size_t n, cap;
} tk_strs;

int tk_strs_push(tk_strs *l, const char *s, size_t len);
void tk_strs_clear(tk_strs *l);
void tk_strs_free(tk_strs *l);

typedef enum {
    TK_DEC_BYTE_LEVEL, TK_DEC_REPLACE, TK_DEC_BYTE_FALLBACK, TK_DEC_FUSE, TK_DEC_STRIP,
    TK_DEC_METASPACE, TK_DEC_WORDPIECE, TK_DEC_BPE, TK_DEC_SEQUENCE
} tk_dec_kind;

typedef struct tk_decoder {
    tk_dec_kind kind;
    tk_regex re;                /* Replace */
    char *text;                 /* Replace's content, WordPiece's prefix, BPEDecoder's suffix */
    size_t text_len;
    uint32_t cp;                /* Strip's content, Metaspace's replacement */
    int64_t start, stop;        /* Strip */
    tk_prepend_scheme prepend;  /* Metaspace */
    bool cleanup;               /* WordPiece */
    struct tk_decoder *items;   /* Sequence */
    size_t n_items;
} tk_decoder;

int tk_decoder_parse(tk_decoder *d, const tk_src *src, const char *where, const cJSON *obj);
/* Runs the decoder on the token strings of in; the result goes to out (in is consumed). */
int tk_decode_chain(const tk_decoder *d, tk_strs *in, tk_strs *out);
void tk_decoder_free(tk_decoder *d);
/* transformers' clean_up_tokenization, in place. */
void tk_clean_up_tokenization(tk_buf *s);

/* ---- the tokenizer (tokenizer.c) ------------------------------------------------------ */

struct ft_tokenizer {
    tk_model model;
    tk_added_vocab added;
    tk_normalizer *normalizer;       /* NULL: none */
    tk_pretokenizer *pretokenizer;
    tk_post *post;
    tk_decoder *decoder;
    /* id -> token, and the string decode uses (an added token matched in its normalized
     * form decodes from that form, as HF) */
    const char **id_str, **dec_str;
    uint32_t *id_len, *dec_len;
    bool *special;
    int64_t vocab_size;
    bool split_special;
    int64_t trunc_max_length;        /* tokenizer.json "truncation" (0: none) */
    bool trunc_left;
    bool has_padding;                /* tokenizer.json "padding" */
    ft_tokenizer_padding padding;
    tk_work work;
};

#endif
