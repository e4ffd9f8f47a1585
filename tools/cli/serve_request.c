/* serve_request.c — reading OpenAI-style generation requests and writing
 * OpenAI-shaped errors; see serve_request.h. */
#include "serve_request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void serve_error_set(serve_error *e, int status, const char *type, const char *code,
                     const char *param, const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    e->param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

char *serve_error_json(const serve_error *e) {
    cJSON *root = cJSON_CreateObject();
    cJSON *obj = cJSON_AddObjectToObject(root, "error");
    if (!obj) { cJSON_Delete(root); return NULL; }
    cJSON_AddStringToObject(obj, "message", e->message);
    cJSON_AddStringToObject(obj, "type", e->type ? e->type : "server_error");
    if (e->param) cJSON_AddStringToObject(obj, "param", e->param);
    else cJSON_AddNullToObject(obj, "param");
    if (e->code) cJSON_AddStringToObject(obj, "code", e->code);
    else cJSON_AddNullToObject(obj, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* ------------------------------------------------------------ fields */

static const char *json_type(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "null";
}

/* "'temperature' must be a number, not a string" (status 400). */
static bool bad_field(serve_error *e, const char *param, const char *expected, const cJSON *v) {
    serve_error_set(e, 400, "invalid_request_error", "invalid_type", param,
                    "'%s' must be %s, not %s", param, expected, json_type(v));
    return false;
}

/* The field key of obj, or NULL when absent or null. */
static const cJSON *field(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* A number field in [lo, hi] into *out (unchanged when absent). */
static bool number_field(const cJSON *obj, const char *key, double lo, double hi, double *out,
                         serve_error *e) {
    const cJSON *v = field(obj, key);
    if (!v) return true;
    if (!cJSON_IsNumber(v)) return bad_field(e, key, "a number", v);
    double x = v->valuedouble;
    if (!isfinite(x) || x < lo || x > hi) {
        serve_error_set(e, 400, "invalid_request_error", "invalid_value", key,
                        "'%s' is %g; it must be between %g and %g", key, x, lo, hi);
        return false;
    }
    *out = x;
    return true;
}

/* An integer field in [lo, hi] into *out (unchanged when absent). */
static bool int_field(const cJSON *obj, const char *key, double lo, double hi, int64_t *out,
                      bool *present, serve_error *e) {
    const cJSON *v = field(obj, key);
    if (!v) return true;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return bad_field(e, key, "an integer", v);
    double x = v->valuedouble;
    if (x < lo || x > hi) {
        serve_error_set(e, 400, "invalid_request_error", "invalid_value", key,
                        "'%s' is %.0f; it must be between %.0f and %.0f", key, x, lo, hi);
        return false;
    }
    *out = (int64_t)x;
    if (present) *present = true;
    return true;
}

static bool bool_field(const cJSON *obj, const char *key, bool *out, serve_error *e) {
    const cJSON *v = field(obj, key);
    if (!v) return true;
    if (!cJSON_IsBool(v)) return bad_field(e, key, "a boolean", v);
    *out = cJSON_IsTrue(v);
    return true;
}

static bool keep_owned(serve_gen_request *r, char *s) {
    char **grown = realloc(r->owned, (r->n_owned + 1) * sizeof *grown);
    if (!grown) { free(s); return false; }
    r->owned = grown;
    r->owned[r->n_owned++] = s;
    return true;
}

/* A message's content: a string, or an array of {"type": "text", "text": ...}
 * parts, joined. */
static const char *message_content(serve_gen_request *r, const cJSON *content, size_t index,
                                   serve_error *e) {
    if (!content) return "";
    if (cJSON_IsString(content)) return content->valuestring;
    if (!cJSON_IsArray(content)) {
        serve_error_set(e, 400, "invalid_request_error", "invalid_type", "messages",
                        "messages[%zu].content must be a string or an array of text parts", index);
        return NULL;
    }
    size_t total = 1;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 ||
            !cJSON_IsString(text)) {
            serve_error_set(e, 400, "invalid_request_error", "invalid_type", "messages",
                            "messages[%zu].content: only parts {\"type\": \"text\", \"text\": "
                            "\"...\"} are supported", index);
            return NULL;
        }
        total += strlen(text->valuestring);
    }
    char *joined = malloc(total);
    if (!joined || !keep_owned(r, joined)) {
        serve_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    size_t at = 0;
    cJSON_ArrayForEach(part, content) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t n = strlen(t);
        memcpy(joined + at, t, n);
        at += n;
    }
    joined[at] = '\0';
    return joined;
}

static bool parse_messages(serve_gen_request *r, const cJSON *root, serve_error *e) {
    const cJSON *msgs = field(root, "messages");
    if (!msgs) {
        serve_error_set(e, 400, "invalid_request_error", "missing_required_parameter", "messages",
                        "'messages' is required");
        return false;
    }
    if (!cJSON_IsArray(msgs)) return bad_field(e, "messages", "an array", msgs);
    size_t n = (size_t)cJSON_GetArraySize(msgs);
    if (n == 0) {
        serve_error_set(e, 400, "invalid_request_error", "invalid_value", "messages",
                        "'messages' is empty; give at least one message");
        return false;
    }
    r->msgs = calloc(n, sizeof *r->msgs);
    if (!r->msgs) { serve_error_set(e, 500, "server_error", NULL, NULL, "out of memory"); return false; }
    size_t i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *role = cJSON_IsObject(m) ? cJSON_GetObjectItemCaseSensitive(m, "role") : NULL;
        if (!cJSON_IsString(role)) {
            serve_error_set(e, 400, "invalid_request_error", "invalid_type", "messages",
                            "messages[%zu] must be an object with a string 'role'", i);
            return false;
        }
        const char *rs = role->valuestring;
        /* "developer" is OpenAI's newer name of the system role */
        if (strcmp(rs, "developer") == 0) rs = "system";
        if (strcmp(rs, "system") != 0 && strcmp(rs, "user") != 0 && strcmp(rs, "assistant") != 0) {
            serve_error_set(e, 400, "invalid_request_error", "invalid_value", "messages",
                            "messages[%zu].role must be 'system', 'user' or 'assistant'", i);
            return false;
        }
        const char *content = message_content(r, field(m, "content"), i, e);
        if (!content) return false;
        r->msgs[i++] = (tlm_chat_message){rs, content};
    }
    r->n_msgs = i;
    return true;
}

