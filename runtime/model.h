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
    TLM_ARCH_GEMMA3 = 3, /* Gemma 3 text: four norms a block, q/k norms, GeGLU,
                            interleaved sliding-window and global attention */
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
    /* gemma3 (0 elsewhere). A local layer's queries see the sliding_window
     * most recent positions, their own included; every swa_period-th layer
     * (il % swa_period == swa_period - 1) is global and sees all of them. */
    int32_t sliding_window;  /* tokens; 0: every layer global */
    int32_t swa_period;      /* layers per global layer */
    float rope_theta_local;  /* RoPE base of the local layers (rope_theta: global) */
    float attn_scale;        /* scores = scale * q.k; 0: 1/sqrt(head_dim) */
    float logit_softcap;     /* logits = cap * tanh(logits / cap); 0: none */
} tlm_hparams;

/* Whether original layer il attends to a sliding window (gemma3's local
 * layers) rather than to every position before it. */
static inline bool model_layer_is_local(const tlm_hparams *hp, int32_t il) {
    return hp->sliding_window > 0 && hp->swa_period > 0 && (il + 1) % hp->swa_period != 0;
}

/* How a tensor's elements are stored. The values below 256 are the .tlm
 * tensor types (tlm_format.h), so a mapped tensor's type is used as it is;
 * TLM_STORAGE_GGML_BASE + a GGML type number (quant/ggml_types.h) is a GGUF
 * block type kept as the file holds it (rows of ggml_row_bytes each). F16
 * and BF16 rows are the same bytes in both formats, so those two have one
 * value each. */
#define TLM_STORAGE_GGML_BASE 256
typedef enum tlm_storage {
    TLM_STORAGE_F32 = 0,
    TLM_STORAGE_F16 = 1,         /* IEEE binary16 (= GGML F16) */
    TLM_STORAGE_BF16 = 2,        /* the top half of an f32 (= GGML BF16) */
    TLM_STORAGE_Q8_G32_R16 = 16, /* quant/qformat.h packed q8_g32_r16 (= TLM_Q8_G32) */
    TLM_STORAGE_Q4_G32_R16 = 17, /* quant/qformat.h packed q4_g32_r16 (= TLM_Q4_G32) */
    TLM_STORAGE_GGML_Q4_0 = TLM_STORAGE_GGML_BASE + 2,
    TLM_STORAGE_GGML_Q4_1 = TLM_STORAGE_GGML_BASE + 3,
    TLM_STORAGE_GGML_Q5_0 = TLM_STORAGE_GGML_BASE + 6,
    TLM_STORAGE_GGML_Q5_1 = TLM_STORAGE_GGML_BASE + 7,
    TLM_STORAGE_GGML_Q8_0 = TLM_STORAGE_GGML_BASE + 8,
    TLM_STORAGE_GGML_Q2_K = TLM_STORAGE_GGML_BASE + 10,
    TLM_STORAGE_GGML_Q3_K = TLM_STORAGE_GGML_BASE + 11,
    TLM_STORAGE_GGML_Q4_K = TLM_STORAGE_GGML_BASE + 12,
    TLM_STORAGE_GGML_Q5_K = TLM_STORAGE_GGML_BASE + 13,
    TLM_STORAGE_GGML_Q6_K = TLM_STORAGE_GGML_BASE + 14,
} tlm_storage;

/* A weight of the model: a (rows, cols) matrix, row r producing output r, or
 * a vector (rows == 1). cols % 32 == 0 for the packed types. The forward
 * pass picks its kernels from `type`: f32, the packed types (mapped from a
 * .tlm file), or a GGUF block type / F16 / BF16 used in place inside the
 * read-only mapping of a GGUF file (model_gguf.c; vectors stay f32).
 * data == NULL: not there (a lazily loaded layer not materialised, or an
 * optional tensor the model lacks; rows and cols still say its shape when
 * the loader knows it). data is an array owned by the model, a lazily
 * loaded layer's block, or bytes inside the model's read-only mapping. */
typedef struct tlm_tensor {
    tlm_storage type;
    int64_t rows, cols;
    void *data;
} tlm_tensor;

static inline bool tensor_is_packed(const tlm_tensor *t) {
    return t->type == TLM_STORAGE_Q8_G32_R16 || t->type == TLM_STORAGE_Q4_G32_R16;
}

/* The GGML type number of a tensor stored as GGUF holds it (a block type,
 * F16 or BF16), the index of the kernels' gemv_gguf / gemm_gguf; -1 for
 * f32 and the packed types. */
static inline int tensor_ggml_type(const tlm_tensor *t) {
    if (t->type == TLM_STORAGE_F16) return 1;  /* GGML_TYPE_F16 */
    if (t->type == TLM_STORAGE_BF16) return 30; /* GGML_TYPE_BF16 */
    if (t->type >= TLM_STORAGE_GGML_BASE && t->type < TLM_STORAGE_GGML_BASE + 31)
        return (int)t->type - TLM_STORAGE_GGML_BASE;
    return -1;
}

