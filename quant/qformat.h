/*
 * qformat.h — trimlm's quantized weight formats: their exact byte layouts,
 * and the scalar quantize / dequantize / repack code that defines them.
 *
 * Two levels:
 *
 *  1. Row blocks (what a quantizer produces, one row at a time). Groups of
 *     TLM_QGROUP = 32 consecutive inputs of one row share one f16 scale.
 *     The bytes are identical to GGML's Q8_0 and Q4_0 blocks, so a GGUF
 *     file's Q8_0 / Q4_0 rows can be packed as they are, and the rounding rules
 *     are the same as GGML's reference quantizer (checked against an
 *     independent implementation by tests/test_qformat_ref.py).
 *
 *  2. Packed matrices (what the decode kernels read): TLM_QROWS = 16 rows
 *     interleaved, so that one pass over the activation feeds 16 rows'
 *     accumulators and the whole matrix is one sequential stream. The layout
 *     is named by its geometry (group 32, 16 rows): q8_g32_r16, q4_g32_r16.
 *     Every kernel of every instruction set reads the same bytes; a converted
 *     model file stores them as they are.
 *
 * Packed matrix geometry, for a (rows, n_in) matrix, n_in % 32 == 0:
 *
 *   n_groups = n_in / 32
 *   n_tiles  = ceil(rows / 16)      rows past `rows` in the last tile are
 *                                   zero: scale 0, quant value 0 (byte 0x80
 *                                   in q8, nibble 8 in q4)
 *   tile t starts at byte t * tile_bytes, tile_bytes = round_up(n_groups *
 *   (QB + 32), 64); inside a tile:
 *     [quants: n_groups x QB bytes]  group g at g * QB
 *     [scales: n_groups x 16 f16]    group g at n_groups*QB + g*32; entry r
 *                                    is the scale of row 16t + r
 *     [zero padding to 64 bytes]
 *
 *   q8_g32_r16, QB = 512: byte [64k + 4r + i] of a group = the int8 quant q
 *     of row r (0..15), input 4k + i (k = 0..7, i = 0..3), stored biased as
 *     the unsigned byte q + 128 (= q ^ 0x80): int8 dot-product instructions
 *     that take one unsigned operand (x86 VNNI) use it as it is, and the
 *     bias comes back out as 128 * sum(x) per group. One 64-byte line is
 *     "4 consecutive inputs of 16 rows": each 32-bit lane holds one row's 4
 *     bytes, which is the operand shape of int8 dot-product instructions
 *     (4-way u8 x s8 into an int32 lane), so a lane is a row and no
 *     horizontal sum is ever needed.
 *   q4_g32_r16, QB = 256: byte [64j + 4r + i] of a group = nibble of row r,
 *     input 4j + i in the low 4 bits, input 16 + 4j + i in the high 4 bits
 *     (j = 0..3). A nibble q in 0..15 means (q - 8) * scale. Masking a line
 *     gives the same "4 inputs x 16 rows" shape for inputs 4j.., shifting it
 *     right by 4 gives inputs 16+4j...
 *
 *   Bits per weight: q8_g32_r16 (512 + 32) * 8 / 512 = 8.5,
 *                    q4_g32_r16 (256 + 32) * 8 / 512 = 4.5 (+ tile padding
 *                    of at most 32 bytes per 16 rows when n_groups is odd).
 *
 * Activations (decode): quantized once per matmul to int8 per group of 32
 * (struct tlm_block_q8_g32_act below), by the kernel table's
 * quantize_act_q8_g32 entry (simd/kernels.h).
 */
#ifndef TLM_QFORMAT_H
#define TLM_QFORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLM_QGROUP 32 /* inputs per scale group */
#define TLM_QROWS 16  /* rows interleaved in a packed tile */

/* Values are stable: a model file may store them as tensor element types
 * (runtime/tlm_format.h keeps 16..31 for the formats of this header), where
 * they mean the packed 16-row layout below. Never renumber. */
