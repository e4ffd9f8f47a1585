/*
 * chat_conv.h — the conversation of `trimlm chat`: an optional system message
 * and alternating user/assistant messages, saved and loaded as JSON:
 *
 *   {"system": "You are ..." | null, "messages": [{"role": "user", "content": "..."}, ...]}
 *
 * "messages" alternate user, assistant, user, ... and end with an assistant
 * message (or are empty). Every string is valid UTF-8.
 */
#ifndef TLM_CHAT_CONV_H
#define TLM_CHAT_CONV_H

#include <stdbool.h>
#include <stddef.h>

#include "trimlm.h"

typedef struct chat_conv {
    char *system;          /* malloc'd, or NULL: the template's default (if any) */
    tlm_chat_message *msgs; /* role: a string literal; content: malloc'd */
    size_t n, cap;
} chat_conv;

void chat_conv_free(chat_conv *c);
/* Removes every message; keeps the system message. */
void chat_conv_clear(chat_conv *c);
/* Appends a copy of content; role must be "user" or "assistant". */
bool chat_conv_push(chat_conv *c, const char *role, const char *content, size_t len);
void chat_conv_pop(chat_conv *c);
/* Removes the first k messages. */
void chat_conv_drop_front(chat_conv *c, size_t k);
/* Replaces the system message (NULL: none). */
bool chat_conv_set_system(chat_conv *c, const char *system);

/* Writes the conversation to path atomically (a temporary file in the same
 * directory, fsync'd, renamed). */
tlm_status chat_conv_save(const chat_conv *c, const char *path, const char *const *inputs,
                          size_t n_inputs, tlm_error *err);
/* Reads and validates a saved conversation into *out (left untouched on
 * failure); err names the file and the problem. */
tlm_status chat_conv_load(const char *path, chat_conv *out, tlm_error *err);
/* The same on text[0..len) read from the file named path (for messages). */
tlm_status chat_conv_parse(const char *text, size_t len, const char *path, chat_conv *out,
                           tlm_error *err);

/* True when s[0..len) is valid UTF-8 (no overlongs, surrogates or values
 * beyond U+10FFFF). */
bool utf8_valid(const char *s, size_t len);
/* A malloc'd NUL-terminated copy of s[0..len) with each invalid sequence
 * (its maximal subpart, as in Unicode's recommended practice) and each NUL
 * replaced by U+FFFD; *n_bad receives how many were replaced. */
char *utf8_sanitize(const char *s, size_t len, size_t *n_bad);
/* Length of the valid UTF-8 sequence at s (1-4), or 0 when it is invalid. */
size_t utf8_seq_len(const unsigned char *s, size_t avail);

#endif