/* The f32 values of t, or NULL when it holds none (absent, or another type). */
static inline float *tensor_f32(const tlm_tensor *t) {
    return t->type == TLM_STORAGE_F32 ? (float *)t->data : NULL;
}

/* An f32 tensor over an array of the model. */
static inline tlm_tensor tensor_of_f32(float *data, int64_t rows, int64_t cols) {
    return (tlm_tensor){.type = TLM_STORAGE_F32, .rows = rows, .cols = cols, .data = data};
}

/* ------------------------------------------------------------ sublayers
 *
 * The model is the list of its sublayers between the token embedding and
 * the output head, in execution order; each one is
 *     x += sublayer(rmsnorm(x) * norm)
 * (gemma3: x += rmsnorm(sublayer(rmsnorm(x) * norm)) * post_norm, the
 * post-norm inside the sublayer, so that dropping one removes exactly its
 * contribution to the residual stream). Norm weights are held as the
 * multipliers they are: a Hugging Face Gemma checkpoint's w is 1 + w here,
 * as llama.cpp's GGUF files already store it.
 * An attention or MLP sublayer removed at conversion (or missing from a
 * pruned GGUF) is simply not in the list. A sublayer's tensors sit in
 * slots; the tensor-spec table (tensor_spec.h) names each slot's tensor in
 * every file format, with its shape and whether it is optional. */

/* Slots of an attention sublayer, in the order the files store them. */
enum {
    ATTN_NORM = 0, /* (n_embd) */
    ATTN_Q,        /* (n_head*head_dim, n_embd) */
    ATTN_K,        /* (n_head_kv*head_dim, n_embd) */
    ATTN_V,        /* (n_head_kv*head_dim, n_embd) */
    ATTN_Q_BIAS,   /* (n_head*head_dim); data NULL without q/k/v biases */
    ATTN_K_BIAS,   /* (n_head_kv*head_dim) */
    ATTN_V_BIAS,   /* (n_head_kv*head_dim) */
    ATTN_OUT,      /* (n_embd, n_head*head_dim) */
    /* gemma3 only (data NULL elsewhere): */
    ATTN_Q_NORM,    /* (head_dim) RMSNorm of each query head, before RoPE */
    ATTN_K_NORM,    /* (head_dim) RMSNorm of each key head, before RoPE */
    ATTN_POST_NORM, /* (n_embd) RMSNorm of the sublayer's output, before the residual add */
    ATTN_N_SLOTS
};
/* Slots of an MLP sublayer (SwiGLU; gemma3: GeGLU). */
enum {
    MLP_NORM = 0,  /* (n_embd) */
    MLP_GATE,      /* (n_ff, n_embd) */
    MLP_UP,        /* (n_ff, n_embd) */
    MLP_DOWN,      /* (n_embd, n_ff) */
    MLP_POST_NORM, /* (n_embd) gemma3 only: RMSNorm of the output before the add */
    MLP_N_SLOTS
};
#define SUBLAYER_NORM 0 /* = ATTN_NORM = MLP_NORM */
#define SUBLAYER_MAX_SLOTS ATTN_N_SLOTS

typedef struct tlm_sublayer {
    tlm_sublayer_kind kind; /* TLM_SUBLAYER_ATTN or TLM_SUBLAYER_MLP */
    int32_t layer;          /* the original layer (blk.N) it belongs to */
    int32_t kv_slot;        /* attention: its place in the KV cache (0.. over the
                               attention sublayers in order); MLP: -1 */
    tlm_tensor w[SUBLAYER_MAX_SLOTS]; /* by slot (ATTN_* / MLP_*) */
} tlm_sublayer;

/* Slots a sublayer of kind can have (the tensor table of an architecture
 * says which it uses: tensor_specs_sublayer). */
static inline int sublayer_n_slots(tlm_sublayer_kind kind) {
    return kind == TLM_SUBLAYER_ATTN ? ATTN_N_SLOTS : MLP_N_SLOTS;
}

struct tlm_model {
    tlm_hparams hp;
    char *arch_name;     /* "llama", "qwen2" */
    char *name;
    char *chat_template; /* NULL when the model has none */
    const char *source_format;
    tlm_tensor tok_embd; /* (n_vocab, n_embd); a packed table is dequantized one
                            looked-up row at a time */
    tlm_sublayer *subs;  /* n_subs, in execution order; room for 2 n_layer, so
                            that a pointer to a sublayer's tensor stays valid */
    int32_t n_subs;
    int32_t n_attn;      /* attention sublayers among them (= KV-cache slots) */
    tlm_tensor out_norm; /* (n_embd) */
    tlm_tensor output;   /* (n_vocab, n_embd); the same data as tok_embd when tied */
    tlm_tokenizer *tok;
    int64_t n_params;
    /* Every f32 array above is a separate tlm_malloc_aligned block listed
     * here so that freeing is one loop. */
    float **owned;
    int32_t n_owned, cap_owned;
    /* Packed tensors point into this read-only mapping of the .tlm file,
     * GGUF tensors used in place into that of the GGUF file; kept for the
     * model's lifetime (NULL when nothing is mapped). */
    const void *map;
    size_t map_bytes;
    int64_t quant_bytes; /* stored bytes of the packed / in-place GGUF tensors */
    int64_t quant_params; /* their elements (also counted in n_params) */
    /* Loaded by model_load_lazy: where each layer's tensors lie in the source,
     * to be converted on demand by model_layer_materialize (model_lazy.c).
     * NULL for a model loaded whole. */
    struct model_lazy *lazy;
};

