/*
 * gguf_writer.c — a model as a GGUF v3 file for llama.cpp (forms and rules
 * in gguf_writer.h).
 *
 * File layout written:
 *   "GGUF" u32 3, u64 n_tensors, u64 n_kv
 *   n_kv x {string key, u32 type, value}
 *   n_tensors x {string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset}
 *   zero padding to 32 (GGUF's default general.alignment)
 *   tensor data, each tensor at a multiple of 32 from the data start
 * (string = u64 length + bytes; array = u32 element type, u64 count, elements).
 *
 * The header (metadata and tensor directory, a few MB at most: the
 * tokenizer's arrays) is built in memory; tensor data streams row by row
 * through one buffer into a temporary file (atomic_file.h). The output's size
 * is known before the first byte and reserved, so a full disk fails at once.
 * The layers of a lazily loaded source (model.h) are materialised one at a
 * time, around the writing of their tensors.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "convert_plan.h"
#include "error.h"
#include "ggml_types.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "model.h"
#include "out_file.h"
#include "qformat.h"
#include "tensor_spec.h"
#include "type_rules.h"

#define GGUF_ALIGN 32
#define CHUNK_BYTES TLM_CONVERT_CHUNK_BYTES /* the .tlm writer's buffer size */

/* llama.cpp's llama_ftype values for general.file_type */
enum { FTYPE_ALL_F32 = 0, FTYPE_F16 = 1, FTYPE_Q4_0 = 2, FTYPE_Q8_0 = 7, FTYPE_BF16 = 32 };

/* ---------------------------------------------------------- metadata */

typedef struct kv_writer {
    tlm_byte_buf b;
    uint64_t n;
} kv_writer;

static void kv_key(kv_writer *w, const char *key, uint32_t type) {
    buf_str(&w->b, key, strlen(key));
    buf_u32(&w->b, type);
    w->n++;
}

static void kv_u32(kv_writer *w, const char *key, uint32_t v) {
    kv_key(w, key, GGUF_VT_UINT32);
    buf_u32(&w->b, v);
}

static void kv_f32(kv_writer *w, const char *key, float v) {
    kv_key(w, key, GGUF_VT_FLOAT32);
    buf_put(&w->b, &v, 4);
}

static void kv_string(kv_writer *w, const char *key, const char *v) {
    kv_key(w, key, GGUF_VT_STRING);
    buf_str(&w->b, v, strlen(v));
}

static void kv_i32_array(kv_writer *w, const char *key, const int32_t *v, uint64_t n) {
    kv_key(w, key, GGUF_VT_ARRAY);
    buf_u32(&w->b, GGUF_VT_INT32);
    buf_u64(&w->b, n);
    buf_put(&w->b, v, (size_t)n * 4);
}

static void kv_bool_array(kv_writer *w, const char *key, const bool *v, uint64_t n) {
    kv_key(w, key, GGUF_VT_ARRAY);
    buf_u32(&w->b, GGUF_VT_BOOL);
    buf_u64(&w->b, n);
    for (uint64_t i = 0; i < n; i++) {
        uint8_t x = v[i];
        buf_put(&w->b, &x, 1);
    }
}

bool gguf_put_kv(tlm_byte_buf *b, const gguf_kv *kv) {
    if (kv->type == GGUF_VT_ARRAY && kv->arr_type != GGUF_VT_STRING &&
        !gguf_vtype_size(kv->arr_type))
        return false;
    buf_str(b, kv->key.ptr, (size_t)kv->key.len);
    buf_u32(b, kv->type);
    if (kv->type == GGUF_VT_STRING) {
        uint64_t len;
        memcpy(&len, kv->data, 8);
        buf_put(b, kv->data, (size_t)(8 + len)); /* the reader checked it lies in the image */
    } else if (kv->type == GGUF_VT_ARRAY) {
        buf_u32(b, kv->arr_type);
        buf_u64(b, kv->arr_n);
        if (kv->arr_type == GGUF_VT_STRING) {
            for (uint64_t i = 0; i < kv->arr_n; i++)
                buf_str(b, kv->strs[i].ptr, (size_t)kv->strs[i].len);
        } else {
            buf_put(b, kv->data, (size_t)(kv->arr_n * gguf_vtype_size(kv->arr_type)));
        }
    } else {
        buf_put(b, kv->data, gguf_vtype_size(kv->type));
    }
    return true;
}

