/*
 * tlm_writer.c — writing a model to trimlm's own file (.tlm, layout in
 * tlm_format.h) and `tlm_convert`, which loads any source and writes it.
 *
 * The writer plans the whole file first (every tensor's type, offset and
 * size), so the output's size is known before the first byte: it is
 * reserved with fallocate, which makes a full disk fail at once rather than
 * after minutes of conversion (a write error later is still reported as
 * such). Bytes then stream through one buffer into a temporary file next to
 * the destination (atomic_file.h) while XXH3 hashes them; the
 * header (offsets and checksums) is written last, at offset 0, and the file
 * is fsync'd and renamed onto the destination.
 *
 * A lazily loaded source (model.h) holds no layer in f32 until the writer
 * materialises it: each layer is materialised around its turn (once to
 * choose the activation-aware scales, once to write it) and released after,
 * so the peak is one layer, not the model.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "alloc.h"
#include "atomic_file.h"
#include "awq.h"
#include "error.h"
#include "f16.h"
#include "fileio.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "model.h"
#include "qformat.h"
#include "tensor_spec.h"
#include "tlm_format.h"
#include "type_rules.h"

#define OUT_BUFFER_BYTES ((size_t)4 << 20) /* write(2) granularity */
#define CHUNK_BYTES TLM_CONVERT_CHUNK_BYTES /* converted rows per step, at most */

/* ------------------------------------------------------- tensor types */

const char *tlm_tensor_type_name(int32_t type) {
    return type >= 0 ? tlm_dtype_name((uint32_t)type) : "unknown";
}

int32_t tlm_tensor_type_from_name(const char *name) {
    if (!name) return -1;
    for (int32_t t = TLM_DTYPE_F32; t <= TLM_DTYPE_BF16; t++)
        if (strcmp(name, tlm_dtype_name((uint32_t)t)) == 0) return t;
    if (strcmp(name, "int8") == 0 || strcmp(name, "q8_g32") == 0) return TLM_DTYPE_Q8_G32;
    if (strcmp(name, "int4") == 0 || strcmp(name, "q4_g32") == 0) return TLM_DTYPE_Q4_G32;
    return -1;
}

/* n floats of src as dtype into dst. */
static void convert_floats(uint32_t dtype, const float *src, void *dst, size_t n) {
    if (dtype == TLM_DTYPE_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else if (dtype == TLM_DTYPE_F16) {
        uint16_t *h = dst;
        for (size_t i = 0; i < n; i++) h[i] = tlm_f32_to_f16(src[i]);
    } else {
        uint16_t *b = dst;
        for (size_t i = 0; i < n; i++) b[i] = tlm_f32_to_bf16(src[i]);
    }
}

/* ------------------------------------------------------ tokenizer blob */

void tlm_tokenizer_blob_free(tlm_tokenizer_blob *b) {
    if (!b) return;
    for (int i = 0; i < TLM_TOK_MAX_PARTS; i++) tlm_free(b->part_data[i]);
    memset(b, 0, sizeof *b);
}

/* A GGUF v3 image without tensors holding the tokenizer.* keys of path. */
static tlm_status blob_from_gguf(const char *path, tlm_tokenizer_blob *out, tlm_error *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) return err ? err->code : TLM_ERR_FORMAT;
    tlm_byte_buf b = {0};
    uint64_t n_kv = 0;
    tlm_buf_put(&b, "GGUF", 4);
    tlm_buf_u32(&b, 3);
    tlm_buf_u64(&b, 0);    /* tensors */
    tlm_buf_u64(&b, 0);    /* key-values: patched below */
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (kv->key.len >= 10 && memcmp(kv->key.ptr, "tokenizer.", 10) == 0 &&
            tlm_gguf_put_kv(&b, kv))
            n_kv++;
    }
    gguf_close(f);
    if (b.oom) {
        tlm_free(b.p);
        return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory copying the tokenizer", path);
    }
    memcpy(b.p + 16, &n_kv, 8);
    snprintf(out->format, sizeof out->format, "gguf-kv");
    snprintf(out->part_name[0], sizeof out->part_name[0], "tokenizer.gguf");
    out->part_data[0] = b.p;
    out->part_bytes[0] = b.len;
    out->n_parts = 1;
    return TLM_OK;
}

static tlm_status blob_from_hf(const char *dir, tlm_tokenizer_blob *out, tlm_error *err) {
    static const char *const names[] = {"tokenizer.json", "tokenizer_config.json"};
    snprintf(out->format, sizeof out->format, "hf-json");
    for (int i = 0; i < 2; i++) {
        char path[4096];
        int n = snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (n < 0 || (size_t)n >= sizeof path)
            return tlm_seterr(err, TLM_ERR_ARG, "%s: path too long", dir);
        struct stat st;
        if (i == 1 && stat(path, &st) != 0) break; /* the config is optional */
        size_t n_bytes = 0;
        out->part_data[i] = (uint8_t *)tlm_read_file(path, (size_t)TLM_MAX_TOK_BYTES, &n_bytes, err);
        if (!out->part_data[i]) return err && err->code ? err->code : TLM_ERR_IO;
        out->part_bytes[i] = n_bytes;
        snprintf(out->part_name[i], sizeof out->part_name[i], "%s", names[i]);
        out->n_parts = i + 1;
    }
    return TLM_OK;
}

tlm_status tlm_tokenizer_blob_from_source(const char *src, tlm_tokenizer_blob *out,
                                          tlm_error *err) {
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(src, &st) != 0) return tlm_seterr(err, TLM_ERR_IO, "%s: %s", src, strerror(errno));
    tlm_status s;
    if (S_ISDIR(st.st_mode)) s = blob_from_hf(src, out, err);
    else if (model_is_tlm_file(src)) s = tlm_read_tokenizer_blob(src, out, err);
    else s = blob_from_gguf(src, out, err);
    if (s != TLM_OK) tlm_tokenizer_blob_free(out);
    return s;
}

/* ------------------------------------------------------------ the plan */

typedef struct plan_tensor {
    char name[TLM_TENSOR_NAME_MAX];
    const tensor_spec *spec;
    const tlm_tensor *source; /* the model's tensor; a layer tensor's data is taken
                                 when the layer is entered (a lazily loaded layer's
                                 arrays exist only in between) */
    const float *src;   /* rows x cols f32 values to write (the source's, or their
                           activation-aware rescaled copy), or NULL and: */
    const tlm_tensor *qsrc; /* the source when it is packed (a .tlm source) */
    uint64_t rows, cols;
    uint32_t n_dims, dtype;
    uint64_t offset;    /* from data_offset */
    uint64_t bytes;
    uint64_t checksum;
    int32_t layer;      /* blk.N: N; -1 for the others */
    bool search;        /* quantize through awq.h's importance-weighted search */
    const float *imp;   /* its per-input importance (cols values; NULL = all 1),
                           set while the tensor's layer is prepared */
} plan_tensor;

typedef struct plan_sublayer {
    bool is_attn;
    int32_t layer;
    int32_t first, count; /* tensors [first, first + count) of the plan */
    bool has_score;
    float score;
} plan_sublayer;

