/*
 * fuzz_safetensors.c — the safetensors reader (runtime/io/safetensors.c) on
 * arbitrary bytes as one .safetensors file, and on inputs "{json} NUL data"
 * as a file with that header and a correct length prefix.
 *
 * An accepted file must describe tensors that can be found by name, whose
 * element count is the product of their shape, whose byte size matches the
 * dtype, and whose data can be read whole (F32/F16/BF16 are converted; other
 * dtypes are summed byte by byte) without leaving the mapping.
 */
#include "fuzz_common.h"
#include "safetensors.h"

#define MAX_CONVERT (1u << 20) /* elements worth converting per tensor */

static void check_file(const uint8_t *data, size_t size) {
    char path[64];
    if (!fuzz_memfd_write(0, data, size, path)) return;
    tlm_error err;
    st_set *s = st_open_file(path, &err);
    if (!s) {
        FUZZ_CHECK_ERROR(err);
        return;
    }
    size_t n = st_n_tensors(s);
    const char *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(s, i);
        FUZZ_CHECK(t && t->name, "tensor %zu", i);
        FUZZ_CHECK(!prev || strcmp(prev, t->name) < 0, "table not sorted or a duplicate at %zu", i);
        prev = t->name;
        FUZZ_CHECK(st_find(s, t->name) == t, "lookup of '%s'", t->name);
        FUZZ_CHECK(t->n_dims <= ST_MAX_DIMS, "'%s' has %u dims", t->name, t->n_dims);
        uint64_t count = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) count *= t->shape[d];
        FUZZ_CHECK(count == t->n_elements, "'%s': %llu elements, shape says %llu", t->name,
                   (unsigned long long)t->n_elements, (unsigned long long)count);
        FUZZ_CHECK(t->nbytes <= size, "'%s': %llu bytes in a file of %zu", t->name,
                   (unsigned long long)t->nbytes, size);
        uint32_t esize = t->dtype == ST_F32 ? 4 : t->dtype == ST_OTHER ? 0 : 2;
        if (esize) {
            FUZZ_CHECK(t->nbytes == t->n_elements * esize, "'%s': %llu bytes for %llu elements",
                       t->name, (unsigned long long)t->nbytes, (unsigned long long)t->n_elements);
            if (t->n_elements <= MAX_CONVERT) {
                float *dst = malloc((size_t)t->n_elements * sizeof *dst + 1);
                FUZZ_CHECK(dst != NULL, "malloc");
                FUZZ_CHECK(st_to_f32(t, dst, &err) == TLM_OK, "converting '%s'", t->name);
                free(dst);
            }
        } else {
            volatile uint8_t sum = 0;
            for (uint64_t b = 0; b < t->nbytes; b++) sum += ((const uint8_t *)t->data)[b];
            (void)sum;
            float one;
            FUZZ_CHECK(st_to_f32(t, &one, &err) == TLM_ERR_UNSUPPORTED, "'%s' converted", t->name);
            FUZZ_CHECK_ERROR(err);
        }
    }
    FUZZ_CHECK(st_tensor_at(s, n) == NULL, "accessor past the end");
    FUZZ_CHECK(st_find(s, "\x01no such tensor") == NULL, "found a tensor that is not there");
    st_close(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_file(data, size);
    /* The length prefix must agree with the JSON, which most mutations of
     * the JSON break; so an input starting with '{' is also read as
     * "header NUL data" and given a matching prefix. */
    if (size > 0 && data[0] == '{') {
        const uint8_t *nul = memchr(data, '\0', size);
        uint64_t hlen = nul ? (uint64_t)(nul - data) : size;
        size_t dlen = nul ? size - hlen - 1 : 0;
        uint8_t *file = malloc(8 + size);
        FUZZ_CHECK(file != NULL, "malloc");
        for (int i = 0; i < 8; i++) file[i] = (uint8_t)(hlen >> (8 * i));
        memcpy(file + 8, data, (size_t)hlen);
        if (dlen) memcpy(file + 8 + hlen, nul + 1, dlen);
        check_file(file, 8 + (size_t)hlen + dlen);
        free(file);
    }
    return 0;
}
