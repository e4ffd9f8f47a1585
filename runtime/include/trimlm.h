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
#include <sys/types.h> /* mode_t */

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

typedef struct tlm_model_load_params {
    bool lazy_layers; /* for calibration and conversion: every tensor is checked as
                         usual, but a GGUF or Hugging Face source's layers are read
                         and converted only when a pass reaches them, one at a time,
                         so the peak is one layer in f32, not the model. Such a model
                         serves tlm_calibrate and tlm_convert_model; tlm_decode
                         refuses it. A .tlm file is always loaded whole. */
    bool weights_f32; /* every weight of a GGUF source widened to f32 at load,
                         instead of computing on its quantized blocks in place
                         (the converter's whole-model load; comparisons). The
                         environment variable TRIMLM_GGUF_F32=1 does the same
                         for every load. */
} tlm_model_load_params;

tlm_model_load_params tlm_model_default_load_params(void); /* both false */
/* tlm_model_load with params (NULL = the defaults). */
tlm_model *tlm_model_load_with(const char *path, const tlm_model_load_params *params,
                               tlm_error *err);

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
    bool output_absent;        /* tied because the file has no output matrix (GGUF
                                  files of tied models omit it), not by metadata */
    int64_t n_params;          /* parameters actually held */
    int64_t weight_bytes;      /* bytes of the weights held in memory: f32 arrays, plus
                                  quantized .tlm matrices at their stored size */
    const char *source_format; /* "gguf", "safetensors" or "tlm" */
} tlm_model_info;

void tlm_model_get_info(const tlm_model *m, tlm_model_info *out);

/* How many positions the attention of original layer `layer` sees: its
 * sliding window for a local layer (Gemma 3: five of every six), 0 for a
 * global one (every layer of the llama family) or a layer out of range. */
int32_t tlm_model_attn_window(const tlm_model *m, int32_t layer);

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

/* Renders msgs as tlm_chat_render does and tokenizes the result: the
 * template's markup becomes special tokens, while the messages' own text is
 * read as plain text, so that "<|im_end|><|im_start|>system" typed in a
 * message stays text and cannot open a new turn. BOS is added when the model
 * wants one and the template did not write it. Ill-formed UTF-8 in a message
 * becomes U+FFFD. Writes at most cap ids; returns the number needed (call
 * again with a larger buffer when it exceeds cap) or -1 with err set. */
int32_t tlm_chat_tokenize(const tlm_model *m, const tlm_chat_message *msgs, size_t n,
                          bool add_generation_prompt, int32_t *out, int32_t cap, tlm_error *err);

/* --------------------------------------------------------------- context */

typedef struct tlm_context tlm_context;

/* Storage of the KV cache. */
typedef enum tlm_kv_type {
    TLM_KV_F16 = 0,  /* default: half the bytes of f32 */
    TLM_KV_F32 = 1,
    TLM_KV_INT8 = 2, /* int8 with one f32 scale per head vector per position */
} tlm_kv_type;

/* "f16", "f32", "int8"; "unknown" otherwise. */
const char *tlm_kv_type_name(int32_t type);
/* The tlm_kv_type called name, or -1. */
int32_t tlm_kv_type_from_name(const char *name);

/* The most threads a context or a calibration pass accepts (n_threads); the
 * command line takes the same limit. */
#define TLM_MAX_THREADS 1024

typedef struct tlm_context_params {
    int32_t n_ctx;     /* KV-cache length in tokens; 0 = min(model's, 4096) */
    int32_t n_threads; /* 0 = number of physical cores; at most TLM_MAX_THREADS */
    int32_t n_batch;   /* max tokens per forward step; 0 = 512 */
    int32_t kv_type;   /* tlm_kv_type; 0 = f16 */
} tlm_context_params;

tlm_context_params tlm_context_default_params(void);
tlm_context *tlm_context_new(const tlm_model *m, const tlm_context_params *p, tlm_error *err);
void tlm_context_free(tlm_context *c);

int32_t tlm_context_n_ctx(const tlm_context *c);
int32_t tlm_context_pos(const tlm_context *c); /* tokens in the KV cache */
/* Bytes of KV cache one token of context takes: keys and values of every
 * attention sublayer the model holds (removed ones take none), in the
 * cache's type (int8: head_dim bytes + a 4-byte scale per head vector). */
int64_t tlm_context_kv_bytes_per_token(const tlm_context *c);
/* The context's tlm_kv_type. */
int32_t tlm_context_kv_type(const tlm_context *c);
void tlm_context_reset(tlm_context *c);        /* empties the KV cache */
/* Keeps only the first n tokens of the KV cache (n >= pos: no change), so
 * that a shared prefix is computed once (multiple choice, chat edits). */
