/*
 * test_tensor_spec.c — the llama family's tensor table (runtime/tensor_spec.h)
 * against the names and shapes llama.cpp's GGUF files and Hugging Face
 * checkpoints use, written out here independently of the table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tensor_spec.h"

static const tlm_hparams hp = {.arch = TLM_ARCH_QWEN2, .n_vocab = 1000, .n_embd = 64,
                               .n_layer = 4, .n_head = 8, .n_head_kv = 2, .head_dim = 16,
                               .n_ff = 96, .qkv_bias = true};

typedef struct want {
    const char *gguf, *hf;
    int64_t rows, cols;
} want;

/* In slot order, which is the order the files store them. */
static const want attn[] = {
    {"blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight", 1, 64},
    {"blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight", 128, 64},
    {"blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight", 32, 64},
    {"blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight", 32, 64},
    {"blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias", 1, 128},
    {"blk.3.attn_k.bias", "model.layers.3.self_attn.k_proj.bias", 1, 32},
    {"blk.3.attn_v.bias", "model.layers.3.self_attn.v_proj.bias", 1, 32},
    {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight", 64, 128},
};
static const want mlp[] = {
    {"blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight", 1, 64},
    {"blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight", 96, 64},
    {"blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight", 96, 64},
    {"blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight", 64, 96},
};

/* Gemma 3, as llama.cpp's converter and transformers name them. */
static const want gemma3_attn[] = {
    {"blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight", 1, 64},
    {"blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight", 128, 64},
    {"blk.3.attn_k.weight", "model.layers.3.self_attn.k_proj.weight", 32, 64},
    {"blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight", 32, 64},
    {"blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias", 1, 128},
    {"blk.3.attn_k.bias", "model.layers.3.self_attn.k_proj.bias", 1, 32},
    {"blk.3.attn_v.bias", "model.layers.3.self_attn.v_proj.bias", 1, 32},
    {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight", 64, 128},
    {"blk.3.attn_q_norm.weight", "model.layers.3.self_attn.q_norm.weight", 1, 16},
    {"blk.3.attn_k_norm.weight", "model.layers.3.self_attn.k_norm.weight", 1, 16},
    {"blk.3.post_attention_norm.weight", "model.layers.3.post_attention_layernorm.weight", 1, 64},
};
static const want gemma3_mlp[] = {
    {"blk.3.ffn_norm.weight", "model.layers.3.pre_feedforward_layernorm.weight", 1, 64},
    {"blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight", 96, 64},
    {"blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight", 96, 64},
    {"blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight", 64, 96},
    {"blk.3.post_ffw_norm.weight", "model.layers.3.post_feedforward_layernorm.weight", 1, 64},
};

static void check_kind_of(tlm_arch arch, tlm_sublayer_kind kind, const want *w, int n_want) {
    int n;
    const tensor_spec *specs = tensor_specs_sublayer(arch, kind, &n);
    assert_int_equal(n, n_want);
    assert_true(n <= sublayer_n_slots(kind));
    for (int k = 0; k < n; k++) {
        char name[128];
        assert_int_equal(specs[k].slot, k);
        assert_int_equal((int)specs[k].place, (int)kind);
        tensor_spec_name(&specs[k], 3, name, sizeof name);
        assert_string_equal(name, w[k].gguf);
        tensor_spec_hf_name(&specs[k], 3, name, sizeof name);
        assert_string_equal(name, w[k].hf);
        const tlm_tensor t = tensor_spec_shape(&specs[k], &hp);
        assert_int_equal(t.rows, w[k].rows);
        assert_int_equal(t.cols, w[k].cols);
        assert_null(t.data);
    }
}

static void check_kind(tlm_sublayer_kind kind, const want *w, int n_want) {
    check_kind_of(hp.arch, kind, w, n_want);
}

static void test_sublayer_tables(void **state) {
    (void)state;
    check_kind(TLM_SUBLAYER_ATTN, attn, (int)(sizeof attn / sizeof attn[0]));
    check_kind(TLM_SUBLAYER_MLP, mlp, (int)(sizeof mlp / sizeof mlp[0]));
}

/* Gemma 3's norms: every one of a Hugging Face checkpoint holds w - 1. */
static void test_gemma3_tables(void **state) {
    (void)state;
    check_kind_of(TLM_ARCH_GEMMA3, TLM_SUBLAYER_ATTN, gemma3_attn,
                  (int)(sizeof gemma3_attn / sizeof gemma3_attn[0]));
    check_kind_of(TLM_ARCH_GEMMA3, TLM_SUBLAYER_MLP, gemma3_mlp,
                  (int)(sizeof gemma3_mlp / sizeof gemma3_mlp[0]));
    int n;
    const tensor_spec *specs = tensor_specs_sublayer(TLM_ARCH_GEMMA3, TLM_SUBLAYER_ATTN, &n);
    for (int k = 0; k < n; k++)
        assert_int_equal(specs[k].hf_norm_offset,
                         k == ATTN_NORM || k == ATTN_Q_NORM || k == ATTN_K_NORM || k == ATTN_POST_NORM);
    specs = tensor_specs_sublayer(TLM_ARCH_GEMMA3, TLM_SUBLAYER_MLP, &n);
    for (int k = 0; k < n; k++)
        assert_int_equal(specs[k].hf_norm_offset, k == MLP_NORM || k == MLP_POST_NORM);
    assert_true(tensor_spec_model(TLM_ARCH_GEMMA3, MODEL_OUT_NORM)->hf_norm_offset);
    assert_false(tensor_spec_model(TLM_ARCH_QWEN2, MODEL_OUT_NORM)->hf_norm_offset);
}

/* Only the q/k/v biases depend on the model having them. */
static void test_held(void **state) {
    (void)state;
    tlm_hparams no_bias = hp;
    no_bias.qkv_bias = false;
    int n;
    const tensor_spec *specs = tensor_specs_sublayer(hp.arch, TLM_SUBLAYER_ATTN, &n);
    for (int k = 0; k < n; k++) {
        const bool bias = k == ATTN_Q_BIAS || k == ATTN_K_BIAS || k == ATTN_V_BIAS;
        assert_true(tensor_spec_held(&specs[k], &hp));
        assert_int_equal(tensor_spec_held(&specs[k], &no_bias), !bias);
    }
}

static void test_model_tensors(void **state) {
    (void)state;
    static const want model[MODEL_N_SLOTS] = {
        {"token_embd.weight", "model.embed_tokens.weight", 1000, 64},
        {"output_norm.weight", "model.norm.weight", 1, 64},
        {"output.weight", "lm_head.weight", 1000, 64},
    };
    for (int k = 0; k < MODEL_N_SLOTS; k++) {
        const tensor_spec *s = tensor_spec_model(hp.arch, k);
        char name[64];
        assert_int_equal((int)s->place, (int)SPEC_MODEL);
        assert_int_equal(s->slot, k);
        tensor_spec_name(s, -1, name, sizeof name);
        assert_string_equal(name, model[k].gguf);
        tensor_spec_hf_name(s, -1, name, sizeof name);
        assert_string_equal(name, model[k].hf);
        const tlm_tensor t = tensor_spec_shape(s, &hp);
        assert_int_equal(t.rows, model[k].rows);
        assert_int_equal(t.cols, model[k].cols);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sublayer_tables),
        cmocka_unit_test(test_gemma3_tables),
        cmocka_unit_test(test_held),
        cmocka_unit_test(test_model_tensors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
