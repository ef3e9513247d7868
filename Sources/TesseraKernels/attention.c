// Attention over a sequence's own cached keys and values.
#include "tessera_kernels.h"
#include "simd.h"
#include <math.h>
#include <string.h>

// Position t of the sequence lives in block table[t / block_size], slot t % block_size.
static inline int64_t kv_row(const int32_t *table, int64_t block_size, int64_t t) {
    return (int64_t)table[t / block_size] * block_size + t % block_size;
}

// One unit: positions [t0, t1) of one row against kv head kvh, for each of the kv head's
// `group` query heads: the chunk's max score m, Σ e^(s − m) and Σ e^(s − m)·v, written to
// partials + g·part_stride as (m, l, o[head_dim]). The chunk's keys and values come from memory
// once; the group's other heads find them in cache. HD > 0 is a compile-time head size (the
// output accumulates in registers), 0 the general case.
#define ATTENTION_UNIT(NAME, HD) \
TSR_MULTIVERSION \
static void NAME(const tsr_attention_item *it, int64_t kvh, int64_t group, int64_t t0, int64_t t1, int64_t kv_stride, \
                 int64_t head_dim_, float scale, float *s, float *partials, int64_t part_stride) { \
    const int64_t head_dim = HD > 0 ? HD : head_dim_, bs = it->block_size; \
    for (int64_t g = 0; g < group; g++) { \
        const float *qh = it->q + (kvh * group + g) * head_dim; \
        for (int64_t t = t0; t < t1;) { \
            const int64_t off = t % bs, n = bs - off < t1 - t ? bs - off : t1 - t; \
            const float *kb = it->k + ((int64_t)it->block_table[t / bs] * bs + off) * kv_stride + kvh * head_dim; \
            for (int64_t i = 0; i < n; i++) s[t - t0 + i] = tsr_dot(qh, kb + i * kv_stride, head_dim) * scale; \
            t += n; \
        } \
        float m = s[0]; \
        for (int64_t i = 1; i < t1 - t0; i++) m = s[i] > m ? s[i] : m; \
        float l = 0; \
        { \
            _Pragma("clang fp reassociate(on)") \
            for (int64_t i = 0; i < t1 - t0; i++) { s[i] = tsr_exp_nonpositive(s[i] - m); l += s[i]; } \
        } \
        float *part = partials + g * part_stride; \
        float acc[HD > 0 ? HD : 1]; \
        float *o = HD > 0 ? acc : part + 2; \
        memset(o, 0, (size_t)head_dim * sizeof(float)); \
        for (int64_t t = t0; t < t1;) { \
            const int64_t off = t % bs, n = bs - off < t1 - t ? bs - off : t1 - t; \
            const float *vb = it->v + ((int64_t)it->block_table[t / bs] * bs + off) * kv_stride + kvh * head_dim; \
            for (int64_t i = 0; i < n; i++) tsr_axpy(o, s[t - t0 + i], vb + i * kv_stride, head_dim); \
            t += n; \
        } \
        if (HD > 0) memcpy(part + 2, acc, sizeof(acc)); \
        part[0] = m; \
        part[1] = l; \
    } \
}
ATTENTION_UNIT(attention_unit_any, 0)
ATTENTION_UNIT(attention_unit_64, 64)
ATTENTION_UNIT(attention_unit_128, 128)
#undef ATTENTION_UNIT

static inline int64_t chunks_of(int64_t n_ctx) { return (n_ctx + TSR_ATTENTION_CHUNK - 1) / TSR_ATTENTION_CHUNK; }

int64_t tsr_attention_scratch_floats(int64_t n_items, int64_t max_ctx, int64_t n_heads, int64_t head_dim, int64_t threads) {
    return n_items * chunks_of(max_ctx) * n_heads * (head_dim + 2) + threads * TSR_ATTENTION_CHUNK;
}

typedef struct {
    const tsr_attention_item *items; int64_t n_items;
    int64_t kv_stride, n_heads, n_kv_heads, head_dim, max_chunks; float scale;
    float *partials; float *scores;
} attention_job;

