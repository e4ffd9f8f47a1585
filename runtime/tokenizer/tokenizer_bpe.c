/*
 * tokenizer_bpe.c — the BPE merge engine, its hash tables, the GPT-2 byte
 * mapping and UTF-8 decoding.
 *
 * One pre-token is split into characters, then adjacent pairs merge, best
 * first, until no pair can merge. Two orders exist:
 *  - by rank (byte-level BPE and tokenizer.json): the pair (left id, right id)
 *    must be a listed merge; lower rank first, then leftmost;
 *  - by score (SentencePiece vocabularies in GGUF, which carry no merges):
 *    any pair whose concatenated text is a token; higher score first, then
 *    leftmost.
 * Candidates live in a binary heap and are checked when popped (a symbol may
 * have grown since), so a piece of n characters costs O(n log n).
 */
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "tokenizer_internal.h"

/* ------------------------------------------------------ UTF-8 */

size_t tok_utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t tok_utf8_len(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t need;
    if (u[0] < 0x80) return 1;
    if ((u[0] & 0xE0) == 0xC0) need = 2;
    else if ((u[0] & 0xF0) == 0xE0) need = 3;
    else if ((u[0] & 0xF8) == 0xF0) need = 4;
    else return 1;
    if (need > n) return 1;
    for (size_t i = 1; i < need; i++)
        if ((u[i] & 0xC0) != 0x80) return 1;
    return need;
}

size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    size_t len = tok_utf8_len(s, n);
    switch (len) {
    case 2: *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F); break;
    case 3: *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F); break;
    case 4:
        *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
              ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
        break;
    default: *cp = u[0]; break;
    }
    return len;
}

/* ------------------------------------------------------ GPT-2 byte mapping */

/* Printable bytes map to themselves; the 68 others (0x00-0x20, 0x7F-0xA0,
 * 0xAD), in order, to U+0100.. U+0143. */
uint32_t tok_byte_to_cp(uint8_t b) {
    if (b <= 0x20) return 256u + b;
    if (b >= 0x7F && b <= 0xA0) return 256u + 33u + (uint32_t)(b - 0x7F);
    if (b == 0xAD) return 256u + 67u;
    return b;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) {
        bool printable = (cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || cp >= 0xAE;
        return printable ? (int)cp : -1;
    }
    uint32_t k = cp - 256;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(0x7F + (k - 33));
    if (k == 67) return 0xAD;
    return -1;
}

/* ------------------------------------------------------ hash tables */

uint32_t tok_hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h ^ (h >> 15);
}

static uint64_t hash_pair(uint64_t key) { /* splitmix64 finaliser */
    key ^= key >> 30;
    key *= 0xbf58476d1ce4e5b9ull;
    key ^= key >> 27;
    key *= 0x94d049bb133111ebull;
    return key ^ (key >> 31);
}

int32_t tok_vocab_find(const tlm_tokenizer *t, const char *s, size_t n) {
    if (!t->vocab.slots) return -1;
    uint32_t i = tok_hash_bytes(s, n) & t->vocab.mask;
    for (;;) {
        int32_t id = t->vocab.slots[i];
        if (id < 0) return -1;
        if (t->text.len[id] == n && memcmp(t->text.arena + t->text.off[id], s, n) == 0) return id;
        i = (i + 1) & t->vocab.mask;
    }
}

const tok_merge_slot *tok_merge_find(const tlm_tokenizer *t, int32_t left, int32_t right) {
    if (!t->merges.slots) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    uint64_t i = hash_pair(key) & t->merges.mask;
    for (;;) {
        const tok_merge_slot *slot = &t->merges.slots[i];
        if (slot->key == UINT64_MAX) return NULL;
        if (slot->key == key) return slot;
        i = (i + 1) & t->merges.mask;
    }
}

/* Inserts into the merge table (sized by the caller); an existing pair keeps
 * its first (lowest) rank, as a listed merge is never demoted. */
