/*
 * gguf_x86.h — the GGUF-block kernels for x86, in 256-bit vectors, included
 * once by kernels_gguf_avx2.c (GGUF_VNNI 0: madd + add) and once by
 * kernels_gguf_avx512.c (GGUF_VNNI 1: AVX512-VL VNNI vpdpwssd / vpdpbusd on
 * ymm registers, which Zen 4 runs at full rate where it splits zmm ones).
 * GGUF_SFX names the functions; gguf_x86_fill(k) fills the table.
 *
 * Weight quants are unsigned (u8) and multiplied with the int8 activation by
 * maddubs (u8 x s8 pairs summed to int16: at most 2 x 63 x 127, no
 * saturation), then by the sub-block scale in int16 x int16 pairs summed to
 * int32 (madd / vpdpwssd): every integer sum is exact, so the results are
 * those of the scalar table bit for bit (kernels.h).
 *
 * Decode (GEMV): GEMV_ROWS rows at a time, each row a sequential stream,
 * their int32 sums reduced together and their per-block float step done in
 * one 4-lane vector. Prefill (GEMM): each block of a row decoded once into
 * registers-ready form (gguf_kdec / gguf_qdec32) and multiplied with the
 * activation of GEMM_TOKENS tokens at a time.
 */
#include <immintrin.h>
#include <stdalign.h>

#include "gguf_kernels.h"

#define GGUF_CAT2(a, b) a##b
#define GGUF_CAT(a, b) GGUF_CAT2(a, b)
#define SFX(name) GGUF_CAT(name, GGUF_SFX)

#define GEMV_ROWS 8
#define GEMM_TOKENS 8
#define GEMM_CHUNK 64 /* tokens whose f32 accumulators one pass keeps */
/* GEMV: bytes ahead along each row stream that a weight line is touched
 * (GEMV_ROWS streams: 8 x 8 KiB in flight; kernels-bench -g runs). */
#define PREFETCH_AHEAD 8192

/* A GEMV pass reads GEMV_ROWS rows side by side, each a sequential stream:
 * block b of a row is followed by its lines PREFETCH_AHEAD bytes further on
 * along the same stream, which past the row's end continues in the row adj
 * further (the same stream in the next pass, plan_passes). The lines that
 * start within this block's bytes are touched, so each line once. */
static inline void SFX(prefetch_block)(const uint8_t *blk, size_t off, size_t bb, size_t rb, int64_t adj) {
    uintptr_t p = (uintptr_t)blk + PREFETCH_AHEAD;
    if (off + PREFETCH_AHEAD >= rb) p += (size_t)(adj - 1) * rb;
    for (uintptr_t l = (p + 63) & ~(uintptr_t)63; l < p + bb; l += 64) _mm_prefetch((const char *)l, _MM_HINT_T0);
}

static inline __m256i SFX(dpwssd)(__m256i acc, __m256i a, __m256i b) {
#if GGUF_VNNI
    return _mm256_dpwssd_epi32(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

/* u8 x s8, 4 products a lane summed into acc (no saturation). */
static inline __m256i SFX(dot_u8s8)(__m256i acc, __m256i u, __m256i s) {
#if GGUF_VNNI
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

static inline __m128i SFX(fold)(__m256i v) {
    return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

static inline int32_t SFX(hsum)(__m256i a) {
    __m128i b = SFX(fold)(a);
    b = _mm_hadd_epi32(b, b);
    return _mm_cvtsi128_si32(_mm_hadd_epi32(b, b));
}

/* An f16 scale, converted by F16C (exact, as tlm_f16_to_f32). */
static inline float SFX(f16_at)(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* The integer sums of one block with one activation block: lanes of i sum
 * to sumw, lanes of m to summ (gguf_k_block_fma). Types without dmin
 * (Q6_K, Q3_K) subtract their mins from i at once and leave m zero: the
 * same integer sumw - summ, one reduction fewer. */
typedef struct SFX(ksum) {
    __m256i i;
    __m128i m;
} SFX(ksum);

/* The horizontal sums of eight vectors, in lanes 0..7. */
static inline __m256i SFX(hsum8)(const __m256i a[8]) {
    __m256i u0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0], a[1]), _mm256_hadd_epi32(a[2], a[3]));
    __m256i u1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[4], a[5]), _mm256_hadd_epi32(a[6], a[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u0, u1, 0x31));
}

static inline __m128i SFX(hsum4x128)(__m128i a0, __m128i a1, __m128i a2, __m128i a3) {
    return _mm_hadd_epi32(_mm_hadd_epi32(a0, a1), _mm_hadd_epi32(a2, a3));
}

static inline int32_t SFX(hsum128)(__m128i b) {
    b = _mm_hadd_epi32(b, b);
    return _mm_cvtsi128_si32(_mm_hadd_epi32(b, b));
}

/* ------------------------------------------------------------ Q4_K */

/* A Q4_K block's 8 six-bit scales and 8 mins (gguf_k4_scales), each set as
 * the 8 bytes of one word (little-endian: sub-block j in byte j), the form
 * the vector code widens from a register. */
static inline void q4k_scales_mins8(const uint8_t *blk, uint64_t *sc8, uint64_t *mn8) {
    uint8_t sc[8], mn[8];
    gguf_k4_scales(blk + 4, sc, mn);
    memcpy(sc8, sc, 8);
    memcpy(mn8, mn, 8);
}

/* qs: 4 chunks of 32 bytes; chunk p's low nibbles are elements 64p..64p+31
 * (sub-block 2p), its high nibbles 64p+32.. (sub-block 2p+1): each ymm of
 * quants is one sub-block, so its scale is a broadcast. */
static inline SFX(ksum) SFX(q4k_dot)(const uint8_t *blk, const tlm_block_q8_k256_act *x) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    uint64_t sc8, mn8;
    q4k_scales_mins8(blk, &sc8, &mn8);
    /* scale j as a word in every lane: the 8 words in both halves, then
     * picked by byte shuffles (word j = bytes 2j, 2j+1) */
    __m256i sw = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc8)));
    const __m256i two = _mm256_set1_epi8(2);
    __m256i pick = _mm256_set1_epi16(0x0100);
    const uint8_t *qs = blk + 16;
    __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
    for (int p = 0; p < 4; p++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * p));
        __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
        __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x->qs + 64 * p)));
        __m256i phi = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x->qs + 64 * p + 32)));
        __m256i slo = _mm256_shuffle_epi8(sw, pick);
        pick = _mm256_add_epi8(pick, two);
        __m256i shi = _mm256_shuffle_epi8(sw, pick);
        pick = _mm256_add_epi8(pick, two);
        acc0 = SFX(dpwssd)(acc0, plo, slo);
        acc1 = SFX(dpwssd)(acc1, phi, shi);
    }
    /* mins: m_j * bsum32[j] */
    __m128i msum = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn8)),
                                  _mm_loadu_si128((const __m128i *)x->bsum32));
    return (SFX(ksum)){_mm256_add_epi32(acc0, acc1), msum};
}

