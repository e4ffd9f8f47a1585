/*
 * test_context.c — the context half of the public API on a tiny model built
 * in memory: parameter checks, which logits a call keeps, context-full and
 * bad-token errors, reset, chunking by n_batch, and removed sublayers. (The numbers themselves
 * are checked against the numpy reference in test_forward_ref.py.)
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"
#include "model.h"
#include "trimlm.h"

#define V 16
#define E 8
#define FF 12
#define HD 4

static uint64_t g_rng = 88172645463325252ull;
static float rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) * 0x1.0p-53 - 0.5);
}

static float *weight(struct tlm_model *m, uint64_t n, float base) {
    float *w = model_alloc_weight(m, n, NULL);
    assert_non_null(w);
    for (uint64_t i = 0; i < n; i++) w[i] = base + rnd();
    return w;
}

/* 2 layers, 2 query heads sharing 1 KV head, head_dim 4, vocabulary 16. */
static tlm_model *tiny_model(void) {
    g_rng = 88172645463325252ull; /* every call builds the same weights */
    struct tlm_model *m = tlm_calloc(1, sizeof *m);
    assert_non_null(m);
    m->hp = (tlm_hparams){.arch = TLM_ARCH_LLAMA, .n_vocab = V, .n_embd = E, .n_layer = 2,
                          .n_head = 2, .n_head_kv = 1, .head_dim = HD, .n_ff = FF,
                          .n_ctx_train = 64, .rms_eps = 1e-5f, .rope_theta = 10000.0f,
                          .rope_dim = HD, .rope_style = TLM_ROPE_NORM};
    m->arch_name = tlm_strdup("llama");
    m->source_format = "memory";
    assert_int_equal(model_alloc_sublayers(m, "tiny", NULL), TLM_OK);
    m->tok_embd = tensor_of_f32(weight(m, V * E, 0.0f), V, E);
    for (int l = 0; l < 2; l++) {
        tlm_sublayer *A = model_add_sublayer(m, TLM_SUBLAYER_ATTN, l);
        A->w[ATTN_NORM] = tensor_of_f32(weight(m, E, 1.0f), 1, E);
        A->w[ATTN_Q] = tensor_of_f32(weight(m, 2 * HD * E, 0.0f), 2 * HD, E);
        A->w[ATTN_K] = tensor_of_f32(weight(m, HD * E, 0.0f), HD, E);
        A->w[ATTN_V] = tensor_of_f32(weight(m, HD * E, 0.0f), HD, E);
        A->w[ATTN_OUT] = tensor_of_f32(weight(m, E * 2 * HD, 0.0f), E, 2 * HD);
        tlm_sublayer *F = model_add_sublayer(m, TLM_SUBLAYER_MLP, l);
        F->w[MLP_NORM] = tensor_of_f32(weight(m, E, 1.0f), 1, E);
        F->w[MLP_GATE] = tensor_of_f32(weight(m, FF * E, 0.0f), FF, E);
        F->w[MLP_UP] = tensor_of_f32(weight(m, FF * E, 0.0f), FF, E);
        F->w[MLP_DOWN] = tensor_of_f32(weight(m, E * FF, 0.0f), E, FF);
    }
    m->out_norm = tensor_of_f32(weight(m, E, 1.0f), 1, E);
    m->output = tensor_of_f32(weight(m, V * E, 0.0f), V, E);
    return m;
}

static tlm_context *new_ctx(tlm_model *m, int n_ctx, int n_batch, int n_threads) {
    tlm_context_params p = {.n_ctx = n_ctx, .n_batch = n_batch, .n_threads = n_threads};
    tlm_error err;
    tlm_context *c = tlm_context_new(m, &p, &err);
    if (!c) print_error("tlm_context_new: %s\n", err.msg);
    assert_non_null(c);
    return c;
}

