/*
 * tool_tokenize — runs the tokenizer over a corpus for the reference tests.
 *
 *   tool_tokenize (--gguf FILE | --hf tokenizer.json [--config tokenizer_config.json])
 *                 [--special] [--bos] [--decode] CORPUS
 *   tool_tokenize (--gguf FILE | --hf ...) --info
 *   tool_tokenize (--gguf FILE | --hf ...) --bench FILE [BYTES]
 *
 * CORPUS holds one record per line, escaped so that any bytes fit: \\n \\t
 * \\r \\\\ and \\xHH (any byte). For each record the tool prints one line: the
 * ids separated by spaces and, with --decode, a tab and the hex of the
 * concatenated token bytes (specials rendered).
 * --info prints kind, n_vocab, bos, eos, add_bos and the EOG and special ids.
 * --bench tokenizes the first BYTES (default all) of FILE as one text and
 * prints "<bytes> <tokens> <seconds>".
 *
 *   tool_tokenize --utf8-stream FILE
 *
 * runs the detokenizer's streaming UTF-8 repair (tokenizer_utf8_push) alone:
 * each line of FILE is one stream, given as space-separated hex chunks (the
 * bytes of successive tokens); the tool prints the hex of the repaired
 * output, flush included.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "tokenizer.h"

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Unescapes line[0..n) in place; returns the new length. */
static size_t unescape(char *line, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (line[i] != '\\' || i + 1 >= n) {
            line[o++] = line[i];
            continue;
        }
        char c = line[++i];
        if (c == 'n') line[o++] = '\n';
        else if (c == 't') line[o++] = '\t';
        else if (c == 'r') line[o++] = '\r';
        else if (c == 'x' && i + 2 < n && hexval(line[i + 1]) >= 0 && hexval(line[i + 2]) >= 0) {
            line[o++] = (char)(hexval(line[i + 1]) * 16 + hexval(line[i + 2]));
            i += 2;
        } else line[o++] = c;
    }
    return o;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *len = n;
    return buf;
}

static int32_t *encode(const tlm_tokenizer *t, const char *s, size_t n, bool bos, bool special,
                       int32_t *count) {
    tlm_error err;
    int32_t need = tokenizer_encode(t, s, n, bos, special, NULL, 0, &err);
    if (need < 0) {
        fprintf(stderr, "encode failed: %s\n", err.msg);
        return NULL;
    }
    int32_t *ids = malloc(sizeof *ids * (size_t)(need + 1));
    int32_t got = tokenizer_encode(t, s, n, bos, special, ids, need, &err);
    if (got != need) {
        fprintf(stderr, "encode gave %d then %d ids\n", need, got);
        free(ids);
        return NULL;
    }
    *count = need;
    return ids;
}

