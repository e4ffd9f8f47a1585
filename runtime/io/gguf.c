/*
 * gguf.c — the GGUF (v2, v3) reader.
 *
 * File layout (little-endian throughout):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv x  { string key, u32 value type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset }
 *   padding to general.alignment (default 32)
 *   data section: tensor data at `offset` from its start
 * where a string is { u64 length, bytes } and an array value is
 * { u32 element type, u64 count, elements } (elements may be arrays again).
 *
 * The whole file is mapped read-only; parsed entries point into the mapping.
 * Every length is checked against the bytes left before it is used, every
 * size computation is overflow-checked, and allocations grow with what has
 * actually been parsed, so a hostile header cannot make us allocate more than
 * a small multiple of the file size.
 */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "fileio.h"
#include "ggml_types.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_ARRAY_DEPTH 8 /* nesting of arrays of arrays we walk through */
#define GGUF_HEADER_BYTES 24   /* magic, version, n_tensors, n_kv */
#define GGUF_MIN_KV_BYTES 13   /* key length, value type, a 1-byte value */
#define GGUF_MIN_TENSOR_BYTES 24 /* name length, n_dims, type, offset */

/* ---------------------------------------------------------- name index */

/* Open-addressing hash from names to entry indices over an array of entries
 * that each hold a gguf_str name at a fixed offset (built once the array has
 * stopped growing). A slot holds index + 1; 0 = empty. The capacity is a power
 * of two, at least twice the entry count. */
typedef struct name_index {
    uint64_t *slots;
    uint64_t mask;
    const uint8_t *entries;
    size_t stride, name_offset;
} name_index;

static uint64_t name_hash(const char *s, uint64_t len) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (uint64_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static bool str_eq_n(gguf_str a, const char *b, uint64_t blen) {
    return a.len == blen && (blen == 0 || memcmp(a.ptr, b, (size_t)blen) == 0);
}

static gguf_str name_index_entry(const name_index *ix, uint64_t i) {
    gguf_str s;
    memcpy(&s, ix->entries + (size_t)i * ix->stride + ix->name_offset, sizeof s);
    return s;
}

static bool name_index_init(name_index *ix, const void *entries, uint64_t n, size_t stride,
                            size_t name_offset) {
    uint64_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    ix->slots = tlm_calloc((size_t)cap, sizeof *ix->slots);
    ix->mask = cap - 1;
    ix->entries = entries;
    ix->stride = stride;
    ix->name_offset = name_offset;
    return ix->slots != NULL;
}

/* The index of the entry called name, or UINT64_MAX. */
static uint64_t name_index_find(const name_index *ix, const char *name, uint64_t len) {
    if (!ix->slots) return UINT64_MAX;
    for (uint64_t s = name_hash(name, len) & ix->mask;; s = (s + 1) & ix->mask) {
        uint64_t v = ix->slots[s];
        if (v == 0) return UINT64_MAX;
        if (str_eq_n(name_index_entry(ix, v - 1), name, len)) return v - 1;
    }
}

/* Adds entry i; when an entry of the same name is already there, adds
 * nothing and returns that entry's index, else UINT64_MAX. */
static uint64_t name_index_insert(name_index *ix, uint64_t i) {
    gguf_str name = name_index_entry(ix, i);
    for (uint64_t s = name_hash(name.ptr, name.len) & ix->mask;; s = (s + 1) & ix->mask) {
        uint64_t v = ix->slots[s];
        if (v == 0) {
            ix->slots[s] = i + 1;
            return UINT64_MAX;
        }
        if (str_eq_n(name_index_entry(ix, v - 1), name.ptr, name.len)) return v - 1;
    }
}

/* ---------------------------------------------------------------- file */

struct gguf_file {
    char *path;
    const uint8_t *map; /* the whole file, read-only */
    size_t size;
    bool borrowed;      /* map is the caller's memory (gguf_open_memory): not unmapped */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset; /* start of the data section in the file */
    uint64_t n_kv, cap_kv;
    gguf_kv *kvs;
    uint64_t n_tensors, cap_tensors;
    gguf_tensor *tensors;
    name_index kv_index, tensor_index;
};

/* ------------------------------------------------------------- cursor */

typedef struct cursor {
    const uint8_t *base;
    size_t size;
    size_t pos;
} cursor;

static bool cur_take(cursor *c, uint64_t n, const uint8_t **out) {
    if (n > c->size - c->pos) return false;
    *out = c->base + c->pos;
    c->pos += (size_t)n;
    return true;
}

static bool cur_u32(cursor *c, uint32_t *v) {
    const uint8_t *p;
    if (!cur_take(c, 4, &p)) return false;
    memcpy(v, p, 4);
    return true;
}

static bool cur_u64(cursor *c, uint64_t *v) {
    const uint8_t *p;
    if (!cur_take(c, 8, &p)) return false;
    memcpy(v, p, 8);
    return true;
}

static bool cur_str(cursor *c, gguf_str *s) {
    uint64_t len;
    const uint8_t *p;
    if (!cur_u64(c, &len) || !cur_take(c, len, &p)) return false;
    s->ptr = (const char *)p;
    s->len = len;
    return true;
}

uint32_t gguf_vtype_size(uint32_t t) {
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: case GGUF_VT_FLOAT64: return 8;
    default: return 0;
    }
}

