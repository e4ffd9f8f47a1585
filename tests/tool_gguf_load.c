/*
 * tool_gguf_load.c — loads a model file through the public API and reports
 * the result, for the model-level tests (tests/test_model_gguf.py).
 *
 *   tool_gguf_load FILE [DUMP_DIR [NAME...]]
 *
 * On success prints `key<TAB>value` lines (arch, sizes, tied, load_ms) and,
 * with DUMP_DIR, writes the f32 weights the model holds as DUMP_DIR/NAME.f32
 * under their GGUF names (token_embd.weight, blk.N.attn_q.weight, ...) so that
 * the test can compare them with an independent reader (only the NAMEs when
given). On failure prints
 * `error<TAB>STATUS<TAB>MESSAGE` to stderr and exits 1.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "trimlm.h"

static char **dump_only; /* NULL-terminated list of names, or NULL for all */

/* The f32 values of slot `slot` of layer il's sublayer of kind; NULL when
 * the model lacks it. */
static const float *sub_f32(const tlm_model *m, int32_t il, tlm_sublayer_kind kind, int slot) {
    const tlm_sublayer *S = model_sublayer(m, il, kind);
    return S ? tensor_f32(&S->w[slot]) : NULL;
}

static int dump(const char *dir, const char *name, const float *w, size_t n) {
    if (!w) return 0;
    if (dump_only) {
        bool listed = false;
        for (char **p = dump_only; *p && !listed; p++) listed = strcmp(*p, name) == 0;
        if (!listed) return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.f32", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp) return 1;
    size_t wrote = fwrite(w, sizeof *w, n, fp);
    return (fclose(fp) != 0 || wrote != n) ? 1 : 0;
}

static int dump_model(const tlm_model *m, const char *dir) {
    const tlm_hparams *hp = &m->hp;
    const size_t n_embd = (size_t)hp->n_embd, n_ff = (size_t)hp->n_ff;
    const size_t q_dim = (size_t)hp->n_head * (size_t)hp->head_dim;
    const size_t kv_dim = (size_t)hp->n_head_kv * (size_t)hp->head_dim;
    int bad = dump(dir, "token_embd.weight", tensor_f32(&m->tok_embd), (size_t)hp->n_vocab * n_embd);
    bad |= dump(dir, "output_norm.weight", tensor_f32(&m->out_norm), n_embd);
    if (!hp->tied_embeddings)
        bad |= dump(dir, "output.weight", tensor_f32(&m->output), (size_t)hp->n_vocab * n_embd);
    for (int32_t il = 0; il < hp->n_layer; il++) {
        const struct {
            const char *suffix;
            const float *w;
            size_t n;
        } parts[] = {
            {"attn_norm.weight", sub_f32(m, il, TLM_SUBLAYER_ATTN, ATTN_NORM), n_embd},
            {"attn_q.weight", sub_f32(m, il, TLM_SUBLAYER_ATTN, ATTN_Q), q_dim * n_embd},
            {"attn_k.weight", sub_f32(m, il, TLM_SUBLAYER_ATTN, ATTN_K), kv_dim * n_embd},
            {"attn_v.weight", sub_f32(m, il, TLM_SUBLAYER_ATTN, ATTN_V), kv_dim * n_embd},
            {"attn_q.bias", sub_f32(m, il, TLM_SUBLAYER_ATTN, ATTN_Q_BIAS), q_dim},
            {"attn_k.bias", sub_f32(m, il, TLM_SUBLAYER_ATTN, ATTN_K_BIAS), kv_dim},
            {"attn_v.bias", sub_f32(m, il, TLM_SUBLAYER_ATTN, ATTN_V_BIAS), kv_dim},
            {"attn_output.weight", sub_f32(m, il, TLM_SUBLAYER_ATTN, ATTN_OUT), n_embd * q_dim},
            {"ffn_norm.weight", sub_f32(m, il, TLM_SUBLAYER_MLP, MLP_NORM), n_embd},
            {"ffn_gate.weight", sub_f32(m, il, TLM_SUBLAYER_MLP, MLP_GATE), n_ff * n_embd},
            {"ffn_up.weight", sub_f32(m, il, TLM_SUBLAYER_MLP, MLP_UP), n_ff * n_embd},
            {"ffn_down.weight", sub_f32(m, il, TLM_SUBLAYER_MLP, MLP_DOWN), n_embd * n_ff},
        };
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
            char name[128];
            snprintf(name, sizeof name, "blk.%d.%s", (int)il, parts[k].suffix);
            bad |= dump(dir, name, parts[k].w, parts[k].n);
        }
    }
    return bad;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: tool_gguf_load FILE [DUMP_DIR [NAME...]]\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tlm_error err;
    tlm_model *m = model_load_f32(argv[1], &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!m) {
        fprintf(stderr, "error\t%s\t%s\n", tlm_status_name(err.code), err.msg);
        return 1;
    }
    tlm_model_info info;
    tlm_model_get_info(m, &info);
    const tlm_hparams *hp = &m->hp;
    printf("arch\t%s\nname\t%s\nsource_format\t%s\n", info.arch, info.name, info.source_format);
    printf("n_vocab\t%d\nn_embd\t%d\nn_layer\t%d\nn_head\t%d\nn_head_kv\t%d\nhead_dim\t%d\n",
           info.n_vocab, info.n_embd, info.n_layer, info.n_head, info.n_head_kv, info.head_dim);
    printf("n_ff\t%d\nn_ctx_train\t%d\nrope_theta\t%.9g\nrms_eps\t%.9g\n", info.n_ff,
           info.n_ctx_train, (double)info.rope_theta, (double)info.rms_eps);
    printf("rope_dim\t%d\nrope_style\t%d\nrope_scaling\t%d\nrope_factor\t%.9g\n", hp->rope_dim,
           (int)hp->rope_style, (int)hp->rope_scaling, (double)hp->rope_factor);
    printf("rope_low_freq_factor\t%.9g\nrope_high_freq_factor\t%.9g\nrope_orig_ctx\t%d\n",
           (double)hp->rope_low_freq_factor, (double)hp->rope_high_freq_factor, hp->rope_orig_ctx);
    printf("tied\t%d\nqkv_bias\t%d\nn_params\t%lld\n", info.tied_embeddings ? 1 : 0,
           hp->qkv_bias ? 1 : 0, (long long)info.n_params);
    printf("output_is_tok_embd\t%d\n", m->output.data == m->tok_embd.data ? 1 : 0);
    const char *tmpl = tlm_model_chat_template(m);
    printf("chat_template_len\t%zu\n", tmpl ? strlen(tmpl) : (size_t)0);
    printf("load_ms\t%.1f\n",
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    int rc = 0;
    if (argc > 3) dump_only = argv + 3; /* argv[argc] is NULL */
    if (argc >= 3 && dump_model(m, argv[2]) != 0) {
        fprintf(stderr, "error\twrite\tcannot write the weights to %s\n", argv[2]);
        rc = 1;
    }
    tlm_model_free(m);
    return rc;
}
