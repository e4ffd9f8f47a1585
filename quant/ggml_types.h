/*
 * ggml_types.h — the GGML tensor types that GGUF files carry, their block
 * layouts, and scalar dequantization to f32 (the reference definition).
 *
 * Layouts follow the GGUF specification; each block struct carries a
 * _Static_assert on its size.
 */
#ifndef TLM_GGML_TYPES_H
#define TLM_GGML_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ggml_type {
    GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1, GGML_TYPE_Q4_0 = 2, GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6, GGML_TYPE_Q5_1 = 7, GGML_TYPE_Q8_0 = 8, GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10, GGML_TYPE_Q3_K = 11, GGML_TYPE_Q4_K = 12, GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14, GGML_TYPE_Q8_K = 15, GGML_TYPE_BF16 = 30,
    GGML_TYPE_COUNT = 40,
} ggml_type;

/* Name such as "Q4_K", or NULL for a type number trimlm does not know. */
const char *ggml_type_name(uint32_t type);
/* Elements per block (1 for F32/F16/BF16); 0 for an unknown type. */
uint32_t ggml_block_size(uint32_t type);
/* Bytes per block; 0 for an unknown type. */
uint32_t ggml_block_bytes(uint32_t type);
/* True when ggml_dequantize_row() can convert this type to f32. */
bool ggml_can_dequantize(uint32_t type);
/* Bytes of a row of n elements; false when n is not a multiple of the block
 * size or the type is unknown (the caller reports which). */
bool ggml_row_bytes(uint32_t type, uint64_t n, uint64_t *out);

/* Dequantizes n elements (n a multiple of the block size) from src to dst. */
void ggml_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);

#endif
