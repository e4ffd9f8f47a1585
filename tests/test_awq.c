/*
 * test_awq.c — activation-aware quantization (quant/awq.h) and the drop
 * policies' ranking (runtime/compress/drop.h) on synthetic data.
 *
 *  - On a random matrix whose input has a few high-activation channels,
 *    the weighted output error sum_ij stat_j (w_ij - w'_ij)^2 of the
 *    calibrated quantization (scales chosen on the alpha grid, folded back,
 *    importance-weighted search) is lower than round-to-nearest's, for int4
 *    and int8; and so is the output error on actual activations drawn with
 *    those per-channel variances. Errors are computed here from the
 *    dequantized packed bytes, not with the library's own error function.
 *  - Folding scales into the preceding ops leaves the f32 function of an
 *    attention sublayer (GQA) and of an MLP sublayer unchanged (1e-5 rel),
 *    both for the fold primitives and for a whole layer scaled by
 *    tlm_awq_scale_layer (alphas chosen on the grid).
 *  - drop_select_scores picks the lowest scores, deeper layer first on ties.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "awq.h"
#include "drop.h"
#include "qformat.h"

/* ------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static double uniform(void) { /* (0, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}

static float gauss(void) {
    return (float)(sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform()));
}

/* w' = deq(Q(w)) through the packed bytes, (rows, n). */
static void round_trip(tlm_qtype t, const float *w, int64_t rows, int64_t n, bool calibrated,
                       const float *imp, float *out) {
    void *packed = malloc(tlm_qpacked_bytes(t, rows, n));
    assert_non_null(packed);
    if (calibrated) assert_true(tlm_awq_quantize_pack(t, w, rows, n, imp, packed));
    else assert_true(tlm_qquantize_pack(t, w, rows, n, packed));
    assert_true(tlm_qpacked_dequantize_rows(t, packed, n, 0, rows, out));
    free(packed);
}

/* The writer's procedure for one matrix: alpha from the grid, W diag(s)
 * quantized with the search under imp / s^2, then divided by s again. */
static void awq_round_trip(tlm_qtype t, const float *w, int64_t rows, int64_t n,
                           const float *stat, float *out, float *alpha_out) {
    float *imp = malloc(sizeof(float) * (size_t)n), *s = malloc(sizeof(float) * (size_t)n);
    float *ws = malloc(sizeof(float) * (size_t)(rows * n));
    tlm_awq_importance(stat, n, imp);
    double best = INFINITY;
    float alpha = 0;
    for (int a = 0; a < TLM_AWQ_ALPHA_STEPS; a++) {
        const float al = (float)a / (TLM_AWQ_ALPHA_STEPS - 1);
        tlm_awq_scales(stat, n, al, s);
        double e = tlm_awq_scaled_error(t, w, rows, n, imp, s, 1, false);
        if (e < best) best = e, alpha = al;
    }
    tlm_awq_scales(stat, n, alpha, s);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) ws[r * n + j] = w[r * n + j] * s[j];
    for (int64_t j = 0; j < n; j++) imp[j] /= s[j] * s[j];
    round_trip(t, ws, rows, n, true, imp, out);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) out[r * n + j] /= s[j];
    *alpha_out = alpha;
    free(imp);
    free(s);
    free(ws);
}

static double weighted_error(const float *w, const float *wq, int64_t rows, int64_t n,
                             const float *stat) {
    double e = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) {
            double d = (double)w[r * n + j] - wq[r * n + j];
            e += stat[j] * d * d;
        }
    return e;
}

/* sum over tokens of ||(W - W') x||^2, x_j ~ N(0, stat_j). */
static double activation_error(const float *w, const float *wq, int64_t rows, int64_t n,
                               const float *stat, int n_tokens) {
    double e = 0;
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int t = 0; t < n_tokens; t++) {
        for (int64_t j = 0; j < n; j++) x[j] = gauss() * sqrtf(stat[j]);
        for (int64_t r = 0; r < rows; r++) {
            double y = 0;
            for (int64_t j = 0; j < n; j++) y += ((double)w[r * n + j] - wq[r * n + j]) * x[j];
            e += y * y;
        }
    }
    free(x);
    return e;
}

/* ------------------------------------------------- quantization error */

