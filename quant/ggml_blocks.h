/*
 * ggml_blocks.h — byte layouts of the GGML quantized block formats that GGUF
 * files carry.
 *
 * A block holds `block size` consecutive elements of one row. Half-precision
 * scales are stored as raw IEEE binary16 bits (uint16_t) and converted with
 * quant/f16.h. Every struct is packed by construction (only uint8_t/uint16_t
 * members in an order that needs no padding); the _Static_asserts pin the
 * sizes to the on-disk sizes so that a layout mistake fails to compile.
 *
 * The K-quants group 256 elements into a super-block of 8 or 16 sub-blocks,
 * each with its own small integer scale (and min) relative to the f16 super
 * scale(s).
 */
#ifndef TLM_GGML_BLOCKS_H
#define TLM_GGML_BLOCKS_H

#include <stdint.h>

#define GGML_QK4_0 32
#define GGML_QK4_1 32
#define GGML_QK5_0 32
#define GGML_QK5_1 32
#define GGML_QK8_0 32
#define GGML_QK8_1 32
#define GGML_QK_K 256
#define GGML_K_SCALE_SIZE 12 /* 8 x (6-bit scale, 6-bit min) of Q4_K / Q5_K */

/* ---------------------------------------------------------- 32-element blocks */

/* x = d * (q - 8); q 4-bit: element j in the low nibble of qs[j], element
 * j+16 in the high nibble (j < 16). */
typedef struct block_q4_0 {
    uint16_t d;
    uint8_t qs[GGML_QK4_0 / 2];
} block_q4_0;
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 is 18 bytes");

/* x = d * q + m; nibbles as in Q4_0. */
typedef struct block_q4_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qs[GGML_QK4_1 / 2];
} block_q4_1;
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 is 20 bytes");

/* x = d * (q - 16); q 5-bit: low 4 bits as in Q4_0, bit 4 of element j is
 * bit j of the little-endian 32-bit qh. */
typedef struct block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[GGML_QK5_0 / 2];
} block_q5_0;
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 is 22 bytes");

/* x = d * q + m; bits as in Q5_0. */
typedef struct block_q5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[GGML_QK5_1 / 2];
} block_q5_1;
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 is 24 bytes");

/* x = d * q; q signed 8-bit. */
typedef struct block_q8_0 {
    uint16_t d;
    int8_t qs[GGML_QK8_0];
} block_q8_0;
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 is 34 bytes");

/* x = d * q; s = d * sum(q) is a cached helper for dot products. */
typedef struct block_q8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[GGML_QK8_1];
} block_q8_1;
_Static_assert(sizeof(block_q8_1) == 36, "block_q8_1 is 36 bytes");

/* ------------------------------------------------------ 256-element K-quants */

/* 16 sub-blocks of 16: x = d * (scales[i] & 15) * q - dmin * (scales[i] >> 4),
 * q 2-bit. For each half (128 elements, 32 bytes of qs) the 4 bit-pairs of
 * qs[l] belong to 4 consecutive groups of 32 elements. */
typedef struct block_q2_k {
    uint8_t scales[GGML_QK_K / 16];
    uint8_t qs[GGML_QK_K / 4];
    uint16_t d;
    uint16_t dmin;
} block_q2_k;
_Static_assert(sizeof(block_q2_k) == 84, "block_q2_k is 84 bytes");

/* 16 sub-blocks of 16: x = d * (scale6 - 32) * (q2 - (hbit ? 0 : 4)). The
 * 6-bit scales: low 4 bits in scales[0..7] (nibbles), high 2 bits in
 * scales[8..11]. Bit b of hmask[l] is the high bit of element 32*b + l. */
typedef struct block_q3_k {
    uint8_t hmask[GGML_QK_K / 8];
    uint8_t qs[GGML_QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
} block_q3_k;
_Static_assert(sizeof(block_q3_k) == 110, "block_q3_k is 110 bytes");

/* 8 sub-blocks of 32: x = d * sc6 * q4 - dmin * m6; each group of 64 elements
 * takes the low nibbles, then the high nibbles, of 32 bytes of qs. */
typedef struct block_q4_k {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[GGML_K_SCALE_SIZE];
    uint8_t qs[GGML_QK_K / 2];
} block_q4_k;
_Static_assert(sizeof(block_q4_k) == 144, "block_q4_k is 144 bytes");

/* As Q4_K with a fifth bit: bit b of qh[l] is bit 4 of element 32*b + l. */
typedef struct block_q5_k {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[GGML_K_SCALE_SIZE];
    uint8_t qh[GGML_QK_K / 8];
    uint8_t qs[GGML_QK_K / 2];
} block_q5_k;
_Static_assert(sizeof(block_q5_k) == 176, "block_q5_k is 176 bytes");

/* 16 sub-blocks of 16: x = d * scales[i] * (q6 - 32); low 4 bits in ql,
 * high 2 bits in qh. */
typedef struct block_q6_k {
    uint8_t ql[GGML_QK_K / 2];
    uint8_t qh[GGML_QK_K / 4];
    int8_t scales[GGML_QK_K / 16];
    uint16_t d;
} block_q6_k;
_Static_assert(sizeof(block_q6_k) == 210, "block_q6_k is 210 bytes");

/* x = d * q with an f32 d; bsums (sums of 16 q's) serve dot products. The
 * float is declared as raw bytes so that the struct has no padding. */
typedef struct block_q8_k {
    uint8_t d[4]; /* little-endian f32 */
    int8_t qs[GGML_QK_K];
    uint8_t bsums[16 * 2]; /* 16 x little-endian int16 */
} block_q8_k;
_Static_assert(sizeof(block_q8_k) == 292, "block_q8_k is 292 bytes");

#endif
