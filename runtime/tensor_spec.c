/*
 * tensor_spec.c — the tensor tables of the llama family and of Gemma 3
 * (tensor_spec.h).
 */
#include "tensor_spec.h"

#include <stdio.h>

/* Slot order = file order: norm, q, k, v, the biases, output. */
static const tensor_spec llama_attn[ATTN_OUT + 1] = {
    {SPEC_ATTN, ATTN_NORM, "attn_norm.weight", "input_layernorm.weight", DIM_ONE, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_ATTN, ATTN_Q, "attn_q.weight", "self_attn.q_proj.weight", DIM_Q, DIM_EMBD, false, PERM_Q_HEADS, false},
    {SPEC_ATTN, ATTN_K, "attn_k.weight", "self_attn.k_proj.weight", DIM_KV, DIM_EMBD, false, PERM_KV_HEADS, false},
    {SPEC_ATTN, ATTN_V, "attn_v.weight", "self_attn.v_proj.weight", DIM_KV, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_ATTN, ATTN_Q_BIAS, "attn_q.bias", "self_attn.q_proj.bias", DIM_ONE, DIM_Q, true, PERM_Q_HEADS, false},
    {SPEC_ATTN, ATTN_K_BIAS, "attn_k.bias", "self_attn.k_proj.bias", DIM_ONE, DIM_KV, true, PERM_KV_HEADS, false},
    {SPEC_ATTN, ATTN_V_BIAS, "attn_v.bias", "self_attn.v_proj.bias", DIM_ONE, DIM_KV, true, PERM_NONE, false},
    {SPEC_ATTN, ATTN_OUT, "attn_output.weight", "self_attn.o_proj.weight", DIM_EMBD, DIM_Q, false, PERM_NONE, false},
};

static const tensor_spec llama_mlp[MLP_DOWN + 1] = {
    {SPEC_MLP, MLP_NORM, "ffn_norm.weight", "post_attention_layernorm.weight", DIM_ONE, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_MLP, MLP_GATE, "ffn_gate.weight", "mlp.gate_proj.weight", DIM_FF, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_MLP, MLP_UP, "ffn_up.weight", "mlp.up_proj.weight", DIM_FF, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_MLP, MLP_DOWN, "ffn_down.weight", "mlp.down_proj.weight", DIM_EMBD, DIM_FF, false, PERM_NONE, false},
};

static const tensor_spec llama_model[MODEL_N_SLOTS] = {
    {SPEC_MODEL, MODEL_TOK_EMBD, "token_embd.weight", "model.embed_tokens.weight", DIM_VOCAB, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_MODEL, MODEL_OUT_NORM, "output_norm.weight", "model.norm.weight", DIM_ONE, DIM_EMBD, false, PERM_NONE, false},
    /* absent when tied to the embedding (hp->tied_embeddings) */
    {SPEC_MODEL, MODEL_OUTPUT, "output.weight", "lm_head.weight", DIM_VOCAB, DIM_EMBD, false, PERM_NONE, false},
};

/* Gemma 3: the llama slots (its files have no biases) and the norms it
 * adds. GGUF's attn_norm / ffn_norm are the pre-norms; Hugging Face's
 * post_attention_layernorm is the attention's post-norm, not the MLP's
 * pre-norm as in llama. Every norm of a Hugging Face checkpoint holds w - 1. */
static const tensor_spec gemma3_attn[ATTN_N_SLOTS] = {
    {SPEC_ATTN, ATTN_NORM, "attn_norm.weight", "input_layernorm.weight", DIM_ONE, DIM_EMBD, false, PERM_NONE, true},
    {SPEC_ATTN, ATTN_Q, "attn_q.weight", "self_attn.q_proj.weight", DIM_Q, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_ATTN, ATTN_K, "attn_k.weight", "self_attn.k_proj.weight", DIM_KV, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_ATTN, ATTN_V, "attn_v.weight", "self_attn.v_proj.weight", DIM_KV, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_ATTN, ATTN_Q_BIAS, "attn_q.bias", "self_attn.q_proj.bias", DIM_ONE, DIM_Q, true, PERM_NONE, false},
    {SPEC_ATTN, ATTN_K_BIAS, "attn_k.bias", "self_attn.k_proj.bias", DIM_ONE, DIM_KV, true, PERM_NONE, false},
    {SPEC_ATTN, ATTN_V_BIAS, "attn_v.bias", "self_attn.v_proj.bias", DIM_ONE, DIM_KV, true, PERM_NONE, false},
    {SPEC_ATTN, ATTN_OUT, "attn_output.weight", "self_attn.o_proj.weight", DIM_EMBD, DIM_Q, false, PERM_NONE, false},
    {SPEC_ATTN, ATTN_Q_NORM, "attn_q_norm.weight", "self_attn.q_norm.weight", DIM_ONE, DIM_HEAD, false, PERM_NONE, true},
    {SPEC_ATTN, ATTN_K_NORM, "attn_k_norm.weight", "self_attn.k_norm.weight", DIM_ONE, DIM_HEAD, false, PERM_NONE, true},
    {SPEC_ATTN, ATTN_POST_NORM, "post_attention_norm.weight", "post_attention_layernorm.weight", DIM_ONE, DIM_EMBD, false, PERM_NONE, true},
};

