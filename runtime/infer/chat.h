/*
 * chat.h — chat templates rendered by hand (no Jinja engine).
 *
 * A model's Jinja chat template is recognised by the markers it contains and
 * rendered by the matching hand-written function, byte for byte as Hugging
 * Face's renderer (Jinja with trim_blocks and lstrip_blocks) would render the
 * usual template of that family. tlm_chat_render (trimlm.h) is a thin wrapper
 * that supplies the model's template and BOS/EOS texts.
 */
#ifndef TLM_CHAT_H
#define TLM_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "trimlm.h"

typedef enum tlm_chat_style {
    TLM_CHAT_CHATML = 0,  /* <|im_start|>role\n...<|im_end|>\n (SmolLM2, Qwen2) */
    TLM_CHAT_LLAMA3 = 1,  /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    TLM_CHAT_LLAMA2 = 2,  /* <s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] */
    TLM_CHAT_MISTRAL = 3, /* <s>[INST] ... [/INST]...</s> */
    TLM_CHAT_ZEPHYR = 4,  /* <|user|>\n...</s>\n (Zephyr, TinyLlama chat) */
    TLM_CHAT_GEMMA = 5,   /* <start_of_turn>user\n...<end_of_turn>\n */
} tlm_chat_style;

/* The style of a template text; *recognised is false for NULL or a template
 * with none of the known markers (it then renders as plain ChatML). */
tlm_chat_style chat_detect_style(const char *tmpl, bool *recognised);

const char *chat_style_name(tlm_chat_style s);

/* Renders msgs as `tmpl` would. bos/eos are the texts the template's
 * bos_token / eos_token variables hold ("" when the model has none). Returns
 * a tlm_malloc'd string, or NULL with err set (e.g. roles that the template
 * itself rejects, such as a system message for Mistral). */
char *chat_render_template(const char *tmpl, const char *bos, const char *eos,
                           const tlm_chat_message *msgs, size_t n, bool add_generation_prompt,
                           tlm_error *err);

/* The same, also giving the byte ranges of the messages' own text in it
 * ([spans[2i], spans[2i+1]) for i < *n_spans, ascending; tlm_malloc'd, NULL
 * when there are none): what tlm_chat_tokenize reads as plain text. */
char *chat_render_template_spans(const char *tmpl, const char *bos, const char *eos,
                                 const tlm_chat_message *msgs, size_t n, bool add_generation_prompt,
                                 size_t **spans, size_t *n_spans, tlm_error *err);

#endif
