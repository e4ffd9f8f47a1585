/*
 * tlm_writer.c — writing a model to trimlm's own file (.tlm, layout in
 * tlm_format.h) and `tlm_convert`, which loads any source and writes it.
 *
 * The writer plans the whole file first (every tensor's type, offset and
 * size), so the output's size is known before the first byte: it is
 * reserved with posix_fallocate, which makes a full disk fail at once rather
 * than after minutes of conversion (a write error later is still reported
 * as such). Bytes then stream through one buffer
 * into a temporary file next to the destination while XXH3 hashes them; the
 * header (offsets and checksums) is written last, at offset 0, and the file
 * is fsync'd and renamed onto the destination.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "alloc.h"
#include "error.h"
#include "f16.h"
#include "gguf.h"
#include "model.h"
#include "qformat.h"
#include "tlm_format.h"

#define OUT_BUFFER_BYTES ((size_t)4 << 20) /* write(2) granularity */
#define CHUNK_BYTES ((size_t)1 << 20)      /* converted rows per step, at most */

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

/* Round to nearest even; NaN stays a (quiet) NaN. */
static uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
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
        for (size_t i = 0; i < n; i++) b[i] = f32_to_bf16(src[i]);
    }
}

/* ------------------------------------------------------ tokenizer blob */

void tlm_tokenizer_blob_free(tlm_tokenizer_blob *b) {
    if (!b) return;
    for (int i = 0; i < TLM_TOK_MAX_PARTS; i++) tlm_free(b->part_data[i]);
    memset(b, 0, sizeof *b);
}

/* A growable byte buffer for the GGUF image below. */
typedef struct byte_buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} byte_buf;

static void buf_put(byte_buf *b, const void *src, size_t n) {
    if (b->oom) return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) { b->oom = true; return; }
            cap *= 2;
        }
        uint8_t *grown = tlm_realloc(b->p, cap);
        if (!grown) { b->oom = true; return; }
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void buf_u32(byte_buf *b, uint32_t v) { buf_put(b, &v, 4); }
static void buf_u64(byte_buf *b, uint64_t v) { buf_put(b, &v, 8); }

/* Appends one key-value in GGUF encoding; false for nested arrays, which no
 * tokenizer key uses (the key is then left out). */
static bool gguf_put_kv(byte_buf *b, const gguf_kv *kv) {
    if (kv->type == GGUF_VT_ARRAY && kv->arr_type != GGUF_VT_STRING &&
        !gguf_vtype_size(kv->arr_type))
        return false;
    buf_u64(b, kv->key.len);
    buf_put(b, kv->key.ptr, (size_t)kv->key.len);
    buf_u32(b, kv->type);
    if (kv->type == GGUF_VT_STRING) {
        uint64_t len;
        memcpy(&len, kv->data, 8);
        buf_put(b, kv->data, (size_t)(8 + len)); /* the reader checked it lies in the file */
    } else if (kv->type == GGUF_VT_ARRAY) {
        buf_u32(b, kv->arr_type);
        buf_u64(b, kv->arr_n);
        if (kv->arr_type == GGUF_VT_STRING) {
            for (uint64_t i = 0; i < kv->arr_n; i++) {
                buf_u64(b, kv->strs[i].len);
                buf_put(b, kv->strs[i].ptr, (size_t)kv->strs[i].len);
            }
        } else {
            buf_put(b, kv->data, (size_t)(kv->arr_n * gguf_vtype_size(kv->arr_type)));
        }
    } else {
        buf_put(b, kv->data, gguf_vtype_size(kv->type));
    }
    return true;
}

/* A GGUF v3 image without tensors holding the tokenizer.* keys of path. */
static tlm_status blob_from_gguf(const char *path, tlm_tokenizer_blob *out, tlm_error *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) return err ? err->code : TLM_ERR_FORMAT;
    byte_buf b = {0};
    uint64_t n_kv = 0;
    buf_put(&b, "GGUF", 4);
    buf_u32(&b, 3);
    buf_u64(&b, 0);    /* tensors */
    buf_u64(&b, 0);    /* key-values: patched below */
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (kv->key.len >= 10 && memcmp(kv->key.ptr, "tokenizer.", 10) == 0 && gguf_put_kv(&b, kv))
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

