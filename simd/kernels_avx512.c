/* kernels_avx512.c — AVX-512 (F/DQ/BW/VL + VNNI) kernels. */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "qformat.h"

static float dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) { /* masked tail */
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* Four rows at a time so that each load of x feeds four FMAs. */
static void gemv_f32_avx512(const float *w, const float *x, float *y, int64_t n_in, int64_t r0,
                            int64_t r1) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *w0 = w + r * n_in, *w1 = w0 + n_in, *w2 = w1 + n_in, *w3 = w2 + n_in;
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
        int64_t i = 0;
        for (; i + 16 <= n_in; i += 16) {
            __m512 vx = _mm512_loadu_ps(x + i);
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + i), vx, s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + i), vx, s1);
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + i), vx, s2);
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + i), vx, s3);
        }
        if (i < n_in) {
            __mmask16 m = (__mmask16)((1u << (n_in - i)) - 1);
            __m512 vx = _mm512_maskz_loadu_ps(m, x + i);
            s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + i), vx, s0);
            s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + i), vx, s1);
            s2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + i), vx, s2);
            s3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + i), vx, s3);
        }
        y[r] = _mm512_reduce_add_ps(s0);
        y[r + 1] = _mm512_reduce_add_ps(s1);
        y[r + 2] = _mm512_reduce_add_ps(s2);
        y[r + 3] = _mm512_reduce_add_ps(s3);
    }
    for (; r < r1; r++) y[r] = dot_f32_avx512(w + r * n_in, x, n_in);
}

static void axpy_f32_avx512(float a, const float *x, float *y, int64_t n) {
    __m512 va = _mm512_set1_ps(a);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m,
                              _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i),
                                              _mm512_maskz_loadu_ps(m, y + i)));
    }
}

/* ---------------------------------------------------- quantized decode */

static void quantize_act_q8_g32_avx512(const float *x, void *xq, int64_t n) {
    tlm_block_q8_g32_act *out = xq;
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t g = 0; g < n / TLM_QGROUP; g++) {
        __m512 v0 = _mm512_loadu_ps(x + g * TLM_QGROUP), v1 = _mm512_loadu_ps(x + g * TLM_QGROUP + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, v0),
                                                        _mm512_andnot_ps(sign, v1)));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m512 vid = _mm512_set1_ps(id);
        /* cvtps2dq rounds half to even in the default MXCSR mode */
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
        _mm_storeu_si128((__m128i *)out[g].qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(out[g].qs + 16), _mm512_cvtepi32_epi8(q1));
        out[g].d = d;
        out[g].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

/* 4 activation int8 (inputs 4k..4k+3) broadcast to every 32-bit lane: lane r
 * of a weight line holds row r's 4 weights of the same inputs. */
static inline __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Writes the lanes of acc that fall in [r0, r1) to y[base + lane]. */
static inline void store_rows16(float *y, int64_t base, int64_t r0, int64_t r1, __m512 acc) {
    int64_t lo = r0 > base ? r0 - base : 0, hi = r1 - base < 16 ? r1 - base : 16;
    if (hi <= lo) return;
    __mmask16 m = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
    _mm512_mask_storeu_ps(y + base, m, acc);
}

/* Streaming: a tile is one sequential run of bytes, and up to TILES_AT_ONCE
 * tiles are read side by side (one core keeps more misses in flight over
 * several streams than over one: measured +20% over one or two streams on
 * a 1-thread cold GEMV), each line touched PREFETCH_AHEAD bytes before it is
 * used. Both values come from kernels-bench runs (bench/kernels-bench.c). */
#define TILES_AT_ONCE 4
#define PREFETCH_AHEAD 16384

static inline void prefetch_lines(const uint8_t *p, int n_lines) {
    for (int l = 0; l < n_lines; l++) _mm_prefetch((const char *)p + PREFETCH_AHEAD + 64 * l, _MM_HINT_T0);
}

/* acc += (float)isum * (d_w * d_x) for one tile-group: scales are the 16 f16
 * of the group (qformat.h). */
static inline __m512 scale_accumulate(__m512 acc, __m512i isum, const uint8_t *scales, __m512 dx) {
    __m512 s = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)scales)), dx);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, acc);
}

/* ---- q8_g32_r16: vpdpbusd multiplies u8 x s8; the weights are stored
 * biased (q + 128, qformat.h) and sum_i (q_i + 128) x_i - 128 * sum_i x_i is
 * the exact dot. Two int32 accumulators halve the dependency chain. */
static inline __m512i q8_group_isum(const uint8_t *q, const __m512i xb[8], __m512i bias) {
    __m512i a0 = _mm512_dpbusd_epi32(bias, _mm512_loadu_si512(q), xb[0]);
    __m512i a1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(q + 64), xb[1]);
    for (int k = 2; k < 8; k += 2) {
        a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(q + 64 * k), xb[k]);
        a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(q + 64 * k + 64), xb[k + 1]);
    }
    return _mm512_add_epi32(a0, a1);
}

