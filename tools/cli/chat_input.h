/*
 * chat_input.h — reading the messages of `trimlm chat`.
 *
 * On a terminal: line editing and history with libedit (history kept in
 * ${XDG_STATE_HOME:-$HOME/.local/state}/trimlm/chat_history), bracketed paste
 * (a pasted block with newlines is one message), Ctrl-C handled by the
 * caller's SIGINT flag. Otherwise: plain lines from stdin, no prompt.
 *
 * A message is one line, or several joined by a trailing backslash, or the
 * lines between two lines starting/ending with three double quotes (""").
 */
#ifndef TLM_CHAT_INPUT_H
#define TLM_CHAT_INPUT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct chat_input chat_input;

/* interrupted: the flag the SIGINT handler sets. */
chat_input *chat_input_new(bool terminal, volatile sig_atomic_t *interrupted);
/* Saves the history (a failure is a warning on stderr) and frees. */
void chat_input_free(chat_input *in);

typedef enum chat_read {
    CHAT_READ_MESSAGE = 0, /* *text holds a message or a /command */
    CHAT_READ_CANCELLED,   /* Ctrl-C while typing: nothing to do */
    CHAT_READ_END,         /* end of input, or Ctrl-C at an empty prompt */
} chat_read;

/* Reads one message. *text (malloc'd by the reader, valid until the next
 * call) is never empty; *is_command when it is a /command typed on one line
 * ("//..." sends a message that starts with '/'). */
chat_read chat_input_read(chat_input *in, const char **text, bool *is_command);

#endif
