/* type_rules.c — storage types of a conversion's tensors (type_rules.h). */
#include "type_rules.h"

#include <string.h>

#include "alloc.h"
#include "error.h"
#include "qformat.h"
#include "tlm_format.h"

const char *tensor_role(const char *name) {
    if (strncmp(name, "blk.", 4) != 0) return name;
    const char *dot = strchr(name + 4, '.');
    return dot ? dot + 1 : name;
}

/* pat names the tensor in full, or by role, either with or without ".weight". */
static bool pattern_matches(const char *pat, const char *name) {
    const char *role = tensor_role(name);
    size_t lp = strlen(pat);
    const char *cands[2] = {name, role};
    for (int i = 0; i < 2; i++) {
        if (strcmp(cands[i], pat) == 0) return true;
        if (strncmp(cands[i], pat, lp) == 0 && strcmp(cands[i] + lp, ".weight") == 0) return true;
    }
    return false;
}

tlm_status type_rules_init(tlm_type_rules *r, uint32_t dtype, const char *keep_wide,
                               const char *dst, tlm_error *err) {
    memset(r, 0, sizeof *r);
    r->dtype = dtype;
    if (!keep_wide || !*keep_wide) return TLM_OK;
    int32_t n = 1;
    for (const char *c = keep_wide; *c; c++) n += *c == ',';
    r->patterns = tlm_calloc((size_t)n, sizeof *r->patterns);
    r->pattern_used = tlm_calloc((size_t)n, sizeof *r->pattern_used);
    if (!r->patterns || !r->pattern_used)
        return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dst);
    for (const char *c = keep_wide;;) {
        const char *end = strchr(c, ',');
        size_t len = end ? (size_t)(end - c) : strlen(c);
        while (len && *c == ' ') { c++; len--; }
        while (len && c[len - 1] == ' ') len--;
        if (len) {
            if (!(r->patterns[r->n_patterns] = tlm_strndup(c, len)))
                return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", dst);
            r->n_patterns++;
        }
        if (!end) break;
        c = end + 1;
    }
    return TLM_OK;
}

uint32_t type_rules_choose(tlm_type_rules *r, const char *name, uint32_t n_dims,
                               uint64_t cols) {
    bool wide = n_dims == 1; /* norms and biases: tiny, and precision-critical */
    for (int32_t i = 0; i < r->n_patterns; i++)
        if (pattern_matches(r->patterns[i], name)) {
            r->pattern_used[i] = true;
            wide = true;
        }
    uint32_t dtype = r->dtype;
    if (wide) return TLM_DTYPE_F32;
    if (!tlm_dtype_is_quant(dtype)) return dtype;
    /* the packed layouts need whole groups of 32 inputs; a tile must fit
     * one conversion chunk */
    size_t tile = tlm_qpacked_tile_bytes((tlm_qtype)dtype, (int64_t)cols);
    if (cols % TLM_QGROUP != 0 || tile == 0 || tile > TLM_CONVERT_CHUNK_BYTES) return TLM_DTYPE_F32;
    /* The embedding / output matrix is the most sensitive one (every logit
     * goes through it): int4 files keep it int8, as llama.cpp's Q4_0 files
     * keep it at Q6_K or Q8_0. */
    if (dtype == TLM_DTYPE_Q4_G32 &&
        (strcmp(name, "token_embd.weight") == 0 || strcmp(name, "output.weight") == 0))
        return TLM_DTYPE_Q8_G32;
    return dtype;
}

tlm_status type_rules_check_used(const tlm_type_rules *r, tlm_error *err) {
    for (int32_t i = 0; i < r->n_patterns; i++)
        if (!r->pattern_used[i])
            return tlm_seterr(err, TLM_ERR_ARG,
                              "--keep-wide: no tensor of the model matches '%s' (names such as "
                              "token_embd, output, attn_q, ffn_down or blk.0.attn_q.weight)",
                              r->patterns[i]);
    return TLM_OK;
}

void type_rules_free(tlm_type_rules *r) {
    for (int32_t i = 0; i < r->n_patterns; i++) tlm_free(r->patterns[i]);
    tlm_free(r->patterns);
    tlm_free(r->pattern_used);
    memset(r, 0, sizeof *r);
}
