/* serve_http.c — libmicrohttpd glue of `trimlm serve`; see serve_http.h.
 *
 * Each connection has its own thread (MHD_USE_THREAD_PER_CONNECTION), so a
 * handler may block while its job runs. It waits in short slices and between
 * them asks the socket whether the client has closed it (POLLRDHUP), so that
 * a client that goes away frees its slot or its place in the queue at once,
 * even before anything was written to it. */
#include "serve_http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "serve_metrics.h"
#include "serve_request.h"
#include "serve_response.h"
#include "serve_webui.h"

struct serve_http {
    struct MHD_Daemon *daemon;
    serve_http_params p;
    serve_http_counters counters;
    double t_start; /* monotonic */
    int64_t created; /* Unix seconds, for /v1/models */
    int port;
    serve_webui webui; /* the chat page at / */
};

/* What one request gathered so far (MHD's per-request pointer). */
typedef struct http_req {
    char *body;
    size_t len, cap;
    uint64_t received;
    bool too_large;
} http_req;

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool serve_secret_equal(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned char diff = na != nb;
    for (size_t i = 0; i < nb; i++) diff |= (unsigned char)(b[i] ^ (i < na ? a[i] : 0));
    return diff == 0;
}

/* True when the client has closed its end (or the socket failed). */
static bool client_gone(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return true;
    struct pollfd pfd = {.fd = ci->connect_fd, .events = POLLRDHUP};
    if (poll(&pfd, 1, 0) <= 0) return false;
    return (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* ------------------------------------------------------------ answers */

static void count_status(serve_http *h, int status) {
    atomic_fetch_add(&h->counters.requests, 1);
    if (status == 429) atomic_fetch_add(&h->counters.rejected, 1);
    else if (status >= 500) atomic_fetch_add(&h->counters.server_errors, 1);
    else if (status >= 400) atomic_fetch_add(&h->counters.client_errors, 1);
}

static enum MHD_Result send_text(serve_http *h, struct MHD_Connection *conn, int status,
                                 const char *body, const char *content_type) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body,
                                                             MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", content_type);
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    count_status(h, status);
    return ok;
}

/* body: from cJSON (freed here), or NULL when out of memory. */
static enum MHD_Result send_json(serve_http *h, struct MHD_Connection *conn, int status, char *body) {
    if (!body) return send_text(h, conn, 500, "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}", "application/json");
    enum MHD_Result ok = send_text(h, conn, status, body, "application/json");
    free(body);
    return ok;
}

static enum MHD_Result send_error(serve_http *h, struct MHD_Connection *conn, const serve_error *e) {
    char *body = serve_error_json(e);
    if (!body) return send_json(h, conn, 500, NULL);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    free(body);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    /* a full queue frees up as the running answers end: about a second */
    if (e->status == 429) MHD_add_response_header(r, "Retry-After", "1");
    if (e->status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)e->status, r);
    MHD_destroy_response(r);
    count_status(h, e->status);
    return ok;
}

/* The chat page: static bytes, never the API key's business (the page asks
 * for the key and sends it with its own API calls). */
static enum MHD_Result send_page(serve_http *h, struct MHD_Connection *conn) {
    struct MHD_Response *r = MHD_create_response_from_buffer(h->webui.len, (void *)h->webui.page,
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
    MHD_add_response_header(r, "Content-Security-Policy", h->webui.csp);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    enum MHD_Result ok = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    count_status(h, 200);
    return ok;
}

/* ------------------------------------------------------------ prompts */

/* The request's prompt tokens (malloc'd, *n of them) or NULL with e set. */
static int32_t *request_tokens(serve_http *h, const serve_gen_request *r, int32_t *n, serve_error *e) {
    size_t len = 0;
    if (r->chat) for (size_t i = 0; i < r->n_msgs; i++) len += strlen(r->msgs[i].content) + 16;
    else len = strlen(r->prompt);
    int32_t cap = (int32_t)(len < 100000000 ? len + 64 : 100000064), need = -1;
    int32_t *toks = NULL;
    tlm_error err = {0};
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *grown = realloc(toks, (size_t)cap * sizeof *toks);
        if (!grown) { need = -1; err.code = TLM_ERR_NOMEM; break; }
        toks = grown;
        need = r->chat ? tlm_chat_tokenize(h->p.model, r->msgs, r->n_msgs, true, toks, cap, &err)
                       : tlm_tokenize(h->p.model, r->prompt, strlen(r->prompt),
                                      tlm_model_adds_bos(h->p.model), false, toks, cap, &err);
        if (need <= cap) break;
        cap = need;
    }
    if (need < 0 || need > cap) {
        free(toks);
        if (err.code == TLM_ERR_NOMEM || err.code == TLM_OK)
            serve_error_set(e, 500, "server_error", NULL, NULL, "out of memory tokenizing the prompt");
        else
            serve_error_set(e, 400, "invalid_request_error", "invalid_value", r->chat ? "messages" : "prompt",
                            "%s", err.msg);
        return NULL;
    }
    *n = need;
    return toks;
}

