// Small utility kernels.

#include "dsv4_common.cuh"

// Keeps one thread busy for `cycles` SM clocks. Benchmarks launch it first so that the
// kernels queued behind it start back to back, without host launch latency in the timing.
extern "C" __global__ void dsv4_spin(long long cycles) {
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
}

// Tensor-core ceilings for the benches (copy_bench --mma): the rate `mma.sync`, the instruction
// of the prefill tiles and of mmq, reaches when nothing else competes for the SM. Each warp
// issues `iters` rounds of 8 independent MMAs (8 accumulators, so no MMA waits on the one
// before it); the sums are stored at the end so that none of them can be elided. Operand
// values do not change the rate; they only need to differ between lanes.
extern "C" __global__ void __launch_bounds__(256) mma_peak_s8(int iters, int* out) {
    const u32 a0 = threadIdx.x * 0x01010101u, a1 = a0 ^ 0x5a5a5a5au, a2 = a0 + 0x03030303u, a3 = a0 ^ 0x33333333u;
    const u32 b0 = (blockIdx.x + 1) * 0x9e3779b9u, b1 = b0 ^ threadIdx.x;
    int c[8][4];
#pragma unroll
    for (int k = 0; k < 8; ++k) c[k][0] = c[k][1] = c[k][2] = c[k][3] = k;
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int k = 0; k < 8; ++k)
            asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                         : "+r"(c[k][0]), "+r"(c[k][1]), "+r"(c[k][2]), "+r"(c[k][3])
                         : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    int s = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) s += c[k][0] ^ c[k][1] ^ c[k][2] ^ c[k][3];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

extern "C" __global__ void __launch_bounds__(256) mma_peak_bf16(int iters, float* out) {
    // BF16 pairs near 1 (0x3f80 = 1.0, low mantissa bits from the lane), so the f32 sums grow
    // slowly and stay finite.
    const u32 a0 = 0x3f803f80u | (threadIdx.x & 7u) | ((threadIdx.x & 7u) << 16), a1 = a0 ^ 0x00010001u, a2 = a0 ^ 0x00020002u, a3 = a0 ^ 0x00030003u;
    const u32 b0 = 0x3f803f80u | (blockIdx.x & 7u), b1 = b0 ^ 0x00040000u;
    float c[8][4];
#pragma unroll
    for (int k = 0; k < 8; ++k) c[k][0] = c[k][1] = c[k][2] = c[k][3] = 0.f;
    for (int i = 0; i < iters; ++i) {
#pragma unroll
        for (int k = 0; k < 8; ++k)
            asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                         : "+f"(c[k][0]), "+f"(c[k][1]), "+f"(c[k][2]), "+f"(c[k][3])
                         : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    }
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) s += c[k][0] + c[k][1] + c[k][2] + c[k][3];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