static void check_calibrated_beats_rtn(tlm_qtype t) {
    enum { ROWS = 48, N = 256 };
    float *w = malloc(sizeof(float) * ROWS * N), *rtn = malloc(sizeof(float) * ROWS * N);
    float *awq = malloc(sizeof(float) * ROWS * N), *srch = malloc(sizeof(float) * ROWS * N);
    float stat[N], imp[N];
    for (int i = 0; i < ROWS * N; i++) w[i] = gauss() * 0.05f;
    for (int j = 0; j < N; j++) stat[j] = 0.5f + (float)uniform(); /* ordinary channels */
    for (int k = 0; k < 6; k++) stat[(37 * k + 5) % N] = 200.0f + 100.0f * k; /* outliers */
    round_trip(t, w, ROWS, N, false, NULL, rtn);
    tlm_awq_importance(stat, N, imp);
    round_trip(t, w, ROWS, N, true, imp, srch); /* the search alone */
    float alpha;
    awq_round_trip(t, w, ROWS, N, stat, awq, &alpha);
    const double e_rtn = weighted_error(w, rtn, ROWS, N, stat);
    const double e_srch = weighted_error(w, srch, ROWS, N, stat);
    const double e_awq = weighted_error(w, awq, ROWS, N, stat);
    print_message("%s: weighted error rtn %.4g, search %.4g, awq (alpha %.1f) %.4g\n",
                  tlm_qtype_name(t), e_rtn, e_srch, (double)alpha, e_awq);
    assert_true(e_srch < e_rtn);
    assert_true(e_awq < e_rtn);
    /* alpha is chosen on round-to-nearest's error, so the scaled search is
     * not always below the plain search: bound how much it may lose */
    assert_true(e_awq < e_srch * 1.25);
    rng_state = 12345;
    const double a_rtn = activation_error(w, rtn, ROWS, N, stat, 64);
    rng_state = 12345;
    const double a_awq = activation_error(w, awq, ROWS, N, stat, 64);
    print_message("%s: output error on sampled activations rtn %.4g, awq %.4g\n",
                  tlm_qtype_name(t), a_rtn, a_awq);
    assert_true(a_awq < a_rtn);
    free(w);
    free(rtn);
    free(awq);
    free(srch);
}

static void test_q4_calibrated_beats_rtn(void **state) {
    (void)state;
    check_calibrated_beats_rtn(TLM_Q4_G32);
}

static void test_q8_calibrated_beats_rtn(void **state) {
    (void)state;
    check_calibrated_beats_rtn(TLM_Q8_G32);
}

/* The Q8 search with equal importance is never worse than RTN per group
 * (up to the f16 rounding of the scale), and keeps zero groups zero. */
static void test_q8_search_basics(void **state) {
    (void)state;
    float w[64], back_r[64], back_s[64];
    for (int i = 0; i < 64; i++) w[i] = gauss();
    tlm_block_q8_g32 br[2], bs[2];
    tlm_q8_g32_quantize_row(w, br, 64);
    tlm_q8_g32_quantize_row_search(w, bs, 64, NULL);
    tlm_q8_g32_dequantize_row(br, back_r, 64);
    tlm_q8_g32_dequantize_row(bs, back_s, 64);
    double er = 0, es = 0;
    for (int i = 0; i < 64; i++) {
        er += (w[i] - back_r[i]) * (w[i] - back_r[i]);
        es += (w[i] - back_s[i]) * (w[i] - back_s[i]);
    }
    assert_true(es <= er * 1.001);
    float z[32] = {0};
    tlm_q8_g32_quantize_row_search(z, bs, 32, NULL);
    tlm_q8_g32_dequantize_row(bs, back_s, 32);
    for (int i = 0; i < 32; i++) assert_true(back_s[i] == 0.0f);
}

/* Scales straddle 1 (geometric middle of the range) and alpha 0 is 1. */
static void test_scales(void **state) {
    (void)state;
    float stat[4] = {1e-3f, 1.0f, 10.0f, 1e3f}, s[4];
    tlm_awq_scales(stat, 4, 0.0f, s);
    for (int j = 0; j < 4; j++) assert_true(s[j] == 1.0f);
    tlm_awq_scales(stat, 4, 0.5f, s);
    assert_float_equal(s[0] * s[3], 1.0f, 1e-5f);
    assert_float_equal(s[2] / s[1], sqrtf(10.0f), 1e-5f);
    float q[8] = {1, 2, 3, 4, 5, 6, 7, 8}, kv[4];
    tlm_awq_kv_stat(q, 4, 2, 2, kv); /* heads 0,1 -> kv 0; heads 2,3 -> kv 1 */
    assert_float_equal(kv[0], 2.0f, 0);
    assert_float_equal(kv[1], 3.0f, 0);
    assert_float_equal(kv[2], 6.0f, 0);
    assert_float_equal(kv[3], 7.0f, 0);
}

