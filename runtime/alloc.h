/* alloc.h — every allocation of the runtime goes through mimalloc, except in
 * sanitizer builds (TLM_USE_LIBC_MALLOC, set by the CMake option
 * TLM_SANITIZE): there the libc allocator is used so that AddressSanitizer
 * sees every block (mimalloc carves its own pages, hiding overflows, leaks
 * and uses after free). */
#ifndef TLM_ALLOC_H
#define TLM_ALLOC_H

#include <stddef.h>

#define TLM_ALIGN 64 /* cache line; also the widest vector load */

#ifdef TLM_USE_LIBC_MALLOC

#include <stdlib.h>
#include <string.h>

/* mimalloc's semantics are kept where libc differs: a 0-byte request still
 * returns a block, realloc(p, 0) does not free p, and aligned blocks have
 * their exact size (posix_memalign, unlike aligned_alloc, needs no rounding,
 * so ASan still catches an overflow by one byte). */
static inline void *tlm_malloc(size_t n) { return malloc(n ? n : 1); }
static inline void *tlm_calloc(size_t count, size_t size) {
    return count && size ? calloc(count, size) : malloc(1);
}
static inline void *tlm_realloc(void *p, size_t n) { return realloc(p, n ? n : 1); }
static inline void *tlm_malloc_aligned(size_t n) {
    void *p = NULL;
    return posix_memalign(&p, TLM_ALIGN, n ? n : 1) == 0 ? p : NULL;
}
static inline void *tlm_calloc_aligned(size_t count, size_t size) {
    size_t n;
    if (__builtin_mul_overflow(count, size, &n)) return NULL;
    void *p = tlm_malloc_aligned(n);
    if (p) memset(p, 0, n);
    return p;
}
static inline char *tlm_strdup(const char *s) { return strdup(s); }
static inline char *tlm_strndup(const char *s, size_t n) { return strndup(s, n); }
static inline void tlm_free(void *p) { free(p); }

#else

#include <mimalloc.h>

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

#endif /* TLM_USE_LIBC_MALLOC */

/* Overflow-checked a*b and a+b for sizes that come from files. */
static inline int tlm_mul_overflow(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
static inline int tlm_add_overflow(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out);
}

#endif
