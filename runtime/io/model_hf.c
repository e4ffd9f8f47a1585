/*
 * model_hf.c — loads a Hugging Face checkpoint directory:
 *
 *   config.json            hyper-parameters (LlamaForCausalLM, MistralForCausalLM,
 *                          Qwen2ForCausalLM)
 *   tokenizer.json         + optional tokenizer_config.json (special tokens, chat template)
 *   model.safetensors      or model-*.safetensors + model.safetensors.index.json
 *
 * Weights are converted to f32 one tensor at a time straight from the mapped
 * shards (a lazy load, model.h, leaves the layers' tensors to be read back
 * later through open descriptors). HF stores linear layers as (out_features, in_features), which is
 * the model's layout, and uses rotate-half RoPE, so nothing is permuted.
 */
#include "model.h"
#include "tensor_spec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "error.h"
#include "fileio.h"
#include "safetensors.h"

/* config.json files are a few KB. */
#define HF_MAX_CONFIG_BYTES (16u * 1024u * 1024u)

#define HF_SUPPORTED "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"

/* ------------------------------------------------------------ files */

/* The last path component of dir, trailing slashes ignored. */
static char *dir_base_name(const char *dir) {
    size_t end = strlen(dir);
    while (end > 1 && dir[end - 1] == '/') end--;
    size_t begin = end;
    while (begin > 0 && dir[begin - 1] != '/') begin--;
    if (begin == end) return tlm_strdup(dir);
    return tlm_strndup(dir + begin, end - begin);
}

/* Parses a JSON object file; the error names the file. */
static cJSON *read_json_file(const char *path, tlm_error *err) {
    size_t len = 0;
    char *buf = tlm_read_file(path, HF_MAX_CONFIG_BYTES, &len, err);
    if (!buf) return NULL;
    cJSON *root = cJSON_ParseWithLength(buf, len + 1);
    tlm_free(buf);
    if (!root) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: not valid JSON", path);
    } else if (!cJSON_IsObject(root)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: not a JSON object", path);
        cJSON_Delete(root);
        root = NULL;
    }
    return root;
}

/* ------------------------------------------------------------ config fields */

/* A field that is absent or JSON null takes its default (HF semantics). */
static const cJSON *get_field(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

/* Reads an integer field. required: absent is an error; else *out keeps its
 * default. */
static tlm_status get_int(const cJSON *obj, const char *key, bool required, int32_t *out,
                          const char *path, tlm_error *err) {
    const cJSON *v = get_field(obj, key);
    if (!v) {
        if (required)
            return tlm_seterr(err, TLM_ERR_FORMAT, "%s: required field \"%s\" is missing", path,
                              key);
        return TLM_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        !(v->valuedouble >= INT32_MIN && v->valuedouble <= INT32_MAX))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: field \"%s\" is not a 32-bit integer", path,
                          key);
    *out = (int32_t)v->valuedouble;
    return TLM_OK;
}

static tlm_status get_float(const cJSON *obj, const char *key, bool required, float *out,
                            const char *path, tlm_error *err) {
    const cJSON *v = get_field(obj, key);
    if (!v) {
        if (required)
            return tlm_seterr(err, TLM_ERR_FORMAT, "%s: required field \"%s\" is missing", path,
                              key);
        return TLM_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: field \"%s\" is not a number", path, key);
    *out = (float)v->valuedouble;
    return TLM_OK;
}

static tlm_status get_bool(const cJSON *obj, const char *key, bool *out, const char *path,
                           tlm_error *err) {
    const cJSON *v = get_field(obj, key);
    if (!v) return TLM_OK;
    if (!cJSON_IsBool(v))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: field \"%s\" is not true or false", path,
                          key);
    *out = cJSON_IsTrue(v);
    return TLM_OK;
}

/* A string field or NULL when absent; wrong type is an error. */
static tlm_status get_string(const cJSON *obj, const char *key, const char **out,
                             const char *path, tlm_error *err) {
    const cJSON *v = get_field(obj, key);
    *out = NULL;
    if (!v) return TLM_OK;
    if (!cJSON_IsString(v))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: field \"%s\" is not a string", path, key);
    *out = v->valuestring;
    return TLM_OK;
}

/* ------------------------------------------------------------ config.json */

#define TRY(expr)                                   \
    do {                                            \
        tlm_status try_rc_ = (expr);                \
        if (try_rc_ != TLM_OK) return try_rc_;      \
    } while (0)

