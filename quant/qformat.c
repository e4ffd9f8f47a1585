/*
 * qformat.c — scalar definitions of the quantized weight formats: row
 * quantize / dequantize, and the repacking into the 16-row interleaved
 * layouts the kernels read. Byte layouts are documented in qformat.h.
 */
#include "qformat.h"

#include <math.h>
#include <string.h>

#include "f16.h"

/* ------------------------------------------------------------- geometry */

size_t tlm_qtype_group_quant_bytes(tlm_qtype t) {
    switch (t) {
    case TLM_Q8_G32: return TLM_Q8_G32_R16_QUANT_BYTES;
    case TLM_Q4_G32: return TLM_Q4_G32_R16_QUANT_BYTES;
    }
    return 0;
}

size_t tlm_qtype_block_bytes(tlm_qtype t) {
    switch (t) {
    case TLM_Q8_G32: return sizeof(tlm_block_q8_g32);
    case TLM_Q4_G32: return sizeof(tlm_block_q4_g32);
    }
    return 0;
}

const char *tlm_qtype_name(tlm_qtype t) {
    switch (t) {
    case TLM_Q8_G32: return "q8_g32";
    case TLM_Q4_G32: return "q4_g32";
    }
    return NULL;
}

size_t tlm_qpacked_tile_bytes(tlm_qtype t, int64_t n_in) {
    size_t qb = tlm_qtype_group_quant_bytes(t);
    if (!qb || n_in <= 0 || n_in % TLM_QGROUP) return 0;
    size_t n_groups = (size_t)(n_in / TLM_QGROUP);
    size_t raw = n_groups * (qb + TLM_QR16_SCALE_BYTES);
    return (raw + 63) & ~(size_t)63;
}

size_t tlm_qpacked_bytes(tlm_qtype t, int64_t rows, int64_t n_in) {
    size_t tile = tlm_qpacked_tile_bytes(t, n_in);
    if (!tile || rows <= 0) return 0;
    size_t n_tiles = (size_t)((rows + TLM_QROWS - 1) / TLM_QROWS), total;
    if (__builtin_mul_overflow(n_tiles, tile, &total)) return 0;
    return total;
}

/* --------------------------------------------------------- row formats */