/* ----------------------------------------------------------- streaming */

typedef struct stream_state {
    serve_http *h;
    struct MHD_Connection *conn;
    serve_job *job;
    serve_answer_id aid;
    bool include_usage;
    enum { STREAM_ROLE, STREAM_CONTENT, STREAM_END } phase;
    bool finished; /* the answer was written to its end */
    size_t seen;   /* visible bytes of the job already sent */
    char *buf;     /* bytes to send, buf[off..len) not yet sent */
    size_t len, off, cap;
} stream_state;

static bool stream_put(stream_state *st, const char *s, size_t n) {
    if (st->len + n > st->cap) {
        size_t cap = st->cap ? st->cap : 1024;
        while (cap < st->len + n) cap *= 2;
        char *grown = realloc(st->buf, cap);
        if (!grown) return false;
        st->buf = grown;
        st->cap = cap;
    }
    memcpy(st->buf + st->len, s, n);
    st->len += n;
    return true;
}

/* One server-sent event "data: <json>\n\n" (json from cJSON, freed). */
static bool stream_event(stream_state *st, char *json) {
    if (!json) return false;
    bool ok = stream_put(st, "data: ", 6) && stream_put(st, json, strlen(json)) && stream_put(st, "\n\n", 2);
    free(json);
    return ok;
}

