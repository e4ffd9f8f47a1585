/*
 * ggml_types.c — the GGML type table (names, block geometry) and the scalar
 * dequantizers, which are the definition of each format's values.
 *
 * The arithmetic follows the order of operations of the GGML reference
 * (scale products first, then one multiply and one add per element) so that
 * results are bit-identical to other implementations of the formats.
 */
#include "ggml_types.h"

#include <string.h>

#include "f16.h"
#include "ggml_blocks.h"

/* ------------------------------------------------------------ type table */

typedef void (*dequantize_row_fn)(const void *src, float *dst, int64_t n);

typedef struct ggml_type_info {
    const char *name;
    uint32_t block_size;          /* elements per block */
    uint32_t block_bytes;         /* bytes per block */
    dequantize_row_fn dequantize; /* NULL: known geometry, no dequantizer */
} ggml_type_info;

static void dequantize_row_f32(const void *src, float *dst, int64_t n);
static void dequantize_row_f16(const void *src, float *dst, int64_t n);
static void dequantize_row_bf16(const void *src, float *dst, int64_t n);
static void dequantize_row_q4_0(const void *src, float *dst, int64_t n);
static void dequantize_row_q4_1(const void *src, float *dst, int64_t n);
static void dequantize_row_q5_0(const void *src, float *dst, int64_t n);
static void dequantize_row_q5_1(const void *src, float *dst, int64_t n);
static void dequantize_row_q8_0(const void *src, float *dst, int64_t n);
static void dequantize_row_q2_k(const void *src, float *dst, int64_t n);
static void dequantize_row_q3_k(const void *src, float *dst, int64_t n);
static void dequantize_row_q4_k(const void *src, float *dst, int64_t n);
static void dequantize_row_q5_k(const void *src, float *dst, int64_t n);
static void dequantize_row_q6_k(const void *src, float *dst, int64_t n);
static void dequantize_row_q8_k(const void *src, float *dst, int64_t n);

/* Indexed by type number. Types whose geometry is listed but that have no
 * dequantizer (the IQ and ternary formats, integer tensors) let a GGUF file
 * that contains them be parsed and reported precisely. */
static const ggml_type_info ggml_types[GGML_TYPE_COUNT] = {
    [GGML_TYPE_F32] = {"F32", 1, 4, dequantize_row_f32},
    [GGML_TYPE_F16] = {"F16", 1, 2, dequantize_row_f16},
    [GGML_TYPE_Q4_0] = {"Q4_0", GGML_QK4_0, sizeof(block_q4_0), dequantize_row_q4_0},
    [GGML_TYPE_Q4_1] = {"Q4_1", GGML_QK4_1, sizeof(block_q4_1), dequantize_row_q4_1},
    [GGML_TYPE_Q5_0] = {"Q5_0", GGML_QK5_0, sizeof(block_q5_0), dequantize_row_q5_0},
    [GGML_TYPE_Q5_1] = {"Q5_1", GGML_QK5_1, sizeof(block_q5_1), dequantize_row_q5_1},
    [GGML_TYPE_Q8_0] = {"Q8_0", GGML_QK8_0, sizeof(block_q8_0), dequantize_row_q8_0},
    [GGML_TYPE_Q8_1] = {"Q8_1", GGML_QK8_1, sizeof(block_q8_1), NULL},
    [GGML_TYPE_Q2_K] = {"Q2_K", GGML_QK_K, sizeof(block_q2_k), dequantize_row_q2_k},
    [GGML_TYPE_Q3_K] = {"Q3_K", GGML_QK_K, sizeof(block_q3_k), dequantize_row_q3_k},
    [GGML_TYPE_Q4_K] = {"Q4_K", GGML_QK_K, sizeof(block_q4_k), dequantize_row_q4_k},
    [GGML_TYPE_Q5_K] = {"Q5_K", GGML_QK_K, sizeof(block_q5_k), dequantize_row_q5_k},
    [GGML_TYPE_Q6_K] = {"Q6_K", GGML_QK_K, sizeof(block_q6_k), dequantize_row_q6_k},
    [GGML_TYPE_Q8_K] = {"Q8_K", GGML_QK_K, sizeof(block_q8_k), dequantize_row_q8_k},
    [16] = {"IQ2_XXS", 256, 66, NULL},
    [17] = {"IQ2_XS", 256, 74, NULL},
    [18] = {"IQ3_XXS", 256, 98, NULL},
    [19] = {"IQ1_S", 256, 50, NULL},
    [20] = {"IQ4_NL", 32, 18, NULL},
    [21] = {"IQ3_S", 256, 110, NULL},
    [22] = {"IQ2_S", 256, 82, NULL},
    [23] = {"IQ4_XS", 256, 136, NULL},
    [24] = {"I8", 1, 1, NULL},
    [25] = {"I16", 1, 2, NULL},
    [26] = {"I32", 1, 4, NULL},
    [27] = {"I64", 1, 8, NULL},
    [28] = {"F64", 1, 8, NULL},
    [29] = {"IQ1_M", 256, 56, NULL},
    [GGML_TYPE_BF16] = {"BF16", 1, 2, dequantize_row_bf16},
    [34] = {"TQ1_0", 256, 54, NULL},
    [35] = {"TQ2_0", 256, 66, NULL},
    [39] = {"MXFP4", 32, 17, NULL},
};

