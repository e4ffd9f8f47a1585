/*
 * tokenizer.c — the tokenizer's public entry points (tokenizer.h): building
 * the immutable tables from what a loader collected, encoding (UTF-8 repair,
 * added-token matching, pre-tokenization, BPE) and token lookups.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "tokenizer_internal.h"

/* ------------------------------------------------------ string table */

int tok_strtab_init(tok_strtab *s, int32_t n) {
    memset(s, 0, sizeof *s);
    s->off = tlm_calloc((size_t)(n > 0 ? n : 1), sizeof *s->off);
    s->len = tlm_calloc((size_t)(n > 0 ? n : 1), sizeof *s->len);
    s->arena_cap = 4096;
    s->arena = tlm_malloc(s->arena_cap);
    if (!s->off || !s->len || !s->arena) return -1;
    s->arena[0] = '\0'; /* unset strings are "" at offset 0 */
    s->arena_len = 1;
    s->n = n;
    return 0;
}

int tok_strtab_set(tok_strtab *s, int32_t i, const char *str, size_t len) {
    size_t need;
    if (i < 0 || i >= s->n || len > TOK_MAX_TOKEN_LEN) return -1;
    if (tlm_add_overflow(s->arena_len, len + 1, &need) || need > UINT32_MAX) return -1;
    if (need > s->arena_cap) {
        size_t cap = s->arena_cap;
        while (cap < need) cap *= 2;
        char *grown = tlm_realloc(s->arena, cap);
        if (!grown) return -1;
        s->arena = grown;
        s->arena_cap = cap;
    }
    if (len) memcpy(s->arena + s->arena_len, str, len);
    s->arena[s->arena_len + len] = '\0';
    s->off[i] = (uint32_t)s->arena_len;
    s->len[i] = (uint32_t)len;
    s->arena_len = need;
    return 0;
}

void tok_strtab_free(tok_strtab *s) {
    tlm_free(s->arena);
    tlm_free(s->off);
    tlm_free(s->len);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------ builder */

int tok_builder_init(tok_builder *b, tlm_tok_kind kind, int32_t n_vocab, const char *source,
                     tlm_error *err) {
    memset(b, 0, sizeof *b);
    if (n_vocab <= 0 || n_vocab > TOK_MAX_VOCAB)
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: vocabulary of %ld tokens is out of range (1..%d)",
                          source, (long)n_vocab, TOK_MAX_VOCAB);
    tlm_tokenizer *t = tlm_calloc(1, sizeof *t);
    b->t = t;
    if (!t) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the tokenizer", source);
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->bos = t->eos = t->unk = -1;
    for (int i = 0; i < 256; i++) t->byte_token[i] = -1;
    t->source = tlm_strdup(source);
    t->attr = tlm_malloc((size_t)n_vocab);
    if (!t->source || !t->attr || tok_strtab_init(&t->text, n_vocab)) {
        tok_builder_abort(b);
        return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the vocabulary", source);
    }
    memset(t->attr, TOK_ATTR_NORMAL, (size_t)n_vocab);
    return 0;
}

int tok_builder_add_merge(tok_builder *b, const char *left, size_t left_len, const char *right,
                          size_t right_len, tlm_error *err) {
    if (b->n_merges == b->cap_merges) {
        size_t cap = b->cap_merges ? b->cap_merges * 2 : 1024;
        char **l = tlm_realloc(b->merge_left, cap * sizeof *l);
        if (l) b->merge_left = l;
        char **r = tlm_realloc(b->merge_right, cap * sizeof *r);
        if (r) b->merge_right = r;
        size_t *ll = tlm_realloc(b->merge_left_len, cap * sizeof *ll);
        if (ll) b->merge_left_len = ll;
        size_t *rl = tlm_realloc(b->merge_right_len, cap * sizeof *rl);
        if (rl) b->merge_right_len = rl;
        if (!l || !r || !ll || !rl)
            return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the merges", b->t->source);
        b->cap_merges = cap;
    }
    /* exactly len bytes, NUL included: the lengths kept below are what the
     * merge map reads */
    char *lc = tlm_malloc(left_len + 1), *rc = tlm_malloc(right_len + 1);
    if (lc) {
        memcpy(lc, left, left_len);
        lc[left_len] = '\0';
    }
    if (rc) {
        memcpy(rc, right, right_len);
        rc[right_len] = '\0';
    }
    if (!lc || !rc) {
        tlm_free(lc);
        tlm_free(rc);
        return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the merges", b->t->source);
    }
    b->merge_left[b->n_merges] = lc;
    b->merge_right[b->n_merges] = rc;
    b->merge_left_len[b->n_merges] = left_len;
    b->merge_right_len[b->n_merges] = right_len;
    b->n_merges++;
    return 0;
}

