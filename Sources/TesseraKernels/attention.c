// Attention over a sequence's own cached keys and values.
#include "tessera_kernels.h"
#include "simd.h"
#include <math.h>
#include <string.h>

// Position t of the sequence lives in block table[t / block_size], slot t % block_size.
static inline int64_t kv_row(const int32_t *table, int64_t block_size, int64_t t) {
    return (int64_t)table[t / block_size] * block_size + t % block_size;
}

// One head of one query row: the unit both entry points share, so a row's result does not
// depend on how rows and heads were split across threads. Positions go a block at a time (a
// block's rows are contiguous in the pool); HD > 0 is a compile-time head size (the output
// stays in registers), 0 the general case.
#define ATTENTION_HEAD(NAME, HD) \
TSR_MULTIVERSION \
static void NAME(float *out, const float *q, const float *k, const float *v, \
                 const int32_t *block_table, int64_t block_size, int64_t n_ctx, int64_t kv_stride, \
                 int64_t h, int64_t group, int64_t head_dim_, float scale, float *scratch) { \
    const int64_t head_dim = HD > 0 ? HD : head_dim_; \
    const float *qh = q + h * head_dim; \
    const int64_t kvh = h / group; \
    for (int64_t t0 = 0; t0 < n_ctx; t0 += block_size) { \
        const int64_t n = n_ctx - t0 < block_size ? n_ctx - t0 : block_size; \
        const float *kb = k + (int64_t)block_table[t0 / block_size] * block_size * kv_stride + kvh * head_dim; \
        for (int64_t i = 0; i < n; i++) scratch[t0 + i] = tsr_dot(qh, kb + i * kv_stride, head_dim) * scale; \
    } \
    tsr_softmax(scratch, n_ctx); \
    float acc[HD > 0 ? HD : 1]; \
    float *o = HD > 0 ? acc : out + h * head_dim; \
    memset(o, 0, (size_t)head_dim * sizeof(float)); \
    for (int64_t t0 = 0; t0 < n_ctx; t0 += block_size) { \
        const int64_t n = n_ctx - t0 < block_size ? n_ctx - t0 : block_size; \
        const float *vb = v + (int64_t)block_table[t0 / block_size] * block_size * kv_stride + kvh * head_dim; \
        for (int64_t i = 0; i < n; i++) tsr_axpy(o, scratch[t0 + i], vb + i * kv_stride, head_dim); \
    } \
    if (HD > 0) memcpy(out + h * head_dim, acc, sizeof(acc)); \
}
ATTENTION_HEAD(attention_head_any, 0)
ATTENTION_HEAD(attention_head_64, 64)
ATTENTION_HEAD(attention_head_128, 128)
#undef ATTENTION_HEAD

static inline void attention_head(float *out, const float *q, const float *k, const float *v,
                                  const int32_t *block_table, int64_t block_size, int64_t n_ctx, int64_t kv_stride,
                                  int64_t h, int64_t group, int64_t head_dim, float scale, float *scratch) {
    if (head_dim == 64) attention_head_64(out, q, k, v, block_table, block_size, n_ctx, kv_stride, h, group, head_dim, scale, scratch);
    else if (head_dim == 128) attention_head_128(out, q, k, v, block_table, block_size, n_ctx, kv_stride, h, group, head_dim, scale, scratch);
    else attention_head_any(out, q, k, v, block_table, block_size, n_ctx, kv_stride, h, group, head_dim, scale, scratch);
}

void tsr_attention_row(float *out, const float *q, const float *k, const float *v,
                       const int32_t *block_table, int64_t block_size,
                       int64_t n_ctx, int64_t kv_stride, int64_t n_heads, int64_t n_kv_heads,
                       int64_t head_dim, float scale, float *scratch) {
    for (int64_t h = 0; h < n_heads; h++)
        attention_head(out, q, k, v, block_table, block_size, n_ctx, kv_stride, h, n_heads / n_kv_heads, head_dim, scale, scratch);
}

typedef struct {
    const tsr_attention_item *items; int64_t n_items;
    int64_t kv_stride, n_heads, n_kv_heads, head_dim; float scale; float *scratch; int64_t scratch_stride;
} attention_job;

static void attention_task(void *ctx, int thread, int threads) {
    const attention_job *j = (const attention_job *)ctx;
    const int64_t units = j->n_items * j->n_heads;
    const int64_t per = (units + threads - 1) / threads;
    const int64_t lo = per * thread, hi = lo + per < units ? lo + per : units;
    float *scratch = j->scratch + thread * j->scratch_stride;
    for (int64_t u = lo; u < hi; u++) {
        const tsr_attention_item *it = &j->items[u / j->n_heads];
        attention_head(it->out, it->q, it->k, it->v, it->block_table, it->block_size, it->n_ctx, j->kv_stride,
                       u % j->n_heads, j->n_heads / j->n_kv_heads, j->head_dim, j->scale, scratch);
    }
}

void tsr_attention_rows(const tsr_attention_item *items, int64_t n_items, int64_t kv_stride,
                        int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                        float scale, float *scratch, int64_t scratch_stride) {
    attention_job job = { items, n_items, kv_stride, n_heads, n_kv_heads, head_dim, scale, scratch, scratch_stride };
    tsr_parallel(attention_task, &job);
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
