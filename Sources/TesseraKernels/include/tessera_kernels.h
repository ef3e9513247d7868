// Tessera's C compute core: CPU kernels for everything that is not a matmul.
//
// Contract for every function here: raw pointers, sizes and strides in; nothing is
// allocated, nothing is printed, nothing exits. Functions that can meet bad input
// return a tsr_status. Matmuls are not here: they go through cblas_sgemm.
#ifndef TESSERA_KERNELS_H
#define TESSERA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    TSR_OK = 0,
    TSR_ERR_UNSUPPORTED_TYPE = 1,
    TSR_ERR_BAD_SIZE = 2,
} tsr_status;

// ggml tensor type ids, as stored in GGUF tensor infos.
enum {
    TSR_GGML_F32 = 0,
    TSR_GGML_F16 = 1,
    TSR_GGML_Q4_0 = 2,
    TSR_GGML_Q4_1 = 3,
    TSR_GGML_Q5_0 = 6,
    TSR_GGML_Q5_1 = 7,
    TSR_GGML_Q8_0 = 8,
    TSR_GGML_Q4_K = 12,
    TSR_GGML_Q5_K = 13,
    TSR_GGML_Q6_K = 14,
    TSR_GGML_BF16 = 30,
};

// ---- dequantization (dequant.c) ----

/// Elements per block of `ggml_type` (1 for plain float types), or 0 if unsupported.
int64_t tsr_type_block_elements(int ggml_type);
/// Bytes per block of `ggml_type`, or 0 if unsupported.
int64_t tsr_type_block_bytes(int ggml_type);
/// Dequantizes `n` elements (a multiple of the block size) from `src` into `dst`.
tsr_status tsr_dequantize(int ggml_type, const void *src, float *dst, int64_t n);
/// IEEE half and bfloat16 to float.
float tsr_f16_to_f32(uint16_t h);
float tsr_bf16_to_f32(uint16_t h);

// ---- elementwise and normalisation (ops.c) ----

/// out[r] = x[r] / rms(x[r]) * weight, for `rows` rows of `n` (HF LlamaRMSNorm, eps inside the sqrt).
void tsr_rmsnorm_rows(float *out, const float *x, const float *weight, int64_t rows, int64_t n, float eps);
/// gate[i] = silu(gate[i]) * up[i] for `rows` rows of `n`; gate and up have row strides.
void tsr_silu_mul_rows(float *gate, int64_t gate_stride, const float *up, int64_t up_stride,
                       int64_t rows, int64_t n);
/// y[i] += x[i]
void tsr_add(float *y, const float *x, int64_t n);
/// In-place numerically stable softmax of x[0..<n].
void tsr_softmax(float *x, int64_t n);
/// Index of the largest element (first on ties); -1 when n <= 0.
int64_t tsr_argmax(const float *x, int64_t n);

// ---- rotary position embedding (rope.c) ----

/// Fills cos/sin tables for one position: angle_i = pos * base^(-2i/rot_dim), i < rot_dim/2.
void tsr_rope_angles(float *cos_out, float *sin_out, int64_t pos, int64_t rot_dim, float freq_base);
/// Rotate-half ("NeoX", as HF Llama) RoPE in place on one row of `n_heads` heads of `head_dim`,
/// rotating the first `rot_dim` dims of each head with the given tables.
void tsr_rope_neox(float *x, int64_t n_heads, int64_t head_dim, int64_t rot_dim,
                   const float *cos_t, const float *sin_t);

// ---- attention (attention.c) ----

/// KV cache storage, per layer: blocks of `block_size` positions. A block's keys are stored
/// transposed, K^T (kv_dim × block_size: channel c of slot i at c·block_size + i); its values
/// as rows (block_size × kv_dim). Elements are f32 or f16 (kv_type TSR_GGML_F32 / TSR_GGML_F16).
int tsr_kv_type_supported(int kv_type);
/// Writes one position's key and value (kv_dim floats each, rounded to the cache's type) into
/// slot `slot` of block `block` of a layer's storage.
void tsr_kv_store(void *k_layer, void *v_layer, int kv_type, int64_t block, int64_t block_size, int64_t slot,
                  const float *k, const float *v, int64_t kv_dim);
/// tsr_kv_store of channels [c0, c1) only (k and v still point at kv_dim floats).
void tsr_kv_store_channels(void *k_layer, void *v_layer, int kv_type, int64_t block, int64_t block_size, int64_t slot,
                           const float *k, const float *v, int64_t kv_dim, int64_t c0, int64_t c1);
