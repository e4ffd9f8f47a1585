/* serve_sched.c — slots, the job queue and the scheduler thread of
 * `trimlm serve`; see serve_sched.h.
 *
 * Locking: one mutex guards the queue, the counters and every job field the
 * HTTP threads read (text, state, errors, cancelled). A slot's context, its
 * cached tokens, and a running job's sampler and detokenizer are touched only
 * by the scheduler thread, which runs tlm_decode without the lock. */
#include "serve_sched.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct serve_job {
    serve_sched *sched;
    int refs; /* the submitter's and the scheduler's */
    serve_job *next; /* in the queue */

    /* what it was given */
    int32_t *prompt;
    int32_t n_prompt;
    tlm_sampler *sampler;
    int64_t max_tokens;
    char *stop[SERVE_MAX_STOP];
    int n_stop;
    size_t max_stop_len;
    bool ignore_eos;
    double deadline; /* monotonic seconds; 0 = none */

    /* progress (under the lock) */
    enum job_state state;
    bool cancelled;
    int32_t n_cached;
    int64_t n_generated;
    char *text; /* generated text, len bytes (+ NUL), visible of them shown */
    size_t len, cap, visible;
    const char *finish_reason;
    bool failed;
    serve_error error;

    tlm_detok detok; /* scheduler thread only */
};

typedef struct slot {
    tlm_context *ctx;
    int32_t *cache; /* (n_cache) the tokens in ctx's KV cache, in order */
    int32_t n_cache;
    serve_job *job; /* NULL when free */
    int32_t prefill_at; /* next prompt token to run */
    uint64_t last_used; /* admission order, for choosing among equal prefixes */
} slot;

struct serve_sched {
    const tlm_model *model;
    int32_t n_ctx, n_batch;
    slot *slots;
    int32_t n_slots;
    double timeout_s;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t work;     /* the scheduler: a job arrived, or stop */
    pthread_cond_t progress; /* the HTTP threads: some job changed */
    bool stopping;
    serve_job *q_head, *q_tail;
    int32_t q_len, max_queue;
    uint64_t admissions;

    serve_sched_stats stats; /* under mu */
    char piece[1 << 16];     /* one token's bytes (scheduler thread only) */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static struct timespec abs_after(double s) {
    double t = now_s() + s;
    struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - (double)(time_t)t) * 1e9)};
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    return ts;
}

/* ------------------------------------------------------------- jobs */

static void job_free(serve_job *j) {
    free(j->prompt);
    tlm_sampler_free(j->sampler);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->text);
    free(j);
}

/* Drops one reference; the lock is held. */
static void job_unref_locked(serve_job *j) {
    if (--j->refs == 0) job_free(j);
}

static bool text_append_locked(serve_job *j, const char *s, size_t n) {
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 256;
        while (cap < j->len + n + 1) cap *= 2;
        char *grown = realloc(j->text, cap);
        if (!grown) return false;
        j->text = grown;
        j->cap = cap;
    }
    memcpy(j->text + j->len, s, n);
    j->len += n;
    j->text[j->len] = '\0';
    return true;
}

/* After text was appended at old_len: true when a stop string now occurs
 * (the text is cut where it starts); otherwise moves `visible` up to the
 * longest end of the text that could still begin a stop string. */
