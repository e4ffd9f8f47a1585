/*
 * gguf_act.h — the int8 activation format that the kernels computing on
 * GGUF's K-quant blocks (Q2_K .. Q6_K, simd/kernels.h) take.
 *
 * One block per 256 activations (a K-quant super-block): one f32 scale for
 * all 256, and the sum of each run of 16 (and 32) quants, which the K-quants' mins
 * (x = d * sc * q - dmin * m) and their offsets (Q3_K, Q6_K) multiply. The
 * 32-value types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) take tlm_block_q8_g32_act
 * (quant/qformat.h), whose per-block sum serves Q4_1 / Q5_1's min.
 *
 * qs comes first so that it is 64-byte aligned in an aligned buffer; the
 * block is padded to 320 bytes to keep that for every block.
 */
#ifndef TLM_GGUF_ACT_H
#define TLM_GGUF_ACT_H

#include <stdint.h>

#define TLM_K256 256

typedef struct tlm_block_q8_k256_act {
    int8_t qs[TLM_K256];  /* round-half-even(x / d), |q| <= 127 */
    int16_t bsum16[16];   /* bsum16[i] = sum of qs[16 i .. 16 i + 15] */
    int16_t bsum32[8];    /* bsum32[j] = bsum16[2 j] + bsum16[2 j + 1] (Q4_K, Q5_K) */
    float d;              /* max |x| / 127 over the 256 values */
    uint8_t pad[12];
} tlm_block_q8_k256_act;
_Static_assert(sizeof(tlm_block_q8_k256_act) == 320, "tlm_block_q8_k256_act is 320 bytes");

#endif
