/*
 * chat.c — chat templates: style detection and hand-written renderers.
 *
 * Each renderer reproduces the usual Hugging Face template of its family as
 * Jinja renders it (trim_blocks, lstrip_blocks): the same literals, the same
 * `| trim` / `.strip()` on content, the same role checks (a template that
 * raises an exception becomes an error here). bos_token is emitted only when
 * the template text uses it, since converted templates sometimes drop it.
 */
#include "chat.h"

#include <string.h>

#include "alloc.h"
#include "error.h"
#include "model.h"
#include "tokenizer.h"

/* ------------------------------------------------------- string builder */

typedef struct text_buf {
    char *data;
    size_t len, cap;
    bool failed; /* an allocation failed; the rest of the appends are no-ops */
    /* byte ranges [spans[2i], spans[2i+1]) that hold the messages' own text
     * (roles, content), as opposed to the template's markup: tokenized as
     * plain text, so that a message cannot write special tokens */
    size_t *spans;
    size_t n_spans, cap_spans;
} text_buf;

static void buf_append(text_buf *b, const char *s, size_t n) {
    if (b->failed) return;
    size_t need;
    if (tlm_add_overflow(b->len, n + 1, &need)) { b->failed = true; return; }
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need) cap *= 2;
        char *grown = tlm_realloc(b->data, cap);
        if (!grown) { b->failed = true; return; }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void buf_puts(text_buf *b, const char *s) { buf_append(b, s, strlen(s)); }

/* Records [start, b->len) as message text (joined to the previous range
 * when they touch). */
static void buf_mark_message(text_buf *b, size_t start) {
    if (b->failed || b->len == start) return;
    if (b->n_spans > 0 && b->spans[2 * b->n_spans - 1] == start) {
        b->spans[2 * b->n_spans - 1] = b->len;
        return;
    }
    if (b->n_spans == b->cap_spans) {
        size_t cap = b->cap_spans ? 2 * b->cap_spans : 16;
        size_t *grown = tlm_realloc(b->spans, 2 * cap * sizeof *grown);
        if (!grown) { b->failed = true; return; }
        b->spans = grown;
        b->cap_spans = cap;
    }
    b->spans[2 * b->n_spans] = start;
    b->spans[2 * b->n_spans + 1] = b->len;
    b->n_spans++;
}

/* A message's text (role or content). */
static void buf_message(text_buf *b, const char *s) {
    size_t start = b->len;
    buf_puts(b, s);
    buf_mark_message(b, start);
}

/* Appends s without the leading and trailing whitespace that Python's
 * str.strip() (Jinja's `trim`) removes; ASCII whitespace plus the separator
 * controls 0x1c-0x1f that Python also counts. */
static bool is_py_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

static void buf_puts_trimmed(text_buf *b, const char *s) {
    size_t n = strlen(s), lo = 0;
    while (lo < n && is_py_space((unsigned char)s[lo])) lo++;
    while (n > lo && is_py_space((unsigned char)s[n - 1])) n--;
    buf_append(b, s + lo, n - lo);
}

static void buf_message_trimmed(text_buf *b, const char *s) {
    size_t start = b->len;
    buf_puts_trimmed(b, s);
    buf_mark_message(b, start);
}

/* --------------------------------------------------------- detection */

tlm_chat_style chat_detect_style(const char *tmpl, bool *recognised) {
    bool known = true;
    tlm_chat_style s = TLM_CHAT_CHATML;
    if (!tmpl) known = false;
    else if (strstr(tmpl, "<|im_start|>")) s = TLM_CHAT_CHATML;
    else if (strstr(tmpl, "<|start_header_id|>")) s = TLM_CHAT_LLAMA3;
    else if (strstr(tmpl, "[INST]")) s = strstr(tmpl, "<<SYS>>") ? TLM_CHAT_LLAMA2 : TLM_CHAT_MISTRAL;
    else if (strstr(tmpl, "<|user|>")) s = TLM_CHAT_ZEPHYR;
    else if (strstr(tmpl, "<start_of_turn>")) s = TLM_CHAT_GEMMA;
    else known = false;
    if (recognised) *recognised = known;
    return s;
}

