// One decode step (one token of one sequence, no adapter) as a single pool job, split between
// two threads by the model's two shares: query heads [0, hs) and hidden units [0, fs) are share
// 0's, the rest share 1's (tsr_decode_split). A layer then costs three or four barriers instead
// of five fork-joins with the caller's serial work between them, and what crosses between the
// cores is each share's partial sum of the output and down projections (hidden floats each), its
// query, key and value rows and the attention chunks' partial sums, instead of every activation
// vector.
//
// Per layer, each thread for its share (one thread: both shares in turn), from its own copy of
// the residual x (every thread holds the same bits):
//   n = rmsnorm(x); the share's query rows of Wqkv·n and the key and value rows of the kv heads
//   it owns (those whose first query head is the share's), into the shared q|k|v rows; RoPE;
//   those keys and values into the cache; barrier (every row and the cache are complete);
//   attention: from two chunks of context on, each thread takes half the chunks for every head
//   (address-order reads of the whole KV block, as tsr_attention_rows), then a barrier; below,
//   each share its own heads; the share's heads merged; p_s = panel s of Wo against them;
//   barrier; x = (x + p_0) + p_1;
//   n = rmsnorm(x); the share's rows of Wgate and Wup; h = silu(gate)·up; p_s = panel s of Wdown
//   against h; barrier; x = (x + p_0) + p_1.
// Then the LM head's rows split between the threads.
//
// The o and down matrices are stored split in column panels at the shares' boundary
// (tsr_weight_part.k_split), and the row-split path sums them the same way (panel 0, then
// panel 1 added), so this step gives the same bits as LlamaModel's path on any thread count.
#include "tessera_kernels.h"
#include "simd.h"
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

typedef struct {
    _Alignas(64) _Atomic int count;
    _Alignas(64) _Atomic int phase;
} decode_barrier;

// Sense-reversing barrier: the last thread to arrive resets the count and flips the phase.
static void barrier_wait(decode_barrier *b, int threads, int *sense) {
    if (threads < 2) return;
    *sense ^= 1;
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == threads - 1) {
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_store_explicit(&b->phase, *sense, memory_order_release);
        return;
    }
    unsigned spins = 0;
    while (atomic_load_explicit(&b->phase, memory_order_acquire) != *sense) {
        if (++spins < (1u << 16)) tsr_relax();
        else sched_yield();  // a descheduled peer on a shared machine
    }
}

// Profiling build only: per thread, the time waiting at each barrier and working in each phase,
// per step, printed at exit (TSC at 2.6 GHz assumed). Build with
//   swift build -c release --build-path /tmp/profbuild -Xcc -DDECODE_PROFILE
#ifdef DECODE_PROFILE
#include <stdio.h>
#include <stdlib.h>
#include <x86intrin.h>
static unsigned long long prof_wait[2][4], prof_work[2][12], prof_total[2], prof_steps;
static void prof_dump(void) {
    const double f = 1e3 * 2.6 * prof_steps;
    for (int t = 0; t < 2; t++)
        fprintf(stderr, "decode profile thread %d: %.1f us/step; waits qkv %.1f attn %.1f o %.1f down %.1f; work qkv %.1f attn %.1f merge+o %.1f gate/up %.1f down %.1f head %.1f | norm %.1f q %.1f kv %.1f rope+store %.1f merge %.1f\n", t,
                prof_total[t] / f, prof_wait[t][0] / f, prof_wait[t][1] / f, prof_wait[t][2] / f, prof_wait[t][3] / f,
                (prof_work[t][6] + prof_work[t][7] + prof_work[t][8] + prof_work[t][0]) / f, prof_work[t][1] / f,
                (prof_work[t][9] + prof_work[t][2]) / f, prof_work[t][3] / f, prof_work[t][4] / f, prof_work[t][5] / f,
                prof_work[t][6] / f, prof_work[t][7] / f, prof_work[t][8] / f, prof_work[t][0] / f, prof_work[t][9] / f);
}
#define PROF_WAIT(t, k, stmt) do { const unsigned long long w0_ = __rdtsc(); stmt; if ((t) < 2) prof_wait[t][k] += __rdtsc() - w0_; prof_last = __rdtsc(); } while (0)
#define PROF_MARK(t, k) do { const unsigned long long n_ = __rdtsc(); if ((t) < 2) prof_work[t][k] += n_ - prof_last; prof_last = n_; } while (0)
#else
#define PROF_WAIT(t, k, stmt) stmt
#define PROF_MARK(t, k) do { } while (0)
#endif

static inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Kv heads owned by query heads [q0, q1): those whose first query head is among them.
static inline void owned_kv(int64_t q0, int64_t q1, int64_t group, int64_t *w0, int64_t *w1) {
    *w0 = (q0 + group - 1) / group;
    *w1 = (q1 + group - 1) / group;
}

tsr_status tsr_decode_split(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t ff,
                            int64_t o_unit, int64_t down_unit, int64_t *heads_split, int64_t *ff_split) {
    *heads_split = 0;
    *ff_split = 0;
    if (n_heads < 2 || n_kv_heads < 1 || n_heads % n_kv_heads != 0 || head_dim < 1 || ff < 2 || o_unit < 1 || down_unit < 1)
        return TSR_ERR_BAD_SIZE;
    const int64_t group = n_heads / n_kv_heads;
    // Heads: balance each share's weight rows (query rows, owned key and value rows, and its
    // panel of Wo, all hidden wide), over the splits whose panel is whole blocks of o_unit.
    int64_t best = 0, best_cost = -1;
    for (int64_t h = 1; h < n_heads; h++) {
        if (h * head_dim % o_unit != 0) continue;
        int64_t w0, w1, v0, v1;
        owned_kv(0, h, group, &w0, &w1);
        owned_kv(h, n_heads, group, &v0, &v1);
        const int64_t a = 2 * h + 2 * (w1 - w0), b = 2 * (n_heads - h) + 2 * (v1 - v0);
        const int64_t cost = a > b ? a - b : b - a;
        if (best_cost < 0 || cost < best_cost) { best = h; best_cost = cost; }
    }
    // Hidden units: the multiple of down_unit nearest half.
    int64_t f = (ff / 2 + down_unit / 2) / down_unit * down_unit;
    if (f >= ff) f -= down_unit;
    if (best == 0 || f <= 0 || ff % 32 != 0) return TSR_ERR_UNSUPPORTED_TYPE;
    *heads_split = best;
    *ff_split = f;
    return TSR_OK;
}

// Workspace, every piece 64-byte aligned: the barrier; shared by the threads: the shares'
// partial sums (2 parities × 2 shares × hidden floats), the q|k|v rows (each share writes its
// own), the attention chunks' partials; then per thread: x, n (hidden), attn (qd), gate|up
// (2ff), activations (two levels of max(hidden, qd, ff)/32 blocks), attention scores.
typedef struct {
    int64_t partials, pstride, qkv, att_partials, shared, per_thread, x, n, attn, gu, xq, xlo, scores, total;
} decode_layout;

static decode_layout layout_of(const tsr_decode_model *m, int64_t max_ctx) {
    const int64_t qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim;
    int64_t widest = m->hidden > qd ? m->hidden : qd;
    if (m->ff > widest) widest = m->ff;
    const int64_t blocks = widest / 32;
    decode_layout l;
    l.pstride = round_up(m->hidden, 16);
    int64_t at = round_up((int64_t)sizeof(decode_barrier), 64);
    l.partials = at; at += 4 * l.pstride * 4;
    l.qkv = at; at += round_up((qd + 2 * kvd) * 4, 64);
    l.att_partials = at; at += round_up(tsr_attention_partials_floats(max_ctx, m->n_heads, m->head_dim) * 4, 64);
    l.shared = at;
    at = 0;
    l.x = at; at += round_up(m->hidden * 4, 64);
    l.n = at; at += round_up(m->hidden * 4, 64);
    l.attn = at; at += round_up(qd * 4, 64);
    l.gu = at; at += round_up(2 * m->ff * 4, 64);
    l.xq = at; at += round_up(blocks * (int64_t)sizeof(tsr_q8_block), 64);
    l.xlo = at; at += round_up(blocks * (int64_t)sizeof(tsr_q8_block), 64);
    l.scores = at; at += round_up(m->n_heads * TSR_ATTENTION_CHUNK * 4, 64);
    l.per_thread = at;
    l.total = l.shared + 2 * l.per_thread;
    return l;
}

int64_t tsr_decode_workspace_bytes(const tsr_decode_model *m, int64_t max_ctx) {
    return layout_of(m, max_ctx < 1 ? 1 : max_ctx).total;
}