static double max_abs_diff(const float *a, const float *b, int n) {
    double d = 0;
    for (int i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* ---------------------------------------------------------------- tests */

static void test_params(void **state) {
    tlm_model *m = *state;
    tlm_error err;
    tlm_context_params p = tlm_context_default_params();
    tlm_context *c = tlm_context_new(m, &p, &err);
    assert_non_null(c);
    assert_int_equal(tlm_context_n_ctx(c), 64); /* min(n_ctx_train, 4096) */
    assert_int_equal(tlm_context_pos(c), 0);
    assert_null(tlm_get_logits(c, -1)); /* nothing decoded yet */
    tlm_context_free(c);
    p.n_ctx = -1;
    assert_null(tlm_context_new(m, &p, &err));
    assert_int_equal(err.code, TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "n_ctx"));
    p = tlm_context_default_params();
    p.n_threads = 100000;
    assert_null(tlm_context_new(m, &p, &err));
    assert_int_equal(err.code, TLM_ERR_ARG);
    assert_null(tlm_context_new(NULL, NULL, &err));
    tlm_context_free(NULL);

    /* KV-cache types: names, bytes per token (2 layers x keys + values of
     * 1 KV head of HD values; int8 adds a 4-byte scale per head vector). */
    static const struct { const char *name; int32_t type; int64_t bytes; } kv[] = {
        {"f16", TLM_KV_F16, 2 * 2 * HD * 2},
        {"f32", TLM_KV_F32, 2 * 2 * HD * 4},
        {"int8", TLM_KV_INT8, 2 * 2 * (HD + 4)},
    };
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tlm_kv_type_from_name(kv[i].name), kv[i].type);
        assert_string_equal(tlm_kv_type_name(kv[i].type), kv[i].name);
        p = tlm_context_default_params();
        p.kv_type = kv[i].type;
        c = tlm_context_new(m, &p, &err);
        assert_non_null(c);
        assert_int_equal(tlm_context_kv_type(c), kv[i].type);
        assert_int_equal(tlm_context_kv_bytes_per_token(c), kv[i].bytes);
        tlm_context_free(c);
    }
    assert_int_equal(tlm_context_default_params().kv_type, TLM_KV_F16);
    assert_int_equal(tlm_kv_type_from_name("bf16"), -1);
    assert_string_equal(tlm_kv_type_name(7), "unknown");
    p = tlm_context_default_params();
    p.kv_type = 7;
    assert_null(tlm_context_new(m, &p, &err));
    assert_int_equal(err.code, TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "KV-cache type"));
}

static void test_kept_logits(void **state) {
    tlm_model *m = *state;
    tlm_context *c = new_ctx(m, 32, 0, 1);
    tlm_error err;
    int32_t toks[5] = {1, 5, 9, 2, 15};
    assert_int_equal(tlm_decode(c, toks, 3, true, &err), TLM_OK);
    assert_int_equal(tlm_context_pos(c), 3);
    for (int i = 0; i < 3; i++) assert_non_null(tlm_get_logits(c, i));
    assert_null(tlm_get_logits(c, 3));
    assert_null(tlm_get_logits(c, -2));
    assert_ptr_equal(tlm_get_logits(c, -1), tlm_get_logits(c, 2));

    assert_int_equal(tlm_decode(c, toks + 3, 2, false, &err), TLM_OK);
    assert_null(tlm_get_logits(c, 0)); /* only the last is kept */
    assert_non_null(tlm_get_logits(c, 1));
    assert_ptr_equal(tlm_get_logits(c, -1), tlm_get_logits(c, 1));
    for (int j = 0; j < V; j++) assert_true(isfinite(tlm_get_logits(c, -1)[j]));
    tlm_context_free(c);
}

