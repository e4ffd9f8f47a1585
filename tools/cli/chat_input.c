/* chat_input.c — line editing, history, paste and multi-line messages for
 * `trimlm chat` (see chat_input.h). */
#include "chat_input.h"

#include <errno.h>
#include <histedit.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat_conv.h"
#include "cli.h"

#define PROMPT_FIRST ">>> "
#define PROMPT_MORE "... "
#define HISTORY_SIZE 1000

struct chat_input {
    bool terminal;
    volatile sig_atomic_t *interrupted;
    EditLine *el;
    History *hist;
    char *hist_path; /* NULL when there is nowhere to keep it */
    const char *prompt;
    bool paste;      /* inside a bracketed paste */
    bool literal;    /* the next byte follows a quoted-insert (^V) we sent */
    bool bracketed_paste; /* the terminal is asked to mark pastes */
    /* bytes read ahead of libedit (escape sequences, paste newlines) */
    unsigned char pending[32];
    int n_pending;
    char *line;      /* the last line read (plain mode: getline's buffer) */
    size_t line_cap;
    char *msg;       /* the message being assembled */
    size_t msg_len, msg_cap;
};

/* ------------------------------------------------------------- history */

/* ${XDG_STATE_HOME:-$HOME/.local/state}/trimlm/chat_history, creating the
 * directories; NULL (with a warning) when that fails. */
static char *history_path(void) {
    const char *state = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    char dir[4096];
    if (state && state[0] == '/') snprintf(dir, sizeof dir, "%s/trimlm", state);
    else if (home && home[0]) snprintf(dir, sizeof dir, "%s/.local/state/trimlm", home);
    else return NULL;
    /* mkdir -p */
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(dir, 0700);
        *p = '/';
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "trimlm: warning: %s: %s; the history will not be saved\n", dir,
                strerror(errno));
        return NULL;
    }
    size_t n = strlen(dir) + sizeof "/chat_history";
    char *path = malloc(n);
    if (path) snprintf(path, n, "%s/chat_history", dir);
    return path;
}

static void history_save(chat_input *in) {
    if (!in->hist || !in->hist_path) return;
    HistEvent ev;
    tlm_error err;
    tlm_atomic_file f;
    /* 0600 as libedit makes it: the history may hold private text; libedit
     * writes through a stdio copy of the descriptor, which fclose closes */
    tlm_status st = tlm_atomic_open(&f, in->hist_path, NULL, 0, 0600, 0, &err);
    if (!st) {
        errno = 0;
        int fd = dup(f.fd);
        FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!fp && fd >= 0) close(fd);
        bool saved = fp && history(in->hist, &ev, H_SAVE_FP, fp) >= 0;
        if (fp && fclose(fp) != 0) saved = false;
        st = saved ? tlm_atomic_commit(&f, &err)
                   : cli_seterr(&err, TLM_ERR_IO, "%s: %s", in->hist_path,
                                errno ? strerror(errno) : "write failed");
    }
    if (st) {
        fprintf(stderr, "trimlm: warning: could not save the history: %s\n", err.msg);
        tlm_atomic_discard(&f);
    }
}

/* ------------------------------------------------------ terminal input */

static char *prompt_fn(EditLine *el) {
    chat_input *in = NULL;
    el_get(el, EL_CLIENTDATA, &in);
    return (char *)(in && in->prompt ? in->prompt : "");
}

/* One byte from the read-ahead or the terminal: 1, 0 at end of input or on
 * Ctrl-C, -1 on error. timeout_ms < 0 waits; otherwise 0 when nothing came. */
static int next_byte(chat_input *in, unsigned char *b, int timeout_ms) {
    if (in->n_pending > 0) {
        *b = in->pending[0];
        memmove(in->pending, in->pending + 1, (size_t)--in->n_pending);
        return 1;
    }
    for (;;) {
        if (*in->interrupted) return 0;
        if (timeout_ms >= 0) {
            struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
            int r = poll(&pfd, 1, timeout_ms);
            if (r == 0) return 0;
            if (r < 0) {
                if (errno == EINTR) continue;
                return -1;
            }
        }
        ssize_t got = read(STDIN_FILENO, b, 1);
        if (got == 1) return 1;
        if (got == 0) return 0;
        if (errno != EINTR) return -1;
    }
}

static void unread_bytes(chat_input *in, const unsigned char *b, int n) {
    if (n <= 0 || in->n_pending + n > (int)sizeof in->pending) return;
    memmove(in->pending + n, in->pending, (size_t)in->n_pending);
    memcpy(in->pending, b, (size_t)n);
    in->n_pending += n;
}

/* libedit's character reader: UTF-8 decoded here (so that invalid bytes
 * become U+FFFD whatever the locale), bracketed paste recognised, Ctrl-C
 * ending the line. Returns 1 with *wc set, 0 at end of input. */
