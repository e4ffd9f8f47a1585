/*
 * tool_tlm_restamp FILE.tlm — recomputes every checksum of a .tlm file in
 * place (each tensor's, the metadata's, the tokenizer's, the directory's, the
 * whole file's, the header's; layout in runtime/io/tlm_format.h), so that a test
 * can change bytes inside it (a scale, a metadata value) and reach the checks
 * that come after the checksums. The file must be well-formed apart from
 * the changed bytes; exit status 1 otherwise.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "tlm_format.h"

static int fail(const char *path, const char *what) {
    fprintf(stderr, "tool_tlm_restamp: %s: %s\n", path, what);
    return 1;
}

/* [offset, offset + bytes) lies inside size bytes */
static int inside(uint64_t offset, uint64_t bytes, uint64_t size) {
    return offset <= size && bytes <= size - offset;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: tool_tlm_restamp FILE.tlm\n");
        return 2;
    }
    const char *path = argv[1];
    FILE *f = fopen(path, "r+b");
    if (!f) return fail(path, "cannot open");
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    if (end < TLM_HEADER_BYTES) return fail(path, "shorter than a header");
    const uint64_t size = (uint64_t)end;
    uint8_t *b = malloc(size);
    rewind(f);
    if (!b || fread(b, 1, size, f) != size) return fail(path, "cannot read");
    tlm_file_header h;
    memcpy(&h, b, sizeof h);
    const uint64_t dir_bytes = (uint64_t)h.n_tensors * sizeof(tlm_tensor_entry);
    if (memcmp(h.magic, TLM_MAGIC, TLM_MAGIC_BYTES) != 0 || h.file_bytes != size ||
        !inside(h.meta_offset, h.meta_bytes, size) || !inside(h.tok_offset, h.tok_bytes, size) ||
        !inside(h.dir_offset, dir_bytes, size) || !inside(h.data_offset, h.data_bytes, size))
        return fail(path, "not a well-formed .tlm file");
    for (uint32_t i = 0; i < h.n_tensors; i++) {
        tlm_tensor_entry e;
        memcpy(&e, b + h.dir_offset + (uint64_t)i * sizeof e, sizeof e);
        if (!inside(e.offset, e.bytes, h.data_bytes)) return fail(path, "a tensor lies outside the data");
        e.checksum = XXH3_64bits(b + h.data_offset + e.offset, (size_t)e.bytes);
        memcpy(b + h.dir_offset + (uint64_t)i * sizeof e, &e, sizeof e);
    }
    h.meta_checksum = XXH3_64bits(b + h.meta_offset, (size_t)h.meta_bytes);
    h.tok_checksum = XXH3_64bits(b + h.tok_offset, (size_t)h.tok_bytes);
    h.dir_checksum = XXH3_64bits(b + h.dir_offset, (size_t)dir_bytes);
    h.file_checksum = XXH3_64bits(b + TLM_HEADER_BYTES, (size_t)(size - TLM_HEADER_BYTES));
    memcpy(b, &h, sizeof h);
    h.header_checksum = XXH3_64bits(b, offsetof(tlm_file_header, header_checksum));
    memcpy(b, &h, sizeof h);
    rewind(f);
    if (fwrite(b, 1, size, f) != size || fclose(f) != 0) return fail(path, "cannot write");
    free(b);
    return 0;
}
