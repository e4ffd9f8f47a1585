/*
 * tokenizer_hf.c — loading a Hugging Face tokenizer.json (model type BPE)
 * and, optionally, its tokenizer_config.json.
 *
 * Supported: model.vocab + model.merges ("a b" strings or [a, b] pairs),
 * unk_token, byte_fallback, fuse_unk, ignore_merges; added_tokens (special or
 * not); normalizers Sequence / Prepend / Replace(String) / NFC (NFC is taken
 * as already satisfied); pre_tokenizers Sequence / Split / Digits / ByteLevel
 * / Metaspace; post_processor TemplateProcessing (to learn whether BOS is
 * prepended). A ByteLevel pre-tokenizer or decoder makes the tokenizer
 * byte-level; otherwise it is SentencePiece-style. Normalizer and
 * pre-tokenizer strings and added tokens must be valid UTF-8.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "alloc.h"
#include "error.h"
#include "fileio.h"
#include "tokenizer_internal.h"

#define HF_MAX_JSON_BYTES ((size_t)1 << 30)

/* ------------------------------------------------------ file and JSON access */

static cJSON *parse_json(const char *path, const char *buf, size_t len, tlm_error *err) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, false);
    if (!root) {
        size_t at = end && end >= buf ? (size_t)(end - buf) : 0;
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: not valid JSON (error near byte %zu)", path, at);
    }
    return root;
}