/* ------------------------------------------------------------ the layout */

/* A tensor of the GGUF: one of the plan's, or one of the writer's own (the
 * Llama 3 RoPE divisors, a placeholder MLP's zeros). */
typedef struct gg_tensor {
    char name[TLM_TENSOR_NAME_MAX];
    uint32_t n_dims;       /* 1 (vector) or 2 */
    uint64_t rows, cols;   /* GGUF ne = [cols, rows] */
    uint32_t dtype;        /* tlm_dtype the values take (F32/F16/BF16/Q8_G32/Q4_G32) */
    const plan_tensor *pt; /* the plan's tensor, or NULL and: */
    const float *values;   /* rows x cols f32 of the writer's, or NULL: zeros */
    int32_t layer;         /* the model layer of a sublayer's tensor; -1 for the others */
    int32_t perm_heads;    /* > 0: rows are that many heads in rotate-half order */
    uint64_t row_bytes, bytes, offset;
} gg_tensor;

typedef struct gg_plan {
    convert_plan plan;     /* what is written (convert_plan.h) */
    const tlm_write_options *o;
    const char *dst;
    tlm_error *err;
    bool pruned;           /* deci form */
    bool *keep_attn, *keep_mlp, *placeholder_mlp; /* n_layer each: the deci form's arrays */
    gg_tensor *tensors;    /* in file order */
    int32_t n_tensors;
    float *rope_freqs;     /* Llama 3 RoPE divisors (rope_dim / 2), or NULL */
    uint64_t max_row_bytes, max_cols;
} gg_plan;

static uint32_t ggml_type_of(uint32_t dtype) {
    switch (dtype) {
    case TLM_DTYPE_F16: return GGML_TYPE_F16;
    case TLM_DTYPE_BF16: return GGML_TYPE_BF16;
    case TLM_DTYPE_Q8_G32: return GGML_TYPE_Q8_0;
    case TLM_DTYPE_Q4_G32: return GGML_TYPE_Q4_0;
    default: return GGML_TYPE_F32;
    }
}

static uint64_t row_bytes_of(uint32_t dtype, uint64_t cols) {
    if (dtype == TLM_DTYPE_Q8_G32) return cols / TLM_QGROUP * sizeof(tlm_block_q8_g32);
    if (dtype == TLM_DTYPE_Q4_G32) return cols / TLM_QGROUP * sizeof(tlm_block_q4_g32);
    return cols * tlm_dtype_float_bytes(dtype);
}

