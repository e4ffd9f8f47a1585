/*
 * model_gguf.c — builds a tlm_model from a GGUF file: hyper-parameters from
 * the metadata, the weights, the tokenizer from the tokenizer.ggml.* metadata.
 * Weights (model_load_mode): by default each matrix whose type the kernels
 * compute on (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, F16, BF16) stays in
 * the read-only mapping of the file, which the model keeps; vectors (norms,
 * biases) and other types are widened to f32. MODEL_LOAD_F32 (or the
 * environment variable TRIMLM_GGUF_F32=1) widens everything, as the
 * converter needs; a lazy load (model.h) converts the layers later, from an
 * open descriptor.
 * Architectures: llama, qwen2, and deci (llama.cpp's form for models whose
 * layers may lack attention or MLP, which `trimlm convert --to gguf` writes
 * for pruned models; runtime/io/gguf_writer.h): its per-layer arrays say which
 * sublayers the model's list gets.
 *
 * GGUF stores a matrix with ne = [in, out]: out rows of in contiguous values,
 * which is the row-major (out, in) layout of model.h, so rows are converted
 * one by one in place.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "ggml_types.h"
#include "gguf.h"
#include "kernels.h"
#include "model.h"
#include "tensor_spec.h"

#define ROWS_PER_THREAD_MIN 64 /* below this a tensor is converted on one thread */

/* --------------------------------------------------------- metadata */

typedef struct gguf_loader {
    gguf_file *f;
    const char *path;
    const char *arch; /* "llama", "qwen2" or "deci", the metadata key prefix */
    tlm_error *err;
    /* per layer (n_layer): which sublayers the file holds. "deci" files
     * (llama.cpp's form for models whose layers may lack attention or MLP,
     * as trimlm exports pruned models) say so per layer; others hold all. */
    bool *has_attn, *has_mlp;
    bool *has_bias; /* per layer: q/k/v biases present (known before conversion) */
    bool lazy;      /* record the layers' tensors in m->lazy instead of converting them */
    bool in_place;  /* matrices of a type with kernels point into the mapping */
    int32_t file;   /* the file's index in m->lazy */
} gguf_loader;

/* Reads "<arch>.<suffix>" as a non-negative int32. Absent: *out = dflt when
 * !required. Present but not an integer (per-layer arrays included) or out of
 * range is an error naming the key. */
static tlm_status read_count(const gguf_loader *ld, const char *suffix, bool required,
                             int32_t dflt, int32_t *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", ld->arch, suffix);
    const gguf_kv *kv = gguf_find_kv(ld->f, key);
    if (!kv) {
        if (required)
            return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: missing metadata '%s'", ld->path, key);
        *out = dflt;
        return TLM_OK;
    }
    if (kv->type == GGUF_VT_ARRAY)
        return tlm_seterr(ld->err, TLM_ERR_UNSUPPORTED,
                          "%s: metadata '%s' is a per-layer array, which is not supported",
                          ld->path, key);
    int64_t v;
    if (!gguf_get_i64(ld->f, key, &v))
        return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: metadata '%s' must be an integer",
                          ld->path, key);
    if (v < 0 || v > INT32_MAX)
        return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: metadata '%s' = %" PRId64 " is out of range",
                          ld->path, key, v);
    *out = (int32_t)v;
    return TLM_OK;
}

/* Reads "<arch>.<suffix>" as one count for every layer or as an array of
 * n_layer counts (deci: 0 = the layer lacks that part) into per_layer.
 * Absent: dflt (n_layer values) when given, else an error. */
static tlm_status read_layer_counts(const gguf_loader *ld, const char *suffix, int32_t n_layer,
                                    const int32_t *dflt, int32_t *per_layer) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", ld->arch, suffix);
    const gguf_kv *kv = gguf_find_kv(ld->f, key);
    if (!kv && dflt) {
        memcpy(per_layer, dflt, (size_t)n_layer * sizeof *per_layer);
        return TLM_OK;
    }
    if (kv && kv->type == GGUF_VT_ARRAY) {
        if ((kv->arr_type != GGUF_VT_INT32 && kv->arr_type != GGUF_VT_UINT32) ||
            kv->arr_n != (uint64_t)n_layer)
            return tlm_seterr(ld->err, TLM_ERR_FORMAT,
                              "%s: metadata '%s' must be %d 32-bit integers (one per layer)",
                              ld->path, key, (int)n_layer);
        for (int32_t il = 0; il < n_layer; il++) {
            uint32_t v;
            memcpy(&v, kv->data + 4 * (size_t)il, 4);
            if (v > INT32_MAX)
                return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: metadata '%s'[%d] is out of range",
                                  ld->path, key, (int)il);
            per_layer[il] = (int32_t)v;
        }
        return TLM_OK;
    }
    int32_t v;
    tlm_status st = read_count(ld, suffix, true, 0, &v);
    for (int32_t il = 0; !st && il < n_layer; il++) per_layer[il] = v;
    return st;
}

