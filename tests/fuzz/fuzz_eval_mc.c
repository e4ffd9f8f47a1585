/*
 * fuzz_eval_mc.c — the readers of `trimlm eval --mc FILE --task T`:
 * mc_items_parse() on the JSONL items and, for PIQA, mc_labels_parse() on
 * the labels file.
 *
 * Input: a task byte (its value mod 4: hellaswag, arc, boolq, piqa), then
 * the items text; for PIQA, a NUL and the labels text follow. Items that
 * load must be ones the scorer can use: at least two continuations, each
 * " " + choice, gold an index of one of them, lines increasing.
 */
#include "eval_mc_items.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const tasks[] = {"hellaswag", "arc", "boolq", "piqa"};
    if (size < 1) return 0;
    const char *task = tasks[data[0] % 4];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const char *nul = memchr(text, '\0', len);
    size_t items_len = nul ? (size_t)(nul - text) : len;
    /* --limit: 0 (all) for most inputs, a small cap for some */
    int64_t limit = (data[0] >> 2) % 8 == 7 ? 3 : 0;

    mc_set s = {0};
    tlm_error err;
    tlm_status st = mc_items_parse(text, items_len, task, "items.jsonl", limit, &s, &err);
    if (st == TLM_OK && strcmp(task, "piqa") == 0) {
        const char *labels = nul ? nul + 1 : "";
        size_t labels_len = nul ? len - items_len - 1 : 0;
        st = mc_labels_parse(labels, labels_len, "items-labels.lst", "items.jsonl", &s, &err);
    }
    if (st != TLM_OK) {
        FUZZ_CHECK_ERROR(err);
        mc_set_free(&s);
        return 0;
    }
    FUZZ_CHECK(s.n > 0, "no items but no error");
    FUZZ_CHECK(limit <= 0 || s.n <= limit, "%lld items past --limit %lld", (long long)s.n,
               (long long)limit);
    int64_t prev_line = 0;
    for (int64_t i = 0; i < s.n; i++) {
        const mc_item *it = &s.items[i];
        FUZZ_CHECK(it->line > prev_line, "item %lld: line %lld after %lld", (long long)i,
                   (long long)it->line, (long long)prev_line);
        prev_line = it->line;
        FUZZ_CHECK(it->context != NULL, "item %lld: no context", (long long)i);
        FUZZ_CHECK(it->n_choices >= 2, "item %lld: %d choices", (long long)i, it->n_choices);
        FUZZ_CHECK(it->gold >= 0 && it->gold < it->n_choices, "item %lld: gold %d of %d",
                   (long long)i, it->gold, it->n_choices);
        for (int c = 0; c < it->n_choices; c++)
            FUZZ_CHECK(it->continuations[c] && it->continuations[c][0] == ' ',
                       "item %lld: continuation %d", (long long)i, c);
    }
    mc_set_free(&s);
    return 0;
}
