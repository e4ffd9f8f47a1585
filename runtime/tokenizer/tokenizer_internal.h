/*
 * tokenizer_internal.h — the tokenizer's data, shared by its loaders
 * (tokenizer_gguf.c, tokenizer_hf.c), the pre-tokenizer
 * (tokenizer_pretok.c), the merge engine (tokenizer_bpe.c) and the public
 * entry points (tokenizer.c).
 *
 * A loader fills a tok_builder (strings, attributes, scores, merges as text
 * pairs, special ids, pre-tokenizer steps); tok_builder_finish() turns it into
 * the immutable tlm_tokenizer with its hash tables and decoded-bytes table.
 * After that the tokenizer is read-only: encode allocates its scratch per
 * call, so one tokenizer may serve many threads.
 */
#ifndef TLM_TOKENIZER_INTERNAL_H
#define TLM_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Vocabularies past this are treated as a corrupt file. */
#define TOK_MAX_VOCAB (1 << 22)
/* A single token's text past this is treated as a corrupt file. */
#define TOK_MAX_TOKEN_LEN (1 << 16)

/* ------------------------------------------------------ token attributes */

enum {
    TOK_ATTR_NORMAL = 1u << 0,
    TOK_ATTR_UNKNOWN = 1u << 1,
    TOK_ATTR_CONTROL = 1u << 2, /* special: matched only with parse_special */
    TOK_ATTR_USER = 1u << 3,    /* added, not special: always matched */
    TOK_ATTR_BYTE = 1u << 4,    /* <0xXX> fallback token */
    TOK_ATTR_EOG = 1u << 5,     /* ends generation */
    TOK_ATTR_LSTRIP = 1u << 6,  /* added token swallows the whitespace before it */
    TOK_ATTR_RSTRIP = 1u << 7,  /* ... and after it */
};

/* ------------------------------------------------------ string table */

/* n strings packed in one arena; string i is arena[off[i] .. off[i]+len[i]),
 * NUL-terminated in the arena so that callers may print it. */
typedef struct tok_strtab {
    char *arena;
    size_t arena_len, arena_cap;
    uint32_t *off; /* (n) */
    uint32_t *len; /* (n) */
    int32_t n;
} tok_strtab;

int tok_strtab_init(tok_strtab *s, int32_t n);
/* Sets string i (each index once); returns 0, or -1 when out of memory. */
int tok_strtab_set(tok_strtab *s, int32_t i, const char *str, size_t len);
void tok_strtab_free(tok_strtab *s);

/* ------------------------------------------------------ hash tables */

/* Open addressing, linear probing, capacity a power of two >= 2n. */
typedef struct tok_vocab_map { /* token text -> id */
    int32_t *slots;            /* (cap) id, or -1 when empty */
    uint32_t mask;
} tok_vocab_map;

typedef struct tok_merge_slot {
    uint64_t key;      /* left id << 32 | right id; UINT64_MAX when empty */
    int32_t rank;      /* lower merges first */
    int32_t merged_id; /* the token the pair becomes */
} tok_merge_slot;

typedef struct tok_merge_map { /* (left id, right id) -> rank, merged id */
    tok_merge_slot *slots;
    uint64_t mask;
} tok_merge_map;

uint32_t tok_hash_bytes(const char *s, size_t n);
int32_t tok_vocab_find(const tlm_tokenizer *t, const char *s, size_t n); /* -1 if absent */
const tok_merge_slot *tok_merge_find(const tlm_tokenizer *t, int32_t left, int32_t right);
/* Inserts into a table sized by the caller; a pair already present keeps its
 * first (lower) rank. */
void tok_merge_insert(tok_merge_map *m, int32_t left, int32_t right, int32_t rank,
                      int32_t merged_id);

/* ------------------------------------------------------ pre-tokenizer */

typedef enum tok_step_kind {
    TOK_STEP_SPLIT,   /* regex or literal split with a delimiter behaviour */
    TOK_STEP_PREPEND, /* prepend a string to each non-empty piece */
    TOK_STEP_REPLACE, /* replace every occurrence of a literal */
} tok_step_kind;

typedef enum tok_split_behavior {
    TOK_SPLIT_ISOLATED,       /* matches and gaps both become pieces */
    TOK_SPLIT_REMOVED,        /* matches are dropped */
    TOK_SPLIT_MERGED_PREV,    /* a match joins the piece before it */
    TOK_SPLIT_MERGED_NEXT,    /* a match joins the piece after it */
    TOK_SPLIT_CONTIGUOUS,     /* adjacent matches join, gaps isolated */
} tok_split_behavior;

typedef struct tok_step {
    tok_step_kind kind;
    pcre2_code *re;               /* SPLIT */
    tok_split_behavior behavior;  /* SPLIT */
    char *str;                    /* PREPEND: the prefix; REPLACE: the pattern */
    size_t str_len;
    char *with;                   /* REPLACE: the replacement */
    size_t with_len;
    bool unless_starts_with;      /* PREPEND: skip pieces already starting with str */
    bool first_segment_only;      /* PREPEND: only the segment at offset 0 of the input */
} tok_step;

typedef struct tok_pretok {
    tok_step *steps;
    int n_steps, cap_steps;
} tok_pretok;

/* The named regexes that GGUF's tokenizer.ggml.pre selects. */
extern const char TOK_RE_GPT2[];
extern const char TOK_RE_LLAMA3[];
extern const char TOK_RE_QWEN2[];
extern const char TOK_RE_DIGIT[];

