// Elementwise kernels and RMSNorm.
#include "tessera_kernels.h"
#include "simd.h"
#include <math.h>

// Batches of at least this many rows split their rows across the pool.
#define PARALLEL_MIN_ROWS 4

TSR_MULTIVERSION
static void rmsnorm_rows(float *out, const float *x, const float *weight, int64_t rows, int64_t n, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        // Accumulate in double: HF computes the variance in float32 of the upcast input;
        // double keeps us within its rounding for any row length.
        double ss = 0.0;
        {
            _Pragma("clang fp reassociate(on)")
            for (int64_t i = 0; i < n; i++) ss += (double)xr[i] * (double)xr[i];
        }
        const float inv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
        for (int64_t i = 0; i < n; i++) o[i] = weight[i] * (xr[i] * inv);
    }
}

// SiLU(gate) · up, the sigmoid from e^(−|v|) so that the loop vectorises (gate and up are
// distinct ranges of one row: restrict lets the compiler see it).
static inline __attribute__((always_inline)) void silu_mul_row(float *restrict g, const float *restrict u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float v = g[i];
        const float e = tsr_exp_nonpositive(v < 0 ? v : -v);
        const float sigmoid = (v < 0 ? e : 1.0f) / (1.0f + e);
        g[i] = v * sigmoid * u[i];
    }
}

TSR_MULTIVERSION
static void silu_mul_rows(float *gate, int64_t gate_stride, const float *up, int64_t up_stride, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++) {
        float *g = gate + r * gate_stride;
        const float *u = up + r * up_stride;
        silu_mul_row(g, u, n);
    }
}

typedef struct {
    int kind;  // 0 rmsnorm, 1 silu·mul
    float *out; const float *x; const float *weight; int64_t x_stride, out_stride, rows, n; float eps;
} rows_job;

static void rows_task(void *ctx, int thread, int threads) {
    const rows_job *j = (const rows_job *)ctx;
    int64_t lo, hi;
    tsr_thread_share(j->rows, thread, threads, &lo, &hi);
    if (lo >= hi) return;
    if (j->kind == 0) rmsnorm_rows(j->out + lo * j->n, j->x + lo * j->n, j->weight, hi - lo, j->n, j->eps);
    else silu_mul_rows(j->out + lo * j->out_stride, j->out_stride, j->x + lo * j->x_stride, j->x_stride, hi - lo, j->n);
}

void tsr_rmsnorm_rows(float *out, const float *x, const float *weight, int64_t rows, int64_t n, float eps) {
    if (rows < PARALLEL_MIN_ROWS) { rmsnorm_rows(out, x, weight, rows, n, eps); return; }
    rows_job job = { 0, out, x, weight, n, n, rows, n, eps };
    tsr_parallel(rows_task, &job);
}

void tsr_silu_mul_rows(float *gate, int64_t gate_stride, const float *up, int64_t up_stride,
                       int64_t rows, int64_t n) {
    if (rows < PARALLEL_MIN_ROWS) { silu_mul_rows(gate, gate_stride, up, up_stride, rows, n); return; }
    rows_job job = { 1, gate, up, NULL, up_stride, gate_stride, rows, n, 0 };
    tsr_parallel(rows_task, &job);
}

TSR_MULTIVERSION
void tsr_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

// Vectorised: the max in 16 lanes, e^(x − max) by tsr_exp_nonpositive (decode attention's), the
// sum in reassociated f32 lanes (n terms in [0, 1], one of them 1). Prefill attention calls this
// once per (head, query row): libm's expf with a double sum had been a tenth of a prefill.
TSR_MULTIVERSION
void tsr_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    float mm[16];
    for (int j = 0; j < 16; j++) mm[j] = x[0];
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) mm[j] = x[i + j] > mm[j] ? x[i + j] : mm[j];
    float mx = mm[0];
    for (int j = 1; j < 16; j++) mx = mm[j] > mx ? mm[j] : mx;
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float sum = 0;
    {
        _Pragma("clang fp reassociate(on)")
        for (int64_t k = 0; k < n; k++) { x[k] = tsr_exp_nonpositive(x[k] - mx); sum += x[k]; }
    }
    const float inv = 1.0f / sum;
    for (int64_t k = 0; k < n; k++) x[k] *= inv;
}

int64_t tsr_argmax(const float *x, int64_t n) {
    if (n <= 0) return -1;
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}
