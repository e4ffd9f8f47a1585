/* serve_metrics.c — Prometheus text of the server's counters; see
 * serve_metrics.h. */
#include "serve_metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct text_buf {
    char *data;
    size_t len, cap;
    bool failed;
} text_buf;

static void put(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text_buf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) { b->failed = true; return; }
        if ((size_t)n < b->cap - b->len) { b->len += (size_t)n; return; }
        size_t cap = b->cap * 2 + (size_t)n;
        char *grown = realloc(b->data, cap);
        if (!grown) { b->failed = true; return; }
        b->data = grown;
        b->cap = cap;
    }
}

static void metric(text_buf *b, const char *name, const char *type, const char *help, double v) {
    put(b, "# HELP trimlm_%s %s\n# TYPE trimlm_%s %s\ntrimlm_%s %.17g\n", name, help, name, type, name, v);
}

char *serve_metrics_text(const serve_sched_stats *st, serve_http_counters *hc, double uptime_s) {
    text_buf b = {.data = malloc(4096), .cap = 4096};
    if (!b.data) return NULL;
    b.data[0] = '\0';
    metric(&b, "requests_total", "counter", "HTTP requests answered.", (double)atomic_load(&hc->requests));
    metric(&b, "completion_requests_total", "counter", "Generation requests accepted into the queue.",
           (double)atomic_load(&hc->completions));
    metric(&b, "requests_rejected_total", "counter", "Requests answered 429 because the queue was full.",
           (double)atomic_load(&hc->rejected));
    metric(&b, "client_errors_total", "counter", "Requests answered with a 4xx status other than 429.",
           (double)atomic_load(&hc->client_errors));
    metric(&b, "server_errors_total", "counter", "Requests that ended with a server error or a time-out.",
           (double)atomic_load(&hc->server_errors));
    metric(&b, "client_disconnects_total", "counter", "Clients that went away before their answer ended.",
           (double)atomic_load(&hc->disconnects));
    metric(&b, "prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", (double)st->prompt_tokens);
    metric(&b, "prompt_tokens_cached_total", "counter",
           "Prompt tokens found in a slot's KV cache (not computed again).", (double)st->cached_tokens);
    metric(&b, "generated_tokens_total", "counter", "Tokens generated.", (double)st->generated_tokens);
    metric(&b, "prefill_seconds_total", "counter", "Time spent computing prompts.", st->prefill_seconds);
    metric(&b, "decode_seconds_total", "counter", "Time spent generating tokens.", st->decode_seconds);
    uint64_t computed = st->prompt_tokens - st->cached_tokens;
    metric(&b, "prefill_tokens_per_second", "gauge", "Prompt tokens computed per second of prefill, since start.",
           st->prefill_seconds > 0 ? (double)computed / st->prefill_seconds : 0.0);
    metric(&b, "decode_tokens_per_second", "gauge", "Tokens generated per second of decoding, since start.",
           st->decode_seconds > 0 ? (double)st->generated_tokens / st->decode_seconds : 0.0);
    metric(&b, "jobs_completed_total", "counter", "Generations that ended normally.", (double)st->jobs_done);
    metric(&b, "jobs_cancelled_total", "counter", "Generations stopped because the client went away.",
           (double)st->jobs_cancelled);
    metric(&b, "jobs_timed_out_total", "counter", "Generations ended by the time limit (--timeout).",
           (double)st->jobs_timed_out);
    metric(&b, "queue_depth", "gauge", "Requests waiting for a slot.", (double)st->queue_depth);
    metric(&b, "queue_capacity", "gauge", "Requests that may wait for a slot (--max-queue).", (double)st->max_queue);
    metric(&b, "slots_busy", "gauge", "Slots running a request.", (double)st->slots_busy);
    metric(&b, "slots_total", "gauge", "Slots (--parallel).", (double)st->n_slots);
    metric(&b, "uptime_seconds", "gauge", "Seconds since the server started.", uptime_s);
    if (b.failed) { free(b.data); return NULL; }
    return b.data;
}
