/*
 * tokenizer_pretok.c — normalisation and pre-tokenisation: a list of steps
 * (regex/literal splits, prepends, replacements) applied in order to the
 * pieces of one text segment, as Hugging Face's normalizers and
 * pre_tokenizers do and as GGUF's tokenizer.ggml.pre names them.
 *
 * Regexes are compiled once per tokenizer (UTF + UCP, JIT when available).
 * PCRE2 reads past the subject when told to skip its UTF check on a subject
 * that is not valid UTF-8, so the pieces must be: the input was repaired
 * first, the loaders accept only UTF-8 strings for the steps to insert,
 * \C (one byte, even inside a character) is refused at compile time, and
 * tok_pretok_run() checks each piece once before the per-match check is
 * skipped.
 */
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "tokenizer_internal.h"

/* ------------------------------------------------------ named patterns */

const char TOK_RE_GPT2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char TOK_RE_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char TOK_RE_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char TOK_RE_DIGIT[] = "\\p{N}";

/* ------------------------------------------------------ building steps */

static tok_step *new_step(tok_pretok *p, tlm_error *err) {
    if (p->n_steps == p->cap_steps) {
        int cap = p->cap_steps ? p->cap_steps * 2 : 4;
        tok_step *grown = tlm_realloc(p->steps, (size_t)cap * sizeof *grown);
        if (!grown) {
            tlm_seterr(err, TLM_ERR_NOMEM, "out of memory building the pre-tokenizer");
            return NULL;
        }
        p->steps = grown;
        p->cap_steps = cap;
    }
    tok_step *s = &p->steps[p->n_steps++];
    memset(s, 0, sizeof *s);
    return s;
}

int tok_pretok_add_split(tok_pretok *p, const char *pattern, size_t len, bool literal,
                         tok_split_behavior behavior, const char *source, tlm_error *err) {
    int errcode;
    PCRE2_SIZE erroff;
    /* UCP and NEVER_BACKSLASH_C are not allowed with LITERAL */
    uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, options, &errcode, &erroff, NULL);
    if (!re && errcode == PCRE2_ERROR_BACKSLASH_C_CALLER_DISABLED)
        return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                          "%s: pre-tokenizer regex uses \\C at offset %zu (a single byte, which "
                          "can split a UTF-8 character); this is not supported", source,
                          (size_t)erroff);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        return tlm_seterr(err, TLM_ERR_FORMAT,
                          "%s: pre-tokenizer regex does not compile at offset %zu: %s", source,
                          (size_t)erroff, (const char *)msg);
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    tok_step *s = new_step(p, err);
    if (!s) {
        pcre2_code_free(re);
        return TLM_ERR_NOMEM;
    }
    s->kind = TOK_STEP_SPLIT;
    s->re = re;
    s->behavior = behavior;
    return 0;
}

/* A copy of exactly n bytes (NULs included), NUL-terminated; NULL when out
 * of memory. */
static char *copy_bytes(const char *s, size_t n) {
    char *c = tlm_malloc(n + 1);
    if (!c) return NULL;
    if (n) memcpy(c, s, n);
    c[n] = '\0';
    return c;
}

int tok_pretok_add_prepend(tok_pretok *p, const char *str, size_t len, bool unless_starts_with,
                           bool first_segment_only, tlm_error *err) {
    char *copy = copy_bytes(str, len);
    tok_step *s = copy ? new_step(p, err) : NULL;
    if (!s) {
        tlm_free(copy);
        return tlm_seterr(err, TLM_ERR_NOMEM, "out of memory building the pre-tokenizer");
    }
    s->kind = TOK_STEP_PREPEND;
    s->str = copy;
    s->str_len = len;
    s->unless_starts_with = unless_starts_with;
    s->first_segment_only = first_segment_only;
    return 0;
}

int tok_pretok_add_replace(tok_pretok *p, const char *from, size_t from_len, const char *to,
                           size_t to_len, tlm_error *err) {
    if (from_len == 0) return 0; /* replacing "" would be a no-op loop */
    char *a = copy_bytes(from, from_len), *b = copy_bytes(to, to_len);
    tok_step *s = (a && b) ? new_step(p, err) : NULL;
    if (!s) {
        tlm_free(a);
        tlm_free(b);
        return tlm_seterr(err, TLM_ERR_NOMEM, "out of memory building the pre-tokenizer");
    }
    s->kind = TOK_STEP_REPLACE;
    s->str = a;
    s->str_len = from_len;
    s->with = b;
    s->with_len = to_len;
    return 0;
}