static bool parse_prompt(serve_gen_request *r, const cJSON *root, serve_error *e) {
    const cJSON *p = field(root, "prompt");
    if (!p) {
        serve_error_set(e, 400, "invalid_request_error", "missing_required_parameter", "prompt",
                        "'prompt' is required");
        return false;
    }
    /* an array of one string is the same prompt; several would ask for
     * several completions, which this server does not batch into one answer */
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
        p = cJSON_GetArrayItem(p, 0);
    if (!cJSON_IsString(p)) return bad_field(e, "prompt", "a string", p);
    if (!p->valuestring[0]) {
        serve_error_set(e, 400, "invalid_request_error", "invalid_value", "prompt", "'prompt' is empty");
        return false;
    }
    r->prompt = p->valuestring;
    return true;
}

static bool parse_stop(serve_gen_request *r, const cJSON *root, serve_error *e) {
    const cJSON *s = field(root, "stop");
    if (!s) return true;
    if (cJSON_IsString(s)) {
        if (s->valuestring[0]) r->stop[r->n_stop++] = s->valuestring;
        return true;
    }
    if (!cJSON_IsArray(s)) return bad_field(e, "stop", "a string or an array of strings", s);
    if (cJSON_GetArraySize(s) > SERVE_MAX_STOP) {
        serve_error_set(e, 400, "invalid_request_error", "invalid_value", "stop",
                        "'stop' has %d strings; at most %d are allowed", cJSON_GetArraySize(s),
                        SERVE_MAX_STOP);
        return false;
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, s) {
        if (!cJSON_IsString(x)) return bad_field(e, "stop", "a string or an array of strings", x);
        if (x->valuestring[0]) r->stop[r->n_stop++] = x->valuestring;
    }
    return true;
}

