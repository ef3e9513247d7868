// Attention over a sequence's own cached keys and values.
#include "tessera_kernels.h"
#include "simd.h"
#include <math.h>
#include <string.h>

TSR_MULTIVERSION
void tsr_attention_row(float *out, const float *q, const float *k, const float *v,
                       int64_t n_ctx, int64_t kv_stride, int64_t n_heads, int64_t n_kv_heads,
                       int64_t head_dim, float scale, float *scratch) {
    const int64_t group = n_heads / n_kv_heads;
    for (int64_t h = 0; h < n_heads; h++) {
        const float *qh = q + h * head_dim;
        const int64_t kvh = h / group;
        float *o = out + h * head_dim;
        for (int64_t t = 0; t < n_ctx; t++) {
            scratch[t] = tsr_dot(qh, k + t * kv_stride + kvh * head_dim, head_dim) * scale;
        }
        tsr_softmax(scratch, n_ctx);
        memset(o, 0, (size_t)head_dim * sizeof(float));
        for (int64_t t = 0; t < n_ctx; t++) {
            tsr_axpy(o, scratch[t], v + t * kv_stride + kvh * head_dim, head_dim);
        }
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
