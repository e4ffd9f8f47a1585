/*
 * cmd_bench.c — `trimlm bench`: prefill and decode speed, measured the way
 * llama.cpp's llama-bench does so that the two compare (bench/compare-llamacpp):
 *
 *   pp<P>:      decode P prompt tokens in one batch, time it
 *   tg<N>:      decode N tokens one tlm_decode call each (as generation
 *               does), time the whole run
 *   pp<P>+tg<N> (-pg P,N): the prompt, then N generated tokens; tokens/s is
 *               (P + N) / total time (llama-bench's pg test)
 *   " @ d<D>"   (-d D): each run starts with D tokens already in the KV cache
 *               (filled once, untimed; every run rewinds to D with
 *               tlm_context_truncate); without -d, from an empty cache
 *
 * Prompt and generated tokens are seeded pseudo-random ids in [0, n_vocab)
 * (BOS first when the model adds one), so the speed does not depend on a text.
 * Each test runs --warmup times unrecorded, then -r times; tokens/s is the
 * mean over those repetitions and the stddev their sample standard deviation.
 * Time to first token: the prompt batch (pp, pg), the first decode call (tg).
 *
 * --compare MODEL_B runs a second model in the same process, repetition by
 * repetition after the first on the same tokens, so that both see the same
 * machine state; the ratio rows give B/A per test: the mean of the per-run
 * ratios, their stddev, min and max.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"
#include "model_registry.h"

static const char bench_usage[] =
    "usage: trimlm bench -m MODEL [options]\n"
    "\n"
    "Measures prefill (pp) and decode (tg) speed in tokens/s, like llama-bench:\n"
    "for each thread count, pp<P> decodes P prompt tokens in one batch and\n"
    "tg<N> decodes N tokens one at a time, both from an empty KV cache.\n"
    "\n"
    "  -m, --model MODEL       GGUF file, Hugging Face directory, registry name or URL\n"
    "  -p, --n-prompt LIST     prompt lengths of the pp tests, comma-separated;\n"
    "                          0 = no pp test (default 512)\n"
    "  -n, --n-gen LIST        token counts of the tg tests; 0 = no tg test (default 128)\n"
    "  -pg, --prompt-gen P,N   a prompt of P tokens then N generated ones, timed\n"
    "                          together (may be repeated)\n"
    "  -d, --n-depth LIST      run every test with this many tokens already in the\n"
    "                          KV cache (default 0)\n"
    "  -r, --repetitions N     timed runs per test (default 5)\n"
    "      --warmup N          untimed runs before them (default 1)\n"
    "  -t, --threads LIST      thread counts, comma-separated (default: physical cores)\n"
    "      --compare MODEL_B   also run MODEL_B, interleaved run by run, and report B/A\n"
    "  -o, --output FORMAT     md (a table), json (a list of objects) or csv (default md)\n"
    "      --seed S            seed of the random token ids (default 42)\n"
    "      --kv TYPE           KV cache: f16 (default), f32 or int8\n"
    "  -h, --help              this help\n"
    "\n"
    "examples:\n"
    "  trimlm bench -m smollm2-135m-instruct -p 512 -n 128 -r 5 -t 1,2 -o json\n"
    "  trimlm bench -m model.tlm --compare smollm2-135m-instruct -p 512 -n 128 -pg 512,128 -d 0,1024\n";

/* ------------------------------------------------------------ options */

#define BENCH_MAX_LIST 16 /* entries of a comma-separated -p / -n / -t list */

typedef enum bench_format { FORMAT_MD, FORMAT_JSON, FORMAT_CSV } bench_format;

typedef struct int_list {
    int64_t v[BENCH_MAX_LIST];
    int n;
} int_list;

typedef struct bench_options {
    const char *model;
    const char *model_b; /* --compare */
    int_list n_prompt, n_gen, threads, depth;
    int_list pg_prompt, pg_gen; /* -pg P,N pairs */
    int64_t reps, warmup, seed;
    int32_t kv_type; /* --kv: tlm_kv_type */
    bench_format format;
} bench_options;

/* Parses the current flag's value as "a,b,c" of integers in [lo, hi] into
 * *out; prints one usage line and sets a->status when it is not. */
