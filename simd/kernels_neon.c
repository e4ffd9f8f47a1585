/* kernels_neon.c — Arm NEON (AArch64 Advanced SIMD) kernels. */
#include <arm_neon.h>

#include "kernels.h"

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

void tlm_kernels_neon_fill(tlm_kernels *k) {
    k->name = "neon";
    k->dot_f32 = dot_f32_neon;
    k->gemv_f32 = gemv_f32_neon;
    k->axpy_f32 = axpy_f32_neon;
}
