/* kernels_scalar.c — plain C kernels: the reference every ISA is tested against. */
#include "kernels.h"

static float dot_f32_scalar(const float *a, const float *b, int64_t n) {
    /* Four partial sums, as the vector kernels do, so rounding is comparable. */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void gemv_f32_scalar(const float *w, const float *x, float *y, int64_t n_in, int64_t r0,
                            int64_t r1) {
    for (int64_t r = r0; r < r1; r++) y[r] = dot_f32_scalar(w + r * n_in, x, n_in);
}

static void axpy_f32_scalar(float a, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

const tlm_kernels tlm_kernels_scalar = {
    .name = "scalar",
    .dot_f32 = dot_f32_scalar,
    .gemv_f32 = gemv_f32_scalar,
    .axpy_f32 = axpy_f32_scalar,
};
