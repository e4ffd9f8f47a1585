/*
 * drop.c — choosing the sublayers to leave out of a converted model
 * (arXiv 2406.15786): attention, MLP, block and joint drop by count or by
 * score threshold, and explicit lists. Grammar in trimlm.h.
 *
 * Ranking: ascending importance; equal scores put the deeper layer first
 * (the paper finds deeper layers the more redundant), and for joint drop
 * attention before MLP in the same layer. Sublayers the source lacks (NaN
 * score) are never ranked.
 */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "drop.h"
#include "error.h"
#include "model.h"

typedef enum drop_kind { DROP_ATTN, DROP_MLP, DROP_BLOCK, DROP_JOINT } drop_kind;

static const char *const kind_names[] = {"attn", "mlp", "block", "joint"};
static const char *const kind_nouns[] = {"attention sublayers", "MLP sublayers", "blocks",
                                         "sublayers (attention and MLP)"};

typedef struct ranked {
    float score;
    int32_t layer;
    int32_t is_mlp; /* joint: attention before MLP on equal scores */
} ranked;

static int compare_ranked(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->score != b->score) return a->score < b->score ? -1 : 1;
    if (a->layer != b->layer) return a->layer > b->layer ? -1 : 1; /* deeper first */
    return a->is_mlp - b->is_mlp;
}

/* "attn" -> DROP_ATTN...; -1 when unknown. len: bytes of name. */
static int parse_kind(const char *name, size_t len, bool allow_joint) {
    for (int k = 0; k < (allow_joint ? 4 : 3); k++)
        if (strlen(kind_names[k]) == len && strncmp(name, kind_names[k], len) == 0) return k;
    return -1;
}

static void mark(drop_kind kind, int32_t il, bool is_mlp, bool *drop_attn, bool *drop_mlp) {
    if (kind == DROP_ATTN || kind == DROP_BLOCK || (kind == DROP_JOINT && !is_mlp))
        drop_attn[il] = true;
    if (kind == DROP_MLP || kind == DROP_BLOCK || (kind == DROP_JOINT && is_mlp))
        drop_mlp[il] = true;
}

typedef struct drop_spec {
    int kind; /* drop_kind */
    bool threshold;
    long count;
    double limit;
} drop_spec;

static tlm_status parse_spec(const char *spec, drop_spec *out, tlm_error *err) {
    if (!spec) return tlm_seterr(err, TLM_ERR_ARG, "tlm_drop_select: missing spec");
    while (isspace((unsigned char)*spec)) spec++;
    const char *colon = strchr(spec, ':');
    if (!colon)
        return tlm_seterr(err, TLM_ERR_ARG,
                          "--drop '%s': expected KIND:K or KIND:s<T with KIND attn, mlp, block "
                          "or joint (e.g. attn:8, joint:s<0.02)", spec);
    const int kind = parse_kind(spec, (size_t)(colon - spec), true);
    if (kind < 0)
        return tlm_seterr(err, TLM_ERR_ARG,
                          "--drop '%s': unknown kind '%.*s' (expected attn, mlp, block or joint)",
                          spec, (int)(colon - spec), spec);
    /* the count or threshold */
    const char *arg = colon + 1;
    bool threshold = false;
    long count = 0;
    double limit = 0;
    char *end = NULL;
    errno = 0;
    if (arg[0] == 's' && arg[1] == '<') {
        threshold = true;
        limit = strtod(arg + 2, &end);
        if (end == arg + 2 || !isfinite(limit) || errno) end = NULL;
    } else if (isdigit((unsigned char)arg[0])) {
        count = strtol(arg, &end, 10);
        if (errno || count > INT32_MAX) end = NULL;
    }
    while (end && isspace((unsigned char)*end)) end++;
    if (!end || *end)
        return tlm_seterr(err, TLM_ERR_ARG,
                          "--drop '%s': '%s' is not a count (a non-negative integer) or a "
                          "threshold (s<NUMBER)", spec, arg);
    *out = (drop_spec){kind, threshold, count, limit};
    return TLM_OK;
}

