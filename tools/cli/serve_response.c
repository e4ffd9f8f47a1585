/* serve_response.c — OpenAI response objects; see serve_response.h. */
#include "serve_response.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void serve_answer_id_init(serve_answer_id *a, bool chat, const char *model) {
    /* ids need only be distinct among a server's answers: the clock in
     * nanoseconds and a counter make them so */
    static _Atomic uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t n = ++counter;
    a->chat = chat;
    a->model = model;
    a->created = (int64_t)ts.tv_sec;
    snprintf(a->id, sizeof a->id, "%s-%llx%09lx%llx", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)ts.tv_sec, (unsigned long)ts.tv_nsec, (unsigned long long)n);
}

static cJSON *answer_head(const serve_answer_id *a, const char *object) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", a->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)a->created);
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON_AddStringToObject(o, "system_fingerprint", "trimlm");
    return o;
}

static void add_usage(cJSON *o, const serve_usage *u) {
    cJSON *us = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(us, "prompt_tokens", (double)u->prompt_tokens);
    cJSON_AddNumberToObject(us, "completion_tokens", (double)u->completion_tokens);
    cJSON_AddNumberToObject(us, "total_tokens", (double)(u->prompt_tokens + u->completion_tokens));
    cJSON *details = cJSON_AddObjectToObject(us, "prompt_tokens_details");
    cJSON_AddNumberToObject(details, "cached_tokens", (double)u->cached_tokens);
}

static void add_finish(cJSON *choice, const char *finish_reason) {
    if (finish_reason) cJSON_AddStringToObject(choice, "finish_reason", finish_reason);
    else cJSON_AddNullToObject(choice, "finish_reason");
}

static char *print_and_free(cJSON *o) {
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *serve_answer_json(const serve_answer_id *a, const char *text, const char *finish_reason,
                        const serve_usage *u) {
    cJSON *o = answer_head(a, a->chat ? "chat.completion" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (a->chat) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", text);
    } else {
        cJSON_AddStringToObject(c, "text", text);
    }
    cJSON_AddNullToObject(c, "logprobs");
    add_finish(c, finish_reason);
    add_usage(o, u);
    return print_and_free(o);
}

char *serve_chunk_json(const serve_answer_id *a, bool with_role, const char *text,
                       const char *finish_reason) {
    cJSON *o = answer_head(a, a->chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choices = cJSON_AddArrayToObject(o, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (a->chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (with_role) cJSON_AddStringToObject(d, "role", "assistant");
        if (text) cJSON_AddStringToObject(d, "content", text);
    } else {
        cJSON_AddStringToObject(c, "text", text ? text : "");
    }
    cJSON_AddNullToObject(c, "logprobs");
    add_finish(c, finish_reason);
    return print_and_free(o);
}

char *serve_usage_chunk_json(const serve_answer_id *a, const serve_usage *u) {
    cJSON *o = answer_head(a, a->chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddArrayToObject(o, "choices");
    add_usage(o, u);
    return print_and_free(o);
}

char *serve_models_json(const char *model_id, int64_t created) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddItemToArray(data, m);
    cJSON_AddStringToObject(m, "id", model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "trimlm");
    return print_and_free(o);
}