/// Positions 0..<n of a paged sequence as f32: keys transposed into kt_dst (kv_dim × n), values
/// as rows into v_dst (n × kv_dim).
void tsr_kv_gather(float *kt_dst, float *v_dst, const void *k_layer, const void *v_layer, int kv_type,
                   const int32_t *block_table, int64_t block_size, int64_t n, int64_t kv_dim);

/// One query row for tsr_attention_rows: causal attention over the `n_ctx` cached positions of
/// its own sequence. q, out: [n_heads * head_dim]; k, v: the layer's storage (above), kv head
/// kvh at channels kvh*head_dim...; position t is slot t % block_size of block
/// block_table[t / block_size]. Grouped-query: head h reads kv head h / (n_heads / n_kv_heads).
typedef struct {
    float *out;
    const float *q;
    const void *k;
    const void *v;
    const int32_t *block_table;
    int64_t block_size;
    int64_t n_ctx;
} tsr_attention_item;
/// Most positions per unit of decode attention: a row's context is cut into chunks of at most
/// this many positions (from 256 positions on, into a multiple of 4 chunks), each (row, chunk) a
/// unit of work over every head, merged in chunk order.
enum { TSR_ATTENTION_CHUNK = 256 };
/// Floats of scratch tsr_attention_rows needs for `n_items` rows of at most `max_ctx` positions.
int64_t tsr_attention_scratch_floats(int64_t n_items, int64_t max_ctx, int64_t n_heads, int64_t head_dim, int64_t threads);
/// Attention for many rows at once: (row, chunk of positions) units split across the thread
/// pool (a kv head's keys and values are read once for all its query heads), partial
/// softmaxes merged in chunk order. A row's result does not depend on the other rows nor on the
/// thread count. `scratch`: tsr_attention_scratch_floats(n_items, max_ctx, ..., threads) floats;
/// the call uses at most `threads` threads. kv_stride: kv_dim.
void tsr_attention_rows(const tsr_attention_item *items, int64_t n_items, int64_t kv_stride,
                        int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                        float scale, float *scratch, int64_t max_ctx, int kv_type, int64_t threads);
/// One row's attention in pieces, for callers that split it themselves (tsr_decode_step): the
/// chunks tsr_attention_rows cuts a context of n_ctx positions into (a function of n_ctx
/// alone), each chunk's partial sums for a range of query heads, and their merge; the same bits
/// as tsr_attention_rows for those heads however the chunks and heads are shared out.
int64_t tsr_attention_chunk_count(int64_t n_ctx);
/// Floats of partials for contexts of at most max_ctx positions (chunk c, head h at
/// (c·n_heads + h)·(head_dim + 2)).
int64_t tsr_attention_partials_floats(int64_t max_ctx, int64_t n_heads, int64_t head_dim);
/// Chunks [c_begin, c_end) of the item's n_ctx cached positions for query heads [h_begin, h_end):
/// their partials (max, sum, weighted values). scores: n_heads × TSR_ATTENTION_CHUNK floats.
void tsr_attention_partials(const tsr_attention_item *item, int64_t kv_stride, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                            int64_t c_begin, int64_t c_end, int64_t h_begin, int64_t h_end, float scale, float *partials,
                            float *scores, int kv_type);
/// Heads [h_begin, h_end) of `out` (n_heads × head_dim) from every chunk's partials.
void tsr_attention_merge(const float *partials, int64_t n_ctx, int64_t n_heads, int64_t head_dim, int64_t h_begin, int64_t h_end, float *out);
/// Causal mask + scaled softmax for a block of attention scores: row i (query at position
/// first_pos + i) keeps columns 0...first_pos+i, the rest become 0 after softmax.
void tsr_causal_softmax_rows(float *scores, int64_t rows, int64_t cols, int64_t ld,
                             int64_t first_pos, float scale);

// ---- LoRA (lora.c) ----

/// One run of rows sharing an adapter's projection: A is (rank, inputs), B transposed (rank,
/// outputs), both f32 or both f16 (type TSR_GGML_F32 / TSR_GGML_F16). The delta lands in
/// y[row][y_offset ..< y_offset + outputs] (several projections of one input in one call).
typedef struct {
    const void *a;
    const void *b_t;
    int64_t rank;
    float scale;
    int64_t row_begin, row_end;
    int type;
    int64_t y_offset, outputs;
} tsr_lora_segment;

/// n floats rounded to f16 (round to nearest even).
void tsr_f32_to_f16_array(const float *src, uint16_t *dst, int64_t n);

