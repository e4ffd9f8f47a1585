/*
 * eval_mc_items.c — reading the items of `trimlm eval --mc` and PIQA's labels
 * (see eval_mc_items.h; the prompt layouts are in eval_mc.c).
 */
#include "eval_mc_items.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* A NUL-terminated copy of text[0..len) that the line loops may cut up. */
static char *copy_text(const char *text, size_t len) {
    char *copy = malloc(len + 1);
    if (!copy) return NULL;
    memcpy(copy, text, len);
    copy[len] = '\0';
    return copy;
}

void mc_item_free(mc_item *it) {
    free(it->context);
    for (int c = 0; c < it->n_choices; c++) free(it->continuations ? it->continuations[c] : NULL);
    free(it->continuations);
}

void mc_set_free(mc_set *s) {
    for (int64_t i = 0; i < s->n; i++) mc_item_free(&s->items[i]);
    free(s->items);
}

char *mc_concat3(const char *a, const char *b, const char *c) {
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = malloc(la + lb + lc + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

/* What each task expects, for messages. */
static const char *task_fields(const char *task) {
    if (strcmp(task, "hellaswag") == 0) return "{\"ctx\": str, \"endings\": [str], \"label\": int}";
    if (strcmp(task, "piqa") == 0) return "{\"goal\": str, \"sol1\": str, \"sol2\": str}";
    return "{\"query\": str, \"choices\": [str], \"gold\": int}";
}

/* An integer field (or a string of digits, as some exports write labels). */
static bool int_field(const cJSON *obj, const char *name, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 1e9) {
        *out = (int)v->valuedouble;
        return true;
    }
    if (cJSON_IsString(v) && v->valuestring[0]) {
        char *end = NULL;
        errno = 0;
        long x = strtol(v->valuestring, &end, 10);
        if (errno == 0 && *end == '\0' && x > -1000000000L && x < 1000000000L) { *out = (int)x; return true; }
    }
    return false;
}

static const char *string_field(const cJSON *obj, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Fills it from one parsed line; on a wrong shape sets err naming the field. */
static tlm_status item_from_json(const cJSON *obj, const char *task, const char *path, int64_t line,
                                 mc_item *it, tlm_error *err) {
    const char *ctx_part = NULL, *ctx_prefix = "", *ctx_suffix = "";
    const cJSON *choices = NULL;
    const char *piqa_sols[2] = {NULL, NULL};
    const char *list_name = NULL, *gold_name = NULL;
    bool piqa = strcmp(task, "piqa") == 0;
    if (strcmp(task, "hellaswag") == 0) {
        ctx_part = string_field(obj, "ctx");
        if (!ctx_part) goto missing_ctx;
        list_name = "endings";
        gold_name = "label";
    } else if (piqa) {
        ctx_part = string_field(obj, "goal");
        piqa_sols[0] = string_field(obj, "sol1");
        piqa_sols[1] = string_field(obj, "sol2");
        if (!ctx_part || !piqa_sols[0] || !piqa_sols[1])
            return cli_seterr(err, TLM_ERR_FORMAT, "%s:%lld: no string field \"%s\" (--task piqa expects %s)",
                              path, (long long)line, !ctx_part ? "goal" : !piqa_sols[0] ? "sol1" : "sol2",
                              task_fields(task));
        ctx_prefix = "Question: ";
        ctx_suffix = "\nAnswer:";
    } else {
        ctx_part = string_field(obj, "query");
        if (!ctx_part) goto missing_ctx;
        ctx_suffix = "\nAnswer:";
        list_name = "choices";
        gold_name = "gold";
    }
    int n_choices = 2;
    if (!piqa) {
        choices = cJSON_GetObjectItemCaseSensitive(obj, list_name);
        n_choices = cJSON_IsArray(choices) ? cJSON_GetArraySize(choices) : -1;
        if (n_choices < 2)
            return cli_seterr(err, TLM_ERR_FORMAT, "%s:%lld: \"%s\" must be a list of at least 2 strings (--task %s expects %s)",
                              path, (long long)line, list_name, task, task_fields(task));
        if (!int_field(obj, gold_name, &it->gold))
            return cli_seterr(err, TLM_ERR_FORMAT, "%s:%lld: no integer field \"%s\" (--task %s expects %s)",
                              path, (long long)line, gold_name, task, task_fields(task));
        if (it->gold < 0 || it->gold >= n_choices)
            return cli_seterr(err, TLM_ERR_FORMAT, "%s:%lld: \"%s\" is %d, not the index of one of the %d choices",
                              path, (long long)line, gold_name, it->gold, n_choices);
    }
    it->line = line;
    it->context = mc_concat3(ctx_prefix, ctx_part, ctx_suffix);
    it->continuations = calloc((size_t)n_choices, sizeof *it->continuations);
    if (!it->context || !it->continuations) return cli_seterr(err, TLM_ERR_NOMEM, "out of memory reading %s", path);
    it->n_choices = n_choices;
    for (int c = 0; c < n_choices; c++) {
        const char *choice = piqa ? piqa_sols[c] : NULL;
        if (!piqa) {
            const cJSON *v = cJSON_GetArrayItem(choices, c);
            if (!cJSON_IsString(v))
                return cli_seterr(err, TLM_ERR_FORMAT, "%s:%lld: \"%s\"[%d] is not a string", path,
                                  (long long)line, list_name, c);
            choice = v->valuestring;
        }
        it->continuations[c] = mc_concat3(" ", choice, "");
        if (!it->continuations[c]) return cli_seterr(err, TLM_ERR_NOMEM, "out of memory reading %s", path);
    }
    return TLM_OK;

missing_ctx:
    return cli_seterr(err, TLM_ERR_FORMAT, "%s:%lld: no string field \"%s\" (--task %s expects %s)", path,
                      (long long)line, strcmp(task, "hellaswag") == 0 ? "ctx" : "query", task,
                      task_fields(task));
}

static bool push_item(mc_set *s, const mc_item *it) {
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 256;
        mc_item *grown = realloc(s->items, (size_t)cap * sizeof *grown);
        if (!grown) return false;
        s->items = grown;
        s->cap = cap;
    }
    s->items[s->n++] = *it;
    return true;
}

tlm_status mc_labels_parse(const char *labels_text, size_t len, const char *labels_path,
                           const char *mc_path, mc_set *s, tlm_error *err) {
    char *text = copy_text(labels_text, len);
    if (!text) return cli_seterr(err, TLM_ERR_NOMEM, "out of memory reading %s", labels_path);
    int64_t line = 0, item = 0;
    tlm_status st = TLM_OK;
    char *at = text;
    while (*at && item < s->n) {
        char *nl = strchr(at, '\n');
        if (nl) *nl = '\0';
        line++;
        size_t l = strlen(at);
        while (l && (at[l - 1] == '\r' || at[l - 1] == ' ')) at[--l] = '\0';
        mc_item *it = &s->items[item];
        /* labels are aligned with the lines of the --mc file */
        if (line == it->line) {
            if (strcmp(at, "0") != 0 && strcmp(at, "1") != 0) {
                st = cli_seterr(err, TLM_ERR_FORMAT, "%s:%lld: expected a label 0 or 1, found '%.40s'", labels_path,
                                (long long)line, at);
                break;
            }
            it->gold = at[0] - '0';
            item++;
        }
        if (!nl) break;
        at = nl + 1;
    }
    if (st == TLM_OK && item < s->n)
        st = cli_seterr(err, TLM_ERR_FORMAT, "%s has %lld lines but %s has an item on line %lld: the files do not match",
                        labels_path, (long long)line, mc_path, (long long)s->items[item].line);
    free(text);
    return st;
}

tlm_status mc_items_parse(const char *items_text, size_t len, const char *task, const char *path,
                          int64_t limit, mc_set *s, tlm_error *err) {
    char *text = copy_text(items_text, len);
    if (!text) return cli_seterr(err, TLM_ERR_NOMEM, "out of memory reading %s", path);
    tlm_status st = TLM_OK;
    int64_t line = 0;
    char *at = text;
    while (*at && (limit <= 0 || s->n < limit)) {
        char *nl = strchr(at, '\n');
        if (nl) *nl = '\0';
        line++;
        const char *p = at;
        while (*p == ' ' || *p == '\t' || *p == '\r') p++;
        if (*p) {
            cJSON *obj = cJSON_Parse(p);
            if (!obj || !cJSON_IsObject(obj)) {
                cJSON_Delete(obj);
                st = cli_seterr(err, TLM_ERR_FORMAT, "%s:%lld: not a JSON object (--task %s expects %s on each line)",
                                path, (long long)line, task, task_fields(task));
                break;
            }
            mc_item it = {0};
            st = item_from_json(obj, task, path, line, &it, err);
            cJSON_Delete(obj);
            if (st == TLM_OK && !push_item(s, &it)) st = cli_seterr(err, TLM_ERR_NOMEM, "out of memory reading %s", path);
            if (st != TLM_OK) { mc_item_free(&it); break; }
        }
        if (!nl) break;
        at = nl + 1;
    }
    free(text);
    if (st == TLM_OK && s->n == 0) st = cli_seterr(err, TLM_ERR_FORMAT, "%s: no items", path);
    return st;
}

