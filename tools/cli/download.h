/*
 * download.h — fetching a URL into a temporary file, pulling one member out
 * of a zip archive, and SHA-256 of files; all of it crash- and
 * interrupt-safe: data lands in temporary files next to the destination
 * (tlm_atomic_open, trimlm.h), is fsync'd, and only then renamed to its final
 * name. Temporary files are removed on every failure and on SIGINT/SIGTERM.
 */
#ifndef TLM_DOWNLOAD_H
#define TLM_DOWNLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli.h"
#include "trimlm.h"

#define SHA256_HEX_LEN 64

/* SHA-256 over a stream of bytes (several at once: a part's and the whole
 * file's). */
typedef struct sha256_stream sha256_stream;
sha256_stream *sha256_stream_new(tlm_error *err);
void sha256_stream_update(sha256_stream *h, const void *data, size_t n);
/* The digest as lowercase hex (65 bytes); the stream is then spent. */
void sha256_stream_hex(sha256_stream *h, char *sha256_hex);
void sha256_stream_free(sha256_stream *h);

/* One progress bar over a model assembled from several parts, in bytes of
 * the model file: done (the parts finished) plus the share of the current
 * part that its download has reached. Quiet when stderr is not a terminal. */
typedef struct pull_progress {
    cli_progress bar;
    uint64_t done;      /* bytes of the model file from the parts finished */
    uint64_t total;     /* bytes of the model file */
    uint64_t part_size; /* bytes the current part adds; 0 = not known */
} pull_progress;

/* Creates the temporary file for final_path (registered for removal on a
 * signal); reserve > 0 allocates that many bytes at once, so that a full
 * disk fails before any download. */
tlm_status temp_open(tlm_atomic_file *t, const char *final_path, uint64_t reserve,
                     tlm_error *err);

/* Appends what url (https://, http://, file://) serves to the open
 * temporary file out, feeding every byte to hashes[0..n_hashes); *received:
 * the bytes appended. progress: the bar to advance; NULL = a bar of its own
 * named label. */
tlm_status download_append(const char *url, const char *label, tlm_atomic_file *out,
                           sha256_stream *const *hashes, size_t n_hashes,
                           pull_progress *progress, uint64_t *received, tlm_error *err);

/* Appends the member `member` of the zip archive at archive_path
 * (archive_label names it in messages) to the open temporary file out,
 * feeding every byte to hashes[0..n_hashes); *size: the bytes appended. */
tlm_status zip_member_append(const char *archive_path, const char *archive_label,
                             const char *member, tlm_atomic_file *out,
                             sha256_stream *const *hashes, size_t n_hashes, uint64_t *size,
                             tlm_error *err);

/* Downloads url (https://, http://, file://) into a new temporary file next
 * to final_path (registered for removal on a signal), closed and fsync'd on
 * success; the data can be read under out->tmp before temp_commit. Fills
 * sha256_hex (65 bytes) and *size with what was received. label names the
 * download on the progress bar; final_path names the file in error messages
 * (e.g. a full disk). */
tlm_status download_to_temp(const char *url, const char *label, const char *final_path,
                            tlm_atomic_file *out, char *sha256_hex, uint64_t *size,
                            tlm_error *err);

/* SHA-256 of a whole file, as lowercase hex. */
tlm_status sha256_file(const char *path, char *sha256_hex, uint64_t *size, tlm_error *err);

/* Renames the temporary file onto its destination (and forgets it). */
tlm_status temp_commit(tlm_atomic_file *t, tlm_error *err);
/* Closes and removes the temporary file; safe to call twice. */
void temp_discard(tlm_atomic_file *t);

/* mkdir -p */
tlm_status make_dirs(const char *path, tlm_error *err);

#endif
