// Rows interleaved by 8 (TSR_LAYOUT_X8): the kernels of one instruction-set variant.
// qmatmul_impl.h includes this file inside each variant (QFN, QSIMD, QTARGET and H2F defined,
// and x8_block_bytes / x8_quants_offset from qmatmul.c in scope). No include guard on purpose.

#if QSIMD != 0
// x8_rows' float steps, shared by its 256- and 512-bit forms. Per block: acc[r] += Σ·d8·d (the
// residual's d with two levels), and for one row the offset (Q4_1's minimums, Q4_0's −8·d)
// against the activation sum inline.
QTARGET static inline __attribute__((always_inline)) void QFN(x8_scale_block)(const int type, const uint8_t *p, const __m256i *s32,
                                                                               const tsr_q8_block *a, const tsr_q8_block *alo, int64_t a_stride,
                                                                               int64_t b, const int NR, const int TWO, __m256 *acc, __m256 *accm) {
    const __m256 d8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    for (int r = 0; r < NR; r++) {
        const float da = TWO ? alo[r * a_stride + b].d : a[r * a_stride + b].d;
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[r]), _mm256_mul_ps(d8, _mm256_set1_ps(da)), acc[r]);
    }
    if (NR == 1 && type != TSR_GGML_Q8_0) {
        const __m256 m8 = x8_has_min(type) ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)))
                                           : _mm256_mul_ps(d8, _mm256_set1_ps(type == TSR_GGML_Q5_0 ? -16.0f : -8.0f));
        accm[0] = _mm256_fmadd_ps(m8, _mm256_set1_ps(TWO ? a[b].s + alo[b].s : a[b].s), accm[0]);
    }
}

// Several rows: the offsets against the activation sums in a second pass over the group's
// blocks (in L1 by now), for fewer live registers in the block loop. The same operations in the
// same order as one row's inline ones: a row's bits do not change. Then out = acc + offsets.
QTARGET static inline __attribute__((always_inline)) void QFN(x8_finish)(const int type, const uint8_t *grp, int64_t nb,
                                                                          const tsr_q8_block *a, const tsr_q8_block *alo, int64_t a_stride,
                                                                          const int NR, const int TWO, __m256 *acc, __m256 *accm, __m256 *out) {
    const int64_t gb = x8_block_bytes(type);
    if (NR > 1 && type != TSR_GGML_Q8_0) {
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *p = grp + b * gb;
            const __m256 m8 = x8_has_min(type) ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16)))
                                               : _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)),
                                                               _mm256_set1_ps(type == TSR_GGML_Q5_0 ? -16.0f : -8.0f));
            for (int r = 0; r < NR; r++) {
                const float sa = TWO ? a[r * a_stride + b].s + alo[r * a_stride + b].s : a[r * a_stride + b].s;
                accm[r] = _mm256_fmadd_ps(m8, _mm256_set1_ps(sa), accm[r]);
            }
        }
    }
    for (int r = 0; r < NR; r++) out[r] = _mm256_add_ps(acc[r], accm[r]);
}

// Software prefetch distance in bytes: about one memory latency of streaming ahead (at ~40 GB/s
// a core reads 8 KB in ~200 ns). Measured on Zen 5, SmolLM2 decode (bench/RESULTS.md,
// 2026-11-29): 1024 -> 8192 took Q4_1 at 2 threads from 313-328 to 384-389 tok/s and one
// thread's matmul pass from 2.4-2.6 to 1.7 ms; the hardware prefetcher alone does not keep up.
#ifndef QX8_PREFETCH
#define QX8_PREFETCH 8192
#endif

// Q5_0 / Q5_1: bits 0-3 of each 32-bit lane of v as 16 in the lane's bytes 0-3 (the fifth bits
// of a quant vector's 4 weights per row), else 0.
QTARGET static inline __attribute__((always_inline)) __m256i QFN(x8_fifth_bits)(__m256i v) {
    const __m256i dup = _mm256_setr_epi8(0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12,
                                         0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12);
    const __m256i bits = _mm256_set1_epi32(0x08040201);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, dup), bits), bits), _mm256_set1_epi8(16));
}

