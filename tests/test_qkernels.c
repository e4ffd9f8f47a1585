/*
 * test_qkernels.c — the quantized decode kernels of every kernel table this
 * CPU can run (avx2, avx512, neon) against the scalar table, on odd shapes:
 * inputs of 1 to 65 groups, row counts that are not multiples of the 16-row
 * tile, and slices that start and end inside a tile.
 *
 * The kernels' contract (simd/kernels.h) is bit-identical output on every
 * table, so the comparison is exact: activation bytes, int32 group sums
 * (through the f32 results they determine) and f32 outputs. The scalar table
 * itself is checked against a double-precision dot of the dequantized
 * weights and activations, and the quantization error against f32.
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
#include "kernels.h"
#include "qformat.h"

/* Scalar GEMV vs a double dot of the same dequantized operands: the int32
 * group sums are exact, so what remains is f32 rounding of the scale product
 * and of one fma per group, relative to sum |w_i x_i|. */
#define TOL_SCALAR_VS_DOUBLE 1e-6
/* Quantized GEMV vs the f32 GEMV on Gaussian-like data: cosine similarity of
 * the output vectors (int8 loses ~0.4% per operand, int4 ~ 8% per weight). */
#define MIN_COSINE_Q8 0.9995
#define MIN_COSINE_Q4 0.99

static const int64_t N_INS[] = {32, 64, 576, 1536, 2048 + 32};
#define N_N_INS (sizeof N_INS / sizeof N_INS[0])
static const tlm_qtype QTYPES[] = {TLM_Q8_G32, TLM_Q4_G32};

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double rand_unit(void) { /* [0, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * 0x1.0p-53;
}
/* Roughly Gaussian (sum of 4 uniforms), with the per-group magnitude varied
 * over 4 decades, an all-zero group and an outlier now and then. */
static void fill_weights(float *w, int64_t n) {
    for (int64_t g = 0; g < n / 32; g++) {
        double mag = pow(10.0, -2.0 + 4.0 * rand_unit());
        int kind = (int)(rand_unit() * 16);
        for (int j = 0; j < 32; j++) {
            double u = rand_unit() + rand_unit() + rand_unit() + rand_unit() - 2.0;
            w[g * 32 + j] = kind == 0 ? 0.0f : (float)(u * mag);
        }
        if (kind == 1) w[g * 32 + (int)(rand_unit() * 32)] *= 40.0f;
    }
}

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
    printf("quantized kernels tested against scalar:");
    for (int t = 0; t < g_n_tables; t++) printf(" [%s]", g_tables[t].name);
    printf("\n");
    return 0;
}

static float *rand_matrix(int64_t rows, int64_t n_in) {
    float *w = malloc((size_t)(rows * n_in) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) fill_weights(w + r * n_in, n_in);
    return w;
}

static void *packed_matrix(tlm_qtype t, const float *w, int64_t rows, int64_t n_in) {
    size_t bytes = tlm_qpacked_bytes(t, rows, n_in);
    assert_true(bytes > 0);
    void *p = malloc(bytes);
    assert_true(tlm_qquantize_pack(t, w, rows, n_in, p));
    return p;
}

/* ---------------------------------------------------------------- tests */

static void test_quantize_act_matches_scalar(void **state) {
    (void)state;
    for (size_t ni = 0; ni < N_N_INS; ni++) {
        int64_t n = N_INS[ni];
        float *x = rand_matrix(1, n);
        size_t bytes = (size_t)(n / 32) * sizeof(tlm_block_q8_g32_act);
        void *ref = malloc(bytes), *got = malloc(bytes);
        tlm_kernels_scalar.quantize_act_q8_g32(x, ref, n);
        for (int t = 0; t < g_n_tables; t++) {
            memset(got, 0xa5, bytes);
            g_tables[t].k->quantize_act_q8_g32(x, got, n);
            if (memcmp(got, ref, bytes)) {
                print_error("%s quantize_act_q8_g32 n=%lld differs from scalar\n", g_tables[t].name,
                            (long long)n);
                fail();
            }
        }
        /* the scalar definition: |x - d q| <= d/2, sum = sum q */
        const tlm_block_q8_g32_act *b = ref;
        for (int64_t g = 0; g < n / 32; g++) {
            int32_t s = 0;
            for (int j = 0; j < 32; j++) {
                s += b[g].qs[j];
                assert_true(fabs((double)x[g * 32 + j] - (double)b[g].d * b[g].qs[j]) <=
                            0.5001 * b[g].d + 1e-30);
                assert_true(b[g].qs[j] >= -127 && b[g].qs[j] <= 127);
            }
            assert_int_equal(s, b[g].sum);
        }
        free(x);
        free(ref);
        free(got);
    }
}

