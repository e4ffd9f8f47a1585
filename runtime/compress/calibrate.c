/*
 * calibrate.c — the fused calibration pass: one forward pass of the full
 * model over calibration text that measures, in the same pass,
 *   - the importance S = 1 - cos(X, Y) of every attention sublayer, MLP
 *     sublayer and whole block (arXiv 2406.15786; see trimlm.h), and
 *   - the mean of x^2 per input channel of every linear layer's input.
 *
 * The pass is layer-major. The residual stream of every calibration token
 * (n_tokens, n_embd) is held here; for each layer, each sequence in turn is
 * loaded into the context's step buffer, run through that one layer by
 * forward_layer_batch (positions 0..len-1, the layer's KV cache reused from
 * sequence to sequence), observed, and written back. Only one layer's
 * weights are touched at a time: a lazily loaded model (model.h) has each
 * layer materialised before its turn and released after it, so that the pass
 * holds one layer in f32 besides the embedding and output tables.
 *
 * Sums are kept so that the result does not depend on the thread count:
 * cosines go through a per-token buffer summed in token order (double), and
 * each channel's sum of squares is owned by one thread and added in token
 * order (double).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "alloc.h"
#include "calibrate.h"
#include "error.h"
#include "fileio.h"
#include "forward.h"
#include "kernels.h"
#include "model.h"
#include "trimlm.h"

#define CALIB_N_INPUTS 5 /* tlm_linear_input values */
#define CALIB_N_KINDS 3  /* tlm_sublayer_kind values */

struct tlm_calib {
    int32_t n_layer;
    int64_t n_tokens; /* tokens run */
    int32_t seq_len;
    char *text_name;
    double seconds;
    float *score[CALIB_N_KINDS];   /* (n_layer) each; NAN where the model lacks the
                                      sublayer (which is how its absence is known here) */
    float *stats[CALIB_N_INPUTS];  /* (n_layer, cols) each; OUTPUT: (cols) */
    int64_t cols[CALIB_N_INPUTS];  /* channels of each input */
};

tlm_calib_params tlm_calib_default_params(void) {
    return (tlm_calib_params){.text_file = NULL, .n_tokens = 16384, .seq_len = 512};
}

void tlm_calib_free(tlm_calib *c) {
    if (!c) return;
    tlm_free(c->text_name);
    for (int k = 0; k < CALIB_N_KINDS; k++) tlm_free(c->score[k]);
    for (int i = 0; i < CALIB_N_INPUTS; i++) tlm_free(c->stats[i]);
    tlm_free(c);
}

int32_t tlm_calib_n_layer(const tlm_calib *c) { return c ? c->n_layer : 0; }
int64_t tlm_calib_n_tokens(const tlm_calib *c) { return c ? c->n_tokens : 0; }
int32_t tlm_calib_seq_len(const tlm_calib *c) { return c ? c->seq_len : 0; }
const char *tlm_calib_text_name(const tlm_calib *c) { return c ? c->text_name : NULL; }
double tlm_calib_seconds(const tlm_calib *c) { return c ? c->seconds : 0.0; }

float tlm_calib_score(const tlm_calib *c, tlm_sublayer_kind kind, int32_t il) {
    if (!c || il < 0 || il >= c->n_layer || (unsigned)kind >= CALIB_N_KINDS) return NAN;
    return c->score[kind][il];
}

const float *tlm_calib_act_stats(const tlm_calib *c, int32_t il, tlm_linear_input which,
                                 int64_t *n) {
    if (n) *n = 0;
    if (!c || (unsigned)which >= CALIB_N_INPUTS) return NULL;
    if (which == TLM_INPUT_OUTPUT) {
        if (n) *n = c->cols[which];
        return c->stats[which];
    }
    if (il < 0 || il >= c->n_layer) return NULL;
    const tlm_sublayer_kind kind = which == TLM_INPUT_ATTN_QKV || which == TLM_INPUT_ATTN_OUT
                                       ? TLM_SUBLAYER_ATTN
                                       : TLM_SUBLAYER_MLP;
    if (isnan(c->score[kind][il])) return NULL; /* the model lacks the sublayer */
    if (n) *n = c->cols[which];
    return c->stats[which] + (size_t)il * (size_t)c->cols[which];
}

