/*
 * tlm_format.h — the on-disk layout of trimlm's own model file (.tlm).
 *
 * Little-endian throughout. Sections, in file order:
 *
 *   offset 0          header            struct tlm_file_header (128 bytes)
 *   meta_offset       metadata          UTF-8 JSON object (not NUL-terminated), see below
 *   tok_offset        tokenizer         the source's tokenizer bytes (see "tokenizer")
 *   data_offset       tensor data       each tensor at a multiple of 64 from data_offset,
 *                                       data_offset itself a multiple of 64; gaps are zero
 *   dir_offset        tensor directory  n_tensors x struct tlm_tensor_entry (128 bytes each)
 *
 * The directory comes last so that a writer can stream the data (hashing it
 * on the way) and then append what it learnt; the header is written last of
 * all, at offset 0.
 *
 * Integrity:
 *   - header_checksum: XXH3-64 of the header's first 120 bytes (every field
 *     before it); checked on every load.
 *   - meta_checksum, tok_checksum, dir_checksum: XXH3-64 of each of those
 *     sections; checked on every load (they are small), so damage to anything
 *     but tensor data is always reported.
 *   - tlm_tensor_entry.checksum: XXH3-64 of one tensor's bytes; checked by
 *     verification (trimlm info --verify), which names the damaged tensor.
 *   - file_checksum: XXH3-64 of bytes [TLM_HEADER_BYTES, file_bytes), i.e.
 *     metadata + tokenizer + data (padding included) + directory; checked by
 *     verification, so any flipped byte anywhere is detected.
 *
 * Metadata JSON (format version 1):
 *   {
 *     "architecture": "llama" | "qwen2",
 *     "name": string,
 *     "source": {"file": base name of what was converted, "format": "gguf"|"safetensors"|"tlm"},
 *     "hparams": {every field of struct tlm_hparams (model.h) under its own name;
 *                 rope_style "norm"|"neox", rope_scaling "none"|"linear"|"llama3"},
 *     "chat_template": string or null,
 *     "tokenizer": {"format": "gguf-kv" | "hf-json",
 *                   "parts": [{"name": string, "offset": n, "bytes": n}, ...]},
 *     "tensors": {"token_embd": name, "output_norm": name, "output": name (absent when tied)},
 *     "graph": [{"kind": "attn"|"mlp", "layer": original layer index,
 *                "score": number (optional), "tensors": [names]}, ...],
 *     "convert": {"type": "f16", "keep_wide": [patterns], "trimlm_version": "0.1.0",
 *                 "quant_method": "rtn" | "awq" (int8/int4 only, optional)},
 *     optional, written when known (readers must accept their absence):
 *     "importance": {"attn": [n_layer], "mlp": [n_layer], "block": [n_layer]}
 *                   (number, or null where the source lacked the sublayer),
 *     "dropped": [{"kind": "attn"|"mlp", "layer": n, "score": number|null}, ...],
 *     "calibration": {"text": name, "tokens": n, "seq_len": n},
 *                   (files of 0.1 also hold "seconds": the pass's wall time; it is no
 *                   longer written, so that the same conversion gives the same bytes),
 *     "awq": {"alpha": [{"layer": n, "input": "attn_qkv"|"attn_out"|"ffn_gate_up"|
 *             "ffn_down", "alpha": x}, ...]}
 *   }
 * The graph lists sublayers in execution order (layer ascending, attention
 * before MLP within a layer). A sublayer that was removed is simply absent:
 * it has no entry, no tensors and no KV-cache slot.
 *
 * Tokenizer section: "gguf-kv" is one part, a GGUF (v3) file with no tensors
 * holding the source's tokenizer.* metadata, read back with the GGUF
 * tokenizer loader; "hf-json" is the parts "tokenizer.json" and optionally
 * "tokenizer_config.json", read back with the Hugging Face tokenizer loader.
 * Part offsets are relative to tok_offset.
 *
 * Tensor names follow GGUF: token_embd.weight, output_norm.weight,
 * output.weight, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output,
 * ffn_norm, ffn_gate, ffn_up, ffn_down}.weight, blk.N.attn_{q,k,v}.bias.
 * A matrix is (rows = out features, cols = in features), row-major.
 */
#ifndef TLM_FORMAT_H
#define TLM_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qformat.h"
#include "trimlm.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .tlm reader and writer assume a little-endian host"
#endif

