/*
 * fuzz_tokenize.c — tokenizer_encode() of arbitrary bytes with two fixed
 * tokenizers from tests/fuzz/data: a Llama-3-style byte-level BPE and a
 * Llama-2-style BPE with byte fallback.
 *
 * Input: one flag byte, then the text. Flag bits: 0 parse_special,
 * 1 add_bos, 2 the SentencePiece-style tokenizer (else byte-level).
 *
 * Checked: the count does not depend on the output buffer and a short buffer
 * gets a prefix of the full output; ids are in the vocabulary; and for valid
 * UTF-8 the tokens decode back to the text exactly (byte-level: the text
 * itself; SentencePiece-style without special parsing: a space, then the
 * text with U+2581 read as a space). Invalid UTF-8 is replaced, so there the
 * decoded text only has to be valid UTF-8.
 */
#include "fuzz_common.h"
#include "tokenizer.h"

static tlm_tokenizer *tok_bytelevel, *tok_spm;

static tlm_tokenizer *load_fixed(const char *name) {
    size_t size;
    char *json = fuzz_read_data(name, &size);
    char path[64];
    if (!fuzz_memfd_write(0, json, size, path)) abort();
    free(json);
    tlm_error err;
    tlm_tokenizer *t = tokenizer_from_hf(path, NULL, &err);
    if (!t) {
        fprintf(stderr, "fuzz_tokenize: %s: %s\n", name, err.msg);
        abort();
    }
    return t;
}

static void free_fixed(void) {
    tokenizer_free(tok_bytelevel);
    tokenizer_free(tok_spm);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    tok_bytelevel = load_fixed("tokenizer_bytelevel.json");
    tok_spm = load_fixed("tokenizer_spm.json");
    atexit(free_fixed);
    return 0;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF), the
 * rule under which the tokenizer leaves text unchanged. */
static bool valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else return false;
        if (n - i <= need) return false;
        for (size_t k = 1; k <= need; k++) {
            uint8_t lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
            if (s[i + k] < lo_k || s[i + k] > hi_k) return false;
        }
        i += need + 1;
    }
    return true;
}

/* Concatenated bytes of ids[from..n) (specials as their text); malloc'd. */
static char *decode(const tlm_tokenizer *t, const int32_t *ids, int32_t from, int32_t n,
                    size_t *len) {
    size_t total = 0, at = 0;
    for (int32_t i = from; i < n; i++) {
        size_t l;
        tokenizer_token_bytes(t, ids[i], true, &l);
        total += l;
    }
    char *out = malloc(total + 1);
    FUZZ_CHECK(out != NULL, "malloc");
    for (int32_t i = from; i < n; i++) {
        size_t l;
        const char *b = tokenizer_token_bytes(t, ids[i], true, &l);
        memcpy(out + at, b, l);
        at += l;
    }
    *len = total;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const uint8_t flags = data[0];
    const bool special = flags & 1, add_bos = flags & 2, spm = flags & 4;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    const tlm_tokenizer *t = spm ? tok_spm : tok_bytelevel;

    tlm_error err;
    int32_t need = tokenizer_encode(t, text, len, add_bos, special, NULL, 0, &err);
    FUZZ_CHECK(need >= 0, "encode failed: %s", err.msg);
    int32_t *ids = malloc((size_t)need * sizeof *ids + 1);
    int32_t *part = malloc((size_t)need * sizeof *part + 1);
    FUZZ_CHECK(ids && part, "malloc");
    int32_t got = tokenizer_encode(t, text, len, add_bos, special, ids, need, &err);
    FUZZ_CHECK(got == need, "count %d with a full buffer, %d without", got, need);
    int32_t half = need / 2;
    got = tokenizer_encode(t, text, len, add_bos, special, part, half, &err);
    FUZZ_CHECK(got == need, "count %d with a short buffer, %d without", got, need);
    FUZZ_CHECK(memcmp(ids, part, (size_t)half * sizeof *ids) == 0, "short buffer is no prefix");

    const int32_t n_vocab = tokenizer_n_vocab(t);
    for (int32_t i = 0; i < need; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < n_vocab, "id %d of %d", ids[i], n_vocab);
    int32_t from = 0;
    if (add_bos && tokenizer_bos(t) >= 0) {
        FUZZ_CHECK(need >= 1 && ids[0] == tokenizer_bos(t), "BOS missing");
        from = 1;
    }

    size_t dlen;
    char *dec = decode(t, ids, from, need, &dlen);
    if (!valid_utf8(data + 1, len)) {
        if (!spm) FUZZ_CHECK(valid_utf8((const uint8_t *)dec, dlen), "decoded text is not UTF-8");
    } else if (!spm) {
        FUZZ_CHECK(dlen == len && memcmp(dec, text, len) == 0,
                   "byte-level round trip: %zu bytes in, %zu out", len, dlen);
    } else if (!special && len > 0) {
        /* expected: " " + text with every U+2581 as ' ' */
        char *want = malloc(len + 1);
        FUZZ_CHECK(want != NULL, "malloc");
        size_t w = 0;
        want[w++] = ' ';
        for (size_t i = 0; i < len; i++) {
            if (i + 2 < len && memcmp(text + i, "\xE2\x96\x81", 3) == 0) {
                want[w++] = ' ';
                i += 2;
            } else if (w < len + 1) {
                want[w++] = text[i];
            }
        }
        FUZZ_CHECK(dlen == w && memcmp(dec, want, w) == 0,
                   "SentencePiece round trip: %zu bytes in, %zu out, %zu expected", len, dlen, w);
        free(want);
    }
    free(dec);
    free(ids);
    free(part);
    return 0;
}
