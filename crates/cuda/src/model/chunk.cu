// The order-dependent attention steps of a whole prefill chunk in a few launches (instead of
// several launches per token): the compressors' pooled rows, their frontiers after the
// chunk, attention of every token over its own window and the compressed rows visible at its
// position, and the raw ring after the chunk.
//
// Where the per-token path (attention.cu, compressor.cu) keeps state that each token updates
// in turn, these kernels read what a token would have seen from two places: positions before
// the chunk from the state as it was when the chunk began (ring, frontier), positions inside
// it from the chunk's scratch rows. Every value is computed by the same operations in the same
// order as the per-token kernels, so the two paths agree bit for bit (attend_chunk_mma, the
// official numerics' attention, adds in another order; see there).

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
        if (h < hg) inv[h] = 1.0f / block_softmax_sink(sc + h * ncap, n, sinks[h0 + h], shf);
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

// ---- attend_chunk on the BF16 tensor cores (official numerics) ------------------------------
// Under the official numerics every KV row attention reads (the chunk's, the ring's and the
// compressed ones) is on the BF16 grid (kv_round), so a row value is one exact BF16 operand. A
// query or a softmax weight is f32, taken as three BF16 parts (bf16_split3). Every product is
// then exact; only the additions differ from attend_chunk. The tensor cores add inside an
// MMA with truncation (measured: chaining 96 MMAs into one accumulator left ~8x the f32
// kernel's error), so each 16-value step runs its three parts smallest first into a fresh
// accumulator, and the steps are added in f32 with rounding. The query heads of the one KV head are the M dimension
// of the tiles, 16 a tile and `mt` tiles (1 or 2) a block, so a block reads each row of its
// token twice from L2 (scores, then values) for 16 mt heads, where attend_chunk reads it for 8
// and spends a scalar FMA per head and value.
//
// Within each 16 values of a row's k dimension, lane t loads dims 4t..4t + 3 as one float4:
// they stand for the MMA's k = 2t, 2t + 1, 8 + 2t, 9 + 2t, and the query parts and softmax
// weights are read to match (a dot product does not depend on the order of its k).
//
// grid (ceil(heads / (16 mt)), tokens), ATT_MMA_WARPS warps; heads past `heads` in the last
// block are zero queries whose outputs are dropped. Dynamic shared memory (bytes, see
// GpuModel::attend_mma_smem): 3 x 16 mt x (d / 2 + 8) u32 of query parts, 16 mt x sstride
// floats of scores, then ncap ints of row ids when `masks` is given. d: a multiple of 16, at
// most ATT_MMA_MAX_D.
#define ATT_MMA_WARPS 8
#define ATT_MMA_MAX_D 512
// Score tiles (8 rows each) a warp takes at once in the score pass.
#define ATT_MMA_J 2