/* ------------------------------------------------------------- folding */

enum { E = 64, NH = 4, NKV = 2, HD = 16, QD = NH * HD, KD = NKV * HD, FF = 96, T = 6 };

static void rms_norm(const float *x, const float *w, float *out) {
    double ms = 0;
    for (int j = 0; j < E; j++) ms += (double)x[j] * x[j];
    const float r = (float)(1.0 / sqrt(ms / E + 1e-5));
    for (int j = 0; j < E; j++) out[j] = x[j] * r * w[j];
}

static void matvec(const float *w, const float *x, int rows, int cols, float *y) {
    for (int r = 0; r < rows; r++) {
        double acc = 0;
        for (int j = 0; j < cols; j++) acc += (double)w[r * cols + j] * x[j];
        y[r] = (float)acc;
    }
}

/* out[t] = Wo attn(q, k, v) of T tokens with causal GQA attention (no
 * RoPE: it acts on q and k, which folding leaves as they are). */
static void attention(const float *x, const float *norm, const float *wq, const float *wk,
                      const float *wv, const float *bv, const float *wo, float *out) {
    static float q[T][QD], k[T][KD], v[T][KD], h[E], att[QD];
    for (int t = 0; t < T; t++) {
        rms_norm(x + t * E, norm, h);
        matvec(wq, h, QD, E, q[t]);
        matvec(wk, h, KD, E, k[t]);
        matvec(wv, h, KD, E, v[t]);
        for (int c = 0; c < KD; c++) v[t][c] += bv[c];
    }
    for (int t = 0; t < T; t++) {
        for (int hh = 0; hh < NH; hh++) {
            const int kv = hh / (NH / NKV);
            double sc[T], mx = -INFINITY, sum = 0;
            for (int u = 0; u <= t; u++) {
                double d = 0;
                for (int i = 0; i < HD; i++) d += (double)q[t][hh * HD + i] * k[u][kv * HD + i];
                sc[u] = d / sqrt(HD);
                mx = sc[u] > mx ? sc[u] : mx;
            }
            for (int u = 0; u <= t; u++) sum += sc[u] = exp(sc[u] - mx);
            for (int i = 0; i < HD; i++) {
                double a = 0;
                for (int u = 0; u <= t; u++) a += sc[u] / sum * v[u][kv * HD + i];
                att[hh * HD + i] = (float)a;
            }
        }
        matvec(wo, att, E, QD, out + t * E);
    }
}

static void mlp(const float *x, const float *norm, const float *wg, const float *wu,
                const float *wd, float *out) {
    static float h[E], g[FF], u[FF];
    for (int t = 0; t < T; t++) {
        rms_norm(x + t * E, norm, h);
        matvec(wg, h, FF, E, g);
        matvec(wu, h, FF, E, u);
        for (int i = 0; i < FF; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
        matvec(wd, g, E, FF, out + t * E);
    }
}

static float *randv(int n, float scale) {
    float *p = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) p[i] = gauss() * scale;
    return p;
}

/* Scales over four decades, as real activation statistics give. */
static void rand_scales(float *s, int n) {
    for (int i = 0; i < n; i++) s[i] = (float)exp((uniform() - 0.5) * 9.2);
}

static double rel_diff(const float *a, const float *b, int n) {
    double d = 0, m = 0;
    for (int i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)a[i]));
    }
    return d / m;
}

static float *copyv(const float *v, int n) {
    float *p = malloc(sizeof(float) * (size_t)n);
    memcpy(p, v, sizeof(float) * (size_t)n);
    return p;
}

/* |got - want| <= 1e-6 |want| for every element: each folded weight is one
 * product or quotient of two floats (0.5 ulp = 6e-8 relative), or the same
 * through a reciprocal (2 roundings); 1e-6 leaves room for that and nothing
 * else — a fold that skips an element, scales the wrong row or column, or
 * does nothing (the scales span four decades) misses it by orders of
 * magnitude. Returns the worst relative error found. */
