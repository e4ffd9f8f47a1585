/*
 * test_qformat.c — the quantized weight formats (quant/qformat.h): block
 * sizes and packed geometry, round-trip error bounds, hand-computed blocks,
 * and repack / unpack / quantize-pack agreeing byte for byte.
 *
 * `test_qformat --dump DIR` instead writes a fixed matrix, its row blocks,
 * packed forms, a quantized activation and the scalar GEMV outputs to DIR for
 * tests/test_qformat_ref.py, which checks them against numpy.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "f16.h"
#include "kernels.h"
#include "qformat.h"

static uint64_t g_rng = 0x2545f4914f6cdd1dull;
static double rand_unit(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * 0x1.0p-53;
}
static void fill(float *w, int64_t n) {
    for (int64_t g = 0; g < n / 32; g++) {
        double mag = pow(10.0, -3.0 + 4.0 * rand_unit());
        for (int j = 0; j < 32; j++) w[g * 32 + j] = (float)((rand_unit() * 2 - 1) * mag);
        if (g % 7 == 3) memset(w + g * 32, 0, 32 * sizeof(float)); /* an all-zero group */
    }
}

/* ------------------------------------------------------------- geometry */

static void test_geometry(void **state) {
    (void)state;
    assert_int_equal(tlm_qtype_block_bytes(TLM_Q8_G32), 34);
    assert_int_equal(tlm_qtype_block_bytes(TLM_Q4_G32), 18);
    /* 576 inputs = 18 groups: q8 18 * 544 = 9792 = 153 lines; q4 18 * 288 = 5184 = 81 lines */
    assert_int_equal(tlm_qpacked_tile_bytes(TLM_Q8_G32, 576), 9792);
    assert_int_equal(tlm_qpacked_tile_bytes(TLM_Q4_G32, 576), 5184);
    /* 1 group: 544 -> 576, 288 -> 320 (padded to a line) */
    assert_int_equal(tlm_qpacked_tile_bytes(TLM_Q8_G32, 32), 576);
    assert_int_equal(tlm_qpacked_tile_bytes(TLM_Q4_G32, 32), 320);
    assert_int_equal(tlm_qpacked_bytes(TLM_Q4_G32, 17, 576), 2 * 5184);
    assert_int_equal(tlm_qpacked_bytes(TLM_Q8_G32, 16, 576), 9792);
    /* bad shapes */
    assert_int_equal(tlm_qpacked_bytes(TLM_Q8_G32, 16, 33), 0);
    assert_int_equal(tlm_qpacked_bytes(TLM_Q8_G32, 0, 32), 0);
    assert_int_equal(tlm_qpacked_bytes((tlm_qtype)9, 16, 32), 0);
    assert_null(tlm_qtype_name((tlm_qtype)9));
    assert_string_equal(tlm_qtype_name(TLM_Q4_G32), "q4_g32");
    /* bits per weight of the real model's shapes */
    double bpw8 = 8.0 * tlm_qpacked_bytes(TLM_Q8_G32, 1536, 576) / (1536.0 * 576);
    double bpw4 = 8.0 * tlm_qpacked_bytes(TLM_Q4_G32, 1536, 576) / (1536.0 * 576);
    assert_true(bpw8 == 8.5 && bpw4 == 4.5);
}

/* --------------------------------------------------------- row formats */

static void test_q8_hand_block(void **state) {
    (void)state;
    float w[32];
    for (int j = 0; j < 32; j++) w[j] = (float)(j - 16) * 0.25f; /* max |w| = 4 at j = 0 */
    tlm_block_q8_g32 b;
    tlm_q8_g32_quantize_row(w, &b, 32);
    assert_true(tlm_f16_to_f32(b.d) == tlm_f16_to_f32(tlm_f32_to_f16(4.0f / 127.0f)));
    for (int j = 0; j < 32; j++) {
        /* q = round(w * id), id = 1 / (4 / 127) in f32, halves away from zero */
        float id = 1.0f / (4.0f / 127.0f);
        assert_int_equal(b.qs[j], (int)lroundf(w[j] * id));
        assert_true(abs(b.qs[j] - (j - 16) * 127 / 16) <= 1);
    }
    assert_int_equal(b.qs[0], -127);
}