void tlm_q8_g32_quantize_row(const float *w, tlm_block_q8_g32 *dst, int64_t n) {
    for (int64_t b = 0; b < n / TLM_QGROUP; b++) {
        const float *x = w + b * TLM_QGROUP;
        float amax = 0;
        for (int j = 0; j < TLM_QGROUP; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = tlm_f32_to_f16(d);
        for (int j = 0; j < TLM_QGROUP; j++) dst[b].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void tlm_q8_g32_dequantize_row(const tlm_block_q8_g32 *src, float *w, int64_t n) {
    for (int64_t b = 0; b < n / TLM_QGROUP; b++) {
        float d = tlm_f16_to_f32(src[b].d);
        for (int j = 0; j < TLM_QGROUP; j++) w[b * TLM_QGROUP + j] = d * (float)src[b].qs[j];
    }
}

void tlm_q4_g32_quantize_row(const float *w, tlm_block_q4_g32 *dst, int64_t n) {
    for (int64_t b = 0; b < n / TLM_QGROUP; b++) {
        const float *x = w + b * TLM_QGROUP;
        float amax = 0, max = 0; /* max keeps its sign: it maps to q = 0 */
        for (int j = 0; j < TLM_QGROUP; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        dst[b].d = tlm_f32_to_f16(d);
        for (int j = 0; j < TLM_QGROUP / 2; j++) {
            /* x*id lies in [-8, 8]; + 8.5 then truncation rounds to nearest */
            float t0 = x[j] * id + 8.5f, t1 = x[j + 16] * id + 8.5f;
            int q0 = t0 < 0.0f ? 0 : (int)t0, q1 = t1 < 0.0f ? 0 : (int)t1;
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            dst[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void tlm_q4_g32_dequantize_row(const tlm_block_q4_g32 *src, float *w, int64_t n) {
    for (int64_t b = 0; b < n / TLM_QGROUP; b++) {
        float d = tlm_f16_to_f32(src[b].d);
        for (int j = 0; j < TLM_QGROUP / 2; j++) {
            w[b * TLM_QGROUP + j] = d * (float)((src[b].qs[j] & 0x0f) - 8);
            w[b * TLM_QGROUP + j + 16] = d * (float)((src[b].qs[j] >> 4) - 8);
        }
    }
}

/* One candidate of the search: q[j] = clamp(round(iscale * x[j]), -8, 7),
 * and the scale minimizing sum wt (x - d q)^2, d = sum wt x q / sum wt q^2.
 * Returns the weighted error reduction sum_lx^2 / sum_l2 (larger is better:
 * error = sum wt x^2 - that), or -1 when every q is 0. */
static double q4_candidate(const float *x, const float *wt, float iscale, int8_t *q, float *d) {
    double slx = 0, sl2 = 0;
    for (int j = 0; j < TLM_QGROUP; j++) {
        int l = (int)nearbyintf(iscale * x[j]);
        l = l < -8 ? -8 : l > 7 ? 7 : l;
        q[j] = (int8_t)l;
        slx += (double)wt[j] * x[j] * l;
        sl2 += (double)wt[j] * l * l;
    }
    if (sl2 <= 0) return -1;
    *d = (float)(slx / sl2);
    return slx * slx / sl2;
}

void tlm_q4_g32_quantize_row_search(const float *w, tlm_block_q4_g32 *dst, int64_t n,
                                    const float *imp) {
    for (int64_t b = 0; b < n / TLM_QGROUP; b++) {
        const float *x = w + b * TLM_QGROUP;
        float amax = 0, max = 0, wt[TLM_QGROUP];
        for (int j = 0; j < TLM_QGROUP; j++) {
            /* the output error of a weight error e is e * x_in: weigh e^2
             * by the input's mean square */
            wt[j] = imp ? imp[b * TLM_QGROUP + j] : 1.0f;
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            tlm_q4_g32_quantize_row(x, &dst[b], TLM_QGROUP); /* all zero: d = 0 */
            continue;
        }
        int8_t q[TLM_QGROUP], best_q[TLM_QGROUP] = {0};
        float d = 0, best_d = 0;
        double best = -2;
        for (int s = -9; s <= 9; s++) {
            double gain = q4_candidate(x, wt, -(8.0f + 0.1f * (float)s) / max, q, &d);
            if (gain > best) {
                best = gain;
                best_d = d;
                memcpy(best_q, q, sizeof q);
            }
        }
        if (best < 0) { /* every weight 0 under its importance: plain RTN */
            tlm_q4_g32_quantize_row(x, &dst[b], TLM_QGROUP);
            continue;
        }
        dst[b].d = tlm_f32_to_f16(best_d);
        for (int j = 0; j < TLM_QGROUP / 2; j++)
            dst[b].qs[j] = (uint8_t)((best_q[j] + 8) | ((best_q[j + 16] + 8) << 4));
    }
}

/* ------------------------------------------------------ repack / unpack */

/* Places row r_in_tile's block of group g into a tile (layouts: qformat.h). */
static void tile_put_block(tlm_qtype t, uint8_t *tile, int64_t n_groups, int64_t g, int r,
                           const void *block) {
    size_t qb = tlm_qtype_group_quant_bytes(t);
    uint8_t *q = tile + (size_t)g * qb;
    uint8_t *sc = tile + (size_t)n_groups * qb + (size_t)g * TLM_QR16_SCALE_BYTES + 2 * r;
    if (t == TLM_Q8_G32) {
        const tlm_block_q8_g32 *b = block;
        memcpy(sc, &b->d, 2);
        for (int k = 0; k < 8; k++)
            for (int i = 0; i < 4; i++) q[64 * k + 4 * r + i] = (uint8_t)b->qs[4 * k + i] ^ 0x80;
    } else {
        const tlm_block_q4_g32 *b = block;
        memcpy(sc, &b->d, 2);
        /* block: byte j = (elem j, elem j+16); packed: byte 64j'+4r+i =
         * (elem 4j'+i, elem 16+4j'+i): the same pairs, reordered */
        for (int j = 0; j < 4; j++) memcpy(q + 64 * j + 4 * r, b->qs + 4 * j, 4);
    }
}

static void tile_get_block(tlm_qtype t, const uint8_t *tile, int64_t n_groups, int64_t g, int r,
                           void *block) {
    size_t qb = tlm_qtype_group_quant_bytes(t);
    const uint8_t *q = tile + (size_t)g * qb;
    const uint8_t *sc = tile + (size_t)n_groups * qb + (size_t)g * TLM_QR16_SCALE_BYTES + 2 * r;
    if (t == TLM_Q8_G32) {
        tlm_block_q8_g32 *b = block;
        memcpy(&b->d, sc, 2);
        for (int k = 0; k < 8; k++)
            for (int i = 0; i < 4; i++) b->qs[4 * k + i] = (int8_t)(q[64 * k + 4 * r + i] ^ 0x80);
    } else {
        tlm_block_q4_g32 *b = block;
        memcpy(&b->d, sc, 2);
        for (int j = 0; j < 4; j++) memcpy(b->qs + 4 * j, q + 64 * j + 4 * r, 4);
    }
}

/* A padding row: scale 0 and quants meaning 0 (nibble 8 for Q4), so that a
 * kernel reading a whole tile gets finite zeros there. */
static void zero_block(tlm_qtype t, void *block) {
    size_t bb = tlm_qtype_block_bytes(t);
    memset(block, 0, bb);
    if (t == TLM_Q4_G32) memset(((tlm_block_q4_g32 *)block)->qs, 0x88, TLM_QGROUP / 2);
}

bool tlm_qpack(tlm_qtype t, const void *blocks, int64_t rows, int64_t n_in, void *dst) {
    size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    if (!tile_bytes || rows <= 0) return false;
    size_t bb = tlm_qtype_block_bytes(t);
    int64_t n_groups = n_in / TLM_QGROUP, n_tiles = (rows + TLM_QROWS - 1) / TLM_QROWS;
    uint8_t pad[sizeof(tlm_block_q8_g32)];
    zero_block(t, pad);
    memset(dst, 0, (size_t)n_tiles * tile_bytes);
    for (int64_t tile = 0; tile < n_tiles; tile++) {
        uint8_t *tb = (uint8_t *)dst + (size_t)tile * tile_bytes;
        for (int r = 0; r < TLM_QROWS; r++) {
            int64_t row = tile * TLM_QROWS + r;
            for (int64_t g = 0; g < n_groups; g++) {
                const void *src = row < rows
                                      ? (const uint8_t *)blocks + ((size_t)row * n_groups + g) * bb
                                      : (const void *)pad;
                tile_put_block(t, tb, n_groups, g, r, src);
            }
        }
    }
    return true;
}

bool tlm_qunpack(tlm_qtype t, const void *packed, int64_t n_in, int64_t r0, int64_t r1,
                 void *blocks) {
    size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    if (!tile_bytes || r0 < 0 || r1 < r0) return false;
    size_t bb = tlm_qtype_block_bytes(t);
    int64_t n_groups = n_in / TLM_QGROUP;
    for (int64_t row = r0; row < r1; row++) {
        const uint8_t *tb = tlm_qpacked_tile(packed, tile_bytes, row);
        for (int64_t g = 0; g < n_groups; g++)
            tile_get_block(t, tb, n_groups, g, (int)(row % TLM_QROWS),
                           (uint8_t *)blocks + ((size_t)(row - r0) * n_groups + g) * bb);
    }
    return true;
}

bool tlm_qpacked_dequantize_rows(tlm_qtype t, const void *packed, int64_t n_in, int64_t r0,
                                 int64_t r1, float *out) {
    size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    if (!tile_bytes || r0 < 0 || r1 < r0) return false;
    int64_t n_groups = n_in / TLM_QGROUP;
    for (int64_t row = r0; row < r1; row++) {
        const uint8_t *tb = tlm_qpacked_tile(packed, tile_bytes, row);
        float *dst = out + (row - r0) * n_in;
        for (int64_t g = 0; g < n_groups; g++) {
            union {
                tlm_block_q8_g32 q8;
                tlm_block_q4_g32 q4;
            } blk;
            tile_get_block(t, tb, n_groups, g, (int)(row % TLM_QROWS), &blk);
            if (t == TLM_Q8_G32)
                tlm_q8_g32_dequantize_row(&blk.q8, dst + g * TLM_QGROUP, TLM_QGROUP);
            else
                tlm_q4_g32_dequantize_row(&blk.q4, dst + g * TLM_QGROUP, TLM_QGROUP);
        }
    }
    return true;
}

/* search: Q4 through the scale search with importance imp (n_in values). */
static bool quantize_pack(tlm_qtype t, const float *w, int64_t rows, int64_t n_in, bool search,
                          const float *imp, void *dst) {
    size_t tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    if (!tile_bytes || rows <= 0) return false;
    int64_t n_groups = n_in / TLM_QGROUP, n_tiles = (rows + TLM_QROWS - 1) / TLM_QROWS;
    uint8_t pad[sizeof(tlm_block_q8_g32)];
    zero_block(t, pad);
    memset(dst, 0, (size_t)n_tiles * tile_bytes);
    for (int64_t tile = 0; tile < n_tiles; tile++) {
        uint8_t *tb = (uint8_t *)dst + (size_t)tile * tile_bytes;
        for (int r = 0; r < TLM_QROWS; r++) {
            int64_t row = tile * TLM_QROWS + r;
            const float *src = w + row * n_in;
            for (int64_t g = 0; g < n_groups; g++) {
                union {
                    tlm_block_q8_g32 q8;
                    tlm_block_q4_g32 q4;
                } blk;
                const float *x = src + g * TLM_QGROUP;
                if (row >= rows)
                    memcpy(&blk, pad, sizeof pad);
                else if (t == TLM_Q8_G32)
                    tlm_q8_g32_quantize_row(x, &blk.q8, TLM_QGROUP);
                else if (search)
                    tlm_q4_g32_quantize_row_search(x, &blk.q4, TLM_QGROUP,
                                                   imp ? imp + g * TLM_QGROUP : NULL);
                else
                    tlm_q4_g32_quantize_row(x, &blk.q4, TLM_QGROUP);
                tile_put_block(t, tb, n_groups, g, r, &blk);
            }
        }
    }
    return true;
}

bool tlm_qquantize_pack(tlm_qtype t, const float *w, int64_t rows, int64_t n_in, void *dst) {
    return quantize_pack(t, w, rows, n_in, false, NULL, dst);
}

bool tlm_qquantize_pack_search(tlm_qtype t, const float *w, int64_t rows, int64_t n_in,
                               const float *imp, void *dst) {
    return quantize_pack(t, w, rows, n_in, true, imp, dst);
}

bool tlm_qpacked_find_nonfinite_scale(tlm_qtype t, const void *packed, int64_t rows,
                                      int64_t n_in, int64_t *row, int64_t *group) {
    const size_t qb = tlm_qtype_group_quant_bytes(t), tile_bytes = tlm_qpacked_tile_bytes(t, n_in);
    if (!qb || !tile_bytes || rows <= 0) return false;
    const int64_t n_groups = n_in / TLM_QGROUP, n_scales = n_groups * TLM_QROWS;
    const int64_t n_tiles = (rows + TLM_QROWS - 1) / TLM_QROWS;
    for (int64_t tile = 0; tile < n_tiles; tile++) {
        /* the tile's scales: n_groups x 16 f16, group-major */
        const uint8_t *scales = (const uint8_t *)packed + (size_t)tile * tile_bytes +
                                (size_t)n_groups * qb;
        unsigned bad = 0;
        for (int64_t i = 0; i < n_scales; i++) { /* one pass, no branch: vectorizes */
            uint16_t h;
            memcpy(&h, scales + 2 * i, 2);
            bad |= (h & 0x7C00u) == 0x7C00u;
        }
        if (!bad) continue;
        for (int64_t i = 0; i < n_scales; i++) {
            uint16_t h;
            memcpy(&h, scales + 2 * i, 2);
            if ((h & 0x7C00u) != 0x7C00u) continue;
            if (row) *row = tile * TLM_QROWS + i % TLM_QROWS;
            if (group) *group = i / TLM_QROWS;
            return true;
        }
    }
    return false;
}
