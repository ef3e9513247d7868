// One instruction-set variant of the weight-type matmul (qmatmul.c includes this file once per
// variant, with QSUFFIX, QTARGET and H2F defined, and QSIMD = 0 scalar, 1 AVX2, 2 AVX-512 VNNI);
// the stored-layout kernels here, the interleaved (x8) ones in qmatmul_x8_impl.h, included below.
// No include guard on purpose.
#define QCAT2(a, b) a##b
#define QCAT(a, b) QCAT2(a, b)
#define QFN(name) QCAT(name, QSUFFIX)

#if QSIMD == 0
// 16 bytes of nibbles: low nibbles are weights 0..15, high ones 16..31.
#define QUNPACK_NIBBLES16(w, src) do { \
    for (int j_ = 0; j_ < 16; j_++) { (w)[j_] = (int8_t)((src)[j_] & 15); (w)[j_ + 16] = (int8_t)((src)[j_] >> 4); } } while (0)
// 32 bytes of nibbles: low nibbles are one block of 32, high ones the next.
#define QUNPACK_NIBBLES32(w, src) do { \
    for (int j_ = 0; j_ < 32; j_++) { (w)[j_] = (int8_t)((src)[j_] & 15); (w)[j_ + 32] = (int8_t)((src)[j_] >> 4); } } while (0)
// Q6_K: 4 low bits from lo >> sl, 2 high bits from qh >> sh, minus 32.
#define QUNPACK_Q6(w, lo, qh, sl, sh) do { \
    for (int l_ = 0; l_ < 32; l_++) \
        (w)[l_] = (int8_t)((int)((((lo)[l_] >> (sl)) & 15) | ((((qh)[l_] >> (sh)) & 3) << 4)) - 32); } while (0)
#else
#define QUNPACK_NIBBLES16(w, src) do { \
    const __m128i raw_ = _mm_loadu_si128((const __m128i *)(src)); \
    const __m128i m_ = _mm_set1_epi8(15); \
    _mm_storeu_si128((__m128i *)(w), _mm_and_si128(raw_, m_)); \
    _mm_storeu_si128((__m128i *)((w) + 16), _mm_and_si128(_mm_srli_epi16(raw_, 4), m_)); } while (0)
#define QUNPACK_NIBBLES32(w, src) do { \
    const __m256i raw_ = _mm256_loadu_si256((const __m256i *)(src)); \
    const __m256i m_ = _mm256_set1_epi8(15); \
    _mm256_storeu_si256((__m256i *)(w), _mm256_and_si256(raw_, m_)); \
    _mm256_storeu_si256((__m256i *)((w) + 32), _mm256_and_si256(_mm256_srli_epi16(raw_, 4), m_)); } while (0)
#define QUNPACK_Q6(w, lo, qh, sl, sh) do { \
    const __m256i l_ = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(lo)), _mm_cvtsi32_si128(sl)), _mm256_set1_epi8(15)); \
    const __m256i h_ = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(qh)), _mm_cvtsi32_si128(sh)), _mm256_set1_epi8(3)); \
    const __m256i v_ = _mm256_or_si256(l_, _mm256_slli_epi16(h_, 4)); \
    _mm256_storeu_si256((__m256i *)(w), _mm256_sub_epi8(v_, _mm256_set1_epi8(32))); } while (0)
#endif

