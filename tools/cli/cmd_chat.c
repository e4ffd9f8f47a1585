/* cmd_chat.c — `trimlm chat`: an interactive conversation with a model, the
 * /commands, and Ctrl-C handling. The conversation and its KV cache live in
 * chat_session.c, line input in chat_input.c, the JSON file in chat_conv.c. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat_input.h"
#include "chat_session.h"
#include "cli.h"
#include "model_registry.h"

static const char chat_usage[] =
    "usage: trimlm chat -m MODEL [options]\n"
    "\n"
    "Talks with a model: type a message, read the streamed reply. The conversation\n"
    "is rendered with the model's chat template; each turn computes only its new\n"
    "tokens. When stdin is not a terminal, each line is a message and the replies\n"
    "are printed one per turn (printf 'Hi\\n' | trimlm chat -m MODEL).\n"
    "\n"
    "  -m, --model MODEL       GGUF file, Hugging Face directory, registry name or URL\n"
    "      --system TEXT       system message (default: the template's, if any)\n"
    "  -n, --n-predict N       reply tokens at most (default: until the model stops)\n";
/* then cli_gen_usage, then: */
static const char chat_usage_tail[] =
    "  -h, --help              this help\n"
    "\n"
    "Type /help in the chat for its commands. A line ending in \\ continues on the\n"
    "next line; \"\"\" on a line of its own opens and closes a multi-line message.\n"
    "Ctrl-C stops a reply; Ctrl-C at an empty prompt or Ctrl-D ends the chat.\n"
    "History: ${XDG_STATE_HOME:-~/.local/state}/trimlm/chat_history.\n";

static const char chat_help[] =
    "Commands:\n"
    "  /help          this help\n"
    "  /reset         start over (the system message is kept)\n"
    "  /system TEXT   set the system message; the conversation is kept and the\n"
    "                 whole of it is read again with the new message\n"
    "  /system        show the system message\n"
    "  /save FILE     save the conversation as JSON\n"
    "  /load FILE     replace the conversation with one saved by /save\n"
    "  /stats         context use, KV-cache size and the speed of the last turn\n"
    "  /quit          end the chat (also Ctrl-D, or Ctrl-C at an empty prompt)\n"
    "Input:\n"
    "  a line ending in \\ continues on the next line; \"\"\" on a line opens and\n"
    "  closes a multi-line message (pasting several lines also gives one message);\n"
    "  //text sends a message that starts with /.\n"
    "Ctrl-C during a reply stops it; the part already shown is kept as the reply.\n"
    "When the context is full, the oldest turns are dropped (the system message stays).\n";

typedef struct chat_options {
    const char *model;
    const char *system;
    cli_gen_options gen;
} chat_options;

static int parse_chat_args(int argc, char **argv, chat_options *o, bool *done) {
    *o = (chat_options){.gen = cli_gen_defaults()};
    o->gen.n_predict = -1;
    cli_args a;
    cli_args_init(&a, "chat", argc, argv);
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) {
            fputs(chat_usage, stdout);
            fputs(cli_gen_usage, stdout);
            fputs(chat_usage_tail, stdout);
            *done = true;
            return 0;
        }
        else if (cli_flag(&a, "-m", "--model")) o->model = cli_value(&a);
        else if (cli_flag(&a, NULL, "--system")) o->system = cli_value(&a);
        else if (cli_gen_flag(&a, &o->gen)) {}
        else cli_unknown(&a);
    }
    if (a.status) return a.status;
    if (!o->model) return cli_usage_error("chat", "no model given (-m MODEL)");
    return 0;
}

/* ------------------------------------------------------------- Ctrl-C */

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

static void emit_stdout(void *user, const char *s, size_t n) {
    (void)user;
    if (n == 0) return;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
    clearerr(stdout); /* a write cut by Ctrl-C is not an error worth keeping */
}

/* ----------------------------------------------------------- commands */

/* A malloc'd UTF-8-valid copy of s, saying when bytes were replaced. */
static char *clean_text(const char *s) {
    size_t bad = 0;
    char *clean = utf8_sanitize(s, strlen(s), &bad);
    if (clean && bad > 0)
        fprintf(stderr, "trimlm: the text had %zu invalid UTF-8 sequence%s, replaced by U+FFFD\n",
                bad, bad == 1 ? "" : "s");
    return clean;
}

/* "~/x" -> "$HOME/x" (malloc'd). */
static char *expand_path(const char *p) {
    const char *home = getenv("HOME");
    if (p[0] == '~' && p[1] == '/' && home) {
        size_t n = strlen(home) + strlen(p);
        char *out = malloc(n);
        if (out) snprintf(out, n, "%s%s", home, p + 1);
        return out;
    }
    return strdup(p);
}