/* The architecture, from architectures[0] or (without it) model_type. */
static tlm_status parse_arch(const cJSON *cfg, tlm_arch *arch, bool *is_mistral,
                             const char *path, tlm_error *err) {
    const char *name = NULL;
    const cJSON *archs = get_field(cfg, "architectures");
    if (archs) {
        if (!cJSON_IsArray(archs) || !cJSON_IsString(archs->child))
            return tlm_seterr(err, TLM_ERR_FORMAT,
                              "%s: field \"architectures\" is not a list of strings", path);
        name = archs->child->valuestring;
        *is_mistral = strcmp(name, "MistralForCausalLM") == 0;
        if (strcmp(name, "LlamaForCausalLM") == 0 || *is_mistral) {
            *arch = TLM_ARCH_LLAMA;
            return TLM_OK;
        }
        if (strcmp(name, "Qwen2ForCausalLM") == 0) {
            *arch = TLM_ARCH_QWEN2;
            return TLM_OK;
        }
    } else {
        TRY(get_string(cfg, "model_type", &name, path, err));
        if (!name)
            return tlm_seterr(err, TLM_ERR_FORMAT,
                              "%s: neither \"architectures\" nor \"model_type\" is given", path);
        *is_mistral = strcmp(name, "mistral") == 0;
        if (strcmp(name, "llama") == 0 || *is_mistral) {
            *arch = TLM_ARCH_LLAMA;
            return TLM_OK;
        }
        if (strcmp(name, "qwen2") == 0) {
            *arch = TLM_ARCH_QWEN2;
            return TLM_OK;
        }
    }
    return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                      "%s: architecture '%s' is not supported (supported: %s)", path, name,
                      HF_SUPPORTED);
}

/* rope_scaling (or the newer rope_parameters) — none, linear or llama3. */
static tlm_status parse_rope_scaling(const cJSON *cfg, tlm_hparams *hp, const char *path,
                                     tlm_error *err) {
    const char *key = "rope_scaling";
    const cJSON *rs = get_field(cfg, key);
    if (!rs) {
        key = "rope_parameters";
        rs = get_field(cfg, key);
    }
    if (!rs) return TLM_OK;
    if (!cJSON_IsObject(rs))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: field \"%s\" is not an object or null", path,
                          key);
    /* rope_parameters carries rope_theta too */
    TRY(get_float(rs, "rope_theta", false, &hp->rope_theta, path, err));
    const char *type = NULL;
    TRY(get_string(rs, "rope_type", &type, path, err));
    if (!type) TRY(get_string(rs, "type", &type, path, err));
    if (!type || strcmp(type, "default") == 0) return TLM_OK;
    if (strcmp(type, "linear") == 0) {
        hp->rope_scaling = TLM_ROPE_SCALING_LINEAR;
        TRY(get_float(rs, "factor", true, &hp->rope_factor, path, err));
        return TLM_OK;
    }
    if (strcmp(type, "llama3") == 0) {
        hp->rope_scaling = TLM_ROPE_SCALING_LLAMA3;
        TRY(get_float(rs, "factor", true, &hp->rope_factor, path, err));
        TRY(get_float(rs, "low_freq_factor", true, &hp->rope_low_freq_factor, path, err));
        TRY(get_float(rs, "high_freq_factor", true, &hp->rope_high_freq_factor, path, err));
        TRY(get_int(rs, "original_max_position_embeddings", true, &hp->rope_orig_ctx, path,
                    err));
        if (!(hp->rope_low_freq_factor > 0) ||
            !(hp->rope_high_freq_factor > hp->rope_low_freq_factor) || hp->rope_orig_ctx <= 0)
            return tlm_seterr(err, TLM_ERR_FORMAT,
                              "%s: llama3 rope scaling needs 0 < low_freq_factor < "
                              "high_freq_factor and original_max_position_embeddings > 0",
                              path);
        return TLM_OK;
    }
    return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                      "%s: rope scaling type '%s' is not supported (supported: linear, llama3)",
                      path, type);
}

