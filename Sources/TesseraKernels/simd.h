// Private helpers shared by the kernels. Reductions allow reassociation so that the
// compiler vectorises them; the order is fixed for a given build and CPU feature level.
#ifndef TESSERA_SIMD_H
#define TESSERA_SIMD_H
#include <stdint.h>
#include <string.h>

// Per-ISA clones chosen at load time by the dynamic linker (ifunc), so one binary
// runs everywhere and still uses AVX2/FMA or AVX-512 where the CPU has them.
#if defined(__x86_64__) && defined(__clang__)
#define TSR_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TSR_MULTIVERSION
#endif

// A spin-wait pause: lets the sibling hyperthread run and saves power while polling a line.
static inline void tsr_relax(void) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

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
// Thread `thread`'s share [*lo, *hi) of `total` items split in equal contiguous parts.
static inline void tsr_thread_share(int64_t total, int thread, int threads, int64_t *lo, int64_t *hi) {
    const int64_t per = (total + threads - 1) / threads;
    *lo = per * thread < total ? per * thread : total;
    *hi = *lo + per < total ? *lo + per : total;
}

// Q4_K packs 8 pairs of 6-bit (scale, min) in 12 bytes.
// Q4_K / Q5_K: the 12 bytes of 6-bit scales and mins `q` regrouped with 32-bit word operations:
// out[0..7] the 8 scales, out[8..15] the 8 mins, as tsr_q4k_scale_min gives them one at a time
// (scale j < 4: q[j] & 63, min j < 4: q[j + 4] & 63; j >= 4: the low 4 bits from q[j + 4]'s
// nibbles, the high 2 from the top bits of q[j − 4] / q[j]).
static inline void tsr_q4k_scales_mins(const uint8_t *q, uint8_t out[16]) {
    uint32_t u[4];
    memcpy(u, q, 12);
    const uint32_t k1 = 0x3f3f3f3fu, k2 = 0x0f0f0f0fu, k3 = 0x03030303u;
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    const uint32_t mins_lo = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = mins_lo;
    u[0] &= k1;
    memcpy(out, u, 16);
}

static inline void tsr_q4k_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}
// e^x for x <= 0 (softmax arguments, sigmoids): Cephes' expf polynomial on x - n·ln2, scaled by 2^n;
// within 2 ulp, and written so that loops over it vectorise.
static inline float tsr_exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    // n stays a valid exponent for the cast below whatever x is (a NaN compares false: the
    // result is still NaN through r; +inf gives inf).
    n = n > -126.0f ? n : -126.0f;
    n = n < 127.0f ? n : 127.0f;
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#endif
