/* The tokenizer core (core/text) from C: a small tokenizer.json in memory, the pipeline's
 * edge cases, errors that name what is wrong, and corrupted files and texts that must fail
 * cleanly (never crash). The HF reference values are checked by tests/spec/hf_tokenizer_spec.lua. */
#include "check.h"
#include "ft/tokenizer.h"

/* A BPE over a..e with merges a b -> ab, ab c -> abc, a byte-level pre-tokenizer off. */
static const char SMALL[] =
    "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,"
    "\"added_tokens\":[{\"id\":9,\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
    "\"normalized\":false,\"special\":true}],"
    "\"normalizer\":{\"type\":\"Lowercase\"},\"pre_tokenizer\":{\"type\":\"WhitespaceSplit\"},"
    "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"B\",\"type_id\":1}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[9],\"tokens\":[\"<s>\"]}}},"
    "\"decoder\":null,"
    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\",\"continuing_subword_prefix\":null,"
    "\"end_of_word_suffix\":null,\"fuse_unk\":true,\"byte_fallback\":false,"
    "\"vocab\":{\"<unk>\":0,\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"ab\":6,\"abc\":7,\" \":8},"
    "\"merges\":[[\"a\",\"b\"],\"ab c\"]}}";

static ft_tokenizer *small(void) {
    ft_tokenizer *tok = ft_tokenizer_from_json(SMALL, sizeof SMALL - 1, "small.json");
    CHECK(tok != NULL, "small.json: %s", ft_last_error());
    return tok;
}

static bool ids_are(const ft_token_ids *ids, const int32_t *want, size_t n) {
    if (ids->len != n) return false;
    for (size_t i = 0; i < n; i++)
        if (ids->ids[i] != want[i]) return false;
    return true;
}

static void test_encode_small(void) {
    ft_tokenizer *tok = small();
    if (!tok) return;
    ft_token_ids ids = {0};
    ft_encode_opts opts = {true, 0, false};
    CHECK(ft_tokenizer_encode(tok, "ABC abd", 7, NULL, 0, &opts, &ids) == 0, "%s", ft_last_error());
    const int32_t want[] = {9, 7, 6, 4};   /* <s> abc ab d (lowercased, split on the space) */
    CHECK(ids_are(&ids, want, 4), "got %zu ids", ids.len);
    /* Unknown chars fuse into one <unk> (fuse_unk), the added token is found in the text. */
    CHECK(ft_tokenizer_encode(tok, "xyz<s>a", 7, NULL, 0, &opts, &ids) == 0, "%s", ft_last_error());
    const int32_t want2[] = {9, 0, 9, 1};
    CHECK(ids_are(&ids, want2, 4), "unk/added: got %zu ids", ids.len);
    /* Pair template without special tokens; truncation keeps the special token. */
    CHECK(ft_tokenizer_encode(tok, "abc", 3, "de", 2, &opts, &ids) == 0, "%s", ft_last_error());
    const int32_t want3[] = {7, 4, 5};
    CHECK(ids_are(&ids, want3, 3), "pair: got %zu ids", ids.len);
    ft_encode_opts trunc = {true, 2, false};
    CHECK(ft_tokenizer_encode(tok, "abc d e", 7, NULL, 0, &trunc, &ids) == 0, "%s", ft_last_error());
    const int32_t want4[] = {9, 7};
    CHECK(ids_are(&ids, want4, 2), "truncated: got %zu ids", ids.len);
    ft_encode_opts tiny = {true, 0, false};
    tiny.max_length = 0;
    CHECK(ft_tokenizer_encode(tok, "", 0, NULL, 0, &tiny, &ids) == 0 && ids.len == 1, "empty text: <s> only");
    CHECK(ft_tokenizer_num_special_tokens(tok, false) == 1 && ft_tokenizer_num_special_tokens(tok, true) == 0,
          "special token counts");
    ft_token_ids_free(&ids);
    ft_tokenizer_free(tok);
}

static void test_decode_and_vocab(void) {
    ft_tokenizer *tok = small();
    if (!tok) return;
    const int32_t ids[] = {9, 7, 8, 6};
    size_t len = 0;
    ft_decode_opts keep = {false, false}, skip = {true, false};
    char *s = ft_tokenizer_decode(tok, ids, 4, &keep, &len);
    CHECK(s && strcmp(s, "<s> abc   ab") == 0 && len == strlen(s), "no decoder joins with spaces: '%s'", s ? s : "");
    free(s);
    s = ft_tokenizer_decode(tok, ids, 4, &skip, NULL);
    CHECK(s && strcmp(s, "abc   ab") == 0, "skip special: '%s'", s ? s : "");
    free(s);
    const int32_t bad[] = {1, 99};
    CHECK(ft_tokenizer_decode(tok, bad, 2, &keep, NULL) == NULL && strstr(ft_last_error(), "position 1"),
          "bad id: %s", ft_last_error());
    CHECK(ft_tokenizer_vocab_size(tok) == 10, "vocab size %lld", (long long)ft_tokenizer_vocab_size(tok));
    CHECK(ft_tokenizer_token_to_id(tok, "abc", 3) == 7 && ft_tokenizer_token_to_id(tok, "<s>", 3) == 9 &&
          ft_tokenizer_token_to_id(tok, "zz", 2) == -1, "token_to_id");
    size_t tl = 0;
    const char *t = ft_tokenizer_id_to_token(tok, 6, &tl);
    CHECK(t && strcmp(t, "ab") == 0 && tl == 2 && ft_tokenizer_id_to_token(tok, 10, NULL) == NULL, "id_to_token");
    CHECK(ft_tokenizer_is_special(tok, 9) && !ft_tokenizer_is_special(tok, 1), "is_special");
    CHECK(ft_tokenizer_mark_special(tok, 1) == 0 && ft_tokenizer_is_special(tok, 1), "mark_special");
    CHECK(ft_tokenizer_mark_special(tok, 10) == -1, "mark_special out of range");
    ft_tokenizer_free(tok);
}