static void free_merges(tok_builder *b) {
    for (size_t i = 0; i < b->n_merges; i++) {
        tlm_free(b->merge_left[i]);
        tlm_free(b->merge_right[i]);
    }
    tlm_free(b->merge_left);
    tlm_free(b->merge_right);
    tlm_free(b->merge_left_len);
    tlm_free(b->merge_right_len);
    b->merge_left = b->merge_right = NULL;
    b->merge_left_len = b->merge_right_len = NULL;
    b->n_merges = b->cap_merges = 0;
}

void tok_builder_abort(tok_builder *b) {
    free_merges(b);
    tokenizer_free(b->t);
    b->t = NULL;
}

static size_t pow2_at_least(size_t n) {
    size_t cap = 16;
    while (cap < n) cap *= 2;
    return cap;
}

static int build_vocab_map(tok_builder *b) {
    tlm_tokenizer *t = b->t;
    size_t cap = pow2_at_least((size_t)t->n_vocab * 2);
    t->vocab.slots = tlm_malloc(cap * sizeof *t->vocab.slots);
    if (!t->vocab.slots) return -1;
    memset(t->vocab.slots, 0xFF, cap * sizeof *t->vocab.slots); /* all -1 */
    t->vocab.mask = (uint32_t)(cap - 1);
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = t->text.arena + t->text.off[id];
        size_t n = t->text.len[id];
        if (n == 0) continue; /* an id with no token */
        uint32_t i = tok_hash_bytes(s, n) & t->vocab.mask;
        for (;;) {
            int32_t other = t->vocab.slots[i];
            if (other < 0) {
                t->vocab.slots[i] = id;
                break;
            }
            if (t->text.len[other] == n && memcmp(t->text.arena + t->text.off[other], s, n) == 0) {
                if (b->later_duplicates_win) t->vocab.slots[i] = id;
                break;
            }
            i = (i + 1) & t->vocab.mask;
        }
    }
    return 0;
}

static int build_merge_map(tok_builder *b, tlm_error *err) {
    tlm_tokenizer *t = b->t;
    if (b->n_merges == 0) return 0;
    if (b->n_merges > (size_t)INT32_MAX / 4)
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: %zu merges is too many", t->source, b->n_merges);
    size_t cap = pow2_at_least(b->n_merges * 2);
    t->merges.slots = tlm_malloc(cap * sizeof *t->merges.slots);
    if (!t->merges.slots) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for merges", t->source);
    for (size_t i = 0; i < cap; i++) t->merges.slots[i].key = UINT64_MAX;
    t->merges.mask = cap - 1;
    char *joined = NULL;
    size_t joined_cap = 0;
    for (size_t r = 0; r < b->n_merges; r++) {
        size_t ln = b->merge_left_len[r], rn = b->merge_right_len[r];
        int32_t lid = tok_vocab_find(t, b->merge_left[r], ln);
        int32_t rid = tok_vocab_find(t, b->merge_right[r], rn);
        if (ln + rn > joined_cap) {
            joined_cap = (ln + rn) * 2;
            char *grown = tlm_realloc(joined, joined_cap);
            if (!grown) {
                tlm_free(joined);
                return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for merges", t->source);
            }
            joined = grown;
        }
        memcpy(joined, b->merge_left[r], ln);
        memcpy(joined + ln, b->merge_right[r], rn);
        int32_t mid = tok_vocab_find(t, joined, ln + rn);
        if (lid < 0 || rid < 0 || mid < 0) {
            const char *which = lid < 0 ? b->merge_left[r] : rid < 0 ? b->merge_right[r] : joined;
            int which_len = (int)(lid < 0 ? ln : rid < 0 ? rn : ln + rn);
            if (which_len > 60) which_len = 60;
            tlm_seterr(err, TLM_ERR_FORMAT,
                       "%s: merge %zu refers to \"%.*s\", which is not in the vocabulary", t->source,
                       r, which_len, which);
            tlm_free(joined);
            return TLM_ERR_FORMAT;
        }
        tok_merge_insert(&t->merges, lid, rid, (int32_t)r, mid);
    }
    tlm_free(joined);
    return 0;
}

