/* fileio.h — small-file reading and path joining shared by the loaders. */
#ifndef TLM_FILEIO_H
#define TLM_FILEIO_H

#include <stdbool.h>
#include <stddef.h>

#include "trimlm.h"

/* dir + "/" + name (no doubled slash); tlm_malloc'd, NULL when out of memory. */
char *path_join(const char *dir, const char *name);

/* True when path names a regular file. */
bool is_regular_file(const char *path);

/* tlm_read_file and tlm_read_fd, the readers of text inputs, are declared in
 * trimlm.h. */

/* Maps a whole regular file read-only. An empty file gives *map = NULL and
 * *size = 0. Opened non-blocking so that a FIFO named by mistake cannot hang
 * the caller. Unmap with munmap(*map, *size). */
tlm_status map_whole_file(const char *path, const void **map, size_t *size, tlm_error *err);

#endif