static void test_errors_leave_state(void **state) {
    tlm_model *m = *state;
    tlm_context *c = new_ctx(m, 8, 0, 2);
    tlm_error err;
    int32_t toks[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(tlm_decode(c, toks, 6, false, &err), TLM_OK);
    float last[V];
    memcpy(last, tlm_get_logits(c, -1), sizeof last);

    assert_int_equal(tlm_decode(c, toks, 3, false, &err), TLM_ERR_CONTEXT_FULL);
    assert_non_null(strstr(err.msg, "do not fit"));
    assert_int_equal(tlm_context_pos(c), 6);
    int32_t bad[2] = {3, V};
    assert_int_equal(tlm_decode(c, bad, 2, false, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "16"));
    bad[1] = -1;
    assert_int_equal(tlm_decode(c, bad, 2, false, &err), TLM_ERR_ARG);
    assert_int_equal(tlm_decode(c, toks, 0, false, &err), TLM_ERR_ARG);
    assert_int_equal(tlm_context_pos(c), 6);
    /* the logits of the last successful call are still there */
    assert_true(max_abs_diff(last, tlm_get_logits(c, -1), V) == 0.0);
    /* the last two slots still fit */
    assert_int_equal(tlm_decode(c, toks, 2, false, &err), TLM_OK);
    assert_int_equal(tlm_context_pos(c), 8);
    tlm_context_free(c);
}

static void test_reset_and_chunking(void **state) {
    tlm_model *m = *state;
    tlm_error err;
    int32_t toks[7] = {3, 1, 4, 1, 5, 9, 2};
    float ref[7 * V];
    tlm_context *c = new_ctx(m, 16, 0, 1);
    assert_int_equal(tlm_decode(c, toks, 7, true, &err), TLM_OK);
    for (int i = 0; i < 7; i++) memcpy(ref + i * V, tlm_get_logits(c, i), V * sizeof(float));
    /* reset empties the cache: the same call gives the same logits */
    tlm_context_reset(c);
    assert_int_equal(tlm_context_pos(c), 0);
    assert_int_equal(tlm_decode(c, toks, 7, true, &err), TLM_OK);
    for (int i = 0; i < 7; i++)
        assert_true(max_abs_diff(ref + i * V, tlm_get_logits(c, i), V) < 1e-5);
    tlm_context_free(c);

    /* n_batch 2 and 1: the call is cut into steps inside tlm_decode */
    for (int nb = 1; nb <= 3; nb++) {
        c = new_ctx(m, 16, nb, 2);
        assert_int_equal(tlm_decode(c, toks, 7, true, &err), TLM_OK);
        for (int i = 0; i < 7; i++)
            assert_true(max_abs_diff(ref + i * V, tlm_get_logits(c, i), V) < 1e-5);
        tlm_context_reset(c);
        assert_int_equal(tlm_decode(c, toks, 7, false, &err), TLM_OK);
        assert_true(max_abs_diff(ref + 6 * V, tlm_get_logits(c, -1), V) < 1e-5);
        tlm_context_free(c);
    }
}

static int setup(void **state) {
    *state = tiny_model();
    return 0;
}

static int teardown(void **state) {
    tlm_model_free(*state);
    return 0;
}

/* A removed sublayer must act exactly like one whose output projection is
 * zero (its residual contribution vanishes), in prefill and in decode. */
static void check_removed_equals_zeroed(bool attn, int32_t layer) {
    tlm_model *removed = tiny_model(), *zeroed = tiny_model();
    const tlm_sublayer_kind kind = attn ? TLM_SUBLAYER_ATTN : TLM_SUBLAYER_MLP;
    assert_true(model_remove_sublayer(removed, layer, kind));
    assert_false(model_remove_sublayer(removed, layer, kind)); /* already gone */
    assert_null(model_sublayer(removed, layer, kind));
    assert_int_equal(removed->n_subs, 3);
    assert_int_equal(removed->n_attn, attn ? 1 : 2);
    int32_t next_slot = 0; /* the attention sublayers left hold slots 0, 1, ... */
    for (int32_t i = 0; i < removed->n_subs; i++)
        assert_int_equal(removed->subs[i].kv_slot,
                         removed->subs[i].kind == TLM_SUBLAYER_ATTN ? next_slot++ : -1);
    const tlm_sublayer *Z = model_sublayer(zeroed, layer, kind);
    if (attn) memset(Z->w[ATTN_OUT].data, 0, (size_t)E * 2 * HD * sizeof(float));
    else memset(Z->w[MLP_DOWN].data, 0, (size_t)E * FF * sizeof(float));
    int32_t toks[6] = {1, 5, 9, 2, 15, 7};
    for (int threads = 1; threads <= 2; threads++) {
        tlm_context *cr = new_ctx(removed, 16, 4, threads), *cz = new_ctx(zeroed, 16, 4, threads);
        tlm_error err;
        /* keys + values of 1 KV head x 4 halves (the default f16 cache) per
         * attention sublayer held */
        int64_t per_layer = 2 * 1 * HD * (int64_t)sizeof(uint16_t);
        assert_int_equal(tlm_context_kv_bytes_per_token(cz), 2 * per_layer);
        assert_int_equal(tlm_context_kv_bytes_per_token(cr), attn ? per_layer : 2 * per_layer);
        /* 5 tokens in one call (prefill chunks of 4 + 1), then one decode */
        assert_int_equal(tlm_decode(cr, toks, 5, true, &err), TLM_OK);
        assert_int_equal(tlm_decode(cz, toks, 5, true, &err), TLM_OK);
        for (int i = 0; i < 5; i++) {
            const float *a = tlm_get_logits(cr, i), *b = tlm_get_logits(cz, i);
            for (int v = 0; v < V; v++) assert_float_equal(a[v], b[v], 1e-5f);
        }
        assert_int_equal(tlm_decode(cr, toks + 5, 1, false, &err), TLM_OK);
        assert_int_equal(tlm_decode(cz, toks + 5, 1, false, &err), TLM_OK);
        const float *a = tlm_get_logits(cr, -1), *b = tlm_get_logits(cz, -1);
        for (int v = 0; v < V; v++) assert_float_equal(a[v], b[v], 1e-5f);
        tlm_context_free(cr);
        tlm_context_free(cz);
    }
    tlm_model_free(removed);
    tlm_model_free(zeroed);
}

static void test_removed_attention(void **state) {
    (void)state;
    check_removed_equals_zeroed(true, 1);
}

/* Layer 0's attention removed: layer 1's takes KV-cache slot 0, the only
 * one there is. */
static void test_removed_first_attention(void **state) {
    (void)state;
    check_removed_equals_zeroed(true, 0);
}

static void test_removed_mlp(void **state) {
    (void)state;
    check_removed_equals_zeroed(false, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_kept_logits),
        cmocka_unit_test(test_errors_leave_state),
        cmocka_unit_test(test_reset_and_chunking),
        cmocka_unit_test(test_removed_attention),
        cmocka_unit_test(test_removed_first_attention),
        cmocka_unit_test(test_removed_mlp),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
