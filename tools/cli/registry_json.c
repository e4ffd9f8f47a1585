/* registry_json.c — reading a model registry file (the TRIMLM_REGISTRY
 * override; format in model_registry.h). Kept apart from the downloading
 * code so that the fuzz target (tests/fuzz/fuzz_registry.c) reaches it
 * without libcurl. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "download.h"
#include "model_registry.h"

bool registry_valid_sha256_hex(const char *s) {
    if (strlen(s) != SHA256_HEX_LEN) return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
    return true;
}

bool registry_valid_file_name(const char *s) {
    return s[0] != '\0' && s[0] != '.' && !strchr(s, '/') && strlen(s) < 256;
}

void registry_list_free(registry_list *r) {
    free(r->entries);
    free(r->parts);
    cJSON_Delete(r->json);
    *r = (registry_list){0};
}

static const char *string_field(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* A whole number of bytes in [lo, 9e15], or -1 (absent, not a number, a
 * fraction: 0.5 would pass "> 0" and truncate to 0). */
static double bytes_field(const cJSON *obj, const char *key, double lo) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    double bytes = cJSON_IsNumber(v) ? v->valuedouble : -1;
    return bytes >= lo && bytes <= 9.0e15 && bytes == floor(bytes) ? bytes : -1;
}

static bool optional_sha256(const char *s) { return !s[0] || registry_valid_sha256_hex(s); }

/* A part from obj (an element of "parts", or the entry itself for the
 * single-part form); NULL when valid, else what is wrong. */
static const char *parse_part(const cJSON *obj, registry_part *p) {
    p->url = string_field(obj, "url");
    p->sha256 = string_field(obj, "sha256");
    p->member = string_field(obj, "member");
    p->member_sha256 = string_field(obj, "member_sha256");
    if (!cJSON_IsObject(obj)) return "is not an object";
    if (!p->url[0]) return "has no url";
    if (!optional_sha256(p->sha256) || !optional_sha256(p->member_sha256))
        return "has a sha256 that is not 64 lowercase hex digits";
    p->member_size = 0;
    if (cJSON_GetObjectItemCaseSensitive(obj, "member_size")) {
        double bytes = bytes_field(obj, "member_size", 1);
        if (bytes < 0) return "has a member_size that is not a whole number >= 1";
        p->member_size = (uint64_t)bytes;
    }
    return NULL;
}

/* Parts of every entry in the file: the single-part form counts one. */
static size_t count_parts(const cJSON *root) {
    size_t total = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        const cJSON *parts = cJSON_GetObjectItemCaseSensitive(item, "parts");
        int n = cJSON_IsArray(parts) ? cJSON_GetArraySize(parts) : 1;
        total += n > 0 ? (size_t)n : 1;
    }
    return total;
}

/* Fills e (its parts at parts[0..]); NULL when valid, else what is wrong,
 * with *bad_part the number (from 1) of the part it is about, 0 for none. */
static const char *parse_entry(const cJSON *item, registry_entry *e, registry_part *parts,
                               size_t *bad_part) {
    e->name = string_field(item, "name");
    e->description = string_field(item, "description");
    e->notice = string_field(item, "notice");
    e->file = string_field(item, "file");
    e->file_sha256 = string_field(item, "file_sha256");
    double bytes = bytes_field(item, "size", 1);
    if (!e->name[0] || !registry_valid_file_name(e->file) || bytes < 0 ||
        !registry_valid_sha256_hex(e->file_sha256))
        return "needs name, file, a whole size > 0 and a 64-digit lowercase hex file_sha256";
    e->size = (uint64_t)bytes;
    e->parts = parts;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(item, "parts");
    if (!list) {
        /* the single-part form: the part's fields are the entry's */
        if (parse_part(item, &parts[0]))
            return "needs a url (or parts), a whole member_size >= 1 if any, and digests that "
                   "are 64 lowercase hex digits";
        e->n_parts = 1;
    } else {
        if (cJSON_GetObjectItemCaseSensitive(item, "url"))
            return "has both url and parts (give one of them)";
        int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : 0;
        if (n < 1 || n > REGISTRY_MAX_PARTS) return "needs parts: an array of 1 to 1000 parts";
        const cJSON *obj;
        cJSON_ArrayForEach(obj, list) {
            const char *why = parse_part(obj, &parts[e->n_parts]);
            if (why) {
                *bad_part = e->n_parts + 1;
                return why;
            }
            e->n_parts++;
        }
    }
    /* sizes that cannot add up would only fail after every download */
    uint64_t sum = 0;
    bool all_sized = true;
    for (size_t i = 0; i < e->n_parts; i++) {
        all_sized = all_sized && parts[i].member_size > 0;
        sum += parts[i].member_size; /* <= 1000 * 9e15: no overflow */
    }
    if (all_sized && sum != e->size) return "has member_size values that do not add up to size";
    return NULL;
}

tlm_status registry_parse(const char *text, size_t len, const char *path, registry_list *out,
                          tlm_error *err) {
    registry_list r = {0};
    r.json = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsArray(r.json)) {
        cJSON_Delete(r.json);
        return cli_seterr(err, TLM_ERR_FORMAT, "%s (TRIMLM_REGISTRY): expected a JSON array of models",
                          path);
    }
    int n = cJSON_GetArraySize(r.json);
    size_t n_parts = count_parts(r.json);
    r.entries = calloc((size_t)(n > 0 ? n : 1), sizeof *r.entries);
    r.parts = calloc(n_parts > 0 ? n_parts : 1, sizeof *r.parts);
    if (!r.entries || !r.parts) {
        registry_list_free(&r);
        return cli_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t used = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, r.json) {
        registry_entry *e = &r.entries[r.n];
        size_t bad_part = 0;
        const char *why = parse_entry(item, e, r.parts + used, &bad_part);
        if (why) {
            char part[32] = "";
            if (bad_part) snprintf(part, sizeof part, ": part %zu", bad_part);
            tlm_status st = cli_seterr(err, TLM_ERR_FORMAT, "%s (TRIMLM_REGISTRY): entry %zu%s%s%s%s %s",
                                       path, r.n + 1, e->name[0] ? " (" : "", e->name,
                                       e->name[0] ? ")" : "", part, why);
            registry_list_free(&r);
            return st;
        }
        used += e->n_parts;
        r.n++;
    }
    r.n_parts = used;
    *out = r;
    return TLM_OK;
}