static int getc_fn(EditLine *el, wchar_t *wc) {
    chat_input *in = NULL;
    el_get(el, EL_CLIENTDATA, &in);
    for (;;) {
        unsigned char b;
        int r = next_byte(in, &b, -1);
        if (r != 1) return r < 0 ? -1 : 0;
        if (in->literal) {
            in->literal = false;
            *wc = b;
            return 1;
        }
        if (b == 0x1b) {
            /* ESC [ 2 0 0 ~ starts a paste and ESC [ 2 0 1 ~ ends it */
            static const char start[] = "[200~", end[] = "[201~";
            unsigned char seq[5];
            int n = 0;
            while (n < 5 && next_byte(in, &seq[n], 30) == 1) {
                n++;
                if (memcmp(seq, start, (size_t)n) != 0 && memcmp(seq, end, (size_t)n) != 0) break;
            }
            if (n == 5 && (memcmp(seq, start, 5) == 0 || memcmp(seq, end, 5) == 0)) {
                in->paste = seq[3] == '0';
                continue;
            }
            unread_bytes(in, seq, n);
            *wc = 0x1b;
            return 1;
        }
        if (in->paste && (b == '\r' || b == '\n')) {
            /* a pasted newline stays in the line: quoted-insert (^V) of ^J */
            unsigned char nl = '\n';
            unread_bytes(in, &nl, 1);
            in->literal = true;
            *wc = 0x16;
            return 1;
        }
        if (b < 0x80) { *wc = b; return 1; }
        unsigned char seq[4] = {b};
        size_t want = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        size_t n = 1;
        while (n < want) {
            if (next_byte(in, &seq[n], 100) != 1) break;
            if ((seq[n] & 0xC0) != 0x80) { unread_bytes(in, &seq[n], 1); break; }
            n++;
        }
        if (utf8_seq_len(seq, n) != n || n != want) { *wc = 0xFFFD; return 1; }
        uint32_t cp = n == 2 ? (seq[0] & 0x1Fu) << 6 | (seq[1] & 0x3Fu)
                    : n == 3 ? (seq[0] & 0x0Fu) << 12 | (seq[1] & 0x3Fu) << 6 | (seq[2] & 0x3Fu)
                             : (seq[0] & 0x07u) << 18 | (seq[1] & 0x3Fu) << 12 |
                                   (seq[2] & 0x3Fu) << 6 | (seq[3] & 0x3Fu);
        *wc = (wchar_t)cp;
        return 1;
    }
}

chat_input *chat_input_new(bool terminal, volatile sig_atomic_t *interrupted) {
    chat_input *in = calloc(1, sizeof *in);
    if (!in) return NULL;
    in->terminal = terminal;
    in->interrupted = interrupted;
    if (!terminal) return in;

    /* libedit converts characters with the locale: make it UTF-8, which is
     * what the models read and write */
    setlocale(LC_CTYPE, "");
    if (strcmp(nl_langinfo(CODESET), "UTF-8") != 0) setlocale(LC_CTYPE, "C.UTF-8");

    in->el = el_init("trimlm", stdin, stdout, stderr);
    in->hist = history_init();
    if (!in->el || !in->hist) {
        /* no line editing: fall back to plain lines */
        if (in->el) el_end(in->el);
        if (in->hist) history_end(in->hist);
        in->el = NULL;
        in->hist = NULL;
        return in;
    }
    HistEvent ev;
    history(in->hist, &ev, H_SETSIZE, HISTORY_SIZE);
    history(in->hist, &ev, H_SETUNIQUE, 1);
    in->hist_path = history_path();
    if (in->hist_path) history(in->hist, &ev, H_LOAD, in->hist_path); /* absent at first */
    const char *term = getenv("TERM");
    in->bracketed_paste = term && term[0] && strcmp(term, "dumb") != 0;
    el_set(in->el, EL_CLIENTDATA, in);
    el_set(in->el, EL_EDITOR, "emacs");
    el_set(in->el, EL_SIGNAL, 0);
    el_set(in->el, EL_PROMPT, prompt_fn);
    el_set(in->el, EL_HIST, history, in->hist);
    el_set(in->el, EL_GETCFN, getc_fn);
    el_source(in->el, NULL); /* ~/.editrc */
    return in;
}

void chat_input_free(chat_input *in) {
    if (!in) return;
    history_save(in);
    if (in->el) el_end(in->el);
    if (in->hist) history_end(in->hist);
    free(in->hist_path);
    free(in->line);
    free(in->msg);
    free(in);
}

/* ------------------------------------------------------------ lines */

typedef enum line_result {
    LINE_OK,
    LINE_END,
    LINE_INTERRUPTED,      /* Ctrl-C on an empty line */
    LINE_INTERRUPTED_TEXT, /* Ctrl-C with text typed: the text is dropped */
} line_result;

