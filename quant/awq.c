/*
 * awq.c — activation-aware quantization (method in awq.h): importance,
 * per-channel scales, the Q8 scale search, weighted errors, and the exact
 * folding of scales into the ops that produce a matrix's input.
 */
#include "awq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "f16.h"

void tlm_awq_importance(const float *stat, int64_t n, float *imp) {
    double sum = 0;
    for (int64_t j = 0; j < n; j++)
        if (isfinite(stat[j]) && stat[j] > 0) sum += stat[j];
    const float floor_v = n > 0 ? (float)(TLM_AWQ_IMP_FLOOR * sum / (double)n) : 0.0f;
    for (int64_t j = 0; j < n; j++)
        imp[j] = (isfinite(stat[j]) && stat[j] > 0 ? stat[j] : 0.0f) + floor_v;
}

void tlm_awq_scales(const float *stat, int64_t n, float alpha, float *s) {
    if (alpha == 0.0f) {
        for (int64_t j = 0; j < n; j++) s[j] = 1.0f;
        return;
    }
    /* work in logs: stat spans many decades and pow of a tiny value underflows */
    const double tiny = 1e-12;
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        double v = isfinite(stat[j]) && stat[j] > tiny ? stat[j] : tiny;
        double l = alpha * log(v);
        lo = l < lo ? l : lo;
        hi = l > hi ? l : hi;
    }
    const double mid = 0.5 * (lo + hi);
    for (int64_t j = 0; j < n; j++) {
        double v = isfinite(stat[j]) && stat[j] > tiny ? stat[j] : tiny;
        s[j] = (float)exp(alpha * log(v) - mid);
    }
}

/* ----------------------------------------------------------- Q8 search */

void tlm_q8_g32_quantize_row_search(const float *w, tlm_block_q8_g32 *dst, int64_t n,
                                    const float *imp) {
    for (int64_t b = 0; b < n / TLM_QGROUP; b++) {
        const float *x = w + b * TLM_QGROUP;
        float amax = 0, wt[TLM_QGROUP];
        for (int j = 0; j < TLM_QGROUP; j++) {
            wt[j] = imp ? imp[b * TLM_QGROUP + j] : 1.0f;
            amax = fmaxf(amax, fabsf(x[j]));
        }
        tlm_q8_g32_quantize_row(x, &dst[b], TLM_QGROUP); /* RTN: the fallback */
        if (amax == 0.0f) continue;
        double best = -1;
        float best_d = 0;
        int8_t q[TLM_QGROUP], best_q[TLM_QGROUP];
        for (int k = -6; k <= 6; k++) {
            const float iscale = (127.0f + 0.5f * (float)k) / amax;
            double slx = 0, sl2 = 0;
            for (int j = 0; j < TLM_QGROUP; j++) {
                int l = (int)nearbyintf(iscale * x[j]);
                l = l < -127 ? -127 : l > 127 ? 127 : l;
                q[j] = (int8_t)l;
                slx += (double)wt[j] * x[j] * l;
                sl2 += (double)wt[j] * l * l;
            }
            if (sl2 <= 0) continue;
            /* the error is sum wt x^2 - slx^2 / sl2 at d = slx / sl2 */
            const double gain = slx * slx / sl2;
            if (gain > best) {
                best = gain;
                best_d = (float)(slx / sl2);
                memcpy(best_q, q, sizeof q);
            }
        }
        if (best < 0) continue; /* every weight 0 under its importance: RTN */
        dst[b].d = tlm_f32_to_f16(best_d);
        memcpy(dst[b].qs, best_q, sizeof best_q);
    }
}

/* ---------------------------------------------------------- matrices */

typedef union any_block {
    tlm_block_q8_g32 q8;
    tlm_block_q4_g32 q4;
} any_block;

