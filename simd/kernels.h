/*
 * kernels.h — the table of compute kernels for one instruction set.
 *
 * kernels_scalar.c is the definition of correct; each ISA file fills the
 * entries it does better and takes the scalar ones for the rest. Kernels hold
 * no OpenMP: a caller hands each thread a slice (rows [r0, r1)).
 */
#ifndef TLM_KERNELS_H
#define TLM_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct tlm_kernels {
    const char *name; /* "scalar", "avx2", "avx512", "neon" */
    /* sum_i a[i]*b[i] */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* y[r] = dot(w + r*n_in, x) for r in [r0, r1); w is (rows, n_in) */
    void (*gemv_f32)(const float *w, const float *x, float *y, int64_t n_in, int64_t r0,
                     int64_t r1);
    /* y[j] = sum_r s[r] * v[r*n + j] for j in [0, n): the transposed GEMV,
     * v is (rows, n); attention's weighted sum of value rows */
    void (*gemv_t_f32)(const float *v, const float *s, float *y, int64_t rows, int64_t n);
    /* y[i] += a * x[i] */
    void (*axpy_f32)(float a, const float *x, float *y, int64_t n);
    /* y[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; y may equal x */
    void (*rmsnorm_f32)(float *y, const float *x, const float *w, int64_t n, float eps);
    /* x[i] = exp(x[i] - max(x)) / sum_j exp(x[j] - max(x)), in place; n >= 1 */
    void (*softmax_f32)(float *x, int64_t n);
    /* g[i] = silu(g[i]) * u[i] with silu(t) = t / (1 + exp(-t)) (the SwiGLU gate) */
    void (*silu_mul_f32)(float *g, const float *u, int64_t n);

    /* ---- quantized decode (formats and packed layouts: quant/qformat.h) ----
     *
     * Results are bit-identical on every table: the int8 products of a group
     * are summed exactly in int32, and each row accumulates its groups in
     * order as acc = fma((float)isum_g, d_w * d_x, acc) from acc = 0. */

    /* xq[g] (tlm_block_q8_g32_act, n/32 of them) = x quantized per group of
     * 32: d = max|x| / 127, id = 1/d (0 when d = 0), q = round-half-even(x * id),
     * sum = sum of q. n % 32 == 0; x finite (what a non-finite value gives is
     * not defined and differs between tables). */
    void (*quantize_act_q8_g32)(const float *x, void *xq, int64_t n);
    /* y[r] = sum_g d_w[r,g] * d_x[g] * sum_i qw[r,32g+i] * qx[32g+i] for r in
     * [r0, r1): w is a packed q8_g32_r16 / q4_g32_r16 matrix of n_in inputs,
     * xq the activation quantized by quantize_act_q8_g32. Rows outside the
     * slice are not written; the tiles holding r0 and r1-1 are read whole,
     * so slices for different threads should start on multiples of 16. No
     * alignment is required; w 64-byte aligned streams fastest. */
    void (*gemv_q8_g32_r16)(const void *w, const void *xq, float *y, int64_t n_in, int64_t r0,
                            int64_t r1);
    void (*gemv_q4_g32_r16)(const void *w, const void *xq, float *y, int64_t n_in, int64_t r0,
                            int64_t r1);
    /* out[(r - r0) * n_in + i] = w[r][i] in f32 for r in [r0, r1): rows of a
     * packed matrix back to row-major (prefill without the int8 GEMM below). */
    void (*dequant_q8_g32_r16)(const void *w, float *out, int64_t n_in, int64_t r0, int64_t r1);
    void (*dequant_q4_g32_r16)(const void *w, float *out, int64_t n_in, int64_t r0, int64_t r1);

    /* ---- quantized prefill: the GEMV above for m activation rows at once.
     * c[t * ldc + r] = (accumulate ? c[t * ldc + r] : 0) + y_t[r] for t in
     * [0, m) and r in [r0, r1), y_t the GEMV of activation row t (xq holds
     * m rows of n_in / 32 blocks, each from quantize_act_q8_g32): bit-identical
     * to m GEMV calls on every table. A weight tile is read once for all m
     * rows (from cache after the first), which is where the speed comes from.
     * Slices as for the GEMV (whole tiles per thread). */
    void (*gemm_q8_g32_r16)(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                            int64_t n_in, int64_t r0, int64_t r1, bool accumulate);
    void (*gemm_q4_g32_r16)(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                            int64_t n_in, int64_t r0, int64_t r1, bool accumulate);
    /* True where the int8 GEMM above is faster for prefill than dequantizing
     * the weights and multiplying in f32 (then prefill uses it). */
    bool gemm_q_preferred;

    /* ---- attention over a compact KV cache ----
     *
     * A cache row is one head vector (n = head_dim values) at one position;
     * rows of a head are contiguous, row t at t*n. Two compact forms:
     *  - f16: IEEE half, rounded to nearest even (F16C / FCVTN do the same);
     *  - q8: int8 with one f32 scale per row: d = max|x| / 127, q =
     *    round-half-even(x / d) computed as x * (1/d) (0 when d = 0), as
     *    quantize_act_q8_g32 does per group. One scale per row keeps the
     *    score a plain dot product times d: K q = d_t * (q_t . q).
     * Stores are bit-identical on every table (finite input); the products
     * are f32 sums in an order of each table's choosing. */

    /* dst[i] = f16(x[i]) for i in [0, n) */
    void (*kv_store_f16)(const float *x, uint16_t *dst, int64_t n);
    /* dst[i] = q8(x[i]), *d = the row's scale */
    void (*kv_store_q8)(const float *x, int8_t *dst, float *d, int64_t n);
    /* s[t] = scale * sum_i k[t*n + i] * q[i] for t in [0, rows): the scores
     * of one query over a head's cached keys (q8: times d[t], the row's scale) */
    void (*attn_scores_f16)(const uint16_t *k, const float *q, float *s, int64_t rows, int64_t n,
                            float scale);
    void (*attn_scores_q8)(const int8_t *k, const float *d, const float *q, float *s,
                           int64_t rows, int64_t n, float scale);
    /* y[j] = sum_t p[t] * v[t*n + j] for j in [0, n) (q8: p[t] * d[t]): the
     * attention output from the weights p over a head's cached values */
    void (*attn_values_f16)(const uint16_t *v, const float *p, float *y, int64_t rows, int64_t n);
    void (*attn_values_q8)(const int8_t *v, const float *d, const float *p, float *y, int64_t rows,
                           int64_t n);
} tlm_kernels;

extern const tlm_kernels tlm_kernels_scalar;
#if defined(TLM_HAVE_X86_KERNELS)
/* Filled from the scalar table for entries an ISA leaves NULL. */
void tlm_kernels_avx2_fill(tlm_kernels *k);
void tlm_kernels_avx512_fill(tlm_kernels *k);
#endif
#if defined(TLM_HAVE_NEON_KERNELS)
void tlm_kernels_neon_fill(tlm_kernels *k);
#endif

/* The table for this CPU, chosen once (thread-safe). TRIMLM_ISA=scalar|avx2|
 * avx512|neon forces a lower set; asking for one the CPU lacks falls back to
 * the best available and says so on stderr once. */
const tlm_kernels *tlm_kernels_best(void);
/* The table for a named ISA if this CPU supports it, else NULL (tests). */
const tlm_kernels *tlm_kernels_for(const char *isa);

#endif
