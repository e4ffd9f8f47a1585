/* chat_conv.c — the conversation of `trimlm chat`, its JSON file, and the
 * UTF-8 checks applied to what users type and load (see chat_conv.h). */
#include "chat_conv.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* --------------------------------------------------------------- UTF-8 */

size_t utf8_seq_len(const unsigned char *s, size_t avail) {
    if (avail == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;      /* no overlongs */
        else if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F; /* <= U+10FFFF */
    } else return 0;
    if (avail < n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return n;
}

bool utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(p + i, len - i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

/* Bytes of the longest prefix of a valid sequence at s (the "maximal
 * subpart" that Unicode replaces with one U+FFFD, as Python and browsers do);
 * at least 1. */
static size_t utf8_maximal_subpart(const unsigned char *s, size_t avail) {
    unsigned c = s[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; lo = c == 0xE0 ? 0xA0 : 0x80; hi = c == 0xED ? 0x9F : 0xBF; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; lo = c == 0xF0 ? 0x90 : 0x80; hi = c == 0xF4 ? 0x8F : 0xBF; }
    else return 1;
    size_t k = 1;
    if (k < avail && k < n && s[k] >= lo && s[k] <= hi) {
        k++;
        while (k < avail && k < n && (s[k] & 0xC0) == 0x80) k++;
    }
    return k;
}

char *utf8_sanitize(const char *s, size_t len, size_t *n_bad) {
    const unsigned char *p = (const unsigned char *)s;
    size_t bad = 0;
    char *out = malloc(len * 3 + 1); /* each bad byte may become 3 bytes */
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(p + i, len - i);
        if (n == 0 || (n == 1 && p[i] == 0)) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += p[i] == 0 ? 1 : utf8_maximal_subpart(p + i, len - i);
            bad++;
        } else {
            memcpy(out + o, p + i, n);
            o += n;
            i += n;
        }
    }
    out[o] = '\0';
    if (n_bad) *n_bad = bad;
    return out;
}

/* -------------------------------------------------------- conversation */

void chat_conv_clear(chat_conv *c) {
    for (size_t i = 0; i < c->n; i++) free((char *)c->msgs[i].content);
    c->n = 0;
}

void chat_conv_free(chat_conv *c) {
    chat_conv_clear(c);
    free(c->msgs);
    free(c->system);
    memset(c, 0, sizeof *c);
}

bool chat_conv_push(chat_conv *c, const char *role, const char *content, size_t len) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        tlm_chat_message *grown = realloc(c->msgs, cap * sizeof *grown);
        if (!grown) return false;
        c->msgs = grown;
        c->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return false;
    memcpy(copy, content, len);
    copy[len] = '\0';
    c->msgs[c->n++] = (tlm_chat_message){strcmp(role, "user") == 0 ? "user" : "assistant", copy};
    return true;
}

void chat_conv_pop(chat_conv *c) {
    if (c->n == 0) return;
    free((char *)c->msgs[--c->n].content);
}

void chat_conv_drop_front(chat_conv *c, size_t k) {
    if (k > c->n) k = c->n;
    for (size_t i = 0; i < k; i++) free((char *)c->msgs[i].content);
    memmove(c->msgs, c->msgs + k, (c->n - k) * sizeof *c->msgs);
    c->n -= k;
}

bool chat_conv_set_system(chat_conv *c, const char *system) {
    char *copy = NULL;
    if (system && !(copy = strdup(system))) return false;
    free(c->system);
    c->system = copy;
    return true;
}

/* ----------------------------------------------------------------- save */

tlm_status chat_conv_save(const chat_conv *c, const char *path, const char *const *inputs,
                          size_t n_inputs, tlm_error *err) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root && (c->system ? cJSON_AddStringToObject(root, "system", c->system)
                                 : cJSON_AddNullToObject(root, "system")) != NULL;
    cJSON *msgs = ok ? cJSON_AddArrayToObject(root, "messages") : NULL;
    ok = msgs != NULL;
    for (size_t i = 0; ok && i < c->n; i++) {
        cJSON *m = cJSON_CreateObject();
        ok = m && cJSON_AddItemToArray(msgs, m) &&
             cJSON_AddStringToObject(m, "role", c->msgs[i].role) &&
             cJSON_AddStringToObject(m, "content", c->msgs[i].content);
    }
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return cli_seterr(err, TLM_ERR_NOMEM, "%s: out of memory writing the conversation", path);

    size_t len = strlen(text);
    text[len] = '\n'; /* cJSON_Print's buffer ends in NUL: swap it for a final newline */
    /* 0600: a conversation may be private */
    tlm_status st = tlm_atomic_write_file(path, inputs, n_inputs, text, len + 1, 0600, err);
    free(text);
    return st;
}

