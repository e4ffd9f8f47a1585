/*
 * kernels_neon.c — Arm NEON (AArch64 Advanced SIMD) kernels.
 *
 * The file is compiled for the AArch64 baseline; the int8 dot-product
 * instruction (SDOT, Armv8.2 "dotprod", optional before Armv8.4) is enabled
 * only on the functions that use it, which run only when the kernel reports
 * HWCAP_ASIMDDP. Without it the same kernels use widening multiplies.
 */
#include <arm_neon.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <sys/auxv.h>

#include "f16.h"
#include "gguf_kernels.h"
#include "kernels.h"
#include "qformat.h"

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif

static float dot_f32_neon(const float *a, const float *b, int64_t n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void gemv_f32_neon(const float *w, const float *x, float *y, int64_t n_in, int64_t r0,
                          int64_t r1) {
    for (int64_t r = r0; r < r1; r++) y[r] = dot_f32_neon(w + r * n_in, x, n_in);
}

static void axpy_f32_neon(float a, const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    for (; i < n; i++) y[i] += a * x[i];
}

/* ---------------------------------------------------- quantized decode */

static void quantize_act_q8_g32_neon(const float *x, void *xq, int64_t n) {
    tlm_block_q8_g32_act *out = xq;
    for (int64_t g = 0; g < n / TLM_QGROUP; g++) {
        const float *p = x + g * TLM_QGROUP;
        float32x4_t v[8];
        float32x4_t m = vdupq_n_f32(0);
        for (int i = 0; i < 8; i++) {
            v[i] = vld1q_f32(p + 4 * i);
            m = vmaxq_f32(m, vabsq_f32(v[i]));
        }
        float amax = vmaxvq_f32(m);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int32x4_t s = vdupq_n_s32(0);
        for (int i = 0; i < 8; i += 2) {
            /* fcvtns: round half to even, as the scalar reference */
            int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(v[i], id));
            int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(v[i + 1], id));
            s = vaddq_s32(s, vaddq_s32(q0, q1));
            int16x8_t h = vcombine_s16(vmovn_s32(q0), vmovn_s32(q1));
            vst1_s8(out[g].qs + 4 * i, vmovn_s16(h));
        }
        out[g].d = d;
        out[g].sum = vaddvq_s32(s);
    }
}

/* The 8 weight lines of one tile-group as int8: line k holds inputs 4k..4k+3
 * of the 16 rows, in 4 registers of 4 rows each, stored biased by 128
 * (qformat.h): one xor makes them signed again. */
static inline void load_lines_q8(const uint8_t *q, int8x16_t wl[8][4]) {
    const uint8x16_t bias = vdupq_n_u8(0x80);
    for (int k = 0; k < 8; k++)
        for (int c = 0; c < 4; c++)
            wl[k][c] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(q + 64 * k + 16 * c), bias));
}

/* Q4: low nibbles of line j are inputs 4j.., high nibbles 16+4j..; centred
 * to int8 by subtracting 8. */
static inline void load_lines_q4(const uint8_t *q, int8x16_t wl[8][4]) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    for (int j = 0; j < 4; j++)
        for (int c = 0; c < 4; c++) {
            uint8x16_t v = vld1q_u8(q + 64 * j + 16 * c);
            wl[j][c] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, low4)), eight);
            wl[j + 4][c] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
        }
}

/* acc[c] (rows 4c..4c+3) += scale * isum, scales: 16 f16 of the group. */
static inline void accumulate_group(float32x4_t acc[4], const int32x4_t isum[4], const uint8_t *sc,
                                    float dx) {
    for (int c = 0; c < 4; c++) {
        uint16x4_t h = vld1_u16((const uint16_t *)(sc + 8 * c));
        float32x4_t scale = vmulq_n_f32(vcvt_f32_f16(vreinterpret_f16_u16(h)), dx);
        acc[c] = vfmaq_f32(acc[c], vcvtq_f32_s32(isum[c]), scale);
    }
}

static inline void store_rows16_neon(float *y, int64_t base, int64_t r0, int64_t r1,
                                     const float32x4_t acc[4]) {
    float t[16];
    for (int c = 0; c < 4; c++) vst1q_f32(t + 4 * c, acc[c]);
    for (int r = 0; r < 16; r++)
        if (base + r >= r0 && base + r < r1) y[base + r] = t[r];
}

/* Group dot products with SDOT: lane r of vdotq_s32(acc, w, x4) gains the 4
 * products of row r's weights with the broadcast activations. */
