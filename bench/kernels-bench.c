/*
 * kernels-bench.c — decode GEMV throughput of every kernel table, per weight
 * format, on the shapes of the default model (SmolLM2-135M: hidden 576, FFN
 * 1536, vocabulary 49152), one thread, against a measured memory read
 * bandwidth.
 *
 *   kernels-bench [-i ISA[,ISA...]] [-r REPS] [-m COLD_MIB] [-b BW_MIB] [-o md|json]
 *
 * One GEMV here = quantize the activation (quantize_act_q8_g32) + the GEMV
 * over all rows, as decode does per matmul. Two figures per case:
 *   hot:  the same matrix again and again (in cache): the kernel's compute
 *         ceiling;
 *   cold: a different copy each call, cycling through COLD_MIB (default
 *         1024) of copies, more than the last-level cache holds: what decode
 *         sees, where a model's weights are read once per token.
 * GB/s counts the weight bytes read (packed layout incl. scales; f32: 4 per
 * weight) per second. "of bw" is cold GB/s over the read bandwidth, measured
 * first by summing a BW_MIB (default 1024) buffer with plain C, read as 1, 2,
 * 4 or 8 side-by-side streams, whichever is fastest.
 * Each figure is the mean ± stddev of REPS (default 5) timed repetitions
 * after one warm-up, timed in thread CPU time (see now_s).
 *
 *   kernels-bench -g [-i ISA[,ISA...]] [-r REPS] [-m COLD_MIB] [-t 1,2] [-T TYPE[,TYPE...]]
 *
 * -g: the GGUF-block kernels (gemv_gguf) instead, on the FFN shapes of
 * Qwen2.5-1.5B (8960 x 1536 gate/up, 1536 x 8960 down) with weights laid
 * out as a GGUF file holds them, beside the packed q4_g32_r16 GEMV on the
 * same shapes, at each thread count of -t (default 1,2): one OpenMP
 * parallel region per call, each thread a contiguous slice of rows, as the
 * runtime hands them out; the activation is quantized once per call. Timed
 * in thread CPU time at 1 thread, wall time at more; each figure is the
 * best of REPS repetitions (on a shared machine the best is the least
 * disturbed), cold as above.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <omp.h>

#include "f16.h"
#include "ggml_types.h"
#include "gguf_act.h"
#include "kernels.h"
#include "qformat.h"

/* ------------------------------------------------------------ utilities */

/* The calling thread's CPU time: on a shared machine the time slices other
 * processes take do not count (on an idle one it equals wall time). */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct stats {
    double mean, sd;
} stats;

static stats summarize(const double *v, int n) {
    stats s = {0, 0};
    for (int i = 0; i < n; i++) s.mean += v[i];
    s.mean /= n;
    for (int i = 0; i < n; i++) s.sd += (v[i] - s.mean) * (v[i] - s.mean);
    s.sd = n > 1 ? sqrt(s.sd / (n - 1)) : 0;
    return s;
}