static bool cli_int_list(cli_args *a, int64_t lo, int64_t hi, const char *expected, int_list *out) {
    char flag[64];
    snprintf(flag, sizeof flag, "%s", a->flag);
    const char *text = cli_value(a);
    if (!text) return false;
    int_list parsed = {.n = 0};
    const char *at = text;
    for (;;) {
        errno = 0;
        char *end = NULL;
        long long v = strtoll(at, &end, 10);
        bool ok = errno == 0 && end != at && (*end == ',' || *end == '\0') && v >= lo && v <= hi &&
                  parsed.n < BENCH_MAX_LIST && !(at[0] == ' ' || at[0] == '+');
        if (!ok) {
            if (parsed.n >= BENCH_MAX_LIST)
                cli_usage_error(a->cmd, "invalid value '%s' for %s (at most %d entries)", text,
                                flag, BENCH_MAX_LIST);
            else
                cli_usage_error(a->cmd, "invalid value '%s' for %s (expected %s)", text, flag,
                                expected);
            a->status = CLI_EXIT_USAGE;
            return false;
        }
        parsed.v[parsed.n++] = v;
        if (*end == '\0') break;
        at = end + 1;
    }
    *out = parsed;
    return true;
}

/* -pg P,N: appends one pair to the -pg lists. */
static void cli_pg_pair(cli_args *a, bench_options *o) {
    char flag[64];
    snprintf(flag, sizeof flag, "%s", a->flag);
    int_list pair;
    if (!cli_int_list(a, 1, 1 << 20, "two positive integers P,N", &pair)) return;
    if (pair.n != 2) {
        a->status = cli_usage_error(a->cmd, "invalid value for %s (expected two positive integers P,N)", flag);
        return;
    }
    if (o->pg_prompt.n >= BENCH_MAX_LIST) {
        a->status = cli_usage_error(a->cmd, "at most %d %s tests", BENCH_MAX_LIST, flag);
        return;
    }
    o->pg_prompt.v[o->pg_prompt.n++] = pair.v[0];
    o->pg_gen.v[o->pg_gen.n++] = pair.v[1];
}

/* Returns 0 to go on, else an exit code (help printed, or a usage error). */
static int parse_bench_args(int argc, char **argv, bench_options *o, bool *done) {
    *o = (bench_options){.n_prompt = {.v = {512}, .n = 1}, .n_gen = {.v = {128}, .n = 1},
                         .depth = {.v = {0}, .n = 1},
                         .reps = 5, .warmup = 1, .seed = 42, .format = FORMAT_MD};
    static const char counts[] = "a comma-separated list of integers >= 0";
    cli_args a;
    cli_args_init(&a, "bench", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) { fputs(bench_usage, stdout); *done = true; return 0; }
        else if (cli_flag(&a, "-m", "--model")) o->model = cli_value(&a);
        else if (cli_flag(&a, NULL, "--compare")) o->model_b = cli_value(&a);
        else if (cli_flag(&a, "-p", "--n-prompt")) cli_int_list(&a, 0, 1 << 20, counts, &o->n_prompt);
        else if (cli_flag(&a, "-n", "--n-gen")) cli_int_list(&a, 0, 1 << 20, counts, &o->n_gen);
        else if (cli_flag(&a, "-pg", "--prompt-gen")) cli_pg_pair(&a, o);
        else if (cli_flag(&a, "-d", "--n-depth")) cli_int_list(&a, 0, 1 << 24, counts, &o->depth);
        else if (cli_flag(&a, "-t", "--threads")) {
            char expected[96];
            snprintf(expected, sizeof expected, "a comma-separated list of thread counts from 1 to %d",
                     TLM_MAX_THREADS);
            if (cli_int_list(&a, 1, TLM_MAX_THREADS, expected, &o->threads))
                for (int i = 0; i < o->threads.n; i++) cli_warn_threads(o->threads.v[i]);
        }
        else if (cli_flag(&a, "-r", "--repetitions")) cli_int(&a, 1, 100000, "a positive integer", &o->reps);
        else if (cli_flag(&a, NULL, "--warmup")) cli_int(&a, 0, 100000, "an integer >= 0", &o->warmup);
        else if (cli_flag(&a, NULL, "--seed")) cli_int(&a, 0, INT64_MAX, "an integer >= 0", &o->seed);
        else if (cli_flag(&a, NULL, "--kv")) cli_kv_type(&a, &o->kv_type);
        else if (cli_flag(&a, "-o", "--output")) {
            char flag[64];
            snprintf(flag, sizeof flag, "%s", a.flag);
            const char *f = cli_value(&a);
            if (!f) break;
            if (strcmp(f, "md") == 0) o->format = FORMAT_MD;
            else if (strcmp(f, "json") == 0) o->format = FORMAT_JSON;
            else if (strcmp(f, "csv") == 0) o->format = FORMAT_CSV;
            else {
                a.status = cli_usage_error("bench", "invalid value '%s' for %s (expected md, json or csv)",
                                           f, flag);
            }
        }
        else cli_unknown(&a);
    }
    if (a.status) return a.status;
    if (!o->model) return cli_usage_error("bench", "no model given (-m MODEL)");
    bool any = o->pg_prompt.n > 0;
    for (int i = 0; i < o->n_prompt.n; i++) any |= o->n_prompt.v[i] > 0;
    for (int i = 0; i < o->n_gen.n; i++) any |= o->n_gen.v[i] > 0;
    if (!any) return cli_usage_error("bench", "nothing to measure: -p and -n are both 0");
    return 0;
}