// Rows interleaved by 8 (TSR_LAYOUT_X8): one group of 8 output rows against NR activation rows
// (1..4); out[r] gets the 8 rows' sums. Per block and activation row: 8 multiplies of 8 rows ×
// 4 weights against a broadcast 4-byte piece of the activations, summed exactly in 16 bits
// (nibble weights: |sum| <= 8 · 2 · 15 · 127 < 2^15) or 32 bits (5-bit weights: per vector),
// then one scale FMA and one offset FMA for all 8 rows. A row's operations do not depend on NR.
QTARGET static inline __attribute__((always_inline)) void QFN(x8_rows)(const int type, const uint8_t *grp, int64_t nb,
                                                                        const tsr_q8_block *a, const tsr_q8_block *alo, int64_t a_stride,
                                                                        const int NR, const int TWO, __m256 *out) {
    const int64_t gb = x8_block_bytes(type), qo = x8_quants_offset(type);
    const __m256i m4 = _mm256_set1_epi8(15);
#if QSIMD == 1
    const __m256i ones = _mm256_set1_epi16(1);
#endif
    __m256 acc[4], accm[4];
    for (int r = 0; r < 4; r++) acc[r] = accm[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = grp + b * gb, *qs = p + qo;
        for (int64_t l = 0; l < gb; l += 64) _mm_prefetch((const char *)(p + QX8_PREFETCH + l), _MM_HINT_T0);
        // s32: the 8-bit values' integer sums; t32 (TWO): the residuals', combined exactly as
        // 256·s32 + t32 (the residual's scale is the block's / 256).
        __m256i s32[4], t32[4];
        if (type == TSR_GGML_Q8_0) {
            for (int r = 0; r < 4; r++) s32[r] = t32[r] = _mm256_setzero_si256();
            for (int k = 0; k < 8; k++) {
                const __m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
                const __m256i u = _mm256_sign_epi8(w, w);
                for (int r = 0; r < NR; r++) {
                    int32_t piece;
                    memcpy(&piece, a[r * a_stride + b].q + 4 * k, 4);
                    const __m256i q = _mm256_sign_epi8(_mm256_set1_epi32(piece), w);
#if QSIMD == 1
                    s32[r] = _mm256_add_epi32(s32[r], _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), ones));
#else
                    s32[r] = _mm256_dpbusd_epi32(s32[r], u, q);
#endif
                    if (TWO) {
                        memcpy(&piece, alo[r * a_stride + b].q + 4 * k, 4);
                        const __m256i q2 = _mm256_sign_epi8(_mm256_set1_epi32(piece), w);
#if QSIMD == 1
                        t32[r] = _mm256_add_epi32(t32[r], _mm256_madd_epi16(_mm256_maddubs_epi16(u, q2), ones));
#else
                        t32[r] = _mm256_dpbusd_epi32(t32[r], u, q2);
#endif
                    }
                }
            }
        } else {
            const int five = x8_is_five(type);
            const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(p + x8_qh_offset(type))) : _mm256_setzero_si256();
#if QSIMD == 1
            __m256i s16[4], t16[4];
            for (int r = 0; r < 4; r++) s16[r] = t16[r] = s32[r] = t32[r] = _mm256_setzero_si256();
#else
            for (int r = 0; r < 4; r++) s32[r] = t32[r] = _mm256_setzero_si256();
#endif
            for (int k = 0; k < 4; k++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
                __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                if (five) {  // weights 4k.. take bits 4k.. of their row's mask, weights 16 + 4k.. bits 16 + 4k..
                    lo = _mm256_or_si256(lo, QFN(x8_fifth_bits)(_mm256_srli_epi32(qh, 4 * k)));
                    hi = _mm256_or_si256(hi, QFN(x8_fifth_bits)(_mm256_srli_epi32(qh, 16 + 4 * k)));
                }
                for (int r = 0; r < NR; r++) {
                    int32_t plo, phi;
                    memcpy(&plo, a[r * a_stride + b].q + 4 * k, 4);
                    memcpy(&phi, a[r * a_stride + b].q + 16 + 4 * k, 4);
#if QSIMD == 1
                    const __m256i sum = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(plo)),
                                                         _mm256_maddubs_epi16(hi, _mm256_set1_epi32(phi)));
                    // 5-bit weights: |one vector's sum| <= 4 · 31 · 127 < 2^15, but not four.
                    if (five) s32[r] = _mm256_add_epi32(s32[r], _mm256_madd_epi16(sum, ones));
                    else s16[r] = _mm256_add_epi16(s16[r], sum);
#else
                    s32[r] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(s32[r], lo, _mm256_set1_epi32(plo)), hi, _mm256_set1_epi32(phi));
#endif
                    if (TWO) {
                        memcpy(&plo, alo[r * a_stride + b].q + 4 * k, 4);
                        memcpy(&phi, alo[r * a_stride + b].q + 16 + 4 * k, 4);
#if QSIMD == 1
                        const __m256i sum2 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(plo)),
                                                              _mm256_maddubs_epi16(hi, _mm256_set1_epi32(phi)));
                        if (five) t32[r] = _mm256_add_epi32(t32[r], _mm256_madd_epi16(sum2, ones));
                        else t16[r] = _mm256_add_epi16(t16[r], sum2);
