/* chat_session.c — a conversation kept in a model context across turns
 * (incremental prefill, dropping the oldest turns when the context is full);
 * see chat_session.h. */
#include "chat_session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ------------------------------------------------------------ rendering */

/* Renders system + msgs[0..n) (plus a generation prompt) and tokenizes it:
 * the template's markers become special tokens, the messages stay plain
 * text (tlm_chat_tokenize). Returns a malloc'd array (count in *n_out) or
 * NULL with err set. */
static int32_t *render_tokens(const chat_session *s, const char *system,
                              const tlm_chat_message *msgs, size_t n, int32_t *n_out,
                              tlm_error *err) {
    tlm_chat_message *all = malloc((n + 1) * sizeof *all);
    if (!all) { cli_seterr(err, TLM_ERR_NOMEM, "out of memory rendering the conversation"); return NULL; }
    size_t k = 0;
    if (system) all[k++] = (tlm_chat_message){"system", system};
    if (n > 0) memcpy(all + k, msgs, n * sizeof *msgs);
    int32_t cap = 1024, need = -1;
    int32_t *toks = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *grown = realloc(toks, (size_t)cap * sizeof *toks);
        if (!grown) { need = -1; break; }
        toks = grown;
        need = tlm_chat_tokenize(s->model, all, k + n, true, toks, cap, err);
        if (need <= cap) break;
        cap = need;
    }
    free(all);
    if (need < 0 || need > cap) {
        if (!toks || !err || err->code == TLM_OK)
            cli_seterr(err, TLM_ERR_NOMEM, "out of memory tokenizing the conversation");
        free(toks);
        return NULL;
    }
    *n_out = need;
    return toks;
}

tlm_status chat_session_check_render(chat_session *s, const chat_conv *c, tlm_error *err) {
    tlm_chat_message *msgs = malloc((c->n + 1) * sizeof *msgs);
    if (!msgs) return cli_seterr(err, TLM_ERR_NOMEM, "out of memory");
    if (c->n > 0) memcpy(msgs, c->msgs, c->n * sizeof *msgs);
    msgs[c->n] = (tlm_chat_message){"user", "?"}; /* the next turn */
    int32_t n = 0;
    int32_t *toks = render_tokens(s, c->system, msgs, c->n + 1, &n, err);
    if (!toks) {
        free(msgs);
        return err ? err->code : TLM_ERR_ARG;
    }
    free(toks);
    /* Old turns are dropped when the context fills, the system message never
     * is: with the shortest next message it must leave room for a reply, or
     * every later message would be refused. */
    toks = render_tokens(s, c->system, &msgs[c->n], 1, &n, err);
    free(msgs);
    if (!toks) return err ? err->code : TLM_ERR_ARG;
    free(toks);
    if (c->system && n >= s->n_ctx)
        return cli_seterr(err, TLM_ERR_CONTEXT_FULL,
                          "the system message is %d tokens with the chat template and a one-word "
                          "message, and the context holds %d (-c); no message could follow it",
                          n, s->n_ctx);
    return TLM_OK;
}

void chat_session_reset_cache(chat_session *s) {
    tlm_context_reset(s->ctx);
    s->n_cache = 0;
}

/* ----------------------------------------------------------------- turn */

typedef struct reply_buf {
    char *data;
    size_t len, cap;
} reply_buf;

static bool reply_append(reply_buf *r, const char *s, size_t n) {
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->len + n + 1) cap *= 2;
        char *grown = realloc(r->data, cap);
        if (!grown) return false;
        r->data = grown;
        r->cap = cap;
    }
    memcpy(r->data + r->len, s, n);
    r->len += n;
    r->data[r->len] = '\0';
    return true;
}

/* Shows and keeps a piece of the reply (valid UTF-8: the detokenizer
 * replaces what is not). */
static bool emit_piece(reply_buf *r, const char *piece, size_t len, chat_emit_fn emit, void *user) {
    if (len == 0) return true;
    if (!reply_append(r, piece, len)) return false;
    emit(user, piece, len);
    return true;
}

/* Tokens kept free for the reply when deciding whether to drop old turns. */
static int32_t reply_reserve(const chat_session *s) {
    int64_t r = s->n_predict > 0 ? s->n_predict : s->n_ctx / 4;
    if (r > s->n_ctx / 2) r = s->n_ctx / 2;
    return r < 1 ? 1 : (int32_t)r;
}

/* Renders the conversation, dropping the oldest turns while it does not fit
 * (see chat_session.h); returns its tokens or NULL with err set. */
static int32_t *fit_conversation(chat_session *s, int32_t *n_out, tlm_error *err) {
    chat_conv *c = &s->conv;
    /* a message that cannot fit even alone is refused, before dropping anything */
    int32_t n_alone = 0;
    int32_t *toks = render_tokens(s, c->system, &c->msgs[c->n - 1], 1, &n_alone, err);
    if (!toks) return NULL;
    free(toks);
    if (n_alone >= s->n_ctx) {
        cli_seterr(err, TLM_ERR_CONTEXT_FULL,
                   "the message is %d tokens with the chat template and the context holds %d "
                   "(-c); it was not sent", n_alone, s->n_ctx);
        return NULL;
    }
    int32_t reserve = reply_reserve(s);
    int dropped = 0;
    for (;;) {
        int32_t n = 0;
        toks = render_tokens(s, c->system, c->msgs, c->n, &n, err);
        if (!toks) return NULL;
        bool fits = n + reserve <= s->n_ctx;
        /* once dropping, go down to half of the room, so that the next turns
         * do not each drop one turn and prefill everything again */
        bool roomy = dropped == 0 || n <= (s->n_ctx - reserve) / 2;
        if ((fits && roomy) || c->n < 3) {
            if (dropped > 0)
                fprintf(stderr, "trimlm: context full: dropped the oldest %d turn%s (the system "
                                "message is kept)\n", dropped, dropped == 1 ? "" : "s");
            *n_out = n;
            return toks;
        }
        free(toks);
        chat_conv_drop_front(c, 2); /* one user message and its reply */
        dropped++;
    }
}