/* Appends a tensor (room for every one was allocated). */
static gg_tensor *layout_add(gg_plan *p, const char *name, uint32_t n_dims, uint64_t rows,
                             uint64_t cols, uint32_t dtype) {
    gg_tensor *t = &p->tensors[p->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->rows = rows;
    t->cols = cols;
    t->dtype = dtype;
    t->layer = -1;
    t->row_bytes = row_bytes_of(dtype, cols);
    t->bytes = t->row_bytes * rows;
    if (t->row_bytes > p->max_row_bytes) p->max_row_bytes = t->row_bytes;
    if (cols > p->max_cols) p->max_cols = cols;
    return t;
}

/* GGUF llama/deci: adjacent-pair RoPE; rotate-half rows are permuted. */
static int32_t perm_heads_of(const tlm_hparams *hp, const tensor_spec *sp) {
    if (hp->rope_style != TLM_ROPE_NEOX) return 0;
    return sp->perm == PERM_Q_HEADS ? hp->n_head : sp->perm == PERM_KV_HEADS ? hp->n_head_kv : 0;
}

static void layout_plan_tensor(gg_plan *p, const plan_tensor *pt) {
    gg_tensor *t = layout_add(p, pt->name, pt->n_dims, pt->rows, pt->cols, pt->dtype);
    t->pt = pt;
    t->layer = pt->layer;
    t->perm_heads = perm_heads_of(&p->plan.m->hp, pt->spec);
}

/* A kept sublayer's tensors. */
static void layout_sublayer(gg_plan *p, const plan_sublayer *s) {
    for (int32_t k = 0; k < s->count; k++) layout_plan_tensor(p, &p->plan.tensors[s->first + k]);
}

/* The zero MLP TLM_GGUF_PLACEHOLDER_FF wide standing for layer il's removed one. */
static void layout_placeholder_mlp(gg_plan *p, int32_t il) {
    const tlm_hparams *hp = &p->plan.m->hp;
    char name[TLM_TENSOR_NAME_MAX];
    int n_specs;
    const tensor_spec *specs = tensor_specs_sublayer(hp->arch, TLM_SUBLAYER_MLP, &n_specs);
    for (int k = 0; k < n_specs; k++) {
        const tensor_spec *sp = &specs[k];
        tensor_spec_name(sp, il, name, sizeof name);
        const uint32_t n_dims = sp->rows == DIM_ONE ? 1 : 2;
        const uint64_t rows = sp->rows == DIM_ONE ? 1
                              : sp->rows == DIM_FF ? TLM_GGUF_PLACEHOLDER_FF
                                                   : (uint64_t)tensor_spec_dim(hp, sp->rows);
        const uint64_t cols = sp->cols == DIM_FF ? TLM_GGUF_PLACEHOLDER_FF
                                                 : (uint64_t)tensor_spec_dim(hp, sp->cols);
        layout_add(p, name, n_dims, rows, cols,
                   type_rules_choose(&p->plan.types, name, n_dims, cols));
    }
}

static tlm_status plan_build(gg_plan *p, const struct tlm_model *m) {
    const tlm_hparams *hp = &m->hp;
    const int32_t NL = hp->n_layer;
    tlm_status st;
    if (hp->rope_dim != hp->head_dim)
        return tlm_seterr(p->err, TLM_ERR_UNSUPPORTED,
                          "%s: RoPE over %d of %d head dimensions cannot be written as a llama GGUF",
                          p->dst, hp->rope_dim, hp->head_dim);
    /* the GGUF is quantized round-to-nearest: the plan takes no calibration */
    plan_params pp = plan_params_of(p->o);
    pp.calib = NULL;
    if ((st = convert_plan_build(&p->plan, m, &pp, p->dst, p->err))) return st;
    const convert_plan *cp = &p->plan;
    p->keep_attn = tlm_calloc((size_t)NL, sizeof *p->keep_attn);
    p->keep_mlp = tlm_calloc((size_t)NL, sizeof *p->keep_mlp);
    p->placeholder_mlp = tlm_calloc((size_t)NL, sizeof *p->placeholder_mlp);
    /* the plan's, one RoPE table, a placeholder MLP per layer at most */
    p->tensors = tlm_calloc((size_t)cp->n_tensors + 1 + (size_t)NL * MLP_N_SLOTS, sizeof *p->tensors);
    if (!p->keep_attn || !p->keep_mlp || !p->placeholder_mlp || !p->tensors)
        return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
    /* per layer, which sublayers are written: what the deci form's
     * per-layer arrays say */
    for (int32_t i = 0; i < cp->n_kept; i++)
        (cp->kept[i].kind == TLM_SUBLAYER_ATTN ? p->keep_attn : p->keep_mlp)[cp->kept[i].layer] = true;
    for (int32_t il = 0; il < NL; il++) p->pruned |= !p->keep_attn[il] || !p->keep_mlp[il];
    if (p->pruned && NL > 0 && !p->keep_attn[0])
        return tlm_seterr(p->err, TLM_ERR_UNSUPPORTED,
                          "%s: layer 0's attention is removed; llama.cpp's form for pruned models "
                          "(deci) takes the head size from layer 0, so it must keep its attention",
                          p->dst);
    /* a zero MLP where llama.cpp's deci graph would otherwise lose the
     * attention output (width 0 skips the residual update), and in the last
     * layer (which also selects the output rows) */
    for (int32_t il = 0; il < NL; il++)
        p->placeholder_mlp[il] = p->pruned && !p->keep_mlp[il] && (p->keep_attn[il] || il == NL - 1);

    layout_plan_tensor(p, &cp->tensors[MODEL_TOK_EMBD]);
    if (hp->rope_scaling == TLM_ROPE_SCALING_LLAMA3) {
        const int32_t half = hp->rope_dim / 2;
        if (!(p->rope_freqs = tlm_malloc((size_t)half * sizeof(float))))
            return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
        for (int32_t j = 0; j < half; j++) {
            const double freq = pow((double)hp->rope_theta, -2.0 * j / (double)hp->rope_dim);
            p->rope_freqs[j] = (float)model_llama3_rope_divisor(
                freq, hp->rope_factor, hp->rope_low_freq_factor, hp->rope_high_freq_factor,
                hp->rope_orig_ctx);
        }
        const char *name = "rope_freqs.weight";
        layout_add(p, name, 1, 1, (uint64_t)half,
                   type_rules_choose(&p->plan.types, name, 1, (uint64_t)half))
            ->values = p->rope_freqs;
    }
    /* the kept sublayers in order, a placeholder after a layer's attention
     * (or in its place in the last layer) */
    int32_t next = 0;
    for (int32_t il = 0; il < NL; il++) {
        while (next < cp->n_kept && cp->kept[next].layer == il) layout_sublayer(p, &cp->kept[next++]);
        if (p->placeholder_mlp[il]) layout_placeholder_mlp(p, il);
    }
    /* the plan's model tensors: token embedding, output norm, output */
    for (int32_t i = 1; i < cp->n_model_tensors; i++) layout_plan_tensor(p, &cp->tensors[i]);
    return type_rules_check_used(&p->plan.types, p->err);
}

static void plan_free(gg_plan *p) {
    tlm_free(p->keep_attn);
    tlm_free(p->keep_mlp);
    tlm_free(p->placeholder_mlp);
    tlm_free(p->tensors);
    tlm_free(p->rope_freqs);
    convert_plan_free(&p->plan);
}

/* ------------------------------------------------------------ header */

static uint32_t file_type_of(uint32_t dtype) {
    switch (dtype) {
    case TLM_DTYPE_F16: return FTYPE_F16;
    case TLM_DTYPE_BF16: return FTYPE_BF16;
    case TLM_DTYPE_Q8_G32: return FTYPE_Q8_0;
    case TLM_DTYPE_Q4_G32: return FTYPE_Q4_0;
    default: return FTYPE_ALL_F32;
    }
}

/* The model's keys, then the tokenizer's. */
static tlm_status build_metadata(gg_plan *p, kv_writer *w) {
    const struct tlm_model *m = p->plan.m;
    const tlm_hparams *hp = &m->hp;
    const char *arch = p->pruned ? "deci" : "llama";
    char key[128];
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
    kv_string(w, "general.architecture", arch);
    kv_string(w, "general.name", m->name && *m->name ? m->name : "model");
    kv_u32(w, "general.file_type", file_type_of(p->o->dtype));
    if (tlm_dtype_is_quant(p->o->dtype)) kv_u32(w, "general.quantization_version", 2);
    kv_u32(w, K("vocab_size"), (uint32_t)hp->n_vocab);
    kv_u32(w, K("context_length"), (uint32_t)hp->n_ctx_train);
    kv_u32(w, K("embedding_length"), (uint32_t)hp->n_embd);
    kv_u32(w, K("block_count"), (uint32_t)hp->n_layer);
    if (!p->pruned) {
        kv_u32(w, K("feed_forward_length"), (uint32_t)hp->n_ff);
        kv_u32(w, K("attention.head_count"), (uint32_t)hp->n_head);
        kv_u32(w, K("attention.head_count_kv"), (uint32_t)hp->n_head_kv);
    } else {
        const int32_t NL = hp->n_layer;
        int32_t *arr = tlm_malloc((size_t)NL * 3 * sizeof *arr);
        if (!arr) return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
        int32_t *ff = arr, *heads = arr + NL, *heads_kv = arr + 2 * NL;
        for (int32_t il = 0; il < NL; il++) {
            ff[il] = p->keep_mlp[il] ? hp->n_ff
                     : p->placeholder_mlp[il] ? TLM_GGUF_PLACEHOLDER_FF : 0;
            heads[il] = p->keep_attn[il] ? hp->n_head : 0;
            heads_kv[il] = p->keep_attn[il] ? hp->n_head_kv : 0;
        }
        kv_i32_array(w, K("feed_forward_length"), ff, (uint64_t)NL);
        kv_i32_array(w, K("attention.head_count"), heads, (uint64_t)NL);
        kv_i32_array(w, K("attention.head_count_kv"), heads_kv, (uint64_t)NL);
        tlm_free(arr);
        kv_bool_array(w, "trimlm.removed_mlp", p->placeholder_mlp, (uint64_t)NL);
    }
    kv_u32(w, K("attention.key_length"), (uint32_t)hp->head_dim);
    kv_u32(w, K("attention.value_length"), (uint32_t)hp->head_dim);
    kv_f32(w, K("attention.layer_norm_rms_epsilon"), hp->rms_eps);
    kv_f32(w, K("rope.freq_base"), hp->rope_theta);
    kv_u32(w, K("rope.dimension_count"), (uint32_t)hp->rope_dim);
    if (hp->rope_scaling == TLM_ROPE_SCALING_LINEAR) {
        kv_string(w, K("rope.scaling.type"), "linear");
        kv_f32(w, K("rope.scaling.factor"), hp->rope_factor);
    }
#undef K

    /* the tokenizer: the source's own tokenizer.* keys */
    const tlm_tokenizer_blob *tb = p->o->tokenizer;
    if (strcmp(tb->format, "gguf-kv") != 0 || tb->n_parts != 1)
        return tlm_seterr(p->err, TLM_ERR_UNSUPPORTED,
                          "%s: the source's tokenizer is a Hugging Face tokenizer.json, which "
                          "cannot be written as GGUF tokenizer metadata; convert the model to GGUF "
                          "first (llama.cpp's convert_hf_to_gguf.py) and export from that",
                          p->dst);
    gguf_file *f = gguf_open_memory(tb->part_data[0], (size_t)tb->part_bytes[0], "tokenizer",
                                    p->err);
    if (!f) return p->err && p->err->code ? p->err->code : TLM_ERR_FORMAT;
    bool has_model = false;
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (kv->key.len < 10 || memcmp(kv->key.ptr, "tokenizer.", 10) != 0 ||
            gguf_str_eq(kv->key, "tokenizer.chat_template"))
            continue;
        has_model |= gguf_str_eq(kv->key, "tokenizer.ggml.model");
        if (gguf_put_kv(&w->b, kv)) w->n++;
    }
    gguf_close(f);
    if (!has_model)
        return tlm_seterr(p->err, TLM_ERR_FORMAT,
                          "%s: the source has no tokenizer (no tokenizer.ggml.model); llama.cpp "
                          "cannot load a GGUF without one", p->dst);
    if (m->chat_template) kv_string(w, "tokenizer.chat_template", m->chat_template);
    return w->b.oom ? tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory for the metadata", p->dst)
                    : TLM_OK;
}