tlm_status drop_select_scores(const float *attn, const float *mlp, const float *block,
                              const char *spec, int32_t n_layer, bool *drop_attn, bool *drop_mlp,
                              tlm_error *err) {
    if (!spec || !drop_attn || !drop_mlp || n_layer <= 0)
        return tlm_seterr(err, TLM_ERR_ARG, "tlm_drop_select: missing argument");
    drop_spec ds;
    tlm_status pst = parse_spec(spec, &ds, err);
    if (pst) return pst;
    const int kind = ds.kind;
    const bool threshold = ds.threshold;
    const long count = ds.count;
    const double limit = ds.limit;

    const float *const scores[3] = {attn, mlp, block};
    ranked *list = tlm_malloc((size_t)n_layer * 2 * sizeof *list);
    if (!list) return tlm_seterr(err, TLM_ERR_NOMEM, "--drop '%s': out of memory", spec);
    int32_t n = 0;
    for (int src = 0; src < 3; src++) {
        const bool wanted = kind == DROP_JOINT ? src < 2 : src == kind;
        if (!wanted) continue;
        if (!scores[src]) {
            tlm_free(list);
            return tlm_seterr(err, TLM_ERR_ARG, "--drop '%s': the calibration has no %s scores",
                              spec, kind_names[src]);
        }
        for (int32_t il = 0; il < n_layer; il++)
            if (isfinite(scores[src][il]))
                list[n++] = (ranked){scores[src][il], il, src == DROP_MLP};
    }
    qsort(list, (size_t)n, sizeof *list, compare_ranked);
    tlm_status st = TLM_OK;
    if (threshold) {
        for (int32_t i = 0; i < n && list[i].score < limit; i++)
            mark((drop_kind)kind, list[i].layer, list[i].is_mlp, drop_attn, drop_mlp);
    } else if (count > n) {
        st = tlm_seterr(err, TLM_ERR_ARG, "--drop '%s': asks for %ld %s but the model has %d",
                        spec, count, kind_nouns[kind], (int)n);
    } else {
        for (int32_t i = 0; i < (int32_t)count; i++)
            mark((drop_kind)kind, list[i].layer, list[i].is_mlp, drop_attn, drop_mlp);
    }
    tlm_free(list);
    return st;
}

static tlm_status select_flags(const tlm_calib *c, const char *spec, int32_t n_layer,
                               bool *drop_attn, bool *drop_mlp, tlm_error *err) {
    drop_spec ds;
    if (!c && !n_layer && !drop_attn && !drop_mlp) return parse_spec(spec, &ds, err);
    if (!c)
        return tlm_seterr(err, TLM_ERR_ARG,
                          "--drop '%s': choosing by importance needs a calibration pass "
                          "(use --drop-list to name sublayers without one)", spec ? spec : "");
    if (n_layer <= 0 || tlm_calib_n_layer(c) != n_layer)
        return tlm_seterr(err, TLM_ERR_ARG,
                          "tlm_drop_select: the calibration has %d layers, not %d",
                          (int)tlm_calib_n_layer(c), (int)n_layer);
    float *s = tlm_malloc((size_t)n_layer * 3 * sizeof *s);
    if (!s) return tlm_seterr(err, TLM_ERR_NOMEM, "--drop: out of memory");
    for (int32_t il = 0; il < n_layer; il++) {
        s[il] = tlm_calib_score(c, TLM_SUBLAYER_ATTN, il);
        s[n_layer + il] = tlm_calib_score(c, TLM_SUBLAYER_MLP, il);
        s[2 * n_layer + il] = tlm_calib_score(c, TLM_SUBLAYER_BLOCK, il);
    }
    tlm_status st = drop_select_scores(s, s + n_layer, s + 2 * n_layer, spec, n_layer, drop_attn,
                                       drop_mlp, err);
    tlm_free(s);
    return st;
}

static tlm_status parse_list(const char *list, int32_t n_layer, bool *seen, bool *drop_attn,
                             bool *drop_mlp, tlm_error *err);

static tlm_status parse_list_flags(const char *list, int32_t n_layer, bool *drop_attn,
                                   bool *drop_mlp, tlm_error *err) {
    if (!list || !drop_attn || !drop_mlp || n_layer <= 0)
        return tlm_seterr(err, TLM_ERR_ARG, "tlm_drop_parse_list: missing argument");
    /* what this list names, to refuse a sublayer named twice ("attn:3 block:3") */
    bool *seen = tlm_calloc((size_t)n_layer * 2, sizeof *seen);
    if (!seen) return tlm_seterr(err, TLM_ERR_NOMEM, "--drop-list: out of memory");
    tlm_status st = parse_list(list, n_layer, seen, drop_attn, drop_mlp, err);
    tlm_free(seen);
    return st;
}

