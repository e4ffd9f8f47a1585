/*
 * test_kernels.c — every kernel of every kernel table this CPU can run,
 * against the scalar table (the definition of correct), on odd shapes that
 * exercise the vector bodies, the tails and the 4-row GEMV blocks.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernels.h"
#include "trimlm.h"

/* Relative tolerances: vector kernels reassociate sums (error grows like
 * sqrt(n) * eps * sum|a*b|) and use a polynomial exp (a few ulp). */
#define TOL_REDUCTION 1e-5 /* dot, gemv, rmsnorm: |a-b| / (sum |terms| + tiny) */
#define TOL_ELEMENTWISE 2e-6 /* axpy, softmax, silu: per element, relative with floor */

static const int64_t LENGTHS[] = {1, 3, 15, 16, 17, 31, 33, 64, 577, 1537};
#define N_LENGTHS (sizeof LENGTHS / sizeof LENGTHS[0])

/* Deterministic values in [-scale, scale). */
static uint64_t g_rng = 0x243f6a8885a308d3ull;
static float rand_float(float scale) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) * 0x1.0p-53 * 2.0 - 1.0) * scale;
}
static float *rand_vec(int64_t n, float scale) {
    float *v = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) v[i] = rand_float(scale);
    return v;
}

static void check_close(const char *isa, const char *what, int64_t n, int64_t i, double got,
                        double want, double scale, double tol) {
    double err = fabs(got - want) / (scale > 1e-30 ? scale : 1e-30);
    if (!(err <= tol)) {
        print_error("%s %s n=%lld [%lld]: got %.9g want %.9g (rel err %.3g > %.3g)\n", isa, what,
                    (long long)n, (long long)i, got, want, err, tol);
        fail();
    }
}


/* The tables under test: the dispatcher's, plus (x86) the AVX-512 kernels on
 * a CPU that has AVX-512 F/BW/VL/DQ but lacks a feature the dispatcher also
 * requires (VNNI/BF16): the f32 kernels use only the former, so they can
 * still be checked here. */
#define MAX_TABLES 4
static const tlm_kernels *g_tables[MAX_TABLES];
static const char *g_names[MAX_TABLES];
static int g_n_tables;
#if defined(TLM_HAVE_X86_KERNELS)
static tlm_kernels g_avx512_partial;
#endif

static int setup_tables(void **state) {
    (void)state;
    static const char *isas[] = {"avx2", "avx512", "neon"};
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        const tlm_kernels *k = tlm_kernels_for(isas[i]);
        if (k) {
            g_tables[g_n_tables] = k;
            g_names[g_n_tables++] = isas[i];
        }
    }
#if defined(TLM_HAVE_X86_KERNELS)
    if (!tlm_kernels_for("avx512") && tlm_kernels_for("avx2") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq")) {
        g_avx512_partial = *tlm_kernels_for("avx2");
        tlm_kernels_avx512_fill(&g_avx512_partial);
        g_tables[g_n_tables] = &g_avx512_partial;
        g_names[g_n_tables++] = "avx512 (f32 kernels only)";
    }
#endif
    return 0;
}

/* ---------------------------------------------------------------- tests */

static void test_dot_and_gemv(void **state) {
    (void)state;
    const tlm_kernels *ref = &tlm_kernels_scalar;
    for (int t = 0; t < g_n_tables; t++) {
        const tlm_kernels *k = g_tables[t];
        for (size_t li = 0; li < N_LENGTHS; li++) {
            int64_t n = LENGTHS[li];
            float *a = rand_vec(n, 1.0f), *b = rand_vec(n, 1.0f);
            double abs_sum = 0;
            for (int64_t i = 0; i < n; i++) abs_sum += fabs((double)a[i] * b[i]);
            check_close(g_names[t], "dot_f32", n, 0, k->dot_f32(a, b, n), ref->dot_f32(a, b, n),
                        abs_sum, TOL_REDUCTION);
            for (int64_t rows = 1; rows <= 9; rows++) {
                float *w = rand_vec(rows * n, 1.0f);
                float y[9 + 2], y_ref[9 + 2];
                /* a slice [r0, rows) must leave rows outside it untouched */
                for (int64_t r0 = 0; r0 < rows && r0 < 2; r0++) {
                    for (int i = 0; i < 11; i++) y[i] = y_ref[i] = -7.0f;
                    k->gemv_f32(w, a, y, n, r0, rows);
                    ref->gemv_f32(w, a, y_ref, n, r0, rows);
                    for (int64_t r = 0; r < 11; r++) {
                        if (r < r0 || r >= rows) {
                            assert_true(y[r] == -7.0f);
                            continue;
                        }
                        double s = 0;
                        for (int64_t i = 0; i < n; i++) s += fabs((double)w[r * n + i] * a[i]);
                        check_close(g_names[t], "gemv_f32", n, r, y[r], y_ref[r], s, TOL_REDUCTION);
                    }
                }
                free(w);
            }
            free(a);
            free(b);
        }
    }
}

