/*
 * cmd_bench.c — `trimlm bench`: prefill and decode speed, measured the way
 * llama.cpp's llama-bench does so that the two compare (bench/compare-llamacpp):
 *
 *   pp<P>: empty the KV cache, decode P prompt tokens in one batch, time it
 *   tg<N>: empty the KV cache, decode N tokens one tlm_decode call each
 *          (as generation does), time the whole run
 *
 * Prompt and generated tokens are seeded pseudo-random ids in [0, n_vocab)
 * (BOS first when the model adds one), so the speed does not depend on a text.
 * Each test runs --warmup times unrecorded, then -r times; tokens/s is the
 * mean over those repetitions and the stddev their sample standard deviation.
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
    "  -r, --repetitions N     timed runs per test (default 5)\n"
    "      --warmup N          untimed runs before them (default 1)\n"
    "  -t, --threads LIST      thread counts, comma-separated (default: physical cores)\n"
    "  -o, --output FORMAT     md (a table), json (a list of objects) or csv (default md)\n"
    "      --seed S            seed of the random token ids (default 42)\n"
    "  -h, --help              this help\n"
    "\n"
    "example:\n"
    "  trimlm bench -m smollm2-135m-instruct -p 512 -n 128 -r 5 -t 1,2 -o json\n";

/* ------------------------------------------------------------ options */

#define BENCH_MAX_LIST 16 /* entries of a comma-separated -p / -n / -t list */

typedef enum bench_format { FORMAT_MD, FORMAT_JSON, FORMAT_CSV } bench_format;

typedef struct int_list {
    int64_t v[BENCH_MAX_LIST];
    int n;
} int_list;

typedef struct bench_options {
    const char *model;
    int_list n_prompt, n_gen, threads;
    int64_t reps, warmup, seed;
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

/* Returns 0 to go on, else an exit code (help printed, or a usage error). */
static int parse_bench_args(int argc, char **argv, bench_options *o, bool *done) {
    *o = (bench_options){.n_prompt = {.v = {512}, .n = 1}, .n_gen = {.v = {128}, .n = 1},
                         .reps = 5, .warmup = 1, .seed = 42, .format = FORMAT_MD};
    static const char counts[] = "a comma-separated list of integers >= 0";
    cli_args a;
    cli_args_init(&a, "bench", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) { fputs(bench_usage, stdout); *done = true; return 0; }
        else if (cli_flag(&a, "-m", "--model")) o->model = cli_value(&a);
        else if (cli_flag(&a, "-p", "--n-prompt")) cli_int_list(&a, 0, 1 << 20, counts, &o->n_prompt);
        else if (cli_flag(&a, "-n", "--n-gen")) cli_int_list(&a, 0, 1 << 20, counts, &o->n_gen);
        else if (cli_flag(&a, "-t", "--threads"))
            cli_int_list(&a, 1, 4096, "a comma-separated list of positive integers", &o->threads);
        else if (cli_flag(&a, "-r", "--repetitions")) cli_int(&a, 1, 100000, "a positive integer", &o->reps);
        else if (cli_flag(&a, NULL, "--warmup")) cli_int(&a, 0, 100000, "an integer >= 0", &o->warmup);
        else if (cli_flag(&a, NULL, "--seed")) cli_int(&a, 0, INT64_MAX, "an integer >= 0", &o->seed);
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
    bool any = false;
    for (int i = 0; i < o->n_prompt.n; i++) any |= o->n_prompt.v[i] > 0;
    for (int i = 0; i < o->n_gen.n; i++) any |= o->n_gen.v[i] > 0;
    if (!any) return cli_usage_error("bench", "nothing to measure: -p and -n are both 0");
    return 0;
}

/* ------------------------------------------------------------ results */

typedef enum bench_kind { TEST_PP, TEST_TG } bench_kind;

typedef struct bench_result {
    bench_kind kind;
    int32_t n_tokens;     /* P of pp<P>, N of tg<N> */
    int32_t threads;
    char name[24];        /* "pp512", "tg128" */
    double *samples;      /* (reps) tokens/s of each timed run */
    int32_t n_samples;
    double mean, stddev;  /* tokens/s */
} bench_result;

/* What is reported once per run, beside the per-test rows. */
typedef struct bench_summary {
    const char *model_name;
    const char *model_arg;
    int64_t model_bytes;
    int64_t n_params;
    const char *isa;
    double load_seconds;
    int64_t peak_rss_bytes;
    int64_t kv_bytes_per_token;
    int64_t warmup;
} bench_summary;

static void result_stats(bench_result *r) {
    double sum = 0.0;
    for (int32_t i = 0; i < r->n_samples; i++) sum += r->samples[i];
    r->mean = sum / r->n_samples;
    double sq = 0.0;
    for (int32_t i = 0; i < r->n_samples; i++) sq += (r->samples[i] - r->mean) * (r->samples[i] - r->mean);
    r->stddev = r->n_samples > 1 ? sqrt(sq / (r->n_samples - 1)) : 0.0;
}

/* ru_maxrss is in KiB on Linux. */
static int64_t peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (int64_t)ru.ru_maxrss * 1024;
}

