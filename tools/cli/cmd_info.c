/* cmd_info.c — `trimlm info`: what a model file holds (architecture, layer
 * graph, tensor types, size, bits per weight, KV-cache cost), its checksums
 * (--verify), and what this machine offers (--system). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "model_registry.h"

static const char info_usage[] =
    "usage: trimlm info MODEL [--json] [--verify]\n"
    "       trimlm info --system [--json]\n"
    "\n"
    "Prints the architecture, hyper-parameters, layer graph (each sublayer with its\n"
    "original layer index and importance score), tensor types, file bytes, bits per\n"
    "weight and the KV-cache bytes per token of context of MODEL (a .tlm or GGUF\n"
    "file, a Hugging Face directory, a registry name or URL); for a .tlm file also\n"
    "the sublayers dropped at conversion, the calibration and the quantization method.\n"
    "\n"
    "  --json      machine-readable output\n"
    "  --verify    check every checksum of a .tlm file and load it as `run` does\n"
    "              (exit status 1 when damaged or refused)\n"
    "  --tensors   list every tensor (always included with --json)\n"
    "  --system    the kernel set in use, physical cores and CPU features\n"
    "  -h, --help  this help\n";

/* The runtime's default KV cache holds keys and values in f16 (--kv f32
 * doubles this; --kv int8 takes head_dim + 4 bytes per head vector). */
#define KV_CACHE_PRECISION "f16"
#define KV_CACHE_ELEM_BYTES 2

/* ---------------------------------------------------------- figures */

typedef struct type_count {
    const char *type;
    int32_t count;
    uint64_t bytes;
    int64_t weights;
} type_count;

/* Distinct tensor types in order of first appearance (at most 16). */
static int count_types(const tlm_file_desc *d, type_count out[16]) {
    int n = 0;
    for (int32_t i = 0; i < d->n_tensors; i++) {
        int k = 0;
        while (k < n && strcmp(out[k].type, d->tensors[i].type) != 0) k++;
        if (k == n) {
            if (n == 16) continue;
            out[n++] = (type_count){d->tensors[i].type, 0, 0, 0};
        }
        out[k].count++;
        out[k].bytes += d->tensors[i].bytes;
        out[k].weights += d->tensors[i].rows * d->tensors[i].cols;
    }
    return n;
}

static uint64_t kv_bytes_per_token(const tlm_file_desc *d) {
    return 2ull * (uint64_t)d->n_attn_sublayers * (uint64_t)d->info.n_head_kv *
           (uint64_t)d->info.head_dim * KV_CACHE_ELEM_BYTES;
}

static double bits_per_weight(const tlm_file_desc *d) {
    return d->n_weights > 0 ? (double)d->tensor_bytes * 8.0 / (double)d->n_weights : 0.0;
}

/* ------------------------------------------------------------- text */

