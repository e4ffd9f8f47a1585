/*
 * safetensors.h — read-only safetensors reader: one file, or the shards named
 * by model.safetensors.index.json. Headers are parsed with cJSON and every
 * offset is checked against its file's size; tensor data stays mmapped.
 */
#ifndef TLM_SAFETENSORS_H
#define TLM_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trimlm.h"

typedef enum st_dtype { ST_F32 = 1, ST_F16, ST_BF16, ST_OTHER } st_dtype;

#define ST_MAX_DIMS 4

typedef struct st_tensor {
    const char *name;           /* NUL-terminated, owned by the set */
    st_dtype dtype;
    uint32_t n_dims;
    uint64_t shape[ST_MAX_DIMS]; /* row-major: shape[n_dims-1] is contiguous */
    uint64_t n_elements;
    const void *data;           /* inside the mapping */
    uint64_t nbytes;
} st_tensor;

typedef struct st_set st_set;

/* dir holds model.safetensors, or model.safetensors.index.json + shards. */
st_set *st_open_dir(const char *dir, tlm_error *err);
/* One .safetensors file. */
st_set *st_open_file(const char *path, tlm_error *err);
void st_close(st_set *s);

size_t st_n_tensors(const st_set *s);
const st_tensor *st_tensor_at(const st_set *s, size_t i);
const st_tensor *st_find(const st_set *s, const char *name);

/* Converts a tensor to f32 (n_elements floats). Fails for ST_OTHER. */
tlm_status st_to_f32(const st_tensor *t, float *dst, tlm_error *err);
/* st_to_f32's check alone: the error it gives for a dtype it cannot convert. */
tlm_status st_check_f32(const st_tensor *t, tlm_error *err);
/* st_to_f32's conversion of n_elements values of a checked dtype at raw. */
void st_convert_f32(st_dtype dtype, const void *raw, uint64_t n_elements, float *dst);
/* The file holding t, its size, and where t's bytes start in it (for reading
 * the tensor again later without the mapping). */
void st_tensor_source(const st_set *s, const st_tensor *t, const char **path, uint64_t *file_size,
                      uint64_t *offset);

#endif
