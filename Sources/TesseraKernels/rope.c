// Rotary position embedding, rotate-half form (HF Llama's apply_rotary_pos_emb).
// GGUF checkpoints store q/k rows permuted for llama.cpp's adjacent-pair RoPE; the
// loader un-permutes them once, so this single form serves both sources.
#include "tessera_kernels.h"
#include <math.h>

void tsr_rope_angles(float *cos_out, float *sin_out, int64_t pos, int64_t rot_dim, float freq_base) {
    const int64_t half = rot_dim / 2;
    for (int64_t i = 0; i < half; i++) {
        // HF: inv_freq = 1 / base^(2i/d) in float32, angle = pos * inv_freq in float32.
        const float inv_freq = 1.0f / powf(freq_base, (float)(2 * i) / (float)rot_dim);
        const float angle = (float)pos * inv_freq;
        cos_out[i] = cosf(angle);
        sin_out[i] = sinf(angle);
    }
}

void tsr_rope_neox(float *x, int64_t n_heads, int64_t head_dim, int64_t rot_dim,
                   const float *cos_t, const float *sin_t) {
    const int64_t half = rot_dim / 2;
    for (int64_t h = 0; h < n_heads; h++) {
        float *v = x + h * head_dim;
        for (int64_t i = 0; i < half; i++) {
            const float a = v[i], b = v[i + half];
            v[i] = a * cos_t[i] - b * sin_t[i];
            v[i + half] = b * cos_t[i] + a * sin_t[i];
        }
    }
}
