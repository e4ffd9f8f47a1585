/*
 * safetensors.c — read-only safetensors reader (see safetensors.h).
 *
 * File layout:  [u64 LE header_len][header_len bytes of JSON][data section]
 * The JSON object maps tensor names to {"dtype", "shape", "data_offsets":
 * [begin, end]} with offsets relative to the data section, plus an optional
 * "__metadata__" object. Every number is checked before it is used as a size
 * or offset: shapes multiply without overflow, byte ranges lie inside the
 * data section and match dtype size x element count.
 *
 * A set holds one or more mapped files (the shards of a checkpoint) and one
 * name-sorted table of tensors across them, searched with bsearch.
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "fileio.h"
#include "f16.h"

/* Tensor data is little-endian on disk and copied as is. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors.c assumes a little-endian host");

/* A header past this is a corrupt file, not a checkpoint (real headers of
 * 70B-parameter shards are a few hundred KB). */
#define ST_MAX_HEADER_BYTES (100u * 1024u * 1024u)
/* model.safetensors.index.json is a few hundred KB for the largest models. */
#define ST_MAX_INDEX_BYTES (64u * 1024u * 1024u)
/* JSON numbers are doubles: integers above 2^53 are not exact. */
#define ST_MAX_JSON_INT 9007199254740992.0

#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

/* ------------------------------------------------------------ types */

typedef struct st_file {
    char *path;        /* as opened, for messages */
    const uint8_t *map; /* whole file, PROT_READ */
    size_t size;        /* bytes */
} st_file;

/* A tensor plus what only the reader needs; `t` comes first so that an
 * st_tensor pointer handed out can be turned back into its entry. */
typedef struct st_entry {
    st_tensor t;
    const char *path;   /* the file holding it (owned by its st_file) */
    char dtype_name[16]; /* as written in the header, for messages */
} st_entry;

struct st_set {
    st_file *files;
    size_t n_files, cap_files;
    st_entry *entries; /* sorted by name once loading is complete */
    size_t n_entries, cap_entries;
};

typedef struct st_dtype_info {
    const char *name;
    st_dtype dtype;
    uint32_t size; /* bytes per element */
} st_dtype_info;

/* The dtypes of the format. Only the first three are converted; the rest are
 * still size-checked so that a corrupt entry of any type is caught. */
static const st_dtype_info st_dtypes[] = {
    {"F32", ST_F32, 4},      {"F16", ST_F16, 2},      {"BF16", ST_BF16, 2},
    {"F64", ST_OTHER, 8},    {"I64", ST_OTHER, 8},    {"U64", ST_OTHER, 8},
    {"I32", ST_OTHER, 4},    {"U32", ST_OTHER, 4},    {"I16", ST_OTHER, 2},
    {"U16", ST_OTHER, 2},    {"I8", ST_OTHER, 1},     {"U8", ST_OTHER, 1},
    {"BOOL", ST_OTHER, 1},   {"F8_E4M3", ST_OTHER, 1}, {"F8_E5M2", ST_OTHER, 1},
};

/* ------------------------------------------------------------ paths, numbers, files */

/* A JSON number that is a non-negative integer exactly representable. */
static bool json_to_u64(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double v = item->valuedouble;
    if (!(v >= 0 && v <= ST_MAX_JSON_INT) || v != (double)(uint64_t)v) return false;
    *out = (uint64_t)v;
    return true;
}

/* ------------------------------------------------------------ set building */

static st_set *set_new(tlm_error *err) {
    st_set *s = tlm_calloc(1, sizeof *s);
    if (!s) tlm_seterr(err, TLM_ERR_NOMEM, "out of memory for a safetensors set");
    return s;
}

void st_close(st_set *s) {
    if (!s) return;
    for (size_t i = 0; i < s->n_entries; i++) tlm_free((char *)s->entries[i].t.name);
    tlm_free(s->entries);
    for (size_t i = 0; i < s->n_files; i++) {
        if (s->files[i].map) munmap((void *)s->files[i].map, s->files[i].size);
        tlm_free(s->files[i].path);
    }
    tlm_free(s->files);
    tlm_free(s);
}

