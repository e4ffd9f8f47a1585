/*
 * fuzz_model_checks.h — what the model-loading fuzz targets do with a model
 * that loaded: hyper-parameters and weights present, the tokenizer through
 * the public API (a short text with special tokens, a 1025-byte word that
 * overfills the pre-tokenizer's first arena block), every id through the
 * detokenizer, and two forward steps on a tiny context.
 */
#ifndef TLM_FUZZ_MODEL_CHECKS_H
#define TLM_FUZZ_MODEL_CHECKS_H

#include "fuzz_common.h"
#include "model.h"
#include "tensor_spec.h"

static void fuzz_exercise_model(tlm_model *m) {
    tlm_error err;
    tlm_model_info info;
    tlm_model_get_info(m, &info);
    FUZZ_CHECK(info.arch && info.name && info.source_format, "info strings");
    FUZZ_CHECK(info.n_vocab > 0 && info.n_embd > 0 && info.n_layer > 0 && info.n_head > 0 &&
                   info.n_head_kv > 0 && info.head_dim > 0 && info.n_ff > 0,
               "hyper-parameters");
    /* every tensor is held, f32 or quantized; of a sublayer, all but the
     * biases (which only some models have) */
    FUZZ_CHECK(m->tok_embd.data && m->out_norm.data && m->output.data && m->subs, "weights");
    for (int32_t i = 0; i < m->n_subs; i++) {
        const tlm_sublayer *S = &m->subs[i];
        bool held = true;
        int n_specs;
        const tensor_spec *specs = tensor_specs_sublayer(m->hp.arch, S->kind, &n_specs);
        for (int k = 0; k < n_specs; k++)
            held &= S->w[specs[k].slot].data != NULL || specs[k].qkv_bias;
        FUZZ_CHECK(held, "layer %d %s weights", S->layer,
                   S->kind == TLM_SUBLAYER_ATTN ? "attention" : "MLP");
    }
    const char *tmpl = tlm_model_chat_template(m);
    volatile size_t sink = tmpl ? strlen(tmpl) : 0;

    /* tokenizer through the public API, every id through the detokenizer */
    static const char text[] = "Hello <|im_start|>world 123 caf\xc3\xa9 \xf0\x9f\x99\x82";
    int32_t ids[64];
    int32_t n = tlm_tokenize(m, text, sizeof text - 1, tlm_model_adds_bos(m), true, ids, 64, &err);
    FUZZ_CHECK(n >= 0, "tokenize: %s", err.msg);
    if (n > 64) n = 64;
    for (int32_t i = 0; i < n; i++) FUZZ_CHECK(ids[i] >= 0 && ids[i] < info.n_vocab, "id %d", ids[i]);
    /* a 1023-letter word ending in a 2-byte character: 1025 bytes, one past
     * the size of the pre-tokenizer's first arena block */
    static char word[1025];
    if (!word[0]) {
        memset(word, 'a', 1023);
        memcpy(word + 1023, "\xc3\xa9", 2);
    }
    n = tlm_tokenize(m, word, sizeof word, false, true, NULL, 0, &err);
    FUZZ_CHECK(n >= 0, "tokenize: %s", err.msg);

    tlm_detok d;
    tlm_detok_init(&d, m);
    char out[64];
    for (int32_t id = -1; id <= info.n_vocab; id++) {
        sink += tlm_detok_push(&d, id, out, sizeof out);
        sink += tlm_token_is_eog(m, id);
    }
    sink += tlm_detok_flush(&d, out, sizeof out);
    (void)sink;

    /* two tokens through the forward pass; logits must be there */
    tlm_context_params p = tlm_context_default_params();
    p.n_ctx = 4;
    p.n_batch = 2;
    p.n_threads = 1;
    tlm_context *c = tlm_context_new(m, &p, &err);
    if (c) {
        int32_t toks[2] = {0, info.n_vocab - 1};
        if (tlm_decode(c, toks, 2, true, &err) == TLM_OK) {
            FUZZ_CHECK(tlm_get_logits(c, 0) && tlm_get_logits(c, -1), "logits");
            FUZZ_CHECK(tlm_decode(c, toks, 1, false, &err) == TLM_OK, "third token: %s", err.msg);
        } else {
            FUZZ_CHECK_ERROR(err);
        }
        tlm_context_free(c);
    } else {
        FUZZ_CHECK_ERROR(err);
    }
}

#endif