static const ggml_type_info *type_info(uint32_t type) {
    if (type >= GGML_TYPE_COUNT || !ggml_types[type].name) return NULL;
    return &ggml_types[type];
}

const char *ggml_type_name(uint32_t type) {
    const ggml_type_info *t = type_info(type);
    return t ? t->name : NULL;
}

uint32_t ggml_block_size(uint32_t type) {
    const ggml_type_info *t = type_info(type);
    return t ? t->block_size : 0;
}

uint32_t ggml_block_bytes(uint32_t type) {
    const ggml_type_info *t = type_info(type);
    return t ? t->block_bytes : 0;
}

bool ggml_can_dequantize(uint32_t type) {
    const ggml_type_info *t = type_info(type);
    return t && t->dequantize;
}

bool ggml_row_bytes(uint32_t type, uint64_t n, uint64_t *out) {
    const ggml_type_info *t = type_info(type);
    if (!t || n % t->block_size != 0) return false;
    return !__builtin_mul_overflow(n / t->block_size, (uint64_t)t->block_bytes, out);
}

void ggml_dequantize_row(uint32_t type, const void *src, float *dst, int64_t n) {
    const ggml_type_info *t = type_info(type);
    if (n <= 0) return;
    if (!t || !t->dequantize || n % t->block_size != 0) {
        /* a caller bug, not a file problem: give defined output */
        memset(dst, 0, (size_t)n * sizeof *dst);
        return;
    }
    t->dequantize(src, dst, n);
}

/* --------------------------------------------------------- float formats */

static void dequantize_row_f32(const void *src, float *dst, int64_t n) {
    memcpy(dst, src, (size_t)n * sizeof *dst);
}

static void dequantize_row_f16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, sizeof h);
        dst[i] = tlm_f16_to_f32(h);
    }
}

static void dequantize_row_bf16(const void *src, float *dst, int64_t n) {
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint16_t b;
        memcpy(&b, p + 2 * i, sizeof b);
        dst[i] = tlm_bf16_to_f32(b);
    }
}

/* ---------------------------------------------------- 32-element blocks */

static void dequantize_row_q4_0(const void *src, float *dst, int64_t n) {
    const block_q4_0 *blk = src;
    for (int64_t b = 0; b < n / GGML_QK4_0; b++, dst += GGML_QK4_0) {
        const float d = tlm_f16_to_f32(blk[b].d);
        for (int j = 0; j < GGML_QK4_0 / 2; j++) {
            dst[j] = (float)((int)(blk[b].qs[j] & 0x0f) - 8) * d;
            dst[j + GGML_QK4_0 / 2] = (float)((int)(blk[b].qs[j] >> 4) - 8) * d;
        }
    }
}

