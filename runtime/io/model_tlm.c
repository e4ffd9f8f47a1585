/*
 * model_tlm.c — reading trimlm's own model file (.tlm, layout in
 * tlm_format.h): loading it into a tlm_model, verifying its checksums, and
 * describing it (and, for `trimlm info`, GGUF and Hugging Face sources too).
 *
 * The file is mapped read-only. Before anything in it is used, the header's
 * own checksum, the section geometry and the checksums of the metadata,
 * tokenizer and directory sections are checked, and every directory entry is
 * bounds-checked against the data section; so a damaged or truncated file
 * fails with one line naming the problem and never crashes. Damage inside
 * tensor data is found by tlm_file_verify (per-tensor checksums), which
 * loading does not run. Float tensors are converted to f32 arrays; quantized
 * matrices (q8_g32 / q4_g32) are used where they lie in the mapping, which
 * the model then keeps open (read-only) until tlm_model_free.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "alloc.h"
#include "error.h"
#include "fileio.h"
#include "f16.h"
#include "ggml_types.h"
#include "gguf.h"
#include "model.h"
#include "tensor_spec.h"
#include "qformat.h"
#include "safetensors.h"
#include "tlm_format.h"

#define ROWS_PER_THREAD_MIN 64 /* below this a tensor is converted on one thread */
#define VERIFY_STEP_BYTES ((uint64_t)64 << 20) /* progress granularity of verification */

/* -------------------------------------------------------------- reader */

typedef struct tlm_reader {
    const char *path;
    const uint8_t *map; /* the whole file */
    size_t size;
    tlm_file_header h;
    tlm_tensor_entry *entries; /* copy of the directory, validated */
    cJSON *meta;
    tlm_error *err;
} tlm_reader;

static void reader_close(tlm_reader *r) {
    cJSON_Delete(r->meta);
    tlm_free(r->entries);
    if (r->map) munmap((void *)r->map, r->size);
    r->meta = NULL;
    r->entries = NULL;
    r->map = NULL;
}

bool model_is_tlm_file(const char *path) {
    /* by the magic bytes; by the name only when they are neither format's,
     * so that a .tlm file damaged at its start is reported as one, and a
     * GGUF file under a .tlm name still loads as the GGUF it is */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    uint8_t magic[TLM_MAGIC_BYTES] = {0};
    ssize_t n = fd >= 0 ? read(fd, magic, sizeof magic) : -1;
    if (fd >= 0) close(fd);
    if (n == (ssize_t)sizeof magic && memcmp(magic, TLM_MAGIC, TLM_MAGIC_BYTES) == 0) return true;
    if (n >= 4 && memcmp(magic, "GGUF", 4) == 0) return false;
    size_t len = strlen(path), ext = strlen(TLM_FILE_EXT);
    return len > ext && strcmp(path + len - ext, TLM_FILE_EXT) == 0;
}

/* Header fields and section geometry. */
static tlm_status check_header(tlm_reader *r) {
    const char *path = r->path;
    const size_t magic_have = r->size < TLM_MAGIC_BYTES ? r->size : TLM_MAGIC_BYTES;
    if (r->size > 0 && memcmp(r->map, TLM_MAGIC, magic_have) != 0)
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: not a trimlm model file (bad magic bytes)", path);
    if (r->size < TLM_HEADER_BYTES)
        return tlm_seterr(r->err, TLM_ERR_FORMAT,
                          "%s: truncated: %zu bytes, shorter than the %d-byte header", path,
                          r->size, TLM_HEADER_BYTES);
    tlm_file_header *h = &r->h;
    memcpy(h, r->map, sizeof *h);
    const bool header_ok =
        XXH3_64bits(r->map, offsetof(tlm_file_header, header_checksum)) == h->header_checksum;
    if (h->version > TLM_FORMAT_VERSION)
        return tlm_seterr(r->err, TLM_ERR_UNSUPPORTED,
                          "%s: format version %" PRIu32 " is newer than this trimlm supports (%d)%s",
                          path, h->version, TLM_FORMAT_VERSION,
                          header_ok ? "" : " (or the header is damaged)");
    if (!header_ok)
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: the header is damaged (checksum mismatch)", path);
    if (h->version == 0)
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: format version 0 is invalid", path);
    if (h->header_bytes != TLM_HEADER_BYTES || h->flags != 0)
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: header size %" PRIu32 " / flags %" PRIu32
                          " are invalid for format version 1", path, h->header_bytes, h->flags);
    if ((uint64_t)r->size < h->file_bytes)
        return tlm_seterr(r->err, TLM_ERR_FORMAT,
                          "%s: truncated: the file has %zu bytes, its header says %" PRIu64, path,
                          r->size, h->file_bytes);
    if ((uint64_t)r->size > h->file_bytes)
        return tlm_seterr(r->err, TLM_ERR_FORMAT,
                          "%s: %" PRIu64 " unexpected bytes after the end of the model", path,
                          (uint64_t)r->size - h->file_bytes);
    /* Sections are contiguous and in order; every sum is overflow-checked. */
    uint64_t tok_end, data_end, dir_bytes, dir_end;
    bool ok = h->meta_offset == TLM_HEADER_BYTES && h->meta_bytes > 0 &&
              h->meta_bytes <= TLM_MAX_META_BYTES && h->tok_bytes <= TLM_MAX_TOK_BYTES &&
              h->n_tensors <= TLM_MAX_TENSORS &&
              h->tok_offset == h->meta_offset + h->meta_bytes &&
              !__builtin_add_overflow(h->tok_offset, h->tok_bytes, &tok_end) &&
              h->data_offset == tlm_align_up(tok_end, TLM_DATA_ALIGN) &&
              !__builtin_add_overflow(h->data_offset, h->data_bytes, &data_end) &&
              h->dir_offset == data_end && h->data_bytes % TLM_DATA_ALIGN == 0 &&
              !__builtin_mul_overflow((uint64_t)h->n_tensors, (uint64_t)sizeof(tlm_tensor_entry),
                                      &dir_bytes) &&
              !__builtin_add_overflow(h->dir_offset, dir_bytes, &dir_end) &&
              dir_end == h->file_bytes;
    if (!ok)
        return tlm_seterr(r->err, TLM_ERR_FORMAT,
                          "%s: the header's section offsets and sizes are inconsistent", path);
    return TLM_OK;
}

static bool name_is_valid(const char *name) {
    size_t n = strnlen(name, TLM_TENSOR_NAME_MAX);
    if (n == 0 || n == TLM_TENSOR_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!isprint((unsigned char)name[i])) return false;
    for (size_t i = n; i < TLM_TENSOR_NAME_MAX; i++)
        if (name[i]) return false;
    return true;
}