/* Adds the next events; false when the stream must end at once. */
static bool stream_produce(stream_state *st) {
    if (st->phase == STREAM_ROLE) {
        st->phase = STREAM_CONTENT;
        return stream_event(st, serve_chunk_json(&st->aid, true, st->aid.chat ? "" : NULL, NULL));
    }
    serve_job_view v;
    serve_job_wait(st->job, st->seen, 1.0, &v);
    bool ok = true;
    if (v.n_text) {
        st->seen = v.visible;
        ok = stream_event(st, serve_chunk_json(&st->aid, false, v.text, NULL));
    }
    free(v.text);
    if (!ok) return false;
    if (v.done) {
        st->phase = STREAM_END;
        st->finished = true;
        if (v.failed) {
            count_status(st->h, v.error.status);
            /* the status line has gone; the error travels as an event, which
             * OpenAI's clients raise as an error */
            return stream_event(st, serve_error_json(&v.error));
        }
        count_status(st->h, 200);
        serve_usage u = {v.n_prompt, v.n_generated, v.n_cached};
        ok = stream_event(st, serve_chunk_json(&st->aid, false, NULL, v.finish_reason));
        if (ok && st->include_usage) ok = stream_event(st, serve_usage_chunk_json(&st->aid, &u));
        return ok && stream_put(st, "data: [DONE]\n\n", 14);
    }
    if (v.n_text == 0) {
        if (client_gone(st->conn)) return false;
        /* a comment line, ignored by clients: writing it also finds a
         * client that vanished without closing */
        return stream_put(st, ": keep-alive\n\n", 14);
    }
    return true;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    stream_state *st = cls;
    while (st->off == st->len) {
        st->off = st->len = 0;
        if (st->phase == STREAM_END) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!stream_produce(st)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = st->len - st->off < max ? st->len - st->off : max;
    memcpy(out, st->buf + st->off, n);
    st->off += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream_state *st = cls;
    if (!st->finished) atomic_fetch_add(&st->h->counters.disconnects, 1);
    serve_job_release(st->job); /* cancels it when it is still running */
    free(st->buf);
    free(st);
}

/* ---------------------------------------------------------- generation */

static enum MHD_Result handle_generate(serve_http *h, struct MHD_Connection *conn, bool chat,
                                       const http_req *req) {
    serve_error e;
    serve_gen_request r;
    if (!serve_parse_request(req->body ? req->body : "", req->len, chat, &r, &e)) {
        serve_gen_request_free(&r);
        return send_error(h, conn, &e);
    }
    int32_t n_prompt = 0;
    int32_t *toks = request_tokens(h, &r, &n_prompt, &e);
    if (!toks) {
        serve_gen_request_free(&r);
        return send_error(h, conn, &e);
    }
    serve_job_params jp = {
        .prompt = toks, .n_prompt = n_prompt, .sampling = r.sampling, .max_tokens = r.max_tokens,
        .stop = r.stop, .n_stop = r.n_stop, .ignore_eos = r.ignore_eos,
    };
    serve_job *job = serve_sched_submit(h->p.sched, &jp, &e);
    free(toks);
    bool stream = r.stream, include_usage = r.include_usage;
    serve_gen_request_free(&r);
    if (!job) return send_error(h, conn, &e);
    atomic_fetch_add(&h->counters.completions, 1);

    serve_answer_id aid;
    serve_answer_id_init(&aid, chat, h->p.model_id);
    if (stream) {
        stream_state *st = calloc(1, sizeof *st);
        if (!st) { serve_job_release(job); return send_json(h, conn, 500, NULL); }
        *st = (stream_state){.h = h, .conn = conn, .job = job, .aid = aid,
                             .include_usage = include_usage,
                             .phase = chat ? STREAM_ROLE : STREAM_CONTENT};
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, st, stream_free);
        if (!resp) { stream_free(st); return MHD_NO; }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ok = MHD_queue_response(conn, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return ok;
    }

    /* the whole answer at once: gather it, watching for a client that leaves */
    char *text = NULL;
    size_t len = 0;
    serve_job_view v;
    for (;;) {
        serve_job_wait(job, len, 0.2, &v);
        if (v.n_text) {
            char *grown = realloc(text, len + v.n_text + 1);
            if (!grown) {
                free(v.text);
                free(text);
                serve_job_release(job);
                return send_json(h, conn, 500, NULL);
            }
            text = grown;
            memcpy(text + len, v.text, v.n_text + 1);
            len += v.n_text;
        }
        free(v.text);
        if (v.done) break;
        if (client_gone(conn)) {
            atomic_fetch_add(&h->counters.disconnects, 1);
            free(text);
            serve_job_release(job);
            return MHD_NO; /* closes the connection */
        }
    }
    serve_job_release(job);
    if (v.failed) {
        free(text);
        return send_error(h, conn, &v.error);
    }
    serve_usage u = {v.n_prompt, v.n_generated, v.n_cached};
    char *body = serve_answer_json(&aid, text ? text : "", v.finish_reason, &u);
    free(text);
    return send_json(h, conn, 200, body);
}

/* ----------------------------------------------------------- routing */

static enum MHD_Result handle_models(serve_http *h, struct MHD_Connection *conn) {
    return send_json(h, conn, 200, serve_models_json(h->p.model_id, h->created));
}

static bool path_is(const char *url, const char *path) { return strcmp(url, path) == 0; }

static enum MHD_Result route(serve_http *h, struct MHD_Connection *conn, const char *url,
                             const char *method, const http_req *req) {
    serve_error e;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    if (path_is(url, "/health")) {
        if (!get) goto not_allowed;
        return send_text(h, conn, 200, "{\"status\":\"ok\"}", "application/json");
    }
    if (path_is(url, "/")) {
        if (!get) goto not_allowed;
        return send_page(h, conn);
    }
    bool known = path_is(url, "/v1/models") || path_is(url, "/metrics") ||
                 path_is(url, "/v1/chat/completions") || path_is(url, "/v1/completions");
    if (!known) {
        serve_error_set(&e, 404, "invalid_request_error", "not_found", NULL, "no endpoint %s %s", method, url);
        return send_error(h, conn, &e);
    }
    if (h->p.api_key) {
        const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
        static const char bearer[] = "Bearer ";
        bool ok = auth && strncmp(auth, bearer, sizeof bearer - 1) == 0 &&
                  serve_secret_equal(auth + sizeof bearer - 1, h->p.api_key);
        if (!ok) {
            serve_error_set(&e, 401, "invalid_request_error", "invalid_api_key", NULL,
                            auth ? "the API key is not valid" :
                                   "no API key given (header Authorization: Bearer KEY)");
            return send_error(h, conn, &e);
        }
    }
    if (path_is(url, "/v1/models")) {
        if (!get) goto not_allowed;
        return handle_models(h, conn);
    }
    if (path_is(url, "/metrics")) {
        if (!get) goto not_allowed;
        serve_sched_stats st;
        serve_sched_get_stats(h->p.sched, &st);
        char *text = serve_metrics_text(&st, &h->counters, mono_s() - h->t_start);
        if (!text) return send_json(h, conn, 500, NULL);
        enum MHD_Result ok = send_text(h, conn, 200, text, "text/plain; version=0.0.4");
        free(text);
        return ok;
    }
    if (!post) goto not_allowed;
    if (req->too_large) {
        serve_error_set(&e, 413, "invalid_request_error", "request_too_large", NULL,
                        "the request body is larger than %zu bytes", h->p.max_body);
        return send_error(h, conn, &e);
    }
    return handle_generate(h, conn, path_is(url, "/v1/chat/completions"), req);
not_allowed:
    serve_error_set(&e, 405, "invalid_request_error", "method_not_allowed", NULL,
                    "%s does not take %s", url, method);
    return send_error(h, conn, &e);
}

/* Bodies up to this many times the limit are read and dropped before the
 * 413, so that the client, still sending, reads the answer; beyond it the
 * connection is answered at once and closed. */
#define DRAIN_FACTOR 16

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    serve_http *h = cls;
    http_req *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req) return MHD_NO;
        *con_cls = req;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            unsigned long long n = strtoull(cl, NULL, 10);
            if (n > h->p.max_body) req->too_large = true;
            if (n > (unsigned long long)h->p.max_body * DRAIN_FACTOR) {
                serve_error e;
                serve_error_set(&e, 413, "invalid_request_error", "request_too_large", NULL,
                                "the request body is larger than %zu bytes", h->p.max_body);
                return send_error(h, conn, &e);
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        req->received += *upload_size;
        if (!req->too_large && req->len + *upload_size > h->p.max_body) {
            req->too_large = true;
            free(req->body);
            req->body = NULL;
            req->len = req->cap = 0;
        }
        if (!req->too_large) {
            if (req->len + *upload_size + 1 > req->cap) {
                size_t cap = req->cap ? req->cap : 4096;
                while (cap < req->len + *upload_size + 1) cap *= 2;
                char *grown = realloc(req->body, cap);
                if (!grown) return MHD_NO;
                req->body = grown;
                req->cap = cap;
            }
            memcpy(req->body + req->len, upload, *upload_size);
            req->len += *upload_size;
            req->body[req->len] = '\0';
        } else if (req->received > (uint64_t)h->p.max_body * DRAIN_FACTOR) {
            return MHD_NO;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return route(h, conn, url, method, req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)conn, (void)toe;
    http_req *req = *con_cls;
    if (!req) return;
    free(req->body);
    free(req);
    *con_cls = NULL;
}

/* ------------------------------------------------------------ daemon */

serve_http *serve_http_start(const serve_http_params *p, tlm_error *err) {
    serve_http *h = calloc(1, sizeof *h);
    if (!h) { if (err) { err->code = TLM_ERR_NOMEM; strcpy(err->msg, "out of memory"); } return NULL; }
    h->p = *p;
    h->t_start = mono_s();
    h->created = (int64_t)time(NULL);
    char why[200];
    if (!serve_webui_init(&h->webui, why, sizeof why)) {
        if (err) {
            err->code = TLM_ERR_FORMAT;
            snprintf(err->msg, sizeof err->msg, "%s", why);
        }
        free(h);
        return NULL;
    }

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", p->port);
    int rc = getaddrinfo(p->host, port_s, &hints, &ai);
    if (rc != 0 || !ai) {
        if (err) {
            err->code = TLM_ERR_ARG;
            snprintf(err->msg, sizeof err->msg, "--host %s: %s", p->host, gai_strerror(rc));
        }
        free(h);
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)p->max_connections,
        /* idle seconds before a connection is closed: a client sending a
         * byte a second keeps it, one that stops does not hold a thread */
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->daemon) {
        if (err) {
            err->code = TLM_ERR_IO;
            snprintf(err->msg, sizeof err->msg,
                     "cannot listen on %s port %d (in use, or not an address of this machine)",
                     p->host, p->port);
        }
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : p->port;
    return h;
}

int serve_http_port(const serve_http *h) { return h->port; }

void serve_http_stop(serve_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
