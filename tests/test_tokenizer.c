/*
 * test_tokenizer.c — the tokenizer on small tokenizer.json files written
 * here: random bytes through encode (no crash, consistent counts, exact
 * round trip of valid UTF-8), the U+FFFD repair of invalid UTF-8 (expected
 * strings from Python's bytes.decode('utf-8', 'replace')), the output-buffer
 * contract, tokenizer_config.json, and damaged files that must fail with a
 * message naming the file. Vocabularies built with the internal builder
 * stand in for GGUF files whose strings are not valid UTF-8.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "tokenizer_internal.h"

/* ------------------------------------------------------ fixtures */

static char out_dir[1024];

static const char *test_path(const char *name) {
    static char path[2][1200];
    static int which;
    which ^= 1;
    snprintf(path[which], sizeof path[which], "%s/%s", out_dir, name);
    return path[which];
}

static const char *write_file(const char *name, const char *content, size_t len) {
    const char *path = test_path(name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, len, f), len);
    fclose(f);
    return path;
}

typedef struct strbuf {
    char *s;
    size_t n, cap;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void sb_str(strbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* A byte-level vocabulary: the 256 mapped bytes (ids 0..255, byte order),
 * "Ġt" "he" "Ġthe" (256..258) from three merges, a special <|end|> (259)
 * and a non-special added <|user|> (260). `merges` (JSON) replaces the
 * merge list and `model_extra` is inserted into the model object, both to
 * build damaged files. */
static char *byte_level_json(const char *merges, const char *model_extra) {
    strbuf b = {0};
    sb_str(&b, "{\"version\":\"1.0\",\"added_tokens\":["
               "{\"id\":259,\"content\":\"<|end|>\",\"special\":true},"
               "{\"id\":260,\"content\":\"<|user|>\",\"special\":false}],"
               "\"normalizer\":null,"
               "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
               "\"decoder\":{\"type\":\"ByteLevel\"},"
               "\"model\":{\"type\":\"BPE\",");
    sb_str(&b, model_extra ? model_extra : "");
    sb_str(&b, "\"vocab\":{");
    for (int byte = 0; byte < 256; byte++) {
        char u[8], entry[32];
        size_t n = tok_utf8_put(tok_byte_to_cp((uint8_t)byte), u);
        u[n] = '\0';
        bool esc = byte == '"' || byte == '\\';
        snprintf(entry, sizeof entry, "\"%s%s\":%d,", esc ? "\\" : "", u, byte);
        sb_str(&b, entry);
    }
    sb_str(&b, "\"\xC4\xA0t\":256,\"he\":257,\"\xC4\xA0the\":258},\"merges\":");
    sb_str(&b, merges ? merges : "[\"\xC4\xA0 t\",[\"h\",\"e\"],\"\xC4\xA0t he\"]");
    sb_str(&b, "}}");
    return b.s;
}

static tlm_tokenizer *load_byte_level(void) {
    char *json = byte_level_json(NULL, NULL);
    const char *path = write_file("tok_unit_bytelevel.json", json, strlen(json));
    free(json);
    tlm_error err = {0};
    tlm_tokenizer *t = tokenizer_from_hf(path, NULL, &err);
    if (!t) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(t);
    return t;
}

static int32_t encode_all(const tlm_tokenizer *t, const char *s, size_t n, bool bos, bool special,
                          int32_t *ids, int32_t cap) {
    tlm_error err = {0};
    int32_t got = tokenizer_encode(t, s, n, bos, special, ids, cap, &err);
    assert_true(got >= 0);
    assert_true(got <= cap);
    return got;
}

/* Concatenated token bytes (specials rendered) into out; returns the length. */
static size_t decode_all(const tlm_tokenizer *t, const int32_t *ids, int32_t n, char *out) {
    size_t o = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t len;
        const char *b = tokenizer_token_bytes(t, ids[i], true, &len);
        memcpy(out + o, b, len);
        o += len;
    }
    return o;
}

static int setup(void **state) {
    (void)state;
    const char *dir = getenv("TLM_TEST_OUT");
    snprintf(out_dir, sizeof out_dir, "%s", dir && *dir ? dir : P_tmpdir);
    return 0;
}

/* ------------------------------------------------------ encoding */

static void test_merges_and_specials(void **state) {
    (void)state;
    tlm_tokenizer *t = load_byte_level();
    int32_t ids[64];
    const char *s = " the<|end|>he<|user|>";
    int32_t n = encode_all(t, s, strlen(s), false, true, ids, 64);
    int32_t want[] = {258, 259, 257, 260};
    assert_int_equal(n, 4);
    assert_memory_equal(ids, want, sizeof want);

    /* without parse_special the special is text, the added token is not */
    n = encode_all(t, s, strlen(s), false, false, ids, 64);
    assert_true(n > 4);
    assert_int_equal(ids[n - 1], 260);
    char dec[256];
    size_t dl = decode_all(t, ids, n, dec);
    assert_int_equal(dl, strlen(s));
    assert_memory_equal(dec, s, dl);

    /* specials render only on request */
    size_t len = 99;
    assert_string_equal(tokenizer_token_bytes(t, 259, false, &len), "");
    assert_int_equal(len, 0);
    assert_true(tokenizer_is_special(t, 259));
    assert_false(tokenizer_is_special(t, 260));
    assert_true(tokenizer_is_eog(t, 259)); /* <|end|> is an end-of-generation text */
    assert_int_equal(tokenizer_n_vocab(t), 261);
    assert_int_equal(tokenizer_kind(t), TLM_TOK_BYTE_BPE);
    tokenizer_free(t);
}

static void test_output_buffer_contract(void **state) {
    (void)state;
    tlm_tokenizer *t = load_byte_level();
    const char *s = "abc def ghi";
    tlm_error err = {0};
    int32_t need = tokenizer_encode(t, s, strlen(s), false, true, NULL, 0, &err);
    assert_true(need > 3);
    int32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = -7;
    assert_int_equal(tokenizer_encode(t, s, strlen(s), false, true, ids, 2, &err), need);
    assert_int_not_equal(ids[1], -7);
    assert_int_equal(ids[2], -7); /* nothing past cap */

    /* empty input: nothing, or just BOS when there is one (none here) */
    assert_int_equal(tokenizer_encode(t, "", 0, true, true, ids, 64, &err), 0);
    assert_int_equal(tokenizer_encode(t, NULL, 0, false, true, ids, 64, &err), 0);
    assert_int_equal(tokenizer_encode(t, "x", 1, false, true, ids, -1, &err), -1);
    assert_int_equal(err.code, TLM_ERR_ARG);

    size_t len = 5;
    assert_string_equal(tokenizer_token_bytes(t, -1, true, &len), "");
    assert_int_equal(len, 0);
    assert_string_equal(tokenizer_token_bytes(t, 1 << 30, true, &len), "");
    assert_string_equal(tokenizer_token_text(t, 99999, &len), "");
    assert_int_equal(tokenizer_bos(t), -1);
    tokenizer_free(t);
}

static void test_utf8_replacement(void **state) {
    (void)state;
    static const struct { const char *in, *out; } cases[] = {
        {"\xff", "\xef\xbf\xbd"},
        {"\xe2\x82", "\xef\xbf\xbd"},
        {"\xf0\x9f\x98", "\xef\xbf\xbd"},
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xc3(", "\xef\xbf\xbd("},
        {"\xa0\xa1", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe2(\xa1", "\xef\xbf\xbd(\xef\xbf\xbd"},
        {"\xe2\x82(", "\xef\xbf\xbd("},
        {"\xf0(\x8c\xbc", "\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf0\x90(\xbc", "\xef\xbf\xbd(\xef\xbf\xbd"},
        {"\xf8\xa1\xa1\xa1\xa1", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"a\xf0\x9f\x98\x80\xf0\x9f", "a\xf0\x9f\x98\x80\xef\xbf\xbd"},
        {"\xe0\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xef\xbf\xbf", "\xef\xbf\xbf"},
    };
    tlm_tokenizer *t = load_byte_level();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t ids[64];
        char dec[256];
        int32_t n = encode_all(t, cases[i].in, strlen(cases[i].in), false, true, ids, 64);
        size_t dl = decode_all(t, ids, n, dec);
        dec[dl] = '\0';
        if (strcmp(dec, cases[i].out) != 0) fail_msg("case %zu: wrong replacement", i);
    }
    /* a NUL byte is ordinary input */
    int32_t ids[8];
    assert_int_equal(encode_all(t, "a\0b", 3, false, true, ids, 8), 3);
    tokenizer_free(t);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static void test_random_bytes(void **state) {
    (void)state;
    tlm_tokenizer *t = load_byte_level();
    static const char alphabet[] = "<|end|user> \t\n\r'theabc123\xc3\xa9\xe2\x96\x81\xf0\x9f\x98\x80\x80\xff";
    char text[512], dec[4096];
    int32_t ids[1024], again[1024];
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = rnd() % 300;
        for (size_t i = 0; i < n; i++)
            text[i] = (rnd() & 1) ? (char)rnd() : alphabet[rnd() % (sizeof alphabet - 1)];
        bool special = rnd() & 1;
        int32_t c = encode_all(t, text, n, false, special, ids, 1024);
        for (int32_t i = 0; i < c; i++) assert_true(ids[i] >= 0 && ids[i] < tokenizer_n_vocab(t));
        tlm_error err;
        assert_int_equal(tokenizer_encode(t, text, n, false, special, NULL, 0, &err), c);
        assert_int_equal(encode_all(t, text, n, false, special, again, 1024), c);
        assert_memory_equal(ids, again, (size_t)c * sizeof *ids);
    }
    /* valid UTF-8 from random code points decodes back exactly */
    for (int iter = 0; iter < 1000; iter++) {
        size_t n = 0;
        while (n < 400) {
            uint32_t cp = rnd() % 4 == 0 ? rnd() % 0x110000 : rnd() % 0x250;
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            n += tok_utf8_put(cp, text + n);
        }
        int32_t c = encode_all(t, text, n, false, false, ids, 1024);
        size_t dl = decode_all(t, ids, c, dec);
        assert_int_equal(dl, n);
        assert_memory_equal(dec, text, n);
    }
    tokenizer_free(t);
}

/* SentencePiece style: U+2581 for spaces, a leading U+2581, byte fallback. */
static void test_spm_json(void **state) {
    (void)state;
    strbuf b = {0};
    sb_str(&b, "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
               "{\"id\":1,\"content\":\"<s>\",\"special\":true}],"
               "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":["
               "{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
               "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]},"
               "\"pre_tokenizer\":null,"
               "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},"
               "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
               "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true,\"fuse_unk\":true,"
               "\"vocab\":{\"<unk>\":0,\"<s>\":1,");
    for (int byte = 0; byte < 256; byte++) {
        char entry[32];
        snprintf(entry, sizeof entry, "\"<0x%02X>\":%d,", byte, 2 + byte);
        sb_str(&b, entry);
    }
    sb_str(&b, "\"\xE2\x96\x81\":258,\"a\":259,\"b\":260,\"\xE2\x96\x81""a\":261,\"ab\":262},"
               "\"merges\":[\"\xE2\x96\x81 a\",\"a b\"]}}");
    const char *path = write_file("tok_unit_spm.json", b.s, b.n);
    free(b.s);
    tlm_error err = {0};
    tlm_tokenizer *t = tokenizer_from_hf(path, NULL, &err);
    if (!t) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(t);
    assert_int_equal(tokenizer_kind(t), TLM_TOK_SPM_BPE);
    assert_true(tokenizer_adds_bos(t));
    assert_int_equal(tokenizer_bos(t), 1);
    int32_t ids[32];
    /* "▁a" merges first (rank 0), so "b" stays alone; "é" is not a token: bytes */
    int32_t n = encode_all(t, "ab \xc3\xa9", 5, true, true, ids, 32);
    int32_t want[] = {1, 261, 260, 258, 2 + 0xC3, 2 + 0xA9};
    assert_int_equal(n, 6);
    assert_memory_equal(ids, want, sizeof want);
    size_t len;
    assert_string_equal(tokenizer_token_bytes(t, 261, false, &len), " a");
    assert_int_equal(len, 2);
    const char *byte = tokenizer_token_bytes(t, 2 + 0xC3, false, &len);
    assert_int_equal(len, 1);
    assert_int_equal((unsigned char)byte[0], 0xC3);
    tokenizer_free(t);
}

static void test_config(void **state) {
    (void)state;
    char *json = byte_level_json(NULL, NULL);
    const char *path = write_file("tok_unit_cfg_tokenizer.json", json, strlen(json));
    char tok_path[1200];
    snprintf(tok_path, sizeof tok_path, "%s", path);
    free(json);
    const char *cfg = "{\"add_bos_token\":true,\"bos_token\":{\"content\":\"<|user|>\"},"
                      "\"eos_token\":\"he\",\"chat_template\":[{\"name\":\"tool_use\",\"template\":\"T\"},"
                      "{\"name\":\"default\",\"template\":\"D\"}]}";
    const char *cfg_path = write_file("tok_unit_cfg.json", cfg, strlen(cfg));
    tlm_error err = {0};
    tlm_tokenizer *t = tokenizer_from_hf(tok_path, cfg_path, &err);
    assert_non_null(t);
    assert_int_equal(tokenizer_bos(t), 260);
    assert_int_equal(tokenizer_eos(t), 257);
    assert_true(tokenizer_adds_bos(t));
    assert_true(tokenizer_is_eog(t, 257));
    assert_string_equal(tokenizer_chat_template(t), "D");
    int32_t ids[8];
    assert_int_equal(encode_all(t, "", 0, true, true, ids, 8), 1);
    assert_int_equal(ids[0], 260);
    tokenizer_free(t);

    /* an absent config is not an error; a broken one is */
    t = tokenizer_from_hf(tok_path, test_path("tok_unit_no_such_config.json"), &err);
    assert_non_null(t);
    tokenizer_free(t);
    const char *bad = write_file("tok_unit_badcfg.json", "{\"bos_token\": ", 14);
    assert_null(tokenizer_from_hf(tok_path, bad, &err));
    assert_int_equal(err.code, TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "tok_unit_badcfg.json"));
}

/* ------------------------------------------------------ bad files */

static void expect_failure(const char *name, const char *content, const char *needle) {
    const char *path = write_file(name, content, strlen(content));
    tlm_error err = {0};
    tlm_tokenizer *t = tokenizer_from_hf(path, NULL, &err);
    if (t) fail_msg("%s: loaded but should fail", name);
    assert_int_not_equal(err.code, TLM_OK);
    if (!strstr(err.msg, name)) fail_msg("%s: message does not name the file: %s", name, err.msg);
    if (needle && !strstr(err.msg, needle)) fail_msg("%s: message lacks \"%s\": %s", name, needle, err.msg);
    assert_null(strchr(err.msg, '\n'));
}

static void test_bad_json(void **state) {
    (void)state;
    expect_failure("tok_bad_notjson.json", "this is not json {", "JSON");
    expect_failure("tok_bad_empty.json", "", "JSON");
    expect_failure("tok_bad_array.json", "[1,2,3]", "object");
    expect_failure("tok_bad_nomodel.json", "{\"version\":\"1.0\"}", "model");
    expect_failure("tok_bad_novocab.json", "{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", "vocab");
    expect_failure("tok_bad_wordpiece.json", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", "WordPiece");
    expect_failure("tok_bad_vocabid.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"zero\"}}}", "\"a\"");
    expect_failure("tok_bad_negid.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1}}}", "\"a\"");
    expect_failure("tok_bad_hugeid.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":4000000000}}}", "\"b\"");

    char *json = byte_level_json("[\"\xC4\xA0 t\",\"zz q\"]", NULL);
    expect_failure("tok_bad_mergeunknown.json", json, "zz");
    free(json);
    json = byte_level_json("[\"\xC4\xA0 t\",42]", NULL);
    expect_failure("tok_bad_mergetype.json", json, "merge 1");
    free(json);
    json = byte_level_json("[\"a b c\"]", NULL);
    expect_failure("tok_bad_mergeparts.json", json, "merge 0");
    free(json);
    json = byte_level_json("{\"a\":1}", NULL);
    expect_failure("tok_bad_mergesobj.json", json, "merges");
    free(json);
    json = byte_level_json(NULL, "\"continuing_subword_prefix\":\"##\",");
    expect_failure("tok_bad_prefix.json", json, "prefix");
    free(json);

    const char *bad_added = "{\"added_tokens\":[{\"id\":\"x\",\"content\":\"<a>\"}],"
                            "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}";
    expect_failure("tok_bad_added.json", bad_added, "added_tokens");
    const char *bad_re = "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(unclosed\"},"
                         "\"behavior\":\"Isolated\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}";
    expect_failure("tok_bad_regex.json", bad_re, "regex");
    const char *bad_pre = "{\"pre_tokenizer\":{\"type\":\"Whatever\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}";
    expect_failure("tok_bad_pretype.json", bad_pre, "Whatever");

    tlm_error err = {0};
    assert_null(tokenizer_from_hf(test_path("tok_no_such_file.json"), NULL, &err));
    assert_int_equal(err.code, TLM_ERR_IO);
    assert_non_null(strstr(err.msg, "tok_no_such_file.json"));
    assert_null(tokenizer_from_hf(NULL, NULL, &err));
    assert_int_equal(err.code, TLM_ERR_ARG);
}

/* ------------------------------------------------------ strings that are not UTF-8 */

static const char *const SMALL_MODEL = "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1}}";

/* {<field>, SMALL_MODEL} */
static void expect_failure_with(const char *name, const char *field, const char *needle) {
    strbuf b = {0};
    sb_str(&b, "{");
    sb_str(&b, field);
    sb_str(&b, ",");
    sb_str(&b, SMALL_MODEL);
    sb_str(&b, "}");
    expect_failure(name, b.s, needle);
    free(b.s);
}

static void test_invalid_utf8_strings(void **state) {
    (void)state;
    expect_failure_with("tok_bad_utf8_replace.json",
                        "\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\"a\"},\"content\":\"\xF0\"}",
                        "Replace normalizer's \"content\" is not valid UTF-8");
    expect_failure_with("tok_bad_utf8_replace_from.json",
                        "\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xC3(\"},\"content\":\"a\"}",
                        "Replace normalizer's \"pattern\" is not valid UTF-8");
    expect_failure_with("tok_bad_utf8_prepend.json",
                        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},"
                        "{\"type\":\"Prepend\",\"prepend\":\"x\xE2\x96\"}]}",
                        "Prepend normalizer's \"prepend\" is not valid UTF-8 (bad byte 0xE2 at offset 1)");
    expect_failure_with("tok_bad_utf8_metaspace.json",
                        "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xED\xA0\x80\"}",
                        "Metaspace pre_tokenizer's \"replacement\" is not valid UTF-8");
    expect_failure_with("tok_bad_utf8_split.json",
                        "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\"\xFF\"},"
                        "\"behavior\":\"Isolated\"}",
                        "Split pre_tokenizer's \"pattern\" is not valid UTF-8");
    expect_failure_with("tok_bad_utf8_added.json",
                        "\"added_tokens\":[{\"id\":2,\"content\":\"<ok>\"},{\"id\":3,\"content\":\"\xA9<x>\"}]",
                        "\"content\" of added token 3 is not valid UTF-8");
    /* \C matches one byte, even inside a character */
    expect_failure_with("tok_bad_backslash_c.json",
                        "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\\\\C\"},"
                        "\"behavior\":\"Isolated\"}",
                        "\\C");
}

/* A byte-level vocabulary built the way the GGUF loader builds one: the 256
 * mapped bytes (ids 0..255), then extra[i] with attribute attr[i] (id
 * 256 + i), the GPT-2 pre-tokenizer regex. */
static tlm_tokenizer *build_byte_level(const char *const *extra, const uint8_t *attr, int n_extra) {
    tok_builder b;
    tlm_error err = {0};
    assert_int_equal(tok_builder_init(&b, TLM_TOK_BYTE_BPE, 256 + n_extra, "unit.gguf", &err), 0);
    for (int byte = 0; byte < 256; byte++) {
        char u[4];
        size_t n = tok_utf8_put(tok_byte_to_cp((uint8_t)byte), u);
        assert_int_equal(tok_strtab_set(&b.t->text, byte, u, n), 0);
    }
    for (int i = 0; i < n_extra; i++) {
        assert_int_equal(tok_strtab_set(&b.t->text, 256 + i, extra[i], strlen(extra[i])), 0);
        b.t->attr[256 + i] = attr[i];
    }
    assert_int_equal(tok_pretok_add_split(&b.t->pretok, TOK_RE_GPT2, strlen(TOK_RE_GPT2), false,
                                          TOK_SPLIT_ISOLATED, "unit.gguf", &err), 0);
    tlm_tokenizer *t = tok_builder_finish(&b, &err);
    if (!t) fail_msg("%s", err.msg);
    return t;
}

/* Added tokens that begin with a continuation byte (GGUF can hold them):
 * never matched, so no character of the text is cut in half. */
static void test_added_token_continuation_byte(void **state) {
    (void)state;
    static const char *const extra[] = {"\xA9", "\x80<|x|>", "<|x|>", "\xC3\xA9"};
    static const uint8_t attr[] = {TOK_ATTR_USER, TOK_ATTR_CONTROL, TOK_ATTR_CONTROL, TOK_ATTR_USER};
    tlm_tokenizer *t = build_byte_level(extra, attr, 4);
    /* U+0080 (C2 80) right before <|x|>: matching "\x80<|x|>" there would
     * leave a lone C2 for the pre-tokenizer */
    const char *s = "caf\xC3\xA9 \xC2\x80<|x|> \xC2\xA9";
    int32_t ids[64];
    char dec[256];
    for (int special = 0; special <= 1; special++) {
        int32_t n = encode_all(t, s, strlen(s), false, special, ids, 64);
        for (int32_t i = 0; i < n; i++) {
            assert_int_not_equal(ids[i], 256);
            assert_int_not_equal(ids[i], 257);
        }
        size_t dl = decode_all(t, ids, n, dec);
        assert_int_equal(dl, strlen(s));
        assert_memory_equal(dec, s, dl);
        /* the valid added tokens still match: é always, <|x|> when special */
        bool saw_e = false, saw_x = false;
        for (int32_t i = 0; i < n; i++) {
            saw_e |= ids[i] == 259;
            saw_x |= ids[i] == 258;
        }
        assert_true(saw_e);
        assert_int_equal(saw_x, special);
    }
    /* the unmatched tokens stay in the vocabulary and decode to their bytes */
    size_t len;
    const char *b = tokenizer_token_bytes(t, 256, true, &len);
    assert_int_equal(len, 1);
    assert_int_equal((unsigned char)b[0], 0xA9);
    tokenizer_free(t);

    /* random text around them, with and without specials: decodes back */
    static const char *const pieces[] = {"\xC2\x80", "\xC2\xA9", "\xC3\xA9", "<|x|>", "a", " "};
    t = build_byte_level(extra, attr, 4);
    char text[256];
    int32_t many[256];
    for (int iter = 0; iter < 500; iter++) {
        size_t n = 0;
        while (n < 200) {
            const char *piece = pieces[rnd() % (sizeof pieces / sizeof *pieces)];
            memcpy(text + n, piece, strlen(piece));
            n += strlen(piece);
        }
        int32_t c = encode_all(t, text, n, false, rnd() & 1, many, 256);
        size_t dl = decode_all(t, many, c, dec);
        assert_int_equal(dl, n);
        assert_memory_equal(dec, text, n);
    }
    tokenizer_free(t);
}

/* A pre-tokenizer step that inserts bytes that are not UTF-8 (the loaders
 * refuse them; this is the check behind them): encoding fails cleanly. */
static void test_pretok_invalid_piece(void **state) {
    (void)state;
    tok_builder b;
    tlm_error err = {0};
    assert_int_equal(tok_builder_init(&b, TLM_TOK_BYTE_BPE, 256, "unit.gguf", &err), 0);
    for (int byte = 0; byte < 256; byte++) {
        char u[4];
        size_t n = tok_utf8_put(tok_byte_to_cp((uint8_t)byte), u);
        assert_int_equal(tok_strtab_set(&b.t->text, byte, u, n), 0);
    }
    assert_int_equal(tok_pretok_add_replace(&b.t->pretok, "a", 1, "\xF0", 1, &err), 0);
    assert_int_equal(tok_pretok_add_split(&b.t->pretok, TOK_RE_GPT2, strlen(TOK_RE_GPT2), false,
                                          TOK_SPLIT_ISOLATED, "unit.gguf", &err), 0);
    /* \C is refused with a message that says so */
    assert_int_equal(tok_pretok_add_split(&b.t->pretok, "x\\C", 3, false, TOK_SPLIT_ISOLATED,
                                          "unit.gguf", &err), TLM_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "unit.gguf"));
    assert_non_null(strstr(err.msg, "\\C"));
    tlm_tokenizer *t = tok_builder_finish(&b, &err);
    assert_non_null(t);
    int32_t ids[16];
    assert_int_equal(tokenizer_encode(t, "bab", 3, false, false, ids, 16, &err), -1);
    assert_int_equal(err.code, TLM_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "not valid UTF-8"));
    assert_int_equal(tokenizer_encode(t, "bcd", 3, false, false, ids, 16, &err), 3);
    tokenizer_free(t);
}

