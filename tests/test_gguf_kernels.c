/*
 * test_gguf_kernels.c — the kernels that compute on GGUF blocks in place
 * (gemv_gguf / gemm_gguf, quantize_act_q8_k256 in simd/kernels.h).
 *
 *  - the scalar table, for every type, against a double-precision dot of the
 *    f32 dequantization (quant/ggml_types.c, itself checked against the
 *    gguf package by test_dequant_ref.py) of random blocks with the
 *    dequantized activation: odd row counts, several blocks per row;
 *  - every other table this CPU runs (avx2, avx512, neon) against the scalar
 *    one: bit-identical for the quantized types (the contract of kernels.h),
 *    F16 / BF16 within TOL_HALF_VS_SCALAR; GEMM against GEMV of the same
 *    table, bit-identical; slices that start and end anywhere, with canaries
 *    around them.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "f16.h"
#include "ggml_types.h"
#include "gguf_act.h"
#include "kernels.h"
#include "qformat.h"

/* Scalar kernel vs the double dot of the same dequantized operands, relative
 * to sum |w_i x_i|: the integer sums are exact, what remains is the f32
 * rounding of (float)isum (2^-24 each, isum may exceed 2^24), of the scale
 * products and of one or two fmas per block, on both sides. */
#define TOL_SCALAR_VS_DOUBLE 2e-6
/* F16 / BF16 rows: f32 sums in each table's order vs the scalar's,
 * relative to sum |w_i x_i| (n_in <= 1029 terms of 2^-24 each). */
#define TOL_HALF_VS_SCALAR 1e-6

static const uint32_t TYPES[] = {GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, GGML_TYPE_Q8_0, GGML_TYPE_Q5_0,
                                 GGML_TYPE_Q4_0, GGML_TYPE_Q5_K, GGML_TYPE_Q4_1, GGML_TYPE_Q5_1,
                                 GGML_TYPE_Q3_K, GGML_TYPE_Q2_K, GGML_TYPE_F16, GGML_TYPE_BF16};
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])
static const int64_t ROWS[] = {1, 5, 19, 37};
#define N_ROWS (sizeof ROWS / sizeof ROWS[0])

/* Weights and activations are handed to the kernels this many bytes past a
 * malloc'd (16-byte aligned) address: GGUF places tensors on 32-byte
 * boundaries, but the kernels promise to need only the blocks' own 2-byte
 * (weights) / 4-byte (activation) alignment. */
#define W_SHIFT 2
#define X_SHIFT 4
static void free_w(uint8_t *w) { free(w - W_SHIFT); }
static void free_x(void *xq) { free((uint8_t *)xq - X_SHIFT); }

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static uint64_t rand_u64(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static double rand_unit(void) { return (double)(rand_u64() >> 11) * 0x1.0p-53; }

typedef struct table {
    const tlm_kernels *k;
    const char *name;
} table;
static table g_tables[4];
static int g_n_tables;

static int setup_tables(void **state) {
    (void)state;
    static const char *isas[] = {"avx2", "avx512", "neon"};
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        const tlm_kernels *k = tlm_kernels_for(isas[i]);
        if (k) g_tables[g_n_tables++] = (table){k, isas[i]};
    }
    printf("GGUF-block kernels tested against scalar:");
    for (int t = 0; t < g_n_tables; t++) printf(" [%s]", g_tables[t].name);
    printf("\n");
    return 0;
}

/* Input lengths per type: one block, several, and more than 2 KiB of one
 * row's worth (odd block counts throughout). */
static int n_in_list(uint32_t type, int64_t out[4]) {
    int64_t bs = ggml_block_size(type);
    /* the last: rows of >= 4 KiB in every type, which the x86 GEMVs read
     * in another order (simd/gguf_x86.h, plan_passes) */
    if (bs == 256) {
        out[0] = 256, out[1] = 3 * 256, out[2] = 7 * 256, out[3] = 49 * 256;
        return 4;
    }
    if (bs == 32) {
        out[0] = 32, out[1] = 96, out[2] = 17 * 32, out[3] = 245 * 32;
        return 4;
    }
    out[0] = 8, out[1] = 37, out[2] = 576, out[3] = 2053;
    return 4;
}

