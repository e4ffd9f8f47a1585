/*
 * calib-cost.c — `calib-cost`: what the fused calibration pass costs over a
 * plain forward pass of the same tokens.
 *
 * Loads a model once, then per repetition runs (order alternating, so that
 * both see the same machine load on average):
 *   calibrate  tlm_calibrate over N tokens of the text, sequences of L;
 *   prefill    tlm_decode over the same sequences (cut the same way: BOS
 *              first when the model adds one, counted in L), each from an
 *              empty KV cache, keeping only the last token's logits.
 * Prints the mean ± sample stddev of both wall times and the ratio of the
 * means, as text or one JSON object, and the process CPU time of each (all
 * threads; with OMP_WAIT_POLICY=passive it counts work, not spinning, so it
 * moves less than wall time on a busy machine).
 * --only calibrate|prefill runs just one of them (e.g. under `perf stat`).
 *
 *   calib-cost MODEL [--text FILE] [-n N] [-L L] [-t T] [-r R] [--warmup W]
 *              [--only calibrate|prefill] [--json]
 *
 * The default text is the calibration text built into the library (the same
 * file, read from the source tree).
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "trimlm.h"

#ifndef CALIB_COST_DEFAULT_TEXT
#define CALIB_COST_DEFAULT_TEXT "data/calib/wikitext2-valid-excerpt.txt"
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *grown = realloc(buf, cap *= 2);
            if (!grown) free(buf);
            buf = grown;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static void mean_sd(const double *x, int n, double *mean, double *sd) {
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) s2 += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : 0.0;
}

/* The plain forward over the sequences; seconds, or -1 on failure. */
static double run_prefill(tlm_context *ctx, const int32_t *toks, int64_t n_text, int32_t bos,
                          int64_t n_tokens, int32_t seq_len, int32_t *buf, int64_t *ran) {
    tlm_error err;
    double t0 = now_s();
    int64_t at = 0, total = 0;
    int with_bos = bos >= 0;
    while (total < n_tokens && at < n_text) {
        int64_t len = n_tokens - total < seq_len ? n_tokens - total : seq_len;
        int64_t take = len - with_bos;
        if (take > n_text - at) take = n_text - at;
        if (with_bos + take < 2) break;
        if (with_bos) buf[0] = bos;
        memcpy(buf + with_bos, toks + at, (size_t)take * sizeof *toks);
        tlm_context_reset(ctx);
        if (tlm_decode(ctx, buf, (int32_t)(with_bos + take), false, &err) != TLM_OK) {
            fprintf(stderr, "calib-cost: %s\n", err.msg);
            return -1;
        }
        at += take;
        total += with_bos + take;
    }
    *ran = total;
    return now_s() - t0;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *text_path = CALIB_COST_DEFAULT_TEXT;
    int64_t n_tokens = 16384;
    int seq_len = 512, threads = 0, reps = 3, warmup = 1;
    bool json = false;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--text") && more) text_path = argv[++i];
        else if (!strcmp(a, "-n") && more) n_tokens = atoll(argv[++i]);
        else if (!strcmp(a, "-L") && more) seq_len = atoi(argv[++i]);
        else if (!strcmp(a, "-t") && more) threads = atoi(argv[++i]);
        else if (!strcmp(a, "-r") && more) reps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && more) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--json")) json = true;
        else if (!strcmp(a, "--only") && more) only = argv[++i];
        else if (a[0] != '-' && !model_path) model_path = a;
        else {
            fprintf(stderr,
                    "usage: calib-cost MODEL [--text FILE] [-n TOKENS] [-L SEQ_LEN] [-t THREADS] "
                    "[-r REPS] [--warmup W] [--json]\n");
            return 2;
        }
    }
    bool do_cal = !only || !strcmp(only, "calibrate"), do_pre = !only || !strcmp(only, "prefill");
    if (!model_path || n_tokens < 2 || seq_len < 2 || reps < 1 || reps > 100 || warmup < 0 ||
        (!do_cal && !do_pre) || (json && only)) {
        fprintf(stderr, "calib-cost: need a model, -n >= 2, -L >= 2, 1 <= -r <= 100, "
                        "--only calibrate|prefill (not with --json)\n");
        return 2;
    }

    tlm_error err;
    size_t len = 0;
    char *text = read_file(text_path, &len);
    if (!text || len == 0) {
        fprintf(stderr, "calib-cost: cannot read %s\n", text_path);
        return 1;
    }
    tlm_model *m = tlm_model_load(model_path, &err);
    if (!m) {
        fprintf(stderr, "calib-cost: %s\n", err.msg);
        return 1;
    }
    int32_t cap = (int32_t)len + 1;
    int32_t *toks = malloc((size_t)cap * sizeof *toks), *buf = malloc((size_t)seq_len * sizeof *buf);
    int32_t n_text = toks ? tlm_tokenize(m, text, len, false, false, toks, cap, &err) : -1;
    if (n_text < 0 || n_text > cap || !buf) {
        fprintf(stderr, "calib-cost: cannot tokenise %s\n", text_path);
        return 1;
    }
    int32_t bos = tlm_model_adds_bos(m) ? tlm_token_bos(m) : -1;

    tlm_context_params cp = tlm_context_default_params();
    cp.n_ctx = cp.n_batch = seq_len;
    cp.n_threads = threads;
    cp.kv_type = TLM_KV_F32; /* as the calibration pass runs */
    tlm_context *ctx = tlm_context_new(m, &cp, &err);
    if (!ctx) {
        fprintf(stderr, "calib-cost: %s\n", err.msg);
        return 1;
    }
    tlm_calib_params p = tlm_calib_default_params();
    p.text_file = text_path;
    p.n_tokens = n_tokens;
    p.seq_len = seq_len;
    p.n_threads = threads;

    double t_cal[100] = {0}, t_pre[100] = {0}, c_cal[100] = {0}, c_pre[100] = {0};
    int64_t ran_cal = 0, ran_pre = 0;
    for (int r = -warmup; r < reps; r++) {
        for (int k = 0; k < 2; k++) {
            bool calib_turn = (k == 0) == (r % 2 == 0);
            if (calib_turn && do_cal) {
                double t0 = now_s(), c0 = cpu_s();
                tlm_calib *cal = tlm_calibrate(m, &p, &err);
                double t = now_s() - t0, ct = cpu_s() - c0;
                if (!cal) {
                    fprintf(stderr, "calib-cost: %s\n", err.msg);
                    return 1;
                }
                ran_cal = tlm_calib_n_tokens(cal);
                tlm_calib_free(cal);
                if (r >= 0) t_cal[r] = t, c_cal[r] = ct;
            } else if (!calib_turn && do_pre) {
                double c0 = cpu_s();
                double t = run_prefill(ctx, toks, n_text, bos, n_tokens, seq_len, buf, &ran_pre);
                if (t < 0) return 1;
                if (r >= 0) t_pre[r] = t, c_pre[r] = cpu_s() - c0;
            }
        }
        if (r >= 0 && !json)
            fprintf(stderr, "rep %d: calibrate %.3f s (cpu %.3f s), prefill %.3f s (cpu %.3f s)\n",
                    r + 1, t_cal[r], c_cal[r], t_pre[r], c_pre[r]);
    }
    double mc, sc, mp, sp, mcc, scc, mcp, scp;
    mean_sd(t_cal, reps, &mc, &sc);
    mean_sd(t_pre, reps, &mp, &sp);
    mean_sd(c_cal, reps, &mcc, &scc);
    mean_sd(c_pre, reps, &mcp, &scp);
    tlm_model_info info;
    tlm_model_get_info(m, &info);
    int t_used = threads ? threads : tlm_physical_cores();
    if (json) {
        printf("{\"model\":\"%s\",\"tokens\":%lld,\"seq_len\":%d,\"threads\":%d,\"reps\":%d,"
               "\"calibrate_s\":%.4f,\"calibrate_sd\":%.4f,\"prefill_s\":%.4f,\"prefill_sd\":%.4f,"
               "\"ratio\":%.4f,\"calibrate_cpu_s\":%.4f,\"prefill_cpu_s\":%.4f,\"cpu_ratio\":%.4f}\n",
               info.name, (long long)ran_cal, seq_len, t_used, reps, mc, sc, mp, sp, mc / mp, mcc,
               mcp, mcc / mcp);
    } else {
        printf("model %s, %lld tokens (prefill %lld) in sequences of %d, %d threads, %d reps after %d warm-up\n",
               info.name, (long long)ran_cal, (long long)ran_pre, seq_len, t_used, reps, warmup);
        printf("calibrate  %8.3f ± %.3f s  (%.0f tokens/s)  cpu %.3f ± %.3f s\n", mc, sc,
               ran_cal / mc, mcc, scc);
        printf("prefill    %8.3f ± %.3f s  (%.0f tokens/s)  cpu %.3f ± %.3f s\n", mp, sp,
               ran_pre / mp, mcp, scp);
        if (do_cal && do_pre) printf("ratio      %8.3f wall, %.3f cpu\n", mc / mp, mcc / mcp);
    }
    tlm_context_free(ctx);
    tlm_model_free(m);
    free(toks);
    free(buf);
    free(text);
    return 0;
}