/* y must hold rows+2 floats; rows outside [r0, r1) must keep their canary. */
static void run_gemv(const tlm_kernels *k, tlm_qtype t, const void *w, const void *xq, float *y,
                     int64_t n_in, int64_t rows, int64_t r0, int64_t r1) {
    for (int64_t r = 0; r < rows + 2; r++) y[r] = -7.0f;
    if (t == TLM_Q8_G32)
        k->gemv_q8_g32_r16(w, xq, y, n_in, r0, r1);
    else
        k->gemv_q4_g32_r16(w, xq, y, n_in, r0, r1);
    for (int64_t r = 0; r < rows + 2; r++)
        if (r < r0 || r >= r1) assert_true(y[r] == -7.0f);
}

static void test_gemv_matches_scalar(void **state) {
    (void)state;
    for (size_t ti = 0; ti < 2; ti++) {
        tlm_qtype qt = QTYPES[ti];
        for (size_t ni = 0; ni < N_N_INS; ni++) {
            int64_t n_in = N_INS[ni];
            float *x = rand_matrix(1, n_in);
            void *xq = malloc((size_t)(n_in / 32) * sizeof(tlm_block_q8_g32_act));
            tlm_kernels_scalar.quantize_act_q8_g32(x, xq, n_in);
            for (int64_t rows = 1; rows <= 35; rows += (rows < 17 ? 1 : 9)) {
                float *w = rand_matrix(rows, n_in);
                void *p = packed_matrix(qt, w, rows, n_in);
                float *y = malloc((size_t)(rows + 2) * 4), *y_ref = malloc((size_t)(rows + 2) * 4);
                /* whole matrix, a slice starting inside the first tile, one
                 * starting on the second tile, and one ending inside a tile */
                int64_t slices[4][2] = {{0, rows}, {rows > 1 ? 1 : 0, rows},
                                        {rows > 16 ? 16 : 0, rows}, {0, rows > 3 ? rows - 3 : rows}};
                for (int s = 0; s < 4; s++) {
                    int64_t r0 = slices[s][0], r1 = slices[s][1];
                    run_gemv(&tlm_kernels_scalar, qt, p, xq, y_ref, n_in, rows, r0, r1);
                    for (int t = 0; t < g_n_tables; t++) {
                        run_gemv(g_tables[t].k, qt, p, xq, y, n_in, rows, r0, r1);
                        for (int64_t r = r0; r < r1; r++)
                            if (memcmp(&y[r], &y_ref[r], 4)) {
                                print_error("%s gemv %s n_in=%lld rows=%lld slice [%lld,%lld) row "
                                            "%lld: %.9g vs scalar %.9g\n",
                                            g_tables[t].name, tlm_qtype_name(qt), (long long)n_in,
                                            (long long)rows, (long long)r0, (long long)r1,
                                            (long long)r, y[r], y_ref[r]);
                                fail();
                            }
                    }
                }
                free(w);
                free(p);
                free(y);
                free(y_ref);
            }
            free(x);
            free(xq);
        }
    }
}

/* The GEMM of every table (scalar included) against m calls of the scalar
 * GEMV, bit for bit: token counts around the 4-row block, odd row counts,
 * slices inside tiles, overwrite and accumulate, a row stride wider than
 * the matrix (cells outside the slice keep their canary). */
