/*
 * model_lazy.c — the layers of a lazily loaded model (model.h): where each
 * layer's tensors lie in the source files, and their conversion to f32 one
 * whole layer at a time.
 *
 * A materialised layer is one aligned block holding all its arrays, so that
 * releasing it is one free and the model's `owned` list (the non-layer
 * weights) never changes after loading. The raw bytes are read with pread
 * into a buffer of the layer's largest tensor, freed again at the end of the
 * layer: the peak while converting is one layer in f32 plus one raw tensor.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "model.h"

#define LAZY_NAME_MAX 128 /* the loaders' name buffers */
#define LAZY_ALIGN_FLOATS (TLM_ALIGN / sizeof(float)) /* each array starts on a cache line */

typedef struct lazy_file {
    char *path; /* for messages */
    int fd;
} lazy_file;

typedef struct lazy_tensor {
    char name[LAZY_NAME_MAX];
    tlm_sublayer_kind kind; /* it fills slot `slot` of layer il's sublayer of kind (looked up */
    int slot;               /* when the layer is entered: the list may have lost a sublayer) */
    int32_t file;
    uint32_t type;
    uint64_t offset, nbytes; /* in the file */
    uint64_t rows, cols;
} lazy_tensor;

struct model_lazy {
    char *src; /* the model's path, for messages */
    model_lazy_convert_fn convert;
    int32_t n_layer;
    lazy_file *files;
    int32_t n_files;
    lazy_tensor *tensors; /* grouped by layer, in the order they were added */
    int32_t n_tensors, cap_tensors;
    int32_t *first, *count; /* (n_layer) each: the layer's tensors */
    float **block;          /* (n_layer) the materialised layer's block, or NULL */
    bool *ready;            /* (n_layer) materialised (a layer without tensors has no block) */
    int64_t n_reads;        /* layers materialised so far: what a pass costs in reading */
};

struct model_lazy *model_lazy_new(const char *src, int32_t n_layer, model_lazy_convert_fn convert,
                                  tlm_error *err) {
    struct model_lazy *lz = tlm_calloc(1, sizeof *lz);
    if (!lz || !(lz->src = tlm_strdup(src)) ||
        !(lz->first = tlm_calloc((size_t)n_layer, sizeof *lz->first)) ||
        !(lz->count = tlm_calloc((size_t)n_layer, sizeof *lz->count)) ||
        !(lz->block = tlm_calloc((size_t)n_layer, sizeof *lz->block)) ||
        !(lz->ready = tlm_calloc((size_t)n_layer, sizeof *lz->ready))) {
        model_lazy_free(lz);
        tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", src);
        return NULL;
    }
    lz->n_layer = n_layer;
    lz->convert = convert;
    return lz;
}

void model_lazy_free(struct model_lazy *lz) {
    if (!lz) return;
    for (int32_t i = 0; i < lz->n_files; i++) {
        close(lz->files[i].fd);
        tlm_free(lz->files[i].path);
    }
    tlm_free(lz->files);
    if (lz->block)
        for (int32_t il = 0; il < lz->n_layer; il++) tlm_free(lz->block[il]);
    tlm_free(lz->tensors);
    tlm_free(lz->first);
    tlm_free(lz->count);
    tlm_free(lz->block);
    tlm_free(lz->ready);
    tlm_free(lz->src);
    tlm_free(lz);
}

tlm_status model_lazy_open_file(struct model_lazy *lz, const char *path, uint64_t size,
                                int32_t *file, tlm_error *err) {
    for (int32_t i = 0; i < lz->n_files; i++)
        if (strcmp(lz->files[i].path, path) == 0) {
            *file = i;
            return TLM_OK;
        }
    lazy_file *grown = tlm_realloc(lz->files, (size_t)(lz->n_files + 1) * sizeof *grown);
    if (!grown) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
    lz->files = grown;
    lazy_file *f = &lz->files[lz->n_files];
    if (!(f->path = tlm_strdup(path))) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", path);
    f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f->fd < 0) {
        tlm_status st = tlm_seterr(err, TLM_ERR_IO, "%s: %s", path, strerror(errno));
        tlm_free(f->path);
        return st;
    }
    lz->n_files++; /* from here on model_lazy_free closes it */
    /* the file was parsed through a mapping of its own: this descriptor
     * must see the same file, or the offsets checked then mean nothing */
    struct stat st;
    if (fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size)
        return tlm_seterr(err, TLM_ERR_IO, "%s: the file changed while it was being loaded", path);
    *file = lz->n_files - 1;
    return TLM_OK;
}