static bool apply_stop_locked(serve_job *j, size_t old_len) {
    if (j->n_stop == 0) {
        j->visible = j->len;
        return false;
    }
    size_t from = old_len > j->max_stop_len ? old_len - j->max_stop_len + 1 : 0;
    const char *first = NULL;
    for (int i = 0; i < j->n_stop; i++) {
        const char *hit = memmem(j->text + from, j->len - from, j->stop[i], strlen(j->stop[i]));
        if (hit && (!first || hit < first)) first = hit;
    }
    if (first) {
        j->len = (size_t)(first - j->text);
        j->text[j->len] = '\0';
        if (j->visible > j->len) j->visible = j->len;
        return true;
    }
    size_t hold = 0;
    for (size_t k = j->max_stop_len - 1; k > 0 && hold == 0; k--) {
        if (k > j->len) continue;
        for (int i = 0; i < j->n_stop; i++)
            if (strlen(j->stop[i]) > k && memcmp(j->text + j->len - k, j->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    if (j->len - hold > j->visible) j->visible = j->len - hold;
    return false;
}

/* Ends the running job of sl (lock held): reason "stop"/"length", or an
 * error (e), or cancelled (both NULL). */
static void finish_locked(serve_sched *s, slot *sl, const char *reason, const serve_error *e) {
    serve_job *j = sl->job;
    if (reason) { /* an incomplete character left at the end becomes U+FFFD */
        size_t n = tlm_detok_flush(&j->detok, s->piece, sizeof s->piece);
        if (n) text_append_locked(j, s->piece, n);
    }
    j->visible = j->len;
    j->state = JOB_DONE;
    j->finish_reason = reason;
    if (e) {
        j->failed = true;
        j->error = *e;
        if (e->status == 504) s->stats.jobs_timed_out++;
        else s->stats.jobs_failed++;
    } else if (!reason) {
        s->stats.jobs_cancelled++;
    } else {
        s->stats.jobs_done++;
    }
    sl->job = NULL;
    job_unref_locked(j);
    pthread_cond_broadcast(&s->progress);
}

static void timeout_error(serve_error *e, double limit) {
    serve_error_set(e, 504, "timeout_error", "timeout", NULL,
                    "the request took longer than the server's time limit of %g s (--timeout)", limit);
}

/* ------------------------------------------------------- admission */

static int32_t common_prefix(const int32_t *a, int32_t na, const int32_t *b, int32_t nb) {
    int32_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* Removes cancelled and expired jobs from the queue and gives free slots to
 * the oldest waiting jobs (lock held). */
static void admit_locked(serve_sched *s) {
    double now = now_s();
    serve_job **link = &s->q_head;
    s->q_tail = NULL;
    while (*link) {
        serve_job *j = *link;
        bool expired = j->deadline > 0 && now >= j->deadline;
        if (!j->cancelled && !expired) {
            s->q_tail = j;
            link = &j->next;
            continue;
        }
        *link = j->next;
        s->q_len--;
        j->state = JOB_DONE;
        if (expired && !j->cancelled) {
            j->failed = true;
            timeout_error(&j->error, s->timeout_s);
            s->stats.jobs_timed_out++;
        } else {
            s->stats.jobs_cancelled++;
        }
        job_unref_locked(j);
        pthread_cond_broadcast(&s->progress);
    }
    while (s->q_head) {
        serve_job *j = s->q_head;
        slot *best = NULL;
        int32_t best_keep = -1;
        for (int32_t i = 0; i < s->n_slots; i++) {
            slot *sl = &s->slots[i];
            if (sl->job) continue;
            int32_t keep = common_prefix(sl->cache, sl->n_cache, j->prompt, j->n_prompt);
            if (keep > best_keep || (keep == best_keep && sl->last_used < best->last_used)) {
                best = sl;
                best_keep = keep;
            }
        }
        if (!best) break;
        s->q_head = j->next;
        if (!s->q_head) s->q_tail = NULL;
        s->q_len--;
        j->next = NULL;
        /* the last prompt token is always run: its logits pick the first token */
        if (best_keep >= j->n_prompt) best_keep = j->n_prompt - 1;
        tlm_context_truncate(best->ctx, best_keep);
        best->n_cache = best_keep;
        best->prefill_at = best_keep;
        best->job = j;
        best->last_used = ++s->admissions;
        j->n_cached = best_keep;
        j->state = JOB_RUNNING;
        s->stats.prompt_tokens += (uint64_t)j->n_prompt;
        s->stats.cached_tokens += (uint64_t)best_keep;
        pthread_cond_broadcast(&s->progress);
    }
}

/* ------------------------------------------------------------- steps */

static void fail_step(serve_sched *s, slot *sl, const tlm_error *err) {
    serve_error e;
    serve_error_set(&e, 500, "server_error", NULL, NULL, "generation failed: %s", err->msg);
    pthread_mutex_lock(&s->mu);
    finish_locked(s, sl, NULL, &e);
    pthread_mutex_unlock(&s->mu);
    /* the cache may hold part of a failed step */
    tlm_context_reset(sl->ctx);
    sl->n_cache = 0;
}

/* One step of a busy slot: a prefill chunk, or one generated token. */
static void step_slot(serve_sched *s, slot *sl) {
    serve_job *j = sl->job;
    pthread_mutex_lock(&s->mu);
    if (j->cancelled) {
        finish_locked(s, sl, NULL, NULL);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (j->deadline > 0 && now_s() >= j->deadline) {
        serve_error e;
        timeout_error(&e, s->timeout_s);
        finish_locked(s, sl, NULL, &e);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    pthread_mutex_unlock(&s->mu);

    tlm_error err = {0};
    if (sl->prefill_at < j->n_prompt) {
        int32_t n = j->n_prompt - sl->prefill_at;
        if (n > s->n_batch) n = s->n_batch;
        double t0 = now_s();
        if (tlm_decode(sl->ctx, j->prompt + sl->prefill_at, n, false, &err) != TLM_OK) {
            fail_step(s, sl, &err);
            return;
        }
        double dt = now_s() - t0;
        memcpy(sl->cache + sl->n_cache, j->prompt + sl->prefill_at, (size_t)n * sizeof *sl->cache);
        sl->n_cache += n;
        sl->prefill_at += n;
        pthread_mutex_lock(&s->mu);
        s->stats.prefill_seconds += dt;
        pthread_mutex_unlock(&s->mu);
        return;
    }

    const float *logits = tlm_get_logits(sl->ctx, -1);
    int32_t tok = logits ? tlm_sampler_sample(j->sampler, logits) : -1;
    if (tok < 0) {
        tlm_error e = {.code = TLM_ERR_ARG};
        strcpy(e.msg, "the model produced no token");
        fail_step(s, sl, &e);
        return;
    }
    if (!j->ignore_eos && tlm_token_is_eog(s->model, tok)) {
        pthread_mutex_lock(&s->mu);
        finish_locked(s, sl, "stop", NULL);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    tlm_sampler_accept(j->sampler, tok);
    size_t n_piece = tlm_detok_push(&j->detok, tok, s->piece, sizeof s->piece);
    pthread_mutex_lock(&s->mu);
    j->n_generated++;
    s->stats.generated_tokens++;
    size_t old_len = j->len;
    bool stopped = false;
    if (n_piece) {
        if (!text_append_locked(j, s->piece, n_piece)) {
            serve_error e;
            serve_error_set(&e, 500, "server_error", NULL, NULL, "out of memory holding the reply");
            finish_locked(s, sl, NULL, &e);
            pthread_mutex_unlock(&s->mu);
            return;
        }
        stopped = apply_stop_locked(j, old_len);
        pthread_cond_broadcast(&s->progress);
    }
    const char *reason = NULL;
    if (stopped) {
        /* what the detokenizer still holds lies past the stop string */
        tlm_detok_init(&j->detok, s->model);
        reason = "stop";
    } else if (j->max_tokens > 0 && j->n_generated >= j->max_tokens) {
        reason = "length";
    } else if (tlm_context_pos(sl->ctx) >= s->n_ctx) {
        reason = "length";
    }
    if (reason) {
        finish_locked(s, sl, reason, NULL);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    pthread_mutex_unlock(&s->mu);

    double t0 = now_s();
    if (tlm_decode(sl->ctx, &tok, 1, false, &err) != TLM_OK) {
        fail_step(s, sl, &err);
        return;
    }
    double dt = now_s() - t0;
    sl->cache[sl->n_cache++] = tok;
    pthread_mutex_lock(&s->mu);
    s->stats.decode_seconds += dt;
    pthread_mutex_unlock(&s->mu);
}

static void *sched_main(void *arg) {
    serve_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        admit_locked(s);
        int32_t busy = 0;
        for (int32_t i = 0; i < s->n_slots; i++) busy += s->slots[i].job != NULL;
        if (busy == 0) {
            /* timed, so that queued jobs' deadlines are still checked */
            struct timespec ts = abs_after(0.25);
            pthread_cond_timedwait(&s->work, &s->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        for (int32_t i = 0; i < s->n_slots; i++)
            if (s->slots[i].job) step_slot(s, &s->slots[i]);
        pthread_mutex_lock(&s->mu);
    }
    /* stopping: every job ends with an error */
    serve_error e;
    serve_error_set(&e, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
    for (int32_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].job) finish_locked(s, &s->slots[i], NULL, &e);
    while (s->q_head) {
        serve_job *j = s->q_head;
        s->q_head = j->next;
        j->state = JOB_DONE;
        j->failed = true;
        j->error = e;
        job_unref_locked(j);
    }
    s->q_tail = NULL;
    s->q_len = 0;
    pthread_cond_broadcast(&s->progress);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ------------------------------------------------------------ public */

serve_sched *serve_sched_new(const tlm_model *m, const serve_sched_params *p, tlm_error *err) {
    serve_sched *s = calloc(1, sizeof *s);
    if (!s) goto nomem;
    s->model = m;
    s->n_slots = p->n_slots;
    s->max_queue = p->max_queue;
    s->timeout_s = p->timeout_s;
    s->slots = calloc((size_t)p->n_slots, sizeof *s->slots);
    if (!s->slots) goto nomem;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->work, &ca);
    pthread_cond_init(&s->progress, &ca);
    pthread_condattr_destroy(&ca);
    tlm_context_params cp = tlm_context_default_params();
    cp.n_ctx = p->n_ctx;
    cp.n_threads = p->n_threads;
    cp.kv_type = p->kv_type;
    s->n_batch = cp.n_batch > 0 ? cp.n_batch : 512;
    for (int32_t i = 0; i < p->n_slots; i++) {
        slot *sl = &s->slots[i];
        sl->ctx = tlm_context_new(m, &cp, err);
        if (!sl->ctx) { serve_sched_free(s); return NULL; }
        s->n_ctx = tlm_context_n_ctx(sl->ctx);
        sl->cache = malloc((size_t)s->n_ctx * sizeof *sl->cache);
        if (!sl->cache) { serve_sched_free(s); goto nomem; }
    }
    s->stats.n_slots = s->n_slots;
    s->stats.max_queue = s->max_queue;
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        serve_sched_free(s);
        if (err) { err->code = TLM_ERR_NOMEM; strcpy(err->msg, "cannot start the scheduler thread"); }
        return NULL;
    }
    s->thread_started = true;
    return s;
nomem:
    free(s);
    if (err) { err->code = TLM_ERR_NOMEM; strcpy(err->msg, "out of memory creating the slots"); }
    return NULL;
}

void serve_sched_stop(serve_sched *s) {
    if (!s || !s->thread_started) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->thread_started = false;
}

void serve_sched_free(serve_sched *s) {
    if (!s) return;
    serve_sched_stop(s);
    if (s->slots) {
        for (int32_t i = 0; i < s->n_slots; i++) {
            tlm_context_free(s->slots[i].ctx);
            free(s->slots[i].cache);
        }
        free(s->slots);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->work);
        pthread_cond_destroy(&s->progress);
    }
    free(s);
}

int32_t serve_sched_n_ctx(const serve_sched *s) { return s->n_ctx; }

serve_job *serve_sched_submit(serve_sched *s, const serve_job_params *p, serve_error *e) {
    if (p->n_prompt <= 0) {
        serve_error_set(e, 400, "invalid_request_error", "invalid_value", NULL, "the prompt tokenizes to nothing");
        return NULL;
    }
    if (p->n_prompt >= s->n_ctx) {
        serve_error_set(e, 400, "invalid_request_error", "context_length_exceeded", "messages",
                        "the prompt is %d tokens and the context holds %d (-c); it leaves no room "
                        "for a reply", p->n_prompt, s->n_ctx);
        return NULL;
    }
    serve_job *j = calloc(1, sizeof *j);
    if (!j) goto nomem;
    j->sched = s;
    j->refs = 2;
    j->n_prompt = p->n_prompt;
    j->prompt = malloc((size_t)p->n_prompt * sizeof *j->prompt);
    if (!j->prompt) goto nomem;
    memcpy(j->prompt, p->prompt, (size_t)p->n_prompt * sizeof *j->prompt);
    tlm_model_info info;
    tlm_model_get_info(s->model, &info);
    tlm_error err = {0};
    j->sampler = tlm_sampler_new(&p->sampling, info.n_vocab, &err);
    if (!j->sampler) {
        serve_error_set(e, 400, "invalid_request_error", "invalid_value", NULL, "%s", err.msg);
        job_free(j);
        return NULL;
    }
    for (int32_t i = 0; i < p->n_prompt; i++) tlm_sampler_accept(j->sampler, p->prompt[i]);
    for (int i = 0; i < p->n_stop && i < SERVE_MAX_STOP; i++) {
        j->stop[i] = strdup(p->stop[i]);
        if (!j->stop[i]) goto nomem;
        j->n_stop = i + 1;
        size_t n = strlen(p->stop[i]);
        if (n > j->max_stop_len) j->max_stop_len = n;
    }
    j->max_tokens = p->max_tokens;
    j->ignore_eos = p->ignore_eos;
    tlm_detok_init(&j->detok, s->model);

    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        serve_error_set(e, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
        job_free(j);
        return NULL;
    }
    int32_t free_slots = 0;
    for (int32_t i = 0; i < s->n_slots; i++) free_slots += s->slots[i].job == NULL;
    /* jobs beyond the free slots wait in the queue, which holds max_queue */
    if (s->q_len - free_slots >= s->max_queue) {
        pthread_mutex_unlock(&s->mu);
        serve_error_set(e, 429, "rate_limit_error", "queue_full", NULL,
                        "all %d slots are busy and %d requests are waiting (--max-queue); try "
                        "again later", s->n_slots, s->max_queue);
        job_free(j);
        return NULL;
    }
    if (s->timeout_s > 0) j->deadline = now_s() + s->timeout_s;
    j->state = JOB_QUEUED;
    if (s->q_tail) s->q_tail->next = j;
    else s->q_head = j;
    s->q_tail = j;
    s->q_len++;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    return j;
nomem:
    if (j) job_free(j);
    serve_error_set(e, 500, "server_error", NULL, NULL, "out of memory queueing the request");
    return NULL;
}

void serve_job_wait(serve_job *j, size_t seen, double wait_s, serve_job_view *v) {
    serve_sched *s = j->sched;
    pthread_mutex_lock(&s->mu);
    struct timespec ts = abs_after(wait_s);
    while (j->visible <= seen && j->state != JOB_DONE)
        if (pthread_cond_timedwait(&s->progress, &s->mu, &ts) == ETIMEDOUT) break;
    memset(v, 0, sizeof *v);
    if (j->visible > seen) {
        v->n_text = j->visible - seen;
        v->text = malloc(v->n_text + 1);
        if (v->text) {
            memcpy(v->text, j->text + seen, v->n_text);
            v->text[v->n_text] = '\0';
        } else {
            v->n_text = 0;
        }
    }
    v->visible = seen + v->n_text;
    v->done = j->state == JOB_DONE && v->visible == j->visible;
    v->finish_reason = j->finish_reason;
    v->failed = j->failed;
    if (j->failed) v->error = j->error;
    v->n_prompt = j->n_prompt;
    v->n_cached = j->n_cached;
    v->n_generated = j->n_generated;
    v->started = j->state != JOB_QUEUED;
    pthread_mutex_unlock(&s->mu);
}

void serve_job_cancel(serve_job *j) {
    serve_sched *s = j->sched;
    pthread_mutex_lock(&s->mu);
    if (j->state != JOB_DONE) {
        j->cancelled = true;
        /* a queued job leaves the queue at once (the scheduler removes it) */
        pthread_cond_signal(&s->work);
    }
    pthread_mutex_unlock(&s->mu);
}

void serve_job_release(serve_job *j) {
    if (!j) return;
    serve_sched *s = j->sched;
    pthread_mutex_lock(&s->mu);
    if (j->state != JOB_DONE) {
        j->cancelled = true;
        pthread_cond_signal(&s->work);
    }
    job_unref_locked(j);
    pthread_mutex_unlock(&s->mu);
}

void serve_sched_get_stats(serve_sched *s, serve_sched_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    out->queue_depth = s->q_len;
    out->slots_busy = 0;
    for (int32_t i = 0; i < s->n_slots; i++) out->slots_busy += s->slots[i].job != NULL;
    pthread_mutex_unlock(&s->mu);
}
