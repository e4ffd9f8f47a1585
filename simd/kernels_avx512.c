/* kernels_avx512.c — AVX-512 (F/DQ/BW/VL + VNNI) kernels. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "gguf_kernels.h"
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
        /* A NaN or infinite activation converts to INT32_MIN ("integer
         * indefinite"), which finite ones never reach (|q| <= 127); it becomes
         * 0, as in the scalar definition, so that the sum cannot overflow. */
        const __m512i indefinite = _mm512_set1_epi32(INT32_MIN);
        q0 = _mm512_maskz_mov_epi32(_mm512_cmpneq_epi32_mask(q0, indefinite), q0);
        q1 = _mm512_maskz_mov_epi32(_mm512_cmpneq_epi32_mask(q1, indefinite), q1);
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

/* ---- quantized prefill: GEMM over packed tiles. For one 16-row tile, the
 * group's weight lines are loaded (and, for Q4, unpacked) once into
 * registers and used for GEMM_TOKENS activation rows, each row's 32 inputs
 * broadcast 4 at a time from memory into vpdpbusd; per row, two int32
 * chains and one f32 accumulator (8 independent dpbusd chains per group).
 * The sums and the per-group fma are the GEMV's, so results are
 * bit-identical to it. */
#define GEMM_TOKENS 4

static inline __m512i bcast4_at(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* isum of one activation group against weight lines wl (Q8: 8 lines of
 * inputs 4k..; Q4: 4 low-nibble lines then 4 high-nibble lines, masked in
 * place so the high sum is 16x and shifted back). */
static inline __m512i gemm_group_isum(tlm_qtype t, const __m512i wl[8],
                                      const tlm_block_q8_g32_act *xg, int bias_per_sum) {
    const int8_t *qs = xg->qs;
    __m512i a0 = _mm512_set1_epi32(bias_per_sum * xg->sum), a1 = _mm512_setzero_si512();
    if (t == TLM_Q8_G32) {
        for (int k = 0; k < 8; k += 2) {
            a0 = _mm512_dpbusd_epi32(a0, wl[k], bcast4_at(qs + 4 * k));
            a1 = _mm512_dpbusd_epi32(a1, wl[k + 1], bcast4_at(qs + 4 * k + 4));
        }
        return _mm512_add_epi32(a0, a1);
    }
    for (int j = 0; j < 4; j++) {
        a0 = _mm512_dpbusd_epi32(a0, wl[j], bcast4_at(qs + 4 * j));
        a1 = _mm512_dpbusd_epi32(a1, wl[4 + j], bcast4_at(qs + 16 + 4 * j));
    }
    return _mm512_add_epi32(a0, _mm512_srai_epi32(a1, 4));
}

static inline void gemm_store_row(float *row, int64_t base, int64_t r0, int64_t r1, __m512 acc,
                                  bool accumulate) {
    int64_t lo = r0 > base ? r0 - base : 0, hi = r1 - base < 16 ? r1 - base : 16;
    if (hi <= lo) return;
    __mmask16 m = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
    if (accumulate) acc = _mm512_add_ps(_mm512_maskz_loadu_ps(m, row + base), acc);
    _mm512_mask_storeu_ps(row + base, m, acc);
}

static inline void gemm_qr16_avx512(tlm_qtype t, const void *w, const void *xq, float *c,
                                    int64_t ldc, int64_t m, int64_t n_in, int64_t r0, int64_t r1,
                                    bool accumulate) {
    const tlm_block_q8_g32_act *x = xq;
    const int64_t n_groups = n_in / TLM_QGROUP;
    const size_t qb = t == TLM_Q8_G32 ? TLM_Q8_G32_R16_QUANT_BYTES : TLM_Q4_G32_R16_QUANT_BYTES;
    const size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in), scales_at = (size_t)n_groups * qb;
    const int bias_per_sum = t == TLM_Q8_G32 ? -128 : -8;
    const __m512i low4 = _mm512_set1_epi8(0x0f), high4 = _mm512_set1_epi8((char)0xf0);
    for (int64_t base = r0 - r0 % TLM_QROWS; base < r1; base += TLM_QROWS) {
        const uint8_t *tile = tlm_qpacked_tile(w, tile_bytes, base);
        for (int64_t t0 = 0; t0 < m; t0 += GEMM_TOKENS) {
            const int nb = m - t0 < GEMM_TOKENS ? (int)(m - t0) : GEMM_TOKENS;
            const tlm_block_q8_g32_act *xr = x + t0 * n_groups;
            __m512 acc[GEMM_TOKENS];
            for (int i = 0; i < GEMM_TOKENS; i++) acc[i] = _mm512_setzero_ps();
            for (int64_t g = 0; g < n_groups; g++) {
                const uint8_t *q = tile + (size_t)g * qb;
                __m512i wl[8];
                if (t == TLM_Q8_G32) {
                    for (int k = 0; k < 8; k++) wl[k] = _mm512_loadu_si512(q + 64 * k);
                } else {
                    for (int j = 0; j < 4; j++) {
                        __m512i v = _mm512_loadu_si512(q + 64 * j);
                        wl[j] = _mm512_and_si512(v, low4);
                        wl[4 + j] = _mm512_and_si512(v, high4);
                    }
                }
                __m512 sw = _mm512_cvtph_ps(
                    _mm256_loadu_si256((const __m256i *)(tile + scales_at + (size_t)g * TLM_QR16_SCALE_BYTES)));
                if (nb == GEMM_TOKENS) {
                    for (int i = 0; i < GEMM_TOKENS; i++) {
                        const tlm_block_q8_g32_act *xg = xr + i * n_groups + g;
                        __m512i isum = gemm_group_isum(t, wl, xg, bias_per_sum);
                        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum),
                                                 _mm512_mul_ps(sw, _mm512_set1_ps(xg->d)), acc[i]);
                    }
                } else {
                    for (int i = 0; i < nb; i++) {
                        const tlm_block_q8_g32_act *xg = xr + i * n_groups + g;
                        __m512i isum = gemm_group_isum(t, wl, xg, bias_per_sum);
                        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum),
                                                 _mm512_mul_ps(sw, _mm512_set1_ps(xg->d)), acc[i]);
                    }
                }
            }
            for (int i = 0; i < nb; i++)
                gemm_store_row(c + (t0 + i) * ldc, base, r0, r1, acc[i], accumulate);
        }
    }
}

