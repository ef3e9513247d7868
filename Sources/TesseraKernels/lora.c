// Segmented LoRA for small ranks: each row gets its own adapter's delta
// y[row] += scale · (x[row] · Aᵀ) · Bᵀ, for many segments in one call (Punica's SGMV idea),
// instead of two BLAS calls per segment, whose fixed cost dominates at rank 8.
#include "tessera_kernels.h"
#include "simd.h"

#define LORA_RANK_CHUNK 256   // ranks shrunk at a time (the shrunk values live on the stack)

// One row against its segment's adapter: shrink t = s · A · x, expand y += Bᵀᵀ · t (B stored
// transposed, rank × outputs, so each rank is an axpy), ranks in order, a chunk at a time.
TSR_MULTIVERSION
static void lora_row(const tsr_lora_segment *g, const float *xr, int64_t inputs, float *yr, int64_t outputs) {
    float t[LORA_RANK_CHUNK];
    for (int64_t r0 = 0; r0 < g->rank; r0 += LORA_RANK_CHUNK) {
        const int64_t r1 = r0 + LORA_RANK_CHUNK < g->rank ? r0 + LORA_RANK_CHUNK : g->rank;
        for (int64_t r = r0; r < r1; r++) t[r - r0] = tsr_dot(g->a + r * inputs, xr, inputs) * g->scale;
        for (int64_t r = r0; r < r1; r++) tsr_axpy(yr, t[r - r0], g->b_t + r * outputs, outputs);
    }
}

typedef struct {
    const tsr_lora_segment *segments; int64_t segment_count;
    const float *x; int64_t x_stride, inputs; float *y; int64_t y_stride, outputs;
} lora_job;

static void lora_task(void *ctx, int thread, int threads) {
    const lora_job *j = (const lora_job *)ctx;
    int64_t total = 0;
    for (int64_t s = 0; s < j->segment_count; s++) total += j->segments[s].row_end - j->segments[s].row_begin;
    int64_t lo, hi;
    tsr_thread_share(total, thread, threads, &lo, &hi);
    int64_t first = 0;  // the flattened index of segment s's first row
    for (int64_t s = 0; s < j->segment_count && first < hi; s++) {
        const tsr_lora_segment *g = &j->segments[s];
        const int64_t n = g->row_end - g->row_begin;
        for (int64_t i = lo > first ? lo - first : 0; i < n && first + i < hi; i++) {
            const int64_t row = g->row_begin + i;
            lora_row(g, j->x + row * j->x_stride, j->inputs, j->y + row * j->y_stride, j->outputs);
        }
        first += n;
    }
}

void tsr_lora_segments(const tsr_lora_segment *segments, int64_t segment_count,
                       const float *x, int64_t x_stride, int64_t inputs,
                       float *y, int64_t y_stride, int64_t outputs) {
    lora_job job = { segments, segment_count, x, x_stride, inputs, y, y_stride, outputs };
    tsr_parallel(lora_task, &job);
}
