/*
 * fuzz_model_gguf.c — the whole GGUF model loader (model_load_gguf():
 * reader, hyper-parameters, RoPE factors, tokenizer, dequantization) on
 * arbitrary bytes, and on success one short forward pass through the public
 * API, since shapes the loader accepts must be shapes the forward pass can
 * run. The lazy load (model.h) of the same bytes must accept exactly what
 * the eager one accepts, with the same message when it refuses, and give
 * every layer bit-identical arrays when materialised.
 */
#include <string.h>

#include "fuzz_model_checks.h"

/* a (n) array of the lazy layer equals the eager one, bit for bit; both NULL counts too */
static void check_same(const float *lazy, const float *eager, int64_t n, int32_t il,
                       const char *what) {
    FUZZ_CHECK((lazy == NULL) == (eager == NULL), "layer %d %s: present lazily %d, eagerly %d",
               (int)il, what, lazy != NULL, eager != NULL);
    if (lazy)
        FUZZ_CHECK(memcmp(lazy, eager, (size_t)n * sizeof(float)) == 0,
                   "layer %d %s differs between the lazy and the eager load", (int)il, what);
}

static void check_lazy(const char *path, const tlm_model *eager, const tlm_error *eager_err) {
    tlm_error err;
    /* the GGUF loader itself, as for the eager load: model_load_lazy picks a
     * loader by the file's magic, and bytes starting with the .tlm magic
     * would go to another loader with another message */
    tlm_model *m = model_load_gguf(path, MODEL_LOAD_LAZY, &err);
    FUZZ_CHECK((m != NULL) == (eager != NULL), "the lazy load %s what the eager one %s",
               m ? "accepts" : "refuses", eager ? "accepts" : "refuses");
    if (!m) {
        FUZZ_CHECK(strcmp(err.msg, eager_err->msg) == 0, "lazy error '%s', eager '%s'", err.msg,
                   eager_err->msg);
        return;
    }
    const tlm_hparams *hp = &m->hp;
    FUZZ_CHECK(m->n_params == eager->n_params, "n_params %lld lazily, %lld eagerly",
               (long long)m->n_params, (long long)eager->n_params);
    for (int32_t il = 0; il < hp->n_layer; il++) {
        FUZZ_CHECK(model_layer_materialize(m, il, &err) == TLM_OK, "layer %d: %s", (int)il, err.msg);
        FUZZ_CHECK(model_layer_materialize(m, il, &err) == TLM_OK, "layer %d again", (int)il);
        static const char *const names[2][SUBLAYER_MAX_SLOTS] = {
            {"attn_norm", "wq", "wk", "wv", "bq", "bk", "bv", "wo"},
            {"ffn_norm", "w_gate", "w_up", "w_down"}};
        for (int kind = TLM_SUBLAYER_ATTN; kind <= TLM_SUBLAYER_MLP; kind++) {
            const tlm_sublayer *L = model_sublayer(m, il, (tlm_sublayer_kind)kind),
                               *R = model_sublayer(eager, il, (tlm_sublayer_kind)kind);
            FUZZ_CHECK((L != NULL) == (R != NULL), "layer %d sublayer %d held in one load only",
                       (int)il, kind);
            for (int k = 0; L && k < sublayer_n_slots((tlm_sublayer_kind)kind); k++)
                check_same(tensor_f32(&L->w[k]), tensor_f32(&R->w[k]),
                           L->w[k].rows * L->w[k].cols, il, names[kind][k]);
        }
        if (il % 2 == 0) { /* odd layers stay for tlm_model_free */
            model_layer_release(m, il);
            bool released = true;
            for (int32_t i = 0; i < m->n_subs; i++)
                for (int k = 0; m->subs[i].layer == il && k < SUBLAYER_MAX_SLOTS; k++)
                    released &= m->subs[i].w[k].data == NULL;
            FUZZ_CHECK(released, "layer %d released", (int)il);
        }
    }
    tlm_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[64];
    if (!fuzz_memfd_write(0, data, size, path)) return 0;
    tlm_error err;
    tlm_model *m = model_load_gguf(path, MODEL_LOAD_F32, &err);
    if (!m) FUZZ_CHECK_ERROR(err);
    check_lazy(path, m, &err);
    if (!m) return 0;
    fuzz_exercise_model(m);
    tlm_model_free(m);
    return 0;
}
