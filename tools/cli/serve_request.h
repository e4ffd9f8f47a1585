/*
 * serve_request.h — the body of an OpenAI-style generation request
 * (`POST /v1/chat/completions`, `POST /v1/completions`) read into what the
 * scheduler needs, and the errors of the OpenAI shape
 *
 *   {"error": {"message": "...", "type": "invalid_request_error", "param": "...", "code": "..."}}
 *
 * Unknown fields are ignored, as OpenAI does; null stands for an absent field.
 */
#ifndef TLM_SERVE_REQUEST_H
#define TLM_SERVE_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trimlm.h"

/* An error answered to the client: HTTP status plus the OpenAI error object. */
typedef struct serve_error {
    int status;       /* 400, 401, 404, 405, 413, 429, 500, 503, 504 */
    const char *type; /* "invalid_request_error", "server_error", ... (a literal) */
    const char *code; /* "invalid_json", "context_length_exceeded", ... or NULL */
    const char *param; /* the offending field, or NULL (a literal or a key of the body) */
    char message[320];
} serve_error;

void serve_error_set(serve_error *e, int status, const char *type, const char *code,
                     const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The error as a JSON body (malloc'd; NULL when out of memory). */
char *serve_error_json(const serve_error *e);

#define SERVE_MAX_STOP 4 /* stop strings per request, as OpenAI allows */

typedef struct serve_gen_request {
    bool chat;                 /* chat/completions (messages) or completions (prompt) */
    tlm_chat_message *msgs;    /* chat: n_msgs messages; strings point into owned storage */
    size_t n_msgs;
    const char *prompt;        /* completions: the text */
    tlm_sampler_params sampling;
    int64_t max_tokens;        /* -1: until the end of the turn or a full context */
    const char *stop[SERVE_MAX_STOP];
    int n_stop;
    bool stream;
    bool include_usage;        /* stream_options.include_usage */
    bool ignore_eos;           /* extension (as llama.cpp's server): generate past end of turn */

    /* storage the pointers above refer to */
    void *json;                /* the parsed cJSON tree */
    char **owned;              /* strings joined from content parts */
    size_t n_owned;
} serve_gen_request;

/* Parses body[0..len) of a chat (chat = true) or a completion request.
 * Returns false with e set (status 400) when the body is not JSON, not an
 * object, or a field has the wrong type or range. */
bool serve_parse_request(const char *body, size_t len, bool chat, serve_gen_request *out,
                         serve_error *e);
void serve_gen_request_free(serve_gen_request *r);

#endif