#define TLM_MAGIC "TRIMLM\0\x1a" /* 8 bytes; \0 stops C strings, \x1a stops `type` */
#define TLM_MAGIC_BYTES 8
#define TLM_FORMAT_VERSION 1     /* newer files are refused, never guessed at */
#define TLM_HEADER_BYTES 128
#define TLM_DATA_ALIGN 64        /* tensor data alignment: a cache line, the widest load */
#define TLM_TENSOR_NAME_MAX 64   /* bytes of a name field, NUL included */
#define TLM_FILE_EXT ".tlm"

/* Bounds on section sizes; larger values are treated as corruption. */
#define TLM_MAX_META_BYTES ((uint64_t)64 << 20)
#define TLM_MAX_TOK_BYTES ((uint64_t)1 << 30)
#define TLM_MAX_TENSORS (1u << 20)

/* ------------------------------------------------------------ header */

typedef struct tlm_file_header {
    uint8_t magic[TLM_MAGIC_BYTES]; /*   0: TLM_MAGIC */
    uint32_t version;               /*   8: TLM_FORMAT_VERSION */
    uint32_t header_bytes;          /*  12: TLM_HEADER_BYTES */
    uint64_t file_bytes;            /*  16: size of the whole file */
    uint64_t meta_offset;           /*  24 */
    uint64_t meta_bytes;            /*  32 */
    uint64_t tok_offset;            /*  40 */
    uint64_t tok_bytes;             /*  48 */
    uint64_t data_offset;           /*  56: multiple of TLM_DATA_ALIGN */
    uint64_t data_bytes;            /*  64 */
    uint64_t dir_offset;            /*  72 */
    uint32_t n_tensors;             /*  80: dir bytes = n_tensors * 128 */
    uint32_t flags;                 /*  84: 0 (reserved) */
    uint64_t meta_checksum;         /*  88: XXH3-64 of the metadata */
    uint64_t tok_checksum;          /*  96: XXH3-64 of the tokenizer section */
    uint64_t dir_checksum;          /* 104: XXH3-64 of the directory */
    uint64_t file_checksum;         /* 112: XXH3-64 of bytes [128, file_bytes) */
    uint64_t header_checksum;       /* 120: XXH3-64 of bytes [0, 120) */
} tlm_file_header;

_Static_assert(sizeof(tlm_file_header) == TLM_HEADER_BYTES, "header is 128 bytes");
_Static_assert(offsetof(tlm_file_header, header_checksum) == 120, "header checksum is last");

/* ---------------------------------------------------- tensor directory */

/* Element types. Values are stored in files: never renumber. */
typedef enum tlm_dtype {
    TLM_DTYPE_F32 = 0,
    TLM_DTYPE_F16 = 1,  /* IEEE binary16 */
    TLM_DTYPE_BF16 = 2, /* bfloat16: the top half of an f32 */
    /* 16..31: quantized formats of quant/qformat.h (int8, int4 with group
     * scales, repacked layouts). A reader refuses a type it does not know. */
    TLM_DTYPE_QUANT_FIRST = 16,
    /* A matrix packed as quant/qformat.h's q8_g32_r16 / q4_g32_r16: bytes =
     * tlm_qpacked_bytes(type, rows, cols), quant_group = 32, cols % 32 == 0;
     * never a vector. */
    TLM_DTYPE_Q8_G32 = 16,
    TLM_DTYPE_Q4_G32 = 17,
    TLM_DTYPE_QUANT_LAST = 31,
} tlm_dtype;

/* The public tlm_tensor_type (trimlm.h) uses the same numbers. */
_Static_assert((int)TLM_DTYPE_F32 == (int)TLM_TYPE_F32 && (int)TLM_DTYPE_F16 == (int)TLM_TYPE_F16 &&
                   (int)TLM_DTYPE_BF16 == (int)TLM_TYPE_BF16 &&
                   (int)TLM_DTYPE_Q8_G32 == (int)TLM_TYPE_Q8_G32 &&
                   (int)TLM_DTYPE_Q4_G32 == (int)TLM_TYPE_Q4_G32,
               "file and API type numbers agree");
_Static_assert((int)TLM_DTYPE_Q8_G32 == (int)TLM_Q8_G32 && (int)TLM_DTYPE_Q4_G32 == (int)TLM_Q4_G32,
               "file and quant/qformat.h type numbers agree");

