/*
 * kernels_gguf_neon.c — the GGUF-block kernels for AArch64 NEON.
 *
 * Each block is decoded once (Q4_K, Q6_K, Q8_0, Q4_0 with vector code; the
 * other types by gguf_kernels.h's decoders) into small signed quants (all
 * K-quant w are <= 63, so they are valid int8), then multiplied 16 at a time
 * with the int8 activation: SDOT where the CPU has it (HWCAP_ASIMDDP; the
 * functions that use it are compiled for +dotprod), widening multiplies
 * otherwise. The integer sums are exact and the per-block float step is
 * gguf_kernels.h's, so results equal the scalar table's bit for bit.
 */
#include <arm_neon.h>
#include <stdbool.h>
#include <string.h>
#include <sys/auxv.h>

#include "gguf_kernels.h"

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif

#define GEMM_CHUNK 64

/* ------------------------------------------------------------ decoders */

/* Q4_K and Q6_K at vector speed; the rest through gguf_decode_k. */
static void kdecode_neon(uint32_t type, const uint8_t *blk, gguf_kblock *o) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    if (type == GGML_TYPE_Q4_K) {
        uint8_t sc[8], mn[8];
        gguf_k4_scales(blk + 4, sc, mn);
        for (int i = 0; i < 16; i++) o->sc[i] = sc[i / 2], o->mn[i] = mn[i / 2];
        const uint8_t *qs = blk + 16;
        for (int p = 0; p < 4; p++)
            for (int h = 0; h < 2; h++) {
                uint8x16_t v = vld1q_u8(qs + 32 * p + 16 * h);
                vst1q_u8(o->w + 64 * p + 16 * h, vandq_u8(v, low4));
                vst1q_u8(o->w + 64 * p + 32 + 16 * h, vshrq_n_u8(v, 4));
            }
        uint16_t d, dmin;
        memcpy(&d, blk, 2);
        memcpy(&dmin, blk + 2, 2);
        o->d = tlm_f16_to_f32(d), o->dmin = tlm_f16_to_f32(dmin);
        return;
    }
    if (type == GGML_TYPE_Q6_K) {
        const uint8x16_t bits45 = vdupq_n_u8(0x30);
        const int8_t *scales = (const int8_t *)(blk + 192);
        for (int i = 0; i < 16; i++) o->sc[i] = scales[i], o->mn[i] = (int16_t)(32 * scales[i]);
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 2; k++) { /* 16 of the half's 32 qh bytes */
                uint8x16_t a = vld1q_u8(blk + 64 * h + 16 * k), b = vld1q_u8(blk + 64 * h + 32 + 16 * k);
                uint8x16_t q = vld1q_u8(blk + 128 + 32 * h + 16 * k);
                uint8_t *w = o->w + 128 * h + 16 * k;
                vst1q_u8(w, vorrq_u8(vandq_u8(a, low4), vandq_u8(vshlq_n_u8(q, 4), bits45)));
                vst1q_u8(w + 32, vorrq_u8(vandq_u8(b, low4), vandq_u8(vshlq_n_u8(q, 2), bits45)));
                vst1q_u8(w + 64, vorrq_u8(vshrq_n_u8(a, 4), vandq_u8(q, bits45)));
                vst1q_u8(w + 96, vorrq_u8(vshrq_n_u8(b, 4), vandq_u8(vshrq_n_u8(q, 2), bits45)));
            }
        uint16_t d;
        memcpy(&d, blk + 208, 2);
        o->d = tlm_f16_to_f32(d), o->dmin = 0.0f;
        return;
    }
    gguf_decode_k(type, blk, o);
}

static void decode32_neon(uint32_t type, const uint8_t *blk, gguf_block32 *o) {
    if (type == GGML_TYPE_Q4_0) {
        uint16_t d;
        memcpy(&d, blk, 2);
        o->d = tlm_f16_to_f32(d), o->m = 0.0f;
        uint8x16_t v = vld1q_u8(blk + 2);
        const int8x16_t eight = vdupq_n_s8(8);
        vst1q_s8(o->w, vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0f))), eight));
        vst1q_s8(o->w + 16, vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight));
        return;
    }
    gguf_decode_32(type, blk, o); /* Q8_0: a copy; Q4_1, Q5_0, Q5_1 */
}

/* ------------------------------------------------------ integer sums */

/* sum over 16 int8 products, 4 lanes of partial sums */
__attribute__((target("arch=armv8.2-a+dotprod"))) static inline int32x4_t dot16_dotprod(int8x16_t w,
                                                                                      int8x16_t x) {
    return vdotq_s32(vdupq_n_s32(0), w, x);
}

static inline int32x4_t dot16_widen(int8x16_t w, int8x16_t x) {
    int16x8_t lo = vmull_s8(vget_low_s8(w), vget_low_s8(x));
    return vpadalq_s16(vpaddlq_s16(lo), vmull_high_s8(w, x));
}

