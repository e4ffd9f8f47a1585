/*
 * tlm_writer.c — the serialize stage of `convert` for trimlm's own file
 * (.tlm, layout in tlm_format.h): the plan (convert_plan.h) laid out as the
 * metadata, the tokenizer, every tensor's stored bytes and the directory.
 *
 * The whole file is planned first (every tensor's type, offset and size), so
 * the output's size is known before the first byte and reserved (out_file.h).
 * Bytes stream into a temporary file while XXH3 hashes them; the header
 * (offsets and checksums) is written last, at offset 0, and the file is
 * fsync'd and renamed onto the destination.
 *
 * A tensor's bytes come from the spool when the quantization stage made
 * them (activation-aware: the layer was read once, there), else they are
 * made here from the source, one lazily loaded layer at a time: each layer
 * is materialised around its turn and released after, so the peak is one
 * layer, not the model.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "awq.h"
#include "convert_plan.h"
#include "error.h"
#include "model.h"
#include "out_file.h"
#include "tlm_format.h"

/* The inputs' names in the metadata (tlm_format.h), in awq.h's order. */
static const char *const awq_input_names[TLM_AWQ_N_INPUTS] = {"attn_qkv", "attn_out", "ffn_gate_up",
                                                              "ffn_down"};

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

static bool add_graph(cJSON *root, const convert_plan *p) {
    cJSON *g = cJSON_AddArrayToObject(root, "graph");
    if (!g) return false;
    for (int32_t i = 0; i < p->n_kept; i++) {
        const plan_sublayer *s = &p->kept[i];
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(g, e)) return false;
        if (!cJSON_AddStringToObject(e, "kind", s->kind == TLM_SUBLAYER_ATTN ? "attn" : "mlp") ||
            !cJSON_AddNumberToObject(e, "layer", s->layer))
            return false;
        if (isfinite(s->score) && !cJSON_AddNumberToObject(e, "score", (double)s->score))
            return false;
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
static bool add_importance(cJSON *root, const convert_plan *p, const tlm_calib *c) {
    const int32_t NL = p->m->hp.n_layer;
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
            const plan_sublayer *d = &p->dropped[i];
            cJSON *e = cJSON_CreateObject();
            if (!e || !cJSON_AddItemToArray(arr, e) ||
                !cJSON_AddStringToObject(e, "kind", d->kind == TLM_SUBLAYER_ATTN ? "attn" : "mlp") ||
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
static char *build_metadata(const convert_plan *p, const tlm_write_options *o) {
    const struct tlm_model *m = p->m;
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
        !add_importance(root, p, o->calib))
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

/* ------------------------------------------------------------ the data */

typedef struct tlm_sink {
    out_file *o;
    XXH3_state_t *hash; /* the tensor's checksum */
} tlm_sink;

static tlm_status emit_to_file(void *ctx, const void *bytes, size_t n) {
    tlm_sink *s = ctx;
    XXH3_64bits_update(s->hash, bytes, n);
    return out_file_put(s->o, bytes, n);
}

/* Copies a tensor's bytes from the spool, chunk by chunk. */
static tlm_status copy_spooled(const convert_plan *p, const plan_tensor *t, uint64_t bytes,
                               uint8_t *scratch, tlm_sink *sink) {
    for (uint64_t at = 0; at < bytes; at += TLM_CONVERT_CHUNK_BYTES) {
        const size_t n = (size_t)(bytes - at < TLM_CONVERT_CHUNK_BYTES ? bytes - at
                                                                        : TLM_CONVERT_CHUNK_BYTES);
        tlm_status st = spool_read(&p->spool, t->spool_offset + at, scratch, n, p->err);
        if (st || (st = emit_to_file(sink, scratch, n))) return st;
    }
    return TLM_OK;
}

/* Where each tensor lies (from data_offset), and its checksum once written. */
typedef struct tlm_layout {
    uint64_t *offset, *bytes, *checksum; /* (n_tensors) each */
} tlm_layout;

/* Writes tensor i, hashing it. */
static tlm_status write_tensor(const convert_plan *p, const tlm_layout *lay, int32_t i, out_file *o,
                               uint8_t *scratch, int32_t n_threads) {
    const plan_tensor *t = &p->tensors[i];
    XXH3_state_t hash;
    XXH3_64bits_reset(&hash);
    tlm_sink sink = {o, &hash};
    tlm_status st = t->spooled ? copy_spooled(p, t, lay->bytes[i], scratch, &sink)
                               : plan_encode_tensor(p, t, tensor_f32(t->source), scratch,
                                                    n_threads, emit_to_file, &sink);
    lay->checksum[i] = XXH3_64bits_digest(&hash);
    return st;
}

static tlm_status write_file(convert_plan *p, const tlm_write_options *wo, const tlm_layout *lay,
                             out_file *o, const char *meta, size_t meta_bytes) {
    const tlm_tokenizer_blob *tb = wo->tokenizer;
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
        lay->offset[i] = at;
        lay->bytes[i] = plan_stored_bytes(p->tensors[i].dtype, p->tensors[i].rows,
                                          p->tensors[i].cols);
        at = tlm_align_up(at + lay->bytes[i], TLM_DATA_ALIGN);
    }
    h.data_bytes = at;
    h.dir_offset = h.data_offset + h.data_bytes;
    h.n_tensors = (uint32_t)p->n_tensors;
    h.file_bytes = h.dir_offset + (uint64_t)p->n_tensors * sizeof(tlm_tensor_entry);

    tlm_status st = out_file_open(o, h.file_bytes);
    if (st) return st;
    static const uint8_t blank_header[TLM_HEADER_BYTES];
    if ((st = out_file_put_unhashed(o, blank_header, sizeof blank_header)) ||
        (st = out_file_put(o, meta, meta_bytes)))
        return st;
    h.meta_checksum = XXH3_64bits(meta, meta_bytes);
    XXH3_state_t tok_hash;
    XXH3_64bits_reset(&tok_hash);
    for (int i = 0; i < tb->n_parts; i++) {
        XXH3_64bits_update(&tok_hash, tb->part_data[i], (size_t)tb->part_bytes[i]);
        if ((st = out_file_put(o, tb->part_data[i], (size_t)tb->part_bytes[i]))) return st;
    }
    h.tok_checksum = XXH3_64bits_digest(&tok_hash);

    uint8_t *scratch = tlm_malloc_aligned(TLM_CONVERT_CHUNK_BYTES);
    if (!scratch) return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", o->dst);
    for (int32_t i = 0; i < p->n_model_tensors && !st; i++)
        if (!(st = out_file_pad_to(o, h.data_offset + lay->offset[i])))
            st = write_tensor(p, lay, i, o, scratch, wo->n_threads);
    int32_t first = 0, end = p->n_model_tensors;
    while (!st && plan_next_layer(p, &first, &end)) {
        const int32_t il = p->tensors[first].layer;
        /* a layer the quantization stage spooled is not read again */
        bool read = false;
        for (int32_t i = first; i < end; i++)
            read |= !p->tensors[i].spooled && !p->tensors[i].packed_copy;
        if (read) st = plan_layer_enter(p, il, first, end);
        for (int32_t i = first; i < end && !st; i++)
            if (!(st = out_file_pad_to(o, h.data_offset + lay->offset[i])))
                st = write_tensor(p, lay, i, o, scratch, wo->n_threads);
        if (read) plan_layer_leave(p, il);
    }
    tlm_free(scratch);
    if (st || (st = out_file_pad_to(o, h.dir_offset))) return st;

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
        e.offset = lay->offset[i];
        e.bytes = lay->bytes[i];
        e.checksum = lay->checksum[i];
        e.quant_group = tlm_dtype_is_quant(t->dtype) ? TLM_QGROUP : 0;
        XXH3_64bits_update(&dir_hash, &e, sizeof e);
        if ((st = out_file_put(o, &e, sizeof e))) return st;
    }
    h.dir_checksum = XXH3_64bits_digest(&dir_hash);
    if ((st = out_file_finish(o))) return st;
    h.file_checksum = XXH3_64bits_digest(o->hash);
    h.header_checksum = XXH3_64bits(&h, offsetof(tlm_file_header, header_checksum));
    if ((st = out_file_pwrite(o, &h, sizeof h, 0, "the header"))) return st;
    return out_file_commit(o);
}

/* The serialize stage: the planned (and quantized) model into dst. */
static tlm_status serialize(convert_plan *p, const tlm_write_options *wo, tlm_error *err) {
    const char *dst = p->dst;
    tlm_status st = TLM_OK;
    char *meta = build_metadata(p, wo);
    if (!meta) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the metadata", dst);
    tlm_layout lay = {0};
    out_file o = {.file = {.fd = -1}};
    if (strlen(meta) > TLM_MAX_META_BYTES)
        st = tlm_seterr(err, TLM_ERR_ARG, "%s: metadata of %zu bytes is too large", dst, strlen(meta));
    if (!st) {
        lay.offset = tlm_calloc((size_t)p->n_tensors, sizeof *lay.offset);
        lay.bytes = tlm_calloc((size_t)p->n_tensors, sizeof *lay.bytes);
        lay.checksum = tlm_calloc((size_t)p->n_tensors, sizeof *lay.checksum);
        if (!lay.offset || !lay.bytes || !lay.checksum)
            st = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dst);
    }
    if (!st) st = out_file_init(&o, dst, wo->inputs, wo->n_inputs, true, wo->progress, wo->user, err);
    if (!st) st = write_file(p, wo, &lay, &o, meta, strlen(meta));
    out_file_close(&o);
    cJSON_free(meta);
    tlm_free(lay.offset);
    tlm_free(lay.bytes);
    tlm_free(lay.checksum);
    return st;
}