void tok_merge_insert(tok_merge_map *m, int32_t left, int32_t right, int32_t rank,
                      int32_t merged_id) {
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    uint64_t i = hash_pair(key) & m->mask;
    while (m->slots[i].key != UINT64_MAX) {
        if (m->slots[i].key == key) return;
        i = (i + 1) & m->mask;
    }
    m->slots[i].key = key;
    m->slots[i].rank = rank;
    m->slots[i].merged_id = merged_id;
}

/* ------------------------------------------------------ merge engine */

typedef struct tok_sym {
    uint32_t start, len; /* bytes of the piece this symbol covers */
    int32_t id;          /* token id, -1 when the text is not a token (score mode) */
    int32_t prev, next;  /* neighbours among live symbols, -1 at the ends */
} tok_sym;

typedef struct tok_cand {
    uint64_t key;      /* order-preserving cost << 32 | left symbol: lower merges first */
    uint32_t len;      /* left.len + right.len when queued: detects stale entries */
    int32_t merged_id;
} tok_cand;

/* Maps a float cost to a uint32 whose unsigned order is the float order. */
static uint32_t cost_order_bits(float cost) {
    uint32_t bits;
    memcpy(&bits, &cost, sizeof bits);
    return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

struct tok_scratch {
    tok_sym *syms;
    size_t cap_syms;
    tok_cand *heap;
    size_t n_heap, cap_heap;
};

tok_scratch *tok_scratch_new(void) { return tlm_calloc(1, sizeof(tok_scratch)); }

void tok_scratch_free(tok_scratch *s) {
    if (!s) return;
    tlm_free(s->syms);
    tlm_free(s->heap);
    tlm_free(s);
}

static bool cand_before(const tok_cand *a, const tok_cand *b) { return a->key < b->key; }

static int heap_push(tok_scratch *s, tok_cand c) {
    if (s->n_heap == s->cap_heap) {
        size_t cap = s->cap_heap ? s->cap_heap * 2 : 256;
        tok_cand *grown = tlm_realloc(s->heap, cap * sizeof *grown);
        if (!grown) return -1;
        s->heap = grown;
        s->cap_heap = cap;
    }
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_before(&c, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = c;
    return 0;
}

static tok_cand heap_pop(tok_scratch *s) {
    tok_cand top = s->heap[0];
    tok_cand last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && cand_before(&s->heap[child + 1], &s->heap[child])) child++;
        if (!cand_before(&s->heap[child], &last)) break;
        s->heap[i] = s->heap[child];
        i = child;
    }
    if (n > 0) s->heap[i] = last;
    return top;
}

static int add_sym(tok_scratch *s, size_t *n, uint32_t start, uint32_t len, int32_t id) {
    if (*n == s->cap_syms) {
        size_t cap = s->cap_syms ? s->cap_syms * 2 : 256;
        tok_sym *grown = tlm_realloc(s->syms, cap * sizeof *grown);
        if (!grown) return -1;
        s->syms = grown;
        s->cap_syms = cap;
    }
    s->syms[*n] = (tok_sym){.start = start, .len = len, .id = id, .prev = (int32_t)*n - 1, .next = -1};
    if (*n > 0) s->syms[*n - 1].next = (int32_t)*n;
    (*n)++;
    return 0;
}

static bool mergeable_by_score(const tlm_tokenizer *t, int32_t id) {
    return id >= 0 && (t->attr[id] & (TOK_ATTR_NORMAL | TOK_ATTR_USER));
}

/* Queues the pair (left, right) when it can merge. */
static int try_pair(const tlm_tokenizer *t, tok_scratch *s, const char *text, int32_t left,
                    int32_t right) {
    if (left < 0 || right < 0) return 0;
    const tok_sym *l = &s->syms[left], *r = &s->syms[right];
    tok_cand c = {.len = l->len + r->len};
    uint32_t order;
    if (t->merge_by_score) {
        int32_t id = tok_vocab_find(t, text + l->start, l->len + r->len);
        if (!mergeable_by_score(t, id)) return 0;
        order = cost_order_bits(-t->score[id]);
        c.merged_id = id;
    } else {
        if (l->id < 0 || r->id < 0) return 0;
        const tok_merge_slot *m = tok_merge_find(t, l->id, r->id);
        if (!m) return 0;
        order = (uint32_t)m->rank; /* ranks are >= 0 */
        c.merged_id = m->merged_id;
    }
    c.key = ((uint64_t)order << 32) | (uint32_t)left;
    return heap_push(s, c);
}