/* sumw = sum_i sc[i] * (16 products), summ = sum_i mn[i] * bsum16[i] */
#define DEFINE_K_SUMS(NAME, ATTR, DOT16)                                                         \
    ATTR static void NAME(const gguf_kblock *kb, const tlm_block_q8_k256_act *x, int32_t *sumw, \
                          int32_t *summ) {                                                       \
        int32x4_t acc = vdupq_n_s32(0);                                                          \
        for (int i = 0; i < 16; i++)                                                             \
            acc = vmlaq_n_s32(acc, DOT16(vreinterpretq_s8_u8(vld1q_u8(kb->w + 16 * i)),         \
                                         vld1q_s8(x->qs + 16 * i)),                              \
                              kb->sc[i]);                                                        \
        *sumw = vaddvq_s32(acc);                                                                 \
        int16x8_t m0 = vld1q_s16(kb->mn), m1 = vld1q_s16(kb->mn + 8);                            \
        int16x8_t b0 = vld1q_s16(x->bsum16), b1 = vld1q_s16(x->bsum16 + 8);                      \
        int32x4_t ms = vmull_s16(vget_low_s16(m0), vget_low_s16(b0));                            \
        ms = vmlal_high_s16(ms, m0, b0);                                                         \
        ms = vmlal_s16(ms, vget_low_s16(m1), vget_low_s16(b1));                                  \
        ms = vmlal_high_s16(ms, m1, b1);                                                         \
        *summ = vaddvq_s32(ms);                                                                  \
    }
DEFINE_K_SUMS(k_sums_dotprod, __attribute__((target("arch=armv8.2-a+dotprod"))), dot16_dotprod)
DEFINE_K_SUMS(k_sums_widen, , dot16_widen)

#define DEFINE_32_SUM(NAME, ATTR, DOT16)                                                         \
    ATTR static int32_t NAME(const gguf_block32 *b, const int8_t *xs) {                          \
        return vaddvq_s32(vaddq_s32(DOT16(vld1q_s8(b->w), vld1q_s8(xs)),                         \
                                    DOT16(vld1q_s8(b->w + 16), vld1q_s8(xs + 16))));              \
    }
DEFINE_32_SUM(sum32_dotprod, __attribute__((target("arch=armv8.2-a+dotprod"))), dot16_dotprod)
DEFINE_32_SUM(sum32_widen, , dot16_widen)

static bool g_dotprod;

/* ------------------------------------------------------- GEMV, GEMM */

/* One row pass per chunk of tokens, each block decoded once: the GEMV is
 * the GEMM of one token into y. */
static void gemm_quant_neon(uint32_t type, const void *w, const void *xq, float *c, int64_t ldc,
                            int64_t m, int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    const bool k = gguf_is_k(type);
    const int64_t nb = n_in / (k ? TLM_K256 : TLM_QGROUP);
    const size_t bb = gguf_block_bytes(type), rb = (size_t)nb * bb;
    float acc[GEMM_CHUNK];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        for (int64_t t0 = 0; t0 < m; t0 += GEMM_CHUNK) {
            const int nt = m - t0 < GEMM_CHUNK ? (int)(m - t0) : GEMM_CHUNK;
            for (int t = 0; t < nt; t++) acc[t] = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + (size_t)b * bb;
                __builtin_prefetch(blk + 4 * rb);
                if (k) {
                    gguf_kblock kb;
                    kdecode_neon(type, blk, &kb);
                    const tlm_block_q8_k256_act *xb = (const tlm_block_q8_k256_act *)xq + t0 * nb + b;
                    for (int t = 0; t < nt; t++) {
                        int32_t sumw, summ;
                        if (g_dotprod) k_sums_dotprod(&kb, xb + t * nb, &sumw, &summ);
                        else k_sums_widen(&kb, xb + t * nb, &sumw, &summ);
                        acc[t] = gguf_k_block_fma(type, sumw, summ, kb.d, kb.dmin, xb[t * nb].d, acc[t]);
                    }
                } else {
                    gguf_block32 qb;
                    decode32_neon(type, blk, &qb);
                    const tlm_block_q8_g32_act *xb = (const tlm_block_q8_g32_act *)xq + t0 * nb + b;
                    for (int t = 0; t < nt; t++) {
                        const tlm_block_q8_g32_act *xt = xb + t * nb;
                        int32_t isum = g_dotprod ? sum32_dotprod(&qb, xt->qs) : sum32_widen(&qb, xt->qs);
                        acc[t] = gguf_32_block_fma(type, isum, xt->sum, qb.d, qb.m, xt->d, acc[t]);
                    }
                }
            }
            for (int t = 0; t < nt; t++) {
                float *out = c + (t0 + t) * ldc + r;
                *out = (accumulate ? *out : 0.0f) + acc[t];
            }
        }
    }
}

/* ---------------------------------------------------------- F16, BF16 */