static void dequantize_row_q4_1(const void *src, float *dst, int64_t n) {
    const block_q4_1 *blk = src;
    for (int64_t b = 0; b < n / GGML_QK4_1; b++, dst += GGML_QK4_1) {
        const float d = tlm_f16_to_f32(blk[b].d);
        const float m = tlm_f16_to_f32(blk[b].m);
        for (int j = 0; j < GGML_QK4_1 / 2; j++) {
            dst[j] = (float)(blk[b].qs[j] & 0x0f) * d + m;
            dst[j + GGML_QK4_1 / 2] = (float)(blk[b].qs[j] >> 4) * d + m;
        }
    }
}

static uint32_t load_u32_le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void dequantize_row_q5_0(const void *src, float *dst, int64_t n) {
    const block_q5_0 *blk = src;
    for (int64_t b = 0; b < n / GGML_QK5_0; b++, dst += GGML_QK5_0) {
        const float d = tlm_f16_to_f32(blk[b].d);
        const uint32_t qh = load_u32_le(blk[b].qh);
        for (int j = 0; j < GGML_QK5_0 / 2; j++) {
            const int hi0 = (int)((qh >> j) & 1u) << 4;
            const int hi1 = (int)((qh >> (j + GGML_QK5_0 / 2)) & 1u) << 4;
            dst[j] = (float)(((blk[b].qs[j] & 0x0f) | hi0) - 16) * d;
            dst[j + GGML_QK5_0 / 2] = (float)(((blk[b].qs[j] >> 4) | hi1) - 16) * d;
        }
    }
}

static void dequantize_row_q5_1(const void *src, float *dst, int64_t n) {
    const block_q5_1 *blk = src;
    for (int64_t b = 0; b < n / GGML_QK5_1; b++, dst += GGML_QK5_1) {
        const float d = tlm_f16_to_f32(blk[b].d);
        const float m = tlm_f16_to_f32(blk[b].m);
        const uint32_t qh = load_u32_le(blk[b].qh);
        for (int j = 0; j < GGML_QK5_1 / 2; j++) {
            const int hi0 = (int)((qh >> j) & 1u) << 4;
            const int hi1 = (int)((qh >> (j + GGML_QK5_1 / 2)) & 1u) << 4;
            dst[j] = (float)((blk[b].qs[j] & 0x0f) | hi0) * d + m;
            dst[j + GGML_QK5_1 / 2] = (float)((blk[b].qs[j] >> 4) | hi1) * d + m;
        }
    }
}

static void dequantize_row_q8_0(const void *src, float *dst, int64_t n) {
    const block_q8_0 *blk = src;
    for (int64_t b = 0; b < n / GGML_QK8_0; b++, dst += GGML_QK8_0) {
        const float d = tlm_f16_to_f32(blk[b].d);
        for (int j = 0; j < GGML_QK8_0; j++) dst[j] = (float)blk[b].qs[j] * d;
    }
}

/* ------------------------------------------------------------- K-quants */

