/*
 * gguf_kernels.h — internal to simd/: the GGUF-block kernels (gemv_gguf /
 * gemm_gguf in kernels.h) that each ISA file defines, and the plain-C block
 * decoders they share with the scalar table.
 *
 * A decoded block is what every table's integer sums are defined on:
 *  - K-quants: 256 unsigned weight quants w (Q4_K 0..15, Q5_K 0..31, Q2_K
 *    0..3, Q6_K the raw q6 0..63, Q3_K q3 + 4 in 0..7), the integer scale
 *    sc[i] and min mn[i] of each run of 16 (Q4_K / Q5_K repeat their
 *    32-value sub-block's pair; Q6_K / Q3_K's offsets become mins: 32 sc[i],
 *    4 sc[i]), and d, dmin (Q6_K / Q3_K: no dmin, the min is in units of d);
 *  - 32-value types: 32 quants w (Q4_0 q - 8, Q5_0 q - 16, Q8_0 q; Q4_1 /
 *    Q5_1 the unsigned q) and d, m.
 * The value of weight e is then d * sc[e/16] * w[e] - dmin * mn[e/16]
 * (Q6_K, Q3_K: d * (sc[e/16] * w[e] - mn[e/16])), or d * w[e] (+ m),
 * exactly as quant/ggml_types.c dequantizes it. Unsigned weights let the
 * SIMD tables multiply them as u8 x s8 (maddubs, vpdpbusd); the integer
 * sums are the same as with centred ones.
 */
#ifndef TLM_GGUF_KERNELS_H
#define TLM_GGUF_KERNELS_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "f16.h"
#include "ggml_blocks.h"
#include "ggml_types.h"
#include "gguf_act.h"
#include "kernels.h"
#include "qformat.h"

/* X(name, GGML type): every type with GGUF-block kernels. */
#define TLM_GGUF_KERNEL_TYPES(X)                                                                 \
    X(q4_0, GGML_TYPE_Q4_0)                                                                      \
    X(q4_1, GGML_TYPE_Q4_1)                                                                      \
    X(q5_0, GGML_TYPE_Q5_0)                                                                      \
    X(q5_1, GGML_TYPE_Q5_1)                                                                      \
    X(q8_0, GGML_TYPE_Q8_0)                                                                      \
    X(q2_k, GGML_TYPE_Q2_K)                                                                      \
    X(q3_k, GGML_TYPE_Q3_K)                                                                      \
    X(q4_k, GGML_TYPE_Q4_K)                                                                      \
    X(q5_k, GGML_TYPE_Q5_K)                                                                      \
    X(q6_k, GGML_TYPE_Q6_K)                                                                      \
    X(f16, GGML_TYPE_F16)                                                                        \
    X(bf16, GGML_TYPE_BF16)

#define TLM_GGUF_DECLARE_SCALAR(name, type)                                                      \
    void tlm_gemv_gguf_##name##_scalar(const void *w, const void *xq, float *y, int64_t n_in,   \
                                       int64_t r0, int64_t r1);                                  \
    void tlm_gemm_gguf_##name##_scalar(const void *w, const void *xq, float *c, int64_t ldc,    \
                                       int64_t m, int64_t n_in, int64_t r0, int64_t r1,         \
                                       bool accumulate);
TLM_GGUF_KERNEL_TYPES(TLM_GGUF_DECLARE_SCALAR)
void tlm_quantize_act_q8_k256_scalar(const float *x, void *xq, int64_t n);

#if defined(TLM_HAVE_X86_KERNELS)
void tlm_gguf_avx2_fill(tlm_kernels *k);
void tlm_gguf_avx512_fill(tlm_kernels *k);
#endif
#if defined(TLM_HAVE_NEON_KERNELS)
void tlm_gguf_neon_fill(tlm_kernels *k);
#endif

/* ------------------------------------------------------------ geometry */

static inline bool gguf_is_k(uint32_t type) {
    return type == GGML_TYPE_Q2_K || type == GGML_TYPE_Q3_K || type == GGML_TYPE_Q4_K ||
           type == GGML_TYPE_Q5_K || type == GGML_TYPE_Q6_K;
}

/* K-quants whose mins have their own super-scale dmin (two fmas a block). */
static inline bool gguf_k_has_dmin(uint32_t type) {
    return type == GGML_TYPE_Q2_K || type == GGML_TYPE_Q4_K || type == GGML_TYPE_Q5_K;
}