static st_entry *set_push_entry(st_set *s, const char *path, tlm_error *err) {
    if (s->n_entries == s->cap_entries) {
        size_t cap = s->cap_entries ? s->cap_entries * 2 : 256;
        st_entry *grown = tlm_realloc(s->entries, cap * sizeof *grown);
        if (!grown) {
            tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the tensor table", path);
            return NULL;
        }
        s->entries = grown;
        s->cap_entries = cap;
    }
    st_entry *e = &s->entries[s->n_entries];
    memset(e, 0, sizeof *e);
    return e;
}

/* Parses one header entry {dtype, shape, data_offsets} into e. data_size is
 * the size of the file's data section in bytes. */
static tlm_status parse_entry(const char *path, const cJSON *item, const uint8_t *data,
                              uint64_t data_size, st_entry *e, tlm_error *err) {
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object",
                          path, name);

    const cJSON *jdtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(jdtype))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: tensor '%s': \"dtype\" is %s, not a string",
                          path, name, jdtype ? "of the wrong type" : "missing");
    const st_dtype_info *info = NULL;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(jdtype->valuestring, st_dtypes[i].name) == 0) info = &st_dtypes[i];
    e->t.dtype = info ? info->dtype : ST_OTHER;
    snprintf(e->dtype_name, sizeof e->dtype_name, "%s", jdtype->valuestring);

    const cJSON *jshape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(jshape))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: tensor '%s': \"shape\" is %s, not an array",
                          path, name, jshape ? "of the wrong type" : "missing");
    int n_dims = cJSON_GetArraySize(jshape);
    if (n_dims > ST_MAX_DIMS)
        return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                          "%s: tensor '%s' has %d dimensions (at most %d are supported)", path,
                          name, n_dims, ST_MAX_DIMS);
    e->t.n_dims = (uint32_t)n_dims;
    uint64_t n_elements = 1;
    int d = 0;
    for (const cJSON *dim = jshape->child; dim; dim = dim->next, d++) {
        uint64_t v;
        if (!json_to_u64(dim, &v))
            return tlm_seterr(err, TLM_ERR_FORMAT,
                              "%s: tensor '%s': shape[%d] is not a non-negative integer", path,
                              name, d);
        if (__builtin_mul_overflow(n_elements, v, &n_elements))
            return tlm_seterr(err, TLM_ERR_FORMAT,
                              "%s: tensor '%s': the element count of its shape overflows", path,
                              name);
        e->t.shape[d] = v;
    }
    e->t.n_elements = n_elements;

    const cJSON *joffs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    uint64_t begin, end;
    if (!cJSON_IsArray(joffs) || cJSON_GetArraySize(joffs) != 2 ||
        !json_to_u64(joffs->child, &begin) || !json_to_u64(joffs->child->next, &end))
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: tensor '%s': \"data_offsets\" is not [begin, end] of "
                          "non-negative integers",
                          path, name);
    if (begin > end || end > data_size)
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] lie outside the data "
                          "section of %llu bytes (file truncated?)",
                          path, name, (unsigned long long)begin, (unsigned long long)end,
                          (unsigned long long)data_size);
    if (info) {
        uint64_t want;
        if (__builtin_mul_overflow(n_elements, (uint64_t)info->size, &want) ||
            want != end - begin)
            return tlm_seterr(err, TLM_ERR_FORMAT,
                              "%s: tensor '%s': %llu bytes in data_offsets, but its shape and "
                              "dtype %s need %llu elements x %u bytes",
                              path, name, (unsigned long long)(end - begin), info->name,
                              (unsigned long long)n_elements, info->size);
    }
    e->t.data = data + begin;
    e->t.nbytes = end - begin;
    return TLM_OK;
}

