/*
 * fuzz_common.h — what the fuzz targets share: handing fuzzer bytes to
 * loaders that take a path (without touching the disk), a scratch
 * directory, the fixed input files of tests/fuzz/data, and a check that
 * aborts with a message (so that a broken invariant is a crash in libFuzzer
 * and a failing replay test in a plain build).
 *
 * Each target defines LLVMFuzzerTestOneInput() and may define
 * LLVMFuzzerInitialize(); the same source links either with libFuzzer or with
 * replay_main.c.
 */
#ifndef TLM_FUZZ_COMMON_H
#define TLM_FUZZ_COMMON_H

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond, ...)                                                  \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* ------------------------------------------------------- in-memory files */

/* Loaders open paths; a memfd reached through /proc/self/fd/N is a regular
 * file that lives in memory only, can be mmapped like any other, and is
 * rewritten in place for each input. `slot` picks one of a few such files so
 * that a target can present several at once. */
#define FUZZ_MEMFD_SLOTS 4

static inline bool fuzz_memfd_write(int slot, const void *data, size_t size, char path[64]) {
    static int fds[FUZZ_MEMFD_SLOTS] = {-1, -1, -1, -1};
    if (slot < 0 || slot >= FUZZ_MEMFD_SLOTS) return false;
    if (fds[slot] < 0) {
        fds[slot] = memfd_create("tlm-fuzz-input", MFD_CLOEXEC);
        if (fds[slot] < 0) {
            perror("memfd_create");
            abort();
        }
    }
    int fd = fds[slot];
    if (ftruncate(fd, 0) != 0) return false;
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(fd, (const char *)data + done, size - done, (off_t)done);
        if (n <= 0) return false;
        done += (size_t)n;
    }
    snprintf(path, 64, "/proc/self/fd/%d", fd);
    return true;
}

/* ------------------------------------------------------- scratch directory */

/* A fresh directory under $TMPDIR (else /tmp), removed with its files at
 * exit. The files a target puts there are listed so that nothing else is
 * ever deleted. */
#define FUZZ_TMP_MAX_FILES 8

static char fuzz_tmp_dir[512];
static char fuzz_tmp_files[FUZZ_TMP_MAX_FILES][600];
static int fuzz_tmp_n_files;

static inline void fuzz_tmpdir_remove(void) {
    for (int i = 0; i < fuzz_tmp_n_files; i++) unlink(fuzz_tmp_files[i]);
    if (fuzz_tmp_dir[0]) rmdir(fuzz_tmp_dir);
}

static inline const char *fuzz_tmpdir(void) {
    if (fuzz_tmp_dir[0]) return fuzz_tmp_dir;
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(fuzz_tmp_dir, sizeof fuzz_tmp_dir, "%s/tlm-fuzz-XXXXXX", base);
    if (!mkdtemp(fuzz_tmp_dir)) {
        perror("mkdtemp");
        abort();
    }
    atexit(fuzz_tmpdir_remove);
    return fuzz_tmp_dir;
}

/* Writes (replaces) name inside the scratch directory; returns its path. */
static inline const char *fuzz_tmpdir_write(const char *name, const void *data, size_t size) {
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", fuzz_tmpdir(), name);
    bool known = false;
    for (int i = 0; i < fuzz_tmp_n_files; i++) known |= strcmp(fuzz_tmp_files[i], path) == 0;
    if (!known) {
        if (fuzz_tmp_n_files == FUZZ_TMP_MAX_FILES) abort();
        snprintf(fuzz_tmp_files[fuzz_tmp_n_files++], sizeof fuzz_tmp_files[0], "%s", path);
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        perror(path);
        abort();
    }
    return path;
}

/* ------------------------------------------------------- fixed inputs */

/* Reads tests/fuzz/data/<name> (directory: $TLM_FUZZ_DATA, else the one
 * compiled in); aborts when it is missing, since the target is useless
 * without it. Returns a malloc'd, NUL-terminated buffer. */
static inline char *fuzz_read_data(const char *name, size_t *size) {
    const char *dir = getenv("TLM_FUZZ_DATA");
#ifdef TLM_FUZZ_DATA_DIR
    if (!dir || !*dir) dir = TLM_FUZZ_DATA_DIR;
#endif
    if (!dir) {
        fprintf(stderr, "fuzz: set TLM_FUZZ_DATA to the tests/fuzz/data directory\n");
        abort();
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || n < 0 || fread(buf, 1, (size_t)n, f) != (size_t)n) abort();
    fclose(f);
    buf[n] = '\0';
    *size = (size_t)n;
    return buf;
}

/* An error returned by the library must carry a code and a terminated,
 * non-empty message. TLM_FUZZ_VERBOSE=1 prints it (to see why a seed is
 * rejected). */
#define FUZZ_CHECK_ERROR(err)                                                        \
    do {                                                                             \
        FUZZ_CHECK((err).code != 0 && (err).msg[0] != '\0' &&                        \
                       memchr((err).msg, '\0', sizeof (err).msg) != NULL,           \
                   "failure without a proper error (code %d)", (int)(err).code);     \
        if (fuzz_verbose()) fprintf(stderr, "rejected: %s\n", (err).msg);           \
    } while (0)

static inline bool fuzz_verbose(void) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("TLM_FUZZ_VERBOSE") && atoi(getenv("TLM_FUZZ_VERBOSE"));
    return verbose > 0;
}

#endif
