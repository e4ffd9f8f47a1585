/*
 * model.c — loading dispatch, ownership of weights, and the public model and
 * tokenizer accessors of trimlm.h.
 */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "alloc.h"
#include "error.h"
#include "tlm_format.h"

/* a .tlm tensor's type is its storage as it is (model_tlm.c maps it) */
_Static_assert((int)TLM_STORAGE_F32 == TLM_DTYPE_F32 && (int)TLM_STORAGE_F16 == TLM_DTYPE_F16 &&
                   (int)TLM_STORAGE_BF16 == TLM_DTYPE_BF16 &&
                   (int)TLM_STORAGE_Q8_G32_R16 == TLM_DTYPE_Q8_G32 &&
                   (int)TLM_STORAGE_Q4_G32_R16 == TLM_DTYPE_Q4_G32,
               "tlm_storage values are the .tlm tensor types");

/* Sizes past these are treated as a corrupt file, not as a model to try. */
#define TLM_MAX_VOCAB (1 << 22)
#define TLM_MAX_EMBD (1 << 16)
#define TLM_MAX_LAYERS 1024
#define TLM_MAX_HEADS 1024
#define TLM_MAX_HEAD_DIM 1024
#define TLM_MAX_FF (1 << 20)

/* ------------------------------------------------------------ weights */

float *model_alloc_weight(struct tlm_model *m, uint64_t n, tlm_error *err) {
    size_t bytes;
    if (n == 0 || tlm_mul_overflow((size_t)n, sizeof(float), &bytes)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "weight of %llu elements is not a valid size",
                   (unsigned long long)n);
        return NULL;
    }
    if (m->n_owned == m->cap_owned) {
        int32_t cap = m->cap_owned ? m->cap_owned * 2 : 64;
        float **grown = tlm_realloc(m->owned, (size_t)cap * sizeof *grown);
        if (!grown) {
            tlm_seterr(err, TLM_ERR_NOMEM, "out of memory for the weight table");
            return NULL;
        }
        m->owned = grown;
        m->cap_owned = cap;
    }
    float *w = tlm_malloc_aligned(bytes);
    if (!w) {
        tlm_seterr(err, TLM_ERR_NOMEM, "out of memory allocating %zu bytes of weights", bytes);
        return NULL;
    }
    m->owned[m->n_owned++] = w;
    m->n_params += (int64_t)n;
    return w;
}

tlm_status model_alloc_sublayers(struct tlm_model *m, const char *src, tlm_error *err) {
    m->subs = tlm_calloc((size_t)m->hp.n_layer * 2, sizeof *m->subs);
    if (!m->subs)
        return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for %d layers", src, m->hp.n_layer);
    m->n_subs = m->n_attn = 0;
    return TLM_OK;
}

tlm_sublayer *model_add_sublayer(struct tlm_model *m, tlm_sublayer_kind kind, int32_t il) {
    if (!m->subs || m->n_subs >= 2 * m->hp.n_layer) return NULL;
    tlm_sublayer *s = &m->subs[m->n_subs++];
    *s = (tlm_sublayer){.kind = kind, .layer = il,
                        .kv_slot = kind == TLM_SUBLAYER_ATTN ? m->n_attn++ : -1};
    return s;
}

bool model_remove_sublayer(struct tlm_model *m, int32_t il, tlm_sublayer_kind kind) {
    const tlm_sublayer *S = model_sublayer(m, il, kind);
    if (!S) return false;
    const int32_t at = (int32_t)(S - m->subs);
    memmove(&m->subs[at], &m->subs[at + 1], (size_t)(m->n_subs - at - 1) * sizeof *m->subs);
    m->n_subs--;
    if (kind == TLM_SUBLAYER_ATTN) {
        m->n_attn--;
        for (int32_t i = at; i < m->n_subs; i++)
            if (m->subs[i].kind == TLM_SUBLAYER_ATTN) m->subs[i].kv_slot--;
    }
    return true;
}

const tlm_sublayer *model_sublayer(const struct tlm_model *m, int32_t il, tlm_sublayer_kind kind) {
    for (int32_t i = 0; i < m->n_subs; i++)
        if (m->subs[i].layer == il && m->subs[i].kind == kind) return &m->subs[i];
    return NULL;
}

