/*
 * test_gguf.c — the GGUF reader on files built byte by byte here: valid v2/v3
 * files parse with every value type, and each kind of damage (truncation at
 * every length, absurd counts and sizes, bad offsets and types, duplicates,
 * random byte flips) gives an error that names the file instead of a crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ggml_types.h"
#include "gguf.h"

/* ------------------------------------------------------- byte builder */

typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}
static void put_u8(bytes *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(bytes *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(bytes *b, uint64_t v) { put(b, &v, 8); }
static void put_str(bytes *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void put_zeros(bytes *b, size_t n) {
    for (size_t i = 0; i < n; i++) put_u8(b, 0);
}

/* ------------------------------------------------------ file builder */

typedef struct tensor_spec {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[5];
    uint32_t type;
    int64_t offset; /* -1: next aligned position */
} tensor_spec;

/* What a test file contains; the defaults (spec_valid) give a file that
 * parses. The damage fields each break one thing. */
typedef struct file_spec {
    uint32_t version;
    uint32_t alignment; /* 0: no general.alignment key (default 32) */
    int n_tensors;
    tensor_spec t[4];
    uint64_t n_kv_claimed, n_tensors_claimed; /* 0: the true counts */
    bool huge_key_length;     /* first key's length runs past EOF */
    bool duplicate_key;
    bool deep_nesting;        /* arrays nested 20 levels */
    bool bad_array_elem_type; /* element type 77 */
} file_spec;

static file_spec spec_valid(uint32_t version, uint32_t alignment) {
    file_spec s = {.version = version, .alignment = alignment, .n_tensors = 3};
    s.t[0] = (tensor_spec){"tok", 2, {4, 2}, GGML_TYPE_F32, -1};
    s.t[1] = (tensor_spec){"blk.0.q8", 1, {64}, GGML_TYPE_Q8_0, -1};
    s.t[2] = (tensor_spec){"blk.0.q4k", 2, {256, 1}, GGML_TYPE_Q4_K, -1};
    return s;
}

#define N_VALID_KV 18 /* metadata entries written by build_file, alignment key excluded */

static uint64_t tensor_bytes(const tensor_spec *t) {
    uint64_t n = 1, row;
    for (uint32_t d = 1; d < t->n_dims && d < 5; d++) n *= t->ne[d];
    if (!ggml_row_bytes(t->type, t->ne[0], &row)) row = 4;
    return row * n;
}

static void put_kv_header(bytes *b, const char *key, uint32_t type) {
    put_str(b, key);
    put_u32(b, type);
}

static bytes build_file(const file_spec *s) {
    bytes b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, s->version);
    uint64_t n_kv = N_VALID_KV + (s->alignment ? 1 : 0) + (s->duplicate_key ? 1 : 0) +
                    (s->deep_nesting ? 1 : 0) + (s->bad_array_elem_type ? 1 : 0);
    put_u64(&b, s->n_tensors_claimed ? s->n_tensors_claimed : (uint64_t)s->n_tensors);
    put_u64(&b, s->n_kv_claimed ? s->n_kv_claimed : n_kv);

    if (s->huge_key_length) {
        put_u64(&b, UINT64_MAX / 2);
        put(&b, "general.name", 12);
    } else {
        put_kv_header(&b, "general.architecture", GGUF_VT_STRING);
        put_str(&b, "llama");
    }
    put_kv_header(&b, "t.u8", GGUF_VT_UINT8); put_u8(&b, 200);
    put_kv_header(&b, "t.i8", GGUF_VT_INT8); put_u8(&b, (uint8_t)-5);
    put_kv_header(&b, "t.u16", GGUF_VT_UINT16); put(&b, &(uint16_t){60000}, 2);
    put_kv_header(&b, "t.i16", GGUF_VT_INT16); put(&b, &(int16_t){-300}, 2);
    put_kv_header(&b, "t.u32", GGUF_VT_UINT32); put_u32(&b, 4000000000u);
    put_kv_header(&b, "t.i32", GGUF_VT_INT32); put(&b, &(int32_t){-7}, 4);
    put_kv_header(&b, "t.f32", GGUF_VT_FLOAT32); put(&b, &(float){1.5f}, 4);
    put_kv_header(&b, "t.bool", GGUF_VT_BOOL); put_u8(&b, 1);
    put_kv_header(&b, "t.u64", GGUF_VT_UINT64); put_u64(&b, 1ull << 40);
    put_kv_header(&b, "t.i64", GGUF_VT_INT64); put(&b, &(int64_t){-(1ll << 40)}, 8);
    put_kv_header(&b, "t.f64", GGUF_VT_FLOAT64); put(&b, &(double){0.25}, 8);
    put_kv_header(&b, "t.str", GGUF_VT_STRING); put_str(&b, "hello");
    put_kv_header(&b, "t.strs", GGUF_VT_ARRAY);
    put_u32(&b, GGUF_VT_STRING); put_u64(&b, 3);
    put_str(&b, "a"); put_str(&b, "bc"); put_str(&b, "");
    put_kv_header(&b, "t.i32s", GGUF_VT_ARRAY);
    put_u32(&b, GGUF_VT_INT32); put_u64(&b, 3);
    put(&b, (int32_t[]){1, -2, 3}, 12);
    put_kv_header(&b, "t.nested", GGUF_VT_ARRAY); /* [[1, 2], ["x"]] */
    put_u32(&b, GGUF_VT_ARRAY); put_u64(&b, 2);
    put_u32(&b, GGUF_VT_UINT8); put_u64(&b, 2); put_u8(&b, 1); put_u8(&b, 2);
    put_u32(&b, GGUF_VT_STRING); put_u64(&b, 1); put_str(&b, "x");
    put_kv_header(&b, "t.empty", GGUF_VT_ARRAY);
    put_u32(&b, GGUF_VT_FLOAT32); put_u64(&b, 0);
    put_kv_header(&b, "general.name", GGUF_VT_STRING); put_str(&b, "tiny");
    if (s->alignment) { put_kv_header(&b, "general.alignment", GGUF_VT_UINT32); put_u32(&b, s->alignment); }
    if (s->duplicate_key) { put_kv_header(&b, "t.u8", GGUF_VT_UINT8); put_u8(&b, 1); }
    if (s->deep_nesting) {
        put_kv_header(&b, "t.deep", GGUF_VT_ARRAY);
        for (int i = 0; i < 20; i++) { put_u32(&b, GGUF_VT_ARRAY); put_u64(&b, 1); }
        put_u32(&b, GGUF_VT_UINT8); put_u64(&b, 0);
    }
    if (s->bad_array_elem_type) {
        put_kv_header(&b, "t.bad", GGUF_VT_ARRAY);
        put_u32(&b, 77); put_u64(&b, 1); put_u8(&b, 0);
    }

    const uint64_t align = s->alignment ? s->alignment : 32;
    uint64_t next = 0, offsets[4];
    for (int i = 0; i < s->n_tensors; i++) {
        const tensor_spec *t = &s->t[i];
        put_str(&b, t->name);
        put_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++) put_u64(&b, t->ne[d]);
        put_u32(&b, t->type);
        offsets[i] = t->offset >= 0 ? (uint64_t)t->offset : next;
        put_u64(&b, offsets[i]);
        next = (offsets[i] + tensor_bytes(t) + align - 1) / align * align;
    }
    if (s->n_tensors > 0) {
        put_zeros(&b, (size_t)((b.n + align - 1) / align * align - b.n));
        size_t data_start = b.n;
        /* data: byte k of tensor i is (i * 31 + k) & 0xff, no trailing padding */
        for (int i = 0; i < s->n_tensors; i++) {
            uint64_t nb = tensor_bytes(&s->t[i]);
            if (nb > 4096 || offsets[i] > 4096) continue; /* damaged specs: no data */
            put_zeros(&b, (size_t)(data_start + offsets[i] - b.n));
            for (uint64_t k = 0; k < nb; k++) put_u8(&b, (uint8_t)(i * 31 + k));
        }
    }
    return b;
}

/* ------------------------------------------------------------ harness */

static char test_path[1024];

static const char *write_file(const void *p, size_t n) {
    FILE *fp = fopen(test_path, "wb");
    assert_non_null(fp);
    if (n) assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
    return test_path;
}

/* Opens the bytes as a file and expects failure with `code` and a message
 * that names the file and contains `needle`. */
static void expect_error(const bytes *b, size_t n, tlm_status code, const char *needle) {
    tlm_error err;
    gguf_file *f = gguf_open(write_file(b->p, n), &err);
    if (f) fail_msg("expected an error containing '%s', the file parsed", needle);
    if (!strstr(err.msg, test_path)) fail_msg("message does not name the file: %s", err.msg);
    if (needle && !strstr(err.msg, needle)) fail_msg("expected '%s' in: %s", needle, err.msg);
    if (code != TLM_OK) assert_int_equal(err.code, code);
    if (strchr(err.msg, '\n')) fail_msg("message is not one line: %s", err.msg);
}

static void expect_spec_error(const file_spec *s, tlm_status code, const char *needle) {
    bytes b = build_file(s);
    expect_error(&b, b.n, code, needle);
    free(b.p);
}

/* Reads every parsed item so that a bad pointer would be touched. */
static uint64_t touch_everything(const gguf_file *f) {
    uint64_t sum = 0;
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        for (uint64_t k = 0; k < kv->key.len; k++) sum += (uint8_t)kv->key.ptr[k];
        if (kv->strs)
            for (uint64_t j = 0; j < kv->arr_n; j++)
                for (uint64_t k = 0; k < kv->strs[j].len; k++) sum += (uint8_t)kv->strs[j].ptr[k];
    }
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const uint8_t *d = t->data;
        for (uint64_t k = 0; k < t->nbytes; k++) sum += d[k];
    }
    return sum;
}