#else
                        t32[r] = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(t32[r], lo, _mm256_set1_epi32(plo)), hi, _mm256_set1_epi32(phi));
#endif
                    }
                }
            }
#if QSIMD == 1
            if (!five) {
                for (int r = 0; r < NR; r++) {
                    s32[r] = _mm256_madd_epi16(s16[r], ones);
                    if (TWO) t32[r] = _mm256_madd_epi16(t16[r], ones);
                }
            }
#endif
        }
        if (TWO) for (int r = 0; r < NR; r++) s32[r] = _mm256_add_epi32(_mm256_slli_epi32(s32[r], 8), t32[r]);
        QFN(x8_scale_block)(type, p, s32, a, alo, a_stride, b, NR, TWO, acc, accm);
    }
    QFN(x8_finish)(type, grp, nb, a, alo, a_stride, NR, TWO, acc, accm, out);
}

#if QSIMD == 2
// The same as x8_rows with 512-bit integer dot products (AVX-512 VNNI): two of a block's 32-byte
// quant vectors per instruction, lanes 0-7 vector k and lanes 8-15 vector k+1, against the
// activations' matching 4-byte pieces placed by one permute of the block's 32 bytes; the two
// halves' integer sums are then added (exactly) and the float steps are x8_rows' own, so the
// results are bit for bit those of the 256-bit code.
QTARGET static inline __attribute__((always_inline)) void QFN(x8_rows512)(const int type, const uint8_t *grp, int64_t nb,
                                                                           const tsr_q8_block *a, const tsr_q8_block *alo, int64_t a_stride,
                                                                           const int NR, const int TWO, __m256 *out) {
    const int64_t gb = x8_block_bytes(type), qo = x8_quants_offset(type);
    const __m512i m4 = _mm512_set1_epi8(15);
    // Dword d of the block's activation bytes into lanes 0-7, dword d+1 into lanes 8-15.
    const __m512i sel[4] = {
        _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
        _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2),
        _mm512_set_epi32(5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 4, 4, 4, 4, 4, 4),
        _mm512_set_epi32(7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, 6, 6),
    };
    __m256 acc[4], accm[4];
    for (int r = 0; r < 4; r++) acc[r] = accm[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *p = grp + b * gb, *qs = p + qo;
        for (int64_t l = 0; l < gb; l += 64) _mm_prefetch((const char *)(p + QX8_PREFETCH + l), _MM_HINT_T0);
        __m512i s[4], t[4];
        for (int r = 0; r < 4; r++) s[r] = t[r] = _mm512_setzero_si512();
        if (type == TSR_GGML_Q8_0) {
            // Vectors 2j and 2j + 1 hold weights 8j..8j+7 of each row: activation dwords 2j, 2j + 1.
            for (int j = 0; j < 4; j++) {
                const __m512i w = _mm512_loadu_si512((const void *)(qs + 64 * j));
                const __m512i u = _mm512_abs_epi8(w);
                const __mmask64 neg = _mm512_movepi8_mask(w);
                for (int r = 0; r < NR; r++) {
                    const __m512i x = _mm512_permutexvar_epi32(sel[j], _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a[r * a_stride + b].q)));
                    s[r] = _mm512_dpbusd_epi32(s[r], u, _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x));
                    if (TWO) {
                        const __m512i x2 = _mm512_permutexvar_epi32(sel[j], _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)alo[r * a_stride + b].q)));
                        t[r] = _mm512_dpbusd_epi32(t[r], u, _mm512_mask_sub_epi8(x2, neg, _mm512_setzero_si512(), x2));
                    }
                }
            }
        } else {
            // Vectors 0-1 and 2-3: low nibbles are weights 4k.. (activation dwords k), high
            // nibbles 16 + 4k.. (dwords 4 + k).
            const __m512i z01 = _mm512_loadu_si512((const void *)qs), z23 = _mm512_loadu_si512((const void *)(qs + 64));
            __m512i lo01 = _mm512_and_si512(z01, m4), hi01 = _mm512_and_si512(_mm512_srli_epi16(z01, 4), m4);
            __m512i lo23 = _mm512_and_si512(z23, m4), hi23 = _mm512_and_si512(_mm512_srli_epi16(z23, 4), m4);
            if (x8_is_five(type)) {
                // Fifth bits: lanes 0-7 (vector k) take bits 4k.. of their row's mask, lanes 8-15
                // (vector k + 1) bits 4k + 4..; +16 where set.
                const __m256i q8 = _mm256_loadu_si256((const __m256i *)(p + x8_qh_offset(type)));
                const __m512i qq = _mm512_inserti64x4(_mm512_castsi256_si512(q8), q8, 1);
                const __m512i dup = _mm512_set_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0, 0x0C0C0C0C, 0x08080808, 0x04040404, 0,
                                                     0x0C0C0C0C, 0x08080808, 0x04040404, 0, 0x0C0C0C0C, 0x08080808, 0x04040404, 0);
                const __m512i bits = _mm512_set1_epi32(0x08040201), sixteen = _mm512_set1_epi8(16);
#define QX8_FIFTH(V, S0, S1) \
                V = _mm512_mask_add_epi8(V, _mm512_test_epi8_mask(_mm512_shuffle_epi8(_mm512_srlv_epi32(qq, \
                        _mm512_set_epi32(S1, S1, S1, S1, S1, S1, S1, S1, S0, S0, S0, S0, S0, S0, S0, S0)), dup), bits), V, sixteen)
                QX8_FIFTH(lo01, 0, 4);
                QX8_FIFTH(lo23, 8, 12);
                QX8_FIFTH(hi01, 16, 20);
                QX8_FIFTH(hi23, 24, 28);
#undef QX8_FIFTH
            }
            for (int r = 0; r < NR; r++) {
                const __m512i x = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a[r * a_stride + b].q));
                s[r] = _mm512_dpbusd_epi32(s[r], lo01, _mm512_permutexvar_epi32(sel[0], x));
                s[r] = _mm512_dpbusd_epi32(s[r], lo23, _mm512_permutexvar_epi32(sel[1], x));
                s[r] = _mm512_dpbusd_epi32(s[r], hi01, _mm512_permutexvar_epi32(sel[2], x));
                s[r] = _mm512_dpbusd_epi32(s[r], hi23, _mm512_permutexvar_epi32(sel[3], x));
                if (TWO) {
                    const __m512i x2 = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)alo[r * a_stride + b].q));
                    t[r] = _mm512_dpbusd_epi32(t[r], lo01, _mm512_permutexvar_epi32(sel[0], x2));
                    t[r] = _mm512_dpbusd_epi32(t[r], lo23, _mm512_permutexvar_epi32(sel[1], x2));
                    t[r] = _mm512_dpbusd_epi32(t[r], hi01, _mm512_permutexvar_epi32(sel[2], x2));
                    t[r] = _mm512_dpbusd_epi32(t[r], hi23, _mm512_permutexvar_epi32(sel[3], x2));
                }
            }
        }
        __m256i s32[4];
        for (int r = 0; r < NR; r++) {
            s32[r] = _mm256_add_epi32(_mm512_castsi512_si256(s[r]), _mm512_extracti64x4_epi64(s[r], 1));
            if (TWO) {
                const __m256i t32 = _mm256_add_epi32(_mm512_castsi512_si256(t[r]), _mm512_extracti64x4_epi64(t[r], 1));
                s32[r] = _mm256_add_epi32(_mm256_slli_epi32(s32[r], 8), t32);
            }
        }
        QFN(x8_scale_block)(type, p, s32, a, alo, a_stride, b, NR, TWO, acc, accm);
    }
    QFN(x8_finish)(type, grp, nb, a, alo, a_stride, NR, TWO, acc, accm, out);
}
#define QX8_ROWS QFN(x8_rows512)
#else
#define QX8_ROWS QFN(x8_rows)
#endif

