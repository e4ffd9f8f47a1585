/*
 * model.h — the in-memory model: hyper-parameters, weights, tokenizer.
 *
 * Matrices are row-major (out_features, in_features): row r holds the weights
 * producing output r, the layout of both GGUF (ne[0] = in) and safetensors.
 * RoPE pairs differ by source: GGUF "llama" files store Q/K permuted for
 * adjacent pairs (TLM_ROPE_NORM); Hugging Face checkpoints and GGUF qwen2 use
 * the rotate-half convention (TLM_ROPE_NEOX). Weights are never re-permuted.
 */
#ifndef TLM_MODEL_H
#define TLM_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "tokenizer.h"
#include "trimlm.h"

typedef enum tlm_arch {
    TLM_ARCH_LLAMA = 1, /* Llama 2/3, SmolLM, TinyLlama, Mistral */
    TLM_ARCH_QWEN2 = 2, /* llama + q/k/v biases */
} tlm_arch;

typedef enum tlm_rope_style {
    TLM_ROPE_NORM = 0, /* rotate (x[2i], x[2i+1]) */
    TLM_ROPE_NEOX = 1, /* rotate (x[i], x[i + head_dim/2]) */
} tlm_rope_style;

typedef enum tlm_rope_scaling {
    TLM_ROPE_SCALING_NONE = 0,
    TLM_ROPE_SCALING_LINEAR = 1, /* positions divided by factor */
    TLM_ROPE_SCALING_LLAMA3 = 2, /* per-frequency smooth interpolation */
} tlm_rope_scaling;

typedef struct tlm_hparams {
    tlm_arch arch;
    int32_t n_vocab;
    int32_t n_embd;      /* hidden size */
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;    /* usually n_embd / n_head */
    int32_t n_ff;        /* MLP inner size */
    int32_t n_ctx_train;
    float rms_eps;
    float rope_theta;
    int32_t rope_dim;    /* dimensions rotated per head (== head_dim here) */
    tlm_rope_style rope_style;
    tlm_rope_scaling rope_scaling;
    float rope_factor;           /* linear / llama3 */
    float rope_low_freq_factor;  /* llama3 */
    float rope_high_freq_factor; /* llama3 */
    int32_t rope_orig_ctx;       /* llama3: original_max_position_embeddings */
    bool tied_embeddings;
    bool tied_by_absence; /* tied because the file has no output matrix (a GGUF
                             without output.weight), not by its metadata */
    bool qkv_bias;
} tlm_hparams;

/* Storage of a weight matrix the forward pass reads. Values are the .tlm
 * tensor types (tlm_format.h), so a mapped tensor's type is used as it is. */
typedef enum tlm_wtype {
    TLM_W_F32 = 0,
    TLM_W_Q8_G32_R16 = 16, /* quant/qformat.h packed q8_g32_r16 (= TLM_Q8_G32) */
    TLM_W_Q4_G32_R16 = 17, /* quant/qformat.h packed q4_g32_r16 (= TLM_Q4_G32) */
} tlm_wtype;

/* A (rows, cols) matrix, row r producing output r; cols % 32 == 0 for the
 * quantized types. data is read-only: an f32 array of the model, or the
 * packed bytes inside the mapped .tlm file. */
typedef struct tlm_matrix {
    tlm_wtype type;
    int64_t rows, cols;
    const void *data;
} tlm_matrix;

/* A layer is two sublayers, attention and MLP. A model converted with some
 * sublayers removed (.tlm) lacks them: has_attn / has_mlp is false and that
 * sublayer's pointers are NULL; the forward pass skips it. */
typedef struct tlm_layer {
    bool has_attn;
    bool has_mlp;
    float *attn_norm; /* (n_embd) */
    float *wq;        /* (n_head*head_dim, n_embd) */
    float *wk;        /* (n_head_kv*head_dim, n_embd) */
    float *wv;        /* (n_head_kv*head_dim, n_embd) */
    float *bq;        /* (n_head*head_dim) or NULL */
    float *bk;        /* (n_head_kv*head_dim) or NULL */
    float *bv;        /* (n_head_kv*head_dim) or NULL */
    float *wo;        /* (n_embd, n_head*head_dim) */
    float *ffn_norm;  /* (n_embd) */
    float *w_gate;    /* (n_ff, n_embd) */
    float *w_up;      /* (n_ff, n_embd) */
    float *w_down;    /* (n_embd, n_ff) */
    /* The same seven matrices when stored quantized (.tlm int8/int4): then
     * .data is set and the f32 pointer above is NULL. The loaders of GGUF and
     * Hugging Face checkpoints fill only the f32 pointers; the forward pass
     * reads every matrix through model_matrix(), which picks whichever is set. */
    tlm_matrix wq_q, wk_q, wv_q, wo_q, w_gate_q, w_up_q, w_down_q;
} tlm_layer;