/* ----------------------------------------------------------------- load */

static tlm_status load_string(const cJSON *item, const char *path, const char *what, char **out,
                              tlm_error *err) {
    if (!cJSON_IsString(item) || !item->valuestring)
        return cli_seterr(err, TLM_ERR_FORMAT, "%s: %s must be a string", path, what);
    if (!utf8_valid(item->valuestring, strlen(item->valuestring)))
        return cli_seterr(err, TLM_ERR_FORMAT, "%s: %s is not valid UTF-8", path, what);
    *out = item->valuestring;
    return TLM_OK;
}

tlm_status chat_conv_load(const char *path, chat_conv *out, tlm_error *err) {
    size_t len = 0;
    char *text = cli_read_file(path, CLI_MAX_SMALL_BYTES, &len, err);
    if (!text) return err ? err->code : TLM_ERR_IO;
    tlm_status st = chat_conv_parse(text, len, path, out, err);
    tlm_free_string(text);
    return st;
}

tlm_status chat_conv_parse(const char *text, size_t len, const char *path, chat_conv *out,
                           tlm_error *err) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : 0;
        return cli_seterr(err, TLM_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", path, off);
    }

    chat_conv c = {0};
    tlm_status st = TLM_OK;
    char what[64];
    const cJSON *sys = cJSON_GetObjectItemCaseSensitive(root, "system");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsObject(root)) {
        st = cli_seterr(err, TLM_ERR_FORMAT,
                        "%s: expected an object {\"system\": ..., \"messages\": [...]}", path);
        goto out;
    }
    if (!cJSON_IsArray(msgs)) {
        st = cli_seterr(err, TLM_ERR_FORMAT, "%s: \"messages\" must be an array", path);
        goto out;
    }
    if (sys && !cJSON_IsNull(sys)) {
        char *s = NULL;
        if ((st = load_string(sys, path, "\"system\"", &s, err)) != TLM_OK) goto out;
        if (!chat_conv_set_system(&c, s)) { st = cli_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path); goto out; }
    }
    size_t i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        i++;
        if (!cJSON_IsObject(m)) {
            st = cli_seterr(err, TLM_ERR_FORMAT, "%s: message %zu must be an object with \"role\" and \"content\"", path, i);
            goto out;
        }
        char *role = NULL, *content = NULL;
        snprintf(what, sizeof what, "the role of message %zu", i);
        if ((st = load_string(cJSON_GetObjectItemCaseSensitive(m, "role"), path, what, &role, err)) != TLM_OK) goto out;
        snprintf(what, sizeof what, "the content of message %zu", i);
        if ((st = load_string(cJSON_GetObjectItemCaseSensitive(m, "content"), path, what, &content, err)) != TLM_OK) goto out;
        const char *want = i % 2 == 1 ? "user" : "assistant";
        if (strcmp(role, want) != 0) {
            st = cli_seterr(err, TLM_ERR_FORMAT,
                            "%s: message %zu has role '%.32s'; messages alternate user, assistant, "
                            "... (the system message goes in \"system\")", path, i, role);
            goto out;
        }
        if (!chat_conv_push(&c, role, content, strlen(content))) {
            st = cli_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
            goto out;
        }
    }
    if (c.n % 2 != 0) {
        st = cli_seterr(err, TLM_ERR_FORMAT, "%s: the last message must be the assistant's reply", path);
        goto out;
    }
out:
    cJSON_Delete(root);
    if (st != TLM_OK) {
        chat_conv_free(&c);
        return st;
    }
    chat_conv_free(out);
    *out = c;
    return TLM_OK;
}