/* ---------------------------------------------------------- valid files */

static void check_valid(uint32_t version, uint32_t alignment) {
    file_spec s = spec_valid(version, alignment);
    bytes b = build_file(&s);
    tlm_error err;
    gguf_file *f = gguf_open(write_file(b.p, b.n), &err);
    if (!f) fail_msg("valid file rejected: %s", err.msg);
    assert_int_equal(gguf_version(f), version);
    assert_int_equal(gguf_file_size(f), b.n);
    assert_string_equal(gguf_path(f), test_path);
    assert_int_equal(gguf_n_kv(f), N_VALID_KV + (alignment ? 1 : 0));

    uint32_t u32;
    int64_t i64;
    float f32;
    bool bl;
    gguf_str str;
    assert_true(gguf_get_str(f, "general.architecture", &str));
    assert_true(gguf_str_eq(str, "llama"));
    assert_false(gguf_str_eq(str, "llam"));
    assert_true(gguf_get_u32(f, "t.u8", &u32)); assert_int_equal(u32, 200);
    assert_false(gguf_get_u32(f, "t.i8", &u32)); /* negative */
    assert_true(gguf_get_i64(f, "t.i8", &i64)); assert_int_equal(i64, -5);
    assert_true(gguf_get_u32(f, "t.u16", &u32)); assert_int_equal(u32, 60000);
    assert_true(gguf_get_i64(f, "t.i16", &i64)); assert_int_equal(i64, -300);
    assert_true(gguf_get_u32(f, "t.u32", &u32)); assert_int_equal(u32, 4000000000u);
    assert_true(gguf_get_i64(f, "t.i32", &i64)); assert_int_equal(i64, -7);
    assert_false(gguf_get_u32(f, "t.u64", &u32)); /* does not fit */
    assert_true(gguf_get_i64(f, "t.u64", &i64)); assert_true(i64 == (1ll << 40));
    assert_true(gguf_get_i64(f, "t.i64", &i64)); assert_true(i64 == -(1ll << 40));
    assert_true(gguf_get_f32(f, "t.f32", &f32)); assert_true(f32 == 1.5f);
    assert_true(gguf_get_f32(f, "t.f64", &f32)); assert_true(f32 == 0.25f);
    assert_true(gguf_get_bool(f, "t.bool", &bl)); assert_true(bl);
    assert_false(gguf_get_bool(f, "t.u8", &bl));
    assert_false(gguf_get_u32(f, "t.str", &u32));
    assert_false(gguf_get_str(f, "t.u8", &str));
    assert_false(gguf_get_u32(f, "no.such.key", &u32));
    assert_null(gguf_find_kv(f, "no.such.key"));
    assert_true(gguf_get_str(f, "t.str", &str));
    assert_true(gguf_str_eq(str, "hello"));

    const gguf_kv *kv = gguf_find_kv(f, "t.strs");
    assert_non_null(kv);
    assert_int_equal(kv->type, GGUF_VT_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_VT_STRING);
    assert_int_equal(kv->arr_n, 3);
    assert_non_null(kv->strs);
    assert_true(gguf_str_eq(kv->strs[0], "a"));
    assert_true(gguf_str_eq(kv->strs[1], "bc"));
    assert_true(gguf_str_eq(kv->strs[2], ""));
    kv = gguf_find_kv(f, "t.i32s");
    assert_non_null(kv);
    assert_int_equal(kv->arr_type, GGUF_VT_INT32);
    assert_null(kv->strs);
    int32_t i32s[3];
    memcpy(i32s, kv->data, sizeof i32s);
    assert_int_equal(i32s[0], 1); assert_int_equal(i32s[1], -2); assert_int_equal(i32s[2], 3);
    kv = gguf_find_kv(f, "t.nested");
    assert_non_null(kv);
    assert_int_equal(kv->arr_type, GGUF_VT_ARRAY);
    assert_int_equal(kv->arr_n, 2);
    kv = gguf_find_kv(f, "t.empty");
    assert_non_null(kv);
    assert_int_equal(kv->arr_n, 0);
    /* entries keep file order */
    assert_true(gguf_str_eq(gguf_kv_at(f, 1)->key, "t.u8"));
    assert_null(gguf_kv_at(f, gguf_n_kv(f)));

    assert_int_equal(gguf_n_tensors(f), 3);
    const gguf_tensor *t = gguf_find_tensor(f, "blk.0.q8");
    assert_non_null(t);
    assert_ptr_equal(t, gguf_tensor_at(f, 1));
    assert_int_equal(t->type, GGML_TYPE_Q8_0);
    assert_int_equal(t->n_dims, 1);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 1);
    assert_int_equal(t->nbytes, 2 * 34);
    const uint64_t align = alignment ? alignment : 32;
    assert_int_equal(t->offset % align, 0);
    assert_int_equal(((const uint8_t *)t->data)[0], 31);
    assert_int_equal(((const uint8_t *)t->data)[5], 36);
    t = gguf_find_tensor(f, "blk.0.q4k");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 256);
    assert_int_equal(t->nbytes, 144);
    assert_int_equal(((const uint8_t *)t->data)[143], (uint8_t)(62 + 143));
    t = gguf_find_tensor(f, "tok");
    assert_non_null(t);
    assert_int_equal(t->nbytes, 32);
    assert_int_equal((uintptr_t)t->data % align, ((uintptr_t)gguf_tensor_at(f, 0)->data) % align);
    assert_null(gguf_find_tensor(f, "blk.0"));
    assert_null(gguf_tensor_at(f, 3));
    gguf_close(f);
    free(b.p);
}

