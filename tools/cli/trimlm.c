/* trimlm.c — command-line entry point: dispatches to the subcommands in
 * tools/cmd_*.c (each parses its own flags, see cli.h for exit codes). */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv); /* argv without the subcommand itself */
    const char *summary;
} subcommand;

static const subcommand subcommands[] = {
    {"run", cmd_run, "generate text from a prompt"},
    {"chat", cmd_chat, "talk with a model in the terminal (history, /commands)"},
    {"serve", cmd_serve, "serve a model over HTTP with OpenAI's API (/v1/chat/completions)"},
    {"eval", cmd_eval, "measure perplexity on a text file (--ppl)"},
    {"pull", cmd_pull, "download a model into the cache"},
    {"convert", cmd_convert, "write a model as a .tlm file (--type f32|f16|bf16)"},
    {"info", cmd_info, "describe a model (graph, types, size) [--verify]; --system"},
    {"bench", cmd_bench, "measure prefill and decode speed (tokens/s)"},
    {"score", cmd_score, "importance of each attention, MLP and block (calibration pass)"},
};

static void print_help(FILE *out) {
    fprintf(out,
            "trimlm %s — CPU inference for llama-family language models\n"
            "\n"
            "usage: trimlm <command> [options]\n"
            "\n"
            "commands:\n",
            TLM_VERSION_STRING);
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(out, "  %-8s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(out,
            "  help     this help (trimlm <command> --help for a command's options)\n"
            "\n"
            "MODEL arguments (-m) take a .tlm or GGUF file, a Hugging Face directory, a registry\n"
            "name (trimlm pull --list) or a URL of a .gguf file; names and URLs are\n"
            "downloaded into ${XDG_CACHE_HOME:-$HOME/.cache}/trimlm/models when missing.\n"
            "\n"
            "example:\n"
            "  trimlm run -m smollm2-135m-instruct -p \"What is the capital of France?\"\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        if (argc > 2 && strcmp(cmd, "help") == 0) {
            /* "trimlm help run" = "trimlm run --help" */
            for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++) {
                if (strcmp(argv[2], subcommands[i].name) == 0) {
                    char *help_argv[] = {"--help", NULL};
                    return subcommands[i].run(1, help_argv);
                }
            }
            fprintf(stderr, "trimlm: unknown command '%s' (see 'trimlm help')\n", argv[2]);
            return CLI_EXIT_USAGE;
        }
        print_help(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("trimlm %s (kernels: %s)\n", TLM_VERSION_STRING, tlm_isa_name());
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (strcmp(cmd, subcommands[i].name) == 0) return subcommands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "trimlm: unknown command '%s' (see 'trimlm help')\n", cmd);
    return CLI_EXIT_USAGE;
}