/// y[row] += scale · (x[row] · Aᵀ) · Bᵀ for every row of every segment, rows split across the
/// thread pool. Rows of different segments never touch each other's output, and a row's result
/// does not depend on the other rows nor on the thread count.
void tsr_lora_segments(const tsr_lora_segment *segments, int64_t segment_count,
                       const float *x, int64_t x_stride, int64_t inputs,
                       float *y, int64_t y_stride);

// ---- threads (threads.c) and few-row matmul (matmul.c) ----

/// A task run on every pool thread: `thread` in 0..<threads.
typedef void (*tsr_task_fn)(void *ctx, int thread, int threads);
/// Sets the threads our kernels use (the caller counts as one); starts workers as needed.
void tsr_threads_set(int n);
int tsr_threads_get(void);
/// Runs `fn` on every thread of the pool and returns when all are done. Callers are serialised.
void tsr_parallel(tsr_task_fn fn, void *ctx);
/// tsr_parallel on at most `max_threads` threads (a job whose scratch was sized for a thread
/// count read earlier, which another thread may have raised since).
void tsr_parallel_limit(tsr_task_fn fn, void *ctx, int max_threads);

/// y(rows, outputs) (+)= alpha · x(rows, inputs) · W(outputs, inputs)ᵀ, streaming W once, for
/// few rows. With `batch_invariant`, a row's result is bitwise independent of `rows`.
void tsr_matmul_few_rows(const float *x, int64_t x_stride, int64_t rows, const float *w, int64_t outputs, int64_t inputs,
                         float *y, int64_t y_stride, float alpha, int accumulate, int batch_invariant);

// ---- matmul over weights in their stored type (qmatmul.c) ----

/// One activation row's block of 32, quantized to 8 bits: x[j] ≈ d·q[j]; s = d·Σq.
typedef struct {
    float d;
    float s;
    int8_t q[32];
} tsr_q8_block;

/// Layouts of a part's rows: as stored (row after row), or interleaved by 8 (tsr_pack_x8).
enum { TSR_LAYOUT_ROWS = 0, TSR_LAYOUT_X8 = 1 };

/// Rows of a weight matrix in one stored type (a GGUF tensor, mmapped): stored row g is output
/// column out_offset + (row_map ? row_map[g] : g). Several parts stack into one matrix.
/// TSR_LAYOUT_X8 parts (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K; rows a multiple of 8; no row map)
/// hold groups of 8 rows with each block's 8 rows side by side: per block, the 8 f16 scales (Q4_1,
/// Q5_1: then the 8 f16 minimums; Q5_0, Q5_1: then the 8 rows' 32-bit masks of fifth bits;
/// Q4_K, Q5_K: the 8 dmins and the 8 rows' 12 scale bytes, Q5_K's fifth bits, see qmatmul.c), then the quants in 32-byte vectors whose 4-byte lane j is row j's bytes
/// 4k..4k+3 (vector k). row_bytes stays the stored row's size.
typedef struct {
    int type;                 // TSR_GGML_*
    const void *data;         // rows × row_bytes
    int64_t rows;
    int64_t row_bytes;
    const int32_t *row_map;   // NULL, or a permutation of 0..<rows
    int64_t out_offset;
    int layout;               // TSR_LAYOUT_*
    /// TSR_LAYOUT_X8 only: 0, or the input block (of 32; whole super-blocks for Q4_K / Q5_K)
    /// where the matrix splits in two column panels, stored one after the other (every row
    /// group's blocks [0, k_split), then every group's [k_split, inputs/32)); each output is
    /// then the sum over panel 0 stored (or added), then panel 1's added: two threads can
    /// each stream one panel of a tensor-parallel step and get the same bits (tsr_decode_step).
    int64_t k_split;
    /// k_split > 0 only: panel 1's blocks, when stored apart from panel 0's (each thread's
    /// panel next to its other rows, tsr_pack_x8_panels); NULL: right after panel 0 in data.
    const void *panel1;
} tsr_weight_part;

