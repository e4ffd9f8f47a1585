/*
 * convert_plan.h — what a conversion writes, decided before any byte of it:
 * the stage between "select drops" and "serialize" of `convert`
 *
 *   load -> calibrate -> select drops -> plan (+ quantize) -> serialize
 *   (lazy)  (tlm_calib)  (drop list)     (convert_plan)     (.tlm | GGUF)
 *
 * The plan is plain data that both writers (tlm_writer.c, gguf_writer.c)
 * read: the sublayers kept, in execution order, and those removed; every
 * tensor of the kept ones and of the model (from the tensor-spec table) with
 * its shape and storage type (type_rules.h); the importance scores. With a
 * calibration and an int8/int4 type, quantize_plan_run (quant_plan.c) then
 * chooses the activation-aware scales of each layer and stores the layer's
 * bytes, so that each layer of the source is read once after calibration.
 *
 * A writer lays the plan out in its format's order: the plan's own order is
 * the model's tensors, then each kept sublayer's in the table's slot order.
 */
#ifndef TLM_CONVERT_PLAN_H
#define TLM_CONVERT_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"
#include "spool.h"
#include "tensor_spec.h"
#include "tlm_format.h"
#include "type_rules.h"

/* One tensor the output holds. */
typedef struct plan_tensor {
    char name[TLM_TENSOR_NAME_MAX];
    const tensor_spec *spec;
    const tlm_tensor *source; /* the model's tensor; a layer tensor of a lazily loaded
                                 model has data only while its layer is entered */
    int32_t layer;            /* blk.N: N; -1 for the model's own */
    uint32_t n_dims;          /* 1 (vector) or 2 */
    uint64_t rows, cols;      /* rows 1 for a vector */
    uint32_t dtype;           /* TLM_DTYPE_* it is stored as */
    bool packed_copy;         /* the source is packed as dtype (a .tlm source): its
                                 bytes are copied, not quantized again */
    /* set by quantize_plan_run */
    bool search;              /* quantized with awq.h's importance-weighted search */
    const float *imp;         /* its input's importance (cols values), or NULL */
    bool spooled;             /* its stored bytes are in the plan's spool at: */
    uint64_t spool_offset;
} plan_tensor;

/* A kept sublayer (its tensors are plan tensors [first, first + count)) or
 * a removed one (count 0). */
typedef struct plan_sublayer {
    tlm_sublayer_kind kind;
    int32_t layer;
    int32_t first, count;
    float score;              /* importance; NaN when unknown */
} plan_sublayer;

typedef struct convert_plan {
    const struct tlm_model *m;
    const char *dst;          /* the output, for messages */
    tlm_error *err;
    plan_tensor *tensors;
    int32_t n_tensors, cap_tensors;
    int32_t n_model_tensors;  /* tensors[0, n): token embedding, output norm, output */
    plan_sublayer *kept;      /* in execution order */
    int32_t n_kept;
    plan_sublayer *dropped;   /* in layer order, attention first */
    int32_t n_dropped;
    float *scores;            /* 3 x n_layer importances (attn, mlp, block), NaN where
                                 unknown; NULL when none were given */
    tlm_type_rules types;     /* --type, --keep-wide */
    /* the quantization plan (quant_plan.c) */
    bool awq;                 /* activation-aware: every quantized tensor of a layer
                                 is in the spool */
    float *alpha;             /* n_layer x TLM_AWQ_N_INPUTS chosen alphas, NaN = not scaled */
    float *out_imp;           /* (n_embd) importance of the output head's input */
    spool spool;
} convert_plan;

/* What to plan: the options of tlm_write_options that shape the output. */
typedef struct plan_params {
    uint32_t dtype;
    const char *keep_wide;
    const tlm_drop_list *drop;           /* NULL = keep all */
    const float *attn_score, *mlp_score, *block_score; /* n_layer each, or NULL */
    const struct tlm_calib *calib;       /* scores not given above come from it */
} plan_params;

/* The options of a writer's call. */
plan_params plan_params_of(const tlm_write_options *wo);

/* Builds the plan of m for dst. A writer adding tensors of its own to the
 * type rules checks the --keep-wide patterns afterwards
 * (type_rules_check_used). */
tlm_status convert_plan_build(convert_plan *p, const struct tlm_model *m, const plan_params *pp,
                              const char *dst, tlm_error *err);
void convert_plan_free(convert_plan *p);

/* The plan tensor of spec place/slot among [first, end), or NULL. */
plan_tensor *plan_find(convert_plan *p, int32_t first, int32_t end, spec_place place, int slot);

/* The layer groups of the plan: tensors [*first, *end) of one original
 * layer, the next after *end (start with *end = n_model_tensors); false
 * after the last. */
bool plan_next_layer(const convert_plan *p, int32_t *first, int32_t *end);

/* Makes the values of layer il's tensors [first, end) readable (a lazily
 * loaded layer is materialised: model.h) and checks every one is there;
 * plan_layer_leave releases it again. A model loaded whole is untouched. */
tlm_status plan_layer_enter(convert_plan *p, int32_t il, int32_t first, int32_t end);
void plan_layer_leave(convert_plan *p, int32_t il);

/* Stored bytes of a (rows, cols) tensor of dtype (.tlm packing). */
uint64_t plan_stored_bytes(uint32_t dtype, uint64_t rows, uint64_t cols);

/* n floats of src as dtype (f32, f16 or bf16) into dst. */
void plan_convert_floats(uint32_t dtype, const float *src, void *dst, size_t n);

/* The quantization stage (quant_plan.c): with p->awq, layer by layer,
 * chooses the activation-aware scales from calib (quant/awq.h), quantizes
 * the layer's matrices (the tiles in parallel, n_threads of them; 0 = the
 * OpenMP default) and puts the stored bytes of all its tensors in the spool,
 * in dst's directory. Reports stage "awq", layers done of n_layer. */
tlm_status quantize_plan_run(convert_plan *p, const struct tlm_calib *calib, int32_t n_threads,
                             tlm_progress_fn progress, void *user);

/* Receives a tensor's stored bytes, chunk by chunk, in order. */
typedef tlm_status (*plan_emit_fn)(void *ctx, const void *bytes, size_t n);

/* The .tlm stored bytes of t (dtype: f32 / f16 / bf16 elements, or packed
 * tiles, quantized with the importance-weighted search when t->search,
 * round-to-nearest otherwise; a packed copy as it is) from its rows x cols
 * f32 values (NULL for a packed copy), in chunks of at most
 * TLM_CONVERT_CHUNK_BYTES through scratch (that size). NaN or infinity in a
 * matrix to be quantized is refused, naming the tensor and rows. */
tlm_status plan_encode_tensor(const convert_plan *p, const plan_tensor *t, const float *values,
                              uint8_t *scratch, int32_t n_threads, plan_emit_fn emit, void *ctx);

#endif
