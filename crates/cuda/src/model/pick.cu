// The decode step's logits reduced for each session's next draw (dsv4_model::pick), where
// they are: a batched step then moves a few kilobytes a session to the host instead of the
// 517 KB row (32 sessions: 16.5 MB a step), and the host scans nothing.
//
// One block per session (blockIdx.x), 1,024 threads. For every want: the maximum (NaNs passed
// over, -inf when nothing else) and the argmax (the first index holding it; 0 when none
// does). For the kept set, the tokens with (l - max) * inv_t >= floor, with their logits, in
// token order, as long as they fit `cap`; the count is written either way, so that the host
// fetches the whole row when they do not. The maximum and the first index are what any order
// of comparison gives; the test is the sampler's, op for op with exactly rounded operations.
//
// Order of the kept pairs: warp w owns tokens [w * span, (w + 1) * span) and walks them 32 at
// a time (coalesced), ranking its lanes' hits with a ballot; the warps' counts are scanned
// once, so two passes over the row and two barriers make the compaction.
//
// wants: per session 3 words, [mode, inv_t bits, floor bits]; mode 0 = the row (only the
// header is made), 1 = the argmax, 2 = the kept set. out: the headers of all `n` sessions
// first, 4 words each [argmax, max bits, kept count, 0], then `cap` (token, logit bits) pairs
// per session.

#include "dsv4_common.cuh"

#define PICK_THREADS 1024
#define PICK_WARPS (PICK_THREADS / DSV4_WARP)
#define WANT_KEPT 2

// Logit i of the row, NaN past `hi` (never kept, never the maximum), and the sampler's test.
__device__ __forceinline__ float logit_or_nan(const float* row, int i, int hi) {
    return i < hi ? row[i] : __int_as_float(0x7fc00000);
}
__device__ __forceinline__ bool kept(float l, float mx, float inv_t, float floor_) {
    return __fmul_rn(__fsub_rn(l, mx), inv_t) >= floor_;
}

extern "C" __global__ void __launch_bounds__(PICK_THREADS)
    reduce_logits(const float* __restrict__ logits, int vocab, const u32* __restrict__ wants, u32* __restrict__ out,
                  int cap) {
    DSV4_GRID_ENTRY();
    const int b = blockIdx.x, n = gridDim.x;
    const float* row = logits + (i64)b * vocab;
    const int lane = threadIdx.x & (DSV4_WARP - 1), warp = threadIdx.x / DSV4_WARP;
    __shared__ float red_f[PICK_WARPS];
    __shared__ int red_i[PICK_WARPS];
    __shared__ int base[PICK_WARPS];

    float mx = neg_inf();
    for (int i = threadIdx.x; i < vocab; i += PICK_THREADS) mx = fmaxf(mx, row[i]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(DSV4_FULL_MASK, mx, off));
    if (lane == 0) red_f[warp] = mx;
    __syncthreads();
    mx = red_f[0];
    for (int w = 1; w < PICK_WARPS; ++w) mx = fmaxf(mx, red_f[w]);

    const u32 mode = wants[3 * b];
    const float inv_t = __uint_as_float(wants[3 * b + 1]), floor_ = __uint_as_float(wants[3 * b + 2]);
    const bool keep = mode == WANT_KEPT;
    const int span = (vocab + PICK_WARPS - 1) / PICK_WARPS;
    const int lo = min(vocab, warp * span), hi = min(vocab, lo + span);
    const unsigned lt = (1u << lane) - 1u;  // lanes below this one

    // The first index holding the maximum, and (kept set) this warp's count.
    int first = vocab, count = 0;
    for (int i0 = lo; i0 < hi; i0 += DSV4_WARP) {
        const int i = i0 + lane;
        const float l = logit_or_nan(row, i, hi);
        if (l == mx) first = min(first, i);
        if (keep) count += __popc(__ballot_sync(DSV4_FULL_MASK, kept(l, mx, inv_t, floor_)));
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) first = min(first, __shfl_xor_sync(DSV4_FULL_MASK, first, off));
    if (lane == 0) {
        red_i[warp] = first;
        base[warp] = count;
    }
    __syncthreads();
    // Every thread scans the 32 warp counts itself (no third barrier).
    int total = 0, mine = 0;
    first = vocab;
    for (int w = 0; w < PICK_WARPS; ++w) {
        if (w == warp) mine = total;
        total += base[w];
        first = min(first, red_i[w]);
    }
    if (threadIdx.x == 0) {
        u32* h = out + 4 * b;
        h[0] = first < vocab ? (u32)first : 0u;
        h[1] = __float_as_uint(mx);
        h[2] = keep ? (u32)total : 0u;
        h[3] = 0u;
    }
    if (!keep || total > cap) return;

    u32* pairs = out + 4 * n + (i64)2 * cap * b;
    int at = mine;
    for (int i0 = lo; i0 < hi; i0 += DSV4_WARP) {
        const int i = i0 + lane;
        const float l = logit_or_nan(row, i, hi);
        const bool k = kept(l, mx, inv_t, floor_);
        const unsigned hits = __ballot_sync(DSV4_FULL_MASK, k);
        if (k) {
            const int j = at + __popc(hits & lt);
            pairs[2 * j] = (u32)i;
            pairs[2 * j + 1] = __float_as_uint(l);
        }
        at += __popc(hits);
    }
}