static void test_gemm_matches_gemv(void **state) {
    (void)state;
    static const int64_t MS[] = {1, 3, 4, 5, 9};
    static const int64_t N_INS_GEMM[] = {32, 96, 576};
    for (size_t ti = 0; ti < 2; ti++) {
        tlm_qtype qt = QTYPES[ti];
        for (size_t ni = 0; ni < sizeof N_INS_GEMM / sizeof N_INS_GEMM[0]; ni++) {
            int64_t n_in = N_INS_GEMM[ni], ng = n_in / 32;
            for (size_t mi = 0; mi < sizeof MS / sizeof MS[0]; mi++) {
                int64_t m = MS[mi];
                float *x = rand_matrix(m, n_in);
                tlm_block_q8_g32_act *xq = malloc((size_t)(m * ng) * sizeof *xq);
                for (int64_t i = 0; i < m; i++)
                    tlm_kernels_scalar.quantize_act_q8_g32(x + i * n_in, xq + i * ng, n_in);
                for (int64_t rows = 1; rows <= 35; rows += 17) {
                    float *w = rand_matrix(rows, n_in);
                    void *p = packed_matrix(qt, w, rows, n_in);
                    int64_t ldc = rows + 3;
                    float *c = malloc((size_t)(m * ldc) * 4), *want = malloc((size_t)(m * ldc) * 4);
                    float *y = malloc((size_t)(rows + 2) * 4);
                    int64_t slices[3][2] = {{0, rows}, {rows > 1 ? 1 : 0, rows},
                                            {rows > 16 ? 16 : 0, rows > 3 ? rows - 3 : rows}};
                    for (int s = 0; s < 3; s++) {
                        int64_t r0 = slices[s][0], r1 = slices[s][1];
                        for (int accumulate = 0; accumulate < 2; accumulate++) {
                            for (int64_t i = 0; i < m * ldc; i++) want[i] = 0.25f * (float)(i % 7) - 1.0f;
                            for (int64_t i = 0; i < m; i++) {
                                run_gemv(&tlm_kernels_scalar, qt, p, xq + i * ng, y, n_in, rows, r0, r1);
                                for (int64_t r = r0; r < r1; r++)
                                    want[i * ldc + r] = (accumulate ? want[i * ldc + r] : 0.0f) + y[r];
                            }
                            for (int tb = -1; tb < g_n_tables; tb++) {
                                const tlm_kernels *k = tb < 0 ? &tlm_kernels_scalar : g_tables[tb].k;
                                for (int64_t i = 0; i < m * ldc; i++) c[i] = 0.25f * (float)(i % 7) - 1.0f;
                                if (qt == TLM_Q8_G32)
                                    k->gemm_q8_g32_r16(p, xq, c, ldc, m, n_in, r0, r1, accumulate);
                                else
                                    k->gemm_q4_g32_r16(p, xq, c, ldc, m, n_in, r0, r1, accumulate);
                                if (memcmp(c, want, (size_t)(m * ldc) * 4)) {
                                    print_error("%s gemm %s n_in=%lld m=%lld rows=%lld slice "
                                                "[%lld,%lld) accumulate=%d differs from the GEMV\n",
                                                tb < 0 ? "scalar" : g_tables[tb].name,
                                                tlm_qtype_name(qt), (long long)n_in, (long long)m,
                                                (long long)rows, (long long)r0, (long long)r1,
                                                accumulate);
                                    fail();
                                }
                            }
                        }
                    }
                    free(w);
                    free(p);
                    free(c);
                    free(want);
                    free(y);
                }
                free(x);
                free(xq);
            }
        }
    }
}

