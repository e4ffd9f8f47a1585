/*
 * test_tlm_format.c — the .tlm writer and reader on a tiny model built in
 * memory (random weights, a byte-level vocabulary stored as a GGUF image):
 * exact round trips at f32, rounding at f16/bf16 against independent
 * conversions, graphs with absent sublayers, refused versions, truncation at
 * every kind of cut, single-byte damage at thousands of positions (load never
 * crashes and fails for anything but tensor data; verify always fails and
 * names the tensor), and the destination rules of tlm_convert.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "alloc.h"
#include "f16.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "model.h"
#include "tlm_format.h"
#include "trimlm.h"

#define V 260 /* embedding rows; the tokenizer has 257 tokens */
#define E 16
#define FF 24
#define HD 4
#define NH 4
#define NKV 2
#define NL 3

static char g_dir[4096];

static uint64_t g_rng = 88172645463325252ull;
static uint64_t rnd_u64(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static float rnd(void) { return (float)((double)(rnd_u64() >> 11) * 0x1.0p-53 - 0.5); }

static const char *path_in_dir(const char *name) {
    static char buf[8][4200];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", g_dir, name);
    return p;
}

/* ------------------------------------------------ a tokenizer as GGUF */

typedef struct img {
    uint8_t *p;
    size_t len, cap;
} img;

static void put(img *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
static void put_u32(img *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(img *b, uint64_t v) { put(b, &v, 8); }
static void put_str(img *b, const char *s, size_t n) { put_u64(b, n); put(b, s, n); }
static void put_key(img *b, const char *key, uint32_t type) {
    put_str(b, key, strlen(key));
    put_u32(b, type);
}

static size_t utf8(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

/* GPT-2 byte symbols (256 tokens) + "ab" from the merge "a b". */
static img tokenizer_image(void) {
    img b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 5);
    put_key(&b, "tokenizer.ggml.model", GGUF_VT_STRING);
    put_str(&b, "gpt2", 4);
    put_key(&b, "tokenizer.ggml.tokens", GGUF_VT_ARRAY);
    put_u32(&b, GGUF_VT_STRING);
    put_u64(&b, 257);
    uint32_t extra = 0;
    for (uint32_t byte = 0; byte < 256; byte++) {
        bool keep = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174;
        uint32_t cp = keep ? byte : 256 + extra++;
        char s[4];
        put_str(&b, s, utf8(cp, s));
    }
    put_str(&b, "ab", 2);
    put_key(&b, "tokenizer.ggml.merges", GGUF_VT_ARRAY);
    put_u32(&b, GGUF_VT_STRING);
    put_u64(&b, 1);
    put_str(&b, "a b", 3);
    put_key(&b, "tokenizer.ggml.eos_token_id", GGUF_VT_UINT32);
    put_u32(&b, 0);
    put_key(&b, "tokenizer.chat_template", GGUF_VT_STRING);
    put_str(&b, "{{ messages }}", 14);
    return b;
}

/* ------------------------------------------------------- tiny model */

static float *weight(struct tlm_model *m, uint64_t n, float base) {
    float *w = model_alloc_weight(m, n, NULL);
    assert_non_null(w);
    for (uint64_t i = 0; i < n; i++) w[i] = base + rnd();
    return w;
}

static img g_tok;

/* A model of NL layers with embedding e, MLP ff, nh heads of hd (NKV KV heads). */
static tlm_model *tiny_model_dims(bool qkv_bias, int e, int ff, int hd, int nh) {
    struct tlm_model *m = tlm_calloc(1, sizeof *m);
    assert_non_null(m);
    m->hp = (tlm_hparams){.arch = qkv_bias ? TLM_ARCH_QWEN2 : TLM_ARCH_LLAMA, .n_vocab = V,
                          .n_embd = e, .n_layer = NL, .n_head = nh, .n_head_kv = NKV,
                          .head_dim = hd, .n_ff = ff, .n_ctx_train = 64, .rms_eps = 1e-5f,
                          .rope_theta = 10000.0f, .rope_dim = hd,
                          .rope_style = qkv_bias ? TLM_ROPE_NEOX : TLM_ROPE_NORM,
                          .rope_scaling = TLM_ROPE_SCALING_LINEAR, .rope_factor = 2.0f,
                          .qkv_bias = qkv_bias};
    m->arch_name = tlm_strdup(qkv_bias ? "qwen2" : "llama");
    m->name = tlm_strdup("tiny test model");
    m->source_format = "memory";
    assert_int_equal(model_alloc_sublayers(m, "tiny", NULL), TLM_OK);
    m->tok_embd = tensor_of_f32(weight(m, V * e, 0.0f), V, e);
    for (int l = 0; l < NL; l++) {
        tlm_sublayer *A = model_add_sublayer(m, TLM_SUBLAYER_ATTN, l);
        A->w[ATTN_NORM] = tensor_of_f32(weight(m, e, 1.0f), 1, e);
        A->w[ATTN_Q] = tensor_of_f32(weight(m, nh * hd * e, 0.0f), nh * hd, e);
        A->w[ATTN_K] = tensor_of_f32(weight(m, NKV * hd * e, 0.0f), NKV * hd, e);
        A->w[ATTN_V] = tensor_of_f32(weight(m, NKV * hd * e, 0.0f), NKV * hd, e);
        if (qkv_bias) {
            A->w[ATTN_Q_BIAS] = tensor_of_f32(weight(m, nh * hd, 0.0f), 1, nh * hd);
            A->w[ATTN_K_BIAS] = tensor_of_f32(weight(m, NKV * hd, 0.0f), 1, NKV * hd);
            A->w[ATTN_V_BIAS] = tensor_of_f32(weight(m, NKV * hd, 0.0f), 1, NKV * hd);
        }
        A->w[ATTN_OUT] = tensor_of_f32(weight(m, e * nh * hd, 0.0f), e, nh * hd);
        tlm_sublayer *F = model_add_sublayer(m, TLM_SUBLAYER_MLP, l);
        F->w[MLP_NORM] = tensor_of_f32(weight(m, e, 1.0f), 1, e);
        F->w[MLP_GATE] = tensor_of_f32(weight(m, ff * e, 0.0f), ff, e);
        F->w[MLP_UP] = tensor_of_f32(weight(m, ff * e, 0.0f), ff, e);
        F->w[MLP_DOWN] = tensor_of_f32(weight(m, e * ff, 0.0f), e, ff);
    }
    m->out_norm = tensor_of_f32(weight(m, e, 1.0f), 1, e);
    m->output = tensor_of_f32(weight(m, V * e, 0.0f), V, e);
    tlm_error err;
    gguf_file *g = gguf_open_memory(g_tok.p, g_tok.len, "tokenizer image", &err);
    assert_non_null(g);
    m->tok = tokenizer_from_gguf(g, &err);
    gguf_close(g);
    assert_non_null(m->tok);
    return m;
}

static tlm_model *tiny_model(bool qkv_bias) { return tiny_model_dims(qkv_bias, E, FF, HD, NH); }

static tlm_tokenizer_blob tok_blob(void) {
    tlm_tokenizer_blob b = {0};
    snprintf(b.format, sizeof b.format, "gguf-kv");
    snprintf(b.part_name[0], sizeof b.part_name[0], "tokenizer.gguf");
    b.part_data[0] = tlm_malloc(g_tok.len);
    memcpy(b.part_data[0], g_tok.p, g_tok.len);
    b.part_bytes[0] = g_tok.len;
    b.n_parts = 1;
    return b;
}

static tlm_status write_model(const tlm_model *m, const char *dst, uint32_t dtype, const bool *drop_attn,
                              const bool *drop_mlp, const char *keep_wide, tlm_error *err) {
    tlm_tokenizer_blob b = tok_blob();
    tlm_drop_list *drop = tlm_drop_list_new(m->hp.n_layer, err);
    assert_non_null(drop);
    for (int32_t il = 0; il < m->hp.n_layer; il++) {
        if (drop_attn && drop_attn[il]) tlm_drop_list_add(drop, TLM_SUBLAYER_ATTN, il);
        if (drop_mlp && drop_mlp[il]) tlm_drop_list_add(drop, TLM_SUBLAYER_MLP, il);
    }
    tlm_write_options o = {.dtype = dtype, .keep_wide = keep_wide, .drop = drop,
                           .source_file = "memory", .tokenizer = &b};
    tlm_status st = write_tlm_file(m, dst, &o, err);
    tokenizer_blob_free(&b);
    tlm_drop_list_free(drop);
    return st;
}

static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*len);
    assert_int_equal(fread(p, 1, *len, f), *len);
    fclose(f);
    return p;
}

static void write_all(const char *path, const void *p, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, len, f), len);
    fclose(f);
}