// Stage 1: one weight row's blocks [b0, b1) (32 weights each) into int8 values, per-16
// scales and a per-block offset coefficient: weight j of block b is
// sc[2b + j/16] · wq[32b + j] (+ off[b] spread as off[b]·Σa through the activation sums).
QTARGET static void QFN(unpack)(int type, const uint8_t *row, int64_t b0, int64_t b1, int8_t *wq, float *sc, float *off) {
    switch (type) {
    case TSR_GGML_Q4_0:
        for (int64_t b = b0; b < b1; b++) {
            const uint8_t *p = row + b * 18;
            const float d = H2F(q_u16(p));
            QUNPACK_NIBBLES16(wq + (b - b0) * 32, p + 2);
            sc[2 * (b - b0)] = d; sc[2 * (b - b0) + 1] = d; off[b - b0] = -8.0f * d;
        }
        break;
    case TSR_GGML_Q4_1:
        for (int64_t b = b0; b < b1; b++) {
            const uint8_t *p = row + b * 20;
            const float d = H2F(q_u16(p)), m = H2F(q_u16(p + 2));
            QUNPACK_NIBBLES16(wq + (b - b0) * 32, p + 4);
            sc[2 * (b - b0)] = d; sc[2 * (b - b0) + 1] = d; off[b - b0] = m;
        }
        break;
    case TSR_GGML_Q8_0:
        for (int64_t b = b0; b < b1; b++) {
            const uint8_t *p = row + b * 34;
            const float d = H2F(q_u16(p));
            memcpy(wq + (b - b0) * 32, p + 2, 32);
            sc[2 * (b - b0)] = d; sc[2 * (b - b0) + 1] = d; off[b - b0] = 0;
        }
        break;
    case TSR_GGML_Q5_0:
    case TSR_GGML_Q5_1: {
        // 5-bit unsigned weights: the nibble and one bit of qh as 16; Q5_0's offset −16·d.
        const int with_min = type == TSR_GGML_Q5_1;
        const int64_t bb = with_min ? 24 : 22;
        for (int64_t b = b0; b < b1; b++) {
            const uint8_t *p = row + b * bb, *h = p + (with_min ? 4 : 2), *qs = h + 4;
            const float d = H2F(q_u16(p));
            uint32_t qh;
            memcpy(&qh, h, 4);
            int8_t *w = wq + (b - b0) * 32;
            for (int j = 0; j < 16; j++) {
                w[j] = (int8_t)((qs[j] & 15) | (((qh >> j) & 1) << 4));
                w[j + 16] = (int8_t)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
            }
            sc[2 * (b - b0)] = d; sc[2 * (b - b0) + 1] = d;
            off[b - b0] = with_min ? H2F(q_u16(p + 2)) : -16.0f * d;
        }
        break;
    }
    case TSR_GGML_Q4_K:
    case TSR_GGML_Q5_K: {
        // b0, b1 are multiples of 8 here (whole super-blocks of 256). Q5_K: Q4_K's scales and
        // minimums, plus the fifth bit of sub-block s's weight l in bit s of qh[l].
        const int five = type == TSR_GGML_Q5_K;
        for (int64_t b = b0; b < b1; b += 8) {
            const uint8_t *p = row + (b / 8) * (five ? 176 : 144);
            const float d = H2F(q_u16(p)), dmin = H2F(q_u16(p + 2));
            const uint8_t *scales = p + 4, *qh = p + 16, *q = p + (five ? 48 : 16);
            for (int s = 0; s < 8; s++) {
                uint8_t scv, mv;
                tsr_q4k_scale_min(s, scales, &scv, &mv);
                const int64_t k = b - b0 + s;
                sc[2 * k] = d * (float)scv; sc[2 * k + 1] = d * (float)scv; off[k] = -dmin * (float)mv;
            }
            for (int pair = 0; pair < 4; pair++) {
                int8_t *w = wq + (b - b0 + 2 * pair) * 32;
                QUNPACK_NIBBLES32(w, q + 32 * pair);
                if (five)
                    for (int l = 0; l < 32; l++) {
                        w[l] |= (int8_t)(((qh[l] >> (2 * pair)) & 1) << 4);
                        w[32 + l] |= (int8_t)(((qh[l] >> (2 * pair + 1)) & 1) << 4);
                    }
            }
        }
        break;
    }
    case TSR_GGML_Q6_K:
        for (int64_t b = b0; b < b1; b += 8) {
            const uint8_t *p = row + (b / 8) * 210;
            const float d = H2F(q_u16(p + 208));
            for (int half = 0; half < 2; half++) {
                const uint8_t *ql = p + 64 * half, *qh = p + 128 + 32 * half;
                const int8_t *scs = (const int8_t *)(p + 192) + 8 * half;
                for (int c = 0; c < 4; c++) {
                    const int64_t k = b - b0 + 4 * half + c;
                    QUNPACK_Q6(wq + k * 32, ql + (c & 1) * 32, qh, (c >> 1) * 4, 2 * c);
                    sc[2 * k] = d * (float)scs[2 * c]; sc[2 * k + 1] = d * (float)scs[2 * c + 1]; off[k] = 0;
                }
            }
        }
        break;
    default:
        break;
    }
}