static void test_gemv_t(void **state) {
    (void)state;
    for (int t = 0; t < g_n_tables; t++) {
        const tlm_kernels *k = g_tables[t];
        for (size_t li = 0; li < N_LENGTHS; li++) {
            int64_t n = LENGTHS[li];
            static const int64_t ROWS[] = {1, 2, 3, 5, 9, 64, 513};
            for (size_t ri = 0; ri < sizeof ROWS / sizeof ROWS[0]; ri++) {
                int64_t rows = ROWS[ri];
                float *v = rand_vec(rows * n, 1.0f), *s = rand_vec(rows, 1.0f);
                float *y = malloc((size_t)(n + 1) * 4), *y_ref = malloc((size_t)(n + 1) * 4);
                y[n] = y_ref[n] = -7.0f;
                k->gemv_t_f32(v, s, y, rows, n);
                tlm_kernels_scalar.gemv_t_f32(v, s, y_ref, rows, n);
                assert_true(y[n] == -7.0f); /* nothing written past n */
                for (int64_t j = 0; j < n; j++) {
                    double sc = 0;
                    for (int64_t r = 0; r < rows; r++) sc += fabs((double)s[r] * v[r * n + j]);
                    check_close(g_names[t], "gemv_t_f32", n, j, y[j], y_ref[j], sc, TOL_REDUCTION);
                }
                free(v);
                free(s);
                free(y);
                free(y_ref);
            }
        }
    }
}

static void test_axpy(void **state) {
    (void)state;
    for (int t = 0; t < g_n_tables; t++) {
        const tlm_kernels *k = g_tables[t];
        for (size_t li = 0; li < N_LENGTHS; li++) {
            int64_t n = LENGTHS[li];
            float *x = rand_vec(n, 2.0f), *y = rand_vec(n, 2.0f), *y_ref = malloc((size_t)n * 4);
            memcpy(y_ref, y, (size_t)n * 4);
            k->axpy_f32(0.37f, x, y, n);
            tlm_kernels_scalar.axpy_f32(0.37f, x, y_ref, n);
            for (int64_t i = 0; i < n; i++)
                check_close(g_names[t], "axpy_f32", n, i, y[i], y_ref[i],
                            fabs(y_ref[i]) + fabs(0.37 * x[i]) + 1e-6, TOL_ELEMENTWISE);
            free(x);
            free(y);
            free(y_ref);
        }
    }
}

static void test_rmsnorm(void **state) {
    (void)state;
    for (int t = 0; t < g_n_tables; t++) {
        const tlm_kernels *k = g_tables[t];
        for (size_t li = 0; li < N_LENGTHS; li++) {
            int64_t n = LENGTHS[li];
            float *x = rand_vec(n, 3.0f), *w = rand_vec(n, 1.5f);
            float *y = malloc((size_t)n * 4), *y_ref = malloc((size_t)n * 4);
            k->rmsnorm_f32(y, x, w, n, 1e-5f);
            tlm_kernels_scalar.rmsnorm_f32(y_ref, x, w, n, 1e-5f);
            for (int64_t i = 0; i < n; i++)
                check_close(g_names[t], "rmsnorm_f32", n, i, y[i], y_ref[i], fabs(y_ref[i]) + 1e-6,
                            TOL_REDUCTION);
            /* in place (y == x) must give the same */
            k->rmsnorm_f32(x, x, w, n, 1e-5f);
            for (int64_t i = 0; i < n; i++) assert_true(x[i] == y[i]);
            free(x);
            free(w);
            free(y);
            free(y_ref);
        }
    }
}