static void print_text(const tlm_file_desc *d, bool tensors) {
    const tlm_model_info *in = &d->info;
    printf("model          %s\n", in->name && *in->name ? in->name : "(unnamed)");
    printf("path           %s\n", d->path);
    printf("format         %s", d->format);
    if (d->format_version) printf(" v%u", d->format_version);
    if (d->source) printf(", converted from %s", d->source);
    if (d->convert_type) printf(" (--type %s)", d->convert_type);
    printf("\narchitecture   %s\n", in->arch);
    if (d->quant_method)
        printf("quantization   %s\n", strcmp(d->quant_method, "awq") == 0
                                           ? "awq (activation-aware: per-channel scales, weighted scale search)"
                                           : strcmp(d->quant_method, "rtn") == 0 ? "rtn (round-to-nearest)"
                                                                                 : d->quant_method);
    if (d->calib_text)
    {
        printf("calibration    %s, %lld tokens in sequences of %d", d->calib_text,
               (long long)d->calib_tokens, d->calib_seq_len);
        if (d->calib_seconds > 0) printf(", %.1f s", d->calib_seconds); /* older files */
        putchar('\n');
    }
    printf("hparams        n_vocab %d, n_embd %d, n_layer %d, n_head %d, n_head_kv %d, head_dim %d,\n"
           "               n_ff %d, n_ctx_train %d, rope_theta %g, rms_eps %g, tied embeddings %s\n",
           in->n_vocab, in->n_embd, in->n_layer, in->n_head, in->n_head_kv, in->head_dim, in->n_ff,
           in->n_ctx_train, (double)in->rope_theta, (double)in->rms_eps,
           in->tied_embeddings ? "yes" : "no");
    printf("chat template  %s\n", d->has_chat_template ? "yes" : "no");
    printf("parameters     %.2f M (%lld)\n", in->n_params / 1e6, (long long)in->n_params);
    if (d->file_bytes) printf("file           %.2f MB (%llu bytes)\n", d->file_bytes / 1e6,
                              (unsigned long long)d->file_bytes);
    type_count types[16];
    int n_types = count_types(d, types);
    printf("tensors        %d:", d->n_tensors);
    for (int k = 0; k < n_types; k++)
        printf("%s %d %s (%.2f MB, %.2f bits/weight)", k ? "," : "", types[k].count, types[k].type,
               types[k].bytes / 1e6,
               types[k].weights ? (double)types[k].bytes * 8.0 / (double)types[k].weights : 0.0);
    printf("\nbits/weight    %.3f (%llu tensor bytes / %lld weights)\n", bits_per_weight(d),
           (unsigned long long)d->tensor_bytes, (long long)d->n_weights);
    printf("KV cache       %llu bytes per token of context (%s: 2 x %d attention sublayers x "
           "%d KV heads x %d x %d bytes)\n",
           (unsigned long long)kv_bytes_per_token(d), KV_CACHE_PRECISION, d->n_attn_sublayers,
           in->n_head_kv, in->head_dim, KV_CACHE_ELEM_BYTES);

    printf("\ngraph          %d sublayers: %d attention, %d MLP (of %d layers)\n", d->n_sublayers,
           d->n_attn_sublayers, d->n_sublayers - d->n_attn_sublayers, in->n_layer);
    printf("  %4s  %-4s  %5s  %7s  %12s  %-10s  %s\n", "#", "kind", "layer", "tensors", "params",
           "attention", "score");
    for (int32_t i = 0; i < d->n_sublayers; i++) {
        const tlm_sublayer_desc *s = &d->sublayers[i];
        char score[32] = "-", span[24] = "-";
        if (s->has_score) snprintf(score, sizeof score, "%.5f", (double)s->score);
        /* local: a sliding window of that many positions; global: all of them */
        if (!strcmp(s->kind, "attn")) {
            if (s->window) snprintf(span, sizeof span, "local %d", s->window);
            else snprintf(span, sizeof span, "global");
        }
        printf("  %4d  %-4s  %5d  %7d  %12lld  %-10s  %s\n", i, s->kind, s->layer, s->n_tensors,
               (long long)s->n_params, span, score);
    }
    if (d->n_dropped) {
        printf("\ndropped        %d sublayers:", d->n_dropped);
        for (int32_t i = 0; i < d->n_dropped; i++) {
            const tlm_sublayer_desc *s = &d->dropped[i];
            printf("%s %s %d", i ? "," : "", s->kind, s->layer);
            if (s->has_score) printf(" (%.5f)", (double)s->score);
        }
        printf("\n");
    }
    if (d->block_scores) {
        printf("block scores  ");
        for (int32_t il = 0; il < in->n_layer; il++) {
            if (isnan(d->block_scores[il])) printf(" -");
            else printf(" %.4f", (double)d->block_scores[il]);
        }
        printf("\n");
    }
    if (tensors) {
        printf("\n  %-40s %-6s %-16s %12s %12s\n", "tensor", "type", "shape", "offset", "bytes");
        for (int32_t i = 0; i < d->n_tensors; i++) {
            const tlm_tensor_desc *t = &d->tensors[i];
            char shape[48];
            if (t->n_dims <= 1) snprintf(shape, sizeof shape, "(%lld)", (long long)t->cols);
            else snprintf(shape, sizeof shape, "(%lld, %lld)", (long long)t->rows, (long long)t->cols);
            printf("  %-40s %-6s %-16s %12llu %12llu\n", t->name, t->type, shape,
                   (unsigned long long)t->offset, (unsigned long long)t->bytes);
        }
    }
}

