// Dequantization of GGUF tensor blocks to float32.
// Block layouts follow ggml's (ggml-common.h): a block is a fixed number of weights
// stored as scales plus packed integers, little-endian.
#include "tessera_kernels.h"
#include "simd.h"
#include <string.h>

float tsr_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { // subnormal: normalise
            int e = -1;
            do { mant <<= 1; e++; } while ((mant & 0x400u) == 0);
            mant &= 0x3ffu;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (mant << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13); // inf / nan
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float tsr_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t read_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

int64_t tsr_type_block_elements(int t) {
    switch (t) {
    case TSR_GGML_F32: case TSR_GGML_F16: case TSR_GGML_BF16: return 1;
    case TSR_GGML_Q4_0: case TSR_GGML_Q4_1: case TSR_GGML_Q5_0: case TSR_GGML_Q5_1: case TSR_GGML_Q8_0: return 32;
    case TSR_GGML_Q4_K: case TSR_GGML_Q5_K: case TSR_GGML_Q6_K: return 256;
    default: return 0;
    }
}

int64_t tsr_type_block_bytes(int t) {
    switch (t) {
    case TSR_GGML_F32: return 4;
    case TSR_GGML_F16: case TSR_GGML_BF16: return 2;
    case TSR_GGML_Q4_0: return 2 + 16;          // d, 32 x 4-bit
    case TSR_GGML_Q4_1: return 2 + 2 + 16;      // d, m, 32 x 4-bit
    case TSR_GGML_Q5_0: return 2 + 4 + 16;      // d, 32 high bits, 32 x 4 low bits
    case TSR_GGML_Q5_1: return 2 + 2 + 4 + 16;  // d, m, 32 high bits, 32 x 4 low bits
    case TSR_GGML_Q8_0: return 2 + 32;          // d, 32 x int8
    case TSR_GGML_Q4_K: return 2 + 2 + 12 + 128; // d, dmin, 8 x (6-bit scale, 6-bit min), 256 x 4-bit
    case TSR_GGML_Q5_K: return 2 + 2 + 12 + 32 + 128; // as Q4_K, plus 256 high bits
    case TSR_GGML_Q6_K: return 128 + 64 + 16 + 2; // ql, qh, 16 x int8 scale, d
    default: return 0;
    }
}

static void dequant_q4_0(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 18, y += 32) {
        const float d = tsr_f16_to_f32(read_u16(b));
        const uint8_t *qs = b + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((qs[j] & 0x0f) - 8);
            y[j + 16] = d * (float)((qs[j] >> 4) - 8);
        }
    }
}

static void dequant_q4_1(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 20, y += 32) {
        const float d = tsr_f16_to_f32(read_u16(b));
        const float m = tsr_f16_to_f32(read_u16(b + 2));
        const uint8_t *qs = b + 4;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)(qs[j] & 0x0f) + m;
            y[j + 16] = d * (float)(qs[j] >> 4) + m;
        }
    }
}

// Q5_0 / Q5_1: weight j < 16 is the low nibble of qs[j] plus bit j of qh as 16; weight 16 + j
// the high nibble plus bit 16 + j. Q5_0: d·(q − 16); Q5_1: d·q + m.
static void dequant_q5(const uint8_t *b, float *y, int64_t nb, int with_min) {
    const int64_t bb = with_min ? 24 : 22;
    for (int64_t i = 0; i < nb; i++, b += bb, y += 32) {
        const float d = tsr_f16_to_f32(read_u16(b));
        const float m = with_min ? tsr_f16_to_f32(read_u16(b + 2)) : -16.0f * d;
        const uint8_t *h = b + (with_min ? 4 : 2), *qs = h + 4;
        const uint32_t qh = (uint32_t)h[0] | ((uint32_t)h[1] << 8) | ((uint32_t)h[2] << 16) | ((uint32_t)h[3] << 24);
        for (int j = 0; j < 16; j++) {
            const int lo = (qs[j] & 0x0f) | (int)(((qh >> j) & 1) << 4);
            const int hi = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            y[j] = with_min ? d * (float)lo + m : d * (float)(lo - 16);
            y[j + 16] = with_min ? d * (float)hi + m : d * (float)(hi - 16);
        }
    }
}

static void dequant_q8_0(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 34, y += 32) {
        const float d = tsr_f16_to_f32(read_u16(b));
        const int8_t *qs = (const int8_t *)(b + 2);
        for (int j = 0; j < 32; j++) y[j] = d * (float)qs[j];
    }
}

static void dequant_q4_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 144) {
        const float d = tsr_f16_to_f32(read_u16(b));
        const float dmin = tsr_f16_to_f32(read_u16(b + 2));
        const uint8_t *scales = b + 4;
        const uint8_t *q = b + 16;
        int is = 0;
        for (int j = 0; j < 256; j += 64) {
            uint8_t sc, m;
            tsr_q4k_scale_min(is + 0, scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            tsr_q4k_scale_min(is + 1, scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0x0f) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
    }
}

// Q5_K: Q4_K's scales and minimums; the 4 low bits of sub-block pair p's weights in qs[32p..],
// the fifth bit of weight l of sub-block s in bit s of qh[l].
static void dequant_q5_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 176) {
        const float d = tsr_f16_to_f32(read_u16(b));
        const float dmin = tsr_f16_to_f32(read_u16(b + 2));
        const uint8_t *scales = b + 4, *qh = b + 16, *q = b + 48;
        for (int pair = 0; pair < 4; pair++, q += 32) {
            uint8_t sc, m;
            tsr_q4k_scale_min(2 * pair, scales, &sc, &m);
            const float d1 = d * sc, m1 = dmin * m;
            tsr_q4k_scale_min(2 * pair + 1, scales, &sc, &m);
            const float d2 = d * sc, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)((q[l] & 0x0f) | (((qh[l] >> (2 * pair)) & 1) << 4)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)((q[l] >> 4) | (((qh[l] >> (2 * pair + 1)) & 1) << 4)) - m2;
        }
    }
}

