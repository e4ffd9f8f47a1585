/* fileio.h — small-file reading and path joining shared by the loaders. */
#ifndef TLM_FILEIO_H
#define TLM_FILEIO_H

#include <stdbool.h>
#include <stddef.h>

#include "trimlm.h"

/* dir + "/" + name (no doubled slash); tlm_malloc'd, NULL when out of memory. */
char *tlm_path_join(const char *dir, const char *name);

/* True when path names a regular file. */
bool tlm_is_regular_file(const char *path);

/* Reads a whole regular file of at most max_bytes into a NUL-terminated
 * tlm_malloc'd buffer (cJSON is only safe on terminated text); *len gets the
 * byte count without the NUL. NULL with err naming the file on failure.
 * Anything that is not a regular file (/dev/zero, a FIFO, a directory) is
 * refused without reading from it: opened non-blocking, so that a FIFO
 * without a writer cannot hang the caller. This is the one reader of every
 * text input (prompt files, evaluation data, conversations, JSON). */
char *tlm_read_file(const char *path, size_t max_bytes, size_t *len, tlm_error *err);

/* The same for an open descriptor that may be a pipe or a terminal (standard
 * input): reads until end of file, failing once more than max_bytes arrive.
 * name names it in messages. */
char *tlm_read_fd(int fd, const char *name, size_t max_bytes, size_t *len, tlm_error *err);

/* Maps a whole regular file read-only. An empty file gives *map = NULL and
 * *size = 0. Opened non-blocking so that a FIFO named by mistake cannot hang
 * the caller. Unmap with munmap(*map, *size). */
tlm_status tlm_map_file(const char *path, const void **map, size_t *size, tlm_error *err);

#endif
