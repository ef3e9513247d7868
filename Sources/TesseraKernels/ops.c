// Elementwise kernels and RMSNorm.
#include "tessera_kernels.h"
#include "simd.h"
#include <math.h>

TSR_MULTIVERSION
void tsr_rmsnorm_rows(float *out, const float *x, const float *weight, int64_t rows, int64_t n, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        // Accumulate in double: HF computes the variance in float32 of the upcast input;
        // double keeps us within its rounding for any row length.
        double ss = 0.0;
        for (int64_t i = 0; i < n; i++) ss += (double)xr[i] * (double)xr[i];
        const float inv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
        for (int64_t i = 0; i < n; i++) o[i] = weight[i] * (xr[i] * inv);
    }
}

TSR_MULTIVERSION
void tsr_silu_mul_rows(float *gate, int64_t gate_stride, const float *up, int64_t up_stride,
                       int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++) {
        float *g = gate + r * gate_stride;
        const float *u = up + r * up_stride;
        for (int64_t i = 0; i < n; i++) {
            const float v = g[i];
            g[i] = (v / (1.0f + expf(-v))) * u[i];
        }
    }
}

TSR_MULTIVERSION
void tsr_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

void tsr_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    float mx = x[0];
    for (int64_t i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

int64_t tsr_argmax(const float *x, int64_t n) {
    if (n <= 0) return -1;
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}
