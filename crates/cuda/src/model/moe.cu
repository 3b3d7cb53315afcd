// MoE routing of one token (see dsv4_model::moe): scores sqrt(softplus(logit)); the experts
// come from the hash table row (hash layers) or are the top `used` of score + bias, ties to
// the lower expert id; their weights are scale · score / Σ selected scores. One block: each
// pick is a block-wide argmax over the experts (a max of (key, -id), so the result does not
// depend on the reduction order).

#include "dsv4_common.cuh"

__device__ __forceinline__ float route_score(float z) {
    const float sp = z > 20.0f ? z : (z < -20.0f ? expf(z) : log1pf(expf(z)));
    return sqrtf(sp);
}

// The better of two candidates (higher key, then lower id; id -1 is no candidate).
__device__ __forceinline__ void better(u32& key, int& id, u32 k2, int i2) {
    if (i2 >= 0 && (id < 0 || k2 > key || (k2 == key && i2 < id))) {
        key = k2;
        id = i2;
    }
}

// One block per token (blockIdx.x) of the chunk; hash layers read row toks[t] of hash_table.
// With sel_gu, token t's picks are also written twice to sel_gu + 2·used·t: as they are, then
// plus n_expert (the ids of one launch over a stack of the gate experts then the up experts).
extern "C" __global__ void route(const float* logits, int n_expert, int used, const float* bias,
                                 const int* hash_table, const int* toks, float scale, int* sel,
                                 float* wts, int* sel_gu) {
    DSV4_GRID_ENTRY();
    const int t = blockIdx.x;
    logits += (long long)t * n_expert;
    sel += t * used;
    wts += t * used;
    const int* hash_row = hash_table ? hash_table + (long long)toks[t] * used : nullptr;
    __shared__ u32 wkey[32];
    __shared__ int wid[32];
    __shared__ int chosen[64];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int k = 0; k < used; ++k) {
        if (hash_row) {
            if (threadIdx.x == 0) chosen[k] = hash_row[k];
            continue;
        }
        u32 key = 0;
        int id = -1;
        for (int x = threadIdx.x; x < n_expert; x += blockDim.x) {
            bool taken = false;
            for (int j = 0; j < k; ++j) taken |= chosen[j] == x;
            if (!taken) better(key, id, total_order_key(route_score(logits[x]) + bias[x]), x);
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const u32 k2 = __shfl_xor_sync(DSV4_FULL_MASK, key, off);
            const int i2 = __shfl_xor_sync(DSV4_FULL_MASK, id, off);
            better(key, id, k2, i2);
        }
        if (lane == 0) {
            wkey[warp] = key;
            wid[warp] = id;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < nw; ++w) better(key, id, wkey[w], wid[w]);
            chosen[k] = id;
        }
        __syncthreads();
    }
    if (threadIdx.x != 0) return;
    float sum = 0.0f;
    for (int k = 0; k < used; ++k) sum += route_score(logits[chosen[k]]);
    const float floor = __int_as_float(0x00800000);  // f32::MIN_POSITIVE
    for (int k = 0; k < used; ++k) {
        sel[k] = chosen[k];
        if (sel_gu) {
            sel_gu[2 * used * t + k] = chosen[k];
            sel_gu[2 * used * t + used + k] = chosen[k] + n_expert;
        }
        wts[k] = scale * route_score(logits[chosen[k]]) / fmaxf(sum, floor);
    }
}
