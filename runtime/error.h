/* error.h — filling a tlm_error (see trimlm.h). */
#ifndef TLM_ERROR_H
#define TLM_ERROR_H

#include "trimlm.h"

/* Sets err (if not NULL) to code and a printf-formatted message; returns code
 * so that callers can write `return tlm_seterr(err, TLM_ERR_IO, ...)`. */
tlm_status tlm_seterr(tlm_error *err, tlm_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline void tlm_clearerr(tlm_error *err) {
    if (err) { err->code = TLM_OK; err->msg[0] = '\0'; }
}

#endif
