// The order-dependent attention steps of a whole prefill chunk in a few launches (instead of
// several launches per token): the compressors' pooled rows, their frontiers after the
// chunk, attention of every token over its own window and the compressed rows visible at its
// position, and the raw ring after the chunk.
//
// Where the per-token path (attention.cu, compressor.cu) keeps state that each token updates
// in turn, these kernels read what a token would have seen from two places: positions before
// the chunk from the state as it was when the chunk began (ring, frontier), positions inside
// it from the chunk's scratch rows. Every value is computed by the same operations in the same
// order as the per-token kernels, so the two paths agree bit for bit.

#include "dsv4_common.cuh"

// One compressor candidate (value, score) of column `col` at position q, as the per-token
// frontier would hold it: q < 0 is an empty slot; positions before the chunk (pos0) come from
// the frontier as it was at the chunk's start, whose current window starts at w0 (ratio-4
// compressors keep the window before it in slots 0..ratio); chunk positions from the
// chunk's projections, their score plus the position's APE as comp_push adds it.
struct Cand {
    float v, s;
};
__device__ __forceinline__ Cand comp_cand(long long q, int col, const float* fkv, const float* fsc,
                                          const float* kv, const float* sc, const float* ape, int ratio,
                                          int width, int overlapping, long long pos0) {
    Cand c;
    if (q < 0) {
        c.v = 0.0f;
        c.s = neg_inf();
    } else if (q >= pos0) {
        const long long t = q - pos0;
        c.v = kv[t * width + col];
        c.s = sc[t * width + col] + ape[(int)(q % ratio) * width + col];
    } else {
        const long long w0 = pos0 - pos0 % ratio;
        const int pm = (int)(q % ratio);
        const int slot = overlapping && q >= w0 ? ratio + pm : pm;
        c.v = fkv[slot * width + col];
        c.s = fsc[slot * width + col];
    }
    return c;
}

// grid.x = rows the chunk completes (windows ending at pe0, pe0 + ratio, ...), one block each:
// the pooled, normalised, rotated row of the window ending at pe, written to row
// (pe + 1) / ratio - 1 of `rows` (d floats each). Same pooling as comp_push.
extern "C" __global__ void comp_chunk(const float* fkv, const float* fsc, const float* kv, const float* sc,
                                      const float* ape, int ratio, int width, int overlapping, long long pos0,
                                      long long pe0, float* rows, const float* norm_w, float eps,
                                      const float* freqs, int n_pairs) {
    DSV4_GRID_ENTRY();
    __shared__ double shd[32];
    const long long pe = pe0 + (long long)blockIdx.x * ratio;
    const int d = overlapping ? width / 2 : width;
    const int nc = overlapping ? 2 * ratio : ratio;
    float* row = rows + ((pe + 1) / ratio - 1) * d;
    // Candidate t's position: ratio 4 pools the previous window's lane A and the current
    // window's lane B; other ratios their own window.
    const long long q0 = pe + 1 - (long long)nc;
    double ss = 0.0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float m = neg_inf();
        for (int t = 0; t < nc; ++t) {
            const int col = (overlapping && t >= ratio ? d : 0) + j;
            m = fmaxf(m, comp_cand(q0 + t, col, fkv, fsc, kv, sc, ape, ratio, width, overlapping, pos0).s);
        }
        float v = 0.0f;
        if (m != neg_inf()) {
            float num = 0.0f, den = 0.0f;
            for (int t = 0; t < nc; ++t) {
                const int col = (overlapping && t >= ratio ? d : 0) + j;
                const Cand c = comp_cand(q0 + t, col, fkv, fsc, kv, sc, ape, ratio, width, overlapping, pos0);
                const float e = expf(c.s - m);
                num += e * c.v;
                den += e;
            }
            v = num / den;
        }
        row[j] = v;
        ss += (double)v * (double)v;
    }
    const float s = rms_scale_from(block_sum_d(ss, shd), d, eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x) row[j] = row[j] * s * norm_w[j];
    __syncthreads();
    float* tail = row + d - 2 * n_pairs;
    for (int i = threadIdx.x; i < n_pairs; i += blockDim.x)
        rope_pair(tail, i, freqs[i], (float)(pe + 1 - ratio), false);
}

