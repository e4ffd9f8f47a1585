/*
 * fuzz_safetensors_index.c — st_open_dir() on a directory whose
 * model.safetensors.index.json is the fuzzer's input, next to two fixed
 * shards written at start-up:
 *   model-00001-of-00002.safetensors: "a" F32 [2], "b" F16 [2, 2]
 *   model-00002-of-00002.safetensors: "c" BF16 [3], "d" I64 [1]
 * An accepted index must give a set holding only those tensors, each in the
 * shard the index names.
 */
#include "fuzz_common.h"
#include "safetensors.h"

static const char *set_dir;

/* A safetensors file: 8-byte little-endian header length, header, data. */
static void write_shard(const char *name, const char *header, size_t data_bytes) {
    size_t hlen = strlen(header), size = 8 + hlen + data_bytes;
    uint8_t *file = calloc(1, size);
    if (!file) abort();
    for (int i = 0; i < 8; i++) file[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(file + 8, header, hlen);
    for (size_t i = 0; i < data_bytes; i++) file[8 + hlen + i] = (uint8_t)(i * 37 + 1);
    fuzz_tmpdir_write(name, file, size);
    free(file);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    write_shard("model-00001-of-00002.safetensors",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}",
                16);
    write_shard("model-00002-of-00002.safetensors",
                "{\"__metadata__\":{\"format\":\"pt\"},"
                "\"c\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                "\"d\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[6,14]}}",
                14);
    set_dir = fuzz_tmpdir();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!set_dir) LLVMFuzzerInitialize(NULL, NULL);
    fuzz_tmpdir_write("model.safetensors.index.json", data, size);
    tlm_error err;
    st_set *s = st_open_dir(set_dir, &err);
    if (!s) {
        FUZZ_CHECK_ERROR(err);
        return 0;
    }
    size_t n = st_n_tensors(s);
    FUZZ_CHECK(n >= 1 && n <= 4, "%zu tensors", n);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_tensor_at(s, i);
        FUZZ_CHECK(t && strlen(t->name) == 1 && t->name[0] >= 'a' && t->name[0] <= 'd',
                   "tensor %zu", i);
        FUZZ_CHECK(st_find(s, t->name) == t, "lookup of '%s'", t->name);
        float out[4];
        if (t->dtype != ST_OTHER)
            FUZZ_CHECK(st_to_f32(t, out, &err) == TLM_OK, "converting '%s'", t->name);
    }
    st_close(s);
    return 0;
}