static void gemm_q8_g32_r16_avx512(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                                   int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    gemm_qr16_avx512(TLM_Q8_G32, w, xq, c, ldc, m, n_in, r0, r1, accumulate);
}

static void gemm_q4_g32_r16_avx512(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                                   int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    gemm_qr16_avx512(TLM_Q4_G32, w, xq, c, ldc, m, n_in, r0, r1, accumulate);
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

/* ------------------------------------------ attention over the KV cache */
/* 16 values per step; the n % 16 tail through masked loads and stores. */

static inline __mmask16 tail_mask16(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

static void kv_store_f16_avx512(const float *x, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_mask_storeu_epi16(dst + i, m, h);
    }
}

static void kv_store_q8_avx512(const float *x, int8_t *dst, float *d, int64_t n) {
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __m512 mx = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16)
        mx = _mm512_max_ps(mx, _mm512_andnot_ps(sign, _mm512_maskz_loadu_ps(tail_mask16(n - i), x + i)));
    float amax = _mm512_reduce_max_ps(mx);
    float dd = amax / 127.0f, id = dd != 0.0f ? 1.0f / dd : 0.0f;
    __m512 vid = _mm512_set1_ps(id);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask16(n - i);
        /* cvtps2dq rounds half to even in the default MXCSR mode */
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vid));
        _mm_mask_storeu_epi8(dst + i, m, _mm512_cvtepi32_epi8(q));
    }
    *d = dd;
}

static inline __m512 load16_f16(const uint16_t *p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

static inline __m512 load16_q8(const int8_t *p, __mmask16 m) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
}

/* The horizontal sums of four vectors, in lanes 0..3. */
static inline __m128 hsum4x512(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
#define FOLD(a) _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1))
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(FOLD(a0), FOLD(a1)), _mm256_hadd_ps(FOLD(a2), FOLD(a3)));
#undef FOLD
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Four key rows at a time, each load of q feeding four FMAs, reduced together. */
#define ATTN_SCORES_AVX512(NAME, T, LOAD16, ROW_SCALE)                                           \
    static void NAME(const T *k, const float *d, const float *q, float *s, int64_t rows,       \
                     int64_t n, float scale) {                                                  \
        (void)d;                                                                                \
        int64_t t = 0;                                                                          \
        for (; t + 4 <= rows; t += 4) {                                                         \
            const T *k0 = k + t * n, *k1 = k0 + n, *k2 = k1 + n, *k3 = k2 + n;                  \
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();                          \
            __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();                          \
            for (int64_t i = 0; i < n; i += 16) {                                               \
                __mmask16 m = tail_mask16(n - i);                                               \
                __m512 vq = _mm512_maskz_loadu_ps(m, q + i);                                    \
                a0 = _mm512_fmadd_ps(LOAD16(k0 + i, m), vq, a0);                                \
                a1 = _mm512_fmadd_ps(LOAD16(k1 + i, m), vq, a1);                                \
                a2 = _mm512_fmadd_ps(LOAD16(k2 + i, m), vq, a2);                                \
                a3 = _mm512_fmadd_ps(LOAD16(k3 + i, m), vq, a3);                                \
            }                                                                                   \
            float r[4];                                                                         \
            _mm_storeu_ps(r, hsum4x512(a0, a1, a2, a3));                                        \
            for (int j = 0; j < 4; j++) s[t + j] = r[j] * (ROW_SCALE(t + j) * scale);           \
        }                                                                                       \
        for (; t < rows; t++) {                                                                 \
            const T *kt = k + t * n;                                                            \
            __m512 a = _mm512_setzero_ps();                                                     \
            for (int64_t i = 0; i < n; i += 16) {                                               \
                __mmask16 m = tail_mask16(n - i);                                               \
                a = _mm512_fmadd_ps(LOAD16(kt + i, m), _mm512_maskz_loadu_ps(m, q + i), a);     \
            }                                                                                   \
            s[t] = _mm512_reduce_add_ps(a) * (ROW_SCALE(t) * scale);                            \
        }                                                                                       \
    }

