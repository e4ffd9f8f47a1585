/* kernels_gguf_avx2.c — the GGUF-block kernels for AVX2 + FMA + F16C
 * (simd/gguf_x86.h, with madd + add where AVX-512 VNNI has vpdpwssd). */
#define GGUF_SFX _avx2
#define GGUF_VNNI 0
#include "gguf_x86.h"

void tlm_gguf_avx2_fill(tlm_kernels *k) { gguf_x86_fill_avx2(k); }
