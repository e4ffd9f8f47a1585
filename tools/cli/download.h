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

#include "trimlm.h"

#define SHA256_HEX_LEN 64

/* Downloads url (https://, http://, file://) into a new temporary file next
 * to final_path (registered for removal on a signal), closed and fsync'd on
 * success; the data can be read under out->tmp before temp_commit. Fills
 * sha256_hex (65 bytes) and *size with what was received. label names the
 * download on the progress bar; final_path names the file in error messages
 * (e.g. a full disk). */
tlm_status download_to_temp(const char *url, const char *label, const char *final_path,
                            tlm_atomic_file *out, char *sha256_hex, uint64_t *size,
                            tlm_error *err);

/* Streams the member `member` of the zip archive at archive_path into a new
 * temporary file next to final_path, hashing it on the way. */
tlm_status extract_zip_member(const char *archive_path, const char *archive_label,
                              const char *member, const char *final_path, tlm_atomic_file *out,
                              char *sha256_hex, uint64_t *size, tlm_error *err);

/* SHA-256 of a whole file, as lowercase hex. */
tlm_status sha256_file(const char *path, char *sha256_hex, uint64_t *size, tlm_error *err);

/* Renames the temporary file onto its destination (and forgets it). */
tlm_status temp_commit(tlm_atomic_file *t, tlm_error *err);
/* Closes and removes the temporary file; safe to call twice. */
void temp_discard(tlm_atomic_file *t);

/* mkdir -p */
tlm_status make_dirs(const char *path, tlm_error *err);

#endif
