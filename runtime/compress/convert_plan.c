/*
 * convert_plan.c — the plan of a conversion (convert_plan.h): the kept and
 * removed sublayers, every tensor's shape and storage type, the scores.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "convert_plan.h"
#include "error.h"
#include "f16.h"
#include "qformat.h"

uint64_t plan_stored_bytes(uint32_t dtype, uint64_t rows, uint64_t cols) {
    if (tlm_dtype_is_quant(dtype))
        return tlm_qpacked_bytes((tlm_qtype)dtype, (int64_t)rows, (int64_t)cols);
    return rows * cols * tlm_dtype_float_bytes(dtype); /* < 2^62 (hparams) */
}

void plan_convert_floats(uint32_t dtype, const float *src, void *dst, size_t n) {
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

/* The tensor of spec (of original layer il; -1 for the model's own) from
 * source. A packed source is copied when it keeps its type (re-quantizing a
 * quantized model would compound the rounding: convert from the original
 * instead). A layer tensor of a lazily loaded model has its data only once
 * the layer is entered (plan_layer_enter checks it). */
static tlm_status plan_add(convert_plan *p, const tensor_spec *spec, int32_t il,
                           const tlm_tensor *source) {
    const tlm_hparams *hp = &p->m->hp;
    char name[TLM_TENSOR_NAME_MAX];
    tensor_spec_name(spec, il, name, sizeof name);
    const bool packed = tensor_is_packed(source) && source->data;
    if (!tensor_f32(source) && !packed && !(il >= 0 && p->m->lazy))
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
    t->layer = il;
    t->n_dims = spec->rows == DIM_ONE ? 1 : 2;
    t->rows = (uint64_t)tensor_spec_dim(hp, spec->rows);
    t->cols = (uint64_t)tensor_spec_dim(hp, spec->cols);
    t->dtype = type_rules_choose(&p->types, name, t->n_dims, t->cols);
    t->packed_copy = packed;
    if (packed && t->dtype != (uint32_t)source->type)
        return tlm_seterr(p->err, TLM_ERR_UNSUPPORTED,
                          "%s: tensor '%s' of the source is stored %s and cannot be rewritten as %s "
                          "(convert from the original model instead)",
                          p->dst, name, tlm_dtype_name((uint32_t)source->type),
                          tlm_dtype_name(t->dtype));
    return TLM_OK;
}

/* The model's sublayers, each kept (its tensors as the table lists them) or
 * removed (pp->drop). */
static tlm_status plan_sublayers(convert_plan *p, const plan_params *pp) {
    const struct tlm_model *m = p->m;
    const tlm_hparams *hp = &m->hp;
    tlm_status st;
    for (int32_t i = 0; i < m->n_subs; i++) {
        const tlm_sublayer *S = &m->subs[i];
        const int32_t il = S->layer;
        const bool is_attn = S->kind == TLM_SUBLAYER_ATTN;
        const float score = p->scores ? p->scores[(is_attn ? 0 : 1) * hp->n_layer + il] : NAN;
        if (tlm_drop_list_has(pp->drop, S->kind, il)) {
            p->dropped[p->n_dropped++] = (plan_sublayer){S->kind, il, 0, 0, score};
            continue;
        }
        plan_sublayer *s = &p->kept[p->n_kept++];
        *s = (plan_sublayer){S->kind, il, p->n_tensors, 0, score};
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

tlm_status convert_plan_build(convert_plan *p, const struct tlm_model *m, const plan_params *pp,
                              const char *dst, tlm_error *err) {
    *p = (convert_plan){.m = m, .dst = dst, .err = err, .spool = {.fd = -1}};
    const tlm_hparams *hp = &m->hp;
    const int32_t NL = hp->n_layer;
    tlm_status st;
    if ((st = type_rules_init(&p->types, pp->dtype, pp->keep_wide, dst, err))) return st;
    p->kept = tlm_calloc((size_t)NL * 2 + 1, sizeof *p->kept);
    p->dropped = tlm_calloc((size_t)NL * 2 + 1, sizeof *p->dropped);
    if (!p->kept || !p->dropped) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dst);
    if (pp->calib && tlm_calib_n_layer(pp->calib) != NL)
        return tlm_seterr(err, TLM_ERR_ARG, "%s: the calibration has %d layers, the model %d", dst,
                          (int)tlm_calib_n_layer(pp->calib), (int)NL);
    if (pp->attn_score || pp->mlp_score || pp->block_score || pp->calib) {
        if (!(p->scores = tlm_malloc((size_t)NL * 3 * sizeof *p->scores)))
            return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dst);
        const float *given[3] = {pp->attn_score, pp->mlp_score, pp->block_score};
        static const tlm_sublayer_kind kinds[3] = {TLM_SUBLAYER_ATTN, TLM_SUBLAYER_MLP,
                                                   TLM_SUBLAYER_BLOCK};
        for (int k = 0; k < 3; k++)
            for (int32_t il = 0; il < NL; il++)
                p->scores[k * NL + il] = given[k]   ? given[k][il]
                                         : pp->calib ? tlm_calib_score(pp->calib, kinds[k], il)
                                                     : NAN;
    }
    if ((st = plan_add(p, tensor_spec_model(hp->arch, MODEL_TOK_EMBD), -1, &m->tok_embd)) ||
        (st = plan_add(p, tensor_spec_model(hp->arch, MODEL_OUT_NORM), -1, &m->out_norm)))
        return st;
    if (!hp->tied_embeddings &&
        (st = plan_add(p, tensor_spec_model(hp->arch, MODEL_OUTPUT), -1, &m->output)))
        return st;
    p->n_model_tensors = p->n_tensors;
    return plan_sublayers(p, pp);
}

void convert_plan_free(convert_plan *p) {
    tlm_free(p->tensors);
    tlm_free(p->kept);
    tlm_free(p->dropped);
    tlm_free(p->scores);
    tlm_free(p->alpha);
    tlm_free(p->out_imp);
    type_rules_free(&p->types);
    spool_close(&p->spool);
    memset(p, 0, sizeof *p);
    p->spool.fd = -1;
}

plan_tensor *plan_find(convert_plan *p, int32_t first, int32_t end, spec_place place, int slot) {
    for (int32_t i = first; i < end; i++)
        if (p->tensors[i].spec->place == place && p->tensors[i].spec->slot == slot)
            return &p->tensors[i];
    return NULL;
}

bool plan_next_layer(const convert_plan *p, int32_t *first, int32_t *end) {
    if (*end >= p->n_tensors) return false;
    *first = *end;
    const int32_t il = p->tensors[*first].layer;
    int32_t e = *first + 1;
    while (e < p->n_tensors && p->tensors[e].layer == il) e++;
    *end = e;
    return true;
}

tlm_status plan_layer_enter(convert_plan *p, int32_t il, int32_t first, int32_t end) {
    tlm_status st = model_layer_materialize(p->m, il, p->err);
    if (st) return st;
    for (int32_t i = first; i < end; i++) {
        const plan_tensor *t = &p->tensors[i];
        if (!tensor_f32(t->source) && !t->packed_copy) /* the loaders record every tensor
                                                          of a present sublayer */
            return tlm_seterr(p->err, TLM_ERR_ARG, "%s: the model has no tensor '%s'", p->dst,
                              t->name);
    }
    return TLM_OK;
}

void plan_layer_leave(convert_plan *p, int32_t il) { model_layer_release(p->m, il); }

plan_params plan_params_of(const tlm_write_options *wo) {
    return (plan_params){.dtype = wo->dtype, .keep_wide = wo->keep_wide,
                         .drop = wo->drop,
                         .attn_score = wo->attn_score, .mlp_score = wo->mlp_score,
                         .block_score = wo->block_score, .calib = wo->calib};
}
