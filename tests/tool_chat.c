/*
 * tool_chat.c — renders a conversation with trimlm's chat templates for
 * tests/test_chat_template.py, which compares the bytes with Jinja2.
 *
 *   tool_chat --model PATH [--gen] MESSAGES.json
 *       tlm_chat_render with the model's own template and BOS/EOS texts
 *   tool_chat --template FILE --bos TEXT --eos TEXT [--gen] MESSAGES.json
 *       the renderer behind it, for a template text given directly
 *   tool_chat --model PATH --tokenize [--gen] MESSAGES.json
 *       tlm_chat_tokenize: the token ids, space-separated, on one line
 *
 * MESSAGES.json: [{"role": "user", "content": "..."}, ...]. The rendering
 * goes to stdout as is; an error gives one line on stderr and exit 1.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "trimlm.h"

static char *read_whole_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = '\0';
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *template_path = NULL, *bos = "", *eos = "", *messages_path = NULL;
    bool gen = false, tokenize = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) model_path = argv[++i];
        else if (strcmp(argv[i], "--template") == 0 && i + 1 < argc) template_path = argv[++i];
        else if (strcmp(argv[i], "--bos") == 0 && i + 1 < argc) bos = argv[++i];
        else if (strcmp(argv[i], "--eos") == 0 && i + 1 < argc) eos = argv[++i];
        else if (strcmp(argv[i], "--gen") == 0) gen = true;
        else if (strcmp(argv[i], "--tokenize") == 0) tokenize = true;
        else messages_path = argv[i];
    }
    if (!messages_path || (!model_path == !template_path) || (tokenize && !model_path)) {
        fprintf(stderr, "usage: tool_chat (--model PATH | --template FILE --bos T --eos T) [--gen] MESSAGES.json\n");
        return 2;
    }
    char *json_text = read_whole_file(messages_path);
    cJSON *json = json_text ? cJSON_Parse(json_text) : NULL;
    if (!cJSON_IsArray(json)) {
        fprintf(stderr, "tool_chat: %s: expected a JSON array of messages\n", messages_path);
        return 2;
    }
    size_t n = (size_t)cJSON_GetArraySize(json);
    tlm_chat_message *msgs = calloc(n ? n : 1, sizeof *msgs);
    size_t i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, json) {
        msgs[i].role = cJSON_GetStringValue(cJSON_GetObjectItem(item, "role"));
        msgs[i].content = cJSON_GetStringValue(cJSON_GetObjectItem(item, "content"));
        i++;
    }

    tlm_error err = {0};
    char *out = NULL;
    tlm_model *model = NULL;
    char *tmpl = NULL;
    bool tokenized = false; /* --tokenize printed the ids */
    if (model_path) {
        model = tlm_model_load(model_path, &err);
        if (model && tokenize) {
            int32_t cap = 1 << 20;
            int32_t *ids = malloc((size_t)cap * sizeof *ids);
            int32_t count = ids ? tlm_chat_tokenize(model, msgs, n, gen, ids, cap, &err) : -1;
            if (count > cap) snprintf(err.msg, sizeof err.msg, "more than %d tokens", cap);
            for (int32_t k = 0; count >= 0 && k < count && k < cap; k++) printf(k ? " %d" : "%d", ids[k]);
            free(ids);
            if (count >= 0 && count <= cap) {
                printf("\n");
                tokenized = true;
            }
        } else if (model) {
            out = tlm_chat_render(model, msgs, n, gen, &err);
        }
    } else {
        tmpl = read_whole_file(template_path);
        if (!tmpl) {
            fprintf(stderr, "tool_chat: cannot read %s\n", template_path);
            return 2;
        }
        out = chat_render_template(tmpl, bos, eos, msgs, n, gen, &err);
    }
    int rc = 0;
    if (out) fputs(out, stdout);
    else if (!tokenized) {
        fprintf(stderr, "tool_chat: %s\n", err.msg);
        rc = 1;
    }
    tlm_free_string(out);
    tlm_model_free(model);
    free(tmpl);
    free(msgs);
    cJSON_Delete(json);
    free(json_text);
    return rc;
}
