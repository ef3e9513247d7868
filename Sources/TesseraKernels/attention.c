// Attention over a sequence's own cached keys and values.
#include "tessera_kernels.h"
#include "simd.h"
#include <math.h>
#include <string.h>

// KV storage, per layer: blocks of `bs` positions. A block's keys are stored transposed, K^T
// (kvd × bs: channel c of slot i at c·bs + i), so decode scores are vertical FMAs over 16
// positions at a time with no horizontal sums; its values are rows (bs × kvd). Elements are
// f32 or f16 (kv_type).
static inline int64_t kv_esize(int type) { return type == TSR_GGML_F16 ? 2 : 4; }

int tsr_kv_type_supported(int type) { return type == TSR_GGML_F32 || type == TSR_GGML_F16; }

TSR_MULTIVERSION
void tsr_kv_store_channels(void *k_layer, void *v_layer, int kv_type, int64_t block, int64_t bs, int64_t slot,
                           const float *k, const float *v, int64_t kvd, int64_t c0, int64_t c1) {
    if (kv_type == TSR_GGML_F16) {
        _Float16 *kb = (_Float16 *)k_layer + block * bs * kvd + slot, *vr = (_Float16 *)v_layer + (block * bs + slot) * kvd;
        for (int64_t c = c0; c < c1; c++) kb[c * bs] = (_Float16)k[c];
        for (int64_t c = c0; c < c1; c++) vr[c] = (_Float16)v[c];
    } else {
        float *kb = (float *)k_layer + block * bs * kvd + slot, *vr = (float *)v_layer + (block * bs + slot) * kvd;
        for (int64_t c = c0; c < c1; c++) kb[c * bs] = k[c];
        if (c1 > c0) memcpy(vr + c0, v + c0, (size_t)(c1 - c0) * sizeof(float));
    }
}

void tsr_kv_store(void *k_layer, void *v_layer, int kv_type, int64_t block, int64_t bs, int64_t slot,
                  const float *k, const float *v, int64_t kvd) {
    tsr_kv_store_channels(k_layer, v_layer, kv_type, block, bs, slot, k, v, kvd, 0, kvd);
}

TSR_MULTIVERSION
void tsr_kv_gather(float *kt_dst, float *v_dst, const void *k_layer, const void *v_layer, int kv_type,
                   const int32_t *block_table, int64_t bs, int64_t n, int64_t kvd) {
    for (int64_t t = 0; t < n; t += bs) {
        const int64_t len = n - t < bs ? n - t : bs, blk = block_table[t / bs];
        if (kv_type == TSR_GGML_F16) {
            const _Float16 *kb = (const _Float16 *)k_layer + blk * bs * kvd, *vb = (const _Float16 *)v_layer + blk * bs * kvd;
            for (int64_t c = 0; c < kvd; c++)
                for (int64_t i = 0; i < len; i++) kt_dst[c * n + t + i] = (float)kb[c * bs + i];
            for (int64_t i = 0; i < len * kvd; i++) v_dst[t * kvd + i] = (float)vb[i];
        } else {
            const float *kb = (const float *)k_layer + blk * bs * kvd, *vb = (const float *)v_layer + blk * bs * kvd;
            for (int64_t c = 0; c < kvd; c++) memcpy(kt_dst + c * n + t, kb + c * bs, (size_t)len * sizeof(float));
            memcpy(v_dst + t * kvd, vb, (size_t)(len * kvd) * sizeof(float));
        }
    }
}

// Scores of G query heads (q: G consecutive heads) for slots [i, i + 16) of one block's K^T rows
// of the kv head (kt: hd rows of stride bs): s[g·ss + j] = scale · Σ_d q_g[d]·kt[d·bs + i + j].
// Four partial sums per head (d mod 4) keep 4·G FMA chains in flight instead of G.
#define SCORES16(NAME, T) \
static inline __attribute__((always_inline)) void NAME(const float *q, const T *kt, int64_t bs, int64_t hd, const int G, \
                                                       float scale, float *s, int64_t ss) { \
    _Pragma("clang fp contract(fast)") \
    float acc[4][4][16]; \
    for (int k = 0; k < 4; k++) for (int g = 0; g < G; g++) for (int j = 0; j < 16; j++) acc[k][g][j] = 0; \
    for (int64_t d = 0; d < hd; d += 4) { \
        for (int k = 0; k < 4; k++) { \
            const T *kr = kt + (d + k) * bs; \
            float kv[16]; \
            for (int j = 0; j < 16; j++) kv[j] = (float)kr[j]; \
            for (int g = 0; g < G; g++) { \
                const float qd = q[g * hd + d + k]; \
                for (int j = 0; j < 16; j++) acc[k][g][j] += qd * kv[j]; \
            } \
        } \
    } \
    for (int g = 0; g < G; g++) \
        for (int j = 0; j < 16; j++) s[g * ss + j] = ((acc[0][g][j] + acc[1][g][j]) + (acc[2][g][j] + acc[3][g][j])) * scale; \
}
SCORES16(scores16_f32, float)
SCORES16(scores16_f16, _Float16)
#undef SCORES16