typedef enum tlm_qtype {
    TLM_Q8_G32 = 16, /* int8, f16 scale per 32: 8.5 bits/weight */
    TLM_Q4_G32 = 17, /* int4, f16 scale per 32: 4.5 bits/weight */
} tlm_qtype;

/* ------------------------------------------------------------ row blocks */

/* w[j] = d * qs[j]; qs in [-127, 127] (d = max|w| / 127). = GGML Q8_0. */
typedef struct tlm_block_q8_g32 {
    uint16_t d; /* f16 bits */
    int8_t qs[TLM_QGROUP];
} tlm_block_q8_g32;
_Static_assert(sizeof(tlm_block_q8_g32) == 34, "tlm_block_q8_g32 is 34 bytes");

/* w[j] = d * (q[j] - 8), q 4-bit unsigned: element j (< 16) in the low
 * nibble of qs[j], element j + 16 in the high nibble. d = m / -8 where m is
 * the element of largest magnitude (with its sign), so that m itself maps to
 * q = 0 exactly and the other side gets the 7 remaining steps. = GGML Q4_0. */
typedef struct tlm_block_q4_g32 {
    uint16_t d; /* f16 bits */
    uint8_t qs[TLM_QGROUP / 2];
} tlm_block_q4_g32;
_Static_assert(sizeof(tlm_block_q4_g32) == 18, "tlm_block_q4_g32 is 18 bytes");

/* Activation group: x[j] ~= d * qs[j], qs in [-127, 127], d = max|x| / 127
 * (f32: activations are quantized on the fly, so their scale costs nothing
 * to keep wide), sum = sum_j qs[j]. The sum lets a kernel take unsigned
 * weight operands: sum_j (q_j + c) * x_j - c * sum = sum_j q_j * x_j. */
typedef struct tlm_block_q8_g32_act {
    float d;
    int32_t sum;
    int8_t qs[TLM_QGROUP];
} tlm_block_q8_g32_act;
_Static_assert(sizeof(tlm_block_q8_g32_act) == 40, "tlm_block_q8_g32_act is 40 bytes");

/* ------------------------------------------------------- packed geometry */

#define TLM_Q8_G32_R16_QUANT_BYTES (TLM_QROWS * TLM_QGROUP)     /* 512 per tile-group */
#define TLM_Q4_G32_R16_QUANT_BYTES (TLM_QROWS * TLM_QGROUP / 2) /* 256 per tile-group */
#define TLM_QR16_SCALE_BYTES (TLM_QROWS * 2)                    /* 16 f16 per tile-group */
_Static_assert(TLM_Q8_G32_R16_QUANT_BYTES % 64 == 0, "q8 tile-group quants are whole lines");
_Static_assert(TLM_Q4_G32_R16_QUANT_BYTES % 64 == 0, "q4 tile-group quants are whole lines");
_Static_assert(TLM_QROWS * 4 == 64, "one 64-byte line = 4 inputs of every row of a tile");

/* Quant bytes per tile-group (QB above); 0 for an unknown type. */
size_t tlm_qtype_group_quant_bytes(tlm_qtype t);
/* Bytes of one packed tile of 16 rows (64-byte multiple); 0 when n_in is
 * not a positive multiple of 32 or the type is unknown. */
size_t tlm_qpacked_tile_bytes(tlm_qtype t, int64_t n_in);
/* Bytes of a packed (rows, n_in) matrix; 0 on a bad shape. */
size_t tlm_qpacked_bytes(tlm_qtype t, int64_t rows, int64_t n_in);
/* "q8_g32" / "q4_g32", or NULL. */
const char *tlm_qtype_name(tlm_qtype t);
/* Bytes of one row block (34 / 18); 0 for an unknown type. */
size_t tlm_qtype_block_bytes(tlm_qtype t);

/* ------------------------------------------------ row quantize/dequantize */

