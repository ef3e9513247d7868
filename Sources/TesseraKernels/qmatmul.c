// Matrix × few rows with the weights in their stored GGUF type (decode, small batches):
// y (+)= alpha · x · Wᵀ, W never expanded to f32 in memory.
//
// Quantized types: the activations are quantized once per call to 8 bits per block of 32
// (tsr_q8_block, as llama.cpp's Q8 activations), each weight row is unpacked a chunk at a
// time into int8 values with per-16 scales (stage 1, in L1), and every activation row takes
// integer dot products against it (stage 2: AVX2 maddubs, AVX-512 VNNI dpbusd, or scalar).
// F16 / BF16 / F32 rows are converted a chunk at a time and dotted in f32.
// Threads split the output rows; a row's summation order does not depend on the row count.
#include "tessera_kernels.h"
#include "simd.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define QCHUNK 2048    // weights of a row unpacked at once (a multiple of 256)
#define QMAXROWS 64    // activation rows served per unpack

static inline uint16_t q_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

int tsr_type_is_quantized(int t) {
    return t == TSR_GGML_Q4_0 || t == TSR_GGML_Q4_1 || t == TSR_GGML_Q5_0 || t == TSR_GGML_Q5_1 || t == TSR_GGML_Q8_0 ||
           t == TSR_GGML_Q4_K || t == TSR_GGML_Q5_K || t == TSR_GGML_Q6_K;
}

// ---- rows interleaved by 8 (TSR_LAYOUT_X8) ----
// Per block of a group: 8 f16 scales, (Q4_1) 8 f16 minimums, then the quants as 32-byte
// vectors, lane j (4 bytes) of vector k = row j's quant bytes 4k..4k+3. For the nibble types
// vector k's low nibbles are weights 4k..4k+3 and its high nibbles 16+4k..16+4k+3, so one AND
// or shift gives 8 rows' weights against one broadcast 4-byte piece of the activations.

// Q5_0 / Q5_1 add the 8 rows' 32-bit masks of fifth bits (row j's at 4j) before the quants.
// Q4_K, per super-block of 256 weights: the 8 rows' f16 d, their f16 dmin, their 12 bytes of
// 6-bit scales and mins as stored (row j's at 32 + 12j), then 32 quant vectors: vector 8p + k,
// lane j = row j's stored quant bytes 32p + 4k..32p + 4k + 3 (low nibbles: sub-block 2p's
// weights 4k..4k+3; high nibbles: sub-block 2p + 1's).
// Q5_K: the same with the rows' fifth bits between the scales and the quants, arranged as the
// quants are: vector k (of 8), lane j = row j's stored qh bytes 4k..4k + 3 (bit s of byte l:
// weight l of sub-block s).
enum { X8K_SCALES = 32, X8K_QH = 128 };
static inline int64_t x8k_quants_offset(int t) { return t == TSR_GGML_Q5_K ? X8K_QH + 256 : X8K_QH; }
static inline int64_t x8_block_bytes(int t) {
    switch (t) {
    case TSR_GGML_Q4_0: return 16 + 128;
    case TSR_GGML_Q4_1: return 32 + 128;
    case TSR_GGML_Q5_0: return 16 + 32 + 128;
    case TSR_GGML_Q5_1: return 32 + 32 + 128;
    case TSR_GGML_Q8_0: return 16 + 256;
    case TSR_GGML_Q4_K: return 8 * 144;
    case TSR_GGML_Q5_K: return 8 * 176;
    default: return 0;
    }
}

int64_t tsr_x8_group_block_bytes(int t) { return x8_block_bytes(t); }

static inline int x8_has_min(int t) { return t == TSR_GGML_Q4_1 || t == TSR_GGML_Q5_1; }
static inline int x8_is_five(int t) { return t == TSR_GGML_Q5_0 || t == TSR_GGML_Q5_1; }
// Offsets within a group's block (the fifth bits, the quants) and within a stored block.
static inline int64_t x8_qh_offset(int t) { return x8_has_min(t) ? 32 : 16; }
static inline int64_t x8_quants_offset(int t) { return x8_qh_offset(t) + (x8_is_five(t) ? 32 : 0); }
static inline int64_t stored_qh_offset(int t) { return x8_has_min(t) ? 4 : 2; }
static inline int64_t stored_quants_offset(int t) { return stored_qh_offset(t) + (x8_is_five(t) ? 4 : 0); }
static inline int64_t quant_bytes(int t) { return t == TSR_GGML_Q8_0 ? 32 : 16; }