bool serve_parse_request(const char *body, size_t len, bool chat, serve_gen_request *r,
                         serve_error *e) {
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->max_tokens = -1;
    /* OpenAI's defaults: temperature 1, top_p 1; top_k and min_p are off
     * unless asked for (they are extensions of llama.cpp's server) */
    r->sampling = tlm_sampler_default_params();
    r->sampling.temperature = 1.0f;
    r->sampling.top_p = 1.0f;
    r->sampling.top_k = 0;
    r->sampling.min_p = 0.0f;
    r->sampling.repeat_penalty = 1.0f;

    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) {
        serve_error_set(e, 400, "invalid_request_error", "invalid_json", NULL,
                        "the body is not valid JSON (error near byte %td)",
                        cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - body : (ptrdiff_t)0);
        return false;
    }
    r->json = root;
    if (!cJSON_IsObject(root)) {
        serve_error_set(e, 400, "invalid_request_error", "invalid_json", NULL,
                        "the body must be a JSON object");
        return false;
    }
    if (chat ? !parse_messages(r, root, e) : !parse_prompt(r, root, e)) return false;

    const cJSON *model = field(root, "model");
    if (model && !cJSON_IsString(model)) return bad_field(e, "model", "a string", model);

    double temp = r->sampling.temperature, top_p = r->sampling.top_p, min_p = r->sampling.min_p;
    int64_t top_k = 0, seed = 0, n = 1, max_tokens = -1;
    bool have_seed = false;
    if (!number_field(root, "temperature", 0, 2, &temp, e) ||
        !number_field(root, "top_p", 0, 1, &top_p, e) ||
        !number_field(root, "min_p", 0, 1, &min_p, e) ||
        !int_field(root, "top_k", 0, 1e9, &top_k, NULL, e) ||
        !int_field(root, "seed", -9.2e18, 9.2e18, &seed, &have_seed, e) ||
        !int_field(root, "n", 1, 1, &n, NULL, e) ||
        !int_field(root, "max_tokens", 1, 1e9, &max_tokens, NULL, e) ||
        !int_field(root, "max_completion_tokens", 1, 1e9, &max_tokens, NULL, e) ||
        !bool_field(root, "stream", &r->stream, e) ||
        !bool_field(root, "ignore_eos", &r->ignore_eos, e) || !parse_stop(r, root, e))
        return false;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) return bad_field(e, "stream_options", "an object", so);
        if (!bool_field(so, "include_usage", &r->include_usage, e)) return false;
    }
    r->sampling.temperature = (float)temp;
    r->sampling.top_p = (float)top_p;
    r->sampling.min_p = (float)min_p;
    r->sampling.top_k = (int32_t)top_k;
    /* TLM_SEED_RANDOM is UINT64_MAX: seed -1 would read as "random", which a
     * client asking for a fixed seed does not mean; fold it elsewhere */
    r->sampling.seed = have_seed ? ((uint64_t)seed == TLM_SEED_RANDOM ? 0x9e3779b97f4a7c15ULL : (uint64_t)seed)
                                 : TLM_SEED_RANDOM;
    r->max_tokens = max_tokens;
    return true;
}

void serve_gen_request_free(serve_gen_request *r) {
    if (!r) return;
    cJSON_Delete(r->json);
    free(r->msgs);
    for (size_t i = 0; i < r->n_owned; i++) free(r->owned[i]);
    free(r->owned);
    memset(r, 0, sizeof *r);
}
