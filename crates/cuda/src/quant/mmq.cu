// Several tokens' official Q8_0 products on the int8 tensor cores, each token getting the
// bits of its one-token product (matvec.cu's mv_quant, official numerics, split `ks`), so a
// batched decode step can use them without changing any session's logits.
//
// The one-token order, for row r: warp slice k of ks takes the 1024-column steps k, k + ks,
// ...; lane l of it adds, step by step from 0.f, the share of block s·32 + l
// (fmul(fmul(d_w, d_x), (f32) isum), dq_apply); the 32 lane sums meet in a butterfly (lane l
// with l ^ 16, then ^ 8, ^ 4, ^ 2, ^ 1); with ks > 1 the slices' sums are added in slice
// order to 0.f. The butterfly is the pairwise tree over the lanes taken in bit-reversed order
// i (lane l = brev5(i); l and l ^ 16 are neighbours there, and so on up). Float addition
// commutes, so only that tree's shape matters.
//
// Here a tile is 16·nrs rows (nrs row subtiles) and each CTA walks its tiles (blockIdx.x,
// + gridDim.x, ...) for 16·ntt tokens (ntt token subtiles, from blockIdx.y). A tile's steps
// stream through shared memory in slice order (a ring of `stages` buffers filled with
// cp.async, one step of the tile's rows and tokens each), so every weight byte is read from
// memory once per CTA. A CTA has 4 warps per (row subtile, token subtile): warp q of them
// keeps the chains of the 8 lane positions i = 8q .. 8q + 7 (lane l = 4·brev3(j) + brev2(q)
// for i = 8q + j) across the slice's steps: for each block one m16n8k32 MMA per 8 tokens
// gives its exact integer sums, and the thread (rows g, g + 8; tokens 2t, 2t + 1 of each 8)
// applies dq_apply's two multiplies and the add. At the slice's end each warp folds its 8
// chains (the tree's lowest three levels), the first warp of the four adds the four subtrees
// (the top two) and adds the slice's sum into the token's total in slice order.
//
// Shared rows are padded (W 1,104 bytes, X 1,168) so that the 8 row (token) groups of a
// fragment read fall in different banks. Grid: (CTAs, ceil(n / (16·ntt)), matrices),
// 128·nrs·ntt threads, dynamic shared memory as `run_mmq_stack_raw` sizes it; a buffer holds
// xr token rows (a multiple of 8 up to 16·ntt: a warp skips its second 8 tokens where they
// are not there, as in a batch of 8). Matrix z is W + z·w_gstride bytes, its inputs
// X + z·x_gstep bytes and its outputs Y + z·y_gstep floats. X holds each token's Q8_0-like
// activation blocks (36 bytes: f32 d, 32 int8) x_stride bytes apart; Y[t * y_stride + r]. W
// rows are GGUF Q8_0 (34-byte blocks). With `a16` (W, its rows, X, x_stride and x_gstep
// 16-byte aligned; then every step's bytes are whole 16-byte chunks) the copies are
// cp.async, else plain 2- and 4-byte loads.

#include "dsv4_common.cuh"

#define MMQ_WP 1104
#define MMQ_XP 1168

__device__ __forceinline__ float lds_f32(const u8* p) { return *reinterpret_cast<const float*>(p); }