static void dequantize_row_q2_k(const void *src, float *dst, int64_t n) {
    const block_q2_k *blk = src;
    for (int64_t b = 0; b < n / GGML_QK_K; b++) {
        const float d = tlm_f16_to_f32(blk[b].d);
        const float dmin = tlm_f16_to_f32(blk[b].dmin);
        const uint8_t *q = blk[b].qs;
        int sub = 0; /* sub-block index 0..15 (16 elements each) */
        for (int half = 0; half < GGML_QK_K; half += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                /* two sub-blocks share a bit-pair position: q[0..15], q[16..31] */
                for (int k = 0; k < 2; k++, sub++) {
                    const uint8_t sc = blk[b].scales[sub];
                    const float dl = d * (float)(sc & 0x0f);
                    const float ml = dmin * (float)(sc >> 4);
                    for (int l = 0; l < 16; l++)
                        *dst++ = dl * (float)((q[16 * k + l] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* The 6-bit scale of sub-block i (0..15) of a Q3_K block. */
static int q3_k_scale(const uint8_t scales[12], int i) {
    const int low4 = i < 8 ? (scales[i] & 0x0f) : (scales[i - 8] >> 4);
    const int high2 = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
    return (low4 | high2 << 4) - 32;
}

static void dequantize_row_q3_k(const void *src, float *dst, int64_t n) {
    const block_q3_k *blk = src;
    for (int64_t b = 0; b < n / GGML_QK_K; b++) {
        const float d = tlm_f16_to_f32(blk[b].d);
        const uint8_t *q = blk[b].qs;
        const uint8_t *hm = blk[b].hmask;
        int sub = 0;
        uint8_t hbit = 1; /* which bit of hmask: one per 32 elements */
        for (int half = 0; half < GGML_QK_K; half += 128, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, hbit <<= 1) {
                for (int k = 0; k < 2; k++, sub++) {
                    const float dl = d * (float)q3_k_scale(blk[b].scales, sub);
                    for (int l = 16 * k; l < 16 * k + 16; l++) {
                        const int q3 = ((q[l] >> shift) & 3) - ((hm[l] & hbit) ? 0 : 4);
                        *dst++ = dl * (float)q3;
                    }
                }
            }
        }
    }
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block:
 * j < 4 sit in the low 6 bits of bytes j and j+4; j >= 4 take 4 bits from
 * byte j+4 and their top 2 bits from the spare bits of bytes j-4 and j. */
static void k_scale_min(const uint8_t s[GGML_K_SCALE_SIZE], int j, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

static void dequantize_row_q4_k(const void *src, float *dst, int64_t n) {
    const block_q4_k *blk = src;
    for (int64_t b = 0; b < n / GGML_QK_K; b++) {
        const float d = tlm_f16_to_f32(blk[b].d);
        const float dmin = tlm_f16_to_f32(blk[b].dmin);
        const uint8_t *q = blk[b].qs;
        for (int sub = 0; sub < 8; sub += 2, q += 32) {
            uint8_t sc, m;
            k_scale_min(blk[b].scales, sub, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            k_scale_min(blk[b].scales, sub + 1, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *dst++ = d1 * (float)(q[l] & 0x0f) - m1;
            for (int l = 0; l < 32; l++) *dst++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void dequantize_row_q5_k(const void *src, float *dst, int64_t n) {
    const block_q5_k *blk = src;
    for (int64_t b = 0; b < n / GGML_QK_K; b++) {
        const float d = tlm_f16_to_f32(blk[b].d);
        const float dmin = tlm_f16_to_f32(blk[b].dmin);
        const uint8_t *ql = blk[b].qs;
        const uint8_t *qh = blk[b].qh;
        uint8_t bit_lo = 1, bit_hi = 2; /* qh bits of this pair of sub-blocks */
        for (int sub = 0; sub < 8; sub += 2, ql += 32, bit_lo <<= 2, bit_hi <<= 2) {
            uint8_t sc, m;
            k_scale_min(blk[b].scales, sub, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            k_scale_min(blk[b].scales, sub + 1, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                *dst++ = d1 * (float)((ql[l] & 0x0f) + ((qh[l] & bit_lo) ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *dst++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & bit_hi) ? 16 : 0)) - m2;
        }
    }
}

static void dequantize_row_q6_k(const void *src, float *dst, int64_t n) {
    const block_q6_k *blk = src;
    for (int64_t b = 0; b < n / GGML_QK_K; b++) {
        const float d = tlm_f16_to_f32(blk[b].d);
        const uint8_t *ql = blk[b].ql;
        const uint8_t *qh = blk[b].qh;
        const int8_t *sc = blk[b].scales;
        /* each half of 128 elements: 64 bytes of ql, 32 of qh, 8 scales */
        for (int half = 0; half < GGML_QK_K; half += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int s = l / 16;
                const int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
                const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                dst[l + 0] = d * (float)sc[s + 0] * (float)q1;
                dst[l + 32] = d * (float)sc[s + 2] * (float)q2;
                dst[l + 64] = d * (float)sc[s + 4] * (float)q3;
                dst[l + 96] = d * (float)sc[s + 6] * (float)q4;
            }
            dst += 128;
        }
    }
}

static void dequantize_row_q8_k(const void *src, float *dst, int64_t n) {
    const block_q8_k *blk = src;
    for (int64_t b = 0; b < n / GGML_QK_K; b++, dst += GGML_QK_K) {
        const uint32_t bits = load_u32_le(blk[b].d);
        float d;
        memcpy(&d, &bits, sizeof d);
        for (int j = 0; j < GGML_QK_K; j++) dst[j] = d * (float)blk[b].qs[j];
    }
}