// One quant vector of a Q4_K group (low nibbles: sub-block 2p, high: 2p + 1; 8 rows × 4 weights)
// against the 4-byte pieces k of the activation blocks b[0] and b[1]: exact 32-bit sums into e, o.
QTARGET static inline __attribute__((always_inline)) void QFN(x8k_dot)(__m256i lo, __m256i hi, const tsr_q8_block *b, int k,
                                                                        __m256i *e, __m256i *o) {
    int32_t pe, po;
    memcpy(&pe, b[0].q + 4 * k, 4);
    memcpy(&po, b[1].q + 4 * k, 4);
#if QSIMD == 1
    const __m256i ones = _mm256_set1_epi16(1);
    *e = _mm256_add_epi32(*e, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(pe)), ones));
    *o = _mm256_add_epi32(*o, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_set1_epi32(po)), ones));
#else
    *e = _mm256_dpbusd_epi32(*e, lo, _mm256_set1_epi32(pe));
    *o = _mm256_dpbusd_epi32(*o, hi, _mm256_set1_epi32(po));
#endif
}

// Q4_K interleaved by 8 rows (qmatmul.c: X8K_*): per super-block, the 8 rows' scales and mins
// decoded once (six-bit fields regrouped in 32-bit words) and turned into per-sub-block vectors
// over the rows; each quant vector is 8 rows × 4 weights of two sub-blocks (low and high
// nibbles) against broadcast 4-byte pieces of their activation blocks, summed exactly in 32 bits
// (two levels: 256·Σw·q + Σw·r, |Σw·q| <= 32·15·127). Then per sub-block one scale FMA and one
// offset FMA (−dmin·m against the activation sums) for all 8 rows.
// FIVE (Q5_K): the fifth bits of vector 8p + k's weights are bits 2p (low nibbles) and 2p + 1
// (high) of qh vector k's bytes, added as 16.
// x8_rows' signature, FIVE in place of the type; nb counts blocks of 32 (8 per super-block).
QTARGET static inline __attribute__((always_inline)) void QFN(x8k_rows)(const int FIVE, const uint8_t *grp, int64_t nb,
                                                                         const tsr_q8_block *a, const tsr_q8_block *alo, int64_t a_stride,
                                                                         const int NR, const int TWO, __m256 *out) {
    const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    const int type = FIVE ? TSR_GGML_Q5_K : TSR_GGML_Q4_K;
    const int64_t gb = x8_block_bytes(type), qo = x8k_quants_offset(type);
    __m256 acc[4], accm[4];
    for (int r = 0; r < 4; r++) acc[r] = accm[r] = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nb / 8; sb++) {
        const uint8_t *p = grp + sb * gb;
        for (int64_t l = 0; l < gb; l += 64) _mm_prefetch((const char *)(p + QX8_PREFETCH + l), _MM_HINT_T0);
        // The 8 rows' scale words in lanes: row j's 12 bytes are dwords 3j, 3j + 1, 3j + 2 of the
        // 96 at p + X8K_SCALES; gathered by permutes and blends into u0, u1, u2 (lane j = row j), then
        // regrouped as tsr_q4k_scales_mins does, in all 8 lanes at once: byte s of sc03 / sc47 is
        // sub-block s's (or s + 4's) scale, of mn03 / mn47 its min.
        const uint8_t *scales = p + X8K_SCALES;
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)scales), v1 = _mm256_loadu_si256((const __m256i *)(scales + 32));
        const __m256i v2 = _mm256_loadu_si256((const __m256i *)(scales + 64));