// Blocks of 32 per stored block of an interleaved type: 8 for the K-quants' super-blocks.
static inline int64_t x8_unit(int t) { return t == TSR_GGML_Q4_K || t == TSR_GGML_Q5_K ? 8 : 1; }

// Bytes of column panel `panel` of an interleaved part of type t, `rows` rows and nb blocks a
// row, split at block ks (> 0).
static inline int64_t x8_panel_size(int t, int64_t rows, int64_t nb, int64_t ks, int panel) {
    const int64_t unit = x8_unit(t), ku = ks / unit;
    return rows / 8 * (panel == 0 ? ku : nb / unit - ku) * x8_block_bytes(t);
}

// Address of block b (of 32; Q4_K / Q5_K: its super-block) of row group `grp` in interleaved
// part p of type t and nb blocks a row, split in column panels at block p->k_split (0: one
// panel); panel 1 at p->panel1, or right after panel 0.
static inline const uint8_t *x8_block_at(const tsr_weight_part *p, int t, int64_t nb, int64_t grp, int64_t b) {
    const int64_t unit = x8_unit(t), gb = x8_block_bytes(t);
    const int64_t nu = nb / unit, ku = p->k_split / unit, u = b / unit;
    const uint8_t *d = (const uint8_t *)p->data;
    if (ku == 0) return d + (grp * nu + u) * gb;
    if (u < ku) return d + (grp * ku + u) * gb;
    const uint8_t *d1 = p->panel1 ? (const uint8_t *)p->panel1 : d + x8_panel_size(t, p->rows, nb, p->k_split, 0);
    return d1 + (grp * (nu - ku) + (u - ku)) * gb;
}

typedef struct { const tsr_weight_part *src; int64_t inputs; tsr_weight_part out; } pack_job;

static void pack_task(void *ctx, int thread, int threads) {
    const pack_job *j = (const pack_job *)ctx;
    const tsr_weight_part *p = j->src;
    const int t = p->type;
    const int64_t nb = j->inputs / 32, gb = tsr_x8_group_block_bytes(t), bb = tsr_type_block_bytes(t);
    const int64_t qo = x8_quants_offset(t), so = stored_quants_offset(t), qb = quant_bytes(t);
    int64_t lo, hi;
    tsr_thread_share(p->rows, thread, threads, &lo, &hi);
    for (int64_t g = lo; g < hi; g++) {
        const int64_t out = p->row_map ? p->row_map[g] : g;
        const uint8_t *row = (const uint8_t *)p->data + g * p->row_bytes;
        const int64_t lane = out % 8;
        if (t == TSR_GGML_Q4_K || t == TSR_GGML_Q5_K) {
            const int five = t == TSR_GGML_Q5_K;
            for (int64_t sb = 0; sb < nb / 8; sb++) {
                const uint8_t *src = row + sb * bb, *qs = src + (five ? 48 : 16);
                uint8_t *db = (uint8_t *)x8_block_at(&j->out, t, nb, out / 8, sb * 8);
                memcpy(db + 2 * lane, src, 2);
                memcpy(db + 16 + 2 * lane, src + 2, 2);
                memcpy(db + X8K_SCALES + 12 * lane, src + 4, 12);
                if (five) for (int k = 0; k < 8; k++) memcpy(db + X8K_QH + 32 * k + 4 * lane, src + 16 + 4 * k, 4);
                for (int v = 0; v < 32; v++) memcpy(db + x8k_quants_offset(t) + 32 * v + 4 * lane, qs + 32 * (v / 8) + 4 * (v % 8), 4);
            }
            continue;
        }
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *sb = row + b * bb;
            uint8_t *db = (uint8_t *)x8_block_at(&j->out, t, nb, out / 8, b);
            memcpy(db + 2 * lane, sb, 2);
            if (x8_has_min(t)) memcpy(db + 16 + 2 * lane, sb + 2, 2);
            if (x8_is_five(t)) memcpy(db + x8_qh_offset(t) + 4 * lane, sb + stored_qh_offset(t), 4);
            for (int64_t k = 0; k < qb / 4; k++) memcpy(db + qo + 32 * k + 4 * lane, sb + so + 4 * k, 4);
        }
    }
}

