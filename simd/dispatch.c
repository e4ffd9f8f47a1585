/*
 * dispatch.c — choosing the kernel table at start-up. Compiled without ISA
 * flags: it only asks the CPU (CPUID + XGETBV, so the OS is known to save the
 * wider registers) or the kernel (HWCAP) what may run.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#if defined(TLM_HAVE_X86_KERNELS)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static bool cpu_has_avx2(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
    if (!osxsave || !fma || !f16c) return false;
    if ((xgetbv0() & 0x6) != 0x6) return false; /* XMM + YMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return b & (1u << 5);
}

static bool cpu_has_avx512(void) {
    unsigned a, b, c, d;
    if (!cpu_has_avx2()) return false;
    if ((xgetbv0() & 0xe6) != 0xe6) return false; /* + opmask, ZMM0-15 hi, ZMM16-31 */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    bool vnni = c & (1u << 11);
    /* BF16 (Zen 4+, Sapphire Rapids+) is not required: no kernel uses it yet,
     * and Ice Lake class servers have everything else. */
    return f && dq && bw && vl && vnni;
}
#endif

#if defined(TLM_HAVE_NEON_KERNELS)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
static bool cpu_has_neon(void) { return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0; }
#endif

static tlm_kernels g_avx2, g_avx512, g_neon;
static bool g_have_avx2, g_have_avx512, g_have_neon;
static const tlm_kernels *g_best;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* The detected table with that name, or NULL. Called by detect() itself, so
 * it must not go through pthread_once (that would wait on itself). */
static const tlm_kernels *table_named(const char *isa) {
    if (!strcmp(isa, "scalar")) return &tlm_kernels_scalar;
    if (!strcmp(isa, "avx2") && g_have_avx2) return &g_avx2;
    if (!strcmp(isa, "avx512") && g_have_avx512) return &g_avx512;
    if (!strcmp(isa, "neon") && g_have_neon) return &g_neon;
    return NULL;
}

static void detect(void) {
#if defined(TLM_HAVE_X86_KERNELS)
    if (cpu_has_avx2()) {
        g_avx2 = tlm_kernels_scalar;
        tlm_kernels_avx2_fill(&g_avx2);
        g_have_avx2 = true;
    }
    if (cpu_has_avx512()) {
        g_avx512 = g_have_avx2 ? g_avx2 : tlm_kernels_scalar;
        tlm_kernels_avx512_fill(&g_avx512);
        g_have_avx512 = true;
    }
#endif
#if defined(TLM_HAVE_NEON_KERNELS)
    if (cpu_has_neon()) {
        g_neon = tlm_kernels_scalar;
        tlm_kernels_neon_fill(&g_neon);
        g_have_neon = true;
    }
#endif
    const tlm_kernels *best = g_have_avx512 ? &g_avx512
                            : g_have_avx2   ? &g_avx2
                            : g_have_neon   ? &g_neon
                                            : &tlm_kernels_scalar;
    const char *want = getenv("TRIMLM_ISA");
    if (want && *want) {
        const tlm_kernels *forced = table_named(want);
        if (forced)
            best = forced;
        else
            fprintf(stderr, "trimlm: TRIMLM_ISA=%s is not available on this CPU; using %s\n",
                    want, best->name);
    }
    g_best = best;
}

const tlm_kernels *tlm_kernels_for(const char *isa) {
    pthread_once(&g_once, detect);
    return table_named(isa);
}

const tlm_kernels *tlm_kernels_best(void) {
    pthread_once(&g_once, detect);
    return g_best;
}