/// Bytes of one block of a group of 8 interleaved rows of `ggml_type`; 0 when the type has no
/// interleaved layout.
int64_t tsr_x8_group_block_bytes(int ggml_type);
/// Writes `src` (TSR_LAYOUT_ROWS, rows a multiple of 8) interleaved by 8 into `dst`
/// (src->rows × src->row_bytes bytes), row maps applied: packed row i is output row
/// src->out_offset + i. The part that reads it: same type, rows, row_bytes and out_offset,
/// data = dst, row_map = NULL, layout = TSR_LAYOUT_X8.
tsr_status tsr_pack_x8(const tsr_weight_part *src, int64_t inputs, void *dst);
/// tsr_pack_x8 in two column panels split at input block `k_split` (see tsr_weight_part; 0 is
/// tsr_pack_x8); the part that reads it sets the same k_split.
tsr_status tsr_pack_x8_split(const tsr_weight_part *src, int64_t inputs, int64_t k_split, void *dst);
/// tsr_pack_x8_split with the panels in two places: panel 0 into dst0
/// (tsr_x8_panel_bytes(..., 0) bytes), panel 1 into dst1; the part that reads it sets
/// data = dst0, panel1 = dst1.
tsr_status tsr_pack_x8_panels(const tsr_weight_part *src, int64_t inputs, int64_t k_split, void *dst0, void *dst1);
/// Bytes of column panel `panel` (0 or 1) of src packed split at k_split; 0 when src cannot be
/// packed split there.
int64_t tsr_x8_panel_bytes(const tsr_weight_part *src, int64_t inputs, int64_t k_split, int panel);
/// Dequantizes stored row `g` of one part into `inputs` floats.
void tsr_dequantize_part_row(const tsr_weight_part *part, int64_t inputs, int64_t g, float *dst);

/// Kernel variants of tsr_qmatmul.
enum { TSR_QIMPL_BEST = 0, TSR_QIMPL_SCALAR = 1, TSR_QIMPL_AVX2 = 2, TSR_QIMPL_AVX512VNNI = 3 };
/// Whether `impl` runs on this CPU (scalar always does).
int tsr_qmatmul_available(int impl);
/// The fastest variant this CPU runs, chosen once from cpuid.
int tsr_qmatmul_best(void);
/// Makes TSR_QIMPL_BEST mean `impl` (0 restores the cpuid choice): for tests and benchmarks.
void tsr_qmatmul_force(int impl);
/// Whether `ggml_type` is a block-quantized type (its matmul takes Q8 activations).
int tsr_type_is_quantized(int ggml_type);
/// Quantizes `rows` rows of `inputs` floats (a multiple of 32) into rows × inputs/32 blocks.
void tsr_quantize_q8_rows(const float *x, int64_t x_stride, int64_t rows, int64_t inputs, tsr_q8_block *out);
/// Quantizes rows in two 8-bit levels: `out` as tsr_quantize_q8_rows, `lo` the residuals in units
/// of each block's d/256 (lo.d = d/256 exactly; lo.q clamped to ±127): x ≈ d·q + lo.d·lo.q within
/// d/512 per element (plus f32 rounding), about 16-bit precision. `lo` NULL: tsr_quantize_q8_rows.
void tsr_quantize_q8x2_rows(const float *x, int64_t x_stride, int64_t rows, int64_t inputs, tsr_q8_block *out, tsr_q8_block *lo);
/// y(rows, outputs) (+)= alpha · x · Wᵀ, W being the parts stacked by rows. Quantized parts read
/// `xq` (from tsr_quantize_q8_rows, rows × inputs/32 blocks: integer dot products), or, when
/// `xq` is NULL, `x` in f32 against their dequantized rows; F32/F16/BF16 parts always read `x`.
/// A row's result does not depend on `rows` nor on the thread count. impl: TSR_QIMPL_*.
tsr_status tsr_qmatmul(const tsr_weight_part *parts, int64_t n_parts, int64_t inputs,
                       const tsr_q8_block *xq, const float *x, int64_t x_stride, int64_t rows,
                       float *y, int64_t y_stride, float alpha, int accumulate, int impl);
/// tsr_qmatmul with two-level activations (tsr_quantize_q8x2_rows): `xq_lo` NULL is tsr_qmatmul.
/// Interleaved parts take both levels in one pass over the weights (integer sums combined
/// exactly as 256·Σw·q + Σw·lo.q); stored-layout quantized parts add the residual in a second
/// pass.
tsr_status tsr_qmatmul_x2(const tsr_weight_part *parts, int64_t n_parts, int64_t inputs,
                          const tsr_q8_block *xq, const tsr_q8_block *xq_lo, const float *x, int64_t x_stride, int64_t rows,
                          float *y, int64_t y_stride, float alpha, int accumulate, int impl);
/// One activation row (xq / xq_lo / x as tsr_qmatmul_x2 for one row) against output rows
/// [begin, end) of the stacked parts, on the calling thread (no pool job): y[o] (+)= the row's
/// sum, y indexed by output row. panel -1: every column; 0 / 1: that column panel of parts
/// split by k_split only (every part in range split; 8-bit activations), its sum stored (or
/// added): panel 0 stored then panel 1 added gives tsr_qmatmul_x2's bits.
tsr_status tsr_qmatmul_span(const tsr_weight_part *parts, int64_t n_parts, int64_t inputs,
                            const tsr_q8_block *xq, const tsr_q8_block *xq_lo, const float *x,
                            float *y, int64_t begin, int64_t end, int panel, int accumulate, int impl);
