/*
 * spool.h — an anonymous temporary file next to an output, for bytes that a
 * writer computes before it can write them (the quantized layers of an
 * activation-aware conversion: the metadata that precedes them in the file
 * holds the scales chosen while computing them). The file has no name: it
 * disappears when closed, or when the process dies.
 */
#ifndef TLM_SPOOL_H
#define TLM_SPOOL_H

#include <stddef.h>
#include <stdint.h>

#include "trimlm.h"

typedef struct spool {
    int fd;          /* -1 when not open */
    uint64_t size;   /* bytes appended */
    const char *dst; /* the output it serves, for messages */
} spool;

/* Creates the spool in the directory of dst (on the output's file system,
 * whose free space the output needs anyway). */
tlm_status spool_open(spool *s, const char *dst, tlm_error *err);
/* Appends n bytes; *offset gets where they start. */
tlm_status spool_append(spool *s, const void *src, size_t n, uint64_t *offset, tlm_error *err);
/* Reads n bytes at offset. */
tlm_status spool_read(const spool *s, uint64_t offset, void *dst, size_t n, tlm_error *err);
/* Closes (and so deletes) it; no-op when not open. */
void spool_close(spool *s);

#endif