// Whether k_split is a valid panel split of an interleaved part of type t and `inputs` columns.
static int x8_split_ok(int t, int64_t inputs, int64_t ks) {
    return ks == 0 || (ks > 0 && ks < inputs / 32 && ks % x8_unit(t) == 0);
}

tsr_status tsr_pack_x8(const tsr_weight_part *src, int64_t inputs, void *dst) { return tsr_pack_x8_split(src, inputs, 0, dst); }

tsr_status tsr_pack_x8_split(const tsr_weight_part *src, int64_t inputs, int64_t k_split, void *dst) {
    return tsr_pack_x8_panels(src, inputs, k_split, dst, NULL);
}

static tsr_status x8_pack_check(const tsr_weight_part *src, int64_t inputs, int64_t k_split) {
    if (src->layout != TSR_LAYOUT_ROWS || tsr_x8_group_block_bytes(src->type) == 0) return TSR_ERR_UNSUPPORTED_TYPE;
    const int64_t be = tsr_type_block_elements(src->type);
    if (inputs % be != 0 || inputs % 32 != 0 || src->rows % 8 != 0 || src->row_bytes != inputs / be * tsr_type_block_bytes(src->type))
        return TSR_ERR_BAD_SIZE;
    if (!x8_split_ok(src->type, inputs, k_split)) return TSR_ERR_BAD_SIZE;
    return TSR_OK;
}

int64_t tsr_x8_panel_bytes(const tsr_weight_part *src, int64_t inputs, int64_t k_split, int panel) {
    if (k_split <= 0 || (panel != 0 && panel != 1) || x8_pack_check(src, inputs, k_split) != TSR_OK) return 0;
    return x8_panel_size(src->type, src->rows, inputs / 32, k_split, panel);
}

tsr_status tsr_pack_x8_panels(const tsr_weight_part *src, int64_t inputs, int64_t k_split, void *dst0, void *dst1) {
    const tsr_status status = x8_pack_check(src, inputs, k_split);
    if (status != TSR_OK) return status;
    if (!dst0 || (dst1 && k_split == 0)) return TSR_ERR_BAD_SIZE;
    pack_job job = { src, inputs, *src };
    job.out.data = dst0;
    job.out.k_split = k_split;
    job.out.panel1 = dst1;
    tsr_parallel(pack_task, &job);
    return TSR_OK;
}

