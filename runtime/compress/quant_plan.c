/*
 * quant_plan.c — the quantization stage of a conversion (convert_plan.h):
 * how each tensor's stored bytes are made, and, for an activation-aware
 * conversion, the per-layer work done once: choose the scales from the
 * calibration's statistics (quant/awq.h), fold them in, quantize, and keep
 * the layer's bytes in the spool until the writer reaches them. The .tlm
 * metadata, which precedes the tensor data, records the chosen alphas; so
 * without the spool every layer would be read and rescaled a second time.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "alloc.h"
#include "awq.h"
#include "convert_plan.h"
#include "error.h"
#include "qformat.h"

/* ------------------------------------------------------ stored bytes */

/* A damaged source can carry NaN or infinity, whose conversion to an integer
 * quant is undefined: refuse it instead of writing garbage. */
static bool all_finite(const float *x, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
}

/* The packed tiles of (rows, cols) of w into dst (tile bytes each), the
 * tiles in parallel (each is independent). */
static bool quantize_tiles(tlm_qtype qt, const float *w, int64_t rows, int64_t cols, bool search,
                           const float *imp, uint8_t *dst, size_t tile, int32_t n_threads) {
    if (!search) return tlm_qquantize_pack(qt, w, rows, cols, dst);
    const int64_t n_tiles = (rows + TLM_QROWS - 1) / TLM_QROWS;
    const int nt = n_threads > 0 ? n_threads : omp_get_max_threads();
    int ok = 1;
#pragma omp parallel for schedule(dynamic, 4) reduction(&& : ok) num_threads(nt)
    for (int64_t i = 0; i < n_tiles; i++) {
        const int64_t r0 = i * TLM_QROWS, nr = rows - r0 < TLM_QROWS ? rows - r0 : TLM_QROWS;
        ok = tlm_awq_quantize_pack(qt, w + r0 * cols, nr, cols, imp, dst + (size_t)i * tile) && ok;
    }
    return ok;
}

/* Whole 16-row tiles at a time: the packed layout of a matrix is its tiles
 * in order, so packing it chunk by chunk gives the same bytes. */
static tlm_status encode_packed(const convert_plan *p, const plan_tensor *t, const float *values,
                                uint8_t *scratch, int32_t n_threads, plan_emit_fn emit, void *ctx) {
    const tlm_qtype qt = (tlm_qtype)t->dtype;
    const size_t tile = tlm_qpacked_tile_bytes(qt, (int64_t)t->cols); /* <= CHUNK_BYTES */
    const uint64_t rows_per_chunk = (uint64_t)(TLM_CONVERT_CHUNK_BYTES / tile) * TLM_QROWS;
    for (uint64_t r = 0; r < t->rows; r += rows_per_chunk) {
        const uint64_t nr = t->rows - r < rows_per_chunk ? t->rows - r : rows_per_chunk;
        const size_t bytes = tlm_qpacked_bytes(qt, (int64_t)nr, (int64_t)t->cols);
        const uint8_t *chunk = scratch;
        if (t->packed_copy)
            chunk = (const uint8_t *)t->source->data + (size_t)(r / TLM_QROWS) * tile;
        else if (!all_finite(values + r * t->cols, nr * t->cols))
            return tlm_seterr(p->err, TLM_ERR_FORMAT,
                              "%s: tensor '%s' of the source holds NaN or infinity (rows %llu..%llu); "
                              "it cannot be quantized",
                              p->dst, t->name, (unsigned long long)r,
                              (unsigned long long)(r + nr - 1));
        else if (!quantize_tiles(qt, values + r * t->cols, (int64_t)nr, (int64_t)t->cols,
                                 t->search, t->imp, scratch, tile, n_threads))
            return tlm_seterr(p->err, TLM_ERR_ARG, "%s: tensor '%s' cannot be quantized", p->dst,
                              t->name);
        tlm_status st = emit(ctx, chunk, bytes);
        if (st) return st;
    }
    return TLM_OK;
}

tlm_status plan_encode_tensor(const convert_plan *p, const plan_tensor *t, const float *values,
                              uint8_t *scratch, int32_t n_threads, plan_emit_fn emit, void *ctx) {
    if (tlm_dtype_is_quant(t->dtype)) return encode_packed(p, t, values, scratch, n_threads, emit, ctx);
    const uint32_t eb = tlm_dtype_float_bytes(t->dtype);
    /* a row can exceed the chunk: the elements are converted in pieces */
    const uint64_t n = t->rows * t->cols, piece = TLM_CONVERT_CHUNK_BYTES / eb;
    for (uint64_t i = 0; i < n; i += piece) {
        const size_t k = (size_t)(n - i < piece ? n - i : piece);
        plan_convert_floats(t->dtype, values + i, scratch, k);
        tlm_status st = emit(ctx, scratch, k * eb);
        if (st) return st;
    }
    return TLM_OK;
}