#if GGUF_VNNI
/* Q4_K in zmm registers (the AVX-512 table): zmm c of quants holds chunks
 * 2c and 2c+1, so its low nibbles are sub-blocks 4c (bytes 0-31) and 4c+2
 * (bytes 32-63), its high nibbles 4c+1 and 4c+3; the activation is
 * rearranged to match once per block (xr, shared by the rows of a GEMV
 * pass): xr[2c] = x[128c..+31] | x[128c+64..+95], xr[2c+1] = x[128c+32..] |
 * x[128c+96..]. Scale words per 256-bit half by a byte shuffle within each
 * 128-bit lane of the 8 scales broadcast. */
static inline void q4k_act_zmm(const tlm_block_q8_k256_act *x, __m512i xr[4]) {
    for (int c = 0; c < 2; c++)
        for (int h = 0; h < 2; h++) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(x->qs + 128 * c + 32 * h));
            __m256i b = _mm256_loadu_si256((const __m256i *)(x->qs + 128 * c + 64 + 32 * h));
            xr[2 * c + h] = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
        }
}

static inline SFX(ksum) q4k_dot_zmm(const uint8_t *blk, const __m512i xr[4], const tlm_block_q8_k256_act *x) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    uint64_t sc8, mn8;
    q4k_scales_mins8(blk, &sc8, &mn8);
    __m512i sw = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc8)));
    /* word j = bytes 2j, 2j+1; per register (c, lo/hi): halves j1 | j2 */
#define PICK2(j1, j2)                                                                            \
    _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)(0x0100 + 0x0202 * (j1)))), \
                       _mm256_set1_epi16((short)(0x0100 + 0x0202 * (j2))), 1)
    const __m512i p0 = PICK2(0, 2), p1 = PICK2(1, 3), p2 = PICK2(4, 6), p3 = PICK2(5, 7);
#undef PICK2
    __m512i v0 = _mm512_loadu_si512(blk + 16), v1 = _mm512_loadu_si512(blk + 80);
    __m512i acc0 = _mm512_dpwssd_epi32(_mm512_setzero_si512(),
                                       _mm512_maddubs_epi16(_mm512_and_si512(v0, low4), xr[0]),
                                       _mm512_shuffle_epi8(sw, p0));
    __m512i acc1 = _mm512_dpwssd_epi32(_mm512_setzero_si512(),
                                       _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(v0, 4), low4), xr[1]),
                                       _mm512_shuffle_epi8(sw, p1));
    acc0 = _mm512_dpwssd_epi32(acc0, _mm512_maddubs_epi16(_mm512_and_si512(v1, low4), xr[2]),
                               _mm512_shuffle_epi8(sw, p2));
    acc1 = _mm512_dpwssd_epi32(acc1, _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(v1, 4), low4), xr[3]),
                               _mm512_shuffle_epi8(sw, p3));
    __m512i acc = _mm512_add_epi32(acc0, acc1);
    __m256i acc8 = _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
    __m128i msum = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn8)),
                                  _mm_loadu_si128((const __m128i *)x->bsum32));
    return (SFX(ksum)){acc8, msum};
}
#endif

