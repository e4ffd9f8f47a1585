/*
 * tokenizer.h — BPE tokenizers of the llama family.
 *
 *  - byte-level BPE (GPT-2 style: SmolLM2, Llama 3, Qwen2): a pre-tokenizer
 *    regex splits the text, bytes map to printable code points, merges apply
 *    by rank;
 *  - SentencePiece-style BPE (Llama 2, TinyLlama, Mistral): spaces become
 *    U+2581, an optional leading U+2581, merges by score (GGUF) or rank
 *    (tokenizer.json), unknown bytes fall back to <0xXX> tokens.
 * Special and added tokens are matched in the text first when parse_special.
 */
#ifndef TLM_TOKENIZER_H
#define TLM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "trimlm.h"

typedef struct tlm_tokenizer tlm_tokenizer;

typedef enum tlm_tok_kind {
    TLM_TOK_BYTE_BPE = 1, /* GPT-2 style byte-level BPE */
    TLM_TOK_SPM_BPE = 2,  /* SentencePiece-style BPE with byte fallback */
} tlm_tok_kind;

/* From GGUF metadata (tokenizer.ggml.*). */
tlm_tokenizer *tokenizer_from_gguf(const gguf_file *f, tlm_error *err);
/* From a Hugging Face tokenizer.json; tokenizer_config.json (may be NULL or
 * absent) supplies add_bos and the chat template. */
tlm_tokenizer *tokenizer_from_hf(const char *tokenizer_json_path,
                                 const char *tokenizer_config_path, tlm_error *err);
/* The same from the texts of tokenizer.json and tokenizer_config.json held
 * in memory (config may be NULL); name stands for them in messages. */
tlm_tokenizer *tokenizer_from_hf_memory(const char *tokenizer_json, size_t json_len,
                                        const char *config_json, size_t config_len,
                                        const char *name, tlm_error *err);
void tokenizer_free(tlm_tokenizer *t);

tlm_tok_kind tokenizer_kind(const tlm_tokenizer *t);
int32_t tokenizer_n_vocab(const tlm_tokenizer *t);
int32_t tokenizer_bos(const tlm_tokenizer *t); /* -1 when none */
int32_t tokenizer_eos(const tlm_tokenizer *t);
bool tokenizer_adds_bos(const tlm_tokenizer *t);
bool tokenizer_is_eog(const tlm_tokenizer *t, int32_t id);
bool tokenizer_is_special(const tlm_tokenizer *t, int32_t id);
/* Chat template from tokenizer_config.json (HF); NULL otherwise. */
const char *tokenizer_chat_template(const tlm_tokenizer *t);

/* Encodes text (any bytes; invalid UTF-8 is replaced by U+FFFD). Writes up to
 * cap ids to out and returns the total count needed, or -1 with err set. */
int32_t tokenizer_encode(const tlm_tokenizer *t, const char *text, size_t len, bool add_bos,
                         bool parse_special, int32_t *out, int32_t cap, tlm_error *err);

/* The same with special tokens parsed everywhere except in the byte ranges
 * [plain[2i], plain[2i+1]) (ascending, not overlapping), which are read as
 * plain text, and no special token may reach into one: a chat template's
 * markup is special, the messages in it are not. text must be valid UTF-8
 * (the ranges are offsets into it; TLM_ERR_ARG otherwise). */
int32_t tokenizer_encode_spans(const tlm_tokenizer *t, const char *text, size_t len, bool add_bos,
                               const size_t *plain, size_t n_plain, int32_t *out, int32_t cap,
                               tlm_error *err);

/* text[0..len) with every ill-formed UTF-8 sequence replaced by U+FFFD as the
 * encoder does: *fixed = NULL when it is valid already, else a tlm_malloc'd
 * copy of *fixed_len bytes (plus a NUL). -1 when out of memory. */
int tokenizer_utf8_repair(const char *text, size_t len, char **fixed, size_t *fixed_len);

/* The raw bytes of one token (byte-level decoding undone, U+2581 -> ' ',
 * <0xXX> -> the byte). Special tokens give their text when render_special,
 * else "". Out-of-range ids give "". */
const char *tokenizer_token_bytes(const tlm_tokenizer *t, int32_t id, bool render_special,
                                  size_t *len);
/* The token's string as stored in the vocabulary. */
const char *tokenizer_token_text(const tlm_tokenizer *t, int32_t id, size_t *len);

/* Streaming repair of detokenized bytes: byte-fallback tokens can produce
 * any bytes, and one character can span tokens. Appends to out (cap bytes)
 * what in[0..len) completes, holding an unfinished sequence back in
 * pending[0..4) / *n_pending until the next call; what is not well-formed
 * UTF-8 becomes U+FFFD, one per maximal ill-formed part (Unicode's
 * recommended practice, as Python's errors="replace"). Returns the bytes
 * written. The flush replaces a sequence still held back. */
size_t tokenizer_utf8_push(unsigned char *pending, int *n_pending, const char *in, size_t len,
                           char *out, size_t cap);
size_t tokenizer_utf8_flush(int *n_pending, char *out, size_t cap);

#endif