typedef struct plan_drop {
    bool is_attn;
    int32_t layer;
    float score; /* NaN when unknown */
} plan_drop;

typedef struct plan {
    const struct tlm_model *m;
    const tlm_write_options *o;
    const char *dst;
    tlm_error *err;
    plan_tensor *tensors;
    int32_t n_tensors, cap_tensors;
    plan_sublayer *subs;
    int32_t n_subs;
    tlm_type_rules types; /* storage type of each tensor (--type, --keep-wide) */
    float *scores;      /* 3 x n_layer importances (attn, mlp, block), NaN where
                           unknown; NULL when no scores were given */
    plan_drop *dropped; /* sublayers of the model left out */
    int32_t n_dropped;
    bool awq;           /* quantize activation-aware from o->calib */
    float *alpha;       /* n_layer x TLM_AWQ_N_INPUTS alphas, NaN = not scaled */
    float *out_imp;     /* n_embd: importance of the output head's input */
} plan;

/* Stored bytes of a (rows, cols) tensor of dtype. */
static uint64_t tensor_bytes(uint32_t dtype, uint64_t rows, uint64_t cols) {
    if (tlm_dtype_is_quant(dtype))
        return tlm_qpacked_bytes((tlm_qtype)dtype, (int64_t)rows, (int64_t)cols);
    return rows * cols * tlm_dtype_float_bytes(dtype); /* < 2^62 (hparams) */
}

/* The tensor of spec (of original layer il; -1 for the model's own) from
 * source. A packed source is copied when it keeps its type (re-quantizing a
 * quantized model would compound the rounding: convert from the original
 * instead). A layer tensor of a lazily loaded model has its data only once
 * the layer is entered (layer_enter checks it). */