/* The value every layer that has the part shares (layers of 0 lack it);
 * 0 when no layer has it. */
static tlm_status common_count(const gguf_loader *ld, const char *what, const int32_t *per_layer,
                               int32_t n_layer, int32_t *out) {
    *out = 0;
    for (int32_t il = 0; il < n_layer; il++) {
        if (per_layer[il] == 0) continue;
        if (*out && per_layer[il] != *out)
            return tlm_seterr(ld->err, TLM_ERR_UNSUPPORTED,
                              "%s: layers of different %s (%d in layer %d, %d before) are not "
                              "supported", ld->path, what, per_layer[il], (int)il, *out);
        *out = per_layer[il];
    }
    return TLM_OK;
}

/* deci: per-layer head counts and MLP widths; a layer with 0 heads has no
 * attention, one with width 0 (or named in trimlm.removed_mlp, the zero
 * placeholder trimlm's exporter writes) no MLP. */
static tlm_status read_deci_layers(gguf_loader *ld, tlm_hparams *hp) {
    const int32_t NL = hp->n_layer;
    if (NL <= 0 || NL > 1 << 16)
        return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: block_count %d is out of range", ld->path,
                          (int)NL);
    int32_t *arr = tlm_malloc((size_t)NL * 3 * sizeof *arr);
    ld->has_attn = tlm_calloc((size_t)NL, sizeof *ld->has_attn);
    ld->has_mlp = tlm_calloc((size_t)NL, sizeof *ld->has_mlp);
    if (!arr || !ld->has_attn || !ld->has_mlp) {
        tlm_free(arr);
        return tlm_seterr(ld->err, TLM_ERR_NOMEM, "%s: out of memory", ld->path);
    }
    int32_t *ff = arr, *heads = arr + NL, *heads_kv = arr + 2 * NL;
    tlm_status st;
    if ((st = read_layer_counts(ld, "feed_forward_length", NL, NULL, ff)) ||
        (st = read_layer_counts(ld, "attention.head_count", NL, NULL, heads)) ||
        (st = read_layer_counts(ld, "attention.head_count_kv", NL, heads, heads_kv)))
        goto done;
    const gguf_kv *removed = gguf_find_kv(ld->f, "trimlm.removed_mlp");
    if (removed && (removed->type != GGUF_VT_ARRAY || removed->arr_type != GGUF_VT_BOOL ||
                    removed->arr_n != (uint64_t)NL)) {
        st = tlm_seterr(ld->err, TLM_ERR_FORMAT,
                        "%s: metadata 'trimlm.removed_mlp' must be %d booleans", ld->path, (int)NL);
        goto done;
    }
    for (int32_t il = 0; il < NL; il++) {
        if (heads[il] > 0 && heads_kv[il] == 0) {
            st = tlm_seterr(ld->err, TLM_ERR_UNSUPPORTED,
                            "%s: layer %d has attention without key/value heads (deci \"linear "
                            "attention\"), which is not supported", ld->path, (int)il);
            goto done;
        }
        ld->has_attn[il] = heads[il] > 0;
        ld->has_mlp[il] = ff[il] > 0 && !(removed && removed->data[il]);
        if (!ld->has_attn[il]) heads_kv[il] = 0;
        if (!ld->has_mlp[il]) ff[il] = 0;
    }
    if ((st = common_count(ld, "MLP widths", ff, NL, &hp->n_ff)) ||
        (st = common_count(ld, "head counts", heads, NL, &hp->n_head)) ||
        (st = common_count(ld, "key/value head counts", heads_kv, NL, &hp->n_head_kv)))
        goto done;
    if (!hp->n_head || !hp->n_ff)
        st = tlm_seterr(ld->err, TLM_ERR_UNSUPPORTED,
                        "%s: no layer has %s; such a model is not supported", ld->path,
                        hp->n_head ? "an MLP" : "attention");
done:
    tlm_free(arr);
    return st;
}

