/*
 * tokenizer_gguf.c — loading a tokenizer from GGUF metadata (tokenizer.ggml.*).
 *
 *   model          "gpt2" (byte-level BPE) or "llama" (SentencePiece-style BPE)
 *   tokens         string[n]
 *   token_type     int32[n]: 1 normal, 2 unknown, 3 control, 4 user-defined,
 *                  5 unused, 6 byte (optional)
 *   scores         float32[n] (SentencePiece merge priority; optional)
 *   merges         string[m] "left right" in rank order (byte-level only)
 *   pre            pre-tokenizer name ("smollm", "llama-bpe", "qwen2", ...)
 *   bos/eos/unknown/eot/eom_token_id, add_bos_token, add_space_prefix
 *
 * A control, unknown or user-defined token is matched in the text to encode
 * only when its string is valid UTF-8. One that is not (no converter writes
 * such a token; byte tokens <0xXX> are ASCII and never matched as text) is
 * kept in the vocabulary, so it still decodes to its bytes, but is never
 * matched: it could only match by cutting a character of the text in half.
 */
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "tokenizer_internal.h"

/* ------------------------------------------------------ metadata access */

/* An array kv with n elements of elem_type; NULL with err set when present
 * but malformed, NULL with *absent when missing. */
static const gguf_kv *find_array(const gguf_file *f, const char *key, uint32_t elem_type,
                                 bool *absent, tlm_error *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    *absent = kv == NULL;
    if (!kv) return NULL;
    if (kv->type != GGUF_VT_ARRAY || kv->arr_type != elem_type ||
        (elem_type == GGUF_VT_STRING && !kv->strs) || (elem_type != GGUF_VT_STRING && !kv->data)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: metadata %s has the wrong type (expected an array of type %u)",
                   gguf_path(f), key, elem_type);
        return NULL;
    }
    return kv;
}

static int read_token_id(const gguf_file *f, const char *key, int32_t n_vocab, int32_t *out,
                         tlm_error *err) {
    int64_t v;
    if (!gguf_find_kv(f, key)) return 0;
    if (!gguf_get_i64(f, key, &v))
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: metadata %s is not an integer", gguf_path(f), key);
    if (v == -1) return 0; /* some converters write -1 for "none" */
    if (v < 0 || v >= n_vocab)
        return tlm_seterr(err, TLM_ERR_FORMAT, "%s: metadata %s = %lld is outside the vocabulary (0..%ld)",
                          gguf_path(f), key, (long long)v, (long)n_vocab - 1);
    *out = (int32_t)v;
    return 0;
}

/* ------------------------------------------------------ pre-tokenizer names */

static int set_byte_level_pretok(tlm_tokenizer *t, gguf_str pre, const char *path, tlm_error *err) {
    static const char *const digits_then_gpt2[] = {"smollm", "starcoder", "refact", "command-r",
                                                   "codeshell", "exaone", "minerva-7b"};
    static const char *const llama3[] = {"llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral"};
    static const char *const qwen2[] = {"qwen2", "deepseek-r1-qwen"};
    const char *re = TOK_RE_GPT2;
    bool digits_first = false;
    for (size_t i = 0; pre.ptr && i < sizeof digits_then_gpt2 / sizeof *digits_then_gpt2; i++)
        if (gguf_str_eq(pre, digits_then_gpt2[i])) digits_first = true;
    for (size_t i = 0; pre.ptr && i < sizeof llama3 / sizeof *llama3; i++)
        if (gguf_str_eq(pre, llama3[i])) {
            re = TOK_RE_LLAMA3;
            t->ignore_merges = true; /* as the Llama 3 tokenizer.json says */
        }
    for (size_t i = 0; pre.ptr && i < sizeof qwen2 / sizeof *qwen2; i++)
        if (gguf_str_eq(pre, qwen2[i])) re = TOK_RE_QWEN2;
    if (digits_first &&
        tok_pretok_add_split(&t->pretok, TOK_RE_DIGIT, strlen(TOK_RE_DIGIT), false, TOK_SPLIT_ISOLATED, path, err))
        return -1;
    return tok_pretok_add_split(&t->pretok, re, strlen(re), false, TOK_SPLIT_ISOLATED, path, err);
}

/* ------------------------------------------------------ loader */

static uint8_t attr_of_type(int32_t type) {
    switch (type) {
    case 2: return TOK_ATTR_UNKNOWN;
    case 3: return TOK_ATTR_CONTROL;
    case 4: return TOK_ATTR_USER;
    case 6: return TOK_ATTR_BYTE;
    default: return TOK_ATTR_NORMAL;
    }
}