/* ----------------------------------------------------------- measuring */

/* splitmix64: a seeded, platform-independent stream of token ids. */
static uint64_t next_random(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* n ids in [0, n_vocab), the first one BOS when the model adds it. */
static void fill_random_tokens(const tlm_model *m, int32_t n_vocab, uint64_t *rng, int32_t *out,
                               int32_t n) {
    for (int32_t i = 0; i < n; i++) out[i] = (int32_t)(next_random(rng) % (uint64_t)n_vocab);
    int32_t bos = tlm_token_bos(m);
    if (n > 0 && tlm_model_adds_bos(m) && bos >= 0 && bos < n_vocab) out[0] = bos;
}

/* One run of a test from an empty cache; *seconds is its wall time. */
static tlm_status run_test_once(tlm_context *ctx, const bench_result *r, const int32_t *tokens,
                                double *seconds, tlm_error *err) {
    tlm_context_reset(ctx);
    double t0 = cli_now_seconds();
    if (r->kind == TEST_PP) {
        tlm_status st = tlm_decode(ctx, tokens, r->n_tokens, false, err);
        if (st != TLM_OK) return st;
    } else {
        for (int32_t i = 0; i < r->n_tokens; i++) {
            tlm_status st = tlm_decode(ctx, tokens + i, 1, false, err);
            if (st != TLM_OK) return st;
        }
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

static tlm_status measure(tlm_context *ctx, const tlm_model *m, int32_t n_vocab,
                          const bench_options *o, bench_result *r, int32_t *tokens,
                          uint64_t *rng, tlm_error *err) {
    bool progress = cli_stderr_is_tty();
    for (int64_t w = 0; w < o->warmup; w++) {
        progress_line(progress, r, "warm-up", w + 1, o->warmup);
        fill_random_tokens(m, n_vocab, rng, tokens, r->n_tokens);
        double seconds;
        tlm_status st = run_test_once(ctx, r, tokens, &seconds, err);
        if (st != TLM_OK) return st;
    }
    for (int64_t i = 0; i < o->reps; i++) {
        progress_line(progress, r, "run", i + 1, o->reps);
        fill_random_tokens(m, n_vocab, rng, tokens, r->n_tokens);
        double seconds;
        tlm_status st = run_test_once(ctx, r, tokens, &seconds, err);
        if (st != TLM_OK) return st;
        /* a clock tick of 0 s cannot happen on a monotonic clock with ns
         * resolution for a real decode, but keep tokens/s finite anyway */
        r->samples[r->n_samples++] = r->n_tokens / (seconds > 1e-9 ? seconds : 1e-9);
    }
    if (progress) fputs("\r\033[K", stderr);
    result_stats(r);
    return TLM_OK;
}

/* -------------------------------------------------------------- output */

static void print_md(const bench_result *rs, int n, const bench_summary *s) {
    printf("| model | size | params | isa | threads | test | t/s |\n");
    printf("| ----- | ---: | -----: | --- | ------: | ---: | --: |\n");
    for (int i = 0; i < n; i++) {
        printf("| %s | %.2f MiB | %.2f M | %s | %d | %s | %.2f ± %.2f |\n", s->model_name,
               s->model_bytes / (1024.0 * 1024.0), s->n_params / 1e6, s->isa, rs[i].threads,
               rs[i].name, rs[i].mean, rs[i].stddev);
    }
    printf("\nmodel load %.3f s, peak RSS %.1f MiB, KV cache %lld bytes/token, "
           "%d run%s after %lld warm-up\n",
           s->load_seconds, s->peak_rss_bytes / (1024.0 * 1024.0),
           (long long)s->kv_bytes_per_token, rs[0].n_samples, rs[0].n_samples == 1 ? "" : "s",
           (long long)s->warmup);
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

static void print_csv(const bench_result *rs, int n, const bench_summary *s) {
    printf("test,threads,n_prompt,n_gen,tokens_per_s,stddev,reps,warmup,model,model_path,"
           "model_bytes,n_params,isa,load_seconds,peak_rss_bytes,kv_bytes_per_token\n");
    for (int i = 0; i < n; i++) {
        printf("%s,%d,%d,%d,%.4f,%.4f,%d,%lld,", rs[i].name, rs[i].threads,
               rs[i].kind == TEST_PP ? rs[i].n_tokens : 0, rs[i].kind == TEST_TG ? rs[i].n_tokens : 0,
               rs[i].mean, rs[i].stddev, rs[i].n_samples, (long long)s->warmup);
        csv_field(s->model_name);
        putchar(',');
        csv_field(s->model_arg);
        printf(",%lld,%lld,%s,%.4f,%lld,%lld\n", (long long)s->model_bytes,
               (long long)s->n_params, s->isa, s->load_seconds, (long long)s->peak_rss_bytes,
               (long long)s->kv_bytes_per_token);
    }
}

/* Returns false when out of memory. */
static bool print_json(const bench_result *rs, int n, const bench_summary *s) {
    cJSON *list = cJSON_CreateArray();
    if (!list) return false;
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) { cJSON_Delete(list); return false; }
        cJSON_AddItemToArray(list, o);
        cJSON_AddStringToObject(o, "test", rs[i].name);
        cJSON_AddNumberToObject(o, "threads", rs[i].threads);
        cJSON_AddNumberToObject(o, "n_prompt", rs[i].kind == TEST_PP ? rs[i].n_tokens : 0);
        cJSON_AddNumberToObject(o, "n_gen", rs[i].kind == TEST_TG ? rs[i].n_tokens : 0);
        cJSON_AddNumberToObject(o, "tokens_per_s", rs[i].mean);
        cJSON_AddNumberToObject(o, "stddev", rs[i].stddev);
        cJSON_AddNumberToObject(o, "reps", rs[i].n_samples);
        cJSON_AddNumberToObject(o, "warmup", (double)s->warmup);
        cJSON *samples = cJSON_AddArrayToObject(o, "samples_ts");
        for (int32_t k = 0; samples && k < rs[i].n_samples; k++)
            cJSON_AddItemToArray(samples, cJSON_CreateNumber(rs[i].samples[k]));
        cJSON_AddStringToObject(o, "model", s->model_name);
        cJSON_AddStringToObject(o, "model_path", s->model_arg);
        cJSON_AddNumberToObject(o, "model_bytes", (double)s->model_bytes);
        cJSON_AddNumberToObject(o, "n_params", (double)s->n_params);
        cJSON_AddStringToObject(o, "isa", s->isa);
        cJSON_AddNumberToObject(o, "load_seconds", s->load_seconds);
        cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)s->peak_rss_bytes);
        cJSON_AddNumberToObject(o, "kv_bytes_per_token", (double)s->kv_bytes_per_token);
        cJSON_AddStringToObject(o, "trimlm_version", TLM_VERSION_STRING);
    }
    char *text = cJSON_Print(list);
    cJSON_Delete(list);
    if (!text) return false;
    printf("%s\n", text);
    cJSON_free(text);
    return true;
}

