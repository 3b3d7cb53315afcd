// MoE routing of one token (see dsv4_model::moe): scores sqrt(softplus(logit)); the experts
// come from the hash table row (hash layers) or are the top `used` of score + bias, ties to
// the lower expert id; their weights are scale · score / Σ selected scores. Each pick is an
// argmax over the experts (a max of (key, -id), so the result does not depend on the
// reduction order). One warp does it all for up to 32 · ROUTE_PER_LANE experts (Flash: 256;
// weights.rs refuses more), the keys computed once and kept in registers, no barrier: the
// decode step waits on this kernel, and a block-wide version spent ~9 µs in its 2 · used
// barriers and recomputed scores. Launched with a block of any size; warps past the first
// leave.

#include "dsv4_common.cuh"

#define ROUTE_PER_LANE 16

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
    __shared__ int chosen[64];
    const int lane = threadIdx.x & 31;
    if (threadIdx.x >= 32) return;
    // Expert lane + 32 i in slot i of this lane; a pick leaves the candidates (id -1).
    u32 keys[ROUTE_PER_LANE];
    int ids[ROUTE_PER_LANE];
#pragma unroll
    for (int i = 0; i < ROUTE_PER_LANE; ++i) {
        const int x = lane + 32 * i;
        const bool live = !hash_row && x < n_expert;
        keys[i] = live ? total_order_key(route_score(logits[x]) + bias[x]) : 0u;
        ids[i] = live ? x : -1;
    }
    // Hash layers: the table row is the choice.
    for (int k = lane; hash_row && k < used; k += 32) chosen[k] = hash_row[k];
    for (int k = 0; !hash_row && k < used; ++k) {
        u32 key = 0;
        int id = -1;
#pragma unroll
        for (int i = 0; i < ROUTE_PER_LANE; ++i) better(key, id, keys[i], ids[i]);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const u32 k2 = __shfl_xor_sync(DSV4_FULL_MASK, key, off);
            const int i2 = __shfl_xor_sync(DSV4_FULL_MASK, id, off);
            better(key, id, k2, i2);
        }
        // Every lane holds the same winner (the order of the comparisons does not matter).
#pragma unroll
        for (int i = 0; i < ROUTE_PER_LANE; ++i)
            if (ids[i] == id) ids[i] = -1;
        if (lane == 0) chosen[k] = id;
    }
    __syncwarp();
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
