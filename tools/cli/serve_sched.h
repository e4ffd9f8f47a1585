/*
 * serve_sched.h — the slots of `trimlm serve` and the thread that runs them.
 *
 * One loaded model, N slots, each with its own tlm_context (KV cache) and the
 * tokens that cache holds. A request becomes a job: it waits in a bounded
 * FIFO queue until a slot is free, then the scheduler thread runs it a step at
 * a time, round-robin over the busy slots (one prefill chunk of at most
 * n_batch tokens, or one generated token, per slot per step), so that a long
 * prompt does not stall the other streams.
 *
 * A job is admitted to the free slot whose cached tokens share the longest
 * prefix with its prompt (chat clients send the whole conversation again each
 * turn): that prefix stays in the KV cache and only the rest is computed.
 *
 * The HTTP side reads a job's text as it grows (serve_job_wait), and cancels
 * it when the client goes away; the scheduler ends a job at its deadline.
 */
#ifndef TLM_SERVE_SCHED_H
#define TLM_SERVE_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "serve_request.h"
#include "trimlm.h"

typedef struct serve_sched serve_sched;
typedef struct serve_job serve_job;

typedef struct serve_sched_params {
    int32_t n_slots;
    int32_t n_ctx;       /* per slot; 0 = the library's default */
    int32_t n_threads;   /* 0 = physical cores */
    int32_t kv_type;
    int32_t max_queue;   /* jobs waiting beyond the slots */
    double timeout_s;    /* a job's time limit from its arrival; <= 0: none */
} serve_sched_params;

/* Creates the slots' contexts and starts the scheduler thread. */
serve_sched *serve_sched_new(const tlm_model *m, const serve_sched_params *p, tlm_error *err);
/* Stops the thread: running and queued jobs end with a 503 error, later
 * submissions are refused. */
void serve_sched_stop(serve_sched *s);
/* Stops and frees everything; every job must have been released. */
void serve_sched_free(serve_sched *s);
int32_t serve_sched_n_ctx(const serve_sched *s);

/* What a job is given. The prompt and the stop strings are copied. */
typedef struct serve_job_params {
    const int32_t *prompt;
    int32_t n_prompt;
    tlm_sampler_params sampling;
    int64_t max_tokens;  /* -1: until the end of the turn or a full context */
    const char *const *stop;
    int n_stop;
    bool ignore_eos;
} serve_job_params;

/* Queues a job. NULL with e set: 429 when the queue is full, 503 when the
 * server is stopping, 400/500 for bad sampling parameters or no memory. The
 * caller holds a reference and must serve_job_release() it. */
serve_job *serve_sched_submit(serve_sched *s, const serve_job_params *p, serve_error *e);

/* A snapshot of a job's progress. Only text that can no longer become part
 * of a stop string is visible. */
typedef struct serve_job_view {
    char *text;              /* malloc'd copy of the visible bytes after `seen`, NUL-terminated
                                (NULL when none); the caller frees it */
    size_t n_text;
    size_t visible;          /* visible bytes in all */
    bool done;
    const char *finish_reason; /* "stop" or "length" when done without error */
    bool failed;
    serve_error error;       /* when failed */
    int32_t n_prompt, n_cached; /* prompt tokens, of which taken from the KV cache */
    int64_t n_generated;
    bool started;            /* left the queue */
} serve_job_view;

/* Waits until the job has more than `seen` visible bytes, is done, or
 * wait_s passes; then fills *v. */
void serve_job_wait(serve_job *j, size_t seen, double wait_s, serve_job_view *v);
/* The client is gone: the job stops at the next step and frees its slot. */
void serve_job_cancel(serve_job *j);
/* Drops the caller's reference (cancelling the job if it is still running). */
void serve_job_release(serve_job *j);

/* Counters for /metrics. */
typedef struct serve_sched_stats {
    int32_t n_slots, slots_busy, queue_depth, max_queue;
    uint64_t prompt_tokens, cached_tokens, generated_tokens;
    double prefill_seconds, decode_seconds; /* time spent in tlm_decode for each */
    uint64_t jobs_done, jobs_cancelled, jobs_timed_out, jobs_failed;
} serve_sched_stats;

void serve_sched_get_stats(serve_sched *s, serve_sched_stats *out);

#endif