// Partials of (item, chunk, head): (m, l, o[head_dim]).
static inline float *partial_at(const attention_job *j, int64_t item, int64_t chunk, int64_t head) {
    return j->partials + ((item * j->max_chunks + chunk) * j->n_heads + head) * (j->head_dim + 2);
}

static void attention_task(void *ctx, int thread, int threads) {
    const attention_job *j = (const attention_job *)ctx;
    int64_t total = 0;
    for (int64_t i = 0; i < j->n_items; i++) total += j->n_kv_heads * chunks_of(j->items[i].n_ctx);
    int64_t lo, hi;
    tsr_thread_share(total, thread, threads, &lo, &hi);
    float *s = j->scores + thread * TSR_ATTENTION_CHUNK;
    const int64_t group = j->n_heads / j->n_kv_heads;
    int64_t first = 0;  // the first unit of item i
    for (int64_t i = 0; i < j->n_items && first < hi; i++) {
        const tsr_attention_item *it = &j->items[i];
        const int64_t chunks = chunks_of(it->n_ctx), units = j->n_kv_heads * chunks;
        for (int64_t u = lo > first ? lo - first : 0; u < units && first + u < hi; u++) {
            const int64_t kvh = u / chunks, c = u % chunks;
            const int64_t t0 = c * TSR_ATTENTION_CHUNK;
            const int64_t t1 = t0 + TSR_ATTENTION_CHUNK < it->n_ctx ? t0 + TSR_ATTENTION_CHUNK : it->n_ctx;
            float *part = partial_at(j, i, c, kvh * group);
            const int64_t stride = j->head_dim + 2;
            if (j->head_dim == 64) attention_unit_64(it, kvh, group, t0, t1, j->kv_stride, 64, j->scale, s, part, stride);
            else if (j->head_dim == 128) attention_unit_128(it, kvh, group, t0, t1, j->kv_stride, 128, j->scale, s, part, stride);
            else attention_unit_any(it, kvh, group, t0, t1, j->kv_stride, j->head_dim, j->scale, s, part, stride);
        }
        first += units;
    }
}

void tsr_attention_rows(const tsr_attention_item *items, int64_t n_items, int64_t kv_stride,
                        int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                        float scale, float *scratch, int64_t max_ctx) {
    const int64_t max_chunks = chunks_of(max_ctx);
    attention_job job = { items, n_items, kv_stride, n_heads, n_kv_heads, head_dim, max_chunks, scale,
                          scratch, scratch + n_items * max_chunks * n_heads * (head_dim + 2) };
    tsr_parallel(attention_task, &job);
    // Merge each head's chunks in order: out = Σ_c e^(m_c − M)·o_c / Σ_c e^(m_c − M)·l_c.
    for (int64_t i = 0; i < n_items; i++) {
        const int64_t chunks = chunks_of(items[i].n_ctx);
        for (int64_t h = 0; h < n_heads; h++) {
            float *out = items[i].out + h * head_dim;
            if (chunks == 0) { memset(out, 0, (size_t)head_dim * sizeof(float)); continue; }
            float mx = partial_at(&job, i, 0, h)[0];
            for (int64_t c = 1; c < chunks; c++) mx = fmaxf(mx, partial_at(&job, i, c, h)[0]);
            const float *p0 = partial_at(&job, i, 0, h);
            float w = expf(p0[0] - mx), l = w * p0[1];
            for (int64_t d = 0; d < head_dim; d++) out[d] = w * p0[2 + d];
            for (int64_t c = 1; c < chunks; c++) {
                const float *p = partial_at(&job, i, c, h);
                w = expf(p[0] - mx);
                l += w * p[1];
                for (int64_t d = 0; d < head_dim; d++) out[d] += w * p[2 + d];
            }
            const float inv = 1.0f / l;
            for (int64_t d = 0; d < head_dim; d++) out[d] *= inv;
        }
    }
}

void tsr_gather_rows(float *dst, const float *src, const int32_t *block_table, int64_t block_size,
                     int64_t n_rows, int64_t row_width) {
    for (int64_t t = 0; t < n_rows; t++) {
        memcpy(dst + t * row_width, src + kv_row(block_table, block_size, t) * row_width, (size_t)row_width * sizeof(float));
    }
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