static inline size_t gguf_block_bytes(uint32_t type) {
    switch (type) {
    case GGML_TYPE_Q4_0: return sizeof(block_q4_0);
    case GGML_TYPE_Q4_1: return sizeof(block_q4_1);
    case GGML_TYPE_Q5_0: return sizeof(block_q5_0);
    case GGML_TYPE_Q5_1: return sizeof(block_q5_1);
    case GGML_TYPE_Q8_0: return sizeof(block_q8_0);
    case GGML_TYPE_Q2_K: return sizeof(block_q2_k);
    case GGML_TYPE_Q3_K: return sizeof(block_q3_k);
    case GGML_TYPE_Q4_K: return sizeof(block_q4_k);
    case GGML_TYPE_Q5_K: return sizeof(block_q5_k);
    case GGML_TYPE_Q6_K: return sizeof(block_q6_k);
    default: return 2; /* F16, BF16: one value */
    }
}

/* ------------------------------------------------------------ decoders */

/* Q4_K / Q5_K: the 6-bit scales and mins of the 8 sub-blocks of 32, from
 * their 12 packed bytes (sub-block j < 4 in the low 6 bits of bytes j and
 * j + 4; j >= 4 in byte j + 4's nibbles plus the top 2 bits of bytes j - 4
 * and j), with 32-bit operations on all four at once. */
static inline void gguf_k4_scales(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8]) {
    uint32_t a, b, c;
    memcpy(&a, s, 4);
    memcpy(&b, s + 4, 4);
    memcpy(&c, s + 8, 4);
    const uint32_t lo6 = 0x3f3f3f3fu, lo4 = 0x0f0f0f0fu, top2 = 0x30303030u;
    uint32_t sc_lo = a & lo6, mn_lo = b & lo6;
    uint32_t sc_hi = (c & lo4) | ((a >> 2) & top2), mn_hi = ((c >> 4) & lo4) | ((b >> 2) & top2);
    memcpy(sc, &sc_lo, 4);
    memcpy(sc + 4, &sc_hi, 4);
    memcpy(mn, &mn_lo, 4);
    memcpy(mn + 4, &mn_hi, 4);
}

/* Q3_K: the 16 signed 6-bit scales (scale6 - 32). */
static inline void gguf_q3k_scales(const uint8_t s[12], int8_t sc[16]) {
    for (int i = 0; i < 16; i++) {
        int low4 = i < 8 ? (s[i] & 0x0f) : (s[i - 8] >> 4);
        int high2 = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        sc[i] = (int8_t)((low4 | high2 << 4) - 32);
    }
}

typedef struct gguf_kblock {
    uint8_t w[256];
    int16_t sc[16], mn[16];
    float d, dmin;
} gguf_kblock;

