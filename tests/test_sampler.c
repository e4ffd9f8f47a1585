/*
 * test_sampler.c — the sampler's contract: greedy is argmax, filters drop
 * what they should, the draw follows softmax(logits / T), seeds reproduce.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trimlm.h"

#define V 64

static tlm_sampler_params plain_params(float temperature, uint64_t seed) {
    return (tlm_sampler_params){.temperature = temperature, .top_k = 0, .top_p = 1.0f,
                                .min_p = 0.0f, .repeat_penalty = 1.0f, .repeat_last_n = 64,
                                .seed = seed};
}

static void fill_logits(float *logits, uint64_t seed) {
    for (int i = 0; i < V; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        logits[i] = (float)((double)(seed >> 40) / (double)(1 << 24) * 6.0 - 3.0);
    }
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static tlm_sampler *new_sampler(const tlm_sampler_params *p) {
    tlm_error err;
    tlm_sampler *s = tlm_sampler_new(p, V, &err);
    if (!s) print_error("tlm_sampler_new: %s\n", err.msg);
    assert_non_null(s);
    return s;
}

/* ---------------------------------------------------------------- tests */

static void test_greedy_is_argmax(void **state) {
    (void)state;
    tlm_sampler_params p = plain_params(0.0f, 1);
    tlm_sampler *s = new_sampler(&p);
    float logits[V];
    for (uint64_t trial = 0; trial < 50; trial++) {
        fill_logits(logits, trial);
        assert_int_equal(tlm_sampler_sample(s, logits), argmax(logits, V));
    }
    tlm_sampler_free(s);
}

static void test_top_k_one_is_argmax(void **state) {
    (void)state;
    const float temps[] = {0.1f, 1.0f, 5.0f, 100.0f};
    float logits[V];
    for (size_t t = 0; t < 4; t++) {
        tlm_sampler_params p = plain_params(temps[t], 7 + t);
        p.top_k = 1;
        tlm_sampler *s = new_sampler(&p);
        for (uint64_t trial = 0; trial < 50; trial++) {
            fill_logits(logits, 100 + trial);
            assert_int_equal(tlm_sampler_sample(s, logits), argmax(logits, V));
        }
        tlm_sampler_free(s);
    }
}

/* Pearson chi-square of N draws against softmax(logits / T); with 15 bins of
 * well-populated probabilities the statistic exceeds 45 with probability
 * ~1e-4 for a correct sampler, while a wrong temperature or an off-by-one in
 * the draw gives hundreds. */