/* ------------------------------------------------------------ results */

typedef enum bench_kind { TEST_PP, TEST_TG, TEST_PG } bench_kind;

typedef struct bench_result {
    bench_kind kind;
    int32_t n_prompt;     /* P of pp<P> and pp<P>+tg<N>; 0 for tg */
    int32_t n_gen;        /* N of tg<N> and pp<P>+tg<N>; 0 for pp */
    int32_t n_depth;      /* tokens in the KV cache before each run */
    int32_t threads;
    char name[48];        /* "pp512", "tg128", "pp512+tg128", "pp512 @ d1024" */
    double *samples;      /* (reps) tokens/s of each timed run */
    int32_t n_samples;
    double mean, stddev;  /* tokens/s */
    double ttft_sum;      /* seconds to the first token, summed over the runs */
    int64_t kv_bytes;     /* KV cache at the tested context: depth + tokens */
} bench_result;

/* What is reported once per model, beside the per-test rows. */
typedef struct bench_summary {
    const char *role;     /* "A", "B"; NULL without --compare */
    const char *model_name;
    const char *model_arg;
    int64_t model_bytes;
    int64_t n_params;
    const char *isa;
    double load_seconds;
    int64_t peak_rss_bytes;
    int64_t kv_bytes_per_token;
    const char *kv_type;
    int64_t warmup;
} bench_summary;

/* B/A of one test, from the runs that were interleaved. */
typedef struct bench_ratio {
    double mean, stddev, min, max;
} bench_ratio;

static void result_stats(bench_result *r) {
    double sum = 0.0;
    for (int32_t i = 0; i < r->n_samples; i++) sum += r->samples[i];
    r->mean = sum / r->n_samples;
    double sq = 0.0;
    for (int32_t i = 0; i < r->n_samples; i++) sq += (r->samples[i] - r->mean) * (r->samples[i] - r->mean);
    r->stddev = r->n_samples > 1 ? sqrt(sq / (r->n_samples - 1)) : 0.0;
}

static bench_ratio ratio_stats(const bench_result *a, const bench_result *b) {
    bench_ratio q = {.min = INFINITY, .max = -INFINITY};
    int32_t n = a->n_samples < b->n_samples ? a->n_samples : b->n_samples;
    double sum = 0.0, sq = 0.0;
    for (int32_t i = 0; i < n; i++) {
        double x = b->samples[i] / a->samples[i];
        sum += x;
        if (x < q.min) q.min = x;
        if (x > q.max) q.max = x;
    }
    q.mean = n > 0 ? sum / n : 0.0;
    for (int32_t i = 0; i < n; i++) {
        double d = b->samples[i] / a->samples[i] - q.mean;
        sq += d * d;
    }
    q.stddev = n > 1 ? sqrt(sq / (n - 1)) : 0.0;
    return q;
}

/* ru_maxrss is in KiB on Linux. */
static int64_t peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (int64_t)ru.ru_maxrss * 1024;
}

static int32_t test_tokens(const bench_result *r) { return r->n_prompt + r->n_gen; }

/* ----------------------------------------------------------- measuring */