static void print_stats(const chat_session *s) {
    int32_t pos = tlm_context_pos(s->ctx);
    int64_t per_tok = tlm_context_kv_bytes_per_token(s->ctx);
    double kv = (double)per_tok * pos;
    printf("context: %d of %d tokens in use (%.1f%%); %zu messages\n", pos, s->n_ctx,
           s->n_ctx > 0 ? 100.0 * pos / s->n_ctx : 0.0, s->conv.n);
    printf("KV cache: %.2f MiB used (%lld bytes per token x %d tokens)\n", kv / (1024.0 * 1024.0),
           (long long)per_tok, pos);
    if (s->last_reply_s > 0 || s->last_prefill_s > 0) {
        printf("last prefill: %d tokens in %.3f s (%.1f tokens/s)\n", s->last_prefill_tokens,
               s->last_prefill_s, s->last_prefill_s > 0 ? s->last_prefill_tokens / s->last_prefill_s : 0.0);
        printf("last reply: %lld tokens in %.3f s (%.1f tokens/s)\n", (long long)s->last_reply_tokens,
               s->last_reply_s, s->last_reply_s > 0 ? s->last_reply_tokens / s->last_reply_s : 0.0);
    } else {
        printf("no reply yet\n");
    }
    fflush(stdout);
}

typedef enum cmd_result { CMD_OK, CMD_ERROR, CMD_QUIT } cmd_result;

static cmd_result run_command(chat_session *s, const char *line) {
    /* "/name rest" */
    const char *name = line + 1;
    size_t name_len = strcspn(name, " \t");
    const char *arg = name + name_len;
    while (*arg == ' ' || *arg == '\t') arg++;
#define IS(cmd) (name_len == strlen(cmd) && strncmp(name, cmd, name_len) == 0)
    if (IS("help") || IS("?")) {
        fputs(chat_help, stdout);
        fflush(stdout);
        return CMD_OK;
    }
    if (IS("quit") || IS("exit") || IS("bye")) return CMD_QUIT;
    if (IS("reset") || IS("clear")) {
        chat_conv_clear(&s->conv);
        chat_session_reset_cache(s);
        fprintf(stderr, "trimlm: the conversation was cleared (the system message is kept)\n");
        return CMD_OK;
    }
    if (IS("stats")) {
        print_stats(s);
        return CMD_OK;
    }
    if (IS("system")) {
        if (!*arg) {
            printf("%s\n", s->conv.system ? s->conv.system : "(none: the chat template's default)");
            fflush(stdout);
            return CMD_OK;
        }
        char *text = clean_text(arg);
        char *old = s->conv.system ? strdup(s->conv.system) : NULL;
        tlm_error err = {0};
        if (!text || !chat_conv_set_system(&s->conv, text)) {
            free(text);
            free(old);
            cli_fail("out of memory");
            return CMD_ERROR;
        }
        free(text);
        if (chat_session_check_render(s, &s->conv, &err) != TLM_OK) {
            chat_conv_set_system(&s->conv, old);
            free(old);
            cli_fail("/system: %s; the previous system message is kept", err.msg);
            return CMD_ERROR;
        }
        free(old);
        fprintf(stderr, "trimlm: system message set; the conversation is kept (/reset starts over)\n");
        return CMD_OK;
    }
    if (IS("save") || IS("load")) {
        bool save = IS("save");
        if (!*arg) {
            fprintf(stderr, "trimlm: usage: /%s FILE\n", save ? "save" : "load");
            return CMD_ERROR;
        }
        char *path = expand_path(arg);
        if (!path) { cli_fail("out of memory"); return CMD_ERROR; }
        tlm_error err = {0};
        cmd_result rc = CMD_OK;
        if (save) {
            if (chat_conv_save(&s->conv, path, &s->model_path, 1, &err) != TLM_OK) rc = CMD_ERROR;
            else fprintf(stderr, "trimlm: saved %zu messages to %s\n", s->conv.n, path);
        } else {
            chat_conv loaded = {0};
            if (chat_conv_load(path, &loaded, &err) != TLM_OK) {
                rc = CMD_ERROR;
            } else if (chat_session_check_render(s, &loaded, &err) != TLM_OK) {
                char msg[sizeof err.msg];
                snprintf(msg, sizeof msg, "%s", err.msg);
                if (err.code == TLM_ERR_CONTEXT_FULL) cli_seterr(&err, err.code, "%s: %s", path, msg);
                else cli_seterr(&err, TLM_ERR_FORMAT, "%s: the model's chat template rejects it: %s", path, msg);
                chat_conv_free(&loaded);
                rc = CMD_ERROR;
            } else {
                chat_conv_free(&s->conv);
                s->conv = loaded;
                fprintf(stderr, "trimlm: loaded %zu messages from %s\n", s->conv.n, path);
            }
        }
        if (rc == CMD_ERROR) cli_fail_err(&err);
        free(path);
        return rc;
    }
#undef IS
    fprintf(stderr, "trimlm: unknown command '/%.*s' (/help lists the commands)\n", (int)name_len, name);
    return CMD_ERROR;
}

