/* cmd_pull.c — `trimlm pull`: put a model into the per-user cache. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "download.h"
#include "model_registry.h"

static const char pull_usage[] =
    "usage: trimlm pull [NAME|URL|PATH] [--verify] [--list]\n"
    "\n"
    "Downloads a model into the cache (${XDG_CACHE_HOME:-$HOME/.cache}/trimlm/models)\n"
    "and prints its path on stdout.\n"
    "\n"
    "  NAME        a model of the built-in registry (default: " DEFAULT_MODEL_NAME ")\n"
    "  URL         an https:// or file:// URL of a .gguf file, saved under its file name\n"
    "              in a directory of its own for each URL, with the URL and sha256 beside it\n"
    "  PATH        a local file or directory: nothing to do, its path is printed\n"
    "  --verify    re-hash a cached model (sha256) instead of trusting its size; a\n"
    "              registry model is downloaded again on a mismatch, a URL's is an error\n"
    "  --list      list the registry and what is cached\n"
    "  -h, --help  this help\n"
    "\n"
    "Downloads go to a temporary file that is checked (size, sha256) before it is\n"
    "renamed into place; a model published in several parts is downloaded one part\n"
    "at a time, each checked, and assembled in that one file. Nothing is left on\n"
    "failure or Ctrl-C (the next pull starts over). Proxies come from the usual\n"
    "https_proxy/no_proxy variables.\n";

static int list_registry(void) {
    tlm_error err = {0};
    size_t n = 0;
    const registry_entry *all = registry_entries(&n, &err);
    if (!all) return cli_fail_err(&err);
    char dir[4096];
    if (model_cache_dir(dir, sizeof dir, &err) != TLM_OK) return cli_fail_err(&err);
    printf("cache: %s\n", dir);
    int width = 24; /* the name column: as wide as the longest name */
    for (size_t i = 0; i < n; i++)
        if (strlen(all[i].name) > (size_t)width && strlen(all[i].name) < 200) width = (int)strlen(all[i].name);
    for (size_t i = 0; i < n; i++) {
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, all[i].file);
        struct stat st;
        bool cached = stat(path, &st) == 0 && (uint64_t)st.st_size == all[i].size;
        printf("%-*s %8.1f MB  %-10s %s\n", width, all[i].name, all[i].size / 1e6,
               cached ? "cached" : "not cached", all[i].description);
    }
    return CLI_EXIT_OK;
}

int cmd_pull(int argc, char **argv) {
    cli_args a;
    cli_args_init(&a, "pull", argc, argv);
    const char *target = NULL;
    bool verify = false, list = false;
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) { fputs(pull_usage, stdout); return CLI_EXIT_OK; }
        else if (cli_flag(&a, NULL, "--verify")) verify = true;
        else if (cli_flag(&a, NULL, "--list")) list = true;
        else if (a.argv[a.i][0] != '-' && !target) target = a.argv[a.i];
        else cli_unknown(&a);
    }
    if (a.status) return a.status;
    if (list) return list_registry();
    if (!target) target = DEFAULT_MODEL_NAME;

    tlm_error err = {0};
    char path[4096];
    pull_outcome outcome = PULL_DOWNLOADED;
    if (is_url(target)) {
        if (pull_gguf_url(target, verify, path, sizeof path, &outcome, &err) != TLM_OK)
            return cli_fail_err(&err);
    } else {
        struct stat st;
        const registry_entry *e = NULL;
        if (stat(target, &st) == 0) {
            snprintf(path, sizeof path, "%s", target);
            outcome = PULL_LOCAL_PATH;
        } else if ((e = registry_find(target, &err)) != NULL) {
            if (pull_registry_model(e, verify, path, sizeof path, &outcome, &err) != TLM_OK)
                return cli_fail_err(&err);
        } else if (err.code != TLM_OK) {
            return cli_fail_err(&err);
        } else {
            return cli_fail("%s: no such file, and not a known model name (trimlm pull --list "
                            "shows them)", target);
        }
    }
    switch (outcome) {
    case PULL_DOWNLOADED: fprintf(stderr, "trimlm: %s: saved to %s\n", target, path); break;
    case PULL_ALREADY_PRESENT:
        fprintf(stderr, "trimlm: %s: already in the cache (%s%s)\n", target, path,
                verify ? ", sha256 verified" : "");
        break;
    case PULL_LOCAL_PATH: fprintf(stderr, "trimlm: %s: a local path, nothing to pull\n", target); break;
    }
    printf("%s\n", path);
    return CLI_EXIT_OK;
}
