/* alloc.h — every allocation of the runtime goes through mimalloc. */
#ifndef TLM_ALLOC_H
#define TLM_ALLOC_H

#include <mimalloc.h>
#include <stddef.h>

#define TLM_ALIGN 64 /* cache line; also the widest vector load */

static inline void *tlm_malloc(size_t n) { return mi_malloc(n); }
static inline void *tlm_calloc(size_t count, size_t size) { return mi_calloc(count, size); }
static inline void *tlm_realloc(void *p, size_t n) { return mi_realloc(p, n); }
static inline void *tlm_malloc_aligned(size_t n) { return mi_malloc_aligned(n, TLM_ALIGN); }
static inline void *tlm_calloc_aligned(size_t count, size_t size) {
    return mi_calloc_aligned(count, size, TLM_ALIGN);
}
static inline char *tlm_strdup(const char *s) { return mi_strdup(s); }
static inline char *tlm_strndup(const char *s, size_t n) { return mi_strndup(s, n); }
static inline void tlm_free(void *p) { mi_free(p); }

/* Overflow-checked a*b and a+b for sizes that come from files. */
static inline int tlm_mul_overflow(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline int tlm_add_overflow(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out);
}

#endif