static void test_valid_v3(void **state) { check_valid(3, 0); }
static void test_valid_v2(void **state) { check_valid(2, 0); }
static void test_valid_alignment_64(void **state) { check_valid(3, 64); }
static void test_valid_alignment_1(void **state) { check_valid(3, 1); }

static void test_close_null(void **state) { gguf_close(NULL); }

static void test_no_tensors(void **state) {
    file_spec s = spec_valid(3, 0);
    s.n_tensors = 0;
    bytes b = build_file(&s);
    tlm_error err;
    gguf_file *f = gguf_open(write_file(b.p, b.n), &err);
    if (!f) fail_msg("rejected: %s", err.msg);
    assert_int_equal(gguf_n_tensors(f), 0);
    assert_null(gguf_find_tensor(f, "tok"));
    gguf_close(f);
    free(b.p);
}

/* ----------------------------------------------------------- bad files */

static void test_missing_file(void **state) {
    tlm_error err;
    char path[1100];
    snprintf(path, sizeof path, "%s.does-not-exist", test_path);
    assert_null(gguf_open(path, &err));
    assert_int_equal(err.code, TLM_ERR_IO);
    assert_non_null(strstr(err.msg, path));
    assert_null(gguf_open(path, NULL)); /* a NULL error is allowed */
}