// o_g += Σ_{i < n} p_g[i]·v_i for G heads of head size HD (both compile-time after inlining,
// so the G·HD sums live in registers): n value rows of stride kvd from vr, scores p_g at
// s + g·ss, sums at o + g·os.
#define VACC_FN(NAME, T) \
static inline __attribute__((always_inline)) void NAME(const T *vr, int64_t n, int64_t kvd, const int HD, const int G, \
                                                       const float *s, int64_t ss, float *o, int64_t os) { \
    _Pragma("clang fp contract(fast)") \
    float acc[8][128]; \
    for (int g = 0; g < G; g++) for (int d = 0; d < HD; d++) acc[g][d] = o[g * os + d]; \
    for (int64_t i = 0; i < n; i++) { \
        float v[128]; \
        for (int d = 0; d < HD; d++) v[d] = (float)vr[i * kvd + d]; \
        for (int g = 0; g < G; g++) { \
            const float p = s[g * ss + i]; \
            for (int d = 0; d < HD; d++) acc[g][d] += p * v[d]; \
        } \
    } \
    for (int g = 0; g < G; g++) for (int d = 0; d < HD; d++) o[g * os + d] = acc[g][d]; \
}
VACC_FN(vacc_f32, float)
VACC_FN(vacc_f16, _Float16)
#undef VACC_FN

// Into L2, ahead of use.
static inline void prefetch_l2(const void *p, int64_t bytes) {
    for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch((const char *)p + o, 0, 2);
}

// Head sizes up to this take the vector scores for a block's last < 16 slots too.
enum { TAIL_MAX_HD = 256 };

