/* drop.h — the drop policies of runtime/compress/drop.c on plain score arrays, so that
 * they can be driven (and tested) without a calibration pass. */
#ifndef TLM_DROP_H
#define TLM_DROP_H

#include <stdbool.h>
#include <stdint.h>

#include "trimlm.h"

/* tlm_drop_select (trimlm.h) with the importances given directly: attn,
 * mlp, block are n_layer scores each (NaN: the sublayer is absent). */
tlm_status drop_select_scores(const float *attn, const float *mlp, const float *block,
                              const char *spec, int32_t n_layer, bool *drop_attn, bool *drop_mlp,
                              tlm_error *err);

#endif
