/*
 * sampler.c — picking the next token from logits.
 *
 * Order of operations (each step optional):
 *   repetition penalty (llama.cpp style: over the last repeat_last_n accepted
 *   tokens, each distinct token once: logit > 0 ? logit / penalty : logit * penalty)
 *   -> greedy argmax when temperature <= 0, else
 *   top-k -> softmax(logit / temperature) -> top-p (smallest most-probable set
 *   whose mass reaches p) -> min-p (drop p < min_p * p_max) -> draw.
 * Random numbers come from xoshiro256** seeded through splitmix64, so one seed
 * gives one sequence on every platform. All buffers are allocated up front.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "error.h"
#include "trimlm.h"

typedef struct prob_entry {
    float p;
    int32_t id;
} prob_entry;

struct tlm_sampler {
    tlm_sampler_params p;
    int32_t n_vocab;
    uint64_t seed_used;   /* the seed actually in effect (resolved when random) */
    uint64_t rng[4];      /* xoshiro256** state */
    float *logits;        /* (n_vocab) working copy, penalised */
    int32_t *cand;        /* (n_vocab) candidate token ids */
    float *prob;          /* (n_vocab) probability of cand[i] */
    uint8_t *seen;        /* (n_vocab) marks for penalising each token once */
    prob_entry *sort_buf;       /* (n_vocab) for sorting by probability */
    int32_t *recent;      /* (repeat_last_n) ring of accepted tokens */
    int32_t n_recent;     /* valid entries in recent */
    int32_t recent_next;  /* where the next accepted token goes */
};

/* ------------------------------------------------------------ PRNG */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t result = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

static void rng_seed(struct tlm_sampler *s) {
    uint64_t st = s->seed_used;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&st);
}

/* ---------------------------------------------------------- lifecycle */

tlm_sampler_params tlm_sampler_default_params(void) {
    return (tlm_sampler_params){
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .seed = TLM_SEED_RANDOM,
    };
}

void tlm_sampler_free(tlm_sampler *s) {
    if (!s) return;
    tlm_free(s->logits);
    tlm_free(s->cand);
    tlm_free(s->prob);
    tlm_free(s->seen);
    tlm_free(s->sort_buf);
    tlm_free(s->recent);
    tlm_free(s);
}

tlm_sampler *tlm_sampler_new(const tlm_sampler_params *p, int32_t n_vocab, tlm_error *err) {
    tlm_clearerr(err);
    tlm_sampler_params prm = p ? *p : tlm_sampler_default_params();
    if (n_vocab <= 0) {
        tlm_seterr(err, TLM_ERR_ARG, "sampler: vocabulary size %d must be positive", n_vocab);
        return NULL;
    }
    if (isnan(prm.temperature) || isnan(prm.top_p) || isnan(prm.min_p) ||
        !(prm.repeat_penalty > 0) || prm.repeat_last_n < 0) {
        tlm_seterr(err, TLM_ERR_ARG,
                   "sampler: bad parameters (temperature %g, top_p %g, min_p %g, repeat_penalty %g, "
                   "repeat_last_n %d): penalty must be > 0 and last_n >= 0",
                   (double)prm.temperature, (double)prm.top_p, (double)prm.min_p,
                   (double)prm.repeat_penalty, prm.repeat_last_n);
        return NULL;
    }
    struct tlm_sampler *s = tlm_calloc(1, sizeof *s);
    size_t V = (size_t)n_vocab;
    if (s) {
        s->logits = tlm_malloc(V * sizeof(float));
        s->cand = tlm_malloc(V * sizeof(int32_t));
        s->prob = tlm_malloc(V * sizeof(float));
        s->seen = tlm_calloc(V, 1);
        s->sort_buf = tlm_malloc(V * sizeof *s->sort_buf);
        s->recent = tlm_malloc(((size_t)prm.repeat_last_n + 1) * sizeof(int32_t));
    }
    if (!s || !s->logits || !s->cand || !s->prob || !s->seen || !s->sort_buf || !s->recent) {
        tlm_sampler_free(s);
        tlm_seterr(err, TLM_ERR_NOMEM, "sampler: out of memory for a vocabulary of %d", n_vocab);
        return NULL;
    }
    s->p = prm;
    s->n_vocab = n_vocab;
    if (prm.seed == TLM_SEED_RANDOM) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t mix = ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^
                       (uint64_t)(uintptr_t)s;
        s->seed_used = splitmix64(&mix);
    } else {
        s->seed_used = prm.seed;
    }
    rng_seed(s);
    return s;
}

void tlm_sampler_reset(tlm_sampler *s) {
    if (!s) return;
    s->n_recent = 0;
    s->recent_next = 0;
    rng_seed(s);
}

void tlm_sampler_accept(tlm_sampler *s, int32_t tok) {
    if (!s || s->p.repeat_last_n <= 0 || tok < 0 || tok >= s->n_vocab) return;
    s->recent[s->recent_next] = tok;
    s->recent_next = (s->recent_next + 1) % s->p.repeat_last_n;
    if (s->n_recent < s->p.repeat_last_n) s->n_recent++;
}

/* ------------------------------------------------------- candidate sets */