// One unit: positions [t0, t1) of one row, every head: each head's max score m over the chunk,
// Σ e^(s − m) and Σ e^(s − m)·v, written to partials + h·part_stride as (m, l, o[head_dim]).
// The chunk's blocks are read in address order, every kv head of a block at once (a block's
// keys, then later its values, are one contiguous run when the block is whole), and each key and
// value is read once for all the query heads of its kv head. T: the KV element type; HD > 0 a
// compile-time head size, 0 the general case. s: n_heads × TSR_ATTENTION_CHUNK floats.
#define ATTENTION_UNIT(NAME, T, SCORES, VACC, HD) \
TSR_MULTIVERSION \
static void NAME(const tsr_attention_item *it, int64_t n_kv_heads, int64_t group, int64_t t0, int64_t t1, int64_t kvd, \
                 int64_t head_dim_, float scale, float *s, float *partials, int64_t part_stride, int64_t h0, int64_t h1) { \
    _Pragma("clang fp contract(fast)") \
    const int64_t hd = HD > 0 ? HD : head_dim_, bs = it->block_size, len = t1 - t0; \
    const int64_t ss = TSR_ATTENTION_CHUNK, block_bytes = bs * kvd * (int64_t)sizeof(T); \
    /* Query heads [h0, h1) only: kv heads [k0, k1), of kv head kvh its query heads [ga, gb). */ \
    const int64_t k0 = h0 / group, k1 = h1 > h0 ? (h1 - 1) / group + 1 : k0, all = h0 == 0 && h1 == n_kv_heads * group; \
    const T *kl = (const T *)it->k, *vl = (const T *)it->v; \
    /* Keys: the hardware prefetcher follows the blocks' runs (software prefetch of keys 1-16 \
       blocks ahead, into L1 or L2, measured slower). Values: the block's, into L2 while its \
       scores are computed, for the values pass (the chunk's values fit in L2). */ \
    for (int64_t t = t0; t < t1;) { \
        const int64_t off = t % bs, n = bs - off < t1 - t ? bs - off : t1 - t; \
        const T *kb = kl + (int64_t)it->block_table[t / bs] * bs * kvd + off; \
        if (all) prefetch_l2(vl + (int64_t)it->block_table[t / bs] * bs * kvd, block_bytes); \
        else for (int64_t i = 0; i < bs; i++) \
            prefetch_l2(vl + ((int64_t)it->block_table[t / bs] * bs + i) * kvd + k0 * hd, (k1 - k0) * hd * (int64_t)sizeof(T)); \
        for (int64_t kvh = k0; kvh < k1; kvh++) { \
            const T *kt = kb + kvh * hd * bs; \
            const int64_t ga = h0 > kvh * group ? h0 - kvh * group : 0, gb = h1 < (kvh + 1) * group ? h1 - kvh * group : group; \
            for (int64_t g0 = ga; g0 < gb; g0 += 4) { \
                const float *q = it->q + (kvh * group + g0) * hd; \
                float *sg = s + (kvh * group + g0) * ss + (t - t0); \
                const int64_t gn = gb - g0 < 4 ? gb - g0 : 4; \
                int64_t i = 0; \
                for (; hd % 4 == 0 && i + 16 <= n; i += 16) { \
                    switch (gn) { \
                    case 1: SCORES(q, kt + i, bs, hd, 1, scale, sg + i, ss); break; \
                    case 2: SCORES(q, kt + i, bs, hd, 2, scale, sg + i, ss); break; \
                    case 3: SCORES(q, kt + i, bs, hd, 3, scale, sg + i, ss); break; \
                    default: SCORES(q, kt + i, bs, hd, 4, scale, sg + i, ss); break; \
                    } \
                } \
                if (i < n && hd % 4 == 0 && hd <= TAIL_MAX_HD) { \
                    /* The last < 16 slots through the same vector sums: their keys copied into \
                       16 zero-padded lanes (no read past the written slots), scores copied out. */ \
                    T tk[TAIL_MAX_HD * 16]; \
                    float ts[4 * 16]; \
                    const int64_t r = n - i; \
                    for (int64_t d = 0; d < hd; d++) \
                        for (int64_t j = 0; j < 16; j++) tk[d * 16 + j] = j < r ? kt[d * bs + i + j] : (T)0; \
                    switch (gn) { \
                    case 1: SCORES(q, tk, 16, hd, 1, scale, ts, 16); break; \
                    case 2: SCORES(q, tk, 16, hd, 2, scale, ts, 16); break; \
                    case 3: SCORES(q, tk, 16, hd, 3, scale, ts, 16); break; \
                    default: SCORES(q, tk, 16, hd, 4, scale, ts, 16); break; \
                    } \
                    for (int64_t g = 0; g < gn; g++) memcpy(sg + g * ss + i, ts + g * 16, (size_t)r * sizeof(float)); \
                    i = n; \
                } \
                for (int64_t r = i; r < n; r++) \
                    for (int64_t g = 0; g < gn; g++) { \
                        float a = 0; \
                        for (int64_t d = 0; d < hd; d++) a += q[g * hd + d] * (float)kt[d * bs + r]; \
                        sg[g * ss + r] = a * scale; \
                    } \
            } \
        } \
        t += n; \
    } \
    for (int64_t h = h0; h < h1; h++) { \
        float *sg = s + h * ss; \
        /* The max in 16 lanes (a vertical max the compiler vectorises), then across them. */ \
        float mm[16]; \
        for (int j = 0; j < 16; j++) mm[j] = sg[0]; \
        int64_t i0 = 0; \
        for (; i0 + 16 <= len; i0 += 16) \
            for (int j = 0; j < 16; j++) mm[j] = sg[i0 + j] > mm[j] ? sg[i0 + j] : mm[j]; \
        float m = mm[0]; \
        for (int j = 1; j < 16; j++) m = mm[j] > m ? mm[j] : m; \
        for (; i0 < len; i0++) m = sg[i0] > m ? sg[i0] : m; \
        float l = 0; \
        { \
            _Pragma("clang fp reassociate(on)") \
            for (int64_t i = 0; i < len; i++) { sg[i] = tsr_exp_nonpositive(sg[i] - m); l += sg[i]; } \
        } \
        partials[h * part_stride] = m; \
        partials[h * part_stride + 1] = l; \
        memset(partials + h * part_stride + 2, 0, (size_t)hd * sizeof(float)); \
    } \
    /* o_h = Σ_t p_h[t]·v[t], block by block, every head of a kv head's group from one read of \
       each value row; with a compile-time head size and group the sums stay in registers. */ \
    for (int64_t t = t0; t < t1;) { \
        const int64_t off = t % bs, n = bs - off < t1 - t ? bs - off : t1 - t; \
        const T *vb = vl + ((int64_t)it->block_table[t / bs] * bs + off) * kvd; \
        for (int64_t kvh = k0; kvh < k1; kvh++) { \
            const int64_t ga = h0 > kvh * group ? h0 - kvh * group : 0, gb = h1 < (kvh + 1) * group ? h1 - kvh * group : group; \
            const T *vr = vb + kvh * hd; \
            const float *sg = s + (kvh * group + ga) * ss + (t - t0); \
            float *o = partials + (kvh * group + ga) * part_stride + 2; \
            /* The path is chosen by the group, not by the heads taken: a head's bits do not \
               depend on which of its group's heads are computed with it. */ \
            if (HD > 0 && group <= 8) { \
                switch (gb - ga) { \
                case 1: VACC(vr, n, kvd, HD, 1, sg, ss, o, part_stride); break; \
                case 2: VACC(vr, n, kvd, HD, 2, sg, ss, o, part_stride); break; \
                case 3: VACC(vr, n, kvd, HD, 3, sg, ss, o, part_stride); break; \
                case 4: VACC(vr, n, kvd, HD, 4, sg, ss, o, part_stride); break; \
                case 5: VACC(vr, n, kvd, HD, 5, sg, ss, o, part_stride); break; \
                case 6: VACC(vr, n, kvd, HD, 6, sg, ss, o, part_stride); break; \
                case 7: VACC(vr, n, kvd, HD, 7, sg, ss, o, part_stride); break; \
                default: VACC(vr, n, kvd, HD, 8, sg, ss, o, part_stride); break; \
                } \
                continue; \
            } \
            for (int64_t i = 0; i < n; i++) \
                for (int64_t g = 0; g < gb - ga; g++) { \
                    const float p = sg[g * ss + i]; \
                    float *og = o + g * part_stride; \
                    for (int64_t d = 0; d < hd; d++) og[d] += p * (float)vr[i * kvd + d]; \
                } \
        } \
        t += n; \
    } \
}
ATTENTION_UNIT(attention_unit_f32_any, float, scores16_f32, vacc_f32, 0)
ATTENTION_UNIT(attention_unit_f32_64, float, scores16_f32, vacc_f32, 64)
ATTENTION_UNIT(attention_unit_f32_128, float, scores16_f32, vacc_f32, 128)
ATTENTION_UNIT(attention_unit_f16_any, _Float16, scores16_f16, vacc_f16, 0)
ATTENTION_UNIT(attention_unit_f16_64, _Float16, scores16_f16, vacc_f16, 64)
ATTENTION_UNIT(attention_unit_f16_128, _Float16, scores16_f16, vacc_f16, 128)
#undef ATTENTION_UNIT