/* ----------------------------------------------------------- the stages */

tlm_status write_tlm_file(const struct tlm_model *m, const char *dst, const tlm_write_options *wo,
                           tlm_error *err) {
    if (!m || !dst || !*dst || !wo || !wo->tokenizer)
        return tlm_seterr(err, TLM_ERR_ARG, "write_tlm_file: missing argument");
    if (!tlm_dtype_float_bytes(wo->dtype) && !tlm_dtype_is_quant(wo->dtype))
        return tlm_seterr(err, TLM_ERR_UNSUPPORTED, "%s: tensor type %u cannot be written",
                          dst, wo->dtype);
    if ((uint64_t)m->hp.n_layer > TLM_MAX_TENSORS / 16)
        return tlm_seterr(err, TLM_ERR_ARG, "%s: too many layers (%d)", dst, m->hp.n_layer);
    const plan_params pp = plan_params_of(wo);
    convert_plan p;
    tlm_status st = convert_plan_build(&p, m, &pp, dst, err);
    if (!st) st = type_rules_check_used(&p.types, err);
    if (!st) st = quantize_plan_run(&p, wo->calib, wo->n_threads, wo->progress, wo->user);
    if (!st) st = serialize(&p, wo, err);
    convert_plan_free(&p);
    return st;
}
