// MoE routing of one token (see dsv4_model::moe): scores sqrt(softplus(logit)); the experts
// come from the hash table row (hash layers) or are the top `used` of score + bias, ties to
// the lower expert id; their weights are scale · score / Σ selected scores. One thread: a few
// hundred experts, a handful chosen.

#include "dsv4_common.cuh"

__device__ __forceinline__ float route_score(float z) {
    const float sp = z > 20.0f ? z : (z < -20.0f ? expf(z) : log1pf(expf(z)));
    return sqrtf(sp);
}

extern "C" __global__ void route(const float* logits, int n_expert, int used, const float* bias,
                                 const int* hash_row, float scale, int* sel, float* wts) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    for (int k = 0; k < used; ++k) {
        int best = -1;
        if (hash_row) {
            best = hash_row[k];
        } else {
            u32 best_key = 0;
            for (int x = 0; x < n_expert; ++x) {
                bool taken = false;
                for (int j = 0; j < k; ++j) taken |= sel[j] == x;
                if (taken) continue;
                const u32 key = total_order_key(route_score(logits[x]) + bias[x]);
                if (best < 0 || key > best_key) {
                    best = x;
                    best_key = key;
                }
            }
        }
        sel[k] = best;
    }
    float sum = 0.0f;
    for (int k = 0; k < used; ++k) sum += route_score(logits[sel[k]]);
    const float floor = __int_as_float(0x00800000);  // f32::MIN_POSITIVE
    for (int k = 0; k < used; ++k) wts[k] = scale * route_score(logits[sel[k]]) / fmaxf(sum, floor);
}