/* ------------------------------------------------------- comparisons */

typedef float (*round_fn)(float);
static float round_none(float x) { return x; }
static float round_f16(float x) { return tlm_f16_to_f32(tlm_f32_to_f16(x)); }
/* bf16 by the textbook rule: the nearest of the two neighbours, ties to even. */
static float round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    uint32_t rem = u & 0xffffu;
    uint32_t r = rem < 0x8000u ? lo : rem > 0x8000u ? hi : ((lo >> 16) & 1 ? hi : lo);
    float y;
    memcpy(&y, &r, 4);
    return y;
}

/* Whether model x has the attention (mlp = false) or MLP sublayer of layer l. */
#define HAS(x, l, kind) (model_sublayer((x), (l), (kind)) != NULL)
#define ATTN TLM_SUBLAYER_ATTN
#define MLP TLM_SUBLAYER_MLP
/* The f32 values of slot `slot` of that sublayer, or NULL when it (or the
 * tensor) is absent. */
static const float *sub_w(const tlm_model *x, int l, tlm_sublayer_kind kind, int slot) {
    const tlm_sublayer *S = model_sublayer(x, l, kind);
    return S ? tensor_f32(&S->w[slot]) : NULL;
}

static void expect_weights(const float *got, const float *src, size_t n, round_fn rf) {
    assert_non_null(got);
    for (size_t i = 0; i < n; i++) {
        float want = rf(src[i]);
        if (memcmp(&got[i], &want, 4) != 0)
            fail_msg("element %zu: got %.9g, want %.9g (source %.9g)", i, (double)got[i],
                     (double)want, (double)src[i]);
    }
}

