/*
 * fuzz_tokenizer_json.c — tokenizer_from_hf() on an arbitrary tokenizer.json
 * and, when the input holds a NUL byte, the bytes after it as
 * tokenizer_config.json.
 *
 * An accepted tokenizer must answer every per-token query for every id and
 * encode a few texts (and the input itself) into ids of its vocabulary, with
 * the same count whether or not the output buffer is large enough.
 */
#include "fuzz_common.h"
#include "tokenizer.h"

#define MAX_SELF_ENCODE 512 /* bytes of the input also used as text */

static void encode_checked(const tlm_tokenizer *t, const char *text, size_t len, bool special) {
    int32_t out[256];
    tlm_error err;
    int32_t need = tokenizer_encode(t, text, len, true, special, NULL, 0, &err);
    if (need < 0) {
        FUZZ_CHECK_ERROR(err);
        return;
    }
    int32_t cap = need < 256 ? need : 256;
    int32_t got = tokenizer_encode(t, text, len, true, special, out, cap, &err);
    FUZZ_CHECK(got == need, "count %d with a buffer, %d without", got, need);
    int32_t n_vocab = tokenizer_n_vocab(t);
    for (int32_t i = 0; i < cap; i++)
        FUZZ_CHECK(out[i] >= 0 && out[i] < n_vocab, "id %d of %d", out[i], n_vocab);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, '\0', size);
    size_t json_len = nul ? (size_t)(nul - data) : size;
    char json_path[64], cfg_path[64];
    if (!fuzz_memfd_write(0, data, json_len, json_path)) return 0;
    if (nul && !fuzz_memfd_write(1, nul + 1, size - json_len - 1, cfg_path)) return 0;

    tlm_error err;
    tlm_tokenizer *t = tokenizer_from_hf(json_path, nul ? cfg_path : NULL, &err);
    if (!t) {
        FUZZ_CHECK_ERROR(err);
        return 0;
    }
    int32_t n = tokenizer_n_vocab(t);
    FUZZ_CHECK(n > 0, "%d tokens", n);
    const int32_t bos = tokenizer_bos(t), eos = tokenizer_eos(t);
    FUZZ_CHECK(bos >= -1 && bos < n && eos >= -1 && eos < n, "bos %d, eos %d of %d", bos, eos, n);
    FUZZ_CHECK(tokenizer_kind(t) == TLM_TOK_BYTE_BPE || tokenizer_kind(t) == TLM_TOK_SPM_BPE,
               "kind");
    volatile size_t sink = 0;
    for (int32_t id = -1; id <= n; id++) {
        size_t len = 0;
        const char *s = tokenizer_token_bytes(t, id, true, &len);
        FUZZ_CHECK(s != NULL, "bytes of %d", id);
        for (size_t i = 0; i < len; i++) sink += (unsigned char)s[i];
        s = tokenizer_token_bytes(t, id, false, &len);
        sink += len;
        s = tokenizer_token_text(t, id, &len);
        FUZZ_CHECK(s != NULL && s[len] == '\0', "text of %d", id);
        sink += tokenizer_is_eog(t, id) + tokenizer_is_special(t, id);
    }
    const char *tmpl = tokenizer_chat_template(t);
    if (tmpl) sink += strlen(tmpl);
    (void)sink;

    static const char *const texts[] = {
        "Hello world! It's 2024, ok?", " leading space\tand\nlines  ",
        "<s><|im_start|>user\nhi<|im_end|></s>", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82",
        "\xff\xfe broken \xc3",
        " \t<eos>  <unk>\n<s> </s>\xe2\x80\xa8<|im_end|> \xc2\xa0<|endoftext|>\xe3\x80\x80 x",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        encode_checked(t, texts[i], strlen(texts[i]), false);
        encode_checked(t, texts[i], strlen(texts[i]), true);
    }
    /* a long run of one letter after another, 1024 bytes: the size at which
     * the pre-tokenizer's piece arena first fills exactly */
    static char run[1024];
    if (!run[0]) {
        memset(run, 'a', sizeof run);
        run[0] = 'b';
    }
    encode_checked(t, run, sizeof run, false);
    encode_checked(t, (const char *)data, json_len < MAX_SELF_ENCODE ? json_len : MAX_SELF_ENCODE,
                   true);
    tokenizer_free(t);
    return 0;
}