/* Every directory entry: a known type, a shape matching its byte size, and
 * data inside the data section, in order and without overlap. */
static tlm_status check_directory(tlm_reader *r) {
    const tlm_file_header *h = &r->h;
    size_t dir_bytes = (size_t)h->n_tensors * sizeof(tlm_tensor_entry);
    r->entries = tlm_malloc(dir_bytes ? dir_bytes : 1);
    if (!r->entries)
        return tlm_seterr(r->err, TLM_ERR_NOMEM, "%s: out of memory for the tensor directory", r->path);
    memcpy(r->entries, r->map + h->dir_offset, dir_bytes);
    uint64_t prev_end = 0;
    for (uint32_t i = 0; i < h->n_tensors; i++) {
        const tlm_tensor_entry *e = &r->entries[i];
        if (!name_is_valid(e->name))
            return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: tensor directory entry %" PRIu32
                              " has an invalid name", r->path, i);
        uint32_t eb = tlm_dtype_float_bytes(e->dtype);
        const bool quant = tlm_dtype_is_quant(e->dtype);
        if (!eb && !quant)
            return tlm_seterr(r->err, TLM_ERR_UNSUPPORTED,
                              "%s: tensor '%s' has type %" PRIu32 ", which this trimlm cannot read",
                              r->path, e->name, e->dtype);
        uint64_t n, bytes, end;
        bool shape_ok = e->n_dims >= 1 && e->n_dims <= 2 && e->rows > 0 && e->cols > 0 &&
                        !(e->n_dims == 1 && e->rows != 1) && e->flags == 0 && e->reserved == 0 &&
                        !__builtin_mul_overflow(e->rows, e->cols, &n);
        if (shape_ok && quant) {
            /* packed 16-row tiles (qformat.h); the size bound keeps the
             * int64 arithmetic of tlm_qpacked_bytes exact */
            shape_ok = e->n_dims == 2 && e->quant_group == TLM_QGROUP && e->cols % TLM_QGROUP == 0 &&
                       e->rows < ((uint64_t)1 << 40) && e->cols < ((uint64_t)1 << 40) &&
                       n < ((uint64_t)1 << 56) &&
                       tlm_qpacked_bytes((tlm_qtype)e->dtype, (int64_t)e->rows, (int64_t)e->cols) ==
                           e->bytes;
        } else if (shape_ok) {
            shape_ok = e->quant_group == 0 && !__builtin_mul_overflow(n, (uint64_t)eb, &bytes) &&
                       bytes == e->bytes;
        }
        if (!shape_ok)
            return tlm_seterr(r->err, TLM_ERR_FORMAT,
                              "%s: tensor '%s': shape, type and size disagree", r->path, e->name);
        if (e->offset % TLM_DATA_ALIGN != 0 || e->offset < prev_end ||
            __builtin_add_overflow(e->offset, e->bytes, &end) || end > h->data_bytes)
            return tlm_seterr(r->err, TLM_ERR_FORMAT,
                              "%s: tensor '%s': data (%" PRIu64 " bytes at %" PRIu64
                              ") lies outside the data section or overlaps another tensor",
                              r->path, e->name, e->bytes, e->offset);
        prev_end = end;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(r->entries[j].name, e->name) == 0)
                return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: tensor '%s' is listed twice",
                                  r->path, e->name);
    }
    return TLM_OK;
}

/* Maps path and checks everything but tensor data. */
static tlm_status reader_open(tlm_reader *r, const char *path, tlm_error *err) {
    memset(r, 0, sizeof *r);
    r->path = path;
    r->err = err;
    tlm_status st;
    const void *map;
    if ((st = map_whole_file(r->path, &map, &r->size, r->err))) return st;
    r->map = map;
    if ((st = check_header(r))) return st;
    const tlm_file_header *h = &r->h;
    if (XXH3_64bits(r->map + h->meta_offset, (size_t)h->meta_bytes) != h->meta_checksum)
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: the metadata section is damaged (checksum mismatch)", path);
    if (XXH3_64bits(r->map + h->tok_offset, (size_t)h->tok_bytes) != h->tok_checksum)
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: the tokenizer section is damaged (checksum mismatch)", path);
    if (XXH3_64bits(r->map + h->dir_offset, (size_t)h->n_tensors * sizeof(tlm_tensor_entry)) !=
        h->dir_checksum)
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: the tensor directory is damaged (checksum mismatch)", path);
    if ((st = check_directory(r))) return st;
    r->meta = cJSON_ParseWithLength((const char *)r->map + h->meta_offset, (size_t)h->meta_bytes);
    if (!r->meta || !cJSON_IsObject(r->meta))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: the metadata is not a JSON object", path);
    return TLM_OK;
}

static const tlm_tensor_entry *find_entry(const tlm_reader *r, const char *name, uint32_t *index) {
    for (uint32_t i = 0; i < r->h.n_tensors; i++)
        if (strcmp(r->entries[i].name, name) == 0) {
            if (index) *index = i;
            return &r->entries[i];
        }
    return NULL;
}

/* ---------------------------------------------------------- metadata */

static const cJSON *jget(const cJSON *obj, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

static tlm_status meta_int(const tlm_reader *r, const cJSON *obj, const char *key, int64_t lo,
                           int64_t hi, int32_t *out) {
    const cJSON *v = jget(obj, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)lo ||
        v->valuedouble > (double)hi)
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: metadata '%s' must be an integer in [%lld, %lld]",
                          r->path, key, (long long)lo, (long long)hi);
    *out = (int32_t)v->valuedouble;
    return TLM_OK;
}

