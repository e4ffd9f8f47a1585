/* kernels_avx2.c — AVX2 + FMA kernels. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "f16.h"
#include "gguf_kernels.h"
#include "kernels.h"
#include "qformat.h"

static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

static inline float hmax256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_max_ps(lo, hi);
    lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* exp(x) for 8 floats: x = n*ln2 + r with |r| <= ln2/2, a degree-7 polynomial
 * for exp(r) (the Cephes expf coefficients), then 2^n through the exponent
 * bits. Inputs are clamped to [-87.3, 88.7] so that 2^n stays a normal float;
 * relative error ~2 ulp against expf. */
static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

/* ------------------------------------------------------------ products */

static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Four rows at a time so that each load of x feeds four FMAs. */
static void gemv_f32_avx2(const float *w, const float *x, float *y, int64_t n_in, int64_t r0,
                          int64_t r1) {
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *w0 = w + r * n_in, *w1 = w0 + n_in, *w2 = w1 + n_in, *w3 = w2 + n_in;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= n_in; i += 8) {
            __m256 vx = _mm256_loadu_ps(x + i);
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), vx, s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), vx, s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), vx, s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), vx, s3);
        }
        float t0 = hsum256(s0), t1 = hsum256(s1), t2 = hsum256(s2), t3 = hsum256(s3);
        for (; i < n_in; i++) {
            t0 += w0[i] * x[i];
            t1 += w1[i] * x[i];
            t2 += w2[i] * x[i];
            t3 += w3[i] * x[i];
        }
        y[r] = t0;
        y[r + 1] = t1;
        y[r + 2] = t2;
        y[r + 3] = t3;
    }
    for (; r < r1; r++) y[r] = dot_f32_avx2(w + r * n_in, x, n_in);
}

/* Columns in blocks of 32 (four accumulators live in registers across all
 * rows), then 8, then one by one. */
static void gemv_t_f32_avx2(const float *v, const float *s, float *y, int64_t rows, int64_t n) {
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t r = 0; r < rows; r++) {
            const float *row = v + r * n + j;
            __m256 vs = _mm256_broadcast_ss(s + r);
            a0 = _mm256_fmadd_ps(vs, _mm256_loadu_ps(row), a0);
            a1 = _mm256_fmadd_ps(vs, _mm256_loadu_ps(row + 8), a1);
            a2 = _mm256_fmadd_ps(vs, _mm256_loadu_ps(row + 16), a2);
            a3 = _mm256_fmadd_ps(vs, _mm256_loadu_ps(row + 24), a3);
        }
        _mm256_storeu_ps(y + j, a0);
        _mm256_storeu_ps(y + j + 8, a1);
        _mm256_storeu_ps(y + j + 16, a2);
        _mm256_storeu_ps(y + j + 24, a3);
    }
    for (; j + 8 <= n; j += 8) {
        __m256 a0 = _mm256_setzero_ps();
        for (int64_t r = 0; r < rows; r++)
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + r), _mm256_loadu_ps(v + r * n + j), a0);
        _mm256_storeu_ps(y + j, a0);
    }
    for (; j < n; j++) {
        float a = 0;
        for (int64_t r = 0; r < rows; r++) a += s[r] * v[r * n + j];
        y[j] = a;
    }
}

static void axpy_f32_avx2(float a, const float *x, float *y, int64_t n) {
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

/* ------------------------------------------------------- element-wise */

static void rmsnorm_f32_avx2(float *y, const float *x, const float *w, int64_t n, float eps) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        s0 = _mm256_fmadd_ps(a, a, s0);
        s1 = _mm256_fmadd_ps(b, b, s1);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i);
        s0 = _mm256_fmadd_ps(a, a, s0);
    }
    double ss = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) ss += (double)x[i] * x[i];
    float inv_rms = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    __m256 vs = _mm256_set1_ps(inv_rms);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs),
                                              _mm256_loadu_ps(w + i)));
    for (; i < n; i++) y[i] = x[i] * inv_rms * w[i];
}