typedef struct tlm_tensor_entry {
    char name[TLM_TENSOR_NAME_MAX]; /*   0: NUL-terminated, NUL-padded */
    uint32_t dtype;                 /*  64: tlm_dtype */
    uint32_t n_dims;                /*  68: 1 (vector) or 2 (matrix) */
    uint64_t rows;                  /*  72: out features; 1 for a vector */
    uint64_t cols;                  /*  80: in features, the contiguous dimension */
    uint64_t offset;                /*  88: from data_offset; multiple of TLM_DATA_ALIGN */
    uint64_t bytes;                 /*  96: stored bytes (rows x row bytes of a float
                                               dtype; tlm_qpacked_bytes for a quantized one) */
    uint64_t checksum;              /* 104: XXH3-64 of the stored bytes */
    uint32_t quant_group;           /* 112: elements per scale group: 32 for q8_g32 and
                                               q4_g32; 0 for float types */
    uint32_t flags;                 /* 116: 0 (reserved) */
    uint64_t reserved;              /* 120: 0 */
} tlm_tensor_entry;

_Static_assert(sizeof(tlm_tensor_entry) == 128, "directory entries are 128 bytes");

/* v rounded up to a multiple of a (section offsets; the GGUF writer's too). */
static inline uint64_t tlm_align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* Bytes of one element of a float type; 0 for anything else. */
static inline uint32_t tlm_dtype_float_bytes(uint32_t dtype) {
    switch (dtype) {
    case TLM_DTYPE_F32: return 4;
    case TLM_DTYPE_F16: return 2;
    case TLM_DTYPE_BF16: return 2;
    default: return 0;
    }
}

static inline bool tlm_dtype_is_quant(uint32_t dtype) {
    return dtype == TLM_DTYPE_Q8_G32 || dtype == TLM_DTYPE_Q4_G32;
}

static inline const char *tlm_dtype_name(uint32_t dtype) {
    switch (dtype) {
    case TLM_DTYPE_F32: return "f32";
    case TLM_DTYPE_F16: return "f16";
    case TLM_DTYPE_BF16: return "bf16";
    case TLM_DTYPE_Q8_G32: return "q8_g32";
    case TLM_DTYPE_Q4_G32: return "q4_g32";
    default: return "unknown";
    }
}

/* ------------------------------------- reader and writer entry points */

struct tlm_model;

/* The tokenizer section: the source's own tokenizer bytes (see above). */
#define TLM_TOK_MAX_PARTS 2
typedef struct tlm_tokenizer_blob {
    char format[16]; /* "gguf-kv" | "hf-json" */
    int n_parts;
    char part_name[TLM_TOK_MAX_PARTS][32];
    uint8_t *part_data[TLM_TOK_MAX_PARTS]; /* tlm_malloc'd */
    uint64_t part_bytes[TLM_TOK_MAX_PARTS];
} tlm_tokenizer_blob;

void tokenizer_blob_free(tlm_tokenizer_blob *b);
/* The tokenizer of a model source: a GGUF file's tokenizer.* metadata, a
 * Hugging Face directory's tokenizer files, or a .tlm file's section. */
tlm_status tokenizer_blob_from_source(const char *src, tlm_tokenizer_blob *out,
                                          tlm_error *err);
/* model_tlm.c: a copy of a .tlm file's tokenizer section. */
tlm_status read_tokenizer_blob(const char *path, tlm_tokenizer_blob *out, tlm_error *err);

typedef struct tlm_write_options {
    uint32_t dtype;                      /* of the matrices; vectors are f32. With
                                            q4_g32, token_embd and output are q8_g32 */
    const char *keep_wide;               /* tensors kept f32 (tlm_convert_params) */
    const tlm_drop_list *drop;           /* sublayers left out; NULL = keep all */
    const float *attn_score, *mlp_score; /* n_layer importances; NULL = none */
    const float *block_score;            /* n_layer block importances; NULL = none */
    /* Activation statistics and scores of a calibration pass over m. When
     * set, scores not given above come from it, and int8/int4 matrices are
     * quantized activation-aware (quant/awq.h) instead of round-to-nearest. */
    const struct tlm_calib *calib;
    const char *source_file, *source_format;
    /* The files the written one may not replace (the source model...):
     * tlm_atomic_check_destination; NULL/0 = none. */
    const char *const *inputs;
    size_t n_inputs;
    const tlm_tokenizer_blob *tokenizer;
    int32_t n_threads;                   /* for quantizing; 0 = the OpenMP default */
    tlm_progress_fn progress;
    void *user;
} tlm_write_options;

/* Writes m (minus dropped sublayers) to dst through a temporary file in the
 * same directory, fsync and rename (tlm_writer.c): the plan, quantization
 * and serialize stages of convert_plan.h. */
tlm_status write_tlm_file(const struct tlm_model *m, const char *dst, const tlm_write_options *o,
                           tlm_error *err);

#endif