static bool vtype_known(uint32_t t) { return t <= GGUF_VT_FLOAT64; }

/* ------------------------------------------------------------- parsing */

typedef struct parser {
    gguf_file *f;
    cursor c;
    tlm_error *err;
    char what[160]; /* the entry being read, for messages */
} parser;

static tlm_status truncated(parser *p) {
    return tlm_seterr(p->err, TLM_ERR_FORMAT, "%s: truncated: %s runs past end of file (size %zu)",
                      p->f->path, p->what, p->f->size);
}

/* Prints at most 60 bytes of a name from the file, non-printable bytes as '?'. */
static const char *printable(gguf_str s, char buf[64]) {
    size_t n = s.len < 60 ? (size_t)s.len : 60;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        buf[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (s.len > 60) { buf[57] = buf[58] = buf[59] = '.'; }
    buf[n] = '\0';
    return buf;
}

/* Walks over one array value (after its element type and count) without
 * recording it; nested arrays recurse up to GGUF_MAX_ARRAY_DEPTH. */
static tlm_status skip_array_body(parser *p, uint32_t elem_type, uint64_t count, int depth) {
    const uint8_t *unused;
    if (!vtype_known(elem_type))
        return tlm_seterr(p->err, TLM_ERR_FORMAT, "%s: %s: unknown array element type %" PRIu32,
                          p->f->path, p->what, elem_type);
    uint32_t size = gguf_vtype_size(elem_type);
    if (size) {
        uint64_t bytes;
        if (__builtin_mul_overflow(count, (uint64_t)size, &bytes) || !cur_take(&p->c, bytes, &unused))
            return truncated(p);
        return TLM_OK;
    }
    for (uint64_t i = 0; i < count; i++) {
        if (elem_type == GGUF_VT_STRING) {
            gguf_str s;
            if (!cur_str(&p->c, &s)) return truncated(p);
        } else { /* array of arrays */
            if (depth >= GGUF_MAX_ARRAY_DEPTH)
                return tlm_seterr(p->err, TLM_ERR_FORMAT,
                                  "%s: %s: arrays nested deeper than %d levels", p->f->path,
                                  p->what, GGUF_MAX_ARRAY_DEPTH);
            uint32_t inner_type;
            uint64_t inner_count;
            if (!cur_u32(&p->c, &inner_type) || !cur_u64(&p->c, &inner_count)) return truncated(p);
            tlm_status st = skip_array_body(p, inner_type, inner_count, depth + 1);
            if (st != TLM_OK) return st;
        }
    }
    return TLM_OK;
}

/* Reads the value of kv (type already set). A string value's data points at
 * its u64 length prefix; an array's data at its first element. */
static tlm_status parse_kv_value(parser *p, gguf_kv *kv) {
    const uint8_t *unused;
    kv->data = p->c.base + p->c.pos;
    if (kv->type == GGUF_VT_STRING) {
        gguf_str s;
        return cur_str(&p->c, &s) ? TLM_OK : truncated(p);
    }
    if (kv->type != GGUF_VT_ARRAY) {
        uint32_t size = gguf_vtype_size(kv->type);
        if (!size)
            return tlm_seterr(p->err, TLM_ERR_FORMAT, "%s: %s has unknown value type %" PRIu32,
                              p->f->path, p->what, kv->type);
        return cur_take(&p->c, size, &unused) ? TLM_OK : truncated(p);
    }
    if (!cur_u32(&p->c, &kv->arr_type) || !cur_u64(&p->c, &kv->arr_n)) return truncated(p);
    kv->data = p->c.base + p->c.pos;
    size_t start = p->c.pos;
    tlm_status st = skip_array_body(p, kv->arr_type, kv->arr_n, 1);
    if (st != TLM_OK || kv->arr_type != GGUF_VT_STRING || kv->arr_n == 0) return st;

    /* The strings are all there (checked above), so the table is at most
     * twice the bytes they occupy. */
    gguf_str *strs = tlm_malloc((size_t)kv->arr_n * sizeof *strs);
    if (!strs)
        return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory for %s (%" PRIu64 " strings)",
                          p->f->path, p->what, kv->arr_n);
    cursor c = {p->c.base, p->c.size, start};
    for (uint64_t i = 0; i < kv->arr_n; i++) cur_str(&c, &strs[i]);
    kv->strs = strs;
    return TLM_OK;
}