static void softmax_f32_avx2(float *x, int64_t n) {
    __m256 vmax = _mm256_set1_ps(x[0]);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float max = hmax256(vmax);
    for (; i < n; i++)
        if (x[i] > max) max = x[i];
    vmax = _mm256_set1_ps(max);
    __m256 vsum = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    double sum = hsum256(vsum);
    for (; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    __m256 vinv = _mm256_set1_ps((float)(1.0 / sum));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    float inv_sum = (float)(1.0 / sum);
    for (; i < n; i++) x[i] *= inv_sum;
}

static void silu_mul_f32_avx2(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 vg = _mm256_loadu_ps(g + i);
        __m256 den = _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), vg)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(vg, den), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---------------------------------------------------- quantized decode */

static void quantize_act_q8_g32_avx2(const float *x, void *xq, int64_t n) {
    tlm_block_q8_g32_act *out = xq;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t g = 0; g < n / TLM_QGROUP; g++) {
        const float *p = x + g * TLM_QGROUP;
        __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8);
        __m256 v2 = _mm256_loadu_ps(p + 16), v3 = _mm256_loadu_ps(p + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        float amax = hmax256(m);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        /* cvtps2dq rounds half to even in the default MXCSR mode */
        __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, vid));
        __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, vid));
        __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, vid));
        __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, vid));
        /* A NaN or infinite activation converts to INT32_MIN ("integer
         * indefinite"), which finite ones never reach (|q| <= 127); it becomes
         * 0, as in the scalar definition, so that the sum cannot overflow. */
        const __m256i indefinite = _mm256_set1_epi32(INT32_MIN);
        q0 = _mm256_andnot_si256(_mm256_cmpeq_epi32(q0, indefinite), q0);
        q1 = _mm256_andnot_si256(_mm256_cmpeq_epi32(q1, indefinite), q1);
        q2 = _mm256_andnot_si256(_mm256_cmpeq_epi32(q2, indefinite), q2);
        q3 = _mm256_andnot_si256(_mm256_cmpeq_epi32(q3, indefinite), q3);
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(q0, q1), _mm256_add_epi32(q2, q3));
        /* packs interleave 128-bit lanes; the permute puts the bytes back in order */
        __m256i q01 = _mm256_packs_epi32(q0, q1), q23 = _mm256_packs_epi32(q2, q3);
        __m256i b = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q01, q23),
                                                _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)out[g].qs, b);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        out[g].d = d;
        out[g].sum = _mm_cvtsi128_si32(s4);
    }
}

/* 4 activation int8 (inputs 4k..4k+3) in every 32-bit lane. */
static inline __m256i bcast4_256(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* Rows [base, base+16) of a tile: acc_lo holds rows 0-7, acc_hi rows 8-15. */
static inline void store_rows16_avx2(float *y, int64_t base, int64_t r0, int64_t r1, __m256 acc_lo,
                                     __m256 acc_hi) {
    float t[16];
    _mm256_storeu_ps(t, acc_lo);
    _mm256_storeu_ps(t + 8, acc_hi);
    for (int r = 0; r < 16; r++)
        if (base + r >= r0 && base + r < r1) y[base + r] = t[r];
}

/* Streaming as in kernels_avx512.c: tiles read side by side (two here: 16
 * ymm registers hold two tiles' accumulators and the temporaries), each
 * weight line touched PREFETCH_AHEAD bytes before its use. */
#define TILES_AT_ONCE 2
#define PREFETCH_AHEAD 16384

static inline void prefetch_lines(const uint8_t *p, int n_lines) {
    for (int l = 0; l < n_lines; l++) _mm_prefetch((const char *)p + PREFETCH_AHEAD + 64 * l, _MM_HINT_T0);
}

static inline __m256 scale8(const uint8_t *sc, float dx) {
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sc)), _mm256_set1_ps(dx));
}

/* Weights arrive biased (q + 128, qformat.h) and go back to int8 with one
 * xor; maddubs takes u8 x s8 with 16-bit saturation, so then the usual sign
 * trick: |w| * (x * sign(w)), each pair sum at most 2 * 128 * 127 < 32767. */