static void *alloc64(size_t n) {
    void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
    if (!p) {
        fprintf(stderr, "kernels-bench: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static uint64_t g_rng = 0x853c49e6748fea9bull;
static float rand_float(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* ------------------------------------------------------- read bandwidth */

/* Sum of 64-bit words over the buffer read as `streams` equal parts side by
 * side (one core keeps more misses in flight over several sequential streams
 * than over one); the compiler vectorizes it for the baseline ISA, far
 * faster than memory. */
static uint64_t sum_words(const uint64_t *p, size_t n, int streams) {
    size_t part = n / (size_t)streams / 8 * 8;
    uint64_t s[8] = {0};
    for (size_t i = 0; i < part; i += 8)
        for (int k = 0; k < streams; k++) {
            const uint64_t *q = p + (size_t)k * part + i;
            /* as far ahead as the GEMV kernels touch their weights; a hint
             * only, so reading past the end is harmless */
            __builtin_prefetch((const char *)q + 16384);
            s[k] += (q[0] + q[1]) + (q[2] + q[3]) + (q[4] + q[5]) + (q[6] + q[7]);
        }
    uint64_t t = 0;
    for (int k = 0; k < 8; k++) t += s[k];
    return t;
}

/* The best mean read rate over 1, 2, 4 and 8 streams: the ceiling a
 * one-thread GEMV can hope for. per_streams[i] gets 2^i streams' figure. */
static stats measure_bandwidth(size_t mib, int reps, stats per_streams[4]) {
    size_t bytes = mib << 20, n = bytes / 8;
    uint64_t *buf = alloc64(bytes);
    for (size_t i = 0; i < n; i++) buf[i] = i; /* fault every page in */
    volatile uint64_t sink = 0;
    stats best = {0, 0};
    for (int si = 0; si < 4; si++) {
        int streams = 1 << si;
        sink += sum_words(buf, n, streams); /* warm-up */
        double gbs[64];
        for (int r = 0; r < reps; r++) {
            double t0 = now_s();
            sink += sum_words(buf, n, streams);
            gbs[r] = (double)(n / (size_t)streams / 8 * 8 * (size_t)streams * 8) / (now_s() - t0) * 1e-9;
        }
        per_streams[si] = summarize(gbs, reps);
        if (per_streams[si].mean > best.mean) best = per_streams[si];
    }
    (void)sink;
    free(buf);
    return best;
}

/* ----------------------------------------------------------------- GEMV */

typedef enum fmt { FMT_F32, FMT_Q8, FMT_Q4 } fmt;
static const char *fmt_name(fmt f) { return f == FMT_F32 ? "f32" : f == FMT_Q8 ? "q8_g32_r16" : "q4_g32_r16"; }

typedef struct shape {
    int64_t rows, n_in;
    const char *what;
} shape;

static const shape SHAPES[] = {
    {576, 576, "attn q/o"},
    {1536, 576, "ffn gate/up"},
    {576, 1536, "ffn down"},
    {49152, 576, "output"},
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

static size_t matrix_bytes(fmt f, const shape *s) {
    if (f == FMT_F32) return (size_t)(s->rows * s->n_in) * 4;
    return tlm_qpacked_bytes(f == FMT_Q8 ? TLM_Q8_G32 : TLM_Q4_G32, s->rows, s->n_in);
}

static void one_gemv(const tlm_kernels *k, fmt f, const void *w, const float *x, void *xq, float *y,
                     const shape *s) {
    if (f == FMT_F32) {
        k->gemv_f32(w, x, y, s->n_in, 0, s->rows);
        return;
    }
    k->quantize_act_q8_g32(x, xq, s->n_in);
    if (f == FMT_Q8)
        k->gemv_q8_g32_r16(w, xq, y, s->n_in, 0, s->rows);
    else
        k->gemv_q4_g32_r16(w, xq, y, s->n_in, 0, s->rows);
}

/* GB/s of weight bytes over calls that read `copies` matrices in turn,
 * enough calls for >= min_bytes per repetition. */
static stats time_gemv(const tlm_kernels *k, fmt f, uint8_t *const *mats, int copies,
                       size_t bytes, const shape *s, const float *x, void *xq, float *y,
                       size_t min_bytes, int reps) {
    int64_t calls = (int64_t)((min_bytes + bytes - 1) / bytes);
    if (calls < copies) calls = copies;
    double gbs[64];
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        double t0 = now_s();
        for (int64_t c = 0; c < calls; c++) one_gemv(k, f, mats[c % copies], x, xq, y, s);
        double dt = now_s() - t0;
        if (r >= 0) gbs[r] = (double)bytes * (double)calls / dt * 1e-9;
    }
    return summarize(gbs, reps);
}

/* ------------------------------------------------- GGUF blocks (-g) */

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct gguf_case {
    const char *name; /* GGML type name, or "q4_g32_r16" (trimlm's packed int4) */
    uint32_t type;    /* GGML type; GGML_TYPE_COUNT for q4_g32_r16 */
} gguf_case;

static const gguf_case GGUF_CASES[] = {
    {"Q4_K", GGML_TYPE_Q4_K}, {"Q6_K", GGML_TYPE_Q6_K}, {"Q8_0", GGML_TYPE_Q8_0},
    {"Q5_0", GGML_TYPE_Q5_0}, {"Q4_0", GGML_TYPE_Q4_0}, {"Q5_K", GGML_TYPE_Q5_K},
    {"Q4_1", GGML_TYPE_Q4_1}, {"Q5_1", GGML_TYPE_Q5_1}, {"Q3_K", GGML_TYPE_Q3_K},
    {"Q2_K", GGML_TYPE_Q2_K}, {"F16", GGML_TYPE_F16},   {"BF16", GGML_TYPE_BF16},
    {"q4_g32_r16", GGML_TYPE_COUNT},
};
#define N_GGUF_CASES (sizeof GGUF_CASES / sizeof GGUF_CASES[0])

static const shape GGUF_SHAPES[] = {
    {8960, 1536, "ffn gate/up (Qwen2.5-1.5B)"},
    {1536, 8960, "ffn down (Qwen2.5-1.5B)"},
};

/* A rows x n_in matrix of `type` with random quants and finite scales (the
 * kernels' speed does not depend on the values). */
static void fill_gguf(uint32_t type, uint8_t *w, size_t bytes) {
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)(rand_float() * 127.0f + 128.0f);
    size_t bb = ggml_block_bytes(type);
    size_t at = type == GGML_TYPE_Q6_K ? 208 : type == GGML_TYPE_Q3_K ? 108 : type == GGML_TYPE_Q2_K ? 80 : 0;
    uint16_t small = tlm_f32_to_f16(0.01f);
    if (type == GGML_TYPE_F16 || type == GGML_TYPE_BF16) {
        for (size_t i = 0; i + 2 <= bytes; i += 2) {
            uint16_t h = type == GGML_TYPE_F16 ? tlm_f32_to_f16(rand_float()) : tlm_f32_to_bf16(rand_float());
            memcpy(w + i, &h, 2);
        }
        return;
    }
    for (size_t off = 0; off + bb <= bytes; off += bb) {
        memcpy(w + off + at, &small, 2);
        if (type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1 || type == GGML_TYPE_Q4_K ||
            type == GGML_TYPE_Q5_K || type == GGML_TYPE_Q2_K)
            memcpy(w + off + at + 2, &small, 2);
    }
}

/* One decode matmul: quantize x once, then rows split over nt threads
 * (slices on multiples of 16 rows, which the packed format needs). */
static void gguf_call(const tlm_kernels *k, const gguf_case *gc, const void *w, const float *x, void *xq,
                      float *y, const shape *s, int nt) {
    const void *act = x;
    if (gc->type == GGML_TYPE_COUNT) {
        k->quantize_act_q8_g32(x, xq, s->n_in);
        act = xq;
    } else {
        tlm_gguf_act kind = tlm_gguf_act_kind(gc->type);
        if (kind == TLM_GGUF_ACT_Q8_G32) k->quantize_act_q8_g32(x, xq, s->n_in), act = xq;
        else if (kind == TLM_GGUF_ACT_Q8_K256) k->quantize_act_q8_k256(x, xq, s->n_in), act = xq;
    }
#pragma omp parallel num_threads(nt)
    {
        int i = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t r0 = s->rows * i / n / 16 * 16, r1 = i + 1 == n ? s->rows : s->rows * (i + 1) / n / 16 * 16;
        if (gc->type == GGML_TYPE_COUNT) k->gemv_q4_g32_r16(w, act, y, s->n_in, r0, r1);
        else k->gemv_gguf[gc->type](w, act, y, s->n_in, r0, r1);
    }
}

/* Best GB/s over reps of `calls` calls cycling through `copies` matrices. */
static double gguf_time(const tlm_kernels *k, const gguf_case *gc, uint8_t *const *mats, int copies,
                        size_t bytes, const shape *s, const float *x, void *xq, float *y, size_t min_bytes,
                        int reps, int nt) {
    int64_t calls = (int64_t)((min_bytes + bytes - 1) / bytes);
    if (calls < copies) calls = copies;
    double best = 0;
    /* one thread: its CPU time, as the rest of this tool (time slices that
     * other processes take do not count); more: wall time */
    double (*clock_s)(void) = nt == 1 ? now_s : wall_s;
    for (int r = -1; r < reps; r++) {
        double t0 = clock_s();
        for (int64_t c = 0; c < calls; c++) gguf_call(k, gc, mats[c % copies], x, xq, y, s, nt);
        double gbs = (double)bytes * (double)calls / (clock_s() - t0) * 1e-9;
        if (r >= 0 && gbs > best) best = gbs;
    }
    return best;
}

static bool in_list(const char *list, const char *name) {
    if (!list) return true;
    size_t len = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += len)
        if ((p == list || p[-1] == ',') && (p[len] == 0 || p[len] == ',')) return true;
    return false;
}

static int run_gguf(const tlm_kernels *const *tables, int n_tables, const char *types, const char *threads,
                    int reps, size_t cold_mib, size_t bw_mib, bool json) {
    int thread_counts[8], n_tc = 0;
    for (const char *p = threads; *p && n_tc < 8;) {
        int v = atoi(p);
        if (v < 1 || v > 1024) {
            fprintf(stderr, "kernels-bench: bad thread count in -t %s\n", threads);
            return 2;
        }
        thread_counts[n_tc++] = v;
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    /* the 1-thread ceiling, timed as the 1-thread rows are (CPU time) */
    stats per_streams[4];
    stats bw = measure_bandwidth(bw_mib, reps, per_streams);
    if (json) printf("{\"read_bandwidth_gbs\": %.2f, \"results\": [", bw.mean);
    else {
        printf("read bandwidth (1 thread, CPU time, sum over %zu MiB): %.1f ± %.1f GB/s\n", bw_mib, bw.mean, bw.sd);
        printf("GGUF-block GEMV, best of %d (1 thread: CPU time, more: wall time); GB/s of weight bytes read "
               "(cold: %zu MiB of copies); of bw: 1-thread cold over the read bandwidth\n\n",
               reps, cold_mib);
        printf("| isa | type | rows x n_in | matrix | MiB | threads | hot GB/s | cold GB/s | of bw | cold us/call |\n");
        printf("|---|---|---|---|---:|---:|---:|---:|---:|---:|\n");
    }
    int n_out = 0;
    for (size_t si = 0; si < sizeof GGUF_SHAPES / sizeof GGUF_SHAPES[0]; si++) {
        const shape *s = &GGUF_SHAPES[si];
        float *x = alloc64((size_t)s->n_in * 4), *y = alloc64((size_t)s->rows * 4);
        void *xq = alloc64(tlm_gguf_act_row_bytes(TLM_GGUF_ACT_Q8_K256, s->n_in) +
                           (size_t)(s->n_in / 32) * sizeof(tlm_block_q8_g32_act));
        for (int64_t i = 0; i < s->n_in; i++) x[i] = rand_float();
        for (size_t ci = 0; ci < N_GGUF_CASES; ci++) {
            const gguf_case *gc = &GGUF_CASES[ci];
            if (!in_list(types, gc->name)) continue;
            size_t bytes;
            uint64_t rb = 0;
            float *wf = NULL;
            if (gc->type == GGML_TYPE_COUNT) {
                bytes = tlm_qpacked_bytes(TLM_Q4_G32, s->rows, s->n_in);
            } else {
                if (!ggml_row_bytes(gc->type, (uint64_t)s->n_in, &rb)) continue;
                bytes = (size_t)rb * (size_t)s->rows;
            }
            int copies = (int)(((cold_mib << 20) + bytes - 1) / bytes);
            uint8_t **mats = malloc((size_t)copies * sizeof *mats);
            mats[0] = alloc64(bytes);
            if (gc->type == GGML_TYPE_COUNT) {
                wf = alloc64((size_t)(s->rows * s->n_in) * 4);
                for (int64_t i = 0; i < s->rows * s->n_in; i++) wf[i] = rand_float();
                tlm_qquantize_pack(TLM_Q4_G32, wf, s->rows, s->n_in, mats[0]);
                free(wf);
            } else {
                fill_gguf(gc->type, mats[0], bytes);
            }
            for (int c = 1; c < copies; c++) {
                mats[c] = alloc64(bytes);
                memcpy(mats[c], mats[0], bytes);
            }
            for (int t = 0; t < n_tables; t++) {
                const tlm_kernels *k = tables[t];
                bool slow = !strcmp(k->name, "scalar");
                for (int ti = 0; ti < n_tc; ti++) {
                    int nt = thread_counts[ti];
                    size_t hot_bytes = (size_t)(slow ? 32 : 512) << 20;
                    size_t cold_bytes = (cold_mib << 20) / (slow ? 16 : 1);
                    double hot = gguf_time(k, gc, mats, 1, bytes, s, x, xq, y, hot_bytes, reps, nt);
                    double cold = gguf_time(k, gc, mats, copies, bytes, s, x, xq, y, cold_bytes, reps, nt);
                    double us = (double)bytes / (cold * 1e9) * 1e6;
                    if (json)
                        printf("%s\n  {\"isa\": \"%s\", \"type\": \"%s\", \"rows\": %lld, \"n_in\": %lld, "
                               "\"bytes\": %zu, \"threads\": %d, \"hot_gbs\": %.2f, \"cold_gbs\": %.2f}",
                               n_out++ ? "," : "", k->name, gc->name, (long long)s->rows, (long long)s->n_in,
                               bytes, nt, hot, cold);
                    else
                    {
                        char of_bw[16] = "-";
                        if (nt == 1) snprintf(of_bw, sizeof of_bw, "%.0f%%", 100.0 * cold / bw.mean);
                        printf("| %s | %s | %lld x %lld | %s | %.2f | %d | %.1f | %.1f | %s | %.1f |\n", k->name,
                               gc->name, (long long)s->rows, (long long)s->n_in, s->what,
                               (double)bytes / (1 << 20), nt, hot, cold, of_bw, us);
                    }
                    fflush(stdout);
                }
            }
            for (int c = 0; c < copies; c++) free(mats[c]);
            free(mats);
        }
        free(x);
        free(y);
        free(xq);
    }
    if (json) printf("\n]}\n");
    return 0;
}

/* ------------------------------------------------------------------ CLI */

static void usage(void) {
    fprintf(stderr, "usage: kernels-bench [-i ISA[,ISA...]] [-r REPS] [-m COLD_MIB] [-b BW_MIB] "
                    "[-o md|json]\n       kernels-bench -g [-i ISA[,ISA...]] [-r REPS] [-m COLD_MIB] "
                    "[-t THREADS[,...]] [-T TYPE[,TYPE...]] [-o md|json]\n  ISA: scalar, avx2, avx512, "
                    "neon (default: all this CPU runs); REPS 1..64; TYPE: Q4_K, Q6_K, Q8_0, Q5_0, Q4_0, "
                    "Q5_K, Q4_1, Q5_1, Q3_K, Q2_K, F16, BF16, q4_g32_r16\n");
}

int main(int argc, char **argv) {
    const char *isa_list = NULL, *out = "md", *gguf_types = NULL, *threads = "1,2";
    bool gguf = false;
    int reps = 5;
    size_t cold_mib = 1024, bw_mib = 1024;
    for (int i = 1; i < argc; i++) { /* -g alone; every other flag takes a value */
        const char *a = argv[i];
        if (!strcmp(a, "-g")) {
            gguf = true;
            continue;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        if (!strcmp(a, "-i")) isa_list = v;
        else if (!strcmp(a, "-r")) reps = atoi(v);
        else if (!strcmp(a, "-m")) cold_mib = (size_t)atol(v);
        else if (!strcmp(a, "-b")) bw_mib = (size_t)atol(v);
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "-t")) threads = v;
        else if (!strcmp(a, "-T")) gguf_types = v;
        else {
            usage();
            return 2;
        }
    }
    bool json = !strcmp(out, "json");
    if (reps < 1 || reps > 64 || cold_mib < 1 || bw_mib < 1 || (!json && strcmp(out, "md"))) {
        usage();
        return 2;
    }

    const tlm_kernels *tables[4];
    int n_tables = 0;
    static const char *all[] = {"scalar", "avx2", "avx512", "neon"};
    for (int i = 0; i < 4; i++) {
        if (isa_list) {
            /* whole-word match in the comma list */
            const char *p = isa_list;
            size_t len = strlen(all[i]);
            bool want = false;
            while ((p = strstr(p, all[i]))) {
                bool start = p == isa_list || p[-1] == ',', end = p[len] == 0 || p[len] == ',';
                if (start && end) want = true;
                p += len;
            }
            if (!want) continue;
        }
        const tlm_kernels *k = tlm_kernels_for(all[i]);
        if (k) tables[n_tables++] = k;
        else if (isa_list) fprintf(stderr, "kernels-bench: %s is not available on this CPU\n", all[i]);
    }
    if (!n_tables) {
        fprintf(stderr, "kernels-bench: no kernel table to run\n");
        return 1;
    }

    if (gguf) return run_gguf(tables, n_tables, gguf_types, threads, reps, cold_mib, bw_mib, json);

    stats per_streams[4];
    stats bw = measure_bandwidth(bw_mib, reps, per_streams);
    if (json)
        printf("{\"read_bandwidth_gbs\": %.2f, \"read_bandwidth_sd\": %.2f, \"read_gbs_by_streams\": "
               "[%.2f, %.2f, %.2f, %.2f], \"threads\": 1, \"results\": [",
               bw.mean, bw.sd, per_streams[0].mean, per_streams[1].mean, per_streams[2].mean,
               per_streams[3].mean);
    else {
        printf("read bandwidth (1 thread, sum over %zu MiB): %.1f ± %.1f GB/s (best of 1/2/4/8 streams: "
               "%.1f / %.1f / %.1f / %.1f)\n\n",
               bw_mib, bw.mean, bw.sd, per_streams[0].mean, per_streams[1].mean, per_streams[2].mean,
               per_streams[3].mean);
        printf("| isa | format | rows x n_in | matrix | MiB | hot GB/s | cold GB/s | of bw | cold us/call |\n");
        printf("|---|---|---|---|---:|---:|---:|---:|---:|\n");
    }

    int n_out = 0;
    for (size_t si = 0; si < N_SHAPES; si++) {
        const shape *s = &SHAPES[si];
        float *x = alloc64((size_t)s->n_in * 4), *y = alloc64((size_t)s->rows * 4);
        void *xq = alloc64((size_t)(s->n_in / 32) * sizeof(tlm_block_q8_g32_act));
        for (int64_t i = 0; i < s->n_in; i++) x[i] = rand_float();
        float *wf = alloc64((size_t)(s->rows * s->n_in) * 4);
        for (int64_t i = 0; i < s->rows * s->n_in; i++) wf[i] = rand_float();
        for (fmt f = FMT_F32; f <= FMT_Q4; f++) {
            size_t bytes = matrix_bytes(f, s);
            int copies = (int)(((cold_mib << 20) + bytes - 1) / bytes);
            uint8_t **mats = malloc((size_t)copies * sizeof *mats);
            mats[0] = alloc64(bytes);
            if (f == FMT_F32) memcpy(mats[0], wf, bytes);
            else tlm_qquantize_pack(f == FMT_Q8 ? TLM_Q8_G32 : TLM_Q4_G32, wf, s->rows, s->n_in, mats[0]);
            for (int c = 1; c < copies; c++) {
                mats[c] = alloc64(bytes);
                memcpy(mats[c], mats[0], bytes);
            }
            for (int t = 0; t < n_tables; t++) {
                const tlm_kernels *k = tables[t];
                /* the scalar table runs at a few GB/s: it reads fewer bytes
                 * per repetition (its cold figure is compute-bound anyway) */
                bool slow = !strcmp(k->name, "scalar");
                size_t hot_bytes = (size_t)(slow ? 32 : 256) << 20;
                size_t cold_bytes = (cold_mib << 20) / (slow ? 16 : 1);
                stats hot = time_gemv(k, f, mats, 1, bytes, s, x, xq, y, hot_bytes, reps);
                stats cold = time_gemv(k, f, mats, copies, bytes, s, x, xq, y, cold_bytes, reps);
                double us = (double)bytes / (cold.mean * 1e9) * 1e6;
                if (json)
                    printf("%s\n  {\"isa\": \"%s\", \"format\": \"%s\", \"rows\": %lld, \"n_in\": %lld, "
                           "\"matrix\": \"%s\", \"bytes\": %zu, \"hot_gbs\": %.2f, \"hot_sd\": %.2f, "
                           "\"cold_gbs\": %.2f, \"cold_sd\": %.2f, \"fraction_of_bw\": %.3f}",
                           n_out++ ? "," : "", k->name, fmt_name(f), (long long)s->rows,
                           (long long)s->n_in, s->what, bytes, hot.mean, hot.sd, cold.mean, cold.sd,
                           cold.mean / bw.mean);
                else
                    printf("| %s | %s | %lld x %lld | %s | %.2f | %.1f ± %.1f | %.1f ± %.1f | %.0f%% | %.1f |\n",
                           k->name, fmt_name(f), (long long)s->rows, (long long)s->n_in, s->what,
                           (double)bytes / (1 << 20), hot.mean, hot.sd, cold.mean, cold.sd,
                           100.0 * cold.mean / bw.mean, us);
                fflush(stdout);
            }
            for (int c = 0; c < copies; c++) free(mats[c]);
            free(mats);
        }
        free(x);
        free(y);
        free(xq);
        free(wf);
    }
    if (json) printf("\n]}\n");
    return 0;
}
