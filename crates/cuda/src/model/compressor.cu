// The KV compressor of one token (see dsv4_model::compressor): its projection and score join
// the frontier; the token that completes a window pools the frontier into a row, normalises
// and rotates it, and resets the frontier. One block.
//
// Frontier layout: `slots` × width values and scores; ratio 4 (overlapping, two lanes per
// dimension) keeps 2·ratio slots, the previous window's then the current one's; other ratios
// keep `ratio`. An empty slot scores -inf.

#include "dsv4_common.cuh"

__device__ __forceinline__ void comp_push_body(float* fkv, float* fsc, const float* kv, const float* sc,
                                               const float* ape, int ratio, int width, int overlapping,
                                               long long pos, float* row, const float* norm_w, float eps,
                                               const float* freqs, int n_pairs, double* shd) {
    const int pm = (int)(pos % ratio);
    const int slot = overlapping ? ratio + pm : pm;
    for (int j = threadIdx.x; j < width; j += blockDim.x) {
        fkv[slot * width + j] = kv[j];
        fsc[slot * width + j] = sc[j] + ape[pm * width + j];
    }
    if (pm != ratio - 1) return;  // the same for the whole block
    __syncthreads();
    // Row dimension j pools candidates: ratio 4 takes lane A (first half) of the previous
    // window's slots and lane B (second half) of the current window's; others their own column.
    const int d = overlapping ? width / 2 : width;
    const int nc = overlapping ? 2 * ratio : ratio;
    double ss = 0.0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float m = neg_inf();
        for (int t = 0; t < nc; ++t) {
            const int idx = t * width + (overlapping && t >= ratio ? d : 0) + j;
            m = fmaxf(m, fsc[idx]);
        }
        float v = 0.0f;
        if (m != neg_inf()) {
            float num = 0.0f, den = 0.0f;
            for (int t = 0; t < nc; ++t) {
                const int idx = t * width + (overlapping && t >= ratio ? d : 0) + j;
                const float e = expf(fsc[idx] - m);
                num += e * fkv[idx];
                den += e;
            }
            v = num / den;
        }
        row[j] = v;
        ss += (double)v * (double)v;
    }
    // The reduction's barriers also end every read of the frontier before it is shifted below.
    const float s = rms_scale_from(block_sum_d(ss, shd), d, eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x) row[j] = row[j] * s * norm_w[j];
    const int rw = ratio * width;
    if (overlapping) {
        // The current window becomes the previous one.
        for (int i = threadIdx.x; i < rw; i += blockDim.x) {
            fkv[i] = fkv[rw + i];
            fsc[i] = fsc[rw + i];
            fkv[rw + i] = 0.0f;
            fsc[rw + i] = neg_inf();
        }
    } else {
        for (int i = threadIdx.x; i < rw; i += blockDim.x) {
            fkv[i] = 0.0f;
            fsc[i] = neg_inf();
        }
    }
    __syncthreads();
    // The row is rotated to its window's first position.
    float* tail = row + d - 2 * n_pairs;
    for (int i = threadIdx.x; i < n_pairs; i += blockDim.x)
        rope_pair(tail, i, freqs[i], (float)(pos + 1 - ratio), false);
}

extern "C" __global__ void comp_push(float* fkv, float* fsc, const float* kv, const float* sc,
                                     const float* ape, int ratio, int width, int overlapping,
                                     long long pos, float* row, const float* norm_w, float eps,
                                     const float* freqs, int n_pairs) {
    DSV4_GRID_ENTRY();
    __shared__ double shd[32];
    comp_push_body(fkv, fsc, kv, sc, ape, ratio, width, overlapping, pos, row, norm_w, eps, freqs, n_pairs, shd);
}

// The decode step's push into both compressors of a layer for a batch of tokens: block
// (c, b) is compressor c of token b (c = 1, the indexer's, when the layer has one: the b_
// arguments). Token b's projection and score rows are at b · kv_stride of kv and sc, its
// session's frontier and rows come from the tables, and its position is pos[b]. A window's
// last token writes row (pos + 1) / ratio - 1 of `rows`, whose rows hold width / lanes values.
extern "C" __global__ void comp_push_step(const u64* fkvs, const u64* fscs, const float* kv, const float* sc,
                                          const float* ape, int width, const u64* rowss, const float* norm_w,
                                          long long kv_stride,
                                          const u64* b_fkvs, const u64* b_fscs, const float* b_kv, const float* b_sc,
                                          const float* b_ape, int b_width, const u64* b_rowss, const float* b_norm_w,
                                          long long b_kv_stride,
                                          int ratio, int overlapping, float eps, const float* freqs, int n_pairs,
                                          const int* posv) {
    DSV4_GRID_ENTRY();
    __shared__ double shd[32];
    const int b = blockIdx.y;
    const long long pos = posv[b];
    if (blockIdx.x == 1) {
        fkvs = b_fkvs;
        fscs = b_fscs;
        kv = b_kv;
        sc = b_sc;
        ape = b_ape;
        width = b_width;
        rowss = b_rowss;
        norm_w = b_norm_w;
        kv_stride = b_kv_stride;
    }
    const int d = overlapping ? width / 2 : width;
    const long long emitted = (pos + 1) / ratio;
    float* rows = reinterpret_cast<float*>(rowss[b]);
    float* row = rows + (emitted > 0 ? emitted - 1 : 0) * d;  // written only when pos ends a window
    comp_push_body(reinterpret_cast<float*>(fkvs[b]), reinterpret_cast<float*>(fscs[b]), kv + b * kv_stride,
                   sc + b * kv_stride, ape, ratio, width, overlapping, pos, row, norm_w, eps, freqs, n_pairs, shd);
}