/* <0xXX> tokens, or for byte-level vocabularies the token of each mapped byte. */
static void find_byte_tokens(tlm_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char name[8];
        size_t n;
        if (t->kind == TLM_TOK_SPM_BPE) {
            n = (size_t)snprintf(name, sizeof name, "<0x%02X>", b);
        } else {
            n = tok_utf8_put(tok_byte_to_cp((uint8_t)b), name);
        }
        int32_t id = tok_vocab_find(t, name, n);
        t->byte_token[b] = id;
        if (id >= 0 && t->kind == TLM_TOK_SPM_BPE && (t->attr[id] & TOK_ATTR_NORMAL))
            t->attr[id] = TOK_ATTR_BYTE;
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* What each token decodes to: byte-level text un-mapped, SPM U+2581 -> ' ',
 * <0xXX> -> the byte; specials and user-defined tokens keep their text. */
static int build_bytes_table(tlm_tokenizer *t) {
    if (tok_strtab_init(&t->bytes, t->n_vocab)) return -1;
    char *buf = NULL;
    size_t buf_cap = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = t->text.arena + t->text.off[id];
        size_t n = t->text.len[id], out = 0;
        if (n > buf_cap) {
            buf_cap = n * 2 + 16;
            char *grown = tlm_realloc(buf, buf_cap);
            if (!grown) goto fail;
            buf = grown;
        }
        uint8_t a = t->attr[id];
        if (a & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN | TOK_ATTR_USER)) {
            memcpy(buf, s, n);
            out = n;
        } else if (a & TOK_ATTR_BYTE) {
            int hi = n == 6 ? hexval(s[3]) : -1, lo = n == 6 ? hexval(s[4]) : -1;
            if (hi >= 0 && lo >= 0) buf[out++] = (char)(hi * 16 + lo);
            else { memcpy(buf, s, n); out = n; }
        } else if (t->kind == TLM_TOK_BYTE_BPE) {
            for (size_t p = 0; p < n;) {
                uint32_t cp;
                size_t cl = tok_utf8_next(s + p, n - p, &cp);
                int byte = tok_cp_to_byte(cp);
                if (byte >= 0 && cl == tok_utf8_len(s + p, n - p)) buf[out++] = (char)byte;
                else { memcpy(buf + out, s + p, cl); out += cl; }
                p += cl;
            }
        } else {
            for (size_t p = 0; p < n;) {
                if (n - p >= 3 && memcmp(s + p, "\xE2\x96\x81", 3) == 0) {
                    buf[out++] = ' ';
                    p += 3;
                } else {
                    buf[out++] = s[p++];
                }
            }
        }
        if (tok_strtab_set(&t->bytes, id, buf, out)) goto fail;
    }
    tlm_free(buf);
    return 0;
fail:
    tlm_free(buf);
    return -1;
}

static const char *const EOG_TEXTS[] = {
    "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<end_of_turn>",
    "<|end|>",
};

static void mark_eog(tlm_tokenizer *t) {
    if (t->eos >= 0) t->attr[t->eos] |= TOK_ATTR_EOG;
    for (size_t i = 0; i < sizeof EOG_TEXTS / sizeof EOG_TEXTS[0]; i++) {
        int32_t id = tok_vocab_find(t, EOG_TEXTS[i], strlen(EOG_TEXTS[i]));
        if (id >= 0) t->attr[id] |= TOK_ATTR_EOG;
    }
}

typedef struct added_key {
    unsigned char first;
    uint32_t len;
    int32_t id;
} added_key;