static tlm_status parse_metadata(parser *p, uint64_t n_kv) {
    gguf_file *f = p->f;
    for (uint64_t i = 0; i < n_kv; i++) {
        if (f->n_kv == f->cap_kv) {
            uint64_t cap = f->cap_kv ? f->cap_kv * 2 : 32;
            if (cap > n_kv) cap = n_kv;
            gguf_kv *grown = tlm_realloc(f->kvs, (size_t)cap * sizeof *grown);
            if (!grown)
                return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory reading metadata",
                                  f->path);
            f->kvs = grown;
            f->cap_kv = cap;
        }
        gguf_kv *kv = &f->kvs[f->n_kv];
        memset(kv, 0, sizeof *kv);
        snprintf(p->what, sizeof p->what, "metadata entry %" PRIu64, i);
        if (!cur_str(&p->c, &kv->key) || !cur_u32(&p->c, &kv->type)) return truncated(p);
        char name[64];
        snprintf(p->what, sizeof p->what, "metadata entry %" PRIu64 " ('%s')", i,
                 printable(kv->key, name));
        f->n_kv++; /* counted now so that close frees its string table */
        tlm_status st = parse_kv_value(p, kv);
        if (st != TLM_OK) return st;
    }
    if (!name_index_init(&f->kv_index, f->kvs, f->n_kv, sizeof *f->kvs, offsetof(gguf_kv, key)))
        return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory indexing metadata", f->path);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        uint64_t dup = name_index_insert(&f->kv_index, i);
        if (dup != UINT64_MAX) {
            char name[64];
            return tlm_seterr(p->err, TLM_ERR_FORMAT,
                              "%s: duplicate metadata key '%s' (entries %" PRIu64 " and %" PRIu64 ")",
                              f->path, printable(f->kvs[i].key, name), dup, i);
        }
    }
    return TLM_OK;
}

static tlm_status parse_tensor_info(parser *p, uint64_t i, gguf_tensor *t) {
    const char *path = p->f->path;
    char name[64];
    snprintf(p->what, sizeof p->what, "tensor directory entry %" PRIu64, i);
    if (!cur_str(&p->c, &t->name) || !cur_u32(&p->c, &t->n_dims)) return truncated(p);
    printable(t->name, name);
    if (t->n_dims > GGUF_MAX_DIMS)
        return tlm_seterr(p->err, TLM_ERR_FORMAT,
                          "%s: tensor '%s' has %" PRIu32 " dimensions (at most %d are supported)",
                          path, name, t->n_dims, GGUF_MAX_DIMS);
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (!cur_u64(&p->c, &t->ne[d])) return truncated(p);
        if (t->ne[d] == 0)
            return tlm_seterr(p->err, TLM_ERR_FORMAT, "%s: tensor '%s' has a zero dimension %" PRIu32,
                              path, name, d);
        if (__builtin_mul_overflow(n_elems, t->ne[d], &n_elems) || n_elems > (uint64_t)INT64_MAX)
            return tlm_seterr(p->err, TLM_ERR_FORMAT,
                              "%s: tensor '%s' has dimensions whose product overflows", path, name);
    }
    if (!cur_u32(&p->c, &t->type) || !cur_u64(&p->c, &t->offset)) return truncated(p);
    uint32_t block = ggml_block_size(t->type);
    if (block == 0)
        return tlm_seterr(p->err, TLM_ERR_UNSUPPORTED, "%s: tensor '%s' has unknown type %" PRIu32,
                          path, name, t->type);
    uint64_t row_bytes;
    if (!ggml_row_bytes(t->type, t->ne[0], &row_bytes))
        return tlm_seterr(p->err, TLM_ERR_FORMAT,
                          "%s: tensor '%s': row length %" PRIu64 " is not a multiple of the %s "
                          "block size %" PRIu32, path, name, t->ne[0], ggml_type_name(t->type), block);
    if (__builtin_mul_overflow(row_bytes, n_elems / t->ne[0], &t->nbytes))
        return tlm_seterr(p->err, TLM_ERR_FORMAT, "%s: tensor '%s': byte size overflows", path, name);
    return TLM_OK;
}