static void test_softmax(void **state) {
    (void)state;
    for (int t = 0; t < g_n_tables; t++) {
        const tlm_kernels *k = g_tables[t];
        for (size_t li = 0; li < N_LENGTHS; li++) {
            int64_t n = LENGTHS[li];
            /* wide range: some entries underflow to ~0, the max stays finite */
            float *x = rand_vec(n, 60.0f), *x_ref = malloc((size_t)n * 4);
            memcpy(x_ref, x, (size_t)n * 4);
            k->softmax_f32(x, n);
            tlm_kernels_scalar.softmax_f32(x_ref, n);
            double sum = 0;
            for (int64_t i = 0; i < n; i++) {
                check_close(g_names[t], "softmax_f32", n, i, x[i], x_ref[i], fabs(x_ref[i]) + 1e-30,
                            TOL_ELEMENTWISE * 4);
                sum += x[i];
            }
            check_close(g_names[t], "softmax_f32 sum", n, 0, sum, 1.0, 1.0, 1e-5);
            free(x);
            free(x_ref);
        }
    }
}

static void test_silu_mul(void **state) {
    (void)state;
    for (int t = 0; t < g_n_tables; t++) {
        const tlm_kernels *k = g_tables[t];
        for (size_t li = 0; li < N_LENGTHS; li++) {
            int64_t n = LENGTHS[li];
            float *g = rand_vec(n, 12.0f), *u = rand_vec(n, 2.0f);
            float *g_ref = malloc((size_t)n * 4);
            memcpy(g_ref, g, (size_t)n * 4);
            k->silu_mul_f32(g, u, n);
            tlm_kernels_scalar.silu_mul_f32(g_ref, u, n);
            for (int64_t i = 0; i < n; i++)
                check_close(g_names[t], "silu_mul_f32", n, i, g[i], g_ref[i], fabs(g_ref[i]) + 1e-12,
                            TOL_ELEMENTWISE * 4);
            free(g);
            free(u);
            free(g_ref);
        }
    }
}

/* The scalar table itself against double-precision definitions. */
static void test_scalar_definitions(void **state) {
    (void)state;
    const tlm_kernels *k = &tlm_kernels_scalar;
    float x[5] = {1, -2, 3, 0.5f, 4}, w[5] = {1, 1, 2, 1, 0.5f}, y[5];
    k->rmsnorm_f32(y, x, w, 5, 1e-6f);
    double ms = (1 + 4 + 9 + 0.25 + 16) / 5.0, inv = 1.0 / sqrt(ms + 1e-6);
    for (int i = 0; i < 5; i++) assert_true(fabs(y[i] - x[i] * inv * w[i]) < 1e-6);
    float s[3] = {1, 2, 3};
    k->softmax_f32(s, 3);
    double z = exp(1) + exp(2) + exp(3);
    for (int i = 0; i < 3; i++) assert_true(fabs(s[i] - exp(i + 1) / z) < 1e-7);
    float v[6] = {1, 2, 3, 4, 5, 6}, w2[2] = {0.5f, -1}, o[3];
    k->gemv_t_f32(v, w2, o, 2, 3); /* rows (1,2,3), (4,5,6) */
    assert_true(o[0] == -3.5f && o[1] == -4.0f && o[2] == -4.5f);
    float g[2] = {1.5f, -3.0f}, u[2] = {2.0f, 0.5f};
    k->silu_mul_f32(g, u, 2);
    assert_true(fabs(g[0] - 1.5 / (1 + exp(-1.5)) * 2.0) < 1e-6);
    assert_true(fabs(g[1] - -3.0 / (1 + exp(3.0)) * 0.5) < 1e-6);
}

/* ------------------------------------------------- KV cache attention */