static void test_empty_file(void **state) {
    bytes b = {0};
    expect_error(&b, 0, TLM_ERR_FORMAT, "empty");
}

static void test_wrong_magic(void **state) {
    file_spec s = spec_valid(3, 0);
    bytes b = build_file(&s);
    memcpy(b.p, "GGML", 4);
    expect_error(&b, b.n, TLM_ERR_FORMAT, "not a GGUF file");
    expect_error(&b, 2, TLM_ERR_FORMAT, "not a GGUF file");
    free(b.p);
}

static void test_versions(void **state) {
    file_spec s = spec_valid(1, 0);
    expect_spec_error(&s, TLM_ERR_UNSUPPORTED, "version 1 ");
    s.version = 99;
    expect_spec_error(&s, TLM_ERR_UNSUPPORTED, "version 99 ");
    s.version = 0x03000000; /* a big-endian v3 read as little-endian */
    expect_spec_error(&s, TLM_ERR_UNSUPPORTED, "big-endian");
}

static void test_every_truncation(void **state) {
    file_spec s = spec_valid(3, 0);
    bytes b = build_file(&s);
    for (size_t n = 0; n < b.n; n++) {
        tlm_error err;
        gguf_file *f = gguf_open(write_file(b.p, n), &err);
        if (f) fail_msg("prefix of %zu of %zu bytes parsed", n, b.n);
        if (!strstr(err.msg, test_path)) fail_msg("prefix %zu: message: %s", n, err.msg);
        if (n >= 24 && !strstr(err.msg, "truncated"))
            fail_msg("prefix %zu: expected 'truncated' in: %s", n, err.msg);
    }
    free(b.p);
}