static int cmp_added(const void *pa, const void *pb) {
    const added_key *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Whether token id is looked for in the text to encode. The text is valid
 * UTF-8 (repaired first) and the pre-tokenizer's regexes rely on every
 * piece being so, so a token whose own text is not valid UTF-8 could only
 * match by cutting a character in half: it stays in the vocabulary (it may
 * be generated and decoded) but is never matched. tokenizer.json cannot
 * hold such a token (the loader rejects it); a GGUF vocabulary can. */
static bool is_matched_added(const tlm_tokenizer *t, int32_t id) {
    size_t n = t->text.len[id];
    return (t->attr[id] & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN | TOK_ATTR_USER)) && n > 0 &&
           tok_utf8_valid_prefix(t->text.arena + t->text.off[id], n) == n;
}

/* Groups the matchable added tokens by first byte, longest first. */
static int build_added(tlm_tokenizer *t) {
    size_t n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (is_matched_added(t, id)) n++;
    added_key *keys = tlm_malloc((n ? n : 1) * sizeof *keys);
    t->added = tlm_malloc((n ? n : 1) * sizeof *t->added);
    if (!keys || !t->added) {
        tlm_free(keys);
        return -1;
    }
    n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (is_matched_added(t, id))
            keys[n++] = (added_key){(unsigned char)t->text.arena[t->text.off[id]], t->text.len[id], id};
    qsort(keys, n, sizeof *keys, cmp_added);
    memset(t->added_start, 0, sizeof t->added_start);
    for (size_t i = 0; i < n; i++) {
        t->added[i] = keys[i].id;
        t->added_start[keys[i].first + 1]++;
    }
    for (int b = 0; b < 256; b++) t->added_start[b + 1] += t->added_start[b];
    tlm_free(keys);
    return 0;
}

tlm_tokenizer *tok_builder_finish(tok_builder *b, tlm_error *err) {
    tlm_tokenizer *t = b->t;
    if (build_vocab_map(b)) {
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the vocabulary index", t->source);
        goto fail;
    }
    if (build_merge_map(b, err)) goto fail;
    free_merges(b);
    find_byte_tokens(t);
    if (t->bos >= t->n_vocab || t->eos >= t->n_vocab || t->unk >= t->n_vocab) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: special token id (bos %ld, eos %ld, unk %ld) is not below the vocabulary size %ld",
                   t->source, (long)t->bos, (long)t->eos, (long)t->unk, (long)t->n_vocab);
        goto fail;
    }
    mark_eog(t);
    if (build_bytes_table(t) || build_added(t)) {
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the token tables", t->source);
        goto fail;
    }
    b->t = NULL;
    return t;
fail:
    tok_builder_abort(b);
    return NULL;
}

void tokenizer_free(tlm_tokenizer *t) {
    if (!t) return;
    tok_strtab_free(&t->text);
    tok_strtab_free(&t->bytes);
    tlm_free(t->attr);
    tlm_free(t->score);
    tlm_free(t->vocab.slots);
    tlm_free(t->merges.slots);
    tok_pretok_free(&t->pretok);
    tlm_free(t->added);
    tlm_free(t->chat_template);
    tlm_free(t->source);
    tlm_free(t);
}

/* ------------------------------------------------------ accessors */

tlm_tok_kind tokenizer_kind(const tlm_tokenizer *t) { return t->kind; }
int32_t tokenizer_n_vocab(const tlm_tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const tlm_tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tlm_tokenizer *t) { return t->eos; }
bool tokenizer_adds_bos(const tlm_tokenizer *t) { return t->add_bos && t->bos >= 0; }
const char *tokenizer_chat_template(const tlm_tokenizer *t) { return t->chat_template; }

bool tokenizer_is_eog(const tlm_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->attr[id] & TOK_ATTR_EOG);
}

bool tokenizer_is_special(const tlm_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->attr[id] & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN));
}

const char *tokenizer_token_bytes(const tlm_tokenizer *t, int32_t id, bool render_special,
                                  size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab ||
        (!render_special && (t->attr[id] & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN)))) {
        if (len) *len = 0;
        return "";
    }
    if (len) *len = t->bytes.len[id];
    return t->bytes.arena + t->bytes.off[id];
}

const char *tokenizer_token_text(const tlm_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return "";
    }
    if (len) *len = t->text.len[id];
    return t->text.arena + t->text.off[id];
}