const char *chat_style_name(tlm_chat_style s) {
    switch (s) {
    case TLM_CHAT_CHATML: return "chatml";
    case TLM_CHAT_LLAMA3: return "llama3";
    case TLM_CHAT_LLAMA2: return "llama2";
    case TLM_CHAT_MISTRAL: return "mistral";
    case TLM_CHAT_ZEPHYR: return "zephyr";
    case TLM_CHAT_GEMMA: return "gemma";
    }
    return "chatml";
}

/* ------------------------------------- ChatML default system message */

/* Reads the Jinja string literal whose opening quote is at *p, undoing the
 * escapes Jinja accepts (\n, \t, \\, \', \"). Returns a tlm_malloc'd string,
 * or NULL when the literal is not closed. */
static char *read_jinja_literal(const char *p) {
    char quote = *p++;
    text_buf b = {0};
    buf_append(&b, "", 0);
    for (; *p && *p != quote; p++) {
        char c = *p;
        if (c == '\\' && p[1]) {
            p++;
            switch (*p) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            default: c = *p; break; /* \\ \' \" */
            }
        }
        buf_append(&b, &c, 1);
    }
    if (!*p || b.failed) { tlm_free(b.data); return NULL; }
    return b.data;
}

/* Templates such as SmolLM2's and Qwen2's insert a fixed system turn when the
 * conversation does not start with one:
 *   {% if loop.first and messages[0]['role'] != 'system' %}
 *   {{ '<|im_start|>system\nYou are ...<|im_end|>\n' }}{% endif %}
 * Returns that system text (tlm_malloc'd), or NULL when there is none. */
static char *chatml_default_system(const char *tmpl) {
    if (!strstr(tmpl, "!= 'system'") && !strstr(tmpl, "!= \"system\"")) return NULL;
    static const char head[] = "<|im_start|>system";
    static const char tail[] = "<|im_end|>\n";
    for (const char *p = tmpl; (p = strstr(p, head)) != NULL; p++) {
        if (p == tmpl || (p[-1] != '\'' && p[-1] != '"')) continue;
        char *lit = read_jinja_literal(p - 1);
        if (!lit) continue;
        size_t n = strlen(lit), hn = sizeof head - 1, tn = sizeof tail - 1;
        if (n > hn + 1 + tn && lit[hn] == '\n' && strcmp(lit + n - tn, tail) == 0) {
            memmove(lit, lit + hn + 1, n - hn - 1 - tn);
            lit[n - hn - 1 - tn] = '\0';
            return lit;
        }
        tlm_free(lit);
    }
    return NULL;
}

/* ------------------------------------------------------------ renderers */

static bool is_role(const tlm_chat_message *m, const char *role) {
    return strcmp(m->role, role) == 0;
}

static tlm_status render_chatml(text_buf *b, const char *tmpl, const tlm_chat_message *msgs,
                                size_t n, bool gen, tlm_error *err) {
    if (n > 0 && !is_role(&msgs[0], "system") && tmpl) {
        char *sys = chatml_default_system(tmpl);
        if (sys) {
            buf_puts(b, "<|im_start|>system\n");
            buf_puts(b, sys);
            buf_puts(b, "<|im_end|>\n");
            tlm_free(sys);
        }
    }
    for (size_t i = 0; i < n; i++) {
        buf_puts(b, "<|im_start|>");
        buf_message(b, msgs[i].role);
        buf_puts(b, "\n");
        buf_message(b, msgs[i].content);
        buf_puts(b, "<|im_end|>\n");
    }
    if (gen) buf_puts(b, "<|im_start|>assistant\n");
    return TLM_OK;
}

