// Private helpers shared by the kernels. Reductions allow reassociation so that the
// compiler vectorises them; the order is fixed for a given build and CPU feature level.
#ifndef TESSERA_SIMD_H
#define TESSERA_SIMD_H
#include <stdint.h>

// Per-ISA clones chosen at load time by the dynamic linker (ifunc), so one binary
// runs everywhere and still uses AVX2/FMA or AVX-512 where the CPU has them.
#if defined(__x86_64__) && defined(__clang__)
#define TSR_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TSR_MULTIVERSION
#endif

static inline float tsr_dot(const float *a, const float *b, int64_t n) {
#pragma clang fp reassociate(on) contract(fast)
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline float tsr_sum_squares(const float *a, int64_t n) {
#pragma clang fp reassociate(on) contract(fast)
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * a[i];
    return s;
}

static inline void tsr_axpy(float *y, float a, const float *x, int64_t n) {
#pragma clang fp contract(fast)
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}
#endif
