/*
 * chat_session.h — one conversation held in a model context for `trimlm chat`.
 *
 * Each turn renders the whole conversation with the model's chat template,
 * tokenizes it, keeps the KV cache up to the longest common prefix with the
 * tokens already there (tlm_context_truncate) and runs only the rest, so a
 * turn costs its new tokens. When the conversation plus the reply budget no
 * longer fits the context, the oldest user/assistant turns are dropped (the
 * system message stays) and the conversation is prefilled again.
 */
#ifndef TLM_CHAT_SESSION_H
#define TLM_CHAT_SESSION_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "chat_conv.h"
#include "trimlm.h"

typedef struct chat_session {
    const tlm_model *model;
    const char *model_path; /* the file it was loaded from: /save may not replace it */
    tlm_context *ctx;
    tlm_sampler *sampler;
    int32_t n_ctx, n_batch;
    int64_t n_predict;   /* reply tokens at most; -1 = until the model ends its turn */
    int32_t *cache;      /* (n_cache) the tokens in the KV cache, in order */
    int32_t n_cache, cap_cache;
    chat_conv conv;
    volatile sig_atomic_t *interrupted; /* set by SIGINT: stop the reply */

    /* the last turn, for /stats */
    int32_t last_prefill_tokens;
    double last_prefill_s;
    int64_t last_reply_tokens;
    double last_reply_s;
} chat_session;

/* What a turn did. */
typedef enum chat_outcome {
    CHAT_REPLIED = 0,     /* the reply ended (end of turn, -n, or a full context) */
    CHAT_INTERRUPTED = 1, /* stopped by Ctrl-C; the shown part is kept as the reply */
    CHAT_WITHDRAWN = 2,   /* stopped before any reply token; the message was removed */
    CHAT_REFUSED = 3,     /* the message cannot fit the context; err says why */
    CHAT_FAILED = 4,      /* an error; err says why; the message was removed */
} chat_outcome;

/* Called with each piece of the reply as it is generated (never a split
 * UTF-8 character). */
typedef void (*chat_emit_fn)(void *user, const char *text, size_t len);

/* Adds the user message, replies, streams the reply through emit and appends
 * it to the conversation. Notices (dropped turns, a full context) go to stderr. */
chat_outcome chat_session_turn(chat_session *s, const char *user_text, chat_emit_fn emit,
                               void *user, tlm_error *err);

/* Checks that the conversation renders with the model's template (e.g. a
 * template without a system role) and that its system message leaves room
 * in the context for a message (TLM_ERR_CONTEXT_FULL); err says why not. */
tlm_status chat_session_check_render(chat_session *s, const chat_conv *c, tlm_error *err);

/* Empties the KV cache (the conversation is unchanged). */
void chat_session_reset_cache(chat_session *s);

#endif
