// Attention of one token over its layer's KV rows, and the lightning indexer that chooses
// which compressed rows a ratio-4 layer attends to.
//
// Deterministic: every sum is a fixed warp butterfly or block reduction, no atomics.

#include "dsv4_common.cuh"

// Largest head dimension attend takes (a multiple of 32; Flash's is 512), and its threads per
// block: one warp per row at a time, so more warps shorten the serial walk over the rows.
#define ATTEND_MAX_D 512
#define ATTEND_THREADS 512

// The KV row that attention row r reads: rows 0..n_raw are the raw window, oldest first
// (position pos + 1 - n_raw + r, ring slot position % window); the rest are compressed rows.
__device__ __forceinline__ const float* kv_row(int r, const float* raw, int window, long long first,
                                               int n_raw, const float* comp, int d) {
    if (r < n_raw) return raw + ((first + r) % window) * d;
    return comp + (long long)(r - n_raw) * d;
}

// Head h (blockIdx.x) of one token at `pos` over n_raw raw rows and n_comp compressed rows, or,
// with the indexer's `mask`, over the raw rows and the compressed rows it keeps (listed first
// by select_rows, at most `cap` in all). The softmax holds a per-head sink logit (mass without
// value); the output's RoPE tail is rotated back by the query's position, since every value
// row carries its own key rotation. `scores` is scratch of heads × (n_raw + n_comp). Shared
// memory `qs`: d floats of query, then d per warp of partial output sums, then `cap` ints of
// row ids.
__device__ __forceinline__ void attend_head(const float* q, const float* raw, int window, long long pos, int n_raw,
                                            const float* comp, int n_comp, const u8* mask, int cap, const float* sinks,
                                            float* scores, float* out, int d, const float* freqs, int n_pairs,
                                            float* qs, float* shf, int* wsum) {
    const int h = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int* ids = reinterpret_cast<int*>(qs + d + nw * d);
    const int n = mask ? select_rows(mask, n_raw, n_comp, cap, ids, wsum) : n_raw + n_comp;
    const long long first = pos + 1 - n_raw;
    for (int j = threadIdx.x; j < d; j += blockDim.x) qs[j] = q[(long long)h * d + j];
    __syncthreads();
    float* sc = scores + (long long)h * n;
    const float scale = 1.0f / sqrtf((float)d);
    for (int i = warp; i < n; i += nw) {
        const float* row = kv_row(mask ? ids[i] : i, raw, window, first, n_raw, comp, d);
        float acc = 0.0f;
        for (int j = lane; j < d; j += 32) acc = fmaf(qs[j], row[j], acc);
        acc = warp_sum(acc);
        if (lane == 0) sc[i] = acc * scale;
    }
    __syncthreads();
    const float sink = sinks[h];
    float m = sink;
    for (int r = threadIdx.x; r < n; r += blockDim.x) m = fmaxf(m, sc[r]);
    m = block_max_f(m, shf);
    float den = 0.0f;
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        const float e = expf(sc[r] - m);
        sc[r] = e;
        den += e;
    }
    den = block_sum_f(den, shf) + expf(sink - m);
    __syncthreads();
    const float inv = 1.0f / den;
    float* oh = out + (long long)h * d;
    // Weighted sum of the value rows: each warp takes the rows it scored, each lane d / 32
    // columns (coalesced, independent loads), partial sums per warp in shared memory, then
    // added across warps in warp order.
    float acc[ATTEND_MAX_D / 32];
#pragma unroll
    for (int k = 0; k < ATTEND_MAX_D / 32; ++k) acc[k] = 0.0f;
    for (int i = warp; i < n; i += nw) {
        const float e = sc[i];
        if (e == 0.0f) continue;  // underflowed: adds nothing
        const float* row = kv_row(mask ? ids[i] : i, raw, window, first, n_raw, comp, d);
#pragma unroll
        for (int k = 0; k < ATTEND_MAX_D / 32; ++k)
            if (32 * k < d) acc[k] = fmaf(e, row[lane + 32 * k], acc[k]);
    }
    float* part = qs + d + warp * d;
#pragma unroll
    for (int k = 0; k < ATTEND_MAX_D / 32; ++k)
        if (32 * k < d) part[lane + 32 * k] = acc[k];
    __syncthreads();
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float sum = 0.0f;
        for (int w = 0; w < nw; ++w) sum += qs[d + w * d + j];
        oh[j] = sum * inv;
    }
    __syncthreads();
    float* tail = oh + d - 2 * n_pairs;
    for (int i = threadIdx.x; i < n_pairs; i += blockDim.x) rope_pair(tail, i, freqs[i], (float)pos, true);
}

// grid.x = query heads, one block of ATTEND_THREADS each; dynamic shared memory: (1 + warps)
// × d floats and `cap` ints (see attend_head); cap >= window + top_k when `mask` is given.
extern "C" __global__ void __launch_bounds__(ATTEND_THREADS) attend(const float* q, const float* raw, int window, long long pos, int n_raw,
                                  const float* comp, int n_comp, const u8* mask, int cap, const float* sinks,
                                  float* scores, float* out, int d, const float* freqs, int n_pairs) {
    DSV4_GRID_ENTRY();
    extern __shared__ float qs[];
    __shared__ float shf[32];
    __shared__ int wsum[32];
    attend_head(q, raw, window, pos, n_raw, comp, n_comp, mask, cap, sinks, scores, out, d, freqs, n_pairs, qs, shf, wsum);
}