#define QX8K_GATHER(I0, I1, I2, M1, M2) \
        _mm256_blend_epi32(_mm256_blend_epi32(_mm256_permutevar8x32_epi32(v0, I0), _mm256_permutevar8x32_epi32(v1, I1), M1), \
                           _mm256_permutevar8x32_epi32(v2, I2), M2)
        const __m256i u0 = QX8K_GATHER(_mm256_setr_epi32(0, 3, 6, 0, 0, 0, 0, 0), _mm256_setr_epi32(0, 0, 0, 1, 4, 7, 0, 0),
                                       _mm256_setr_epi32(0, 0, 0, 0, 0, 0, 2, 5), 0x38, 0xC0);
        const __m256i u1 = QX8K_GATHER(_mm256_setr_epi32(1, 4, 7, 0, 0, 0, 0, 0), _mm256_setr_epi32(0, 0, 0, 2, 5, 0, 0, 0),
                                       _mm256_setr_epi32(0, 0, 0, 0, 0, 0, 3, 6), 0x18, 0xE0);
        const __m256i u2 = QX8K_GATHER(_mm256_setr_epi32(2, 5, 0, 0, 0, 0, 0, 0), _mm256_setr_epi32(0, 0, 0, 3, 6, 0, 0, 0),
                                       _mm256_setr_epi32(0, 0, 0, 0, 0, 1, 4, 7), 0x1C, 0xE0);