/* Reads "<arch>.<suffix>" as a float; absent: dflt when !required. */
static tlm_status read_float(const gguf_loader *ld, const char *suffix, bool required,
                             float dflt, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", ld->arch, suffix);
    if (!gguf_find_kv(ld->f, key)) {
        if (required)
            return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: missing metadata '%s'", ld->path, key);
        *out = dflt;
        return TLM_OK;
    }
    if (!gguf_get_f32(ld->f, key, out))
        return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: metadata '%s' must be a number", ld->path,
                          key);
    return TLM_OK;
}

static tlm_status read_rope_scaling(const gguf_loader *ld, tlm_hparams *hp) {
    char key[128];
    gguf_str type = {"linear", 6}; /* the GGUF default when only a factor is given */
    snprintf(key, sizeof key, "%s.rope.scaling.type", ld->arch);
    if (gguf_find_kv(ld->f, key) && !gguf_get_str(ld->f, key, &type))
        return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: metadata '%s' must be a string", ld->path,
                          key);
    float factor = 1.0f;
    tlm_status st = read_float(ld, "rope.scaling.factor", false, 1.0f, &factor);
    if (st == TLM_OK && factor == 1.0f) st = read_float(ld, "rope.scale_linear", false, 1.0f, &factor);
    if (st != TLM_OK) return st;

    hp->rope_scaling = TLM_ROPE_SCALING_NONE;
    hp->rope_factor = 1.0f;
    if (gguf_str_eq(type, "none")) return TLM_OK;
    if (!gguf_str_eq(type, "linear")) {
        char shown[64];
        snprintf(shown, sizeof shown, "%.*s", (int)(type.len < 40 ? type.len : 40), type.ptr);
        return tlm_seterr(ld->err, TLM_ERR_UNSUPPORTED,
                          "%s: rope scaling type '%s' is not supported (supported: none, linear)",
                          ld->path, shown);
    }
    if (factor != 1.0f && factor != 0.0f) { /* 0 is how some writers spell "unset" */
        hp->rope_scaling = TLM_ROPE_SCALING_LINEAR;
        hp->rope_factor = factor;
    }
    return TLM_OK;
}

/* Fills hp from the metadata; n_vocab comes from the token embedding. */
/* Gemma 3's attention pattern and scales. llama.cpp's files give the window
 * and may give the rest; what they leave out is what Gemma 3 fixes: every
 * 6th layer global, base 10,000 for the local layers' RoPE, scores scaled
 * by 1/sqrt(head_dim) (query_pre_attn_scalar = head_dim, as in every Gemma
 * 3 but the 27B, whose files say attention.scale), no soft-capping. */
static tlm_status read_gemma3_hparams(const gguf_loader *ld, tlm_hparams *hp) {
    tlm_status st;
    if ((st = read_count(ld, "attention.sliding_window", true, 0, &hp->sliding_window)) ||
        (st = read_count(ld, "attention.sliding_window_pattern", false, 6, &hp->swa_period)) ||
        (st = read_float(ld, "rope.freq_base_swa", false, 10000.0f, &hp->rope_theta_local)) ||
        (st = read_float(ld, "attention.scale", false, 0.0f, &hp->attn_scale)) ||
        (st = read_float(ld, "final_logit_softcapping", false, 0.0f, &hp->logit_softcap)))
        return st;
    if (hp->sliding_window < 1 || hp->swa_period < 1 || !(hp->rope_theta_local > 0) ||
        !(hp->attn_scale >= 0) || !(hp->logit_softcap >= 0) || !isfinite(hp->logit_softcap) ||
        !isfinite(hp->attn_scale) || !isfinite(hp->rope_theta_local))
        return tlm_seterr(ld->err, TLM_ERR_FORMAT,
                          "%s: gemma3 attention metadata out of range (sliding window %d, pattern %d, "
                          "local RoPE base %g, scale %g, soft-cap %g)",
                          ld->path, hp->sliding_window, hp->swa_period, (double)hp->rope_theta_local,
                          (double)hp->attn_scale, (double)hp->logit_softcap);
    return TLM_OK;
}