// Stage 2: Σ over blocks of one activation row against the unpacked weights.
QTARGET static float QFN(dot_q8)(const int8_t *wq, const float *sc, const float *off, const tsr_q8_block *a, int64_t nb, int is_signed) {
#if QSIMD == 0
    (void)is_signed;
    float sum = 0;
    for (int64_t b = 0; b < nb; b++) {
        int32_t s0 = 0, s1 = 0;
        const int8_t *w = wq + 32 * b, *q = a[b].q;
        for (int j = 0; j < 16; j++) s0 += (int32_t)w[j] * q[j];
        for (int j = 16; j < 32; j++) s1 += (int32_t)w[j] * q[j];
        sum += (sc[2 * b] * (float)s0 + sc[2 * b + 1] * (float)s1) * a[b].d + off[b] * a[b].s;
    }
    return sum;
#else
    __m256 acc = _mm256_setzero_ps();
    float acc_off = 0;
#if QSIMD == 1
    const __m256i ones = _mm256_set1_epi16(1);
#endif
    for (int64_t b = 0; b < nb; b++) {
        const __m256i w = _mm256_loadu_si256((const __m256i *)(wq + 32 * b));
        const __m256i q = _mm256_loadu_si256((const __m256i *)a[b].q);
        __m256i wu = w, qs = q;
        if (is_signed) { wu = _mm256_sign_epi8(w, w); qs = _mm256_sign_epi8(q, w); }
#if QSIMD == 1
        const __m256i s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(wu, qs), ones);
#else
        const __m256i s32 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wu, qs);
#endif
        const float da = a[b].d;
        const __m256 scale = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(sc[2 * b] * da)), _mm_set1_ps(sc[2 * b + 1] * da), 1);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), scale, acc);
        acc_off += off[b] * a[b].s;
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h) + acc_off;
#endif
}

#if QSIMD != 0
// Fused kernels for the 32-weight block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): each block is
// unpacked in registers and serves NR activation rows (1..4) before the next block; no staging.
#if QSIMD == 1
#define QIDOT(wu, qs) _mm256_madd_epi16(_mm256_maddubs_epi16((wu), (qs)), _mm256_set1_epi16(1))
#else
#define QIDOT(wu, qs) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (wu), (qs))
#endif

// Block b of a Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 row: its 32 weights as bytes (unsigned 4- or
// 5-bit values, or signed for Q8_0) and its f16 (scale, offset) pair as 32 bits (Q4_0, Q5_0
// and Q8_0: offset derived below).
QTARGET static inline __attribute__((always_inline)) __m256i QFN(block_bytes)(int type, const uint8_t *row, int64_t b, uint32_t *dm) {
    const __m128i m4 = _mm_set1_epi8(15);
    if (type == TSR_GGML_Q8_0) {
        const uint8_t *p = row + b * 34;
        *dm = q_u16(p);
        return _mm256_loadu_si256((const __m256i *)(p + 2));
    }
    if (type == TSR_GGML_Q5_0 || type == TSR_GGML_Q5_1) {
        // The nibbles as for Q4, plus bit j of qh as 16 in byte j: each byte picks its qh byte
        // (j / 8, within its 128-bit lane of the broadcast), tests its bit, keeps 16 if set.
        const int with_min = type == TSR_GGML_Q5_1;
        const uint8_t *p = row + b * (with_min ? 24 : 22), *h = p + (with_min ? 4 : 2);
        const __m128i raw = _mm_loadu_si128((const __m128i *)(h + 4));
        if (with_min) memcpy(dm, p, 4); else *dm = q_u16(p);
        uint32_t qh;
        memcpy(&qh, h, 4);
        const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh),
                                                   _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                                                    2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
        const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
        const __m256i high = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(16));
        return _mm256_or_si256(_mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4)), high);
    }
    const uint8_t *p = row + b * (type == TSR_GGML_Q4_1 ? 20 : 18);
    const __m128i raw = _mm_loadu_si128((const __m128i *)(p + (type == TSR_GGML_Q4_1 ? 4 : 2)));
    if (type == TSR_GGML_Q4_1) memcpy(dm, p, 4); else *dm = q_u16(p);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
}

// Two blocks' (d0, m0, d1, m1) as floats: Q4_1 stores m; Q4_0's weights are d·(q − 8), so m = −8d;
// Q8_0 has no offset.
QTARGET static inline __attribute__((always_inline)) __m128 QFN(block_scales)(int type, uint32_t dm0, uint32_t dm1) {
    __m128 f = _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)dm1, (int)dm0));
    if (type == TSR_GGML_Q4_0) {
        const __m128 d = _mm_moveldup_ps(f);  // f16 pairs (d, 0): d0 d0 d1 d1
        f = _mm_mul_ps(d, _mm_setr_ps(1, -8, 1, -8));
    } else if (type == TSR_GGML_Q5_0) {
        f = _mm_mul_ps(_mm_moveldup_ps(f), _mm_setr_ps(1, -16, 1, -16));  // d·(q − 16)
    } else if (type == TSR_GGML_Q8_0) {
        f = _mm_mul_ps(_mm_moveldup_ps(f), _mm_setr_ps(1, 0, 1, 0));
    }
    return f;
}