static tlm_status plan_add(plan *p, const tensor_spec *spec, int32_t il, const tlm_tensor *source) {
    const tlm_hparams *hp = &p->m->hp;
    char name[TLM_TENSOR_NAME_MAX];
    tensor_spec_name(spec, il, name, sizeof name);
    const float *src = tensor_f32(source);
    const tlm_tensor *qsrc = tensor_is_packed(source) && source->data ? source : NULL;
    if (!src && !qsrc && !(il >= 0 && p->m->lazy))
        return tlm_seterr(p->err, TLM_ERR_ARG, "%s: the model has no tensor '%s'", p->dst, name);
    if (p->n_tensors == p->cap_tensors) {
        int32_t cap = p->cap_tensors ? p->cap_tensors * 2 : 64;
        plan_tensor *grown = tlm_realloc(p->tensors, (size_t)cap * sizeof *grown);
        if (!grown) return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
        p->tensors = grown;
        p->cap_tensors = cap;
    }
    plan_tensor *t = &p->tensors[p->n_tensors++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->spec = spec;
    t->source = source;
    t->src = src;
    t->qsrc = qsrc;
    t->layer = il;
    t->n_dims = spec->rows == DIM_ONE ? 1 : 2;
    t->rows = (uint64_t)tensor_spec_dim(hp, spec->rows);
    t->cols = (uint64_t)tensor_spec_dim(hp, spec->cols);
    t->dtype = tlm_type_rules_choose(&p->types, name, t->n_dims, t->cols);
    if (t->qsrc && t->dtype != (uint32_t)t->qsrc->type)
        return tlm_seterr(p->err, TLM_ERR_UNSUPPORTED,
                          "%s: tensor '%s' of the source is stored %s and cannot be rewritten as %s "
                          "(convert from the original model instead)",
                          p->dst, name, tlm_dtype_name((uint32_t)t->qsrc->type),
                          tlm_dtype_name(t->dtype));
    t->bytes = tensor_bytes(t->dtype, t->rows, t->cols);
    return TLM_OK;
}

/* The model's sublayers, each kept (its tensors as the table lists them) or
 * dropped (o->drop_attn / drop_mlp). */
static tlm_status plan_sublayers(plan *p) {
    const struct tlm_model *m = p->m;
    const tlm_hparams *hp = &m->hp;
    const tlm_write_options *o = p->o;
    tlm_status st;
    for (int32_t i = 0; i < m->n_subs; i++) {
        const tlm_sublayer *S = &m->subs[i];
        const int32_t il = S->layer;
        const bool is_attn = S->kind == TLM_SUBLAYER_ATTN;
        const bool *drop = is_attn ? o->drop_attn : o->drop_mlp;
        const float score = p->scores ? p->scores[(is_attn ? 0 : 1) * hp->n_layer + il] : NAN;
        if (drop && drop[il]) {
            p->dropped[p->n_dropped++] = (plan_drop){is_attn, il, score};
            continue;
        }
        plan_sublayer *s = &p->subs[p->n_subs++];
        s->is_attn = is_attn;
        s->layer = il;
        s->first = p->n_tensors;
        if (isfinite(score)) {
            s->has_score = true;
            s->score = score;
        }
        int n_specs;
        const tensor_spec *specs = tensor_specs_sublayer(hp->arch, S->kind, &n_specs);
        for (int k = 0; k < n_specs; k++)
            if (tensor_spec_held(&specs[k], hp) &&
                (st = plan_add(p, &specs[k], il, &S->w[specs[k].slot])))
                return st;
        s->count = p->n_tensors - s->first;
    }
    return TLM_OK;
}

static tlm_status plan_build(plan *p) {
    const struct tlm_model *m = p->m;
    const tlm_hparams *hp = &m->hp;
    const uint64_t E = (uint64_t)hp->n_embd;
    tlm_status st;
    if ((st = tlm_type_rules_init(&p->types, p->o->dtype, p->o->keep_wide, p->dst, p->err)))
        return st;
    const tlm_write_options *o = p->o;
    const int32_t NL = hp->n_layer;
    p->subs = tlm_calloc((size_t)NL * 2, sizeof *p->subs);
    p->dropped = tlm_calloc((size_t)NL * 2, sizeof *p->dropped);
    if (!p->subs || !p->dropped) return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
    if (o->calib && tlm_calib_n_layer(o->calib) != NL)
        return tlm_seterr(p->err, TLM_ERR_ARG, "%s: the calibration has %d layers, the model %d",
                          p->dst, (int)tlm_calib_n_layer(o->calib), (int)NL);
    if (o->attn_score || o->mlp_score || o->block_score || o->calib) {
        if (!(p->scores = tlm_malloc((size_t)NL * 3 * sizeof *p->scores)))
            return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
        const float *given[3] = {o->attn_score, o->mlp_score, o->block_score};
        static const tlm_sublayer_kind kinds[3] = {TLM_SUBLAYER_ATTN, TLM_SUBLAYER_MLP,
                                                   TLM_SUBLAYER_BLOCK};
        for (int k = 0; k < 3; k++)
            for (int32_t il = 0; il < NL; il++)
                p->scores[k * NL + il] = given[k]   ? given[k][il]
                                         : o->calib ? tlm_calib_score(o->calib, kinds[k], il)
                                                    : NAN;
    }
    p->awq = o->calib && tlm_dtype_is_quant(o->dtype);
    if (p->awq) {
        if (!(p->alpha = tlm_malloc((size_t)NL * TLM_AWQ_N_INPUTS * sizeof *p->alpha)))
            return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
        for (int32_t i = 0; i < NL * TLM_AWQ_N_INPUTS; i++) p->alpha[i] = NAN;
    }
    if ((st = plan_add(p, tensor_spec_model(hp->arch, MODEL_TOK_EMBD), -1, &m->tok_embd)) ||
        (st = plan_add(p, tensor_spec_model(hp->arch, MODEL_OUT_NORM), -1, &m->out_norm)))
        return st;
    if (!hp->tied_embeddings &&
        (st = plan_add(p, tensor_spec_model(hp->arch, MODEL_OUTPUT), -1, &m->output)))
        return st;
    if ((st = plan_sublayers(p))) return st;
    if (p->awq) {
        /* the output head: the search weighted by its input's statistics; an
         * untied embedding table (a lookup, not a product) with equal weights */
        int64_t n = 0;
        const float *st_out = tlm_calib_act_stats(o->calib, 0, TLM_INPUT_OUTPUT, &n);
        if (st_out && n == (int64_t)E) {
            if (!(p->out_imp = tlm_malloc((size_t)E * sizeof *p->out_imp)))
                return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
            tlm_awq_importance(st_out, (int64_t)E, p->out_imp);
        }
        bool any = false;
        for (int32_t i = 0; i < p->n_tensors; i++) {
            plan_tensor *t = &p->tensors[i];
            if (!tlm_dtype_is_quant(t->dtype) || t->qsrc) continue;
            any = t->search = true;
            if (t->spec == tensor_spec_model(hp->arch, hp->tied_embeddings ? MODEL_TOK_EMBD
                                                                           : MODEL_OUTPUT))
                t->imp = p->out_imp;
        }
        p->awq = any; /* all copied from a quantized source: nothing to do */
    }
    return tlm_type_rules_check_used(&p->types, p->err);
}

static void plan_free(plan *p) {
    tlm_free(p->tensors);
    tlm_free(p->subs);
    tlm_free(p->dropped);
    tlm_free(p->scores);
    tlm_free(p->alpha);
    tlm_free(p->out_imp);
    tlm_type_rules_free(&p->types);
}

/* Layer il's arrays for its plan tensors [first, end): materialised when the
 * model was loaded lazily (model.h), so that the writer holds one layer in
 * f32 at a time; on a model loaded whole the pointers are already there. */
static tlm_status layer_enter(plan *p, int32_t il, int32_t first, int32_t end) {
    tlm_status st = model_layer_materialize(p->m, il, p->err);
    if (st) return st;
    for (int32_t i = first; i < end; i++) {
        plan_tensor *t = &p->tensors[i];
        t->src = tensor_f32(t->source);
        if (!t->src && !t->qsrc) /* the loaders record every tensor of a present sublayer */
            return tlm_seterr(p->err, TLM_ERR_ARG, "%s: the model has no tensor '%s'", p->dst,
                              t->name);
    }
    return TLM_OK;
}

/* After layer il's last tensor has been used: frees a materialised layer.
 * src may point into the activation-aware scratch buffer or at the layer's
 * own arrays; it goes back to the source's, NULL for a released layer. */
static void layer_leave(plan *p, int32_t il, int32_t first, int32_t end) {
    model_layer_release(p->m, il);
    for (int32_t i = first; i < end; i++) p->tensors[i].src = tensor_f32(p->tensors[i].source);
}

/* ------------------------------------------ activation-aware quantization */

/* The layer being written with AWQ (quant/awq.h): copies of its weights
 * with the chosen per-channel scales folded in, and each matrix's input
 * importance in the scaled units. One buffer, reused layer after layer. */
typedef struct awq_layer {
    float *buf;
    size_t cap; /* floats */
} awq_layer;

/* The inputs' names in the metadata (tlm_format.h) and in the calibration. */
static const char *const awq_input_names[TLM_AWQ_N_INPUTS] = {"attn_qkv", "attn_out", "ffn_gate_up",
                                                              "ffn_down"};
static const tlm_linear_input awq_inputs[TLM_AWQ_N_INPUTS] = {
    TLM_INPUT_ATTN_QKV, TLM_INPUT_ATTN_OUT, TLM_INPUT_FFN_GATE_UP, TLM_INPUT_FFN_DOWN};

/* The plan tensor of slot `slot` of the layer's sublayer of kind, or NULL. */
static plan_tensor *layer_tensor(plan *p, int32_t first, int32_t end, spec_place kind, int slot) {
    for (int32_t i = first; i < end; i++)
        if (p->tensors[i].spec->place == kind && p->tensors[i].spec->slot == slot)
            return &p->tensors[i];
    return NULL;
}

static int awq_type(const plan_tensor *t) {
    return tlm_dtype_is_quant(t->dtype) ? (int)t->dtype : TLM_AWQ_FLOAT;
}

/* Prepares layer il (plan tensors [first, end)): copies its float matrices,
 * scales them with tlm_awq_scale_layer (choosing the alphas still NaN), and
 * points the tensors at the copies and their importances. */
static tlm_status awq_prepare_layer(plan *p, awq_layer *al, int32_t il, int32_t first,
                                    int32_t end) {
    const tlm_hparams *hp = &p->m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff, HD = hp->head_dim;
    const int64_t QD = (int64_t)hp->n_head * HD, KD = (int64_t)hp->n_head_kv * HD;
    plan_tensor *an = layer_tensor(p, first, end, SPEC_ATTN, ATTN_NORM),
                *tq = layer_tensor(p, first, end, SPEC_ATTN, ATTN_Q),
                *tk = layer_tensor(p, first, end, SPEC_ATTN, ATTN_K),
                *tv = layer_tensor(p, first, end, SPEC_ATTN, ATTN_V),
                *tbv = layer_tensor(p, first, end, SPEC_ATTN, ATTN_V_BIAS),
                *to = layer_tensor(p, first, end, SPEC_ATTN, ATTN_OUT),
                *fn = layer_tensor(p, first, end, SPEC_MLP, MLP_NORM),
                *tg = layer_tensor(p, first, end, SPEC_MLP, MLP_GATE),
                *tu = layer_tensor(p, first, end, SPEC_MLP, MLP_UP),
                *td = layer_tensor(p, first, end, SPEC_MLP, MLP_DOWN);
    /* a sublayer copied from a quantized source cannot be rescaled */
    const bool attn = an && tq && tk && tv && to && an->src && tq->src && tk->src && tv->src &&
                      to->src && (!tbv || tbv->src);
    const bool mlp = fn && tg && tu && td && fn->src && tg->src && tu->src && td->src;
    size_t need = (size_t)(2 * E + QD + F);
    if (attn) need += (size_t)(E + 2 * QD * E + 2 * KD * E + KD);
    if (mlp) need += (size_t)(E + 3 * F * E);
    if (need > al->cap) {
        tlm_free(al->buf);
        al->cap = 0;
        if (!(al->buf = tlm_malloc_aligned(need * sizeof(float))))
            return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory for layer %d", p->dst, (int)il);
        al->cap = need;
    }
    float *at = al->buf;
#define TAKE(n) (at += (n), at - (n))
#define COPY(t, n) (t ? memcpy(TAKE(n), t->src, (size_t)(n) * sizeof(float)) : NULL)
    tlm_awq_layer l = {.n_embd = E, .n_ff = F, .head_dim = HD, .n_head = hp->n_head,
                       .n_head_kv = hp->n_head_kv};
    /* one statement each: the expressions of an initializer list are not
     * sequenced, so TAKE()s inside one could hand out the slices in any order */
    l.imp[TLM_AWQ_QKV] = TAKE(E);
    l.imp[TLM_AWQ_OUT] = TAKE(QD);
    l.imp[TLM_AWQ_GATE_UP] = TAKE(E);
    l.imp[TLM_AWQ_DOWN] = TAKE(F);
    const int64_t want_n[TLM_AWQ_N_INPUTS] = {E, QD, E, F};
    for (int k = 0; k < TLM_AWQ_N_INPUTS; k++) {
        int64_t n = 0;
        l.stat[k] = tlm_calib_act_stats(p->o->calib, il, awq_inputs[k], &n);
        if (n != want_n[k]) l.stat[k] = NULL;
    }
    if (attn) {
        l.attn_norm = COPY(an, E), l.wq = COPY(tq, QD * E), l.wk = COPY(tk, KD * E);
        l.wv = COPY(tv, KD * E), l.bv = COPY(tbv, KD), l.wo = COPY(to, E * QD);
        l.wq_type = awq_type(tq), l.wk_type = awq_type(tk), l.wv_type = awq_type(tv);
        l.wo_type = awq_type(to);
    }
    if (mlp) {
        l.ffn_norm = COPY(fn, E), l.w_gate = COPY(tg, F * E), l.w_up = COPY(tu, F * E);
        l.w_down = COPY(td, E * F);
        l.gate_type = awq_type(tg), l.up_type = awq_type(tu), l.down_type = awq_type(td);
    }
#undef COPY
#undef TAKE
    if (!tlm_awq_scale_layer(&l, &p->alpha[(size_t)il * TLM_AWQ_N_INPUTS]))
        return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory for layer %d", p->dst, (int)il);
    if (attn) {
        if (l.stat[TLM_AWQ_OUT]) to->imp = l.imp[TLM_AWQ_OUT];
        if (l.stat[TLM_AWQ_QKV]) tq->imp = tk->imp = tv->imp = l.imp[TLM_AWQ_QKV];
        an->src = l.attn_norm, tq->src = l.wq, tk->src = l.wk, tv->src = l.wv, to->src = l.wo;
        if (tbv) tbv->src = l.bv;
    }
    if (mlp) {
        if (l.stat[TLM_AWQ_DOWN]) td->imp = l.imp[TLM_AWQ_DOWN];
        if (l.stat[TLM_AWQ_GATE_UP]) tg->imp = tu->imp = l.imp[TLM_AWQ_GATE_UP];
        fn->src = l.ffn_norm, tg->src = l.w_gate, tu->src = l.w_up, td->src = l.w_down;
    }
    return TLM_OK;
}

/* Chooses every layer's alphas before anything is written (they go into
 * the metadata, which precedes the data); the writer then prepares each
 * layer again with them. The tensors' sources are restored afterwards. */
static tlm_status awq_choose_all(plan *p) {
    if (!p->awq) return TLM_OK;
    const tlm_write_options *o = p->o;
    plan_tensor *saved = tlm_malloc((size_t)p->n_tensors * sizeof *saved);
    if (!saved) return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
    memcpy(saved, p->tensors, (size_t)p->n_tensors * sizeof *saved);
    awq_layer al = {0};
    tlm_status st = TLM_OK;
    const int32_t NL = p->m->hp.n_layer;
    for (int32_t i = 0; i < p->n_tensors && !st;) {
        int32_t end = i + 1, il = p->tensors[i].layer;
        while (end < p->n_tensors && il >= 0 && p->tensors[end].layer == il) end++;
        if (il >= 0) {
            if (o->progress && !o->progress(o->user, "awq", (uint64_t)il, (uint64_t)NL))
                st = tlm_seterr(p->err, TLM_ERR_ARG, "%s: cancelled; nothing was written", p->dst);
            if (!st) st = layer_enter(p, il, i, end);
            if (!st) st = awq_prepare_layer(p, &al, il, i, end);
            layer_leave(p, il, i, end);
        }
        i = end;
    }
    if (!st && o->progress && !o->progress(o->user, "awq", (uint64_t)NL, (uint64_t)NL))
        st = tlm_seterr(p->err, TLM_ERR_ARG, "%s: cancelled; nothing was written", p->dst);
    memcpy(p->tensors, saved, (size_t)p->n_tensors * sizeof *saved);
    tlm_free(saved);
    tlm_free(al.buf);
    return st;
}

/* ------------------------------------------------------------ metadata */

static const char *rope_style_name(tlm_rope_style s) { return s == TLM_ROPE_NEOX ? "neox" : "norm"; }

static const char *rope_scaling_name(tlm_rope_scaling s) {
    switch (s) {
    case TLM_ROPE_SCALING_LINEAR: return "linear";
    case TLM_ROPE_SCALING_LLAMA3: return "llama3";
    default: return "none";
    }
}

static bool add_hparams(cJSON *root, const tlm_hparams *hp) {
    cJSON *h = cJSON_AddObjectToObject(root, "hparams");
    if (!h) return false;
    bool ok = cJSON_AddNumberToObject(h, "n_vocab", hp->n_vocab) &&
              cJSON_AddNumberToObject(h, "n_embd", hp->n_embd) &&
              cJSON_AddNumberToObject(h, "n_layer", hp->n_layer) &&
              cJSON_AddNumberToObject(h, "n_head", hp->n_head) &&
              cJSON_AddNumberToObject(h, "n_head_kv", hp->n_head_kv) &&
              cJSON_AddNumberToObject(h, "head_dim", hp->head_dim) &&
              cJSON_AddNumberToObject(h, "n_ff", hp->n_ff) &&
              cJSON_AddNumberToObject(h, "n_ctx_train", hp->n_ctx_train) &&
              /* float -> double is exact and cJSON prints doubles round-trip */
              cJSON_AddNumberToObject(h, "rms_eps", (double)hp->rms_eps) &&
              cJSON_AddNumberToObject(h, "rope_theta", (double)hp->rope_theta) &&
              cJSON_AddNumberToObject(h, "rope_dim", hp->rope_dim) &&
              cJSON_AddStringToObject(h, "rope_style", rope_style_name(hp->rope_style)) &&
              cJSON_AddStringToObject(h, "rope_scaling", rope_scaling_name(hp->rope_scaling)) &&
              cJSON_AddNumberToObject(h, "rope_factor", (double)hp->rope_factor) &&
              cJSON_AddNumberToObject(h, "rope_low_freq_factor", (double)hp->rope_low_freq_factor) &&
              cJSON_AddNumberToObject(h, "rope_high_freq_factor", (double)hp->rope_high_freq_factor) &&
              cJSON_AddNumberToObject(h, "rope_orig_ctx", hp->rope_orig_ctx) &&
              cJSON_AddBoolToObject(h, "tied_embeddings", hp->tied_embeddings) &&
              cJSON_AddBoolToObject(h, "qkv_bias", hp->qkv_bias);
    return ok;
}

static bool add_tokenizer(cJSON *root, const tlm_tokenizer_blob *tb) {
    cJSON *t = cJSON_AddObjectToObject(root, "tokenizer");
    if (!t || !cJSON_AddStringToObject(t, "format", tb->format)) return false;
    cJSON *parts = cJSON_AddArrayToObject(t, "parts");
    if (!parts) return false;
    uint64_t at = 0;
    for (int i = 0; i < tb->n_parts; i++) {
        cJSON *part = cJSON_CreateObject();
        if (!part || !cJSON_AddItemToArray(parts, part)) return false;
        if (!cJSON_AddStringToObject(part, "name", tb->part_name[i]) ||
            !cJSON_AddNumberToObject(part, "offset", (double)at) ||
            !cJSON_AddNumberToObject(part, "bytes", (double)tb->part_bytes[i]))
            return false;
        at += tb->part_bytes[i];
    }
    return true;
}

static bool add_graph(cJSON *root, const plan *p) {
    cJSON *g = cJSON_AddArrayToObject(root, "graph");
    if (!g) return false;
    for (int32_t i = 0; i < p->n_subs; i++) {
        const plan_sublayer *s = &p->subs[i];
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(g, e)) return false;
        if (!cJSON_AddStringToObject(e, "kind", s->is_attn ? "attn" : "mlp") ||
            !cJSON_AddNumberToObject(e, "layer", s->layer))
            return false;
        if (s->has_score && !cJSON_AddNumberToObject(e, "score", (double)s->score)) return false;
        cJSON *names = cJSON_AddArrayToObject(e, "tensors");
        if (!names) return false;
        for (int32_t k = 0; k < s->count; k++) {
            cJSON *n = cJSON_CreateString(p->tensors[s->first + k].name);
            if (!n || !cJSON_AddItemToArray(names, n)) return false;
        }
    }
    return true;
}