/* ------------------------------------------------------------ Q6_K */

/* Per half h: ql bytes A = ql[64h..+31], B = ql[64h+32..+63], Q = qh[32h..];
 * elements 128h + 0.. / 32.. / 64.. / 96..: low A, low B, high A, high B
 * nibbles with qh bits 0-1, 2-3, 4-5, 6-7 as bits 4-5 (16-bit shifts: the
 * bits that cross into the neighbour byte are masked off). Each ymm holds
 * two sub-blocks of 16: its scale vector is sc[2k] x 8 words, sc[2k+1] x 8.
 * The offset 32 is the min 32 sc[i] (gguf_kernels.h). */
static inline SFX(ksum) SFX(q6k_dot)(const uint8_t *blk, const tlm_block_q8_k256_act *x) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), bits45 = _mm256_set1_epi8(0x30);
    const uint8_t *ql = blk, *qh = blk + 128;
    const int8_t *scales = (const int8_t *)(blk + 192);
    /* word pairs (k, k) for the low lane, (k+1, k+1) for the high one */
    const __m256i pick0 = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3,
                                           2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    const __m256i step = _mm256_set1_epi8(4);
    __m256i acc = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(ql + 64 * h));
        __m256i b = _mm256_loadu_si256((const __m256i *)(ql + 64 * h + 32));
        __m256i q = _mm256_loadu_si256((const __m256i *)(qh + 32 * h));
        __m256i w[4];
        w[0] = _mm256_or_si256(_mm256_and_si256(a, low4), _mm256_and_si256(_mm256_slli_epi16(q, 4), bits45));
        w[1] = _mm256_or_si256(_mm256_and_si256(b, low4), _mm256_and_si256(_mm256_slli_epi16(q, 2), bits45));
        w[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), low4), _mm256_and_si256(q, bits45));
        w[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), low4),
                               _mm256_and_si256(_mm256_srli_epi16(q, 2), bits45));
        /* the 8 scales of this half as words, in both lanes */
        __m128i s8 = _mm_loadl_epi64((const __m128i *)(scales + 8 * h));
        __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(s8));
        __m256i pick = pick0;
        for (int k = 0; k < 4; k++, pick = _mm256_add_epi8(pick, step)) {
            __m256i p = _mm256_maddubs_epi16(w[k], _mm256_loadu_si256((const __m256i *)(x->qs + 128 * h + 32 * k)));
            acc = SFX(dpwssd)(acc, p, _mm256_shuffle_epi8(s16, pick));
        }
    }
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)scales));
    __m256i msum = _mm256_slli_epi32(_mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)x->bsum16)), 5);
    return (SFX(ksum)){_mm256_sub_epi32(acc, msum), _mm_setzero_si128()};
}

/* ------------------------------------------- other K-quants, any K-quant */

/* A decoded K block laid out for vector loads: w as in gguf_kblock, scx[k]
 * the 16 scale words of ymm k (sc[2k] x 8, sc[2k+1] x 8). */
typedef struct SFX(kdec) {
    alignas(32) uint8_t w[256];
    alignas(32) int16_t scx[8][16];
    alignas(32) int16_t mn[16];
    float d, dmin;
} SFX(kdec);

static inline void SFX(kdec_from)(uint32_t type, const uint8_t *blk, SFX(kdec) *o) {
    gguf_kblock kb;
    gguf_decode_k(type, blk, &kb);
    memcpy(o->w, kb.w, 256);
    for (int k = 0; k < 8; k++)
        for (int j = 0; j < 16; j++) o->scx[k][j] = kb.sc[2 * k + j / 8];
    memcpy(o->mn, kb.mn, sizeof o->mn);
    o->d = kb.d;
    o->dmin = kb.dmin;
}

static inline SFX(ksum) SFX(kdec_dot)(bool has_dmin, const SFX(kdec) *kd, const tlm_block_q8_k256_act *x) {
    __m256i acc = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++) {
        __m256i p = _mm256_maddubs_epi16(_mm256_load_si256((const __m256i *)(kd->w + 32 * k)),
                                         _mm256_loadu_si256((const __m256i *)(x->qs + 32 * k)));
        acc = SFX(dpwssd)(acc, p, _mm256_load_si256((const __m256i *)kd->scx[k]));
    }
    __m256i msum = _mm256_madd_epi16(_mm256_load_si256((const __m256i *)kd->mn),
                                     _mm256_loadu_si256((const __m256i *)x->bsum16));
    if (!has_dmin) return (SFX(ksum)){_mm256_sub_epi32(acc, msum), _mm_setzero_si128()};
    return (SFX(ksum)){acc, SFX(fold)(msum)};
}

/* One block of a row against one activation block, through the fastest
 * path the type has. */