// NR activation rows (1..4) against one weight row, two blocks per iteration. Per pair of
// blocks: one f16 conversion for both blocks' scales, one multiply for every (d·d_a, m·s)
// product, offsets summed in vector lanes; no scalar dependency chains.
QTARGET static inline __attribute__((always_inline)) void QFN(fused_rows)(int type, const uint8_t *row, int64_t nb,
                                                                           const tsr_q8_block *a, const tsr_q8_block *alo, int64_t a_stride,
                                                                           const int NR, const int TWO, const float *pre, float *out) {
    (void)alo; (void)TWO; (void)pre;  // one level: the residuals take a second pass (qmatmul_range)
    __m256 acc0[4], acc1[4];
    __m128 accm[4];
    for (int r = 0; r < 4; r++) { acc0[r] = acc1[r] = _mm256_setzero_ps(); accm[r] = _mm_setzero_ps(); }
    const int is_signed = type == TSR_GGML_Q8_0;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        uint32_t dm0, dm1;
        const __m256i w0 = QFN(block_bytes)(type, row, b, &dm0);
        const __m256i w1 = QFN(block_bytes)(type, row, b + 1, &dm1);
        const __m128 f = QFN(block_scales)(type, dm0, dm1);
        const __m256i u0 = is_signed ? _mm256_sign_epi8(w0, w0) : w0;
        const __m256i u1 = is_signed ? _mm256_sign_epi8(w1, w1) : w1;
        for (int r = 0; r < NR; r++) {
            const tsr_q8_block *ab = a + r * a_stride + b;
            // (d_a0, s0, d_a1, s1): each block's d and s are adjacent.
            const __m128 as = _mm_loadh_pi(_mm_castpd_ps(_mm_load_sd((const double *)&ab[0].d)), (const __m64 *)&ab[1].d);
            const __m128 prod = _mm_mul_ps(f, as);
            accm[r] = _mm_add_ps(accm[r], prod);
            const __m256i q0 = _mm256_loadu_si256((const __m256i *)ab[0].q);
            const __m256i q1 = _mm256_loadu_si256((const __m256i *)ab[1].q);
            const __m256i s0 = QIDOT(u0, is_signed ? _mm256_sign_epi8(q0, w0) : q0);
            const __m256i s1 = QIDOT(u1, is_signed ? _mm256_sign_epi8(q1, w1) : q1);
            acc0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_broadcastss_ps(prod), acc0[r]);
            acc1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_broadcastss_ps(_mm_movehl_ps(prod, prod)), acc1[r]);
        }
    }
    if (b < nb) {  // an odd last block
        uint32_t dm0;
        const __m256i w0 = QFN(block_bytes)(type, row, b, &dm0);
        const __m128 f = QFN(block_scales)(type, dm0, 0);
        const __m256i u0 = is_signed ? _mm256_sign_epi8(w0, w0) : w0;
        for (int r = 0; r < NR; r++) {
            const tsr_q8_block *ab = a + r * a_stride + b;
            const __m128 as = _mm_castpd_ps(_mm_load_sd((const double *)&ab[0].d));
            const __m128 prod = _mm_mul_ps(f, as);
            accm[r] = _mm_add_ps(accm[r], prod);
            const __m256i q0 = _mm256_loadu_si256((const __m256i *)ab[0].q);
            const __m256i s0 = QIDOT(u0, is_signed ? _mm256_sign_epi8(q0, w0) : q0);
            acc0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_broadcastss_ps(prod), acc0[r]);
        }
    }
    for (int r = 0; r < NR; r++) {
        const __m256 v = _mm256_add_ps(acc0[r], acc1[r]);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        // Offsets sit in lanes 1 and 3 of accm.
        const __m128 m = _mm_add_ss(_mm_movehdup_ps(accm[r]), _mm_movehl_ps(accm[r], _mm_movehdup_ps(accm[r])));
        out[r] = _mm_cvtss_f32(h) + _mm_cvtss_f32(m);
    }
}