/* tok_builder_add_merge keeps exactly the bytes it is given, NULs included. */
static void test_merge_with_nul(void **state) {
    (void)state;
    tok_builder b;
    tlm_error err = {0};
    assert_int_equal(tok_builder_init(&b, TLM_TOK_SPM_BPE, 3, "unit.gguf", &err), 0);
    assert_int_equal(tok_strtab_set(&b.t->text, 0, "a\0c", 3), 0);
    assert_int_equal(tok_strtab_set(&b.t->text, 1, "b", 1), 0);
    assert_int_equal(tok_strtab_set(&b.t->text, 2, "a\0cb", 4), 0);
    assert_int_equal(tok_builder_add_merge(&b, "a\0c", 3, "b", 1, &err), 0);
    tlm_tokenizer *t = tok_builder_finish(&b, &err);
    if (!t) fail_msg("%s", err.msg);
    const tok_merge_slot *m = tok_merge_find(t, 0, 1);
    assert_non_null(m);
    assert_int_equal(m->merged_id, 2);
    assert_int_equal(m->rank, 0);
    tokenizer_free(t);
}

/* (NULL, 0) is the empty text; NULL with a length is an argument error. */
static void test_encode_null_text(void **state) {
    (void)state;
    tlm_tokenizer *t = load_byte_level();
    tlm_error err = {0};
    int32_t ids[4] = {-7, -7, -7, -7};
    assert_int_equal(tokenizer_encode(t, NULL, 0, false, true, ids, 4, &err), 0);
    assert_int_equal(tokenizer_encode(t, NULL, 0, false, false, NULL, 0, &err), 0);
    assert_int_equal(ids[0], -7);
    assert_int_equal(tokenizer_encode(t, NULL, 1, false, true, ids, 4, &err), -1);
    assert_int_equal(err.code, TLM_ERR_ARG);
    tokenizer_free(t);

    /* with a BOS to add: just the BOS */
    char *json = byte_level_json(NULL, NULL);
    const char *path = write_file("tok_unit_null_text.json", json, strlen(json));
    char tok_path[1200];
    snprintf(tok_path, sizeof tok_path, "%s", path);
    free(json);
    const char *cfg = "{\"add_bos_token\":true,\"bos_token\":\"<|end|>\"}";
    const char *cfg_path = write_file("tok_unit_null_text_cfg.json", cfg, strlen(cfg));
    t = tokenizer_from_hf(tok_path, cfg_path, &err);
    assert_non_null(t);
    assert_int_equal(tokenizer_encode(t, NULL, 0, true, true, ids, 4, &err), 1);
    assert_int_equal(ids[0], 259);
    tokenizer_free(t);
}

