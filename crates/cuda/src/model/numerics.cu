// The official numerics (dsv4_model::numerics) on the GPU, bit for bit with the CPU:
// quantized activations (ds4's Q8_0-like blocks and Q8_K) for the quantized-weight products,
// the FP8 round trip of cached KV rows (stored as BF16 values), and the Hadamard + FP4 round
// trip of indexer queries and keys. Every step is an exactly rounded f32 operation (no FMA
// contraction can apply: no product feeds an addition), so only log2f below can differ from
// the CPU's libm, and only when a block's max sits within an ulp of a power of two.

#include "dsv4_common.cuh"

// grid (ceil(nb / warps), tokens), a warp per 32-column block: token t's x (x_stride floats
// apart, nb blocks) into 36-byte blocks (q8_0_warp), out_stride bytes apart per token.
// (One-warp CTAs made a 256-token chunk tens of thousands of CTAs, whose scheduling, not the
// work, took the time.)
extern "C" __global__ void quant_q8_0(const float* x, long long x_stride, u8* out, long long out_stride, int nb) {
    DSV4_GRID_ENTRY();
    const int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), i = threadIdx.x & 31;
    if (b >= nb) return;
    q8_0_warp(x[blockIdx.y * x_stride + b * 32 + i], out + blockIdx.y * out_stride + b * Q8_0_BYTES);
}

// grid (cols / 256, tokens), 256 threads (nb unused: one block per CTA): Q8_K blocks of 292
// bytes (q8_k_block).
extern "C" __global__ void quant_q8_k(const float* x, long long x_stride, u8* out, long long out_stride, int nb) {
    (void)nb;
    DSV4_GRID_ENTRY();
    __shared__ Q8kShared sh;
    const int b = blockIdx.x;
    q8_k_block(x[blockIdx.y * x_stride + b * 256 + threadIdx.x], out + blockIdx.y * out_stride + b * Q8_K_BYTES, sh);
}

// The FP8 / FP4 / BF16 roundings and the KV and indexer row round trips are in
// dsv4_common.cuh: the decode step's rope_qkv_step applies them too.

// One block of 64 threads per row (grid.x = rows, `stride` floats apart).
extern "C" __global__ void kv_round(float* rows, int d, int rope_dim, long long stride) {
    DSV4_GRID_ENTRY();
    kv_round_row(rows + blockIdx.x * stride, d, rope_dim);
}

// The decode step's kv_round (64 threads) for token b = blockIdx.y of a batch, at position
// pos[b], on its session's `rows[b]`: with ratio 0 the raw-window ring slot pos % window;
// otherwise compressed row (pos + 1) / ratio - 1, and only when pos ends a window (nothing
// else was written).
extern "C" __global__ void kv_round_step(const u64* rowsv, int d, int rope_dim, int window, int ratio, const int* posv) {
    DSV4_GRID_ENTRY();
    const long long pos = posv[blockIdx.y];
    float* rows = reinterpret_cast<float*>(rowsv[blockIdx.y]);
    if (ratio == 0) {
        kv_round_row(rows + (pos % window) * d, d, rope_dim);
    } else if (pos % ratio == ratio - 1) {
        kv_round_row(rows + ((pos + 1) / ratio - 1) * d, d, rope_dim);
    }
}

// One block of `dim` threads per row (grid.x = rows, `stride` floats apart).
extern "C" __global__ void index_round(float* rows, int dim, long long stride) {
    DSV4_GRID_ENTRY();
    extern __shared__ float hx[];
    index_round_row(rows + blockIdx.x * stride, dim, hx);
}

// The decode step's index_round of the indexer row that position pos[b] emits (b =
// blockIdx.y), when it ends a window of `ratio` (row (pos + 1) / ratio - 1 of `rows[b]`).
extern "C" __global__ void index_round_step(const u64* rowsv, int dim, int ratio, const int* posv) {
    DSV4_GRID_ENTRY();
    extern __shared__ float hx[];
    const long long pos = posv[blockIdx.y];
    if (pos % ratio != ratio - 1) return;
    float* rows = reinterpret_cast<float*>(rowsv[blockIdx.y]);
    index_round_row(rows + ((pos + 1) / ratio - 1) * dim, dim, hx);
}
