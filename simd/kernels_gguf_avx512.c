/* kernels_gguf_avx512.c — the GGUF-block kernels for the AVX-512 table:
 * simd/gguf_x86.h on ymm registers with AVX512-VL VNNI (vpdpwssd,
 * vpdpbusd). */
#define GGUF_SFX _avx512
#define GGUF_VNNI 1
#include "gguf_x86.h"

void tlm_gguf_avx512_fill(tlm_kernels *k) { gguf_x86_fill_avx512(k); }