/* Matrices rounded by rf, vectors always exact. */
static void expect_model(const tlm_model *a, const tlm_model *b, round_fn rf) {
    assert_memory_equal(&a->hp, &b->hp, sizeof a->hp);
    assert_string_equal(a->name, b->name);
    assert_string_equal(tlm_model_chat_template(b), "{{ messages }}");
    expect_weights(tensor_f32(&b->tok_embd), tensor_f32(&a->tok_embd), V * E, rf);
    expect_weights(tensor_f32(&b->out_norm), tensor_f32(&a->out_norm), E, round_none);
    expect_weights(tensor_f32(&b->output), tensor_f32(&a->output), V * E, rf);
    for (int l = 0; l < NL; l++) {
        assert_true(HAS(b, l, ATTN) && HAS(b, l, MLP));
        expect_weights(sub_w(b, l, ATTN, ATTN_NORM), sub_w(a, l, ATTN, ATTN_NORM), E, round_none);
        expect_weights(sub_w(b, l, ATTN, ATTN_Q), sub_w(a, l, ATTN, ATTN_Q), NH * HD * E, rf);
        expect_weights(sub_w(b, l, ATTN, ATTN_K), sub_w(a, l, ATTN, ATTN_K), NKV * HD * E, rf);
        expect_weights(sub_w(b, l, ATTN, ATTN_V), sub_w(a, l, ATTN, ATTN_V), NKV * HD * E, rf);
        expect_weights(sub_w(b, l, ATTN, ATTN_OUT), sub_w(a, l, ATTN, ATTN_OUT), E * NH * HD, rf);
        if (a->hp.qkv_bias) {
            expect_weights(sub_w(b, l, ATTN, ATTN_Q_BIAS), sub_w(a, l, ATTN, ATTN_Q_BIAS), NH * HD, round_none);
            expect_weights(sub_w(b, l, ATTN, ATTN_K_BIAS), sub_w(a, l, ATTN, ATTN_K_BIAS), NKV * HD, round_none);
            expect_weights(sub_w(b, l, ATTN, ATTN_V_BIAS), sub_w(a, l, ATTN, ATTN_V_BIAS), NKV * HD, round_none);
        }
        expect_weights(sub_w(b, l, MLP, MLP_NORM), sub_w(a, l, MLP, MLP_NORM), E, round_none);
        expect_weights(sub_w(b, l, MLP, MLP_GATE), sub_w(a, l, MLP, MLP_GATE), FF * E, rf);
        expect_weights(sub_w(b, l, MLP, MLP_UP), sub_w(a, l, MLP, MLP_UP), FF * E, rf);
        expect_weights(sub_w(b, l, MLP, MLP_DOWN), sub_w(a, l, MLP, MLP_DOWN), E * FF, rf);
    }
    /* the tokenizer came back through the GGUF loader: same ids */
    static const char *const texts[] = {"ab cab", "hello, world", "\xff\x01 ab"};
    for (size_t i = 0; i < 3; i++) {
        int32_t ia[64], ib[64];
        tlm_error err;
        int32_t na = tlm_tokenize(a, texts[i], strlen(texts[i]), false, true, ia, 64, &err);
        int32_t nb = tlm_tokenize(b, texts[i], strlen(texts[i]), false, true, ib, 64, &err);
        assert_true(na > 0);
        assert_int_equal(na, nb);
        assert_memory_equal(ia, ib, (size_t)na * sizeof *ia);
    }
}

/* ------------------------------------------------------------ tests */