/* --utf8-stream: see the header comment. */
static int utf8_stream(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return 1;
    }
    static char line[1 << 16], out[3 << 16];
    while (fgets(line, sizeof line, f)) {
        unsigned char pending[4];
        int n_pending = 0;
        for (char *chunk = strtok(line, " \n"); chunk; chunk = strtok(NULL, " \n")) {
            char bytes[sizeof line / 2];
            size_t n = 0;
            for (size_t i = 0; chunk[i] && chunk[i + 1]; i += 2)
                bytes[n++] = (char)(hexval(chunk[i]) * 16 + hexval(chunk[i + 1]));
            size_t m = tokenizer_utf8_push(pending, &n_pending, bytes, n, out, sizeof out);
            for (size_t i = 0; i < m; i++) printf("%02x", (unsigned char)out[i]);
        }
        size_t m = tokenizer_utf8_flush(&n_pending, out, sizeof out);
        for (size_t i = 0; i < m; i++) printf("%02x", (unsigned char)out[i]);
        putchar('\n');
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--utf8-stream")) return utf8_stream(argv[2]);
    const char *gguf_path = NULL, *hf_path = NULL, *config = NULL, *corpus = NULL, *bench = NULL;
    bool special = false, bos = false, decode = false, info = false;
    size_t bench_bytes = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gguf") && i + 1 < argc) gguf_path = argv[++i];
        else if (!strcmp(argv[i], "--hf") && i + 1 < argc) hf_path = argv[++i];
        else if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
        else if (!strcmp(argv[i], "--special")) special = true;
        else if (!strcmp(argv[i], "--bos")) bos = true;
        else if (!strcmp(argv[i], "--decode")) decode = true;
        else if (!strcmp(argv[i], "--info")) info = true;
        else if (!strcmp(argv[i], "--bench") && i + 1 < argc) {
            bench = argv[++i];
            if (i + 1 < argc && argv[i + 1][0] != '-') bench_bytes = (size_t)strtoull(argv[++i], NULL, 10);
        } else if (!corpus && argv[i][0] != '-') corpus = argv[i];
        else {
            fprintf(stderr, "tool_tokenize: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!gguf_path == !hf_path || (!corpus && !info && !bench)) {
        fprintf(stderr, "usage: tool_tokenize (--gguf FILE | --hf tokenizer.json [--config FILE]) "
                        "[--special] [--bos] [--decode] (CORPUS | --info | --bench FILE [BYTES])\n");
        return 2;
    }

    tlm_error err;
    gguf_file *gf = NULL;
    tlm_tokenizer *t;
    if (gguf_path) {
        gf = gguf_open(gguf_path, &err);
        t = gf ? tokenizer_from_gguf(gf, &err) : NULL;
    } else {
        t = tokenizer_from_hf(hf_path, config, &err);
    }
    if (!t) {
        fprintf(stderr, "tool_tokenize: %s\n", err.msg);
        gguf_close(gf);
        return 1;
    }

    int rc = 0;
    if (info) {
        printf("kind %s\nn_vocab %d\nbos %d\neos %d\nadd_bos %d\n",
               tokenizer_kind(t) == TLM_TOK_BYTE_BPE ? "byte" : "spm", tokenizer_n_vocab(t),
               tokenizer_bos(t), tokenizer_eos(t), tokenizer_adds_bos(t));
        printf("eog");
        for (int32_t id = 0; id < tokenizer_n_vocab(t); id++)
            if (tokenizer_is_eog(t, id)) printf(" %d", id);
        printf("\nspecial");
        for (int32_t id = 0; id < tokenizer_n_vocab(t); id++)
            if (tokenizer_is_special(t, id)) printf(" %d", id);
        printf("\nchat_template %d\n", tokenizer_chat_template(t) != NULL);
    } else if (bench) {
        size_t n;
        char *text = read_all(bench, &n);
        if (!text) {
            fprintf(stderr, "tool_tokenize: cannot read %s\n", bench);
            rc = 1;
        } else {
            if (bench_bytes && bench_bytes < n) n = bench_bytes;
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            int32_t count = 0;
            int32_t *ids = encode(t, text, n, false, false, &count);
            clock_gettime(CLOCK_MONOTONIC, &b);
            printf("%zu %d %.4f\n", n, count, (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec));
            rc = ids ? 0 : 1;
            free(ids);
            free(text);
        }
    } else {
        size_t n;
        char *text = read_all(corpus, &n);
        if (!text) {
            fprintf(stderr, "tool_tokenize: cannot read %s\n", corpus);
            rc = 1;
        }
        for (size_t p = 0; text && p < n && rc == 0;) {
            char *eol = memchr(text + p, '\n', n - p);
            size_t line_len = eol ? (size_t)(eol - (text + p)) : n - p;
            char *line = text + p;
            p += line_len + 1;
            size_t len = unescape(line, line_len);
            int32_t count = 0;
            int32_t *ids = encode(t, line, len, bos, special, &count);
            if (!ids) {
                rc = 1;
                break;
            }
            for (int32_t i = 0; i < count; i++) printf(i ? " %d" : "%d", ids[i]);
            if (decode) {
                putchar('\t');
                for (int32_t i = 0; i < count; i++) {
                    size_t bl;
                    const unsigned char *bytes = (const unsigned char *)tokenizer_token_bytes(t, ids[i], true, &bl);
                    for (size_t j = 0; j < bl; j++) printf("%02x", bytes[j]);
                }
            }
            putchar('\n');
            free(ids);
        }
        free(text);
    }
    tokenizer_free(t);
    gguf_close(gf);
    return rc;
}