static void check_distribution(float temperature, int top_k) {
    float logits[16];
    for (int i = 0; i < 16; i++) logits[i] = 0.15f * (float)i - 1.0f;
    tlm_sampler_params p = plain_params(temperature, 12345);
    p.top_k = top_k;
    tlm_error err;
    tlm_sampler *s = tlm_sampler_new(&p, 16, &err);
    assert_non_null(s);
    enum { N = 200000 };
    int counts[16] = {0};
    for (int d = 0; d < N; d++) {
        int tok = tlm_sampler_sample(s, logits);
        assert_true(tok >= 0 && tok < 16);
        counts[tok]++;
    }
    double z = 0, prob[16];
    for (int i = 0; i < 16; i++) z += exp(logits[i] / temperature);
    for (int i = 0; i < 16; i++) prob[i] = exp(logits[i] / temperature) / z;
    double chi2 = 0;
    for (int i = 0; i < 16; i++) {
        double e = prob[i] * N;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    if (chi2 > 45.0) {
        print_error("chi-square %.1f at T=%g (top_k %d)\n", chi2, (double)temperature, top_k);
        fail();
    }
    tlm_sampler_free(s);
}

static void test_distribution_matches_softmax(void **state) {
    (void)state;
    check_distribution(1.0f, 0);
    check_distribution(0.7f, 0);
    check_distribution(1.0f, 16); /* top_k = vocabulary: no filtering, sorted path */
}

static void test_top_p_excludes_tail(void **state) {
    (void)state;
    /* probabilities at T=1: 0.5, 0.25, 0.125, 0.0625, ... (powers of two) */
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = -(float)i * logf(2.0f);
    /* cumulative: 0.5, 0.75, 0.875: top_p 0.8 keeps exactly {0, 1, 2} */
    tlm_sampler_params p = plain_params(1.0f, 99);
    p.top_p = 0.8f;
    tlm_sampler *s = new_sampler(&p);
    int counts[3] = {0};
    for (int d = 0; d < 20000; d++) {
        int tok = tlm_sampler_sample(s, logits);
        assert_true(tok >= 0 && tok <= 2);
        counts[tok]++;
    }
    /* renormalised 4/7, 2/7, 1/7 */
    assert_true(fabs(counts[0] / 20000.0 - 4.0 / 7) < 0.02);
    assert_true(fabs(counts[2] / 20000.0 - 1.0 / 7) < 0.02);
    tlm_sampler_free(s);

    /* the same through the top-k path */
    p.top_k = 10;
    s = new_sampler(&p);
    for (int d = 0; d < 5000; d++) assert_true(tlm_sampler_sample(s, logits) <= 2);
    tlm_sampler_free(s);
}

static void test_min_p_excludes_small(void **state) {
    (void)state;
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = -(float)i * logf(2.0f);
    /* p_i / p_max = 2^-i; min_p 0.2 keeps i with 2^-i >= 0.2: {0, 1, 2} */
    tlm_sampler_params p = plain_params(1.0f, 5);
    p.min_p = 0.2f;
    tlm_sampler *s = new_sampler(&p);
    bool seen[3] = {false};
    for (int d = 0; d < 20000; d++) {
        int tok = tlm_sampler_sample(s, logits);
        assert_true(tok >= 0 && tok <= 2);
        seen[tok] = true;
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    tlm_sampler_free(s);
}

static void test_same_seed_same_sequence(void **state) {
    (void)state;
    tlm_sampler_params p = plain_params(1.0f, 42);
    tlm_sampler *a = new_sampler(&p), *b = new_sampler(&p);
    p.seed = 43;
    tlm_sampler *c = new_sampler(&p);
    float logits[V];
    int first[200], differs = 0;
    for (int d = 0; d < 200; d++) {
        fill_logits(logits, 1000 + (uint64_t)d);
        int ta = tlm_sampler_sample(a, logits), tb = tlm_sampler_sample(b, logits);
        int tc = tlm_sampler_sample(c, logits);
        assert_int_equal(ta, tb);
        differs += ta != tc;
        first[d] = ta;
    }
    assert_true(differs > 0);
    /* reset restarts the sequence */
    tlm_sampler_reset(a);
    for (int d = 0; d < 200; d++) {
        fill_logits(logits, 1000 + (uint64_t)d);
        assert_int_equal(tlm_sampler_sample(a, logits), first[d]);
    }
    tlm_sampler_free(a);
    tlm_sampler_free(b);
    tlm_sampler_free(c);
}

static void test_repeat_penalty_direction(void **state) {
    (void)state;
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = -5.0f;
    logits[3] = 2.0f;  /* positive: divided by the penalty -> 1.0 */
    logits[4] = 1.5f;  /* not penalised: wins afterwards */
    logits[5] = -0.5f; /* negative: multiplied -> -1.0 */
    logits[6] = -0.7f;
    tlm_sampler_params p = plain_params(0.0f, 1);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 2;
    tlm_sampler *s = new_sampler(&p);
    assert_int_equal(tlm_sampler_sample(s, logits), 3);
    tlm_sampler_accept(s, 3);
    tlm_sampler_accept(s, 3); /* a token seen twice is penalised once */
    assert_int_equal(tlm_sampler_sample(s, logits), 4);
    /* the window is 2 tokens: after two others, 3 is free again */
    tlm_sampler_accept(s, 10);
    tlm_sampler_accept(s, 11);
    assert_int_equal(tlm_sampler_sample(s, logits), 3);
    /* negative logits move down: with 3 and 4 penalised and everything else
     * low, -0.7 (free) beats -0.5 * 2 */
    logits[3] = logits[4] = -9.0f;
    tlm_sampler_accept(s, 5);
    tlm_sampler_accept(s, 7);
    assert_int_equal(tlm_sampler_sample(s, logits), 6);
    /* logits are not modified */
    assert_true(logits[5] == -0.5f);
    tlm_sampler_free(s);
}

static void test_bad_params(void **state) {
    (void)state;
    tlm_error err;
    tlm_sampler_params p = plain_params(1.0f, 1);
    assert_null(tlm_sampler_new(&p, 0, &err));
    assert_int_equal(err.code, TLM_ERR_ARG);
    p.repeat_penalty = 0.0f;
    assert_null(tlm_sampler_new(&p, V, &err));
    assert_int_equal(err.code, TLM_ERR_ARG);
    tlm_sampler_free(NULL);
    tlm_sampler_params d = tlm_sampler_default_params();
    tlm_sampler *s = tlm_sampler_new(&d, V, &err);
    assert_non_null(s);
    float logits[V];
    fill_logits(logits, 3);
    int tok = tlm_sampler_sample(s, logits);
    assert_true(tok >= 0 && tok < V);
    tlm_sampler_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax),
        cmocka_unit_test(test_top_k_one_is_argmax),
        cmocka_unit_test(test_distribution_matches_softmax),
        cmocka_unit_test(test_top_p_excludes_tail),
        cmocka_unit_test(test_min_p_excludes_small),
        cmocka_unit_test(test_same_seed_same_sequence),
        cmocka_unit_test(test_repeat_penalty_direction),
        cmocka_unit_test(test_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
