/*
 * fuzz_registry.c — registry_parse(), the reader of the model registry file
 * that TRIMLM_REGISTRY names: the input is the file's bytes. Every entry of
 * a registry that loads must be one `pull` can act on safely: a name and a
 * URL, a cache file name that is one visible path component, a size, and
 * 64-digit lowercase hex digests.
 */
#include "fuzz_common.h"
#include "model_registry.h"

static bool hex64(const char *s) {
    if (strlen(s) != 64) return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    registry_list r = {0};
    tlm_error err;
    if (registry_parse((const char *)data, size, "registry.json", &r, &err) != TLM_OK) {
        FUZZ_CHECK_ERROR(err);
        FUZZ_CHECK(r.entries == NULL && r.json == NULL, "output touched on failure");
        return 0;
    }
    for (size_t i = 0; i < r.n; i++) {
        const registry_entry *e = &r.entries[i];
        FUZZ_CHECK(e->name && e->name[0] && e->url && e->url[0], "entry %zu: name, url", i);
        FUZZ_CHECK(e->description && e->member, "entry %zu: optional strings", i);
        FUZZ_CHECK(e->file[0] && e->file[0] != '.' && !strchr(e->file, '/'),
                   "entry %zu: file name '%s'", i, e->file);
        FUZZ_CHECK(e->size > 0, "entry %zu: size", i);
        FUZZ_CHECK(hex64(e->file_sha256) && (!e->sha256[0] || hex64(e->sha256)),
                   "entry %zu: digests", i);
    }
    registry_list_free(&r);
    return 0;
}