/* ------------------------------------------------------ UTF-8 repair */

/* Length of the well-formed prefix of a sequence starting at s (Unicode's
 * "maximal subpart" rule, as Python's decode(errors='replace')): returns the
 * full length when valid (>0), or minus the number of bytes to replace by
 * one U+FFFD. */
static long utf8_check(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) need = 3;
    else if (c == 0xED) { need = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) need = 3;
    else if (c == 0xF0) { need = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else if (c == 0xF4) { need = 4; hi = 0x8F; }
    else return -1;
    for (size_t i = 1; i < need; i++) {
        if (i >= n) return -(long)i;
        unsigned char lo_i = i == 1 ? lo : 0x80, hi_i = i == 1 ? hi : 0xBF;
        if (s[i] < lo_i || s[i] > hi_i) return -(long)i;
    }
    return (long)need;
}

size_t tok_utf8_valid_prefix(const char *s, size_t n) {
    size_t p = 0;
    while (p < n) {
        long r = utf8_check((const unsigned char *)s + p, n - p);
        if (r < 0) break;
        p += (size_t)r;
    }
    return p;
}

/* Returns a repaired copy in *fixed (NULL when the text is valid). */
static int utf8_repair(const char *text, size_t len, char **fixed, size_t *fixed_len) {
    const unsigned char *s = (const unsigned char *)text;
    *fixed = NULL;
    size_t p = tok_utf8_valid_prefix(text, len);
    if (p == len) return 0;
    size_t cap;
    if (tlm_mul_overflow(len, 3, &cap)) return -1;
    char *out = tlm_malloc(cap + 1);
    if (!out) return -1;
    memcpy(out, text, p);
    size_t o = p;
    while (p < len) {
        long r = utf8_check(s + p, len - p);
        if (r > 0) {
            memcpy(out + o, s + p, (size_t)r);
            o += (size_t)r;
            p += (size_t)r;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            p += (size_t)-r;
        }
    }
    *fixed = out;
    *fixed_len = o;
    return 0;
}

/* ------------------------------------------------------ encoding */

typedef struct encode_state {
    const tlm_tokenizer *t;
    tok_scratch *scratch;
    tok_pieces pieces, tmp;
    char *mapped; /* byte-level: a piece with its bytes mapped to code points */
    size_t mapped_cap;
    tok_sink sink;
} encode_state;

static int encode_segment(encode_state *st, const char *s, size_t n, bool at_start,
                          tlm_error *err) {
    const tlm_tokenizer *t = st->t;
    if (n == 0) return 0;
    if (tok_pretok_run(&t->pretok, s, n, at_start, &st->pieces, &st->tmp, err)) return -1;
    for (size_t i = 0; i < st->pieces.n; i++) {
        const char *p = st->pieces.arena + st->pieces.off[i];
        size_t pn = st->pieces.len[i];
        if (t->kind == TLM_TOK_BYTE_BPE) {
            if (pn * 2 > st->mapped_cap) {
                size_t cap = pn * 2 + 64;
                char *grown = tlm_realloc(st->mapped, cap);
                if (!grown) return tlm_seterr(err, TLM_ERR_NOMEM, "out of memory while tokenizing");
                st->mapped = grown;
                st->mapped_cap = cap;
            }
            size_t m = 0;
            for (size_t j = 0; j < pn; j++) m += tok_utf8_put(tok_byte_to_cp((uint8_t)p[j]), st->mapped + m);
            if (tok_bpe_piece(t, st->scratch, st->mapped, m, &st->sink, err)) return -1;
        } else {
            if (tok_bpe_piece(t, st->scratch, p, pn, &st->sink, err)) return -1;
        }
    }
    return 0;
}

/* Unicode White_Space: the whitespace an lstrip/rstrip added token absorbs. */
static bool is_white_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

/* Start of the whitespace run that ends at `end` (not before `from`). */
static size_t white_space_before(const char *s, size_t from, size_t end) {
    while (end > from) {
        size_t start = end - 1;
        while (start > from && ((unsigned char)s[start] & 0xC0) == 0x80) start--;
        uint32_t cp;
        tok_utf8_next(s + start, end - start, &cp);
        if (!is_white_space(cp)) break;
        end = start;
    }
    return end;
}

