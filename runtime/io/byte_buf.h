/* byte_buf.h — a growable byte buffer for images built in memory (the GGUF
 * header and tokenizer key-values of the writers). Appends never fail one
 * by one: the first allocation failure sets oom and later appends are
 * ignored, so a whole image is built and then checked once. */
#ifndef TLM_BYTE_BUF_H
#define TLM_BYTE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tlm_byte_buf {
    uint8_t *p; /* tlm_malloc'd; the caller frees it with tlm_free */
    size_t len, cap;
    bool oom;
} tlm_byte_buf;

/* Appends n bytes of src. */
void buf_put(tlm_byte_buf *b, const void *src, size_t n);

/* Values in the host's byte order (little-endian on every supported target). */
static inline void buf_u32(tlm_byte_buf *b, uint32_t v) { buf_put(b, &v, 4); }
static inline void buf_u64(tlm_byte_buf *b, uint64_t v) { buf_put(b, &v, 8); }

/* A GGUF string: u64 length, then the bytes (no terminator). */
static inline void buf_str(tlm_byte_buf *b, const char *s, size_t n) {
    buf_u64(b, n);
    buf_put(b, s, n);
}

#endif