/* One group of 32 quantized and dequantized back into out. */
static void group_round_trip(tlm_qtype t, const float *x, const float *imp, bool search,
                             float *out) {
    any_block b;
    if (t == TLM_Q8_G32) {
        if (search) tlm_q8_g32_quantize_row_search(x, &b.q8, TLM_QGROUP, imp);
        else tlm_q8_g32_quantize_row(x, &b.q8, TLM_QGROUP);
        tlm_q8_g32_dequantize_row(&b.q8, out, TLM_QGROUP);
    } else {
        if (search) tlm_q4_g32_quantize_row_search(x, &b.q4, TLM_QGROUP, imp);
        else tlm_q4_g32_quantize_row(x, &b.q4, TLM_QGROUP);
        tlm_q4_g32_dequantize_row(&b.q4, out, TLM_QGROUP);
    }
}

bool tlm_awq_quantize_pack(tlm_qtype t, const float *w, int64_t rows, int64_t n_in,
                           const float *imp, void *dst) {
    if (t == TLM_Q4_G32) return tlm_qquantize_pack_search(t, w, rows, n_in, imp, dst);
    const size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    if (t != TLM_Q8_G32 || !tile_bytes || rows <= 0) return false;
    /* per tile: its rows as row blocks, then packed (qformat.h's packer) */
    const int64_t n_groups = n_in / TLM_QGROUP;
    tlm_block_q8_g32 *blocks = malloc((size_t)(TLM_QROWS * n_groups) * sizeof *blocks);
    if (!blocks) return false;
    for (int64_t r0 = 0; r0 < rows; r0 += TLM_QROWS) {
        const int64_t nr = rows - r0 < TLM_QROWS ? rows - r0 : TLM_QROWS;
        for (int64_t r = 0; r < nr; r++)
            tlm_q8_g32_quantize_row_search(w + (r0 + r) * n_in, blocks + r * n_groups, n_in, imp);
        tlm_qpack(t, blocks, nr, n_in, (uint8_t *)dst + (size_t)(r0 / TLM_QROWS) * tile_bytes);
    }
    free(blocks);
    return true;
}

double tlm_awq_scaled_error(tlm_qtype t, const float *w, int64_t rows, int64_t n_in,
                            const float *imp, const float *s, int64_t step, bool search) {
    if (step < 1) step = 1;
    double err = 0;
    float x[TLM_QGROUP], wt[TLM_QGROUP], deq[TLM_QGROUP];
    for (int64_t r = 0; r < rows; r += step) {
        const float *row = w + r * n_in;
        for (int64_t g = 0; g < n_in / TLM_QGROUP; g++) {
            const int64_t j0 = g * TLM_QGROUP;
            for (int j = 0; j < TLM_QGROUP; j++) {
                const float sj = s ? s[j0 + j] : 1.0f;
                x[j] = row[j0 + j] * sj;
                wt[j] = imp[j0 + j] / (sj * sj); /* the scaled input is x / s */
            }
            group_round_trip(t, x, wt, search, deq);
            for (int j = 0; j < TLM_QGROUP; j++) {
                const double e = (double)x[j] - deq[j]; /* in scaled units */
                err += wt[j] * e * e;
            }
        }
    }
    return err;
}

/* ------------------------------------------------------------ folding */

void tlm_awq_fold_norm(float *norm, int64_t n, float *const *mats, const int64_t *rows,
                       int n_mats, const float *s) {
    for (int64_t j = 0; j < n; j++) norm[j] /= s[j];
    for (int k = 0; k < n_mats; k++)
        for (int64_t r = 0; r < rows[k]; r++) {
            float *row = mats[k] + r * n;
            for (int64_t j = 0; j < n; j++) row[j] *= s[j];
        }
}

void tlm_awq_fold_rows(float *producer, float *bias, int64_t n_prod_in, float *consumer,
                       int64_t n_out, int32_t n_head, int32_t n_head_kv, int64_t head_dim,
                       const float *s_kv) {
    const int64_t n_kv = (int64_t)n_head_kv * head_dim, n_q = (int64_t)n_head * head_dim;
    const int32_t group = n_head / n_head_kv;
    for (int64_t c = 0; c < n_kv; c++) {
        const float inv = 1.0f / s_kv[c];
        float *row = producer + c * n_prod_in;
        for (int64_t j = 0; j < n_prod_in; j++) row[j] *= inv;
        if (bias) bias[c] *= inv;
    }
    for (int64_t r = 0; r < n_out; r++) {
        float *row = consumer + r * n_q;
        for (int32_t h = 0; h < n_head; h++) {
            const float *sk = s_kv + (int64_t)(h / group) * head_dim;
            for (int64_t d = 0; d < head_dim; d++) row[(int64_t)h * head_dim + d] *= sk[d];
        }
    }
}