static void test_header_layout(void **state) {
    (void)state;
    assert_int_equal(sizeof(tlm_file_header), 128);
    assert_int_equal(sizeof(tlm_tensor_entry), 128);
    assert_int_equal(offsetof(tlm_file_header, n_tensors), 80);
    assert_int_equal(offsetof(tlm_tensor_entry, checksum), 104);
    assert_int_equal(tlm_tensor_type_from_name("bf16"), TLM_TYPE_BF16);
    assert_int_equal(tlm_tensor_type_from_name("int3"), -1);
    assert_string_equal(tlm_tensor_type_name(TLM_TYPE_F16), "f16");
}

static void round_trip(uint32_t dtype, bool qkv_bias, round_fn rf) {
    tlm_model *m = tiny_model(qkv_bias);
    const char *path = path_in_dir("round.tlm");
    tlm_error err;
    assert_int_equal(write_model(m, path, dtype, NULL, NULL, NULL, &err), TLM_OK);
    tlm_model *back = tlm_model_load(path, &err);
    if (!back) fail_msg("load: %s", err.msg);
    assert_string_equal(back->source_format, "tlm");
    expect_model(m, back, rf);
    assert_int_equal(tlm_file_verify(path, NULL, NULL, &err), TLM_OK);
    /* and the layout rules: every tensor 64-byte aligned in the file */
    tlm_file_desc *d = tlm_file_describe(path, &err);
    assert_non_null(d);
    assert_int_equal(d->n_sublayers, 2 * NL);
    assert_int_equal(d->n_attn_sublayers, NL);
    for (int32_t i = 0; i < d->n_tensors; i++) assert_int_equal(d->tensors[i].offset % 64, 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(d->file_bytes, (uint64_t)st.st_size);
    assert_int_equal(d->info.n_params, m->n_params);
    tlm_file_desc_free(d);
    tlm_model_free(back);
    tlm_model_free(m);
}

static void test_round_trip_f32(void **state) { (void)state; round_trip(TLM_DTYPE_F32, false, round_none); }
static void test_round_trip_f16(void **state) { (void)state; round_trip(TLM_DTYPE_F16, true, round_f16); }
static void test_round_trip_bf16(void **state) { (void)state; round_trip(TLM_DTYPE_BF16, false, round_bf16); }

static void test_keep_wide(void **state) {
    (void)state;
    tlm_model *m = tiny_model(false);
    const char *path = path_in_dir("wide.tlm");
    tlm_error err;
    assert_int_equal(write_model(m, path, TLM_DTYPE_F16, NULL, NULL, "output, attn_q,blk.2.ffn_down.weight", &err), TLM_OK);
    tlm_file_desc *d = tlm_file_describe(path, &err);
    assert_non_null(d);
    int n_f32 = 0;
    for (int32_t i = 0; i < d->n_tensors; i++) {
        const tlm_tensor_desc *t = &d->tensors[i];
        bool want_wide = t->n_dims == 1 || !strcmp(t->name, "output.weight") ||
                         strstr(t->name, "attn_q.weight") || !strcmp(t->name, "blk.2.ffn_down.weight");
        assert_string_equal(t->type, want_wide ? "f32" : "f16");
        n_f32 += want_wide;
    }
    assert_int_equal(n_f32, 1 + 1 + NL * 3 + 1); /* output, output_norm, 2 norms + q per layer, down */
    tlm_file_desc_free(d);
    assert_int_not_equal(write_model(m, path_in_dir("bad.tlm"), TLM_DTYPE_F16, NULL, NULL, "outptu", &err), TLM_OK);
    assert_non_null(strstr(err.msg, "outptu"));
    assert_int_equal(access(path_in_dir("bad.tlm"), F_OK), -1);
    tlm_model_free(m);
}

static void test_absent_sublayers(void **state) {
    (void)state;
    tlm_model *m = tiny_model(true);
    const char *path = path_in_dir("dropped.tlm");
    bool drop_attn[NL] = {false, true, false}, drop_mlp[NL] = {true, false, false};
    tlm_error err;
    assert_int_equal(write_model(m, path, TLM_DTYPE_F32, drop_attn, drop_mlp, NULL, &err), TLM_OK);
    tlm_model *b = tlm_model_load(path, &err);
    if (!b) fail_msg("load: %s", err.msg);
    assert_int_equal(b->hp.n_layer, NL);
    assert_true(HAS(b, 0, ATTN));
    assert_false(HAS(b, 0, MLP));
    assert_null(sub_w(b, 0, MLP, MLP_NORM));
    assert_null(sub_w(b, 0, MLP, MLP_GATE));
    assert_false(HAS(b, 1, ATTN));
    assert_null(sub_w(b, 1, ATTN, ATTN_NORM));
    assert_null(sub_w(b, 1, ATTN, ATTN_Q));
    assert_null(sub_w(b, 1, ATTN, ATTN_Q_BIAS));
    assert_null(sub_w(b, 1, ATTN, ATTN_OUT));
    assert_true(HAS(b, 1, MLP));
    expect_weights(sub_w(b, 1, MLP, MLP_DOWN), sub_w(m, 1, MLP, MLP_DOWN), E * FF, round_none);
    expect_weights(sub_w(b, 0, ATTN, ATTN_Q), sub_w(m, 0, ATTN, ATTN_Q), NH * HD * E, round_none);
    assert_true(HAS(b, 2, ATTN) && HAS(b, 2, MLP));
    assert_int_equal(tlm_file_verify(path, NULL, NULL, &err), TLM_OK);
    tlm_file_desc *d = tlm_file_describe(path, &err);
    assert_non_null(d);
    assert_int_equal(d->n_sublayers, 2 * NL - 2);
    assert_int_equal(d->n_attn_sublayers, NL - 1);
    assert_string_equal(d->sublayers[0].kind, "attn");
    assert_int_equal(d->sublayers[0].layer, 0);
    assert_string_equal(d->sublayers[1].kind, "mlp");
    assert_int_equal(d->sublayers[1].layer, 1);
    tlm_file_desc_free(d);
    /* writing the pruned model again keeps it pruned (a .tlm source) */
    const char *again = path_in_dir("dropped-f16.tlm");
    tlm_convert_params p = tlm_convert_default_params();
    assert_int_equal(tlm_convert(path, again, &p, NULL, NULL, &err), TLM_OK);
    tlm_model *c = tlm_model_load(again, &err);
    assert_non_null(c);
    assert_false(HAS(c, 1, ATTN));
    assert_false(HAS(c, 0, MLP));
    expect_weights(sub_w(c, 2, ATTN, ATTN_Q), sub_w(m, 2, ATTN, ATTN_Q), NH * HD * E, round_f16);
    tlm_model_free(c);
    tlm_model_free(b);
    tlm_model_free(m);
}

/* Rewrites the header's version and checksum. */
static void test_unknown_version(void **state) {
    (void)state;
    tlm_model *m = tiny_model(false);
    const char *path = path_in_dir("v7.tlm");
    tlm_error err;
    assert_int_equal(write_model(m, path, TLM_DTYPE_F16, NULL, NULL, NULL, &err), TLM_OK);
    tlm_model_free(m);
    size_t len;
    uint8_t *bytes = read_all(path, &len);
    tlm_file_header h;
    memcpy(&h, bytes, sizeof h);
    h.version = 7;
    h.header_checksum = XXH3_64bits(&h, offsetof(tlm_file_header, header_checksum));
    memcpy(bytes, &h, sizeof h);
    write_all(path, bytes, len);
    free(bytes);
    assert_null(tlm_model_load(path, &err));
    assert_int_equal(err.code, TLM_ERR_UNSUPPORTED);
    char want[4400];
    snprintf(want, sizeof want, "%s: format version 7 is newer than this trimlm supports (1)", path);
    assert_string_equal(err.msg, want);
    assert_int_not_equal(tlm_file_verify(path, NULL, NULL, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "version 7"));
    assert_null(tlm_file_describe(path, &err));
}

static void test_truncation(void **state) {
    (void)state;
    tlm_model *m = tiny_model(false);
    const char *path = path_in_dir("whole.tlm"), *cut = path_in_dir("cut.tlm");
    tlm_error err;
    assert_int_equal(write_model(m, path, TLM_DTYPE_F16, NULL, NULL, NULL, &err), TLM_OK);
    tlm_model_free(m);
    size_t len;
    uint8_t *bytes = read_all(path, &len);
    int n_cuts = 0;
    for (size_t at = 0; at < len; at += at < 300 ? 1 : 1 + at / 97) {
        write_all(cut, bytes, at);
        assert_null(model_load_tlm(cut, &err));
        if (!strstr(err.msg, "truncated")) fail_msg("cut at %zu: %s", at, err.msg);
        assert_non_null(strstr(err.msg, cut));
        assert_null(tlm_model_load(cut, &err)); /* whatever loader the dispatch picks */
        assert_int_not_equal(tlm_file_verify(cut, NULL, NULL, &err), TLM_OK);
        n_cuts++;
    }
    assert_true(n_cuts > 400);
    /* one byte too many is refused as well */
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, bytes, len);
    longer[len] = 0;
    write_all(cut, longer, len + 1);
    assert_null(model_load_tlm(cut, &err));
    assert_non_null(strstr(err.msg, "unexpected bytes"));
    free(longer);
    free(bytes);
}