#undef QX8K_GATHER
        const __m256i k1 = _mm256_set1_epi32(0x3f3f3f3f), k2 = _mm256_set1_epi32(0x0f0f0f0f), k3 = _mm256_set1_epi32(0x03030303);
        const __m256i sc03 = _mm256_and_si256(u0, k1), mn03 = _mm256_and_si256(u1, k1);
        const __m256i sc47 = _mm256_or_si256(_mm256_and_si256(u2, k2), _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 6), k3), 4));
        const __m256i mn47 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), k2), _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 6), k3), 4));
        const __m256 d8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
        const __m256 dm8 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16))), _mm256_set1_ps(-1.0f));
        const __m256i byte = _mm256_set1_epi32(0xff);
        __m256 dsc[8], dmn[8];
        for (int sub = 0; sub < 8; sub++) {
            const __m128i shift = _mm_cvtsi32_si128(8 * (sub & 3));
            const __m256i sc = _mm256_and_si256(_mm256_srl_epi32(sub < 4 ? sc03 : sc47, shift), byte);
            const __m256i mn = _mm256_and_si256(_mm256_srl_epi32(sub < 4 ? mn03 : mn47, shift), byte);
            dsc[sub] = _mm256_mul_ps(d8, _mm256_cvtepi32_ps(sc));
            dmn[sub] = _mm256_mul_ps(dm8, _mm256_cvtepi32_ps(mn));
        }
        for (int pr = 0; pr < 4; pr++) {
            __m256i se[4], so[4], te[4], to[4];
            for (int r = 0; r < 4; r++) se[r] = so[r] = te[r] = to[r] = _mm256_setzero_si256();
            for (int k = 0; k < 8; k++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(p + qo + 32 * (8 * pr + k)));
                __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                if (FIVE) {  // 16-bit shifts, masked per byte
                    const __m256i qh = _mm256_loadu_si256((const __m256i *)(p + X8K_QH + 32 * k));
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * pr), one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * pr + 1), one), 4));
                }
                for (int r = 0; r < NR; r++) {
                    QFN(x8k_dot)(lo, hi, a + r * a_stride + sb * 8 + 2 * pr, k, &se[r], &so[r]);
                    if (TWO) QFN(x8k_dot)(lo, hi, alo + r * a_stride + sb * 8 + 2 * pr, k, &te[r], &to[r]);
                }
            }
            for (int r = 0; r < NR; r++) {
                const tsr_q8_block *ab = a + r * a_stride + sb * 8 + 2 * pr, *lb = TWO ? alo + r * a_stride + sb * 8 + 2 * pr : ab;
                if (TWO) {
                    se[r] = _mm256_add_epi32(_mm256_slli_epi32(se[r], 8), te[r]);
                    so[r] = _mm256_add_epi32(_mm256_slli_epi32(so[r], 8), to[r]);
                }
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(se[r]), _mm256_mul_ps(dsc[2 * pr], _mm256_set1_ps(lb[0].d)), acc[r]);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(so[r]), _mm256_mul_ps(dsc[2 * pr + 1], _mm256_set1_ps(lb[1].d)), acc[r]);
                accm[r] = _mm256_fmadd_ps(dmn[2 * pr], _mm256_set1_ps(TWO ? ab[0].s + lb[0].s : ab[0].s), accm[r]);
                accm[r] = _mm256_fmadd_ps(dmn[2 * pr + 1], _mm256_set1_ps(TWO ? ab[1].s + lb[1].s : ab[1].s), accm[r]);
            }
        }
    }
    for (int r = 0; r < NR; r++) out[r] = _mm256_add_ps(acc[r], accm[r]);
}

// A group's 8 outputs for activation rows r0..r0 + nr, lanes [l0, l1) kept: y (+)= alpha·o.
QTARGET static inline __attribute__((always_inline)) void QFN(x8_store)(const qmatmul_job *j, const tsr_weight_part *p, int64_t grp,
                                                                         int64_t l0, int64_t l1, int64_t r0, int64_t nr, const __m256 *o,
                                                                         int accumulate) {
    const __m256 alpha = _mm256_set1_ps(j->alpha);
    for (int64_t r = 0; r < nr; r++) {
        float *dst = j->y + (r0 + r) * j->y_stride + p->out_offset + grp * 8;
        const __m256 v = _mm256_mul_ps(o[r], alpha);
        if (l0 == 0 && l1 == 8) {
            _mm256_storeu_ps(dst, accumulate ? _mm256_add_ps(_mm256_loadu_ps(dst), v) : v);
        } else {
            float t_[8];
            _mm256_storeu_ps(t_, v);
            for (int64_t l = l0; l < l1; l++) dst[l] = accumulate ? dst[l] + t_[l] : t_[l];
        }
    }
}