static inline __m256i dot4x8_s8(__m256i w_biased, __m256i x) {
    __m256i w = _mm256_xor_si256(w_biased, _mm256_set1_epi8((char)0x80));
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* One q8 tile-group: int32 dots of rows 0-7 (lo) and 8-15 (hi). */
static inline void q8_group_isum_avx2(const uint8_t *q, const int8_t *xs, __m256i *lo, __m256i *hi) {
    __m256i a_lo = _mm256_setzero_si256(), a_hi = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++) {
        __m256i xb = bcast4_256(xs + 4 * k);
        a_lo = _mm256_add_epi32(a_lo, dot4x8_s8(_mm256_loadu_si256((const __m256i *)(q + 64 * k)), xb));
        a_hi = _mm256_add_epi32(a_hi, dot4x8_s8(_mm256_loadu_si256((const __m256i *)(q + 64 * k + 32)), xb));
    }
    *lo = a_lo;
    *hi = a_hi;
}

/* One q4 tile-group. Nibbles (u8 0..15) x s8 through maddubs: each pair sum
 * is at most 2 * 15 * 127 = 3810, so the 8 of a group add up in 16 bits
 * (<= 30480) before one widening; 8 * sum(x) then removes the nibbles' +8. */
static inline void q4_group_isum_avx2(const uint8_t *q, const int8_t *xs, int32_t sum, __m256i *lo,
                                      __m256i *hi) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    __m256i s_lo = _mm256_setzero_si256(), s_hi = _mm256_setzero_si256();
    for (int j = 0; j < 4; j++) {
        __m256i xl = bcast4_256(xs + 4 * j), xh = bcast4_256(xs + 16 + 4 * j);
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(q + 64 * j));
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(q + 64 * j + 32));
        s_lo = _mm256_add_epi16(s_lo, _mm256_maddubs_epi16(_mm256_and_si256(v0, low4), xl));
        s_lo = _mm256_add_epi16(s_lo, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v0, 4), low4), xh));
        s_hi = _mm256_add_epi16(s_hi, _mm256_maddubs_epi16(_mm256_and_si256(v1, low4), xl));
        s_hi = _mm256_add_epi16(s_hi, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v1, 4), low4), xh));
    }
    __m256i bias = _mm256_set1_epi32(8 * sum);
    *lo = _mm256_sub_epi32(_mm256_madd_epi16(s_lo, ones), bias);
    *hi = _mm256_sub_epi32(_mm256_madd_epi16(s_hi, ones), bias);
}

static inline void gemv_qr16_avx2(tlm_qtype t, const void *w, const void *xq, float *y, int64_t n_in,
                                  int64_t r0, int64_t r1) {
    const tlm_block_q8_g32_act *x = xq;
    const int64_t n_groups = n_in / TLM_QGROUP;
    const size_t qb = t == TLM_Q8_G32 ? TLM_Q8_G32_R16_QUANT_BYTES : TLM_Q4_G32_R16_QUANT_BYTES;
    const size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in), scales_at = (size_t)n_groups * qb;
    for (int64_t base = r0 - r0 % TLM_QROWS; base < r1; base += TILES_AT_ONCE * TLM_QROWS) {
        int64_t left = (r1 - base + TLM_QROWS - 1) / TLM_QROWS;
        int nt = left < TILES_AT_ONCE ? (int)left : TILES_AT_ONCE;
        const uint8_t *t0 = tlm_qpacked_tile(w, tile_bytes, base);
        __m256 acc_lo[TILES_AT_ONCE], acc_hi[TILES_AT_ONCE];
        for (int i = 0; i < TILES_AT_ONCE; i++) acc_lo[i] = acc_hi[i] = _mm256_setzero_ps();
        for (int64_t g = 0; g < n_groups; g++) {
            for (int i = 0; i < TILES_AT_ONCE; i++) {
                if (i >= nt) break;
                const uint8_t *tile = t0 + (size_t)i * tile_bytes, *q = tile + (size_t)g * qb;
                prefetch_lines(q, (int)(qb / 64));
                __m256i lo, hi;
                if (t == TLM_Q8_G32)
                    q8_group_isum_avx2(q, x[g].qs, &lo, &hi);
                else
                    q4_group_isum_avx2(q, x[g].qs, x[g].sum, &lo, &hi);
                const uint8_t *s = tile + scales_at + (size_t)g * TLM_QR16_SCALE_BYTES;
                acc_lo[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), scale8(s, x[g].d), acc_lo[i]);
                acc_hi[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), scale8(s + 16, x[g].d), acc_hi[i]);
            }
        }
        for (int i = 0; i < nt; i++)
            store_rows16_avx2(y, base + (int64_t)i * TLM_QROWS, r0, r1, acc_lo[i], acc_hi[i]);
    }
}

