/*
 * out_file.h — the output of the model writers (.tlm and GGUF): bytes stream
 * through one buffer into a temporary file next to the destination
 * (atomic_file.h), which is fsync'd and renamed when complete. The file's
 * planned size is reserved before the first byte, so that a full disk fails
 * at once rather than after minutes of conversion. Bytes may be hashed
 * (XXH3-64) on their way for a whole-file checksum.
 */
#ifndef TLM_OUT_FILE_H
#define TLM_OUT_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t by value */
#include <xxhash.h>

#include "atomic_file.h"
#include "trimlm.h"

typedef struct out_file {
    const char *dst;           /* the final name, for messages */
    const char *const *inputs; /* what it may not replace (tlm_atomic_check_destination) */
    size_t n_inputs;
    tlm_atomic_file file;
    uint8_t *buf;              /* OUT_FILE_BUFFER_BYTES */
    size_t used;
    uint64_t pos;              /* bytes written or buffered: the file offset reached */
    uint64_t total;            /* the planned file size */
    XXH3_state_t *hash;        /* the whole-file hash, or NULL when not hashed */
    bool committed;
    tlm_progress_fn progress;  /* stage "write", done/total in bytes */
    void *user;
    tlm_error *err;
} out_file;

/* Buffers for an output to dst; hashed: keep a whole-file XXH3 of what
 * out_file_put is given. Nothing is created yet. */
tlm_status out_file_init(out_file *o, const char *dst, const char *const *inputs, size_t n_inputs,
                         bool hashed, tlm_progress_fn progress, void *user, tlm_error *err);
/* Reports progress 0 of total (a cancellation then leaves nothing behind)
 * and creates the temporary file with total bytes reserved. */
tlm_status out_file_open(out_file *o, uint64_t total);
/* Appends n bytes (hashed when the output is). */
tlm_status out_file_put(out_file *o, const void *src, size_t n);
/* Appends n bytes that the whole-file hash leaves out (a header written
 * again at the end). */
tlm_status out_file_put_unhashed(out_file *o, const void *src, size_t n);
/* Zeros up to file offset `offset` (no-op when already there). */
tlm_status out_file_pad_to(out_file *o, uint64_t offset);
/* Writes what is buffered; checks that the planned size was reached. */
tlm_status out_file_finish(out_file *o);
/* Overwrites n bytes at offset (after out_file_finish): a header holding
 * offsets and checksums known only at the end. */
tlm_status out_file_pwrite(out_file *o, const void *src, size_t n, uint64_t offset,
                           const char *what);
/* fsync, then rename onto the destination. */
tlm_status out_file_commit(out_file *o);
/* Frees the buffers; removes the temporary file unless committed. */
void out_file_close(out_file *o);

#endif
