/*
 * atomic_file.h — writing a file all or nothing, so that a crash, a full
 * disk or an interruption never leaves a half-written file under the
 * destination's name. The bytes go to a temporary file
 * ".NAME.partial-PID-XXXXXX" in the destination's directory (a rename within
 * one file system is atomic); opening removes those of dst that processes no
 * longer running left (killed before they could clean up). An existing
 * destination keeps its permissions. Committing fsyncs it, renames it onto
 * the destination and fsyncs the directory, so that the rename itself is
 * durable. Every failure message
 * names the destination and the system's reason ("No space left on device").
 * The caller removes the temporary on any failure with tlm_atomic_discard.
 *
 * Every file trimlm writes goes through here, and each writer names the
 * files its command reads (its inputs): a destination that is one of them is
 * refused before anything is written, so that no output ever replaces the
 * model or the data it was made from.
 */
#ifndef TLM_ATOMIC_FILE_H
#define TLM_ATOMIC_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "trimlm.h"

typedef struct tlm_atomic_file {
    const char *dst; /* the destination (the caller's string, kept for messages) */
    char tmp[4096];  /* the temporary file; "" when there is none */
    int fd;          /* -1 once closed */
    mode_t mode;     /* the permissions dst gets: an existing dst's, else the
                        requested ones less the umask */
} tlm_atomic_file;

/* Refuses dst when it would replace one of the command's inputs:
 *   - the same file as an input, by path, symlink or hard link (the existing
 *     dst's st_dev/st_ino equal an input's);
 *   - a *.json or *.safetensors file directly inside an input that is a
 *     directory (a Hugging Face checkpoint consists of such files);
 *   - and a dst that is a directory.
 * inputs[0..n_inputs): paths; NULL entries (an optional input not given) and
 * inputs that do not exist are skipped. TLM_ERR_ARG with a message naming dst
 * and the input. Cheap: commands call it before long work, and
 * tlm_atomic_open calls it again. */
tlm_status tlm_atomic_check_destination(const char *dst, const char *const *inputs,
                                        size_t n_inputs, tlm_error *err);

/* Creates the temporary file for dst, after tlm_atomic_check_destination
 * (dst, inputs, n_inputs); mode: the permissions a new dst gets (less the
 * umask), as for open(2); an existing regular dst keeps its own. reserve > 0 allocates that many bytes at once,
 * so that a full disk fails here rather than after minutes of writing. */
tlm_status tlm_atomic_open(tlm_atomic_file *f, const char *dst, const char *const *inputs,
                           size_t n_inputs, mode_t mode, uint64_t reserve, tlm_error *err);

/* Appends n bytes (short writes and EINTR retried). */
tlm_status tlm_atomic_write(tlm_atomic_file *f, const void *src, size_t n, tlm_error *err);

/* Writes n bytes at offset (e.g. a header filled in last); what names them
 * in the message ("the header"). */
tlm_status tlm_atomic_pwrite(tlm_atomic_file *f, const void *src, size_t n, uint64_t offset,
                             const char *what, tlm_error *err);

/* Sets the permissions, fsyncs and closes the temporary file, which stays
 * under f->tmp (readable, e.g. to check a download) until committed. */
tlm_status tlm_atomic_close(tlm_atomic_file *f, tlm_error *err);

/* Closes the temporary file (when still open) and renames it onto the
 * destination. */
tlm_status tlm_atomic_commit(tlm_atomic_file *f, tlm_error *err);

/* Closes and removes the temporary file; a no-op once committed or
 * discarded. */
void tlm_atomic_discard(tlm_atomic_file *f);

/* n bytes of data as the whole file dst: open (refusing the inputs as
 * above), write, commit, discard on failure. */
tlm_status tlm_atomic_write_file(const char *dst, const char *const *inputs, size_t n_inputs,
                                 const void *data, size_t n, mode_t mode, tlm_error *err);

#endif
