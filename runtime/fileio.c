/* fileio.c — see fileio.h. */
#include "fileio.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

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