static tlm_status render_llama3(text_buf *b, const char *bos, const tlm_chat_message *msgs,
                                size_t n, bool gen, tlm_error *err) {
    for (size_t i = 0; i < n; i++) {
        if (i == 0) buf_puts(b, bos);
        buf_puts(b, "<|start_header_id|>");
        buf_message(b, msgs[i].role);
        buf_puts(b, "<|end_header_id|>\n\n");
        buf_message_trimmed(b, msgs[i].content);
        buf_puts(b, "<|eot_id|>");
    }
    if (gen) buf_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return TLM_OK;
}

/* Llama 2, Mistral and Gemma templates require user, assistant, user, ...
 * after an optional leading system message. */
static tlm_status check_alternation(const tlm_chat_message *msgs, size_t n, const char *style,
                                    tlm_error *err) {
    for (size_t i = 0; i < n; i++)
        if (is_role(&msgs[i], "user") != (i % 2 == 0))
            return tlm_seterr(err, TLM_ERR_ARG,
                              "%s chat template: conversation roles must alternate "
                              "user/assistant/user/... (message %zu is '%s')",
                              style, i + 1, msgs[i].role);
    return TLM_OK;
}

static tlm_status render_llama2(text_buf *b, const char *bos, const char *eos,
                                const tlm_chat_message *msgs, size_t n, tlm_error *err) {
    const char *system = NULL;
    if (n > 0 && is_role(&msgs[0], "system")) {
        system = msgs[0].content;
        msgs++;
        n--;
    }
    if (check_alternation(msgs, n, "Llama 2", err) != TLM_OK) return err ? err->code : TLM_ERR_ARG;
    for (size_t i = 0; i < n; i++) {
        text_buf content = {0};
        if (i == 0 && system) {
            buf_puts(&content, "<<SYS>>\n");
            buf_puts(&content, system);
            buf_puts(&content, "\n<</SYS>>\n\n");
        }
        buf_puts(&content, msgs[i].content);
        if (content.failed) { tlm_free(content.data); b->failed = true; return TLM_ERR_NOMEM; }
        if (is_role(&msgs[i], "user")) {
            buf_puts(b, bos);
            buf_puts(b, "[INST] ");
            buf_message_trimmed(b, content.data);
            buf_puts(b, " [/INST]");
        } else {
            buf_puts(b, " ");
            buf_message_trimmed(b, content.data);
            buf_puts(b, " ");
            buf_puts(b, eos);
        }
        tlm_free(content.data);
    }
    return TLM_OK;
}

static tlm_status render_mistral(text_buf *b, const char *bos, const char *eos,
                                 const tlm_chat_message *msgs, size_t n, tlm_error *err) {
    buf_puts(b, bos);
    if (check_alternation(msgs, n, "Mistral", err) != TLM_OK) return err ? err->code : TLM_ERR_ARG;
    for (size_t i = 0; i < n; i++) {
        if (is_role(&msgs[i], "user")) {
            buf_puts(b, "[INST] ");
            buf_message(b, msgs[i].content);
            buf_puts(b, " [/INST]");
        } else if (is_role(&msgs[i], "assistant")) {
            buf_message(b, msgs[i].content);
            buf_puts(b, eos);
        } else {
            return tlm_seterr(err, TLM_ERR_ARG,
                              "Mistral chat template: only user and assistant roles are "
                              "supported (message %zu is '%s')", i + 1, msgs[i].role);
        }
    }
    return TLM_OK;
}

static tlm_status render_zephyr(text_buf *b, const char *eos, const tlm_chat_message *msgs,
                                size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        if (is_role(&msgs[i], "user") || is_role(&msgs[i], "system") ||
            is_role(&msgs[i], "assistant")) {
            buf_puts(b, "<|");
            buf_puts(b, msgs[i].role);
            buf_puts(b, "|>\n");
            buf_message(b, msgs[i].content);
            buf_puts(b, eos);
            buf_puts(b, "\n");
        }
        if (i + 1 == n && gen) buf_puts(b, "<|assistant|>\n");
    }
    return TLM_OK;
}

