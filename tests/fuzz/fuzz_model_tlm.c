/*
 * fuzz_model_tlm.c — trimlm's own model file (model_load_tlm(), layout in
 * runtime/io/tlm_format.h) on arbitrary bytes, then the checks every loaded
 * model gets (fuzz_model_checks.h).
 *
 * Every section of a .tlm file is covered by an XXH3 checksum, so nearly all
 * mutations would stop at the first checksum test. Each input therefore runs
 * twice: as is, and with every checksum whose section lies inside the input
 * recomputed, which lets the fuzzer reach the parsing behind them.
 */
#include <xxhash.h>

#include "fuzz_model_checks.h"
#include "tlm_format.h"

static bool section_inside(uint64_t offset, uint64_t bytes, size_t size) {
    return offset <= size && bytes <= size - offset;
}

/* Recomputes the checksums of a copy of the input (tlm_format.h). */
static void fix_checksums(uint8_t *f, size_t size) {
    tlm_file_header h;
    if (size < TLM_HEADER_BYTES || memcmp(f, TLM_MAGIC, TLM_MAGIC_BYTES) != 0) return;
    memcpy(&h, f, sizeof h);
    if (section_inside(h.meta_offset, h.meta_bytes, size))
        h.meta_checksum = XXH3_64bits(f + h.meta_offset, (size_t)h.meta_bytes);
    if (section_inside(h.tok_offset, h.tok_bytes, size))
        h.tok_checksum = XXH3_64bits(f + h.tok_offset, (size_t)h.tok_bytes);
    uint64_t dir_bytes = (uint64_t)h.n_tensors * sizeof(tlm_tensor_entry);
    if (section_inside(h.dir_offset, dir_bytes, size)) {
        /* and each tensor's own checksum, where its bytes are inside too */
        for (uint32_t i = 0; i < h.n_tensors; i++) {
            tlm_tensor_entry e;
            uint8_t *at = f + h.dir_offset + (size_t)i * sizeof e;
            memcpy(&e, at, sizeof e);
            if (h.data_offset <= size && e.offset <= size - h.data_offset &&
                section_inside(h.data_offset + e.offset, e.bytes, size)) {
                e.checksum = XXH3_64bits(f + h.data_offset + e.offset, (size_t)e.bytes);
                memcpy(at, &e, sizeof e);
            }
        }
        h.dir_checksum = XXH3_64bits(f + h.dir_offset, (size_t)dir_bytes);
    }
    if (h.file_bytes >= TLM_HEADER_BYTES && h.file_bytes <= size)
        h.file_checksum = XXH3_64bits(f + TLM_HEADER_BYTES, (size_t)h.file_bytes - TLM_HEADER_BYTES);
    memcpy(f, &h, sizeof h);
    h.header_checksum = XXH3_64bits(f, offsetof(tlm_file_header, header_checksum));
    memcpy(f, &h, sizeof h);
}

static void load(const uint8_t *data, size_t size) {
    char path[64];
    if (!fuzz_memfd_write(0, data, size, path)) return;
    tlm_error err;
    tlm_model *m = model_load_tlm(path, &err);
    if (!m) {
        FUZZ_CHECK_ERROR(err);
        return;
    }
    fuzz_exercise_model(m);
    tlm_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load(data, size);
    if (size < TLM_HEADER_BYTES || memcmp(data, TLM_MAGIC, TLM_MAGIC_BYTES) != 0) return 0;
    uint8_t *fixed = malloc(size);
    FUZZ_CHECK(fixed != NULL, "malloc");
    memcpy(fixed, data, size);
    fix_checksums(fixed, size);
    if (memcmp(fixed, data, size) != 0) load(fixed, size);
    free(fixed);
    return 0;
}