static double worst_rel(const float *got, const double *want, int n) {
    double worst = 0;
    for (int i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)got[i] - want[i]) / fmax(fabs(want[i]), 1e-30));
    return worst;
}

/* What tlm_awq_fold_norm must leave (awq.h): norm[j] / s[j], and column j of
 * each (rows[k], n) matrix times s[j]. */
static double check_fold_norm(const float *norm0, const float *norm, float *const *mats0,
                              float *const *mats, const int64_t *rows, int n_mats, const float *s,
                              int n) {
    double want_norm[E], worst;
    for (int j = 0; j < n; j++) want_norm[j] = (double)norm0[j] / s[j];
    worst = worst_rel(norm, want_norm, n);
    for (int k = 0; k < n_mats; k++) {
        double *want = malloc(sizeof(double) * (size_t)(rows[k] * n));
        for (int64_t r = 0; r < rows[k]; r++)
            for (int j = 0; j < n; j++) want[r * n + j] = (double)mats0[k][r * n + j] * s[j];
        worst = fmax(worst, worst_rel(mats[k], want, (int)(rows[k] * n)));
        free(want);
    }
    return worst;
}

/* What tlm_awq_fold_rows must leave (awq.h): producer row c and bias[c]
 * divided by s_kv[c]; consumer (n_out, n_head * head_dim) column
 * h * head_dim + d times s_kv[(h / (n_head / n_head_kv)) * head_dim + d]. */
static double check_fold_rows(const float *prod0, const float *prod, const float *bias0,
                              const float *bias, int n_prod_in, const float *cons0,
                              const float *cons, int n_out, int n_head, int n_head_kv,
                              int head_dim, const float *s_kv) {
    const int n_kv = n_head_kv * head_dim, n_in = n_head * head_dim;
    double *want = malloc(sizeof(double) * (size_t)(n_kv * n_prod_in + n_out * n_in));
    for (int c = 0; c < n_kv; c++)
        for (int j = 0; j < n_prod_in; j++)
            want[c * n_prod_in + j] = (double)prod0[c * n_prod_in + j] / s_kv[c];
    double worst = worst_rel(prod, want, n_kv * n_prod_in);
    if (bias0) {
        for (int c = 0; c < n_kv; c++) want[c] = (double)bias0[c] / s_kv[c];
        worst = fmax(worst, worst_rel(bias, want, n_kv));
    }
    for (int r = 0; r < n_out; r++)
        for (int h = 0; h < n_head; h++)
            for (int d = 0; d < head_dim; d++) {
                const int col = h * head_dim + d, kv = h / (n_head / n_head_kv);
                want[r * n_in + col] = (double)cons0[r * n_in + col] * s_kv[kv * head_dim + d];
            }
    worst = fmax(worst, worst_rel(cons, want, n_out * n_in));
    free(want);
    return worst;
}

/* The largest |log s|: the checks above tell a fold from a no-op only when
 * the scales are far from 1. */
static double max_abs_log(const float *s, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(log(s[i])));
    return m;
}

static void test_fold_attention_gqa(void **state) {
    (void)state;
    float *x = randv(T * E, 1.0f), *norm = randv(E, 0.1f);
    for (int j = 0; j < E; j++) norm[j] += 1.0f;
    float *wq = randv(QD * E, 0.125f), *wk = randv(KD * E, 0.125f), *wv = randv(KD * E, 0.125f);
    float *bv = randv(KD, 0.1f), *wo = randv(E * QD, 0.125f);
    float before[T * E], after[T * E], s_e[E], s_kv[KD];
    attention(x, norm, wq, wk, wv, bv, wo, before);
    rand_scales(s_e, E);
    rand_scales(s_kv, KD);
    assert_true(max_abs_log(s_e, E) > 2.0 && max_abs_log(s_kv, KD) > 2.0);
    float *norm0 = copyv(norm, E), *wq0 = copyv(wq, QD * E), *wk0 = copyv(wk, KD * E);
    float *wv0 = copyv(wv, KD * E), *bv0 = copyv(bv, KD), *wo0 = copyv(wo, E * QD);
    tlm_awq_fold_rows(wv, bv, E, wo, E, NH, NKV, HD, s_kv); /* Wo's input, then q/k/v's */
    const double rows_err = check_fold_rows(wv0, wv, bv0, bv, E, wo0, wo, E, NH, NKV, HD, s_kv);
    float *wv1 = copyv(wv, KD * E);
    float *mats[3] = {wq, wk, wv}, *mats0[3] = {wq0, wk0, wv1};
    const int64_t rows[3] = {QD, KD, KD};
    tlm_awq_fold_norm(norm, E, mats, rows, 3, s_e);
    const double norm_err = check_fold_norm(norm0, norm, mats0, mats, rows, 3, s_e, E);
    attention(x, norm, wq, wk, wv, bv, wo, after);
    const double d = rel_diff(before, after, T * E);
    print_message("attention (GQA %d:%d) after folding: max rel diff %.2e; weights vs the "
                  "folds' definition: Wv/bv/Wo %.2e, norm/Wq/Wk/Wv %.2e\n",
                  NH, NKV, d, rows_err, norm_err);
    assert_true(d < 1e-5);
    /* the function is unchanged because each weight is what the fold says it
     * is — not because nothing was changed */
    assert_true(rows_err < 1e-6);
    assert_true(norm_err < 1e-6);
    free(norm0), free(wq0), free(wk0), free(wv0), free(bv0), free(wo0), free(wv1);
    free(x), free(norm), free(wq), free(wk), free(wv), free(bv), free(wo);
}

