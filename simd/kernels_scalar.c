/* kernels_scalar.c — plain C kernels: the reference every ISA is tested against. */
#include <math.h>
#include <string.h>

#include "f16.h"
#include "gguf_kernels.h"
#include "kernels.h"
#include "qformat.h"

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

/* ---------------------------------------------------- quantized decode */

static void quantize_act_q8_g32_scalar(const float *x, void *xq, int64_t n) {
    tlm_block_q8_g32_act *out = xq;
    for (int64_t g = 0; g < n / TLM_QGROUP; g++) {
        const float *v = x + g * TLM_QGROUP;
        float amax = 0;
        for (int j = 0; j < TLM_QGROUP; j++) amax = fmaxf(amax, fabsf(v[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < TLM_QGROUP; j++) {
            /* nearbyintf: half to even in the default mode, as cvtps2dq / fcvtns.
             * Finite inputs give |r| <= 127; a NaN or infinite activation
             * (from extreme weights) becomes 0 rather than an undefined cast. */
            float r = nearbyintf(v[j] * id);
            int32_t q = r >= -127.0f && r <= 127.0f ? (int32_t)r : 0;
            out[g].qs[j] = (int8_t)q;
            sum += q;
        }
        out[g].d = d;
        out[g].sum = sum;
    }
}

/* One tile of 16 rows: acc[r] over all groups, in the order every ISA uses.
 * Stored quants are unsigned (Q8: q + 128, Q4: q + 8; quant/qformat.h) and
 * centred here; the group's int32 sum is exact, one fma per group. */
static void gemv_tile_scalar(tlm_qtype t, const uint8_t *tile, const tlm_block_q8_g32_act *x,
                             int64_t n_groups, float acc[TLM_QROWS]) {
    size_t qb = tlm_qtype_group_quant_bytes(t);
    for (int r = 0; r < TLM_QROWS; r++) acc[r] = 0.0f;
    for (int64_t g = 0; g < n_groups; g++) {
        const uint8_t *q = tile + (size_t)g * qb;
        const uint8_t *sc = tile + (size_t)n_groups * qb + (size_t)g * TLM_QR16_SCALE_BYTES;
        for (int r = 0; r < TLM_QROWS; r++) {
            int32_t isum = 0;
            if (t == TLM_Q8_G32) {
                for (int k = 0; k < 8; k++)
                    for (int i = 0; i < 4; i++)
                        isum += ((int32_t)q[64 * k + 4 * r + i] - 128) * x[g].qs[4 * k + i];
            } else {
                for (int j = 0; j < 4; j++)
                    for (int i = 0; i < 4; i++) {
                        uint8_t b = q[64 * j + 4 * r + i];
                        isum += ((b & 0x0f) - 8) * x[g].qs[4 * j + i];
                        isum += ((b >> 4) - 8) * x[g].qs[16 + 4 * j + i];
                    }
            }
            uint16_t h;
            memcpy(&h, sc + 2 * r, 2);
            acc[r] = fmaf((float)isum, tlm_f16_to_f32(h) * x[g].d, acc[r]);
        }
    }
}

static void gemv_qr16_scalar(tlm_qtype t, const void *w, const void *xq, float *y, int64_t n_in,
                             int64_t r0, int64_t r1) {
    size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    float acc[TLM_QROWS];
    for (int64_t base = r0 - r0 % TLM_QROWS; base < r1; base += TLM_QROWS) {
        gemv_tile_scalar(t, tlm_qpacked_tile(w, tile_bytes, base), xq, n_in / TLM_QGROUP, acc);
        for (int r = 0; r < TLM_QROWS; r++)
            if (base + r >= r0 && base + r < r1) y[base + r] = acc[r];
    }
}

static void gemv_q8_g32_r16_scalar(const void *w, const void *xq, float *y, int64_t n_in,
                                   int64_t r0, int64_t r1) {
    gemv_qr16_scalar(TLM_Q8_G32, w, xq, y, n_in, r0, r1);
}

static void gemv_q4_g32_r16_scalar(const void *w, const void *xq, float *y, int64_t n_in,
                                   int64_t r0, int64_t r1) {
    gemv_qr16_scalar(TLM_Q4_G32, w, xq, y, n_in, r0, r1);
}

static void gemm_qr16_scalar(tlm_qtype t, const void *w, const void *xq, float *c, int64_t ldc,
                             int64_t m, int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    const tlm_block_q8_g32_act *x = xq;
    const int64_t n_groups = n_in / TLM_QGROUP;
    size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    float acc[TLM_QROWS];
    for (int64_t base = r0 - r0 % TLM_QROWS; base < r1; base += TLM_QROWS) {
        const uint8_t *tile = tlm_qpacked_tile(w, tile_bytes, base);
        for (int64_t i = 0; i < m; i++) {
            gemv_tile_scalar(t, tile, x + i * n_groups, n_groups, acc);
            float *row = c + i * ldc;
            for (int r = 0; r < TLM_QROWS; r++)
                if (base + r >= r0 && base + r < r1)
                    row[base + r] = (accumulate ? row[base + r] : 0.0f) + acc[r];
        }
    }
}

static void gemm_q8_g32_r16_scalar(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                                   int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    gemm_qr16_scalar(TLM_Q8_G32, w, xq, c, ldc, m, n_in, r0, r1, accumulate);
}

static void gemm_q4_g32_r16_scalar(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                                   int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    gemm_qr16_scalar(TLM_Q4_G32, w, xq, c, ldc, m, n_in, r0, r1, accumulate);
}

/* Through the formats' own definition (quant/qformat.c), block by block. */
static void dequant_q8_g32_r16_scalar(const void *w, float *out, int64_t n_in, int64_t r0,
                                      int64_t r1) {
    tlm_qpacked_dequantize_rows(TLM_Q8_G32, w, n_in, r0, r1, out);
}

static void dequant_q4_g32_r16_scalar(const void *w, float *out, int64_t n_in, int64_t r0,
                                      int64_t r1) {
    tlm_qpacked_dequantize_rows(TLM_Q4_G32, w, n_in, r0, r1, out);
}

/* ------------------------------------------ attention over the KV cache */

static void kv_store_f16_scalar(const float *x, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = tlm_f32_to_f16(x[i]);
}

static void kv_store_q8_scalar(const float *x, int8_t *dst, float *d, int64_t n) {
    float amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    float dd = amax / 127.0f, id = dd != 0.0f ? 1.0f / dd : 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float r = nearbyintf(x[i] * id); /* half to even, as cvtps2dq / fcvtns */
        dst[i] = (int8_t)(r >= -127.0f && r <= 127.0f ? (int32_t)r : 0);
    }
    *d = dd;
}

/* Four partial sums per row, as dot_f32_scalar. */
static void attn_scores_f16_scalar(const uint16_t *k, const float *q, float *s, int64_t rows,
                                   int64_t n, float scale) {
    for (int64_t t = 0; t < rows; t++) {
        const uint16_t *kt = k + t * n;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            s0 += tlm_f16_to_f32(kt[i]) * q[i];
            s1 += tlm_f16_to_f32(kt[i + 1]) * q[i + 1];
            s2 += tlm_f16_to_f32(kt[i + 2]) * q[i + 2];
            s3 += tlm_f16_to_f32(kt[i + 3]) * q[i + 3];
        }
        for (; i < n; i++) s0 += tlm_f16_to_f32(kt[i]) * q[i];
        s[t] = ((s0 + s1) + (s2 + s3)) * scale;
    }
}