void tlm_awq_kv_stat(const float *stat_q, int32_t n_head, int32_t n_head_kv, int64_t head_dim,
                     float *stat_kv) {
    const int32_t group = n_head / n_head_kv;
    for (int32_t kv = 0; kv < n_head_kv; kv++)
        for (int64_t d = 0; d < head_dim; d++) {
            double sum = 0;
            for (int32_t g = 0; g < group; g++)
                sum += stat_q[(int64_t)(kv * group + g) * head_dim + d];
            stat_kv[(int64_t)kv * head_dim + d] = (float)(sum / group);
        }
}

/* ------------------------------------------------------------- a layer */

/* A group of matrices sharing one input of n_full channels, whose scales
 * are n_small = n_head_kv * head_dim values shared by the n_head query heads
 * of each KV head (identity: n_head = n_head_kv = 1, head_dim = n_full). */
typedef struct awq_group {
    const float *mats[3];
    int64_t rows[3];
    int qtype[3]; /* tlm_qtype, or TLM_AWQ_FLOAT */
    int n_mats;
    int64_t n_full, head_dim;
    int32_t n_head, n_head_kv;
} awq_group;

static void expand_scales(const awq_group *g, const float *s_small, float *s_full) {
    const int32_t group = g->n_head / g->n_head_kv;
    for (int32_t h = 0; h < g->n_head; h++)
        for (int64_t d = 0; d < g->head_dim; d++)
            s_full[(int64_t)h * g->head_dim + d] = s_small[(int64_t)(h / group) * g->head_dim + d];
}

/* The alpha of least weighted error (round-to-nearest on sampled rows; the
 * quantized matrices of the group only); ties keep the smaller alpha. The
 * grid points are independent: they are tried in parallel. */
static float choose_alpha(const awq_group *g, const float *stat_small, const float *imp_full) {
    const int64_t n_small = (int64_t)g->n_head_kv * g->head_dim;
    double err[TLM_AWQ_ALPHA_STEPS];
#pragma omp parallel for schedule(dynamic, 1)
    for (int a = 0; a < TLM_AWQ_ALPHA_STEPS; a++) {
        float *s_small = malloc((size_t)(n_small + g->n_full) * sizeof(float));
        err[a] = INFINITY;
        if (!s_small) continue;
        float *s_full = s_small + n_small;
        tlm_awq_scales(stat_small, n_small, (float)a / (TLM_AWQ_ALPHA_STEPS - 1), s_small);
        expand_scales(g, s_small, s_full);
        double e = 0;
        for (int k = 0; k < g->n_mats; k++) {
            if (g->qtype[k] == TLM_AWQ_FLOAT) continue;
            const int64_t step = g->rows[k] > TLM_AWQ_SAMPLE_ROWS ? g->rows[k] / TLM_AWQ_SAMPLE_ROWS : 1;
            e += tlm_awq_scaled_error((tlm_qtype)g->qtype[k], g->mats[k], g->rows[k], g->n_full,
                                      imp_full, s_full, step, false);
        }
        err[a] = e;
        free(s_small);
    }
    int best = 0;
    for (int a = 1; a < TLM_AWQ_ALPHA_STEPS; a++)
        if (err[a] < err[best]) best = a;
    return (float)best / (TLM_AWQ_ALPHA_STEPS - 1);
}

/* One input of statistics stat: its importance into imp (in the scaled
 * units: divided by s^2), its alpha (chosen when NaN) and its scales, per
 * KV channel into s_small and per channel into s_full; stat_small is
 * scratch of n_head_kv * head_dim. Folding the scales is the caller's. */