static tlm_status read_hparams(gguf_loader *ld, tlm_hparams *hp) {
    tlm_status st;
    memset(hp, 0, sizeof *hp);
    const bool deci = strcmp(ld->arch, "deci") == 0;
    const bool gemma3 = strcmp(ld->arch, "gemma3") == 0;
    hp->arch = strcmp(ld->arch, "qwen2") == 0 ? TLM_ARCH_QWEN2 : gemma3 ? TLM_ARCH_GEMMA3 : TLM_ARCH_LLAMA;
    hp->rope_style = hp->arch == TLM_ARCH_LLAMA ? TLM_ROPE_NORM : TLM_ROPE_NEOX;
    hp->qkv_bias = hp->arch == TLM_ARCH_QWEN2;
    if ((st = read_count(ld, "block_count", true, 0, &hp->n_layer)) ||
        (st = read_count(ld, "embedding_length", true, 0, &hp->n_embd)))
        return st;
    if (deci) {
        if ((st = read_deci_layers(ld, hp))) return st;
    } else if ((st = read_count(ld, "feed_forward_length", true, 0, &hp->n_ff)) ||
               (st = read_count(ld, "attention.head_count", true, 0, &hp->n_head)) ||
               (st = read_count(ld, "attention.head_count_kv", false, hp->n_head, &hp->n_head_kv))) {
        return st;
    }
    if ((st = read_count(ld, "attention.key_length", false,
                         hp->n_head > 0 ? hp->n_embd / hp->n_head : 0, &hp->head_dim)) ||
        (st = read_count(ld, "context_length", true, 0, &hp->n_ctx_train)) ||
        (st = read_count(ld, "rope.dimension_count", false, hp->head_dim, &hp->rope_dim)) ||
        (st = read_float(ld, "attention.layer_norm_rms_epsilon", true, 0, &hp->rms_eps)) ||
        (st = read_float(ld, "rope.freq_base", false, 10000.0f, &hp->rope_theta)) ||
        (st = read_rope_scaling(ld, hp)))
        return st;
    int32_t value_len;
    if ((st = read_count(ld, "attention.value_length", false, hp->head_dim, &value_len))) return st;
    if (value_len != hp->head_dim)
        return tlm_seterr(ld->err, TLM_ERR_UNSUPPORTED,
                          "%s: attention value length %d differs from key length %d (not supported)",
                          ld->path, value_len, hp->head_dim);
    if (gemma3 && (st = read_gemma3_hparams(ld, hp))) return st;

    const gguf_tensor *emb = gguf_find_tensor(ld->f, "token_embd.weight");
    if (!emb)
        return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: missing tensor 'token_embd.weight'",
                          ld->path);
    if (emb->n_dims != 2 || emb->ne[1] > INT32_MAX)
        return tlm_seterr(ld->err, TLM_ERR_FORMAT,
                          "%s: tensor 'token_embd.weight' is not a (n_vocab, n_embd) matrix",
                          ld->path);
    hp->n_vocab = (int32_t)emb->ne[1];
    return TLM_OK;
}

/* ------------------------------------------------- Llama 3 RoPE factors */

/* Llama 3.x GGUF files carry their RoPE scaling as a tensor, rope_freqs.weight:
 * rope_dim/2 divisors of the base frequencies, instead of the parameters that
 * produced them. The runtime takes the parameters (model.h), so they are
 * recovered by matching the divisors against the Llama 3.1 rule for the
 * parameter sets published models use; anything else is refused rather than
 * silently ignored. */

#define ROPE_FREQS_MAX (1024 / 2) /* rope_dim <= head_dim <= 1024 (model.c) */
#define ROPE_FREQS_REL_TOL 1e-4   /* f32 storage of values computed in f32/f64 */

static bool llama3_matches(const float *div, int32_t half, const tlm_hparams *hp, double factor,
                           double lo, double hi, double orig) {
    for (int32_t j = 0; j < half; j++) {
        const double freq = pow((double)hp->rope_theta, -2.0 * j / (double)hp->rope_dim);
        const double want = model_llama3_rope_divisor(freq, factor, lo, hi, orig);
        if (!(fabs((double)div[j] - want) <= ROPE_FREQS_REL_TOL * want)) return false;
    }
    return true;
}