static inline SFX(ksum) SFX(k_dot)(uint32_t type, const uint8_t *blk, const tlm_block_q8_k256_act *x) {
    if (type == GGML_TYPE_Q4_K) return SFX(q4k_dot)(blk, x);
    if (type == GGML_TYPE_Q6_K) return SFX(q6k_dot)(blk, x);
    SFX(kdec) kd;
    SFX(kdec_from)(type, blk, &kd);
    return SFX(kdec_dot)(gguf_k_has_dmin(type), &kd, x);
}

/* d (and dmin) of a K block. */
static inline void SFX(k_scales)(uint32_t type, const uint8_t *blk, float *d, float *dmin) {
    switch (type) {
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K: *d = SFX(f16_at)(blk), *dmin = SFX(f16_at)(blk + 2); break;
    case GGML_TYPE_Q6_K: *d = SFX(f16_at)(blk + 208), *dmin = 0; break;
    case GGML_TYPE_Q3_K: *d = SFX(f16_at)(blk + 108), *dmin = 0; break;
    default: *d = SFX(f16_at)(blk + 80), *dmin = SFX(f16_at)(blk + 82); break; /* Q2_K */
    }
}

/* acc (8 lanes) gains the blocks whose sums are s[0..7] (8 rows of a GEMV
 * pass, or 8 tokens of a GEMM step): d, dmin, dx per lane; the scalar
 * table's gguf_k_block_fma in 8 lanes (m is zero for the types without
 * dmin, see ksum). */
static inline __m256 SFX(k_step8)(uint32_t type, const SFX(ksum) s[8], __m256 d, __m256 dmin,
                                  __m256 dx, __m256 acc) {
    __m256i iv[8];
    for (int k = 0; k < 8; k++) iv[k] = s[k].i;
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(SFX(hsum8)(iv)), _mm256_mul_ps(d, dx), acc);
    if (!gguf_k_has_dmin(type)) return acc;
    __m128i lo = SFX(hsum4x128)(s[0].m, s[1].m, s[2].m, s[3].m);
    __m128i hi = SFX(hsum4x128)(s[4].m, s[5].m, s[6].m, s[7].m);
    __m256 negm = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_cvtepi32_ps(_mm256_set_m128i(hi, lo)));
    return _mm256_fmadd_ps(negm, _mm256_mul_ps(dmin, dx), acc);
}

/* The rows of GEMV passes. A pass reads GEMV_ROWS rows side by side; they
 * are taken as `streams` runs of `adj` adjacent rows, run k starting in the
 * k-th equal part of the slice: long rows (>= 4 KiB) as one run of 8
 * adjacent rows (8 streams already), short ones as 8 single rows from 8
 * parts of the slice, so that one core keeps misses in flight on 8
 * separate regions rather than one (kernels-bench -g, Q4_K 8960 x 1536
 * cold: 66-69% of the read bandwidth as 2 runs of 4, 76-80% as 4 runs of
 * 2, 81-83% as 8 runs of 1). Which rows share a pass changes no result:
 * each row's sum is its own. */
typedef struct SFX(passes) {
    int64_t adj, part, n_pass, tail; /* part: rows per stream; tail: first row no pass covers */
} SFX(passes);

static inline SFX(passes) SFX(plan_passes)(size_t rb, int64_t r0, int64_t r1) {
    SFX(passes) p;
    p.adj = rb >= 4096 ? GEMV_ROWS : 1;
    int64_t streams = GEMV_ROWS / p.adj;
    p.part = (r1 - r0) / streams / p.adj * p.adj;
    p.n_pass = p.part / p.adj;
    p.tail = r0 + streams * p.part;
    return p;
}

/* Row i (0..GEMV_ROWS-1) of pass n. */
static inline int64_t SFX(pass_row)(const SFX(passes) *p, int64_t r0, int64_t n, int i) {
    return r0 + (i / p->adj) * p->part + n * p->adj + i % p->adj;
}

static inline void SFX(store_pass)(const SFX(passes) *p, int64_t r0, int64_t n, float *y, __m256 acc) {
    if (p->adj == GEMV_ROWS) {
        _mm256_storeu_ps(y + SFX(pass_row)(p, r0, n, 0), acc);
        return;
    }
    alignas(32) float v[GEMV_ROWS];
    _mm256_store_ps(v, acc);
    for (int i = 0; i < GEMV_ROWS; i++) y[SFX(pass_row)(p, r0, n, i)] = v[i];
}