static const cJSON *get(const cJSON *obj, const char *key) {
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static bool get_bool(const cJSON *obj, const char *key, bool dflt) {
    const cJSON *v = get(obj, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static const char *get_str(const cJSON *obj, const char *key) {
    const cJSON *v = get(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* An integer-valued JSON number in [0, limit). */
static bool json_id(const cJSON *v, int64_t limit, int32_t *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d < (double)limit) || d != (double)(int64_t)d) return false;
    *out = (int32_t)d;
    return true;
}

/* ------------------------------------------------------ normalizer / pre-tokenizer */

/* The strings that the pre-tokenizer inserts into the text or looks for in
 * it must be valid UTF-8: its regexes rely on every piece being so. Hugging
 * Face's tokenizers requires it of the whole file; cJSON takes any bytes. */
static int check_utf8(const char *s, const char *what, const char *path, tlm_error *err) {
    size_t n = strlen(s), valid = tok_utf8_valid_prefix(s, n);
    if (valid == n) return 0;
    return tlm_seterr(err, TLM_ERR_FORMAT, "%s: %s is not valid UTF-8 (bad byte 0x%02X at offset %zu)",
                      path, what, (unsigned)(unsigned char)s[valid], valid);
}

static int add_normalizer(tlm_tokenizer *t, const cJSON *n, const char *path, tlm_error *err) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *type = get_str(n, "type");
    if (!type) return tlm_seterr(err, TLM_ERR_FORMAT, "%s: normalizer has no \"type\"", path);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = get(n, "normalizers"), *it;
        if (!cJSON_IsArray(list))
            return tlm_seterr(err, TLM_ERR_FORMAT, "%s: normalizer Sequence has no \"normalizers\" array", path);
        cJSON_ArrayForEach(it, list) {
            int rc = add_normalizer(t, it, path, err);
            if (rc) return rc;
        }
        return 0;
    }
    if (strcmp(type, "Prepend") == 0) {
        const char *s = get_str(n, "prepend");
        if (!s) return tlm_seterr(err, TLM_ERR_FORMAT, "%s: Prepend normalizer has no \"prepend\" string", path);
        if (check_utf8(s, "Prepend normalizer's \"prepend\"", path, err)) return TLM_ERR_FORMAT;
        return tok_pretok_add_prepend(&t->pretok, s, strlen(s), false, false, err);
    }
    if (strcmp(type, "Replace") == 0) {
        const char *from = get_str(get(n, "pattern"), "String"), *to = get_str(n, "content");
        if (!from || !to)
            return tlm_seterr(err, TLM_ERR_UNSUPPORTED,
                              "%s: only Replace normalizers with a \"String\" pattern and \"content\" are supported", path);
        if (check_utf8(from, "Replace normalizer's \"pattern\"", path, err) ||
            check_utf8(to, "Replace normalizer's \"content\"", path, err))
            return TLM_ERR_FORMAT;
        return tok_pretok_add_replace(&t->pretok, from, strlen(from), to, strlen(to), err);
    }
    if (strcmp(type, "NFC") == 0) return 0; /* text is assumed to be NFC already */
    return tlm_seterr(err, TLM_ERR_UNSUPPORTED, "%s: normalizer type \"%s\" is not supported", path, type);
}

static int split_behavior(const char *name, tok_split_behavior *out) {
    static const struct { const char *name; tok_split_behavior b; } map[] = {
        {"Isolated", TOK_SPLIT_ISOLATED}, {"Removed", TOK_SPLIT_REMOVED},
        {"MergedWithPrevious", TOK_SPLIT_MERGED_PREV}, {"MergedWithNext", TOK_SPLIT_MERGED_NEXT},
        {"Contiguous", TOK_SPLIT_CONTIGUOUS},
    };
    for (size_t i = 0; name && i < sizeof map / sizeof map[0]; i++)
        if (strcmp(name, map[i].name) == 0) {
            *out = map[i].b;
            return 0;
        }
    return -1;
}

static int add_pre_tokenizer(tlm_tokenizer *t, const cJSON *p, const char *path, tlm_error *err) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *type = get_str(p, "type");
    if (!type) return tlm_seterr(err, TLM_ERR_FORMAT, "%s: pre_tokenizer has no \"type\"", path);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = get(p, "pretokenizers"), *it;
        if (!cJSON_IsArray(list))
            return tlm_seterr(err, TLM_ERR_FORMAT, "%s: pre_tokenizer Sequence has no \"pretokenizers\" array", path);
        cJSON_ArrayForEach(it, list) {
            int rc = add_pre_tokenizer(t, it, path, err);
            if (rc) return rc;
        }
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        const cJSON *pat = get(p, "pattern");
        const char *re = get_str(pat, "Regex"), *lit = get_str(pat, "String");
        tok_split_behavior b;
        if ((!re && !lit) || split_behavior(get_str(p, "behavior"), &b))
            return tlm_seterr(err, TLM_ERR_FORMAT, "%s: Split pre_tokenizer needs a pattern (Regex or String) and a known behavior", path);
        if (get_bool(p, "invert", false))
            return tlm_seterr(err, TLM_ERR_UNSUPPORTED, "%s: Split pre_tokenizer with invert=true is not supported", path);
        if (check_utf8(re ? re : lit, "Split pre_tokenizer's \"pattern\"", path, err)) return TLM_ERR_FORMAT;
        return tok_pretok_add_split(&t->pretok, re ? re : lit, strlen(re ? re : lit), re == NULL, b, path, err);
    }
    if (strcmp(type, "Digits") == 0) {
        bool single = get_bool(p, "individual_digits", false);
        const char *re = single ? TOK_RE_DIGIT : "\\p{N}+";
        return tok_pretok_add_split(&t->pretok, re, strlen(re), false, TOK_SPLIT_ISOLATED, path, err);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        if (get_bool(p, "add_prefix_space", true)) {
            int rc = tok_pretok_add_prepend(&t->pretok, " ", 1, true, false, err);
            if (rc) return rc;
        }
        if (get_bool(p, "use_regex", true))
            return tok_pretok_add_split(&t->pretok, TOK_RE_GPT2, strlen(TOK_RE_GPT2), false,
                                        TOK_SPLIT_ISOLATED, path, err);
        return 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *rep = get_str(p, "replacement");
        if (!rep) rep = "\xE2\x96\x81";
        if (check_utf8(rep, "Metaspace pre_tokenizer's \"replacement\"", path, err)) return TLM_ERR_FORMAT;
        const char *scheme = get_str(p, "prepend_scheme");
        bool prepend = scheme ? strcmp(scheme, "never") != 0 : get_bool(p, "add_prefix_space", true);
        bool first_only = scheme && strcmp(scheme, "first") == 0;
        int rc = tok_pretok_add_replace(&t->pretok, " ", 1, rep, strlen(rep), err);
        if (!rc && prepend) rc = tok_pretok_add_prepend(&t->pretok, rep, strlen(rep), true, first_only, err);
        if (!rc && get_bool(p, "split", true))
            rc = tok_pretok_add_split(&t->pretok, rep, strlen(rep), true, TOK_SPLIT_MERGED_NEXT, path, err);
        return rc;
    }
    return tlm_seterr(err, TLM_ERR_UNSUPPORTED, "%s: pre_tokenizer type \"%s\" is not supported", path, type);
}