/* ---- q4_g32_r16: nibbles are u8 0..15 meaning q - 8, taken by vpdpbusd as
 * they are, and 8 * sum(x) is subtracted once per group. The high nibbles
 * are masked in place (v & 0xf0 = 16 * nibble: one op instead of shift +
 * mask) and their sum divided by 16 afterwards, exactly: |16*15*127*32| < 2^31. */
static inline __m512i q4_group_isum(const uint8_t *q, const __m512i xb[8], __m512i bias) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), high4 = _mm512_set1_epi8((char)0xf0);
    __m512i a0 = bias, a1 = _mm512_setzero_si512();
    for (int j = 0; j < 4; j++) {
        __m512i v = _mm512_loadu_si512(q + 64 * j);
        a0 = _mm512_dpbusd_epi32(a0, _mm512_and_si512(v, low4), xb[j]);
        a1 = _mm512_dpbusd_epi32(a1, _mm512_and_si512(v, high4), xb[4 + j]);
    }
    return _mm512_add_epi32(a0, _mm512_srai_epi32(a1, 4));
}

/* Both formats: tiles in runs of up to TILES_AT_ONCE, each group's 32
 * activations broadcast once (4 per register, xb) for all tiles of the run.
 * For Q8, xb[k] holds inputs 4k..4k+3; for Q4, xb[j] inputs 4j.. (the low
 * nibbles of line j) and xb[4+j] inputs 16+4j.. (the high nibbles). */
static inline void gemv_qr16_avx512(tlm_qtype t, const void *w, const void *xq, float *y,
                                    int64_t n_in, int64_t r0, int64_t r1) {
    const tlm_block_q8_g32_act *x = xq;
    const int64_t n_groups = n_in / TLM_QGROUP;
    const size_t qb = t == TLM_Q8_G32 ? TLM_Q8_G32_R16_QUANT_BYTES : TLM_Q4_G32_R16_QUANT_BYTES;
    const size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in), scales_at = (size_t)n_groups * qb;
    const int bias_per_sum = t == TLM_Q8_G32 ? -128 : -8;
    for (int64_t base = r0 - r0 % TLM_QROWS; base < r1; base += TILES_AT_ONCE * TLM_QROWS) {
        int64_t left = (r1 - base + TLM_QROWS - 1) / TLM_QROWS;
        int nt = left < TILES_AT_ONCE ? (int)left : TILES_AT_ONCE;
        const uint8_t *t0 = tlm_qpacked_tile(w, tile_bytes, base);
        __m512 acc[TILES_AT_ONCE];
        for (int i = 0; i < TILES_AT_ONCE; i++) acc[i] = _mm512_setzero_ps();
        for (int64_t g = 0; g < n_groups; g++) {
            __m512i xb[8];
            if (t == TLM_Q8_G32) {
                for (int k = 0; k < 8; k++) xb[k] = bcast4(x[g].qs + 4 * k);
            } else {
                for (int j = 0; j < 4; j++) {
                    xb[j] = bcast4(x[g].qs + 4 * j);
                    xb[4 + j] = bcast4(x[g].qs + 16 + 4 * j);
                }
            }
            __m512i bias = _mm512_set1_epi32(bias_per_sum * x[g].sum);
            __m512 dx = _mm512_set1_ps(x[g].d);
            for (int i = 0; i < TILES_AT_ONCE; i++) {
                if (i >= nt) break;
                const uint8_t *tile = t0 + (size_t)i * tile_bytes, *q = tile + (size_t)g * qb;
                prefetch_lines(q, (int)(qb / 64));
                __m512i isum = t == TLM_Q8_G32 ? q8_group_isum(q, xb, bias) : q4_group_isum(q, xb, bias);
                acc[i] = scale_accumulate(acc[i], isum, tile + scales_at + (size_t)g * TLM_QR16_SCALE_BYTES, dx);
            }
        }
        for (int i = 0; i < nt; i++) store_rows16(y, base + (int64_t)i * TLM_QROWS, r0, r1, acc[i]);
    }
}

static void gemv_q8_g32_r16_avx512(const void *w, const void *xq, float *y, int64_t n_in,
                                   int64_t r0, int64_t r1) {
    gemv_qr16_avx512(TLM_Q8_G32, w, xq, y, n_in, r0, r1);
}

static void gemv_q4_g32_r16_avx512(const void *w, const void *xq, float *y, int64_t n_in,
                                   int64_t r0, int64_t r1) {
    gemv_qr16_avx512(TLM_Q4_G32, w, xq, y, n_in, r0, r1);
}

/* ---- dequantize packed rows (prefill): per tile-group, each 16-byte quarter
 * of a line is rows 4c..4c+3 x 4 inputs; widened to 16 floats and scaled by
 * the row scales spread over the lanes, then written as 4 runs of 4 floats
 * into the 4 output rows. Same single rounding d * q as the scalar table. */