/* splitmix64: a seeded, platform-independent stream of token ids. */
static uint64_t next_random(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* n ids in [0, n_vocab), the first one BOS when the model adds it and bos_first. */
static void fill_random_tokens(const tlm_model *m, int32_t n_vocab, uint64_t *rng, int32_t *out,
                               int32_t n, bool bos_first) {
    for (int32_t i = 0; i < n; i++) out[i] = (int32_t)(next_random(rng) % (uint64_t)n_vocab);
    int32_t bos = tlm_token_bos(m);
    if (bos_first && n > 0 && tlm_model_adds_bos(m) && bos >= 0 && bos < n_vocab) out[0] = bos;
}

/* One model under test: its context and the depth its cache holds. */
typedef struct bench_model {
    tlm_model *model;
    tlm_context *ctx;
    int32_t n_vocab;
    int32_t filled_depth; /* tokens of depth in the cache; -1 = none */
    uint64_t depth_rng;   /* seed of the depth tokens, the same for every model */
} bench_model;

/* Puts exactly r->n_depth tokens in the KV cache (untimed). */
static tlm_status prepare_depth(bench_model *bm, const bench_result *r, int32_t *scratch, tlm_error *err) {
    if (r->n_depth == 0) { tlm_context_reset(bm->ctx); return TLM_OK; }
    if (bm->filled_depth == r->n_depth && tlm_context_pos(bm->ctx) >= r->n_depth) {
        tlm_context_truncate(bm->ctx, r->n_depth);
        return TLM_OK;
    }
    tlm_context_reset(bm->ctx);
    uint64_t rng = bm->depth_rng;
    fill_random_tokens(bm->model, bm->n_vocab, &rng, scratch, r->n_depth, true);
    tlm_status st = tlm_decode(bm->ctx, scratch, r->n_depth, false, err);
    bm->filled_depth = st == TLM_OK ? r->n_depth : -1;
    return st;
}

/* One run of a test; *seconds is its wall time, *ttft the time to the first token. */
static tlm_status run_test_once(bench_model *bm, const bench_result *r, const int32_t *tokens,
                                int32_t *scratch, double *seconds, double *ttft, tlm_error *err) {
    tlm_status st = prepare_depth(bm, r, scratch, err);
    if (st != TLM_OK) return st;
    double t0 = cli_now_seconds();
    if (r->n_prompt > 0) {
        st = tlm_decode(bm->ctx, tokens, r->n_prompt, false, err);
        if (st != TLM_OK) return st;
        *ttft = cli_now_seconds() - t0;
    }
    for (int32_t i = 0; i < r->n_gen; i++) {
        st = tlm_decode(bm->ctx, tokens + r->n_prompt + i, 1, false, err);
        if (st != TLM_OK) return st;
        if (i == 0 && r->n_prompt == 0) *ttft = cli_now_seconds() - t0;
    }
    *seconds = cli_now_seconds() - t0;
    return TLM_OK;
}

static void progress_line(bool enabled, const bench_result *r, const char *what, int64_t i,
                          int64_t n) {
    if (!enabled) return;
    fprintf(stderr, "\r\033[K%s, %d thread%s: %s %lld/%lld", r->name, r->threads,
            r->threads == 1 ? "" : "s", what, (long long)i, (long long)n);
    fflush(stderr);
}

/* Runs test i on every model, the models taking turns run by run.
 * rs[m] is model m's result list. */
static tlm_status measure(bench_model *bms, int n_models, const bench_options *o, bench_result **rs,
                          int i, int32_t *tokens, int32_t *scratch, uint64_t *rng, tlm_error *err) {
    bool progress = cli_stderr_is_tty();
    const bench_result *spec = &rs[0][i];
    /* a pp or pg prompt starts the sequence only without depth */
    bool bos_first = spec->n_depth == 0;
    for (int64_t w = 0; w < o->warmup; w++) {
        progress_line(progress, spec, "warm-up", w + 1, o->warmup);
        fill_random_tokens(bms[0].model, bms[0].n_vocab, rng, tokens, test_tokens(spec), bos_first);
        for (int m = 0; m < n_models; m++) {
            double seconds, ttft = 0;
            tlm_status st = run_test_once(&bms[m], &rs[m][i], tokens, scratch, &seconds, &ttft, err);
            if (st != TLM_OK) return st;
        }
    }
    for (int64_t k = 0; k < o->reps; k++) {
        progress_line(progress, spec, "run", k + 1, o->reps);
        fill_random_tokens(bms[0].model, bms[0].n_vocab, rng, tokens, test_tokens(spec), bos_first);
        for (int m = 0; m < n_models; m++) {
            bench_result *r = &rs[m][i];
            double seconds, ttft = 0;
            tlm_status st = run_test_once(&bms[m], r, tokens, scratch, &seconds, &ttft, err);
            if (st != TLM_OK) return st;
            /* a clock tick of 0 s cannot happen on a monotonic clock with ns
             * resolution for a real decode, but keep tokens/s finite anyway */
            r->samples[r->n_samples++] = test_tokens(r) / (seconds > 1e-9 ? seconds : 1e-9);
            r->ttft_sum += ttft;
        }
    }
    if (progress) fputs("\r\033[K", stderr);
    for (int m = 0; m < n_models; m++) result_stats(&rs[m][i]);
    return TLM_OK;
}

/* -------------------------------------------------------------- output */

/* "512 B", "12.0 KiB", "3.50 MiB" */
static const char *human_bytes(int64_t bytes, char *buf, size_t cap) {
    if (bytes < 1024) snprintf(buf, cap, "%lld B", (long long)bytes);
    else if (bytes < 1024 * 1024) snprintf(buf, cap, "%.1f KiB", bytes / 1024.0);
    else snprintf(buf, cap, "%.2f MiB", bytes / (1024.0 * 1024.0));
    return buf;
}

static double ttft_ms(const bench_result *r) {
    return r->n_samples > 0 ? 1e3 * r->ttft_sum / r->n_samples : 0.0;
}

static void print_md(bench_result **rs, int n, const bench_summary *ss, int n_models) {
    printf("| model | size | params | isa | threads | test | t/s |\n");
    printf("| ----- | ---: | -----: | --- | ------: | ---: | --: |\n");
    for (int m = 0; m < n_models; m++) {
        const bench_summary *s = &ss[m];
        for (int i = 0; i < n; i++) {
            printf("| %s%s%s | %.2f MiB | %.2f M | %s | %d | %s | %.2f ± %.2f |\n", s->role ? s->role : "",
                   s->role ? ": " : "", s->model_name, s->model_bytes / (1024.0 * 1024.0), s->n_params / 1e6, s->isa, rs[m][i].threads,
                   rs[m][i].name, rs[m][i].mean, rs[m][i].stddev);
        }
    }
    if (n_models == 2) {
        printf("\n| test | threads | A t/s | B t/s | B/A |\n");
        printf("| ---: | ------: | ----: | ----: | --: |\n");
        for (int i = 0; i < n; i++) {
            bench_ratio q = ratio_stats(&rs[0][i], &rs[1][i]);
            printf("| %s | %d | %.2f | %.2f | %.3f ± %.3f (%.3f-%.3f) |\n", rs[0][i].name, rs[0][i].threads,
                   rs[0][i].mean, rs[1][i].mean, q.mean, q.stddev, q.min, q.max);
        }
        printf("\nA = %s, B = %s\n", ss[0].model_arg, ss[1].model_arg);
    }
    for (int m = 0; m < n_models; m++) {
        const bench_summary *s = &ss[m];
        printf("\n%s%smodel load %.3f s, peak RSS %.1f MiB, KV cache %s %lld bytes/token, "
               "%d run%s after %lld warm-up\n",
               s->role ? s->role : "", s->role ? ": " : "", s->load_seconds,
               s->peak_rss_bytes / (1024.0 * 1024.0), s->kv_type, (long long)s->kv_bytes_per_token,
               rs[m][0].n_samples, rs[m][0].n_samples == 1 ? "" : "s", (long long)s->warmup);
        printf("time to first token:");
        for (int i = 0; i < n; i++)
            printf("%s %s %.2f ms", i ? "," : "", rs[m][i].name, ttft_ms(&rs[m][i]));
        printf("\nKV cache at the tested context:");
        char buf[32];
        for (int i = 0; i < n; i++)
            printf("%s %s %s", i ? "," : "", rs[m][i].name, human_bytes(rs[m][i].kv_bytes, buf, sizeof buf));
        printf("\n");
    }
}

/* One field of a CSV row: quoted when it holds a comma, quote or newline. */
static void csv_field(const char *text) {
    if (!strpbrk(text, ",\"\r\n")) { fputs(text, stdout); return; }
    putchar('"');
    for (const char *p = text; *p; p++) {
        if (*p == '"') putchar('"');
        putchar(*p);
    }
    putchar('"');
}

static void print_csv(bench_result **rs, int n, const bench_summary *ss, int n_models) {
    printf("test,threads,n_prompt,n_gen,tokens_per_s,stddev,reps,warmup,model,model_path,"
           "model_bytes,n_params,isa,load_seconds,peak_rss_bytes,kv_bytes_per_token,"
           "n_depth,ttft_ms,kv_bytes,kv_type,role,ratio,ratio_stddev,ratio_min,ratio_max\n");
    for (int m = 0; m < n_models; m++) {
        const bench_summary *s = &ss[m];
        for (int i = 0; i < n; i++) {
            const bench_result *r = &rs[m][i];
            csv_field(r->name);
            printf(",%d,%d,%d,%.4f,%.4f,%d,%lld,", r->threads, r->n_prompt, r->n_gen, r->mean,
                   r->stddev, r->n_samples, (long long)s->warmup);
            csv_field(s->model_name);
            putchar(',');
            csv_field(s->model_arg);
            printf(",%lld,%lld,%s,%.4f,%lld,%lld,%d,%.4f,%lld,%s,%s,,,,\n", (long long)s->model_bytes,
                   (long long)s->n_params, s->isa, s->load_seconds, (long long)s->peak_rss_bytes,
                   (long long)s->kv_bytes_per_token, r->n_depth, ttft_ms(r), (long long)r->kv_bytes,
                   s->kv_type, s->role ? s->role : "");
        }
    }
    for (int i = 0; n_models == 2 && i < n; i++) {
        const bench_result *a = &rs[0][i];
        bench_ratio q = ratio_stats(a, &rs[1][i]);
        csv_field(a->name);
        printf(",%d,%d,%d,,,%d,%lld,,,,,%s,,,,%d,,,%s,B/A,%.4f,%.4f,%.4f,%.4f\n", a->threads, a->n_prompt,
               a->n_gen, a->n_samples, (long long)ss[0].warmup, ss[0].isa, a->n_depth, ss[0].kv_type, q.mean,
               q.stddev, q.min, q.max);
    }
}

/* Returns false when out of memory. */
static bool print_json(bench_result **rs, int n, const bench_summary *ss, int n_models) {
    cJSON *list = cJSON_CreateArray();
    if (!list) return false;
    for (int m = 0; m < n_models; m++) {
        const bench_summary *s = &ss[m];
        for (int i = 0; i < n; i++) {
            const bench_result *r = &rs[m][i];
            cJSON *o = cJSON_CreateObject();
            if (!o) { cJSON_Delete(list); return false; }
            cJSON_AddItemToArray(list, o);
            cJSON_AddStringToObject(o, "test", r->name);
            cJSON_AddNumberToObject(o, "threads", r->threads);
            cJSON_AddNumberToObject(o, "n_prompt", r->n_prompt);
            cJSON_AddNumberToObject(o, "n_gen", r->n_gen);
            cJSON_AddNumberToObject(o, "n_depth", r->n_depth);
            cJSON_AddNumberToObject(o, "tokens_per_s", r->mean);
            cJSON_AddNumberToObject(o, "stddev", r->stddev);
            cJSON_AddNumberToObject(o, "ttft_ms", ttft_ms(r));
            cJSON_AddNumberToObject(o, "reps", r->n_samples);
            cJSON_AddNumberToObject(o, "warmup", (double)s->warmup);
            cJSON *samples = cJSON_AddArrayToObject(o, "samples_ts");
            for (int32_t k = 0; samples && k < r->n_samples; k++)
                cJSON_AddItemToArray(samples, cJSON_CreateNumber(r->samples[k]));
            if (s->role) cJSON_AddStringToObject(o, "role", s->role);
            cJSON_AddStringToObject(o, "model", s->model_name);
            cJSON_AddStringToObject(o, "model_path", s->model_arg);
            cJSON_AddNumberToObject(o, "model_bytes", (double)s->model_bytes);
            cJSON_AddNumberToObject(o, "n_params", (double)s->n_params);
            cJSON_AddStringToObject(o, "isa", s->isa);
            cJSON_AddNumberToObject(o, "load_seconds", s->load_seconds);
            cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)s->peak_rss_bytes);
            cJSON_AddNumberToObject(o, "kv_bytes_per_token", (double)s->kv_bytes_per_token);
            cJSON_AddNumberToObject(o, "kv_bytes", (double)r->kv_bytes);
            cJSON_AddStringToObject(o, "kv_type", s->kv_type);
            cJSON_AddStringToObject(o, "trimlm_version", TLM_VERSION_STRING);
        }
    }
    for (int i = 0; n_models == 2 && i < n; i++) {
        const bench_result *a = &rs[0][i], *b = &rs[1][i];
        bench_ratio q = ratio_stats(a, b);
        cJSON *o = cJSON_CreateObject();
        if (!o) { cJSON_Delete(list); return false; }
        cJSON_AddItemToArray(list, o);
        cJSON_AddStringToObject(o, "test", a->name);
        cJSON_AddNumberToObject(o, "threads", a->threads);
        cJSON_AddNumberToObject(o, "n_prompt", a->n_prompt);
        cJSON_AddNumberToObject(o, "n_gen", a->n_gen);
        cJSON_AddNumberToObject(o, "n_depth", a->n_depth);
        cJSON_AddStringToObject(o, "role", "B/A");
        cJSON_AddNumberToObject(o, "ratio", q.mean);
        cJSON_AddNumberToObject(o, "ratio_stddev", q.stddev);
        cJSON_AddNumberToObject(o, "ratio_min", q.min);
        cJSON_AddNumberToObject(o, "ratio_max", q.max);
        cJSON_AddNumberToObject(o, "tokens_per_s_a", a->mean);
        cJSON_AddNumberToObject(o, "tokens_per_s_b", b->mean);
        cJSON_AddNumberToObject(o, "reps", a->n_samples);
        cJSON_AddStringToObject(o, "model_a", ss[0].model_arg);
        cJSON_AddStringToObject(o, "model_b", ss[1].model_arg);
    }
    char *text = cJSON_Print(list);
    cJSON_Delete(list);
    if (!text) return false;
    printf("%s\n", text);
    cJSON_free(text);
    return true;
}