static tlm_status read_whole_file(const char *path, uint8_t **data, uint64_t *len, tlm_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return tlm_seterr(err, TLM_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size > TLM_MAX_TOK_BYTES) {
        fclose(f);
        return tlm_seterr(err, TLM_ERR_IO, "%s: not a regular file of a tokenizer's size", path);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *p = tlm_malloc(n);
    if (!p) {
        fclose(f);
        return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = fread(p, 1, n, f);
    fclose(f);
    if (got != n) {
        tlm_free(p);
        return tlm_seterr(err, TLM_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    *data = p;
    *len = n;
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
        tlm_status s = read_whole_file(path, &out->part_data[i], &out->part_bytes[i], err);
        if (s != TLM_OK) return s;
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
    const float *src;   /* rows x cols f32 values of the model, or NULL and: */
    const tlm_matrix *qsrc; /* the model's quantized matrix (a .tlm source) */
    uint64_t rows, cols;
    uint32_t n_dims, dtype;
    uint64_t offset;    /* from data_offset */
    uint64_t bytes;
    uint64_t checksum;
} plan_tensor;

typedef struct plan_sublayer {
    bool is_attn;
    int32_t layer;
    int32_t first, count; /* tensors [first, first + count) of the plan */
    bool has_score;
    float score;
} plan_sublayer;

typedef struct plan {
    const struct tlm_model *m;
    const tlm_write_options *o;
    const char *dst;
    tlm_error *err;
    plan_tensor *tensors;
    int32_t n_tensors, cap_tensors;
    plan_sublayer *subs;
    int32_t n_subs;
    bool *pattern_used; /* per keep_wide pattern: matched at least one tensor */
    char **patterns;
    int32_t n_patterns;
} plan;

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* The name without its "blk.N." prefix. */
static const char *tensor_role(const char *name) {
    if (strncmp(name, "blk.", 4) != 0) return name;
    const char *dot = strchr(name + 4, '.');
    return dot ? dot + 1 : name;
}

static bool pattern_matches(const char *pat, const char *name) {
    const char *role = tensor_role(name);
    size_t lp = strlen(pat);
    const char *cands[2] = {name, role};
    for (int i = 0; i < 2; i++) {
        if (strcmp(cands[i], pat) == 0) return true;
        if (strncmp(cands[i], pat, lp) == 0 && strcmp(cands[i] + lp, ".weight") == 0) return true;
    }
    return false;
}

static tlm_status parse_patterns(plan *p) {
    const char *list = p->o->keep_wide;
    if (!list || !*list) return TLM_OK;
    int32_t n = 1;
    for (const char *c = list; *c; c++) n += *c == ',';
    p->patterns = tlm_calloc((size_t)n, sizeof *p->patterns);
    p->pattern_used = tlm_calloc((size_t)n, sizeof *p->pattern_used);
    if (!p->patterns || !p->pattern_used)
        return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
    for (const char *c = list;;) {
        const char *end = strchr(c, ',');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        while (len && (*c == ' ')) { c++; len--; }
        while (len && c[len - 1] == ' ') len--;
        if (len) {
            if (!(p->patterns[p->n_patterns] = tlm_strndup(c, len)))
                return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
            p->n_patterns++;
        }
        if (!end) break;
        c = end + 1;
    }
    return TLM_OK;
}

static uint32_t choose_dtype(plan *p, const char *name, uint32_t n_dims, uint64_t cols) {
    bool wide = n_dims == 1; /* norms and biases: tiny, and precision-critical */
    for (int32_t i = 0; i < p->n_patterns; i++)
        if (pattern_matches(p->patterns[i], name)) {
            p->pattern_used[i] = true;
            wide = true;
        }
    uint32_t dtype = p->o->dtype;
    if (wide) return TLM_DTYPE_F32;
    if (!tlm_dtype_is_quant(dtype)) return dtype;
    /* the packed layouts need whole groups of 32 inputs; a tile must fit
     * one conversion chunk */
    size_t tile = tlm_qpacked_tile_bytes((tlm_qtype)dtype, (int64_t)cols);
    if (cols % TLM_QGROUP != 0 || tile == 0 || tile > CHUNK_BYTES) return TLM_DTYPE_F32;
    /* The embedding / output matrix is the most sensitive one (every logit
     * goes through it): int4 files keep it int8, as llama.cpp's Q4_0 files
     * keep it at Q6_K or Q8_0. */
    if (dtype == TLM_DTYPE_Q4_G32 &&
        (strcmp(name, "token_embd.weight") == 0 || strcmp(name, "output.weight") == 0))
        return TLM_DTYPE_Q8_G32;
    return dtype;
}

/* Stored bytes of a (rows, cols) tensor of dtype. */
static uint64_t tensor_bytes(uint32_t dtype, uint64_t rows, uint64_t cols) {
    if (tlm_dtype_is_quant(dtype))
        return tlm_qpacked_bytes((tlm_qtype)dtype, (int64_t)rows, (int64_t)cols);
    return rows * cols * tlm_dtype_float_bytes(dtype); /* < 2^62 (hparams) */
}

/* rows == 0: a vector of cols. src: f32 values, or NULL and q: a quantized
 * matrix, which is copied when it keeps its type (re-quantizing a quantized
 * model would compound the rounding: convert from the original instead). */
static tlm_status plan_add_q(plan *p, const char *name, const float *src, const tlm_matrix *q,
                             uint64_t rows, uint64_t cols) {
    if (!src && !(q && q->data))
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
    t->src = src;
    t->qsrc = src ? NULL : q;
    t->n_dims = rows ? 2 : 1;
    t->rows = rows ? rows : 1;
    t->cols = cols;
    t->dtype = choose_dtype(p, name, t->n_dims, cols);
    if (t->qsrc && t->dtype != (uint32_t)t->qsrc->type)
        return tlm_seterr(p->err, TLM_ERR_UNSUPPORTED,
                          "%s: tensor '%s' of the source is stored %s and cannot be rewritten as %s "
                          "(convert from the original model instead)",
                          p->dst, name, tlm_dtype_name((uint32_t)t->qsrc->type),
                          tlm_dtype_name(t->dtype));
    t->bytes = tensor_bytes(t->dtype, t->rows, t->cols);
    return TLM_OK;
}

static tlm_status plan_add(plan *p, const char *name, const float *src, uint64_t rows,
                           uint64_t cols) {
    return plan_add_q(p, name, src, NULL, rows, cols);
}

static tlm_status plan_layer(plan *p, int32_t il) {
    const struct tlm_model *m = p->m;
    const tlm_hparams *hp = &m->hp;
    const tlm_layer *L = &m->layers[il];
    const uint64_t E = (uint64_t)hp->n_embd, F = (uint64_t)hp->n_ff;
    const uint64_t q_dim = (uint64_t)hp->n_head * (uint64_t)hp->head_dim;
    const uint64_t kv_dim = (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim;
    const tlm_write_options *o = p->o;
    char name[TLM_TENSOR_NAME_MAX];
    tlm_status st;
#define ADD_Q(suffix, ptr, q, rows, cols)                               \
    do {                                                                \
        snprintf(name, sizeof name, "blk.%d.%s", (int)il, suffix);     \
        if ((st = plan_add_q(p, name, ptr, q, rows, cols))) return st;  \
    } while (0)
#define ADD(suffix, ptr, rows, cols) ADD_Q(suffix, ptr, NULL, rows, cols)
    for (int kind = 0; kind < 2; kind++) {
        const bool is_attn = kind == 0;
        const bool present = is_attn ? L->has_attn : L->has_mlp;
        const bool *drop = is_attn ? o->drop_attn : o->drop_mlp;
        if (!present || (drop && drop[il])) continue;
        plan_sublayer *s = &p->subs[p->n_subs++];
        s->is_attn = is_attn;
        s->layer = il;
        s->first = p->n_tensors;
        const float *score = is_attn ? o->attn_score : o->mlp_score;
        if (score) {
            s->has_score = true;
            s->score = score[il];
        }
        if (is_attn) {
            ADD("attn_norm.weight", L->attn_norm, 0, E);
            ADD_Q("attn_q.weight", L->wq, &L->wq_q, q_dim, E);
            ADD_Q("attn_k.weight", L->wk, &L->wk_q, kv_dim, E);
            ADD_Q("attn_v.weight", L->wv, &L->wv_q, kv_dim, E);
            if (hp->qkv_bias) {
                ADD("attn_q.bias", L->bq, 0, q_dim);
                ADD("attn_k.bias", L->bk, 0, kv_dim);
                ADD("attn_v.bias", L->bv, 0, kv_dim);
            }
            ADD_Q("attn_output.weight", L->wo, &L->wo_q, E, q_dim);
        } else {
            ADD("ffn_norm.weight", L->ffn_norm, 0, E);
            ADD_Q("ffn_gate.weight", L->w_gate, &L->w_gate_q, F, E);
            ADD_Q("ffn_up.weight", L->w_up, &L->w_up_q, F, E);
            ADD_Q("ffn_down.weight", L->w_down, &L->w_down_q, E, F);
        }
        s->count = p->n_tensors - s->first;
    }
#undef ADD
#undef ADD_Q
    return TLM_OK;
}

static tlm_status plan_build(plan *p) {
    const struct tlm_model *m = p->m;
    const tlm_hparams *hp = &m->hp;
    const uint64_t V = (uint64_t)hp->n_vocab, E = (uint64_t)hp->n_embd;
    tlm_status st;
    if ((st = parse_patterns(p))) return st;
    p->subs = tlm_calloc((size_t)hp->n_layer * 2, sizeof *p->subs);
    if (!p->subs) return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory", p->dst);
    if ((st = plan_add_q(p, "token_embd.weight", m->tok_embd, &m->tok_embd_q, V, E)) ||
        (st = plan_add(p, "output_norm.weight", m->out_norm, 0, E)))
        return st;
    if (!hp->tied_embeddings &&
        (st = plan_add_q(p, "output.weight", m->output, &m->output_q, V, E)))
        return st;
    for (int32_t il = 0; il < hp->n_layer; il++)
        if ((st = plan_layer(p, il))) return st;
    for (int32_t i = 0; i < p->n_patterns; i++)
        if (!p->pattern_used[i])
            return tlm_seterr(p->err, TLM_ERR_ARG,
                              "--keep-wide: no tensor of the model matches '%s' (names such as "
                              "token_embd, output, attn_q, ffn_down or blk.0.attn_q.weight)",
                              p->patterns[i]);
    return TLM_OK;
}

static void plan_free(plan *p) {
    tlm_free(p->tensors);
    tlm_free(p->subs);
    for (int32_t i = 0; i < p->n_patterns; i++) tlm_free(p->patterns[i]);
    tlm_free(p->patterns);
    tlm_free(p->pattern_used);
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
        !cJSON_AddStringToObject(conv, "trimlm_version", TLM_VERSION_STRING))
        goto done;
    for (int32_t i = 0; i < p->n_patterns; i++) {
        cJSON *s = cJSON_CreateString(p->patterns[i]);
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
    char tmp[4096];     /* the temporary file */
    int fd;
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
    size_t done = 0;
    while (done < o->used) {
        ssize_t n = write(o->fd, o->buf + done, o->used - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            return tlm_seterr(o->err, TLM_ERR_IO, "%s: cannot write: %s", o->dst,
                              n < 0 ? strerror(errno) : "no progress");
        done += (size_t)n;
    }
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

static tlm_status out_open(out_file *o) {
    const char *slash = strrchr(o->dst, '/');
    int n;
    if (slash)
        n = snprintf(o->tmp, sizeof o->tmp, "%.*s/.%s.partial-XXXXXX", (int)(slash - o->dst),
                     o->dst, slash + 1);
    else
        n = snprintf(o->tmp, sizeof o->tmp, ".%s.partial-XXXXXX", o->dst);
    if (n < 0 || (size_t)n >= sizeof o->tmp)
        return tlm_seterr(o->err, TLM_ERR_ARG, "%s: path too long", o->dst);
    o->fd = mkostemp(o->tmp, O_CLOEXEC);
    if (o->fd < 0) {
        int e = errno;
        o->tmp[0] = '\0';
        return tlm_seterr(o->err, TLM_ERR_IO, "%s: cannot create a temporary file next to it: %s",
                          o->dst, strerror(e));
    }
    /* Reserve the whole size now: a full disk fails here, not at the end.
     * fallocate(2), not posix_fallocate: where the file system cannot
     * reserve, the latter would emulate it by writing every block. */
    if (fallocate(o->fd, 0, 0, (off_t)o->total) != 0 &&
        (errno == ENOSPC || errno == EFBIG || errno == EDQUOT))
        return tlm_seterr(o->err, TLM_ERR_IO, "%s: cannot write %" PRIu64 " bytes: %s", o->dst,
                          o->total, strerror(errno));
    return TLM_OK;
}

static void out_discard(out_file *o) {
    if (o->fd >= 0) close(o->fd);
    o->fd = -1;
    if (o->tmp[0]) unlink(o->tmp);
    o->tmp[0] = '\0';
}

/* Header at offset 0, permissions, fsync, rename, fsync of the directory. */
static tlm_status out_commit(out_file *o, const tlm_file_header *h) {
    size_t done = 0;
    const uint8_t *hb = (const uint8_t *)h;
    while (done < sizeof *h) {
        ssize_t n = pwrite(o->fd, hb + done, sizeof *h - done, (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            return tlm_seterr(o->err, TLM_ERR_IO, "%s: cannot write the header: %s", o->dst,
                              strerror(errno));
        done += (size_t)n;
    }
    mode_t mask = umask(022); /* mkstemp made it 0600; a model is an ordinary file */
    umask(mask);
    if (fchmod(o->fd, 0644 & ~mask) != 0 || fsync(o->fd) != 0)
        return tlm_seterr(o->err, TLM_ERR_IO, "%s: cannot write: %s", o->dst, strerror(errno));
    int fd = o->fd;
    o->fd = -1;
    if (close(fd) != 0)
        return tlm_seterr(o->err, TLM_ERR_IO, "%s: cannot write: %s", o->dst, strerror(errno));
    if (rename(o->tmp, o->dst) != 0)
        return tlm_seterr(o->err, TLM_ERR_IO, "%s: cannot rename the temporary file onto it: %s",
                          o->dst, strerror(errno));
    o->tmp[0] = '\0';
    /* the rename itself reaches the disk with its directory */
    char dir[4096];
    const char *slash = strrchr(o->dst, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - o->dst) + (slash == o->dst) : 1,
             slash ? o->dst : ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return TLM_OK;
}

/* A damaged source can carry NaN or infinity, whose conversion to an integer
 * quant is undefined: refuse it instead of writing garbage. */
static bool all_finite(const float *x, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return false;
    return true;
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
        else if (!tlm_qquantize_pack(qt, t->src + r * t->cols, (int64_t)nr, (int64_t)t->cols, scratch))
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
    h.data_offset = align_up(h.tok_offset + h.tok_bytes, TLM_DATA_ALIGN);
    uint64_t at = 0;
    for (int32_t i = 0; i < p->n_tensors; i++) {
        p->tensors[i].offset = at;
        at = align_up(at + p->tensors[i].bytes, TLM_DATA_ALIGN);
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
    for (int32_t i = 0; i < p->n_tensors && !st; i++) {
        st = out_pad_to(o, h.data_offset + p->tensors[i].offset);
        if (!st) st = write_tensor(o, &p->tensors[i], scratch);
    }
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
    out_file o = {.dst = dst, .fd = -1, .progress = wo->progress, .user = wo->user, .err = err};
    char *meta = NULL;
    tlm_status st = plan_build(&p);
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
    if (st) out_discard(&o);
    cJSON_free(meta);
    tlm_free(o.buf);
    tlm_free(o.file_hash);
    plan_free(&p);
    return st;
}

/* ------------------------------------------------------------- convert */

tlm_convert_params tlm_convert_default_params(void) {
    return (tlm_convert_params){.type = TLM_TYPE_F16, .keep_wide = NULL};
}

static const char *base_name(const char *path) {
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/') end--;
    size_t begin = end;
    while (begin > 0 && path[begin - 1] != '/') begin--;
    return path + begin;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* Refuses a destination that is the source, one of the files a source
 * checkpoint directory consists of (*.json, *.safetensors), or a directory. */
static tlm_status check_destination(const char *src, const char *dst, tlm_error *err) {
    struct stat s_src, s_dst;
    if (stat(src, &s_src) != 0) return tlm_seterr(err, TLM_ERR_IO, "%s: %s", src, strerror(errno));
    if (stat(dst, &s_dst) != 0) return TLM_OK; /* a new file */
    if (S_ISDIR(s_dst.st_mode))
        return tlm_seterr(err, TLM_ERR_ARG, "%s: is a directory (give the output file's name)", dst);
    if (s_src.st_dev == s_dst.st_dev && s_src.st_ino == s_dst.st_ino)
        return tlm_seterr(err, TLM_ERR_ARG, "%s: refusing to overwrite the input model", dst);
    if (S_ISDIR(s_src.st_mode)) {
        char parent[4096];
        const char *slash = strrchr(dst, '/');
        snprintf(parent, sizeof parent, "%.*s", slash ? (int)(slash - dst) + (slash == dst) : 1,
                 slash ? dst : ".");
        struct stat s_par;
        if (stat(parent, &s_par) == 0 && s_par.st_dev == s_src.st_dev && s_par.st_ino == s_src.st_ino &&
            (ends_with(dst, ".json") || ends_with(dst, ".safetensors")))
            return tlm_seterr(err, TLM_ERR_ARG,
                              "%s: refusing to overwrite a file of the input model directory", dst);
    }
    return TLM_OK;
}

tlm_status tlm_convert(const char *src, const char *dst, const tlm_convert_params *params,
                       tlm_progress_fn progress, void *user, tlm_error *err) {
    tlm_clearerr(err);
    tlm_error local;
    tlm_clearerr(&local);
    if (!src || !*src || !dst || !*dst)
        return tlm_seterr(err, TLM_ERR_ARG, "tlm_convert: missing source or destination");
    tlm_convert_params p = params ? *params : tlm_convert_default_params();
    if (p.type < 0 || (!tlm_dtype_float_bytes((uint32_t)p.type) && !tlm_dtype_is_quant((uint32_t)p.type)))
        return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                          "tensor type %d is not supported by convert (f32, f16, bf16, q8_g32, q4_g32)",
                          p.type);
    tlm_status st = check_destination(src, dst, &local);
    if (st) goto fail;
    if (progress && !progress(user, "load", 0, 1)) {
        st = tlm_seterr(&local, TLM_ERR_ARG, "%s: cancelled; nothing was written", dst);
        goto fail;
    }
    tlm_model *m = tlm_model_load(src, &local);
    if (!m) {
        st = local.code != TLM_OK ? local.code : TLM_ERR_FORMAT;
        goto fail;
    }
    tlm_tokenizer_blob tb;
    st = tlm_tokenizer_blob_from_source(src, &tb, &local);
    if (!st && progress && !progress(user, "load", 1, 1))
        st = tlm_seterr(&local, TLM_ERR_ARG, "%s: cancelled; nothing was written", dst);
    if (!st) {
        tlm_write_options wo = {.dtype = (uint32_t)p.type, .keep_wide = p.keep_wide,
                                .source_file = base_name(src), .source_format = m->source_format,
                                .tokenizer = &tb, .progress = progress, .user = user};
        st = tlm_write_model(m, dst, &wo, &local);
    }
    tlm_tokenizer_blob_free(&tb);
    tlm_model_free(m);
fail:
    if (st && err) *err = local;
    return st;
}