static float dot_half_neon(bool bf16, const uint8_t *w, const float *x, int64_t n) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vld1q_u16((const uint16_t *)(w + 2 * i));
        float32x4_t lo, hi;
        if (bf16) {
            lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
            hi = vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(h), 16));
        } else {
            lo = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h)));
            hi = vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h)));
        }
        a0 = vfmaq_f32(a0, lo, vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, hi, vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, w + 2 * i, 2);
        s += (bf16 ? tlm_bf16_to_f32(h) : tlm_f16_to_f32(h)) * x[i];
    }
    return s;
}

static void gemm_half_neon(bool bf16, const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                           int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    const float *x = xq;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * (size_t)n_in * 2;
        for (int64_t t = 0; t < m; t++) {
            float v = dot_half_neon(bf16, row, x + t * n_in, n_in);
            float *out = c + t * ldc + r;
            *out = (accumulate ? *out : 0.0f) + v;
        }
    }
}

/* ------------------------------------------------------ activations */

static void quantize_act_q8_k256_neon(const float *x, void *xq, int64_t n) {
    tlm_block_q8_k256_act *out = xq;
    for (int64_t b = 0; b < n / TLM_K256; b++) {
        const float *v = x + b * TLM_K256;
        float32x4_t mx = vdupq_n_f32(0);
        for (int j = 0; j < TLM_K256; j += 4) mx = vmaxq_f32(mx, vabsq_f32(vld1q_f32(v + j)));
        float amax = vmaxvq_f32(mx);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int i = 0; i < 16; i++) {
            int32x4_t q[4];
            for (int k = 0; k < 4; k++) q[k] = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(v + 16 * i + 4 * k), id));
            out[b].bsum16[i] = (int16_t)vaddvq_s32(vaddq_s32(vaddq_s32(q[0], q[1]), vaddq_s32(q[2], q[3])));
            int16x8_t h0 = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
            int16x8_t h1 = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
            vst1q_s8(out[b].qs + 16 * i, vcombine_s8(vmovn_s16(h0), vmovn_s16(h1)));
        }
        for (int j = 0; j < 8; j++) out[b].bsum32[j] = (int16_t)(out[b].bsum16[2 * j] + out[b].bsum16[2 * j + 1]);
        out[b].d = d;
        memset(out[b].pad, 0, sizeof out[b].pad);
    }
}

/* ----------------------------------------------------------- entries */

#define DEFINE_Q(name, type)                                                                     \
    static void gemv_gguf_##name##_neon(const void *w, const void *xq, float *y, int64_t n_in,  \
                                        int64_t r0, int64_t r1) {                                \
        gemm_quant_neon(type, w, xq, y, 0, 1, n_in, r0, r1, false);                              \
    }                                                                                            \
    static void gemm_gguf_##name##_neon(const void *w, const void *xq, float *c, int64_t ldc,   \
                                        int64_t m, int64_t n_in, int64_t r0, int64_t r1,        \
                                        bool accumulate) {                                       \
        gemm_quant_neon(type, w, xq, c, ldc, m, n_in, r0, r1, accumulate);                       \
    }
DEFINE_Q(q4_0, GGML_TYPE_Q4_0)
DEFINE_Q(q4_1, GGML_TYPE_Q4_1)
DEFINE_Q(q5_0, GGML_TYPE_Q5_0)
DEFINE_Q(q5_1, GGML_TYPE_Q5_1)
DEFINE_Q(q8_0, GGML_TYPE_Q8_0)
DEFINE_Q(q2_k, GGML_TYPE_Q2_K)
DEFINE_Q(q3_k, GGML_TYPE_Q3_K)
DEFINE_Q(q4_k, GGML_TYPE_Q4_K)
DEFINE_Q(q5_k, GGML_TYPE_Q5_K)
DEFINE_Q(q6_k, GGML_TYPE_Q6_K)

#define DEFINE_HALF(name, is_bf16)                                                               \
    static void gemv_gguf_##name##_neon(const void *w, const void *xq, float *y, int64_t n_in,  \
                                        int64_t r0, int64_t r1) {                                \
        gemm_half_neon(is_bf16, w, xq, y, 0, 1, n_in, r0, r1, false);                            \
    }                                                                                            \
    static void gemm_gguf_##name##_neon(const void *w, const void *xq, float *c, int64_t ldc,   \
                                        int64_t m, int64_t n_in, int64_t r0, int64_t r1,        \
                                        bool accumulate) {                                       \
        gemm_half_neon(is_bf16, w, xq, c, ldc, m, n_in, r0, r1, accumulate);                     \
    }
DEFINE_HALF(f16, false)
DEFINE_HALF(bf16, true)

void tlm_gguf_neon_fill(tlm_kernels *k) {
    g_dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#define SET(name, type)                                                                          \
    k->gemv_gguf[type] = gemv_gguf_##name##_neon;                                                \
    k->gemm_gguf[type] = gemm_gguf_##name##_neon;
    TLM_GGUF_KERNEL_TYPES(SET)
#undef SET
    k->quantize_act_q8_k256 = quantize_act_q8_k256_neon;
}