/* ------------------------------------------------------------ command */

/* Resolves (maybe downloads) first, so that the load time is the time to
 * load, not to download. */
static tlm_model *load_timed(const char *arg, double *seconds, tlm_error *err) {
    char path[4096];
    if (resolve_model_path(arg, path, sizeof path, err) != TLM_OK) return NULL;
    double t0 = cli_now_seconds();
    tlm_model *m = tlm_model_load(path, err);
    *seconds = cli_now_seconds() - t0;
    return m;
}

int cmd_bench(int argc, char **argv) {
    bench_options o;
    bool done = false;
    int rc = parse_bench_args(argc, argv, &o, &done);
    if (rc || done) return rc;
    if (o.threads.n == 0) {
        o.threads.v[0] = tlm_physical_cores() > 0 ? tlm_physical_cores() : 1;
        o.threads.n = 1;
    }

    tlm_error err = {0};
    const int n_models = o.model_b ? 2 : 1;
    bench_model bms[2] = {{0}, {0}};
    bench_summary ss[2] = {{0}, {0}};
    tlm_model_info infos[2];
    bench_result *results[2] = {NULL, NULL};
    double *samples = NULL;
    int32_t *tokens = NULL, *scratch = NULL;
    int n_results = 0;
    rc = CLI_EXIT_FAIL;

    /* ---- the models */
    const char *args[2] = {o.model, o.model_b};
    for (int m = 0; m < n_models; m++) {
        double load_seconds = 0;
        bms[m].model = load_timed(args[m], &load_seconds, &err);
        if (!bms[m].model) { cli_fail_err(&err); goto out; }
        tlm_model_get_info(bms[m].model, &infos[m]);
        bms[m].n_vocab = infos[m].n_vocab;
        bms[m].filled_depth = -1;
        bms[m].depth_rng = (uint64_t)o.seed ^ 0x5DEECE66Dull;
        ss[m] = (bench_summary){
            .role = n_models == 2 ? (m == 0 ? "A" : "B") : NULL,
            .model_name = infos[m].name && infos[m].name[0] ? infos[m].name : args[m],
            .model_arg = args[m],
            .model_bytes = infos[m].weight_bytes,
            .n_params = infos[m].n_params,
            .isa = tlm_isa_name(),
            .load_seconds = load_seconds,
            .kv_type = tlm_kv_type_name(o.kv_type),
            .warmup = o.warmup,
        };
    }
    /* the same token ids go to both models: ids beyond the smaller vocabulary would not */
    if (n_models == 2 && bms[1].n_vocab < bms[0].n_vocab) bms[0].n_vocab = bms[1].n_vocab;

    /* ---- the tests, in llama-bench's order: per thread count and depth, pp, tg, pg */
    int per_depth = o.n_prompt.n + o.n_gen.n + o.pg_prompt.n;
    int max_results = o.threads.n * o.depth.n * per_depth;
    for (int m = 0; m < n_models; m++) results[m] = calloc((size_t)max_results, sizeof *results[m]);
    samples = calloc((size_t)n_models * (size_t)max_results * (size_t)o.reps, sizeof *samples);
    if (!results[0] || (n_models == 2 && !results[1]) || !samples) { cli_fail("out of memory for the benchmark"); goto out; }
    int32_t max_tokens = 1, max_prompt = 1, max_depth = 0, max_ctx = 1;
    for (int t = 0; t < o.threads.n; t++) {
        for (int d = 0; d < o.depth.n; d++) {
            for (int k = 0; k < per_depth; k++) {
                bench_result spec = {.threads = (int32_t)o.threads.v[t], .n_depth = (int32_t)o.depth.v[d]};
                if (k < o.n_prompt.n) {
                    spec.kind = TEST_PP;
                    spec.n_prompt = (int32_t)o.n_prompt.v[k];
                    snprintf(spec.name, sizeof spec.name, "pp%d", spec.n_prompt);
                } else if (k < o.n_prompt.n + o.n_gen.n) {
                    spec.kind = TEST_TG;
                    spec.n_gen = (int32_t)o.n_gen.v[k - o.n_prompt.n];
                    snprintf(spec.name, sizeof spec.name, "tg%d", spec.n_gen);
                } else {
                    int j = k - o.n_prompt.n - o.n_gen.n;
                    spec.kind = TEST_PG;
                    spec.n_prompt = (int32_t)o.pg_prompt.v[j];
                    spec.n_gen = (int32_t)o.pg_gen.v[j];
                    snprintf(spec.name, sizeof spec.name, "pp%d+tg%d", spec.n_prompt, spec.n_gen);
                }
                if (test_tokens(&spec) <= 0) continue;
                if (spec.n_depth > 0) {
                    size_t l = strlen(spec.name);
                    snprintf(spec.name + l, sizeof spec.name - l, " @ d%d", spec.n_depth);
                }
                int32_t need = spec.n_depth + test_tokens(&spec);
                for (int m = 0; m < n_models; m++) {
                    if (infos[m].n_ctx_train > 0 && need > infos[m].n_ctx_train) {
                        cli_fail("-d %d with %s needs a context of %d tokens, more than %s's %d",
                                 spec.n_depth, spec.name, need, args[m], infos[m].n_ctx_train);
                        goto out;
                    }
                    bench_result *r = &results[m][n_results];
                    *r = spec;
                    r->samples = samples + ((size_t)m * (size_t)max_results + (size_t)n_results) * (size_t)o.reps;
                }
                if (test_tokens(&spec) > max_tokens) max_tokens = test_tokens(&spec);
                if (spec.n_prompt > max_prompt) max_prompt = spec.n_prompt;
                if (spec.n_depth > max_depth) max_depth = spec.n_depth;
                if (need > max_ctx) max_ctx = need;
                n_results++;
            }
        }
    }
    tokens = malloc((size_t)max_tokens * sizeof *tokens);
    scratch = malloc((size_t)(max_depth > 0 ? max_depth : 1) * sizeof *scratch);
    if (!tokens || !scratch) { cli_fail("out of memory for the benchmark"); goto out; }

    /* ---- per thread count, one context per model, big enough for every test */
    uint64_t rng = (uint64_t)o.seed;
    for (int t = 0; t < o.threads.n; t++) {
        for (int m = 0; m < n_models; m++) {
            tlm_context_params cp = tlm_context_default_params();
            cp.n_ctx = max_ctx;
            cp.n_batch = max_prompt; /* a pp test is one batch, as in llama-bench */
            cp.n_threads = (int32_t)o.threads.v[t];
            cp.kv_type = o.kv_type;
            bms[m].ctx = tlm_context_new(bms[m].model, &cp, &err);
            if (!bms[m].ctx) { cli_fail_err(&err); goto out; }
            bms[m].filled_depth = -1;
            ss[m].kv_bytes_per_token = tlm_context_kv_bytes_per_token(bms[m].ctx);
        }
        for (int i = 0; i < n_results; i++) {
            if (results[0][i].threads != (int32_t)o.threads.v[t] || results[0][i].n_samples > 0) continue;
            for (int m = 0; m < n_models; m++)
                results[m][i].kv_bytes = ss[m].kv_bytes_per_token *
                                         (int64_t)(results[m][i].n_depth + test_tokens(&results[m][i]));
            if (measure(bms, n_models, &o, results, i, tokens, scratch, &rng, &err) != TLM_OK) {
                if (cli_stderr_is_tty()) fputs("\r\033[K", stderr);
                cli_fail_err(&err);
                goto out;
            }
        }
        for (int m = 0; m < n_models; m++) {
            tlm_context_free(bms[m].ctx);
            bms[m].ctx = NULL;
        }
    }

    /* ---- report */
    for (int m = 0; m < n_models; m++) ss[m].peak_rss_bytes = peak_rss_bytes();
    if (o.format == FORMAT_MD) print_md(results, n_results, ss, n_models);
    else if (o.format == FORMAT_CSV) print_csv(results, n_results, ss, n_models);
    else if (!print_json(results, n_results, ss, n_models)) { cli_fail("out of memory writing JSON"); goto out; }
    fflush(stdout);
    if (ferror(stdout)) { cli_fail("writing the results to stdout failed"); goto out; }
    rc = CLI_EXIT_OK;

out:
    free(scratch);
    free(tokens);
    free(samples);
    for (int m = 0; m < 2; m++) {
        free(results[m]);
        tlm_context_free(bms[m].ctx);
        tlm_model_free(bms[m].model);
    }
    return rc;
}