static void gemv_q8_g32_r16_avx2(const void *w, const void *xq, float *y, int64_t n_in, int64_t r0,
                                 int64_t r1) {
    gemv_qr16_avx2(TLM_Q8_G32, w, xq, y, n_in, r0, r1);
}

static void gemv_q4_g32_r16_avx2(const void *w, const void *xq, float *y, int64_t n_in, int64_t r0,
                                 int64_t r1) {
    gemv_qr16_avx2(TLM_Q4_G32, w, xq, y, n_in, r0, r1);
}

/* Prefill GEMM: one 16-row tile at a time for all m activation rows, so the
 * tile (n_in / 32 x 544 bytes at most for q8) is read from memory once and
 * from L1/L2 for the other rows; per row, the GEMV's group sums. Without
 * VNNI this does not beat dequantize + sgemm (gemm_q_preferred stays false):
 * it is here as the bit-identical twin. */
static inline void gemm_qr16_avx2(tlm_qtype t, const void *w, const void *xq, float *c, int64_t ldc,
                                  int64_t m, int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    const tlm_block_q8_g32_act *x = xq;
    const int64_t n_groups = n_in / TLM_QGROUP;
    const size_t qb = t == TLM_Q8_G32 ? TLM_Q8_G32_R16_QUANT_BYTES : TLM_Q4_G32_R16_QUANT_BYTES;
    const size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in), scales_at = (size_t)n_groups * qb;
    for (int64_t base = r0 - r0 % TLM_QROWS; base < r1; base += TLM_QROWS) {
        const uint8_t *tile = tlm_qpacked_tile(w, tile_bytes, base);
        for (int64_t i = 0; i < m; i++) {
            const tlm_block_q8_g32_act *xr = x + i * n_groups;
            __m256 acc_lo = _mm256_setzero_ps(), acc_hi = _mm256_setzero_ps();
            for (int64_t g = 0; g < n_groups; g++) {
                const uint8_t *q = tile + (size_t)g * qb;
                __m256i lo, hi;
                if (t == TLM_Q8_G32)
                    q8_group_isum_avx2(q, xr[g].qs, &lo, &hi);
                else
                    q4_group_isum_avx2(q, xr[g].qs, xr[g].sum, &lo, &hi);
                const uint8_t *s = tile + scales_at + (size_t)g * TLM_QR16_SCALE_BYTES;
                acc_lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), scale8(s, xr[g].d), acc_lo);
                acc_hi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), scale8(s + 16, xr[g].d), acc_hi);
            }
            float v[16], *row = c + i * ldc;
            _mm256_storeu_ps(v, acc_lo);
            _mm256_storeu_ps(v + 8, acc_hi);
            for (int r = 0; r < 16; r++)
                if (base + r >= r0 && base + r < r1)
                    row[base + r] = (accumulate ? row[base + r] : 0.0f) + v[r];
        }
    }
}

static void gemm_q8_g32_r16_avx2(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                                 int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    gemm_qr16_avx2(TLM_Q8_G32, w, xq, c, ldc, m, n_in, r0, r1, accumulate);
}

static void gemm_q4_g32_r16_avx2(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                                 int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    gemm_qr16_avx2(TLM_Q4_G32, w, xq, c, ldc, m, n_in, r0, r1, accumulate);
}

/* ------------------------------------------ attention over the KV cache */
/* F16C (required with AVX2 by the dispatcher) converts 8 halves at a time. */

static void kv_store_f16_avx2(const float *x, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = tlm_f32_to_f16(x[i]);
}