/* An f16 of magnitude 2^-12 .. 2^-4 and random sign. */
static uint16_t rand_scale_f16(void) {
    double v = ldexp(1.0 + rand_unit(), -12 + (int)(rand_unit() * 8));
    return tlm_f32_to_f16((float)(rand_unit() < 0.5 ? -v : v));
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* rows x n_in weights of `type` as the GGUF file holds them: random quant
 * bytes (every bit pattern is a valid quant) with finite f16 scales. */
static uint8_t *rand_weights(uint32_t type, int64_t rows, int64_t n_in, size_t *row_bytes) {
    uint64_t rb;
    assert_true(ggml_row_bytes(type, (uint64_t)n_in, &rb));
    *row_bytes = (size_t)rb;
    size_t bytes = (size_t)rb * (size_t)rows;
    /* 2 bytes off any wider alignment: the kernels may not assume more */
    uint8_t *w = (uint8_t *)malloc(bytes + 64) + W_SHIFT;
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rand_u64();
    size_t bb = ggml_block_bytes(type);
    for (size_t off = 0; off < bytes; off += bb) {
        uint8_t *b = w + off;
        switch (type) {
        case GGML_TYPE_F16: put16(b, tlm_f32_to_f16((float)(rand_unit() * 4 - 2))); break;
        case GGML_TYPE_BF16: put16(b, tlm_f32_to_bf16((float)(rand_unit() * 4 - 2))); break;
        case GGML_TYPE_Q4_1:
        case GGML_TYPE_Q5_1:
        case GGML_TYPE_Q4_K:
        case GGML_TYPE_Q5_K:
            put16(b, rand_scale_f16());
            put16(b + 2, rand_scale_f16());
            break;
        case GGML_TYPE_Q2_K:
            put16(b + 80, rand_scale_f16());
            put16(b + 82, rand_scale_f16());
            break;
        case GGML_TYPE_Q3_K: put16(b + 108, rand_scale_f16()); break;
        case GGML_TYPE_Q6_K: put16(b + 208, rand_scale_f16()); break;
        default: put16(b, rand_scale_f16()); break; /* Q4_0, Q5_0, Q8_0 */
        }
    }
    return w;
}

/* m rows of n_in activations: Gaussian-like with a per-row magnitude, an
 * outlier now and then, and an all-zero 256-run in long rows. */
static float *rand_act(int64_t m, int64_t n_in) {
    float *x = malloc((size_t)(m * n_in) * sizeof(float));
    for (int64_t t = 0; t < m; t++) {
        double mag = pow(10.0, -1.0 + 2.0 * rand_unit());
        for (int64_t i = 0; i < n_in; i++) {
            double u = rand_unit() + rand_unit() + rand_unit() + rand_unit() - 2.0;
            x[t * n_in + i] = (float)(u * mag);
        }
        x[t * n_in + (int64_t)(rand_unit() * (double)n_in)] *= 30.0f;
        if (n_in >= 1024) memset(x + t * n_in + 512, 0, 256 * sizeof(float));
    }
    return x;
}

/* The activation in the form the type's kernels take (m rows), from the
 * given table's quantizer; NULL-free for F16/BF16 (a copy of x). */
static void *make_act(const tlm_kernels *k, uint32_t type, const float *x, int64_t m, int64_t n_in,
                      size_t *row_bytes) {
    tlm_gguf_act kind = tlm_gguf_act_kind(type);
    *row_bytes = tlm_gguf_act_row_bytes(kind, n_in);
    assert_true(*row_bytes > 0);
    uint8_t *xq = (uint8_t *)malloc(*row_bytes * (size_t)m + 64) + X_SHIFT;
    for (int64_t t = 0; t < m; t++) {
        uint8_t *dst = xq + (size_t)t * *row_bytes;
        if (kind == TLM_GGUF_ACT_F32) memcpy(dst, x + t * n_in, (size_t)n_in * sizeof(float));
        else if (kind == TLM_GGUF_ACT_Q8_G32) k->quantize_act_q8_g32(x + t * n_in, dst, n_in);
        else k->quantize_act_q8_k256(x + t * n_in, dst, n_in);
    }
    return xq;
}

/* One activation row as the kernels see it, back in f32 (d * q). */
static void act_values(uint32_t type, const void *xq, int64_t n_in, double *out) {
    tlm_gguf_act kind = tlm_gguf_act_kind(type);
    if (kind == TLM_GGUF_ACT_F32) {
        for (int64_t i = 0; i < n_in; i++) out[i] = ((const float *)xq)[i];
    } else if (kind == TLM_GGUF_ACT_Q8_G32) {
        const tlm_block_q8_g32_act *b = xq;
        for (int64_t i = 0; i < n_in; i++) out[i] = (double)b[i / 32].d * b[i / 32].qs[i % 32];
    } else {
        const tlm_block_q8_k256_act *b = xq;
        for (int64_t i = 0; i < n_in; i++) out[i] = (double)b[i / 256].d * b[i / 256].qs[i % 256];
    }
}

/* sum_i |w_i x_i| of one row: the scale of F16 / BF16 rounding differences. */
static double row_magnitude(uint32_t type, const uint8_t *row, const float *x, int64_t n_in) {
    float *wf = malloc((size_t)n_in * sizeof(float));
    ggml_dequantize_row(type, row, wf, n_in);
    double mag = 0;
    for (int64_t i = 0; i < n_in; i++) mag += fabs((double)wf[i] * x[i]);
    free(wf);
    return mag;
}

/* ---------------------------------------------------------------- tests */

static void test_quantize_act_k256(void **state) {
    (void)state;
    static const int64_t ns[] = {256, 768, 1792};
    for (size_t ni = 0; ni < 3; ni++) {
        int64_t n = ns[ni];
        float *x = rand_act(1, n);
        size_t bytes = (size_t)(n / 256) * sizeof(tlm_block_q8_k256_act);
        tlm_block_q8_k256_act *ref = malloc(bytes), *got = malloc(bytes);
        tlm_kernels_scalar.quantize_act_q8_k256(x, ref, n);
        /* the definition: |x - d q| <= d/2, |q| <= 127, bsum16 = sums */
        for (int64_t b = 0; b < n / 256; b++) {
            float amax = 0;
            for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(x[b * 256 + j]));
            assert_true(ref[b].d == amax / 127.0f);
            for (int i = 0; i < 16; i++) {
                int32_t s = 0;
                for (int j = 16 * i; j < 16 * i + 16; j++) {
                    s += ref[b].qs[j];
                    assert_true(ref[b].qs[j] >= -127 && ref[b].qs[j] <= 127);
                    assert_true(fabs((double)x[b * 256 + j] - (double)ref[b].d * ref[b].qs[j]) <=
                                0.5001 * ref[b].d + 1e-30);
                }
                assert_int_equal(s, ref[b].bsum16[i]);
            }
        }
        for (int t = 0; t < g_n_tables; t++) {
            memset(got, 0xa5, bytes);
            g_tables[t].k->quantize_act_q8_k256(x, got, n);
            if (memcmp(got, ref, bytes)) {
                print_error("%s quantize_act_q8_k256 n=%lld differs from scalar\n",
                            g_tables[t].name, (long long)n);
                fail();
            }
        }
        free(x);
        free(ref);
        free(got);
    }
}

