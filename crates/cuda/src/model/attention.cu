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
    const float den = block_softmax_sink(sc, n, sinks[h], shf);
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

// ---- The decode step's attention, split over the rows -----------------------------------------
// A decoded token attends to at most window + top_k rows (640 on Flash), and all its query
// heads share them (one KV head). A block per head over every row read each row once per
// head and walked the rows a warp-row at a time (~60 µs a layer at 640 rows). Here a block
// takes ATT_SPLIT_HEADS heads over one run of rows, split s of at most `splits`, in tiles of
// ATT_TILE rows: the tile's scores, its softmax weights against a running maximum, the
// weighted value rows. The run's maximum, weight sum and weighted sums go to the session's
// scratch, and attend_merge_step adds the runs in split order. The runs follow from the row
// count alone (att_rows_per_split), so a session's bits do not depend on who shares its step.
//
// Scratch `parts[b]` of token b, for `heads` heads: weighted sums at ((h · splits) + s) · d,
// then (maximum, weight sum) pairs at heads · splits · d + ((h · splits) + s) · 2.
#define ATT_SPLIT_HEADS 8
// 8 warps: in the score pass warp w holds dims [w d / 8, (w + 1) d / 8) of the tile's rows
// (lane = row); in the softmax warp w is head w; in the value pass thread t owns dims t + 256 k.
#define ATT_SPLIT_THREADS 256
#define ATT_TILE 32
#define ATT_MAX_SPLITS 64
#define ATT_VROWS 8
// attend_merge_step: a float4 of the head's output a thread.
#define ATT_MERGE_THREADS (ATTEND_MAX_D / 4)

// Rows per run for n rows: at least a tile, at most `splits` runs.
__device__ __forceinline__ int att_rows_per_split(int n, int splits) {
    return max(ATT_TILE, (n + splits - 1) / splits);
}

// The rows token b attends to, as the step computes them: the raw window and either every
// compressed row or, once the indexer's mask applies, the top_k it keeps.
__device__ __forceinline__ int att_step_rows(long long pos, int window, int ratio, int indexed, int top_k, bool& masked) {
    const int n_raw = (int)min(pos + 1, (long long)window);
    const int n_comp = ratio ? (int)((pos + 1) / ratio) : 0;
    masked = indexed && n_comp > top_k;
    return n_raw + (masked ? top_k : n_comp);
}