static void kv_store_q8_avx2(const float *x, int8_t *dst, float *d, int64_t n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)));
    float amax = hmax256(m);
    for (; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    float dd = amax / 127.0f, id = dd != 0.0f ? 1.0f / dd : 0.0f;
    __m256 vid = _mm256_set1_ps(id);
    for (i = 0; i + 8 <= n; i += 8) {
        /* cvtps2dq rounds half to even in the default MXCSR mode */
        __m256i q = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vid));
        __m128i h = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64((__m128i *)(dst + i), _mm_packs_epi16(h, h));
    }
    for (; i < n; i++) {
        float r = nearbyintf(x[i] * id);
        dst[i] = (int8_t)(r >= -127.0f && r <= 127.0f ? (int32_t)r : 0);
    }
    *d = dd;
}

static inline __m256 load8_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline __m256 load8_q8(const int8_t *p) {
    int64_t v;
    memcpy(&v, p, 8);
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v)));
}

/* The horizontal sums of four vectors, in lanes 0..3. */
static inline __m128 hsum4x256(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Four key rows at a time (each load of q feeds four FMAs), reduced
 * together; the n % 8 tail in scalar. LOAD8 converts 8 cached values. */
#define ATTN_SCORES_AVX2(NAME, T, LOAD8, TO_F32, ROW_SCALE)                                     \
    static void NAME(const T *k, const float *d, const float *q, float *s, int64_t rows,       \
                     int64_t n, float scale) {                                                  \
        (void)d;                                                                                \
        int64_t t = 0, n8 = n & ~(int64_t)7;                                                   \
        for (; t + 4 <= rows; t += 4) {                                                         \
            const T *k0 = k + t * n, *k1 = k0 + n, *k2 = k1 + n, *k3 = k2 + n;                  \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                          \
            __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();                          \
            for (int64_t i = 0; i < n8; i += 8) {                                               \
                __m256 vq = _mm256_loadu_ps(q + i);                                             \
                a0 = _mm256_fmadd_ps(LOAD8(k0 + i), vq, a0);                                    \
                a1 = _mm256_fmadd_ps(LOAD8(k1 + i), vq, a1);                                    \
                a2 = _mm256_fmadd_ps(LOAD8(k2 + i), vq, a2);                                    \
                a3 = _mm256_fmadd_ps(LOAD8(k3 + i), vq, a3);                                    \
            }                                                                                   \
            float r[4];                                                                         \
            _mm_storeu_ps(r, hsum4x256(a0, a1, a2, a3));                                        \
            for (int j = 0; j < 4; j++) {                                                       \
                const T *kj = k0 + j * n;                                                       \
                for (int64_t i = n8; i < n; i++) r[j] += TO_F32(kj[i]) * q[i];                  \
                s[t + j] = r[j] * (ROW_SCALE(t + j) * scale);                                   \
            }                                                                                   \
        }                                                                                       \
        for (; t < rows; t++) {                                                                 \
            const T *kt = k + t * n;                                                            \
            __m256 a = _mm256_setzero_ps();                                                     \
            for (int64_t i = 0; i < n8; i += 8)                                                 \
                a = _mm256_fmadd_ps(LOAD8(kt + i), _mm256_loadu_ps(q + i), a);                  \
            float r = hsum256(a);                                                               \
            for (int64_t i = n8; i < n; i++) r += TO_F32(kt[i]) * q[i];                         \
            s[t] = r * (ROW_SCALE(t) * scale);                                                  \
        }                                                                                       \
    }

#define F16_TO_F32(h) tlm_f16_to_f32(h)
#define Q8_TO_F32(b) ((float)(b))
#define NO_ROW_SCALE(t) 1.0f
#define Q8_ROW_SCALE(t) d[t]
ATTN_SCORES_AVX2(attn_scores_f16_rows_avx2, uint16_t, load8_f16, F16_TO_F32, NO_ROW_SCALE)
ATTN_SCORES_AVX2(attn_scores_q8_avx2, int8_t, load8_q8, Q8_TO_F32, Q8_ROW_SCALE)

static void attn_scores_f16_avx2(const uint16_t *k, const float *q, float *s, int64_t rows,
                                 int64_t n, float scale) {
    attn_scores_f16_rows_avx2(k, NULL, q, s, rows, n, scale);
}

/* Columns in blocks of 32 (four accumulators across all rows), then 8, then
 * one by one, as gemv_t_f32; W(t) is the row's weight (p, times d for q8). */
#define ATTN_VALUES_AVX2(NAME, T, LOAD8, TO_F32, W)                                             \
    static void NAME(const T *v, const float *d, const float *p, float *y, int64_t rows,       \
                     int64_t n) {                                                               \
        (void)d;                                                                                \
        int64_t j = 0;                                                                          \
        for (; j + 32 <= n; j += 32) {                                                          \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                          \
            __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();                          \
            for (int64_t t = 0; t < rows; t++) {                                                \
                const T *row = v + t * n + j;                                                   \
                __m256 vw = _mm256_set1_ps(W(t));                                               \
                a0 = _mm256_fmadd_ps(vw, LOAD8(row), a0);                                       \
                a1 = _mm256_fmadd_ps(vw, LOAD8(row + 8), a1);                                   \
                a2 = _mm256_fmadd_ps(vw, LOAD8(row + 16), a2);                                  \
                a3 = _mm256_fmadd_ps(vw, LOAD8(row + 24), a3);                                  \
            }                                                                                   \
            _mm256_storeu_ps(y + j, a0);                                                        \
            _mm256_storeu_ps(y + j + 8, a1);                                                    \
            _mm256_storeu_ps(y + j + 16, a2);                                                   \
            _mm256_storeu_ps(y + j + 24, a3);                                                   \
        }                                                                                       \
        for (; j + 8 <= n; j += 8) {                                                            \
            __m256 a0 = _mm256_setzero_ps();                                                    \
            for (int64_t t = 0; t < rows; t++)                                                  \
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(W(t)), LOAD8(v + t * n + j), a0);           \
            _mm256_storeu_ps(y + j, a0);                                                        \
        }                                                                                       \
        for (; j < n; j++) {                                                                    \
            float a = 0;                                                                        \
            for (int64_t t = 0; t < rows; t++) a += W(t) * TO_F32(v[t * n + j]);                \
            y[j] = a;                                                                           \
        }                                                                                       \
    }