static tlm_status parse_config(const cJSON *cfg, tlm_hparams *hp, const char *path,
                               tlm_error *err) {
    bool is_mistral = false;
    memset(hp, 0, sizeof *hp);
    TRY(parse_arch(cfg, &hp->arch, &is_mistral, path, err));

    if (get_field(cfg, "quantization_config"))
        return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                          "%s: pre-quantized checkpoints (quantization_config) are not "
                          "supported; use the f32/f16/bf16 original",
                          path);
    const char *act = NULL;
    TRY(get_string(cfg, "hidden_act", &act, path, err));
    if (act && strcmp(act, "silu") != 0)
        return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                          "%s: hidden_act '%s' is not supported (only silu)", path, act);
    bool attention_bias = false, mlp_bias = false;
    TRY(get_bool(cfg, "attention_bias", &attention_bias, path, err));
    TRY(get_bool(cfg, "mlp_bias", &mlp_bias, path, err));
    if ((attention_bias && hp->arch == TLM_ARCH_LLAMA) || mlp_bias)
        return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                          "%s: %s is not supported for this architecture", path,
                          mlp_bias ? "mlp_bias" : "attention_bias");

    TRY(get_int(cfg, "vocab_size", true, &hp->n_vocab, path, err));
    TRY(get_int(cfg, "hidden_size", true, &hp->n_embd, path, err));
    TRY(get_int(cfg, "num_hidden_layers", true, &hp->n_layer, path, err));
    TRY(get_int(cfg, "num_attention_heads", true, &hp->n_head, path, err));
    TRY(get_int(cfg, "intermediate_size", true, &hp->n_ff, path, err));
    hp->n_head_kv = hp->n_head;
    TRY(get_int(cfg, "num_key_value_heads", false, &hp->n_head_kv, path, err));
    if (hp->n_head <= 0)
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: num_attention_heads %d must be positive",
                          path, hp->n_head);
    hp->head_dim = hp->n_head > 0 ? hp->n_embd / hp->n_head : 0;
    const bool head_dim_given = get_field(cfg, "head_dim") != NULL;
    TRY(get_int(cfg, "head_dim", false, &hp->head_dim, path, err));
    if (!head_dim_given && hp->n_embd % hp->n_head != 0)
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: hidden_size %d is not a multiple of num_attention_heads %d and "
                          "no head_dim is given",
                          path, hp->n_embd, hp->n_head);
    hp->rope_dim = hp->head_dim;

    /* HF class defaults (LlamaConfig, MistralConfig, Qwen2Config). */
    hp->n_ctx_train = hp->arch == TLM_ARCH_QWEN2 ? 32768 : is_mistral ? 131072 : 2048;
    TRY(get_int(cfg, "max_position_embeddings", false, &hp->n_ctx_train, path, err));
    /* Sliding-window attention is not implemented: within the window it is
     * plain causal attention, so the usable context is capped at the window. */
    bool use_window = is_mistral;
    TRY(get_bool(cfg, "use_sliding_window", &use_window, path, err));
    if (use_window) {
        int32_t window = 0;
        TRY(get_int(cfg, "sliding_window", false, &window, path, err));
        if (window > 0 && window < hp->n_ctx_train) hp->n_ctx_train = window;
    }
    hp->rms_eps = 1e-6f;
    TRY(get_float(cfg, "rms_norm_eps", false, &hp->rms_eps, path, err));
    hp->rope_theta = 10000.0f;
    TRY(get_float(cfg, "rope_theta", false, &hp->rope_theta, path, err));
    hp->rope_style = TLM_ROPE_NEOX;
    hp->rope_scaling = TLM_ROPE_SCALING_NONE;
    TRY(parse_rope_scaling(cfg, hp, path, err));
    hp->tied_embeddings = false;
    TRY(get_bool(cfg, "tie_word_embeddings", &hp->tied_embeddings, path, err));
    hp->qkv_bias = hp->arch == TLM_ARCH_QWEN2;
    return model_check_hparams(hp, path, err);
}

/* ------------------------------------------------------------ tensors */

/* Formats a shape as "[a, b]" into buf. */
static const char *shape_str(char *buf, size_t cap, uint32_t n_dims, const uint64_t *shape) {
    size_t at = 0;
    at += (size_t)snprintf(buf, cap, "[");
    for (uint32_t d = 0; d < n_dims && at < cap; d++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%llu", d ? ", " : "",
                               (unsigned long long)shape[d]);
    if (at < cap) snprintf(buf + at, cap - at, "]");
    return buf;
}

/* Finds `name` and checks its shape is exactly (rows) or (rows, cols)
 * (cols == 0 for a vector) and that its dtype converts. */