static tlm_status parse_tensors(parser *p, uint64_t n_tensors) {
    gguf_file *f = p->f;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (f->n_tensors == f->cap_tensors) {
            uint64_t cap = f->cap_tensors ? f->cap_tensors * 2 : 64;
            if (cap > n_tensors) cap = n_tensors;
            gguf_tensor *grown = tlm_realloc(f->tensors, (size_t)cap * sizeof *grown);
            if (!grown)
                return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory reading tensors",
                                  f->path);
            f->tensors = grown;
            f->cap_tensors = cap;
        }
        gguf_tensor *t = &f->tensors[f->n_tensors];
        memset(t, 0, sizeof *t);
        tlm_status st = parse_tensor_info(p, i, t);
        if (st != TLM_OK) return st;
        f->n_tensors++;
    }
    if (!name_index_init(&f->tensor_index, f->tensors, f->n_tensors, sizeof *f->tensors,
                         offsetof(gguf_tensor, name)))
        return tlm_seterr(p->err, TLM_ERR_NOMEM, "%s: out of memory indexing tensors", f->path);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        uint64_t dup = name_index_insert(&f->tensor_index, i);
        if (dup != UINT64_MAX) {
            char name[64];
            return tlm_seterr(p->err, TLM_ERR_FORMAT,
                              "%s: duplicate tensor name '%s' (entries %" PRIu64 " and %" PRIu64 ")",
                              f->path, printable(f->tensors[i].name, name), dup, i);
        }
    }
    return TLM_OK;
}

/* Reads general.alignment (default 32); it must be a power of two. */
static tlm_status read_alignment(parser *p) {
    gguf_file *f = p->f;
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (!gguf_find_kv(f, "general.alignment")) return TLM_OK;
    uint32_t a;
    if (!gguf_get_u32(f, "general.alignment", &a) || a == 0 || (a & (a - 1)) != 0)
        return tlm_seterr(p->err, TLM_ERR_FORMAT,
                          "%s: general.alignment must be a power of two stored as an integer",
                          f->path);
    f->alignment = a;
    return TLM_OK;
}

/* Places every tensor in the data section and checks that it lies inside the
 * file. */
static tlm_status locate_tensor_data(parser *p) {
    gguf_file *f = p->f;
    uint64_t pos = p->c.pos; /* <= size, so aligning up cannot overflow */
    f->data_offset = (pos + f->alignment - 1) / f->alignment * f->alignment;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        char name[64];
        printable(t->name, name);
        if (t->offset % f->alignment != 0)
            return tlm_seterr(p->err, TLM_ERR_FORMAT,
                              "%s: tensor '%s' data offset %" PRIu64
                              " is not a multiple of the alignment %" PRIu32,
                              f->path, name, t->offset, f->alignment);
        uint64_t start, end;
        if (__builtin_add_overflow(f->data_offset, t->offset, &start) ||
            __builtin_add_overflow(start, t->nbytes, &end) || end > f->size)
            return tlm_seterr(p->err, TLM_ERR_FORMAT,
                              "%s: truncated: tensor '%s' data (%" PRIu64 " bytes at offset %" PRIu64
                              ") runs past end of file (size %zu)",
                              f->path, name, t->nbytes, t->offset, f->size);
        t->data = f->map + start;
    }
    return TLM_OK;
}

