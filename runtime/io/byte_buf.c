/* byte_buf.c — see byte_buf.h. */
#include "byte_buf.h"

#include <string.h>

#include "alloc.h"

void buf_put(tlm_byte_buf *b, const void *src, size_t n) {
    if (b->oom) return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) { b->oom = true; return; }
            cap *= 2;
        }
        uint8_t *grown = tlm_realloc(b->p, cap);
        if (!grown) { b->oom = true; return; }
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}