/* Gemma 3 folds a system message into the first user turn ("system\n\n");
 * Gemma 1/2 templates reject it. */
static tlm_status render_gemma(text_buf *b, const char *tmpl, const char *bos,
                               const tlm_chat_message *msgs, size_t n, bool gen, tlm_error *err) {
    buf_puts(b, bos);
    const char *system = NULL;
    if (n > 0 && is_role(&msgs[0], "system")) {
        if (strstr(tmpl, "System role not supported"))
            return tlm_seterr(err, TLM_ERR_ARG, "Gemma chat template: system role not supported");
        system = msgs[0].content;
        msgs++;
        n--;
    }
    if (check_alternation(msgs, n, "Gemma", err) != TLM_OK) return err ? err->code : TLM_ERR_ARG;
    for (size_t i = 0; i < n; i++) {
        buf_puts(b, "<start_of_turn>");
        buf_puts(b, is_role(&msgs[i], "assistant") ? "model" : msgs[i].role);
        buf_puts(b, "\n");
        if (i == 0 && system) {
            buf_message(b, system);
            buf_puts(b, "\n\n");
        }
        buf_message_trimmed(b, msgs[i].content);
        buf_puts(b, "<end_of_turn>\n");
    }
    if (gen) buf_puts(b, "<start_of_turn>model\n");
    return TLM_OK;
}

/* ---------------------------------------------------------------- API */

char *chat_render_template_spans(const char *tmpl, const char *bos, const char *eos,
                                 const tlm_chat_message *msgs, size_t n, bool add_generation_prompt,
                                 size_t **spans, size_t *n_spans, tlm_error *err) {
    tlm_clearerr(err);
    if (spans) *spans = NULL;
    if (n_spans) *n_spans = 0;
    if (n > 0 && !msgs) {
        tlm_seterr(err, TLM_ERR_ARG, "chat: no messages given");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            tlm_seterr(err, TLM_ERR_ARG, "chat: message %zu has no role or no content", i + 1);
            return NULL;
        }
    }
    /* bos_token appears only where the template writes it */
    const char *bos_used = (tmpl && strstr(tmpl, "bos_token") && bos) ? bos : "";
    if (!eos) eos = "";
    tlm_chat_style style = chat_detect_style(tmpl, NULL);
    text_buf b = {0};
    buf_append(&b, "", 0);
    tlm_status st = TLM_OK;
    switch (style) {
    case TLM_CHAT_CHATML: st = render_chatml(&b, tmpl, msgs, n, add_generation_prompt, err); break;
    case TLM_CHAT_LLAMA3: st = render_llama3(&b, bos_used, msgs, n, add_generation_prompt, err); break;
    case TLM_CHAT_LLAMA2: st = render_llama2(&b, bos_used, eos, msgs, n, err); break;
    case TLM_CHAT_MISTRAL: st = render_mistral(&b, bos_used, eos, msgs, n, err); break;
    case TLM_CHAT_ZEPHYR: st = render_zephyr(&b, eos, msgs, n, add_generation_prompt); break;
    case TLM_CHAT_GEMMA: st = render_gemma(&b, tmpl, bos_used, msgs, n, add_generation_prompt, err); break;
    }
    if (st == TLM_OK && b.failed) st = tlm_seterr(err, TLM_ERR_NOMEM, "chat: out of memory rendering the template");
    if (st != TLM_OK) {
        tlm_free(b.data);
        tlm_free(b.spans);
        return NULL;
    }
    if (spans) {
        *spans = b.spans;
        *n_spans = b.n_spans;
    } else {
        tlm_free(b.spans);
    }
    return b.data;
}

char *chat_render_template(const char *tmpl, const char *bos, const char *eos,
                           const tlm_chat_message *msgs, size_t n, bool add_generation_prompt,
                           tlm_error *err) {
    return chat_render_template_spans(tmpl, bos, eos, msgs, n, add_generation_prompt, NULL, NULL, err);
}

