/* error.c — status names and the error setter. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

const char *tlm_status_name(tlm_status s) {
    switch (s) {
    case TLM_OK: return "ok";
    case TLM_ERR_ARG: return "invalid argument";
    case TLM_ERR_IO: return "I/O error";
    case TLM_ERR_FORMAT: return "malformed input";
    case TLM_ERR_UNSUPPORTED: return "unsupported";
    case TLM_ERR_NOMEM: return "out of memory";
    case TLM_ERR_NETWORK: return "network error";
    case TLM_ERR_CONTEXT_FULL: return "context full";
    }
    return "unknown error";
}

tlm_status tlm_seterr(tlm_error *err, tlm_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}
