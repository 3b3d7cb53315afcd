// Several tokens' official Q8_0 products on the int8 tensor cores, each token getting the
// bits of its one-token product (matvec.cu's mv_quant, official numerics, split `ks`), so a
// batched decode step can use them without changing any session's logits.
//
// The one-token order, for row r: warp slice k of ks takes the 1024-column steps k, k + ks,
// ...; lane l of it adds, step by step from 0.f, the share of block s·32 + l
// (fmul(fmul(d_w, d_x), (f32) isum), dq_apply); the 32 lane sums meet in a butterfly (lane l
// with l ^ 16, then ^ 8, ^ 4, ^ 2, ^ 1); with ks > 1 the slices' sums are added in slice
// order to 0.f. The butterfly is the pairwise tree over the lanes taken in bit-reversed order
// (l and l ^ 16 are neighbours there, and so on up), so a thread that sees the lanes in that
// order can build it with a stack of 6, one level per tree height.
//
// Here a CTA owns 16 rows and 16 tokens (two m16n8k32 column tiles), one warp per slice. For
// each lane position l in bit-reversed order, a warp forms lane l's chain over its slice's
// steps: one MMA per block and column tile gives the block's exact integer sums for 16 rows x
// 8 tokens (thread: rows g, g + 8 and tokens 2t, 2t + 1 of the tile), and the thread applies
// dq_apply's two multiplies and the add; then it folds the chain into its stack. The slices'
// sums meet in shared memory and the first warp adds them in slice order. Weights and
// activations are read straight from global memory: a row tile's step (16 x 1,088 bytes)
// stays in L1 while the warp walks its 32 lane positions.
//
// Grid: (ceil(rows / 16), ceil(n / 16)) CTAs of 32 * ks threads (ks in 1, 2, 4, 8). X holds
// each token's Q8_0-like activation blocks (36 bytes: f32 d, 32 int8) x_stride bytes apart
// (4-byte aligned); Y[t * y_stride + r]. W rows are GGUF Q8_0 (34-byte blocks, 2-byte aligned).

#include "dsv4_common.cuh"

#define MMQ_MAX_SPLIT 8

__device__ __forceinline__ u32 mmq_u16(const u8* p) { return *reinterpret_cast<const u16*>(p); }
// A 4-byte word at a 2-byte aligned address.
__device__ __forceinline__ u32 mmq_u32_a2(const u8* p) { return mmq_u16(p) | (mmq_u16(p + 2) << 16); }

extern "C" __global__ void __launch_bounds__(32 * MMQ_MAX_SPLIT)
    mmq_q8_0(const u8* __restrict__ W, i64 row_bytes, int rows, int cols, const u8* __restrict__ X, i64 x_stride,
             float* __restrict__ Y, i64 y_stride, int n, int ks) {
    __shared__ float part[MMQ_MAX_SPLIT][32][8];
    DSV4_GRID_ENTRY();
    const int lane = threadIdx.x & 31, k = threadIdx.x >> 5;
    const int g = lane >> 2, tq = lane & 3;
    const int nsub = cols / 32, nsteps = max(1, (nsub + 31) / 32);
    // The thread's fragment rows g and g + 8 (clamped for loads; never written past the end).
    const int r0 = blockIdx.x * 16 + g, r1 = r0 + 8, t0 = blockIdx.y * 16;
    const u8* w0 = W + (i64)min(r0, rows - 1) * row_bytes;
    const u8* w1 = W + (i64)min(r1, rows - 1) * row_bytes;
    // Column tile h: B column g is token t0 + 8h + g; the thread's outputs are tokens
    // t0 + 8h + 2tq and + 1 (clamped for loads).
    const u8* xb[2];
    const u8* xs[2][2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        xb[h] = X + (i64)min(t0 + 8 * h + g, n - 1) * x_stride;
        xs[h][0] = X + (i64)min(t0 + 8 * h + 2 * tq, n - 1) * x_stride;
        xs[h][1] = X + (i64)min(t0 + 8 * h + 2 * tq + 1, n - 1) * x_stride;
    }
    // Output e of tile h (index 4h + e): row (e >> 1 ? r1 : r0), token t0 + 8h + 2tq + (e & 1).
    float stk[6][8];
#pragma unroll
    for (int i = 0; i < 32; ++i) {
        const int l = (int)(__brev((u32)i) >> 27);
        float ch[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) ch[e] = 0.f;
        for (int s = k; s < nsteps; s += ks) {
            const int b = s * 32 + l;
            if (b >= nsub) break;
            const u8* p0 = w0 + (i64)b * 34;
            const u8* p1 = w1 + (i64)b * 34;
            const u32 a[4] = {mmq_u32_a2(p0 + 2 + 4 * tq), mmq_u32_a2(p1 + 2 + 4 * tq), mmq_u32_a2(p0 + 18 + 4 * tq),
                              mmq_u32_a2(p1 + 18 + 4 * tq)};
            const float dw[2] = {f16_to_f32((u16)mmq_u16(p0)), f16_to_f32((u16)mmq_u16(p1))};
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const u8* q = xb[h] + (i64)b * 36 + 4 + 4 * tq;
                int d[4] = {0, 0, 0, 0};
                mma_k32(d, a, *reinterpret_cast<const u32*>(q), *reinterpret_cast<const u32*>(q + 16));
                const float dx[2] = {*reinterpret_cast<const float*>(xs[h][0] + (i64)b * 36),
                                     *reinterpret_cast<const float*>(xs[h][1] + (i64)b * 36)};
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    ch[4 * h + e] = __fadd_rn(ch[4 * h + e], __fmul_rn(__fmul_rn(dw[e >> 1], dx[e & 1]), (float)d[e]));
            }
        }
        // Leaf i into the pairwise tree: merge while the levels below are complete.
        int lvl = 0;
#pragma unroll
        for (int z = 0; z < 5; ++z) {
            if (((i >> z) & 1) == 0) break;
#pragma unroll
            for (int e = 0; e < 8; ++e) ch[e] = __fadd_rn(stk[z][e], ch[e]);
            lvl = z + 1;
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) {
#pragma unroll
            for (int z = 0; z < 6; ++z)
                if (z == lvl) stk[z][e] = ch[e];
        }
    }
    // stk[5]: this slice's butterfly sum; with several slices, their sums added in slice
    // order to 0.f by the first warp.
    float tot[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) tot[e] = stk[5][e];
    if (ks > 1) {
#pragma unroll
        for (int e = 0; e < 8; ++e) part[k][lane][e] = tot[e];
        __syncthreads();
        if (k != 0) return;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            float v = 0.f;
            for (int kk = 0; kk < ks; ++kk) v = __fadd_rn(v, part[kk][lane][e]);
            tot[e] = v;
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = (e >> 1) ? r1 : r0, t = t0 + 8 * h + 2 * tq + (e & 1);
            if (r < rows && t < n) Y[(i64)t * y_stride + r] = tot[4 * h + e];
        }
    }
}