/* ------------------------------------------------------------- JSON */

static cJSON *describe_json(const tlm_file_desc *d) {
    const tlm_model_info *in = &d->info;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "path", d->path);
    cJSON_AddStringToObject(root, "format", d->format);
    cJSON_AddNumberToObject(root, "format_version", d->format_version);
    cJSON_AddStringToObject(root, "architecture", in->arch);
    cJSON_AddStringToObject(root, "name", in->name ? in->name : "");
    if (d->source) cJSON_AddStringToObject(root, "source", d->source);
    else cJSON_AddNullToObject(root, "source");
    if (d->convert_type) cJSON_AddStringToObject(root, "convert_type", d->convert_type);
    else cJSON_AddNullToObject(root, "convert_type");
    cJSON_AddBoolToObject(root, "chat_template", d->has_chat_template);
    cJSON *hp = cJSON_AddObjectToObject(root, "hparams");
    cJSON_AddNumberToObject(hp, "n_vocab", in->n_vocab);
    cJSON_AddNumberToObject(hp, "n_embd", in->n_embd);
    cJSON_AddNumberToObject(hp, "n_layer", in->n_layer);
    cJSON_AddNumberToObject(hp, "n_head", in->n_head);
    cJSON_AddNumberToObject(hp, "n_head_kv", in->n_head_kv);
    cJSON_AddNumberToObject(hp, "head_dim", in->head_dim);
    cJSON_AddNumberToObject(hp, "n_ff", in->n_ff);
    cJSON_AddNumberToObject(hp, "n_ctx_train", in->n_ctx_train);
    cJSON_AddNumberToObject(hp, "rope_theta", (double)in->rope_theta);
    cJSON_AddNumberToObject(hp, "rms_eps", (double)in->rms_eps);
    cJSON_AddBoolToObject(hp, "tied_embeddings", in->tied_embeddings);
    cJSON_AddNumberToObject(root, "n_params", (double)in->n_params);
    cJSON_AddNumberToObject(root, "file_bytes", (double)d->file_bytes);
    cJSON_AddNumberToObject(root, "tensor_bytes", (double)d->tensor_bytes);
    cJSON_AddNumberToObject(root, "n_weights", (double)d->n_weights);
    cJSON_AddNumberToObject(root, "bits_per_weight", bits_per_weight(d));
    cJSON *kv = cJSON_AddObjectToObject(root, "kv_cache");
    cJSON_AddStringToObject(kv, "precision", KV_CACHE_PRECISION);
    cJSON_AddNumberToObject(kv, "bytes_per_token", (double)kv_bytes_per_token(d));
    cJSON_AddNumberToObject(kv, "n_attn_sublayers", d->n_attn_sublayers);
    type_count types[16];
    int n_types = count_types(d, types);
    cJSON *tt = cJSON_AddObjectToObject(root, "tensor_types");
    for (int k = 0; k < n_types; k++) {
        cJSON *t = cJSON_AddObjectToObject(tt, types[k].type);
        cJSON_AddNumberToObject(t, "count", types[k].count);
        cJSON_AddNumberToObject(t, "bytes", (double)types[k].bytes);
        cJSON_AddNumberToObject(t, "bits_per_weight",
                                types[k].weights ? (double)types[k].bytes * 8.0 / (double)types[k].weights
                                                 : 0.0);
    }
    cJSON *graph = cJSON_AddArrayToObject(root, "graph");
    for (int32_t i = 0; i < d->n_sublayers; i++) {
        const tlm_sublayer_desc *s = &d->sublayers[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "kind", s->kind);
        cJSON_AddNumberToObject(e, "layer", s->layer);
        cJSON_AddNumberToObject(e, "n_tensors", s->n_tensors);
        cJSON_AddNumberToObject(e, "n_params", (double)s->n_params);
        if (!strcmp(s->kind, "attn")) cJSON_AddNumberToObject(e, "window", s->window);
        if (s->has_score) cJSON_AddNumberToObject(e, "score", (double)s->score);
        else cJSON_AddNullToObject(e, "score");
        cJSON_AddItemToArray(graph, e);
    }
    cJSON *dropped = cJSON_AddArrayToObject(root, "dropped");
    for (int32_t i = 0; i < d->n_dropped; i++) {
        const tlm_sublayer_desc *s = &d->dropped[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "kind", s->kind);
        cJSON_AddNumberToObject(e, "layer", s->layer);
        if (s->has_score) cJSON_AddNumberToObject(e, "score", (double)s->score);
        else cJSON_AddNullToObject(e, "score");
        cJSON_AddItemToArray(dropped, e);
    }
    if (d->attn_scores) {
        cJSON *imp = cJSON_AddObjectToObject(root, "importance");
        const float *arrays[3] = {d->attn_scores, d->mlp_scores, d->block_scores};
        static const char *const keys[3] = {"attn", "mlp", "block"};
        for (int k = 0; k < 3; k++) {
            cJSON *arr = cJSON_AddArrayToObject(imp, keys[k]);
            for (int32_t il = 0; il < in->n_layer; il++)
                cJSON_AddItemToArray(arr, isnan(arrays[k][il]) ? cJSON_CreateNull()
                                                               : cJSON_CreateNumber((double)arrays[k][il]));
        }
    } else {
        cJSON_AddNullToObject(root, "importance");
    }
    if (d->calib_text) {
        cJSON *cal = cJSON_AddObjectToObject(root, "calibration");
        cJSON_AddStringToObject(cal, "text", d->calib_text);
        cJSON_AddNumberToObject(cal, "tokens", (double)d->calib_tokens);
        cJSON_AddNumberToObject(cal, "seq_len", d->calib_seq_len);
        cJSON_AddNumberToObject(cal, "seconds", d->calib_seconds);
    } else {
        cJSON_AddNullToObject(root, "calibration");
    }
    if (d->quant_method) cJSON_AddStringToObject(root, "quant_method", d->quant_method);
    else cJSON_AddNullToObject(root, "quant_method");
    cJSON *tensors = cJSON_AddArrayToObject(root, "tensors");
    for (int32_t i = 0; i < d->n_tensors; i++) {
        const tlm_tensor_desc *t = &d->tensors[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", t->name);
        cJSON_AddStringToObject(e, "type", t->type);
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        if (t->n_dims > 1) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->rows));
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->cols));
        cJSON_AddNumberToObject(e, "offset", (double)t->offset);
        cJSON_AddNumberToObject(e, "bytes", (double)t->bytes);
        cJSON_AddItemToArray(tensors, e);
    }
    return root;
}