static inline void store_4rows(float *out, int64_t n_in, int64_t row0, int64_t r0, int64_t r1,
                               int64_t col, __m512 f) {
    if (row0 >= r0 && row0 < r1) _mm_storeu_ps(out + (row0 - r0) * n_in + col, _mm512_extractf32x4_ps(f, 0));
    if (row0 + 1 >= r0 && row0 + 1 < r1)
        _mm_storeu_ps(out + (row0 + 1 - r0) * n_in + col, _mm512_extractf32x4_ps(f, 1));
    if (row0 + 2 >= r0 && row0 + 2 < r1)
        _mm_storeu_ps(out + (row0 + 2 - r0) * n_in + col, _mm512_extractf32x4_ps(f, 2));
    if (row0 + 3 >= r0 && row0 + 3 < r1)
        _mm_storeu_ps(out + (row0 + 3 - r0) * n_in + col, _mm512_extractf32x4_ps(f, 3));
}

static void dequant_qr16_avx512(tlm_qtype t, const void *w, float *out, int64_t n_in, int64_t r0,
                                int64_t r1) {
    const int64_t n_groups = n_in / TLM_QGROUP;
    const size_t qb = tlm_qtype_group_quant_bytes(t), tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    const __m512i low4 = _mm512_set1_epi32(0x0f);
    for (int64_t base = r0 - r0 % TLM_QROWS; base < r1; base += TLM_QROWS) {
        const uint8_t *tile = tlm_qpacked_tile(w, tile_bytes, base);
        for (int64_t g = 0; g < n_groups; g++) {
            const uint8_t *q = tile + g * qb;
            __m512 sc = _mm512_cvtph_ps(
                _mm256_loadu_si256((const __m256i *)(tile + n_groups * qb + g * TLM_QR16_SCALE_BYTES)));
            for (int c = 0; c < 4; c++) {
                int64_t row0 = base + 4 * c;
                if (row0 + 4 <= r0 || row0 >= r1) continue;
                /* lane 4 rr + i takes the scale of row 4c + rr */
                __m512 s = _mm512_permutexvar_ps(
                    _mm512_setr_epi32(4 * c, 4 * c, 4 * c, 4 * c, 4 * c + 1, 4 * c + 1, 4 * c + 1,
                                      4 * c + 1, 4 * c + 2, 4 * c + 2, 4 * c + 2, 4 * c + 2,
                                      4 * c + 3, 4 * c + 3, 4 * c + 3, 4 * c + 3),
                    sc);
                if (t == TLM_Q8_G32) {
                    for (int k = 0; k < 8; k++) {
                        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 64 * k + 16 * c)));
                        __m512 f = _mm512_mul_ps(s, _mm512_cvtepi32_ps(_mm512_sub_epi32(v, _mm512_set1_epi32(128))));
                        store_4rows(out, n_in, row0, r0, r1, g * TLM_QGROUP + 4 * k, f);
                    }
                } else {
                    for (int j = 0; j < 4; j++) {
                        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 64 * j + 16 * c)));
                        __m512i lo = _mm512_sub_epi32(_mm512_and_si512(v, low4), _mm512_set1_epi32(8));
                        __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(v, 4), _mm512_set1_epi32(8));
                        store_4rows(out, n_in, row0, r0, r1, g * TLM_QGROUP + 4 * j,
                                    _mm512_mul_ps(s, _mm512_cvtepi32_ps(lo)));
                        store_4rows(out, n_in, row0, r0, r1, g * TLM_QGROUP + 16 + 4 * j,
                                    _mm512_mul_ps(s, _mm512_cvtepi32_ps(hi)));
                    }
                }
            }
        }
    }
}

static void dequant_q8_g32_r16_avx512(const void *w, float *out, int64_t n_in, int64_t r0,
                                      int64_t r1) {
    dequant_qr16_avx512(TLM_Q8_G32, w, out, n_in, r0, r1);
}

static void dequant_q4_g32_r16_avx512(const void *w, float *out, int64_t n_in, int64_t r0,
                                      int64_t r1) {
    dequant_qr16_avx512(TLM_Q4_G32, w, out, n_in, r0, r1);
}

void tlm_kernels_avx512_fill(tlm_kernels *k) {
    k->name = "avx512";
    k->dot_f32 = dot_f32_avx512;
    k->gemv_f32 = gemv_f32_avx512;
    k->axpy_f32 = axpy_f32_avx512;
    k->quantize_act_q8_g32 = quantize_act_q8_g32_avx512;
    k->gemv_q8_g32_r16 = gemv_q8_g32_r16_avx512;
    k->gemv_q4_g32_r16 = gemv_q4_g32_r16_avx512;
    k->dequant_q8_g32_r16 = dequant_q8_g32_r16_avx512;
    k->dequant_q4_g32_r16 = dequant_q4_g32_r16_avx512;
}