template <int MT>
__device__ __forceinline__ void attend_chunk_mma_body(const float* q, long long q_stride, const float* kvn, long long pos0,
                                                      const float* raw, int window, const float* comp, int ratio,
                                                      const u8* masks, long long mstride, int top_k, const float* sinks,
                                                      float* out, int d, const float* freqs, int n_pairs, int heads,
                                                      int ncap, u32* smu, float* inv, int* wsum) {
    constexpr int HG = 16 * MT;
    constexpr int NT = ATT_MMA_MAX_D / 8 / ATT_MMA_WARPS;  // output tiles of 8 columns a warp
    const int h0 = blockIdx.x * HG, t = blockIdx.y;
    const long long pos = pos0 + t;
    const int n_raw = (int)min(pos + 1, (long long)window);
    const int n_comp = ratio > 0 && comp ? (int)((pos + 1) / ratio) : 0;
    const u8* mask = masks && n_comp > top_k ? masks + t * mstride : nullptr;
    const int qstride = d / 2 + 8;                // u32 a query row: 8 more so lane groups g, g + 4 differ in bank
    const int sstride = ((ncap + 31) & ~31) + 16;  // floats a score row: rows g, g + 1 in opposite bank halves
    u32* qp = smu;
    float* sc = reinterpret_cast<float*>(smu + 3 * HG * qstride);
    int* ids = reinterpret_cast<int*>(sc + HG * sstride);
    const int n = mask ? select_rows(mask, n_raw, n_comp, ncap, ids, wsum) : n_raw + n_comp;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
    const long long first = pos + 1 - n_raw;
    const int hn = min(HG, heads - h0);
    const float* qt = q + t * q_stride + (long long)h0 * d;
    const int half = d / 2;
    for (int i = threadIdx.x; i < HG * half; i += blockDim.x) {
        const int h = i / half, c = i - h * half;
        float2 v = make_float2(0.0f, 0.0f);
        if (h < hn) v = *reinterpret_cast<const float2*>(qt + (long long)h * d + 2 * c);
        u32 a[3], b[3];
        bf16_split3(v.x, a);
        bf16_split3(v.y, b);
#pragma unroll
        for (int s = 0; s < 3; ++s) qp[(s * HG + h) * qstride + c] = a[s] | (b[s] << 16);
    }
    __syncthreads();

    // Scores: warp w takes tiles of 8 rows (w J .. w J + J - 1, then every 8 J further on).
    const float scale = 1.0f / sqrtf((float)d);
    const int ntile = (n + 7) >> 3, ksteps = d >> 4;
    for (int tile0 = warp * ATT_MMA_J; tile0 < ntile; tile0 += ATT_MMA_WARPS * ATT_MMA_J) {
        const float* rp[ATT_MMA_J];
#pragma unroll
        for (int j = 0; j < ATT_MMA_J; ++j) {
            const int r = (tile0 + j) * 8 + g;
            rp[j] = r < n ? chunk_kv_row(mask ? ids[r] : r, kvn, pos0, raw, window, first, n_raw, comp, d) + 4 * tq : nullptr;
        }
        float acc[MT][ATT_MMA_J][4];
        zero_acc(acc);
#pragma unroll 4
        for (int kk = 0; kk < ksteps; ++kk) {
            u32 b[ATT_MMA_J][2];
#pragma unroll
            for (int j = 0; j < ATT_MMA_J; ++j) {
                float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                if (rp[j]) v = *reinterpret_cast<const float4*>(rp[j] + 16 * kk);
                b[j][0] = bf16_pack(v.x, v.y);
                b[j][1] = bf16_pack(v.z, v.w);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                float part[ATT_MMA_J][4] = {};
#pragma unroll
                for (int s = 2; s >= 0; --s) {
                    const u32* p = qp + (s * HG + 16 * mt + g) * qstride + 8 * kk + 2 * tq;
                    const uint2 lo = *reinterpret_cast<const uint2*>(p);
                    const uint2 hi = *reinterpret_cast<const uint2*>(p + 8 * qstride);
                    const u32 a[4] = {lo.x, hi.x, lo.y, hi.y};
#pragma unroll
                    for (int j = 0; j < ATT_MMA_J; ++j) mma_bf16(part[j], a, b[j][0], b[j][1]);
                }
#pragma unroll
                for (int j = 0; j < ATT_MMA_J; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[mt][j][e] += part[j][e];
            }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int j = 0; j < ATT_MMA_J; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = (tile0 + j) * 8 + 2 * tq + (e & 1);
                    if (r < n) sc[(16 * mt + g + 8 * (e >> 1)) * sstride + r] = acc[mt][j][e] * scale;
                }
    }
    __syncthreads();

    // Softmax, a warp per head; weights past n (to the next 16) are zeros for the value pass.
    const int npad = (n + 15) & ~15;
    for (int h = warp; h < HG; h += ATT_MMA_WARPS) {
        float* sh = sc + h * sstride;
        if (h >= hn) {
            for (int r = lane; r < npad; r += 32) sh[r] = 0.0f;
            continue;
        }
        const float sink = sinks[h0 + h];
        float m = sink;
        for (int r = lane; r < n; r += 32) m = fmaxf(m, sh[r]);
        m = warp_max(m);
        float den = 0.0f;
        for (int r = lane; r < n; r += 32) {
            const float e = expf(sh[r] - m);
            sh[r] = e;
            den += e;
        }
        for (int r = n + lane; r < npad; r += 32) sh[r] = 0.0f;
        den = warp_sum(den) + expf(sink - m);
        if (lane == 0) inv[h] = 1.0f / den;
    }
    __syncthreads();

    // Values: warp w owns the output columns of tiles w, w + 8, ...; 16 rows a step, lane t
    // reading rows 4t..4t + 3 of its column g.
    const int ntiles = d >> 3;
    float o[MT][NT][4];
    zero_acc(o);
    for (int c0 = 0; c0 < npad; c0 += 16) {
        const float* vr[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = c0 + 4 * tq + i;
            vr[i] = r < n ? chunk_kv_row(mask ? ids[r] : r, kvn, pos0, raw, window, first, n_raw, comp, d) : nullptr;
        }
        u32 a[MT][3][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            const float* p = sc + (16 * mt + g) * sstride + c0 + 4 * tq;
            bf16_a_parts(*reinterpret_cast<const float4*>(p), *reinterpret_cast<const float4*>(p + 8 * sstride), a[mt]);
        }
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            const int tile = warp + ATT_MMA_WARPS * j;
            if (tile < ntiles) {
                const int col = 8 * tile + g;
                float v[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) v[i] = vr[i] ? vr[i][col] : 0.0f;
                const u32 b0 = bf16_pack(v[0], v[1]), b1 = bf16_pack(v[2], v[3]);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                    for (int s = 2; s >= 0; --s) mma_bf16(part, a[mt][s], b0, b1);
#pragma unroll
                    for (int e = 0; e < 4; ++e) o[mt][j][e] += part[e];
                }
            }
        }
    }
    float* ot = out + t * q_stride + (long long)h0 * d;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NT; ++j) {
            const int tile = warp + ATT_MMA_WARPS * j;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int h = 16 * mt + g + 8 * (e >> 1);
                if (tile < ntiles && h < hn) ot[(long long)h * d + 8 * tile + 2 * tq + (e & 1)] = o[mt][j][e] * inv[h];
            }
        }
    __syncthreads();
    for (int i = threadIdx.x; i < hn * n_pairs; i += blockDim.x) {
        const int h = i / n_pairs, k = i - h * n_pairs;
        rope_pair(ot + (long long)h * d + d - 2 * n_pairs, k, freqs[k], (float)pos, true);
    }
}

// mt: query-head tiles of 16 a block (1 or 2), see above.
extern "C" __global__ void __launch_bounds__(ATT_MMA_WARPS * 32)
    attend_chunk_mma(const float* q, long long q_stride, const float* kvn, long long pos0, const float* raw, int window,
                     const float* comp, int ratio, const u8* masks, long long mstride, int top_k, const float* sinks,
                     float* out, int d, const float* freqs, int n_pairs, int heads, int ncap, int mt) {
    DSV4_GRID_ENTRY();
    extern __shared__ __align__(16) u32 smu[];
    __shared__ float inv[32];
    __shared__ int wsum[32];
    if (mt == 2)
        attend_chunk_mma_body<2>(q, q_stride, kvn, pos0, raw, window, comp, ratio, masks, mstride, top_k, sinks, out, d,
                                 freqs, n_pairs, heads, ncap, smu, inv, wsum);
    else
        attend_chunk_mma_body<1>(q, q_stride, kvn, pos0, raw, window, comp, ratio, masks, mstride, top_k, sinks, out, d,
                                 freqs, n_pairs, heads, ncap, smu, inv, wsum);
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