static void test_string_past_eof(void **state) {
    file_spec s = spec_valid(3, 0);
    s.huge_key_length = true;
    expect_spec_error(&s, TLM_ERR_FORMAT, "truncated: metadata entry 0 runs past end of file");
}

static void test_absurd_counts(void **state) {
    file_spec s = spec_valid(3, 0);
    s.n_kv_claimed = UINT64_MAX;
    expect_spec_error(&s, TLM_ERR_FORMAT, "metadata count");
    s.n_kv_claimed = 1ull << 40;
    expect_spec_error(&s, TLM_ERR_FORMAT, "metadata count");
    s = spec_valid(3, 0);
    s.n_tensors_claimed = 1ull << 60;
    expect_spec_error(&s, TLM_ERR_FORMAT, "tensor count");
    s.n_tensors_claimed = 1000; /* plausible for the size, but the entries are not there */
    expect_spec_error(&s, TLM_ERR_FORMAT, "truncated");
}

static void test_tensor_offset_past_eof(void **state) {
    file_spec s = spec_valid(3, 0);
    s.t[1].offset = 1ull << 20;
    expect_spec_error(&s, TLM_ERR_FORMAT, "tensor 'blk.0.q8' data");
    s.t[1].offset = (int64_t)(UINT64_MAX / 2 / 32 * 32);
    expect_spec_error(&s, TLM_ERR_FORMAT, "runs past end of file");
}

static void test_misaligned_offset(void **state) {
    file_spec s = spec_valid(3, 0);
    s.t[1].offset = 33;
    expect_spec_error(&s, TLM_ERR_FORMAT, "not a multiple of the alignment 32");
}

static void test_bad_alignment(void **state) {
    file_spec s = spec_valid(3, 3);
    expect_spec_error(&s, TLM_ERR_FORMAT, "general.alignment");
}

static void test_unknown_type(void **state) {
    file_spec s = spec_valid(3, 0);
    s.t[2].type = 99;
    expect_spec_error(&s, TLM_ERR_UNSUPPORTED, "tensor 'blk.0.q4k' has unknown type 99");
    s.t[2].type = 4; /* a retired GGML type number */
    expect_spec_error(&s, TLM_ERR_UNSUPPORTED, "unknown type 4");
}

static void test_dims_overflow(void **state) {
    file_spec s = spec_valid(3, 0);
    s.t[0] = (tensor_spec){"huge", 3, {1ull << 32, 1ull << 32, 1ull << 32}, GGML_TYPE_F32, -1};
    expect_spec_error(&s, TLM_ERR_FORMAT, "tensor 'huge' has dimensions whose product overflows");
    s.t[0] = (tensor_spec){"huge", 2, {1ull << 62, 4}, GGML_TYPE_F32, -1}; /* bytes overflow */
    expect_spec_error(&s, TLM_ERR_FORMAT, "huge");
}