static int print_json(cJSON *root) {
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return cli_fail("out of memory printing JSON");
    puts(text);
    cJSON_free(text);
    return CLI_EXIT_OK;
}

/* ----------------------------------------------------------- system */

/* CPU features that matter to the kernels, as /proc/cpuinfo names them. */
static const char *const interesting_features[] = {
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
    "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "asimdhp", "sve", "i8mm", "bf16",
};

/* Fills features (space-separated) and model from /proc/cpuinfo. */
static void read_cpuinfo(char *features, size_t cap, char *model, size_t model_cap) {
    features[0] = model[0] = '\0';
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    static char line[16384];
    bool got_flags = false;
    while (fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (!colon) continue;
        const char *val = colon + 1;
        while (*val == ' ') val++;
        if (!model[0] && (!strncmp(line, "model name", 10) || !strncmp(line, "CPU part", 8))) {
            snprintf(model, model_cap, "%s", val);
            model[strcspn(model, "\n")] = '\0';
        }
        if (got_flags || (strncmp(line, "flags", 5) != 0 && strncmp(line, "Features", 8) != 0))
            continue;
        got_flags = true;
        size_t at = 0;
        for (size_t k = 0; k < sizeof interesting_features / sizeof *interesting_features; k++) {
            const char *name = interesting_features[k];
            size_t len = strlen(name);
            for (const char *p = val; (p = strstr(p, name)) != NULL; p += len) {
                bool starts = p == val || p[-1] == ' ';
                bool ends = p[len] == ' ' || p[len] == '\n' || p[len] == '\0';
                if (starts && ends) {
                    int n = snprintf(features + at, cap - at, "%s%s", at ? " " : "", name);
                    if (n > 0 && (size_t)n < cap - at) at += (size_t)n;
                    break;
                }
            }
        }
    }
    fclose(f);
}

