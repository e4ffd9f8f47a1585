/*
 * trimlm.h — the one public header of libtrimlm.
 *
 * Handles are opaque. Every fallible call takes a `tlm_error *` (may be NULL)
 * that receives a status code and one human-readable line naming the input and
 * the problem; the library never exits or aborts on bad input. Every *_free()
 * accepts NULL.
 */
#ifndef TRIMLM_H
#define TRIMLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TLM_VERSION_STRING "0.1.0"

/* ---------------------------------------------------------------- errors */

typedef enum tlm_status {
    TLM_OK = 0,
    TLM_ERR_ARG,          /* bad argument from the caller (flag, range, NULL) */
    TLM_ERR_IO,           /* open/read/write/mmap failed, disk full */
    TLM_ERR_FORMAT,       /* malformed or truncated file, bad JSON */
    TLM_ERR_UNSUPPORTED,  /* well-formed but not supported (architecture, type) */
    TLM_ERR_NOMEM,        /* allocation failed */
    TLM_ERR_NETWORK,      /* download failed */
    TLM_ERR_CONTEXT_FULL, /* the KV cache has no room for the tokens */
} tlm_status;

#define TLM_ERROR_MSG_MAX 512

typedef struct tlm_error {
    tlm_status code;
    char msg[TLM_ERROR_MSG_MAX];
} tlm_error;

const char *tlm_status_name(tlm_status s);

/* ----------------------------------------------------------------- model */

typedef struct tlm_model tlm_model;

/* path: a GGUF file, or a Hugging Face directory (config.json,
 * tokenizer.json, model.safetensors or model-*.safetensors + index). */
tlm_model *tlm_model_load(const char *path, tlm_error *err);
void tlm_model_free(tlm_model *m);

typedef struct tlm_model_info {
    const char *arch;          /* "llama", "qwen2", ... */
    const char *name;          /* general.name or the directory name */
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ff;
    int32_t n_ctx_train;
    float rope_theta;
    float rms_eps;
    bool tied_embeddings;
    int64_t n_params;          /* parameters actually held */
    int64_t weight_bytes;      /* bytes of the weights held in memory: f32 arrays, plus
                                  quantized .tlm matrices at their stored size */
    const char *source_format; /* "gguf", "safetensors" or "tlm" */
} tlm_model_info;

void tlm_model_get_info(const tlm_model *m, tlm_model_info *out);

/* The chat template text stored with the model, or NULL. */
const char *tlm_model_chat_template(const tlm_model *m);

/* ------------------------------------------------------------- tokenizer */

int32_t tlm_token_bos(const tlm_model *m);   /* -1 when none */
int32_t tlm_token_eos(const tlm_model *m);
bool tlm_model_adds_bos(const tlm_model *m); /* the model wants BOS first */
bool tlm_token_is_eog(const tlm_model *m, int32_t tok); /* eos, eot, <|im_end|> ... */

/* Encodes `len` bytes of `text` (invalid UTF-8 is replaced by U+FFFD).
 * Writes at most `cap` ids; returns the number of ids the text needs (which
 * may exceed `cap`: call again with a larger buffer) or -1 with `err` set.
 * parse_special: text such as "<|im_start|>" becomes its special token. */
int32_t tlm_tokenize(const tlm_model *m, const char *text, size_t len, bool add_bos,
                     bool parse_special, int32_t *out, int32_t cap, tlm_error *err);

/* The raw bytes a token stands for (may be part of a UTF-8 character);
 * special tokens render as their text when render_special, else as "". */
const char *tlm_token_bytes(const tlm_model *m, int32_t tok, bool render_special, size_t *len);

/* Streaming detokenizer: holds back an incomplete UTF-8 sequence until the
 * token that completes it arrives, so printed text never splits a character. */
typedef struct tlm_detok {
    const tlm_model *model;
    unsigned char pending[8];
    int n_pending;
} tlm_detok;

void tlm_detok_init(tlm_detok *d, const tlm_model *m);
/* Appends the printable bytes for `tok` to out (cap bytes); returns how many. */
size_t tlm_detok_push(tlm_detok *d, int32_t tok, char *out, size_t cap);
/* Flushes what is still held back (an incomplete sequence becomes U+FFFD). */
size_t tlm_detok_flush(tlm_detok *d, char *out, size_t cap);