void tok_pretok_free(tok_pretok *p) {
    for (int i = 0; i < p->n_steps; i++) {
        pcre2_code_free(p->steps[i].re);
        tlm_free(p->steps[i].str);
        tlm_free(p->steps[i].with);
    }
    tlm_free(p->steps);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------ piece lists */

void tok_pieces_free(tok_pieces *p) {
    tlm_free(p->arena);
    tlm_free(p->off);
    tlm_free(p->len);
    memset(p, 0, sizeof *p);
}

static void pieces_clear(tok_pieces *p) {
    p->n = 0;
    p->arena_len = 0;
}

/* Reserves room for `extra` more bytes in the arena; 0 or -1. */
static int pieces_reserve(tok_pieces *p, size_t extra) {
    size_t need;
    if (tlm_add_overflow(p->arena_len, extra, &need)) return -1;
    if (need > p->arena_cap) {
        size_t cap = p->arena_cap ? p->arena_cap : 1024;
        while (cap < need) {
            if (tlm_mul_overflow(cap, 2, &cap)) return -1;
        }
        char *grown = tlm_realloc(p->arena, cap);
        if (!grown) return -1;
        p->arena = grown;
        p->arena_cap = cap;
    }
    return 0;
}

/* Opens a new empty piece at the end of the arena. */
static int pieces_open(tok_pieces *p) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        size_t *o = tlm_realloc(p->off, cap * sizeof *o);
        if (!o) return -1;
        p->off = o;
        size_t *l = tlm_realloc(p->len, cap * sizeof *l);
        if (!l) return -1;
        p->len = l;
        p->cap = cap;
    }
    p->off[p->n] = p->arena_len;
    p->len[p->n] = 0;
    p->n++;
    return 0;
}

/* Appends bytes to the last open piece. */
static int pieces_append(tok_pieces *p, const char *s, size_t n) {
    if (n == 0) return 0;
    if (pieces_reserve(p, n)) return -1;
    memcpy(p->arena + p->arena_len, s, n);
    p->arena_len += n;
    p->len[p->n - 1] += n;
    return 0;
}

static int pieces_add(tok_pieces *p, const char *s, size_t n) {
    if (n == 0) return 0;
    return pieces_open(p) || pieces_append(p, s, n) ? -1 : 0;
}

/* ------------------------------------------------------ running steps */

/* Finds the next match at or after `from` in s[0..n), valid UTF-8; returns
 * 1 with from <= *ms <= *me <= n, 0 when none, -1 on a matching error. */
static int next_match(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n,
                      size_t from, size_t *ms, size_t *me) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return -1;
    /* Clamped all the same: the offsets become memcpy bounds, and \K can
     * put a match's start after its end. */
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t a = ov[0], b = ov[1];
    if (a < from) a = from;
    if (a > n) a = n;
    if (b > n) b = n;
    if (b < a) b = a;
    *ms = a;
    *me = b;
    return 1;
}

/* Splits s[0..n), valid UTF-8, into out; 0 or -1 (out of memory, or the
 * regex failed). */
static int split_piece(const tok_step *st, pcre2_match_data *md, const char *s, size_t n,
                       tok_pieces *out) {
    size_t pos = 0;      /* end of the last consumed region */
    size_t search = 0;   /* where to look for the next match */
    bool open = false;   /* MERGED_* / CONTIGUOUS: a piece is being extended */
    bool open_is_match = false;
    while (search <= n) {
        size_t ms, me;
        int found = next_match(st->re, md, s, n, search, &ms, &me);
        if (found < 0) return -1;
        if (!found) break;
        if (me == ms) { /* empty match: step one character, it splits nothing */
            if (ms >= n) break;
            search = ms + tok_utf8_len(s + ms, n - ms);
            continue;
        }
        const char *gap = s + pos, *match = s + ms;
        size_t gap_len = ms - pos, match_len = me - ms;
        switch (st->behavior) {
        case TOK_SPLIT_ISOLATED:
            if (pieces_add(out, gap, gap_len) || pieces_add(out, match, match_len)) return -1;
            break;
        case TOK_SPLIT_REMOVED:
            if (pieces_add(out, gap, gap_len)) return -1;
            break;
        case TOK_SPLIT_MERGED_PREV:
            if (!open && pieces_open(out)) return -1;
            if (pieces_append(out, gap, gap_len) || pieces_append(out, match, match_len)) return -1;
            open = false;
            break;
        case TOK_SPLIT_MERGED_NEXT:
            if (gap_len > 0) {
                if (!open && pieces_open(out)) return -1;
                if (pieces_append(out, gap, gap_len)) return -1;
            }
            if (pieces_open(out) || pieces_append(out, match, match_len)) return -1;
            open = true;
            break;
        case TOK_SPLIT_CONTIGUOUS:
            if (gap_len > 0) {
                if (pieces_add(out, gap, gap_len)) return -1;
                open = false;
            }
            if (!(open && open_is_match) && pieces_open(out)) return -1;
            if (pieces_append(out, match, match_len)) return -1;
            open = true;
            open_is_match = true;
            break;
        }
        pos = search = me;
    }
    /* the tail after the last match */
    if (pos < n) {
        bool extend = open && (st->behavior == TOK_SPLIT_MERGED_NEXT);
        if (!extend && pieces_open(out)) return -1;
        if (pieces_append(out, s + pos, n - pos)) return -1;
    }
    return 0;
}

