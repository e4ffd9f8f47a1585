/* cmd_serve.c — `trimlm serve`: an OpenAI-compatible HTTP server for one
 * model (serve_http.h for the endpoints, serve_sched.h for the slots). */
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model_registry.h"
#include "serve_http.h"
#include "serve_sched.h"

static const char serve_usage[] =
    "usage: trimlm serve -m MODEL [options]\n"
    "\n"
    "Serves the model over HTTP with OpenAI's API: POST /v1/chat/completions,\n"
    "POST /v1/completions, GET /v1/models, GET /health, GET /metrics (Prometheus).\n"
    "\n"
    "  -m, --model MODEL       GGUF file, Hugging Face directory, registry name or URL\n"
    "      --host ADDR         address to listen on (default 127.0.0.1: this machine only)\n"
    "      --port N            port (default 8080; 0 = any free port, printed at start)\n"
    "  -np, --parallel N       slots: requests generated at the same time (default 4)\n"
    "  -c, --ctx-size N        context of each slot in tokens (default min(model's, 4096))\n"
    "  -t, --threads N         threads (default: physical cores)\n"
    "      --kv f16|f32|int8   KV-cache type (default f16)\n"
    "      --api-key KEY       require 'Authorization: Bearer KEY' (all but /health)\n"
    "      --api-key-file FILE the same, the key read from FILE's first line\n"
    "      --max-queue N       requests that may wait for a slot; more get 429 (default 16)\n"
    "      --timeout S         a request's time limit in seconds, queue included (default 600;\n"
    "                          0 = none)\n"
    "      --max-body BYTES    largest request body (default 8388608); larger get 413\n"
    "  -h, --help              this help\n"
    "\n"
    "Stops on SIGINT or SIGTERM: requests still running end with an error.\n";

typedef struct serve_options {
    const char *model;
    const char *host;
    const char *api_key;
    const char *api_key_file;
    int64_t port, parallel, ctx, threads, max_queue, max_body;
    double timeout;
    int32_t kv_type;
} serve_options;

static int parse_serve_args(int argc, char **argv, serve_options *o, bool *done) {
    *o = (serve_options){.host = "127.0.0.1", .port = 8080, .parallel = 4, .max_queue = 16,
                         .max_body = 8 << 20, .timeout = 600, .kv_type = TLM_KV_F16};
    cli_args a;
    cli_args_init(&a, "serve", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) {
            fputs(serve_usage, stdout);
            *done = true;
            return 0;
        }
        else if (cli_flag(&a, "-m", "--model")) o->model = cli_value(&a);
        else if (cli_flag(&a, NULL, "--host")) o->host = cli_value(&a);
        else if (cli_flag(&a, NULL, "--port")) cli_int(&a, 0, 65535, "a port, 0 to 65535", &o->port);
        else if (cli_flag(&a, "-np", "--parallel")) cli_int(&a, 1, 256, "1 to 256 slots", &o->parallel);
        else if (cli_flag(&a, "-c", "--ctx-size")) cli_int(&a, 16, 1 << 20, "16 to 1048576 tokens", &o->ctx);
        else if (cli_flag(&a, "-t", "--threads")) cli_threads(&a, &o->threads);
        else if (cli_flag(&a, NULL, "--kv")) cli_kv_type(&a, &o->kv_type);
        else if (cli_flag(&a, NULL, "--api-key")) o->api_key = cli_value(&a);
        else if (cli_flag(&a, NULL, "--api-key-file")) o->api_key_file = cli_value(&a);
        else if (cli_flag(&a, NULL, "--max-queue")) cli_int(&a, 0, 100000, "0 to 100000", &o->max_queue);
        else if (cli_flag(&a, NULL, "--timeout")) cli_float(&a, 0, 1e7, "seconds, 0 to 1e7", &o->timeout);
        else if (cli_flag(&a, NULL, "--max-body")) cli_int(&a, 1024, (int64_t)1 << 30, "1024 to 1073741824 bytes", &o->max_body);
        else cli_unknown(&a);
    }
    if (a.status) return a.status;
    if (!o->model) return cli_usage_error("serve", "no model given (-m MODEL)");
    if (o->api_key && o->api_key_file) return cli_usage_error("serve", "give --api-key or --api-key-file, not both");
    if (o->api_key && !o->api_key[0]) return cli_usage_error("serve", "the --api-key is empty");
    return 0;
}

/* The key from the first line of path (malloc'd), or NULL after a message. */
static char *read_key_file(const char *path) {
    tlm_error err = {0};
    size_t len = 0;
    char *text = cli_read_file(path, 65536, &len, &err);
    if (!text) { cli_fail_err(&err); return NULL; }
    text[strcspn(text, "\r\n")] = '\0';
    char *key = text[0] ? strdup(text) : NULL;
    tlm_free_string(text);
    if (!key) cli_fail("%s: the API key file is empty", path);
    return key;
}

int cmd_serve(int argc, char **argv) {
    serve_options o;
    bool done = false;
    int rc = parse_serve_args(argc, argv, &o, &done);
    if (rc || done) return rc;

    char *file_key = NULL;
    if (o.api_key_file) {
        file_key = read_key_file(o.api_key_file);
        if (!file_key) return CLI_EXIT_FAIL;
        o.api_key = file_key;
    }

    /* Signals are taken by sigwait below: every thread started from here on
     * inherits the mask; a client that vanishes must not kill the server. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    tlm_error err = {0};
    rc = CLI_EXIT_FAIL;
    serve_sched *sched = NULL;
    serve_http *http = NULL;
    tlm_model *model = load_model_arg(o.model, &err);
    if (!model) { cli_fail_err(&err); goto out; }
    cli_warn_ctx_beyond_training(model, o.ctx, o.model);

    serve_sched_params sp = {
        .n_slots = (int32_t)o.parallel, .n_ctx = (int32_t)o.ctx, .n_threads = (int32_t)o.threads,
        .kv_type = o.kv_type, .max_queue = (int32_t)o.max_queue, .timeout_s = o.timeout,
    };
    sched = serve_sched_new(model, &sp, &err);
    if (!sched) { cli_fail_err(&err); goto out; }

    /* the model's name in answers: the -m argument without directories */
    char id_buf[512];
    snprintf(id_buf, sizeof id_buf, "%s", o.model);
    const char *model_id = basename(id_buf);
    serve_http_params hp = {
        .host = o.host, .port = (int)o.port, .api_key = o.api_key, .max_body = (size_t)o.max_body,
        .model_id = model_id, .model = model, .sched = sched,
        /* slots + queue + room for /health and /metrics; more are refused */
        .max_connections = (int)(o.parallel + o.max_queue + 64),
    };
    http = serve_http_start(&hp, &err);
    if (!http) { cli_fail_err(&err); goto out; }
    fprintf(stderr, "trimlm: serving %s on http://%s%s%s:%d (%d slots of %d tokens%s)\n", model_id,
            strchr(o.host, ':') ? "[" : "", o.host, strchr(o.host, ':') ? "]" : "",
            serve_http_port(http), (int)o.parallel, serve_sched_n_ctx(sched),
            o.api_key ? ", API key required" : "");
    fflush(stderr);

    int sig = 0;
    sigwait(&stop_signals, &sig);
    fprintf(stderr, "trimlm: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = CLI_EXIT_OK;

out:
    serve_sched_stop(sched); /* running answers end, so connections finish */
    serve_http_stop(http);
    serve_sched_free(sched);
    tlm_model_free(model);
    free(file_key);
    return rc;
}
