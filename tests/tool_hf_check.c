/*
 * tool_hf_check.c — loads a model with tlm_model_load() and prints, as one
 * JSON object on stdout, its tlm_model_info, the loader's hyper-parameters
 * and two checksums per weight (under Hugging Face tensor names), so that a
 * test can compare them with the numpy arrays the directory was written from.
 * On failure prints the error line on stderr and exits 1.
 *
 *   tool_hf_check MODEL_PATH
 */
#include <stdio.h>
#include <string.h>

#include "model.h"
#include "trimlm.h"

/* ------------------------------------------------------------ JSON output */

static void put_json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

/* [sum w, sum w * ((i % 13) - 6)] in double: the second changes when rows and
 * columns are swapped or elements reordered, the first when values change. */
static void put_checksum(bool *first, const char *name, const float *w, int64_t n) {
    if (!w) return;
    double plain = 0, weighted = 0;
    for (int64_t i = 0; i < n; i++) {
        plain += w[i];
        weighted += (double)w[i] * (double)((i % 13) - 6);
    }
    printf("%s\n    ", *first ? "" : ",");
    *first = false;
    put_json_string(name);
    printf(": [%.17g, %.17g, %lld]", plain, weighted, (long long)n);
}

/* ------------------------------------------------------------ main */

/* The f32 values of slot `slot` of layer il's sublayer of kind; NULL when
 * the model lacks it. */
static const float *sub_f32(const tlm_model *m, int32_t il, tlm_sublayer_kind kind, int slot) {
    const tlm_sublayer *S = model_sublayer(m, il, kind);
    return S ? tensor_f32(&S->w[slot]) : NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL_PATH\n", argv[0]);
        return 2;
    }
    tlm_error err;
    tlm_model *m = tlm_model_load(argv[1], &err);
    if (!m) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    tlm_model_info info;
    tlm_model_get_info(m, &info);
    const tlm_hparams *hp = &m->hp;

    printf("{\n  \"arch\": ");
    put_json_string(info.arch);
    printf(",\n  \"name\": ");
    put_json_string(info.name);
    printf(",\n  \"source_format\": ");
    put_json_string(info.source_format);
    printf(",\n  \"n_vocab\": %d, \"n_embd\": %d, \"n_layer\": %d, \"n_head\": %d,"
           " \"n_head_kv\": %d, \"head_dim\": %d, \"n_ff\": %d, \"n_ctx_train\": %d,\n",
           info.n_vocab, info.n_embd, info.n_layer, info.n_head, info.n_head_kv, info.head_dim,
           info.n_ff, info.n_ctx_train);
    printf("  \"rope_theta\": %.9g, \"rms_eps\": %.9g, \"tied_embeddings\": %s,"
           " \"n_params\": %lld,\n",
           (double)info.rope_theta, (double)info.rms_eps, info.tied_embeddings ? "true" : "false",
           (long long)info.n_params);
    printf("  \"qkv_bias\": %s, \"rope_style\": %d, \"rope_dim\": %d, \"rope_scaling\": %d,"
           " \"rope_factor\": %.9g, \"rope_low_freq_factor\": %.9g,"
           " \"rope_high_freq_factor\": %.9g, \"rope_orig_ctx\": %d,\n",
           hp->qkv_bias ? "true" : "false", (int)hp->rope_style, hp->rope_dim,
           (int)hp->rope_scaling, (double)hp->rope_factor, (double)hp->rope_low_freq_factor,
           (double)hp->rope_high_freq_factor, hp->rope_orig_ctx);
    printf("  \"output_is_tok_embd\": %s, \"bos\": %d, \"eos\": %d,\n",
           m->output.data == m->tok_embd.data ? "true" : "false", tlm_token_bos(m), tlm_token_eos(m));
    printf("  \"chat_template\": ");
    const char *tmpl = tlm_model_chat_template(m);
    if (tmpl) put_json_string(tmpl);
    else printf("null");

    const int64_t n_embd = hp->n_embd, n_ff = hp->n_ff, n_vocab = hp->n_vocab;
    const int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
    const int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    bool first = true;
    char name[160];
    printf(",\n  \"checksums\": {");
    put_checksum(&first, "model.embed_tokens.weight", tensor_f32(&m->tok_embd), n_vocab * n_embd);
    put_checksum(&first, "model.norm.weight", tensor_f32(&m->out_norm), n_embd);
    if (m->output.data != m->tok_embd.data)
        put_checksum(&first, "lm_head.weight", tensor_f32(&m->output), n_vocab * n_embd);
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const struct {
            const char *suffix;
            const float *w;
            int64_t n;
        } parts[] = {
            {"input_layernorm.weight", sub_f32(m, l, TLM_SUBLAYER_ATTN, ATTN_NORM), n_embd},
            {"self_attn.q_proj.weight", sub_f32(m, l, TLM_SUBLAYER_ATTN, ATTN_Q), q_dim * n_embd},
            {"self_attn.k_proj.weight", sub_f32(m, l, TLM_SUBLAYER_ATTN, ATTN_K), kv_dim * n_embd},
            {"self_attn.v_proj.weight", sub_f32(m, l, TLM_SUBLAYER_ATTN, ATTN_V), kv_dim * n_embd},
            {"self_attn.q_proj.bias", sub_f32(m, l, TLM_SUBLAYER_ATTN, ATTN_Q_BIAS), q_dim},
            {"self_attn.k_proj.bias", sub_f32(m, l, TLM_SUBLAYER_ATTN, ATTN_K_BIAS), kv_dim},
            {"self_attn.v_proj.bias", sub_f32(m, l, TLM_SUBLAYER_ATTN, ATTN_V_BIAS), kv_dim},
            {"self_attn.o_proj.weight", sub_f32(m, l, TLM_SUBLAYER_ATTN, ATTN_OUT), n_embd * q_dim},
            {"post_attention_layernorm.weight", sub_f32(m, l, TLM_SUBLAYER_MLP, MLP_NORM), n_embd},
            {"mlp.gate_proj.weight", sub_f32(m, l, TLM_SUBLAYER_MLP, MLP_GATE), n_ff * n_embd},
            {"mlp.up_proj.weight", sub_f32(m, l, TLM_SUBLAYER_MLP, MLP_UP), n_ff * n_embd},
            {"mlp.down_proj.weight", sub_f32(m, l, TLM_SUBLAYER_MLP, MLP_DOWN), n_embd * n_ff},
        };
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, parts[i].suffix);
            put_checksum(&first, name, parts[i].w, parts[i].n);
        }
    }
    printf("\n  }\n}\n");
    tlm_model_free(m);
    return 0;
}