// Blocks [b0, b1) of packed row g as floats: gathered back into stored blocks a few at a time
// and dequantized by tsr_dequantize, so both layouts give the same floats.
static void x8_dequantize_row(const tsr_weight_part *p, int64_t inputs, int64_t g, int64_t b0, int64_t b1, float *dst) {
    enum { CHUNK = 64 };
    uint8_t stored[CHUNK * 34];
    const int t = p->type;
    if (t == TSR_GGML_Q4_K || t == TSR_GGML_Q5_K) {  // b0, b1 multiples of 8 (whole super-blocks)
        const int five = t == TSR_GGML_Q5_K;
        const int64_t lane = g % 8;
        for (int64_t sb = b0 / 8; sb < b1 / 8; sb++) {
            const uint8_t *db = x8_block_at(p, t, inputs / 32, g / 8, sb * 8);
            uint8_t *qs = stored + (five ? 48 : 16);
            memcpy(stored, db + 2 * lane, 2);
            memcpy(stored + 2, db + 16 + 2 * lane, 2);
            memcpy(stored + 4, db + X8K_SCALES + 12 * lane, 12);
            if (five) for (int k = 0; k < 8; k++) memcpy(stored + 16 + 4 * k, db + X8K_QH + 32 * k + 4 * lane, 4);
            for (int v = 0; v < 32; v++) memcpy(qs + 32 * (v / 8) + 4 * (v % 8), db + x8k_quants_offset(t) + 32 * v + 4 * lane, 4);
            tsr_dequantize(t, stored, dst + (sb * 8 - b0) * 32, 256);
        }
        return;
    }
    const int64_t nb = inputs / 32, bb = tsr_type_block_bytes(t);
    const int64_t qo = x8_quants_offset(t), so = stored_quants_offset(t), qb = quant_bytes(t);
    const int64_t lane = g % 8;
    for (int64_t c0 = b0; c0 < b1; c0 += CHUNK) {
        const int64_t c1 = c0 + CHUNK < b1 ? c0 + CHUNK : b1;
        for (int64_t b = c0; b < c1; b++) {
            const uint8_t *db = x8_block_at(p, t, nb, g / 8, b);
            uint8_t *sb = stored + (b - c0) * bb;
            memcpy(sb, db + 2 * lane, 2);
            if (x8_has_min(t)) memcpy(sb + 2, db + 16 + 2 * lane, 2);
            if (x8_is_five(t)) memcpy(sb + stored_qh_offset(t), db + x8_qh_offset(t) + 4 * lane, 4);
            for (int64_t k = 0; k < qb / 4; k++) memcpy(sb + so + 4 * k, db + qo + 32 * k + 4 * lane, 4);
        }
        tsr_dequantize(t, stored, dst + (c0 - b0) * 32, (c1 - c0) * 32);
    }
}

void tsr_dequantize_part_row(const tsr_weight_part *p, int64_t inputs, int64_t g, float *dst) {
    if (p->layout == TSR_LAYOUT_X8) x8_dequantize_row(p, inputs, g, 0, inputs / 32, dst);
    else tsr_dequantize(p->type, (const uint8_t *)p->data + g * p->row_bytes, dst, inputs);
}

typedef struct {
    const tsr_weight_part *parts; int64_t n_parts; int64_t outputs; int64_t inputs;
    const tsr_q8_block *xq; const float *x; int64_t x_stride; int64_t rows;
    float *y; int64_t y_stride; float alpha; int accumulate;
    const tsr_q8_block *xq_lo;  // the activations' 8-bit residuals (tsr_quantize_q8x2_rows), or NULL
    int lo_pass;                // the residual pass of stored-layout quantized parts only
    int panel_only;             // 0: every column panel; 1 / 2: panel 0 / 1 of split parts only
} qmatmul_job;

// ---- variants ----
#define QSUFFIX _scalar
#define QTARGET
#define QSIMD 0
#define H2F(h) tsr_f16_to_f32(h)
#include "qmatmul_impl.h"
#undef QSUFFIX
#undef QTARGET
#undef QSIMD
#undef H2F

#if defined(__x86_64__) && defined(__clang__)
#define TSR_HAVE_X86_VARIANTS 1
#define QSUFFIX _avx2
#define QTARGET __attribute__((target("avx2,fma,f16c")))
#define QSIMD 1
#define H2F(h) _cvtsh_ss(h)
#include "qmatmul_impl.h"
#undef QSUFFIX
#undef QTARGET
#undef QSIMD
#undef H2F

#define QSUFFIX _vnni
#define QTARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))
#define QSIMD 2
#define H2F(h) _cvtsh_ss(h)
#include "qmatmul_impl.h"
#undef QSUFFIX
#undef QTARGET
#undef QSIMD
#undef H2F
#endif

int tsr_qmatmul_available(int impl) {
    switch (impl) {
    case TSR_QIMPL_SCALAR: return 1;
#ifdef TSR_HAVE_X86_VARIANTS
    case TSR_QIMPL_AVX2: { const int f = tsr_cpu_features(); return (f & TSR_CPU_AVX2) && (f & TSR_CPU_FMA) && (f & TSR_CPU_F16C); }
    case TSR_QIMPL_AVX512VNNI: { const int f = tsr_cpu_features(); return (f & TSR_CPU_AVX512VNNI) && (f & TSR_CPU_AVX512VL) && (f & TSR_CPU_AVX512BW) && (f & TSR_CPU_F16C); }
#endif
    default: return 0;
    }
}

