/*
 * fuzz_chat_conv.c — chat_conv_parse(), the reader behind chat's `/load FILE`:
 * the input is the file's bytes. A conversation that loads must be one chat
 * can continue: valid UTF-8 everywhere, roles alternating user, assistant
 * and ending with the assistant's reply.
 */
#include "chat_conv.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    chat_conv c = {0};
    tlm_error err;
    if (chat_conv_parse((const char *)data, size, "input.json", &c, &err) != TLM_OK) {
        FUZZ_CHECK_ERROR(err);
        FUZZ_CHECK(c.n == 0 && c.msgs == NULL && c.system == NULL, "output touched on failure");
        return 0;
    }
    FUZZ_CHECK(c.n % 2 == 0, "%zu messages: the last is not the assistant's", c.n);
    if (c.system) FUZZ_CHECK(utf8_valid(c.system, strlen(c.system)), "system message not UTF-8");
    for (size_t i = 0; i < c.n; i++) {
        FUZZ_CHECK(strcmp(c.msgs[i].role, i % 2 == 0 ? "user" : "assistant") == 0,
                   "message %zu has role %s", i, c.msgs[i].role);
        FUZZ_CHECK(utf8_valid(c.msgs[i].content, strlen(c.msgs[i].content)),
                   "message %zu not UTF-8", i);
    }
    chat_conv_free(&c);
    return 0;
}