struct tlm_model {
    tlm_hparams hp;
    char *arch_name;     /* "llama", "qwen2" */
    char *name;
    char *chat_template; /* NULL when the model has none */
    const char *source_format;
    float *tok_embd;     /* (n_vocab, n_embd) */
    float *out_norm;     /* (n_embd) */
    float *output;       /* (n_vocab, n_embd); == tok_embd when tied */
    /* tok_embd / output stored quantized (NULL f32 pointer, as for layers).
     * A quantized embedding table is dequantized one looked-up row at a time. */
    tlm_matrix tok_embd_q, output_q;
    tlm_layer *layers;   /* n_layer */
    tlm_tokenizer *tok;
    int64_t n_params;
    /* Every weight array above is a separate tlm_malloc_aligned block listed
     * here so that freeing is one loop. */
    float **owned;
    int32_t n_owned, cap_owned;
    /* Quantized matrices point into this read-only mapping of the .tlm file,
     * kept for the model's lifetime (NULL when nothing is mapped). */
    const void *map;
    size_t map_bytes;
    int64_t quant_bytes; /* stored bytes of the quantized matrices */
    int64_t quant_params; /* their elements (also counted in n_params) */
    /* Loaded by model_load_lazy: where each layer's tensors lie in the source,
     * to be converted on demand by model_layer_materialize (model_lazy.c).
     * NULL for a model loaded whole. */
    struct model_lazy *lazy;
};

/* The matrix to compute with: q when it holds data, else the f32 array f32
 * (rows, cols). */
static inline tlm_matrix model_matrix(const tlm_matrix *q, const float *f32, int64_t rows,
                                      int64_t cols) {
    if (q->data) return *q;
    return (tlm_matrix){.type = TLM_W_F32, .rows = rows, .cols = cols, .data = f32};
}

/* Allocates an f32 weight array of n floats owned by the model. */
float *model_alloc_weight(struct tlm_model *m, uint64_t n, tlm_error *err);

/* Checks hyper-parameters for consistency and absurd sizes (before any
 * allocation driven by them). */
tlm_status model_check_hparams(const tlm_hparams *hp, const char *src, tlm_error *err);

/* freq / (the Llama 3.1 rule's scaled freq): 1 for short wavelengths,
 * `factor` for long ones, a smooth blend in between; what a GGUF's
 * rope_freqs.weight holds per frequency (written by gguf_writer.c, checked
 * by model_gguf.c). */
double model_llama3_rope_divisor(double freq, double factor, double lo, double hi, double orig);

/* Loaders (model_gguf.c, model_hf.c); tlm_model_load() picks one. lazy:
 * validate every tensor as usual but convert only the non-layer ones (see
 * model_load_lazy). */
struct tlm_model *model_load_gguf(const char *path, bool lazy, tlm_error *err);
struct tlm_model *model_load_hf(const char *dir, bool lazy, tlm_error *err);
/* ------------------------------------------------ lazily loaded layers
 *
 * For the converter, whose peak memory would otherwise be the whole model in
 * f32: a GGUF or Hugging Face source loaded lazily holds the token embedding,
 * output norm and output head as tlm_model_load does, but every layer's f32
 * pointers stay NULL until model_layer_materialize(m, il) converts that
 * layer (all its tensors at once: the activation-aware scaling rewrites a
 * layer's norms and matrices together) with the eager loader's own
 * conversion code, so the values are bit-identical. The source files stay
 * open; layers are read with pread, so a file truncated after loading gives
 * an error, not a SIGBUS. Everything a load checks (shapes, types, offsets
 * within the file) is still checked up front.
 *
 * The functions take a const model: a layer's arrays are a cache behind the
 * model's layers pointer, not part of what the model is. On a model loaded
 * whole (or a .tlm file, which model_load_lazy loads whole) they do nothing.
 * n_params counts every layer, materialised or not. */

/* tlm_model_load, with the layers of a GGUF or Hugging Face source left for
 * model_layer_materialize. */
struct tlm_model *model_load_lazy(const char *path, tlm_error *err);

/* Converts layer il's tensors into one f32 block (no-op when it is already
 * there). On failure the layer is left as it was and err names the file
 * and tensor. */
tlm_status model_layer_materialize(const struct tlm_model *m, int32_t il, tlm_error *err);

/* Frees layer il's block and sets its f32 pointers back to NULL. */
void model_layer_release(const struct tlm_model *m, int32_t il);

/* For the loaders. A source file's bytes at [offset, offset + nbytes) hold
 * a tensor of `type` (the loader's own numbering) to be converted to
 * rows * cols floats by convert. */
typedef void (*model_lazy_convert_fn)(uint32_t type, const void *raw, float *dst, uint64_t rows,
                                      uint64_t cols);
struct model_lazy *model_lazy_new(const char *src, int32_t n_layer, model_lazy_convert_fn convert,
                                  tlm_error *err);
/* Opens path for later reads (once per path) and checks it still has the
 * size it was parsed with; *file gets its index. */
tlm_status model_lazy_open_file(struct model_lazy *lz, const char *path, uint64_t size,
                                int32_t *file, tlm_error *err);
/* Records that layer il's *slot (a field of m->layers[il]) is tensor name;
 * rows == 1 for a vector. */
tlm_status model_lazy_add_tensor(struct model_lazy *lz, int32_t il, float **slot, const char *name,
                                 int32_t file, uint32_t type, uint64_t offset, uint64_t nbytes,
                                 uint64_t rows, uint64_t cols, tlm_error *err);
void model_lazy_free(struct model_lazy *lz);

/* trimlm's own file (model_tlm.c, layout in tlm_format.h). */
struct tlm_model *model_load_tlm(const char *path, tlm_error *err);
/* True when the file at path starts with the .tlm magic or is named *.tlm. */
bool model_is_tlm_file(const char *path);

#endif