/* One line without its newline into in->line. */
static line_result read_line(chat_input *in, const char *prompt) {
    if (!in->el) {
        ssize_t n = getline(&in->line, &in->line_cap, stdin);
        if (n < 0) return *in->interrupted ? LINE_INTERRUPTED : LINE_END;
        if (n > 0 && in->line[n - 1] == '\n') in->line[--n] = '\0';
        if (n > 0 && in->line[n - 1] == '\r') in->line[--n] = '\0';
        return LINE_OK;
    }
    in->prompt = prompt;
    in->paste = false;
    in->literal = false;
    if (in->bracketed_paste) fputs("\033[?2004h", stdout); /* paste arrives marked */
    fflush(stdout);
    int count = 0;
    const char *got = el_gets(in->el, &count);
    if (in->bracketed_paste) fputs("\033[?2004l", stdout);
    fflush(stdout);
    if (*in->interrupted) {
        fputc('\n', stdout);
        const LineInfo *li = el_line(in->el);
        bool typed = (got && count > 0) || (li && li->lastchar > li->buffer);
        return typed ? LINE_INTERRUPTED_TEXT : LINE_INTERRUPTED;
    }
    if (!got || count <= 0) return LINE_END;
    size_t n = (size_t)count;
    if (n > 0 && got[n - 1] == '\n') n--;
    char *copy = realloc(in->line, n + 1);
    if (!copy) return LINE_END;
    in->line = copy;
    memcpy(in->line, got, n);
    in->line[n] = '\0';
    if (n > 0) {
        HistEvent ev;
        history(in->hist, &ev, H_ENTER, in->line);
    }
    return LINE_OK;
}

static bool msg_append(chat_input *in, const char *s, size_t n) {
    if (in->msg_len + n + 1 > in->msg_cap) {
        size_t cap = in->msg_cap ? in->msg_cap : 256;
        while (cap < in->msg_len + n + 1) cap *= 2;
        char *grown = realloc(in->msg, cap);
        if (!grown) return false;
        in->msg = grown;
        in->msg_cap = cap;
    }
    memcpy(in->msg + in->msg_len, s, n);
    in->msg_len += n;
    in->msg[in->msg_len] = '\0';
    return true;
}

static bool ends_with(const char *s, size_t n, const char *suffix) {
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

chat_read chat_input_read(chat_input *in, const char **text, bool *is_command) {
    enum { FIRST, BLOCK, CONTINUED } mode = FIRST;
    in->msg_len = 0;
    msg_append(in, "", 0);
    *is_command = false;
    for (;;) {
        line_result r = read_line(in, mode == FIRST ? PROMPT_FIRST : PROMPT_MORE);
        if (r == LINE_INTERRUPTED_TEXT || (r == LINE_INTERRUPTED && mode != FIRST))
            return CHAT_READ_CANCELLED;
        if (r == LINE_INTERRUPTED) return CHAT_READ_END;
        if (r == LINE_END) {
            if (mode == FIRST || in->msg_len == 0) return CHAT_READ_END;
            break; /* send what was typed before the end of input */
        }
        const char *line = in->line;
        size_t n = strlen(line);
        if (mode == FIRST) {
            if (n == 0) continue;
            if (strncmp(line, "\"\"\"", 3) == 0) {
                /* """ opens a block; """text""" on one line is a message */
                if (n >= 6 && ends_with(line, n, "\"\"\"")) {
                    msg_append(in, line + 3, n - 6);
                    break;
                }
                mode = BLOCK;
                if (n > 3) { msg_append(in, line + 3, n - 3); msg_append(in, "\n", 1); }
                continue;
            }
            if (line[0] == '/' && line[1] != '/') {
                msg_append(in, line, n);
                *is_command = true;
                *text = in->msg;
                return CHAT_READ_MESSAGE;
            }
            if (line[0] == '/') { line++; n--; } /* "//text" sends "/text" */
        }
        if (mode == BLOCK) {
            if (ends_with(line, n, "\"\"\"")) {
                msg_append(in, line, n - 3);
                break;
            }
            msg_append(in, line, n);
            msg_append(in, "\n", 1);
            continue;
        }
        if (n > 0 && line[n - 1] == '\\') {
            msg_append(in, line, n - 1);
            msg_append(in, "\n", 1);
            mode = CONTINUED;
            continue;
        }
        msg_append(in, line, n);
        break;
    }
    /* trailing newlines of a block say nothing */
    while (in->msg_len > 0 && in->msg[in->msg_len - 1] == '\n') in->msg[--in->msg_len] = '\0';
    if (in->msg_len == 0) return CHAT_READ_CANCELLED;
    *text = in->msg;
    return CHAT_READ_MESSAGE;
}