#define NO_ROW_SCALE(t) 1.0f
#define Q8_ROW_SCALE(t) d[t]
ATTN_SCORES_AVX512(attn_scores_f16_rows_avx512, uint16_t, load16_f16, NO_ROW_SCALE)
ATTN_SCORES_AVX512(attn_scores_q8_avx512, int8_t, load16_q8, Q8_ROW_SCALE)

static void attn_scores_f16_avx512(const uint16_t *k, const float *q, float *s, int64_t rows,
                                   int64_t n, float scale) {
    attn_scores_f16_rows_avx512(k, NULL, q, s, rows, n, scale);
}

/* Columns in blocks of 64 (four accumulators across all rows), then 16 at
 * a time with a masked last block; W(t) is the row's weight. */
#define ATTN_VALUES_AVX512(NAME, T, LOAD16, W)                                                   \
    static void NAME(const T *v, const float *d, const float *p, float *y, int64_t rows,       \
                     int64_t n) {                                                               \
        (void)d;                                                                                \
        const __mmask16 all = 0xffff;                                                           \
        int64_t j = 0;                                                                          \
        for (; j + 64 <= n; j += 64) {                                                          \
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();                          \
            __m512 a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();                          \
            for (int64_t t = 0; t < rows; t++) {                                                \
                const T *row = v + t * n + j;                                                   \
                __m512 vw = _mm512_set1_ps(W(t));                                               \
                a0 = _mm512_fmadd_ps(vw, LOAD16(row, all), a0);                                 \
                a1 = _mm512_fmadd_ps(vw, LOAD16(row + 16, all), a1);                            \
                a2 = _mm512_fmadd_ps(vw, LOAD16(row + 32, all), a2);                            \
                a3 = _mm512_fmadd_ps(vw, LOAD16(row + 48, all), a3);                            \
            }                                                                                   \
            _mm512_storeu_ps(y + j, a0);                                                        \
            _mm512_storeu_ps(y + j + 16, a1);                                                   \
            _mm512_storeu_ps(y + j + 32, a2);                                                   \
            _mm512_storeu_ps(y + j + 48, a3);                                                   \
        }                                                                                       \
        for (; j < n; j += 16) {                                                                \
            __mmask16 m = tail_mask16(n - j);                                                   \
            __m512 a0 = _mm512_setzero_ps();                                                    \
            for (int64_t t = 0; t < rows; t++)                                                  \
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(W(t)), LOAD16(v + t * n + j, m), a0);       \
            _mm512_mask_storeu_ps(y + j, m, a0);                                                \
        }                                                                                       \
    }

#define F16_WEIGHT(t) p[t]
#define Q8_WEIGHT(t) (p[t] * d[t])
ATTN_VALUES_AVX512(attn_values_f16_rows_avx512, uint16_t, load16_f16, F16_WEIGHT)
ATTN_VALUES_AVX512(attn_values_q8_avx512, int8_t, load16_q8, Q8_WEIGHT)

static void attn_values_f16_avx512(const uint16_t *v, const float *p, float *y, int64_t rows,
                                   int64_t n) {
    attn_values_f16_rows_avx512(v, NULL, p, y, rows, n);
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
    k->gemm_q8_g32_r16 = gemm_q8_g32_r16_avx512;
    k->gemm_q4_g32_r16 = gemm_q4_g32_r16_avx512;
    k->gemm_q_preferred = true;
    k->kv_store_f16 = kv_store_f16_avx512;
    k->kv_store_q8 = kv_store_q8_avx512;
    k->attn_scores_f16 = attn_scores_f16_avx512;
    k->attn_scores_q8 = attn_scores_q8_avx512;
    k->attn_values_f16 = attn_values_f16_avx512;
    k->attn_values_q8 = attn_values_q8_avx512;
    tlm_gguf_avx512_fill(k);
}