// Groups covering stored rows [g0, g1) of an interleaved part, every activation row; lanes
// outside [g0, g1) are computed and dropped. ROWS(ARG, group, blocks of 32, ...) is the group
// kernel of type T. A part split in column panels (k_split) sums each panel on its own: panel
// 0's sums stored (or added), then panel 1's added.
#define QX8_SPAN(NAME, T, ROWS, ARG) \
QTARGET static void QFN(NAME)(const tsr_weight_part *p, int64_t g0, int64_t g1, const qmatmul_job *j) { \
    const int64_t nb = j->inputs / 32, ks = p->k_split > 0 ? p->k_split : nb; \
    const int64_t pa = j->panel_only == 2 ? 1 : 0, pz = j->panel_only == 1 ? 1 : ks < nb ? 2 : 1; \
    for (int64_t grp = g0 / 8; grp * 8 < g1; grp++) { \
        const int64_t l0 = g0 > grp * 8 ? g0 - grp * 8 : 0, l1 = g1 < grp * 8 + 8 ? g1 - grp * 8 : 8; \
        for (int64_t r0 = 0; r0 < j->rows; r0 += 4) { \
            const int64_t nr = j->rows - r0 < 4 ? j->rows - r0 : 4; \
            for (int64_t pn = pa; pn < pz; pn++) { \
                const int64_t b0 = pn ? ks : 0, bn = pn ? nb - ks : ks; \
                const uint8_t *gp = x8_block_at(p, T, nb, grp, b0); \
                __m256 o[4]; \
                const tsr_q8_block *a = j->xq + r0 * nb + b0, *alo = j->xq_lo ? j->xq_lo + r0 * nb + b0 : NULL; \
                if (alo) { \
                    switch (nr) { \
                    case 1: ROWS(ARG, gp, bn, a, alo, nb, 1, 1, o); break; \
                    case 2: ROWS(ARG, gp, bn, a, alo, nb, 2, 1, o); break; \
                    case 3: ROWS(ARG, gp, bn, a, alo, nb, 3, 1, o); break; \
                    default: ROWS(ARG, gp, bn, a, alo, nb, 4, 1, o); break; \
                    } \
                } else { \
                    switch (nr) { \
                    case 1: ROWS(ARG, gp, bn, a, NULL, nb, 1, 0, o); break; \
                    case 2: ROWS(ARG, gp, bn, a, NULL, nb, 2, 0, o); break; \
                    case 3: ROWS(ARG, gp, bn, a, NULL, nb, 3, 0, o); break; \
                    default: ROWS(ARG, gp, bn, a, NULL, nb, 4, 0, o); break; \
                    } \
                } \
                QFN(x8_store)(j, p, grp, l0, l1, r0, nr, o, pn > pa ? 1 : j->accumulate); \
            } \
        } \
    } }
QX8_SPAN(x8_span_q4_0, TSR_GGML_Q4_0, QX8_ROWS, TSR_GGML_Q4_0)
QX8_SPAN(x8_span_q4_1, TSR_GGML_Q4_1, QX8_ROWS, TSR_GGML_Q4_1)
QX8_SPAN(x8_span_q5_0, TSR_GGML_Q5_0, QX8_ROWS, TSR_GGML_Q5_0)
QX8_SPAN(x8_span_q5_1, TSR_GGML_Q5_1, QX8_ROWS, TSR_GGML_Q5_1)
QX8_SPAN(x8_span_q8_0, TSR_GGML_Q8_0, QX8_ROWS, TSR_GGML_Q8_0)
QX8_SPAN(x8k_span_q4_k, TSR_GGML_Q4_K, QFN(x8k_rows), 0)
QX8_SPAN(x8k_span_q5_k, TSR_GGML_Q5_K, QFN(x8k_rows), 1)
#undef QX8_SPAN
#undef QX8_ROWS
#endif

#if QSIMD == 0
// Q4_K / Q5_K interleaved by 8, one output row at a time (the portable reference for x8k_rows).
static void QFN(x8k_span)(const tsr_weight_part *p, int64_t g0, int64_t g1, const qmatmul_job *j) {
    const int five = p->type == TSR_GGML_Q5_K;
    const int64_t nb = j->inputs / 32, qo = x8k_quants_offset(p->type);
    const int64_t ks = p->k_split > 0 ? p->k_split : nb;
    for (int64_t g = g0; g < g1; g++) {
        const int64_t lane = g % 8;
        for (int64_t r = 0; r < j->rows; r++)
        for (int64_t pn = j->panel_only == 2 ? 1 : 0; pn < (j->panel_only == 1 ? 1 : ks < nb ? 2 : 1); pn++) {
            float acc = 0, accm = 0;
            for (int64_t sb = (pn ? ks : 0) / 8; sb < (pn ? nb : ks) / 8; sb++) {
                const uint8_t *db = x8_block_at(p, p->type, nb, g / 8, sb * 8);
                const float d = H2F(q_u16(db + 2 * lane)), dmin = H2F(q_u16(db + 16 + 2 * lane));
                for (int sub = 0; sub < 8; sub++) {
                    uint8_t sc, m;
                    tsr_q4k_scale_min(sub, db + X8K_SCALES + 12 * lane, &sc, &m);
                    const tsr_q8_block *ab = j->xq + r * nb + sb * 8 + sub, *al = j->xq_lo ? j->xq_lo + r * nb + sb * 8 + sub : NULL;
                    int32_t sum = 0, sum_lo = 0;
                    for (int i = 0; i < 32; i++) {
                        const uint8_t v = db[qo + 32 * (8 * (sub / 2) + i / 4) + 4 * lane + i % 4];
                        const int32_t h = five ? (db[X8K_QH + 32 * (i / 4) + 4 * lane + i % 4] >> sub) & 1 : 0;
                        const int32_t w = (sub % 2 ? v >> 4 : v & 15) | h << 4;
                        sum += w * ab->q[i];
                        if (al) sum_lo += w * al->q[i];
                    }
                    if (al) sum = sum * 256 + sum_lo;
                    acc += (float)sum * (d * (float)sc * (al ? al->d : ab->d));
                    accm += -dmin * (float)m * (al ? ab->s + al->s : ab->s);
                }
            }
            acc += accm;
            float *dst = j->y + r * j->y_stride + p->out_offset + g;
            *dst = j->accumulate || pn > (j->panel_only == 2) ? *dst + acc * j->alpha : acc * j->alpha;
        }
    }
}
static void QFN(x8k_span_q4_k)(const tsr_weight_part *p, int64_t g0, int64_t g1, const qmatmul_job *j) { QFN(x8k_span)(p, g0, g1, j); }
static void QFN(x8k_span_q5_k)(const tsr_weight_part *p, int64_t g0, int64_t g1, const qmatmul_job *j) { QFN(x8k_span)(p, g0, g1, j); }