tlm_status model_lazy_add_tensor(struct model_lazy *lz, int32_t il, tlm_sublayer_kind kind, int slot,
                                 const char *name,
                                 int32_t file, uint32_t type, uint64_t offset, uint64_t nbytes,
                                 uint64_t rows, uint64_t cols, tlm_error *err) {
    /* layers are recorded one after the other: a layer's tensors stay contiguous */
    if (lz->count[il] == 0) lz->first[il] = lz->n_tensors;
    if (lz->n_tensors == lz->cap_tensors) {
        int32_t cap = lz->cap_tensors ? lz->cap_tensors * 2 : 64;
        lazy_tensor *grown = tlm_realloc(lz->tensors, (size_t)cap * sizeof *grown);
        if (!grown) return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory", lz->src);
        lz->tensors = grown;
        lz->cap_tensors = cap;
    }
    lazy_tensor *t = &lz->tensors[lz->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->kind = kind;
    t->slot = slot;
    t->file = file;
    t->type = type;
    t->offset = offset;
    t->nbytes = nbytes;
    t->rows = rows;
    t->cols = cols;
    lz->count[il]++;
    return TLM_OK;
}

/* Reads exactly t->nbytes of t's file into buf. */
static tlm_status read_tensor(const struct model_lazy *lz, const lazy_tensor *t, uint8_t *buf,
                              tlm_error *err) {
    const lazy_file *f = &lz->files[t->file];
    uint64_t done = 0;
    while (done < t->nbytes) {
        uint64_t want = t->nbytes - done;
        if (want > ((uint64_t)1 << 30)) want = (uint64_t)1 << 30; /* pread caps a call anyway */
        ssize_t got = pread(f->fd, buf + done, (size_t)want, (off_t)(t->offset + done));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0)
            return tlm_seterr(err, TLM_ERR_IO, "%s: reading tensor '%s': %s", f->path, t->name,
                              strerror(errno));
        if (got == 0)
            return tlm_seterr(err, TLM_ERR_IO,
                              "%s: tensor '%s' ends past the end of the file (was it truncated "
                              "after loading?)", f->path, t->name);
        done += (uint64_t)got;
    }
    return TLM_OK;
}

static uint64_t padded_floats(const lazy_tensor *t) {
    return (t->rows * t->cols + LAZY_ALIGN_FLOATS - 1) / LAZY_ALIGN_FLOATS * LAZY_ALIGN_FLOATS;
}

tlm_status model_layer_materialize(const struct tlm_model *m, int32_t il, tlm_error *err) {
    struct model_lazy *lz = m->lazy;
    if (!lz) return TLM_OK;
    if (il < 0 || il >= lz->n_layer)
        return tlm_seterr(err, TLM_ERR_ARG, "%s: no layer %d to load", lz->src, (int)il);
    if (lz->ready[il]) return TLM_OK;
    const lazy_tensor *ts = lz->tensors + lz->first[il];
    const int32_t n = lz->count[il];
    /* sizes were checked at load (shapes within the hyper-parameters' bounds,
     * byte ranges within the file): the sums cannot overflow */
    uint64_t floats = 0, raw_max = 0;
    for (int32_t i = 0; i < n; i++) {
        floats += padded_floats(&ts[i]);
        if (ts[i].nbytes > raw_max) raw_max = ts[i].nbytes;
    }
    float *block = NULL;
    uint8_t *raw = NULL;
    if (n > 0 && (!(block = tlm_malloc_aligned((size_t)floats * sizeof(float))) ||
                  !(raw = tlm_malloc_aligned((size_t)raw_max)))) {
        tlm_free(block);
        return tlm_seterr(err, TLM_ERR_NOMEM, "%s: out of memory for layer %d (%" PRIu64 " bytes)",
                          lz->src, (int)il, floats * (uint64_t)sizeof(float) + raw_max);
    }
    float *at = block;
    for (int32_t i = 0; i < n; i++) {
        tlm_status st = read_tensor(lz, &ts[i], raw, err);
        if (st) {
            tlm_free(raw);
            tlm_free(block);
            return st;
        }
        lz->convert(ts[i].type, raw, at, ts[i].rows, ts[i].cols);
        at += padded_floats(&ts[i]);
    }
    tlm_free(raw);
    /* the pointers change only once every tensor has been read */
    at = block;
    for (int32_t i = 0; i < n; i++) {
        const tlm_sublayer *S = model_sublayer(m, il, ts[i].kind);
        if (S) m->subs[S - m->subs].w[ts[i].slot].data = at;
        at += padded_floats(&ts[i]);
    }
    lz->block[il] = block;
    lz->ready[il] = true;
    lz->n_reads++;
    return TLM_OK;
}

int64_t model_layer_reads(const struct tlm_model *m) { return m->lazy ? m->lazy->n_reads : 0; }

void model_layer_release(const struct tlm_model *m, int32_t il) {
    struct model_lazy *lz = m->lazy;
    if (!lz || il < 0 || il >= lz->n_layer || !lz->ready[il]) return;
    const lazy_tensor *ts = lz->tensors + lz->first[il];
    for (int32_t i = 0; i < lz->count[il]; i++) {
        const tlm_sublayer *S = model_sublayer(m, il, ts[i].kind);
        if (S) m->subs[S - m->subs].w[ts[i].slot].data = NULL;
    }
    tlm_free(lz->block[il]);
    lz->block[il] = NULL;
    lz->ready[il] = false;
}