static int forced_impl = 0;

void tsr_qmatmul_force(int impl) { forced_impl = impl > 0 && tsr_qmatmul_available(impl) ? impl : 0; }

int tsr_qmatmul_best(void) {
    static int best = -1;
    if (forced_impl > 0) return forced_impl;
    if (best < 0) {
        if (tsr_qmatmul_available(TSR_QIMPL_AVX512VNNI)) best = TSR_QIMPL_AVX512VNNI;
        else if (tsr_qmatmul_available(TSR_QIMPL_AVX2)) best = TSR_QIMPL_AVX2;
        else best = TSR_QIMPL_SCALAR;
    }
    return best;
}

// ---- activation quantization ----

// One level: q = round(x/d), d = amax/127. Two levels (lo not NULL): also the residual in units
// of d/256, r = round((x/d − q)·256) clamped to ±127: x ≈ d·q + (d/256)·r within d/512 (+ rounding).
// The first level is the same either way.
TSR_MULTIVERSION
static void quantize_rows(const float *x, int64_t x_stride, int64_t rows, int64_t inputs, tsr_q8_block *out, tsr_q8_block *lo) {
    const int64_t nb = inputs / 32;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * x_stride;
        for (int64_t b = 0; b < nb; b++) {
            const float *v = xr + 32 * b;
            // |v| as bits: for non-negative floats integer order is float order (an integer max
            // reduction, which vectorises).
            uint32_t bits[32], amax_bits = 0;
            memcpy(bits, v, sizeof bits);
            for (int j = 0; j < 32; j++) { const uint32_t a = bits[j] & 0x7fffffffu; amax_bits = a > amax_bits ? a : amax_bits; }
            float amax;
            memcpy(&amax, &amax_bits, sizeof amax);
            const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
            tsr_q8_block *o = out + r * nb + b;
            float u[32], qf[32];
            int32_t sum = 0;
            for (int j = 0; j < 32; j++) {
                u[j] = v[j] * id;
                qf[j] = __builtin_rintf(u[j]);
                o->q[j] = (int8_t)(int32_t)qf[j];
                sum += (int32_t)qf[j];
            }
            o->d = d;
            o->s = d * (float)sum;
            if (!lo) continue;
            tsr_q8_block *l = lo + r * nb + b;
            int32_t sum_lo = 0;
            for (int j = 0; j < 32; j++) {
                float e = __builtin_rintf((u[j] - qf[j]) * 256.0f);
                e = e > 127.0f ? 127.0f : e < -127.0f ? -127.0f : e;
                l->q[j] = (int8_t)(int32_t)e;
                sum_lo += (int32_t)e;
            }
            l->d = d * (1.0f / 256.0f);
            l->s = l->d * (float)sum_lo;
        }
    }
}

typedef struct { const float *x; int64_t x_stride, rows, inputs; tsr_q8_block *out, *lo; } quantize_job;

static void quantize_task(void *ctx, int thread, int threads) {
    const quantize_job *j = (const quantize_job *)ctx;
    int64_t lo, hi;
    tsr_thread_share(j->rows, thread, threads, &lo, &hi);
    if (lo >= hi) return;
    const int64_t nb = j->inputs / 32;
    quantize_rows(j->x + lo * j->x_stride, j->x_stride, hi - lo, j->inputs, j->out + lo * nb, j->lo ? j->lo + lo * nb : NULL);
}

void tsr_quantize_q8_rows(const float *x, int64_t x_stride, int64_t rows, int64_t inputs, tsr_q8_block *out) {
    tsr_quantize_q8x2_rows(x, x_stride, rows, inputs, out, NULL);
}

void tsr_quantize_q8x2_rows(const float *x, int64_t x_stride, int64_t rows, int64_t inputs, tsr_q8_block *out, tsr_q8_block *lo) {
    if (rows < 4) { quantize_rows(x, x_stride, rows, inputs, out, lo); return; }  // rows split across the pool from 4
    quantize_job job = { x, x_stride, rows, inputs, out, lo };
    tsr_parallel(quantize_task, &job);
}

