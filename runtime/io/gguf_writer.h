/*
 * gguf_writer.h — exporting a model as a GGUF v3 file that llama.cpp loads.
 *
 * Two forms:
 *   - every sublayer kept: a standard "llama" GGUF (the tensor names and keys
 *     of llama.cpp's convert_hf_to_gguf.py);
 *   - some sublayers removed: llama.cpp's "deci" architecture (DeciLM /
 *     Nemotron), whose per-layer arrays deci.attention.head_count,
 *     deci.attention.head_count_kv and deci.feed_forward_length describe each
 *     layer. A layer without attention has head counts 0 and no attention
 *     tensors; a layer without MLP has feed_forward_length 0 and no MLP
 *     tensors when its attention is removed too. llama.cpp's deci graph drops
 *     a layer's attention output when its MLP width is 0 (it skips the
 *     residual update), so a layer that keeps attention but lost its MLP gets
 *     a placeholder MLP of width 32 whose weights are exactly zero (adding
 *     nothing); the bool array trimlm.removed_mlp names those layers, and
 *     trimlm's own loader skips them. llama.cpp reads the head size from
 *     layer 0, so layer 0's attention cannot be removed in this form.
 *
 * Q/K rows are written in GGUF's adjacent-pair RoPE layout (llama and deci
 * both use it): a model stored with rotate-half RoPE (Hugging Face, qwen2) is
 * permuted on the way, as convert_hf_to_gguf.py does. Matrices are F32, F16,
 * BF16, Q8_0 or Q4_0 by the same rules as the .tlm writer (--type,
 * --keep-wide; vectors F32; int4 keeps token_embd/output int8); quantized
 * matrices of a .tlm source are unpacked, not re-quantized.
 */
#ifndef TLM_GGUF_WRITER_H
#define TLM_GGUF_WRITER_H

#include "byte_buf.h"
#include "gguf.h"
#include "tlm_format.h"

#define TLM_GGUF_PLACEHOLDER_FF 32 /* width of the zero MLP standing for a removed one */

/* Writes m (minus the sublayers o->drop names) to dst as
 * GGUF, through a temporary file next to it, fsync and rename; on failure or
 * cancellation nothing is left behind. o->tokenizer must be a "gguf-kv" blob
 * (a GGUF or .tlm-from-GGUF source): its tokenizer.* keys are copied. */
tlm_status write_gguf_file(const struct tlm_model *m, const char *dst, const tlm_write_options *o,
                          tlm_error *err);

/* Appends a key-value of a parsed GGUF to b in GGUF encoding, as it is; false
 * (and nothing appended) for arrays of arrays, which no tokenizer key uses. */
bool gguf_put_kv(tlm_byte_buf *b, const gguf_kv *kv);

#endif
