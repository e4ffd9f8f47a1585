/*
 * serve_response.h — the OpenAI response objects `trimlm serve` writes:
 * chat.completion / text_completion answers, their streamed chunks
 * (chat.completion.chunk / text_completion) and the usage block.
 */
#ifndef TLM_SERVE_RESPONSE_H
#define TLM_SERVE_RESPONSE_H

#include <stdbool.h>
#include <stdint.h>

/* What every object of one answer shares. */
typedef struct serve_answer_id {
    bool chat;          /* chat completion, or text completion */
    char id[48];        /* "chatcmpl-..." / "cmpl-..." */
    const char *model;  /* the served model's id */
    int64_t created;    /* Unix seconds */
} serve_answer_id;

typedef struct serve_usage {
    int64_t prompt_tokens, completion_tokens, cached_tokens;
} serve_usage;

void serve_answer_id_init(serve_answer_id *a, bool chat, const char *model);

/* The whole answer (non-streaming). Each returns a malloc'd string, or NULL
 * when out of memory. text may hold any bytes; invalid UTF-8 is never
 * produced by the detokenizer. */
char *serve_answer_json(const serve_answer_id *a, const char *text, const char *finish_reason,
                        const serve_usage *u);
/* One streamed chunk: with_role adds the assistant role (the first chunk of a
 * chat answer); text may be NULL (no content); finish_reason NULL while going. */
char *serve_chunk_json(const serve_answer_id *a, bool with_role, const char *text,
                       const char *finish_reason);
/* The last chunk when stream_options.include_usage: no choices, the usage. */
char *serve_usage_chunk_json(const serve_answer_id *a, const serve_usage *u);

/* GET /v1/models: {"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}. */
char *serve_models_json(const char *model_id, int64_t created);

#endif