/* ------------------------------------------------------------ command */

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
    tlm_model *model = NULL;
    tlm_context *ctx = NULL;
    bench_result *results = NULL;
    double *samples = NULL;
    int32_t *tokens = NULL;
    int n_results = 0;
    rc = CLI_EXIT_FAIL;

    /* ---- the model: resolved (maybe downloaded) first, so that the load
     * time is the time to load, not to download */
    char path[4096];
    if (resolve_model_path(o.model, path, sizeof path, &err) != TLM_OK) { cli_fail_err(&err); goto out; }
    double t0 = cli_now_seconds();
    model = tlm_model_load(path, &err);
    if (!model) { cli_fail_err(&err); goto out; }
    double load_seconds = cli_now_seconds() - t0;
    tlm_model_info info;
    tlm_model_get_info(model, &info);

    /* ---- the tests, in llama-bench's order: per thread count, pp then tg */
    int max_results = o.threads.n * (o.n_prompt.n + o.n_gen.n);
    results = calloc((size_t)max_results, sizeof *results);
    samples = calloc((size_t)max_results * (size_t)o.reps, sizeof *samples);
    int32_t max_tokens = 1;
    for (int i = 0; i < o.n_prompt.n; i++) if (o.n_prompt.v[i] > max_tokens) max_tokens = (int32_t)o.n_prompt.v[i];
    int32_t max_prompt = max_tokens;
    for (int i = 0; i < o.n_gen.n; i++) if (o.n_gen.v[i] > max_tokens) max_tokens = (int32_t)o.n_gen.v[i];
    tokens = malloc((size_t)max_tokens * sizeof *tokens);
    if (!results || !samples || !tokens) { cli_fail("out of memory for the benchmark"); goto out; }
    for (int t = 0; t < o.threads.n; t++) {
        for (int k = 0; k < o.n_prompt.n + o.n_gen.n; k++) {
            bool pp = k < o.n_prompt.n;
            int64_t count = pp ? o.n_prompt.v[k] : o.n_gen.v[k - o.n_prompt.n];
            if (count <= 0) continue;
            bench_result *r = &results[n_results];
            r->kind = pp ? TEST_PP : TEST_TG;
            r->n_tokens = (int32_t)count;
            r->threads = (int32_t)o.threads.v[t];
            snprintf(r->name, sizeof r->name, "%s%d", pp ? "pp" : "tg", r->n_tokens);
            r->samples = samples + (size_t)n_results * (size_t)o.reps;
            n_results++;
        }
    }

    /* ---- one context per thread count, big enough for every test */
    uint64_t rng = (uint64_t)o.seed;
    int64_t kv_bytes_per_token = 0;
    for (int t = 0; t < o.threads.n; t++) {
        tlm_context_params cp = tlm_context_default_params();
        cp.n_ctx = max_tokens;
        cp.n_batch = max_prompt; /* a pp test is one batch, as in llama-bench */
        cp.n_threads = (int32_t)o.threads.v[t];
        ctx = tlm_context_new(model, &cp, &err);
        if (!ctx) { cli_fail_err(&err); goto out; }
        kv_bytes_per_token = tlm_context_kv_bytes_per_token(ctx);
        for (int i = 0; i < n_results; i++) {
            if (results[i].threads != cp.n_threads || results[i].n_samples > 0) continue;
            if (measure(ctx, model, info.n_vocab, &o, &results[i], tokens, &rng, &err) != TLM_OK) {
                if (cli_stderr_is_tty()) fputs("\r\033[K", stderr);
                cli_fail_err(&err);
                goto out;
            }
        }
        tlm_context_free(ctx);
        ctx = NULL;
    }

    /* ---- report */
    bench_summary s = {
        .model_name = info.name && info.name[0] ? info.name : o.model,
        .model_arg = o.model,
        .model_bytes = info.weight_bytes,
        .n_params = info.n_params,
        .isa = tlm_isa_name(),
        .load_seconds = load_seconds,
        .peak_rss_bytes = peak_rss_bytes(),
        .kv_bytes_per_token = kv_bytes_per_token,
        .warmup = o.warmup,
    };
    if (o.format == FORMAT_MD) print_md(results, n_results, &s);
    else if (o.format == FORMAT_CSV) print_csv(results, n_results, &s);
    else if (!print_json(results, n_results, &s)) { cli_fail("out of memory writing JSON"); goto out; }
    fflush(stdout);
    if (ferror(stdout)) { cli_fail("writing the results to stdout failed"); goto out; }
    rc = CLI_EXIT_OK;

out:
    free(tokens);
    free(samples);
    free(results);
    tlm_context_free(ctx);
    tlm_model_free(model);
    return rc;
}