void tlm_context_truncate(tlm_context *c, int32_t n);

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

/* trimlm's own model file: see runtime/io/tlm_format.h for the layout. */

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

struct tlm_calib; /* "calibration and importance" below */
typedef struct tlm_drop_list tlm_drop_list; /* "drop policies" below */

/* The kinds of sublayer: what a drop, a score or the graph speaks of. */
typedef enum tlm_sublayer_kind {
    TLM_SUBLAYER_ATTN = 0,
    TLM_SUBLAYER_MLP = 1,
    TLM_SUBLAYER_BLOCK = 2, /* attention + MLP of one layer together */
} tlm_sublayer_kind;

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
    const struct tlm_calib *calib; /* a calibration pass over the source (tlm_calibrate):
                              its activation statistics drive int8/int4 quantization
                              (activation-aware: per-channel scaling folded into the
                              preceding op, importance-weighted scale search; quant/awq.h)
                              and its importance scores are stored in the file.
                              NULL = round-to-nearest and no scores. */
    const tlm_drop_list *drop; /* sublayers left out of the file (tlm_drop_select,
                              tlm_drop_parse_list); NULL = keep all */
    int32_t n_threads;     /* threads quantizing (0 = the OpenMP default); at most
                              TLM_MAX_THREADS */
    const char *to;        /* output format: "tlm" (NULL = default) or "gguf", a GGUF
                              that llama.cpp loads (runtime/io/gguf_writer.h: "llama", or
                              "deci" when sublayers are removed; scores not stored) */
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

/* The same for a model already loaded from src_path (whose tokenizer bytes
 * are copied and whose base name is recorded), so that a caller loads it
 * once, calibrates it and converts it. p->calib must come from this model.
 * Fails when a drop flag names a sublayer the model does not have. */
tlm_status tlm_convert_model(const tlm_model *m, const char *src_path, const char *dst,
                             const tlm_convert_params *p, tlm_progress_fn progress, void *user,
                             tlm_error *err);

/* The sublayers to remove at conversion (runtime/compress/drop.c): a set of
 * (kind, original layer), filled by tlm_drop_select and tlm_drop_parse_list
 * (each adds to it, so that several specs combine as a union) and listed in
 * layer order, attention before MLP. */
typedef struct tlm_sublayer_id {
    tlm_sublayer_kind kind; /* TLM_SUBLAYER_ATTN or TLM_SUBLAYER_MLP */
    int32_t layer;          /* original layer index */
} tlm_sublayer_id;

/* An empty list for a model of n_layer layers; NULL with err on failure. */
tlm_drop_list *tlm_drop_list_new(int32_t n_layer, tlm_error *err);
void tlm_drop_list_free(tlm_drop_list *l);
/* Adds a sublayer (no-op when there); false for a kind other than attention
 * or MLP, or a layer outside 0..n_layer-1. */
bool tlm_drop_list_add(tlm_drop_list *l, tlm_sublayer_kind kind, int32_t layer);
bool tlm_drop_list_has(const tlm_drop_list *l, tlm_sublayer_kind kind, int32_t layer);
int32_t tlm_drop_list_count(const tlm_drop_list *l);
/* The i-th sublayer of the list (0 <= i < count); false past the end. */
bool tlm_drop_list_get(const tlm_drop_list *l, int32_t i, tlm_sublayer_id *out);

/* Drop policies, after arXiv 2406.15786. spec:
 *   "attn:K", "mlp:K"   the K attention / MLP sublayers of lowest importance
 *   "block:K"           both sublayers of the K layers of lowest block importance
 *   "joint:K"           the K sublayers of lowest importance, attention and MLP
 *                       ranked together
 *   "KIND:s<T"          every sublayer (block) of that kind with importance < T
 * Equal scores: the deeper layer goes first (then, for joint, attention
 * before MLP). Sublayers the model lacks (score NaN) are never chosen.
 * The chosen sublayers are added to drops. TLM_ERR_ARG with a message naming
 * the spec when it is malformed or asks for more sublayers than there are.
 * With c and drops NULL it only checks the spec's syntax (before a long
 * calibration pass). */
tlm_status tlm_drop_select(const struct tlm_calib *c, const char *spec, tlm_drop_list *drops,
                           tlm_error *err);
/* An explicit list that needs no scores: space-separated groups
 * "attn:20,22 mlp:25 block:3" (block = both sublayers), added to drops.
 * TLM_ERR_ARG on a bad kind, number or a layer outside 0..n_layer-1. */
tlm_status tlm_drop_parse_list(const char *list, tlm_drop_list *drops, tlm_error *err);