/* ----------------------------------------------------------------- main */

int cmd_chat(int argc, char **argv) {
    chat_options o;
    bool done = false;
    int rc = parse_chat_args(argc, argv, &o, &done);
    if (rc || done) return rc;

    tlm_error err = {0};
    tlm_model *model = NULL;
    chat_session s = {0};
    chat_input *in = NULL;
    char *sys = NULL;
    rc = CLI_EXIT_FAIL;

    static char model_path[4096];
    model = load_model_arg_path(o.model, model_path, sizeof model_path, &err);
    if (!model) { cli_fail_err(&err); goto out; }
    tlm_context_params cp = cli_gen_context_params(&o.gen);
    s.model = model;
    s.model_path = model_path;
    s.ctx = tlm_context_new(model, &cp, &err);
    if (!s.ctx) { cli_fail_err(&err); goto out; }
    cli_warn_ctx_beyond_training(model, o.gen.ctx, o.model);
    s.n_ctx = tlm_context_n_ctx(s.ctx);
    s.n_batch = cp.n_batch > 0 ? cp.n_batch : 512;
    s.n_predict = o.gen.n_predict;
    s.cache = malloc((size_t)s.n_ctx * sizeof *s.cache);
    if (!s.cache) { cli_fail("out of memory for a context of %d tokens", s.n_ctx); goto out; }
    s.interrupted = &g_interrupted;
    tlm_model_info info;
    tlm_model_get_info(model, &info);
    tlm_sampler_params sp = cli_gen_sampler_params(&o.gen);
    s.sampler = tlm_sampler_new(&sp, info.n_vocab, &err);
    if (!s.sampler) { cli_fail_err(&err); goto out; }
    if (o.system) {
        sys = clean_text(o.system);
        if (!sys || !chat_conv_set_system(&s.conv, sys)) { cli_fail("out of memory"); goto out; }
        if (chat_session_check_render(&s, &s.conv, &err) != TLM_OK) {
            cli_fail("--system: %s", err.msg);
            goto out;
        }
    }
    const char *tmpl = tlm_model_chat_template(model);
    if (!tmpl)
        fprintf(stderr, "trimlm: warning: the model has no chat template; using ChatML\n");

    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocked read must return to see the flag */
    sigaction(SIGINT, &sa, NULL);

    /* prompts and line editing only when a person types and reads */
    bool terminal = isatty(STDIN_FILENO) == 1 && isatty(STDOUT_FILENO) == 1;
    in = chat_input_new(terminal, &g_interrupted);
    if (!in) { cli_fail("out of memory"); goto out; }
    if (terminal) {
        printf("trimlm chat: %s, context %d tokens. /help for commands, Ctrl-D to quit.\n",
               info.name ? info.name : o.model, s.n_ctx);
        fflush(stdout);
    }

    bool had_error = false;
    for (;;) {
        g_interrupted = 0;
        const char *text = NULL;
        bool is_command = false;
        chat_read r = chat_input_read(in, &text, &is_command);
        if (r == CHAT_READ_END) break;
        if (r == CHAT_READ_CANCELLED) continue;
        if (is_command) {
            cmd_result cr = run_command(&s, text);
            if (cr == CMD_QUIT) break;
            if (cr == CMD_ERROR) had_error = true;
            continue;
        }
        char *message = clean_text(text);
        if (!message) { cli_fail("out of memory"); had_error = true; continue; }
        g_interrupted = 0;
        chat_outcome outcome = chat_session_turn(&s, message, emit_stdout, NULL, &err);
        free(message);
        switch (outcome) {
        case CHAT_REPLIED:
            fputs(terminal ? "\n\n" : "\n", stdout);
            break;
        case CHAT_INTERRUPTED:
            fputs(terminal ? "\n\n" : "\n", stdout);
            fprintf(stderr, "trimlm: reply stopped; the part shown is kept\n");
            break;
        case CHAT_WITHDRAWN:
            fprintf(stderr, "trimlm: stopped before the reply began; the message was dropped\n");
            break;
        case CHAT_REFUSED:
        case CHAT_FAILED:
            cli_fail_err(&err);
            had_error = true;
            break;
        }
        fflush(stdout);
    }
    if (terminal) fputc('\n', stdout);
    /* scripted input: the exit code says whether every command and turn worked */
    rc = terminal || !had_error ? CLI_EXIT_OK : CLI_EXIT_FAIL;

out:
    signal(SIGINT, SIG_DFL);
    chat_input_free(in);
    free(sys);
    chat_conv_free(&s.conv);
    free(s.cache);
    tlm_sampler_free(s.sampler);
    tlm_context_free(s.ctx);
    tlm_model_free(model);
    return rc;
}