static const st_tensor *find_tensor(const st_set *set, const char *dir, const char *name,
                                    int64_t rows, int64_t cols, tlm_error *err) {
    const st_tensor *t = st_find(set, name);
    if (!t) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: tensor '%s' is missing from the safetensors files",
                   dir, name);
        return NULL;
    }
    uint64_t want[2] = {(uint64_t)rows, (uint64_t)cols};
    uint32_t want_dims = cols ? 2 : 1;
    bool ok = t->n_dims == want_dims && t->shape[0] == want[0] &&
              (want_dims == 1 || t->shape[1] == want[1]);
    if (!ok) {
        char got_s[96], want_s[64];
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", dir, name,
                   shape_str(got_s, sizeof got_s, t->n_dims, t->shape),
                   shape_str(want_s, sizeof want_s, want_dims, want));
        return NULL;
    }
    return st_check_f32(t, err) == TLM_OK ? t : NULL;
}

/* find_tensor's tensor converted into a new model-owned f32 array: *out,
 * shape (rows, cols or 1). */
static tlm_status load_tensor(struct tlm_model *m, const st_set *set, const char *dir,
                              const char *name, int64_t rows, int64_t cols, tlm_tensor *out,
                              tlm_error *err) {
    const st_tensor *t = find_tensor(set, dir, name, rows, cols, err);
    float *w = t ? model_alloc_weight(m, t->n_elements, err) : NULL;
    if (!w || st_to_f32(t, w, err) != TLM_OK) return err ? err->code : TLM_ERR_FORMAT;
    *out = cols ? tensor_of_f32(w, rows, cols) : tensor_of_f32(w, 1, rows);
    return TLM_OK;
}

/* A lazily loaded layer's conversion (model_lazy_convert_fn): type is the st_dtype. */
static void convert_raw(uint32_t type, const void *raw, float *dst, uint64_t rows, uint64_t cols) {
    st_convert_f32((st_dtype)type, raw, rows * cols, dst);
}

/* A tensor of layer il into *dst: converted now, or, in a lazy load, checked
 * and recorded for model_layer_materialize (data stays NULL). */
static tlm_status layer_tensor(struct tlm_model *m, const st_set *set, const char *dir, int32_t il,
                               tlm_sublayer_kind kind, int slot, const char *name, int64_t rows,
                               int64_t cols, tlm_tensor *dst, tlm_error *err) {
    if (!m->lazy) return load_tensor(m, set, dir, name, rows, cols, dst, err);
    const st_tensor *t = find_tensor(set, dir, name, rows, cols, err);
    if (!t) return err ? err->code : TLM_ERR_FORMAT;
    *dst = cols ? tensor_of_f32(NULL, rows, cols) : tensor_of_f32(NULL, 1, rows);
    const char *path;
    uint64_t file_size, offset;
    int32_t file;
    st_tensor_source(set, t, &path, &file_size, &offset);
    tlm_status st = model_lazy_open_file(m->lazy, path, file_size, &file, err);
    if (st) return st;
    m->n_params += (int64_t)t->n_elements;
    return model_lazy_add_tensor(m->lazy, il, kind, slot, name, file, (uint32_t)t->dtype, offset,
                                 t->nbytes, (uint64_t)rows, cols ? (uint64_t)cols : 1, err);
}

/* A checkpoint holds every sublayer of every layer, the tensors of each as
 * tensor_spec.h lists them. */