/* ------------------------------------------------------------- text */

/* The calibration text: the file mapped read-only, or the built-in one. */
typedef struct calib_text {
    const char *bytes;
    size_t len;
    const void *map; /* munmap(map, len) when not NULL */
} calib_text;

static tlm_status text_open(const char *path, calib_text *t, tlm_error *err) {
    *t = (calib_text){0};
    if (!path) {
        t->bytes = (const char *)tlm_calib_builtin_text;
        t->len = tlm_calib_builtin_text_len;
        return TLM_OK;
    }
    tlm_error e;
    if (map_whole_file(path, &t->map, &t->len, &e) != TLM_OK)
        return tlm_seterr(err, e.code, "calibration text %s", e.msg);
    t->bytes = t->map;
    if (t->len == 0) return tlm_seterr(err, TLM_ERR_FORMAT, "calibration text %s is empty", path);
    return TLM_OK;
}

static void text_close(calib_text *t) {
    if (t->map) munmap((void *)t->map, t->len);
    *t = (calib_text){0};
}

/* Tokens of the text (no BOS), at least `want` of them when the text has
 * that many. A large file is not tokenised whole: a prefix ending after a
 * newline, grown until it gives enough tokens. */
static int32_t tokenize_text(const tlm_model *m, const calib_text *t, const char *name,
                             int64_t want, int32_t **out, tlm_error *err) {
    *out = NULL;
    size_t bytes = (size_t)want * 16 + 4096;
    int32_t *toks = NULL;
    for (;;) {
        if (bytes >= t->len) {
            bytes = t->len;
        } else {
            const char *nl = memchr(t->bytes + bytes, '\n', t->len - bytes);
            bytes = nl ? (size_t)(nl - t->bytes) + 1 : t->len;
        }
        if (bytes > (size_t)INT32_MAX / 4) bytes = (size_t)INT32_MAX / 4;
        int32_t cap = (int32_t)bytes + 1;
        tlm_free(toks);
        toks = tlm_malloc((size_t)cap * sizeof *toks);
        if (!toks) {
            tlm_seterr(err, TLM_ERR_NOMEM, "calibration: out of memory tokenising %s", name);
            return -1;
        }
        int32_t n = tlm_tokenize(m, t->bytes, bytes, false, false, toks, cap, err);
        if (n > cap) { /* more ids than bytes (replacement characters): once more */
            tlm_free(toks);
            cap = n;
            if (!(toks = tlm_malloc((size_t)cap * sizeof *toks))) {
                tlm_seterr(err, TLM_ERR_NOMEM, "calibration: out of memory tokenising %s", name);
                return -1;
            }
            n = tlm_tokenize(m, t->bytes, bytes, false, false, toks, cap, err);
        }
        if (n < 0) {
            tlm_free(toks);
            return -1;
        }
        if (n >= want || bytes >= t->len || bytes >= (size_t)INT32_MAX / 4) {
            *out = toks;
            return n;
        }
        bytes *= 4;
    }
}

/* ------------------------------------------------------------- pass */

/* One sequence of the calibration tokens. */
typedef struct calib_seq {
    int64_t row; /* its first row in the residual stream */
    int32_t len;
} calib_seq;

/* One input's sums of squares to add in a parallel region. */
typedef struct squares_job {
    double *acc;      /* (cols) */
    const float *x;   /* (n, cols) */
    int64_t cols;
} squares_job;