// The decode step's attend for a batch of tokens, one per session: token b = blockIdx.y reads
// its query and writes its output at b · heads · d, and takes its session's buffers from the
// pointer tables (`raws[b]`, `comps[b]`, `masks[b]`, `scores[b]`; comps or masks null when the
// layer has none). The position is pos[b]; the row counts follow from it (the raw window holds
// min(pos + 1, window) rows, a layer of compression `ratio` has emitted (pos + 1) / ratio
// rows). The indexer's mask applies once more rows exist than it keeps.
extern "C" __global__ void __launch_bounds__(ATTEND_THREADS) attend_step(const float* q, const u64* raws, int window, const u64* comps, int ratio,
                                       const u64* masks, int top_k, const float* sinks, const u64* scores, float* out,
                                       int d, const float* freqs, int n_pairs, const int* posv) {
    DSV4_GRID_ENTRY();
    extern __shared__ float qs[];
    __shared__ float shf[32];
    __shared__ int wsum[32];
    const int b = blockIdx.y;
    const long long pos = posv[b];
    const long long off = (long long)b * gridDim.x * d;
    const int n_raw = (int)min(pos + 1, (long long)window);
    const int n_comp = ratio ? (int)((pos + 1) / ratio) : 0;
    const float* comp = comps ? reinterpret_cast<const float*>(comps[b]) : nullptr;
    const u8* m = masks && n_comp > top_k ? reinterpret_cast<const u8*>(masks[b]) : nullptr;
    attend_head(q + off, reinterpret_cast<const float*>(raws[b]), window, pos, n_raw, comp, n_comp, m, window + top_k,
                sinks, reinterpret_cast<float*>(scores[b]), out + off, d, freqs, n_pairs, qs, shf, wsum);
}

// score[c] = Σ_h (w[h] · w_scale) · relu(q_h · k_c) for key row c, by one warp; q is
// heads × dim.
__device__ __forceinline__ void index_score_row(const float* q, const float* w, float w_scale, const float* keys,
                                                int c, int heads, int dim, float* scores) {
    const float s = index_score(q, w, w_scale, keys + (long long)c * dim, heads, dim);
    if ((threadIdx.x & 31) == 0) scores[c] = s;
}

// Every indexer key row (n × dim), one warp per row.
// With fp4 (official numerics, shapes GpuModel::index_fp4_shape admits) on the tensor cores,
// IX_KEYS keys a warp.
extern "C" __global__ void index_scores(const float* q, const float* w, float w_scale, const float* keys,
                                        int n, int heads, int dim, float* scores, int fp4) {
    DSV4_GRID_ENTRY();
    if (fp4) {
        const long long c0 = (long long)((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * IX_KEYS;
        if (c0 < n) index_scores_mma(q, w, w_scale, keys, c0, min((long long)n, c0 + IX_KEYS), 8, heads, dim, scores);
        return;
    }
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (c >= n) return;
    index_score_row(q, w, w_scale, keys, c, heads, dim, scores);
}

// The decode step's index_scores, token b = blockIdx.y of a batch (queries at b · heads · dim,
// weights at b · heads, keys and scores from its session's tables): (pos[b] + 1) / ratio rows,
// nothing while they are at most top_k (every row is kept then); a grid of any width strides
// over the rows, so the launch need not know the count.
extern "C" __global__ void index_scores_step(const float* q, const float* w, float w_scale, const u64* keys,
                                             int ratio, int top_k, int heads, int dim, const u64* scores,
                                             const int* posv, int fp4) {
    DSV4_GRID_ENTRY();
    const int b = blockIdx.y;
    const int n = (int)(((long long)posv[b] + 1) / ratio);
    if (n <= top_k) return;
    q += (long long)b * heads * dim;
    w += (long long)b * heads;
    const float* k = reinterpret_cast<const float*>(keys[b]);
    float* sc = reinterpret_cast<float*>(scores[b]);
    const int warps = (gridDim.x * blockDim.x) >> 5;
    if (fp4) {
        // Warp i takes key steps i, i + warps, ...
        const long long wi = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
        index_scores_mma(q, w, w_scale, k, 8 * wi, n, 8LL * warps, heads, dim, sc);
        return;
    }
    for (int c = (blockIdx.x * blockDim.x + threadIdx.x) >> 5; c < n; c += warps)
        index_score_row(q, w, w_scale, k, c, heads, dim, sc);
}

// One block: the mask of the n scores (n > k).
extern "C" __global__ void __launch_bounds__(TOPK_THREADS) topk_mask(const float* scores, int n, int k, u8* mask) {
    DSV4_GRID_ENTRY();
    __shared__ int hist[256], wsum[32], pick[2];
    topk_block(scores, n, k, mask, hist, wsum, pick);
}

// The decode step's topk_mask for token b = blockIdx.y of a batch (one block each), row count
// from pos[b] as in index_scores_step.
extern "C" __global__ void __launch_bounds__(TOPK_THREADS) topk_mask_step(const u64* scores, int ratio, int k, const u64* masks, const int* posv) {
    DSV4_GRID_ENTRY();
    __shared__ int hist[256], wsum[32], pick[2];
    const int b = blockIdx.y;
    const int n = (int)(((long long)posv[b] + 1) / ratio);
    if (n <= k) return;
    topk_block(reinterpret_cast<const float*>(scores[b]), n, k, reinterpret_cast<u8*>(masks[b]), hist, wsum, pick);
}