double model_llama3_rope_divisor(double freq, double factor, double lo, double hi, double orig) {
    const double wavelen = 2.0 * 3.14159265358979323846 / freq;
    if (wavelen < orig / hi) return 1.0;
    if (wavelen > orig / lo) return factor;
    const double smooth = (orig / wavelen - lo) / (hi - lo);
    return freq / ((1.0 - smooth) * freq / factor + smooth * freq);
}

tlm_status model_check_hparams(const tlm_hparams *hp, const char *src, tlm_error *err) {
#define CHECK_RANGE(field, lo, hi)                                                          \
    if (hp->field < (lo) || hp->field > (hi))                                               \
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: %s = %lld is out of range [%lld, %lld]", \
                          src, #field, (long long)hp->field, (long long)(lo), (long long)(hi));
    CHECK_RANGE(n_vocab, 1, TLM_MAX_VOCAB);
    CHECK_RANGE(n_embd, 1, TLM_MAX_EMBD);
    CHECK_RANGE(n_layer, 1, TLM_MAX_LAYERS);
    CHECK_RANGE(n_head, 1, TLM_MAX_HEADS);
    CHECK_RANGE(n_head_kv, 1, hp->n_head);
    CHECK_RANGE(head_dim, 2, TLM_MAX_HEAD_DIM);
    CHECK_RANGE(n_ff, 1, TLM_MAX_FF);
    CHECK_RANGE(n_ctx_train, 1, 1 << 24);
#undef CHECK_RANGE
    if (hp->n_head % hp->n_head_kv != 0)
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: n_head (%d) is not a multiple of n_head_kv (%d)", src,
                          hp->n_head, hp->n_head_kv);
    if (hp->head_dim % 2 != 0 || hp->rope_dim % 2 != 0 || hp->rope_dim > hp->head_dim ||
        hp->rope_dim <= 0)
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: head_dim %d / rope dimension %d must be even and rope <= head", src,
                          hp->head_dim, hp->rope_dim);
    if (!(hp->rms_eps > 0 && hp->rms_eps < 1))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: rms_norm_eps %g is out of range (0, 1)",
                          src, (double)hp->rms_eps);
    /* an infinite base makes every rotation angle 0 or NaN (0 * Inf) */
    if (!(hp->rope_theta > 0) || !isfinite(hp->rope_theta))
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: rope_theta (RoPE frequency base) %g must be a finite positive number",
                          src, (double)hp->rope_theta);
    if (hp->rope_scaling != TLM_ROPE_SCALING_NONE &&
        (!(hp->rope_factor > 0) || !isfinite(hp->rope_factor)))
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: rope scaling factor %g must be a finite positive number", src,
                          (double)hp->rope_factor);
    return TLM_OK;
}

/* ------------------------------------------------------------ loading */