static tlm_status parse_list(const char *list, int32_t n_layer, bool *seen, bool *drop_attn,
                             bool *drop_mlp, tlm_error *err) {
    const char *p = list;
    int groups = 0;
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (!*p) break;
        const char *group = p, *colon = p;
        while (*colon && *colon != ':' && !isspace((unsigned char)*colon)) colon++;
        size_t glen = strcspn(group, " \t\n");
        if (*colon != ':')
            return tlm_seterr(err, TLM_ERR_ARG,
                              "--drop-list '%s': '%.*s' is not KIND:LAYERS (e.g. attn:20,22 "
                              "mlp:25 block:3)", list, (int)glen, group);
        const int kind = parse_kind(group, (size_t)(colon - group), false);
        if (kind < 0)
            return tlm_seterr(err, TLM_ERR_ARG,
                              "--drop-list '%s': unknown kind '%.*s' (expected attn, mlp or block)",
                              list, (int)(colon - group), group);
        p = colon + 1;
        /* N or A-B, comma-separated */
        for (;;) {
            char *end;
            errno = 0;
            long a = isdigit((unsigned char)*p) ? strtol(p, &end, 10) : -1, b = a;
            if (a >= 0 && !errno && *end == '-' && isdigit((unsigned char)end[1]))
                b = strtol(end + 1, &end, 10);
            if (a < 0 || errno || b < a || (*end && *end != ',' && !isspace((unsigned char)*end)))
                return tlm_seterr(err, TLM_ERR_ARG,
                                  "--drop-list '%s': bad layer number in '%.*s' (expected "
                                  "numbers or ranges like 20,22 or 3-5)", list, (int)glen, group);
            if (b >= n_layer)
                return tlm_seterr(err, TLM_ERR_ARG,
                                  "--drop-list '%s': layer %ld is out of range (the model has "
                                  "layers 0..%d)", list, b, (int)n_layer - 1);
            for (long il = a; il <= b; il++) {
                for (int k = 0; k < 2; k++) {
                    const bool named = kind == DROP_BLOCK || kind == k;
                    if (named && seen[2 * il + k])
                        return tlm_seterr(err, TLM_ERR_ARG,
                                          "--drop-list '%s': the %s sublayer of layer %ld is named "
                                          "twice", list, k == 0 ? "attention" : "MLP", il);
                    seen[2 * il + k] |= named;
                }
                mark((drop_kind)kind, (int32_t)il, false, drop_attn, drop_mlp);
            }
            p = end;
            if (*p != ',') break;
            p++;
        }
        groups++;
    }
    if (!groups) return tlm_seterr(err, TLM_ERR_ARG, "--drop-list: empty list");
    return TLM_OK;
}

static bool has_attn(const tlm_model *m, int32_t il) {
    return model_sublayer(m, il, TLM_SUBLAYER_ATTN) != NULL;
}
static bool has_mlp(const tlm_model *m, int32_t il) {
    return model_sublayer(m, il, TLM_SUBLAYER_MLP) != NULL;
}

/* How many present sublayers of each kind the flags drop. */
static void count_drops(const tlm_model *m, const bool *da, const bool *dm, int32_t *n_attn,
                        int32_t *n_mlp) {
    *n_attn = *n_mlp = 0;
    for (int32_t il = 0; il < m->hp.n_layer; il++) {
        *n_attn += da && da[il] && has_attn(m, il);
        *n_mlp += dm && dm[il] && has_mlp(m, il);
    }
}

