// y(rows, outputs) (+)= alpha · x(rows, inputs) · W(outputs, inputs)ᵀ for few rows (decode):
// streams W from memory once, each weight row serving every input row while it is in L1.
// Groups of four rows share each load of W (dot4); with `batch_invariant` every element is
// one tsr_dot in a fixed order instead, so a row's result is bitwise the same whatever the
// row count or thread split.
#include "tessera_kernels.h"
#include "simd.h"

typedef struct {
    const float *x; int64_t x_stride; int64_t rows;
    const float *w; int64_t outputs; int64_t inputs;
    float *y; int64_t y_stride; float alpha; int accumulate; int invariant;
} matmul_job;

// Four rows against one weight row: one load of w for four FMAs.
TSR_MULTIVERSION
static void dot4(const float *w, const float *x0, const float *x1, const float *x2, const float *x3, int64_t n, float out[4]) {
#pragma clang fp reassociate(on) contract(fast)
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t i = 0; i < n; i++) {
        const float wv = w[i];
        s0 += wv * x0[i];
        s1 += wv * x1[i];
        s2 += wv * x2[i];
        s3 += wv * x3[i];
    }
    out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3;
}

TSR_MULTIVERSION
static void matmul_range(const matmul_job *j, int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; o++) {
        const float *w = j->w + o * j->inputs;  // stays in L1 while every row uses it
        int64_t r = 0;
        if (!j->invariant) {
            for (; r + 4 <= j->rows; r += 4) {
                const float *x = j->x + r * j->x_stride;
                float s4[4];
                dot4(w, x, x + j->x_stride, x + 2 * j->x_stride, x + 3 * j->x_stride, j->inputs, s4);
                for (int k = 0; k < 4; k++) {
                    float *dst = j->y + (r + k) * j->y_stride + o;
                    *dst = j->accumulate ? *dst + s4[k] * j->alpha : s4[k] * j->alpha;
                }
            }
        }
        for (; r < j->rows; r++) {
            const float s = tsr_dot(w, j->x + r * j->x_stride, j->inputs) * j->alpha;
            float *dst = j->y + r * j->y_stride + o;
            *dst = j->accumulate ? *dst + s : s;
        }
    }
}

static void matmul_task(void *ctx, int thread, int threads) {
    const matmul_job *j = (const matmul_job *)ctx;
    // Equal ranges of outputs, rounded to 16 so threads do not share cache lines of y.
    const int64_t per = ((j->outputs + threads - 1) / threads + 15) / 16 * 16;
    const int64_t begin = per * thread;
    const int64_t end = begin + per < j->outputs ? begin + per : j->outputs;
    if (begin < end) matmul_range(j, begin, end);
}

void tsr_matmul_few_rows(const float *x, int64_t x_stride, int64_t rows, const float *w, int64_t outputs, int64_t inputs,
                         float *y, int64_t y_stride, float alpha, int accumulate, int batch_invariant) {
    matmul_job job = { x, x_stride, rows, w, outputs, inputs, y, y_stride, alpha, accumulate, batch_invariant };
    tsr_parallel(matmul_task, &job);
}
