/*
 * eval_mc_items.h — the items of `trimlm eval --mc FILE --task TASK`: one JSON
 * object per line of FILE (the layouts are listed in eval_mc.c), and PIQA's
 * labels file (one 0 or 1 per line, aligned with the lines of FILE).
 *
 * Parsing works on text already read, so that the fuzz target
 * (tests/fuzz/fuzz_eval_mc.c) reaches it without a model or the CLI.
 */
#ifndef TLM_EVAL_MC_ITEMS_H
#define TLM_EVAL_MC_ITEMS_H

#include <stdint.h>

#include "trimlm.h"

typedef struct mc_item {
    int64_t line;         /* 1-based line of the --mc file */
    char *context;
    int n_choices;        /* >= 2 */
    char **continuations; /* " " + choice */
    int gold;             /* in [0, n_choices) */
} mc_item;

typedef struct mc_set {
    mc_item *items;
    int64_t n, cap;
} mc_set;

void mc_item_free(mc_item *it);
void mc_set_free(mc_set *s);

/* "a" + "b" + "c", malloc'd; NULL when out of memory. */
char *mc_concat3(const char *a, const char *b, const char *c);

/* Appends the items of text[0..len) (lines of JSON objects in the layout of
 * task: "hellaswag", "arc", "boolq" or "piqa"; blank lines skipped; text
 * ends at len or at its first NUL) to *s, at most limit items when limit > 0.
 * path names the file in messages ("PATH:LINE: ..."). No items is an error.
 * PIQA items get gold 0 until mc_labels_parse() sets it. On failure *s holds
 * the items read before the bad line (free it with mc_set_free). */
tlm_status mc_items_parse(const char *text, size_t len, const char *task, const char *path,
                          int64_t limit, mc_set *s, tlm_error *err);

/* Sets the gold of every item from PIQA's labels text[0..len) (the label on
 * the item's line; "0" or "1", trailing spaces and CR ignored), read from
 * labels_path; mc_path names the --mc file in messages. */
tlm_status mc_labels_parse(const char *text, size_t len, const char *labels_path,
                           const char *mc_path, mc_set *s, tlm_error *err);

#endif