static inline void SFX(gemv_k)(uint32_t type, const void *w, const void *xq, float *y, int64_t n_in,
                               int64_t r0, int64_t r1) {
    const tlm_block_q8_k256_act *x = xq;
    const int64_t nb = n_in / TLM_K256;
    const size_t bb = gguf_block_bytes(type), rb = (size_t)nb * bb;
    const uint8_t *base = w;
    const SFX(passes) plan = SFX(plan_passes)(rb, r0, r1);
    for (int64_t n = 0; n < plan.n_pass; n++) {
        const uint8_t *rows[GEMV_ROWS];
        for (int i = 0; i < GEMV_ROWS; i++) rows[i] = base + (size_t)SFX(pass_row)(&plan, r0, n, i) * rb;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            SFX(ksum) s[GEMV_ROWS];
            float d[GEMV_ROWS], dmin[GEMV_ROWS];
#if GGUF_VNNI
            __m512i xr[4];
            if (type == GGML_TYPE_Q4_K) q4k_act_zmm(x + b, xr);
#endif
            for (int i = 0; i < GEMV_ROWS; i++) {
                const uint8_t *blk = rows[i] + (size_t)b * bb;
                SFX(prefetch_block)(blk, (size_t)b * bb, bb, rb, plan.adj);
#if GGUF_VNNI
                if (type == GGML_TYPE_Q4_K) s[i] = q4k_dot_zmm(blk, xr, x + b);
                else
#endif
                s[i] = SFX(k_dot)(type, blk, x + b);
                SFX(k_scales)(type, blk, &d[i], &dmin[i]);
            }
            acc = SFX(k_step8)(type, s, _mm256_loadu_ps(d), _mm256_loadu_ps(dmin), _mm256_set1_ps(x[b].d), acc);
        }
        SFX(store_pass)(&plan, r0, n, y, acc);
    }
    for (int64_t r = plan.tail; r < r1; r++) {
        const uint8_t *row = base + (size_t)r * rb;
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            SFX(ksum) s = SFX(k_dot)(type, row + (size_t)b * bb, x + b);
            float d, dmin;
            SFX(k_scales)(type, row + (size_t)b * bb, &d, &dmin);
            acc = gguf_k_block_fma(type, SFX(hsum)(s.i), SFX(hsum128)(s.m), d, dmin, x[b].d, acc);
        }
        y[r] = acc;
    }
}

/* Decode of one Q4_K / Q6_K block into kdec form at vector speed (GEMM). */
static inline void SFX(kdec_fast)(uint32_t type, const uint8_t *blk, SFX(kdec) *o) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    if (type == GGML_TYPE_Q4_K) {
        uint8_t sc[8], mn[8];
        gguf_k4_scales(blk + 4, sc, mn);
        for (int p = 0; p < 4; p++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * p));
            _mm256_store_si256((__m256i *)(o->w + 64 * p), _mm256_and_si256(v, low4));
            _mm256_store_si256((__m256i *)(o->w + 64 * p + 32), _mm256_and_si256(_mm256_srli_epi16(v, 4), low4));
        }
        for (int k = 0; k < 8; k++) _mm256_store_si256((__m256i *)o->scx[k], _mm256_set1_epi16(sc[k]));
        for (int i = 0; i < 16; i++) o->mn[i] = mn[i / 2];
        o->d = SFX(f16_at)(blk), o->dmin = SFX(f16_at)(blk + 2);
        return;
    }
    if (type == GGML_TYPE_Q6_K) {
        const __m256i bits45 = _mm256_set1_epi8(0x30);
        const int8_t *scales = (const int8_t *)(blk + 192);
        for (int h = 0; h < 2; h++) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(blk + 64 * h));
            __m256i b = _mm256_loadu_si256((const __m256i *)(blk + 64 * h + 32));
            __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * h));
            uint8_t *w = o->w + 128 * h;
            _mm256_store_si256((__m256i *)w, _mm256_or_si256(_mm256_and_si256(a, low4),
                                                             _mm256_and_si256(_mm256_slli_epi16(q, 4), bits45)));
            _mm256_store_si256((__m256i *)(w + 32), _mm256_or_si256(_mm256_and_si256(b, low4),
                                                                    _mm256_and_si256(_mm256_slli_epi16(q, 2), bits45)));
            _mm256_store_si256((__m256i *)(w + 64),
                               _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), low4), _mm256_and_si256(q, bits45)));
            _mm256_store_si256((__m256i *)(w + 96),
                               _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), low4),
                                               _mm256_and_si256(_mm256_srli_epi16(q, 2), bits45)));
        }
        for (int k = 0; k < 8; k++)
            for (int j = 0; j < 16; j++) o->scx[k][j] = scales[2 * k + j / 8];
        for (int i = 0; i < 16; i++) o->mn[i] = (int16_t)(32 * scales[i]);
        o->d = SFX(f16_at)(blk + 208), o->dmin = 0;
        return;
    }
    SFX(kdec_from)(type, blk, o);
}