static int replace_piece(const tok_step *st, const char *s, size_t n, tok_pieces *out) {
    if (pieces_open(out)) return -1;
    size_t i = 0;
    while (i < n) {
        const char *hit = n - i >= st->str_len ? memmem(s + i, n - i, st->str, st->str_len) : NULL;
        if (!hit) break;
        size_t at = (size_t)(hit - s);
        if (pieces_append(out, s + i, at - i) || pieces_append(out, st->with, st->with_len)) return -1;
        i = at + st->str_len;
    }
    if (pieces_append(out, s + i, n - i)) return -1;
    if (out->len[out->n - 1] == 0) out->n--; /* replaced to nothing */
    return 0;
}

int tok_pretok_run(const tok_pretok *p, const char *text, size_t len, bool at_start,
                   tok_pieces *out, tok_pieces *tmp, tlm_error *err) {
    pieces_clear(out);
    if (pieces_add(out, text, len)) goto oom;
    pcre2_match_data *md = NULL;
    for (int si = 0; si < p->n_steps; si++) {
        const tok_step *st = &p->steps[si];
        pieces_clear(tmp);
        if (st->kind == TOK_STEP_SPLIT && !md) {
            md = pcre2_match_data_create(1, NULL);
            if (!md) goto oom;
        }
        for (size_t i = 0; i < out->n; i++) {
            const char *s = out->arena + out->off[i];
            size_t n = out->len[i];
            int rc = 0;
            switch (st->kind) {
            case TOK_STEP_SPLIT:
                if (tok_utf8_valid_prefix(s, n) != n) { /* a step inserted bytes that are not */
                    pcre2_match_data_free(md);
                    tlm_seterr(err, TLM_ERR_FORMAT,
                               "pre-tokenizer: a piece of %zu bytes is not valid UTF-8 (a "
                               "normalizer or pre-tokenizer string of the tokenizer is not)", n);
                    return -1;
                }
                rc = split_piece(st, md, s, n, tmp);
                if (rc) {
                    pcre2_match_data_free(md);
                    tlm_seterr(err, TLM_ERR_ARG,
                               "pre-tokenizer regex failed on a piece of %zu bytes (out of "
                               "memory or match limit)", n);
                    return -1;
                }
                break;
            case TOK_STEP_PREPEND: {
                bool skip = (st->first_segment_only && !(at_start && i == 0)) ||
                            (st->unless_starts_with && n >= st->str_len &&
                             memcmp(s, st->str, st->str_len) == 0);
                if (n > 0 && !skip) rc = pieces_open(tmp) || pieces_append(tmp, st->str, st->str_len);
                else rc = pieces_open(tmp);
                if (!rc) rc = pieces_append(tmp, s, n);
                break;
            }
            case TOK_STEP_REPLACE:
                rc = replace_piece(st, s, n, tmp);
                break;
            }
            if (rc) {
                pcre2_match_data_free(md);
                goto oom;
            }
        }
        tok_pieces swap = *out;
        *out = *tmp;
        *tmp = swap;
    }
    pcre2_match_data_free(md);
    return 0;
oom:
    tlm_seterr(err, TLM_ERR_NOMEM, "out of memory while pre-tokenizing");
    return -1;
}