/* --------------------------------------------------------- tensor data */

/* The source row that lands at row r: within each head of hd rows, GGUF
 * row 2i + j is rotate-half row j * hd/2 + i (convert_hf_to_gguf.py's
 * permute). */
static uint64_t source_row(const gg_tensor *t, uint64_t r) {
    if (t->perm_heads <= 0 || t->n_dims != 2) return r;
    const uint64_t hd = t->rows / (uint64_t)t->perm_heads, half = hd / 2;
    const uint64_t h = r / hd, k = r % hd;
    return h * hd + (k % 2) * half + k / 2;
}

/* One row of t into dst (t->row_bytes). zero_row: max_cols zeros. */
static tlm_status convert_row(gg_plan *p, const gg_tensor *t, uint64_t r, const float *zero_row,
                              uint8_t *dst) {
    const uint64_t sr = source_row(t, r);
    const int64_t n = (int64_t)t->cols;
    const float *src = t->pt ? tensor_f32(t->pt->source) : t->values;
    if (t->perm_heads > 0 && t->n_dims == 1) {
        /* a bias vector: its elements are the "rows" of the permutation */
        const uint64_t hd = t->cols / (uint64_t)t->perm_heads, half = hd / 2;
        float *out = (float *)dst;
        for (uint64_t c = 0; c < t->cols; c++)
            out[c] = src[(c / hd) * hd + (c % hd % 2) * half + (c % hd) / 2];
        return TLM_OK;
    }
    if (t->pt && t->pt->packed_copy) {
        if (!tlm_qunpack((tlm_qtype)t->dtype, t->pt->source->data, n, (int64_t)sr, (int64_t)sr + 1,
                         dst))
            return tlm_seterr(p->err, TLM_ERR_FORMAT, "%s: tensor '%s' cannot be unpacked", p->dst,
                              t->name);
        return TLM_OK;
    }
    const float *x = src ? src + sr * t->cols : zero_row;
    switch (t->dtype) {
    case TLM_DTYPE_F32:
    case TLM_DTYPE_F16:
    case TLM_DTYPE_BF16: plan_convert_floats(t->dtype, x, dst, (size_t)n); break;
    default:
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(x[i]))
                return tlm_seterr(p->err, TLM_ERR_FORMAT,
                                  "%s: tensor '%s' of the source holds NaN or infinity (row %" PRIu64
                                  "); it cannot be quantized", p->dst, t->name, sr);
        if (t->dtype == TLM_DTYPE_Q8_G32) tlm_q8_g32_quantize_row(x, (tlm_block_q8_g32 *)dst, n);
        else tlm_q4_g32_quantize_row(x, (tlm_block_q4_g32 *)dst, n);
    }
    return TLM_OK;
}