static inline void SFX(gemm_k)(uint32_t type, const void *w, const void *xq, float *c, int64_t ldc,
                               int64_t m, int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    const tlm_block_q8_k256_act *x = xq;
    const int64_t nb = n_in / TLM_K256;
    const size_t bb = gguf_block_bytes(type), rb = (size_t)nb * bb;
    alignas(32) float acc[GEMM_CHUNK];
    SFX(kdec) kd;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        for (int64_t t0 = 0; t0 < m; t0 += GEMM_CHUNK) {
            const int nt = m - t0 < GEMM_CHUNK ? (int)(m - t0) : GEMM_CHUNK;
            memset(acc, 0, sizeof acc);
            for (int64_t b = 0; b < nb; b++) {
                SFX(kdec_fast)(type, row + (size_t)b * bb, &kd);
                const tlm_block_q8_k256_act *xb = x + t0 * nb + b;
                const __m256 d = _mm256_set1_ps(kd.d), dmin = _mm256_set1_ps(kd.dmin);
                int t = 0;
                for (; t + GEMM_TOKENS <= nt; t += GEMM_TOKENS) {
                    SFX(ksum) s[GEMM_TOKENS];
                    alignas(32) float dx[GEMM_TOKENS];
                    for (int i = 0; i < GEMM_TOKENS; i++) {
                        s[i] = SFX(kdec_dot)(gguf_k_has_dmin(type), &kd, xb + (t + i) * nb);
                        dx[i] = xb[(t + i) * nb].d;
                    }
                    _mm256_store_ps(acc + t, SFX(k_step8)(type, s, d, dmin, _mm256_load_ps(dx), _mm256_load_ps(acc + t)));
                }
                for (; t < nt; t++) {
                    SFX(ksum) s = SFX(kdec_dot)(gguf_k_has_dmin(type), &kd, xb + t * nb);
                    acc[t] = gguf_k_block_fma(type, SFX(hsum)(s.i), SFX(hsum128)(s.m), kd.d, kd.dmin,
                                              xb[t * nb].d, acc[t]);
                }
            }
            for (int t = 0; t < nt; t++) {
                float *out = c + (t0 + t) * ldc + r;
                *out = (accumulate ? *out : 0.0f) + acc[t];
            }
        }
    }
}

/* ------------------------------------------------- 32-value blocks */

/* One block's weights as 32 bytes in element order, and the offset z its
 * quants carry (isum = sum w x - z sum x). Q8_0 stays signed (z = 0). */
static inline __m256i SFX(q32_weights)(uint32_t type, const uint8_t *blk) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    if (type == GGML_TYPE_Q8_0) return _mm256_loadu_si256((const __m256i *)(blk + 2));
    const bool has_m = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    const bool five = type == GGML_TYPE_Q5_0 || type == GGML_TYPE_Q5_1;
    const uint8_t *qs = blk + (has_m ? 4 : 2) + (five ? 4 : 0);
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low4);
    if (five) {
        /* bit j of qh -> bit 4 of byte j: byte j gets qh byte j/8, tests bit j%8 */
        uint32_t qh;
        memcpy(&qh, blk + (has_m ? 4 : 2), 4);
        __m256i hb = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh),
                                         _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2,
                                                          2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
        hb = _mm256_cmpeq_epi8(_mm256_and_si256(hb, bit), bit);
        v = _mm256_or_si256(v, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
    }
    return v;
}

static inline int SFX(q32_offset)(uint32_t type) {
    return type == GGML_TYPE_Q4_0 ? 8 : type == GGML_TYPE_Q5_0 ? 16 : 0;
}

/* Lanes summing to sum w x (Q8_0: signed w through the sign trick). */
static inline __m256i SFX(q32_dot)(uint32_t type, __m256i wv, const int8_t *xs) {
    __m256i xv = _mm256_loadu_si256((const __m256i *)xs);
    if (type == GGML_TYPE_Q8_0)
        return SFX(dot_u8s8)(_mm256_setzero_si256(), _mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
    return SFX(dot_u8s8)(_mm256_setzero_si256(), wv, xv);
}

/* acc (8 lanes) gains 8 blocks (8 rows or 8 tokens): isum lanes before the
 * offset z, d, m, sum_x, dx per lane; gguf_32_block_fma in 8 lanes. */
static inline __m256 SFX(q32_step8)(uint32_t type, __m256i isum_raw, __m256 d, __m256 m, __m256i sumx,
                                    __m256 dx, __m256 acc) {
    const int z = SFX(q32_offset)(type);
    __m256i isum = z ? _mm256_sub_epi32(isum_raw, _mm256_mullo_epi32(sumx, _mm256_set1_epi32(z))) : isum_raw;
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, dx), acc);
    if (type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1)
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumx), _mm256_mul_ps(m, dx), acc);
    return acc;
}