/* What the observer works with during one (layer, sequence) step. */
typedef struct calib_run {
    const tlm_kernels *kern;
    int32_t n_threads, n_embd;
    float *stream_rows; /* (n, n_embd) the sequence's rows of the stream: the layer's input */
    bool attn_ran;      /* the layer's attention ran on this step (mid holds its output) */
    bool finished;      /* finish_step ran for this step */
    const float *attn_out, *ffn_in, *down_in; /* acts seen at those points */
    float *qkv_in;      /* (n_batch, n_embd) copy of the attention-normed input */
    float *mid;         /* (n_batch, n_embd) copy of the stream after the attention add */
    float *cosv;        /* (CALIB_N_KINDS, n_batch) per-token cosines of the step */
    double *sum_sq[CALIB_N_INPUTS];   /* (n_layer, cols) sums of x^2 per layer input */
    int64_t cols[CALIB_N_INPUTS];
    double cos_sum[CALIB_N_KINDS]; /* this layer's sum of per-token cosines */
} calib_run;

/* acc[ch] += x[i][ch]^2 over the n rows for this thread's range of channels
 * (whole cache lines where possible): each channel is summed by one thread
 * in token order, whatever the thread count. */
static void squares_slice(const squares_job *j, int32_t n, int ith, int nth) {
    int64_t per = ((j->cols + nth - 1) / nth + 15) & ~(int64_t)15;
    int64_t c0 = (int64_t)ith * per, c1 = c0 + per;
    if (c0 > j->cols) c0 = j->cols;
    if (c1 > j->cols) c1 = j->cols;
    for (int32_t i = 0; i < n && c1 > c0; i++) {
        const float *row = j->x + (size_t)i * (size_t)j->cols;
        for (int64_t ch = c0; ch < c1; ch++) j->acc[ch] += (double)row[ch] * (double)row[ch];
    }
}

static double cosine(const tlm_kernels *kern, const float *a, const float *b, int64_t n) {
    double ab = kern->dot_f32(a, b, n), aa = kern->dot_f32(a, a, n), bb = kern->dot_f32(b, b, n);
    /* two zero vectors are the same direction; a zero and a non-zero one are not */
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : aa == bb ? 1.0 : 0.0;
}

/* This thread's tokens of a finished layer: the cosines of its attention
 * (stream vs mid), MLP (mid, or the stream without attention, vs out) and
 * block (stream vs out), and out copied back into the stream. */
static void cosines_slice(calib_run *r, bool mlp, const float *out, int32_t n, int ith, int nth) {
    const int64_t E = r->n_embd;
    const bool attn = r->attn_ran;
    float *cos_attn = r->cosv, *cos_mlp = r->cosv + n, *cos_block = r->cosv + 2 * (size_t)n;
    int32_t i0 = (int32_t)((int64_t)n * ith / nth), i1 = (int32_t)((int64_t)n * (ith + 1) / nth);
    for (int32_t i = i0; i < i1; i++) {
        float *xi = r->stream_rows + (size_t)i * E;
        const float *yi = out + (size_t)i * E, *mi = r->mid + (size_t)i * E;
        if (attn) cos_attn[i] = (float)cosine(r->kern, xi, mi, E);
        if (mlp) cos_mlp[i] = (float)cosine(r->kern, attn ? mi : xi, yi, E);
        cos_block[i] = (float)cosine(r->kern, xi, yi, E);
        memcpy(xi, yi, (size_t)E * sizeof(float));
    }
}

/* The observer's work for a whole step, in one parallel region (on a busy
 * machine each region costs a wake-up of every thread, more than the work):
 * the sums of squares of n_jobs inputs (threads split channels), the
 * cosines and the copy-back (threads split tokens); then the cosines' sums
 * in token order. */
static void observe_region(calib_run *r, const squares_job *jobs, int n_jobs, int32_t n,
                           const float *out, bool mlp) {
#pragma omp parallel num_threads(r->n_threads)
    {
        int ith = omp_get_thread_num(), nth = omp_get_num_threads();
        for (int j = 0; j < n_jobs; j++) squares_slice(&jobs[j], n, ith, nth);
        cosines_slice(r, mlp, out, n, ith, nth);
    }
    const float *cos_attn = r->cosv, *cos_mlp = r->cosv + n, *cos_block = r->cosv + 2 * (size_t)n;
    double sa = 0.0, sm = 0.0, sb = 0.0;
    for (int32_t i = 0; i < n; i++) {
        if (r->attn_ran) sa += cos_attn[i];
        if (mlp) sm += cos_mlp[i];
        sb += cos_block[i];
    }
    r->cos_sum[TLM_SUBLAYER_ATTN] += sa;
    r->cos_sum[TLM_SUBLAYER_MLP] += sm;
    r->cos_sum[TLM_SUBLAYER_BLOCK] += sb;
    r->finished = true;
}

