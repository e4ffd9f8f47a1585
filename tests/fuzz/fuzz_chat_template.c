/*
 * fuzz_chat_template.c — chat_render_template() with an arbitrary template
 * text, which comes from the model file (GGUF tokenizer.chat_template or
 * tokenizer_config.json) and is partly parsed (style markers, the default
 * system turn as a Jinja string literal).
 *
 * Input: the template, then NUL-separated messages; a message's first byte
 * picks its role (system, user, assistant, tool), the rest is its content.
 * An odd input length asks for the generation prompt.
 */
#include "chat.h"
#include "fuzz_common.h"

#define MAX_MESSAGES 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    /* a terminated copy, cut into the template and the messages */
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL, "malloc");
    memcpy(text, data, size);
    text[size] = '\0';
    tlm_chat_message msgs[MAX_MESSAGES];
    size_t n = 0, at = strlen(text) + 1;
    while (at < size + 1 && n < MAX_MESSAGES) {
        char *chunk = text + at;
        size_t len = strlen(chunk);
        msgs[n].role = len ? roles[(unsigned char)chunk[0] % 4] : "user";
        msgs[n].content = len ? chunk + 1 : chunk;
        n++;
        at += len + 1;
    }
    tlm_error err;
    char *out = chat_render_template(text, "<s>", "</s>", msgs, n, size & 1, &err);
    if (out) {
        volatile size_t sink = strlen(out);
        (void)sink;
        tlm_free_string(out);
    } else {
        FUZZ_CHECK_ERROR(err);
    }
    bool recognised;
    (void)chat_detect_style(text, &recognised);
    free(text);
    return 0;
}
