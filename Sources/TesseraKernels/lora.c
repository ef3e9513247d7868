// Segmented LoRA for small ranks: each row gets its own adapter's delta
// y[row] += scale · (x[row] · Aᵀ) · Bᵀ, for many segments in one call (Punica's SGMV idea),
// instead of two BLAS calls per segment, whose fixed cost dominates at rank 8.
#include "tessera_kernels.h"
#include "simd.h"

#define LORA_RANK_CHUNK 256   // ranks shrunk at a time (the shrunk values live on the stack)

// One row against its segment's adapter: shrink t = s · A · x, expand y += Bᵀᵀ · t (B stored
// transposed, rank × outputs, so each rank is an axpy), ranks in order, a chunk at a time.
// T: the adapter's element type (f16 halves the bytes each row streams).
#define LORA_ROW(NAME, T) \
TSR_MULTIVERSION \
static void NAME(const tsr_lora_segment *g, const float *xr, int64_t inputs, float *yr, int64_t outputs) { \
    _Pragma("clang fp reassociate(on) contract(fast)") \
    const T *a = (const T *)g->a, *b = (const T *)g->b_t; \
    float t[LORA_RANK_CHUNK]; \
    for (int64_t r0 = 0; r0 < g->rank; r0 += LORA_RANK_CHUNK) { \
        const int64_t r1 = r0 + LORA_RANK_CHUNK < g->rank ? r0 + LORA_RANK_CHUNK : g->rank; \
        for (int64_t r = r0; r < r1; r++) { \
            const T *ar = a + r * inputs; \
            float s = 0; \
            for (int64_t i = 0; i < inputs; i++) s += (float)ar[i] * xr[i]; \
            t[r - r0] = s * g->scale; \
        } \
        for (int64_t r = r0; r < r1; r++) { \
            const T *br = b + r * outputs; \
            const float tr = t[r - r0]; \
            for (int64_t o = 0; o < outputs; o++) yr[o] += tr * (float)br[o]; \
        } \
    } \
}
LORA_ROW(lora_row_f32, float)
LORA_ROW(lora_row_f16, _Float16)
#undef LORA_ROW

TSR_MULTIVERSION
void tsr_f32_to_f16_array(const float *src, uint16_t *dst, int64_t n) {
    _Float16 *d = (_Float16 *)dst;
    for (int64_t i = 0; i < n; i++) d[i] = (_Float16)src[i];
}

typedef struct {
    const tsr_lora_segment *segments; int64_t segment_count;
    const float *x; int64_t x_stride, inputs; float *y; int64_t y_stride;
} lora_job;

// Rows split across threads by work (rank · (inputs + outputs) each: the bytes a row streams),
// not by count: one call mixes projections of different widths (q with k and v, gate with up).
static void lora_task(void *ctx, int thread, int threads) {
    const lora_job *j = (const lora_job *)ctx;
    int64_t total = 0;
    for (int64_t s = 0; s < j->segment_count; s++) {
        const tsr_lora_segment *g = &j->segments[s];
        total += (g->row_end - g->row_begin) * g->rank * (j->inputs + g->outputs);
    }
    // This thread takes the rows whose work starts in [lo, hi).
    const int64_t lo = total * thread / threads, hi = total * (thread + 1) / threads;
    int64_t at = 0;
    for (int64_t s = 0; s < j->segment_count && at < hi; s++) {
        const tsr_lora_segment *g = &j->segments[s];
        const int64_t cost = g->rank * (j->inputs + g->outputs);
        for (int64_t row = g->row_begin; row < g->row_end && at < hi; row++, at += cost) {
            if (at < lo) continue;
            (g->type == TSR_GGML_F16 ? lora_row_f16 : lora_row_f32)(g, j->x + row * j->x_stride, j->inputs, j->y + row * j->y_stride + g->y_offset, g->outputs);
        }
    }
}

void tsr_lora_segments(const tsr_lora_segment *segments, int64_t segment_count,
                       const float *x, int64_t x_stride, int64_t inputs,
                       float *y, int64_t y_stride) {
    lora_job job = { segments, segment_count, x, x_stride, inputs, y, y_stride };
    tsr_parallel(lora_task, &job);
}