static void test_scalar_against_dequantized(void **state) {
    (void)state;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        uint32_t type = TYPES[ti];
        int64_t n_ins[4];
        int nn = n_in_list(type, n_ins);
        for (int ni = 0; ni < nn; ni++) {
            int64_t n_in = n_ins[ni], rows = 19;
            size_t wrb, xrb;
            uint8_t *w = rand_weights(type, rows, n_in, &wrb);
            float *x = rand_act(1, n_in);
            void *xq = make_act(&tlm_kernels_scalar, type, x, 1, n_in, &xrb);
            double *xv = malloc((size_t)n_in * sizeof(double));
            float *wf = malloc((size_t)n_in * sizeof(float)), *y = malloc((size_t)(rows + 2) * 4);
            act_values(type, xq, n_in, xv);
            for (int64_t i = 0; i < rows + 2; i++) y[i] = -7.0f;
            tlm_kernels_scalar.gemv_gguf[type](w, xq, y + 1, n_in, 0, rows);
            assert_true(y[0] == -7.0f && y[rows + 1] == -7.0f);
            double worst = 0;
            for (int64_t r = 0; r < rows; r++) {
                ggml_dequantize_row(type, w + (size_t)r * wrb, wf, n_in);
                double ref = 0, mag = 0;
                for (int64_t i = 0; i < n_in; i++) {
                    ref += (double)wf[i] * xv[i];
                    mag += fabs((double)wf[i] * xv[i]);
                }
                double err = fabs((double)y[1 + r] - ref) / (mag + 1e-30);
                if (err > worst) worst = err;
                if (!(err <= TOL_SCALAR_VS_DOUBLE)) {
                    print_error("%s n_in=%lld row %lld: scalar %.9g, double %.9g (rel. err %.3g)\n",
                                ggml_type_name(type), (long long)n_in, (long long)r,
                                (double)y[1 + r], ref, err);
                    fail();
                }
            }
            printf("ok %s n_in=%lld: worst rel. error %.2e\n", ggml_type_name(type),
                   (long long)n_in, worst);
            free_w(w), free(x), free_x(xq), free(xv), free(wf), free(y);
        }
    }
}

