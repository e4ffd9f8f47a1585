/*
 * convert.c — `tlm_convert`: a model source into a .tlm or GGUF file, as
 * stages that each hand plain data to the next:
 *
 *   load            tlm_model_load_with(.lazy_layers): layers read on demand
 *   calibrate       tlm_calibrate -> tlm_calib (scores, activation statistics)
 *   select drops    tlm_drop_select / tlm_drop_parse_list -> tlm_drop_list
 *   plan            convert_plan_build -> convert_plan (tensors, types, kept
 *                   and removed sublayers; convert_plan.h)
 *   quantize        quantize_plan_run: activation-aware scales and bytes,
 *                   once per layer (.tlm with a calibration only)
 *   serialize       tlm_writer.c (.tlm) or gguf_writer.c (GGUF), through
 *                   out_file.h
 *
 * The caller (the CLI) runs the first three; tlm_convert_model the rest.
 */
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "atomic_file.h"
#include "error.h"
#include "gguf_writer.h"
#include "model.h"
#include "tlm_format.h"

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
    if (p->n_threads < 0 || p->n_threads > TLM_MAX_THREADS)
        return tlm_seterr(err, TLM_ERR_ARG, "convert: n_threads %d is not in 0..%d", p->n_threads,
                          TLM_MAX_THREADS);
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
    /* Neither the .tlm metadata nor the GGUF writer carries Gemma 3's
     * sliding-window pattern, local RoPE base and scales yet: refuse rather
     * than write a file that cannot be read back (or reads as another model). */
    if (!st && m->hp.arch == TLM_ARCH_GEMMA3)
        st = tlm_seterr(&local, TLM_ERR_UNSUPPORTED,
                        "%s: converting a gemma3 model is not supported yet (run it and score it "
                        "from its GGUF file)", src);
    if (!st) st = tlm_atomic_check_destination(dst, &src, 1, &local);
    /* a sublayer can only be dropped once (from the model that has it), and
     * not all of a kind */
    if (!st) {
        tlm_error drop_err;
        if ((st = tlm_drop_check(m, NULL, 0, p.drop, &drop_err)))
            tlm_seterr(&local, st, "%s: %s", src, drop_err.msg);
    }
    if (!st && p.calib && tlm_calib_n_layer(p.calib) != m->hp.n_layer)
        st = tlm_seterr(&local, TLM_ERR_ARG, "%s: the calibration is of a model of %d layers, not %d",
                        src, (int)tlm_calib_n_layer(p.calib), (int)m->hp.n_layer);
    tlm_tokenizer_blob tb;
    memset(&tb, 0, sizeof tb);
    if (!st) st = tokenizer_blob_from_source(src, &tb, &local);
    if (!st) {
        tlm_write_options wo = {.dtype = (uint32_t)p.type, .keep_wide = p.keep_wide,
                                .drop = p.drop,
                                .calib = p.calib, .source_file = base_name(src),
                                .source_format = m->source_format, .inputs = &src, .n_inputs = 1,
                                .tokenizer = &tb, .n_threads = p.n_threads,
                                .progress = progress, .user = user};
        /* the scale search (quant/awq.h) takes its thread count from the
         * calling thread's OpenMP setting: set for this call only */
        const int caller_threads = omp_get_max_threads();
        if (p.n_threads > 0) omp_set_num_threads(p.n_threads);
        if (p.to && strcmp(p.to, "gguf") == 0) st = write_gguf_file(m, dst, &wo, &local);
        else st = write_tlm_file(m, dst, &wo, &local);
        omp_set_num_threads(caller_threads);
    }
    tokenizer_blob_free(&tb);
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