static tlm_status check_flags(const tlm_model *m, const char *const *specs, int32_t n_specs,
                              const bool *drop_attn, const bool *drop_mlp, tlm_error *err) {
    if (!m || n_specs < 0 || (n_specs && !specs))
        return tlm_seterr(err, TLM_ERR_ARG, "tlm_drop_check: missing argument");
    const int32_t NL = m->hp.n_layer;
    tlm_clearerr(err);
    int32_t have_attn = 0, have_mlp = 0;
    for (int32_t il = 0; il < NL; il++) {
        have_attn += has_attn(m, il);
        have_mlp += has_mlp(m, il);
        for (int kind = 0; kind < 2; kind++) {
            const bool *drop = kind == 0 ? drop_attn : drop_mlp;
            const bool has = kind == 0 ? has_attn(m, il) : has_mlp(m, il);
            if (drop && drop[il] && !has)
                return tlm_seterr(err, TLM_ERR_ARG,
                                  "the %s sublayer of layer %d is already absent from the source; "
                                  "it cannot be dropped", kind == 0 ? "attention" : "MLP", (int)il);
        }
    }
    /* At least this many of each kind go: the listed ones, and for each
     * spec what it takes whatever the scores. Every present sublayer is given
     * the score FLT_MAX (absent ones NaN, as calibration gives them): a count
     * takes K of them, as it will take K real ones; a threshold takes them
     * all only when it exceeds every float, as it would take every real
     * score. The specs' choices may overlap the list, so each counts alone. */
    int32_t min_attn, min_mlp;
    count_drops(m, drop_attn, drop_mlp, &min_attn, &min_mlp);
    tlm_status st = TLM_OK;
    float *score = NULL;
    bool *spec_attn = NULL, *spec_mlp = NULL;
    if (n_specs) {
        score = tlm_malloc((size_t)NL * 3 * sizeof *score);
        spec_attn = tlm_malloc((size_t)NL * sizeof *spec_attn);
        spec_mlp = tlm_malloc((size_t)NL * sizeof *spec_mlp);
        if (!score || !spec_attn || !spec_mlp) {
            st = tlm_seterr(err, TLM_ERR_NOMEM, "--drop: out of memory");
            goto done;
        }
        for (int32_t il = 0; il < NL; il++) {
            score[il] = has_attn(m, il) ? FLT_MAX : NAN;
            score[NL + il] = has_mlp(m, il) ? FLT_MAX : NAN;
            score[2 * NL + il] = has_attn(m, il) || has_mlp(m, il) ? FLT_MAX : NAN;
        }
    }
    for (int32_t i = 0; i < n_specs; i++) {
        for (int32_t j = 0; j < i; j++)
            if (specs[i] && specs[j] && strcmp(specs[i], specs[j]) == 0) {
                st = tlm_seterr(err, TLM_ERR_ARG, "--drop '%s' is given twice", specs[i]);
                goto done;
            }
        memset(spec_attn, 0, (size_t)NL * sizeof *spec_attn);
        memset(spec_mlp, 0, (size_t)NL * sizeof *spec_mlp);
        if ((st = drop_select_scores(score, score + NL, score + 2 * NL, specs[i], NL, spec_attn,
                                     spec_mlp, err)))
            goto done;
        int32_t a, b;
        count_drops(m, spec_attn, spec_mlp, &a, &b);
        drop_spec ds;
        if (parse_spec(specs[i], &ds, err) == TLM_OK && ds.kind == DROP_JOINT) {
            /* joint ranks both kinds together: of its a + b, the real scores
             * may take as many as there are of one kind from that kind */
            const int32_t total = a + b;
            a = total > have_mlp ? total - have_mlp : 0;
            b = total > have_attn ? total - have_attn : 0;
        }
        if (a > min_attn) min_attn = a;
        if (b > min_mlp) min_mlp = b;
    }
    /* Without attention no position sees another (each token's logits depend
     * on that token alone); without MLPs nothing is left of the layers'
     * per-token computation: neither is a language model worth writing. */
    const bool no_attn = min_attn > 0 && min_attn >= have_attn;
    const bool no_mlp = min_mlp > 0 && min_mlp >= have_mlp;
    if (no_attn && no_mlp)
        st = tlm_seterr(err, TLM_ERR_ARG,
                        "the drops remove every sublayer (all %d attention and %d MLP "
                        "sublayers): no layer of the model would be left",
                        (int)have_attn, (int)have_mlp);
    else if (no_attn)
        st = tlm_seterr(err, TLM_ERR_ARG,
                        "the drops remove all %d attention sublayers: no token could see "
                        "another; keep at least one", (int)have_attn);
    else if (no_mlp)
        st = tlm_seterr(err, TLM_ERR_ARG,
                        "the drops remove all %d MLP sublayers; keep at least one", (int)have_mlp);
done:
    tlm_free(score);
    tlm_free(spec_attn);
    tlm_free(spec_mlp);
    return st;
}