// Q4_K (and Q5_K): a super-block of 256 weights is 8 sub-blocks of 32 (one activation block
// each) with 6-bit scales and mins: w = d·sc_j·q − dmin·m_j. Scales and mins are unpacked once per
// super-block into vectors; the offsets of all 8 sub-blocks take one FMA per row.
// TWO: two-level activations in the same pass over the weights, as the x8 kernels do: the
// integer sums combined exactly as 256·Σw·q + Σw·r (|Σw·q| ≤ 32·15·127, so no overflow) and
// scaled by the residual's d (the block's / 256); offsets against both levels' sums.
QTARGET static inline __attribute__((always_inline)) void QFN(q4k_rows)(int type, const uint8_t *row, int64_t nb,
                                                                         const tsr_q8_block *a, const tsr_q8_block *alo, int64_t a_stride,
                                                                         const int NR, const int TWO, const float *pre, float *out) {
    // Q5_K (type): the same with a fifth bit per weight, bit s of qh[l] for sub-block s.
    const int five = type == TSR_GGML_Q5_K;
    __m256 acc0[4], acc1[4], accm[4];
    for (int r = 0; r < 4; r++) { acc0[r] = acc1[r] = accm[r] = _mm256_setzero_ps(); }
    const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    for (int64_t sb = 0; sb < nb / 8; sb++) {
        const uint8_t *p = row + sb * (five ? 176 : 144), *qs = p + (five ? 48 : 16);
        const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(p + 16)) : _mm256_setzero_si256();
        uint8_t smb[16];
        tsr_q4k_scales_mins(p + 4, smb);
        const __m128i sm = _mm_loadu_si128((const __m128i *)smb);
        const __m256 dsc = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sm)), _mm256_set1_ps(H2F(q_u16(p))));
        const __m256 dmn = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sm, 8))), _mm256_set1_ps(-H2F(q_u16(p + 2))));
        for (int r = 0; r < NR; r++) {
            const tsr_q8_block *ab = a + r * a_stride + sb * 8, *lb = TWO ? alo + r * a_stride + sb * 8 : ab;
            __m256 da, sa;
            if (pre) {  // the row's block scales and sums, gathered once per call (k_rows_pre)
                da = _mm256_loadu_ps(pre + 2 * r * nb + sb * 8);
                sa = _mm256_loadu_ps(pre + (2 * r + 1) * nb + sb * 8);
            } else {
                da = _mm256_setr_ps(lb[0].d, lb[1].d, lb[2].d, lb[3].d, lb[4].d, lb[5].d, lb[6].d, lb[7].d);
                sa = _mm256_setr_ps(ab[0].s, ab[1].s, ab[2].s, ab[3].s, ab[4].s, ab[5].s, ab[6].s, ab[7].s);
                if (TWO) sa = _mm256_add_ps(sa, _mm256_setr_ps(lb[0].s, lb[1].s, lb[2].s, lb[3].s, lb[4].s, lb[5].s, lb[6].s, lb[7].s));
            }
            accm[r] = _mm256_fmadd_ps(dmn, sa, accm[r]);
            const __m256 scale = _mm256_mul_ps(dsc, da);
            for (int k = 0; k < 4; k++) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
                __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                if (five) {
                    // Bits 2k and 2k + 1 of each qh byte as 16 (16-bit shifts, masked per byte).
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k + 1), one), 4));
                }
                __m256i s0 = QIDOT(lo, _mm256_loadu_si256((const __m256i *)ab[2 * k].q));
                __m256i s1 = QIDOT(hi, _mm256_loadu_si256((const __m256i *)ab[2 * k + 1].q));
                if (TWO) {
                    s0 = _mm256_add_epi32(_mm256_slli_epi32(s0, 8), QIDOT(lo, _mm256_loadu_si256((const __m256i *)lb[2 * k].q)));
                    s1 = _mm256_add_epi32(_mm256_slli_epi32(s1, 8), QIDOT(hi, _mm256_loadu_si256((const __m256i *)lb[2 * k + 1].q)));
                }
                acc0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), _mm256_permutevar8x32_ps(scale, _mm256_set1_epi32(2 * k)), acc0[r]);
                acc1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), _mm256_permutevar8x32_ps(scale, _mm256_set1_epi32(2 * k + 1)), acc1[r]);
            }
        }
    }
    for (int r = 0; r < NR; r++) {
        const __m256 v = _mm256_add_ps(_mm256_add_ps(acc0[r], acc1[r]), accm[r]);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        out[r] = _mm_cvtss_f32(h);
    }
}

