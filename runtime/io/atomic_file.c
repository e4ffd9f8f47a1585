/* atomic_file.c — see atomic_file.h. */
#include "atomic_file.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

static bool ends_with(const char *s, const char *suffix) {
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

/* dst's directory: everything before the last '/', "/" or "." */
static void parent_dir(const char *dst, char *out, size_t cap) {
    const char *slash = strrchr(dst, '/');
    snprintf(out, cap, "%.*s", slash ? (int)(slash - dst) + (slash == dst) : 1, slash ? dst : ".");
}

static bool same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

tlm_status tlm_atomic_check_destination(const char *dst, const char *const *inputs,
                                        size_t n_inputs, tlm_error *err) {
    if (!dst || !*dst) return tlm_seterr(err, TLM_ERR_ARG, "no output file name given");
    struct stat s_dst, s_par;
    /* stat follows symlinks: a link to an input is the input */
    bool dst_exists = stat(dst, &s_dst) == 0;
    if (dst_exists && S_ISDIR(s_dst.st_mode))
        return tlm_seterr(err, TLM_ERR_ARG, "%s: is a directory (give the output file's name)", dst);
    char parent[4096];
    parent_dir(dst, parent, sizeof parent);
    bool have_parent = stat(parent, &s_par) == 0;
    bool checkpoint_name = ends_with(dst, ".json") || ends_with(dst, ".safetensors");
    for (size_t i = 0; i < n_inputs; i++) {
        struct stat s_in;
        if (!inputs[i] || !*inputs[i] || stat(inputs[i], &s_in) != 0) continue;
        if (dst_exists && same_file(&s_dst, &s_in))
            return strcmp(dst, inputs[i]) == 0
                       ? tlm_seterr(err, TLM_ERR_ARG, "%s: refusing to overwrite the input file", dst)
                       : tlm_seterr(err, TLM_ERR_ARG,
                                    "%s: refusing to overwrite the input file %s (the same file "
                                    "under another name)", dst, inputs[i]);
        if (S_ISDIR(s_in.st_mode) && have_parent && checkpoint_name && same_file(&s_par, &s_in))
            return tlm_seterr(err, TLM_ERR_ARG,
                              "%s: refusing to write a file into the input model directory %s", dst,
                              inputs[i]);
    }
    return TLM_OK;
}

/* Removes the temporary files that writers of dst which no longer run left
 * behind (killed before they could remove them): ".NAME.partial-PID-XXXXXX"
 * in dst's directory whose PID is no live process. Only dst's own, and only
 * names of that exact form; a PID now reused by another process keeps its
 * file, which errs on the side of keeping. */
static void remove_stale_partials(const char *dir, const char *name) {
    DIR *d = opendir(dir);
    if (!d) return;
    char prefix[4096];
    int np = snprintf(prefix, sizeof prefix, ".%s.partial-", name);
    if (np < 0 || (size_t)np >= sizeof prefix) {
        closedir(d);
        return;
    }
    const struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, (size_t)np) != 0) continue;
        const char *p = e->d_name + np;
        char *end;
        errno = 0;
        long pid = isdigit((unsigned char)*p) ? strtol(p, &end, 10) : 0;
        if (pid <= 0 || errno || pid == (long)getpid() || *end != '-' || strlen(end + 1) != 6)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive, or not ours to know */
        char path[8192];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path) unlink(path);
    }
    closedir(d);
}