static void test_q4_hand_block(void **state) {
    (void)state;
    float w[32];
    for (int j = 0; j < 32; j++) w[j] = (float)(j - 8); /* max |w| = 23 at j = 31 (positive) */
    tlm_block_q4_g32 b;
    tlm_q4_g32_quantize_row(w, &b, 32);
    float d = 23.0f / -8.0f;
    assert_true(tlm_f16_to_f32(b.d) == tlm_f16_to_f32(tlm_f32_to_f16(d)));
    /* the largest element maps to q = 0 exactly: d * (0 - 8) = 23 */
    assert_int_equal(b.qs[15] >> 4, 0);
    for (int j = 0; j < 16; j++) {
        int q0 = (int)(w[j] * (1.0f / d) + 8.5f), q1 = (int)(w[j + 16] * (1.0f / d) + 8.5f);
        q0 = q0 > 15 ? 15 : q0;
        q1 = q1 > 15 ? 15 : q1;
        assert_int_equal(b.qs[j] & 15, q0);
        assert_int_equal(b.qs[j] >> 4, q1);
    }
}

/* |w - dequant(w)| <= |d| / 2, except Q4's clamped side (q = 15): <= |d|. */
static void test_roundtrip_bounds(void **state) {
    (void)state;
    const int64_t n = 32 * 40;
    float *w = malloc(n * 4), *back = malloc(n * 4);
    fill(w, n);
    tlm_block_q8_g32 b8[40];
    tlm_block_q4_g32 b4[40];
    tlm_q8_g32_quantize_row(w, b8, n);
    tlm_q8_g32_dequantize_row(b8, back, n);
    for (int64_t i = 0; i < n; i++) {
        double d = tlm_f16_to_f32(b8[i / 32].d);
        /* the stored scale is f16-rounded: a relative 2^-11 on top of d/2 */
        assert_true(fabs((double)w[i] - back[i]) <= 0.5 * d + 127 * d * 0x1p-11 + 1e-30);
    }
    tlm_q4_g32_quantize_row(w, b4, n);
    tlm_q4_g32_dequantize_row(b4, back, n);
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(tlm_f16_to_f32(b4[i / 32].d));
        int j = (int)(i % 32);
        int q = j < 16 ? b4[i / 32].qs[j] & 15 : b4[i / 32].qs[j - 16] >> 4;
        double bound = (q == 15 ? 1.0 : 0.5) * d + 8 * d * 0x1p-11 + 1e-30;
        assert_true(fabs((double)w[i] - back[i]) <= bound);
    }
    free(w);
    free(back);
}

/* The scale search: weighted squared error at most RTN's (+ the f16
 * rounding of d) per group, and clearly lower over a matrix. */
#define SEARCH_MAX_ERROR_RATIO 0.95 /* whole-matrix error vs RTN; measured 0.84-0.88 */
static void test_q4_search(void **state) {
    (void)state;
    const int64_t n = 32 * 256;
    float *w = malloc(n * 4), *imp = malloc(n * 4), *a = malloc(n * 4), *b = malloc(n * 4);
    for (int64_t i = 0; i < n; i++) {
        w[i] = (float)((rand_unit() + rand_unit() + rand_unit() - 1.5) * 0.02);
        imp[i] = (float)(0.1 + 2.0 * rand_unit());
    }
    tlm_block_q4_g32 *rtn = malloc((n / 32) * sizeof *rtn), *srch = malloc((n / 32) * sizeof *srch);
    for (int pass = 0; pass < 2; pass++) {
        const float *im = pass ? imp : NULL;
        tlm_q4_g32_quantize_row(w, rtn, n);
        tlm_q4_g32_quantize_row_search(w, srch, n, im);
        tlm_q4_g32_dequantize_row(rtn, a, n);
        tlm_q4_g32_dequantize_row(srch, b, n);
        double ea_all = 0, eb_all = 0;
        for (int64_t g = 0; g < n / 32; g++) {
            double ea = 0, eb = 0, ss = 0;
            for (int j = 0; j < 32; j++) {
                int64_t i = g * 32 + j;
                double wt = im ? im[i] : 1.0;
                ea += wt * (w[i] - a[i]) * (w[i] - a[i]);
                eb += wt * (w[i] - b[i]) * (w[i] - b[i]);
                ss += wt * (double)w[i] * w[i];
            }
            /* f16 scale rounding: relative 2^-11 of d on each of 32 weights */
            assert_true(eb <= ea * 1.02 + ss * 1e-5);
            ea_all += ea;
            eb_all += eb;
        }
        printf("q4 scale search (%s importance): error %.4g vs RTN %.4g (ratio %.3f)\n",
               im ? "random" : "uniform", eb_all, ea_all, eb_all / ea_all);
        assert_true(eb_all <= SEARCH_MAX_ERROR_RATIO * ea_all);
    }
    /* the matrix form: the same blocks, packed */
    {
        int64_t rows = 5, n_in = 64; /* w as a (5, 64) matrix, imp as its inputs' importance */
        tlm_block_q4_g32 blocks[5 * 2];
        for (int64_t r = 0; r < rows; r++) {
            tlm_q4_g32_quantize_row_search(w + r * n_in, blocks + r * 2, n_in / 2, imp);
            tlm_q4_g32_quantize_row_search(w + r * n_in + 32, blocks + r * 2 + 1, 32, imp + 32);
        }
        size_t bytes = tlm_qpacked_bytes(TLM_Q4_G32, rows, n_in);
        uint8_t *p1 = malloc(bytes), *p2 = malloc(bytes);
        assert_true(tlm_qpack(TLM_Q4_G32, blocks, rows, n_in, p1));
        assert_true(tlm_qquantize_pack_search(TLM_Q4_G32, w, rows, n_in, imp, p2));
        assert_memory_equal(p1, p2, bytes);
        free(p1);
        free(p2);
    }
    /* all-zero group: d = 0, nibbles 8 */
    float z[32] = {0};
    tlm_q4_g32_quantize_row_search(z, srch, 32, NULL);
    assert_true(tlm_f16_to_f32(srch[0].d) == 0.0f && srch[0].qs[0] == 0x88);
    free(w); free(imp); free(a); free(b); free(rtn); free(srch);
}