static squares_job job(calib_run *r, tlm_linear_input which, int32_t layer, const float *x) {
    return (squares_job){.acc = r->sum_sq[which] + (size_t)layer * (size_t)r->cols[which],
                         .x = x,
                         .cols = r->cols[which]};
}

/* The statistics of the step's attention inputs, when it ran: jobs[0..k). */
static int attention_jobs(calib_run *r, int32_t layer, squares_job *jobs) {
    if (!r->attn_ran) return 0;
    jobs[0] = job(r, TLM_INPUT_ATTN_QKV, layer, r->qkv_in);
    jobs[1] = job(r, TLM_INPUT_ATTN_OUT, layer, r->attn_out);
    return 2;
}

/* The observer (forward.h): everything is computed at the end of the step
 * (FWD_MLP_RESID, or after forward_layer_batch for a layer without MLP).
 * The attention-normed input is overwritten by the MLP's norm, so it is
 * copied; the other activations last until the end of the step. */
static void calib_observe(void *user, forward_point point, int32_t layer, const float *act,
                          int32_t n, int64_t cols) {
    calib_run *r = user;
    switch (point) {
    case FWD_ATTN_IN: break;
    case FWD_QKV_IN: memcpy(r->qkv_in, act, (size_t)n * (size_t)cols * sizeof(float)); break;
    case FWD_ATTN_OUT: r->attn_out = act; break;
    case FWD_ATTN_RESID:
        /* the attention's output and the MLP's input */
        memcpy(r->mid, act, (size_t)n * (size_t)cols * sizeof(float));
        r->attn_ran = true;
        break;
    case FWD_FFN_IN: r->ffn_in = act; break;
    case FWD_DOWN_IN: r->down_in = act; break;
    case FWD_MLP_RESID: {
        squares_job jobs[4];
        int k = attention_jobs(r, layer, jobs);
        jobs[k++] = job(r, TLM_INPUT_FFN_GATE_UP, layer, r->ffn_in);
        jobs[k++] = job(r, TLM_INPUT_FFN_DOWN, layer, r->down_in);
        observe_region(r, jobs, k, n, act, true);
        break;
    }
    }
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Cuts the text tokens into sequences of at most seq_len tokens, each
 * starting with BOS when the model adds one, until n_tokens are taken or
 * the text ends; a sequence needs 2 tokens. Fills tokens (BOS included) and
 * seqs; returns the number of sequences. */
static int32_t cut_sequences(const int32_t *text, int64_t n_text, int32_t bos, int64_t n_tokens,
                             int32_t seq_len, int32_t *tokens, calib_seq *seqs, int64_t *n_run) {
    int32_t n_seq = 0;
    int64_t at = 0, row = 0;
    int32_t with_bos = bos >= 0;
    while (row < n_tokens && at < n_text) {
        int64_t len = n_tokens - row < seq_len ? n_tokens - row : seq_len;
        int64_t take = len - with_bos;
        if (take > n_text - at) take = n_text - at;
        if (with_bos + take < 2) break;
        if (with_bos) tokens[row] = bos;
        memcpy(tokens + row + with_bos, text + at, (size_t)take * sizeof *text);
        seqs[n_seq++] = (calib_seq){.row = row, .len = (int32_t)(with_bos + take)};
        row += with_bos + take;
        at += take;
    }
    *n_run = row;
    return n_seq;
}

/* The layer-major pass over the sequences (their embeddings in stream);
 * fills cal's scores and statistics. */
static tlm_status run_layers(const tlm_model *m, tlm_context *ctx, float *stream,
                             const calib_seq *seqs, int32_t n_seq, int64_t n_run,
                             calib_run *r, tlm_calib *cal, const tlm_calib_params *p,
                             tlm_error *err) {
    const tlm_hparams *hp = &m->hp;
    const size_t E = (size_t)hp->n_embd;
    const forward_observer obs = {.observe = calib_observe, .user = r};
    float *x = forward_residual(ctx);
    int32_t max_len = 0;
    for (int32_t s = 0; s < n_seq; s++)
        if (seqs[s].len > max_len) max_len = seqs[s].len;
    forward_set_positions(ctx, max_len);
    const uint64_t total = (uint64_t)n_run * (uint64_t)hp->n_layer;
    for (int32_t l = 0; l < hp->n_layer; l++) {
        tlm_status st = model_layer_materialize(m, l, err);
        if (st != TLM_OK) return st;
        memset(r->cos_sum, 0, sizeof r->cos_sum);
        for (int32_t s = 0; s < n_seq; s++) {
            const int32_t n = seqs[s].len;
            float *rows = stream + (size_t)seqs[s].row * E;
            memcpy(x, rows, (size_t)n * E * sizeof(float));
            r->stream_rows = rows;
            r->attn_ran = r->finished = false;
            st = forward_layer_batch(ctx, l, n, &obs, err);
            if (st != TLM_OK) return st;
            /* a layer without MLP ends without an observer call: its
             * input is still in the stream, its output in x */
            if (!r->finished) {
                squares_job jobs[2];
                observe_region(r, jobs, attention_jobs(r, l, jobs), n, x, false);
            }
            uint64_t done = (uint64_t)l * (uint64_t)n_run + (uint64_t)(seqs[s].row + n);
            if (p->progress && !p->progress(p->user, "calibrate", done, total))
                return tlm_seterr(err, TLM_ERR_ARG, "calibration cancelled");
        }
        for (int kind = TLM_SUBLAYER_ATTN; kind <= TLM_SUBLAYER_MLP; kind++)
            cal->score[kind][l] = model_sublayer(m, l, (tlm_sublayer_kind)kind)
                                      ? (float)(1.0 - r->cos_sum[kind] / (double)n_run)
                                      : NAN;
        cal->score[TLM_SUBLAYER_BLOCK][l] =
            (float)(1.0 - r->cos_sum[TLM_SUBLAYER_BLOCK] / (double)n_run);
        model_layer_release(m, l);
    }

    /* the output head's input: the final norm of every token, a sequence at
     * a time through the step buffer */
    const tlm_kernels *kern = r->kern;
    double *out_sq = r->sum_sq[TLM_INPUT_OUTPUT];
    for (int32_t s = 0; s < n_seq; s++) {
        const int32_t n = seqs[s].len;
        const float *rows = stream + (size_t)seqs[s].row * E;
        const squares_job j = {.acc = out_sq, .x = x, .cols = (int64_t)E};
#pragma omp parallel num_threads(r->n_threads)
        {
            int ith = omp_get_thread_num(), nth = omp_get_num_threads();
            int32_t i0 = (int32_t)((int64_t)n * ith / nth);
            int32_t i1 = (int32_t)((int64_t)n * (ith + 1) / nth);
            for (int32_t i = i0; i < i1; i++)
                kern->rmsnorm_f32(x + (size_t)i * E, rows + (size_t)i * E, tensor_f32(&m->out_norm),
                                  (int64_t)E, hp->rms_eps);
#pragma omp barrier
            squares_slice(&j, n, ith, nth);
        }
    }
    return TLM_OK;
}

tlm_calib *tlm_calibrate(const tlm_model *m, const tlm_calib_params *params, tlm_error *err) {
    tlm_clearerr(err);
    const double t_start = now_seconds();
    if (!m) {
        tlm_seterr(err, TLM_ERR_ARG, "calibration: no model given");
        return NULL;
    }
    tlm_calib_params p = params ? *params : tlm_calib_default_params();
    const char *name = p.text_file ? p.text_file : "built-in";
    if (p.n_tokens < 2) {
        tlm_seterr(err, TLM_ERR_ARG, "calibration: n_tokens %lld is too few (at least 2)",
                   (long long)p.n_tokens);
        return NULL;
    }
    if (p.seq_len < 2) {
        tlm_seterr(err, TLM_ERR_ARG,
                   "calibration: seq_len %d is too short (a sequence needs at least 2 tokens)",
                   p.seq_len);
        return NULL;
    }
    if (p.n_threads < 0 || p.n_threads > TLM_MAX_THREADS) {
        tlm_seterr(err, TLM_ERR_ARG, "calibration: n_threads %d is not in 0..%d", p.n_threads,
                   TLM_MAX_THREADS);
        return NULL;
    }
    const tlm_hparams *hp = &m->hp;
    if (p.seq_len > p.n_tokens) p.seq_len = (int32_t)p.n_tokens;

    tlm_calib *cal = NULL;
    calib_text text = {0};
    int32_t *text_toks = NULL, *tokens = NULL;
    calib_seq *seqs = NULL;
    float *stream = NULL;
    tlm_context *ctx = NULL;
    calib_run run = {0};
    tlm_status st = TLM_ERR_NOMEM;

    /* ---- tokens and sequences */
    if ((st = text_open(p.text_file, &text, err)) != TLM_OK) goto fail;
    const int32_t bos = tlm_model_adds_bos(m) ? tlm_token_bos(m) : -1;
    const int64_t n_text =
        tokenize_text(m, &text, name, p.n_tokens, &text_toks, err); /* BOS not counted: enough */
    if (n_text < 0) {
        st = err ? err->code : TLM_ERR_FORMAT;
        goto fail;
    }
    /* each sequence holds at least one text token: at most 2 n_text tokens run */
    int64_t max_run = p.n_tokens < 2 * n_text ? p.n_tokens : 2 * n_text;
    int64_t max_seqs = max_run / p.seq_len + 1 < n_text + 1 ? max_run / p.seq_len + 1 : n_text + 1;
    if (!(tokens = tlm_malloc((size_t)(max_run + 1) * sizeof *tokens)) ||
        !(seqs = tlm_malloc((size_t)max_seqs * sizeof *seqs))) {
        tlm_seterr(err, TLM_ERR_NOMEM, "calibration: out of memory for %lld tokens",
                   (long long)p.n_tokens);
        goto fail;
    }
    int64_t n_run = 0;
    int32_t n_seq = cut_sequences(text_toks, n_text, bos, p.n_tokens, p.seq_len, tokens, seqs,
                                  &n_run);
    if (n_seq == 0) {
        st = tlm_seterr(err, TLM_ERR_FORMAT,
                        "calibration text %s gives %lld token%s: a sequence needs at least 2",
                        name, (long long)n_text, n_text == 1 ? "" : "s");
        goto fail;
    }
    for (int64_t i = 0; i < n_run; i++)
        if (tokens[i] < 0 || tokens[i] >= hp->n_vocab) {
            st = tlm_seterr(err, TLM_ERR_FORMAT, "calibration: token %d is outside the vocabulary",
                            tokens[i]);
            goto fail;
        }
    text_close(&text);
    tlm_free(text_toks);
    text_toks = NULL;

    /* ---- result */
    cal = tlm_calloc(1, sizeof *cal);
    if (!cal) goto nomem;
    const int32_t NL = hp->n_layer;
    cal->n_layer = NL;
    cal->n_tokens = n_run;
    cal->seq_len = p.seq_len;
    cal->cols[TLM_INPUT_ATTN_QKV] = hp->n_embd;
    cal->cols[TLM_INPUT_ATTN_OUT] = (int64_t)hp->n_head * hp->head_dim;
    cal->cols[TLM_INPUT_FFN_GATE_UP] = hp->n_embd;
    cal->cols[TLM_INPUT_FFN_DOWN] = hp->n_ff;
    cal->cols[TLM_INPUT_OUTPUT] = hp->n_embd;
    if (!(cal->text_name = tlm_strdup(name))) goto nomem;
    for (int k = 0; k < CALIB_N_KINDS; k++)
        if (!(cal->score[k] = tlm_malloc((size_t)NL * sizeof(float)))) goto nomem;
    for (int i = 0; i < CALIB_N_INPUTS; i++) {
        size_t rows = i == TLM_INPUT_OUTPUT ? 1 : (size_t)NL;
        if (!(cal->stats[i] = tlm_calloc(rows * (size_t)cal->cols[i], sizeof(float))) ||
            !(run.sum_sq[i] = tlm_calloc(rows * (size_t)cal->cols[i], sizeof(double))))
            goto nomem;
        run.cols[i] = cal->cols[i];
    }

    /* ---- context sized to one sequence, and the embedded stream */
    tlm_context_params cp = tlm_context_default_params();
    cp.n_ctx = p.seq_len;
    cp.n_batch = p.seq_len;
    cp.n_threads = p.n_threads;
    cp.kv_type = TLM_KV_F32; /* the scores of the unquantized model */
    if (!(ctx = tlm_context_new(m, &cp, err))) {
        st = err ? err->code : TLM_ERR_NOMEM;
        goto fail;
    }
    const size_t E = (size_t)hp->n_embd;
    if (!(stream = tlm_malloc_aligned((size_t)n_run * E * sizeof(float))) ||
        !(run.mid = tlm_malloc_aligned((size_t)p.seq_len * E * sizeof(float))) ||
        !(run.qkv_in = tlm_malloc_aligned((size_t)p.seq_len * E * sizeof(float))) ||
        !(run.cosv = tlm_malloc((size_t)CALIB_N_KINDS * (size_t)p.seq_len * sizeof(float)))) {
        tlm_seterr(err, TLM_ERR_NOMEM,
                   "calibration: out of memory for the residual stream of %lld tokens (%zu bytes)",
                   (long long)n_run, (size_t)n_run * E * sizeof(float));
        goto fail;
    }
    for (int32_t s = 0; s < n_seq; s++) {
        forward_embed(ctx, tokens + seqs[s].row, seqs[s].len);
        memcpy(stream + (size_t)seqs[s].row * E, forward_residual(ctx),
               (size_t)seqs[s].len * E * sizeof(float));
    }
    run.kern = tlm_kernels_best();
    run.n_threads = forward_n_threads(ctx);
    run.n_embd = hp->n_embd;

    /* oneDNN takes its thread count from the calling thread's OpenMP setting */
    const int caller_threads = omp_get_max_threads();
    omp_set_num_threads(run.n_threads);
    st = run_layers(m, ctx, stream, seqs, n_seq, n_run, &run, cal, &p, err);
    omp_set_num_threads(caller_threads);
    if (st != TLM_OK) goto fail;

    for (int i = 0; i < CALIB_N_INPUTS; i++) {
        size_t count = (i == TLM_INPUT_OUTPUT ? 1 : (size_t)NL) * (size_t)cal->cols[i];
        for (size_t j = 0; j < count; j++)
            cal->stats[i][j] = (float)(run.sum_sq[i][j] / (double)n_run);
    }
    cal->seconds = now_seconds() - t_start;
    goto done;

nomem:
    st = tlm_seterr(err, TLM_ERR_NOMEM, "calibration: out of memory");
fail:
    tlm_calib_free(cal);
    cal = NULL;
done:
    (void)st;
    text_close(&text);
    tlm_free(text_toks);
    tlm_free(tokens);
    tlm_free(seqs);
    tlm_free(stream);
    tlm_free(run.mid);
    tlm_free(run.qkv_in);
    tlm_free(run.cosv);
    for (int i = 0; i < CALIB_N_INPUTS; i++) tlm_free(run.sum_sq[i]);
    tlm_context_free(ctx);
    return cal;
}
