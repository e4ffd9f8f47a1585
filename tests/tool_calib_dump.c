/*
 * tool_calib_dump.c — runs tlm_calibrate and writes everything it measured
 * as JSON, for the numpy reference comparison (tests/test_calib_ref.py).
 *
 *   tool_calib_dump MODEL [--calib FILE] [--tokens N] [--seq L] [-t N]
 *                   [--drop-attn I] [--drop-mlp I] [--cancel-at K]
 *                   [--lazy [--truncate-source BYTES]] OUT.json
 *
 * --drop-attn / --drop-mlp remove a sublayer from the loaded model in memory
 * (as a pruned .tlm lacks it), so that its absence can be checked.
 * The JSON holds the text's token ids (tokenised whole, no BOS) so that the
 * reference can cut the same sequences, the scores (null for NaN), and every
 * statistic, and what the progress callback saw: calls, whether done grew
 * steadily, the last done/total. --cancel-at K makes the K-th call cancel.
 * --lazy loads the model with model_load_lazy (layers materialised by the
 * pass itself), whose output must be byte-identical to the eager load's;
 * --truncate-source then cuts the model file (a GGUF file: give a copy) to
 * BYTES after loading, as if it changed under the converter, so that the
 * materialisation's error can be checked. The peak resident set size goes
 * to stderr ("peak_rss_kib N") for memory measurements.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "model.h"
#include "trimlm.h"

static void put_floats(FILE *f, const float *v, int64_t n) {
    fputc('[', f);
    for (int64_t i = 0; i < n; i++) {
        if (i) fputc(',', f);
        if (isnan(v[i])) fputs("null", f);
        else fprintf(f, "%.9g", (double)v[i]);
    }
    fputc(']', f);
}

typedef struct progress_log {
    int64_t calls, cancel_at;
    uint64_t last_done, last_total;
    bool monotonic, stage_ok;
} progress_log;

static bool on_progress(void *user, const char *stage, uint64_t done, uint64_t total) {
    progress_log *p = user;
    p->calls++;
    if (done < p->last_done || done > total) p->monotonic = false;
    if (strcmp(stage, "calibrate") != 0) p->stage_ok = false;
    p->last_done = done;
    p->last_total = total;
    return p->calls != p->cancel_at;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *grown = realloc(buf, cap *= 2);
            if (!grown) { free(buf); buf = NULL; }
            buf = grown;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv) {
    tlm_calib_params p = tlm_calib_default_params();
    const char *model_path = NULL, *out_path = NULL;
    int drop_attn = -1, drop_mlp = -1;
    bool lazy = false;
    long long truncate_at = -1;
    progress_log prog = {.monotonic = true, .stage_ok = true};
    p.progress = on_progress;
    p.user = &prog;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--calib") && i + 1 < argc) p.text_file = argv[++i];
        else if (!strcmp(a, "--tokens") && i + 1 < argc) p.n_tokens = atoll(argv[++i]);
        else if (!strcmp(a, "--seq") && i + 1 < argc) p.seq_len = atoi(argv[++i]);
        else if (!strcmp(a, "-t") && i + 1 < argc) p.n_threads = atoi(argv[++i]);
        else if (!strcmp(a, "--drop-attn") && i + 1 < argc) drop_attn = atoi(argv[++i]);
        else if (!strcmp(a, "--drop-mlp") && i + 1 < argc) drop_mlp = atoi(argv[++i]);
        else if (!strcmp(a, "--cancel-at") && i + 1 < argc) prog.cancel_at = atoll(argv[++i]);
        else if (!strcmp(a, "--lazy")) lazy = true;
        else if (!strcmp(a, "--truncate-source") && i + 1 < argc) truncate_at = atoll(argv[++i]);
        else if (!model_path) model_path = a;
        else if (!out_path) out_path = a;
        else { fprintf(stderr, "tool_calib_dump: unexpected argument %s\n", a); return 2; }
    }
    if (!model_path || !out_path) {
        fprintf(stderr, "usage: tool_calib_dump MODEL [options] OUT.json\n");
        return 2;
    }
    tlm_error err;
    tlm_model *m = lazy ? model_load_lazy(model_path, &err) : model_load_f32(model_path, &err);
    if (!m) { fprintf(stderr, "tool_calib_dump: %s\n", err.msg); return 1; }
    if (truncate_at >= 0 && truncate(model_path, (off_t)truncate_at) != 0) {
        perror(model_path);
        return 1;
    }
    tlm_model_info info;
    tlm_model_get_info(m, &info);
    if (drop_attn >= 0 && drop_attn < info.n_layer) model_remove_sublayer(m, drop_attn, TLM_SUBLAYER_ATTN);
    if (drop_mlp >= 0 && drop_mlp < info.n_layer) model_remove_sublayer(m, drop_mlp, TLM_SUBLAYER_MLP);

    tlm_calib *cal = tlm_calibrate(m, &p, &err);
    if (!cal) { fprintf(stderr, "tool_calib_dump: %s\n", err.msg); tlm_model_free(m); return 1; }

    size_t len = 0;
    char *text = p.text_file ? read_all(p.text_file, &len) : NULL;
    int32_t n_text = 0, *toks = NULL;
    if (text) {
        toks = malloc((len + 1) * 3 * sizeof *toks);
        n_text = tlm_tokenize(m, text, len, false, false, toks, (int32_t)(len + 1) * 3, &err);
    }

    FILE *f = fopen(out_path, "w");
    if (!f) { perror(out_path); return 1; }
    fprintf(f, "{\"n_layer\":%d,\"n_tokens\":%lld,\"seq_len\":%d,\"adds_bos\":%s,\"bos\":%d,",
            tlm_calib_n_layer(cal), (long long)tlm_calib_n_tokens(cal), tlm_calib_seq_len(cal),
            tlm_model_adds_bos(m) ? "true" : "false", tlm_token_bos(m));
    fprintf(f,
            "\"progress\":{\"calls\":%lld,\"monotonic\":%s,\"stage_ok\":%s,\"done\":%llu,"
            "\"total\":%llu},",
            (long long)prog.calls, prog.monotonic ? "true" : "false", prog.stage_ok ? "true" : "false",
            (unsigned long long)prog.last_done, (unsigned long long)prog.last_total);
    fprintf(f, "\"text_name\":\"%s\",\"text_tokens\":[", tlm_calib_text_name(cal));
    for (int32_t i = 0; i < n_text; i++) fprintf(f, i ? ",%d" : "%d", toks[i]);
    fputs("],", f);
    static const char *kinds[] = {"attn", "mlp", "block"};
    for (int k = 0; k < 3; k++) {
        fprintf(f, "\"%s\":[", kinds[k]);
        for (int32_t l = 0; l < info.n_layer; l++) {
            float s = tlm_calib_score(cal, (tlm_sublayer_kind)k, l);
            if (l) fputc(',', f);
            if (isnan(s)) fputs("null", f);
            else fprintf(f, "%.9g", (double)s);
        }
        fputs("],", f);
    }
    static const char *inputs[] = {"qkv", "attn_out", "ffn", "down"};
    for (int w = 0; w < 4; w++) {
        fprintf(f, "\"%s\":[", inputs[w]);
        for (int32_t l = 0; l < info.n_layer; l++) {
            int64_t n = -1;
            const float *v = tlm_calib_act_stats(cal, l, (tlm_linear_input)w, &n);
            if (l) fputc(',', f);
            if (v) put_floats(f, v, n);
            else fputs("null", f);
        }
        fputs("],", f);
    }
    int64_t n = 0;
    const float *v = tlm_calib_act_stats(cal, 0, TLM_INPUT_OUTPUT, &n);
    fputs("\"output\":", f);
    put_floats(f, v, n);
    fputs("}\n", f);
    fclose(f);
    free(toks);
    free(text);
    tlm_calib_free(cal);
    tlm_model_free(m);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) fprintf(stderr, "peak_rss_kib %ld\n", ru.ru_maxrss);
    return 0;
}