static bool has_type(const cJSON *node, const char *list_key, const char *type) {
    if (!node || cJSON_IsNull(node)) return false;
    const char *ty = get_str(node, "type");
    if (ty && strcmp(ty, type) == 0) return true;
    const cJSON *list = get(node, list_key), *it;
    if (cJSON_IsArray(list))
        cJSON_ArrayForEach(it, list) if (has_type(it, list_key, type)) return true;
    return false;
}

/* ------------------------------------------------------ post-processor: BOS */

/* TemplateProcessing whose "single" template starts with a special token:
 * that token is prepended (BOS). Found directly or inside a Sequence. */
static void bos_from_post_processor(tlm_tokenizer *t, const cJSON *pp, bool *found_template) {
    if (!pp || cJSON_IsNull(pp)) return;
    const char *type = get_str(pp, "type");
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *it;
        cJSON_ArrayForEach(it, get(pp, "processors")) bos_from_post_processor(t, it, found_template);
        return;
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0) return;
    const cJSON *single = get(pp, "single");
    if (!cJSON_IsArray(single)) return;
    *found_template = true;
    const char *name = get_str(get(cJSON_GetArrayItem(single, 0), "SpecialToken"), "id");
    if (!name) return;
    int32_t id = -1;
    const cJSON *ids = get(get(get(pp, "special_tokens"), name), "ids");
    if (!json_id(cJSON_GetArrayItem(ids, 0), t->n_vocab, &id)) id = tok_vocab_find(t, name, strlen(name));
    if (id >= 0) {
        t->bos = id;
        t->add_bos = true;
    }
}

/* ------------------------------------------------------ tokenizer_config.json */

static const char *token_content(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    return get_str(v, "content");
}

static int apply_config_json(tlm_tokenizer *t, const char *path, const char *buf, size_t len,
                             tlm_error *err);

static int apply_config(tlm_tokenizer *t, const char *path, tlm_error *err) {
    /* an absent tokenizer_config.json is fine: it only adds settings */
    if (access(path, F_OK) != 0 && errno == ENOENT) return 0;
    size_t len;
    char *buf = tlm_read_file(path, HF_MAX_JSON_BYTES, &len, err);
    if (!buf) return -1;
    int rc = apply_config_json(t, path, buf, len, err);
    tlm_free(buf);
    return rc;
}

/* path names the JSON text buf[0..len) in messages. */
static int apply_config_json(tlm_tokenizer *t, const char *path, const char *buf, size_t len,
                             tlm_error *err) {
    cJSON *root = parse_json(path, buf, len, err);
    if (!root) return -1;
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = tlm_seterr(err, TLM_ERR_FORMAT, "%s: expected a JSON object", path);
        goto done;
    }
    const char *bos = token_content(get(root, "bos_token"));
    const char *eos = token_content(get(root, "eos_token"));
    if (bos) {
        int32_t id = tok_vocab_find(t, bos, strlen(bos));
        if (id >= 0) t->bos = id;
    }
    if (eos) {
        int32_t id = tok_vocab_find(t, eos, strlen(eos));
        if (id >= 0) {
            t->eos = id;
            t->attr[id] |= TOK_ATTR_EOG;
        }
    }
    const cJSON *add_bos = get(root, "add_bos_token");
    if (cJSON_IsBool(add_bos)) t->add_bos = cJSON_IsTrue(add_bos);
    const cJSON *tmpl = get(root, "chat_template");
    const char *text = cJSON_IsString(tmpl) ? tmpl->valuestring : NULL;
    if (cJSON_IsArray(tmpl)) { /* [{name, template}]: the "default" one, else the first */
        const cJSON *it;
        cJSON_ArrayForEach(it, tmpl) {
            const char *name = get_str(it, "name"), *body = get_str(it, "template");
            if (body && (!text || (name && strcmp(name, "default") == 0))) text = body;
        }
    }
    if (text && !(t->chat_template = tlm_strdup(text)))
        rc = tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the chat template", path);
done:
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------ vocabulary */