tlm_status tlm_atomic_open(tlm_atomic_file *f, const char *dst, const char *const *inputs,
                           size_t n_inputs, mode_t mode, uint64_t reserve, tlm_error *err) {
    f->dst = dst;
    f->fd = -1;
    f->tmp[0] = '\0';
    tlm_status status = tlm_atomic_check_destination(dst, inputs, n_inputs, err);
    if (status) return status;
    /* an existing destination keeps its permissions (a 0600 file stays
     * private); a new one gets mode less the umask */
    struct stat st;
    if (stat(dst, &st) == 0 && S_ISREG(st.st_mode)) {
        f->mode = st.st_mode & 07777;
    } else {
        mode_t mask = umask(022);
        umask(mask);
        f->mode = mode & ~mask;
    }
    const char *slash = strrchr(dst, '/');
    const long pid = (long)getpid(); /* in the name: a later writer can tell it is stale */
    int n = slash ? snprintf(f->tmp, sizeof f->tmp, "%.*s/.%s.partial-%ld-XXXXXX",
                             (int)(slash - dst), dst, slash + 1, pid)
                  : snprintf(f->tmp, sizeof f->tmp, ".%s.partial-%ld-XXXXXX", dst, pid);
    if (n < 0 || (size_t)n >= sizeof f->tmp) {
        f->tmp[0] = '\0';
        return tlm_seterr(err, TLM_ERR_ARG, "%s: path too long", dst);
    }
    char dir[4096];
    parent_dir(dst, dir, sizeof dir);
    remove_stale_partials(dir, slash ? slash + 1 : dst);
    f->fd = mkostemp(f->tmp, O_CLOEXEC);
    if (f->fd < 0) {
        int e = errno;
        f->tmp[0] = '\0';
        return tlm_seterr(err, TLM_ERR_IO, "%s: cannot create a temporary file next to it: %s",
                          dst, strerror(e));
    }
    /* fallocate(2), not posix_fallocate: where the file system cannot
     * reserve, the latter would emulate it by writing every block */
    if (reserve > 0 && fallocate(f->fd, 0, 0, (off_t)reserve) != 0 &&
        (errno == ENOSPC || errno == EFBIG || errno == EDQUOT))
        return tlm_seterr(err, TLM_ERR_IO, "%s: cannot write %" PRIu64 " bytes: %s", dst,
                          reserve, strerror(errno));
    return TLM_OK;
}

tlm_status tlm_atomic_write(tlm_atomic_file *f, const void *src, size_t n, tlm_error *err) {
    const uint8_t *p = src;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return tlm_seterr(err, TLM_ERR_IO, "%s: cannot write: %s", f->dst,
                              w < 0 ? strerror(errno) : "no progress");
        p += w;
        n -= (size_t)w;
    }
    return TLM_OK;
}

tlm_status atomic_pwrite(tlm_atomic_file *f, const void *src, size_t n, uint64_t offset,
                             const char *what, tlm_error *err) {
    const uint8_t *p = src;
    for (size_t done = 0; done < n;) {
        ssize_t w = pwrite(f->fd, p + done, n - done, (off_t)(offset + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return tlm_seterr(err, TLM_ERR_IO, "%s: cannot write %s: %s", f->dst, what,
                              w < 0 ? strerror(errno) : "no progress");
        done += (size_t)w;
    }
    return TLM_OK;
}

tlm_status tlm_atomic_close(tlm_atomic_file *f, tlm_error *err) {
    /* mkstemp made it 0600 */
    if (fchmod(f->fd, f->mode) != 0 || fsync(f->fd) != 0)
        return tlm_seterr(err, TLM_ERR_IO, "%s: cannot write: %s", f->dst, strerror(errno));
    int fd = f->fd;
    f->fd = -1;
    if (close(fd) != 0)
        return tlm_seterr(err, TLM_ERR_IO, "%s: cannot write: %s", f->dst, strerror(errno));
    return TLM_OK;
}

tlm_status tlm_atomic_commit(tlm_atomic_file *f, tlm_error *err) {
    tlm_status st = f->fd >= 0 ? tlm_atomic_close(f, err) : TLM_OK;
    if (st) return st;
    if (rename(f->tmp, f->dst) != 0)
        return tlm_seterr(err, TLM_ERR_IO, "%s: cannot rename the temporary file onto it: %s",
                          f->dst, strerror(errno));
    f->tmp[0] = '\0';
    /* the rename itself reaches the disk with its directory */
    char dir[4096];
    parent_dir(f->dst, dir, sizeof dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return TLM_OK;
}

void tlm_atomic_discard(tlm_atomic_file *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    if (f->tmp[0]) unlink(f->tmp);
    f->tmp[0] = '\0';
}

tlm_status tlm_atomic_write_file(const char *dst, const char *const *inputs, size_t n_inputs,
                                 const void *data, size_t n, mode_t mode, tlm_error *err) {
    tlm_atomic_file f;
    tlm_status st = tlm_atomic_open(&f, dst, inputs, n_inputs, mode, 0, err);
    if (!st) st = tlm_atomic_write(&f, data, n, err);
    if (!st) st = tlm_atomic_commit(&f, err);
    if (st) tlm_atomic_discard(&f);
    return st;
}