// grid (ceil(heads / ATT_SPLIT_HEADS) · splits, tokens), ATT_SPLIT_THREADS threads; dynamic
// shared memory: see GpuModel::attend_split_smem. `masks` null for a layer without the
// indexer (`indexed` 0). d: a multiple of 32, at most ATTEND_MAX_D.
extern "C" __global__ void __launch_bounds__(ATT_SPLIT_THREADS)
    attend_split_step(const float* q, const u64* raws, int window, const u64* comps, int ratio, const u64* masks,
                      int top_k, const u64* parts, int d, int heads, int splits, const int* posv) {
    constexpr int HG = ATT_SPLIT_HEADS, KD = ATTEND_MAX_D / ATT_SPLIT_THREADS;
    DSV4_GRID_ENTRY();
    extern __shared__ __align__(16) float sm[];
    __shared__ int wsum[32];
    const int groups = (heads + HG - 1) / HG;
    const int g = blockIdx.x % groups, s = blockIdx.x / groups, b = blockIdx.y;
    const long long pos = posv[b];
    bool masked;
    const int n = att_step_rows(pos, window, ratio, masks != nullptr, top_k, masked);
    const int per = att_rows_per_split(n, splits);
    const int r0 = s * per;
    if (r0 >= n) return;
    const int r1 = min(n, r0 + per);
    const int h0 = g * HG, hn = min(HG, heads - h0);
    float* qs = sm;                      // HG x d queries (zeros past hn)
    float* red = qs + HG * d;            // 8 warps x HG x ATT_TILE partial scores
    float* sc = red + 8 * HG * ATT_TILE;  // HG x ATT_TILE scores
    float* pt = sc + HG * ATT_TILE;       // ATT_TILE x HG weights (a row's HG weights together)
    float* rs = pt + ATT_TILE * HG;       // HG rescale factors
    const float** rp = reinterpret_cast<const float**>(rs + HG);  // the tile's ATT_TILE row addresses
    int* ids = reinterpret_cast<int*>(rp + ATT_TILE);
    const int n_raw = (int)min(pos + 1, (long long)window);
    const int n_comp = ratio ? (int)((pos + 1) / ratio) : 0;
    const float* raw = reinterpret_cast<const float*>(raws[b]);
    const float* comp = comps ? reinterpret_cast<const float*>(comps[b]) : nullptr;
    const int nsel = masked ? select_rows(reinterpret_cast<const u8*>(masks[b]), n_raw, n_comp, window + top_k, ids, wsum) : n;
    // The block's queries as float4s, every load of a thread issued before the first store
    // (d / 32 of them: one L2 latency, where a load-store loop waited out one per element).
    const float4* qb = reinterpret_cast<const float4*>(q + ((long long)b * heads + h0) * d);
    {
        constexpr int QV = HG * ATTEND_MAX_D / 4 / ATT_SPLIT_THREADS;
        const int nq = HG * d / 4, have = hn * d / 4;
        float4 v[QV];
#pragma unroll
        for (int k = 0; k < QV; ++k) {
            const int i = threadIdx.x + ATT_SPLIT_THREADS * k;
            v[k] = i < have ? qb[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int k = 0; k < QV; ++k) {
            const int i = threadIdx.x + ATT_SPLIT_THREADS * k;
            if (i < nq) reinterpret_cast<float4*>(qs)[i] = v[k];
        }
    }
    __syncthreads();

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, dw = d >> 3;
    const long long first = pos + 1 - n_raw;
    const float scale = 1.0f / sqrtf((float)d);
    float m_run = neg_inf(), l_run = 0.0f;  // head `warp`'s, in every lane of that warp
    float acc[HG][KD];
    zero_acc(acc);
    for (int t0 = r0; t0 < r1; t0 += ATT_TILE) {
        const int nt = min(ATT_TILE, r1 - t0);
        {
            const int r = t0 + lane;
            const bool ok = lane < nt && r < nsel;
            const float* row = ok ? kv_row(masked ? ids[r] : r, raw, window, first, n_raw, comp, d) : nullptr;
            if (warp == 0) rp[lane] = row;
            float4 k4[ATTEND_MAX_D / 32];
#pragma unroll
            for (int k = 0; k < ATTEND_MAX_D / 32; ++k)
                k4[k] = ok && 4 * k < dw ? *reinterpret_cast<const float4*>(row + warp * dw + 4 * k) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            // One head at a time: unrolled, the compiler hoists every head's query loads.
#pragma unroll 1
            for (int h = 0; h < HG; ++h) {
                const float* qh = qs + h * d + warp * dw;
                float a = 0.0f;
#pragma unroll
                for (int k = 0; k < ATTEND_MAX_D / 32; ++k)
                    if (4 * k < dw) {
                        const float4 qv = *reinterpret_cast<const float4*>(qh + 4 * k);
                        a = fmaf(qv.x, k4[k].x, a);
                        a = fmaf(qv.y, k4[k].y, a);
                        a = fmaf(qv.z, k4[k].z, a);
                        a = fmaf(qv.w, k4[k].w, a);
                    }
                red[(warp * HG + h) * ATT_TILE + lane] = a;
            }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < HG * ATT_TILE; i += blockDim.x) {
            float v = 0.0f;
#pragma unroll
            for (int w = 0; w < 8; ++w) v += red[(w * HG) * ATT_TILE + i];
            sc[i] = v * scale;
        }
        __syncthreads();
        {
            // Warp `warp` is head `warp`: the tile's weights against the running maximum, the
            // sum so far rescaled to it.
            const bool ok = lane < nt && t0 + lane < nsel;
            const float v = ok ? sc[warp * ATT_TILE + lane] : neg_inf();
            const float m_new = fmaxf(m_run, warp_max(v));
            const float p = ok ? expf(v - m_new) : 0.0f;
            const float f = m_run == m_new ? 1.0f : expf(m_run - m_new);
            l_run = l_run * f + warp_sum(p);
            m_run = m_new;
            pt[lane * HG + warp] = p;
            if (lane == 0) rs[warp] = f;
        }
        __syncthreads();
#pragma unroll
        for (int h = 0; h < HG; ++h)
#pragma unroll
            for (int k = 0; k < KD; ++k) acc[h][k] *= rs[h];
        // ATT_VROWS rows' values loaded before any is used: the loads overlap.
        const int nv = max(0, min(nt, nsel - t0));
        for (int i0 = 0; i0 < nv; i0 += ATT_VROWS) {
            float v[ATT_VROWS][KD];
#pragma unroll
            for (int u = 0; u < ATT_VROWS; ++u)
#pragma unroll
                for (int k = 0; k < KD; ++k) {
                    const int j = threadIdx.x + ATT_SPLIT_THREADS * k;
                    v[u][k] = i0 + u < nv && j < d ? rp[i0 + u][j] : 0.0f;
                }
#pragma unroll
            for (int u = 0; u < ATT_VROWS; ++u) {
                if (i0 + u >= nv) break;
                const float4 pa = *reinterpret_cast<const float4*>(pt + (i0 + u) * HG);
                const float4 pb = *reinterpret_cast<const float4*>(pt + (i0 + u) * HG + 4);
                const float p[HG] = {pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w};
#pragma unroll
                for (int h = 0; h < HG; ++h)
#pragma unroll
                    for (int k = 0; k < KD; ++k) acc[h][k] = fmaf(p[h], v[u][k], acc[h][k]);
            }
        }
        __syncthreads();
    }
    float* part = reinterpret_cast<float*>(parts[b]);
#pragma unroll
    for (int h = 0; h < HG; ++h)
#pragma unroll
        for (int k = 0; k < KD; ++k) {
            const int j = threadIdx.x + ATT_SPLIT_THREADS * k;
            if (h < hn && j < d) part[((long long)(h0 + h) * splits + s) * d + j] = acc[h][k];
        }
    if (warp < hn && lane == 0) {
        float* ml = part + (long long)heads * splits * d + ((long long)(h0 + warp) * splits + s) * 2;
        ml[0] = m_run;
        ml[1] = l_run;
    }
}

// The runs of attend_split_step added for head h = blockIdx.x of token b = blockIdx.y, in
// split order, with the head's sink logit (mass without value) in the softmax; the output's
// RoPE tail is rotated back by the query's position, since every value row carries its own
// key rotation.
// With q (d a multiple of 32), the head's output also goes out as Q8_0 blocks, for the grouped
// output projection: token b's group h / hpg is activation row b · (heads / hpg) + h / hpg at
// q + row · q_stride, the head its (h % hpg)-th run of d / 32 blocks there.
extern "C" __global__ void __launch_bounds__(ATT_MERGE_THREADS) attend_merge_step(const u64* parts, const float* sinks, float* out, int d, int heads, int splits,
                                            int window, int ratio, int indexed, int top_k, const float* freqs, int n_pairs,
                                            const int* posv, u8* q, long long q_stride, int hpg) {
    DSV4_GRID_ENTRY();
    __shared__ float wts[ATT_MAX_SPLITS];
    __shared__ float inv;
    const int h = blockIdx.x, b = blockIdx.y;
    const long long pos = posv[b];
    bool masked;
    const int n = att_step_rows(pos, window, ratio, indexed, top_k, masked);
    const int per = att_rows_per_split(n, splits), runs = (n + per - 1) / per;
    const float* part = reinterpret_cast<const float*>(parts[b]);
    const float* ml = part + (long long)heads * splits * d + (long long)h * splits * 2;
    if (threadIdx.x < 32) {
        // Lane l holds runs l and l + 32 (ATT_MAX_SPLITS = 64).
        const int lane = threadIdx.x;
        const float sink = sinks[h];
        float m0 = neg_inf(), l0 = 0.0f, m1 = neg_inf(), l1 = 0.0f;
        if (lane < runs) m0 = ml[2 * lane], l0 = ml[2 * lane + 1];
        if (lane + 32 < runs) m1 = ml[2 * lane + 64], l1 = ml[2 * lane + 65];
        const float m = warp_max(fmaxf(sink, fmaxf(m0, m1)));
        const float w0 = lane < runs ? expf(m0 - m) : 0.0f, w1 = lane + 32 < runs ? expf(m1 - m) : 0.0f;
        if (lane < runs) wts[lane] = w0;
        if (lane + 32 < runs) wts[lane + 32] = w1;
        const float den = warp_sum(w0 * l0 + w1 * l1);
        if (lane == 0) inv = 1.0f / (den + expf(sink - m));
    }
    __syncthreads();
    // Thread t: dims 4t .. 4t + 3 (d / 4 <= ATT_MERGE_THREADS), the runs' values loaded
    // eight at a time before they are added (in run order).
    const float4* ph = reinterpret_cast<const float4*>(part + (long long)h * splits * d);
    float* oh = out + ((long long)b * heads + h) * d;
    const int j = threadIdx.x, nj = d / 4;
    if (j < nj) {
        float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int s0 = 0; s0 < runs; s0 += 8) {
            float4 v[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) v[u] = s0 + u < runs ? ph[(long long)(s0 + u) * nj + j] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
            for (int u = 0; u < 8; ++u)
                if (s0 + u < runs) {
                    const float w = wts[s0 + u];
                    a.x = fmaf(w, v[u].x, a.x);
                    a.y = fmaf(w, v[u].y, a.y);
                    a.z = fmaf(w, v[u].z, a.z);
                    a.w = fmaf(w, v[u].w, a.w);
                }
        }
        reinterpret_cast<float4*>(oh)[j] = make_float4(a.x * inv, a.y * inv, a.z * inv, a.w * inv);
    }
    __syncthreads();
    float* tail = oh + d - 2 * n_pairs;
    for (int i = threadIdx.x; i < n_pairs; i += blockDim.x) rope_pair(tail, i, freqs[i], (float)pos, true);
    if (!q) return;
    __syncthreads();
    u8* row = q + ((long long)b * (heads / hpg) + h / hpg) * q_stride + (long long)(h % hpg) * (d / 32) * Q8_0_BYTES;
    for (int k = threadIdx.x >> 5; k < d / 32; k += blockDim.x >> 5) q8_0_warp(oh[k * 32 + (threadIdx.x & 31)], row + k * Q8_0_BYTES);
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
        // Warp i takes key steps i, i + warps, ... The query's fragments are the same for
        // every warp: the block's warps make a share each and exchange them through shared
        // memory (one lane's fragments in a column), where each warp made them all before.
        constexpr int QB = IX_TILES * IX_BLOCKS;
        __shared__ u32 qa[QB * 4][32];
        __shared__ float qs[QB * 2][32];
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, bw = blockDim.x >> 5;
        if ((long long)blockIdx.x * bw * 8 >= n) return;  // no key step for any warp of the block
        IxQuery f;
#pragma unroll
        for (int p = 0; p < QB; ++p)
            if (p % bw == warp) {
                const int mi = p / IX_BLOCKS, bl = p % IX_BLOCKS;
                ix_query_block(q, heads, dim, mi, bl, f);
#pragma unroll
                for (int i = 0; i < 4; ++i) qa[p * 4 + i][lane] = f.a[mi][bl][i];
#pragma unroll
                for (int i = 0; i < 2; ++i) qs[p * 2 + i][lane] = f.sq[mi][bl][i];
            }
        __syncthreads();
#pragma unroll
        for (int p = 0; p < QB; ++p) {
            const int mi = p / IX_BLOCKS, bl = p % IX_BLOCKS;
#pragma unroll
            for (int i = 0; i < 4; ++i) f.a[mi][bl][i] = qa[p * 4 + i][lane];
#pragma unroll
            for (int i = 0; i < 2; ++i) f.sq[mi][bl][i] = qs[p * 2 + i][lane];
        }
        ix_query_weights(w, w_scale, heads, f);
        const long long wi = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
        ix_scores_keys(f, k, 8 * wi, n, 8LL * warps, heads, dim, sc);
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