/* Maps path and appends its tensors to s. */
static tlm_status set_add_file(st_set *s, const char *path, tlm_error *err) {
    if (s->n_files == s->cap_files) {
        size_t cap = s->cap_files ? s->cap_files * 2 : 4;
        st_file *grown = tlm_realloc(s->files, cap * sizeof *grown);
        if (!grown) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
        s->files = grown;
        s->cap_files = cap;
    }
    st_file *f = &s->files[s->n_files];
    memset(f, 0, sizeof *f);
    f->path = tlm_strdup(path);
    if (!f->path) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
    s->n_files++; /* from here on st_close releases it */

    const void *map;
    size_t size;
    tlm_status st = map_whole_file(path, &map, &size, err);
    if (st) return st;
    f->map = map;
    f->size = size;
    if (size < 8)
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: file of %zu bytes is too short for a safetensors header", path, size);

    uint64_t header_len = 0;
    for (int i = 0; i < 8; i++) header_len |= (uint64_t)f->map[i] << (8 * i);
    if (header_len > f->size - 8)
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: header length %llu is larger than the file (%zu bytes; truncated "
                          "or not a safetensors file?)",
                          path, (unsigned long long)header_len, f->size);
    if (header_len > ST_MAX_HEADER_BYTES)
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: header length %llu exceeds the limit of %u bytes", path,
                          (unsigned long long)header_len, ST_MAX_HEADER_BYTES);
    if (header_len < 2)
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: header of %llu bytes cannot be JSON", path,
                          (unsigned long long)header_len);

    /* Copy the header so that the parser sees a terminated string. */
    char *text = tlm_malloc((size_t)header_len + 1);
    if (!text) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the header", path);
    memcpy(text, f->map + 8, (size_t)header_len);
    text[header_len] = '\0';
    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)header_len + 1, &parse_end, false);
    tlm_status rc = TLM_OK;
    if (!root) {
        size_t at = parse_end && parse_end >= text ? (size_t)(parse_end - text) : 0;
        rc = tlm_seterr(err, TLM_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu)",
                        path, at + 8);
        goto done;
    }
    /* The writer pads the header with spaces; anything else after the
     * object means a corrupt header. */
    for (const char *p = parse_end; p < text + header_len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = tlm_seterr(err, TLM_ERR_FORMAT,
                            "%s: header has trailing bytes after the JSON object (at byte %zu)",
                            path, (size_t)(p - text) + 8);
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        rc = tlm_seterr(err, TLM_ERR_FORMAT, "%s: header is not a JSON object", path);
        goto done;
    }

    const uint8_t *data = f->map + 8 + header_len;
    uint64_t data_size = f->size - 8 - header_len;
    for (const cJSON *item = root->child; item; item = item->next) {
        if (!item->string) continue;
        if (strcmp(item->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(item)) {
                rc = tlm_seterr(err, TLM_ERR_FORMAT, "%s: \"__metadata__\" is not a JSON object",
                                path);
                goto done;
            }
            continue;
        }
        st_entry *e = set_push_entry(s, path, err);
        if (!e) {
            rc = err ? err->code : TLM_ERR_NOMEM;
            goto done;
        }
        rc = parse_entry(path, item, data, data_size, e, err);
        if (rc != TLM_OK) goto done;
        e->path = f->path;
        e->t.name = tlm_strdup(item->string);
        if (!e->t.name) {
            rc = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        s->n_entries++;
    }
done:
    cJSON_Delete(root);
    tlm_free(text);
    return rc;
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->t.name, ((const st_entry *)b)->t.name);
}

/* Sorts the table for lookup and rejects a name that occurs twice. */
static tlm_status set_finish(st_set *s, const char *what, tlm_error *err) {
    if (s->n_entries > 1) qsort(s->entries, s->n_entries, sizeof *s->entries, entry_cmp);
    for (size_t i = 1; i < s->n_entries; i++)
        if (strcmp(s->entries[i - 1].t.name, s->entries[i].t.name) == 0)
            return tlm_seterr(err, TLM_ERR_FORMAT, "%s: tensor '%s' is defined twice (%s, %s)",
                              what, s->entries[i].t.name, s->entries[i - 1].path,
                              s->entries[i].path);
    return TLM_OK;
}

/* ------------------------------------------------------------ opening */