/* n % 32 == 0. Rounding as GGML's reference quantizer: with d in f32 and
 * id = 1 / d (f32), Q8 stores roundf(w * id) (halves away from zero), Q4
 * trunc(w * id + 8.5) clamped to 0..15; the block keeps d rounded to f16.
 * A group of zeros gets d = 0. */
void tlm_q8_g32_quantize_row(const float *w, tlm_block_q8_g32 *dst, int64_t n);
void tlm_q8_g32_dequantize_row(const tlm_block_q8_g32 *src, float *w, int64_t n);
void tlm_q4_g32_quantize_row(const float *w, tlm_block_q4_g32 *dst, int64_t n);
void tlm_q4_g32_dequantize_row(const tlm_block_q4_g32 *src, float *w, int64_t n);

/* Q4 with a scale search, for better quality at the same bits: per group,
 * candidate roundings q = clamp(round(w * iscale), -8, 7) with iscale =
 * -(8 + 0.1 s) / m for s in -9..9, each with its least-squares scale under
 * the weights imp[j] (per-input importance, e.g. the mean x^2 of the
 * activations over calibration tokens; NULL = all 1), keeping the one of
 * least weighted squared error sum imp (w - d q)^2. The s = 0 candidate is
 * RTN's rounding (up to ties), so the error is not worse than
 * tlm_q4_g32_quantize_row's but for the f16 rounding of d. Same bytes. */
void tlm_q4_g32_quantize_row_search(const float *w, tlm_block_q4_g32 *dst, int64_t n,
                                    const float *imp);

/* ------------------------------------------------------ repack / unpack */

/* blocks: (rows, n_in / 32) row blocks of type t, row-major, as the row
 * quantizers write them. dst: tlm_qpacked_bytes(t, rows, n_in) bytes, every
 * one written (padding rows mean 0, padding bytes are 0). False on a bad
 * shape. */
bool tlm_qpack(tlm_qtype t, const void *blocks, int64_t rows, int64_t n_in, void *dst);
/* The inverse: row blocks of rows [r0, r1) into blocks (row r0 first). */
bool tlm_qunpack(tlm_qtype t, const void *packed, int64_t n_in, int64_t r0, int64_t r1,
                 void *blocks);
/* Rows [r0, r1) of a packed matrix to f32: out[(r - r0) * n_in + i]. */
bool tlm_qpacked_dequantize_rows(tlm_qtype t, const void *packed, int64_t n_in, int64_t r0,
                                 int64_t r1, float *out);
/* Quantizes a row-major f32 (rows, n_in) matrix straight into the packed
 * layout, block by block (no temporary), with the row quantizers above.
 * False on a bad shape. */
bool tlm_qquantize_pack(tlm_qtype t, const float *w, int64_t rows, int64_t n_in, void *dst);
/* The same, Q4 through the scale search (tlm_q4_g32_quantize_row_search)
 * with imp: per-input importance, n_in values shared by every row (NULL =
 * all 1). Q8 is quantized as by tlm_qquantize_pack. */
bool tlm_qquantize_pack_search(tlm_qtype t, const float *w, int64_t rows, int64_t n_in,
                               const float *imp, void *dst);

/* Looks for a scale that is not a finite number (f16 Inf or NaN: all five
 * exponent bits set) in a packed (rows, n_in) matrix, so that a loader can
 * refuse it rather than compute with it. True when one is found, with its
 * row and group (the first in storage order: tile by tile, group by group). */
bool tlm_qpacked_find_nonfinite_scale(tlm_qtype t, const void *packed, int64_t rows,
                                      int64_t n_in, int64_t *row, int64_t *group);

/* The start of the tile holding row r of a packed matrix (r's place inside
 * it is r % 16). */
static inline const uint8_t *tlm_qpacked_tile(const void *packed, size_t tile_bytes, int64_t r) {
    return (const uint8_t *)packed + (size_t)(r / TLM_QROWS) * tile_bytes;
}

#endif
