/*
 * fuzz_registry.c — registry_parse(), the reader of the model registry file
 * that TRIMLM_REGISTRY names: the input is the file's bytes. Every entry of
 * a registry that loads must be one `pull` can act on safely: a name, a
 * cache file name that is one visible path component, a size, 64-digit
 * lowercase hex digests, and 1..REGISTRY_MAX_PARTS parts, each with a URL,
 * whose member sizes, when all are given, add up to the size.
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
        FUZZ_CHECK(e->name && e->name[0], "entry %zu: name", i);
        FUZZ_CHECK(e->description && e->notice, "entry %zu: optional strings", i);
        FUZZ_CHECK(e->file[0] && e->file[0] != '.' && !strchr(e->file, '/'),
                   "entry %zu: file name '%s'", i, e->file);
        FUZZ_CHECK(e->size > 0 && hex64(e->file_sha256), "entry %zu: size, digest", i);
        FUZZ_CHECK(e->n_parts >= 1 && e->n_parts <= REGISTRY_MAX_PARTS, "entry %zu: %zu parts", i,
                   e->n_parts);
        uint64_t sum = 0;
        bool all_sized = true;
        for (size_t k = 0; k < e->n_parts; k++) {
            const registry_part *p = &e->parts[k];
            FUZZ_CHECK(p >= r.parts && p < r.parts + r.n_parts, "entry %zu part %zu: outside the list", i, k);
            FUZZ_CHECK(p->url && p->url[0] && p->member, "entry %zu part %zu: url, member", i, k);
            FUZZ_CHECK((!p->sha256[0] || hex64(p->sha256)) &&
                           (!p->member_sha256[0] || hex64(p->member_sha256)),
                       "entry %zu part %zu: digests", i, k);
            all_sized = all_sized && p->member_size > 0;
            sum += p->member_size;
        }
        FUZZ_CHECK(!all_sized || sum == e->size, "entry %zu: parts add up to %llu, size %llu", i,
                   (unsigned long long)sum, (unsigned long long)e->size);
    }
    registry_list_free(&r);
    return 0;
}
