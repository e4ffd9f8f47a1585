/* fileio.c — see fileio.h. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"

char *path_join(const char *dir, const char *name) {
    size_t ld = strlen(dir), ln = strlen(name);
    bool slash = ld > 0 && dir[ld - 1] == '/';
    char *p = tlm_malloc(ld + ln + 2);
    if (!p) return NULL;
    memcpy(p, dir, ld);
    size_t at = ld;
    if (!slash) p[at++] = '/';
    memcpy(p + at, name, ln + 1);
    return p;
}

bool is_regular_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *tlm_read_fd(int fd, const char *name, size_t max_bytes, size_t *len, tlm_error *err) {
    /* grown by doubling up to max_bytes + 1: one byte more than allowed
     * tells a too-long input from one of exactly max_bytes */
    size_t cap = 1 << 16, n = 0;
    char *buf = tlm_malloc(cap);
    for (;;) {
        if (!buf) {
            tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory reading %zu bytes", name, n);
            return NULL;
        }
        if (n > max_bytes) {
            tlm_free(buf);
            tlm_seterr(err, TLM_ERR_FORMAT, "%s: more than the %zu bytes allowed for this input",
                       name, max_bytes);
            return NULL;
        }
        if (n + 1 >= cap) { /* room for the NUL at the end */
            size_t grown_cap = cap <= SIZE_MAX / 2 ? cap * 2 : SIZE_MAX;
            char *grown = tlm_realloc(buf, grown_cap);
            if (!grown) tlm_free(buf);
            buf = grown;
            cap = grown_cap;
            continue;
        }
        ssize_t got = read(fd, buf + n, cap - n - 1);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            int e = errno;
            tlm_free(buf);
            tlm_seterr(err, TLM_ERR_IO, "%s: cannot read: %s", name, strerror(e));
            return NULL;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *tlm_read_file(const char *path, size_t max_bytes, size_t *len, tlm_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        tlm_seterr(err, TLM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        tlm_seterr(err, TLM_ERR_IO, "%s: %s", path, strerror(e));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        bool dir = S_ISDIR(st.st_mode);
        close(fd);
        tlm_seterr(err, TLM_ERR_IO, "%s: not a regular file (%s)", path,
                   dir ? "a directory" : "a device, FIFO or socket cannot be read as an input file");
        return NULL;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: %lld bytes is larger than the %zu allowed for this file",
                   path, (long long)st.st_size, max_bytes);
        return NULL;
    }
    char *buf = tlm_read_fd(fd, path, max_bytes, len, err);
    close(fd);
    return buf;
}

tlm_status map_whole_file(const char *path, const void **map, size_t *size, tlm_error *err) {
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return tlm_seterr(err, TLM_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tlm_seterr(err, TLM_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return tlm_seterr(err, TLM_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            return tlm_seterr(err, TLM_ERR_IO, "%s: cannot map the file: %s", path, strerror(e));
        }
        *map = m;
        *size = (size_t)st.st_size;
    }
    close(fd);
    return TLM_OK;
}
