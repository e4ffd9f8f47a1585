/*
 * gguf.h — read-only GGUF (v2, v3) reader over an mmap of the file.
 *
 * Every count, length and offset read from the file is checked against the
 * file size before use; strings and tensor data point into the mapping and
 * stay valid until gguf_close(). Strings are NOT NUL-terminated.
 */
#ifndef TLM_GGUF_H
#define TLM_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trimlm.h"

typedef enum gguf_vtype {
    GGUF_VT_UINT8 = 0, GGUF_VT_INT8 = 1, GGUF_VT_UINT16 = 2, GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4, GGUF_VT_INT32 = 5, GGUF_VT_FLOAT32 = 6, GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8, GGUF_VT_ARRAY = 9, GGUF_VT_UINT64 = 10, GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12,
} gguf_vtype;

typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    uint32_t type;        /* gguf_vtype */
    uint32_t arr_type;    /* element type when type == GGUF_VT_ARRAY */
    uint64_t arr_n;       /* element count when an array */
    const uint8_t *data;  /* the scalar value, or the first array element */
    const gguf_str *strs; /* arr_n strings when an array of strings, else NULL */
} gguf_kv;

#define GGUF_MAX_DIMS 4

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension */
    uint32_t type;              /* ggml_type (quant/ggml_types.h) */
    uint64_t offset;            /* from the start of the data section */
    uint64_t nbytes;
    const void *data;           /* inside the mapping, bounds-checked */
} gguf_tensor;

typedef struct gguf_file gguf_file;

gguf_file *gguf_open(const char *path, tlm_error *err);
/* Parses a GGUF image held in memory (not copied: it must outlive the
 * gguf_file); name stands for the file in messages. */
gguf_file *gguf_open_memory(const void *data, size_t size, const char *name, tlm_error *err);
void gguf_close(gguf_file *f);
/* Hands the mapping of a file opened by gguf_open to the caller, who
 * munmaps (*map, *size) when done; the tensors' data pointers stay valid
 * after gguf_close. False (nothing handed over) for gguf_open_memory. */
bool gguf_take_mapping(gguf_file *f, const void **map, size_t *size);

uint32_t gguf_version(const gguf_file *f);
const char *gguf_path(const gguf_file *f);
size_t gguf_file_size(const gguf_file *f);
/* Where the data section starts in the file: a tensor's bytes lie at
 * gguf_data_offset(f) + t->offset. */
uint64_t gguf_data_offset(const gguf_file *f);

uint64_t gguf_n_kv(const gguf_file *f);
const gguf_kv *gguf_kv_at(const gguf_file *f, uint64_t i);
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);

uint64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, uint64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed getters: false when the key is absent or not convertible (integers of
 * any width convert to each other when the value fits; floats to float). */
bool gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_f32(const gguf_file *f, const char *key, float *out);
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
bool gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);

bool gguf_str_eq(gguf_str s, const char *c);

/* Bytes of one scalar of a fixed-size value type; 0 for strings, arrays and
 * unknown types. */
uint32_t gguf_vtype_size(uint32_t t);

#endif
