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
#include <stddef.h>
#include <stdint.h>

/* GGUF-block kernels (the gemv_gguf / gemm_gguf entries below). */
#define TLM_GGUF_TYPES 31 /* GGML type numbers 0..30 (BF16 = 30) */
typedef void (*tlm_gguf_gemv_fn)(const void *w, const void *xq, float *y, int64_t n_in,
                                 int64_t r0, int64_t r1);
typedef void (*tlm_gguf_gemm_fn)(const void *w, const void *xq, float *c, int64_t ldc, int64_t m,
                                 int64_t n_in, int64_t r0, int64_t r1, bool accumulate);

/* The activation a GGUF type's kernels take (see gemv_gguf below). */
typedef enum tlm_gguf_act {
    TLM_GGUF_ACT_NONE = 0, /* no kernels for this type */
    TLM_GGUF_ACT_F32,      /* F16, BF16: the f32 activation, n_in floats a row */
    TLM_GGUF_ACT_Q8_G32,   /* Q4_0 .. Q8_0: n_in / 32 tlm_block_q8_g32_act a row */
    TLM_GGUF_ACT_Q8_K256,  /* Q2_K .. Q6_K: n_in / 256 tlm_block_q8_k256_act a row */
} tlm_gguf_act;
tlm_gguf_act tlm_gguf_act_kind(uint32_t type);
/* Bytes of one activation row of n_in values in that form (0: NONE, or n_in
 * not a multiple of its block). */
size_t tlm_gguf_act_row_bytes(tlm_gguf_act kind, int64_t n_in);

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

    /* ---- GGUF blocks used in place (quant/ggml_blocks.h), indexed by GGML
     * type number (quant/ggml_types.h); NULL for a type without kernels.
     * Types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (32-value blocks), Q2_K, Q3_K,
     * Q4_K, Q5_K, Q6_K (256-value super-blocks), F16, BF16.
     *
     * w is the matrix as the GGUF file holds it: row r at w + r * row_bytes,
     * row_bytes = n_in / block_size * block_bytes (n_in a multiple of the
     * block size: 32, or 256 for the K-quants); w needs 2-byte alignment (a
     * GGUF file aligns its tensors to 32 bytes), xq 4-byte alignment.
     * xq is the activation: for the 32-value types n_in / 32
     * tlm_block_q8_g32_act from quantize_act_q8_g32; for the K-quants
     * n_in / 256 tlm_block_q8_k256_act (quant/gguf_act.h) from
     * quantize_act_q8_k256; for F16 / BF16 the f32 activation itself.
     * tlm_gguf_act_kind() says which.
     *
     * GEMV: y[r] = row r . x for r in [r0, r1); rows outside are not written,
     * slices may start and end anywhere.
     * GEMM: c[t * ldc + r] = (accumulate ? c[t * ldc + r] : 0) + y_t[r] for
     * t in [0, m), r in [r0, r1), y_t the GEMV of activation row t (xq holds
     * m rows back to back: n_in / 32 or n_in / 256 blocks, or n_in floats);
     * each weight block is read once for all m rows.
     *
     * Quantized types are bit-identical on every table, GEMM to GEMV: each
     * block's int8 x weight-quant products are summed exactly in int32 with
     * the block's integer sub-scales, and each row accumulates its blocks in
     * order from acc = 0 (d, dmin, m: the block's f16 values as f32; dx: the
     * activation block's d):
     *   Q4_0, Q5_0, Q8_0: acc = fma(isum, d*dx, acc), isum = sum (q - z) qx
     *                     (z = 8, 16, 0);
     *   Q4_1, Q5_1:       acc = fma(isum, d*dx, acc); acc = fma(sum_qx, m*dx, acc);
     *   Q4_K, Q5_K, Q2_K: acc = fma(sumi, d*dx, acc); acc = fma(-summ, dmin*dx, acc),
     *                     sumi = sum over sub-blocks sc_j * sum q qx,
     *                     summ = sum over sub-blocks m_j * sum qx;
     *   Q6_K, Q3_K:       acc = fma(sumi, d*dx, acc), sumi = sum sc_j * sum q qx
     *                     with q centred (q6 - 32; Q3_K's signed q3) and sc_j
     *                     signed (Q3_K: scale6 - 32).
     * F16 / BF16 rows are f32 products summed in an order of each table's
     * choosing (within a few ulp of sum |w x| of the scalar table). */
    tlm_gguf_gemv_fn gemv_gguf[TLM_GGUF_TYPES];
    tlm_gguf_gemm_fn gemm_gguf[TLM_GGUF_TYPES];
    /* xq[b] (tlm_block_q8_k256_act, n/256 of them) = x quantized per block
     * of 256 exactly as quantize_act_q8_g32 quantizes a group of 32 (d = max|x|
     * / 127, q = round-half-even(x * (1/d)), 0 when d = 0), plus the sums of
     * each 16 and each 32 quants. n % 256 == 0; x finite. */
    void (*quantize_act_q8_k256)(const float *x, void *xq, int64_t n);

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