// Q6_K: a super-block of 256 weights in two halves of 128; each 32-weight chunk takes 4 low
// bits from ql and 2 high bits from qh, minus 32, and has two int8 scales (one per 16), which
// land in lanes 0-3 and 4-7 of the chunk's 8 partial sums.
// TWO: both activation levels in one pass, as q4k_rows (|Σw·q| ≤ 32·32·127).
QTARGET static inline __attribute__((always_inline)) void QFN(q6k_rows)(int type, const uint8_t *row, int64_t nb,
                                                                         const tsr_q8_block *a, const tsr_q8_block *alo, int64_t a_stride,
                                                                         const int NR, const int TWO, const float *pre, float *out) {
    (void)type; (void)pre;
    __m256 acc0[4], acc1[4];
    for (int r = 0; r < 4; r++) { acc0[r] = acc1[r] = _mm256_setzero_ps(); }
    const __m256i m4 = _mm256_set1_epi8(15), m2 = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    for (int64_t sb = 0; sb < nb / 8; sb++) {
        const uint8_t *p = row + sb * 210;
        const __m256 d = _mm256_set1_ps(H2F(q_u16(p + 208)));
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)(p + 192));
        const __m256 scales[2] = {
            _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc8)), d),
            _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc8, 8))), d),
        };
        for (int k = 0; k < 8; k++) {
            const int half = k >> 2, c = k & 3;
            const __m256i lo = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(p + 64 * half + (c & 1) * 32)),
                                                                 _mm_cvtsi32_si128((c >> 1) * 4)), m4);
            const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(p + 128 + 32 * half)),
                                                                 _mm_cvtsi32_si128(2 * c)), m2);
            const __m256i w = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), k32);
            const __m256i u = _mm256_sign_epi8(w, w);
            const __m256 sv = _mm256_permutevar8x32_ps(scales[half], _mm256_setr_epi32(2 * c, 2 * c, 2 * c, 2 * c, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1));
            for (int r = 0; r < NR; r++) {
                const tsr_q8_block *ab = a + r * a_stride + sb * 8 + k;
                const __m256i q = _mm256_loadu_si256((const __m256i *)ab->q);
                __m256i s32 = QIDOT(u, _mm256_sign_epi8(q, w));
                if (TWO) {
                    ab = alo + r * a_stride + sb * 8 + k;
                    const __m256i ql = _mm256_loadu_si256((const __m256i *)ab->q);
                    s32 = _mm256_add_epi32(_mm256_slli_epi32(s32, 8), QIDOT(u, _mm256_sign_epi8(ql, w)));
                }
                const __m256 f = _mm256_mul_ps(sv, _mm256_set1_ps(ab->d));
                if (k & 1) acc1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), f, acc1[r]);
                else acc0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32), f, acc0[r]);
            }
        }
    }
    for (int r = 0; r < NR; r++) {
        const __m256 v = _mm256_add_ps(acc0[r], acc1[r]);
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        out[r] = _mm_cvtss_f32(h);
    }
}

// Output rows [g0, g1) of one part, every activation row, for one type (its branches fold
// away): four activation rows per pass over a weight row, which stays in L1 meanwhile. TWO_OK:
// ROWS takes both activation levels in its pass (else the residuals take a second one).
// K-quant rows read each activation block's (d, s) as 8-float vectors: for up to 4 activation
// rows (decode) they are gathered once per call here instead of once per weight row.
#ifndef QK_PRE_BLOCKS
#define QK_PRE_BLOCKS 1024
#endif
QTARGET static inline int QFN(k_rows_pre)(const qmatmul_job *j, int two, int64_t nb, float *pre) {
    if (j->rows > 4 || nb > QK_PRE_BLOCKS) return 0;
    for (int64_t r = 0; r < j->rows; r++)
        for (int64_t b = 0; b < nb; b++) {
            const tsr_q8_block *ab = j->xq + r * nb + b, *lb = two ? j->xq_lo + r * nb + b : ab;
            pre[2 * r * nb + b] = lb->d;
            pre[(2 * r + 1) * nb + b] = two ? ab->s + lb->s : ab->s;
        }
    return 1;
}

#define QFUSED_SPAN(T, NAME, ROWS, TWO_OK) \
QTARGET static void QFN(NAME)(const tsr_weight_part *p, int64_t g0, int64_t g1, const qmatmul_job *j) { \
    const int64_t nb = j->inputs / 32; \
    const int two = TWO_OK && j->xq_lo != NULL; \
    float pre_[(T == TSR_GGML_Q4_K || T == TSR_GGML_Q5_K) ? 8 * QK_PRE_BLOCKS : 1]; \
    const float *pre = (T == TSR_GGML_Q4_K || T == TSR_GGML_Q5_K) && QFN(k_rows_pre)(j, two, nb, pre_) ? pre_ : NULL; \
    for (int64_t g = g0; g < g1; g++) { \
        const uint8_t *row = (const uint8_t *)p->data + g * p->row_bytes; \
        float *y = j->y + p->out_offset + (p->row_map ? p->row_map[g] : g); \
        for (int64_t r0 = 0; r0 < j->rows; r0 += 4) { \
            float o[4]; \
            const tsr_q8_block *a = j->xq + r0 * nb, *alo = two ? j->xq_lo + r0 * nb : NULL; \
            const int64_t nr = j->rows - r0 < 4 ? j->rows - r0 : 4; \
            if (two) { \
                switch (nr) { \
                case 1: QFN(ROWS)(T, row, nb, a, alo, nb, 1, 1, pre, o); break; \
                case 2: QFN(ROWS)(T, row, nb, a, alo, nb, 2, 1, pre, o); break; \
                case 3: QFN(ROWS)(T, row, nb, a, alo, nb, 3, 1, pre, o); break; \
                default: QFN(ROWS)(T, row, nb, a, alo, nb, 4, 1, pre, o); break; \
                } \
            } else { \
                switch (nr) { \
                case 1: QFN(ROWS)(T, row, nb, a, NULL, nb, 1, 0, pre, o); break; \
                case 2: QFN(ROWS)(T, row, nb, a, NULL, nb, 2, 0, pre, o); break; \
                case 3: QFN(ROWS)(T, row, nb, a, NULL, nb, 3, 0, pre, o); break; \
                default: QFN(ROWS)(T, row, nb, a, NULL, nb, 4, 0, pre, o); break; \
                } \
            } \
            for (int64_t r = 0; r < nr; r++) { \
                float *dst = y + (r0 + r) * j->y_stride; \
                *dst = j->accumulate ? *dst + o[r] * j->alpha : o[r] * j->alpha; \
            } \
        } \
    } }