static void test_dequant_matches_scalar(void **state) {
    (void)state;
    for (size_t ti = 0; ti < 2; ti++) {
        tlm_qtype qt = QTYPES[ti];
        for (size_t ni = 0; ni < N_N_INS; ni++) {
            int64_t n_in = N_INS[ni], rows = 19;
            float *w = rand_matrix(rows, n_in);
            void *p = packed_matrix(qt, w, rows, n_in);
            float *ref = malloc((size_t)(rows * n_in) * 4), *got = malloc((size_t)(rows * n_in) * 4);
            /* rows [3, 19): starts inside a tile, crosses into the next */
            void (*deq_ref)(const void *, float *, int64_t, int64_t, int64_t) =
                qt == TLM_Q8_G32 ? tlm_kernels_scalar.dequant_q8_g32_r16
                                 : tlm_kernels_scalar.dequant_q4_g32_r16;
            deq_ref(p, ref, n_in, 3, rows);
            /* the definition: each row's blocks through the row dequantizer */
            float *row = malloc((size_t)n_in * 4);
            for (int64_t r = 3; r < rows; r++) {
                if (qt == TLM_Q8_G32) {
                    tlm_block_q8_g32 *b = malloc((size_t)(n_in / 32) * sizeof *b);
                    tlm_q8_g32_quantize_row(w + r * n_in, b, n_in);
                    tlm_q8_g32_dequantize_row(b, row, n_in);
                    free(b);
                } else {
                    tlm_block_q4_g32 *b = malloc((size_t)(n_in / 32) * sizeof *b);
                    tlm_q4_g32_quantize_row(w + r * n_in, b, n_in);
                    tlm_q4_g32_dequantize_row(b, row, n_in);
                    free(b);
                }
                assert_memory_equal(row, ref + (r - 3) * n_in, (size_t)n_in * 4);
            }
            free(row);
            for (int t = 0; t < g_n_tables; t++) {
                const tlm_kernels *k = g_tables[t].k;
                (qt == TLM_Q8_G32 ? k->dequant_q8_g32_r16 : k->dequant_q4_g32_r16)(p, got, n_in, 3,
                                                                                    rows);
                assert_memory_equal(got, ref, (size_t)((rows - 3) * n_in) * 4);
                /* rows [0, 17): from a tile start, ending just inside the next */
                deq_ref(p, ref, n_in, 0, 17);
                (qt == TLM_Q8_G32 ? k->dequant_q8_g32_r16 : k->dequant_q4_g32_r16)(p, got, n_in, 0,
                                                                                    17);
                assert_memory_equal(got, ref, (size_t)(17 * n_in) * 4);
                deq_ref(p, ref, n_in, 3, rows); /* back to what the next table compares */
            }
            free(w);
            free(p);
            free(ref);
            free(got);
        }
    }
}

/* The scalar reference against double arithmetic on the same dequantized
 * operands, and the quantization error against the f32 GEMV. */
static void test_scalar_gemv_definition(void **state) {
    (void)state;
    for (size_t ti = 0; ti < 2; ti++) {
        tlm_qtype qt = QTYPES[ti];
        for (size_t ni = 0; ni < N_N_INS; ni++) {
            int64_t n_in = N_INS[ni], rows = 40;
            float *w = rand_matrix(rows, n_in), *x = rand_matrix(1, n_in);
            /* smooth weights for the cosine check: one magnitude per matrix */
            float *ws = malloc((size_t)(rows * n_in) * 4);
            for (int64_t i = 0; i < rows * n_in; i++)
                ws[i] = (float)(rand_unit() + rand_unit() + rand_unit() - 1.5);
            void *p = packed_matrix(qt, w, rows, n_in), *ps = packed_matrix(qt, ws, rows, n_in);
            void *xq = malloc((size_t)(n_in / 32) * sizeof(tlm_block_q8_g32_act));
            tlm_kernels_scalar.quantize_act_q8_g32(x, xq, n_in);
            const tlm_block_q8_g32_act *xb = xq;
            float *wd = malloc((size_t)(rows * n_in) * 4), *y = malloc((size_t)rows * 4);
            assert_true(tlm_qpacked_dequantize_rows(qt, p, n_in, 0, rows, wd));
            (qt == TLM_Q8_G32 ? tlm_kernels_scalar.gemv_q8_g32_r16
                              : tlm_kernels_scalar.gemv_q4_g32_r16)(p, xq, y, n_in, 0, rows);
            for (int64_t r = 0; r < rows; r++) {
                double dot = 0, mag = 0;
                for (int64_t i = 0; i < n_in; i++) {
                    double xd = (double)xb[i / 32].d * xb[i / 32].qs[i % 32];
                    dot += (double)wd[r * n_in + i] * xd;
                    mag += fabs((double)wd[r * n_in + i] * xd);
                }
                double err = fabs(y[r] - dot) / (mag > 1e-30 ? mag : 1e-30);
                if (!(err <= TOL_SCALAR_VS_DOUBLE)) {
                    print_error("scalar gemv %s n_in=%lld row %lld: %.9g vs double %.9g (rel %.3g)\n",
                                tlm_qtype_name(qt), (long long)n_in, (long long)r, y[r], dot, err);
                    fail();
                }
            }
            /* quality: quantized vs f32 */
            (qt == TLM_Q8_G32 ? tlm_kernels_scalar.gemv_q8_g32_r16
                              : tlm_kernels_scalar.gemv_q4_g32_r16)(ps, xq, y, n_in, 0, rows);
            float *yf = malloc((size_t)rows * 4);
            tlm_kernels_scalar.gemv_f32(ws, x, yf, n_in, 0, rows);
            double dot = 0, na = 0, nb = 0;
            for (int64_t r = 0; r < rows; r++) {
                dot += (double)y[r] * yf[r];
                na += (double)y[r] * y[r];
                nb += (double)yf[r] * yf[r];
            }
            double cosine = dot / sqrt(na * nb);
            double min_cos = qt == TLM_Q8_G32 ? MIN_COSINE_Q8 : MIN_COSINE_Q4;
            if (!(cosine >= min_cos)) {
                print_error("%s n_in=%lld: cosine(quantized, f32) = %.6f < %.6f\n",
                            tlm_qtype_name(qt), (long long)n_in, cosine, min_cos);
                fail();
            }
            free(w);
            free(ws);
            free(x);
            free(p);
            free(ps);
            free(xq);
            free(wd);
            free(y);
            free(yf);
        }
    }
}