static void test_fold_mlp(void **state) {
    (void)state;
    float *x = randv(T * E, 1.0f), *norm = randv(E, 0.1f);
    for (int j = 0; j < E; j++) norm[j] += 1.0f;
    float *wg = randv(FF * E, 0.125f), *wu = randv(FF * E, 0.125f), *wd = randv(E * FF, 0.1f);
    float before[T * E], after[T * E], s_e[E], s_f[FF];
    mlp(x, norm, wg, wu, wd, before);
    rand_scales(s_e, E);
    rand_scales(s_f, FF);
    assert_true(max_abs_log(s_e, E) > 2.0 && max_abs_log(s_f, FF) > 2.0);
    float *norm0 = copyv(norm, E), *wg0 = copyv(wg, FF * E), *wu0 = copyv(wu, FF * E);
    float *wd0 = copyv(wd, E * FF);
    tlm_awq_fold_rows(wu, NULL, E, wd, E, 1, 1, FF, s_f);
    const double rows_err = check_fold_rows(wu0, wu, NULL, NULL, E, wd0, wd, E, 1, 1, FF, s_f);
    float *wu1 = copyv(wu, FF * E);
    float *mats[2] = {wg, wu}, *mats0[2] = {wg0, wu1};
    const int64_t rows[2] = {FF, FF};
    tlm_awq_fold_norm(norm, E, mats, rows, 2, s_e);
    const double norm_err = check_fold_norm(norm0, norm, mats0, mats, rows, 2, s_e, E);
    mlp(x, norm, wg, wu, wd, after);
    const double d = rel_diff(before, after, T * E);
    print_message("MLP after folding: max rel diff %.2e; weights vs the folds' definition: "
                  "Wup/Wdown %.2e, norm/Wgate/Wup %.2e\n", d, rows_err, norm_err);
    assert_true(d < 1e-5);
    assert_true(rows_err < 1e-6); /* not a no-op: see check_fold_rows */
    assert_true(norm_err < 1e-6);
    free(norm0), free(wg0), free(wu0), free(wd0), free(wu1);
    free(x), free(norm), free(wg), free(wu), free(wd);
}

/* tlm_awq_scale_layer on a whole GQA layer: the alphas it chooses lie on
 * the grid, the f32 function of both sublayers is unchanged, and with every
 * alpha given as 0 the weights stay as they are and each importance is the
 * plain tlm_awq_importance of its input's statistics. */