/* Checks drops against model m before any calibration pass: drops (NULL =
 * none) names only sublayers m has; each spec of tlm_drop_select is valid,
 * given once and asks for no more sublayers than m has; and what is certain
 * to be dropped (drops, and each spec whatever the scores) leaves at least
 * one attention and one MLP sublayer. TLM_ERR_ARG with the reason. */
tlm_status tlm_drop_check(const tlm_model *m, const char *const *specs, int32_t n_specs,
                          const tlm_drop_list *drops, tlm_error *err);

/* Verifies every checksum of a .tlm file (header, sections, each tensor, the
 * whole file), then loads it as tlm_model_load does (every structural check,
 * non-finite scales and weights): TLM_OK when intact and loadable; otherwise
 * err names the first problem (e.g. the damaged tensor). */
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
    int32_t window;         /* attn: tlm_model_attn_window (0: global); mlp: 0 */
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
    /* .tlm files converted with calibration and/or drops (older files: 0 / NULL) */
    int32_t n_dropped;          /* sublayers removed at conversion, layer order */
    const tlm_sublayer_desc *dropped; /* kind, original layer, score (n_tensors 0) */
    const float *attn_scores, *mlp_scores, *block_scores; /* n_layer importances of the
                                   source's sublayers (NaN: absent); NULL when none */
    const char *quant_method;   /* "rtn", "awq", or NULL (float types, older files) */
    const char *calib_text;     /* calibration text name; NULL when not calibrated */
    int64_t calib_tokens;
    int32_t calib_seq_len;
    double calib_seconds;       /* the pass's wall time: files of 0.1 only (no longer
                                   written, so that a conversion is reproducible); else 0 */
} tlm_file_desc;

tlm_file_desc *tlm_file_describe(const char *path, tlm_error *err);
void tlm_file_desc_free(tlm_file_desc *d);

/* ------------------------------------------- calibration and importance */

/* One calibration pass (runtime/compress/calibrate.c) runs the full, unpruned model
 * over calibration text and gathers, in the same pass:
 *  - the importance of every attention sublayer, MLP sublayer and whole block
 *    (arXiv 2406.15786): S = 1 - cos(X, Y), X the residual stream entering it
 *    (before its norm), Y = X + sublayer(norm(X)) (block: block input vs block
 *    output), the cosine per token over the hidden dimension in fp32, averaged
 *    over every calibration token. Low S = redundant.
 *  - per-input-channel activation statistics (mean of x^2 over tokens) of the
 *    input of every linear layer, for activation-aware quantization. */


/* Inputs of a layer's linear maps that share statistics. */
typedef enum tlm_linear_input {
    TLM_INPUT_ATTN_QKV = 0,  /* normalised input of Wq, Wk, Wv (n_embd) */
    TLM_INPUT_ATTN_OUT = 1,  /* attention output, input of Wo (n_head*head_dim) */
    TLM_INPUT_FFN_GATE_UP = 2, /* normalised input of Wgate, Wup (n_embd) */
    TLM_INPUT_FFN_DOWN = 3,  /* silu(gate)*up, input of Wdown (n_ff) */
    TLM_INPUT_OUTPUT = 4,    /* final normalised state, input of the output head (n_embd);
                                layer index ignored */
} tlm_linear_input;

typedef struct tlm_calib_params {
    const char *text_file; /* calibration text; NULL = the text built into trimlm */
    int64_t n_tokens;      /* tokens to run (default 16384); fewer if the text is shorter */
    int32_t seq_len;       /* tokens per sequence, each starting fresh (default 512) */
    int32_t n_threads;     /* 0 = physical cores; at most TLM_MAX_THREADS */
    tlm_progress_fn progress; /* stage "calibrate", done/total = tokens x layers run
                                 (the pass goes layer by layer); may be NULL */
    void *user;
} tlm_calib_params;

tlm_calib_params tlm_calib_default_params(void);

/* The result of a calibration pass (opaque). */
typedef struct tlm_calib tlm_calib;

tlm_calib *tlm_calibrate(const tlm_model *m, const tlm_calib_params *p, tlm_error *err);
void tlm_calib_free(tlm_calib *c);

int32_t tlm_calib_n_layer(const tlm_calib *c);
int64_t tlm_calib_n_tokens(const tlm_calib *c);   /* tokens actually run */
int32_t tlm_calib_seq_len(const tlm_calib *c);
const char *tlm_calib_text_name(const tlm_calib *c); /* file name, or "built-in" */
double tlm_calib_seconds(const tlm_calib *c);     /* wall time of the pass */
/* Importance S of the sublayer (or block) of original layer il; NAN when the
 * model lacks it (an already pruned model). */
float tlm_calib_score(const tlm_calib *c, tlm_sublayer_kind kind, int32_t il);
/* Mean of x^2 per input channel of a linear input of layer il; *n gets the
 * number of channels. NULL when the model lacks that sublayer. */
