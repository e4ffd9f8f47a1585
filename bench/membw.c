/*
 * membw.c — `trimlm-membw`: memory read bandwidth, the ceiling of decode speed.
 *
 * Decoding one token reads every weight once, so tokens/s can be at most
 * bandwidth / bytes-per-token. This tool measures that bandwidth the way a
 * GEMV can see it at best: a read of a buffer (default 1 GiB, far larger
 * than any cache; pass the model's bytes per token as --size-mib to measure
 * the working set a decode really has, which a large last-level cache may
 * partly hold), split into one contiguous slice per OpenMP thread, repeated
 * over several passes. A core keeps more misses in flight over several
 * streams, and with software prefetch, than over one plain stream, so each
 * thread count is measured with every access pattern below and the best
 * pattern's median is THE bandwidth: a ceiling measured with a weaker read
 * than the runtime's own kernels would flatter them.
 *
 *   patterns: 1, 4 and 8 concurrent streams per thread, each with and
 *   without prefetching 16 KiB ahead (the runtime's GEMV reads 4 streams
 *   with that prefetch distance, simd/kernels_avx512.c).
 *
 * Output: one JSON object on stdout with, per thread count, best / median /
 * worst GB/s (1e9 bytes/s) of the best pattern and the median of every
 * pattern.
 *
 *   trimlm-membw [--size-mib 1024] [--passes 10] [-t 1,2] [--small-pages]
 */
#include <errno.h>
#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* ------------------------------------------------------------ options */

#define MEMBW_MAX_THREAD_COUNTS 16

typedef struct membw_options {
    int64_t size_mib;                         /* buffer size in MiB */
    int64_t passes;                           /* timed reads of the whole buffer */
    int threads[MEMBW_MAX_THREAD_COUNTS];     /* thread counts to measure */
    int n_threads;
    bool small_pages;                         /* do not ask for 2 MiB pages */
} membw_options;

static const char membw_usage[] =
    "usage: trimlm-membw [--size-mib N] [--passes N] [-t LIST]\n"
    "\n"
    "Measures memory read bandwidth (GB/s = 1e9 bytes/s) over one buffer with\n"
    "several access patterns and prints it as JSON (the best pattern's median\n"
    "is the bandwidth).\n"
    "\n"
    "  --size-mib N   buffer size in MiB (default 1024, at least 64)\n"
    "  --passes N     timed passes over the buffer per thread count (default 10)\n"
    "  -t LIST        comma-separated thread counts (default: 1 and the OpenMP maximum)\n"
    "  --small-pages  do not ask the kernel for 2 MiB pages (madvise)\n"
    "  -h, --help     this help\n";

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "trimlm-membw: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return 2;
}

static bool parse_int(const char *text, int64_t lo, int64_t hi, int64_t *out) {
    errno = 0;
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* Returns -1 to go on, else an exit code. */
static int parse_membw_args(int argc, char **argv, membw_options *o) {
    *o = (membw_options){.size_mib = 1024, .passes = 10};
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            fputs(membw_usage, stdout);
            return 0;
        }
        if (strcmp(flag, "--small-pages") == 0) {
            o->small_pages = true;
            continue;
        }
        bool known = strcmp(flag, "--size-mib") == 0 || strcmp(flag, "--passes") == 0 ||
                     strcmp(flag, "-t") == 0 || strcmp(flag, "--threads") == 0;
        if (!known) return usage_error("unknown option '%s' (see trimlm-membw --help)", flag);
        if (i + 1 >= argc) return usage_error("missing value for %s", flag);
        const char *val = argv[++i];
        if (strcmp(flag, "--size-mib") == 0) {
            if (!parse_int(val, 64, 1 << 20, &o->size_mib))
                return usage_error("invalid value '%s' for --size-mib (expected an integer >= 64)", val);
        } else if (strcmp(flag, "--passes") == 0) {
            if (!parse_int(val, 1, 100000, &o->passes))
                return usage_error("invalid value '%s' for --passes (expected a positive integer)", val);
        } else {
            char buf[256];
            snprintf(buf, sizeof buf, "%s", val);
            o->n_threads = 0;
            for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                int64_t t;
                if (o->n_threads == MEMBW_MAX_THREAD_COUNTS || !parse_int(tok, 1, 4096, &t))
                    return usage_error("invalid value '%s' for -t (expected a comma-separated "
                                       "list of at most 16 positive integers)", val);
                o->threads[o->n_threads++] = (int)t;
            }
            if (o->n_threads == 0)
                return usage_error("invalid value '%s' for -t (expected a comma-separated list "
                                   "of positive integers)", val);
        }
    }
    if (o->n_threads == 0) {
        o->threads[o->n_threads++] = 1;
        if (omp_get_max_threads() > 1) o->threads[o->n_threads++] = omp_get_max_threads();
    }
    return -1;
}