static int print_system(bool json) {
    char features[1024], model[256];
    read_cpuinfo(features, sizeof features, model, sizeof model);
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "isa", tlm_isa_name());
        cJSON_AddNumberToObject(root, "physical_cores", tlm_physical_cores());
        cJSON_AddStringToObject(root, "cpu", model);
        cJSON *arr = cJSON_AddArrayToObject(root, "features");
        for (char *tok = strtok(features, " "); tok; tok = strtok(NULL, " "))
            cJSON_AddItemToArray(arr, cJSON_CreateString(tok));
        return print_json(root);
    }
    printf("kernels        %s%s\n", tlm_isa_name(),
           getenv("TRIMLM_ISA") ? " (TRIMLM_ISA is set)" : "");
    printf("physical cores %d\n", tlm_physical_cores());
    printf("cpu            %s\n", model[0] ? model : "(unknown)");
    printf("features       %s\n", features[0] ? features : "(none detected)");
    return CLI_EXIT_OK;
}

/* ---------------------------------------------------------- command */

int cmd_info(int argc, char **argv) {
    cli_args a;
    cli_args_init(&a, "info", argc, argv);
    const char *model = NULL;
    bool json = false, verify = false, system = false, tensors = false;
    while (cli_next(&a)) {
        if (cli_flag(&a, "-h", "--help")) { fputs(info_usage, stdout); return CLI_EXIT_OK; }
        else if (cli_flag(&a, NULL, "--json")) json = true;
        else if (cli_flag(&a, NULL, "--verify")) verify = true;
        else if (cli_flag(&a, NULL, "--system")) system = true;
        else if (cli_flag(&a, NULL, "--tensors")) tensors = true;
        else if (cli_flag(&a, "-m", "--model")) model = cli_value(&a);
        else if (a.argv[a.i][0] != '-' && !model) model = a.argv[a.i];
        else cli_unknown(&a);
    }
    if (a.status) return a.status;
    if (system) {
        if (model) return cli_usage_error("info", "give MODEL or --system, not both");
        return print_system(json);
    }
    if (!model) return cli_usage_error("info", "no model given (trimlm info MODEL)");

    tlm_error err = {0};
    char path[4096];
    if (resolve_model_path(model, path, sizeof path, &err) != TLM_OK) return cli_fail_err(&err);
    tlm_file_desc *d = tlm_file_describe(path, &err);
    if (!d) return cli_fail_err(&err);
    cli_warn_output_absent(&d->info, model);
    const bool is_tlm = strcmp(d->format, "tlm") == 0;
    tlm_status vst = TLM_OK;
    tlm_error verr = {0};
    if (verify && is_tlm) vst = tlm_file_verify(path, NULL, NULL, &verr);

    if (json) {
        cJSON *root = describe_json(d);
        if (verify) {
            cJSON *v = cJSON_AddObjectToObject(root, "verify");
            if (!is_tlm) {
                cJSON_AddNullToObject(v, "ok");
                cJSON_AddStringToObject(v, "message", "not a .tlm file: it has no checksums");
            } else {
                cJSON_AddBoolToObject(v, "ok", vst == TLM_OK);
                cJSON_AddStringToObject(v, "message", vst == TLM_OK ? "all checksums match and it loads" : verr.msg);
            }
        }
        print_json(root);
    } else {
        print_text(d, tensors);
        if (verify) {
            if (!is_tlm)
                printf("\nverify         not applicable: a %s source has no checksums\n", d->format);
            else if (vst == TLM_OK)
                printf("\nverify         ok: header, sections, %d tensors and the whole file "
                       "(XXH3-64 %016llx) match, and it loads\n", d->n_tensors,
                       (unsigned long long)d->file_checksum);
            else
                printf("\nverify         FAILED\n");
        }
    }
    tlm_file_desc_free(d);
    if (vst != TLM_OK) return cli_fail_err(&verr);
    return CLI_EXIT_OK;
}
