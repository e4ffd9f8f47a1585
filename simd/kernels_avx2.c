/* kernels_avx2.c — AVX2 + FMA kernels. */
#include <immintrin.h>
#include <math.h>

#include "kernels.h"

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

void tlm_kernels_avx2_fill(tlm_kernels *k) {
    k->name = "avx2";
    k->dot_f32 = dot_f32_avx2;
    k->gemv_f32 = gemv_f32_avx2;
    k->gemv_t_f32 = gemv_t_f32_avx2;
    k->axpy_f32 = axpy_f32_avx2;
    k->rmsnorm_f32 = rmsnorm_f32_avx2;
    k->softmax_f32 = softmax_f32_avx2;
    k->silu_mul_f32 = silu_mul_f32_avx2;
}
