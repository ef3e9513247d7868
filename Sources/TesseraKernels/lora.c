// Segmented LoRA for small ranks: each row gets its own adapter's delta
// y[row] += scale · (x[row] · Aᵀ) · Bᵀ, for many segments in one call (Punica's SGMV idea),
// instead of two BLAS calls per segment, whose fixed cost dominates at rank 8.
#include "tessera_kernels.h"
#include "simd.h"

TSR_MULTIVERSION
void tsr_lora_segments(const tsr_lora_segment *segments, int64_t segment_count,
                       const float *x, int64_t x_stride, int64_t inputs,
                       float *y, int64_t y_stride, int64_t outputs, float *shrunk) {
    for (int64_t s = 0; s < segment_count; s++) {
        const tsr_lora_segment *g = &segments[s];
        for (int64_t row = g->row_begin; row < g->row_end; row++) {
            const float *xr = x + row * x_stride;
            float *yr = y + row * y_stride;
            // shrink: t = A · x  (A is rank × inputs)
            for (int64_t r = 0; r < g->rank; r++) shrunk[r] = tsr_dot(g->a + r * inputs, xr, inputs) * g->scale;
            // expand: y += Bᵀᵀ · t, with B stored transposed (rank × outputs) so each step is an axpy
            for (int64_t r = 0; r < g->rank; r++) tsr_axpy(yr, shrunk[r], g->b_t + r * outputs, outputs);
        }
    }
}