/* ------------------------------------------------------------------ chat */

typedef struct tlm_chat_message {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} tlm_chat_message;

/* Renders messages with the model's chat template (ChatML, Llama 2, Llama 3,
 * Mistral and Zephyr styles are recognised). Returns a malloc'd string or NULL
 * with err set; free it with tlm_free_string(). */
char *tlm_chat_render(const tlm_model *m, const tlm_chat_message *msgs, size_t n,
                      bool add_generation_prompt, tlm_error *err);
void tlm_free_string(char *s);

/* --------------------------------------------------------------- context */

typedef struct tlm_context tlm_context;

typedef struct tlm_context_params {
    int32_t n_ctx;     /* KV-cache length in tokens; 0 = min(model's, 4096) */
    int32_t n_threads; /* 0 = number of physical cores */
    int32_t n_batch;   /* max tokens per forward step; 0 = 512 */
} tlm_context_params;

tlm_context_params tlm_context_default_params(void);
tlm_context *tlm_context_new(const tlm_model *m, const tlm_context_params *p, tlm_error *err);
void tlm_context_free(tlm_context *c);

int32_t tlm_context_n_ctx(const tlm_context *c);
int32_t tlm_context_pos(const tlm_context *c); /* tokens in the KV cache */
/* Bytes of KV cache one token of context takes: keys and values of every
 * attention sublayer the model holds (removed ones take none). */
int64_t tlm_context_kv_bytes_per_token(const tlm_context *c);
void tlm_context_reset(tlm_context *c);        /* empties the KV cache */

/* Runs tokens[0..n) at positions pos..pos+n-1, appending them to the KV
 * cache. Logits are kept for every token when all_logits, else only for the
 * last. Fails with TLM_ERR_CONTEXT_FULL when they do not fit. */
tlm_status tlm_decode(tlm_context *c, const int32_t *tokens, int32_t n, bool all_logits,
                      tlm_error *err);

/* Logits (n_vocab floats) of the i-th token of the last tlm_decode call;
 * i = -1 means the last token. NULL when not kept. */
const float *tlm_get_logits(const tlm_context *c, int32_t i);

/* --------------------------------------------------------------- sampler */

typedef struct tlm_sampler_params {
    float temperature;     /* <= 0: greedy */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int32_t repeat_last_n; /* tokens looked back for the penalty */
    uint64_t seed;         /* TLM_SEED_RANDOM: from the clock */
} tlm_sampler_params;

#define TLM_SEED_RANDOM UINT64_MAX

typedef struct tlm_sampler tlm_sampler;

tlm_sampler_params tlm_sampler_default_params(void);
tlm_sampler *tlm_sampler_new(const tlm_sampler_params *p, int32_t n_vocab, tlm_error *err);
void tlm_sampler_free(tlm_sampler *s);
/* Picks a token from logits (not modified); does not record it. */
int32_t tlm_sampler_sample(tlm_sampler *s, const float *logits);
/* Records a token (prompt or generated) for the repetition penalty. */
void tlm_sampler_accept(tlm_sampler *s, int32_t tok);
void tlm_sampler_reset(tlm_sampler *s);

/* ----------------------------------------------- model files (.tlm) */

/* trimlm's own model file: see runtime/tlm_format.h for the layout. */

/* Storage types of tensors in a .tlm file. */
typedef enum tlm_tensor_type {
    TLM_TYPE_F32 = 0,
    TLM_TYPE_F16 = 1,
    TLM_TYPE_BF16 = 2,
    /* 16..31: quantized types, packed 16 rows at a time (quant/qformat.h) */
    TLM_TYPE_Q8_G32 = 16, /* "q8_g32", `--type int8`: int8, f16 scale per 32 inputs, 8.5 bits */
    TLM_TYPE_Q4_G32 = 17, /* "q4_g32", `--type int4`: int4, f16 scale per 32 inputs, 4.5 bits */
} tlm_tensor_type;

/* "f32", "f16", "bf16", "q8_g32", "q4_g32"; "unknown" otherwise. */
const char *tlm_tensor_type_name(int32_t type);
/* The type called name ("int8" and "int4" name q8_g32 and q4_g32), or -1. */
int32_t tlm_tensor_type_from_name(const char *name);