/* Extreme activations: all zero (d = 0), one huge entry, exact halves. */
static void test_act_edge_cases(void **state) {
    (void)state;
    float x[96];
    for (int i = 0; i < 32; i++) x[i] = 0.0f;
    for (int i = 32; i < 64; i++) x[i] = 1e-3f * (float)(i - 48);
    x[40] = 3e4f;
    for (int i = 64; i < 96; i++) x[i] = (float)(i - 80) * 0.5f; /* max 7.5: ties at q*id */
    tlm_block_q8_g32_act ref[3], got[3];
    tlm_kernels_scalar.quantize_act_q8_g32(x, ref, 96);
    assert_true(ref[0].d == 0.0f && ref[0].sum == 0);
    for (int j = 0; j < 32; j++) assert_int_equal(ref[0].qs[j], 0);
    assert_int_equal(ref[1].qs[8], 127);
    for (int t = 0; t < g_n_tables; t++) {
        g_tables[t].k->quantize_act_q8_g32(x, got, 96);
        assert_memory_equal(got, ref, sizeof ref);
    }
}

/* Non-finite activations (from weights with NaN or extreme values): every
 * ISA gives them the scalar definition's 0, and sum stays the sum of the
 * stored quants (a NaN converted by the instruction set is INT32_MIN; summed,
 * it overflowed). Group 0: one +Inf (amax Inf, so every q is 0); group 1:
 * one NaN among finite values; group 2: all NaN; group 3: one -Inf. */
static void test_act_non_finite(void **state) {
    (void)state;
    float x[128];
    for (int i = 0; i < 128; i++) x[i] = 0.25f * (float)((i % 32) - 16);
    x[5] = INFINITY;
    x[32 + 7] = NAN;
    for (int i = 64; i < 96; i++) x[i] = NAN;
    x[96 + 31] = -INFINITY;
    tlm_block_q8_g32_act ref[4], got[4];
    tlm_kernels_scalar.quantize_act_q8_g32(x, ref, 128);
    for (int t = -1; t < g_n_tables; t++) {
        const tlm_kernels *k = t < 0 ? &tlm_kernels_scalar : g_tables[t].k;
        k->quantize_act_q8_g32(x, got, 128);
        for (int g = 0; g < 4; g++) {
            int32_t s = 0;
            for (int j = 0; j < 32; j++) s += got[g].qs[j];
            assert_int_equal(got[g].sum, s);
        }
        assert_int_equal(got[1].qs[7], 0);
        for (int g = 0; g < 4; g += g == 0 ? 2 : 1) /* Inf and all-NaN groups: all 0 */
            for (int j = 0; j < 32; j++) assert_int_equal(got[g].qs[j], 0);
        /* the Inf groups' d is Inf on every ISA: identical to scalar */
        assert_memory_equal(&got[0], &ref[0], sizeof ref[0]);
        assert_memory_equal(&got[3], &ref[3], sizeof ref[3]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantize_act_matches_scalar),
        cmocka_unit_test(test_act_edge_cases),
        cmocka_unit_test(test_act_non_finite),
        cmocka_unit_test(test_gemv_matches_scalar),
        cmocka_unit_test(test_gemm_matches_gemv),
        cmocka_unit_test(test_dequant_matches_scalar),
        cmocka_unit_test(test_scalar_gemv_definition),
    };
    return cmocka_run_group_tests(tests, setup_tables, NULL);
}