st_set *st_open_file(const char *path, tlm_error *err) {
    tlm_clearerr(err);
    st_set *s = set_new(err);
    if (!s) return NULL;
    if (set_add_file(s, path, err) != TLM_OK || set_finish(s, path, err) != TLM_OK) {
        st_close(s);
        return NULL;
    }
    return s;
}

/* A shard named in an index must be a plain file name inside the directory. */
static bool shard_name_ok(const char *name) {
    if (!*name || strchr(name, '/') || strchr(name, '\\')) return false;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return false;
    return true;
}

static int cstr_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static st_set *open_indexed(const char *dir, const char *index_path, tlm_error *err) {
    size_t len = 0;
    char *text = tlm_read_file(index_path, ST_MAX_INDEX_BYTES, &len, err);
    if (!text) return NULL;
    cJSON *root = cJSON_ParseWithLength(text, len + 1);
    st_set *s = NULL;
    const char **shards = NULL; /* shard names, pointers into root */
    size_t n_shards = 0;
    if (!root) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: not valid JSON", index_path);
        goto fail;
    }
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: \"weight_map\" is %s, not a JSON object",
                   index_path, map ? "of the wrong type" : "missing");
        goto fail;
    }
    int n_map = cJSON_GetArraySize(map);
    if (n_map == 0) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: \"weight_map\" is empty", index_path);
        goto fail;
    }
    shards = tlm_calloc((size_t)n_map, sizeof *shards);
    if (!shards) {
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", index_path);
        goto fail;
    }
    for (const cJSON *it = map->child; it; it = it->next) {
        if (!cJSON_IsString(it)) {
            tlm_seterr(err, TLM_ERR_FORMAT, "%s: weight_map entry '%s' is not a file name string",
                       index_path, it->string ? it->string : "");
            goto fail;
        }
        if (!shard_name_ok(it->valuestring)) {
            tlm_seterr(err, TLM_ERR_FORMAT,
                       "%s: shard name '%s' (for '%s') is not a plain file name in the directory",
                       index_path, it->valuestring, it->string ? it->string : "");
            goto fail;
        }
        shards[n_shards++] = it->valuestring;
    }
    /* distinct names, sorted: each shard is opened once */
    qsort(shards, n_shards, sizeof *shards, cstr_cmp);
    size_t n_distinct = 0;
    for (size_t j = 0; j < n_shards; j++)
        if (n_distinct == 0 || strcmp(shards[n_distinct - 1], shards[j]) != 0)
            shards[n_distinct++] = shards[j];
    n_shards = n_distinct;

    s = set_new(err);
    if (!s) goto fail;
    for (size_t j = 0; j < n_shards; j++) {
        char *shard_path = path_join(dir, shards[j]);
        if (!shard_path) {
            tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", index_path);
            goto fail;
        }
        struct stat st;
        if (stat(shard_path, &st) != 0 && errno == ENOENT) {
            tlm_seterr(err, TLM_ERR_IO, "%s: missing shard (named in %s)", shard_path,
                       ST_INDEX_NAME);
            tlm_free(shard_path);
            goto fail;
        }
        tlm_status rc = set_add_file(s, shard_path, err);
        tlm_free(shard_path);
        if (rc != TLM_OK) goto fail;
    }
    if (set_finish(s, dir, err) != TLM_OK) goto fail;

    /* Every tensor the index names must be in the shard it names. */
    for (const cJSON *it = map->child; it; it = it->next) {
        const st_tensor *t = st_find(s, it->string);
        if (!t) {
            tlm_seterr(err, TLM_ERR_FORMAT,
                       "%s: tensor '%s' is listed in %s but absent from its shard %s", dir,
                       it->string, ST_INDEX_NAME, it->valuestring);
            goto fail;
        }
        const char *holder = ((const st_entry *)t)->path;
        const char *base = strrchr(holder, '/');
        base = base ? base + 1 : holder;
        if (strcmp(base, it->valuestring) != 0) {
            tlm_seterr(err, TLM_ERR_FORMAT,
                       "%s: tensor '%s' is in %s, but %s places it in %s", dir, it->string,
                       base, ST_INDEX_NAME, it->valuestring);
            goto fail;
        }
    }
    tlm_free(shards);
    cJSON_Delete(root);
    tlm_free(text);
    return s;