/* ------------------------------------------------------ the drop list */

/* A set of sublayers, as one flag per kind and layer: selections combine as
 * a union, and the list order (layer, then attention before MLP) is the
 * flags' order. */
struct tlm_drop_list {
    int32_t n_layer;
    bool *attn, *mlp; /* (n_layer) each */
};

tlm_drop_list *tlm_drop_list_new(int32_t n_layer, tlm_error *err) {
    if (n_layer <= 0) {
        tlm_seterr(err, TLM_ERR_ARG, "drop list: %d layers", (int)n_layer);
        return NULL;
    }
    tlm_drop_list *l = tlm_calloc(1, sizeof *l);
    if (l) {
        l->n_layer = n_layer;
        l->attn = tlm_calloc((size_t)n_layer, sizeof *l->attn);
        l->mlp = tlm_calloc((size_t)n_layer, sizeof *l->mlp);
    }
    if (!l || !l->attn || !l->mlp) {
        tlm_drop_list_free(l);
        tlm_seterr(err, TLM_ERR_NOMEM, "drop list: out of memory");
        return NULL;
    }
    return l;
}

void tlm_drop_list_free(tlm_drop_list *l) {
    if (!l) return;
    tlm_free(l->attn);
    tlm_free(l->mlp);
    tlm_free(l);
}

bool tlm_drop_list_add(tlm_drop_list *l, tlm_sublayer_kind kind, int32_t layer) {
    if (!l || layer < 0 || layer >= l->n_layer ||
        (kind != TLM_SUBLAYER_ATTN && kind != TLM_SUBLAYER_MLP))
        return false;
    (kind == TLM_SUBLAYER_ATTN ? l->attn : l->mlp)[layer] = true;
    return true;
}

bool tlm_drop_list_has(const tlm_drop_list *l, tlm_sublayer_kind kind, int32_t layer) {
    if (!l || layer < 0 || layer >= l->n_layer) return false;
    return kind == TLM_SUBLAYER_ATTN ? l->attn[layer] : kind == TLM_SUBLAYER_MLP && l->mlp[layer];
}

int32_t tlm_drop_list_count(const tlm_drop_list *l) {
    int32_t n = 0;
    for (int32_t il = 0; l && il < l->n_layer; il++) n += l->attn[il] + l->mlp[il];
    return n;
}

bool tlm_drop_list_get(const tlm_drop_list *l, int32_t i, tlm_sublayer_id *out) {
    for (int32_t il = 0; l && il < l->n_layer; il++)
        for (int k = 0; k < 2; k++) {
            if (!(k == 0 ? l->attn : l->mlp)[il]) continue;
            if (i-- == 0) {
                *out = (tlm_sublayer_id){k == 0 ? TLM_SUBLAYER_ATTN : TLM_SUBLAYER_MLP, il};
                return true;
            }
        }
    return false;
}

tlm_status tlm_drop_select(const tlm_calib *c, const char *spec, tlm_drop_list *drops,
                           tlm_error *err) {
    if (!c && !drops) return select_flags(NULL, spec, 0, NULL, NULL, err);
    if (!drops) return tlm_seterr(err, TLM_ERR_ARG, "tlm_drop_select: no drop list given");
    return select_flags(c, spec, drops->n_layer, drops->attn, drops->mlp, err);
}

tlm_status tlm_drop_parse_list(const char *list, tlm_drop_list *drops, tlm_error *err) {
    if (!drops) return tlm_seterr(err, TLM_ERR_ARG, "tlm_drop_parse_list: missing argument");
    return parse_list_flags(list, drops->n_layer, drops->attn, drops->mlp, err);
}

tlm_status tlm_drop_check(const tlm_model *m, const char *const *specs, int32_t n_specs,
                          const tlm_drop_list *drops, tlm_error *err) {
    if (m && drops && drops->n_layer != m->hp.n_layer)
        return tlm_seterr(err, TLM_ERR_ARG, "tlm_drop_check: a drop list of %d layers for a model "
                          "of %d", (int)drops->n_layer, (int)m->hp.n_layer);
    return check_flags(m, specs, n_specs, drops ? drops->attn : NULL, drops ? drops->mlp : NULL,
                       err);
}