static tlm_status parse_header(parser *p, uint64_t *n_tensors, uint64_t *n_kv) {
    gguf_file *f = p->f;
    const uint8_t *magic;
    snprintf(p->what, sizeof p->what, "header");
    if (f->size == 0)
        return tlm_seterr(p->err, TLM_ERR_FORMAT, "%s: empty file (0 bytes), not a GGUF file",
                          f->path);
    if (f->size < 4 || memcmp(f->map, GGUF_MAGIC, 4) != 0) {
        char shown[4 * 4 + 1] = "";
        for (size_t i = 0, at = 0; i < 4 && i < f->size; i++) {
            uint8_t ch = f->map[i];
            if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') shown[at++] = (char)ch;
            else at += (size_t)snprintf(shown + at, 5, "\\x%02x", ch);
        }
        return tlm_seterr(p->err, TLM_ERR_FORMAT,
                          "%s: not a GGUF file (starts with \"%s\", expected \"GGUF\")", f->path,
                          shown);
    }
    cur_take(&p->c, 4, &magic);
    if (!cur_u32(&p->c, &f->version)) return truncated(p);
    if ((f->version & 0xffffu) == 0 && (f->version >> 16) != 0)
        return tlm_seterr(p->err, TLM_ERR_UNSUPPORTED,
                          "%s: big-endian GGUF files are not supported", f->path);
    if (f->version != 2 && f->version != 3)
        return tlm_seterr(p->err, TLM_ERR_UNSUPPORTED,
                          "%s: GGUF version %" PRIu32 " is not supported (only versions 2 and 3)",
                          f->path, f->version);
    if (!cur_u64(&p->c, n_tensors) || !cur_u64(&p->c, n_kv)) return truncated(p);
    /* Each entry needs some minimum of bytes: counts beyond what the file
     * could hold are corruption, not a reason to allocate. */
    uint64_t left = f->size - p->c.pos;
    if (*n_kv > left / GGUF_MIN_KV_BYTES)
        return tlm_seterr(p->err, TLM_ERR_FORMAT,
                          "%s: metadata count %" PRIu64
                          " is impossible for a file of %zu bytes (truncated or corrupt)",
                          f->path, *n_kv, f->size);
    if (*n_tensors > left / GGUF_MIN_TENSOR_BYTES)
        return tlm_seterr(p->err, TLM_ERR_FORMAT,
                          "%s: tensor count %" PRIu64
                          " is impossible for a file of %zu bytes (truncated or corrupt)",
                          f->path, *n_tensors, f->size);
    return TLM_OK;
}

/* --------------------------------------------------------- open / close */

static tlm_status map_file(gguf_file *f, tlm_error *err) {
    const void *map;
    tlm_status st = map_whole_file(f->path, &map, &f->size, err);
    if (st) return st;
    if (map) madvise((void *)map, f->size, MADV_SEQUENTIAL);
    f->map = map;
    return TLM_OK;
}

static gguf_file *parse_file(gguf_file *f, tlm_error *err);

gguf_file *gguf_open(const char *path, tlm_error *err) {
    tlm_clearerr(err);
    if (!path) {
        tlm_seterr(err, TLM_ERR_ARG, "no GGUF path given");
        return NULL;
    }
    gguf_file *f = tlm_calloc(1, sizeof *f);
    if (!f || !(f->path = tlm_strdup(path))) {
        tlm_free(f);
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    if (map_file(f, err) != TLM_OK) {
        gguf_close(f);
        return NULL;
    }
    return parse_file(f, err);
}

gguf_file *gguf_open_memory(const void *data, size_t size, const char *name, tlm_error *err) {
    tlm_clearerr(err);
    if (!name) name = "(memory)";
    gguf_file *f = tlm_calloc(1, sizeof *f);
    if (!f || !(f->path = tlm_strdup(name))) {
        tlm_free(f);
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", name);
        return NULL;
    }
    f->map = data;
    f->size = data ? size : 0;
    f->borrowed = true;
    return parse_file(f, err);
}

/* Parses the mapped bytes of f; closes f and returns NULL on failure. */
static gguf_file *parse_file(gguf_file *f, tlm_error *err) {
    parser p = {.f = f, .c = {f->map, f->size, 0}, .err = err};
    uint64_t n_tensors = 0, n_kv = 0;
    tlm_status st = parse_header(&p, &n_tensors, &n_kv);
    if (st == TLM_OK) st = parse_metadata(&p, n_kv);
    if (st == TLM_OK) st = read_alignment(&p);
    if (st == TLM_OK) st = parse_tensors(&p, n_tensors);
    if (st == TLM_OK) st = locate_tensor_data(&p);
    if (st != TLM_OK) {
        gguf_close(f);
        return NULL;
    }
    return f;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    for (uint64_t i = 0; i < f->n_kv; i++) tlm_free((void *)f->kvs[i].strs);
    tlm_free(f->kvs);
    tlm_free(f->tensors);
    tlm_free(f->kv_index.slots);
    tlm_free(f->tensor_index.slots);
    if (f->map && !f->borrowed) munmap((void *)f->map, f->size);
    tlm_free(f->path);
    tlm_free(f);
}

bool gguf_take_mapping(gguf_file *f, const void **map, size_t *size) {
    if (!f || !f->map || f->borrowed) return false;
    *map = f->map;
    *size = f->size;
    f->borrowed = true; /* gguf_close leaves it mapped from now on */
    return true;
}

/* ------------------------------------------------------------ accessors */

uint32_t gguf_version(const gguf_file *f) { return f->version; }
const char *gguf_path(const gguf_file *f) { return f->path; }
size_t gguf_file_size(const gguf_file *f) { return f->size; }
uint64_t gguf_data_offset(const gguf_file *f) { return f->data_offset; }

uint64_t gguf_n_kv(const gguf_file *f) { return f->n_kv; }

const gguf_kv *gguf_kv_at(const gguf_file *f, uint64_t i) {
    return i < f->n_kv ? &f->kvs[i] : NULL;
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    uint64_t i = name_index_find(&f->kv_index, key, strlen(key));
    return i == UINT64_MAX ? NULL : &f->kvs[i];
}

uint64_t gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }

