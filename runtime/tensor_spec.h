/*
 * tensor_spec.h — the tensors of a model, one table per architecture: each
 * tensor's name in every file format, its place in the in-memory model
 * (model.h: a sublayer slot or one of the model's own tensors), its shape in
 * terms of the hyper-parameters, and whether it may be absent.
 *
 * Every loader (GGUF, safetensors, .tlm, lazy), both writers and the
 * activation-aware scaling walk this table instead of a list of their own,
 * so a tensor added to an architecture is added here once.
 */
#ifndef TLM_TENSOR_SPEC_H
#define TLM_TENSOR_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* A dimension of a tensor, from the hyper-parameters. */
typedef enum spec_dim {
    DIM_ONE = 0, /* 1: the rows of a vector */
    DIM_EMBD,    /* n_embd */
    DIM_FF,      /* n_ff */
    DIM_Q,       /* n_head * head_dim */
    DIM_KV,      /* n_head_kv * head_dim */
    DIM_VOCAB,   /* n_vocab */
    DIM_HEAD,    /* head_dim */
} spec_dim;

/* The model's tensors outside the sublayers (tensor_spec.place == SPEC_MODEL). */
enum { MODEL_TOK_EMBD = 0, MODEL_OUT_NORM, MODEL_OUTPUT, MODEL_N_SLOTS };

/* Where a tensor lives: a slot of a sublayer of that kind, or of the model. */
typedef enum spec_place {
    SPEC_ATTN = TLM_SUBLAYER_ATTN,
    SPEC_MLP = TLM_SUBLAYER_MLP,
    SPEC_MODEL = -1,
} spec_place;

/* How the GGUF writer reorders a tensor's rows (or a bias's elements) from
 * rotate-half RoPE to GGUF llama's adjacent pairs. */
typedef enum spec_rope_perm {
    PERM_NONE = 0,
    PERM_Q_HEADS,  /* per query head */
    PERM_KV_HEADS, /* per KV head */
} spec_rope_perm;

typedef struct tensor_spec {
    spec_place place;
    int slot;             /* ATTN_* / MLP_* / MODEL_* */
    const char *gguf;     /* GGUF and .tlm name; "blk.N." in front for a sublayer's */
    const char *hf;       /* safetensors name; "model.layers.N." in front for a sublayer's */
    spec_dim rows, cols;  /* rows DIM_ONE: a vector of cols */
    bool qkv_bias;        /* there only when the model has q/k/v biases (hp->qkv_bias) */
    spec_rope_perm perm;
    bool hf_norm_offset;  /* the safetensors file holds w - 1 of this norm (Gemma) */
} tensor_spec;

/* The sublayer tensors of kind for the architecture, in slot order (which is
 * also the order the files store them); *n gets their count (at most
 * sublayer_n_slots(kind)). The llama family (llama, qwen2, deci) shares one
 * table: qwen2 differs only in having the q/k/v biases. gemma3 adds the
 * q/k norms and the post-norms. */
const tensor_spec *tensor_specs_sublayer(tlm_arch arch, tlm_sublayer_kind kind, int *n);
/* The model's own tensors (token embedding, output norm, output head), by
 * MODEL_* slot. */
const tensor_spec *tensor_spec_model(tlm_arch arch, int slot);

/* The size of a dimension. */
int64_t tensor_spec_dim(const tlm_hparams *hp, spec_dim d);
/* Whether a model with hp holds the tensor (a bias only with q/k/v biases). */
static inline bool tensor_spec_held(const tensor_spec *s, const tlm_hparams *hp) {
    return !s->qkv_bias || hp->qkv_bias;
}
/* The GGUF / .tlm name of the tensor of original layer il ("blk.3.attn_q.weight"). */
void tensor_spec_name(const tensor_spec *s, int32_t il, char *buf, size_t cap);
/* The safetensors name ("model.layers.3.self_attn.q_proj.weight"). */
void tensor_spec_hf_name(const tensor_spec *s, int32_t il, char *buf, size_t cap);
/* The empty tensor with the spec's shape and no data, f32. */
tlm_tensor tensor_spec_shape(const tensor_spec *s, const tlm_hparams *hp);
/* The tensor slot of the spec in sublayer sub (NULL for a model tensor) or m. */
tlm_tensor *tensor_spec_slot(const tensor_spec *s, struct tlm_model *m, tlm_sublayer *sub);

#endif