/* ------------------------------------------------------------ reading */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One access pattern: `streams` equal parts of a thread's slice read side
 * by side, 256 bytes of each per step, optionally prefetching ahead. */
typedef struct read_pattern {
    int streams;
    bool prefetch;
} read_pattern;

static const read_pattern PATTERNS[] = {
    {1, false}, {1, true}, {4, false}, {4, true}, {8, false}, {8, true},
};
#define N_PATTERNS ((int)(sizeof PATTERNS / sizeof PATTERNS[0]))
#define MAX_STREAMS 8
#define STEP_WORDS 32          /* 256 bytes of one stream per step */
#define PREFETCH_AHEAD_BYTES 16384

/* 64-byte vectors: whatever the target's widest loads are, the compiler
 * splits these; the loop is memory-bound either way. */
typedef uint64_t v8u64 __attribute__((vector_size(64)));

/* Sum of every word of buf[i0..i1) read as `streams` parts side by side.
 * Every byte is loaded and the result is used (printed), so the compiler
 * cannot drop the reads. */
static uint64_t read_slice(const uint64_t *buf, size_t i0, size_t i1, read_pattern pat) {
    size_t n = i1 - i0;
    size_t part = n / (size_t)pat.streams / STEP_WORDS * STEP_WORDS; /* words per stream */
    v8u64 acc[MAX_STREAMS] = {{0}};
    const uint64_t *base[MAX_STREAMS];
    for (int s = 0; s < pat.streams; s++) base[s] = buf + i0 + (size_t)s * part;
    for (size_t w = 0; w < part; w += STEP_WORDS) {
        for (int s = 0; s < pat.streams; s++) {
            const uint64_t *p = base[s] + w;
            if (pat.prefetch)
                for (int l = 0; l < STEP_WORDS * 8; l += 64)
                    __builtin_prefetch((const char *)p + PREFETCH_AHEAD_BYTES + l, 0, 3);
            v8u64 v0, v1, v2, v3;
            memcpy(&v0, p, 64);
            memcpy(&v1, p + 8, 64);
            memcpy(&v2, p + 16, 64);
            memcpy(&v3, p + 24, 64);
            acc[s] += (v0 + v1) + (v2 + v3);
        }
    }
    uint64_t sum = 0;
    for (size_t i = i0 + part * (size_t)pat.streams; i < i1; i++) sum += buf[i]; /* tail */
    for (int s = 0; s < pat.streams; s++)
        for (int k = 0; k < 8; k++) sum += acc[s][k];
    return sum;
}

/* The slice split matches how the runtime gives each thread its own rows of
 * a matrix. */
static uint64_t read_buffer(const uint64_t *buf, size_t n, int threads, read_pattern pat) {
    uint64_t acc = 0;
#pragma omp parallel num_threads(threads) reduction(+ : acc)
    {
        int ith = omp_get_thread_num(), nth = omp_get_num_threads();
        size_t i0 = n * (size_t)ith / (size_t)nth, i1 = n * (size_t)(ith + 1) / (size_t)nth;
        acc += read_slice(buf, i0, i1, pat);
    }
    return acc;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* -------------------------------------------------------------- main */

int main(int argc, char **argv) {
    membw_options o;
    int rc = parse_membw_args(argc, argv, &o);
    if (rc >= 0) return rc;

    size_t bytes = (size_t)o.size_mib << 20;
    size_t n_words = bytes / sizeof(uint64_t);
    uint64_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, bytes) != 0) {
        fprintf(stderr, "trimlm-membw: cannot allocate a buffer of %lld MiB\n", (long long)o.size_mib);
        return 1;
    }