static inline void SFX(gemv_32)(uint32_t type, const void *w, const void *xq, float *y, int64_t n_in,
                                int64_t r0, int64_t r1) {
    const tlm_block_q8_g32_act *x = xq;
    const int64_t nb = n_in / TLM_QGROUP;
    const size_t bb = gguf_block_bytes(type), rb = (size_t)nb * bb;
    const bool has_m = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    const uint8_t *base = w;
    const SFX(passes) plan = SFX(plan_passes)(rb, r0, r1);
    for (int64_t n = 0; n < plan.n_pass; n++) {
        const uint8_t *rows[GEMV_ROWS];
        for (int i = 0; i < GEMV_ROWS; i++) rows[i] = base + (size_t)SFX(pass_row)(&plan, r0, n, i) * rb;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; b++) {
            __m256i s[GEMV_ROWS];
            float d[GEMV_ROWS], m[GEMV_ROWS] = {0};
            for (int i = 0; i < GEMV_ROWS; i++) {
                const uint8_t *blk = rows[i] + (size_t)b * bb;
                SFX(prefetch_block)(blk, (size_t)b * bb, bb, rb, plan.adj);
                s[i] = SFX(q32_dot)(type, SFX(q32_weights)(type, blk), x[b].qs);
                d[i] = SFX(f16_at)(blk);
                if (has_m) m[i] = SFX(f16_at)(blk + 2);
            }
            acc = SFX(q32_step8)(type, SFX(hsum8)(s), _mm256_loadu_ps(d), _mm256_loadu_ps(m),
                                 _mm256_set1_epi32(x[b].sum), _mm256_set1_ps(x[b].d), acc);
        }
        SFX(store_pass)(&plan, r0, n, y, acc);
    }
    for (int64_t r = plan.tail; r < r1; r++) {
        const uint8_t *row = base + (size_t)r * rb;
        float acc = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + (size_t)b * bb;
            int32_t isum = SFX(hsum)(SFX(q32_dot)(type, SFX(q32_weights)(type, blk), x[b].qs)) -
                           SFX(q32_offset)(type) * x[b].sum;
            acc = gguf_32_block_fma(type, isum, x[b].sum, SFX(f16_at)(blk), has_m ? SFX(f16_at)(blk + 2) : 0.0f,
                                    x[b].d, acc);
        }
        y[r] = acc;
    }
}

static inline void SFX(gemm_32)(uint32_t type, const void *w, const void *xq, float *c, int64_t ldc,
                                int64_t m, int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    const tlm_block_q8_g32_act *x = xq;
    const int64_t nb = n_in / TLM_QGROUP;
    const size_t bb = gguf_block_bytes(type), rb = (size_t)nb * bb;
    const bool has_m = type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q5_1;
    alignas(32) float acc[GEMM_CHUNK];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        for (int64_t t0 = 0; t0 < m; t0 += GEMM_CHUNK) {
            const int nt = m - t0 < GEMM_CHUNK ? (int)(m - t0) : GEMM_CHUNK;
            memset(acc, 0, sizeof acc);
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + (size_t)b * bb;
                const __m256i wv = SFX(q32_weights)(type, blk);
                const float d = SFX(f16_at)(blk), mm = has_m ? SFX(f16_at)(blk + 2) : 0.0f;
                const tlm_block_q8_g32_act *xb = x + t0 * nb + b;
                int t = 0;
                for (; t + GEMM_TOKENS <= nt; t += GEMM_TOKENS) {
                    __m256i is[GEMM_TOKENS];
                    alignas(32) float dx[GEMM_TOKENS];
                    alignas(32) int32_t sx[GEMM_TOKENS];
                    for (int i = 0; i < GEMM_TOKENS; i++) {
                        const tlm_block_q8_g32_act *xt = xb + (t + i) * nb;
                        is[i] = SFX(q32_dot)(type, wv, xt->qs);
                        dx[i] = xt->d, sx[i] = xt->sum;
                    }
                    __m256 a = SFX(q32_step8)(type, SFX(hsum8)(is), _mm256_set1_ps(d), _mm256_set1_ps(mm),
                                              _mm256_load_si256((const __m256i *)sx), _mm256_load_ps(dx),
                                              _mm256_load_ps(acc + t));
                    _mm256_store_ps(acc + t, a);
                }
                for (; t < nt; t++) {
                    const tlm_block_q8_g32_act *xt = xb + t * nb;
                    int32_t isum = SFX(hsum)(SFX(q32_dot)(type, wv, xt->qs)) - SFX(q32_offset)(type) * xt->sum;
                    acc[t] = gguf_32_block_fma(type, isum, xt->sum, d, mm, xt->d, acc[t]);
                }
            }
            for (int t = 0; t < nt; t++) {
                float *out = c + (t0 + t) * ldc + r;
                *out = (accumulate ? *out : 0.0f) + acc[t];
            }
        }
    }
}

/* ---------------------------------------------------------- F16, BF16 */