/* Min-heap on logit over cand[0..n): the root is the weakest of the kept. */
static void heap_sift_down(int32_t *cand, const float *logit, int32_t n, int32_t i) {
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && logit[cand[l]] < logit[cand[m]]) m = l;
        if (r < n && logit[cand[r]] < logit[cand[m]]) m = r;
        if (m == i) return;
        int32_t t = cand[i];
        cand[i] = cand[m];
        cand[m] = t;
        i = m;
    }
}

/* Puts the k highest logits in cand[0..k), highest first: O(V log k). */
static void select_top_k(struct tlm_sampler *s, int32_t k) {
    const float *logit = s->logits;
    for (int32_t i = 0; i < k; i++) s->cand[i] = i;
    for (int32_t i = k / 2 - 1; i >= 0; i--) heap_sift_down(s->cand, logit, k, i);
    for (int32_t t = k; t < s->n_vocab; t++) {
        if (logit[t] > logit[s->cand[0]]) {
            s->cand[0] = t;
            heap_sift_down(s->cand, logit, k, 0);
        }
    }
    /* Heap sort: repeatedly move the smallest to the end -> descending. */
    for (int32_t n = k; n > 1; n--) {
        int32_t t = s->cand[0];
        s->cand[0] = s->cand[n - 1];
        s->cand[n - 1] = t;
        heap_sift_down(s->cand, logit, n - 1, 0);
    }
}

static int cmp_prob_desc(const void *a, const void *b) {
    const prob_entry *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Sorts cand/prob[0..n) by probability, highest first (ties by id, so the
 * order does not depend on the sort's stability). */
static void sort_by_prob(struct tlm_sampler *s, int32_t n) {
    prob_entry *e = s->sort_buf;
    for (int32_t i = 0; i < n; i++) e[i] = (prob_entry){s->prob[i], s->cand[i]};
    qsort(e, (size_t)n, sizeof *e, cmp_prob_desc);
    for (int32_t i = 0; i < n; i++) {
        s->prob[i] = e[i].p;
        s->cand[i] = e[i].id;
    }
}

/* ------------------------------------------------------------- sample */

static void apply_repeat_penalty(struct tlm_sampler *s) {
    float pen = s->p.repeat_penalty;
    if (pen == 1.0f || s->n_recent == 0) return;
    for (int32_t i = 0; i < s->n_recent; i++) {
        int32_t t = s->recent[i];
        if (s->seen[t]) continue;
        s->seen[t] = 1;
        s->logits[t] = s->logits[t] > 0 ? s->logits[t] / pen : s->logits[t] * pen;
    }
    for (int32_t i = 0; i < s->n_recent; i++) s->seen[s->recent[i]] = 0;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int32_t tlm_sampler_sample(tlm_sampler *s, const float *logits) {
    if (!s || !logits) return -1;
    int32_t V = s->n_vocab;
    memcpy(s->logits, logits, (size_t)V * sizeof(float));
    apply_repeat_penalty(s);
    if (!(s->p.temperature > 0)) return argmax(s->logits, V);

    /* Candidates: the top k (sorted), or everyone (unsorted). */
    int32_t n = V;
    bool sorted = false;
    if (s->p.top_k > 0 && s->p.top_k < V) {
        n = s->p.top_k;
        select_top_k(s, n);
        sorted = true;
    } else {
        for (int32_t i = 0; i < V; i++) s->cand[i] = i;
    }
    if (n == 1) return s->cand[0];

    /* Softmax with temperature over the candidates, in double for the sum. */
    float max = s->logits[s->cand[0]];
    for (int32_t i = 1; i < n; i++)
        if (s->logits[s->cand[i]] > max) max = s->logits[s->cand[i]];
    double sum = 0;
    float inv_t = 1.0f / s->p.temperature;
    for (int32_t i = 0; i < n; i++) {
        s->prob[i] = expf((s->logits[s->cand[i]] - max) * inv_t);
        sum += s->prob[i];
    }
    float p_max = 0;
    for (int32_t i = 0; i < n; i++) {
        s->prob[i] = (float)(s->prob[i] / sum);
        if (s->prob[i] > p_max) p_max = s->prob[i];
    }

    if (s->p.top_p < 1.0f) {
        if (!sorted) {
            sort_by_prob(s, n);
            sorted = true;
        }
        double cum = 0;
        int32_t keep = n;
        for (int32_t i = 0; i < n; i++) {
            cum += s->prob[i];
            if (cum >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }

    if (s->p.min_p > 0) {
        float floor_p = s->p.min_p * p_max;
        int32_t kept = 0;
        for (int32_t i = 0; i < n; i++)
            if (s->prob[i] >= floor_p) {
                s->prob[kept] = s->prob[i];
                s->cand[kept] = s->cand[i];
                kept++;
            }
        n = kept > 0 ? kept : 1; /* p_max itself always passes; guard anyway */
    }

    /* Draw from what is left (renormalised by scaling the uniform). */
    double total = 0;
    for (int32_t i = 0; i < n; i++) total += s->prob[i];
    double u = rng_uniform(s->rng) * total, acc = 0;
    for (int32_t i = 0; i < n; i++) {
        acc += s->prob[i];
        if (u < acc) return s->cand[i];
    }
    return s->cand[n - 1];
}
