/*
 * serve_http.h — the HTTP side of `trimlm serve` (libmicrohttpd, one thread
 * per connection): routing, the API key, body limits, and the OpenAI
 * endpoints on top of the scheduler (serve_sched.h).
 *
 *   GET  /                      the chat page (serve_webui.h; never needs the API key)
 *   POST /v1/chat/completions   chat (streamed as server-sent events or not)
 *   POST /v1/completions        raw-text completion
 *   GET  /v1/models             the one model served
 *   GET  /health                {"status": "ok"} (never needs the API key)
 *   GET  /metrics               Prometheus text (serve_metrics.h)
 */
#ifndef TLM_SERVE_HTTP_H
#define TLM_SERVE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "serve_sched.h"
#include "trimlm.h"

typedef struct serve_http_params {
    const char *host;      /* an IPv4 or IPv6 address, or a name (first address used) */
    int port;              /* 0: any free port (see serve_http_port) */
    const char *api_key;   /* NULL: no key needed */
    size_t max_body;       /* request bodies larger than this get 413 */
    const char *model_id;  /* the name /v1/models and the answers give */
    const tlm_model *model;
    serve_sched *sched;
    int max_connections;
} serve_http_params;

typedef struct serve_http serve_http;

serve_http *serve_http_start(const serve_http_params *p, tlm_error *err);
/* The port actually bound. */
int serve_http_port(const serve_http *h);
/* Stops accepting, waits for the connection threads, frees. Stop the
 * scheduler first so that no connection waits on a long generation. */
void serve_http_stop(serve_http *h);

/* a equals b, in time that depends on the length of b only (API keys). */
bool serve_secret_equal(const char *a, const char *b);

#endif