/* Stores are bit-identical to the scalar table's (f16 round to nearest even,
 * int8 round half to even with the same scale), including an all-zero row. */
static void test_kv_store(void **state) {
    (void)state;
    const tlm_kernels *ref = &tlm_kernels_scalar;
    for (int t = 0; t < g_n_tables; t++) {
        const tlm_kernels *k = g_tables[t];
        for (size_t li = 0; li < N_LENGTHS; li++) {
            int64_t n = LENGTHS[li];
            for (int zero = 0; zero < 2; zero++) {
                float *x = rand_vec(n, 3.0f);
                if (zero) memset(x, 0, (size_t)n * sizeof(float));
                else if (n > 2) x[n / 2] = 1e-6f, x[1] = 7e-8f; /* f16 subnormals */
                uint16_t *h = malloc((size_t)(n + 1) * 2), *h_ref = malloc((size_t)(n + 1) * 2);
                int8_t *q = malloc((size_t)n + 1), *q_ref = malloc((size_t)n + 1);
                h[n] = h_ref[n] = 0xabcd;
                q[n] = q_ref[n] = 99;
                float d = -1, d_ref = -2;
                k->kv_store_f16(x, h, n);
                ref->kv_store_f16(x, h_ref, n);
                k->kv_store_q8(x, q, &d, n);
                ref->kv_store_q8(x, q_ref, &d_ref, n);
                if (memcmp(h, h_ref, (size_t)(n + 1) * 2) || memcmp(q, q_ref, (size_t)n + 1) ||
                    d != d_ref) {
                    print_error("%s kv_store n=%lld zero=%d differs from scalar\n", g_names[t],
                                (long long)n, zero);
                    fail();
                }
                free(x);
                free(h);
                free(h_ref);
                free(q);
                free(q_ref);
            }
        }
    }
}

/* Scores and weighted values over f16 and int8 rows, against the scalar
 * table, for row counts that exercise the 4-row blocks and their tails. */
static void test_kv_attention(void **state) {
    (void)state;
    const tlm_kernels *ref = &tlm_kernels_scalar;
    static const int64_t ROWS[] = {1, 2, 3, 4, 5, 7, 9, 64, 513};
    for (int t = 0; t < g_n_tables; t++) {
        const tlm_kernels *k = g_tables[t];
        for (size_t li = 0; li < N_LENGTHS; li++) {
            int64_t n = LENGTHS[li];
            for (size_t ri = 0; ri < sizeof ROWS / sizeof ROWS[0]; ri++) {
                int64_t rows = ROWS[ri];
                float *x = rand_vec(rows * n, 2.0f), *q = rand_vec(n, 1.0f);
                float *p = rand_vec(rows, 1.0f), *d = malloc((size_t)rows * sizeof(float));
                uint16_t *h = malloc((size_t)(rows * n) * 2);
                int8_t *b = malloc((size_t)(rows * n));
                for (int64_t r = 0; r < rows; r++) {
                    ref->kv_store_f16(x + r * n, h + r * n, n);
                    ref->kv_store_q8(x + r * n, b + r * n, d + r, n);
                }
                float *s = malloc((size_t)(rows + 1) * 4), *s_ref = malloc((size_t)(rows + 1) * 4);
                float *y = malloc((size_t)(n + 1) * 4), *y_ref = malloc((size_t)(n + 1) * 4);
                const float scale = 0.125f;
                for (int form = 0; form < 2; form++) {
                    const char *what = form ? "attn_scores_q8" : "attn_scores_f16";
                    s[rows] = s_ref[rows] = -7.0f;
                    if (form) {
                        k->attn_scores_q8(b, d, q, s, rows, n, scale);
                        ref->attn_scores_q8(b, d, q, s_ref, rows, n, scale);
                    } else {
                        k->attn_scores_f16(h, q, s, rows, n, scale);
                        ref->attn_scores_f16(h, q, s_ref, rows, n, scale);
                    }
                    assert_true(s[rows] == -7.0f);
                    for (int64_t r = 0; r < rows; r++) {
                        double sc = 0; /* sum |k q| * scale, with x standing for k */
                        for (int64_t i = 0; i < n; i++) sc += fabs((double)x[r * n + i] * q[i]);
                        check_close(g_names[t], what, n, r, s[r], s_ref[r], sc * scale + 1e-30,
                                    TOL_REDUCTION);
                    }
                    what = form ? "attn_values_q8" : "attn_values_f16";
                    y[n] = y_ref[n] = -7.0f;
                    if (form) {
                        k->attn_values_q8(b, d, p, y, rows, n);
                        ref->attn_values_q8(b, d, p, y_ref, rows, n);
                    } else {
                        k->attn_values_f16(h, p, y, rows, n);
                        ref->attn_values_f16(h, p, y_ref, rows, n);
                    }
                    assert_true(y[n] == -7.0f);
                    for (int64_t j = 0; j < n; j++) {
                        double sc = 0;
                        for (int64_t r = 0; r < rows; r++) sc += fabs((double)p[r] * x[r * n + j]);
                        check_close(g_names[t], what, n, j, y[j], y_ref[j], sc + 1e-30,
                                    TOL_REDUCTION);
                    }
                }
                free(x);
                free(q);
                free(p);
                free(d);
                free(h);
                free(b);
                free(s);
                free(s_ref);
                free(y);
                free(y_ref);
            }
        }
    }
}