// Rows interleaved by 8, one output row at a time (the portable reference for x8_rows).
static void QFN(x8_span)(const tsr_weight_part *p, int64_t g0, int64_t g1, const qmatmul_job *j) {
    const int type = p->type;
    const int64_t nb = j->inputs / 32, qo = x8_quants_offset(type);
    const int64_t ks = p->k_split > 0 ? p->k_split : nb;
    for (int64_t g = g0; g < g1; g++) {
        const int64_t lane = g % 8;
        for (int64_t r = 0; r < j->rows; r++)
        for (int64_t pn = j->panel_only == 2 ? 1 : 0; pn < (j->panel_only == 1 ? 1 : ks < nb ? 2 : 1); pn++) {
            float acc = 0, accm = 0;
            for (int64_t b = pn ? ks : 0; b < (pn ? nb : ks); b++) {
                const uint8_t *db = x8_block_at(p, type, nb, g / 8, b), *qs = db + qo;
                const tsr_q8_block *ab = j->xq + r * nb + b, *al = j->xq_lo ? j->xq_lo + r * nb + b : NULL;
                const float d = H2F(q_u16(db + 2 * lane));
                int32_t sum = 0, sum_lo = 0;
                if (type == TSR_GGML_Q8_0) {
                    for (int k = 0; k < 8; k++)
                        for (int i = 0; i < 4; i++) {
                            const int32_t w = (int8_t)qs[32 * k + 4 * lane + i];
                            sum += w * ab->q[4 * k + i];
                            if (al) sum_lo += w * al->q[4 * k + i];
                        }
                } else {
                    uint32_t qh = 0;  // Q5_0 / Q5_1: the fifth bits, bit j for weight j
                    if (x8_is_five(type)) memcpy(&qh, db + x8_qh_offset(type) + 4 * lane, 4);
                    for (int k = 0; k < 4; k++)
                        for (int i = 0; i < 4; i++) {
                            const uint8_t v = qs[32 * k + 4 * lane + i];
                            const int32_t wl = (v & 15) | (int32_t)(((qh >> (4 * k + i)) & 1) << 4);
                            const int32_t wh = (v >> 4) | (int32_t)(((qh >> (16 + 4 * k + i)) & 1) << 4);
                            sum += wl * ab->q[4 * k + i] + wh * ab->q[16 + 4 * k + i];
                            if (al) sum_lo += wl * al->q[4 * k + i] + wh * al->q[16 + 4 * k + i];
                        }
                }
                // With the residual: 256·sum + sum_lo at the residual's scale (the block's / 256).
                if (al) sum = sum * 256 + sum_lo;
                const float sa = al ? ab->s + al->s : ab->s;
                acc += (float)sum * (d * (al ? al->d : ab->d));
                if (x8_has_min(type)) accm += H2F(q_u16(db + 16 + 2 * lane)) * sa;
                else if (type == TSR_GGML_Q4_0) accm += (-8.0f * d) * sa;
                else if (type == TSR_GGML_Q5_0) accm += (-16.0f * d) * sa;
            }
            acc += accm;
            float *dst = j->y + r * j->y_stride + p->out_offset + g;
            *dst = j->accumulate || pn > (j->panel_only == 2) ? *dst + acc * j->alpha : acc * j->alpha;
        }
    }
}
#endif