/* End of the whitespace run that starts at `p`. */
static size_t white_space_after(const char *s, size_t p, size_t n) {
    while (p < n) {
        uint32_t cp;
        size_t cl = tok_utf8_next(s + p, n - p, &cp);
        if (!is_white_space(cp)) break;
        p += cl;
    }
    return p;
}

/* The longest added token at s (a character boundary) that this call may
 * match, or -1. */
static int32_t match_added(const tlm_tokenizer *t, const char *s, size_t n, bool parse_special) {
    unsigned char first = (unsigned char)s[0];
    for (uint32_t i = t->added_start[first]; i < t->added_start[first + 1]; i++) {
        int32_t id = t->added[i];
        if (!parse_special && !(t->attr[id] & TOK_ATTR_USER)) continue;
        size_t len = t->text.len[id];
        if (len <= n && memcmp(s, t->text.arena + t->text.off[id], len) == 0) return id;
    }
    return -1;
}

int tokenizer_utf8_repair(const char *text, size_t len, char **fixed, size_t *fixed_len) {
    *fixed = NULL;
    return len > 0 ? utf8_repair(text, len, fixed, fixed_len) : 0;
}

/* Whether special tokens may be matched at text offset p, for one of
 * match_len bytes: not inside, nor reaching into, a plain range. *r is the
 * first range that does not end at or before p (advanced here; p only grows). */
static bool special_allowed(const size_t *plain, size_t n_plain, size_t *r, size_t p, size_t match_len) {
    while (*r < n_plain && plain[2 * *r + 1] <= p) (*r)++;
    return *r >= n_plain || p + match_len <= plain[2 * *r];
}

static int32_t encode_impl(const tlm_tokenizer *t, const char *text, size_t len, bool add_bos,
                           bool parse_special, const size_t *plain, size_t n_plain, int32_t *out,
                           int32_t cap, tlm_error *err) {
    if (!t || (!text && len > 0) || cap < 0 || (!out && cap > 0)) {
        tlm_seterr(err, TLM_ERR_ARG, "tokenizer_encode: invalid arguments");
        return -1;
    }
    if (len == 0) text = ""; /* text may be NULL: no arithmetic on it below */
    char *fixed = NULL;
    size_t fixed_len = 0;
    if (len > 0 && utf8_repair(text, len, &fixed, &fixed_len)) {
        tlm_seterr(err, TLM_ERR_NOMEM, "out of memory repairing %zu bytes of input text", len);
        return -1;
    }
    if (fixed && plain) {
        tlm_free(fixed);
        tlm_seterr(err, TLM_ERR_ARG, "tokenizer_encode_spans: the text is not valid UTF-8");
        return -1;
    }
    if (fixed) {
        text = fixed;
        len = fixed_len;
    }
    encode_state st = {.t = t, .sink = {.out = out, .cap = cap}};
    st.scratch = tok_scratch_new();
    int rc = 0;
    if (!st.scratch) {
        rc = tlm_seterr(err, TLM_ERR_NOMEM, "out of memory while tokenizing");
        goto done;
    }
    if (add_bos && t->bos >= 0) tok_sink_push(&st.sink, t->bos);
    size_t seg = 0, p = 0, r = 0;
    while (p < len) {
        int32_t id = match_added(t, text + p, len - p, parse_special);
        if (id >= 0 && plain && !(t->attr[id] & TOK_ATTR_USER) &&
            !special_allowed(plain, n_plain, &r, p, t->text.len[id]))
            id = match_added(t, text + p, len - p, false); /* plain text: user-defined tokens only */
        if (id < 0) { /* next character: an added token never starts inside one */
            p += tok_utf8_len(text + p, len - p);
            continue;
        }
        size_t seg_end = (t->attr[id] & TOK_ATTR_LSTRIP) ? white_space_before(text, seg, p) : p;
        if ((rc = encode_segment(&st, text + seg, seg_end - seg, seg == 0, err))) goto done;
        tok_sink_push(&st.sink, id);
        p += t->text.len[id];
        if (t->attr[id] & TOK_ATTR_RSTRIP) p = white_space_after(text, p, len);
        seg = p;
    }
    rc = encode_segment(&st, text + seg, len - seg, seg == 0, err);
done:
    tok_scratch_free(st.scratch);
    tok_pieces_free(&st.pieces);
    tok_pieces_free(&st.tmp);
    tlm_free(st.mapped);
    tlm_free(fixed);
    if (rc) return -1;
    if (st.sink.n > INT32_MAX) {
        tlm_seterr(err, TLM_ERR_ARG, "input of %zu bytes needs more than %d tokens", len, INT32_MAX);
        return -1;
    }
    return (int32_t)st.sink.n;
}

