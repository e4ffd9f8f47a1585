/*
 * kernels.h — the table of compute kernels for one instruction set.
 *
 * kernels_scalar.c is the definition of correct; each ISA file fills the
 * entries it does better and takes the scalar ones for the rest. Kernels hold
 * no OpenMP: a caller hands each thread a slice (rows [r0, r1)).
 */
#ifndef TLM_KERNELS_H
#define TLM_KERNELS_H

#include <stdint.h>

typedef struct tlm_kernels {
    const char *name; /* "scalar", "avx2", "avx512", "neon" */
    /* sum_i a[i]*b[i] */
    float (*dot_f32)(const float *a, const float *b, int64_t n);
    /* y[r] = dot(w + r*n_in, x) for r in [r0, r1); w is (rows, n_in) */
    void (*gemv_f32)(const float *w, const float *x, float *y, int64_t n_in, int64_t r0,
                     int64_t r1);
    /* y[i] += a * x[i] */
    void (*axpy_f32)(float a, const float *x, float *y, int64_t n);
} tlm_kernels;

extern const tlm_kernels tlm_kernels_scalar;
#if defined(TLM_HAVE_X86_KERNELS)
/* Filled from the scalar table for entries an ISA leaves NULL. */
void tlm_kernels_avx2_fill(tlm_kernels *k);
void tlm_kernels_avx512_fill(tlm_kernels *k);
#endif
#if defined(TLM_HAVE_NEON_KERNELS)
void tlm_kernels_neon_fill(tlm_kernels *k);
#endif

/* The table for this CPU, chosen once (thread-safe). TRIMLM_ISA=scalar|avx2|
 * avx512|neon forces a lower set; asking for one the CPU lacks falls back to
 * the best available and says so on stderr once. */
const tlm_kernels *tlm_kernels_best(void);
/* The table for a named ISA if this CPU supports it, else NULL (tests). */
const tlm_kernels *tlm_kernels_for(const char *isa);

#endif
