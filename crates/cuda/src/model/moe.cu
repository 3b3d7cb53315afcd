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

// The routed picks of a decode step grouped by expert, for the grouped expert products
// (matvec.cu's mvg[q]_<type>_g4_n4): each expert's weights are then read once for up to NT of
// its picks instead of once per pick. sel holds `picks` expert ids (pick j = t · used + k);
// `table` gets entries [expert, count, NT pick indices] by expert id, each expert's picks in
// order, then entries with expert -1 up to `picks` (the launch's grid covers every pick being
// its own entry: the count is known only here). With table_gu, the same entries for the gate
// and up experts of the stacked pair, as route's sel_gu numbers them (gate e, pick
// t · 2·used + k; up e + n_expert, pick t · 2·used + used + k): gate entries first, then up,
// then -1 up to 2 · picks. One block; the ranks within an expert come from one warp walking
// the picks in order (match_any within each 32), so the tables do not depend on timing.
// Dynamic shared memory: (picks + 2 · n_expert + 1) ints.
extern "C" __global__ void group_picks(const int* sel, int picks, int used, int n_expert, int* table, int* table_gu) {
    DSV4_GRID_ENTRY();
    constexpr int NT = 4, W = 2 + NT;
    extern __shared__ int gp_smem[];
    int* pos = gp_smem;               // pick j's rank among its expert's picks (-1: no expert)
    int* cnt = pos + picks;           // picks per expert
    int* start = cnt + n_expert;      // first entry per expert, then the entry count
    const int lane = threadIdx.x & 31;
    for (int e = threadIdx.x; e < n_expert; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    if (threadIdx.x < 32) {
        const u32 below = (1u << lane) - 1u;
        for (int base = 0; base < picks; base += 32) {
            const int j = base + lane;
            const int e = j < picks ? sel[j] : -1;
            const bool ok = e >= 0 && e < n_expert;
            const u32 same = __match_any_sync(DSV4_FULL_MASK, ok ? e : -1);
            const int before = ok ? cnt[e] : 0;
            __syncwarp();
            if (j < picks) pos[j] = ok ? before + __popc(same & below) : -1;
            if (ok && (same & below) == 0) cnt[e] = before + __popc(same);
            __syncwarp();
        }
        // Entries per expert, scanned: lane l sums experts [l·per, (l+1)·per).
        const int per = (n_expert + 31) / 32;
        int mine = 0;
        for (int e = lane * per; e < min(n_expert, (lane + 1) * per); ++e) mine += (cnt[e] + NT - 1) / NT;
        const int incl = warp_incl_scan(mine, lane);
        int run = incl - mine;
        for (int e = lane * per; e < min(n_expert, (lane + 1) * per); ++e) {
            start[e] = run;
            run += (cnt[e] + NT - 1) / NT;
        }
        if (lane == 31) start[n_expert] = incl;
    }
    __syncthreads();
    const int entries = start[n_expert];
    for (int j = threadIdx.x; j < picks; j += blockDim.x) {
        const int q = pos[j];
        if (q < 0) continue;
        const int e = sel[j];
        const int ent = start[e] + q / NT, k = q % NT;
        table[ent * W + 2 + k] = j;
        if (table_gu) {
            const int g = (j / used) * 2 * used + j % used;
            table_gu[ent * W + 2 + k] = g;
            table_gu[(entries + ent) * W + 2 + k] = g + used;
        }
        if (k == 0) {
            const int c = min(NT, cnt[e] - q);
            table[ent * W] = e;
            table[ent * W + 1] = c;
            for (int i = c; i < NT; ++i) table[ent * W + 2 + i] = -1;
            if (table_gu) {
                table_gu[ent * W] = e;
                table_gu[ent * W + 1] = c;
                table_gu[(entries + ent) * W] = e + n_expert;
                table_gu[(entries + ent) * W + 1] = c;
                for (int i = c; i < NT; ++i) table_gu[ent * W + 2 + i] = table_gu[(entries + ent) * W + 2 + i] = -1;
            }
        }
    }
    // The rest of the grid's entries skip.
    for (int ent = entries + threadIdx.x; ent < picks; ent += blockDim.x) {
        table[ent * W] = -1;
        table[ent * W + 1] = 0;
    }
    for (int ent = 2 * entries + threadIdx.x; table_gu && ent < 2 * picks; ent += blockDim.x) {
        table_gu[ent * W] = -1;
        table_gu[ent * W + 1] = 0;
    }
}