/* The scalar compact forms against their definitions: f16 within half an
 * ulp (2^-11 relative), int8 within half a step of d = max|x| / 127. */
static void test_kv_scalar_definitions(void **state) {
    (void)state;
    const tlm_kernels *k = &tlm_kernels_scalar;
    float x[5] = {1.0f, -2.5f, 0.1f, 65504.0f, -0.0f};
    uint16_t h[5];
    k->kv_store_f16(x, h, 5);
    assert_true(h[0] == 0x3c00 && h[1] == 0xc100 && h[2] == 0x2e66 && h[3] == 0x7bff &&
                h[4] == 0x8000);
    float v[4] = {0.5f, -1.27f, 0.0f, 0.3f};
    int8_t q[4];
    float d;
    k->kv_store_q8(v, q, &d, 4);
    assert_true(fabs(d - 0.01) < 1e-7);
    assert_true(q[0] == 50 && q[1] == -127 && q[2] == 0 && q[3] == 30);
    float qv[4] = {1, 2, 3, 4}, s;
    k->attn_scores_q8(q, &d, qv, &s, 1, 4, 2.0f);
    assert_true(fabs(s - (50 - 254 + 0 + 120) * 0.01 * 2.0) < 1e-5);
    float p = 0.5f, y[4];
    k->attn_values_f16(h, &p, y, 1, 4);
    assert_true(y[0] == 0.5f && y[1] == -1.25f);
}

static void test_best_is_known(void **state) {
    (void)state;
    const tlm_kernels *best = tlm_kernels_best();
    assert_non_null(best);
    assert_non_null(tlm_kernels_for(best->name));
    assert_non_null(tlm_kernels_for("scalar"));
    assert_null(tlm_kernels_for("no-such-isa"));
    printf("kernel tables: best = %s; tested against scalar:", best->name);
    for (int t = 0; t < g_n_tables; t++) printf(" [%s]", g_names[t]);
    printf("\n");
    /* the public names agree with the dispatcher */
    assert_string_equal(tlm_isa_name(), best->name);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int cores = tlm_physical_cores();
    printf("physical cores: %d (online logical CPUs: %ld)\n", cores, online);
    assert_true(cores >= 1 && (online <= 0 || cores <= online));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalar_definitions), cmocka_unit_test(test_dot_and_gemv),
        cmocka_unit_test(test_gemv_t),             cmocka_unit_test(test_axpy),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_softmax),            cmocka_unit_test(test_silu_mul),
        cmocka_unit_test(test_kv_scalar_definitions), cmocka_unit_test(test_kv_store),
        cmocka_unit_test(test_kv_attention),
        cmocka_unit_test(test_best_is_known),
    };
    return cmocka_run_group_tests(tests, setup_tables, NULL);
}