static int64_t parts_outputs(const tsr_weight_part *parts, int64_t n) {
    int64_t rows = 0;
    for (int64_t i = 0; i < n; i++) rows += parts[i].rows;
    return rows;
}

// Every part interleaved, split at `split` blocks when split > 0 (else not split).
static int parts_ok(const tsr_weight_part *parts, int64_t n, int64_t split) {
    for (int64_t i = 0; i < n; i++)
        if (parts[i].layout != TSR_LAYOUT_X8 || parts[i].k_split != split) return 0;
    return n > 0;
}

tsr_status tsr_decode_check(const tsr_decode_model *m) {
    if (m->n_layers < 1 || m->hidden < 1 || m->n_heads < 2 || m->n_kv_heads < 1 || m->head_dim < 1 || m->ff < 1 || m->vocab < 1)
        return TSR_ERR_BAD_SIZE;
    if (m->n_heads % m->n_kv_heads != 0 || m->hidden % 32 != 0 || m->ff % 32 != 0 || (m->n_heads * m->head_dim) % 32 != 0)
        return TSR_ERR_BAD_SIZE;
    if (m->heads_split < 1 || m->heads_split >= m->n_heads || (m->heads_split * m->head_dim) % 32 != 0 ||
        m->ff_split < 32 || m->ff_split >= m->ff || m->ff_split % 32 != 0)
        return TSR_ERR_BAD_SIZE;
    if (m->rot_dim > m->head_dim || m->rot_dim % 2 != 0) return TSR_ERR_BAD_SIZE;
    if (!tsr_kv_type_supported(m->kv_type)) return TSR_ERR_UNSUPPORTED_TYPE;
    const int64_t qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim;
    for (int64_t l = 0; l < m->n_layers; l++) {
        const tsr_decode_layer *L = &m->layers[l];
        if (!parts_ok(L->qkv, L->qkv_parts, 0) || !parts_ok(L->o, L->o_parts, m->heads_split * m->head_dim / 32) ||
            !parts_ok(L->gate_up, L->gate_up_parts, 0) || !parts_ok(L->down, L->down_parts, m->ff_split / 32))
            return TSR_ERR_UNSUPPORTED_TYPE;
        if (parts_outputs(L->qkv, L->qkv_parts) != qd + 2 * kvd || parts_outputs(L->o, L->o_parts) != m->hidden ||
            parts_outputs(L->gate_up, L->gate_up_parts) != 2 * m->ff || parts_outputs(L->down, L->down_parts) != m->hidden)
            return TSR_ERR_BAD_SIZE;
        if (!L->attn_norm || !L->ffn_norm || !L->k_cache || !L->v_cache) return TSR_ERR_BAD_SIZE;
    }
    if (m->lm_head_parts < 1 || parts_outputs(m->lm_head, m->lm_head_parts) != m->vocab || !m->out_norm) return TSR_ERR_BAD_SIZE;
    for (int64_t i = 0; i < m->lm_head_parts; i++)
        if (m->lm_head[i].k_split != 0) return TSR_ERR_UNSUPPORTED_TYPE;
    return TSR_OK;
}

// Lines another thread just wrote, requested all at once (one transfer latency for the lot, not
// one per line as a sequential read would wait).
static inline void fetch_lines(const void *p, int64_t bytes) {
    for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch((const char *)p + o, 0, 3);
}

// The end of a half layer: once both shares' partial sums are in, x = (x + p_0) + p_1 on every
// thread; the next half writes the other parity's buffers (a thread may still be reading these).
static void reduce_shares(decode_barrier *bar, int threads, int *sense, float *x, const float *partials, int64_t pstride,
                          int64_t d, int *parity) {
    barrier_wait(bar, threads, sense);
    fetch_lines(partials + (*parity * 2) * pstride, 2 * pstride * 4);
    tsr_add(x, partials + (*parity * 2) * pstride, d);
    tsr_add(x, partials + (*parity * 2 + 1) * pstride, d);
    *parity ^= 1;
}

typedef struct {
    const tsr_decode_model *m;
    const float *x_in, *rope_cos, *rope_sin;
    const int32_t *block_table;
    int64_t block_size, pos;
    float *logits;
    uint8_t *ws;
    decode_layout lay;
    int impl;
} decode_job;