static int split_merge(const cJSON *m, const char **l, size_t *ln, const char **r, size_t *rn) {
    if (cJSON_IsString(m)) { /* "a b": exactly one space */
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' ')) return -1;
        *l = s;
        *ln = (size_t)(sp - s);
        *r = sp + 1;
        *rn = strlen(sp + 1);
        return 0;
    }
    if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2) {
        const cJSON *a = cJSON_GetArrayItem(m, 0), *b = cJSON_GetArrayItem(m, 1);
        if (!cJSON_IsString(a) || !cJSON_IsString(b)) return -1;
        *l = a->valuestring;
        *ln = strlen(a->valuestring);
        *r = b->valuestring;
        *rn = strlen(b->valuestring);
        return 0;
    }
    return -1;
}

static tlm_tokenizer *load_json(const char *path, cJSON *root, tlm_error *err) {
    if (!cJSON_IsObject(root)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: expected a JSON object at the top level", path);
        return NULL;
    }
    const cJSON *model = get(root, "model");
    if (!cJSON_IsObject(model)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: no \"model\" object", path);
        return NULL;
    }
    const char *mtype = get_str(model, "type");
    if (mtype && strcmp(mtype, "BPE") != 0) {
        tlm_seterr(err, TLM_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (only BPE)", path, mtype);
        return NULL;
    }
    const char *prefix = get_str(model, "continuing_subword_prefix");
    const char *suffix = get_str(model, "end_of_word_suffix");
    if ((prefix && *prefix) || (suffix && *suffix)) {
        tlm_seterr(err, TLM_ERR_UNSUPPORTED, "%s: BPE with a subword prefix/suffix is not supported", path);
        return NULL;
    }
    const cJSON *vocab = get(model, "vocab"), *merges = get(model, "merges");
    const cJSON *added = get(root, "added_tokens");
    if (!cJSON_IsObject(vocab)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: model has no \"vocab\" object", path);
        return NULL;
    }
    if (merges && !cJSON_IsArray(merges)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: model \"merges\" is not an array", path);
        return NULL;
    }
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: \"added_tokens\" is not an array", path);
        return NULL;
    }
    /* ids must be dense enough: the largest below the number of entries */
    int64_t n_entries = cJSON_GetArraySize(vocab) + (cJSON_IsArray(added) ? cJSON_GetArraySize(added) : 0);
    int64_t limit = n_entries < TOK_MAX_VOCAB ? n_entries : TOK_MAX_VOCAB;
    int32_t max_id = -1, id;
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        if (!json_id(it, limit, &id)) {
            tlm_seterr(err, TLM_ERR_FORMAT, "%s: vocab entry \"%.60s\" has an id that is not an integer in 0..%lld",
                       path, it->string, (long long)limit - 1);
            return NULL;
        }
        if (id > max_id) max_id = id;
    }
    if (cJSON_IsArray(added)) {
        cJSON_ArrayForEach(it, added) {
            if (!json_id(get(it, "id"), limit, &id) || !get_str(it, "content")) {
                tlm_seterr(err, TLM_ERR_FORMAT, "%s: an added_tokens entry lacks a valid \"id\" (0..%lld) or \"content\"",
                           path, (long long)limit - 1);
                return NULL;
            }
            /* matched in the text: see check_utf8() */
            char what[64];
            snprintf(what, sizeof what, "the \"content\" of added token %ld", (long)id);
            if (check_utf8(get_str(it, "content"), what, path, err)) return NULL;
            if (id > max_id) max_id = id;
        }
    }
    if (max_id < 0) {
        tlm_seterr(err, TLM_ERR_FORMAT, "%s: the vocabulary is empty", path);
        return NULL;
    }

    bool byte_level = has_type(get(root, "pre_tokenizer"), "pretokenizers", "ByteLevel") ||
                      has_type(get(root, "decoder"), "decoders", "ByteLevel");
    tok_builder b;
    if (tok_builder_init(&b, byte_level ? TLM_TOK_BYTE_BPE : TLM_TOK_SPM_BPE, max_id + 1, path, err))
        return NULL;
    tlm_tokenizer *t = b.t;
    cJSON_ArrayForEach(it, vocab) {
        json_id(it, limit, &id);
        if (tok_strtab_set(&t->text, id, it->string, strlen(it->string))) goto oom;
    }
    if (cJSON_IsArray(added)) {
        cJSON_ArrayForEach(it, added) {
            json_id(get(it, "id"), limit, &id);
            const char *content = get_str(it, "content");
            if (tok_strtab_set(&t->text, id, content, strlen(content))) goto oom;
            t->attr[id] = get_bool(it, "special", false) ? TOK_ATTR_CONTROL : TOK_ATTR_USER;
            if (get_bool(it, "lstrip", false)) t->attr[id] |= TOK_ATTR_LSTRIP;
            if (get_bool(it, "rstrip", false)) t->attr[id] |= TOK_ATTR_RSTRIP;
        }
    }
    size_t rank = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *l, *r;
        size_t ln, rn;
        if (split_merge(it, &l, &ln, &r, &rn)) {
            tlm_seterr(err, TLM_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", path, rank);
            goto fail;
        }
        if (tok_builder_add_merge(&b, l, ln, r, rn, err)) goto fail;
        rank++;
    }
    t->byte_fallback = get_bool(model, "byte_fallback", false);
    t->fuse_unk = get_bool(model, "fuse_unk", false);
    t->ignore_merges = get_bool(model, "ignore_merges", false);

    if (add_normalizer(t, get(root, "normalizer"), path, err)) goto fail;
    if (add_pre_tokenizer(t, get(root, "pre_tokenizer"), path, err)) goto fail;

    t = tok_builder_finish(&b, err); /* builds the index the lookups below need */
    if (!t) return NULL;
    const char *unk = get_str(model, "unk_token");
    if (unk) {
        t->unk = tok_vocab_find(t, unk, strlen(unk));
        if (t->unk >= 0) t->attr[t->unk] |= TOK_ATTR_UNKNOWN;
    }
    bool found_template = false;
    bos_from_post_processor(t, get(root, "post_processor"), &found_template);
    return t;