tlm_tokenizer *tokenizer_from_gguf(const gguf_file *f, tlm_error *err) {
    if (!f) {
        tlm_seterr(err, TLM_ERR_ARG, "tokenizer_from_gguf: no file");
        return NULL;
    }
    const char *path = gguf_path(f);
    gguf_str model = {0}, pre = {0};
    if (!gguf_get_str(f, "tokenizer.ggml.model", &model)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: no tokenizer (metadata tokenizer.ggml.model is missing)", path);
        return NULL;
    }
    tlm_tok_kind kind;
    if (gguf_str_eq(model, "gpt2")) kind = TLM_TOK_BYTE_BPE;
    else if (gguf_str_eq(model, "llama")) kind = TLM_TOK_SPM_BPE;
    else {
        tlm_seterr(err, TLM_ERR_UNSUPPORTED, "%s: tokenizer model \"%.*s\" is not supported (gpt2 or llama)",
                   path, (int)(model.len > 40 ? 40 : model.len), model.ptr);
        return NULL;
    }
    bool absent;
    const gguf_kv *tokens = find_array(f, "tokenizer.ggml.tokens", GGUF_VT_STRING, &absent, err);
    if (!tokens) {
        if (absent) tlm_seterr(err, TLM_ERR_FORMAT, "%s: metadata tokenizer.ggml.tokens is missing", path);
        return NULL;
    }
    if (tokens->arr_n == 0 || tokens->arr_n > TOK_MAX_VOCAB) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: %llu tokens is out of range (1..%d)", path,
                   (unsigned long long)tokens->arr_n, TOK_MAX_VOCAB);
        return NULL;
    }
    int32_t n = (int32_t)tokens->arr_n;
    const gguf_kv *types = find_array(f, "tokenizer.ggml.token_type", GGUF_VT_INT32, &absent, err);
    if (!types && !absent) return NULL;
    const gguf_kv *scores = find_array(f, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, &absent, err);
    if (!scores && !absent) return NULL;
    const gguf_kv *merges = find_array(f, "tokenizer.ggml.merges", GGUF_VT_STRING, &absent, err);
    if (!merges && !absent) return NULL;
    if (kind == TLM_TOK_BYTE_BPE && !merges) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: byte-level tokenizer without tokenizer.ggml.merges", path);
        return NULL;
    }
    if ((types && types->arr_n != tokens->arr_n) || (scores && scores->arr_n != tokens->arr_n)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: tokenizer arrays disagree: %llu tokens, %llu types, %llu scores",
                   path, (unsigned long long)tokens->arr_n, (unsigned long long)(types ? types->arr_n : 0),
                   (unsigned long long)(scores ? scores->arr_n : 0));
        return NULL;
    }

    tok_builder b;
    if (tok_builder_init(&b, kind, n, path, err)) return NULL;
    b.later_duplicates_win = true;
    tlm_tokenizer *t = b.t;
    for (int32_t i = 0; i < n; i++) {
        gguf_str s = tokens->strs[i];
        if (s.len > TOK_MAX_TOKEN_LEN) {
            tlm_seterr(err, TLM_ERR_FORMAT, "%s: token %ld is %llu bytes long", path, (long)i,
                       (unsigned long long)s.len);
            goto fail;
        }
        if (tok_strtab_set(&t->text, i, s.ptr, (size_t)s.len)) goto oom;
        if (types) {
            int32_t ty;
            memcpy(&ty, types->data + (size_t)i * 4, 4);
            t->attr[i] = attr_of_type(ty);
        }
    }
    if (kind == TLM_TOK_SPM_BPE) {
        t->merge_by_score = true;
        t->score = tlm_calloc((size_t)n, sizeof *t->score);
        if (!t->score) goto oom;
        if (scores) memcpy(t->score, scores->data, (size_t)n * sizeof *t->score);
    }
    if (merges) {
        for (uint64_t i = 0; kind == TLM_TOK_BYTE_BPE && i < merges->arr_n; i++) {
            gguf_str m = merges->strs[i];
            const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', (size_t)m.len - 1) : NULL;
            if (!sp || m.len > 2 * TOK_MAX_TOKEN_LEN || memchr(m.ptr, '\0', (size_t)m.len)) {
                tlm_seterr(err, TLM_ERR_FORMAT, "%s: merge %llu is not \"left right\"", path,
                           (unsigned long long)i);
                goto fail;
            }
            size_t ln = (size_t)(sp - m.ptr);
            if (tok_builder_add_merge(&b, m.ptr, ln, sp + 1, (size_t)m.len - ln - 1, err)) goto fail;
        }
    }

    if (read_token_id(f, "tokenizer.ggml.bos_token_id", n, &t->bos, err) ||
        read_token_id(f, "tokenizer.ggml.eos_token_id", n, &t->eos, err) ||
        read_token_id(f, "tokenizer.ggml.unknown_token_id", n, &t->unk, err))
        goto fail;
    int32_t eot = -1, eom = -1;
    if (read_token_id(f, "tokenizer.ggml.eot_token_id", n, &eot, err) ||
        read_token_id(f, "tokenizer.ggml.eom_token_id", n, &eom, err))
        goto fail;
    if (eot >= 0) t->attr[eot] |= TOK_ATTR_EOG;
    if (eom >= 0) t->attr[eom] |= TOK_ATTR_EOG;

    bool flag;
    t->add_bos = kind == TLM_TOK_SPM_BPE;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &flag)) t->add_bos = flag;

    if (kind == TLM_TOK_SPM_BPE) {
        bool space_prefix = true;
        if (gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &flag)) space_prefix = flag;
        t->byte_fallback = true;
        if (tok_pretok_add_replace(&t->pretok, " ", 1, "\xE2\x96\x81", 3, err)) goto fail;
        if (space_prefix && tok_pretok_add_prepend(&t->pretok, "\xE2\x96\x81", 3, false, false, err)) goto fail;
    } else {
        gguf_get_str(f, "tokenizer.ggml.pre", &pre);
        if (set_byte_level_pretok(t, pre, path, err)) goto fail;
    }

    gguf_str tmpl;
    if (gguf_get_str(f, "tokenizer.chat_template", &tmpl)) {
        t->chat_template = tlm_strndup(tmpl.ptr, (size_t)tmpl.len);
        if (!t->chat_template) goto oom;
    }
    return tok_builder_finish(&b, err);
oom:
    tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the tokenizer", path);
fail:
    tok_builder_abort(&b);
    return NULL;
}