/* Every table's GEMV on slices [r0, r1) and its GEMM (accumulating and not)
 * against the scalar GEMV of the whole matrix. */
static void test_tables_against_scalar(void **state) {
    (void)state;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        uint32_t type = TYPES[ti];
        bool exact = tlm_gguf_act_kind(type) != TLM_GGUF_ACT_F32;
        int64_t n_ins[4];
        int nn = n_in_list(type, n_ins);
        for (int ni = 0; ni < nn; ni++)
            for (size_t ri = 0; ri < N_ROWS; ri++) {
                int64_t n_in = n_ins[ni], rows = ROWS[ri], m = ri == 3 ? 70 : 3;
                size_t wrb, xrb;
                uint8_t *w = rand_weights(type, rows, n_in, &wrb);
                float *x = rand_act(m, n_in);
                /* the scalar quantizer's bytes: the tables' equal them (above) */
                uint8_t *xq = make_act(&tlm_kernels_scalar, type, x, m, n_in, &xrb);
                float *ref = malloc((size_t)(m * rows) * 4), *y = malloc((size_t)(rows + 2) * 4);
                for (int64_t t = 0; t < m; t++)
                    tlm_kernels_scalar.gemv_gguf[type](w, xq + (size_t)t * xrb, ref + t * rows,
                                                        n_in, 0, rows);
                /* scalar GEMM == scalar GEMV, bit for bit */
                int n_tab = g_n_tables + 1;
                for (int tab = 0; tab < n_tab; tab++) {
                    const tlm_kernels *k = tab < g_n_tables ? g_tables[tab].k : &tlm_kernels_scalar;
                    const char *kn = tab < g_n_tables ? g_tables[tab].name : "scalar";
                    bool strict = exact || tab == g_n_tables;
                    /* GEMV on the slices [0,rows), [1,rows-1) and [rows/2, rows) */
                    int64_t sl[3][2] = {{0, rows}, {1, rows - 1}, {rows / 2, rows}};
                    for (int s = 0; s < 3; s++) {
                        int64_t r0 = sl[s][0], r1 = sl[s][1];
                        if (r1 <= r0) continue;
                        for (int64_t t = 0; t < (m < 4 ? m : 4); t++) {
                            for (int64_t i = 0; i < rows + 2; i++) y[i] = -7.0f;
                            k->gemv_gguf[type](w, xq + (size_t)t * xrb, y + 1, n_in, r0, r1);
                            for (int64_t r = -1; r <= rows; r++) {
                                float got = y[1 + r];
                                bool inside = r >= r0 && r < r1;
                                float want = inside ? ref[t * rows + r] : -7.0f;
                                bool ok = strict || !inside
                                              ? memcmp(&got, &want, 4) == 0
                                              : fabs((double)got - want) <=
                                                    TOL_HALF_VS_SCALAR *
                                                        row_magnitude(type, w + (size_t)r * wrb, x + t * n_in, n_in);
                                if (!ok) {
                                    print_error("%s gemv %s n_in=%lld rows=%lld slice [%lld,%lld) token %lld "
                                                "row %lld: %.9g, scalar %.9g\n",
                                                kn, ggml_type_name(type), (long long)n_in,
                                                (long long)rows, (long long)r0, (long long)r1,
                                                (long long)t, (long long)r, (double)got, (double)want);
                                    fail();
                                }
                            }
                        }
                    }
                    /* GEMM into a matrix with ldc > rows and canary columns,
                     * slice [1, rows) or [0, 1); then accumulating on top */
                    int64_t ldc = rows + 3, r0 = rows > 1 ? 1 : 0, r1 = rows;
                    float *c = malloc((size_t)(m * ldc) * 4);
                    for (int pass = 0; pass < 2; pass++) {
                        if (pass == 0)
                            for (int64_t i = 0; i < m * ldc; i++) c[i] = -7.0f;
                        k->gemm_gguf[type](w, xq, c, ldc, m, n_in, r0, r1, pass == 1);
                        for (int64_t t = 0; t < m; t++)
                            for (int64_t r = 0; r < ldc; r++) {
                                float got = c[t * ldc + r];
                                bool inside = r >= r0 && r < r1;
                                float want = -7.0f;
                                if (inside) {
                                    /* the GEMM's contract: bit-identical to its
                                     * own table's GEMV (the ref for scalar) */
                                    float g1 = ref[t * rows + r];
                                    if (!strict) {
                                        float yy[1];
                                        k->gemv_gguf[type](w, xq + (size_t)t * xrb, yy - r, n_in, r, r + 1);
                                        g1 = yy[0];
                                    }
                                    want = pass == 0 ? g1 : g1 + g1;
                                }
                                if (memcmp(&got, &want, 4)) {
                                    print_error("%s gemm %s n_in=%lld rows=%lld m=%lld pass %d token %lld "
                                                "row %lld: %.9g, expected %.9g\n",
                                                kn, ggml_type_name(type), (long long)n_in,
                                                (long long)rows, (long long)m, pass, (long long)t,
                                                (long long)r, (double)got, (double)want);
                                    fail();
                                }
                            }
                    }
                    free(c);
                }
                free_w(w), free(x), free_x(xq), free(ref), free(y);
            }
        printf("ok %s: every table agrees with scalar\n", ggml_type_name(type));
    }
}