/* Progress of a long operation: stage ("load", "write", "verify"), done of
 * total units (bytes for "write" and "verify"). Returning false cancels the operation, which then
 * cleans up and fails. May be NULL. */
typedef bool (*tlm_progress_fn)(void *user, const char *stage, uint64_t done, uint64_t total);

typedef struct tlm_convert_params {
    int32_t type;          /* tlm_tensor_type of the matrices (default f16). With
                              q4_g32 the token embedding and output matrices are
                              stored q8_g32 (as llama.cpp's Q4_0 files keep them
                              at 6-8 bits); a matrix whose input size is not a
                              multiple of 32 is stored f32. */
    const char *keep_wide; /* comma-separated tensors kept f32: a full name
                              ("output.weight"), or a name without ".weight"
                              and "blk.N." ("output", "token_embd", "attn_q");
                              NULL = none. Vectors (norms, biases) are always f32. */
} tlm_convert_params;

tlm_convert_params tlm_convert_default_params(void);

/* Converts src (anything tlm_model_load accepts, .tlm included) into a .tlm
 * file at dst: written to a temporary file in dst's directory, fsync'd, then
 * renamed, so dst is either untouched or complete. Refuses to overwrite src
 * (or a file of a source directory). On any failure or cancellation the
 * temporary file is removed. progress is called with stage "write" and done 0
 * before the temporary file is created. */
tlm_status tlm_convert(const char *src, const char *dst, const tlm_convert_params *p,
                       tlm_progress_fn progress, void *user, tlm_error *err);

/* Verifies every checksum of a .tlm file (header, sections, each tensor, the
 * whole file). TLM_OK when intact; otherwise err names the first problem
 * (e.g. the damaged tensor). */
tlm_status tlm_file_verify(const char *path, tlm_progress_fn progress, void *user,
                           tlm_error *err);

/* A description of a model file for `trimlm info`, read without converting
 * any weight when it is a .tlm file. For GGUF and Hugging Face sources the
 * model is loaded; file-level fields that do not apply are 0 / NULL. */
typedef struct tlm_tensor_desc {
    const char *name;       /* as stored in the file */
    const char *type;       /* "f32", "f16", "bf16", "q4_1", ... */
    int32_t n_dims;
    int64_t rows, cols;     /* cols = the contiguous dimension; rows = 1 for vectors */
    uint64_t offset;        /* .tlm: from the start of the file; else 0 */
    uint64_t bytes;         /* stored bytes */
} tlm_tensor_desc;

typedef struct tlm_sublayer_desc {
    const char *kind;       /* "attn" or "mlp" */
    int32_t layer;          /* original layer index */
    bool has_score;
    float score;            /* importance (1 - cos), when has_score */
    int32_t n_tensors;
    int64_t n_params;
} tlm_sublayer_desc;

typedef struct tlm_file_desc {
    const char *path;
    const char *format;         /* "tlm", "gguf", "safetensors" */
    uint32_t format_version;    /* .tlm / GGUF version; 0 for safetensors */
    uint64_t file_bytes;        /* the file, or every file of a directory */
    uint64_t tensor_bytes;      /* stored bytes of all tensors */
    int64_t n_weights;          /* elements of all tensors */
    tlm_model_info info;
    const char *source;         /* .tlm: the file it was converted from */
    const char *convert_type;   /* .tlm: --type it was converted with */
    bool has_chat_template;
    int32_t n_tensors;
    const tlm_tensor_desc *tensors;
    int32_t n_sublayers;        /* kept sublayers, in execution order */
    const tlm_sublayer_desc *sublayers;
    int32_t n_attn_sublayers;
    uint64_t file_checksum;     /* .tlm: the stored XXH3-64 */
} tlm_file_desc;

tlm_file_desc *tlm_file_describe(const char *path, tlm_error *err);
void tlm_file_desc_free(tlm_file_desc *d);

/* --------------------------------------------------------------- system */

/* Name of the kernel set chosen at start-up: "scalar", "avx2", "avx512", "neon". */
const char *tlm_isa_name(void);
int tlm_physical_cores(void);

#ifdef __cplusplus
}
#endif
#endif /* TRIMLM_H */