static bool add_str_or_null(cJSON *obj, const char *key, const char *s) {
    return s ? cJSON_AddStringToObject(obj, key, s) != NULL : cJSON_AddNullToObject(obj, key) != NULL;
}

static bool add_number_or_null(cJSON *arr, float v) {
    cJSON *n = isfinite(v) ? cJSON_CreateNumber((double)v) : cJSON_CreateNull();
    return n && cJSON_AddItemToArray(arr, n);
}

/* "importance", "dropped", "calibration" and "awq" (tlm_format.h). */
static bool add_importance(cJSON *root, const plan *p) {
    const int32_t NL = p->m->hp.n_layer;
    const tlm_calib *c = p->o->calib;
    if (p->scores) {
        cJSON *imp = cJSON_AddObjectToObject(root, "importance");
        static const char *const keys[3] = {"attn", "mlp", "block"};
        for (int k = 0; imp && k < 3; k++) {
            cJSON *arr = cJSON_AddArrayToObject(imp, keys[k]);
            if (!arr) return false;
            for (int32_t il = 0; il < NL; il++)
                if (!add_number_or_null(arr, p->scores[k * NL + il])) return false;
        }
        if (!imp) return false;
    }
    if (p->n_dropped) {
        cJSON *arr = cJSON_AddArrayToObject(root, "dropped");
        if (!arr) return false;
        for (int32_t i = 0; i < p->n_dropped; i++) {
            const plan_drop *d = &p->dropped[i];
            cJSON *e = cJSON_CreateObject();
            if (!e || !cJSON_AddItemToArray(arr, e) ||
                !cJSON_AddStringToObject(e, "kind", d->is_attn ? "attn" : "mlp") ||
                !cJSON_AddNumberToObject(e, "layer", d->layer))
                return false;
            if (!(isfinite(d->score) ? cJSON_AddNumberToObject(e, "score", (double)d->score)
                                     : cJSON_AddNullToObject(e, "score")))
                return false;
        }
    }
    if (c) {
        cJSON *cal = cJSON_AddObjectToObject(root, "calibration");
        const char *text = tlm_calib_text_name(c);
        if (!cal || !add_str_or_null(cal, "text", text) ||
            !cJSON_AddNumberToObject(cal, "tokens", (double)tlm_calib_n_tokens(c)) ||
            !cJSON_AddNumberToObject(cal, "seq_len", tlm_calib_seq_len(c)))
            return false;
    }
    if (p->awq) {
        cJSON *awq = cJSON_AddObjectToObject(root, "awq"), *arr;
        if (!awq || !(arr = cJSON_AddArrayToObject(awq, "alpha"))) return false;
        for (int32_t il = 0; il < NL; il++)
            for (int k = 0; k < TLM_AWQ_N_INPUTS; k++) {
                const float a = p->alpha[il * TLM_AWQ_N_INPUTS + k];
                if (isnan(a)) continue;
                cJSON *e = cJSON_CreateObject();
                if (!e || !cJSON_AddItemToArray(arr, e) ||
                    !cJSON_AddNumberToObject(e, "layer", il) ||
                    !cJSON_AddStringToObject(e, "input", awq_input_names[k]) ||
                    !cJSON_AddNumberToObject(e, "alpha", (double)a))
                    return false;
            }
    }
    return true;
}

