/* registry_json.c — reading a model registry file (the TRIMLM_REGISTRY
 * override; format in model_registry.h). Kept apart from the downloading
 * code so that the fuzz target (tests/fuzz/fuzz_registry.c) reaches it
 * without libcurl. */
#include <cjson/cJSON.h>
#include <math.h>
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
    cJSON_Delete(r->json);
    *r = (registry_list){0};
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
    r.entries = calloc((size_t)(n > 0 ? n : 1), sizeof *r.entries);
    if (!r.entries) {
        registry_list_free(&r);
        return cli_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, r.json) {
        registry_entry *e = &r.entries[r.n];
        const char **strings[] = {&e->name, &e->description, &e->url, &e->sha256,
                                  &e->member, &e->file, &e->file_sha256};
        const char *keys[] = {"name", "description", "url", "sha256",
                              "member", "file", "file_sha256"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, keys[k]);
            *strings[k] = cJSON_IsString(v) ? v->valuestring : "";
        }
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(item, "size");
        double bytes = cJSON_IsNumber(size) ? size->valuedouble : -1;
        /* a whole number of bytes: 0.5 would pass "> 0" and truncate to 0 */
        if (!e->name[0] || !e->url[0] || !registry_valid_file_name(e->file) || !(bytes >= 1) ||
            bytes > 9.0e15 || bytes != floor(bytes) || !registry_valid_sha256_hex(e->file_sha256) ||
            (e->sha256[0] && !registry_valid_sha256_hex(e->sha256))) {
            size_t bad = r.n + 1;
            registry_list_free(&r);
            return cli_seterr(err, TLM_ERR_FORMAT,
                              "%s (TRIMLM_REGISTRY): entry %zu needs name, url, file, a whole size > 0 "
                              "and a 64-digit lowercase hex file_sha256",
                              path, bad);
        }
        e->size = (uint64_t)bytes;
        r.n++;
    }
    *out = r;
    return TLM_OK;
}
