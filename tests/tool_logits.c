/*
 * tool_logits.c — runs a model through the public API only (trimlm.h) and
 * writes what the reference comparisons need.
 *
 *   tool_logits MODEL --tokens 1,2,3 [--mode prefill|decode|mixed] [-t N]
 *               [-b N_BATCH] [-c N_CTX] [--kv f16|f32|int8] OUT.f32
 *       logits of every token, (n_tokens, n_vocab) little-endian f32.
 *       The KV cache is f32 unless --kv says otherwise (the runtime's
 *       default is f16).
 *       prefill: one tlm_decode call with all_logits; decode: one token per
 *       call; mixed: calls of 3, 4, 1, 2, 5, 1, 2, ... tokens, alternating
 *       all_logits and last-only; rows a last-only call does not keep are
 *       written as NaN.
 *   tool_logits MODEL --tokens 1,2,3 --generate N [-t N] OUT.txt
 *       greedy continuation: N token ids, comma-separated, one line.
 *   tool_logits MODEL --bench N_PROMPT,N_GEN [-t N]
 *       prints prefill and decode tokens/s (token ids 1.. as the prompt).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "trimlm.h"

static int die(const char *what, const tlm_error *err) {
    fprintf(stderr, "tool_logits: %s\n", err ? err->msg : what);
    return 1;
}

static int parse_tokens(const char *s, int32_t **out) {
    int cap = 16, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    while (ids && *s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX) {
            free(ids);
            return -1;
        }
        if (n == cap) {
            int32_t *grown = realloc(ids, (size_t)(cap *= 2) * sizeof *ids);
            if (!grown) break;
            ids = grown;
        }
        ids[n++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            free(ids);
            return -1;
        }
    }
    *out = ids;
    return n;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Logits of every token into out (n, n_vocab) following the mode. */
