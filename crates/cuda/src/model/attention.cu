// Attention of one token over its layer's KV rows, and the lightning indexer that chooses
// which compressed rows a ratio-4 layer attends to.
//
// Deterministic: every sum is a fixed warp butterfly or block reduction, no atomics.

#include "dsv4_common.cuh"

// The KV row that attention row r reads: rows 0..n_raw are the raw window, oldest first
// (position pos + 1 - n_raw + r, ring slot position % window); the rest are compressed rows.
// Null when the indexer left a compressed row out.
__device__ __forceinline__ const float* kv_row(int r, const float* raw, int window, long long first,
                                               int n_raw, const float* comp, const u8* mask, int d) {
    if (r < n_raw) return raw + ((first + r) % window) * d;
    const int c = r - n_raw;
    if (mask && !mask[c]) return nullptr;
    return comp + (long long)c * d;
}

// grid.x = query heads, one block each; dynamic shared memory: the head's query (d floats).
// The softmax holds a per-head sink logit (mass without value); the output's RoPE tail is
// rotated back by the query's position, since every value row carries its own key rotation.
// `scores` is scratch of heads × (n_raw + n_comp).
extern "C" __global__ void attend(const float* q, const float* raw, int window, long long pos, int n_raw,
                                  const float* comp, int n_comp, const u8* mask, const float* sinks,
                                  float* scores, float* out, int d, const float* freqs, int n_pairs) {
    extern __shared__ float qs[];
    __shared__ float shf[32];
    const int h = blockIdx.x, n = n_raw + n_comp;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const long long first = pos + 1 - n_raw;
    for (int j = threadIdx.x; j < d; j += blockDim.x) qs[j] = q[(long long)h * d + j];
    __syncthreads();
    float* sc = scores + (long long)h * n;
    const float scale = 1.0f / sqrtf((float)d);
    for (int r = warp; r < n; r += nw) {
        const float* row = kv_row(r, raw, window, first, n_raw, comp, mask, d);
        float acc = 0.0f;
        if (row)
            for (int j = lane; j < d; j += 32) acc = fmaf(qs[j], row[j], acc);
        acc = warp_sum(acc);
        if (lane == 0) sc[r] = row ? acc * scale : neg_inf();
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
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float acc = 0.0f;
        for (int r = 0; r < n; ++r) {
            const float e = sc[r];
            if (e == 0.0f) continue;  // left out by the indexer, or underflowed: adds nothing
            acc = fmaf(e, kv_row(r, raw, window, first, n_raw, comp, mask, d)[j], acc);
        }
        oh[j] = acc * inv;
    }
    __syncthreads();
    float* tail = oh + d - 2 * n_pairs;
    for (int i = threadIdx.x; i < n_pairs; i += blockDim.x) rope_pair(tail, i, freqs[i], (float)pos, true);
}

// score[c] = Σ_h (w[h] · w_scale) · relu(q_h · k_c) for every indexer key row c, one warp per
// row; q is heads × dim, keys n × dim.
extern "C" __global__ void index_scores(const float* q, const float* w, float w_scale, const float* keys,
                                        int n, int heads, int dim, float* scores) {
    const int lane = threadIdx.x & 31;
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (c >= n) return;
    const float* k = keys + (long long)c * dim;
    float s = 0.0f;
    for (int h = 0; h < heads; ++h) {
        float acc = 0.0f;
        for (int j = lane; j < dim; j += 32) acc = fmaf(q[h * dim + j], k[j], acc);
        acc = warp_sum(acc);
        s += (w[h] * w_scale) * fmaxf(acc, 0.0f);
    }
    if (lane == 0) scores[c] = s;
}

// mask[c] = 1 for the k best-scoring rows: a row's rank counts the rows that beat it (higher
// score in f32::total_cmp order, or the same score at a lower index, the CPU's stable sort).
// Quadratic in n; fine for the row counts of tests and short contexts.
extern "C" __global__ void topk_mask(const float* scores, int n, int k, u8* mask) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= n) return;
    const u32 kc = total_order_key(scores[c]);
    int rank = 0;
    for (int j = 0; j < n && rank < k; ++j) {
        const u32 kj = total_order_key(scores[j]);
        rank += (kj > kc) || (kj == kc && j < c);
    }
    mask[c] = rank < k;
}