static struct tlm_model *load_model(const char *path, model_load_mode mode, tlm_error *err) {
    tlm_clearerr(err);
    if (!path || !*path) {
        tlm_seterr(err, TLM_ERR_ARG, "no model path given");
        return NULL;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        tlm_seterr(err, TLM_ERR_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(st.st_mode) && model_is_tlm_file(path)) return model_load_tlm(path, err);
    return S_ISDIR(st.st_mode) ? model_load_hf(path, mode == MODEL_LOAD_LAZY, err)
                               : model_load_gguf(path, mode, err);
}

tlm_model *tlm_model_load(const char *path, tlm_error *err) {
    return load_model(path, MODEL_LOAD_IN_PLACE, err);
}

struct tlm_model *model_load_lazy(const char *path, tlm_error *err) {
    return load_model(path, MODEL_LOAD_LAZY, err);
}

struct tlm_model *model_load_f32(const char *path, tlm_error *err) {
    return load_model(path, MODEL_LOAD_F32, err);
}

tlm_model_load_params tlm_model_default_load_params(void) {
    return (tlm_model_load_params){.lazy_layers = false, .weights_f32 = false};
}

tlm_model *tlm_model_load_with(const char *path, const tlm_model_load_params *params,
                               tlm_error *err) {
    model_load_mode mode = !params                ? MODEL_LOAD_IN_PLACE
                           : params->lazy_layers  ? MODEL_LOAD_LAZY
                           : params->weights_f32  ? MODEL_LOAD_F32
                                                  : MODEL_LOAD_IN_PLACE;
    return load_model(path, mode, err);
}

void tlm_model_free(tlm_model *m) {
    if (!m) return;
    model_lazy_free(m->lazy); /* the materialised layers' blocks */
    for (int32_t i = 0; i < m->n_owned; i++) tlm_free(m->owned[i]);
    tlm_free(m->owned);
    tlm_free(m->subs);
    tokenizer_free(m->tok);
    tlm_free(m->arch_name);
    tlm_free(m->name);
    tlm_free(m->chat_template);
    if (m->map) munmap((void *)m->map, m->map_bytes);
    tlm_free(m);
}

void tlm_model_get_info(const tlm_model *m, tlm_model_info *out) {
    const tlm_hparams *hp = &m->hp;
    *out = (tlm_model_info){
        .arch = m->arch_name,
        .name = m->name ? m->name : "",
        .n_vocab = hp->n_vocab,
        .n_embd = hp->n_embd,
        .n_layer = hp->n_layer,
        .n_head = hp->n_head,
        .n_head_kv = hp->n_head_kv,
        .head_dim = hp->head_dim,
        .n_ff = hp->n_ff,
        .n_ctx_train = hp->n_ctx_train,
        .rope_theta = hp->rope_theta,
        .rms_eps = hp->rms_eps,
        .tied_embeddings = hp->tied_embeddings,
        .output_absent = hp->tied_by_absence,
        .n_params = m->n_params,
        /* f32 arrays from model_alloc_weight, plus the mapped quantized ones */
        .weight_bytes = (m->n_params - m->quant_params) * (int64_t)sizeof(float) + m->quant_bytes,
        .source_format = m->source_format,
    };
}

int32_t tlm_model_attn_window(const tlm_model *m, int32_t layer) {
    if (!m || layer < 0 || layer >= m->hp.n_layer || !model_layer_is_local(&m->hp, layer)) return 0;
    return m->hp.sliding_window;
}

const char *tlm_model_chat_template(const tlm_model *m) {
    if (m->chat_template) return m->chat_template;
    return tokenizer_chat_template(m->tok);
}

/* ---------------------------------------------------------- tokenizer */

int32_t tlm_token_bos(const tlm_model *m) { return tokenizer_bos(m->tok); }
int32_t tlm_token_eos(const tlm_model *m) { return tokenizer_eos(m->tok); }
bool tlm_model_adds_bos(const tlm_model *m) { return tokenizer_adds_bos(m->tok); }
bool tlm_token_is_eog(const tlm_model *m, int32_t tok) { return tokenizer_is_eog(m->tok, tok); }

int32_t tlm_tokenize(const tlm_model *m, const char *text, size_t len, bool add_bos,
                     bool parse_special, int32_t *out, int32_t cap, tlm_error *err) {
    tlm_clearerr(err);
    return tokenizer_encode(m->tok, text, len, add_bos, parse_special, out, cap, err);
}

const char *tlm_token_bytes(const tlm_model *m, int32_t tok, bool render_special, size_t *len) {
    return tokenizer_token_bytes(m->tok, tok, render_special, len);
}

void tlm_free_string(char *s) { tlm_free(s); }

/* ------------------------------------------------ streaming detokenizer */

void tlm_detok_init(tlm_detok *d, const tlm_model *m) {
    d->model = m;
    d->n_pending = 0;
}

size_t tlm_detok_push(tlm_detok *d, int32_t tok, char *out, size_t cap) {
    size_t len = 0;
    const char *b = tokenizer_token_bytes(d->model->tok, tok, false, &len);
    return tokenizer_utf8_push(d->pending, &d->n_pending, b, len, out, cap);
}

size_t tlm_detok_flush(tlm_detok *d, char *out, size_t cap) {
    return tokenizer_utf8_flush(&d->n_pending, out, cap);
}
