/*
 * fuzz_model_gguf.c — the whole GGUF model loader (model_load_gguf():
 * reader, hyper-parameters, RoPE factors, tokenizer, dequantization) on
 * arbitrary bytes, and on success one short forward pass through the public
 * API, since shapes the loader accepts must be shapes the forward pass can
 * run.
 */
#include "fuzz_model_checks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    if (!fuzz_memfd_write(0, data, size, path)) return 0;
    tlm_error err;
    tlm_model *m = model_load_gguf(path, &err);
    if (!m) {
        FUZZ_CHECK_ERROR(err);
        return 0;
    }
    fuzz_exercise_model(m);
    tlm_model_free(m);
    return 0;
}
