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

char *tlm_path_join(const char *dir, const char *name) {
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

bool tlm_is_regular_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *tlm_read_file(const char *path, size_t max_bytes, size_t *len, tlm_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        tlm_seterr(err, TLM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        tlm_seterr(err, TLM_ERR_IO, "%s: not a regular file", path);
        return NULL;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: %lld bytes is larger than the %zu allowed for this file",
                   path, (long long)st.st_size, max_bytes);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    char *buf = tlm_malloc(n + 1);
    if (!buf) {
        fclose(f);
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
        return NULL;
    }
    size_t got = fread(buf, 1, n, f);
    int read_failed = ferror(f);
    fclose(f);
    if (got != n || read_failed) {
        tlm_free(buf);
        tlm_seterr(err, TLM_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

tlm_status tlm_map_file(const char *path, const void **map, size_t *size, tlm_error *err) {
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