// A context's chunks: at most TSR_ATTENTION_CHUNK positions each, and from 256 positions on a
// multiple of 4 chunks (from 128 on, of 2), so that one row's attention splits evenly across 2
// or 4 threads; lengths rounded up to 16 positions (whole 16-slot blocks). A function of the
// context length alone: a row's result depends neither on the other rows nor on the threads.
static inline int64_t chunk_length(int64_t n_ctx) {
    int64_t c = (n_ctx + TSR_ATTENTION_CHUNK - 1) / TSR_ATTENTION_CHUNK;
    const int64_t m = n_ctx >= 256 ? 4 : n_ctx >= 128 ? 2 : 1;
    c = (c + m - 1) / m * m;
    if (c < 1) c = 1;
    const int64_t len = ((n_ctx + c - 1) / c + 15) / 16 * 16;
    return len < TSR_ATTENTION_CHUNK ? len : TSR_ATTENTION_CHUNK;
}
static inline int64_t chunks_of(int64_t n_ctx) { return n_ctx <= 0 ? 0 : (n_ctx + chunk_length(n_ctx) - 1) / chunk_length(n_ctx); }
// An upper bound of chunks_of(n) for every n <= n_ctx (for sizing scratch).
static inline int64_t max_chunks_of(int64_t n_ctx) {
    const int64_t c = (n_ctx + TSR_ATTENTION_CHUNK - 1) / TSR_ATTENTION_CHUNK;
    return (c + 3) / 4 * 4 + 1;
}