#ifdef MADV_HUGEPAGE
    /* 2 MiB pages where the kernel offers them only on request (THP
     * "madvise"): with 4 KiB pages a TLB miss every 4 KiB, not the memory,
     * can be what limits one thread. --small-pages measures without them,
     * as a runtime whose weights sit on 4 KiB pages sees it. Failure only
     * means small pages. */
    if (!o.small_pages) madvise(buf, bytes, MADV_HUGEPAGE);
#endif
    /* Written by all threads, each its own slice, so that the pages are
     * mapped (and on a NUMA machine placed) before any timing. */
    int max_threads = 1;
    for (int t = 0; t < o.n_threads; t++)
        if (o.threads[t] > max_threads) max_threads = o.threads[t];
#pragma omp parallel num_threads(max_threads)
    {
        int ith = omp_get_thread_num(), nth = omp_get_num_threads();
        size_t i0 = n_words * (size_t)ith / (size_t)nth, i1 = n_words * (size_t)(ith + 1) / (size_t)nth;
        for (size_t i = i0; i < i1; i++) buf[i] = i * 0x9E3779B97F4A7C15ull;
    }

    double *gbps = malloc((size_t)o.passes * sizeof *gbps);
    if (!gbps) { free(buf); fprintf(stderr, "trimlm-membw: out of memory\n"); return 1; }
    uint64_t checksum = 0;
    printf("{\"buffer_bytes\": %zu, \"passes\": %lld, \"huge_pages_requested\": %s, \"results\": [",
           bytes, (long long)o.passes, o.small_pages ? "false" : "true");
    for (int t = 0; t < o.n_threads; t++) {
        double best[3] = {0}; /* best, median, worst GB/s of the best pattern */
        int best_pattern = 0;
        double pattern_median[N_PATTERNS];
        for (int k = 0; k < N_PATTERNS; k++) {
            checksum += read_buffer(buf, n_words, o.threads[t], PATTERNS[k]); /* warm-up */
            for (int64_t p = 0; p < o.passes; p++) {
                double t0 = now_seconds();
                checksum += read_buffer(buf, n_words, o.threads[t], PATTERNS[k]);
                double seconds = now_seconds() - t0;
                gbps[p] = (double)bytes / seconds / 1e9;
            }
            qsort(gbps, (size_t)o.passes, sizeof *gbps, compare_doubles);
            double median = o.passes % 2 ? gbps[o.passes / 2]
                                         : 0.5 * (gbps[o.passes / 2 - 1] + gbps[o.passes / 2]);
            pattern_median[k] = median;
            if (median > best[1]) {
                best[0] = gbps[o.passes - 1], best[1] = median, best[2] = gbps[0];
                best_pattern = k;
            }
        }
        printf("%s\n  {\"threads\": %d, \"best_gb_per_s\": %.2f, \"median_gb_per_s\": %.2f, "
               "\"worst_gb_per_s\": %.2f, \"pattern\": \"%d stream%s%s\", \"patterns\": {",
               t ? "," : "", o.threads[t], best[0], best[1], best[2],
               PATTERNS[best_pattern].streams, PATTERNS[best_pattern].streams > 1 ? "s" : "",
               PATTERNS[best_pattern].prefetch ? " + prefetch" : "");
        for (int k = 0; k < N_PATTERNS; k++)
            printf("%s\"%d stream%s%s\": %.2f", k ? ", " : "", PATTERNS[k].streams,
                   PATTERNS[k].streams > 1 ? "s" : "",
                   PATTERNS[k].prefetch ? " + prefetch" : "", pattern_median[k]);
        printf("}}");
    }
    printf("\n], \"checksum\": \"%016llx\"}\n", (unsigned long long)checksum);
    free(gbps);
    free(buf);
    return 0;
}