static tlm_status meta_float(const tlm_reader *r, const cJSON *obj, const char *key, float *out) {
    const cJSON *v = jget(obj, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: metadata '%s' must be a number", r->path, key);
    *out = (float)v->valuedouble;
    return TLM_OK;
}

static tlm_status meta_bool(const tlm_reader *r, const cJSON *obj, const char *key, bool *out) {
    const cJSON *v = jget(obj, key);
    if (!cJSON_IsBool(v))
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: metadata '%s' must be true or false", r->path, key);
    *out = cJSON_IsTrue(v);
    return TLM_OK;
}

static const char *meta_str(const cJSON *obj, const char *key) {
    const cJSON *v = jget(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static tlm_status read_hparams(const tlm_reader *r, tlm_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    const char *arch = meta_str(r->meta, "architecture");
    if (!arch)
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: metadata 'architecture' is missing", r->path);
    if (strcmp(arch, "llama") == 0) hp->arch = TLM_ARCH_LLAMA;
    else if (strcmp(arch, "qwen2") == 0) hp->arch = TLM_ARCH_QWEN2;
    else
        return tlm_seterr(r->err, TLM_ERR_UNSUPPORTED,
                          "%s: architecture '%.40s' is not supported (supported: llama, qwen2)",
                          r->path, arch);
    const cJSON *h = jget(r->meta, "hparams");
    if (!cJSON_IsObject(h))
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: metadata 'hparams' is missing", r->path);
    tlm_status st;
    if ((st = meta_int(r, h, "n_vocab", 1, INT32_MAX, &hp->n_vocab)) ||
        (st = meta_int(r, h, "n_embd", 1, INT32_MAX, &hp->n_embd)) ||
        (st = meta_int(r, h, "n_layer", 1, INT32_MAX, &hp->n_layer)) ||
        (st = meta_int(r, h, "n_head", 1, INT32_MAX, &hp->n_head)) ||
        (st = meta_int(r, h, "n_head_kv", 1, INT32_MAX, &hp->n_head_kv)) ||
        (st = meta_int(r, h, "head_dim", 1, INT32_MAX, &hp->head_dim)) ||
        (st = meta_int(r, h, "n_ff", 1, INT32_MAX, &hp->n_ff)) ||
        (st = meta_int(r, h, "n_ctx_train", 1, INT32_MAX, &hp->n_ctx_train)) ||
        (st = meta_float(r, h, "rms_eps", &hp->rms_eps)) ||
        (st = meta_float(r, h, "rope_theta", &hp->rope_theta)) ||
        (st = meta_int(r, h, "rope_dim", 1, INT32_MAX, &hp->rope_dim)) ||
        (st = meta_float(r, h, "rope_factor", &hp->rope_factor)) ||
        (st = meta_float(r, h, "rope_low_freq_factor", &hp->rope_low_freq_factor)) ||
        (st = meta_float(r, h, "rope_high_freq_factor", &hp->rope_high_freq_factor)) ||
        (st = meta_int(r, h, "rope_orig_ctx", 0, INT32_MAX, &hp->rope_orig_ctx)) ||
        (st = meta_bool(r, h, "tied_embeddings", &hp->tied_embeddings)) ||
        (st = meta_bool(r, h, "qkv_bias", &hp->qkv_bias)))
        return st;
    const char *style = meta_str(h, "rope_style"), *scaling = meta_str(h, "rope_scaling");
    if (style && strcmp(style, "norm") == 0) hp->rope_style = TLM_ROPE_NORM;
    else if (style && strcmp(style, "neox") == 0) hp->rope_style = TLM_ROPE_NEOX;
    else return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: metadata 'rope_style' must be norm or neox", r->path);
    if (scaling && strcmp(scaling, "none") == 0) hp->rope_scaling = TLM_ROPE_SCALING_NONE;
    else if (scaling && strcmp(scaling, "linear") == 0) hp->rope_scaling = TLM_ROPE_SCALING_LINEAR;
    else if (scaling && strcmp(scaling, "llama3") == 0) hp->rope_scaling = TLM_ROPE_SCALING_LLAMA3;
    else
        return tlm_seterr(r->err, TLM_ERR_FORMAT,
                          "%s: metadata 'rope_scaling' must be none, linear or llama3", r->path);
    return model_check_hparams(hp, r->path, r->err);
}

/* ------------------------------------------------------------- graph */

typedef struct graph_node {
    bool is_attn;
    int32_t layer;
    bool has_score;
    float score;
    const cJSON *tensors; /* array of names */
} graph_node;

/* Reads and checks the graph: sublayers in execution order, each once,
 * listing exactly its expected tensors. *nodes has 2 * n_layer slots. */
static tlm_status read_graph(const tlm_reader *r, const tlm_hparams *hp, graph_node *nodes,
                             int32_t *n_nodes) {
    const cJSON *g = jget(r->meta, "graph");
    if (!cJSON_IsArray(g))
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: metadata 'graph' is missing", r->path);
    int32_t n = 0, prev_key = -1;
    const cJSON *item;
    cJSON_ArrayForEach(item, g) {
        const char *kind = meta_str(item, "kind");
        graph_node node = {0};
        tlm_status st;
        if (!kind || (strcmp(kind, "attn") != 0 && strcmp(kind, "mlp") != 0))
            return tlm_seterr(r->err, TLM_ERR_FORMAT,
                              "%s: graph entry %d: 'kind' must be \"attn\" or \"mlp\"", r->path, n);
        node.is_attn = strcmp(kind, "attn") == 0;
        if ((st = meta_int(r, item, "layer", 0, hp->n_layer - 1, &node.layer))) return st;
        int32_t key = node.layer * 2 + (node.is_attn ? 0 : 1);
        if (key <= prev_key)
            return tlm_seterr(r->err, TLM_ERR_FORMAT,
                              "%s: graph entry %d (%s of layer %d) is out of order or repeated",
                              r->path, n, kind, node.layer);
        prev_key = key;
        const cJSON *score = jget(item, "score");
        if (score) {
            if (!cJSON_IsNumber(score))
                return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: graph entry %d: 'score' must be a number",
                                  r->path, n);
            node.has_score = true;
            node.score = (float)score->valuedouble;
        }
        node.tensors = jget(item, "tensors");
        int n_specs, n_held = 0;
        const tensor_spec *specs = tensor_specs_sublayer(
            hp->arch, node.is_attn ? TLM_SUBLAYER_ATTN : TLM_SUBLAYER_MLP, &n_specs);
        for (int k = 0; k < n_specs; k++) n_held += tensor_spec_held(&specs[k], hp);
        bool ok = cJSON_IsArray(node.tensors) && cJSON_GetArraySize(node.tensors) == n_held;
        for (int k = 0; ok && k < n_specs; k++) {
            if (!tensor_spec_held(&specs[k], hp)) continue;
            char want[TLM_TENSOR_NAME_MAX];
            tensor_spec_name(&specs[k], node.layer, want, sizeof want);
            bool listed = false;
            const cJSON *name;
            cJSON_ArrayForEach(name, node.tensors)
                listed |= cJSON_IsString(name) && strcmp(name->valuestring, want) == 0;
            ok = listed;
        }
        if (!ok)
            return tlm_seterr(r->err, TLM_ERR_FORMAT,
                              "%s: graph entry %d (%s of layer %d) does not list the tensors of "
                              "that sublayer", r->path, n, kind, node.layer);
        nodes[n++] = node;
    }
    *n_nodes = n;
    return TLM_OK;
}

/* ------------------------------------------------------------ loading */

typedef struct tlm_loader {
    tlm_reader *r;
    struct tlm_model *m;
    bool *used; /* per directory entry */
    bool mapped; /* a tensor points into the mapping */
} tlm_loader;

/* The tensor called name, of shape (rows, cols) (rows == 0: a vector of
 * cols), into *out: converted to a new f32 array owned by the model, or, when
 * it is stored packed and may be (a weight matrix), pointing at its mapped
 * bytes. */
static tlm_status load_tensor(tlm_loader *ld, const char *name, uint64_t rows, uint64_t cols,
                              bool packable, tlm_tensor *out) {
    tlm_reader *r = ld->r;
    uint32_t index;
    const tlm_tensor_entry *e = find_entry(r, name, &index);
    if (!e) return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: missing tensor '%s'", r->path, name);
    const uint32_t want_dims = rows ? 2 : 1;
    const uint64_t want_rows = rows ? rows : 1;
    if (e->n_dims != want_dims || e->rows != want_rows || e->cols != cols)
        return tlm_seterr(r->err, TLM_ERR_FORMAT,
                          "%s: tensor '%s' has shape (%" PRIu64 ", %" PRIu64 "), expected (%" PRIu64
                          ", %" PRIu64 ")", r->path, name, e->rows, e->cols, want_rows, cols);
    if (ld->used[index])
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: tensor '%s' is used twice", r->path, name);
    ld->used[index] = true;
    if (tlm_dtype_is_quant(e->dtype)) {
        if (!packable || !rows)
            return tlm_seterr(r->err, TLM_ERR_FORMAT,
                              "%s: tensor '%s' is stored as %s, which only weight matrices may be",
                              r->path, name, tlm_dtype_name(e->dtype));
        /* A NaN or Inf scale would turn every output it touches into NaN;
         * the checksums cannot tell (they cover whatever was written). One
         * pass over the scales (1/17 of an int8 matrix's bytes, 1/9 of an
         * int4's), which also brings the mapping's pages in. */
        int64_t bad_row, bad_group;
        if (tlm_qpacked_find_nonfinite_scale((tlm_qtype)e->dtype, r->map + r->h.data_offset + e->offset,
                                             (int64_t)rows, (int64_t)cols, &bad_row, &bad_group))
            return tlm_seterr(r->err, TLM_ERR_FORMAT,
                              "%s: tensor '%s': the scale of row %" PRId64 ", inputs %" PRId64
                              "..%" PRId64 " is not a finite number (NaN or Inf)", r->path, name,
                              bad_row, bad_group * TLM_QGROUP, bad_group * TLM_QGROUP + TLM_QGROUP - 1);
        /* no copy: the mapping outlives the reader (load_model hands it over) */
        *out = (tlm_tensor){.type = (tlm_storage)e->dtype, .rows = (int64_t)rows,
                            .cols = (int64_t)cols,
                            .data = (void *)(r->map + r->h.data_offset + e->offset)};
        ld->m->n_params += (int64_t)(rows * cols);
        ld->m->quant_params += (int64_t)(rows * cols);
        ld->m->quant_bytes += (int64_t)e->bytes;
        ld->mapped = true;
        return TLM_OK;
    }
    float *w = model_alloc_weight(ld->m, want_rows * cols, r->err);
    if (!w) return r->err ? r->err->code : TLM_ERR_NOMEM;
    const uint8_t *src = r->map + r->h.data_offset + e->offset;
    const uint32_t dtype = e->dtype;
    const int64_t n_rows = (int64_t)want_rows;
    int64_t bad_row = n_rows; /* the first row holding a NaN or Inf */
#pragma omp parallel for schedule(static) if (n_rows >= 2 * ROWS_PER_THREAD_MIN) reduction(min : bad_row)
    for (int64_t row = 0; row < n_rows; row++) {
        float *dst = w + (uint64_t)row * cols;
        if (dtype == TLM_DTYPE_F32) {
            memcpy(dst, src + (uint64_t)row * cols * 4, cols * 4);
        } else {
            const uint8_t *s = src + (uint64_t)row * cols * 2;
            for (uint64_t j = 0; j < cols; j++) {
                uint16_t v;
                memcpy(&v, s + 2 * j, 2);
                dst[j] = dtype == TLM_DTYPE_F16 ? tlm_f16_to_f32(v) : tlm_bf16_to_f32(v);
            }
        }
        /* NaN / Inf: every exponent bit set; on the row just written, while
         * it is in cache (integer OR, which vectorizes) */
        uint32_t non_finite = 0;
        for (uint64_t j = 0; j < cols; j++) {
            uint32_t bits;
            memcpy(&bits, dst + j, 4);
            non_finite |= (bits & 0x7F800000u) == 0x7F800000u;
        }
        if (non_finite && row < bad_row) bad_row = row;
    }
    if (bad_row < n_rows)
        return tlm_seterr(r->err, TLM_ERR_FORMAT,
                          "%s: tensor '%s': row %" PRId64 " holds a value that is not a finite "
                          "number (NaN or Inf)", r->path, name, bad_row);
    *out = tensor_of_f32(w, (int64_t)want_rows, (int64_t)cols);
    return TLM_OK;
}

/* Appends the graph node's sublayer, its tensors as the table lists them. */
static tlm_status load_sublayer(tlm_loader *ld, const graph_node *node) {
    struct tlm_model *m = ld->m;
    const tlm_hparams *hp = &m->hp;
    const tlm_sublayer_kind kind = node->is_attn ? TLM_SUBLAYER_ATTN : TLM_SUBLAYER_MLP;
    tlm_sublayer *S = model_add_sublayer(m, kind, node->layer);
    int n_specs;
    const tensor_spec *specs = tensor_specs_sublayer(hp->arch, kind, &n_specs);
    char name[TLM_TENSOR_NAME_MAX];
    for (int k = 0; k < n_specs; k++) {
        const tensor_spec *sp = &specs[k];
        if (!tensor_spec_held(sp, hp)) continue;
        tensor_spec_name(sp, node->layer, name, sizeof name);
        const uint64_t rows = sp->rows == DIM_ONE ? 0 : (uint64_t)tensor_spec_dim(hp, sp->rows);
        tlm_status st = load_tensor(ld, name, rows, (uint64_t)tensor_spec_dim(hp, sp->cols),
                                    rows != 0, &S->w[sp->slot]);
        if (st) return st;
    }
    return TLM_OK;
}

/* A part of the tokenizer section named in the metadata, bounds-checked. */
static tlm_status tokenizer_part(const tlm_reader *r, const cJSON *part, const char **name,
                                 const uint8_t **data, uint64_t *bytes) {
    const cJSON *off = jget(part, "offset"), *len = jget(part, "bytes");
    *name = meta_str(part, "name");
    double o = cJSON_IsNumber(off) ? off->valuedouble : -1, n = cJSON_IsNumber(len) ? len->valuedouble : -1;
    if (!*name || o < 0 || n < 0 || o != floor(o) || n != floor(n) || o > (double)r->h.tok_bytes ||
        n > (double)r->h.tok_bytes - o)
        return tlm_seterr(r->err, TLM_ERR_FORMAT,
                          "%s: metadata 'tokenizer.parts' has an entry outside the tokenizer section",
                          r->path);
    *data = r->map + r->h.tok_offset + (uint64_t)o;
    *bytes = (uint64_t)n;
    return TLM_OK;
}

static tlm_status load_tokenizer(const tlm_reader *r, struct tlm_model *m) {
    const cJSON *t = jget(r->meta, "tokenizer");
    const char *format = meta_str(t, "format");
    const cJSON *parts = jget(t, "parts");
    int n_parts = cJSON_IsArray(parts) ? cJSON_GetArraySize(parts) : 0;
    if (!format || n_parts < 1 || n_parts > TLM_TOK_MAX_PARTS)
        return tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: metadata 'tokenizer' is missing or malformed",
                          r->path);
    const char *names[TLM_TOK_MAX_PARTS];
    const uint8_t *data[TLM_TOK_MAX_PARTS];
    uint64_t bytes[TLM_TOK_MAX_PARTS];
    for (int i = 0; i < n_parts; i++) {
        tlm_status st = tokenizer_part(r, cJSON_GetArrayItem(parts, i), &names[i], &data[i], &bytes[i]);
        if (st) return st;
    }
    char label[4200];
    snprintf(label, sizeof label, "%s (tokenizer)", r->path);
    if (strcmp(format, "gguf-kv") == 0 && n_parts == 1) {
        gguf_file *g = gguf_open_memory(data[0], (size_t)bytes[0], label, r->err);
        if (!g) return r->err ? r->err->code : TLM_ERR_FORMAT;
        m->tok = tokenizer_from_gguf(g, r->err);
        gguf_close(g);
    } else if (strcmp(format, "hf-json") == 0) {
        m->tok = tokenizer_from_hf_memory((const char *)data[0], (size_t)bytes[0],
                                          n_parts > 1 ? (const char *)data[1] : NULL,
                                          n_parts > 1 ? (size_t)bytes[1] : 0, label, r->err);
    } else {
        return tlm_seterr(r->err, TLM_ERR_UNSUPPORTED, "%s: tokenizer format '%.40s' is not supported",
                          r->path, format);
    }
    if (!m->tok) return r->err && r->err->code ? r->err->code : TLM_ERR_FORMAT;
    if (tokenizer_n_vocab(m->tok) > m->hp.n_vocab)
        return tlm_seterr(r->err, TLM_ERR_FORMAT,
                          "%s: the tokenizer has %d tokens but the embedding only %d rows", r->path,
                          tokenizer_n_vocab(m->tok), m->hp.n_vocab);
    return TLM_OK;
}

static tlm_status load_model(tlm_reader *r, struct tlm_model *m) {
    tlm_status st;
    if ((st = read_hparams(r, &m->hp))) return st;
    const tlm_hparams *hp = &m->hp;
    m->source_format = "tlm";
    const char *name = meta_str(r->meta, "name"), *tmpl = meta_str(r->meta, "chat_template");
    if (!(m->arch_name = tlm_strdup(hp->arch == TLM_ARCH_QWEN2 ? "qwen2" : "llama")) ||
        (name && !(m->name = tlm_strdup(name))) || (tmpl && !(m->chat_template = tlm_strdup(tmpl))))
        return tlm_seterr(r->err, TLM_ERR_NOMEM, "%s: out of memory", r->path);
    if ((st = load_tokenizer(r, m))) return st;

    graph_node *nodes = tlm_calloc((size_t)hp->n_layer * 2, sizeof *nodes);
    tlm_loader ld = {.r = r, .m = m, .used = tlm_calloc(r->h.n_tensors + 1u, sizeof(bool))};
    int32_t n_nodes = 0;
    if (!nodes || !ld.used || model_alloc_sublayers(m, r->path, r->err) != TLM_OK) {
        st = tlm_seterr(r->err, TLM_ERR_NOMEM, "%s: out of memory", r->path);
        goto done;
    }
    if ((st = read_graph(r, hp, nodes, &n_nodes))) goto done;
    const uint64_t V = (uint64_t)hp->n_vocab, E = (uint64_t)hp->n_embd;
    if ((st = load_tensor(&ld, tensor_spec_model(hp->arch, MODEL_TOK_EMBD)->gguf, V, E, true,
                          &m->tok_embd)) ||
        (st = load_tensor(&ld, tensor_spec_model(hp->arch, MODEL_OUT_NORM)->gguf, 0, E, false,
                          &m->out_norm)))
        goto done;
    if (hp->tied_embeddings) {
        m->output = m->tok_embd;
    } else if ((st = load_tensor(&ld, tensor_spec_model(hp->arch, MODEL_OUTPUT)->gguf, V, E, true,
                                 &m->output))) {
        goto done;
    }
    for (int32_t i = 0; i < n_nodes; i++)
        if ((st = load_sublayer(&ld, &nodes[i]))) goto done;
    for (uint32_t i = 0; i < r->h.n_tensors; i++)
        if (!ld.used[i]) {
            st = tlm_seterr(r->err, TLM_ERR_FORMAT, "%s: tensor '%s' is not part of the model's graph",
                            r->path, r->entries[i].name);
            goto done;
        }
    if (ld.mapped) { /* the model keeps the mapping; reader_close leaves it */
        m->map = r->map;
        m->map_bytes = r->size;
        r->map = NULL;
    }
done:
    tlm_free(nodes);
    tlm_free(ld.used);
    return st;
}

struct tlm_model *model_load_tlm(const char *path, tlm_error *err) {
    tlm_clearerr(err);
    tlm_error local;
    tlm_clearerr(&local);
    tlm_reader r;
    struct tlm_model *m = NULL;
    tlm_status st = reader_open(&r, path, &local);
    if (!st && !(m = tlm_calloc(1, sizeof *m)))
        st = tlm_seterr(&local, TLM_ERR_NOMEM, "%s: out of memory", path);
    if (!st) st = load_model(&r, m);
    reader_close(&r);
    if (st) {
        if (err) *err = local;
        tlm_model_free(m);
        return NULL;
    }
    return m;
}

tlm_status read_tokenizer_blob(const char *path, tlm_tokenizer_blob *out, tlm_error *err) {
    memset(out, 0, sizeof *out);
    tlm_reader r;
    tlm_status st = reader_open(&r, path, err);
    const cJSON *t = r.meta ? jget(r.meta, "tokenizer") : NULL;
    const cJSON *parts = jget(t, "parts");
    const char *format = meta_str(t, "format");
    int n_parts = cJSON_IsArray(parts) ? cJSON_GetArraySize(parts) : 0;
    if (!st && (!format || n_parts < 1 || n_parts > TLM_TOK_MAX_PARTS))
        st = tlm_seterr(err, TLM_ERR_FORMAT, "%s: metadata 'tokenizer' is missing or malformed", path);
    if (!st) snprintf(out->format, sizeof out->format, "%s", format);
    for (int i = 0; !st && i < n_parts; i++) {
        const char *name;
        const uint8_t *data;
        uint64_t bytes;
        if ((st = tokenizer_part(&r, cJSON_GetArrayItem(parts, i), &name, &data, &bytes))) break;
        snprintf(out->part_name[i], sizeof out->part_name[i], "%s", name);
        if (!(out->part_data[i] = tlm_malloc(bytes ? (size_t)bytes : 1))) {
            st = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        memcpy(out->part_data[i], data, (size_t)bytes);
        out->part_bytes[i] = bytes;
        out->n_parts = i + 1;
    }
    reader_close(&r);
    if (st) tokenizer_blob_free(out);
    return st;
}

/* ------------------------------------------------------- verification */

tlm_status tlm_file_verify(const char *path, tlm_progress_fn progress, void *user, tlm_error *err) {
    tlm_clearerr(err);
    if (!path) return tlm_seterr(err, TLM_ERR_ARG, "no model path given");
    tlm_reader r;
    tlm_status st = reader_open(&r, path, err);
    const uint64_t total = r.h.data_bytes;
    uint64_t done = 0;
    for (uint32_t i = 0; !st && i < r.h.n_tensors; i++) {
        const tlm_tensor_entry *e = &r.entries[i];
        if (XXH3_64bits(r.map + r.h.data_offset + e->offset, (size_t)e->bytes) != e->checksum)
            st = tlm_seterr(err, TLM_ERR_FORMAT, "%s: tensor '%s' is damaged (checksum mismatch)",
                            path, e->name);
        done += e->bytes;
        if (!st && progress && !progress(user, "verify", done, total))
            st = tlm_seterr(err, TLM_ERR_ARG, "%s: verification cancelled", path);
    }
    if (!st) {
        /* what the tensors do not cover: padding between them */
        XXH3_state_t *hs = XXH3_createState();
        if (!hs) {
            st = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
        } else {
            XXH3_64bits_reset(hs);
            for (uint64_t at = TLM_HEADER_BYTES; at < r.h.file_bytes; at += VERIFY_STEP_BYTES) {
                uint64_t n = r.h.file_bytes - at < VERIFY_STEP_BYTES ? r.h.file_bytes - at : VERIFY_STEP_BYTES;
                XXH3_64bits_update(hs, r.map + at, (size_t)n);
            }
            if (XXH3_64bits_digest(hs) != r.h.file_checksum)
                st = tlm_seterr(err, TLM_ERR_FORMAT,
                                "%s: the file is damaged outside the tensors (whole-file checksum "
                                "mismatch)", path);
            XXH3_freeState(hs);
        }
    }
    reader_close(&r);
    /* Intact bytes can still hold what loading refuses (a graph that lists
     * the wrong tensors, a NaN scale, an infinite RoPE base, written so by a
     * faulty writer): "verified" must mean that the model loads. */
    if (!st) {
        struct tlm_model *m = model_load_tlm(path, err);
        if (!m) st = err && err->code != TLM_OK ? err->code : TLM_ERR_FORMAT;
        tlm_model_free(m);
    }
    return st;
}

/* ------------------------------------------------------- descriptions */

typedef struct desc_impl {
    tlm_file_desc pub; /* first: the public pointer is this struct's */
    char **strings;    /* every string the description owns */
    int32_t n_strings, cap_strings;
    tlm_tensor_desc *tensors;
    tlm_sublayer_desc *subs;
    tlm_sublayer_desc *dropped;
    float *scores; /* 3 x n_layer: attn, mlp, block */
    bool oom;
} desc_impl;

static const char *desc_str(desc_impl *d, const char *s, size_t len) {
    if (!s || d->oom) return NULL;
    if (d->n_strings == d->cap_strings) {
        int32_t cap = d->cap_strings ? d->cap_strings * 2 : 64;
        char **grown = tlm_realloc(d->strings, (size_t)cap * sizeof *grown);
        if (!grown) { d->oom = true; return NULL; }
        d->strings = grown;
        d->cap_strings = cap;
    }
    char *c = tlm_strndup(s, len);
    if (!c) { d->oom = true; return NULL; }
    for (char *p = c; *p; p++) /* printed as is by info: keep it one printable line */
        if ((unsigned char)*p < 0x20) *p = '?';
    d->strings[d->n_strings++] = c;
    return c;
}

void tlm_file_desc_free(tlm_file_desc *pub) {
    if (!pub) return;
    desc_impl *d = (desc_impl *)pub;
    for (int32_t i = 0; i < d->n_strings; i++) tlm_free(d->strings[i]);
    tlm_free(d->strings);
    tlm_free(d->tensors);
    tlm_free(d->subs);
    tlm_free(d->dropped);
    tlm_free(d->scores);
    tlm_free(d);
}

static void fill_info(desc_impl *d, const tlm_hparams *hp, const char *arch, const char *name) {
    tlm_model_info *in = &d->pub.info;
    *in = (tlm_model_info){
        .arch = desc_str(d, arch, strlen(arch)),
        .name = desc_str(d, name ? name : "", name ? strlen(name) : 0),
        .n_vocab = hp->n_vocab, .n_embd = hp->n_embd, .n_layer = hp->n_layer,
        .n_head = hp->n_head, .n_head_kv = hp->n_head_kv, .head_dim = hp->head_dim,
        .n_ff = hp->n_ff, .n_ctx_train = hp->n_ctx_train, .rope_theta = hp->rope_theta,
        .rms_eps = hp->rms_eps, .tied_embeddings = hp->tied_embeddings,
        .output_absent = hp->tied_by_absence, .source_format = d->pub.format,
    };
}

/* The optional keys of a converted file (tlm_format.h): importance scores,
 * dropped sublayers, calibration settings, quantization method. Files
 * without them (or with malformed values) simply describe less. */
static tlm_status describe_pruning(desc_impl *d, const tlm_reader *r, int32_t n_layer,
                                   tlm_error *err) {
    tlm_file_desc *pub = &d->pub;
    const char *method = meta_str(jget(r->meta, "convert"), "quant_method");
    pub->quant_method = method ? desc_str(d, method, strlen(method)) : NULL;
    const cJSON *imp = jget(r->meta, "importance");
    if (cJSON_IsObject(imp)) {
        static const char *const keys[3] = {"attn", "mlp", "block"};
        if (!(d->scores = tlm_malloc((size_t)n_layer * 3 * sizeof *d->scores)))
            return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", r->path);
        for (int k = 0; k < 3; k++) {
            const cJSON *arr = jget(imp, keys[k]);
            const bool ok = cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == n_layer;
            for (int32_t il = 0; il < n_layer; il++) {
                const cJSON *v = ok ? cJSON_GetArrayItem(arr, il) : NULL;
                d->scores[k * n_layer + il] = cJSON_IsNumber(v) ? (float)v->valuedouble : NAN;
            }
        }
        pub->attn_scores = d->scores;
        pub->mlp_scores = d->scores + n_layer;
        pub->block_scores = d->scores + 2 * n_layer;
    }
    const cJSON *dropped = jget(r->meta, "dropped");
    if (cJSON_IsArray(dropped) && cJSON_GetArraySize(dropped) > 0) {
        const int n = cJSON_GetArraySize(dropped);
        if (n > 2 * n_layer)
            return tlm_seterr(err, TLM_ERR_FORMAT, "%s: metadata 'dropped' lists %d sublayers of %d",
                              r->path, n, 2 * n_layer);
        if (!(d->dropped = tlm_calloc((size_t)n, sizeof *d->dropped)))
            return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", r->path);
        const cJSON *item;
        cJSON_ArrayForEach(item, dropped) {
            const char *kind = meta_str(item, "kind");
            const cJSON *layer = jget(item, "layer"), *score = jget(item, "score");
            if (!kind || (strcmp(kind, "attn") != 0 && strcmp(kind, "mlp") != 0) ||
                !cJSON_IsNumber(layer) || layer->valuedouble < 0 || layer->valuedouble >= n_layer)
                return tlm_seterr(err, TLM_ERR_FORMAT, "%s: metadata 'dropped' entry %d is invalid",
                                  r->path, pub->n_dropped);
            tlm_sublayer_desc *s = &d->dropped[pub->n_dropped++];
            s->kind = strcmp(kind, "attn") == 0 ? "attn" : "mlp";
            s->layer = (int32_t)layer->valuedouble;
            s->has_score = cJSON_IsNumber(score);
            s->score = s->has_score ? (float)score->valuedouble : NAN;
        }
        pub->dropped = d->dropped;
    }
    const cJSON *cal = jget(r->meta, "calibration");
    if (cJSON_IsObject(cal)) {
        const char *text = meta_str(cal, "text");
        const cJSON *tokens = jget(cal, "tokens"), *seq = jget(cal, "seq_len"),
                    *secs = jget(cal, "seconds");
        pub->calib_text = desc_str(d, text ? text : "?", text ? strlen(text) : 1);
        pub->calib_tokens = cJSON_IsNumber(tokens) ? (int64_t)tokens->valuedouble : 0;
        pub->calib_seq_len = cJSON_IsNumber(seq) ? (int32_t)seq->valuedouble : 0;
        pub->calib_seconds = cJSON_IsNumber(secs) ? secs->valuedouble : 0.0;
    }
    return TLM_OK;
}

static tlm_status describe_tlm(desc_impl *d, const char *path, tlm_error *err) {
    tlm_reader r;
    tlm_status st = reader_open(&r, path, err);
    tlm_hparams hp;
    graph_node *nodes = NULL;
    int32_t n_nodes = 0;
    if (!st) st = read_hparams(&r, &hp);
    if (!st && !(nodes = tlm_calloc((size_t)hp.n_layer * 2, sizeof *nodes)))
        st = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
    if (!st) st = read_graph(&r, &hp, nodes, &n_nodes);
    if (st) goto done;
    tlm_file_desc *pub = &d->pub;
    pub->format = "tlm";
    pub->format_version = r.h.version;
    pub->file_bytes = r.h.file_bytes;
    pub->file_checksum = r.h.file_checksum;
    fill_info(d, &hp, meta_str(r.meta, "architecture"), meta_str(r.meta, "name"));
    const char *src = meta_str(jget(r.meta, "source"), "file");
    const char *type = meta_str(jget(r.meta, "convert"), "type");
    pub->source = src ? desc_str(d, src, strlen(src)) : NULL;
    pub->convert_type = type ? desc_str(d, type, strlen(type)) : NULL;
    pub->has_chat_template = meta_str(r.meta, "chat_template") != NULL;
    d->tensors = tlm_calloc(r.h.n_tensors + 1u, sizeof *d->tensors);
    d->subs = tlm_calloc((size_t)n_nodes + 1, sizeof *d->subs);
    if (!d->tensors || !d->subs) {
        st = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (uint32_t i = 0; i < r.h.n_tensors; i++) {
        const tlm_tensor_entry *e = &r.entries[i];
        d->tensors[i] = (tlm_tensor_desc){
            .name = desc_str(d, e->name, strlen(e->name)), .type = tlm_dtype_name(e->dtype),
            .n_dims = (int32_t)e->n_dims, .rows = (int64_t)e->rows, .cols = (int64_t)e->cols,
            .offset = r.h.data_offset + e->offset, .bytes = e->bytes};
        pub->tensor_bytes += e->bytes;
        pub->n_weights += (int64_t)(e->rows * e->cols);
        /* once loaded: quantized tensors stay as stored, the others become f32 */
        pub->info.weight_bytes += tlm_dtype_is_quant(e->dtype) ? (int64_t)e->bytes
                                                                : (int64_t)(e->rows * e->cols) * 4;
    }
    pub->n_tensors = (int32_t)r.h.n_tensors;
    for (int32_t i = 0; i < n_nodes; i++) {
        tlm_sublayer_desc *s = &d->subs[i];
        s->kind = nodes[i].is_attn ? "attn" : "mlp";
        s->layer = nodes[i].layer;
        s->has_score = nodes[i].has_score;
        s->score = nodes[i].score;
        const cJSON *name;
        cJSON_ArrayForEach(name, nodes[i].tensors) {
            const tlm_tensor_entry *e = find_entry(&r, name->valuestring, NULL);
            s->n_tensors++;
            if (e) s->n_params += (int64_t)(e->rows * e->cols);
        }
        pub->n_attn_sublayers += nodes[i].is_attn;
    }
    pub->n_sublayers = n_nodes;
    pub->info.n_params = pub->n_weights;
    st = describe_pruning(d, &r, hp.n_layer, err);
done:
    tlm_free(nodes);
    reader_close(&r);
    return st;
}

/* The full graph of a model loaded from GGUF or safetensors: its sublayer
 * list (a pruned "deci" GGUF lacks some), each with its tensors' sizes. */
static tlm_status describe_graph(desc_impl *d, const struct tlm_model *m, tlm_error *err) {
    const tlm_hparams *hp = &m->hp;
    d->subs = tlm_calloc((size_t)hp->n_layer * 2, sizeof *d->subs);
    if (!d->subs) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", d->pub.path);
    for (int32_t i = 0; i < m->n_subs; i++) {
        const tlm_sublayer *S = &m->subs[i];
        int n_specs;
        const tensor_spec *specs = tensor_specs_sublayer(hp->arch, S->kind, &n_specs);
        tlm_sublayer_desc *sd = &d->subs[i];
        *sd = (tlm_sublayer_desc){.kind = S->kind == TLM_SUBLAYER_ATTN ? "attn" : "mlp",
                                  .layer = S->layer,
                                  .window = S->kind == TLM_SUBLAYER_ATTN ? tlm_model_attn_window(m, S->layer) : 0};
        for (int k = 0; k < n_specs; k++) {
            if (!tensor_spec_held(&specs[k], hp)) continue;
            sd->n_tensors++;
            sd->n_params += tensor_spec_dim(hp, specs[k].rows) * tensor_spec_dim(hp, specs[k].cols);
        }
    }
    d->pub.n_sublayers = m->n_subs;
    d->pub.n_attn_sublayers = m->n_attn;
    return TLM_OK;
}

static tlm_status describe_gguf_tensors(desc_impl *d, const char *path, tlm_error *err) {
    gguf_file *g = gguf_open(path, err);
    if (!g) return err ? err->code : TLM_ERR_FORMAT;
    uint64_t n = gguf_n_tensors(g);
    tlm_status st = TLM_OK;
    d->tensors = tlm_calloc((size_t)n + 1, sizeof *d->tensors);
    if (!d->tensors || n > INT32_MAX) {
        st = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
    } else {
        for (uint64_t i = 0; i < n; i++) {
            const gguf_tensor *t = gguf_tensor_at(g, i);
            char type[32];
            snprintf(type, sizeof type, "%s", ggml_type_name(t->type));
            for (char *c = type; *c; c++) *c = (char)tolower((unsigned char)*c);
            uint64_t rows = 1;
            for (uint32_t k = 1; k < t->n_dims; k++) rows *= t->ne[k];
            d->tensors[i] = (tlm_tensor_desc){
                .name = desc_str(d, t->name.ptr, (size_t)t->name.len), .type = desc_str(d, type, strlen(type)),
                .n_dims = (int32_t)t->n_dims, .rows = (int64_t)rows, .cols = (int64_t)t->ne[0],
                .bytes = t->nbytes};
            d->pub.tensor_bytes += t->nbytes;
            d->pub.n_weights += (int64_t)(rows * t->ne[0]);
        }
        d->pub.n_tensors = (int32_t)n;
        d->pub.format_version = gguf_version(g);
        d->pub.file_bytes = gguf_file_size(g);
    }
    gguf_close(g);
    return st;
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

static tlm_status describe_hf_tensors(desc_impl *d, const char *dir, tlm_error *err) {
    st_set *set = st_open_dir(dir, err);
    if (!set) return err ? err->code : TLM_ERR_FORMAT;
    size_t n = st_n_tensors(set);
    tlm_status st = TLM_OK;
    d->tensors = tlm_calloc(n + 1, sizeof *d->tensors);
    if (!d->tensors || n > INT32_MAX) {
        st = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dir);
    } else {
        static const char *const dtypes[] = {"?", "f32", "f16", "bf16", "other"};
        for (size_t i = 0; i < n; i++) {
            const st_tensor *t = st_tensor_at(set, i);
            uint64_t cols = t->n_dims ? t->shape[t->n_dims - 1] : 1;
            d->tensors[i] = (tlm_tensor_desc){
                .name = desc_str(d, t->name, strlen(t->name)),
                .type = dtypes[t->dtype <= ST_OTHER ? t->dtype : ST_OTHER],
                .n_dims = (int32_t)t->n_dims, .rows = (int64_t)(cols ? t->n_elements / cols : 0),
                .cols = (int64_t)cols, .bytes = t->nbytes};
            d->pub.tensor_bytes += t->nbytes;
            d->pub.n_weights += (int64_t)t->n_elements;
        }
        d->pub.n_tensors = (int32_t)n;
    }
    st_close(set);
    /* the checkpoint's bytes: its weights and JSON files */
    DIR *dh = opendir(dir);
    struct dirent *de;
    while (dh && (de = readdir(dh))) {
        if (!has_suffix(de->d_name, ".safetensors") && !has_suffix(de->d_name, ".json")) continue;
        char p[4096];
        struct stat s;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (stat(p, &s) == 0 && S_ISREG(s.st_mode)) d->pub.file_bytes += (uint64_t)s.st_size;
    }
    if (dh) closedir(dh);
    return st;
}

static tlm_status describe_loaded(desc_impl *d, const char *path, bool is_dir, tlm_error *err) {
    tlm_model *m = tlm_model_load(path, err);
    if (!m) return err && err->code ? err->code : TLM_ERR_FORMAT;
    d->pub.format = is_dir ? "safetensors" : "gguf";
    fill_info(d, &m->hp, m->arch_name, m->name);
    d->pub.has_chat_template = tlm_model_chat_template(m) != NULL;
    tlm_status st = describe_graph(d, m, err);
    if (!st) st = is_dir ? describe_hf_tensors(d, path, err) : describe_gguf_tensors(d, path, err);
    d->pub.info.n_params = m->n_params;
    tlm_model_free(m);
    return st;
}

tlm_file_desc *tlm_file_describe(const char *path, tlm_error *err) {
    tlm_clearerr(err);
    tlm_error local;
    tlm_clearerr(&local);
    if (!path || !*path) {
        tlm_seterr(err, TLM_ERR_ARG, "no model path given");
        return NULL;
    }
    struct stat s;
    if (stat(path, &s) != 0) {
        tlm_seterr(err, TLM_ERR_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    desc_impl *d = tlm_calloc(1, sizeof *d);
    if (!d) {
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    d->pub.path = desc_str(d, path, strlen(path));
    tlm_status st;
    if (!S_ISDIR(s.st_mode) && model_is_tlm_file(path)) st = describe_tlm(d, path, &local);
    else st = describe_loaded(d, path, S_ISDIR(s.st_mode), &local);
    if (!st && d->oom) st = tlm_seterr(&local, TLM_ERR_NOMEM, "%s: out of memory", path);
    if (!st) {
        /* what tlm_model_get_info reports once loaded (.tlm: set by describe_tlm) */
        if (strcmp(d->pub.format, "tlm") != 0)
            d->pub.info.weight_bytes = d->pub.info.n_params * (int64_t)sizeof(float);
        d->pub.tensors = d->tensors;
        d->pub.sublayers = d->subs;
        return &d->pub;
    }
    if (err) *err = local;
    tlm_file_desc_free(&d->pub);
    return NULL;
}