// The frontier after the chunk's last position p1 - 1, into (nkv, nsc) (slots × width, the
// layout comp_push keeps): the partial window from w1 = p1 - p1 % ratio in the current slots,
// for ratio 4 the complete window before it in slots 0..ratio; everything else empty. Reads
// the old frontier, so it writes elsewhere (copy_f32 moves it back).
extern "C" __global__ void comp_frontier(const float* fkv, const float* fsc, const float* kv, const float* sc,
                                         const float* ape, int ratio, int width, int overlapping, long long pos0,
                                         long long p1, float* nkv, float* nsc) {
    DSV4_GRID_ENTRY();
    const int slots = overlapping ? 2 * ratio : ratio;
    const long long w1 = p1 - p1 % ratio;
    const long long total = (long long)slots * width;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int s = (int)(i / width), col = (int)(i % width);
        long long q;
        if (!overlapping) q = w1 + s;
        else if (s >= ratio) q = w1 + (s - ratio);
        else q = w1 - ratio + s;
        Cand c;
        if (q >= p1 || q < 0) {
            c.v = 0.0f;
            c.s = neg_inf();
        } else {
            c = comp_cand(q, col, fkv, fsc, kv, sc, ape, ratio, width, overlapping, pos0);
        }
        nkv[i] = c.v;
        nsc[i] = c.s;
    }
}

extern "C" __global__ void copy_f32(const float* src, float* dst, long long n) {
    DSV4_GRID_ENTRY();
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

// The ring after the chunk: the last min(n, window) chunk rows into their slots.
extern "C" __global__ void ring_push(const float* kvn, int n, long long pos0, int window, int d, float* raw) {
    DSV4_GRID_ENTRY();
    const int keep = min(n, window);
    const int t = n - keep + blockIdx.x;
    const float* src = kvn + (long long)t * d;
    float* dst = raw + ((pos0 + t) % window) * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) dst[j] = src[j];
}

// The KV row that token pos's attention row r reads: rows 0..n_raw are its raw window, oldest
// first (chunk positions from the chunk's rows, earlier ones from the ring as the chunk found
// it); the rest are compressed rows.
__device__ __forceinline__ const float* chunk_kv_row(int r, const float* kvn, long long pos0, const float* raw,
                                                     int window, long long first, int n_raw, const float* comp, int d) {
    if (r < n_raw) {
        const long long q = first + r;
        return q >= pos0 ? kvn + (q - pos0) * d : raw + (q % window) * d;
    }
    return comp + (long long)(r - n_raw) * d;
}

// Most query heads one attend_chunk block serves.
#define ATT_MAX_HG 8

