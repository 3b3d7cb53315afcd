// The official numerics (dsv4_model::numerics) on the GPU, bit for bit with the CPU:
// quantized activations (ds4's Q8_0-like blocks and Q8_K) for the quantized-weight products,
// the FP8 round trip of cached KV rows (stored as BF16 values), and the Hadamard + FP4 round
// trip of indexer queries and keys. Every step is an exactly rounded f32 operation (no FMA
// contraction can apply: no product feeds an addition), so only log2f below can differ from
// the CPU's libm, and only when a block's max sits within an ulp of a power of two.

#include "dsv4_common.cuh"

typedef signed char i8;
typedef short i16;

// clamp(round_half_even(v), -128, 127); NaN gives 0 (dsv4_quant's round_to_i8).
__device__ __forceinline__ int round_i8(float v) {
    if (v != v) return 0;
    return (int)rintf(fminf(fmaxf(v, -128.0f), 127.0f));
}

// grid (ceil(nb / warps), tokens), a warp per 32-column block: token t's x (x_stride floats
// apart, nb blocks) into 36-byte blocks (f32 scale amax / 127, then 32 codes), out_stride
// bytes apart per token. (One-warp CTAs made a 256-token chunk tens of thousands of CTAs,
// whose scheduling, not the work, took the time.)
extern "C" __global__ void quant_q8_0(const float* x, long long x_stride, u8* out, long long out_stride, int nb) {
    DSV4_GRID_ENTRY();
    const int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), i = threadIdx.x & 31;
    if (b >= nb) return;
    const float v = x[blockIdx.y * x_stride + b * 32 + i];
    const float amax = warp_max(abs_nn(v));
    const float d = __fdiv_rn(amax, 127.0f);
    const float id = d != 0.0f ? __fdiv_rn(1.0f, d) : 0.0f;
    u8* blk = out + blockIdx.y * out_stride + b * 36;
    blk[4 + i] = (u8)(i8)round_i8(__fmul_rn(v, id));
    if (i == 0) *reinterpret_cast<float*>(blk) = d;
}

// grid (cols / 256, tokens), 256 threads (nb unused: one block per CTA): Q8_K blocks of 292 bytes (f32 d, 256 codes, 16
// i16 sums of 16 codes). The scale comes from the value at the first index of largest |x|,
// sign kept: iscale = -127 / max, d = 1 / iscale; an all-zero block is all zeros.
extern "C" __global__ void quant_q8_k(const float* x, long long x_stride, u8* out, long long out_stride, int nb) {
    (void)nb;
    DSV4_GRID_ENTRY();
    __shared__ float shf[32];
    __shared__ int first;
    __shared__ int qs[256];
    const int b = blockIdx.x, i = threadIdx.x;
    const float* xb = x + blockIdx.y * x_stride + b * 256;
    const float v = xb[i];
    if (i == 0) first = 256;
    const float amax = block_max_f(abs_nn(v), shf);  // its barriers also publish `first`
    u8* blk = out + blockIdx.y * out_stride + b * 292;
    if (amax == 0.0f) {
        blk[4 + i] = 0;
        if (i < 16) reinterpret_cast<i16*>(blk + 260)[i] = 0;
        if (i == 0) *reinterpret_cast<float*>(blk) = 0.0f;
        return;
    }
    if (fabsf(v) == amax) atomicMin(&first, i);  // integer min: order-independent
    __syncthreads();
    const float iscale = __fdiv_rn(-127.0f, xb[first]);
    const int q = round_i8(__fmul_rn(iscale, v));
    qs[i] = q;
    blk[4 + i] = (u8)(i8)q;
    __syncthreads();
    if (i < 16) {
        int s = 0;
        for (int k = 0; k < 16; ++k) s += qs[16 * i + k];
        reinterpret_cast<i16*>(blk + 260)[i] = (i16)s;
    }
    if (i == 0) *reinterpret_cast<float*>(blk) = __fdiv_rn(1.0f, iscale);
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
