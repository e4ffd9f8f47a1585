/*
 * tokenizer_blob.c — a model source's tokenizer as bytes, the way the .tlm
 * file stores it (tlm_format.h): a GGUF's tokenizer.* metadata as a GGUF
 * image without tensors, a Hugging Face directory's tokenizer files, or a
 * .tlm file's own section.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "byte_buf.h"
#include "error.h"
#include "fileio.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "model.h"
#include "tlm_format.h"

void tokenizer_blob_free(tlm_tokenizer_blob *b) {
    if (!b) return;
    for (int i = 0; i < TLM_TOK_MAX_PARTS; i++) tlm_free(b->part_data[i]);
    memset(b, 0, sizeof *b);
}

/* A GGUF v3 image without tensors holding the tokenizer.* keys of path. */
static tlm_status blob_from_gguf(const char *path, tlm_tokenizer_blob *out, tlm_error *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) return err ? err->code : TLM_ERR_FORMAT;
    tlm_byte_buf b = {0};
    uint64_t n_kv = 0;
    buf_put(&b, "GGUF", 4);
    buf_u32(&b, 3);
    buf_u64(&b, 0);    /* tensors */
    buf_u64(&b, 0);    /* key-values: patched below */
    for (uint64_t i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (kv->key.len >= 10 && memcmp(kv->key.ptr, "tokenizer.", 10) == 0 &&
            gguf_put_kv(&b, kv))
            n_kv++;
    }
    gguf_close(f);
    if (b.oom) {
        tlm_free(b.p);
        return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory copying the tokenizer", path);
    }
    memcpy(b.p + 16, &n_kv, 8);
    snprintf(out->format, sizeof out->format, "gguf-kv");
    snprintf(out->part_name[0], sizeof out->part_name[0], "tokenizer.gguf");
    out->part_data[0] = b.p;
    out->part_bytes[0] = b.len;
    out->n_parts = 1;
    return TLM_OK;
}

static tlm_status blob_from_hf(const char *dir, tlm_tokenizer_blob *out, tlm_error *err) {
    static const char *const names[] = {"tokenizer.json", "tokenizer_config.json"};
    snprintf(out->format, sizeof out->format, "hf-json");
    for (int i = 0; i < 2; i++) {
        char path[4096];
        int n = snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (n < 0 || (size_t)n >= sizeof path)
            return tlm_seterr(err, TLM_ERR_ARG, "%s: path too long", dir);
        struct stat st;
        if (i == 1 && stat(path, &st) != 0) break; /* the config is optional */
        size_t n_bytes = 0;
        out->part_data[i] = (uint8_t *)tlm_read_file(path, (size_t)TLM_MAX_TOK_BYTES, &n_bytes, err);
        if (!out->part_data[i]) return err && err->code ? err->code : TLM_ERR_IO;
        out->part_bytes[i] = n_bytes;
        snprintf(out->part_name[i], sizeof out->part_name[i], "%s", names[i]);
        out->n_parts = i + 1;
    }
    return TLM_OK;
}

tlm_status tokenizer_blob_from_source(const char *src, tlm_tokenizer_blob *out,
                                          tlm_error *err) {
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(src, &st) != 0) return tlm_seterr(err, TLM_ERR_IO, "%s: %s", src, strerror(errno));
    tlm_status s;
    if (S_ISDIR(st.st_mode)) s = blob_from_hf(src, out, err);
    else if (model_is_tlm_file(src)) s = read_tokenizer_blob(src, out, err);
    else s = blob_from_gguf(src, out, err);
    if (s != TLM_OK) tokenizer_blob_free(out);
    return s;
}
