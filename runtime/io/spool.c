/*
 * spool.c — an unnamed temporary file next to an output (spool.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "spool.h"

/* The directory part of path ("." when it has none). */
static void dir_of(const char *path, char *dir, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, cap, ".");
    else if (slash == path) snprintf(dir, cap, "/");
    else snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

tlm_status spool_open(spool *s, const char *dst, tlm_error *err) {
    *s = (spool){.fd = -1, .dst = dst};
    char dir[4096];
    dir_of(dst, dir, sizeof dir);
#ifdef O_TMPFILE
    s->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
#endif
    if (s->fd < 0) { /* a file system without O_TMPFILE: a name, removed at once */
        char path[4200];
        snprintf(path, sizeof path, "%s/.trimlm-spool-XXXXXX", dir);
        s->fd = mkostemp(path, O_CLOEXEC);
        if (s->fd >= 0) unlink(path);
    }
    if (s->fd < 0)
        return tlm_seterr(err, TLM_ERR_IO, "%s: cannot create a temporary file in %s: %s", dst, dir,
                          strerror(errno));
    return TLM_OK;
}

tlm_status spool_append(spool *s, const void *src, size_t n, uint64_t *offset, tlm_error *err) {
    *offset = s->size;
    const uint8_t *p = src;
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(s->fd, p + done, n - done, (off_t)(s->size + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return tlm_seterr(err, TLM_ERR_IO, "%s: cannot write a temporary file: %s", s->dst,
                              w < 0 ? strerror(errno) : "no space");
        done += (size_t)w;
    }
    s->size += n;
    return TLM_OK;
}

tlm_status spool_read(const spool *s, uint64_t offset, void *dst, size_t n, tlm_error *err) {
    uint8_t *p = dst;
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(s->fd, p + done, n - done, (off_t)(offset + done));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return tlm_seterr(err, TLM_ERR_IO, "%s: cannot read back a temporary file: %s", s->dst,
                              r < 0 ? strerror(errno) : "it is shorter than written");
        done += (size_t)r;
    }
    return TLM_OK;
}

void spool_close(spool *s) {
    if (s->fd >= 0) close(s->fd);
    s->fd = -1;
}