int64_t tsr_attention_scratch_floats(int64_t n_items, int64_t max_ctx, int64_t n_heads, int64_t head_dim, int64_t threads) {
    return n_items * max_chunks_of(max_ctx) * n_heads * (head_dim + 2) + threads * n_heads * TSR_ATTENTION_CHUNK;
}

typedef struct {
    const tsr_attention_item *items; int64_t n_items;
    int64_t kv_stride, n_heads, n_kv_heads, head_dim, max_chunks; float scale;
    float *partials; float *scores; int kv_type;
} attention_job;

// Partials of (item, chunk, head): (m, l, o[head_dim]).
static inline float *partial_at(const attention_job *j, int64_t item, int64_t chunk, int64_t head) {
    return j->partials + ((item * j->max_chunks + chunk) * j->n_heads + head) * (j->head_dim + 2);
}

// Units (row, chunk) split across threads by work (positions, plus a fixed cost per unit), not
// by count: a context's last chunk is usually short.
static void attention_task(void *ctx, int thread, int threads) {
    const attention_job *j = (const attention_job *)ctx;
    enum { UNIT_COST = 16 };  // per-unit overhead, in positions
    int64_t total = 0;
    for (int64_t i = 0; i < j->n_items; i++) total += j->items[i].n_ctx + UNIT_COST * chunks_of(j->items[i].n_ctx);
    // This thread takes the units whose work starts in [lo, hi).
    const int64_t lo = total * thread / threads, hi = total * (thread + 1) / threads;
    float *s = j->scores + thread * j->n_heads * TSR_ATTENTION_CHUNK;
    const int64_t group = j->n_heads / j->n_kv_heads, stride = j->head_dim + 2;
    const int f16 = j->kv_type == TSR_GGML_F16;
    int64_t at = 0;
    for (int64_t i = 0; i < j->n_items && at < hi; i++) {
        const tsr_attention_item *it = &j->items[i];
        const int64_t chunks = chunks_of(it->n_ctx), clen = chunk_length(it->n_ctx);
        for (int64_t c = 0; c < chunks && at < hi; c++) {
            const int64_t t0 = c * clen, t1 = t0 + clen < it->n_ctx ? t0 + clen : it->n_ctx;
            const int64_t start = at;
            at += t1 - t0 + UNIT_COST;
            if (start < lo) continue;
            float *part = partial_at(j, i, c, 0);
            if (j->head_dim == 64) (f16 ? attention_unit_f16_64 : attention_unit_f32_64)(it, j->n_kv_heads, group, t0, t1, j->kv_stride, 64, j->scale, s, part, stride, 0, j->n_heads);
            else if (j->head_dim == 128) (f16 ? attention_unit_f16_128 : attention_unit_f32_128)(it, j->n_kv_heads, group, t0, t1, j->kv_stride, 128, j->scale, s, part, stride, 0, j->n_heads);
            else (f16 ? attention_unit_f16_any : attention_unit_f32_any)(it, j->n_kv_heads, group, t0, t1, j->kv_stride, j->head_dim, j->scale, s, part, stride, 0, j->n_heads);
        }
    }
}

// One head's chunks merged in order (its partials (m, l, o) every `chunk_stride` floats):
// out = Σ_c e^(m_c − M)·o_c / Σ_c e^(m_c − M)·l_c.
static void merge_head(const float *p0, int64_t chunk_stride, int64_t chunks, int64_t head_dim, float *out) {
    if (chunks == 0) { memset(out, 0, (size_t)head_dim * sizeof(float)); return; }
    float mx = p0[0];
    for (int64_t c = 1; c < chunks; c++) mx = fmaxf(mx, p0[c * chunk_stride]);
    float w = expf(p0[0] - mx), l = w * p0[1];
    for (int64_t d = 0; d < head_dim; d++) out[d] = w * p0[2 + d];
    for (int64_t c = 1; c < chunks; c++) {
        const float *p = p0 + c * chunk_stride;
        w = expf(p[0] - mx);
        l += w * p[1];
        for (int64_t d = 0; d < head_dim; d++) out[d] += w * p[2 + d];
    }
    const float inv = 1.0f / l;
    for (int64_t d = 0; d < head_dim; d++) out[d] *= inv;
}