static inline __m256 SFX(load8_half)(bool bf16, const uint8_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (bf16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

static inline float SFX(hsum_ps)(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline float SFX(dot_half)(bool bf16, const uint8_t *w, const float *x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(SFX(load8_half)(bf16, w + 2 * i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(SFX(load8_half)(bf16, w + 2 * i + 16), _mm256_loadu_ps(x + i + 8), a1);
    }
    float s = SFX(hsum_ps)(_mm256_add_ps(a0, a1));
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, w + 2 * i, 2);
        s += (bf16 ? tlm_bf16_to_f32(h) : tlm_f16_to_f32(h)) * x[i];
    }
    return s;
}

static inline void SFX(gemm_half)(bool bf16, const void *w, const void *xq, float *c, int64_t ldc,
                                  int64_t m, int64_t n_in, int64_t r0, int64_t r1, bool accumulate) {
    const float *x = xq;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * (size_t)n_in * 2;
        for (int64_t t = 0; t < m; t++) {
            float v = SFX(dot_half)(bf16, row, x + t * n_in, n_in);
            float *out = c + t * ldc + r;
            *out = (accumulate ? *out : 0.0f) + v;
        }
    }
}

/* ------------------------------------------------------ activations */

static void SFX(quantize_act_q8_k256)(const float *x, void *xq, int64_t n) {
    tlm_block_q8_k256_act *out = xq;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n / TLM_K256; b++) {
        const float *v = x + b * TLM_K256;
        __m256 mx = _mm256_setzero_ps();
        for (int j = 0; j < TLM_K256; j += 8) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + j)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        for (int i = 0; i < 16; i++) {
            /* cvtps2dq rounds half to even in the default MXCSR mode; a
             * finite x gives |q| <= 127 */
            __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 16 * i), vid));
            __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + 16 * i + 8), vid));
            __m256i s = _mm256_add_epi32(q0, q1);
            out[b].bsum16[i] = (int16_t)SFX(hsum)(s);
            __m256i w16 = _mm256_packs_epi32(q0, q1); /* lanes: q0[0..3] q1[0..3] | q0[4..7] q1[4..7] */
            __m128i b8 = _mm_packs_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
            /* b8 = q0[0..3] q1[0..3] q0[4..7] q1[4..7]: back to element order */
            b8 = _mm_shuffle_epi32(b8, _MM_SHUFFLE(3, 1, 2, 0));
            _mm_storeu_si128((__m128i *)(out[b].qs + 16 * i), b8);
        }
        for (int j = 0; j < 8; j++) out[b].bsum32[j] = (int16_t)(out[b].bsum16[2 * j] + out[b].bsum16[2 * j + 1]);
        out[b].d = d;
        memset(out[b].pad, 0, sizeof out[b].pad);
    }
}

/* ----------------------------------------------------------- entries */

#define GGUF_DEFINE_Q(name, type, KIND)                                                          \
    static void SFX(gemv_gguf_##name)(const void *w, const void *xq, float *y, int64_t n_in,    \
                                      int64_t r0, int64_t r1) {                                  \
        SFX(gemv_##KIND)(type, w, xq, y, n_in, r0, r1);                                          \
    }                                                                                            \
    static void SFX(gemm_gguf_##name)(const void *w, const void *xq, float *c, int64_t ldc,     \
                                      int64_t m, int64_t n_in, int64_t r0, int64_t r1,          \
                                      bool accumulate) {                                         \
        SFX(gemm_##KIND)(type, w, xq, c, ldc, m, n_in, r0, r1, accumulate);                      \
    }
GGUF_DEFINE_Q(q4_0, GGML_TYPE_Q4_0, 32)
GGUF_DEFINE_Q(q4_1, GGML_TYPE_Q4_1, 32)
GGUF_DEFINE_Q(q5_0, GGML_TYPE_Q5_0, 32)
GGUF_DEFINE_Q(q5_1, GGML_TYPE_Q5_1, 32)
GGUF_DEFINE_Q(q8_0, GGML_TYPE_Q8_0, 32)
GGUF_DEFINE_Q(q2_k, GGML_TYPE_Q2_K, k)
GGUF_DEFINE_Q(q3_k, GGML_TYPE_Q3_K, k)
GGUF_DEFINE_Q(q4_k, GGML_TYPE_Q4_K, k)
GGUF_DEFINE_Q(q5_k, GGML_TYPE_Q5_K, k)
GGUF_DEFINE_Q(q6_k, GGML_TYPE_Q6_K, k)

#define GGUF_DEFINE_HALF(name, is_bf16)                                                          \
    static void SFX(gemv_gguf_##name)(const void *w, const void *xq, float *y, int64_t n_in,    \
                                      int64_t r0, int64_t r1) {                                  \
        SFX(gemm_half)(is_bf16, w, xq, y, 0, 1, n_in, r0, r1, false);                            \
    }                                                                                            \
    static void SFX(gemm_gguf_##name)(const void *w, const void *xq, float *c, int64_t ldc,     \
                                      int64_t m, int64_t n_in, int64_t r0, int64_t r1,          \
                                      bool accumulate) {                                         \
        SFX(gemm_half)(is_bf16, w, xq, c, ldc, m, n_in, r0, r1, accumulate);                     \
    }
GGUF_DEFINE_HALF(f16, false)
GGUF_DEFINE_HALF(bf16, true)

static void SFX(gguf_x86_fill)(tlm_kernels *k) {
#define GGUF_SET(name, type)                                                                     \
    k->gemv_gguf[type] = SFX(gemv_gguf_##name);                                                  \
    k->gemm_gguf[type] = SFX(gemm_gguf_##name);
    TLM_GGUF_KERNEL_TYPES(GGUF_SET)
#undef GGUF_SET
    k->quantize_act_q8_k256 = SFX(quantize_act_q8_k256);
}
