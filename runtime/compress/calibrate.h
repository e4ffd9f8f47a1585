/* calibrate.h — internal: the calibration text compiled into the library. */
#ifndef TLM_CALIBRATE_H
#define TLM_CALIBRATE_H

#include <stddef.h>

/* An excerpt of the WikiText-2 validation split (data/calib/, see its
 * SOURCE.txt), embedded by data/calib/embed.cmake at build time. Not
 * NUL-terminated. */
extern const unsigned char tlm_calib_builtin_text[];
extern const size_t tlm_calib_builtin_text_len;

#endif
