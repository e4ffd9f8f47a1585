/*
 * fuzz_gguf.c — the GGUF reader (runtime/io/gguf.c) on arbitrary bytes.
 *
 * Besides not crashing, an accepted file must keep the reader's promises:
 * every key, string, value and tensor lies inside the file, names are found
 * again by lookup, every typed getter is safe on every key, and each tensor's
 * byte size matches its type and shape (its first row is dequantized to
 * prove it).
 */
#include <math.h>

#include "fuzz_common.h"
#include "ggml_types.h"
#include "gguf.h"

#define MAX_ROW_DEQUANT 4096 /* elements of a first row worth converting */

typedef struct span {
    const uint8_t *begin, *end;
} span;

static bool inside(span s, const void *p, uint64_t n) {
    const uint8_t *q = p;
    return q >= s.begin && q <= s.end && n <= (uint64_t)(s.end - q);
}

static uint32_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: case GGUF_VT_FLOAT64: return 8;
    default: return 0;
    }
}

/* A name as a C string for the lookups; false when it holds a NUL. */
static bool name_cstr(gguf_str s, char *buf, size_t cap) {
    if (s.len >= cap || memchr(s.ptr, '\0', (size_t)s.len)) return false;
    memcpy(buf, s.ptr, (size_t)s.len);
    buf[s.len] = '\0';
    return true;
}

static void check_kv(const gguf_file *f, span file, uint64_t i) {
    const gguf_kv *kv = gguf_kv_at(f, i);
    FUZZ_CHECK(kv && inside(file, kv->key.ptr, kv->key.len), "kv %llu key", (unsigned long long)i);
    if (kv->type == GGUF_VT_STRING) {
        uint64_t len;
        FUZZ_CHECK(inside(file, kv->data, 8), "kv %llu string length", (unsigned long long)i);
        memcpy(&len, kv->data, 8);
        FUZZ_CHECK(inside(file, kv->data + 8, len), "kv %llu string", (unsigned long long)i);
    } else if (kv->type == GGUF_VT_ARRAY) {
        uint32_t es = scalar_size(kv->arr_type);
        if (es) {
            FUZZ_CHECK(inside(file, kv->data, kv->arr_n * es), "kv %llu array", (unsigned long long)i);
        }
        if (kv->arr_type == GGUF_VT_STRING && kv->arr_n > 0) {
            FUZZ_CHECK(kv->strs != NULL, "kv %llu string array without table", (unsigned long long)i);
            for (uint64_t j = 0; j < kv->arr_n; j++)
                FUZZ_CHECK(inside(file, kv->strs[j].ptr, kv->strs[j].len), "kv %llu string %llu",
                           (unsigned long long)i, (unsigned long long)j);
        }
    } else {
        FUZZ_CHECK(scalar_size(kv->type) && inside(file, kv->data, scalar_size(kv->type)),
                   "kv %llu scalar of type %u", (unsigned long long)i, kv->type);
    }

    char key[256];
    if (!name_cstr(kv->key, key, sizeof key)) return;
    FUZZ_CHECK(gguf_find_kv(f, key) == kv, "lookup of key %llu", (unsigned long long)i);
    uint32_t u32;
    int64_t i64;
    float f32;
    bool b;
    gguf_str s;
    volatile uint64_t sink = 0;
    if (gguf_get_u32(f, key, &u32)) sink += u32;
    if (gguf_get_i64(f, key, &i64)) sink += (uint64_t)i64;
    if (gguf_get_f32(f, key, &f32)) sink += isnan(f32) ? 1u : 0u;
    if (gguf_get_bool(f, key, &b)) sink += b;
    if (gguf_get_str(f, key, &s)) {
        FUZZ_CHECK(inside(file, s.ptr, s.len), "string value of key %llu", (unsigned long long)i);
        sink += s.len;
    }
    (void)sink;
}

static void check_tensor(const gguf_file *f, span file, uint64_t i, float *row) {
    const gguf_tensor *t = gguf_tensor_at(f, i);
    FUZZ_CHECK(t && inside(file, t->name.ptr, t->name.len), "tensor %llu name", (unsigned long long)i);
    FUZZ_CHECK(t->n_dims <= GGUF_MAX_DIMS, "tensor %llu dims", (unsigned long long)i);
    FUZZ_CHECK(inside(file, t->data, t->nbytes), "tensor %llu data (%llu bytes)",
               (unsigned long long)i, (unsigned long long)t->nbytes);
    uint64_t row_bytes, rows = t->ne[1] * t->ne[2] * t->ne[3]; /* no overflow: checked by the reader */
    FUZZ_CHECK(ggml_row_bytes(t->type, t->ne[0], &row_bytes) && row_bytes * rows == t->nbytes,
               "tensor %llu byte size", (unsigned long long)i);
    char name[256];
    if (name_cstr(t->name, name, sizeof name))
        FUZZ_CHECK(gguf_find_tensor(f, name) == t, "lookup of tensor %llu", (unsigned long long)i);
    if (ggml_can_dequantize(t->type) && t->ne[0] <= MAX_ROW_DEQUANT) {
        ggml_dequantize_row(t->type, t->data, row, (int64_t)t->ne[0]);
        if (rows > 1) /* and the last row, at the very end of the tensor's bytes */
            ggml_dequantize_row(t->type, (const uint8_t *)t->data + (rows - 1) * row_bytes, row,
                                (int64_t)t->ne[0]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static float row[MAX_ROW_DEQUANT];
    char path[64];
    if (!fuzz_memfd_write(0, data, size, path)) return 0;
    tlm_error err;
    gguf_file *f = gguf_open(path, &err);
    if (!f) {
        FUZZ_CHECK_ERROR(err);
        return 0;
    }
    FUZZ_CHECK(err.code == TLM_OK, "success with an error set");
    FUZZ_CHECK(gguf_file_size(f) == size, "size %zu, file %zu", gguf_file_size(f), size);
    FUZZ_CHECK(gguf_version(f) == 2 || gguf_version(f) == 3, "version %u", gguf_version(f));

    /* The mapping is not exposed; the first name sits right after the
     * 24-byte header and its 8-byte length, which locates it. */
    const uint8_t *base = NULL;
    if (gguf_n_kv(f) > 0) base = (const uint8_t *)gguf_kv_at(f, 0)->key.ptr - 32;
    else if (gguf_n_tensors(f) > 0) base = (const uint8_t *)gguf_tensor_at(f, 0)->name.ptr - 32;
    if (base) {
        FUZZ_CHECK(memcmp(base, data, size) == 0, "mapping does not hold the file");
        span file = {base, base + size};
        for (uint64_t i = 0; i < gguf_n_kv(f); i++) check_kv(f, file, i);
        for (uint64_t i = 0; i < gguf_n_tensors(f); i++) check_tensor(f, file, i, row);
    }
    FUZZ_CHECK(gguf_kv_at(f, gguf_n_kv(f)) == NULL && gguf_tensor_at(f, gguf_n_tensors(f)) == NULL,
               "accessor past the end");
    FUZZ_CHECK(gguf_find_kv(f, "") == NULL || gguf_find_kv(f, "")->key.len == 0, "empty key");
    gguf_close(f);
    return 0;
}