static tlm_status read_rope_freqs(const gguf_loader *ld, tlm_hparams *hp) {
    const gguf_tensor *t = gguf_find_tensor(ld->f, "rope_freqs.weight");
    if (!t) return TLM_OK;
    const int32_t half = hp->rope_dim / 2;
    if (t->ne[0] != (uint64_t)half || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1 ||
        half > ROPE_FREQS_MAX || !ggml_can_dequantize(t->type))
        return tlm_seterr(ld->err, TLM_ERR_FORMAT,
                          "%s: tensor 'rope_freqs.weight' must be %d numbers (rope dimension / 2)",
                          ld->path, half);
    if (hp->rope_scaling != TLM_ROPE_SCALING_NONE)
        return tlm_seterr(ld->err, TLM_ERR_UNSUPPORTED,
                          "%s: RoPE scaling given both as metadata and as 'rope_freqs.weight'",
                          ld->path);
    float div[ROPE_FREQS_MAX];
    ggml_dequantize_row(t->type, t->data, div, half);
    float factor = 1.0f;
    for (int32_t j = 0; j < half; j++)
        if (div[j] > factor) factor = div[j];
    static const double origs[] = {8192, 4096, 16384, 32768, 2048, 65536, 131072};
    static const double los[] = {1, 2};
    static const double his[] = {4, 8, 2};
    for (size_t o = 0; o < sizeof origs / sizeof *origs; o++)
        for (size_t l = 0; l < sizeof los / sizeof *los; l++)
            for (size_t h = 0; h < sizeof his / sizeof *his; h++) {
                if (!llama3_matches(div, half, hp, factor, los[l], his[h], origs[o])) continue;
                if (factor == 1.0f) return TLM_OK; /* all ones: no scaling */
                hp->rope_scaling = TLM_ROPE_SCALING_LLAMA3;
                hp->rope_factor = factor;
                hp->rope_low_freq_factor = (float)los[l];
                hp->rope_high_freq_factor = (float)his[h];
                hp->rope_orig_ctx = (int32_t)origs[o];
                return TLM_OK;
            }
    return tlm_seterr(ld->err, TLM_ERR_UNSUPPORTED,
                      "%s: tensor 'rope_freqs.weight' does not follow the Llama 3 RoPE scaling rule "
                      "(other per-frequency factors are not supported)", ld->path);
}

/* ------------------------------------------------------------ tensors */

static void format_shape(char *buf, size_t cap, uint32_t n_dims, const uint64_t *ne) {
    size_t at = 0;
    at += (size_t)snprintf(buf + at, cap - at, "[");
    for (uint32_t d = 0; d < n_dims && at < cap; d++)
        at += (size_t)snprintf(buf + at, cap - at, d ? ", %" PRIu64 : "%" PRIu64, ne[d]);
    if (at < cap) snprintf(buf + at, cap - at, "]");
}

/* Dimensions that count: trailing 1s beyond the first are dropped, so
 * [576, 1] and [576] both mean a vector of 576. */
static uint32_t effective_dims(uint32_t n_dims, const uint64_t *ne) {
    while (n_dims > 1 && ne[n_dims - 1] == 1) n_dims--;
    return n_dims;
}

/* Finds tensor `name` and checks it has the expected GGUF shape ne = [cols]
 * (rows == 0) or [cols, rows] and a type that converts. A tensor that is
 * absent gives *out = NULL when !required. */
static tlm_status find_weight(const gguf_loader *ld, const char *name, uint64_t rows,
                              uint64_t cols, bool required, const gguf_tensor **out) {
    const gguf_tensor *t = *out = gguf_find_tensor(ld->f, name);
    if (!t) {
        if (!required) return TLM_OK;
        return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: missing tensor '%s'", ld->path, name);
    }
    const uint64_t want_ne[2] = {cols, rows};
    const uint32_t want_dims = rows ? 2 : 1;
    const uint32_t have_dims = effective_dims(t->n_dims, t->ne);
    bool match = have_dims == want_dims;
    for (uint32_t d = 0; match && d < want_dims; d++) match = t->ne[d] == want_ne[d];
    if (!match) {
        char have[96], want[96];
        format_shape(have, sizeof have, t->n_dims, t->ne);
        format_shape(want, sizeof want, want_dims, want_ne);
        return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s",
                          ld->path, name, have, want);
    }
    if (!ggml_can_dequantize(t->type))
        return tlm_seterr(ld->err, TLM_ERR_UNSUPPORTED,
                          "%s: tensor '%s' has type %s, which trimlm cannot convert", ld->path,
                          name, ggml_type_name(t->type));
    return TLM_OK;
}

/* rows x cols values of a ggml type at src (rows of ggml_row_bytes each) to
 * f32; also the conversion of a lazily loaded layer (model_lazy_convert_fn). */
static void dequantize_rows(uint32_t type, const void *src, float *w, uint64_t rows,
                            uint64_t cols) {
    uint64_t row_bytes;
    ggml_row_bytes(type, cols, &row_bytes); /* the reader checked divisibility */
    const int64_t n_rows_i = (int64_t)rows;
#pragma omp parallel for schedule(static) if (n_rows_i >= 2 * ROWS_PER_THREAD_MIN)
    for (int64_t r = 0; r < n_rows_i; r++)
        ggml_dequantize_row(type, (const uint8_t *)src + (uint64_t)r * row_bytes,
                            w + (uint64_t)r * cols, (int64_t)cols);
}