/* The metadata JSON (cJSON_malloc'd text) or NULL when out of memory. */
static char *build_metadata(const plan *p) {
    const struct tlm_model *m = p->m;
    const tlm_write_options *o = p->o;
    cJSON *root = cJSON_CreateObject();
    char *text = NULL;
    if (!root) return NULL;
    cJSON *src, *tens, *conv, *wide;
    if (!cJSON_AddStringToObject(root, "architecture", m->arch_name ? m->arch_name : "llama") ||
        !cJSON_AddStringToObject(root, "name", m->name ? m->name : "") ||
        !(src = cJSON_AddObjectToObject(root, "source")) ||
        !add_str_or_null(src, "file", o->source_file) ||
        !add_str_or_null(src, "format", o->source_format ? o->source_format : m->source_format) ||
        !add_hparams(root, &m->hp) ||
        !add_str_or_null(root, "chat_template", tlm_model_chat_template(m)) ||
        !add_tokenizer(root, o->tokenizer) || !(tens = cJSON_AddObjectToObject(root, "tensors")) ||
        !cJSON_AddStringToObject(tens, "token_embd", "token_embd.weight") ||
        !cJSON_AddStringToObject(tens, "output_norm", "output_norm.weight") ||
        (!m->hp.tied_embeddings && !cJSON_AddStringToObject(tens, "output", "output.weight")) ||
        !add_graph(root, p) || !(conv = cJSON_AddObjectToObject(root, "convert")) ||
        !cJSON_AddStringToObject(conv, "type", tlm_dtype_name(o->dtype)) ||
        !(wide = cJSON_AddArrayToObject(conv, "keep_wide")) ||
        !cJSON_AddStringToObject(conv, "trimlm_version", TLM_VERSION_STRING) ||
        (tlm_dtype_is_quant(o->dtype) &&
         !cJSON_AddStringToObject(conv, "quant_method", p->awq ? "awq" : "rtn")) ||
        !add_importance(root, p))
        goto done;
    for (int32_t i = 0; i < p->types.n_patterns; i++) {
        cJSON *s = cJSON_CreateString(p->types.patterns[i]);
        if (!s || !cJSON_AddItemToArray(wide, s)) goto done;
    }
    text = cJSON_PrintUnformatted(root);
done:
    cJSON_Delete(root);
    return text;
}