// ---- the call ----

typedef struct { const qmatmul_job *job; int impl; } qmatmul_task_ctx;

static void qmatmul_run(const qmatmul_job *j, int impl, int64_t begin, int64_t end) {
    switch (impl) {
#ifdef TSR_HAVE_X86_VARIANTS
    case TSR_QIMPL_AVX2: qmatmul_range_avx2(j, begin, end); break;
    case TSR_QIMPL_AVX512VNNI: qmatmul_range_vnni(j, begin, end); break;
#endif
    default: qmatmul_range_scalar(j, begin, end); break;
    }
}

// Outputs [begin, end) with both activation levels: interleaved parts take the residuals in the
// same pass over their weights; the stored-layout kernels add them in a second pass.
static void qmatmul_run_levels(const qmatmul_job *j, int impl, int64_t begin, int64_t end) {
    qmatmul_run(j, impl, begin, end);
    if (j->xq_lo != NULL) {
        qmatmul_job lo = *j;
        lo.xq = j->xq_lo;
        lo.xq_lo = NULL;
        lo.accumulate = 1;
        lo.lo_pass = 1;
        qmatmul_run(&lo, impl, begin, end);
    }
}

static void qmatmul_task(void *ctx, int thread, int threads) {
    const qmatmul_task_ctx *t = (const qmatmul_task_ctx *)ctx;
    const qmatmul_job *j = t->job;
    // Equal ranges of outputs, rounded to 16.
    const int64_t per = ((j->outputs + threads - 1) / threads + 15) / 16 * 16;
    const int64_t begin = per * thread;
    const int64_t end = begin + per < j->outputs ? begin + per : j->outputs;
    if (begin >= end) return;
    qmatmul_run_levels(j, t->impl, begin, end);
}

tsr_status tsr_qmatmul(const tsr_weight_part *parts, int64_t n_parts, int64_t inputs,
                       const tsr_q8_block *xq, const float *x, int64_t x_stride, int64_t rows,
                       float *y, int64_t y_stride, float alpha, int accumulate, int impl) {
    return tsr_qmatmul_x2(parts, n_parts, inputs, xq, NULL, x, x_stride, rows, y, y_stride, alpha, accumulate, impl);
}

static tsr_status check_parts(const tsr_weight_part *parts, int64_t n_parts, int64_t inputs, int64_t *outputs_out);

tsr_status tsr_qmatmul_x2(const tsr_weight_part *parts, int64_t n_parts, int64_t inputs,
                          const tsr_q8_block *xq, const tsr_q8_block *xq_lo, const float *x, int64_t x_stride, int64_t rows,
                          float *y, int64_t y_stride, float alpha, int accumulate, int impl) {
    if (xq == NULL) xq_lo = NULL;
    int64_t outputs = 0;
    const tsr_status status = check_parts(parts, n_parts, inputs, &outputs);
    if (status != TSR_OK) return status;
    if (impl <= 0 || !tsr_qmatmul_available(impl)) impl = tsr_qmatmul_best();
    qmatmul_job job = { parts, n_parts, outputs, inputs, xq, x, x_stride, rows, y, y_stride, alpha, accumulate, xq_lo, 0 };
    qmatmul_task_ctx ctx = { &job, impl };
    tsr_parallel(qmatmul_task, &ctx);
    return TSR_OK;
}