/* True when a matrix t of ggml type `type` can be used where it lies: a
 * type the kernels compute on (kernels.h) and data aligned as they need
 * (a file's general.alignment may be anything; the default 32 suffices). */
static bool usable_in_place(const gguf_tensor *t) {
    return tlm_gguf_act_kind(t->type) != TLM_GGUF_ACT_NONE && t->type != GGML_TYPE_F32 &&
           ((uintptr_t)t->data & 3) == 0;
}

/* Converts tensor `name` (as find_weight checks it) to a new f32 array owned
 * by m, into *out with shape (rows or 1, cols); absent and !required: data
 * NULL. In an in-place load a matrix of a usable type points into the
 * mapping instead, with its GGUF type as its storage. */
static tlm_status load_weight(const gguf_loader *ld, struct tlm_model *m, const char *name,
                              uint64_t rows, uint64_t cols, bool required, tlm_tensor *out) {
    *out = tensor_of_f32(NULL, rows ? (int64_t)rows : 1, (int64_t)cols);
    const gguf_tensor *t;
    tlm_status st = find_weight(ld, name, rows, cols, required, &t);
    if (st || !t) return st;
    const uint64_t n_rows = rows ? rows : 1;
    if (ld->in_place && rows && usable_in_place(t)) {
        out->type = (tlm_storage)(TLM_STORAGE_GGML_BASE + (int)t->type);
        if (t->type == GGML_TYPE_F16) out->type = TLM_STORAGE_F16;
        if (t->type == GGML_TYPE_BF16) out->type = TLM_STORAGE_BF16;
        out->data = (void *)t->data;
        m->n_params += (int64_t)(n_rows * cols);
        m->quant_params += (int64_t)(n_rows * cols);
        m->quant_bytes += (int64_t)t->nbytes;
        return TLM_OK;
    }
    float *w = model_alloc_weight(m, n_rows * cols, ld->err); /* both <= 2^31 (hparams) */
    if (!w) {
        char why[TLM_ERROR_MSG_MAX];
        snprintf(why, sizeof why, "%s", ld->err->msg);
        return tlm_seterr(ld->err, ld->err->code, "%s: tensor '%s': %s", ld->path, name, why);
    }
    dequantize_rows(t->type, t->data, w, n_rows, cols);
    out->data = w;
    return TLM_OK;
}

/* A tensor of layer il into *out: converted now, or, in a lazy load, checked
 * and recorded for model_layer_materialize (data stays NULL). *found: the
 * file has it. */
static tlm_status layer_weight(const gguf_loader *ld, struct tlm_model *m, int32_t il,
                               tlm_sublayer_kind kind, int slot, const char *name, uint64_t rows,
                               uint64_t cols, bool required, tlm_tensor *out, bool *found) {
    if (!ld->lazy) {
        tlm_status st = load_weight(ld, m, name, rows, cols, required, out);
        *found = out->data != NULL;
        return st;
    }
    *out = tensor_of_f32(NULL, rows ? (int64_t)rows : 1, (int64_t)cols);
    const gguf_tensor *t;
    tlm_status st = find_weight(ld, name, rows, cols, required, &t);
    *found = t != NULL;
    if (st || !t) return st;
    const uint64_t n_rows = rows ? rows : 1;
    m->n_params += (int64_t)(n_rows * cols);
    return model_lazy_add_tensor(m->lazy, il, kind, slot, name, ld->file, t->type,
                                 gguf_data_offset(ld->f) + t->offset, t->nbytes, n_rows, cols,
                                 ld->err);
}