/* ---------------------------------------------------------- the output */

typedef struct out_file {
    const char *dst;    /* the final name, for messages */
    const char *const *inputs; /* what it may not replace (tlm_write_options) */
    size_t n_inputs;
    tlm_atomic_file file;
    uint8_t *buf;
    size_t used;
    uint64_t pos;       /* bytes written or buffered: the file offset reached */
    uint64_t total;     /* the planned file size */
    XXH3_state_t *file_hash;
    tlm_progress_fn progress;
    void *user;
    tlm_error *err;
} out_file;

static tlm_status out_flush(out_file *o) {
    tlm_status st = tlm_atomic_write(&o->file, o->buf, o->used, o->err);
    if (st) return st;
    o->used = 0;
    if (o->progress && !o->progress(o->user, "write", o->pos, o->total))
        return tlm_seterr(o->err, TLM_ERR_ARG, "%s: cancelled; nothing was written", o->dst);
    return TLM_OK;
}

/* Appends n bytes; hashed into the whole-file checksum when `hashed`. */
static tlm_status out_put(out_file *o, const void *src, size_t n, bool hashed) {
    const uint8_t *p = src;
    if (hashed) XXH3_64bits_update(o->file_hash, src, n);
    o->pos += n;
    while (n > 0) {
        size_t room = OUT_BUFFER_BYTES - o->used;
        size_t take = n < room ? n : room;
        memcpy(o->buf + o->used, p, take);
        o->used += take;
        p += take;
        n -= take;
        if (o->used == OUT_BUFFER_BYTES) {
            tlm_status st = out_flush(o);
            if (st) return st;
        }
    }
    return TLM_OK;
}

static tlm_status out_zeros(out_file *o, uint64_t n) {
    static const uint8_t zeros[TLM_DATA_ALIGN];
    while (n > 0) {
        size_t take = n < sizeof zeros ? (size_t)n : sizeof zeros;
        tlm_status st = out_put(o, zeros, take, true);
        if (st) return st;
        n -= take;
    }
    return TLM_OK;
}

static tlm_status out_pad_to(out_file *o, uint64_t offset) {
    return offset > o->pos ? out_zeros(o, offset - o->pos) : TLM_OK;
}

/* The whole size is reserved now: a full disk fails here, not at the end. */
static tlm_status out_open(out_file *o) {
    return tlm_atomic_open(&o->file, o->dst, o->inputs, o->n_inputs, 0644, o->total, o->err);
}

/* The header at offset 0, then fsync and rename. */
static tlm_status out_commit(out_file *o, const tlm_file_header *h) {
    tlm_status st = tlm_atomic_pwrite(&o->file, h, sizeof *h, 0, "the header", o->err);
    return st ? st : tlm_atomic_commit(&o->file, o->err);
}

/* A damaged source can carry NaN or infinity, whose conversion to an integer
 * quant is undefined: refuse it instead of writing garbage. */
