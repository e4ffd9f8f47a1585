/* kernels_scalar.c — plain C kernels: the reference every ISA is tested against. */
#include <math.h>

#include "kernels.h"

/* ------------------------------------------------------------ products */

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

static void gemv_t_f32_scalar(const float *v, const float *s, float *y, int64_t rows, int64_t n) {
    for (int64_t j = 0; j < n; j++) y[j] = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) y[j] += s[r] * v[r * n + j];
}

static void axpy_f32_scalar(float a, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* ------------------------------------------------------- element-wise */

static void rmsnorm_f32_scalar(float *y, const float *x, const float *w, int64_t n, float eps) {
    /* The sum of squares in double: this kernel defines what "correct" is. */
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float inv_rms = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * inv_rms * w[i];
}

static void softmax_f32_scalar(float *x, int64_t n) {
    float max = x[0];
    for (int64_t i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv_sum = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv_sum;
}

static void silu_mul_f32_scalar(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

const tlm_kernels tlm_kernels_scalar = {
    .name = "scalar",
    .dot_f32 = dot_f32_scalar,
    .gemv_f32 = gemv_f32_scalar,
    .gemv_t_f32 = gemv_t_f32_scalar,
    .axpy_f32 = axpy_f32_scalar,
    .rmsnorm_f32 = rmsnorm_f32_scalar,
    .softmax_f32 = softmax_f32_scalar,
    .silu_mul_f32 = silu_mul_f32_scalar,
};