static void decode_task(void *ctx, int t, int threads) {
    const decode_job *j = (const decode_job *)ctx;
    const tsr_decode_model *m = j->m;
    const int64_t d = m->hidden, hd = m->head_dim, group = m->n_heads / m->n_kv_heads, ff = m->ff;
    const int64_t qd = m->n_heads * hd, kvd = m->n_kv_heads * hd;
    decode_barrier *bar = (decode_barrier *)j->ws;
    float *partials = (float *)(j->ws + j->lay.partials);  // [parity][share][pstride]
    float *qkv = (float *)(j->ws + j->lay.qkv), *att = (float *)(j->ws + j->lay.att_partials);
    uint8_t *mine = j->ws + j->lay.shared + t * j->lay.per_thread;
    float *x = (float *)(mine + j->lay.x), *n = (float *)(mine + j->lay.n);
    float *attn = (float *)(mine + j->lay.attn), *gu = (float *)(mine + j->lay.gu), *scores = (float *)(mine + j->lay.scores);
    tsr_q8_block *xq = (tsr_q8_block *)(mine + j->lay.xq), *xlo = m->two_level ? (tsr_q8_block *)(mine + j->lay.xlo) : NULL;
    const int64_t bs = j->block_size, block = j->block_table[j->pos / bs], slot = j->pos % bs;
    const int64_t qh[3] = { 0, m->heads_split, m->n_heads }, ih[3] = { 0, m->ff_split, ff };
    const int64_t n_ctx = j->pos + 1, chunks = tsr_attention_chunk_count(n_ctx);
    // Attention split by chunks (every head; the merge after a barrier) from two chunks on, else
    // by the shares' heads: the same units and merge either way.
    const int by_chunks = threads == 2 && chunks >= 2;
    int sense = 0, parity = 0;
#ifdef DECODE_PROFILE
    const unsigned long long start = __rdtsc();
    unsigned long long prof_last = start;
#endif
    memcpy(x, j->x_in, (size_t)d * sizeof(float));

    for (int64_t l = 0; l < m->n_layers; l++) {
        const tsr_decode_layer *L = &m->layers[l];
        // Attention half.
        tsr_rmsnorm_rows(n, x, L->attn_norm, 1, d, m->eps);
        tsr_quantize_q8x2_rows(n, d, 1, d, xq, xlo);
        PROF_MARK(t, 6);
        for (int s = t; s < 2; s += threads) {
            const int64_t q0 = qh[s], q1 = qh[s + 1];
            int64_t w0, w1;
            owned_kv(q0, q1, group, &w0, &w1);
            tsr_qmatmul_span(L->qkv, L->qkv_parts, d, xq, xlo, n, qkv, q0 * hd, q1 * hd, -1, 0, j->impl);
            PROF_MARK(t, 7);
            tsr_rope_neox(qkv + q0 * hd, q1 - q0, hd, m->rot_dim, j->rope_cos, j->rope_sin);
            if (w1 > w0) {
                tsr_qmatmul_span(L->qkv, L->qkv_parts, d, xq, xlo, n, qkv, qd + w0 * hd, qd + w1 * hd, -1, 0, j->impl);
                tsr_qmatmul_span(L->qkv, L->qkv_parts, d, xq, xlo, n, qkv, qd + kvd + w0 * hd, qd + kvd + w1 * hd, -1, 0, j->impl);
                PROF_MARK(t, 8);
                tsr_rope_neox(qkv + qd + w0 * hd, w1 - w0, hd, m->rot_dim, j->rope_cos, j->rope_sin);
                tsr_kv_store_channels(L->k_cache, L->v_cache, m->kv_type, block, bs, slot, qkv + qd, qkv + qd + kvd, kvd,
                                      w0 * hd, w1 * hd);
            }
        }
        PROF_MARK(t, 0);
        PROF_WAIT(t, 0, barrier_wait(bar, threads, &sense));
        const tsr_attention_item item = { attn, qkv, L->k_cache, L->v_cache, j->block_table, bs, n_ctx };
        if (by_chunks) {
            fetch_lines(qkv, qd * 4);
            tsr_attention_partials(&item, kvd, m->n_heads, m->n_kv_heads, hd, chunks * t / 2, chunks * (t + 1) / 2, 0, m->n_heads,
                                   m->attn_scale, att, scores, m->kv_type);
            PROF_MARK(t, 1);
            PROF_WAIT(t, 1, barrier_wait(bar, threads, &sense));
            fetch_lines(att, chunks * m->n_heads * (hd + 2) * 4);
        }
        for (int s = t; s < 2; s += threads) {
            const int64_t q0 = qh[s], q1 = qh[s + 1];
            if (!by_chunks)
                tsr_attention_partials(&item, kvd, m->n_heads, m->n_kv_heads, hd, 0, chunks, q0, q1, m->attn_scale, att, scores, m->kv_type);
            tsr_attention_merge(att, n_ctx, m->n_heads, hd, q0, q1, attn);
            PROF_MARK(t, 9);
            tsr_quantize_q8x2_rows(attn + q0 * hd, qd, 1, (q1 - q0) * hd, xq + q0 * hd / 32, xlo ? xlo + q0 * hd / 32 : NULL);
            tsr_qmatmul_span(L->o, L->o_parts, qd, xq, xlo, attn, partials + (parity * 2 + s) * j->lay.pstride, 0, d, s, 0, j->impl);
        }
        PROF_MARK(t, 2);
        PROF_WAIT(t, 2, reduce_shares(bar, threads, &sense, x, partials, j->lay.pstride, d, &parity));

        // MLP half.
        tsr_rmsnorm_rows(n, x, L->ffn_norm, 1, d, m->eps);
        tsr_quantize_q8x2_rows(n, d, 1, d, xq, xlo);
        for (int s = t; s < 2; s += threads) {
            const int64_t i0 = ih[s], i1 = ih[s + 1];
            tsr_qmatmul_span(L->gate_up, L->gate_up_parts, d, xq, xlo, n, gu, i0, i1, -1, 0, j->impl);
            tsr_qmatmul_span(L->gate_up, L->gate_up_parts, d, xq, xlo, n, gu, ff + i0, ff + i1, -1, 0, j->impl);
            PROF_MARK(t, 3);
            tsr_silu_mul_rows(gu + i0, ff, gu + ff + i0, ff, 1, i1 - i0);
            tsr_quantize_q8x2_rows(gu + i0, ff, 1, i1 - i0, xq + i0 / 32, xlo ? xlo + i0 / 32 : NULL);
            tsr_qmatmul_span(L->down, L->down_parts, ff, xq, xlo, gu, partials + (parity * 2 + s) * j->lay.pstride, 0, d, s, 0, j->impl);
        }
        PROF_MARK(t, 4);
        PROF_WAIT(t, 3, reduce_shares(bar, threads, &sense, x, partials, j->lay.pstride, d, &parity));
    }
    // The LM head: the rows split as tsr_qmatmul_x2 splits them (a row's bits do not depend on it).
    tsr_rmsnorm_rows(n, x, m->out_norm, 1, d, m->eps);
    tsr_quantize_q8x2_rows(n, d, 1, d, xq, xlo);
    const int64_t per = round_up((m->vocab + threads - 1) / threads, 16);
    const int64_t v0 = per * t < m->vocab ? per * t : m->vocab, v1 = v0 + per < m->vocab ? v0 + per : m->vocab;
    tsr_qmatmul_span(m->lm_head, m->lm_head_parts, d, xq, xlo, n, j->logits, v0, v1, -1, 0, j->impl);
    PROF_MARK(t, 5);
#ifdef DECODE_PROFILE
    if (t < 2) prof_total[t] += __rdtsc() - start;
    if (t == 0 && prof_steps++ == 0) atexit(prof_dump);
#endif
}

tsr_status tsr_decode_step(const tsr_decode_model *m, const float *x, const float *rope_cos, const float *rope_sin,
                           const int32_t *block_table, int64_t block_size, int64_t pos, float *logits,
                           void *workspace, int64_t workspace_bytes, int impl) {
    const tsr_status status = tsr_decode_check(m);
    if (status != TSR_OK) return status;
    if (pos < 0 || block_size < 1 || ((uintptr_t)workspace & 63) != 0) return TSR_ERR_BAD_SIZE;
    const decode_layout lay = layout_of(m, pos + 1);
    if (workspace_bytes < lay.total) return TSR_ERR_BAD_SIZE;
    decode_barrier *bar = (decode_barrier *)workspace;
    atomic_store(&bar->count, 0);
    atomic_store(&bar->phase, 0);
    const decode_job job = { m, x, rope_cos, rope_sin, block_table, block_size, pos, logits, (uint8_t *)workspace, lay,
                             impl <= 0 || !tsr_qmatmul_available(impl) ? tsr_qmatmul_best() : impl };
    tsr_parallel_limit(decode_task, (void *)&job, 2);
    return TSR_OK;
}