static bool all_finite(const float *x, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

/* Activation-aware quantization of (rows, cols) into packed tiles, the
 * tiles in parallel (each is independent). */
static bool quantize_tiles_search(tlm_qtype qt, const float *w, int64_t rows, int64_t cols,
                                  const float *imp, uint8_t *dst, size_t tile) {
    const int64_t n_tiles = (rows + TLM_QROWS - 1) / TLM_QROWS;
    int ok = 1;
#pragma omp parallel for schedule(dynamic, 4) reduction(&& : ok)
    for (int64_t i = 0; i < n_tiles; i++) {
        const int64_t r0 = i * TLM_QROWS, nr = rows - r0 < TLM_QROWS ? rows - r0 : TLM_QROWS;
        ok = tlm_awq_quantize_pack(qt, w + r0 * cols, nr, cols, imp, dst + (size_t)i * tile) && ok;
    }
    return ok;
}

/* Quantizes (or copies, from a quantized source) and writes one packed
 * matrix, whole 16-row tiles at a time: the packed layout of a matrix is its
 * tiles in order, so packing it chunk by chunk gives the same bytes. */
static tlm_status write_quant_tensor(out_file *o, plan_tensor *t, uint8_t *scratch,
                                     XXH3_state_t *hash) {
    const tlm_qtype qt = (tlm_qtype)t->dtype;
    const size_t tile = tlm_qpacked_tile_bytes(qt, (int64_t)t->cols); /* <= CHUNK_BYTES */
    const uint64_t rows_per_chunk = (uint64_t)(CHUNK_BYTES / tile) * TLM_QROWS;
    for (uint64_t r = 0; r < t->rows; r += rows_per_chunk) {
        const uint64_t nr = t->rows - r < rows_per_chunk ? t->rows - r : rows_per_chunk;
        const size_t bytes = tlm_qpacked_bytes(qt, (int64_t)nr, (int64_t)t->cols);
        const uint8_t *chunk = scratch;
        if (t->qsrc)
            chunk = (const uint8_t *)t->qsrc->data + (size_t)(r / TLM_QROWS) * tile;
        else if (!all_finite(t->src + r * t->cols, nr * t->cols))
            return tlm_seterr(o->err, TLM_ERR_FORMAT,
                              "%s: tensor '%s' of the source holds NaN or infinity (rows %llu..%llu); "
                              "it cannot be quantized",
                              o->dst, t->name, (unsigned long long)r,
                              (unsigned long long)(r + nr - 1));
        else if (t->search ? !quantize_tiles_search(qt, t->src + r * t->cols, (int64_t)nr,
                                                    (int64_t)t->cols, t->imp, scratch, tile)
                           : !tlm_qquantize_pack(qt, t->src + r * t->cols, (int64_t)nr,
                                                 (int64_t)t->cols, scratch))
            return tlm_seterr(o->err, TLM_ERR_ARG, "%s: tensor '%s' cannot be quantized", o->dst,
                              t->name);
        XXH3_64bits_update(hash, chunk, bytes);
        tlm_status st = out_put(o, chunk, bytes, true);
        if (st) return st;
    }
    return TLM_OK;
}

/* Converts and writes one tensor, hashing it. */
static tlm_status write_tensor(out_file *o, plan_tensor *t, uint8_t *scratch) {
    XXH3_state_t hash;
    XXH3_64bits_reset(&hash);
    if (tlm_dtype_is_quant(t->dtype)) {
        tlm_status st = write_quant_tensor(o, t, scratch, &hash);
        t->checksum = XXH3_64bits_digest(&hash);
        return st;
    }
    const uint32_t eb = tlm_dtype_float_bytes(t->dtype);
    const uint64_t row_bytes = t->cols * eb;
    uint64_t rows_per_chunk = row_bytes >= CHUNK_BYTES ? 1 : CHUNK_BYTES / row_bytes;
    for (uint64_t r = 0; r < t->rows; r += rows_per_chunk) {
        const uint64_t nr = t->rows - r < rows_per_chunk ? t->rows - r : rows_per_chunk;
        /* one row can exceed the chunk: convert it in column pieces */
        const uint64_t n = nr * t->cols;
        const float *src = t->src + r * t->cols;
        const uint64_t piece = CHUNK_BYTES / eb;
        for (uint64_t i = 0; i < n; i += piece) {
            const size_t k = (size_t)(n - i < piece ? n - i : piece);
            convert_floats(t->dtype, src + i, scratch, k);
            XXH3_64bits_update(&hash, scratch, k * eb);
            tlm_status st = out_put(o, scratch, k * eb, true);
            if (st) return st;
        }
    }
    t->checksum = XXH3_64bits_digest(&hash);
    return TLM_OK;
}

static tlm_status write_file(plan *p, out_file *o, const char *meta, size_t meta_bytes) {
    const tlm_tokenizer_blob *tb = p->o->tokenizer;
    tlm_file_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, TLM_MAGIC, TLM_MAGIC_BYTES);
    h.version = TLM_FORMAT_VERSION;
    h.header_bytes = TLM_HEADER_BYTES;
    h.meta_offset = TLM_HEADER_BYTES;
    h.meta_bytes = meta_bytes;
    h.tok_offset = h.meta_offset + h.meta_bytes;
    for (int i = 0; i < tb->n_parts; i++) h.tok_bytes += tb->part_bytes[i];
    h.data_offset = tlm_align_up(h.tok_offset + h.tok_bytes, TLM_DATA_ALIGN);
    uint64_t at = 0;
    for (int32_t i = 0; i < p->n_tensors; i++) {
        p->tensors[i].offset = at;
        at = tlm_align_up(at + p->tensors[i].bytes, TLM_DATA_ALIGN);
    }
    h.data_bytes = at;
    h.dir_offset = h.data_offset + h.data_bytes;
    h.n_tensors = (uint32_t)p->n_tensors;
    h.file_bytes = h.dir_offset + (uint64_t)p->n_tensors * sizeof(tlm_tensor_entry);
    o->total = h.file_bytes;

    if (o->progress && !o->progress(o->user, "write", 0, o->total))
        return tlm_seterr(p->err, TLM_ERR_ARG, "%s: cancelled; nothing was written", o->dst);
    tlm_status st = out_open(o);
    if (st) return st;
    XXH3_64bits_reset(o->file_hash);
    static const uint8_t blank_header[TLM_HEADER_BYTES];
    if ((st = out_put(o, blank_header, sizeof blank_header, false)) ||
        (st = out_put(o, meta, meta_bytes, true)))
        return st;
    h.meta_checksum = XXH3_64bits(meta, meta_bytes);
    XXH3_state_t tok_hash;
    XXH3_64bits_reset(&tok_hash);
    for (int i = 0; i < tb->n_parts; i++) {
        XXH3_64bits_update(&tok_hash, tb->part_data[i], (size_t)tb->part_bytes[i]);
        if ((st = out_put(o, tb->part_data[i], (size_t)tb->part_bytes[i], true))) return st;
    }
    h.tok_checksum = XXH3_64bits_digest(&tok_hash);

    uint8_t *scratch = tlm_malloc_aligned(CHUNK_BYTES);
    if (!scratch) return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", o->dst);
    awq_layer al = {0};
    int32_t first = 0, end = 0; /* the current layer's tensors */
    for (int32_t i = 0; i < p->n_tensors && !st; i++) {
        const int32_t il = p->tensors[i].layer;
        if (il >= 0 && i >= end) { /* a layer's tensors are contiguous in the plan */
            first = i;
            end = i + 1;
            while (end < p->n_tensors && p->tensors[end].layer == il) end++;
            st = layer_enter(p, il, first, end);
            if (!st && p->awq) st = awq_prepare_layer(p, &al, il, first, end);
        }
        if (!st) st = out_pad_to(o, h.data_offset + p->tensors[i].offset);
        if (!st) st = write_tensor(o, &p->tensors[i], scratch);
        /* only now: the scaled copies in al.buf and the layer's own arrays
         * (unscaled norms, biases) are both read up to the last tensor */
        if (il >= 0 && (st || i + 1 == end)) layer_leave(p, il, first, end);
    }
    tlm_free(al.buf);
    tlm_free(scratch);
    if (st || (st = out_pad_to(o, h.dir_offset))) return st;

    XXH3_state_t dir_hash;
    XXH3_64bits_reset(&dir_hash);
    for (int32_t i = 0; i < p->n_tensors; i++) {
        const plan_tensor *t = &p->tensors[i];
        tlm_tensor_entry e;
        memset(&e, 0, sizeof e);
        snprintf(e.name, sizeof e.name, "%s", t->name);
        e.dtype = t->dtype;
        e.n_dims = t->n_dims;
        e.rows = t->rows;
        e.cols = t->cols;
        e.offset = t->offset;
        e.bytes = t->bytes;
        e.checksum = t->checksum;
        e.quant_group = tlm_dtype_is_quant(t->dtype) ? TLM_QGROUP : 0;
        XXH3_64bits_update(&dir_hash, &e, sizeof e);
        if ((st = out_put(o, &e, sizeof e, true))) return st;
    }
    h.dir_checksum = XXH3_64bits_digest(&dir_hash);
    if (o->pos != h.file_bytes)
        return tlm_seterr(p->err, TLM_ERR_IO, "%s: internal error: wrote %" PRIu64
                          " bytes of a planned %" PRIu64, o->dst, o->pos, h.file_bytes);
    if ((st = out_flush(o))) return st;
    h.file_checksum = XXH3_64bits_digest(o->file_hash);
    h.header_checksum = XXH3_64bits(&h, offsetof(tlm_file_header, header_checksum));
    return out_commit(o, &h);
}