/* ---------------------------------------------------------- repacking */

static void test_pack_roundtrip(void **state) {
    (void)state;
    static const int64_t shapes[][2] = {{1, 32}, {15, 64}, {16, 576}, {17, 96}, {33, 2080}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], n_in = shapes[s][1], ng = n_in / 32;
        for (int ti = 0; ti < 2; ti++) {
            tlm_qtype t = ti ? TLM_Q4_G32 : TLM_Q8_G32;
            size_t bb = tlm_qtype_block_bytes(t), bytes = tlm_qpacked_bytes(t, rows, n_in);
            float *w = malloc((size_t)(rows * n_in) * 4);
            fill(w, rows * n_in);
            uint8_t *blocks = malloc((size_t)(rows * ng) * bb), *back = malloc((size_t)(rows * ng) * bb);
            for (int64_t r = 0; r < rows; r++) {
                void *dst = blocks + (size_t)(r * ng) * bb;
                if (t == TLM_Q8_G32)
                    tlm_q8_g32_quantize_row(w + r * n_in, dst, n_in);
                else
                    tlm_q4_g32_quantize_row(w + r * n_in, dst, n_in);
            }
            uint8_t *p1 = malloc(bytes), *p2 = malloc(bytes);
            memset(p1, 0x5a, bytes);
            memset(p2, 0xa5, bytes);
            assert_true(tlm_qpack(t, blocks, rows, n_in, p1));
            assert_true(tlm_qquantize_pack(t, w, rows, n_in, p2));
            assert_memory_equal(p1, p2, bytes); /* every byte written, identically */
            assert_true(tlm_qunpack(t, p1, n_in, 0, rows, back));
            assert_memory_equal(blocks, back, (size_t)(rows * ng) * bb);
            /* a slice of rows */
            if (rows > 2) {
                assert_true(tlm_qunpack(t, p1, n_in, 1, rows - 1, back));
                assert_memory_equal(blocks + (size_t)ng * bb, back, (size_t)((rows - 2) * ng) * bb);
            }
            /* padding rows dequantize to exact zeros */
            int64_t padded = (rows + 15) / 16 * 16;
            float *deq = malloc((size_t)(padded * n_in) * 4);
            assert_true(tlm_qpacked_dequantize_rows(t, p1, n_in, 0, padded, deq));
            for (int64_t i = rows * n_in; i < padded * n_in; i++) assert_true(deq[i] == 0.0f);
            free(deq);
            free(w);
            free(blocks);
            free(back);
            free(p1);
            free(p2);
        }
    }
    assert_false(tlm_qpack(TLM_Q8_G32, NULL, 4, 48, NULL));
}

