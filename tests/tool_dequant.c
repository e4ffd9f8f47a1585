/*
 * tool_dequant.c — exposes the GGUF reader and the GGML dequantizers to the
 * Python reference tests (tests/test_dequant_ref.py), which compare them with
 * the independent `gguf` package.
 *
 *   tool_dequant raw TYPE N in.bin out.f32     dequantize N elements of raw blocks
 *   tool_dequant tensor FILE NAME out.f32      dequantize one tensor of a GGUF file
 *   tool_dequant info FILE                     dump metadata and tensor directory
 *
 * `info` prints one tab-separated line per item; names and strings are hex so
 * that any bytes survive:
 *   version V,  n_kv N,  n_tensors N
 *   kv  HEXKEY  TYPE  VALUE      (arrays: ELEMTYPE:COUNT:v1,v2,...; nested: ELEMTYPE:COUNT:nested)
 *   tensor  HEXNAME  TYPE  ne0,ne1,..  OFFSET  NBYTES
 * Exit status 0 on success, 1 with the library's message on stderr otherwise.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml_types.h"
#include "gguf.h"

/* ----------------------------------------------------------- helpers */

static int fail(const char *msg) {
    fprintf(stderr, "tool_dequant: %s\n", msg);
    return 1;
}

static int write_floats(const char *path, const float *v, size_t n) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return fail("cannot create the output file");
    size_t wrote = fwrite(v, sizeof *v, n, fp);
    if (fclose(fp) != 0 || wrote != n) return fail("cannot write the output file");
    return 0;
}

static uint32_t type_by_name(const char *name) {
    for (uint32_t t = 0; t < GGML_TYPE_COUNT; t++)
        if (ggml_type_name(t) && strcmp(ggml_type_name(t), name) == 0) return t;
    return UINT32_MAX;
}

static void print_hex(const char *p, uint64_t n) {
    if (n == 0) fputs("-", stdout); /* keeps the column non-empty */
    for (uint64_t i = 0; i < n; i++) printf("%02x", (unsigned char)p[i]);
}

/* --------------------------------------------------------------- raw */

static int cmd_raw(const char *type_name, const char *n_text, const char *in, const char *out) {
    uint32_t type = type_by_name(type_name);
    if (type == UINT32_MAX || !ggml_can_dequantize(type)) return fail("unknown or unsupported type");
    int64_t n = strtoll(n_text, NULL, 10);
    uint64_t bytes;
    if (n <= 0 || !ggml_row_bytes(type, (uint64_t)n, &bytes))
        return fail("N must be a positive multiple of the block size");
    FILE *fp = fopen(in, "rb");
    if (!fp) return fail("cannot open the input file");
    /* 64-byte aligned like the mapping the library normally reads from */
    uint8_t *src = aligned_alloc(64, (bytes + 63) / 64 * 64);
    float *dst = malloc((size_t)n * sizeof *dst);
    size_t got = src ? fread(src, 1, bytes, fp) : 0;
    int extra = fgetc(fp);
    fclose(fp);
    int rc;
    if (!src || !dst) rc = fail("out of memory");
    else if (got != bytes || extra != EOF) rc = fail("input size does not match N blocks");
    else {
        ggml_dequantize_row(type, src, dst, n);
        rc = write_floats(out, dst, (size_t)n);
    }
    free(src);
    free(dst);
    return rc;
}

/* ------------------------------------------------------------ tensor */

static int cmd_tensor(const char *path, const char *name, const char *out) {
    tlm_error err;
    gguf_file *f = gguf_open(path, &err);
    if (!f) return fail(err.msg);
    const gguf_tensor *t = gguf_find_tensor(f, name);
    int rc;
    if (!t) rc = fail("no such tensor");
    else if (!ggml_can_dequantize(t->type)) rc = fail("type cannot be dequantized");
    else {
        uint64_t n = 1, row_bytes;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) n *= t->ne[d];
        ggml_row_bytes(t->type, t->ne[0], &row_bytes);
        float *dst = malloc((size_t)n * sizeof *dst);
        if (!dst) rc = fail("out of memory");
        else {
            const uint8_t *src = t->data;
            for (uint64_t r = 0; r < n / t->ne[0]; r++)
                ggml_dequantize_row(t->type, src + r * row_bytes, dst + r * t->ne[0],
                                    (int64_t)t->ne[0]);
            rc = write_floats(out, dst, (size_t)n);
            free(dst);
        }
    }
    gguf_close(f);
    return rc;
}

