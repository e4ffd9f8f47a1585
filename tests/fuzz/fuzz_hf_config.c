/*
 * fuzz_hf_config.c — model_load_hf() on a directory whose config.json is the
 * fuzzer's input, next to a fixed tokenizer.json and model.safetensors from
 * tests/fuzz/data (a one-layer model with every tensor the llama and qwen2
 * layouts name, so that matching configs load completely).
 */
#include "fuzz_common.h"
#include "model.h"

static const char *model_dir;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    static const char *const fixed[][2] = {{"tokenizer_spm.json", "tokenizer.json"},
                                           {"model.safetensors", "model.safetensors"}};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        size_t size;
        char *bytes = fuzz_read_data(fixed[i][0], &size);
        fuzz_tmpdir_write(fixed[i][1], bytes, size);
        free(bytes);
    }
    model_dir = fuzz_tmpdir();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!model_dir) LLVMFuzzerInitialize(NULL, NULL);
    fuzz_tmpdir_write("config.json", data, size);
    tlm_error err;
    tlm_model *m = model_load_hf(model_dir, false, &err);
    if (!m) {
        FUZZ_CHECK_ERROR(err);
        return 0;
    }
    tlm_model_info info;
    tlm_model_get_info(m, &info);
    FUZZ_CHECK(info.n_vocab > 0 && info.n_embd > 0 && info.n_layer > 0 && info.head_dim > 0,
               "hyper-parameters");
    FUZZ_CHECK(strcmp(info.source_format, "safetensors") == 0, "source format");
    FUZZ_CHECK(m->tok_embd.data && m->out_norm.data && m->output.data && m->subs, "weights");
    FUZZ_CHECK(m->hp.tied_embeddings == (m->output.data == m->tok_embd.data), "tied embeddings");
    for (int32_t l = 0; l < info.n_layer; l++)
        FUZZ_CHECK((model_sublayer(m, l, TLM_SUBLAYER_ATTN)->w[ATTN_Q_BIAS].data != NULL) ==
                       m->hp.qkv_bias,
                   "layer %d biases", l);
    tlm_model_free(m);
    return 0;
}