/* Where byte `at` lies: 0 header, 1 metadata, 2 tokenizer, 3 padding before
 * data, 4 tensor data (*tensor set), 5 padding between tensors, 6 directory. */
static int region_of(const tlm_file_header *h, const tlm_tensor_entry *dir, size_t at, int *tensor) {
    if (at < TLM_HEADER_BYTES) return 0;
    if (at < h->tok_offset) return 1;
    if (at < h->tok_offset + h->tok_bytes) return 2;
    if (at < h->data_offset) return 3;
    if (at >= h->dir_offset) return 6;
    uint64_t rel = at - h->data_offset;
    for (uint32_t i = 0; i < h->n_tensors; i++)
        if (rel >= dir[i].offset && rel < dir[i].offset + dir[i].bytes) {
            *tensor = (int)i;
            return 4;
        }
    return 5;
}

/* Every byte of the header, metadata and directory; a sample elsewhere. */
static size_t step_after(const tlm_file_header *h, size_t at) {
    if (at < h->tok_offset || at >= h->dir_offset) return 1;
    if (at < h->data_offset) return 1 + rnd_u64() % 5;
    return 1 + rnd_u64() % 29;
}

static void test_byte_flips(void **state) {
    (void)state;
    tlm_model *m = tiny_model(true);
    const char *path = path_in_dir("flip.tlm");
    tlm_error err;
    assert_int_equal(write_model(m, path, TLM_DTYPE_F16, NULL, NULL, NULL, &err), TLM_OK);
    tlm_model_free(m);
    size_t len;
    uint8_t *bytes = read_all(path, &len);
    tlm_file_header h;
    memcpy(&h, bytes, sizeof h);
    tlm_tensor_entry *dir = malloc(h.n_tensors * sizeof *dir);
    memcpy(dir, bytes + h.dir_offset, h.n_tensors * sizeof *dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    int n_flips = 0, n_data = 0, n_loaded = 0;
    for (size_t at = 0; at < len; at += step_after(&h, at)) {
        uint8_t flipped = bytes[at] ^ (uint8_t)(1u << (rnd_u64() % 8));
        assert_int_equal(pwrite(fd, &flipped, 1, (off_t)at), 1);
        int tensor = -1;
        int region = region_of(&h, dir, at, &tensor);
        tlm_model *b = tlm_model_load(path, &err);
        if (b) {
            n_loaded++;
            tlm_model_free(b);
            if (region != 4 && region != 3 && region != 5)
                fail_msg("a flip at byte %zu (region %d) was not noticed by load", at, region);
        } else {
            assert_true(err.msg[0] != '\0');
        }
        assert_int_not_equal(tlm_file_verify(path, NULL, NULL, &err), TLM_OK);
        if (region == 4) {
            char want[128];
            snprintf(want, sizeof want, "tensor '%s' is damaged", dir[tensor].name);
            if (!strstr(err.msg, want)) fail_msg("flip at %zu: '%s' does not say %s", at, err.msg, want);
            n_data++;
        }
        tlm_file_desc *d = tlm_file_describe(path, &err); /* must not crash either */
        tlm_file_desc_free(d);
        assert_int_equal(pwrite(fd, &bytes[at], 1, (off_t)at), 1);
        n_flips++;
    }
    close(fd);
    assert_int_equal(tlm_file_verify(path, NULL, NULL, &err), TLM_OK); /* restored */
    assert_true(n_flips > 2000);
    assert_true(n_data > 300);
    print_message("%d single-bit flips, %d in tensor data, %d still loadable\n", n_flips, n_data, n_loaded);
    assert_true(n_loaded > 0);
    free(dir);
    free(bytes);
}

static void test_convert_destinations(void **state) {
    (void)state;
    tlm_model *m = tiny_model(false);
    const char *src = path_in_dir("src.tlm");
    tlm_error err;
    assert_int_equal(write_model(m, src, TLM_DTYPE_F32, NULL, NULL, NULL, &err), TLM_OK);
    tlm_model_free(m);
    tlm_convert_params p = tlm_convert_default_params();
    assert_int_equal(tlm_convert(src, src, &p, NULL, NULL, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "refusing to overwrite the input"));
    const char *link_path = path_in_dir("hardlink.tlm");
    unlink(link_path);
    assert_int_equal(link(src, link_path), 0);
    assert_int_equal(tlm_convert(src, link_path, &p, NULL, NULL, &err), TLM_ERR_ARG);
    assert_int_equal(tlm_file_verify(src, NULL, NULL, &err), TLM_OK);
    assert_int_equal(tlm_convert(src, g_dir, &p, NULL, NULL, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "is a directory"));
    assert_int_not_equal(tlm_convert(src, path_in_dir("no/such/dir.tlm"), &p, NULL, NULL, &err), TLM_OK);
    assert_non_null(strstr(err.msg, "no/such/dir.tlm"));
    p.type = 20; /* a reserved quantized type */
    assert_int_equal(tlm_convert(src, path_in_dir("q.tlm"), &p, NULL, NULL, &err), TLM_ERR_UNSUPPORTED);
}

/* Cancels at the first "write" call (before the temporary file exists) or
 * at the last (when it is complete but not yet renamed). */
static bool cancel_first_write(void *user, const char *stage, uint64_t done, uint64_t total) {
    (void)user; (void)done; (void)total;
    return strcmp(stage, "write") != 0;
}

static bool cancel_last_write(void *user, const char *stage, uint64_t done, uint64_t total) {
    int *calls = user;
    (*calls)++;
    return !(strcmp(stage, "write") == 0 && done > 0 && done == total);
}

static void expect_empty_dir(const char *dir) {
    char cmd[4400], listing[8192];
    snprintf(cmd, sizeof cmd, "ls -A '%s'", dir);
    FILE *ls = popen(cmd, "r");
    assert_non_null(ls);
    size_t got = fread(listing, 1, sizeof listing - 1, ls);
    listing[got] = '\0';
    pclose(ls);
    assert_string_equal(listing, "");
}

static void test_cancel_leaves_nothing(void **state) {
    (void)state;
    tlm_model *m = tiny_model(false);
    const char *src = path_in_dir("cancel-src.tlm");
    char sub[4200], dst[4300];
    snprintf(sub, sizeof sub, "%s/cancel-dir", g_dir);
    mkdir(sub, 0755);
    snprintf(dst, sizeof dst, "%s/out.tlm", sub);
    unlink(dst); /* from an earlier run */
    tlm_error err;
    assert_int_equal(write_model(m, src, TLM_DTYPE_F32, NULL, NULL, NULL, &err), TLM_OK);
    tlm_model_free(m);
    tlm_convert_params p = tlm_convert_default_params();
    assert_int_equal(tlm_convert(src, dst, &p, cancel_first_write, NULL, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "cancelled"));
    expect_empty_dir(sub);
    int calls = 0;
    assert_int_equal(tlm_convert(src, dst, &p, cancel_last_write, &calls, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "cancelled"));
    assert_true(calls >= 4); /* load 0, load 1, write 0, write total */
    expect_empty_dir(sub);
    assert_int_equal(tlm_convert(src, dst, &p, NULL, NULL, &err), TLM_OK);
    assert_int_equal(tlm_file_verify(dst, NULL, NULL, &err), TLM_OK);
}


/* A quantizable model (every matrix's inputs a multiple of 32) as a GGUF
 * file, for the lazily loaded conversions below. */
static void write_quantizable_gguf(const char *path) {
    tlm_model *m = tiny_model_dims(false, 32, 64, 8, 4);
    tlm_tokenizer_blob b = tok_blob();
    tlm_write_options o = {.dtype = TLM_DTYPE_F32, .source_file = "memory", .tokenizer = &b};
    tlm_error err;
    assert_int_equal(write_gguf_file(m, path, &o, &err), TLM_OK);
    tokenizer_blob_free(&b);
    tlm_model_free(m);
}

static tlm_calib *tiny_calibration(const tlm_model *m) {
    tlm_calib_params cp = tlm_calib_default_params();
    cp.n_tokens = 64;
    cp.seq_len = 16;
    cp.n_threads = 1;
    tlm_error err;
    tlm_calib *c = tlm_calibrate(m, &cp, &err);
    assert_non_null(c);
    return c;
}

/* An activation-aware conversion of a lazily loaded source reads each layer
 * once after calibration (the quantization stage scales, quantizes and
 * spools it; the writer does not read it again), and writes what the
 * conversion of the model loaded whole writes. */
static void test_convert_reads_each_layer_once(void **state) {
    (void)state;
    const char *src = path_in_dir("quantizable.gguf");
    write_quantizable_gguf(src);
    tlm_model_load_params lp = tlm_model_default_load_params();
    lp.lazy_layers = true;
    tlm_error err;
    tlm_model *lazy = tlm_model_load_with(src, &lp, &err);
    assert_non_null(lazy);
    tlm_model *whole = tlm_model_load(src, &err);
    assert_non_null(whole);
    tlm_calib *c = tiny_calibration(lazy);
    tlm_convert_params p = tlm_convert_default_params();
    p.type = TLM_TYPE_Q4_G32;
    p.calib = c;
    const int64_t before = model_layer_reads(lazy);
    assert_int_equal(tlm_convert_model(lazy, src, path_in_dir("lazy-awq.tlm"), &p, NULL, NULL, &err),
                     TLM_OK);
    assert_int_equal(model_layer_reads(lazy) - before, NL);
    p.n_threads = 1; /* the bytes do not depend on the thread count either */
    assert_int_equal(tlm_convert_model(whole, src, path_in_dir("whole-awq.tlm"), &p, NULL, NULL, &err),
                     TLM_OK);
    size_t n_lazy, n_whole;
    uint8_t *a = read_all(path_in_dir("lazy-awq.tlm"), &n_lazy);
    uint8_t *b = read_all(path_in_dir("whole-awq.tlm"), &n_whole);
    assert_int_equal(n_lazy, n_whole);
    assert_memory_equal(a, b, n_lazy);
    tlm_file_desc *d = tlm_file_describe(path_in_dir("lazy-awq.tlm"), &err);
    assert_non_null(d);
    assert_string_equal(d->quant_method, "awq");
    tlm_file_desc_free(d);
    free(a);
    free(b);
    tlm_calib_free(c);
    tlm_model_free(whole);
    tlm_model_free(lazy);
}

/* A model loaded with lazy layers serves calibration and conversion; a
 * forward pass over it is refused (its layers are not there), not run over
 * missing weights. */
static void test_lazy_model_refuses_decode(void **state) {
    (void)state;
    const char *src = path_in_dir("quantizable-decode.gguf");
    write_quantizable_gguf(src);
    tlm_model_load_params lp = tlm_model_default_load_params();
    lp.lazy_layers = true;
    tlm_error err;
    tlm_model *m = tlm_model_load_with(src, &lp, &err);
    assert_non_null(m);
    tlm_context *ctx = tlm_context_new(m, NULL, &err);
    assert_non_null(ctx);
    const int32_t tok = 5;
    assert_int_equal(tlm_decode(ctx, &tok, 1, false, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "lazy layers"));
    tlm_context_free(ctx);
    tlm_model_free(m);
    m = tlm_model_load_with(src, NULL, &err); /* the default: whole */
    assert_non_null(m);
    ctx = tlm_context_new(m, NULL, &err);
    assert_non_null(ctx);
    assert_int_equal(tlm_decode(ctx, &tok, 1, false, &err), TLM_OK);
    tlm_context_free(ctx);
    tlm_model_free(m);
}

/* The quantizing thread count is a parameter of the call, checked. */
static void test_convert_thread_count(void **state) {
    (void)state;
    tlm_model *m = tiny_model(false);
    const char *src = path_in_dir("threads-src.tlm");
    tlm_error err;
    assert_int_equal(write_model(m, src, TLM_DTYPE_F32, NULL, NULL, NULL, &err), TLM_OK);
    tlm_model_free(m);
    tlm_convert_params p = tlm_convert_default_params();
    p.n_threads = -1;
    assert_int_equal(tlm_convert(src, path_in_dir("t.tlm"), &p, NULL, NULL, &err), TLM_ERR_ARG);
    assert_non_null(strstr(err.msg, "n_threads"));
    p.n_threads = TLM_MAX_THREADS + 1;
    assert_int_equal(tlm_convert(src, path_in_dir("t.tlm"), &p, NULL, NULL, &err), TLM_ERR_ARG);
    p.n_threads = 1;
    assert_int_equal(tlm_convert(src, path_in_dir("t.tlm"), &p, NULL, NULL, &err), TLM_OK);
}

static int setup_all(void **state) {
    (void)state;
    const char *base = getenv("TLM_TEST_OUT");
    snprintf(g_dir, sizeof g_dir, "%s/tlm_format", base ? base : ".");
    mkdir(g_dir, 0755);
    g_tok = tokenizer_image();
    return 0;
}

static int teardown_all(void **state) {
    (void)state;
    free(g_tok.p);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_round_trip_f32),
        cmocka_unit_test(test_round_trip_f16),
        cmocka_unit_test(test_round_trip_bf16),
        cmocka_unit_test(test_keep_wide),
        cmocka_unit_test(test_absent_sublayers),
        cmocka_unit_test(test_unknown_version),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_byte_flips),
        cmocka_unit_test(test_convert_destinations),
        cmocka_unit_test(test_cancel_leaves_nothing),
        cmocka_unit_test(test_convert_reads_each_layer_once),
        cmocka_unit_test(test_lazy_model_refuses_decode),
        cmocka_unit_test(test_convert_thread_count),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