const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i) {
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    uint64_t i = name_index_find(&f->tensor_index, name, strlen(name));
    return i == UINT64_MAX ? NULL : &f->tensors[i];
}

/* ------------------------------------------------------- typed getters */

/* An integer scalar of any width as sign and magnitude (so that every u64 and
 * i64 fits); false for non-integers. */
static bool kv_integer(const gguf_kv *kv, uint64_t *mag, bool *neg) {
    const uint8_t *d = kv->data;
    *neg = false;
    switch (kv->type) {
    case GGUF_VT_UINT8: *mag = d[0]; return true;
    case GGUF_VT_UINT16: { uint16_t v; memcpy(&v, d, 2); *mag = v; return true; }
    case GGUF_VT_UINT32: { uint32_t v; memcpy(&v, d, 4); *mag = v; return true; }
    case GGUF_VT_UINT64: { uint64_t v; memcpy(&v, d, 8); *mag = v; return true; }
    case GGUF_VT_INT8: case GGUF_VT_INT16: case GGUF_VT_INT32: case GGUF_VT_INT64: {
        int64_t v;
        if (kv->type == GGUF_VT_INT8) { v = (int8_t)d[0]; }
        else if (kv->type == GGUF_VT_INT16) { int16_t x; memcpy(&x, d, 2); v = x; }
        else if (kv->type == GGUF_VT_INT32) { int32_t x; memcpy(&x, d, 4); v = x; }
        else { memcpy(&v, d, 8); }
        *neg = v < 0;
        *mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        return true;
    }
    default: return false;
    }
}

bool gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    uint64_t mag;
    bool neg;
    if (!kv || !kv_integer(kv, &mag, &neg) || neg || mag > UINT32_MAX) return false;
    *out = (uint32_t)mag;
    return true;
}

bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    uint64_t mag;
    bool neg;
    if (!kv || !kv_integer(kv, &mag, &neg)) return false;
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1) return false;
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)mag;
    }
    return true;
}

/* Floats convert to float; integers do too (some writers store a round
 * number such as a rope base as an integer). */
bool gguf_get_f32(const gguf_file *f, const char *key, float *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return false;
    if (kv->type == GGUF_VT_FLOAT32) {
        memcpy(out, kv->data, 4);
        return true;
    }
    if (kv->type == GGUF_VT_FLOAT64) {
        double v;
        memcpy(&v, kv->data, 8);
        *out = (float)v;
        return true;
    }
    uint64_t mag;
    bool neg;
    if (!kv_integer(kv, &mag, &neg)) return false;
    *out = neg ? -(float)mag : (float)mag;
    return true;
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || kv->type != GGUF_VT_BOOL) return false;
    *out = ((const uint8_t *)kv->data)[0] != 0;
    return true;
}

bool gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || kv->type != GGUF_VT_STRING) return false;
    memcpy(&out->len, kv->data, 8);
    out->ptr = (const char *)kv->data + 8;
    return true;
}

bool gguf_str_eq(gguf_str s, const char *c) { return str_eq_n(s, c, strlen(c)); }