int32_t tokenizer_encode(const tlm_tokenizer *t, const char *text, size_t len, bool add_bos,
                         bool parse_special, int32_t *out, int32_t cap, tlm_error *err) {
    return encode_impl(t, text, len, add_bos, parse_special, NULL, 0, out, cap, err);
}

int32_t tokenizer_encode_spans(const tlm_tokenizer *t, const char *text, size_t len, bool add_bos,
                               const size_t *plain, size_t n_plain, int32_t *out, int32_t cap,
                               tlm_error *err) {
    for (size_t i = 0; i < n_plain; i++)
        if (plain[2 * i] > plain[2 * i + 1] || plain[2 * i + 1] > len ||
            (i > 0 && plain[2 * i] < plain[2 * i - 1])) {
            tlm_seterr(err, TLM_ERR_ARG, "tokenizer_encode_spans: range %zu is out of order", i);
            return -1;
        }
    static const size_t none[2] = {0, 0}; /* plain != NULL: the text must be valid UTF-8 */
    return encode_impl(t, text, len, add_bos, true, n_plain ? plain : none, n_plain, out, cap, err);
}

/* ------------------------------------------------ streaming UTF-8 repair */

/* Length of the UTF-8 sequence a lead byte starts; 0 for a byte that cannot
 * start one (a continuation byte, the overlong leads C0/C1, F5..FF). */
static int utf8_seq_len(unsigned char c) {
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return 2;
    if ((c & 0xf0) == 0xe0) return 3;
    if (c >= 0xf0 && c <= 0xf4) return 4;
    return 0;
}

/* Whether c can follow pending[0..n) in a well-formed sequence: the second
 * byte's range excludes overlong forms, surrogates and code points past
 * U+10FFFF (Unicode's table 3-7). */
static bool utf8_continues(const unsigned char *pending, int n, unsigned char c) {
    if ((c & 0xc0) != 0x80) return false;
    if (n != 1) return true;
    switch (pending[0]) {
    case 0xe0: return c >= 0xa0;
    case 0xed: return c <= 0x9f;
    case 0xf0: return c >= 0x90;
    case 0xf4: return c <= 0x8f;
    default: return true;
    }
}

static size_t put_bytes(char *out, size_t cap, size_t at, const void *src, size_t n) {
    size_t room = at < cap ? cap - at : 0;
    if (n > room) n = room;
    memcpy(out + at, src, n);
    return n;
}

#define UTF8_REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

size_t tokenizer_utf8_push(unsigned char *pending, int *n_pending, const char *in, size_t len,
                           char *out, size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (*n_pending > 0) {
            if (utf8_continues(pending, *n_pending, c)) {
                pending[(*n_pending)++] = c;
                if (*n_pending == utf8_seq_len(pending[0])) {
                    n += put_bytes(out, cap, n, pending, (size_t)*n_pending);
                    *n_pending = 0;
                }
                continue;
            }
            /* a sequence that cannot complete: replace it; c starts afresh */
            n += put_bytes(out, cap, n, UTF8_REPLACEMENT, 3);
            *n_pending = 0;
        }
        int need = utf8_seq_len(c);
        if (need == 1)
            n += put_bytes(out, cap, n, &c, 1);
        else if (need == 0)
            n += put_bytes(out, cap, n, UTF8_REPLACEMENT, 3);
        else
            pending[(*n_pending)++] = c;
    }
    return n;
}

size_t tokenizer_utf8_flush(int *n_pending, char *out, size_t cap) {
    size_t n = *n_pending > 0 ? put_bytes(out, cap, 0, UTF8_REPLACEMENT, 3) : 0;
    *n_pending = 0;
    return n;
}