/* Appends a step; pattern is a regex unless literal. 0 or a tlm_status with
 * err naming `source` (the file) when the pattern does not compile. */
int tok_pretok_add_split(tok_pretok *p, const char *pattern, size_t len, bool literal,
                         tok_split_behavior behavior, const char *source, tlm_error *err);
int tok_pretok_add_prepend(tok_pretok *p, const char *str, size_t len, bool unless_starts_with,
                           bool first_segment_only, tlm_error *err);
int tok_pretok_add_replace(tok_pretok *p, const char *from, size_t from_len, const char *to,
                           size_t to_len, tlm_error *err);
void tok_pretok_free(tok_pretok *p);

/* A list of byte pieces, each (off, len) into one arena. */
typedef struct tok_pieces {
    char *arena;
    size_t arena_len, arena_cap;
    size_t *off, *len;
    size_t n, cap;
} tok_pieces;

void tok_pieces_free(tok_pieces *p);
/* Splits one segment of input text into pieces (cleared first). at_start:
 * the segment begins the input (for first-only prepends). 0 or -1 on error. */
int tok_pretok_run(const tok_pretok *p, const char *text, size_t len, bool at_start,
                   tok_pieces *out, tok_pieces *tmp, tlm_error *err);

/* ------------------------------------------------------ the tokenizer */

struct tlm_tokenizer {
    tlm_tok_kind kind;
    int32_t n_vocab;
    tok_strtab text;  /* token strings as stored in the vocabulary */
    tok_strtab bytes; /* what each token decodes to (specials: their text) */
    uint8_t *attr;    /* (n_vocab) TOK_ATTR_* */
    float *score;     /* (n_vocab) SPM merge scores, NULL when merging by rank */
    tok_vocab_map vocab;
    tok_merge_map merges;
    bool merge_by_score;  /* GGUF SPM: any pair whose text is a token, best score first */
    bool ignore_merges;   /* a whole piece that is a token is emitted as is */
    bool byte_fallback;   /* unknown characters become <0xXX> tokens */
    bool fuse_unk;        /* consecutive unknowns give one unk */
    int32_t byte_token[256]; /* SPM: id of <0xXX>, or -1; byte-level: id of the mapped char */
    int32_t bos, eos, unk;
    bool add_bos;
    tok_pretok pretok;
    /* added tokens matched in the text: ids grouped by first byte
     * (added[added_start[b] .. added_start[b+1])), longest first in a group;
     * only those whose text is valid UTF-8, tried at character boundaries */
    int32_t *added;
    uint32_t added_start[257];
    char *chat_template;  /* NUL-terminated, or NULL */
    char *source;         /* file the tokenizer came from, for messages */
};

/* ------------------------------------------------------ builder */

typedef struct tok_builder {
    tlm_tokenizer *t;   /* being filled: kind, text, attr, score, flags, ids */
    /* merges as text pairs, in rank order */
    char **merge_left, **merge_right;
    size_t *merge_left_len, *merge_right_len;
    size_t n_merges, cap_merges;
    bool later_duplicates_win; /* GGUF: the last of duplicate strings names the id */
} tok_builder;

/* Allocates t with n_vocab empty tokens (attr NORMAL), ids -1, source copied. */
int tok_builder_init(tok_builder *b, tlm_tok_kind kind, int32_t n_vocab, const char *source,
                     tlm_error *err);
int tok_builder_add_merge(tok_builder *b, const char *left, size_t left_len, const char *right,
                          size_t right_len, tlm_error *err);
/* Builds the hash tables, the decoded bytes, the EOG set and the added list;
 * returns the tokenizer (b is consumed) or NULL with err set. */
tlm_tokenizer *tok_builder_finish(tok_builder *b, tlm_error *err);
void tok_builder_abort(tok_builder *b);

/* ------------------------------------------------------ byte-level mapping */

/* GPT-2 bytes_to_unicode: byte -> code point (printable), and back. */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp); /* -1 when cp is not one of the 256 */
/* Writes the UTF-8 of cp (<= 4 bytes); returns the length. */
size_t tok_utf8_put(uint32_t cp, char *out);
/* Decodes one UTF-8 character of valid text; returns its length (1..4). */
size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp);
/* Length of the valid UTF-8 character at s, or 1 for a stray byte. */
size_t tok_utf8_len(const char *s, size_t n);
/* Length of the longest well-formed UTF-8 prefix of s[0..n): n when all of
 * it is valid (no overlongs, surrogates or code points past U+10FFFF). */
size_t tok_utf8_valid_prefix(const char *s, size_t n);

/* ------------------------------------------------------ merge engine */

typedef struct tok_scratch tok_scratch;
tok_scratch *tok_scratch_new(void);
void tok_scratch_free(tok_scratch *s);

/* Output sink: ids up to cap go to out, n counts all of them. */
typedef struct tok_sink {
    int32_t *out;
    int64_t cap, n;
} tok_sink;

static inline void tok_sink_push(tok_sink *k, int32_t id) {
    if (k->n < k->cap) k->out[k->n] = id;
    k->n++;
}

/* Tokenizes one pre-token (already byte-mapped for byte-level BPE, already
 * U+2581-escaped for SPM). 0, or -1 with err set (out of memory). */
int tok_bpe_piece(const tlm_tokenizer *t, tok_scratch *s, const char *text, size_t len,
                  tok_sink *sink, tlm_error *err);

#endif