static void attn_scores_q8_scalar(const int8_t *k, const float *d, const float *q, float *s,
                                  int64_t rows, int64_t n, float scale) {
    for (int64_t t = 0; t < rows; t++) {
        const int8_t *kt = k + t * n;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            s0 += (float)kt[i] * q[i];
            s1 += (float)kt[i + 1] * q[i + 1];
            s2 += (float)kt[i + 2] * q[i + 2];
            s3 += (float)kt[i + 3] * q[i + 3];
        }
        for (; i < n; i++) s0 += (float)kt[i] * q[i];
        s[t] = ((s0 + s1) + (s2 + s3)) * (d[t] * scale);
    }
}

static void attn_values_f16_scalar(const uint16_t *v, const float *p, float *y, int64_t rows,
                                   int64_t n) {
    for (int64_t j = 0; j < n; j++) y[j] = 0;
    for (int64_t t = 0; t < rows; t++)
        for (int64_t j = 0; j < n; j++) y[j] += p[t] * tlm_f16_to_f32(v[t * n + j]);
}

static void attn_values_q8_scalar(const int8_t *v, const float *d, const float *p, float *y,
                                  int64_t rows, int64_t n) {
    for (int64_t j = 0; j < n; j++) y[j] = 0;
    for (int64_t t = 0; t < rows; t++) {
        float w = p[t] * d[t];
        for (int64_t j = 0; j < n; j++) y[j] += w * (float)v[t * n + j];
    }
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
    .quantize_act_q8_g32 = quantize_act_q8_g32_scalar,
    .gemv_q8_g32_r16 = gemv_q8_g32_r16_scalar,
    .gemv_q4_g32_r16 = gemv_q4_g32_r16_scalar,
    .dequant_q8_g32_r16 = dequant_q8_g32_r16_scalar,
    .dequant_q4_g32_r16 = dequant_q4_g32_r16_scalar,
    .gemm_q8_g32_r16 = gemm_q8_g32_r16_scalar,
    .gemm_q4_g32_r16 = gemm_q4_g32_r16_scalar,
    .gemm_q_preferred = false, /* dequantize + sgemm is faster than this */
#define GEMV_ENTRY(name, type) [type] = tlm_gemv_gguf_##name##_scalar,
#define GEMM_ENTRY(name, type) [type] = tlm_gemm_gguf_##name##_scalar,
    .gemv_gguf = {TLM_GGUF_KERNEL_TYPES(GEMV_ENTRY)},
    .gemm_gguf = {TLM_GGUF_KERNEL_TYPES(GEMM_ENTRY)},
#undef GEMV_ENTRY
#undef GEMM_ENTRY
    .quantize_act_q8_k256 = tlm_quantize_act_q8_k256_scalar,
    .kv_store_f16 = kv_store_f16_scalar,
    .kv_store_q8 = kv_store_q8_scalar,
    .attn_scores_f16 = attn_scores_f16_scalar,
    .attn_scores_q8 = attn_scores_q8_scalar,
    .attn_values_f16 = attn_values_f16_scalar,
    .attn_values_q8 = attn_values_q8_scalar,
};