static void test_invalid_utf8(void) {
    ft_tokenizer *tok = small();
    if (!tok) return;
    ft_token_ids ids = {0};
    static const struct { const char *s; size_t n, at; } cases[] = {
        {"ab\xff", 3, 2}, {"\xc3", 1, 0}, {"a\xc0\x80", 3, 1}, {"\xed\xa0\x80", 3, 0},
        {"ok\xf4\x90\x80\x80", 6, 2}, {"\xe2\x82", 2, 0}, {"abcdefgh\x80", 9, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "at byte %zu", cases[i].at);
        CHECK(ft_tokenizer_encode(tok, cases[i].s, cases[i].n, NULL, 0, NULL, &ids) == -1 &&
              strstr(ft_last_error(), want), "case %zu: %s", i, ft_last_error());
    }
    ft_token_ids_free(&ids);
    ft_tokenizer_free(tok);
}

static void expect_error(const char *json, const char *needle) {
    ft_tokenizer *tok = ft_tokenizer_from_json(json, strlen(json), "bad.json");
    CHECK(tok == NULL, "accepted: %s", json);
    ft_tokenizer_free(tok);
    if (!tok) CHECK(strstr(ft_last_error(), needle) != NULL, "'%s' does not mention '%s'", ft_last_error(), needle);
}

static void test_errors(void) {
    expect_error("{", "invalid JSON");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]},\"extra\":1}", "(top level).extra");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}}", "appears twice");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", "id 0 is used");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0.5},\"merges\":[]}}", "model.vocab[\"a\"]");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a\"]}}", "model.merges[0]");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}", "model.merges");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\\u0000\":0},\"merges\":[]}}", "\\u0000");
    expect_error("{\"model\":{\"type\":\"Magic\"}}", "unsupported model \"Magic\"");
    expect_error("{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Nmt\"}]},"
                 "\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "normalizer.normalizers[1].type");
    expect_error("{\"decoder\":{\"type\":\"Strip\",\"content\":\" \",\"start\":-1,\"stop\":0},"
                 "\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "decoder.start");
    expect_error("{\"truncation\":{\"max_length\":5,\"strategy\":\"OnlySecond\"},"
                 "\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "truncation.strategy");
    ft_tokenizer *none = ft_tokenizer_load("/nonexistent/tokenizer.json");
    CHECK(none == NULL && strstr(ft_last_error(), "/nonexistent/tokenizer.json"), "%s", ft_last_error());
}

/* Corrupted copies of a valid file and random texts: errors are fine, crashes are not. */
static void test_corruption(void) {
    uint64_t state = 0x9E3779B97F4A7C15ULL;
    size_t n = sizeof SMALL - 1, loaded = 0;
    char *buf = malloc(n + 1);
    for (int round = 0; round < 2000; round++) {
        memcpy(buf, SMALL, n);
        int edits = 1 + round % 4;
        for (int e = 0; e < edits; e++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t at = (size_t)(state >> 33) % n;
            buf[at] = (char)(state >> 13);
        }
        size_t len = round % 7 == 0 ? (size_t)(state >> 40) % n : n;
        ft_tokenizer *tok = ft_tokenizer_from_json(buf, len, "fuzz.json");
        if (!tok) continue;
        loaded++;
        ft_token_ids ids = {0};
        char text[32];
        for (int t = 0; t < 4; t++) {
            for (size_t i = 0; i < sizeof text; i++) {
                state = state * 6364136223846793005ULL + 1442695040888963407ULL;
                text[i] = (char)(state >> 56 & 0x7F);
            }
            if (ft_tokenizer_encode(tok, text, sizeof text, NULL, 0, NULL, &ids) == 0) {
                char *s = ft_tokenizer_decode(tok, ids.ids, ids.len, NULL, NULL);
                free(s);
            }
        }
        ft_token_ids_free(&ids);
        ft_tokenizer_free(tok);
    }
    free(buf);
    CHECK(loaded > 0, "no corrupted copy loaded at all (the test would test nothing)");
}

static const check_test tests[] = {
    CHECK_TEST(test_encode_small), CHECK_TEST(test_decode_and_vocab), CHECK_TEST(test_invalid_utf8),
    CHECK_TEST(test_errors), CHECK_TEST(test_corruption),
};

int main(void) { return check_run("test_tokenizer", tests, sizeof tests / sizeof tests[0]); }