/* -------------------------------------------------------------- info */

/* Prints one fixed-size value stored at p. */
static void print_scalar(uint32_t type, const uint8_t *p) {
    switch (type) {
    case GGUF_VT_UINT8: printf("%u", p[0]); break;
    case GGUF_VT_INT8: printf("%d", (int8_t)p[0]); break;
    case GGUF_VT_BOOL: printf("%u", p[0] ? 1u : 0u); break;
    case GGUF_VT_UINT16: { uint16_t v; memcpy(&v, p, 2); printf("%u", v); break; }
    case GGUF_VT_INT16: { int16_t v; memcpy(&v, p, 2); printf("%d", v); break; }
    case GGUF_VT_UINT32: { uint32_t v; memcpy(&v, p, 4); printf("%" PRIu32, v); break; }
    case GGUF_VT_INT32: { int32_t v; memcpy(&v, p, 4); printf("%" PRId32, v); break; }
    case GGUF_VT_FLOAT32: { float v; memcpy(&v, p, 4); printf("%.9g", (double)v); break; }
    case GGUF_VT_UINT64: { uint64_t v; memcpy(&v, p, 8); printf("%" PRIu64, v); break; }
    case GGUF_VT_INT64: { int64_t v; memcpy(&v, p, 8); printf("%" PRId64, v); break; }
    case GGUF_VT_FLOAT64: { double v; memcpy(&v, p, 8); printf("%.17g", v); break; }
    default: printf("?");
    }
}

static size_t scalar_size(uint32_t type) {
    switch (type) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    default: return 8;
    }
}

static int cmd_info(const char *path) {
    tlm_error err;
    gguf_file *f = gguf_open(path, &err);
    if (!f) return fail(err.msg);
    printf("version\t%" PRIu32 "\n", gguf_version(f));
    printf("n_kv\t%" PRIu64 "\n", gguf_n_kv(f));
    printf("n_tensors\t%" PRIu64 "\n", gguf_n_tensors(f));
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        fputs("kv\t", stdout);
        print_hex(kv->key.ptr, kv->key.len);
        printf("\t%" PRIu32 "\t", kv->type);
        if (kv->type == GGUF_VT_STRING) {
            gguf_str s;
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.ptr);
            /* through the public getter when the key is printable */
            if (strlen(key) == kv->key.len && gguf_get_str(f, key, &s)) print_hex(s.ptr, s.len);
            else fputs("?", stdout);
        } else if (kv->type == GGUF_VT_ARRAY) {
            printf("%" PRIu32 ":%" PRIu64 ":", kv->arr_type, kv->arr_n);
            if (kv->arr_type == GGUF_VT_ARRAY) fputs("nested", stdout);
            for (uint64_t j = 0; kv->arr_type != GGUF_VT_ARRAY && j < kv->arr_n; j++) {
                if (j) fputc(',', stdout);
                if (kv->arr_type == GGUF_VT_STRING) print_hex(kv->strs[j].ptr, kv->strs[j].len);
                else print_scalar(kv->arr_type, kv->data + j * scalar_size(kv->arr_type));
            }
        } else {
            print_scalar(kv->type, kv->data);
        }
        fputc('\n', stdout);
    }
    for (uint64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        fputs("tensor\t", stdout);
        print_hex(t->name.ptr, t->name.len);
        printf("\t%" PRIu32 "\t", t->type);
        for (uint32_t d = 0; d < t->n_dims; d++) printf(d ? ",%" PRIu64 : "%" PRIu64, t->ne[d]);
        printf("\t%" PRIu64 "\t%" PRIu64 "\n", t->offset, t->nbytes);
    }
    gguf_close(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "raw") == 0) return cmd_raw(argv[2], argv[3], argv[4], argv[5]);
    if (argc == 5 && strcmp(argv[1], "tensor") == 0) return cmd_tensor(argv[2], argv[3], argv[4]);
    if (argc == 3 && strcmp(argv[1], "info") == 0) return cmd_info(argv[2]);
    fprintf(stderr, "usage: tool_dequant raw TYPE N in.bin out.f32\n"
                    "       tool_dequant tensor FILE NAME out.f32\n"
                    "       tool_dequant info FILE\n");
    return 2;
}