static void test_scale_layer(void **state) {
    (void)state;
    float *x = randv(T * E, 1.0f), *an = randv(E, 0.1f), *fn = randv(E, 0.1f);
    for (int j = 0; j < E; j++) an[j] += 1.0f, fn[j] += 1.0f;
    float *wq = randv(QD * E, 0.125f), *wk = randv(KD * E, 0.125f), *wv = randv(KD * E, 0.125f);
    float *bv = randv(KD, 0.1f), *wo = randv(E * QD, 0.125f);
    float *wg = randv(FF * E, 0.125f), *wu = randv(FF * E, 0.125f), *wd = randv(E * FF, 0.1f);
    static float stat_e[E], stat_q[QD], stat_f[FF], imp_qkv[E], imp_o[QD], imp_gu[E], imp_d[FF];
    rand_scales(stat_e, E);
    rand_scales(stat_q, QD);
    rand_scales(stat_f, FF);
    tlm_awq_layer l = {.n_embd = E, .n_ff = FF, .head_dim = HD, .n_head = NH, .n_head_kv = NKV,
                       .attn_norm = an, .wq = wq, .wk = wk, .wv = wv, .bv = bv, .wo = wo,
                       .wq_type = TLM_Q4_G32, .wk_type = TLM_Q4_G32, .wv_type = TLM_Q4_G32,
                       .wo_type = TLM_Q4_G32, .ffn_norm = fn, .w_gate = wg, .w_up = wu,
                       .w_down = wd, .gate_type = TLM_Q4_G32, .up_type = TLM_Q4_G32,
                       .down_type = TLM_AWQ_FLOAT,
                       .stat = {stat_e, stat_q, stat_e, stat_f},
                       .imp = {imp_qkv, imp_o, imp_gu, imp_d}};
    static float before[T * E], after[T * E], before_mlp[T * E], after_mlp[T * E];
    attention(x, an, wq, wk, wv, bv, wo, before);
    mlp(x, fn, wg, wu, wd, before_mlp);

    float alpha[TLM_AWQ_N_INPUTS] = {NAN, NAN, NAN, NAN};
    assert_true(tlm_awq_scale_layer(&l, alpha));
    for (int k = 0; k < TLM_AWQ_N_INPUTS; k++) {
        const float step = alpha[k] * (TLM_AWQ_ALPHA_STEPS - 1);
        print_message("input %d: alpha %.1f\n", k, (double)alpha[k]);
        assert_true(alpha[k] >= 0 && alpha[k] <= 1 && fabsf(step - roundf(step)) < 1e-4f);
    }
    attention(x, an, wq, wk, wv, bv, wo, after);
    mlp(x, fn, wg, wu, wd, after_mlp);
    assert_true(rel_diff(before, after, T * E) < 1e-5);
    assert_true(rel_diff(before_mlp, after_mlp, T * E) < 1e-5);

    float *wq0 = malloc(sizeof(float) * QD * E), imp[FF]; /* FF > QD */
    memcpy(wq0, wq, sizeof(float) * QD * E);
    float zero[TLM_AWQ_N_INPUTS] = {0, 0, 0, 0};
    assert_true(tlm_awq_scale_layer(&l, zero));
    assert_memory_equal(wq, wq0, sizeof(float) * QD * E);
    tlm_awq_importance(stat_q, QD, imp);
    assert_memory_equal(imp_o, imp, sizeof(float) * QD);
    tlm_awq_importance(stat_f, FF, imp);
    assert_memory_equal(imp_d, imp, sizeof(float) * FF);
    free(wq0);
    free(x), free(an), free(fn), free(wq), free(wk), free(wv), free(bv), free(wo);
    free(wg), free(wu), free(wd);
}

/* ---------------------------------------------------------- drop ranking */

