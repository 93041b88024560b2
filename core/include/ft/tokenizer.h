/* HuggingFace tokenizers (tokenizer.json) in C: the same pipeline and the same ids as
 * HuggingFace's `tokenizers` library.
 *
 * Encoding runs, in HF's order: added tokens matched on the raw text (special tokens and
 * every added token with normalized = false; lstrip, rstrip and single_word honoured), the
 * normalizer on what lies between them, added tokens with normalized = true matched on the
 * normalized text, the pre-tokenizer, the model (BPE, WordPiece or WordLevel) on
 * each pre-token, then truncation and the post-processor. Decoding maps ids to tokens,
 * optionally drops special tokens and runs the decoder.
 *
 * Ids are HF's, 0-based (the Lua binding adds 1). Text in and out is UTF-8; input that is
 * not valid UTF-8 is an error naming the byte offset. A tokenizer.json that names a
 * component or an option this code does not implement is an error naming the file and the
 * JSON path of it, never an approximation.
 *
 * A tokenizer object is not thread-safe: encode uses a per-object cache and work buffers.
 * Use one object per thread. Errors: NULL / -1 with ft_last_error() set. */
#ifndef FT_TOKENIZER_H
#define FT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits on what is read: larger files or vocabularies are refused. */
#define FT_TOKENIZER_MAX_FILE ((size_t)512 << 20)  /* bytes of tokenizer.json */
#define FT_TOKENIZER_MAX_VOCAB ((int64_t)1 << 24)   /* ids are below this */
#define FT_TOKENIZER_MAX_TEXT ((size_t)1 << 30)     /* bytes of one text to encode */

typedef struct ft_tokenizer ft_tokenizer;

/* A growable array of token ids, owned by the caller (zero-initialise it, reuse it across
 * calls, free it with ft_token_ids_free). */
typedef struct ft_token_ids {
    int32_t *ids;
    size_t len, cap;
} ft_token_ids;

void ft_token_ids_free(ft_token_ids *ids);

/* Reads tokenizer.json at path (at most FT_TOKENIZER_MAX_FILE bytes). */
ft_tokenizer *ft_tokenizer_load(const char *path);
/* Parses tokenizer.json text held in memory; name is used in error messages. */
ft_tokenizer *ft_tokenizer_from_json(const char *json, size_t len, const char *name);
void ft_tokenizer_free(ft_tokenizer *tok);

/* Options of one encode. max_length > 0 truncates the text's tokens so that the result,
 * special tokens included, holds at most max_length ids, as HF's truncation does (the
 * special tokens themselves are kept; of two texts the longer loses a token first). With
 * max_length 0 the "truncation" of tokenizer.json applies, when it has one. */
typedef struct ft_encode_opts {
    bool add_special_tokens;  /* the post-processor's special tokens (e.g. <s>) */
    int64_t max_length;       /* 0: no truncation of this call's own */
    bool truncate_left;       /* cut the start instead of the end */
} ft_encode_opts;

/* Encodes text (and a second text for pair templates when pair != NULL) into out
 * (replacing what it held). Returns 0, or -1 with an error (invalid UTF-8 names the byte
 * offset; truncation to fewer ids than the special tokens take is an error). */
int ft_tokenizer_encode(ft_tokenizer *tok, const char *text, size_t len, const char *pair,
                        size_t pair_len, const ft_encode_opts *opts, ft_token_ids *out);

/* Options of one decode. */
typedef struct ft_decode_opts {
    bool skip_special_tokens;            /* drop special added tokens (and those marked) */
    bool clean_up_tokenization_spaces;   /* " ." -> "." , " n't" -> "n't" ... as transformers */
} ft_decode_opts;

/* Decodes ids into a new NUL-terminated string (caller frees; *len_out gets its length).
 * An id outside the vocabulary is an error naming its position. */
char *ft_tokenizer_decode(const ft_tokenizer *tok, const int32_t *ids, size_t n,
                          const ft_decode_opts *opts, size_t *len_out);

/* The id of a token (added tokens included), or -1 when there is none. */
int64_t ft_tokenizer_token_to_id(const ft_tokenizer *tok, const char *token, size_t len);
/* The token of an id (NUL-terminated, owned by tok; its byte length in *len when len is
 * not NULL), or NULL when no token has that id. */
const char *ft_tokenizer_id_to_token(const ft_tokenizer *tok, int64_t id, size_t *len);
/* One more than the largest id: every id of the vocabulary and of the added tokens is below it. */
int64_t ft_tokenizer_vocab_size(const ft_tokenizer *tok);
/* Whether id is a special token (skipped by skip_special_tokens). */
bool ft_tokenizer_is_special(const ft_tokenizer *tok, int64_t id);
/* Marks an existing id as special (tokenizer_config.json's additional_special_tokens).
 * Returns 0, or -1 for an id outside the vocabulary. */
int ft_tokenizer_mark_special(ft_tokenizer *tok, int64_t id);
/* When on, special tokens in the text are not matched as such but tokenized as plain text
 * (transformers' split_special_tokens). Off by default. */
void ft_tokenizer_set_split_special(ft_tokenizer *tok, bool on);
/* How many ids the post-processor adds around one text (pair = false) or two (pair = true)
 * with add_special_tokens on. */
int64_t ft_tokenizer_num_special_tokens(const ft_tokenizer *tok, bool pair);
/* tokenizer.json's "padding" (what batches are padded with), when it has one. */
typedef struct ft_tokenizer_padding {
    int64_t pad_id;
    bool left;             /* direction "Left" */
    int64_t length;        /* strategy {"Fixed": n}; 0 for "BatchLongest" */
    int64_t multiple_of;   /* pad_to_multiple_of, 0: none */
} ft_tokenizer_padding;

/* Fills *out and returns true when tokenizer.json sets "padding". */
bool ft_tokenizer_padding_of(const ft_tokenizer *tok, ft_tokenizer_padding *out);
/* tokenizer.json's "truncation" max_length, 0 when it has none. */
int64_t ft_tokenizer_truncation_of(const ft_tokenizer *tok);
/* Added tokens: their count, and the id of the i-th (0-based, file order). */
size_t ft_tokenizer_num_added(const ft_tokenizer *tok);
int64_t ft_tokenizer_added_id(const ft_tokenizer *tok, size_t i);

#endif