tsr_status tsr_qmatmul_span(const tsr_weight_part *parts, int64_t n_parts, int64_t inputs,
                            const tsr_q8_block *xq, const tsr_q8_block *xq_lo, const float *x,
                            float *y, int64_t begin, int64_t end, int panel, int accumulate, int impl) {
    if (xq == NULL) xq_lo = NULL;
    int64_t outputs = 0;
    const tsr_status status = check_parts(parts, n_parts, inputs, &outputs);
    if (status != TSR_OK) return status;
    if (begin < 0 || end > outputs || panel < -1 || panel > 1) return TSR_ERR_BAD_SIZE;
    if (panel >= 0) {
        // One panel: every part in range split, and 8-bit activations.
        if (xq == NULL) return TSR_ERR_UNSUPPORTED_TYPE;
        int64_t first = 0;
        for (int64_t i = 0; i < n_parts; first += parts[i].rows, i++)
            if (first < end && first + parts[i].rows > begin && parts[i].k_split == 0) return TSR_ERR_UNSUPPORTED_TYPE;
    }
    if (begin >= end) return TSR_OK;
    if (impl <= 0 || !tsr_qmatmul_available(impl)) impl = tsr_qmatmul_best();
    const qmatmul_job job = { parts, n_parts, outputs, inputs, xq, x, inputs, 1, y, 0, 1.0f, accumulate, xq_lo, 0, panel + 1 };
    qmatmul_run_levels(&job, impl, begin, end);
    return TSR_OK;
}

static tsr_status check_parts(const tsr_weight_part *parts, int64_t n_parts, int64_t inputs, int64_t *outputs_out) {
    int64_t outputs = 0;
    for (int64_t i = 0; i < n_parts; i++) {
        const int t = parts[i].type;
        const int64_t be = tsr_type_block_elements(t);
        if (be == 0) return TSR_ERR_UNSUPPORTED_TYPE;
        if (inputs % be != 0 || inputs % 32 != 0 && tsr_type_is_quantized(t)) return TSR_ERR_BAD_SIZE;
        if (parts[i].row_bytes != inputs / be * tsr_type_block_bytes(t) || parts[i].rows < 0) return TSR_ERR_BAD_SIZE;
        if (parts[i].layout == TSR_LAYOUT_X8 && (tsr_x8_group_block_bytes(t) == 0 || parts[i].row_map)) return TSR_ERR_UNSUPPORTED_TYPE;
        if (parts[i].layout == TSR_LAYOUT_X8 && parts[i].rows % 8 != 0) return TSR_ERR_BAD_SIZE;
        if (parts[i].layout != TSR_LAYOUT_ROWS && parts[i].layout != TSR_LAYOUT_X8) return TSR_ERR_UNSUPPORTED_TYPE;
        if (parts[i].k_split != 0 && (parts[i].layout != TSR_LAYOUT_X8 || !x8_split_ok(t, inputs, parts[i].k_split))) return TSR_ERR_BAD_SIZE;
        outputs += parts[i].rows;
    }
    *outputs_out = outputs;
    return TSR_OK;
}

// ---- dequantizing rows, for the many-rows path and embeddings ----

typedef struct {
    const tsr_weight_part *parts; int64_t n_parts; int64_t inputs; int64_t begin, end; float *dst;
} dequant_job;

static void dequant_task(void *ctx, int thread, int threads) {
    const dequant_job *j = (const dequant_job *)ctx;
    const int64_t total = j->end - j->begin;
    const int64_t per = (total + threads - 1) / threads;
    const int64_t lo = j->begin + per * thread;
    const int64_t hi = lo + per < j->end ? lo + per : j->end;
    for (int64_t pi = 0; pi < j->n_parts; pi++) {
        const tsr_weight_part *p = &j->parts[pi];
        // Stored rows whose output falls in [lo, hi): a range without a row map, else a scan
        // (row maps only permute within their part).
        int64_t g0 = lo - p->out_offset, g1 = hi - p->out_offset;
        if (g0 < 0) g0 = 0;
        if (g1 > p->rows) g1 = p->rows;
        if (g0 >= g1 && !p->row_map) continue;
        if (p->row_map) { g0 = 0; g1 = p->rows; }
        for (int64_t g = g0; g < g1; g++) {
            const int64_t out = p->out_offset + (p->row_map ? p->row_map[g] : g);
            if (out < lo || out >= hi) continue;
            tsr_dequantize_part_row(p, j->inputs, g, j->dst + (out - j->begin) * j->inputs);
        }
    }
}

void tsr_dequantize_parts(const tsr_weight_part *parts, int64_t n_parts, int64_t inputs, int64_t begin, int64_t end, float *dst) {
    dequant_job job = { parts, n_parts, inputs, begin, end, dst };
    tsr_parallel(dequant_task, &job);
}

