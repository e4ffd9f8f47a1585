/*
 * type_rules.h — which storage type each tensor of a conversion gets. One set
 * of rules serves the .tlm writer and the GGUF writer, so that both files of
 * one conversion hold the same values.
 *
 * Vectors (norms, biases) and tensors named by --keep-wide stay f32; matrices
 * get the requested type; a quantized type needs whole groups of 32 inputs
 * and a 16-row tile of at most TLM_CONVERT_CHUNK_BYTES (else f32); with int4
 * the token embedding and output matrices are stored int8.
 */
#ifndef TLM_TYPE_RULES_H
#define TLM_TYPE_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trimlm.h"

/* Converted rows per step, at most: the writers' buffer size. */
#define TLM_CONVERT_CHUNK_BYTES ((size_t)1 << 20)

typedef struct tlm_type_rules {
    uint32_t dtype;      /* tlm_format.h TLM_DTYPE_* of the matrices */
    char **patterns;     /* --keep-wide, one name per entry */
    bool *pattern_used;  /* per pattern: matched at least one tensor */
    int32_t n_patterns;
} tlm_type_rules;

/* keep_wide: comma-separated names (tlm_convert_params.keep_wide), or NULL.
 * dst names the output in an out-of-memory message. */
tlm_status type_rules_init(tlm_type_rules *r, uint32_t dtype, const char *keep_wide,
                               const char *dst, tlm_error *err);
/* The type of tensor name with n_dims dimensions and cols inputs; marks the
 * --keep-wide patterns it matches as used. */
uint32_t type_rules_choose(tlm_type_rules *r, const char *name, uint32_t n_dims,
                               uint64_t cols);
/* TLM_ERR_ARG naming the first --keep-wide pattern that matched no tensor. */
tlm_status type_rules_check_used(const tlm_type_rules *r, tlm_error *err);
void type_rules_free(tlm_type_rules *r);

/* The name without its "blk.N." prefix ("attn_q.weight"). */
const char *tensor_role(const char *name);

#endif