// mma_k32 without `volatile`: a pure function of its inputs, which the compiler may then
// schedule among the shared loads and float work of the other lane positions.
__device__ __forceinline__ void mmq_mma(int (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Step s of tile `tile` (blocks s·32 .. s·32 + nb - 1) into one ring buffer: a warp a row
// (the tile's weight rows, then its tokens' activation rows), its lanes along the row, so no
// thread divides to find its row and a warp's copies are contiguous.
__device__ __forceinline__ void mmq_load(u8* wsm, u8* xsm, const u8* __restrict__ W, i64 row_bytes, int rows,
                                         const u8* __restrict__ X, i64 x_stride, int n, int t0, int tile, int s,
                                         int nb, int nrs, int xr, bool a16) {
    const int rt = 16 * nrs, tt = min(xr, n - t0);
    const int lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    // Bytes a row of the step, in copy units (16 bytes, or 2 and 4 without a16).
    const int uw = a16 ? 16 : 2, ux = a16 ? 16 : 4;
    const int cw = nb * 34 / uw, cx = nb * Q8_0_BYTES / ux;
    for (int j = threadIdx.x >> 5; j < rt + tt; j += nw) {
        const bool wrow = j < rt;
        // Step s starts 32 blocks (1,024 columns) per step into the row.
        const u8* src = wrow ? W + (i64)min(tile * rt + j, rows - 1) * row_bytes + (i64)s * (32 * 34)
                             : X + (i64)(t0 + j - rt) * x_stride + (i64)s * (32 * Q8_0_BYTES);
        u8* dst = wrow ? wsm + j * MMQ_WP : xsm + (j - rt) * MMQ_XP;
        const int units = wrow ? cw : cx;
        if (a16) {
            for (int c = lane; c < units; c += 32) cp_async_16(smem_addr(dst + 16 * c), src + 16 * c);
        } else if (wrow) {
            for (int c = lane; c < units; c += 32)
                reinterpret_cast<u16*>(dst)[c] = reinterpret_cast<const u16*>(src)[c];
        } else {
            for (int c = lane; c < units; c += 32)
                reinterpret_cast<u32*>(dst)[c] = reinterpret_cast<const u32*>(src)[c];
        }
    }
}

// One buffered step for this warp: its 8 lane positions' blocks (l = 4·brev3(j) + lq) into
// their chains ch[j], for the first 8 tokens of the warp's subtile, and with TWO the second 8.
// FULL: all 32 blocks of the step are there (else only those under nb).
template <bool TWO, bool FULL>
__device__ __forceinline__ void mmq_blocks(float (&ch)[8][8], const u8* w0, const u8* xg, const u8* xt, int lq, int tq,
                                           int nb) {
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int l = 4 * (((j & 1) << 2) | (j & 2) | (j >> 2)) + lq;
        if (!FULL && l >= nb) continue;
        const u8* p0 = w0 + 34 * l;
        const u8* p1 = p0 + 8 * MMQ_WP;
        const u32 a[4] = {lds_u32_a2(p0 + 2 + 4 * tq), lds_u32_a2(p1 + 2 + 4 * tq), lds_u32_a2(p0 + 18 + 4 * tq),
                          lds_u32_a2(p1 + 18 + 4 * tq)};
        const float dw[2] = {f16_to_f32(lds_u16(p0)), f16_to_f32(lds_u16(p1))};
#pragma unroll
        for (int h = 0; h < (TWO ? 2 : 1); ++h) {
            const u8* qb = xg + 8 * h * MMQ_XP + Q8_0_BYTES * l + 4 + 4 * tq;
            int d[4] = {0, 0, 0, 0};
            mmq_mma(d, a, lds_u32(qb), lds_u32(qb + 16));
            const u8* xd = xt + 8 * h * MMQ_XP + Q8_0_BYTES * l;
            const float dx[2] = {lds_f32(xd), lds_f32(xd + MMQ_XP)};
#pragma unroll
            for (int e = 0; e < 4; ++e)
                ch[j][4 * h + e] = __fadd_rn(ch[j][4 * h + e], __fmul_rn(__fmul_rn(dw[e >> 1], dx[e & 1]), (float)d[e]));
        }
    }
}

// The next (tile, slice, step) of this CTA's walk: a tile's slices in order, each slice's
// steps k, k + ks, ...
struct MmqCursor {
    int tile, k, s;
    __device__ __forceinline__ void advance(int ks, int nsteps) {
        s += ks;
        if (s >= nsteps) {
            if (++k >= ks) {
                k = 0;
                tile += gridDim.x;
            }
            s = k;
        }
    }
};

extern "C" __global__ void __launch_bounds__(512, 1)
    mmq_q8_0(const u8* __restrict__ W, i64 row_bytes, int rows, int cols, const u8* __restrict__ X, i64 x_stride,
             float* __restrict__ Y, i64 y_stride, int n, int ks, int nrs, int xr, int stages, int a16,
             i64 w_gstride, i64 x_gstep, i64 y_gstep) {
    extern __shared__ __align__(16) u8 mmq_sm[];
    DSV4_GRID_ENTRY();
    W += blockIdx.z * w_gstride;
    X += blockIdx.z * x_gstep;
    Y += blockIdx.z * y_gstep;
    const int ntt = blockDim.x / (128 * nrs);
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int q = w & 3, ts = (w >> 2) % ntt, rs = (w >> 2) / ntt;
    const int g = lane >> 2, tq = lane & 3;
    const int nsub = cols / 32, nsteps = max(1, (nsub + 31) / 32);
    const int rt = 16 * nrs, ntiles = (rows + rt - 1) / rt, t0 = blockIdx.y * 16 * ntt;
    const int stage_bytes = rt * MMQ_WP + xr * MMQ_XP;
    // Whether this warp's second 8 tokens exist (in shared memory and in the batch).
    const bool two = ts * 16 + 16 <= xr && t0 + ts * 16 + 8 < n;
    float* part = reinterpret_cast<float*>(mmq_sm + stages * stage_bytes);
    // This warp's lane positions: l_j = 4·brev3(j) + brev2(q).
    const int lq = ((q & 1) << 1) | (q >> 1);

    MmqCursor pc{(int)blockIdx.x, 0, 0}, cc = pc;
    for (int st = 0; st + 1 < stages; ++st) {
        if (pc.tile < ntiles) {
            u8* sb = mmq_sm + st * stage_bytes;
            mmq_load(sb, sb + rt * MMQ_WP, W, row_bytes, rows, X, x_stride, n, t0, pc.tile, pc.s,
                     min(32, nsub - 32 * pc.s), nrs, xr, a16);
            pc.advance(ks, nsteps);
        }
        cp_async_commit();
    }
    float ch[8][8], tot[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) tot[e] = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 8; ++e) ch[j][e] = 0.f;

    for (int it = 0; cc.tile < ntiles; ++it) {
        if (pc.tile < ntiles) {
            u8* sb = mmq_sm + ((it + stages - 1) % stages) * stage_bytes;
            mmq_load(sb, sb + rt * MMQ_WP, W, row_bytes, rows, X, x_stride, n, t0, pc.tile, pc.s,
                     min(32, nsub - 32 * pc.s), nrs, xr, a16);
            pc.advance(ks, nsteps);
        }
        cp_async_commit();
        if (stages == 2) cp_async_wait<1>();
        else if (stages == 3) cp_async_wait<2>();
        else cp_async_wait<3>();
        __syncthreads();

        const u8* wsm = mmq_sm + (it % stages) * stage_bytes;
        const u8* xsm = wsm + rt * MMQ_WP;
        const int nb = min(32, nsub - 32 * cc.s);
        const u8* w0 = wsm + (rs * 16 + g) * MMQ_WP;
        const u8* xg = xsm + (ts * 16 + g) * MMQ_XP;
        const u8* xt = xsm + (ts * 16 + 2 * tq) * MMQ_XP;
        // Branch-free bodies for whole steps, so the 8 lane positions' loads and MMAs can
        // overlap; the partial last step of a row checks each block.
        if (nb == 32) {
            if (two) mmq_blocks<true, true>(ch, w0, xg, xt, lq, tq, nb);
            else mmq_blocks<false, true>(ch, w0, xg, xt, lq, tq, nb);
        } else {
            if (two) mmq_blocks<true, false>(ch, w0, xg, xt, lq, tq, nb);
            else mmq_blocks<false, false>(ch, w0, xg, xt, lq, tq, nb);
        }

        MmqCursor nx = cc;
        nx.advance(ks, nsteps);
        if (nx.k != cc.k || nx.tile != cc.tile) {
            // The slice is complete: its chains into the tree.
            // Partials [warp][e][lane]: a store (or load) of one e by a warp is one wavefront.
            float* mine = part + w * 256 + lane;
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const float s01 = __fadd_rn(ch[0][e], ch[1][e]), s23 = __fadd_rn(ch[2][e], ch[3][e]);
                const float s45 = __fadd_rn(ch[4][e], ch[5][e]), s67 = __fadd_rn(ch[6][e], ch[7][e]);
                mine[32 * e] = __fadd_rn(__fadd_rn(s01, s23), __fadd_rn(s45, s67));
#pragma unroll
                for (int j = 0; j < 8; ++j) ch[j][e] = 0.f;
            }
            __syncthreads();
            if (q == 0) {
                const float* sub = part + w * 256 + lane;
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    const float top = __fadd_rn(__fadd_rn(sub[32 * e], sub[256 + 32 * e]), __fadd_rn(sub[512 + 32 * e], sub[768 + 32 * e]));
                    tot[e] = ks == 1 ? top : __fadd_rn(tot[e], top);
                }
                if (nx.tile != cc.tile) {
                    const int r0 = cc.tile * rt + rs * 16 + g;
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
#pragma unroll
                        for (int e = 0; e < 4; ++e) {
                            const int r = r0 + 8 * (e >> 1), t = t0 + ts * 16 + 8 * h + 2 * tq + (e & 1);
                            if (r < rows && t < n) Y[(i64)t * y_stride + r] = tot[4 * h + e];
                        }
                    }
#pragma unroll
                    for (int e = 0; e < 8; ++e) tot[e] = 0.f;
                }
            }
        }
        // Every warp is done with this buffer (and the partials) before it is refilled.
        __syncthreads();
        cc = nx;
    }
}