static tlm_status write_tensor(gg_plan *p, out_file *o, const gg_tensor *t, const float *zero_row,
                               uint8_t *scratch, size_t scratch_bytes) {
    size_t used = 0;
    for (uint64_t r = 0; r < t->rows; r++) {
        if (used + t->row_bytes > scratch_bytes) {
            tlm_status st = out_file_put(o, scratch, used);
            if (st) return st;
            used = 0;
        }
        tlm_status st = convert_row(p, t, r, zero_row, scratch + used);
        if (st) return st;
        used += (size_t)t->row_bytes;
    }
    return used ? out_file_put(o, scratch, used) : TLM_OK;
}

static tlm_status write_file(gg_plan *p, out_file *o, const tlm_byte_buf *header) {
    const uint64_t data_start = tlm_align_up(header->len, GGUF_ALIGN);
    const gg_tensor *last = &p->tensors[p->n_tensors - 1];
    tlm_status st = out_file_open(o, data_start + last->offset + last->bytes);
    if (st || (st = out_file_put(o, header->p, header->len))) return st;

    const size_t scratch_bytes = (size_t)(p->max_row_bytes > CHUNK_BYTES ? p->max_row_bytes
                                                                          : CHUNK_BYTES);
    uint8_t *scratch = tlm_malloc_aligned(scratch_bytes);
    float *zero_row = tlm_calloc((size_t)p->max_cols, sizeof(float));
    if (!scratch || !zero_row) st = tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", o->dst);
    /* a layer's tensors are contiguous: it is entered (materialised, when
     * loaded lazily) before its first and left after its last */
    int32_t entered = -1;
    for (int32_t i = 0; i < p->n_tensors && !st; i++) {
        const gg_tensor *t = &p->tensors[i];
        if (t->pt && t->layer >= 0 && t->layer != entered) {
            const plan_sublayer *S = NULL; /* the layer's plan tensors: its kept sublayers' */
            int32_t first = -1, end = -1;
            for (int32_t k = 0; k < p->plan.n_kept; k++) {
                S = &p->plan.kept[k];
                if (S->layer != t->layer) continue;
                if (first < 0) first = S->first;
                end = S->first + S->count;
            }
            st = plan_layer_enter(&p->plan, t->layer, first, end);
            if (st) break;
            entered = t->layer;
        }
        if (!st) st = out_file_pad_to(o, data_start + t->offset);
        if (!st) st = write_tensor(p, o, t, zero_row, scratch, scratch_bytes);
        const bool layer_done = i + 1 == p->n_tensors || !p->tensors[i + 1].pt ||
                                p->tensors[i + 1].layer != entered;
        if (entered >= 0 && (st || layer_done)) {
            plan_layer_leave(&p->plan, entered);
            entered = -1;
        }
    }
    tlm_free(scratch);
    tlm_free(zero_row);
    if (st || (st = out_file_finish(o))) return st;
    return out_file_commit(o);
}