__attribute__((target("arch=armv8.2-a+dotprod"))) static void group_isum_dotprod(const int8x16_t wl[8][4],
                                                                   const int8_t *xs,
                                                                   int32x4_t isum[4]) {
    for (int c = 0; c < 4; c++) isum[c] = vdupq_n_s32(0);
    for (int k = 0; k < 8; k++) {
        int32_t v;
        memcpy(&v, xs + 4 * k, 4);
        int8x16_t xb = vreinterpretq_s8_s32(vdupq_n_s32(v));
        for (int c = 0; c < 4; c++) isum[c] = vdotq_s32(isum[c], wl[k][c], xb);
    }
}

/* The same without SDOT: widening multiplies to int16 (|p| <= 127 * 128),
 * pairwise-accumulated into int32, then the two halves of each row folded. */
static void group_isum_widen(const int8x16_t wl[8][4], const int8_t *xs, int32x4_t isum[4]) {
    for (int c = 0; c < 4; c++) {
        int32x4_t a01 = vdupq_n_s32(0), a23 = vdupq_n_s32(0); /* rows 4c,4c+1 / 4c+2,4c+3 */
        for (int k = 0; k < 8; k++) {
            int32_t v;
            memcpy(&v, xs + 4 * k, 4);
            int8x16_t xb = vreinterpretq_s8_s32(vdupq_n_s32(v));
            a01 = vpadalq_s16(a01, vmull_s8(vget_low_s8(wl[k][c]), vget_low_s8(xb)));
            a23 = vpadalq_s16(a23, vmull_high_s8(wl[k][c], xb));
        }
        isum[c] = vpaddq_s32(a01, a23);
    }
}

static bool g_neon_dotprod;

static void gemv_qr16_neon(tlm_qtype t, const void *w, const void *xq, float *y, int64_t n_in,
                           int64_t r0, int64_t r1) {
    const tlm_block_q8_g32_act *x = xq;
    const int64_t n_groups = n_in / TLM_QGROUP;
    const size_t qb = tlm_qtype_group_quant_bytes(t), tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    const bool dotprod = g_neon_dotprod;
    int8x16_t wl[8][4];
    int32x4_t isum[4];
    for (int64_t base = r0 - r0 % TLM_QROWS; base < r1; base += TLM_QROWS) {
        const uint8_t *q = tlm_qpacked_tile(w, tile_bytes, base);
        const uint8_t *sc = q + (size_t)n_groups * qb;
        float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
        for (int64_t g = 0; g < n_groups; g++, q += qb) {
            /* each weight line touched 16 KiB before its use, as on x86 */
            for (size_t l = 0; l < qb; l += 64) __builtin_prefetch(q + 16384 + l);
            if (t == TLM_Q8_G32)
                load_lines_q8(q, wl);
            else
                load_lines_q4(q, wl);
            if (dotprod)
                group_isum_dotprod(wl, x[g].qs, isum);
            else
                group_isum_widen(wl, x[g].qs, isum);
            accumulate_group(acc, isum, sc + g * TLM_QR16_SCALE_BYTES, x[g].d);
        }
        store_rows16_neon(y, base, r0, r1, acc);
    }
}

static void gemv_q8_g32_r16_neon(const void *w, const void *xq, float *y, int64_t n_in, int64_t r0,
                                 int64_t r1) {
    gemv_qr16_neon(TLM_Q8_G32, w, xq, y, n_in, r0, r1);
}

static void gemv_q4_g32_r16_neon(const void *w, const void *xq, float *y, int64_t n_in, int64_t r0,
                                 int64_t r1) {
    gemv_qr16_neon(TLM_Q4_G32, w, xq, y, n_in, r0, r1);
}

/* Prefill GEMM: one 16-row tile at a time for all m activation rows (the
 * tile is read from memory once, then from cache), each row through the
 * GEMV above on that tile alone: bit-identical to it by construction.
 * gemm_q_preferred is left false until it is measured against dequantize +
 * sgemm on an Arm machine. */