chat_outcome chat_session_turn(chat_session *s, const char *user_text, chat_emit_fn emit,
                               void *user, tlm_error *err) {
    chat_conv *c = &s->conv;
    if (!chat_conv_push(c, "user", user_text, strlen(user_text))) {
        cli_seterr(err, TLM_ERR_NOMEM, "out of memory");
        return CHAT_FAILED;
    }
    int32_t n = 0;
    int32_t *toks = fit_conversation(s, &n, err);
    if (!toks) {
        chat_conv_pop(c);
        return err && err->code == TLM_ERR_CONTEXT_FULL ? CHAT_REFUSED : CHAT_FAILED;
    }

    /* ---- keep the common prefix, prefill the rest */
    int32_t lcp = 0;
    while (lcp < n && lcp < s->n_cache && toks[lcp] == s->cache[lcp]) lcp++;
    if (lcp == n) lcp = n - 1; /* at least one token must run to get logits */
    if (lcp < s->n_cache) {
        tlm_context_truncate(s->ctx, lcp);
        s->n_cache = lcp;
    }
    for (int32_t i = 0; i < n; i++) tlm_sampler_accept(s->sampler, toks[i]);
    chat_outcome outcome = CHAT_REPLIED;
    reply_buf reply = {0};
    if (!reply_append(&reply, "", 0)) { cli_seterr(err, TLM_ERR_NOMEM, "out of memory"); outcome = CHAT_FAILED; goto out; }
    double t0 = cli_now_seconds();
    for (int32_t at = lcp; at < n; at += s->n_batch) {
        if (*s->interrupted) { outcome = CHAT_WITHDRAWN; goto out; }
        int32_t nb = n - at < s->n_batch ? n - at : s->n_batch;
        if (tlm_decode(s->ctx, toks + at, nb, false, err) != TLM_OK) { outcome = CHAT_FAILED; goto out; }
        memcpy(s->cache + s->n_cache, toks + at, (size_t)nb * sizeof *toks);
        s->n_cache += nb;
    }
    s->last_prefill_tokens = n - lcp;
    s->last_prefill_s = cli_now_seconds() - t0;

    /* ---- the reply */
    tlm_detok detok;
    tlm_detok_init(&detok, s->model);
    static char piece[1 << 16]; /* one token's bytes (plus a held-back partial character) */
    int64_t n_gen = 0;
    bool ctx_full = false;
    t0 = cli_now_seconds();
    for (;;) {
        if (s->n_predict >= 0 && n_gen >= s->n_predict) break;
        if (*s->interrupted) { outcome = CHAT_INTERRUPTED; break; }
        const float *logits = tlm_get_logits(s->ctx, -1);
        if (!logits) { cli_seterr(err, TLM_ERR_ARG, "the model produced no logits"); outcome = CHAT_FAILED; goto out; }
        int32_t tok = tlm_sampler_sample(s->sampler, logits);
        if (tok < 0 || tlm_token_is_eog(s->model, tok)) break;
        tlm_sampler_accept(s->sampler, tok);
        n_gen++;
        size_t len = tlm_detok_push(&detok, tok, piece, sizeof piece);
        if (!emit_piece(&reply, piece, len, emit, user)) { cli_seterr(err, TLM_ERR_NOMEM, "out of memory"); outcome = CHAT_FAILED; goto out; }
        if (s->n_predict >= 0 && n_gen >= s->n_predict) break;
        if (tlm_context_pos(s->ctx) >= s->n_ctx) { ctx_full = true; break; }
        if (tlm_decode(s->ctx, &tok, 1, false, err) != TLM_OK) { outcome = CHAT_FAILED; goto out; }
        s->cache[s->n_cache++] = tok;
    }
    size_t len = tlm_detok_flush(&detok, piece, sizeof piece);
    if (!emit_piece(&reply, piece, len, emit, user)) {
        cli_seterr(err, TLM_ERR_NOMEM, "out of memory");
        outcome = CHAT_FAILED;
        goto out;
    }
    s->last_reply_tokens = n_gen;
    s->last_reply_s = cli_now_seconds() - t0;
    if (outcome == CHAT_INTERRUPTED && n_gen == 0) outcome = CHAT_WITHDRAWN;
    if (ctx_full)
        fprintf(stderr, "\ntrimlm: the reply stopped: the context of %d tokens is full (-c); the "
                        "oldest turns will be dropped with the next message\n", s->n_ctx);

out:
    if (outcome == CHAT_REPLIED || outcome == CHAT_INTERRUPTED) {
        if (!chat_conv_push(c, "assistant", reply.data, reply.len)) {
            chat_conv_pop(c);
            cli_seterr(err, TLM_ERR_NOMEM, "out of memory");
            outcome = CHAT_FAILED;
        }
    } else {
        chat_conv_pop(c); /* the message was not answered */
        if (outcome == CHAT_FAILED) chat_session_reset_cache(s);
    }
    free(reply.data);
    free(toks);
    return outcome;
}