static void test_zero_dim(void **state) {
    file_spec s = spec_valid(3, 0);
    s.t[0].ne[1] = 0;
    expect_spec_error(&s, TLM_ERR_FORMAT, "tensor 'tok' has a zero dimension");
}

static void test_five_dims(void **state) {
    file_spec s = spec_valid(3, 0);
    s.t[0] = (tensor_spec){"five", 5, {1, 1, 1, 1, 1}, GGML_TYPE_F32, -1};
    expect_spec_error(&s, TLM_ERR_FORMAT, "tensor 'five' has 5 dimensions");
}

static void test_row_not_multiple_of_block(void **state) {
    file_spec s = spec_valid(3, 0);
    s.t[1].ne[0] = 33;
    expect_spec_error(&s, TLM_ERR_FORMAT, "row length 33 is not a multiple of the Q8_0 block size 32");
}

static void test_duplicate_tensor(void **state) {
    file_spec s = spec_valid(3, 0);
    s.t[2].name = "tok";
    expect_spec_error(&s, TLM_ERR_FORMAT, "duplicate tensor name 'tok'");
}

static void test_duplicate_key(void **state) {
    file_spec s = spec_valid(3, 0);
    s.duplicate_key = true;
    expect_spec_error(&s, TLM_ERR_FORMAT, "duplicate metadata key 't.u8'");
}

static void test_bad_arrays(void **state) {
    file_spec s = spec_valid(3, 0);
    s.deep_nesting = true;
    expect_spec_error(&s, TLM_ERR_FORMAT, "nested deeper");
    s = spec_valid(3, 0);
    s.bad_array_elem_type = true;
    expect_spec_error(&s, TLM_ERR_FORMAT, "unknown array element type 77");
}

/* Flips 1-4 random bytes of a valid file, mostly in the header and
 * directory: every result must either parse or fail cleanly. */
static void test_random_byte_flips(void **state) {
    file_spec s = spec_valid(3, 0);
    bytes b = build_file(&s);
    uint8_t *copy = malloc(b.n);
    assert_non_null(copy);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int parsed = 0, failed = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(copy, b.p, b.n);
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        int flips = 1 + (int)(rng % 4);
        for (int k = 0; k < flips; k++) {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            size_t at = (size_t)(rng % b.n);
            copy[at] ^= (uint8_t)(1u << ((rng >> 32) % 8));
            if ((rng >> 40) % 3 == 0) copy[at] = (uint8_t)(rng >> 48); /* sometimes a new byte */
        }
        tlm_error err;
        gguf_file *f = gguf_open(write_file(copy, b.n), &err);
        if (f) {
            parsed++;
            (void)touch_everything(f);
            gguf_close(f);
        } else {
            failed++;
            if (!strstr(err.msg, test_path)) fail_msg("message does not name the file: %s", err.msg);
        }
    }
    assert_true(parsed > 0 && failed > 0);
    free(copy);
    free(b.p);
}

int main(void) {
    const char *dir = getenv("TLM_TEST_OUT");
    snprintf(test_path, sizeof test_path, "%s/gguf-reader-test-%ld.gguf", dir && *dir ? dir : P_tmpdir,
             (long)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_v3),
        cmocka_unit_test(test_valid_v2),
        cmocka_unit_test(test_valid_alignment_64),
        cmocka_unit_test(test_valid_alignment_1),
        cmocka_unit_test(test_close_null),
        cmocka_unit_test(test_no_tensors),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_wrong_magic),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_string_past_eof),
        cmocka_unit_test(test_absurd_counts),
        cmocka_unit_test(test_tensor_offset_past_eof),
        cmocka_unit_test(test_misaligned_offset),
        cmocka_unit_test(test_bad_alignment),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_dims_overflow),
        cmocka_unit_test(test_zero_dim),
        cmocka_unit_test(test_five_dims),
        cmocka_unit_test(test_row_not_multiple_of_block),
        cmocka_unit_test(test_duplicate_tensor),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_bad_arrays),
        cmocka_unit_test(test_random_byte_flips),
    };
    int failures = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(test_path);
    return failures;
}