static void test_act_kinds(void **state) {
    (void)state;
    assert_int_equal(tlm_gguf_act_kind(GGML_TYPE_Q4_K), TLM_GGUF_ACT_Q8_K256);
    assert_int_equal(tlm_gguf_act_kind(GGML_TYPE_Q8_0), TLM_GGUF_ACT_Q8_G32);
    assert_int_equal(tlm_gguf_act_kind(GGML_TYPE_BF16), TLM_GGUF_ACT_F32);
    assert_int_equal(tlm_gguf_act_kind(GGML_TYPE_F32), TLM_GGUF_ACT_NONE);
    assert_int_equal(tlm_gguf_act_kind(1000), TLM_GGUF_ACT_NONE);
    assert_int_equal(tlm_gguf_act_row_bytes(TLM_GGUF_ACT_Q8_K256, 300), 0);
    assert_int_equal(tlm_gguf_act_row_bytes(TLM_GGUF_ACT_Q8_K256, 512), 640);
    assert_int_equal(tlm_gguf_act_row_bytes(TLM_GGUF_ACT_Q8_G32, 64), 80);
    /* every type with an activation kind has kernels in every table */
    const tlm_kernels *all[4] = {&tlm_kernels_scalar};
    for (int t = 0; t < g_n_tables; t++) all[t + 1] = g_tables[t].k;
    for (int t = 0; t <= g_n_tables; t++)
        for (uint32_t type = 0; type < TLM_GGUF_TYPES; type++) {
            bool has = tlm_gguf_act_kind(type) != TLM_GGUF_ACT_NONE;
            assert_int_equal(all[t]->gemv_gguf[type] != NULL, has);
            assert_int_equal(all[t]->gemm_gguf[type] != NULL, has);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_act_kinds),
        cmocka_unit_test(test_quantize_act_k256),
        cmocka_unit_test(test_scalar_against_dequantized),
        cmocka_unit_test(test_tables_against_scalar),
    };
    return cmocka_run_group_tests(tests, setup_tables, NULL);
}