#define F16_WEIGHT(t) p[t]
#define Q8_WEIGHT(t) (p[t] * d[t])
ATTN_VALUES_AVX2(attn_values_f16_rows_avx2, uint16_t, load8_f16, F16_TO_F32, F16_WEIGHT)
ATTN_VALUES_AVX2(attn_values_q8_avx2, int8_t, load8_q8, Q8_TO_F32, Q8_WEIGHT)

static void attn_values_f16_avx2(const uint16_t *v, const float *p, float *y, int64_t rows,
                                 int64_t n) {
    attn_values_f16_rows_avx2(v, NULL, p, y, rows, n);
}

void tlm_kernels_avx2_fill(tlm_kernels *k) {
    k->name = "avx2";
    k->dot_f32 = dot_f32_avx2;
    k->gemv_f32 = gemv_f32_avx2;
    k->gemv_t_f32 = gemv_t_f32_avx2;
    k->axpy_f32 = axpy_f32_avx2;
    k->rmsnorm_f32 = rmsnorm_f32_avx2;
    k->softmax_f32 = softmax_f32_avx2;
    k->silu_mul_f32 = silu_mul_f32_avx2;
    k->quantize_act_q8_g32 = quantize_act_q8_g32_avx2;
    k->gemv_q8_g32_r16 = gemv_q8_g32_r16_avx2;
    k->gemv_q4_g32_r16 = gemv_q4_g32_r16_avx2;
    k->gemm_q8_g32_r16 = gemm_q8_g32_r16_avx2;
    k->gemm_q4_g32_r16 = gemm_q4_g32_r16_avx2;
    k->kv_store_f16 = kv_store_f16_avx2;
    k->kv_store_q8 = kv_store_q8_avx2;
    k->attn_scores_f16 = attn_scores_f16_avx2;
    k->attn_scores_q8 = attn_scores_q8_avx2;
    k->attn_values_f16 = attn_values_f16_avx2;
    k->attn_values_q8 = attn_values_q8_avx2;
    tlm_gguf_avx2_fill(k);
}