static void push_bytes_fallback(const tlm_tokenizer *t, const char *p, size_t n, tok_sink *sink) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_token[(unsigned char)p[i]];
        if (id >= 0) tok_sink_push(sink, id);
        else if (t->unk >= 0) tok_sink_push(sink, t->unk);
    }
}

int tok_bpe_piece(const tlm_tokenizer *t, tok_scratch *s, const char *text, size_t len,
                  tok_sink *sink, tlm_error *err) {
    if (len == 0) return 0;
    if (len > UINT32_MAX / 2) {
        tlm_seterr(err, TLM_ERR_ARG, "%s: a single piece of %zu bytes is too long to tokenize",
                   t->source, len);
        return -1;
    }
    if (t->ignore_merges) {
        int32_t whole = tok_vocab_find(t, text, len);
        if (whole >= 0) {
            tok_sink_push(sink, whole);
            return 0;
        }
    }

    /* characters -> symbols */
    size_t n = 0;
    for (size_t p = 0; p < len;) {
        size_t cl = tok_utf8_len(text + p, len - p);
        int32_t id = tok_vocab_find(t, text + p, cl);
        int rc = 0;
        if (t->merge_by_score || id >= 0) {
            rc = add_sym(s, &n, (uint32_t)p, (uint32_t)cl, id);
        } else {
            bool all_bytes = t->byte_fallback;
            for (size_t j = 0; all_bytes && j < cl; j++)
                all_bytes = t->byte_token[(unsigned char)text[p + j]] >= 0;
            if (all_bytes) {
                for (size_t j = 0; j < cl && rc == 0; j++)
                    rc = add_sym(s, &n, (uint32_t)(p + j), 1, t->byte_token[(unsigned char)text[p + j]]);
            } else if (t->unk >= 0) {
                if (t->fuse_unk && n > 0 && s->syms[n - 1].id == t->unk)
                    s->syms[n - 1].len += (uint32_t)cl;
                else
                    rc = add_sym(s, &n, (uint32_t)p, (uint32_t)cl, t->unk);
            } /* else: dropped, as the reference does without an unk token */
        }
        if (rc) goto oom;
        p += cl;
    }
    if (n == 0) return 0;

    /* merge, best candidate first */
    s->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (try_pair(t, s, text, (int32_t)i, (int32_t)i + 1)) goto oom;
    while (s->n_heap > 0) {
        tok_cand c = heap_pop(s);
        int32_t left = (int32_t)(uint32_t)c.key;
        tok_sym *l = &s->syms[left];
        /* Stale when either side changed since: symbols only grow, and the
         * right one only disappears into the left, so the summed length
         * differs exactly when the pair is no longer the queued one. */
        if (l->len == 0 || l->next < 0) continue;
        tok_sym *r = &s->syms[l->next];
        if (l->len + r->len != c.len) continue;
        l->len += r->len;
        l->id = c.merged_id;
        l->next = r->next;
        if (r->next >= 0) s->syms[r->next].prev = left;
        r->len = 0;
        if (try_pair(t, s, text, l->prev, left) || try_pair(t, s, text, left, l->next))
            goto oom;
    }

    /* emit */
    for (int32_t i = 0; i >= 0; i = s->syms[i].next) {
        const tok_sym *sym = &s->syms[i];
        if (!t->merge_by_score) {
            tok_sink_push(sink, sym->id);
        } else if (sym->id >= 0 && mergeable_by_score(t, sym->id)) {
            tok_sink_push(sink, sym->id);
        } else {
            push_bytes_fallback(t, text + sym->start, sym->len, sink);
        }
    }
    return 0;
oom:
    tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory while tokenizing", t->source);
    return -1;
}