/// Dequantizes the matrix's output rows [begin, end) into dst ((end - begin) × inputs floats).
void tsr_dequantize_parts(const tsr_weight_part *parts, int64_t n_parts, int64_t inputs,
                          int64_t begin, int64_t end, float *dst);

// ---- one decode step, tensor parallel over two threads (decode.c) ----

/// One layer's weights for tsr_decode_step, every part interleaved (TSR_LAYOUT_X8). qkv: qd + 2·kvd
/// outputs (queries, keys, values); o: hidden outputs over qd inputs, split in column panels at
/// heads_split·head_dim; gate_up: 2·ff outputs (gate, then up); down: hidden outputs over ff
/// inputs, split at ff_split. k_cache / v_cache: the layer's KV storage (tsr_kv_store's layout).
typedef struct {
    const tsr_weight_part *qkv; int64_t qkv_parts;
    const tsr_weight_part *o; int64_t o_parts;
    const tsr_weight_part *gate_up; int64_t gate_up_parts;
    const tsr_weight_part *down; int64_t down_parts;
    const float *attn_norm, *ffn_norm;
    void *k_cache, *v_cache;
} tsr_decode_layer;

typedef struct {
    int64_t n_layers, hidden, n_heads, n_kv_heads, head_dim, ff, rot_dim, vocab;
    int64_t heads_split, ff_split;   // from tsr_decode_split
    float eps, attn_scale;
    const tsr_decode_layer *layers;
    const tsr_weight_part *lm_head; int64_t lm_head_parts;   // any parts, not split
    const float *out_norm;
    int kv_type;              // TSR_GGML_F32 / F16
    int two_level;            // activations in two 8-bit levels (tsr_quantize_q8x2_rows) or one
} tsr_decode_model;

/// The two shares of a tensor-parallel decode step: query heads [0, heads_split) and hidden
/// units [0, ff_split) are share 0's, balanced by weight rows. o_unit / down_unit: the columns a
/// panel of the o / down matrix must be a multiple of (32; 256 for Q4_K / Q5_K). The o and down
/// matrices are then packed with k_split = heads_split·head_dim/32 and ff_split/32.
tsr_status tsr_decode_split(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, int64_t ff,
                            int64_t o_unit, int64_t down_unit, int64_t *heads_split, int64_t *ff_split);
/// Whether tsr_decode_step can run `m` (sizes, interleaved and split layer weights).
tsr_status tsr_decode_check(const tsr_decode_model *m);
/// Bytes of workspace tsr_decode_step needs for contexts of at most `max_ctx` positions.
int64_t tsr_decode_workspace_bytes(const tsr_decode_model *m, int64_t max_ctx);
/// One token through the whole model as one pool job on at most two threads, one share each
/// (see decode.c): three barriers a layer instead of five parallel calls. `x`: the token's
/// embedding (hidden floats, read only); rope_cos / rope_sin: its position's angles
/// (tsr_rope_angles); the key and value of position `pos` go to slot pos % block_size of block
/// block_table[pos / block_size], positions before it must be cached; logits: vocab floats.
/// The same bits as the row-split path (LlamaModel.forward) on any thread count.
/// `workspace`: tsr_decode_workspace_bytes(m, pos + 1) bytes, 64-byte aligned.
tsr_status tsr_decode_step(const tsr_decode_model *m, const float *x, const float *rope_cos, const float *rope_sin,
                           const int32_t *block_table, int64_t block_size, int64_t pos, float *logits,
                           void *workspace, int64_t workspace_bytes, int impl);

// ---- CPU features (cpu.c) ----

/// Bit set of TSR_CPU_* for the running CPU.
enum { TSR_CPU_AVX2 = 1, TSR_CPU_FMA = 2, TSR_CPU_AVX512F = 4, TSR_CPU_AVX512VNNI = 8, TSR_CPU_F16C = 16, TSR_CPU_AVX512VL = 32, TSR_CPU_AVX512BW = 64 };
int tsr_cpu_features(void);
/// Anonymous memory of at least `bytes`, 2 MiB-aligned and asked to be backed by transparent
/// huge pages (fewer TLB misses while streaming weights); *mapped gets the size to free.
void *tsr_huge_alloc(int64_t bytes, int64_t *mapped);
void tsr_huge_free(void *p, int64_t mapped);

#ifdef __cplusplus
}
#endif
#endif