/* Every truncation and a few byte flips of a valid file: never a crash. */
static void test_damaged_json(void **state) {
    (void)state;
    char *json = byte_level_json(NULL, NULL);
    size_t len = strlen(json);
    char *copy = malloc(len);
    for (size_t cut = 0; cut < len; cut += 1 + cut / 16) {
        const char *path = write_file("tok_damaged.json", json, cut);
        tlm_error err = {0};
        tlm_tokenizer *t = tokenizer_from_hf(path, NULL, &err);
        assert_null(t); /* any prefix of an object is not JSON */
        assert_non_null(strstr(err.msg, "tok_damaged.json"));
    }
    for (int iter = 0; iter < 200; iter++) {
        memcpy(copy, json, len);
        for (int k = 0; k < 3; k++) copy[rnd() % len] = (char)(rnd() % 128);
        const char *path = write_file("tok_damaged.json", copy, len);
        tlm_error err = {0};
        tlm_tokenizer *t = tokenizer_from_hf(path, NULL, &err);
        if (t) {
            int32_t ids[64];
            assert_true(tokenizer_encode(t, "the end<|end|>", 14, true, true, ids, 64, &err) >= 0);
            tokenizer_free(t);
        } else {
            assert_non_null(strstr(err.msg, "tok_damaged.json"));
        }
    }
    free(copy);
    free(json);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merges_and_specials),
        cmocka_unit_test(test_output_buffer_contract),
        cmocka_unit_test(test_utf8_replacement),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_spm_json),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_damaged_json),
        cmocka_unit_test(test_invalid_utf8_strings),
        cmocka_unit_test(test_added_token_continuation_byte),
        cmocka_unit_test(test_pretok_invalid_piece),
        cmocka_unit_test(test_merge_with_nul),
        cmocka_unit_test(test_encode_null_text),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