tlm_status tlm_write_model(const struct tlm_model *m, const char *dst, const tlm_write_options *wo,
                           tlm_error *err) {
    if (!m || !dst || !*dst || !wo || !wo->tokenizer)
        return tlm_seterr(err, TLM_ERR_ARG, "tlm_write_model: missing argument");
    if (!tlm_dtype_float_bytes(wo->dtype) && !tlm_dtype_is_quant(wo->dtype))
        return tlm_seterr(err, TLM_ERR_UNSUPPORTED, "%s: tensor type %u cannot be written",
                          dst, wo->dtype);
    if ((uint64_t)m->hp.n_layer > TLM_MAX_TENSORS / 16)
        return tlm_seterr(err, TLM_ERR_ARG, "%s: too many layers (%d)", dst, m->hp.n_layer);
    plan p = {.m = m, .o = wo, .dst = dst, .err = err};
    out_file o = {.dst = dst, .inputs = wo->inputs, .n_inputs = wo->n_inputs, .file = {.fd = -1},
                  .progress = wo->progress, .user = wo->user, .err = err};
    char *meta = NULL;
    tlm_status st = plan_build(&p);
    if (!st) st = awq_choose_all(&p);
    if (!st && !(meta = build_metadata(&p)))
        st = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the metadata", dst);
    if (!st && strlen(meta) > TLM_MAX_META_BYTES)
        st = tlm_seterr(err, TLM_ERR_ARG, "%s: metadata of %zu bytes is too large", dst, strlen(meta));
    if (!st) {
        o.buf = tlm_malloc_aligned(OUT_BUFFER_BYTES);
        o.file_hash = tlm_malloc_aligned(sizeof *o.file_hash);
        if (!o.buf || !o.file_hash) st = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dst);
    }
    if (!st) st = write_file(&p, &o, meta, strlen(meta));
    if (st) tlm_atomic_discard(&o.file);
    cJSON_free(meta);
    tlm_free(o.buf);
    tlm_free(o.file_hash);
    plan_free(&p);
    return st;
}

/* ------------------------------------------------------------- convert */

tlm_convert_params tlm_convert_default_params(void) {
    return (tlm_convert_params){.type = TLM_TYPE_F16};
}

static const char *base_name(const char *path) {
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/') end--;
    size_t begin = end;
    while (begin > 0 && path[begin - 1] != '/') begin--;
    return path + begin;
}

static bool ends_with_nocase(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcasecmp(s + ls - lx, suffix) == 0;
}

/* A name whose extension says the other format: the file would be taken for
 * what it is not ("x.tlm" holding a GGUF). Other names are the caller's. */
static tlm_status check_output_name(const char *dst, bool gguf, tlm_error *err) {
    if (gguf && ends_with_nocase(dst, TLM_FILE_EXT))
        return tlm_seterr(err, TLM_ERR_ARG,
                          "%s: the output format is GGUF but the name ends in %s; name it .gguf "
                          "(or write a .tlm file)", dst, TLM_FILE_EXT);
    if (!gguf && ends_with_nocase(dst, ".gguf"))
        return tlm_seterr(err, TLM_ERR_ARG,
                          "%s: the output format is .tlm but the name ends in .gguf; name it "
                          "%s (or write a GGUF file)", dst, TLM_FILE_EXT);
    return TLM_OK;
}

static tlm_status check_convert_params(const tlm_convert_params *p, const char *dst,
                                       tlm_error *err) {
    if (p->to && strcmp(p->to, "tlm") != 0 && strcmp(p->to, "gguf") != 0)
        return tlm_seterr(err, TLM_ERR_ARG, "output format '%s' is not supported (tlm or gguf)", p->to);
    tlm_status st = check_output_name(dst, p->to && strcmp(p->to, "gguf") == 0, err);
    if (st) return st;
    if (p->type < 0 || (!tlm_dtype_float_bytes((uint32_t)p->type) && !tlm_dtype_is_quant((uint32_t)p->type)))
        return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                          "tensor type %d is not supported by convert (f32, f16, bf16, q8_g32, q4_g32)",
                          p->type);
    return TLM_OK;
}

tlm_status tlm_convert_model(const tlm_model *m, const char *src, const char *dst,
                             const tlm_convert_params *params, tlm_progress_fn progress, void *user,
                             tlm_error *err) {
    tlm_clearerr(err);
    tlm_error local;
    tlm_clearerr(&local);
    if (!m || !src || !*src || !dst || !*dst)
        return tlm_seterr(err, TLM_ERR_ARG, "tlm_convert_model: missing model, source or destination");
    tlm_convert_params p = params ? *params : tlm_convert_default_params();
    tlm_status st = check_convert_params(&p, dst, &local);
    if (!st) st = tlm_atomic_check_destination(dst, &src, 1, &local);
    /* a sublayer can only be dropped once (from the model that has it), and
     * not all of a kind */
    if (!st) {
        tlm_error drop_err;
        if ((st = tlm_drop_check(m, NULL, 0, p.drop_attn, p.drop_mlp, &drop_err)))
            tlm_seterr(&local, st, "%s: %s", src, drop_err.msg);
    }
    if (!st && p.calib && tlm_calib_n_layer(p.calib) != m->hp.n_layer)
        st = tlm_seterr(&local, TLM_ERR_ARG, "%s: the calibration is of a model of %d layers, not %d",
                        src, (int)tlm_calib_n_layer(p.calib), (int)m->hp.n_layer);
    tlm_tokenizer_blob tb;
    memset(&tb, 0, sizeof tb);
    if (!st) st = tlm_tokenizer_blob_from_source(src, &tb, &local);
    if (!st) {
        tlm_write_options wo = {.dtype = (uint32_t)p.type, .keep_wide = p.keep_wide,
                                .drop_attn = p.drop_attn, .drop_mlp = p.drop_mlp,
                                .calib = p.calib, .source_file = base_name(src),
                                .source_format = m->source_format, .inputs = &src, .n_inputs = 1,
                                .tokenizer = &tb,
                                .progress = progress, .user = user};
        if (p.to && strcmp(p.to, "gguf") == 0) st = tlm_write_gguf(m, dst, &wo, &local);
        else st = tlm_write_model(m, dst, &wo, &local);
    }
    tlm_tokenizer_blob_free(&tb);
    if (st && err) *err = local;
    return st;
}

tlm_status tlm_convert(const char *src, const char *dst, const tlm_convert_params *params,
                       tlm_progress_fn progress, void *user, tlm_error *err) {
    tlm_clearerr(err);
    tlm_error local;
    tlm_clearerr(&local);
    if (!src || !*src || !dst || !*dst)
        return tlm_seterr(err, TLM_ERR_ARG, "tlm_convert: missing source or destination");
    tlm_convert_params p = params ? *params : tlm_convert_default_params();
    tlm_status st = check_convert_params(&p, dst, &local);
    if (!st) st = tlm_atomic_check_destination(dst, &src, 1, &local);
    if (st) goto fail;
    if (progress && !progress(user, "load", 0, 1)) {
        st = tlm_seterr(&local, TLM_ERR_ARG, "%s: cancelled; nothing was written", dst);
        goto fail;
    }
    /* the writers hold one layer in f32 at a time, not the whole source */
    tlm_model *m = model_load_lazy(src, &local);
    if (!m) {
        st = local.code != TLM_OK ? local.code : TLM_ERR_FORMAT;
        goto fail;
    }
    if (progress && !progress(user, "load", 1, 1))
        st = tlm_seterr(&local, TLM_ERR_ARG, "%s: cancelled; nothing was written", dst);
    if (!st) st = tlm_convert_model(m, src, dst, &p, progress, user, &local);
    tlm_model_free(m);
fail:
    if (st && err) *err = local;
    return st;
}