/* Sublayer kind of layer il, its tensors as the table lists them. */
static tlm_status load_sublayer(const gguf_loader *ld, struct tlm_model *m, int32_t il,
                                tlm_sublayer_kind kind) {
    const tlm_hparams *hp = &m->hp;
    tlm_sublayer *S = model_add_sublayer(m, kind, il);
    int n_specs;
    const tensor_spec *specs = tensor_specs_sublayer(hp->arch, kind, &n_specs);
    char name[96];
    bool has_bq = false, has_kv_bias = false;
    for (int k = 0; k < n_specs; k++) {
        const tensor_spec *sp = &specs[k];
        tensor_spec_name(sp, il, name, sizeof name);
        /* qwen2 always has q/k/v biases; a llama file may carry them too */
        const bool required = !sp->qkv_bias || hp->qkv_bias || (sp->slot != ATTN_Q_BIAS && has_bq);
        const uint64_t rows = sp->rows == DIM_ONE ? 0 : (uint64_t)tensor_spec_dim(hp, sp->rows);
        bool found;
        tlm_status st = layer_weight(ld, m, il, kind, sp->slot, name, rows,
                                     (uint64_t)tensor_spec_dim(hp, sp->cols), required,
                                     &S->w[sp->slot], &found);
        if (st) return st;
        if (sp->slot == ATTN_Q_BIAS) has_bq = found;
        else if (sp->qkv_bias) has_kv_bias |= found;
    }
    if (kind != TLM_SUBLAYER_ATTN) return TLM_OK;
    ld->has_bias[il] = has_bq;
    if (!has_bq && has_kv_bias)
        return tlm_seterr(ld->err, TLM_ERR_FORMAT,
                          "%s: layer %d has k/v biases but no 'blk.%d.attn_q.bias'", ld->path,
                          (int)il, (int)il);
    return TLM_OK;
}

static tlm_status load_layer(const gguf_loader *ld, struct tlm_model *m, int32_t il) {
    tlm_status st;
    if ((!ld->has_attn || ld->has_attn[il]) && (st = load_sublayer(ld, m, il, TLM_SUBLAYER_ATTN)))
        return st;
    if ((!ld->has_mlp || ld->has_mlp[il]) && (st = load_sublayer(ld, m, il, TLM_SUBLAYER_MLP)))
        return st;
    return TLM_OK;
}

static tlm_status load_weights(gguf_loader *ld, struct tlm_model *m) {
    tlm_hparams *hp = &m->hp;
    const uint64_t n_vocab = (uint64_t)hp->n_vocab, n_embd = (uint64_t)hp->n_embd;
    tlm_status st;
    const tensor_spec *emb = tensor_spec_model(hp->arch, MODEL_TOK_EMBD),
                      *norm = tensor_spec_model(hp->arch, MODEL_OUT_NORM),
                      *out = tensor_spec_model(hp->arch, MODEL_OUTPUT);
    if ((st = load_weight(ld, m, emb->gguf, n_vocab, n_embd, true, &m->tok_embd)) ||
        (st = load_weight(ld, m, norm->gguf, 0, n_embd, true, &m->out_norm)) ||
        (st = load_weight(ld, m, out->gguf, n_vocab, n_embd, false, &m->output)))
        return st;
    hp->tied_embeddings = hp->tied_by_absence = m->output.data == NULL;
    if (hp->arch == TLM_ARCH_GEMMA3) hp->tied_by_absence = false; /* Gemma 3 is tied by design */
    if (hp->tied_embeddings) m->output = m->tok_embd;

    if ((st = model_alloc_sublayers(m, ld->path, ld->err))) return st;
    ld->has_bias = tlm_calloc((size_t)hp->n_layer, sizeof *ld->has_bias);
    if (!ld->has_bias)
        return tlm_seterr(ld->err, TLM_ERR_NOMEM, "%s: out of memory for %d layers", ld->path,
                          hp->n_layer);
    if (ld->lazy &&
        (!(m->lazy = model_lazy_new(ld->path, hp->n_layer, dequantize_rows, ld->err)) ||
         (st = model_lazy_open_file(m->lazy, ld->path, gguf_file_size(ld->f), &ld->file, ld->err))))
        return ld->err->code;
    for (int32_t il = 0; il < hp->n_layer; il++)
        if ((st = load_layer(ld, m, il))) return st;
    for (int32_t i = 0; i < m->n_subs; i++)
        if (m->subs[i].kind == TLM_SUBLAYER_ATTN) { /* the first layer with attention decides */
            if (ld->has_bias[m->subs[i].layer]) hp->qkv_bias = true;
            break;
        }
    for (int32_t i = 0; i < m->n_subs; i++) {
        const int32_t il = m->subs[i].layer;
        if (m->subs[i].kind == TLM_SUBLAYER_ATTN && ld->has_bias[il] != hp->qkv_bias)
            return tlm_seterr(ld->err, TLM_ERR_FORMAT,
                              "%s: q/k/v biases are present in some layers only (layer %d differs)",
                              ld->path, (int)il);
    }
    return TLM_OK;
}

/* --------------------------------------------------------- the model */

static char *dup_gguf_str(gguf_str s) {
    return tlm_strndup(s.ptr, (size_t)s.len);
}