/* ------------------------------------------ activation-aware quantization */

/* The inputs as the calibration names them, in awq.h's order. */
static const tlm_linear_input awq_inputs[TLM_AWQ_N_INPUTS] = {
    TLM_INPUT_ATTN_QKV, TLM_INPUT_ATTN_OUT, TLM_INPUT_FFN_GATE_UP, TLM_INPUT_FFN_DOWN};

static int awq_type(const plan_tensor *t) {
    return tlm_dtype_is_quant(t->dtype) ? (int)t->dtype : TLM_AWQ_FLOAT;
}

/* One layer in the making: copies of its weights with the chosen
 * per-channel scales folded in, and each matrix's input importance in the
 * scaled units. One buffer, reused layer after layer. */
typedef struct awq_layer {
    float *buf;
    size_t cap; /* floats */
} awq_layer;

/* Layer il (plan tensors [first, end), entered): copies its float matrices,
 * chooses the alphas (p->alpha) and scales the copies with
 * tlm_awq_scale_layer; values[i - first] gets each tensor's values to store
 * (a scaled copy or the source's own), and imp the importances. */
static tlm_status awq_prepare_layer(convert_plan *p, const struct tlm_calib *calib, awq_layer *al,
                                    int32_t il, int32_t first, int32_t end, const float **values) {
    const tlm_hparams *hp = &p->m->hp;
    const int64_t E = hp->n_embd, F = hp->n_ff, HD = hp->head_dim;
    const int64_t QD = (int64_t)hp->n_head * HD, KD = (int64_t)hp->n_head_kv * HD;
    for (int32_t i = first; i < end; i++) values[i - first] = tensor_f32(p->tensors[i].source);
#define T(place, slot) plan_find(p, first, end, place, slot)
#define V(t) (t ? values[t - &p->tensors[first]] : NULL)
    plan_tensor *an = T(SPEC_ATTN, ATTN_NORM), *tq = T(SPEC_ATTN, ATTN_Q),
                *tk = T(SPEC_ATTN, ATTN_K), *tv = T(SPEC_ATTN, ATTN_V),
                *tbv = T(SPEC_ATTN, ATTN_V_BIAS), *to = T(SPEC_ATTN, ATTN_OUT),
                *fn = T(SPEC_MLP, MLP_NORM), *tg = T(SPEC_MLP, MLP_GATE), *tu = T(SPEC_MLP, MLP_UP),
                *td = T(SPEC_MLP, MLP_DOWN);
    /* a sublayer copied from a quantized source cannot be rescaled */
    const bool attn = an && tq && tk && tv && to && V(an) && V(tq) && V(tk) && V(tv) && V(to) &&
                      (!tbv || V(tbv));
    const bool mlp = fn && tg && tu && td && V(fn) && V(tg) && V(tu) && V(td);
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
#define COPY(t, n) (t ? memcpy(TAKE(n), values[t - &p->tensors[first]], (size_t)(n) * sizeof(float)) : NULL)
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
        l.stat[k] = tlm_calib_act_stats(calib, il, awq_inputs[k], &n);
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
#define SET(t, v) (values[(t) - &p->tensors[first]] = (v))
    if (attn) {
        if (l.stat[TLM_AWQ_OUT]) to->imp = l.imp[TLM_AWQ_OUT];
        if (l.stat[TLM_AWQ_QKV]) tq->imp = tk->imp = tv->imp = l.imp[TLM_AWQ_QKV];
        SET(an, l.attn_norm), SET(tq, l.wq), SET(tk, l.wk), SET(tv, l.wv), SET(to, l.wo);
        if (tbv) SET(tbv, l.bv);
    }
    if (mlp) {
        if (l.stat[TLM_AWQ_DOWN]) td->imp = l.imp[TLM_AWQ_DOWN];
        if (l.stat[TLM_AWQ_GATE_UP]) tg->imp = tu->imp = l.imp[TLM_AWQ_GATE_UP];
        SET(fn, l.ffn_norm), SET(tg, l.w_gate), SET(tu, l.w_up), SET(td, l.w_down);
    }
#undef SET
#undef V
#undef T
    return TLM_OK;
}

