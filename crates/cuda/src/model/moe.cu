// MoE routing of one token (see dsv4_model::moe): scores sqrt(softplus(logit)); the experts
// come from the hash table row (hash layers) or are the top `used` of score + bias, ties to
// the lower expert id; their weights are scale · score / Σ selected scores, the sum in pick
// order. The decode step waits on this kernel, so it is built for latency: each thread scores
// its experts at once, then ranks each of them against every expert in shared memory (the
// number of experts ahead of it in (key, −id) order, a strict total order, so every rank is
// unique and the result does not depend on timing), and the expert of rank k < used is pick
// k. One barrier between the two. (One warp walking 16 experts a lane through `used` rounds
// of arg-max took ~14 µs a layer on an H200.)

#include "dsv4_common.cuh"

// Block of route (weights.rs ROUTE_THREADS) and the most experts it takes (ROUTE_MAX_EXPERTS)
// and picks (ROUTE_MAX_USED).
#define ROUTE_THREADS 256
#define ROUTE_MAX_EXPERTS 512
#define ROUTE_MAX_USED 64

__device__ __forceinline__ float route_score(float z) {
    const float sp = z > 20.0f ? z : (z < -20.0f ? expf(z) : log1pf(expf(z)));
    return sqrtf(sp);
}

// The order of the candidates as one 64-bit number: the key above the complemented id, so a
// larger number is a higher key, then a lower id.
__device__ __forceinline__ u64 route_order(u32 key, int id) {
    return ((u64)key << 32) | (u32)~(u32)id;
}

// One block of ROUTE_THREADS per token (blockIdx.x) of the chunk; hash layers read row toks[t]
// of hash_table. With sel_gu, token t's picks are also written twice to sel_gu + 2·used·t: as
// they are, then plus n_expert (the ids of one launch over a stack of the gate experts then
// the up experts).
extern "C" __global__ void __launch_bounds__(ROUTE_THREADS) route(const float* logits, int n_expert, int used,
                                                                  const float* bias, const int* hash_table,
                                                                  const int* toks, float scale, int* sel, float* wts,
                                                                  int* sel_gu) {
    DSV4_GRID_ENTRY();
    const int t = blockIdx.x;
    logits += (long long)t * n_expert;
    sel += t * used;
    wts += t * used;
    const int* hash_row = hash_table ? hash_table + (long long)toks[t] * used : nullptr;
    __shared__ u64 order[ROUTE_MAX_EXPERTS];
    __shared__ float score[ROUTE_MAX_EXPERTS];
    __shared__ int chosen[ROUTE_MAX_USED];
    __shared__ float picked[ROUTE_MAX_USED];
    if (hash_row) {
        // Hash layers: the table row is the choice.
        for (int k = threadIdx.x; k < used; k += blockDim.x) chosen[k] = hash_row[k];
    } else {
        for (int x = threadIdx.x; x < n_expert; x += blockDim.x) {
            const float sc = route_score(logits[x]);
            score[x] = sc;
            order[x] = route_order(total_order_key(sc + bias[x]), x);
        }
        __syncthreads();
        for (int x = threadIdx.x; x < n_expert; x += blockDim.x) {
            const u64 mine = order[x];
            // Two counters over alternate experts: half the dependent adds.
            int r0 = 0, r1 = 0, y = 0;
            for (; y + 1 < n_expert; y += 2) {
                r0 += order[y] > mine;
                r1 += order[y + 1] > mine;
            }
            if (y < n_expert) r0 += order[y] > mine;
            const int rank = r0 + r1;
            if (rank < used) chosen[rank] = x;
        }
    }
    __syncthreads();
    // Top-k layers scored every expert above; hash layers score only their picks.
    for (int k = threadIdx.x; k < used; k += blockDim.x)
        picked[k] = hash_row ? route_score(logits[chosen[k]]) : score[chosen[k]];
    __syncthreads();
    if (threadIdx.x >= 32) return;
    // The sum in pick order on every lane of the first warp, then one pick a lane.
    float sum = 0.0f;
    for (int k = 0; k < used; ++k) sum += picked[k];
    const float floor = __int_as_float(0x00800000);  // f32::MIN_POSITIVE
    for (int k = threadIdx.x; k < used; k += 32) {
        sel[k] = chosen[k];
        if (sel_gu) {
            sel_gu[2 * used * t + k] = chosen[k];
            sel_gu[2 * used * t + used + k] = chosen[k] + n_expert;
        }
        wts[k] = scale * picked[k] / fmaxf(sum, floor);
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