static inline void gguf_decode_k(uint32_t type, const uint8_t *blk, gguf_kblock *o) {
    o->dmin = 0.0f;
    switch (type) {
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K: {
        const bool q5 = type == GGML_TYPE_Q5_K;
        const block_q4_k *b4 = (const block_q4_k *)blk;
        const block_q5_k *b5 = (const block_q5_k *)blk;
        uint16_t d, dmin;
        memcpy(&d, blk, 2);
        memcpy(&dmin, blk + 2, 2);
        o->d = tlm_f16_to_f32(d);
        o->dmin = tlm_f16_to_f32(dmin);
        uint8_t sc[8], mn[8];
        gguf_k4_scales(q5 ? b5->scales : b4->scales, sc, mn);
        for (int i = 0; i < 16; i++) {
            o->sc[i] = sc[i / 2];
            o->mn[i] = mn[i / 2];
        }
        const uint8_t *q = q5 ? b5->qs : b4->qs;
        for (int p = 0; p < 4; p++)
            for (int l = 0; l < 32; l++) {
                int lo = q[32 * p + l] & 0x0f, hi = q[32 * p + l] >> 4;
                if (q5) {
                    lo |= ((b5->qh[l] >> (2 * p)) & 1) << 4;
                    hi |= ((b5->qh[l] >> (2 * p + 1)) & 1) << 4;
                }
                o->w[64 * p + l] = (uint8_t)lo;
                o->w[64 * p + 32 + l] = (uint8_t)hi;
            }
        break;
    }
    case GGML_TYPE_Q6_K: {
        const block_q6_k *b = (const block_q6_k *)blk;
        o->d = tlm_f16_to_f32(b->d);
        for (int i = 0; i < 16; i++) {
            o->sc[i] = b->scales[i];
            o->mn[i] = (int16_t)(32 * b->scales[i]);
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
            uint8_t *w = o->w + 128 * h;
            for (int l = 0; l < 32; l++) {
                w[l] = (uint8_t)((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4);
                w[l + 32] = (uint8_t)((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4);
                w[l + 64] = (uint8_t)((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4);
                w[l + 96] = (uint8_t)((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4);
            }
        }
        break;
    }
    case GGML_TYPE_Q3_K: {
        const block_q3_k *b = (const block_q3_k *)blk;
        o->d = tlm_f16_to_f32(b->d);
        int8_t sc[16];
        gguf_q3k_scales(b->scales, sc);
        for (int i = 0; i < 16; i++) {
            o->sc[i] = sc[i];
            o->mn[i] = (int16_t)(4 * sc[i]);
        }
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++) {
                    int q2 = (b->qs[32 * h + l] >> (2 * j)) & 3;
                    int hbit = (b->hmask[l] >> (4 * h + j)) & 1;
                    o->w[128 * h + 32 * j + l] = (uint8_t)(q2 + (hbit ? 4 : 0));
                }
        break;
    }
    case GGML_TYPE_Q2_K: {
        const block_q2_k *b = (const block_q2_k *)blk;
        o->d = tlm_f16_to_f32(b->d);
        o->dmin = tlm_f16_to_f32(b->dmin);
        for (int i = 0; i < 16; i++) {
            o->sc[i] = b->scales[i] & 0x0f;
            o->mn[i] = b->scales[i] >> 4;
        }
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++)
                for (int l = 0; l < 32; l++)
                    o->w[128 * h + 32 * j + l] = (uint8_t)((b->qs[32 * h + l] >> (2 * j)) & 3);
        break;
    }
    default: memset(o, 0, sizeof *o);
    }
}

typedef struct gguf_block32 {
    int8_t w[32];
    float d, m;
} gguf_block32;

static inline void gguf_decode_32(uint32_t type, const uint8_t *blk, gguf_block32 *o) {
    uint16_t h;
    memcpy(&h, blk, 2);
    o->d = tlm_f16_to_f32(h);
    o->m = 0.0f;
    switch (type) {
    case GGML_TYPE_Q8_0: memcpy(o->w, blk + 2, 32); break;
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q4_1: {
        const bool q41 = type == GGML_TYPE_Q4_1;
        const uint8_t *qs = blk + (q41 ? 4 : 2);
        if (q41) {
            memcpy(&h, blk + 2, 2);
            o->m = tlm_f16_to_f32(h);
        }
        int z = q41 ? 0 : 8;
        for (int j = 0; j < 16; j++) {
            o->w[j] = (int8_t)((qs[j] & 0x0f) - z);
            o->w[j + 16] = (int8_t)((qs[j] >> 4) - z);
        }
        break;
    }
    case GGML_TYPE_Q5_0:
    case GGML_TYPE_Q5_1: {
        const bool q51 = type == GGML_TYPE_Q5_1;
        const uint8_t *qhp = blk + (q51 ? 4 : 2), *qs = qhp + 4;
        if (q51) {
            memcpy(&h, blk + 2, 2);
            o->m = tlm_f16_to_f32(h);
        }
        uint32_t qh = (uint32_t)qhp[0] | (uint32_t)qhp[1] << 8 | (uint32_t)qhp[2] << 16 |
                      (uint32_t)qhp[3] << 24;
        int z = q51 ? 0 : 16;
        for (int j = 0; j < 16; j++) {
            o->w[j] = (int8_t)(((qs[j] & 0x0f) | ((qh >> j) & 1) << 4) - z);
            o->w[j + 16] = (int8_t)(((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - z);
        }
        break;
    }
    default: memset(o, 0, sizeof *o);
    }
}

/* The per-block float step every table shares (kernels.h): given the exact
 * integer sums of one block against one activation block. */
/* sumw = sum_i sc[i] * sum w x, summ = sum_i mn[i] * bsum16[i] (decoded
 * block, above); for Q6_K / Q3_K their difference is kernels.h's sumi. */
static inline float gguf_k_block_fma(uint32_t type, int32_t sumw, int32_t summ, float d,
                                     float dmin, float dx, float acc) {
    if (!gguf_k_has_dmin(type)) return __builtin_fmaf((float)(sumw - summ), d * dx, acc);
    acc = __builtin_fmaf((float)sumw, d * dx, acc);
    return __builtin_fmaf(-(float)summ, dmin * dx, acc);
}

static inline float gguf_32_block_fma(uint32_t type, int32_t isum, int32_t sum_x, float d, float m,
                                      float dx, float acc) {
    acc = __builtin_fmaf((float)isum, d * dx, acc);
    if (type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1)
        acc = __builtin_fmaf((float)sum_x, m * dx, acc);
    return acc;
}

#endif