// grid (heads / hg, tokens): attend's computation for token pos0 + blockIdx.y and query heads
// hg·blockIdx.x .. + hg. The heads share one KV head, so each row is read once per block for
// all hg heads (the per-head attend reads it once per head: L2 traffic, not arithmetic, bounds
// prefill attention). When the indexer's mask applies, the block first lists the rows it keeps
// (select_rows) and walks only those. Each head's scores, its value sums (row order) and its
// output are attend's; the softmax denominator is a block sum over the listed rows.
// Dynamic shared memory: hg (d + ncap) floats (queries, then scores, ncap per head), then ncap
// ints of row ids when `masks` is given; ncap >= the rows any token of the launch attends to
// (window plus top_k, or plus its visible compressed rows when unmasked); the host keeps it
// under the default limit. Compressed rows visible at position p: (p + 1) / ratio (none when
// ratio is 0). The indexer mask of token t is row t of `masks` (`mstride` bytes apart), used
// when the token sees more than top_k rows (the host scored exactly those tokens).
extern "C" __global__ void attend_chunk(const float* q, long long q_stride, const float* kvn, long long pos0,
                                        const float* raw, int window, const float* comp, int ratio,
                                        const u8* masks, long long mstride, int top_k, const float* sinks,
                                        float* out, int d, const float* freqs, int n_pairs, int hg, int ncap) {
    DSV4_GRID_ENTRY();
    extern __shared__ float qsm[];
    __shared__ float shf[32];
    __shared__ int wsum[32];
    const int h0 = blockIdx.x * hg, t = blockIdx.y;
    const long long pos = pos0 + t;
    const int n_raw = (int)min(pos + 1, (long long)window);
    const int n_comp = ratio > 0 && comp ? (int)((pos + 1) / ratio) : 0;
    const u8* mask = masks && n_comp > top_k ? masks + t * mstride : nullptr;
    float* qs = qsm;           // hg x d
    float* sc = qsm + hg * d;  // hg x ncap
    int* ids = reinterpret_cast<int*>(qsm + hg * (d + ncap));
    const int n = mask ? select_rows(mask, n_raw, n_comp, ncap, ids, wsum) : n_raw + n_comp;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const long long first = pos + 1 - n_raw;
    const float* qt = q + t * q_stride + (long long)h0 * d;
    for (int j = threadIdx.x; j < hg * d; j += blockDim.x) qs[j] = qt[j];
    __syncthreads();
    const float scale = 1.0f / sqrtf((float)d);
    for (int i = warp; i < n; i += nw) {
        const float* row = chunk_kv_row(mask ? ids[i] : i, kvn, pos0, raw, window, first, n_raw, comp, d);
        float acc[ATT_MAX_HG];
#pragma unroll
        for (int h = 0; h < ATT_MAX_HG; ++h) acc[h] = 0.0f;
        for (int j = lane; j < d; j += 32) {
            const float v = row[j];
#pragma unroll
            for (int h = 0; h < ATT_MAX_HG; ++h)
                if (h < hg) acc[h] = fmaf(qs[h * d + j], v, acc[h]);
        }
#pragma unroll
        for (int h = 0; h < ATT_MAX_HG; ++h) {
            if (h < hg) {
                const float a = warp_sum(acc[h]);
                if (lane == 0) sc[h * ncap + i] = a * scale;
            }
        }
    }
    __syncthreads();
    float inv[ATT_MAX_HG];
#pragma unroll
    for (int h = 0; h < ATT_MAX_HG; ++h) {
        if (h < hg) {
            float* sh = sc + h * ncap;
            const float sink = sinks[h0 + h];
            float m = sink;
            for (int r = threadIdx.x; r < n; r += blockDim.x) m = fmaxf(m, sh[r]);
            m = block_max_f(m, shf);
            float den = 0.0f;
            for (int r = threadIdx.x; r < n; r += blockDim.x) {
                const float e = expf(sh[r] - m);
                sh[r] = e;
                den += e;
            }
            den = block_sum_f(den, shf) + expf(sink - m);
            inv[h] = 1.0f / den;
        }
    }
    __syncthreads();
    float* ot = out + t * q_stride + (long long)h0 * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float acc[ATT_MAX_HG];
#pragma unroll
        for (int h = 0; h < ATT_MAX_HG; ++h) acc[h] = 0.0f;
        for (int i = 0; i < n; ++i) {
            const float* row = chunk_kv_row(mask ? ids[i] : i, kvn, pos0, raw, window, first, n_raw, comp, d);
            const float v = row[j];
#pragma unroll
            for (int h = 0; h < ATT_MAX_HG; ++h) {
                if (h < hg) {
                    const float e = sc[h * ncap + i];
                    if (e != 0.0f) acc[h] = fmaf(e, v, acc[h]);  // attend skips these terms too
                }
            }
        }
#pragma unroll
        for (int h = 0; h < ATT_MAX_HG; ++h)
            if (h < hg) ot[h * d + j] = acc[h] * inv[h];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hg * n_pairs; i += blockDim.x) {
        const int h = i / n_pairs, k = i - h * n_pairs;
        rope_pair(ot + h * d + d - 2 * n_pairs, k, freqs[k], (float)pos, true);
    }
}

// index_scores for every token of the chunk that sees more compressed rows than the indexer
// keeps (grid.y = token t, at position pos0 + t, seeing (pos + 1) / ratio rows): token t's
// scores into row t of `scores` (`mstride` floats apart). Same sums, same order; with fp4 on
// the tensor cores, IX_KEYS keys a warp.
extern "C" __global__ void index_scores_chunk(const float* q, const float* w, float w_scale, const float* keys,
                                              long long pos0, int ratio, int top_k, int heads, int dim,
                                              float* scores, long long mstride, int fp4) {
    DSV4_GRID_ENTRY();
    const int t = blockIdx.y;
    const int n = (int)((pos0 + t + 1) / ratio);
    if (n <= top_k) return;
    if (fp4) {
        const long long c0 = (long long)((blockIdx.x * blockDim.x + threadIdx.x) >> 5) * IX_KEYS;
        if (c0 < n)
            index_scores_mma(q + (long long)t * heads * dim, w + (long long)t * heads, w_scale, keys, c0,
                             min((long long)n, c0 + IX_KEYS), 8, heads, dim, scores + t * mstride);
        return;
    }
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (c >= n) return;
    const float s = index_score(q + (long long)t * heads * dim, w + (long long)t * heads, w_scale, keys + (long long)c * dim,
                                heads, dim);
    if ((threadIdx.x & 31) == 0) scores[t * mstride + c] = s;
}

// topk_mask for the same tokens, one block each (grid.y = token t): row t of `masks` from row t
// of `scores`.
extern "C" __global__ void __launch_bounds__(TOPK_THREADS) topk_mask_chunk(const float* scores, long long pos0, int ratio, int k,
                                                                          u8* masks, long long mstride) {
    DSV4_GRID_ENTRY();
    __shared__ int hist[256], wsum[32], pick[2];
    const int t = blockIdx.y;
    const int n = (int)((pos0 + t + 1) / ratio);
    if (n <= k) return;
    topk_block(scores + t * mstride, n, k, masks + t * mstride, hist, wsum, pick);
}