typedef struct spool_sink {
    convert_plan *p;
    uint64_t first; /* where the tensor's first chunk went */
    bool started;
} spool_sink;

static tlm_status emit_to_spool(void *ctx, const void *bytes, size_t n) {
    spool_sink *s = ctx;
    uint64_t at;
    tlm_status st = spool_append(&s->p->spool, bytes, n, &at, s->p->err);
    if (!st && !s->started) {
        s->first = at;
        s->started = true;
    }
    return st;
}

/* The search flags, and the output head's importance; false when nothing
 * is to be quantized from floats (all copied from a quantized source). */
static tlm_status awq_mark(convert_plan *p, const struct tlm_calib *calib, bool *any) {
    const tlm_hparams *hp = &p->m->hp;
    const int64_t E = hp->n_embd;
    /* the output head: the search weighted by its input's statistics; an
     * untied embedding table (a lookup, not a product) with equal weights */
    int64_t n = 0;
    const float *st_out = tlm_calib_act_stats(calib, 0, TLM_INPUT_OUTPUT, &n);
    if (st_out && n == E) {
        if (!(p->out_imp = tlm_malloc((size_t)E * sizeof *p->out_imp)))
            return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
        tlm_awq_importance(st_out, E, p->out_imp);
    }
    const tensor_spec *head = tensor_spec_model(hp->arch, hp->tied_embeddings ? MODEL_TOK_EMBD
                                                                               : MODEL_OUTPUT);
    *any = false;
    for (int32_t i = 0; i < p->n_tensors; i++) {
        plan_tensor *t = &p->tensors[i];
        if (!tlm_dtype_is_quant(t->dtype) || t->packed_copy) continue;
        *any = t->search = true;
        if (t->spec == head) t->imp = p->out_imp;
    }
    return TLM_OK;
}

static tlm_status cancelled(convert_plan *p) {
    return tlm_seterr(p->err, TLM_ERR_ARG, "%s: cancelled; nothing was written", p->dst);
}

tlm_status quantize_plan_run(convert_plan *p, const struct tlm_calib *calib, int32_t n_threads,
                             tlm_progress_fn progress, void *user) {
    if (!calib || !tlm_dtype_is_quant(p->types.dtype)) return TLM_OK;
    const int32_t NL = p->m->hp.n_layer;
    if (!(p->alpha = tlm_malloc((size_t)NL * TLM_AWQ_N_INPUTS * sizeof *p->alpha)))
        return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
    for (int32_t i = 0; i < NL * TLM_AWQ_N_INPUTS; i++) p->alpha[i] = NAN;
    bool any = false;
    tlm_status st = awq_mark(p, calib, &any);
    if (st || !any) return st;
    p->awq = true;
    if ((st = spool_open(&p->spool, p->dst, p->err))) return st;

    /* one layer's values (a scaled copy or the source's) and the scratch */
    const float **values = tlm_calloc(SUBLAYER_MAX_SLOTS * 2, sizeof *values);
    uint8_t *scratch = tlm_malloc_aligned(TLM_CONVERT_CHUNK_BYTES);
    awq_layer al = {0};
    if (!values || !scratch) st = tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
    int32_t first = 0, end = p->n_model_tensors;
    while (!st && plan_next_layer(p, &first, &end)) {
        const int32_t il = p->tensors[first].layer;
        if (progress && !progress(user, "awq", (uint64_t)il, (uint64_t)NL)) {
            st = cancelled(p);
            break;
        }
        st = plan_layer_enter(p, il, first, end);
        if (!st) st = awq_prepare_layer(p, calib, &al, il, first, end, values);
        for (int32_t i = first; i < end && !st; i++) {
            plan_tensor *t = &p->tensors[i];
            if (t->packed_copy) continue; /* the writer copies it from the source */
            spool_sink sink = {.p = p};
            st = plan_encode_tensor(p, t, values[i - first], scratch, n_threads, emit_to_spool,
                                    &sink);
            t->spooled = !st;
            t->spool_offset = sink.first;
            t->imp = NULL; /* it pointed into al.buf */
        }
        plan_layer_leave(p, il);
    }
    if (!st && progress && !progress(user, "awq", (uint64_t)NL, (uint64_t)NL)) st = cancelled(p);
    tlm_free(al.buf);
    tlm_free(scratch);
    tlm_free(values);
    return st;
}