static int run_logits(tlm_context *ctx, const int32_t *toks, int n, int32_t V, const char *mode,
                      float *out) {
    tlm_error err;
    size_t row = (size_t)V * sizeof(float);
    if (!strcmp(mode, "prefill")) {
        if (tlm_decode(ctx, toks, n, true, &err)) return die("decode", &err);
        for (int i = 0; i < n; i++) memcpy(out + (size_t)i * V, tlm_get_logits(ctx, i), row);
    } else if (!strcmp(mode, "decode")) {
        for (int i = 0; i < n; i++) {
            if (tlm_decode(ctx, toks + i, 1, false, &err)) return die("decode", &err);
            memcpy(out + (size_t)i * V, tlm_get_logits(ctx, -1), row);
        }
    } else if (!strcmp(mode, "mixed")) {
        static const int chunks[] = {3, 4, 1, 2, 5, 1, 2};
        int done = 0, c = 0;
        while (done < n) {
            int k = chunks[c % 7];
            if (k > n - done) k = n - done;
            bool all = c % 2 == 0;
            if (tlm_decode(ctx, toks + done, k, all, &err)) return die("decode", &err);
            for (int i = 0; i < k; i++) {
                const float *l = tlm_get_logits(ctx, i);
                if (l)
                    memcpy(out + (size_t)(done + i) * V, l, row);
                else
                    for (int32_t j = 0; j < V; j++) out[(size_t)(done + i) * V + j] = NAN;
            }
            done += k;
            c++;
        }
    } else {
        fprintf(stderr, "tool_logits: unknown mode '%s' (prefill|decode|mixed)\n", mode);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *out_path = NULL, *tokens_arg = NULL, *mode = "prefill";
    const char *bench_arg = NULL;
    int n_threads = 1, n_batch = 0, n_ctx = 0, n_generate = 0;
    int32_t kv_type = TLM_KV_F32; /* the exact path the reference comparisons check */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tokens") && next) tokens_arg = argv[++i];
        else if (!strcmp(a, "--mode") && next) mode = argv[++i];
        else if (!strcmp(a, "-t") && next) n_threads = atoi(argv[++i]);
        else if (!strcmp(a, "-b") && next) n_batch = atoi(argv[++i]);
        else if (!strcmp(a, "-c") && next) n_ctx = atoi(argv[++i]);
        else if (!strcmp(a, "--kv") && next) {
            kv_type = tlm_kv_type_from_name(argv[++i]);
            if (kv_type < 0) {
                fprintf(stderr, "tool_logits: unknown --kv '%s' (f16|f32|int8)\n", argv[i]);
                return 2;
            }
        }
        else if (!strcmp(a, "--generate") && next) n_generate = atoi(argv[++i]);
        else if (!strcmp(a, "--bench") && next) bench_arg = argv[++i];
        else if (a[0] == '-') {
            fprintf(stderr, "tool_logits: unknown option %s\n", a);
            return 2;
        } else if (!model_path) model_path = a;
        else out_path = a;
    }
    if (!model_path || (!bench_arg && (!tokens_arg || !out_path))) {
        fprintf(stderr, "usage: tool_logits MODEL --tokens 1,2,3 [--mode prefill|decode|mixed] "
                        "[--generate N] [-t N] [-b N] [-c N] [--kv f16|f32|int8] OUT\n"
                        "       tool_logits MODEL --bench N_PROMPT,N_GEN [-t N]\n");
        return 2;
    }

    tlm_error err;
    tlm_model *model = tlm_model_load(model_path, &err);
    if (!model) return die("load", &err);
    tlm_model_info info;
    tlm_model_get_info(model, &info);
    int32_t V = info.n_vocab;
    tlm_context_params cp = tlm_context_default_params();
    cp.n_threads = n_threads;
    cp.n_batch = n_batch;
    cp.n_ctx = n_ctx;
    cp.kv_type = kv_type;
    tlm_context *ctx = tlm_context_new(model, &cp, &err);
    if (!ctx) return die("context", &err);
    int rc = 0;

    if (bench_arg) {
        int n_prompt = 0, n_gen = 0;
        if (sscanf(bench_arg, "%d,%d", &n_prompt, &n_gen) != 2 || n_prompt < 1 || n_gen < 1) {
            fprintf(stderr, "tool_logits: --bench wants N_PROMPT,N_GEN\n");
            return 2;
        }
        int32_t *prompt = malloc((size_t)n_prompt * sizeof *prompt);
        for (int i = 0; i < n_prompt; i++) prompt[i] = 1 + i % (V - 1);
        /* warm-up: oneDNN JIT and first-touch of the KV cache */
        if (tlm_decode(ctx, prompt, n_prompt < 16 ? n_prompt : 16, false, &err)) return die("decode", &err);
        tlm_context_reset(ctx);
        double t0 = now_s();
        if (tlm_decode(ctx, prompt, n_prompt, false, &err)) return die("decode", &err);
        double t1 = now_s();
        int32_t tok = argmax(tlm_get_logits(ctx, -1), V);
        for (int i = 0; i < n_gen; i++) {
            if (tlm_decode(ctx, &tok, 1, false, &err)) return die("decode", &err);
            tok = argmax(tlm_get_logits(ctx, -1), V);
        }
        double t2 = now_s();
        printf("isa %s threads %d: prefill %d tokens %.1f tok/s, decode %d tokens %.1f tok/s\n",
               tlm_isa_name(), n_threads, n_prompt, n_prompt / (t1 - t0), n_gen, n_gen / (t2 - t1));
        free(prompt);
    } else {
        int32_t *toks = NULL;
        int n = parse_tokens(tokens_arg, &toks);
        if (n <= 0) {
            fprintf(stderr, "tool_logits: bad --tokens '%s'\n", tokens_arg);
            return 2;
        }
        FILE *f = fopen(out_path, "wb");
        if (!f) {
            fprintf(stderr, "tool_logits: %s: %s\n", out_path, strerror(errno));
            return 1;
        }
        if (n_generate > 0) {
            if (tlm_decode(ctx, toks, n, false, &err)) return die("decode", &err);
            for (int i = 0; i < n_generate; i++) {
                int32_t tok = argmax(tlm_get_logits(ctx, -1), V);
                fprintf(f, i ? ",%d" : "%d", tok);
                if (i + 1 < n_generate && tlm_decode(ctx, &tok, 1, false, &err))
                    return die("decode", &err);
            }
            fprintf(f, "\n");
        } else {
            float *out = malloc((size_t)n * (size_t)V * sizeof(float));
            rc = run_logits(ctx, toks, n, V, mode, out);
            if (!rc && fwrite(out, sizeof(float), (size_t)n * V, f) != (size_t)n * V) rc = 1;
            free(out);
        }
        if (fclose(f) != 0) rc = 1;
        free(toks);
    }
    tlm_context_free(ctx);
    tlm_model_free(model);
    return rc;
}
