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

// |v| with NaN as 0, so a max over it ignores NaN as Rust's f32::max does.
__device__ __forceinline__ float abs_nn(float v) { return v != v ? 0.0f : fabsf(v); }

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

// Nearest E4M3FN value, ties to even, saturating at ±448 (dsv4_quant::fp8::e4m3_round).
__device__ __forceinline__ float e4m3_round(float x) {
    if (x != x) return x;
    const float a = fabsf(x);
    float r;
    if (a >= 448.0f) {
        r = 448.0f;
    } else if (a < 1.0f / 64.0f) {
        r = __fmul_rn(rintf(__fmul_rn(a, 512.0f)), 1.0f / 512.0f);
    } else {
        const u32 bits = __float_as_uint(a);
        r = __uint_as_float((bits + 0x7ffffu + ((bits >> 20) & 1u)) & ~0xfffffu);
    }
    return copysignf(r, x);
}

// Nearest E2M1 value, ties to the even index, saturating at ±6 (dsv4_quant::fp4::e2m1_round).
__device__ __forceinline__ float e2m1_round(float x) {
    if (x != x) return x;
    const float vals[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    const float a = fabsf(x);
    int idx = 0;
#pragma unroll
    for (int k = 0; k < 7; ++k) {
        const float mid = (vals[k] + vals[k + 1]) * 0.5f;
        if (a > mid || (a == mid && ((k + 1) & 1) == 0)) idx = k + 1;
    }
    return copysignf(vals[idx], x);
}

// Round to BF16 (nearest, ties to even), returned as f32; NaN stays NaN.
__device__ __forceinline__ float bf16_round(float x) {
    if (x != x) return x;
    const u32 b = __float_as_uint(x);
    return __uint_as_float((b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u);
}

// The power-of-two scale that brings amax (already floored) to at most `max`.
__device__ __forceinline__ float pow2_scale(float amax, float max) {
    return ldexpf(1.0f, (int)ceilf(log2f(__fdiv_rn(amax, max))));
}

__device__ __forceinline__ float round_trip(float v, float scale, float max, bool fp8) {
    float s = __fdiv_rn(v, scale);
    if (s == s) s = fminf(fmaxf(s, -max), max);
    return __fmul_rn(fp8 ? e4m3_round(s) : e2m1_round(s), scale);
}

// A KV row as the cache stores it, by a block of 64 threads. The first d - rope_dim values go
// through FP8 in blocks of 64 (scale floor 1e-4), then every value is rounded to BF16.
__device__ __forceinline__ void kv_round_row(float* row, int d, int rope_dim, float* shf) {
    const int nope = d - rope_dim;
    for (int c = 0; c < nope; c += 64) {
        const int j = c + threadIdx.x;
        const float v = j < nope ? row[j] : 0.0f;
        const float amax = fmaxf(block_max_f(abs_nn(v), shf), 1e-4f);
        const float scale = pow2_scale(amax, 448.0f);
        if (j < nope) row[j] = round_trip(v, scale, 448.0f, true);
    }
    __syncthreads();
    for (int j = threadIdx.x; j < d; j += blockDim.x) row[j] = bf16_round(row[j]);
}

// One block of 64 threads per row (grid.x = rows, `stride` floats apart).
extern "C" __global__ void kv_round(float* rows, int d, int rope_dim, long long stride) {
    DSV4_GRID_ENTRY();
    __shared__ float shf[32];
    kv_round_row(rows + blockIdx.x * stride, d, rope_dim, shf);
}

// The decode step's kv_round (64 threads) for token b = blockIdx.y of a batch, at position
// pos[b], on its session's `rows[b]`: with ratio 0 the raw-window ring slot pos % window;
// otherwise compressed row (pos + 1) / ratio - 1, and only when pos ends a window (nothing
// else was written).
extern "C" __global__ void kv_round_step(const u64* rowsv, int d, int rope_dim, int window, int ratio, const int* posv) {
    DSV4_GRID_ENTRY();
    __shared__ float shf[32];
    const long long pos = posv[blockIdx.y];
    float* rows = reinterpret_cast<float*>(rowsv[blockIdx.y]);
    if (ratio == 0) {
        kv_round_row(rows + (pos % window) * d, d, rope_dim, shf);
    } else if (pos % ratio == ratio - 1) {
        kv_round_row(rows + ((pos + 1) / ratio - 1) * d, d, rope_dim, shf);
    }
}

// One row of `dim` values by a block of `dim` threads (a power of two from 32 to 1024), `hx`
// shared memory of dim floats: the orthonormal Walsh-Hadamard transform (Sylvester order, the
// CPU's butterflies), then an FP4 round trip per 32 values (one warp each; scale floor
// 6·FLT_MIN).
__device__ __forceinline__ void index_round_row(float* row, int dim, float* hx) {
    const int i = threadIdx.x;
    hx[i] = row[i];
    __syncthreads();
    for (int s = 1; s < dim; s <<= 1) {
        if (i < dim / 2) {
            const int j = (i / s) * 2 * s + i % s;
            const float a = hx[j], b = hx[j + s];
            hx[j] = __fadd_rn(a, b);
            hx[j + s] = __fsub_rn(a, b);
        }
        __syncthreads();
    }
    const float v = __fmul_rn(hx[i], __fdiv_rn(1.0f, sqrtf((float)dim)));
    const float floor = 6.0f * __int_as_float(0x00800000);
    const float amax = fmaxf(warp_max(abs_nn(v)), floor);
    row[i] = round_trip(v, pow2_scale(amax, 6.0f), 6.0f, false);
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