oom:
    tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for the vocabulary", path);
fail:
    tok_builder_abort(&b);
    return NULL;
}

/* Without tokenizer_config.json: the first end-of-text token the vocabulary has. */
static void guess_eos(tlm_tokenizer *t) {
    static const char *const names[] = {"</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>"};
    for (size_t i = 0; t->eos < 0 && i < sizeof names / sizeof names[0]; i++)
        t->eos = tok_vocab_find(t, names[i], strlen(names[i]));
    if (t->eos >= 0) t->attr[t->eos] |= TOK_ATTR_EOG;
}

tlm_tokenizer *tokenizer_from_hf(const char *tokenizer_json_path,
                                 const char *tokenizer_config_path, tlm_error *err) {
    if (!tokenizer_json_path) {
        tlm_seterr(err, TLM_ERR_ARG, "tokenizer_from_hf: no tokenizer.json path given");
        return NULL;
    }
    size_t len;
    char *buf = tlm_read_file(tokenizer_json_path, HF_MAX_JSON_BYTES, &len, err);
    if (!buf) return NULL;
    cJSON *root = parse_json(tokenizer_json_path, buf, len, err);
    tlm_free(buf);
    if (!root) return NULL;
    tlm_tokenizer *t = load_json(tokenizer_json_path, root, err);
    cJSON_Delete(root);
    if (!t) return NULL;
    if (tokenizer_config_path && apply_config(t, tokenizer_config_path, err)) {
        tokenizer_free(t);
        return NULL;
    }
    guess_eos(t);
    return t;
}

tlm_tokenizer *tokenizer_from_hf_memory(const char *tokenizer_json, size_t json_len,
                                        const char *config_json, size_t config_len,
                                        const char *name, tlm_error *err) {
    if (!name) name = "tokenizer.json";
    if (!tokenizer_json) {
        tlm_seterr(err, TLM_ERR_ARG, "%s: no tokenizer.json given", name);
        return NULL;
    }
    cJSON *root = parse_json(name, tokenizer_json, json_len, err);
    if (!root) return NULL;
    tlm_tokenizer *t = load_json(name, root, err);
    cJSON_Delete(root);
    if (!t) return NULL;
    if (config_json && apply_config_json(t, name, config_json, config_len, err)) {
        tokenizer_free(t);
        return NULL;
    }
    guess_eos(t);
    return t;
}
