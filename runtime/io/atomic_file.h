/*
 * atomic_file.h — writing a file all or nothing: the public part
 * (tlm_atomic_file, open / write / close / commit / discard, the check of a
 * destination against a command's inputs) is declared in trimlm.h; the
 * library's writers also overwrite a header at the end.
 */
#ifndef TLM_ATOMIC_FILE_H
#define TLM_ATOMIC_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "trimlm.h"

/* Writes n bytes at offset (e.g. a header filled in last); what names them
 * in the message ("the header"). */
tlm_status atomic_pwrite(tlm_atomic_file *f, const void *src, size_t n, uint64_t offset,
                             const char *what, tlm_error *err);

#endif