static tlm_status read_architecture(gguf_loader *ld) {
    gguf_str arch;
    if (!gguf_get_str(ld->f, "general.architecture", &arch))
        return tlm_seterr(ld->err, TLM_ERR_FORMAT, "%s: missing metadata 'general.architecture'",
                          ld->path);
    if (gguf_str_eq(arch, "llama")) {
        ld->arch = "llama";
    } else if (gguf_str_eq(arch, "qwen2")) {
        ld->arch = "qwen2";
    } else if (gguf_str_eq(arch, "deci")) {
        ld->arch = "deci";
    } else if (gguf_str_eq(arch, "gemma3")) {
        ld->arch = "gemma3";
    } else {
        char shown[64];
        snprintf(shown, sizeof shown, "%.*s", (int)(arch.len < 40 ? arch.len : 40), arch.ptr);
        for (char *c = shown; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f) *c = '?';
        return tlm_seterr(ld->err, TLM_ERR_UNSUPPORTED,
                          "%s: architecture '%s' is not supported (supported: llama, qwen2, deci, gemma3)",
                          ld->path, shown);
    }
    return TLM_OK;
}

static tlm_status load_model(gguf_loader *ld, struct tlm_model *m) {
    tlm_status st;
    if ((st = read_architecture(ld)) || (st = read_hparams(ld, &m->hp)) ||
        (st = model_check_hparams(&m->hp, ld->path, ld->err)) ||
        (st = read_rope_freqs(ld, &m->hp)))
        return st;
    m->source_format = "gguf";
    gguf_str s;
    /* deci is llama with per-layer sublayers: it runs (and converts) as llama */
    if (!(m->arch_name = tlm_strdup(strcmp(ld->arch, "deci") == 0 ? "llama" : ld->arch)) ||
        (gguf_get_str(ld->f, "general.name", &s) && !(m->name = dup_gguf_str(s))) ||
        (gguf_get_str(ld->f, "tokenizer.chat_template", &s) && !(m->chat_template = dup_gguf_str(s))))
        return tlm_seterr(ld->err, TLM_ERR_NOMEM, "%s: out of memory", ld->path);

    /* the tokenizer first: its metadata errors should not wait for the weights */
    m->tok = tokenizer_from_gguf(ld->f, ld->err);
    if (!m->tok) return ld->err->code != TLM_OK ? ld->err->code : TLM_ERR_FORMAT;
    if (tokenizer_n_vocab(m->tok) > m->hp.n_vocab)
        return tlm_seterr(ld->err, TLM_ERR_FORMAT,
                          "%s: the tokenizer has %d tokens but the embedding only %d rows",
                          ld->path, tokenizer_n_vocab(m->tok), m->hp.n_vocab);
    return load_weights(ld, m);
}

struct tlm_model *model_load_gguf(const char *path, model_load_mode mode, tlm_error *err) {
    tlm_clearerr(err);
    gguf_file *f = gguf_open(path, err);
    if (!f) return NULL;
    struct tlm_model *m = tlm_calloc(1, sizeof *m);
    if (!m) {
        gguf_close(f);
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    /* Errors are reported through a local so that a NULL err still works. */
    tlm_error local;
    tlm_clearerr(&local);
    const char *force_f32 = getenv("TRIMLM_GGUF_F32");
    const bool in_place =
        mode == MODEL_LOAD_IN_PLACE && !(force_f32 && strcmp(force_f32, "1") == 0);
    gguf_loader ld = {
        .f = f, .path = path, .err = &local, .lazy = mode == MODEL_LOAD_LAZY, .in_place = in_place};
    tlm_status st = load_model(&ld, m);
    if (st == TLM_OK && m->quant_params > 0) {
        /* the tensors used in place live as long as the model; the reader
         * mapped the file for one sequential pass, decode reads it over and
         * over: normal paging, and start reading it in now */
        const void *map;
        size_t size;
        if (gguf_take_mapping(f, &map, &size)) {
            m->map = map;
            m->map_bytes = size;
            madvise((void *)map, size, MADV_NORMAL);
            madvise((void *)map, size, MADV_WILLNEED);
        } else {
            st = tlm_seterr(&local, TLM_ERR_ARG, "%s: the file is not mapped", path);
        }
    }
    tlm_free(ld.has_attn);
    tlm_free(ld.has_mlp);
    tlm_free(ld.has_bias);
    gguf_close(f);
    if (st != TLM_OK) {
        if (err) *err = local;
        tlm_model_free(m);
        return NULL;
    }
    return m;
}