/* The documented byte positions, spelled out for one element of each. */
static void test_packed_positions(void **state) {
    (void)state;
    int64_t rows = 20, n_in = 64;
    float *w = calloc((size_t)(rows * n_in), 4);
    /* row 17 (tile 1, r = 1), group 1, input 32 + 4*2 + 3 = 43 */
    w[17 * n_in + 43] = 1.0f;
    uint8_t *p8 = malloc(tlm_qpacked_bytes(TLM_Q8_G32, rows, n_in));
    uint8_t *p4 = malloc(tlm_qpacked_bytes(TLM_Q4_G32, rows, n_in));
    assert_true(tlm_qquantize_pack(TLM_Q8_G32, w, rows, n_in, p8));
    assert_true(tlm_qquantize_pack(TLM_Q4_G32, w, rows, n_in, p4));
    size_t t8 = tlm_qpacked_tile_bytes(TLM_Q8_G32, n_in), t4 = tlm_qpacked_tile_bytes(TLM_Q4_G32, n_in);
    /* q8: tile 1, group 1 at 512, line k = 2, row 1, i = 3 */
    assert_int_equal(p8[t8 + 512 + 64 * 2 + 4 * 1 + 3], 127 + 128); /* stored biased */
    assert_int_equal(p8[t8 + 512 + 64 * 2 + 4 * 1 + 2], 128);
    uint16_t h;
    memcpy(&h, p8 + t8 + 2 * 512 + 32 * 1 + 2 * 1, 2); /* scales after quants, group 1, row 1 */
    assert_true(tlm_f16_to_f32(h) == tlm_f16_to_f32(tlm_f32_to_f16(1.0f / 127.0f)));
    /* q4: input 43 = 32 + 11 -> in-group 11 = 4*2 + 3, low nibble of line 2;
     * w = 1 is the max, so q = 0 there and 8 elsewhere */
    assert_int_equal(p4[t4 + 256 + 64 * 2 + 4 * 1 + 3], 0x80);
    assert_int_equal(p4[t4 + 256 + 64 * 2 + 4 * 1 + 2], 0x88);
    memcpy(&h, p4 + t4 + 2 * 256 + 32 * 1 + 2 * 1, 2);
    assert_true(tlm_f16_to_f32(h) == -0.125f);
    free(w);
    free(p8);
    free(p4);
}

/* ------------------------------------------------------- reference dump */

static int write_file(const char *dir, const char *name, const void *data, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "test_qformat: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

/* rows = 37 (a partial tile), n_in = 576; weights with varied group scales
 * and all-zero groups, an activation with an outlier. */
static int dump_reference(const char *dir) {
    const int64_t rows = 37, n_in = 576, ng = n_in / 32;
    float *w = malloc((size_t)(rows * n_in) * 4), *x = malloc((size_t)n_in * 4);
    fill(w, rows * n_in);
    for (int64_t i = 0; i < n_in; i++) x[i] = (float)(rand_unit() * 2 - 1);
    x[100] = 25.0f;
    for (int64_t i = 64; i < 96; i++) x[i] = 0.0f;
    tlm_block_q8_g32 *b8 = malloc((size_t)(rows * ng) * sizeof *b8);
    tlm_block_q4_g32 *b4 = malloc((size_t)(rows * ng) * sizeof *b4);
    for (int64_t r = 0; r < rows; r++) {
        tlm_q8_g32_quantize_row(w + r * n_in, b8 + r * ng, n_in);
        tlm_q4_g32_quantize_row(w + r * n_in, b4 + r * ng, n_in);
    }
    size_t n8 = tlm_qpacked_bytes(TLM_Q8_G32, rows, n_in), n4 = tlm_qpacked_bytes(TLM_Q4_G32, rows, n_in);
    void *p8 = malloc(n8), *p4 = malloc(n4);
    tlm_qpack(TLM_Q8_G32, b8, rows, n_in, p8);
    tlm_qpack(TLM_Q4_G32, b4, rows, n_in, p4);
    tlm_block_q8_g32_act *xq = malloc((size_t)ng * sizeof *xq);
    tlm_kernels_scalar.quantize_act_q8_g32(x, xq, n_in);
    float *y8 = malloc((size_t)rows * 4), *y4 = malloc((size_t)rows * 4);
    tlm_kernels_scalar.gemv_q8_g32_r16(p8, xq, y8, n_in, 0, rows);
    tlm_kernels_scalar.gemv_q4_g32_r16(p4, xq, y4, n_in, 0, rows);
    char meta[64];
    int len = snprintf(meta, sizeof meta, "%lld %lld\n", (long long)rows, (long long)n_in);
    int bad = write_file(dir, "meta.txt", meta, (size_t)len) |
              write_file(dir, "w.f32", w, (size_t)(rows * n_in) * 4) |
              write_file(dir, "x.f32", x, (size_t)n_in * 4) |
              write_file(dir, "q8.blocks", b8, (size_t)(rows * ng) * sizeof *b8) |
              write_file(dir, "q4.blocks", b4, (size_t)(rows * ng) * sizeof *b4) |
              write_file(dir, "q8.packed", p8, n8) | write_file(dir, "q4.packed", p4, n4) |
              write_file(dir, "xq.act", xq, (size_t)ng * sizeof *xq) |
              write_file(dir, "y_q8.f32", y8, (size_t)rows * 4) |
              write_file(dir, "y_q4.f32", y4, (size_t)rows * 4);
    free(w); free(x); free(b8); free(b4); free(p8); free(p4); free(xq); free(y8); free(y4);
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--dump")) return dump_reference(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_geometry),        cmocka_unit_test(test_q8_hand_block),
        cmocka_unit_test(test_q4_hand_block),   cmocka_unit_test(test_roundtrip_bounds),
        cmocka_unit_test(test_q4_search),       cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_packed_positions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