/* Appends a sublayer of kind for original layer il (its tensors empty) and
 * returns it; the KV slot is assigned here. NULL when 2 n_layer are there
 * (the list is allocated by model_alloc_sublayers). */
tlm_sublayer *model_add_sublayer(struct tlm_model *m, tlm_sublayer_kind kind, int32_t il);
/* Room for 2 n_layer sublayers; NULL-free error on failure. */
tlm_status model_alloc_sublayers(struct tlm_model *m, const char *src, tlm_error *err);
/* Removes the sublayer of kind of original layer il from the list (the KV
 * slots of the attention sublayers after it move up); false when there is
 * none. Its tensors' arrays stay owned by the model. */
bool model_remove_sublayer(struct tlm_model *m, int32_t il, tlm_sublayer_kind kind);
/* The sublayer of kind of original layer il, or NULL when the model lacks it. */
const tlm_sublayer *model_sublayer(const struct tlm_model *m, int32_t il, tlm_sublayer_kind kind);

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

/* How model_load_gguf treats the weights. */
typedef enum model_load_mode {
    MODEL_LOAD_IN_PLACE = 0, /* matrices of a type with kernels stay in the
                                mapped file (everything else as f32); the
                                environment variable TRIMLM_GGUF_F32=1 turns
                                this into MODEL_LOAD_F32, for comparisons */
    MODEL_LOAD_F32 = 1,      /* every tensor widened to f32 */
    MODEL_LOAD_LAZY = 2,     /* as F32, the layers left for model_layer_materialize */
} model_load_mode;

/* Loaders (model_gguf.c, model_hf.c); tlm_model_load() picks one (in place
 * for a GGUF). lazy: validate every tensor as usual but convert only the
 * non-layer ones (see model_load_lazy). */
struct tlm_model *model_load_gguf(const char *path, model_load_mode mode, tlm_error *err);
struct tlm_model *model_load_hf(const char *dir, bool lazy, tlm_error *err);
/* ------------------------------------------------ lazily loaded layers
 *
 * For the converter, whose peak memory would otherwise be the whole model in
 * f32: a GGUF or Hugging Face source loaded lazily holds the token embedding,
 * output norm and output head as tlm_model_load does, but the data of every
 * sublayer's tensors stays NULL until model_layer_materialize(m, il) converts that
 * layer (all its tensors at once: the activation-aware scaling rewrites a
 * layer's norms and matrices together) with the eager loader's own
 * conversion code, so the values are bit-identical. The source files stay
 * open; layers are read with pread, so a file truncated after loading gives
 * an error, not a SIGBUS. Everything a load checks (shapes, types, offsets
 * within the file) is still checked up front.
 *
 * The functions take a const model: a layer's arrays are a cache behind the
 * model's sublayers, not part of what the model is. On a model loaded
 * whole (or a .tlm file, which model_load_lazy loads whole) they do nothing.
 * n_params counts every layer, materialised or not. */

/* tlm_model_load, with the layers of a GGUF or Hugging Face source left for
 * model_layer_materialize. */
struct tlm_model *model_load_lazy(const char *path, tlm_error *err);
/* tlm_model_load with every weight of a GGUF source widened to f32 (what
 * the converter and calibration compute on when loading a source whole). */
struct tlm_model *model_load_f32(const char *path, tlm_error *err);

/* Converts layer il's tensors into one f32 block (no-op when it is already
 * there). On failure the layer is left as it was and err names the file
 * and tensor. */
tlm_status model_layer_materialize(const struct tlm_model *m, int32_t il, tlm_error *err);

/* How many times a layer was materialised (read from the source) since the
 * model was loaded; 0 for a model loaded whole. */
int64_t model_layer_reads(const struct tlm_model *m);

/* Frees layer il's block and sets its tensors' data back to NULL. */
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
/* Records that slot `slot` of layer il's sublayer of kind (its shape already
 * set) is tensor name of the source; rows == 1 for a vector. */
tlm_status model_lazy_add_tensor(struct model_lazy *lz, int32_t il, tlm_sublayer_kind kind, int slot,
                                 const char *name,
                                 int32_t file, uint32_t type, uint64_t offset, uint64_t nbytes,
                                 uint64_t rows, uint64_t cols, tlm_error *err);
void model_lazy_free(struct model_lazy *lz);

/* trimlm's own file (model_tlm.c, layout in tlm_format.h). */
struct tlm_model *model_load_tlm(const char *path, tlm_error *err);
/* True when the file at path starts with the .tlm magic or is named *.tlm. */
bool model_is_tlm_file(const char *path);

#endif
