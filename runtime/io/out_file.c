/*
 * out_file.c — the writers' buffered, hashed output into a temporary file
 * (out_file.h).
 */
#include <inttypes.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "out_file.h"

#define OUT_FILE_BUFFER_BYTES ((size_t)4 << 20) /* write(2) granularity */

tlm_status out_file_init(out_file *o, const char *dst, const char *const *inputs, size_t n_inputs,
                         bool hashed, tlm_progress_fn progress, void *user, tlm_error *err) {
    *o = (out_file){.dst = dst, .inputs = inputs, .n_inputs = n_inputs, .file = {.fd = -1},
                    .progress = progress, .user = user, .err = err};
    o->buf = tlm_malloc_aligned(OUT_FILE_BUFFER_BYTES);
    if (hashed) o->hash = tlm_malloc_aligned(sizeof *o->hash);
    if (!o->buf || (hashed && !o->hash))
        return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dst);
    if (o->hash) XXH3_64bits_reset(o->hash);
    return TLM_OK;
}

tlm_status out_file_open(out_file *o, uint64_t total) {
    o->total = total;
    if (o->progress && !o->progress(o->user, "write", 0, total))
        return tlm_seterr(o->err, TLM_ERR_ARG, "%s: cancelled; nothing was written", o->dst);
    /* the whole size is reserved: a full disk fails here, not at the end */
    return tlm_atomic_open(&o->file, o->dst, o->inputs, o->n_inputs, 0644, total, o->err);
}

static tlm_status flush_buffer(out_file *o) {
    tlm_status st = tlm_atomic_write(&o->file, o->buf, o->used, o->err);
    if (st) return st;
    o->used = 0;
    if (o->progress && !o->progress(o->user, "write", o->pos, o->total))
        return tlm_seterr(o->err, TLM_ERR_ARG, "%s: cancelled; nothing was written", o->dst);
    return TLM_OK;
}

tlm_status out_file_put_unhashed(out_file *o, const void *src, size_t n) {
    const uint8_t *p = src;
    o->pos += n;
    while (n > 0) {
        size_t room = OUT_FILE_BUFFER_BYTES - o->used;
        size_t take = n < room ? n : room;
        memcpy(o->buf + o->used, p, take);
        o->used += take;
        p += take;
        n -= take;
        if (o->used == OUT_FILE_BUFFER_BYTES) {
            tlm_status st = flush_buffer(o);
            if (st) return st;
        }
    }
    return TLM_OK;
}

tlm_status out_file_put(out_file *o, const void *src, size_t n) {
    if (o->hash) XXH3_64bits_update(o->hash, src, n);
    return out_file_put_unhashed(o, src, n);
}

tlm_status out_file_pad_to(out_file *o, uint64_t offset) {
    static const uint8_t zeros[256];
    while (o->pos < offset) {
        size_t take = offset - o->pos < sizeof zeros ? (size_t)(offset - o->pos) : sizeof zeros;
        tlm_status st = out_file_put(o, zeros, take);
        if (st) return st;
    }
    return TLM_OK;
}

tlm_status out_file_finish(out_file *o) {
    if (o->pos != o->total)
        return tlm_seterr(o->err, TLM_ERR_IO, "%s: internal error: wrote %" PRIu64
                          " bytes of a planned %" PRIu64, o->dst, o->pos, o->total);
    return flush_buffer(o);
}

tlm_status out_file_pwrite(out_file *o, const void *src, size_t n, uint64_t offset,
                           const char *what) {
    return atomic_pwrite(&o->file, src, n, offset, what, o->err);
}

tlm_status out_file_commit(out_file *o) {
    tlm_status st = tlm_atomic_commit(&o->file, o->err);
    if (!st) o->committed = true;
    return st;
}

void out_file_close(out_file *o) {
    if (!o->committed) tlm_atomic_discard(&o->file);
    tlm_free(o->buf);
    tlm_free(o->hash);
    o->buf = NULL;
    o->hash = NULL;
}