tlm_status write_gguf_file(const struct tlm_model *m, const char *dst, const tlm_write_options *wo,
                          tlm_error *err) {
    if (!m || !dst || !*dst || !wo || !wo->tokenizer)
        return tlm_seterr(err, TLM_ERR_ARG, "write_gguf_file: missing argument");
    if (!tlm_dtype_float_bytes(wo->dtype) && !tlm_dtype_is_quant(wo->dtype))
        return tlm_seterr(err, TLM_ERR_UNSUPPORTED, "%s: tensor type %u cannot be written", dst,
                          wo->dtype);
    if (m->hp.n_layer <= 0)
        return tlm_seterr(err, TLM_ERR_ARG, "%s: the model has no layers", dst);
    gg_plan p = {.o = wo, .dst = dst, .err = err, .plan = {.spool = {.fd = -1}}};
    out_file o = {.file = {.fd = -1}};
    kv_writer kv = {0};
    tlm_byte_buf header = {0};
    tlm_status st = plan_build(&p, m);
    if (!st) st = build_metadata(&p, &kv);
    if (!st) {
        uint64_t at = 0;
        for (int32_t i = 0; i < p.n_tensors; i++) {
            p.tensors[i].offset = at;
            at = tlm_align_up(at + p.tensors[i].bytes, GGUF_ALIGN);
        }
        buf_put(&header, "GGUF", 4);
        buf_u32(&header, 3);
        buf_u64(&header, (uint64_t)p.n_tensors);
        buf_u64(&header, kv.n);
        buf_put(&header, kv.b.p, kv.b.len);
        for (int32_t i = 0; i < p.n_tensors; i++) {
            const gg_tensor *t = &p.tensors[i];
            buf_str(&header, t->name, strlen(t->name));
            buf_u32(&header, t->n_dims);
            buf_u64(&header, t->cols);
            if (t->n_dims == 2) buf_u64(&header, t->rows);
            buf_u32(&header, ggml_type_of(t->dtype));
            buf_u64(&header, t->offset);
        }
        if (header.oom) st = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dst);
    }
    if (!st) st = out_file_init(&o, dst, wo->inputs, wo->n_inputs, false, wo->progress, wo->user, err);
    if (!st) st = write_file(&p, &o, &header);
    out_file_close(&o);
    tlm_free(kv.b.p);
    tlm_free(header.p);
    plan_free(&p);
    return st;
}
