/*
 * serve_metrics.h — the counters of `trimlm serve` and their Prometheus text
 * exposition for `GET /metrics` (format 0.0.4: # HELP, # TYPE, name value).
 */
#ifndef TLM_SERVE_METRICS_H
#define TLM_SERVE_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "serve_sched.h"

/* Requests counted by the HTTP side, by outcome (updated from any thread). */
typedef struct serve_http_counters {
    atomic_uint_fast64_t requests;      /* every request answered */
    atomic_uint_fast64_t completions;   /* generation requests accepted (queued) */
    atomic_uint_fast64_t client_errors; /* 4xx answers except 429 */
    atomic_uint_fast64_t rejected;      /* 429: the queue was full */
    atomic_uint_fast64_t server_errors; /* 5xx answers, failed generations */
    atomic_uint_fast64_t disconnects;   /* clients that went away before the end */
} serve_http_counters;

/* The exposition text (malloc'd, NUL-terminated) or NULL when out of memory.
 * uptime_s: seconds since the server started. */
char *serve_metrics_text(const serve_sched_stats *st, serve_http_counters *hc, double uptime_s);

#endif