static void gemm_qr16_neon(tlm_qtype t, const void *w, const void *xq, float *c, int64_t ldc,
                           int64_t m, int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    const tlm_block_q8_g32_act *x = xq;
    const int64_t n_groups = n_in / TLM_QGROUP;
    const size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    float y[TLM_QROWS];
    for (int64_t base = r0 - r0 % TLM_QROWS; base < r1; base += TLM_QROWS) {
        int64_t lo = r0 > base ? r0 : base, hi = r1 < base + TLM_QROWS ? r1 : base + TLM_QROWS;
        const uint8_t *tile = tlm_qpacked_tile(w, tile_bytes, base);
        for (int64_t i = 0; i < m; i++) {
            gemv_qr16_neon(t, tile, x + i * n_groups, y, n_in, 0, hi - base);
            float *row = c + i * ldc;
            for (int64_t r = lo; r < hi; r++)
                row[r] = (accumulate ? row[r] : 0.0f) + y[r - base];
        }
    }
}

static void gemm_q8_g32_r16_neon(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                                 int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    gemm_qr16_neon(TLM_Q8_G32, w, xq, c, ldc, m, n_in, r0, r1, accumulate);
}

static void gemm_q4_g32_r16_neon(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                                 int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    gemm_qr16_neon(TLM_Q4_G32, w, xq, c, ldc, m, n_in, r0, r1, accumulate);
}

/* ------------------------------------------ attention over the KV cache */
/* FCVTL / FCVTN (AArch64 baseline) convert 4 halves at a time; tails that
 * fill no whole vector go through the scalar conversions. */

static void kv_store_f16_neon(const float *x, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; i++) dst[i] = tlm_f32_to_f16(x[i]);
}

static void kv_store_q8_neon(const float *x, int8_t *dst, float *d, int64_t n) {
    float32x4_t m = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + i)));
    float amax = vmaxvq_f32(m);
    for (; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    float dd = amax / 127.0f, id = dd != 0.0f ? 1.0f / dd : 0.0f;
    for (i = 0; i + 8 <= n; i += 8) {
        /* fcvtns: round half to even, as the scalar reference */
        int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i), id));
        int32x4_t q1 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + i + 4), id));
        vst1_s8(dst + i, vmovn_s16(vcombine_s16(vmovn_s32(q0), vmovn_s32(q1))));
    }
    for (; i < n; i++) {
        float r = nearbyintf(x[i] * id);
        dst[i] = (int8_t)(r >= -127.0f && r <= 127.0f ? (int32_t)r : 0);
    }
    *d = dd;
}

/* 8 cached values as two f32 vectors. */
static inline void load8_f16(const uint16_t *p, float32x4_t *lo, float32x4_t *hi) {
    uint16x8_t h = vld1q_u16(p);
    *lo = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h)));
    *hi = vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h)));
}

static inline void load8_q8(const int8_t *p, float32x4_t *lo, float32x4_t *hi) {
    int16x8_t w = vmovl_s8(vld1_s8(p));
    *lo = vcvtq_f32_s32(vmovl_s16(vget_low_s16(w)));
    *hi = vcvtq_f32_s32(vmovl_s16(vget_high_s16(w)));
}

#define F16_TO_F32(h) tlm_f16_to_f32(h)
#define Q8_TO_F32(b) ((float)(b))

/* One key row at a time: 8 values per step into two accumulators. */
#define ATTN_SCORES_NEON(NAME, T, LOAD8, TO_F32, ROW_SCALE)                                     \
    static void NAME(const T *k, const float *d, const float *q, float *s, int64_t rows,       \
                     int64_t n, float scale) {                                                  \
        (void)d;                                                                                \
        for (int64_t t = 0; t < rows; t++) {                                                    \
            const T *kt = k + t * n;                                                            \
            float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0), lo, hi;                       \
            int64_t i = 0;                                                                      \
            for (; i + 8 <= n; i += 8) {                                                        \
                LOAD8(kt + i, &lo, &hi);                                                        \
                a0 = vfmaq_f32(a0, lo, vld1q_f32(q + i));                                       \
                a1 = vfmaq_f32(a1, hi, vld1q_f32(q + i + 4));                                   \
            }                                                                                   \
            float r = vaddvq_f32(vaddq_f32(a0, a1));                                            \
            for (; i < n; i++) r += TO_F32(kt[i]) * q[i];                                       \
            s[t] = r * (ROW_SCALE(t) * scale);                                                  \
        }                                                                                       \
    }

#define NO_ROW_SCALE(t) 1.0f
#define Q8_ROW_SCALE(t) d[t]
ATTN_SCORES_NEON(attn_scores_f16_rows_neon, uint16_t, load8_f16, F16_TO_F32, NO_ROW_SCALE)
ATTN_SCORES_NEON(attn_scores_q8_neon, int8_t, load8_q8, Q8_TO_F32, Q8_ROW_SCALE)