void tsr_attention_rows(const tsr_attention_item *items, int64_t n_items, int64_t kv_stride,
                        int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                        float scale, float *scratch, int64_t max_ctx, int kv_type, int64_t threads) {
    const int64_t max_chunks = max_chunks_of(max_ctx);
    attention_job job = { items, n_items, kv_stride, n_heads, n_kv_heads, head_dim, max_chunks, scale,
                          scratch, scratch + n_items * max_chunks * n_heads * (head_dim + 2), kv_type };
    tsr_parallel_limit(attention_task, &job, threads < 1 ? 1 : (int)threads);
    for (int64_t i = 0; i < n_items; i++) {
        const int64_t chunks = chunks_of(items[i].n_ctx);
        for (int64_t h = 0; h < n_heads; h++)
            merge_head(partial_at(&job, i, 0, h), n_heads * (head_dim + 2), chunks, head_dim, items[i].out + h * head_dim);
    }
}

int64_t tsr_attention_chunk_count(int64_t n_ctx) { return chunks_of(n_ctx); }

int64_t tsr_attention_partials_floats(int64_t max_ctx, int64_t n_heads, int64_t head_dim) {
    return max_chunks_of(max_ctx) * n_heads * (head_dim + 2);
}

void tsr_attention_partials(const tsr_attention_item *item, int64_t kv_stride, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                            int64_t c_begin, int64_t c_end, int64_t h_begin, int64_t h_end, float scale, float *partials,
                            float *scores, int kv_type) {
    const int64_t chunks = chunks_of(item->n_ctx), clen = chunk_length(item->n_ctx), stride = head_dim + 2;
    if (c_end > chunks) c_end = chunks;
    if (h_begin < 0) h_begin = 0;
    if (h_end > n_heads) h_end = n_heads;
    if (h_begin >= h_end) return;
    const int64_t group = n_heads / n_kv_heads, per_chunk = n_heads * stride;
    const int f16 = kv_type == TSR_GGML_F16;
    for (int64_t c = c_begin < 0 ? 0 : c_begin; c < c_end; c++) {
        const int64_t t0 = c * clen, t1 = t0 + clen < item->n_ctx ? t0 + clen : item->n_ctx;
        float *part = partials + c * per_chunk;
        if (head_dim == 64) (f16 ? attention_unit_f16_64 : attention_unit_f32_64)(item, n_kv_heads, group, t0, t1, kv_stride, 64, scale, scores, part, stride, h_begin, h_end);
        else if (head_dim == 128) (f16 ? attention_unit_f16_128 : attention_unit_f32_128)(item, n_kv_heads, group, t0, t1, kv_stride, 128, scale, scores, part, stride, h_begin, h_end);
        else (f16 ? attention_unit_f16_any : attention_unit_f32_any)(item, n_kv_heads, group, t0, t1, kv_stride, head_dim, scale, scores, part, stride, h_begin, h_end);
    }
}

void tsr_attention_merge(const float *partials, int64_t n_ctx, int64_t n_heads, int64_t head_dim, int64_t h_begin, int64_t h_end, float *out) {
    const int64_t stride = head_dim + 2;
    for (int64_t h = h_begin < 0 ? 0 : h_begin; h < h_end && h < n_heads; h++)
        merge_head(partials + h * stride, n_heads * stride, chunks_of(n_ctx), head_dim, out + h * head_dim);
}

void tsr_causal_softmax_rows(float *scores, int64_t rows, int64_t cols, int64_t ld,
                             int64_t first_pos, float scale) {
    for (int64_t i = 0; i < rows; i++) {
        float *s = scores + i * ld;
        int64_t visible = first_pos + i + 1;
        if (visible > cols) visible = cols;
        for (int64_t j = 0; j < visible; j++) s[j] *= scale;
        tsr_softmax(s, visible);
        for (int64_t j = visible; j < cols; j++) s[j] = 0.0f;
    }
}