static const tensor_spec gemma3_mlp[MLP_N_SLOTS] = {
    {SPEC_MLP, MLP_NORM, "ffn_norm.weight", "pre_feedforward_layernorm.weight", DIM_ONE, DIM_EMBD, false, PERM_NONE, true},
    {SPEC_MLP, MLP_GATE, "ffn_gate.weight", "mlp.gate_proj.weight", DIM_FF, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_MLP, MLP_UP, "ffn_up.weight", "mlp.up_proj.weight", DIM_FF, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_MLP, MLP_DOWN, "ffn_down.weight", "mlp.down_proj.weight", DIM_EMBD, DIM_FF, false, PERM_NONE, false},
    {SPEC_MLP, MLP_POST_NORM, "post_ffw_norm.weight", "post_feedforward_layernorm.weight", DIM_ONE, DIM_EMBD, false, PERM_NONE, true},
};

static const tensor_spec gemma3_model[MODEL_N_SLOTS] = {
    {SPEC_MODEL, MODEL_TOK_EMBD, "token_embd.weight", "model.embed_tokens.weight", DIM_VOCAB, DIM_EMBD, false, PERM_NONE, false},
    {SPEC_MODEL, MODEL_OUT_NORM, "output_norm.weight", "model.norm.weight", DIM_ONE, DIM_EMBD, false, PERM_NONE, true},
    /* Gemma 3 ties it to the embedding */
    {SPEC_MODEL, MODEL_OUTPUT, "output.weight", "lm_head.weight", DIM_VOCAB, DIM_EMBD, false, PERM_NONE, false},
};

const tensor_spec *tensor_specs_sublayer(tlm_arch arch, tlm_sublayer_kind kind, int *n) {
    const bool gemma = arch == TLM_ARCH_GEMMA3;
    if (kind == TLM_SUBLAYER_ATTN) {
        *n = gemma ? ATTN_N_SLOTS : ATTN_OUT + 1;
        return gemma ? gemma3_attn : llama_attn;
    }
    *n = gemma ? MLP_N_SLOTS : MLP_DOWN + 1;
    return gemma ? gemma3_mlp : llama_mlp;
}

const tensor_spec *tensor_spec_model(tlm_arch arch, int slot) {
    return arch == TLM_ARCH_GEMMA3 ? &gemma3_model[slot] : &llama_model[slot];
}

int64_t tensor_spec_dim(const tlm_hparams *hp, spec_dim d) {
    switch (d) {
    case DIM_EMBD: return hp->n_embd;
    case DIM_FF: return hp->n_ff;
    case DIM_Q: return (int64_t)hp->n_head * hp->head_dim;
    case DIM_KV: return (int64_t)hp->n_head_kv * hp->head_dim;
    case DIM_VOCAB: return hp->n_vocab;
    case DIM_HEAD: return hp->head_dim;
    default: return 1;
    }
}

void tensor_spec_name(const tensor_spec *s, int32_t il, char *buf, size_t cap) {
    if (s->place == SPEC_MODEL) snprintf(buf, cap, "%s", s->gguf);
    else snprintf(buf, cap, "blk.%d.%s", (int)il, s->gguf);
}

void tensor_spec_hf_name(const tensor_spec *s, int32_t il, char *buf, size_t cap) {
    if (s->place == SPEC_MODEL) snprintf(buf, cap, "%s", s->hf);
    else snprintf(buf, cap, "model.layers.%d.%s", (int)il, s->hf);
}

tlm_tensor tensor_spec_shape(const tensor_spec *s, const tlm_hparams *hp) {
    return tensor_of_f32(NULL, tensor_spec_dim(hp, s->rows), tensor_spec_dim(hp, s->cols));
}

tlm_tensor *tensor_spec_slot(const tensor_spec *s, struct tlm_model *m, tlm_sublayer *sub) {
    if (s->place != SPEC_MODEL) return &sub->w[s->slot];
    switch (s->slot) {
    case MODEL_TOK_EMBD: return &m->tok_embd;
    case MODEL_OUT_NORM: return &m->out_norm;
    default: return &m->output;
    }
}