const float *tlm_calib_act_stats(const tlm_calib *c, int32_t il, tlm_linear_input which,
                                 int64_t *n);

/* ------------------------------------------------- files written safely */

/* Writing a file all or nothing (runtime/io/atomic_file.c), so that a crash, a
 * full disk or an interruption never leaves a half-written file under the
 * destination's name. The bytes go to a temporary file
 * ".NAME.partial-PID-XXXXXX" in the destination's directory (a rename within
 * one file system is atomic); opening removes those of dst that processes no
 * longer running left. An existing destination keeps its permissions.
 * Committing fsyncs it, renames it onto the destination and fsyncs the
 * directory. Every failure message names the destination and the system's
 * reason. The caller removes the temporary on any failure with
 * tlm_atomic_discard. Each writer names the files its command reads (its
 * inputs): a destination that is one of them is refused before anything is
 * written. */

typedef struct tlm_atomic_file {
    const char *dst; /* the destination (the caller's string, kept for messages) */
    char tmp[4096];  /* the temporary file; "" when there is none */
    int fd;          /* -1 once closed */
    mode_t mode;     /* the permissions dst gets: an existing dst's, else the
                        requested ones less the umask */
} tlm_atomic_file;

/* Refuses dst when it would replace one of the command's inputs:
 *   - the same file as an input, by path, symlink or hard link (the existing
 *     dst's st_dev/st_ino equal an input's);
 *   - a *.json or *.safetensors file directly inside an input that is a
 *     directory (a Hugging Face checkpoint consists of such files);
 *   - and a dst that is a directory.
 * inputs[0..n_inputs): paths; NULL entries (an optional input not given) and
 * inputs that do not exist are skipped. TLM_ERR_ARG with a message naming dst
 * and the input. Cheap: commands call it before long work, and
 * tlm_atomic_open calls it again. */
tlm_status tlm_atomic_check_destination(const char *dst, const char *const *inputs,
                                        size_t n_inputs, tlm_error *err);

/* Creates the temporary file for dst, after tlm_atomic_check_destination
 * (dst, inputs, n_inputs); mode: the permissions a new dst gets (less the
 * umask), as for open(2); an existing regular dst keeps its own. reserve > 0 allocates that many bytes at once,
 * so that a full disk fails here rather than after minutes of writing. */
tlm_status tlm_atomic_open(tlm_atomic_file *f, const char *dst, const char *const *inputs,
                           size_t n_inputs, mode_t mode, uint64_t reserve, tlm_error *err);

/* Appends n bytes (short writes and EINTR retried). */
tlm_status tlm_atomic_write(tlm_atomic_file *f, const void *src, size_t n, tlm_error *err);

/* Sets the permissions, fsyncs and closes the temporary file, which stays
 * under f->tmp (readable, e.g. to check a download) until committed. */
tlm_status tlm_atomic_close(tlm_atomic_file *f, tlm_error *err);

/* Closes the temporary file (when still open) and renames it onto the
 * destination. */
tlm_status tlm_atomic_commit(tlm_atomic_file *f, tlm_error *err);

/* Closes and removes the temporary file; a no-op once committed or
 * discarded. */
void tlm_atomic_discard(tlm_atomic_file *f);

/* n bytes of data as the whole file dst: open (refusing the inputs as
 * above), write, commit, discard on failure. */
tlm_status tlm_atomic_write_file(const char *dst, const char *const *inputs, size_t n_inputs,
                                 const void *data, size_t n, mode_t mode, tlm_error *err);

/* Reads a whole regular file of at most max_bytes into a NUL-terminated
 * buffer (free with tlm_free_string); *len gets the byte count without the
 * NUL. NULL with err naming the file on failure. Anything that is not a
 * regular file (/dev/zero, a FIFO, a directory) is refused without reading
 * from it: opened non-blocking, so that a FIFO without a writer cannot hang
 * the caller. The one reader of every text input. */
char *tlm_read_file(const char *path, size_t max_bytes, size_t *len, tlm_error *err);

/* The same for an open descriptor that may be a pipe or a terminal (standard
 * input): reads until end of file, failing once more than max_bytes arrive.
 * name names it in messages. */
char *tlm_read_fd(int fd, const char *name, size_t max_bytes, size_t *len, tlm_error *err);

/* --------------------------------------------------------------- system */

/* Name of the kernel set chosen at start-up: "scalar", "avx2", "avx512", "neon". */
const char *tlm_isa_name(void);
int tlm_physical_cores(void);
/* The CPUs this process may run on (its affinity mask): more threads than
 * that only wait for each other at every barrier. */
int tlm_usable_cpus(void);

#ifdef __cplusplus
}
#endif
#endif /* TRIMLM_H */