QFUSED_SPAN(TSR_GGML_Q4_0, fused_span_q4_0, fused_rows, 0)
QFUSED_SPAN(TSR_GGML_Q4_1, fused_span_q4_1, fused_rows, 0)
QFUSED_SPAN(TSR_GGML_Q5_0, fused_span_q5_0, fused_rows, 0)
QFUSED_SPAN(TSR_GGML_Q5_1, fused_span_q5_1, fused_rows, 0)
QFUSED_SPAN(TSR_GGML_Q8_0, fused_span_q8_0, fused_rows, 0)
QFUSED_SPAN(TSR_GGML_Q4_K, fused_span_q4_k, q4k_rows, 1)
QFUSED_SPAN(TSR_GGML_Q5_K, fused_span_q5_k, q4k_rows, 1)
QFUSED_SPAN(TSR_GGML_Q6_K, fused_span_q6_k, q6k_rows, 1)
#undef QFUSED_SPAN

#undef QIDOT
#endif

#include "qmatmul_x8_impl.h"

// Outputs [begin, end) (global indices over the parts) for every row.
QTARGET static void QFN(qmatmul_range)(const qmatmul_job *j, int64_t begin, int64_t end) {
    int8_t wq[QCHUNK];
    float sc[2 * QCHUNK / 32], off[QCHUNK / 32], wf[QCHUNK];
    float acc[QMAXROWS];
    int64_t first = 0;
    for (int64_t pi = 0; pi < j->n_parts; pi++) {
        const tsr_weight_part *part = &j->parts[pi];
        const int64_t lo = begin > first ? begin : first;
        const int64_t hi = end < first + part->rows ? end : first + part->rows;
        first += part->rows;
        if (lo >= hi) continue;
        const int quant = tsr_type_is_quantized(part->type);
        // The residual pass: stored-layout quantized parts only (the rest are done), and of those
        // not Q4_K / Q5_K / Q6_K in the SIMD variants (their kernels take both levels in one pass).
        if (j->lo_pass && (!quant || part->layout == TSR_LAYOUT_X8)) continue;
#if QSIMD != 0
        if (j->lo_pass && (part->type == TSR_GGML_Q4_K || part->type == TSR_GGML_Q5_K || part->type == TSR_GGML_Q6_K)) continue;
#endif
        const int is_signed = part->type == TSR_GGML_Q8_0 || part->type == TSR_GGML_Q6_K;
        const int64_t nb_row = j->inputs / 32;
        if (part->layout == TSR_LAYOUT_X8) {
            const int64_t g0 = lo - (first - part->rows), g1 = hi - (first - part->rows);
            if (j->xq != NULL) {
                if (part->type == TSR_GGML_Q4_K) { QFN(x8k_span_q4_k)(part, g0, g1, j); continue; }
                if (part->type == TSR_GGML_Q5_K) { QFN(x8k_span_q5_k)(part, g0, g1, j); continue; }
#if QSIMD != 0
                if (part->type == TSR_GGML_Q4_1) QFN(x8_span_q4_1)(part, g0, g1, j);
                else if (part->type == TSR_GGML_Q4_0) QFN(x8_span_q4_0)(part, g0, g1, j);
                else if (part->type == TSR_GGML_Q5_0) QFN(x8_span_q5_0)(part, g0, g1, j);
                else if (part->type == TSR_GGML_Q5_1) QFN(x8_span_q5_1)(part, g0, g1, j);
                else QFN(x8_span_q8_0)(part, g0, g1, j);
#else
                QFN(x8_span)(part, g0, g1, j);
#endif
                continue;
            }
            // f32 activations: each row dequantized a chunk at a time, then f32 dots.
            for (int64_t g = g0; g < g1; g++) {
                for (int64_t r0 = 0; r0 < j->rows; r0 += QMAXROWS) {
                    const int64_t rn = j->rows - r0 < QMAXROWS ? j->rows - r0 : QMAXROWS;
                    for (int64_t r = 0; r < rn; r++) acc[r] = 0;
                    for (int64_t c0 = 0; c0 < j->inputs; c0 += QCHUNK) {
                        const int64_t n = j->inputs - c0 < QCHUNK ? j->inputs - c0 : QCHUNK;
                        x8_dequantize_row(part, j->inputs, g, c0 / 32, (c0 + n) / 32, wf);
                        for (int64_t r = 0; r < rn; r++) acc[r] += tsr_dot(wf, j->x + (r0 + r) * j->x_stride + c0, n);
                    }
                    for (int64_t r = 0; r < rn; r++) {
                        float *dst = j->y + (r0 + r) * j->y_stride + part->out_offset + g;
                        *dst = j->accumulate ? *dst + acc[r] * j->alpha : acc[r] * j->alpha;
                    }
                }
            }
            continue;
        }
#if QSIMD != 0
        if (quant && j->xq != NULL) {
            const int64_t g0 = lo - (first - part->rows), g1 = hi - (first - part->rows);
            if (part->type == TSR_GGML_Q4_1) QFN(fused_span_q4_1)(part, g0, g1, j);
            else if (part->type == TSR_GGML_Q5_0) QFN(fused_span_q5_0)(part, g0, g1, j);
            else if (part->type == TSR_GGML_Q5_1) QFN(fused_span_q5_1)(part, g0, g1, j);
            else if (part->type == TSR_GGML_Q4_K) QFN(fused_span_q4_k)(part, g0, g1, j);
            else if (part->type == TSR_GGML_Q5_K) QFN(fused_span_q5_k)(part, g0, g1, j);
            else if (part->type == TSR_GGML_Q6_K) QFN(fused_span_q6_k)(part, g0, g1, j);
            else if (part->type == TSR_GGML_Q4_0) QFN(fused_span_q4_0)(part, g0, g1, j);
            else QFN(fused_span_q8_0)(part, g0, g1, j);
            continue;
        }
#endif
        for (int64_t g = lo - (first - part->rows); g < hi - (first - part->rows); g++) {
            const uint8_t *row = (const uint8_t *)part->data + g * part->row_bytes;
            const int64_t out = part->out_offset + (part->row_map ? part->row_map[g] : g);
            for (int64_t r0 = 0; r0 < j->rows; r0 += QMAXROWS) {
                const int64_t rn = j->rows - r0 < QMAXROWS ? j->rows - r0 : QMAXROWS;
                for (int64_t r = 0; r < rn; r++) acc[r] = 0;
                const int q8 = quant && j->xq != NULL;
                if (q8) {
                    for (int64_t c0 = 0; c0 < nb_row; c0 += QCHUNK / 32) {
                        const int64_t c1 = c0 + QCHUNK / 32 < nb_row ? c0 + QCHUNK / 32 : nb_row;
                        QFN(unpack)(part->type, row, c0, c1, wq, sc, off);
                        for (int64_t r = 0; r < rn; r++)
                            acc[r] += QFN(dot_q8)(wq, sc, off, j->xq + (r0 + r) * nb_row + c0, c1 - c0, is_signed);
                    }
                } else {
                    // f32 activations: the chunk of weights converted to f32, then f32 dots.
                    const int64_t be = tsr_type_block_elements(part->type), bb = tsr_type_block_bytes(part->type);
                    for (int64_t c0 = 0; c0 < j->inputs; c0 += QCHUNK) {
                        const int64_t n = j->inputs - c0 < QCHUNK ? j->inputs - c0 : QCHUNK;
                        tsr_dequantize(part->type, row + c0 / be * bb, wf, n);
                        for (int64_t r = 0; r < rn; r++) acc[r] += tsr_dot(wf, j->x + (r0 + r) * j->x_stride + c0, n);
                    }
                }
                for (int64_t r = 0; r < rn; r++) {
                    float *dst = j->y + (r0 + r) * j->y_stride + out;
                    *dst = j->accumulate ? *dst + acc[r] * j->alpha : acc[r] * j->alpha;
                }
            }
        }
    }
}

#undef QUNPACK_NIBBLES16
#undef QUNPACK_NIBBLES32
#undef QUNPACK_Q6
#undef QFN
#undef QCAT
#undef QCAT2