fail:
    st_close(s);
    tlm_free(shards);
    cJSON_Delete(root);
    tlm_free(text);
    return NULL;
}

st_set *st_open_dir(const char *dir, tlm_error *err) {
    tlm_clearerr(err);
    struct stat st;
    if (stat(dir, &st) != 0) {
        tlm_seterr(err, TLM_ERR_IO, "%s: %s", dir, strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) {
        tlm_seterr(err, TLM_ERR_IO, "%s: not a directory", dir);
        return NULL;
    }
    char *index_path = path_join(dir, ST_INDEX_NAME);
    char *single_path = path_join(dir, ST_SINGLE_NAME);
    st_set *s = NULL;
    if (!index_path || !single_path) {
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dir);
    } else if (stat(index_path, &st) == 0) {
        s = open_indexed(dir, index_path, err);
    } else if (stat(single_path, &st) == 0) {
        s = st_open_file(single_path, err);
    } else {
        tlm_seterr(err, TLM_ERR_IO, "%s: no %s or %s in the directory", dir, ST_SINGLE_NAME,
                   ST_INDEX_NAME);
    }
    tlm_free(index_path);
    tlm_free(single_path);
    return s;
}

/* ------------------------------------------------------------ access */

size_t st_n_tensors(const st_set *s) { return s ? s->n_entries : 0; }

const st_tensor *st_tensor_at(const st_set *s, size_t i) {
    return s && i < s->n_entries ? &s->entries[i].t : NULL;
}

static int name_cmp(const void *key, const void *elem) {
    return strcmp((const char *)key, ((const st_entry *)elem)->t.name);
}

const st_tensor *st_find(const st_set *s, const char *name) {
    if (!s || !name || s->n_entries == 0) return NULL;
    const st_entry *e = bsearch(name, s->entries, s->n_entries, sizeof *s->entries, name_cmp);
    return e ? &e->t : NULL;
}

void st_tensor_source(const st_set *s, const st_tensor *t, const char **path, uint64_t *file_size,
                      uint64_t *offset) {
    const st_entry *e = (const st_entry *)t;
    *path = e->path;
    *file_size = *offset = 0;
    for (size_t i = 0; i < s->n_files; i++)
        if (s->files[i].path == e->path) { /* the entry borrows its file's string */
            *file_size = s->files[i].size;
            *offset = (uint64_t)((const uint8_t *)t->data - s->files[i].map);
        }
}

tlm_status st_check_f32(const st_tensor *t, tlm_error *err) {
    if (t->dtype != ST_OTHER) return TLM_OK;
    const st_entry *e = (const st_entry *)t;
    return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                      "%s: tensor '%s' has dtype %s (only F32, F16 and BF16 can be loaded)",
                      e->path, t->name, e->dtype_name);
}

void st_convert_f32(st_dtype dtype, const void *raw, uint64_t n_elements, float *dst) {
    const uint8_t *src = raw;
    switch (dtype) {
    case ST_F32:
        memcpy(dst, src, (size_t)n_elements * sizeof(float));
        break;
    case ST_F16:
        for (uint64_t i = 0; i < n_elements; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, sizeof h);
            dst[i] = tlm_f16_to_f32(h);
        }
        break;
    case ST_BF16:
        for (uint64_t i = 0; i < n_elements; i++) {
            uint16_t b;
            memcpy(&b, src + 2 * i, sizeof b);
            dst[i] = tlm_bf16_to_f32(b);
        }
        break;
    case ST_OTHER: /* refused by st_check_f32 */
        break;
    }
}

tlm_status st_to_f32(const st_tensor *t, float *dst, tlm_error *err) {
    tlm_status st = st_check_f32(t, err);
    if (st == TLM_OK) st_convert_f32(t->dtype, t->data, t->n_elements, dst);
    return st;
}