static void attn_scores_f16_neon(const uint16_t *k, const float *q, float *s, int64_t rows,
                                 int64_t n, float scale) {
    attn_scores_f16_rows_neon(k, NULL, q, s, rows, n, scale);
}

/* Columns in blocks of 32 (eight accumulators across all rows), then 8,
 * then one by one; W(t) is the row's weight (p, times d for q8). */
#define ATTN_VALUES_NEON(NAME, T, LOAD8, TO_F32, W)                                             \
    static void NAME(const T *v, const float *d, const float *p, float *y, int64_t rows,       \
                     int64_t n) {                                                               \
        (void)d;                                                                                \
        int64_t j = 0;                                                                          \
        for (; j + 32 <= n; j += 32) {                                                          \
            float32x4_t a[8], lo, hi;                                                           \
            for (int b = 0; b < 8; b++) a[b] = vdupq_n_f32(0);                                  \
            for (int64_t t = 0; t < rows; t++) {                                                \
                const T *row = v + t * n + j;                                                   \
                float w = W(t);                                                                 \
                for (int b = 0; b < 4; b++) {                                                   \
                    LOAD8(row + 8 * b, &lo, &hi);                                               \
                    a[2 * b] = vfmaq_n_f32(a[2 * b], lo, w);                                    \
                    a[2 * b + 1] = vfmaq_n_f32(a[2 * b + 1], hi, w);                            \
                }                                                                               \
            }                                                                                   \
            for (int b = 0; b < 8; b++) vst1q_f32(y + j + 4 * b, a[b]);                         \
        }                                                                                       \
        for (; j + 8 <= n; j += 8) {                                                            \
            float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0), lo, hi;                       \
            for (int64_t t = 0; t < rows; t++) {                                                \
                LOAD8(v + t * n + j, &lo, &hi);                                                 \
                a0 = vfmaq_n_f32(a0, lo, W(t));                                                 \
                a1 = vfmaq_n_f32(a1, hi, W(t));                                                 \
            }                                                                                   \
            vst1q_f32(y + j, a0);                                                               \
            vst1q_f32(y + j + 4, a1);                                                           \
        }                                                                                       \
        for (; j < n; j++) {                                                                    \
            float a = 0;                                                                        \
            for (int64_t t = 0; t < rows; t++) a += W(t) * TO_F32(v[t * n + j]);                \
            y[j] = a;                                                                           \
        }                                                                                       \
    }

#define F16_WEIGHT(t) p[t]
#define Q8_WEIGHT(t) (p[t] * d[t])
ATTN_VALUES_NEON(attn_values_f16_rows_neon, uint16_t, load8_f16, F16_TO_F32, F16_WEIGHT)
ATTN_VALUES_NEON(attn_values_q8_neon, int8_t, load8_q8, Q8_TO_F32, Q8_WEIGHT)

static void attn_values_f16_neon(const uint16_t *v, const float *p, float *y, int64_t rows,
                                 int64_t n) {
    attn_values_f16_rows_neon(v, NULL, p, y, rows, n);
}

void tlm_kernels_neon_fill(tlm_kernels *k) {
    k->name = "neon";
    k->dot_f32 = dot_f32_neon;
    k->gemv_f32 = gemv_f32_neon;
    k->axpy_f32 = axpy_f32_neon;
    /* Asked here rather than in dispatch.c because only this file's kernels
     * care; the table is filled once, under the dispatcher's pthread_once. */
    g_neon_dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    k->quantize_act_q8_g32 = quantize_act_q8_g32_neon;
    k->gemv_q8_g32_r16 = gemv_q8_g32_r16_neon;
    k->gemv_q4_g32_r16 = gemv_q4_g32_r16_neon;
    k->gemm_q8_g32_r16 = gemm_q8_g32_r16_neon;
    k->gemm_q4_g32_r16 = gemm_q4_g32_r16_neon;
    k->kv_store_f16 = kv_store_f16_neon;
    k->kv_store_q8 = kv_store_q8_neon;
    k->attn_scores_f16 = attn_scores_f16_neon;
    k->attn_scores_q8 = attn_scores_q8_neon;
    k->attn_values_f16 = attn_values_f16_neon;
    k->attn_values_q8 = attn_values_q8_neon;
    tlm_gguf_neon_fill(k);
}