static tlm_status load_weights(struct tlm_model *m, const st_set *set, const char *dir,
                               tlm_error *err) {
    const tlm_hparams *hp = &m->hp;
    char name[128];
    tlm_status st;
    /* (rows, cols) in safetensors' terms: a vector is (n, 0) */
#define SHAPE(sp) (sp)->rows == DIM_ONE ? tensor_spec_dim(hp, (sp)->cols) : tensor_spec_dim(hp, (sp)->rows), \
                  (sp)->rows == DIM_ONE ? 0 : tensor_spec_dim(hp, (sp)->cols)
    const tensor_spec *emb = tensor_spec_model(hp->arch, MODEL_TOK_EMBD);
    if ((st = load_tensor(m, set, dir, emb->hf, SHAPE(emb), &m->tok_embd, err))) return st;
    if ((st = model_alloc_sublayers(m, dir, err))) return st;
    for (int32_t l = 0; l < hp->n_layer; l++) {
        for (int kind = TLM_SUBLAYER_ATTN; kind <= TLM_SUBLAYER_MLP; kind++) {
            tlm_sublayer *S = model_add_sublayer(m, (tlm_sublayer_kind)kind, l);
            int n_specs;
            const tensor_spec *specs = tensor_specs_sublayer(hp->arch, (tlm_sublayer_kind)kind, &n_specs);
            for (int k = 0; k < n_specs; k++) {
                const tensor_spec *sp = &specs[k];
                if (!tensor_spec_held(sp, hp)) continue;
                tensor_spec_hf_name(sp, l, name, sizeof name);
                if ((st = layer_tensor(m, set, dir, l, S->kind, sp->slot, name, SHAPE(sp),
                                       &S->w[sp->slot], err)))
                    return st;
            }
        }
    }
    const tensor_spec *norm = tensor_spec_model(hp->arch, MODEL_OUT_NORM);
    if ((st = load_tensor(m, set, dir, norm->hf, SHAPE(norm), &m->out_norm, err))) return st;
    /* Tied checkpoints usually omit lm_head; when one is present anyway HF
     * ties it to the embedding, so it is ignored. */
    if (hp->tied_embeddings) {
        m->output = m->tok_embd;
    } else {
        const tensor_spec *out = tensor_spec_model(hp->arch, MODEL_OUTPUT);
        if ((st = load_tensor(m, set, dir, out->hf, SHAPE(out), &m->output, err))) return st;
    }
#undef SHAPE
    return TLM_OK;
}

/* ------------------------------------------------------------ loader */

struct tlm_model *model_load_hf(const char *dir, bool lazy, tlm_error *err) {
    tlm_clearerr(err);
    struct tlm_model *m = NULL;
    st_set *set = NULL;
    cJSON *cfg = NULL;
    char *config_path = path_join(dir, "config.json");
    char *tok_path = path_join(dir, "tokenizer.json");
    char *tok_cfg_path = path_join(dir, "tokenizer_config.json");
    if (!config_path || !tok_path || !tok_cfg_path) {
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    if (!is_regular_file(config_path)) {
        tlm_seterr(err, TLM_ERR_IO, "%s: no config.json (not a Hugging Face model directory?)",
                   dir);
        goto fail;
    }
    cfg = read_json_file(config_path, err);
    if (!cfg) goto fail;

    m = tlm_calloc(1, sizeof *m);
    if (!m) {
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    if (parse_config(cfg, &m->hp, config_path, err) != TLM_OK) goto fail;
    cJSON_Delete(cfg);
    cfg = NULL;

    m->arch_name = tlm_strdup(m->hp.arch == TLM_ARCH_QWEN2 ? "qwen2" : "llama");
    m->name = dir_base_name(dir);
    m->source_format = "safetensors";
    if (!m->arch_name || !m->name) {
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    if (lazy && !(m->lazy = model_lazy_new(dir, m->hp.n_layer, convert_raw, err))) goto fail;

    /* The tokenizer first: it is small and its errors are cheap to report. */
    if (!is_regular_file(tok_path)) {
        tlm_seterr(err, TLM_ERR_IO, "%s: tokenizer.json is missing", dir);
        goto fail;
    }
    m->tok = tokenizer_from_hf(tok_path, is_regular_file(tok_cfg_path) ? tok_cfg_path : NULL, err);
    if (!m->tok) goto fail;
    int32_t tok_vocab = tokenizer_n_vocab(m->tok);
    /* Embedding tables are often padded past the tokenizer (Qwen2); the
     * reverse would leave tokens without an embedding. */
    if (tok_vocab > m->hp.n_vocab) {
        tlm_seterr(err, TLM_ERR_FORMAT,
                   "%s: tokenizer.json has %d tokens but config.json vocab_size is %d", dir,
                   tok_vocab, m->hp.n_vocab);
        goto fail;
    }
    const char *tmpl = tokenizer_chat_template(m->tok);
    if (tmpl) {
        m->chat_template = tlm_strdup(tmpl);
        if (!m->chat_template) {
            tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dir);
            goto fail;
        }
    }

    set = st_open_dir(dir, err);
    if (!set) goto fail;
    if (load_weights(m, set, dir, err) != TLM_OK) goto fail;
    st_close(set);
    tlm_free(config_path);
    tlm_free(tok_path);
    tlm_free(tok_cfg_path);
    return m;

fail:
    st_close(set);
    cJSON_Delete(cfg);
    tlm_model_free(m);
    tlm_free(config_path);
    tlm_free(tok_path);
    tlm_free(tok_cfg_path);
    return NULL;
}