/* The text of a special token as the template's bos_token/eos_token holds it. */
static char *special_token_text(const tlm_model *m, int32_t tok) {
    if (tok < 0) return tlm_strdup("");
    size_t len = 0;
    const char *s = tlm_token_bytes(m, tok, true, &len);
    return s ? tlm_strndup(s, len) : tlm_strdup("");
}

char *tlm_chat_render(const tlm_model *m, const tlm_chat_message *msgs, size_t n,
                      bool add_generation_prompt, tlm_error *err) {
    tlm_clearerr(err);
    if (!m) {
        tlm_seterr(err, TLM_ERR_ARG, "chat: no model given");
        return NULL;
    }
    char *bos = special_token_text(m, tlm_token_bos(m));
    char *eos = special_token_text(m, tlm_token_eos(m));
    char *out = NULL;
    if (!bos || !eos) tlm_seterr(err, TLM_ERR_NOMEM, "chat: out of memory");
    else out = chat_render_template(tlm_model_chat_template(m), bos, eos, msgs, n,
                                    add_generation_prompt, err);
    tlm_free(bos);
    tlm_free(eos);
    return out;
}

int32_t tlm_chat_tokenize(const tlm_model *m, const tlm_chat_message *msgs, size_t n,
                          bool add_generation_prompt, int32_t *out, int32_t cap, tlm_error *err) {
    tlm_clearerr(err);
    if (!m || (n > 0 && !msgs) || cap < 0 || (!out && cap > 0)) {
        tlm_seterr(err, TLM_ERR_ARG, "tlm_chat_tokenize: invalid arguments");
        return -1;
    }
    /* the ranges are offsets into the rendered text, which the encoder may
     * not change: ill-formed UTF-8 in a message is replaced here instead */
    tlm_chat_message *valid = tlm_calloc(n ? n : 1, sizeof *valid);
    char **fixed = tlm_calloc(2 * (n ? n : 1), sizeof *fixed);
    char *bos = special_token_text(m, tlm_token_bos(m));
    char *eos = special_token_text(m, tlm_token_eos(m));
    char *text = NULL;
    size_t *spans = NULL, n_spans = 0;
    int32_t count = -1;
    if (!valid || !fixed || !bos || !eos) {
        tlm_seterr(err, TLM_ERR_NOMEM, "chat: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        valid[i] = msgs[i];
        const char *parts[2] = {msgs[i].role, msgs[i].content};
        for (int k = 0; k < 2; k++) {
            size_t fixed_len = 0;
            if (parts[k] && tokenizer_utf8_repair(parts[k], strlen(parts[k]), &fixed[2 * i + k], &fixed_len)) {
                tlm_seterr(err, TLM_ERR_NOMEM, "chat: out of memory");
                goto done;
            }
        }
        if (fixed[2 * i]) valid[i].role = fixed[2 * i];
        if (fixed[2 * i + 1]) valid[i].content = fixed[2 * i + 1];
    }
    text = chat_render_template_spans(tlm_model_chat_template(m), bos, eos, valid, n,
                                      add_generation_prompt, &spans, &n_spans, err);
    if (!text) goto done;
    /* BOS when the model wants one, unless the template already wrote it */
    size_t bos_len = strlen(bos);
    bool add_bos = tlm_model_adds_bos(m) && !(bos_len > 0 && strncmp(text, bos, bos_len) == 0);
    count = tokenizer_encode_spans(m->tok, text, strlen(text), add_bos, spans, n_spans, out, cap, err);
done:
    for (size_t i = 0; fixed && i < 2 * n; i++) tlm_free(fixed[i]);
    tlm_free(fixed);
    tlm_free(valid);
    tlm_free(bos);
    tlm_free(eos);
    tlm_free(text);
    tlm_free(spans);
    return count;
}