static void test_drop_ranking(void **state) {
    (void)state;
    enum { NL = 6 };
    const float attn[NL] = {0.5f, 0.1f, 0.2f, 0.1f, NAN, 0.3f};
    const float mlp_s[NL] = {0.9f, 0.8f, 0.15f, 0.7f, 0.6f, 0.1f};
    const float block[NL] = {1.0f, 0.9f, 0.4f, 0.8f, NAN, 0.4f};
    bool da[NL] = {0}, dm[NL] = {0};
    tlm_error err;
    /* tie 0.1 at layers 1 and 3: the deeper (3) first */
    assert_int_equal(drop_select_scores(attn, mlp_s, block, "attn:1", NL, da, dm, &err), TLM_OK);
    assert_true(da[3] && !da[1] && !dm[3]);
    memset(da, 0, sizeof da);
    /* joint: 0.1 attn 3, 0.1 attn 1, 0.1 mlp 5 -> deeper first: mlp 5, attn 3, then attn 1 */
    assert_int_equal(drop_select_scores(attn, mlp_s, block, "joint:2", NL, da, dm, &err), TLM_OK);
    assert_true(dm[5] && da[3] && !da[1]);
    memset(da, 0, sizeof da), memset(dm, 0, sizeof dm);
    assert_int_equal(drop_select_scores(attn, mlp_s, block, "block:1", NL, da, dm, &err), TLM_OK);
    assert_true(da[5] && dm[5] && !da[2] && !dm[2]); /* tie 0.4: deeper */
    memset(da, 0, sizeof da), memset(dm, 0, sizeof dm);
    assert_int_equal(drop_select_scores(attn, mlp_s, block, "attn:s<0.25", NL, da, dm, &err), TLM_OK);
    assert_true(da[1] && da[2] && da[3] && !da[0] && !da[4] && !da[5]);
    /* absent sublayers (NaN) are not counted */
    assert_int_equal(drop_select_scores(attn, mlp_s, block, "attn:6", NL, da, dm, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "model has 5"));
    assert_int_equal(drop_select_scores(attn, mlp_s, block, "attn:5", NL, da, dm, &err), TLM_OK);
    assert_int_equal(drop_select_scores(attn, mlp_s, block, "ffn:1", NL, da, dm, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "unknown kind"));
    assert_int_equal(drop_select_scores(attn, mlp_s, block, "attn:-1", NL, da, dm, &err), TLM_ERR_ARG);
    assert_int_equal(drop_select_scores(attn, mlp_s, block, "attn:s<x", NL, da, dm, &err), TLM_ERR_ARG);
    assert_int_equal(drop_select_scores(attn, mlp_s, block, "attn:2x", NL, da, dm, &err), TLM_ERR_ARG);
    /* lists */
    tlm_drop_list *l = tlm_drop_list_new(NL, &err);
    assert_non_null(l);
#define LA(i) tlm_drop_list_has(l, TLM_SUBLAYER_ATTN, i)
#define LM(i) tlm_drop_list_has(l, TLM_SUBLAYER_MLP, i)
    assert_int_equal(tlm_drop_parse_list("attn:1,3 mlp:0-2  block:5", l, &err), TLM_OK);
    assert_true(LA(1) && LA(3) && LA(5) && !LA(0) && LM(0) && LM(1) && LM(2) && LM(5) && !LM(3));
    /* listed in layer order, attention before MLP; adding again keeps one */
    assert_int_equal(tlm_drop_list_count(l), 7);
    assert_true(tlm_drop_list_add(l, TLM_SUBLAYER_ATTN, 1));
    assert_int_equal(tlm_drop_list_count(l), 7);
    assert_false(tlm_drop_list_add(l, TLM_SUBLAYER_BLOCK, 1));
    assert_false(tlm_drop_list_add(l, TLM_SUBLAYER_ATTN, NL));
    static const tlm_sublayer_id order[7] = {
        {TLM_SUBLAYER_MLP, 0}, {TLM_SUBLAYER_ATTN, 1}, {TLM_SUBLAYER_MLP, 1}, {TLM_SUBLAYER_MLP, 2},
        {TLM_SUBLAYER_ATTN, 3}, {TLM_SUBLAYER_ATTN, 5}, {TLM_SUBLAYER_MLP, 5}};
    tlm_sublayer_id id;
    for (int32_t i = 0; i < 7; i++) {
        assert_true(tlm_drop_list_get(l, i, &id));
        assert_int_equal(id.kind, order[i].kind);
        assert_int_equal(id.layer, order[i].layer);
    }
    assert_false(tlm_drop_list_get(l, 7, &id));
    assert_int_equal(tlm_drop_parse_list("attn:6", l, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "out of range"));
    assert_int_equal(tlm_drop_parse_list("joint:1", l, &err), TLM_ERR_ARG);
    assert_int_equal(tlm_drop_parse_list("attn:1,", l, &err), TLM_ERR_ARG);
    assert_int_equal(tlm_drop_parse_list("attn", l, &err), TLM_ERR_ARG);
    assert_int_equal(tlm_drop_parse_list("", l, &err), TLM_ERR_ARG);
#undef LA
#undef LM
    tlm_drop_list_free(l);
    /* syntax only */
    assert_int_equal(tlm_drop_select(NULL, "block:3", NULL, &err), TLM_OK);
    assert_int_equal(tlm_drop_select(NULL, "blok:3", NULL, &err), TLM_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_calibrated_beats_rtn),
        cmocka_unit_test(test_q8_calibrated_beats_rtn),
        cmocka_unit_test(test_q8_search_basics),
        cmocka_unit_test(test_scales),
        cmocka_unit_test(test_fold_attention_gqa),
        cmocka_unit_test(test_fold_mlp),
        cmocka_unit_test(test_scale_layer),
        cmocka_unit_test(test_drop_ranking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