static void dequant_q6_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 210) {
        const uint8_t *ql = b;
        const uint8_t *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        const float d = tsr_f16_to_f32(read_u16(b + 208));
        for (int n = 0; n < 256; n += 128) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = (int)((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = (int)((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * (float)sc[is + 0] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
#define TSR_DQ_AVX2 __attribute__((target("avx2,fma,f16c")))

// 16 bytes of nibbles to 32 floats: d·q + m (low nibbles first).
TSR_DQ_AVX2 static inline void nibbles_to_f32(const uint8_t *qs, __m256 d, __m256 m, float *y) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    const __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(15));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(15));
    _mm256_storeu_ps(y + 0, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), d, m));
    _mm256_storeu_ps(y + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), d, m));
    _mm256_storeu_ps(y + 16, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), d, m));
    _mm256_storeu_ps(y + 24, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), d, m));
}

TSR_DQ_AVX2 static void dequant_q4_0_avx2(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 18, y += 32) {
        const float d = _cvtsh_ss(read_u16(b));
        nibbles_to_f32(b + 2, _mm256_set1_ps(d), _mm256_set1_ps(-8.0f * d), y);
    }
}

TSR_DQ_AVX2 static void dequant_q4_1_avx2(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 20, y += 32)
        nibbles_to_f32(b + 4, _mm256_set1_ps(_cvtsh_ss(read_u16(b))), _mm256_set1_ps(_cvtsh_ss(read_u16(b + 2))), y);
}

TSR_DQ_AVX2 static void dequant_q8_0_avx2(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 34, y += 32) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(read_u16(b)));
        for (int k = 0; k < 4; k++) {
            const __m128i q = _mm_loadl_epi64((const __m128i *)(b + 2 + 8 * k));
            _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
        }
    }
}

TSR_DQ_AVX2 static void dequant_f16_avx2(const uint8_t *b, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + 2 * i))));
    for (; i < n; i++) y[i] = _cvtsh_ss(read_u16(b + 2 * i));
}

static int have_avx2(void) {
    static int v = -1;
    if (v < 0) { const int f = tsr_cpu_features(); v = (f & TSR_CPU_AVX2) && (f & TSR_CPU_FMA) && (f & TSR_CPU_F16C); }
    return v;
}
#else
static int have_avx2(void) { return 0; }
#endif

tsr_status tsr_dequantize(int t, const void *src, float *dst, int64_t n) {
    const int64_t be = tsr_type_block_elements(t);
    if (be == 0) return TSR_ERR_UNSUPPORTED_TYPE;
    if (n < 0 || n % be != 0) return TSR_ERR_BAD_SIZE;
    const uint8_t *b = (const uint8_t *)src;
    const int64_t nb = n / be;
#if defined(__x86_64__) && defined(__clang__)
    if (have_avx2()) {
        switch (t) {
        case TSR_GGML_Q4_0: dequant_q4_0_avx2(b, dst, nb); return TSR_OK;
        case TSR_GGML_Q4_1: dequant_q4_1_avx2(b, dst, nb); return TSR_OK;
        case TSR_GGML_Q8_0: dequant_q8_0_avx2(b, dst, nb); return TSR_OK;
        case TSR_GGML_F16: dequant_f16_avx2(b, dst, n); return TSR_OK;
        default: break;
        }
    }
#endif
    switch (t) {
    case TSR_GGML_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case TSR_GGML_F16: for (int64_t i = 0; i < n; i++) dst[i] = tsr_f16_to_f32(read_u16(b + 2 * i)); break;
    case TSR_GGML_BF16: for (int64_t i = 0; i < n; i++) dst[i] = tsr_bf16_to_f32(read_u16(b + 2 * i)); break;
    case TSR_GGML_Q4_0: dequant_q4_0(b, dst, nb); break;
    case TSR_GGML_Q4_1: dequant_q4_1(b, dst, nb); break;
    case TSR_GGML_Q8_0: dequant_q8_0(b, dst, nb); break;
    case TSR_GGML_Q5_0: dequant_q5(b, dst, nb, 0); break;
    case TSR_GGML_Q5_1: dequant_q5(b, dst, nb, 1); break;
    case TSR_GGML_Q4_K: dequant_q4_k(b, dst, nb); break;
    case TSR_GGML_Q5_K: dequant_q5_k(b, dst, nb); break;
    case TSR_GGML_Q6_K: dequant_q6_k(b, dst, nb); break;
    default: return TSR_ERR_UNSUPPORTED_TYPE;
    }
    return TSR_OK;
}