static void scale_input(const awq_group *g, const float *stat, float *alpha, float *imp,
                        float *stat_small, float *s_small, float *s_full) {
    const int64_t n_small = (int64_t)g->n_head_kv * g->head_dim;
    tlm_awq_importance(stat, g->n_full, imp);
    if (g->n_head != g->n_head_kv)
        tlm_awq_kv_stat(stat, g->n_head, g->n_head_kv, g->head_dim, stat_small);
    else
        memcpy(stat_small, stat, (size_t)n_small * sizeof(float));
    if (isnan(*alpha)) *alpha = choose_alpha(g, stat_small, imp);
    tlm_awq_scales(stat_small, n_small, *alpha, s_small);
    expand_scales(g, s_small, s_full);
    for (int64_t j = 0; j < g->n_full; j++) imp[j] /= s_full[j] * s_full[j];
}

bool tlm_awq_scale_layer(const tlm_awq_layer *l, float *alpha) {
    const int64_t E = l->n_embd, F = l->n_ff, HD = l->head_dim;
    const int64_t QD = (int64_t)l->n_head * HD, KD = (int64_t)l->n_head_kv * HD;
    const int64_t n_max = QD > F ? (QD > E ? QD : E) : (F > E ? F : E);
    float *scratch = malloc((size_t)(3 * n_max) * sizeof(float));
    if (!scratch) return false;
    float *stat_small = scratch, *s_small = scratch + n_max, *s_full = scratch + 2 * n_max;
    const float *const *stat = l->stat;
    float *const *imp = l->imp;
    if (l->attn_norm) {
        if (stat[TLM_AWQ_OUT]) { /* first: it rescales Wv, an input of the next group */
            awq_group g = {{l->wo}, {E}, {l->wo_type}, 1, QD, HD, l->n_head, l->n_head_kv};
            scale_input(&g, stat[TLM_AWQ_OUT], &alpha[TLM_AWQ_OUT], imp[TLM_AWQ_OUT], stat_small,
                        s_small, s_full);
            tlm_awq_fold_rows(l->wv, l->bv, E, l->wo, E, l->n_head, l->n_head_kv, HD, s_small);
        }
        if (stat[TLM_AWQ_QKV]) {
            awq_group g = {{l->wq, l->wk, l->wv}, {QD, KD, KD},
                           {l->wq_type, l->wk_type, l->wv_type}, 3, E, E, 1, 1};
            scale_input(&g, stat[TLM_AWQ_QKV], &alpha[TLM_AWQ_QKV], imp[TLM_AWQ_QKV], stat_small,
                        s_small, s_full);
            float *mats[3] = {l->wq, l->wk, l->wv};
            tlm_awq_fold_norm(l->attn_norm, E, mats, g.rows, 3, s_full);
        }
    }
    if (l->ffn_norm) {
        if (stat[TLM_AWQ_DOWN]) {
            awq_group g = {{l->w_down}, {E}, {l->down_type}, 1, F, F, 1, 1};
            scale_input(&g, stat[TLM_AWQ_DOWN], &alpha[TLM_AWQ_DOWN], imp[TLM_AWQ_DOWN], stat_small,
                        s_small, s_full);
            tlm_awq_fold_rows(l->w_up, NULL, E, l->w_down, E, 1, 1, F, s_small);
        }
        if (stat[TLM_AWQ_GATE_UP]) {
            awq_group g = {{l->w_gate, l->w_up}, {F, F}, {l->gate_type, l->up_type}, 2, E, E, 1, 1};
            scale_input(&g, stat[TLM_AWQ_GATE_UP], &alpha[TLM_AWQ_GATE_UP], imp[TLM_AWQ_GATE_UP],
                        stat_small, s_small, s_full);
            float *mats[2] = {l->w_gate, l->w_up};
            tlm_awq_fold_norm(l->ffn_norm, E, mats, g.rows, 2, s_full);
        }
    }
    free(scratch);
    return true;
}
