/* kernels_avx512.c — AVX-512 (F/DQ/BW/VL + VNNI) kernels. */
#include <immintrin.h>

#include "kernels.h"

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

void tlm_kernels_avx512_fill(tlm_kernels *k) {
    k->name = "avx512";
    k->dot_f32 = dot_f32_avx512;
    k->gemv_f32 = gemv_f32_avx512;
    k->axpy_f32 = axpy_f32_avx512;
}
